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

Network (DARTS' ``NetworkCIFAR`` with NAS-Bench-301's training setting:
``width`` C = 32 initial channels, ``depth`` 8 cells, no auxiliary head, no
drop path): stem conv3x3 3 -> 3C + BN; cells ``depth // 3`` and ``2 * depth //
3`` are reduction cells (channels doubled, their operations on nodes 0 and 1 of
stride 2: ``skip_connect`` becomes a factorized reduction); each cell first
maps its inputs to C channels (ReLU-conv1x1-BN, or a factorized reduction when
the previous cell reduced); global average pool; dense to 10 classes.
Convolutions have no bias; the batch norms inside cell operations have no
affine parameters (``affine=False``), the stem's and the cell inputs' do
(epsilon 1e-5). These reproduce the NAS-Bench-301 parameter counts of
NAS-Bench-Suite-Zero exactly.

Options: ``width`` (default 32), ``depth`` (default 8, at least 3). Inputs:
``input: {shape: [H, W, 3]}`` with H and W multiples of 4.

FLOPs convention (:meth:`DartsSpace.flops`): as NAS-Bench-101's (a
multiply-accumulate 1, a batch norm 2 and a ReLU 1 per element, a pool its
window per output element (9), sums, concatenation, the global pool and
the dense bias 0); the ratio to the reference ``flops_m`` is reported by
``tests/test_spaces.py`` (see the README).
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
        return self.depth // 3, 2 * self.depth // 3

    def cells(self):
        """Per cell: (reduction, previous cell reduced, C_prev_prev, C_prev, C, input H*W, output H*W)."""
        h, w, _ = self.input_shape
        c = self.width
        cpp = cp = 3 * c
        hw_pp = hw_p = h * w
        prev_red = False
        out = []
        for i in range(self.depth):
            red = i in self.reductions()
            if red:
                c *= 2
            hw_out = hw_p // 4 if red else hw_p
            out.append((red, prev_red, cpp, cp, c, hw_p, hw_out, hw_pp))
            cpp, cp, prev_red = cp, len(CONCAT) * c, red
            hw_pp, hw_p = hw_p, hw_out
        return out

    def _counts(self, g: Genotype) -> tuple[int, int]:
        h, w, c_in = self.input_shape
        c0 = 3 * self.width
        params = 9 * c_in * c0 + 2 * c0
        flops = h * w * (9 * c_in * c0 + 2 * c0)
        for red, prev_red, cpp, cp, c, hw_in, hw_out, hw_pp in self.cells():
            # preprocessing (affine): factorized reduce or ReLU-conv1x1-BN, then ReLU-conv1x1-BN
            if prev_red:
                params += cpp * c + 2 * c
                flops += hw_pp * cpp + hw_in * (cpp * c + 2 * c)
            else:
                params += cpp * c + 2 * c
                flops += hw_in * cpp + hw_in * (cpp * c + 2 * c)
            params += cp * c + 2 * c
            flops += hw_in * cp + hw_in * (cp * c + 2 * c)
            for op, src in (g.reduce if red else g.normal):
                stride2 = red and src < 2
                p, f = _op_counts(op, c, hw_in if stride2 else hw_out, hw_out, stride2)
                params, flops = params + p, flops + f
        c_last = len(CONCAT) * self.cells()[-1][4]
        return params + c_last * NUM_CLASSES + NUM_CLASSES, flops + c_last * NUM_CLASSES

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


def _op_counts(op: str, c: int, hw_in: int, hw_out: int, stride2: bool) -> tuple[int, int]:
    """(parameters, FLOPs) of one cell operation on C channels (batch norms without affine parameters)."""
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return 0, 9 * hw_out * c
    if op == "skip_connect":
        if not stride2:
            return 0, 0
        return c * c // 2 * 2, hw_in * c + hw_out * (c * c // 2 * 2 + 2 * c)
    k = int(op[-1])
    dil = hw_in * c + hw_out * (k * k * c + c * c + 2 * c)  # ReLU, depthwise, pointwise, BN
    if op.startswith("sep_conv"):
        return 2 * (k * k * c + c * c), dil + hw_out * c + hw_out * (k * k * c + c * c + 2 * c)
    return k * k * c + c * c, dil
