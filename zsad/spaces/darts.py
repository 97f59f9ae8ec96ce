"""The DARTS search space (Liu et al., ICLR 2019) as NAS-Bench-301 built it (Siems et al. 2020):
``space: darts`` (aliases ``nas-bench-301``, ``nb301``).

An architecture is a genotype (:mod:`zsad.spaces.darts_genotype`): a normal and a reduction
cell; the networks are :mod:`zsad.spaces.darts_net`.

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

from typing import Any, Hashable, NamedTuple

from zsad.spaces.base import BuiltinSpace
from zsad.spaces.darts_genotype import (
    CONCAT, INPUT_SHAPE, NOTATION, NUM_CLASSES, Genotype, format_genotype, parse_genotype, sample_genotypes,
)


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
