"""The DARTS search space (Liu et al., ICLR 2019) as NAS-Bench-301 built it (Siems et al. 2020):
``space: darts`` (aliases ``nas-bench-301``, ``nb301``).

An architecture is a normal and a reduction cell. Each cell has two inputs
(nodes 0 and 1: the outputs of the two previous cells) and four intermediate
nodes; node ``i`` (2..5) sums two operations, each applied to an earlier node
(0..i-1), chosen among ``max_pool_3x3, avg_pool_3x3, skip_connect,
sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5``; the cell outputs the
concatenation of nodes 2..5. Notation, DARTS' genotype::

    Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ...8 pairs...], normal_concat=[2, 3, 4, 5],
             reduce=[...8 pairs...], reduce_concat=[2, 3, 4, 5])

(pairs ``(operation, input node)``, two per intermediate node in order), or the
YAML mapping ``{normal: [[op, input], ...], reduce: [...]}``.

Network: the one NAS-Bench-Suite-Zero computed its proxies, parameters and
FLOPs on, NASLib's ``NasBench301SearchSpace`` (naslib/search_spaces/nasbench301/
graph.py: ``channels = [32, 64, 128]``, stem multiplier 3, eight cells with
reductions at the third and the sixth), which is DARTS' ``NetworkCIFAR`` with
NAS-Bench-301's training setting (nasbench301/data_generation/configs:
``init_channels`` 32, ``layers`` 8): ``width`` C = 32 initial channels,
``depth`` 8 cells. Stem conv3x3 3 -> 3C + BN; cells ``depth // 3`` and
``2 * depth // 3`` are reduction cells (channels doubled, their operations on
nodes 0 and 1 of stride 2, ``skip_connect`` there a factorized reduction);
each cell first maps its inputs to C channels (ReLU-conv1x1-BN, or a
factorized reduction when the previous cell reduced); global average pool;
dense to 10 classes. Convolutions have no bias; the batch norms inside cell
operations have no affine parameters, the stem's and the cell inputs' do
(epsilon 1e-5); as in NASLib, each pool is followed by a batch norm without
affine parameters (DARTS' own evaluation network has none there; the
parameter count is the same). NAS-Bench-301 trained with DARTS' auxiliary
head (``auxiliary: True``) and drop path 0.2, both training-only: the
auxiliary head is not part of the network that outputs the logits, and the
reference parameter counts leave it out. These reproduce every NAS-Bench-301
parameter count and FLOPs of NAS-Bench-Suite-Zero exactly
(``tests/data/space_reference.csv``).

Options: ``width`` (default 32, even), ``depth`` (default 8, at least 3).
Inputs: ``input: {shape: [H, W, 3]}`` with H and W multiples of 4 (default
``[32, 32, 3]``).

FLOPs convention (:meth:`DartsSpace.flops`), that of the reference
(tensorwatch's ``ModelStats``, which NASLib's ``model_stats`` measure uses; the
ratio to ``flops_m`` * 1e6 is 1): a convolution or the dense layer its
multiply-accumulates (no bias); a batch norm 1 per element, 2 with affine
parameters; a ReLU 1 per input element; a 3x3 pool 9 per output element; the
global pool ``C (H + 1) (W + 1)``; sums and concatenations 0.
"""

from __future__ import annotations

import ast
from typing import Any, Hashable, NamedTuple

import numpy as np

from zsad._errors import SpecError
from zsad.spaces.base import BuiltinSpace

#: The operations, in the order of their codes.
OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5")
NODES = 4
EDGES = 2 * NODES
CONCAT = (2, 3, 4, 5)
NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
NOTATION = ("Genotype(normal=[(op, input) x 8], normal_concat=[2, 3, 4, 5], reduce=[(op, input) x 8], "
            "reduce_concat=[2, 3, 4, 5]) with op one of " + ", ".join(OPS) + " and node i's inputs in 0..i-1")

Pairs = tuple[tuple[str, int], ...]


class Genotype(NamedTuple):
    """A DARTS architecture: eight ``(operation, input node)`` pairs per cell."""

    normal: Pairs
    reduce: Pairs


def _pairs(value: Any, field: str) -> Pairs:
    if not isinstance(value, (list, tuple)) or len(value) != EDGES:
        raise SpecError(f"{field}: expected {EDGES} (operation, input) pairs, two per node; got "
                        f"{len(value) if isinstance(value, (list, tuple)) else repr(value)}")
    out = []
    for e, pair in enumerate(value):
        node = 2 + e // 2
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(f"{field}.{e}: expected a pair (operation, input node); got {pair!r}")
        op, src = pair
        if op not in OPS:
            import difflib

            match = difflib.get_close_matches(str(op), OPS, n=1)
            raise SpecError(f"{field}.{e}: expected an operation among {', '.join(OPS)}; got {op!r}"
                            + (f"; did you mean '{match[0]}'?" if match else ""))
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < node:
            raise SpecError(f"{field}.{e}: node {node}'s input must be an existing node 0..{node - 1}; got {src!r}")
        out.append((str(op), int(src)))
    return tuple(out)


def _concat(value: Any, field: str) -> None:
    if list(value) != list(CONCAT) if isinstance(value, (list, tuple, range)) else True:
        raise SpecError(f"{field}: expected [2, 3, 4, 5] (every intermediate node is concatenated); got {value!r}")


def parse_genotype(node: Any) -> Genotype:
    """A genotype string or a ``{normal, reduce[, normal_concat, reduce_concat]}`` mapping -> :class:`Genotype`.

    Raises:
      SpecError: a one-line reason (malformed, wrong length, unknown operation, an input node that does
        not exist yet, a concatenation other than [2, 3, 4, 5]).
    """
    if isinstance(node, str):
        node = _genotype_fields(node)
    if not isinstance(node, dict):
        raise SpecError(f"expected {NOTATION}; got {node!r}")
    keys = set(map(str, node))
    if not {"normal", "reduce"} <= keys or not keys <= {"normal", "reduce", "normal_concat", "reduce_concat"}:
        raise SpecError(f"expected the fields normal, reduce (and normal_concat, reduce_concat); got "
                        f"{', '.join(sorted(keys)) or 'none'}")
    for key in ("normal_concat", "reduce_concat"):
        if key in node:
            _concat(node[key], key)
    return Genotype(_pairs(node["normal"], "normal"), _pairs(node["reduce"], "reduce"))


def _genotype_fields(text: str) -> dict:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if (not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name) or tree.func.id != "Genotype"
            or tree.args):
        raise SpecError(f"expected {NOTATION}; got {text if len(text) < 80 else text[:77] + '...'!r}")
    out = {}
    for kw in tree.keywords:
        try:
            out[str(kw.arg)] = ast.literal_eval(kw.value)
        except ValueError:
            raise SpecError(f"{kw.arg}: expected a list of literals; got {ast.unparse(kw.value)!r}") from None
    return out


def format_genotype(g: Genotype) -> str:
    """DARTS' genotype notation."""
    def cell(pairs):
        return "[" + ", ".join(f"('{op}', {src})" for op, src in pairs) + "]"

    return (f"Genotype(normal={cell(g.normal)}, normal_concat=[2, 3, 4, 5], reduce={cell(g.reduce)}, "
            f"reduce_concat=[2, 3, 4, 5])")


def sample_genotypes(n: int, seed: int) -> list[Genotype]:
    """``n`` distinct genotypes by DARTS' rule: each node draws two distinct inputs among the earlier nodes
    and an operation for each, uniformly (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    seen: set[Genotype] = set()
    while len(out) < n:
        cells = []
        for _ in range(2):
            pairs = []
            for i in range(NODES):
                inputs = rng.choice(i + 2, size=2, replace=False)
                ops = rng.integers(0, len(OPS), size=2)
                pairs += [(OPS[int(o)], int(s)) for o, s in zip(ops, inputs)]
            cells.append(tuple(pairs))
        g = Genotype(*cells)
        if g not in seen:
            seen.add(g)
            out.append(g)
    return out


class DartsSpace(BuiltinSpace):
    """DARTS / NAS-Bench-301: see the module docstring."""

    name = "darts"
    aliases = ("nas-bench-301", "nasbench301", "nas_bench_301", "nb301")
    notation = NOTATION
    option_fields = ("width", "depth")
    size = None

    def __init__(self, width: int = 32, depth: int = 8, input_shape: tuple[int, ...] = INPUT_SHAPE):
        self.width, self.depth, self.input_shape = width, depth, tuple(input_shape)
        self.features = f"cell{depth - 1}"

    @classmethod
    def configure(cls, options: dict, ctx: Any) -> "DartsSpace":
        kw = {}
        for key, lo in (("width", 2), ("depth", 3)):
            if key in options:
                v = options[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < lo or (key == "width" and v % 2):
                    raise ctx.child(options, key).error(f"an {'even ' if key == 'width' else ''}integer >= {lo}", v)
                kw[key] = v
        return cls(**kw)

    def options(self) -> dict:
        return {"width": self.width, "depth": self.depth}

    def check_input(self, shape) -> str | None:
        if len(shape) != 3 or shape[2] != 3 or any(s < 4 or s % 4 for s in shape[:2]):
            return "[H, W, 3] with H and W multiples of 4"
        return None

    def with_input(self, shape) -> "DartsSpace":
        return DartsSpace(self.width, self.depth, tuple(shape))

    def parse(self, node: Any) -> Genotype:
        return parse_genotype(node)

    def format(self, arch: Genotype) -> str:
        return format_genotype(arch)

    def sample(self, n: int, seed: int) -> list[Genotype]:
        return sample_genotypes(n, seed)

    def reductions(self) -> tuple[int, int]:
        """The reduction cells' indices: a third and two thirds of the way."""
        return self.depth // 3, 2 * self.depth // 3

    def cells(self) -> list[_CellShape]:
        """Each cell's channels and resolutions, in order."""
        h, w, _ = self.input_shape
        c = self.width
        cpp = cp = 3 * c
        hw_pp = hw_p = (h, w)
        prev_red = False
        out = []
        for i in range(self.depth):
            red = i in self.reductions()
            c = 2 * c if red else c
            hw_out = (hw_p[0] // 2, hw_p[1] // 2) if red else hw_p
            out.append(_CellShape(red, prev_red, cpp, cp, c, hw_pp, hw_p, hw_out))
            cpp, cp, prev_red = cp, len(CONCAT) * c, red
            hw_pp, hw_p = hw_p, hw_out
        return out

    def _counts(self, g: Genotype) -> tuple[int, int]:
        """(parameters, FLOPs): see the module docstring for the FLOPs convention."""
        h, w, c_in = self.input_shape
        c0 = 3 * self.width
        params = 9 * c_in * c0 + 2 * c0  # stem conv, affine BN
        flops = h * w * 9 * c_in * c0 + 2 * h * w * c0
        for cell in self.cells():
            c, n_in, n_out = cell.c, cell.hw_in[0] * cell.hw_in[1], cell.hw_out[0] * cell.hw_out[1]
            n_pp = cell.hw_pp[0] * cell.hw_pp[1]
            # preprocessing: ReLU, 1x1 conv(s) (a factorized reduction after a reduction cell), affine BN
            for c_prev, n_prev in ((cell.cpp, n_pp if cell.prev_red else n_in), (cell.cp, n_in)):
                params += c_prev * c + 2 * c
                flops += n_prev * c_prev + n_in * c_prev * c + 2 * n_in * c
            for op, src in (g.reduce if cell.reduction else g.normal):
                stride2 = cell.reduction and src < 2
                p, f = _op_counts(op, c, n_in if stride2 else n_out, n_out, stride2)
                params, flops = params + p, flops + f
        last = self.cells()[-1]
        c_last = len(CONCAT) * last.c
        params += c_last * NUM_CLASSES + NUM_CLASSES
        flops += c_last * (last.hw_out[0] + 1) * (last.hw_out[1] + 1) + c_last * NUM_CLASSES
        return params, flops

    def params(self, arch: Genotype) -> int:
        return self._counts(arch)[0]

    def flops(self, arch: Genotype) -> int:
        return self._counts(arch)[1]

    def group(self, arch: Genotype) -> Hashable:
        return ()

    def scalars(self, arch: Genotype) -> dict:
        from zsad.spaces import darts_net

        return darts_net.scalars(arch)

    def program(self, group: Hashable) -> Any:
        from zsad.spaces import darts_net

        return darts_net.build(self, None)

    def network(self, arch: Genotype) -> Any:
        from zsad.spaces import darts_net

        return darts_net.build(self, arch)


class _CellShape(NamedTuple):
    reduction: bool
    prev_red: bool  # the previous cell reduced: input 0 is reduced by a factorized reduction
    cpp: int  # channels of input 0 (the cell before the previous)
    cp: int  # channels of input 1 (the previous cell)
    c: int  # channels of every node
    hw_pp: tuple[int, int]  # resolution of input 0
    hw_in: tuple[int, int]  # resolution of input 1
    hw_out: tuple[int, int]  # resolution of the nodes


def _op_counts(op: str, c: int, n_in: int, n_out: int, stride2: bool) -> tuple[int, int]:
    """(parameters, FLOPs) of one cell operation on C channels, ``n_in`` / ``n_out`` pixels in / out."""
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return 0, 9 * n_out * c + n_out * c  # 3x3 window per output, BN (not affine)
    if op == "skip_connect":
        if not stride2:
            return 0, 0
        return c * c, n_in * c + n_out * c * c + n_out * c  # ReLU, two 1x1 convs to C/2, BN
    k = int(op[-1])
    one = k * k * c + c * c  # depthwise k x k, pointwise 1x1
    flops = n_in * c + n_out * one + n_out * c  # ReLU, convolutions, BN (not affine)
    if op.startswith("sep_conv"):
        return 2 * one, flops + n_out * c + n_out * one + n_out * c
    return one, flops
