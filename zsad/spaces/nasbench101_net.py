"""NAS-Bench-101 networks (flax): one cell built directly, or a group's shared program.

In a group (:meth:`zsad.spaces.nasbench101.NB101Space.group`) every cell has
the same vertex count, the same vertices feeding the output and the same
vertex widths; the program takes the rest as data (``scalars``): ``edges``
(``[N, N]`` 0/1 between interior vertices, summed as masks), ``proj``
(``[N]``: whether the cell input is projected into vertex ``t``, a switch)
and ``ops`` (``[N]`` operation codes, a switch running only the chosen
operation when unbatched). Variables of the direct network are those of the
program with the same names (:func:`zsad.spaces.restrict`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zsad.spaces import ops as O
from zsad.spaces.nasbench101_cell import KERNEL, NUM_CLASSES, OPS, Cell

_NAMES = {"conv3x3-bn-relu": "conv3x3", "conv1x1-bn-relu": "conv1x1", "maxpool3x3": "maxpool3x3"}


def _op_branch(t: int, op: str, width: int, cal):
    if op not in KERNEL:
        return lambda mdl, h: O.max_pool(h, 3, 1)
    return lambda mdl, h: O.ConvBNReLU(width, KERNEL[op], cal, name=f"v{t}_{_NAMES[op]}", parent=mdl)(h)


def _proj_branches(t: int, width: int, cal):
    return [lambda mdl, x: jnp.zeros((*x.shape[:-1], width), x.dtype),
            lambda mdl, x: O.ConvBNReLU(width, 1, cal, name=f"v{t}_proj", parent=mdl)(x)]


def _switch(mdl: nn.Module, index, branches, x):
    if mdl.is_initializing():  # declare every branch's variables before the switch reads them
        for branch in branches:
            branch(mdl, x)
    return nn.switch(index, branches, mdl, x)


class _Cell(nn.Module):
    """One cell of ``c_out`` channels; ``chans`` its vertex widths; ``cell`` given: that cell only."""

    c_out: int
    chans: tuple[int, ...]
    out_col: tuple[int, ...]
    cell: Cell | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, sc):
        n, ch, cal = len(self.chans), self.chans, self.calibrate
        m = None if self.cell is None else self.cell.array
        tensors, concat = [x], []
        for t in range(1, n - 1):
            if m is not None:
                add = [tensors[s][..., :ch[t]] for s in range(1, t) if m[s, t]]
                if m[0, t]:
                    add.append(O.ConvBNReLU(ch[t], 1, cal, name=f"v{t}_proj")(x))
                h = add[0] if len(add) == 1 else sum(add[1:], add[0])
                out = _op_branch(t, self.cell.ops[t], ch[t], cal)(self, h)
            else:
                h = _switch(self, sc["proj"][t], _proj_branches(t, ch[t], cal), x)
                for s in range(1, t):
                    if ch[s] >= ch[t]:  # a narrower vertex cannot feed this one in any cell of the group
                        h = h + sc["edges"][s, t].astype(x.dtype) * tensors[s][..., :ch[t]]
                out = _switch(self, sc["ops"][t], [_op_branch(t, op, ch[t], cal) for op in OPS], h)
            tensors.append(out)
            if self.out_col[t]:
                concat.append(out)
        if not concat:
            return O.ConvBNReLU(self.c_out, 1, cal, name="out_proj")(x)
        y = concat[0] if len(concat) == 1 else jnp.concatenate(concat, axis=-1)
        if self.out_col[0]:
            y = y + O.ConvBNReLU(self.c_out, 1, cal, name="out_proj")(x)
        return y


class _Net(nn.Module):
    width: int
    depth: int
    chans: tuple  # ((c_in, c_out), vertex widths) pairs
    out_col: tuple[int, ...]
    cell: Cell | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, scalars):
        cal, chans = self.calibrate, dict(self.chans)
        outs: dict[str, Any] = {}
        y = O.ConvBNReLU(self.width, 3, cal, name="stem")(x)
        outs["stem"] = y
        c_prev = c = self.width
        i = 0
        for s in range(3):
            if s > 0:
                y = O.max_pool(y, 2, 2, "SAME")
                outs[f"pool{s}"] = y
                c *= 2
            for _ in range(self.depth):
                y = _Cell(c, tuple(chans[c_prev, c]), self.out_col, self.cell, cal, name=f"cell{i}")(y, scalars)
                outs[f"cell{i}"] = y
                c_prev, i = c, i + 1
        y = O.dense_head(self, y, NUM_CLASSES)
        outs["head"] = y
        return y, outs


def layer_names(depth: int) -> tuple[str, ...]:
    names, i = ["stem"], 0
    for s in range(3):
        if s > 0:
            names.append(f"pool{s}")
        for _ in range(depth):
            names.append(f"cell{i}")
            i += 1
    return (*names, "head")


def scalars(cell: Cell) -> dict:
    m = cell.array
    codes = [0] + [OPS.index(op) for op in cell.ops[1:-1]] + [0]
    edges = m.astype(np.float64)
    return O.default_scalars(edges=edges, proj=m[0].astype(np.int32), ops=np.asarray(codes, np.int32))


def build(space, group, cell: Cell | None):
    """The network of ``cell`` (direct), or of ``group`` (``cell`` None: the program, scalars of its first cell
    as defaults are not known, so the defaults select a cell of all-zero edges: pass :func:`scalars`)."""
    n, out_col, chans = group
    widths = sorted({(ci, co) for ci, co, _ in space.cells()})
    pairs = tuple(zip(widths, chans))
    names = layer_names(space.depth)

    def make(cal):
        return _Net(space.width, space.depth, pairs, out_col, cell, cal)

    if cell is not None:
        sc = scalars(cell)
        sc = {"weight_std": sc["weight_std"], "bias_std": sc["bias_std"]}
    else:
        sc = O.default_scalars(edges=np.zeros((n, n)), proj=np.ones(n, np.int32), ops=np.zeros(n, np.int32))
    return O.network_of(make, sc, names, space.input_shape)
