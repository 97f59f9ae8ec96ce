"""NAS-Bench-101 (Ying et al., ICML 2019), built in: ``space: nas-bench-101``.

The cells and their notation are :mod:`zsad.spaces.nasbench101_cell`; the networks
:mod:`zsad.spaces.nasbench101_net`.

Network (the benchmark's ``model_builder``, input 32x32x3): stem conv3x3 (128
channels)-BN-ReLU; 3 stacks of 3 cells, a 2x2 max pool (stride 2) and channel
doubling before stacks 2 and 3; global average pool; dense to 10 classes. In a
cell of ``C`` output channels the vertices feeding the output split ``C``
between them (``C // k``, the remainder to the first ones) and are
concatenated; other vertices take the largest width they feed; a vertex sums
its inputs, each truncated to its width (at most one channel dropped) or, from
the cell input, projected by a conv1x1-BN-ReLU; an input-to-output edge adds a
projection of the cell input to the output. Every convolution has no bias and
is followed by an affine batch norm (epsilon 1e-5).

Options: ``width`` (stem channels, default 128) and ``depth`` (cells per
stack, default 3). Inputs: ``input: {shape: [H, W, 3]}`` with any H, W >= 4.

FLOPs convention (:meth:`NB101Space.flops`): a convolution or dense
multiply-accumulate counts 1, a batch norm 2 per output element, a ReLU 1 per
element, a max pool its window size per output element (9 in cells, 4 when
downsampling); sums, concatenation, truncation, the global pool and the dense
bias count 0. This reproduces ``flops_m`` of NAS-Bench-Suite-Zero exactly
(ratio 1.000000 on every reference row).
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator

from zsad.spaces.base import BuiltinSpace
from zsad.spaces.nasbench101_cell import (
    INPUT_SHAPE, KERNEL, NOTATION, NUM_CLASSES, Cell, format_cell, parse_cell, sample_cells, vertex_channels,
)


class NB101Space(BuiltinSpace):
    """NAS-Bench-101: see the module docstring."""

    name = "nas-bench-101"
    aliases = ("nasbench101", "nas_bench_101", "nb101")
    notation = NOTATION
    option_fields = ("width", "depth")
    size = None  # 423,624 unique cells: sampled or listed, not enumerated here

    def __init__(self, width: int = 128, depth: int = 3, input_shape: tuple[int, ...] = INPUT_SHAPE):
        self.width, self.depth, self.input_shape = width, depth, tuple(input_shape)
        self.features = f"cell{3 * depth - 1}"

    @classmethod
    def configure(cls, options: dict, ctx: Any) -> "NB101Space":
        kw = {}
        for key, lo in (("width", 2), ("depth", 1)):
            if key in options:
                v = options[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                    raise ctx.child(options, key).error(f"an integer >= {lo}", v)
                kw[key] = v
        return cls(**kw)

    def options(self) -> dict:
        return {"width": self.width, "depth": self.depth}

    def check_input(self, shape) -> str | None:
        if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 4:
            return "[H, W, 3] with H, W >= 4"
        return None

    def with_input(self, shape) -> "NB101Space":
        return NB101Space(self.width, self.depth, tuple(shape))

    def parse(self, node: Any) -> Cell:
        return parse_cell(node)

    def format(self, arch: Cell) -> str:
        return format_cell(arch)

    def sample(self, n: int, seed: int) -> list[Cell]:
        return sample_cells(n, seed)

    # ---- counts

    def cells(self) -> Iterator[tuple[int, int, int]]:
        """(input channels, output channels, spatial size H*W) of each cell in order."""
        h, w = self.input_shape[:2]
        c_prev, c = self.width, self.width
        for s in range(3):
            if s > 0:
                c, h, w = 2 * c, -(-h // 2), -(-w // 2)
            for _ in range(self.depth):
                yield c_prev, c, h * w
                c_prev = c

    def _cell_counts(self, cell: Cell, c_in: int, c_out: int, hw: int) -> tuple[int, int]:
        m = cell.array
        n = m.shape[0]
        ch = vertex_channels(c_in, c_out, m)
        params = flops = 0

        def conv_bn_relu(k, ci, co):
            return k * k * ci * co + 2 * co, hw * (k * k * ci * co + 3 * co)

        parts = []
        if n == 2 or m[0, n - 1]:
            parts.append(conv_bn_relu(1, c_in, c_out))
        for t in range(1, n - 1):
            if m[0, t]:
                parts.append(conv_bn_relu(1, c_in, ch[t]))
            op = cell.ops[t]
            if op in KERNEL:
                parts.append(conv_bn_relu(KERNEL[op], ch[t], ch[t]))
            else:
                parts.append((0, 9 * hw * ch[t]))
        for p, f in parts:
            params, flops = params + p, flops + f
        return params, flops

    def _counts(self, cell: Cell) -> tuple[int, int]:
        h, w, c_in = self.input_shape
        params = 9 * c_in * self.width + 2 * self.width
        flops = h * w * (9 * c_in * self.width + 3 * self.width)
        prev_c = None
        for c_prev, c, hw in self.cells():
            if prev_c is not None and c != prev_c:
                flops += 4 * hw * c_prev  # 2x2 max pool before the stack
            prev_c = c
            p, f = self._cell_counts(cell, c_prev, c, hw)
            params, flops = params + p, flops + f
        c_last = 4 * self.width
        return params + c_last * NUM_CLASSES + NUM_CLASSES, flops + c_last * NUM_CLASSES

    def params(self, arch: Cell) -> int:
        return self._counts(arch)[0]

    def flops(self, arch: Cell) -> int:
        return self._counts(arch)[1]

    # ---- networks

    def group(self, arch: Cell) -> Hashable:
        """Cells of equal shape signature: vertex count, which vertices feed the output, the input-output
        edge and every vertex's channels in each stack; the other edges and the operations are data."""
        m = arch.array
        n = m.shape[0]
        widths = sorted({(c_prev, c) for c_prev, c, _ in self.cells()})
        chans = tuple(tuple(vertex_channels(ci, co, m)) for ci, co in widths)
        return (n, tuple(int(v) for v in m[:, n - 1]), chans)

    def scalars(self, arch: Cell) -> dict:
        from zsad.spaces import nasbench101_net

        return nasbench101_net.scalars(arch)

    def program(self, group: Hashable) -> Any:
        from zsad.spaces import nasbench101_net

        return nasbench101_net.build(self, group, None)

    def network(self, arch: Cell) -> Any:
        from zsad.spaces import nasbench101_net

        return nasbench101_net.build(self, self.group(arch), arch)

