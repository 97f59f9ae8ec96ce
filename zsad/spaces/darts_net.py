"""DARTS / NAS-Bench-301 networks (flax): one genotype built directly, or the space's one program.

In the program every edge of both cells holds every operation and the genotype
is data (``scalars``: ``normal_ops``, ``normal_inputs``, ``reduce_ops``,
``reduce_inputs``, each ``[8]`` int32): an edge's input node is selected and
its operation chosen by a switch that, unbatched, runs only the chosen one. In
a reduction cell an operation on nodes 0 and 1 has stride 2 and one on an
intermediate node stride 1, so the switch there ranges over both (same
variables). Variables of a direct network are the program's of the same names
(:func:`zsad.spaces.restrict`), drawn with the same values for the same key
(:mod:`zsad.spaces.layout`: one standard-normal draw laid out as the program's).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zsad.arch.build import FrozenBatchNorm
from zsad.canonical import traced_once
from zsad.spaces import layout
from zsad.spaces import ops as O
from zsad.spaces.darts_genotype import CONCAT, NODES, NUM_CLASSES, OPS, Genotype


def _windows(x, fill: float, stride: int) -> list:
    """The nine shifts of ``x`` padded by 1 (with ``fill``) that a 3x3 window of ``stride`` covers."""
    h, w = x.shape[1:3]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=jnp.asarray(fill, x.dtype))
    return [p[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(3) for j in range(3)]


@traced_once(static_argnums=(1,))
def _max_pool(x, stride: int):
    """3x3 max pool, padding 1."""
    return functools.reduce(jnp.maximum, _windows(x, -jnp.inf, stride))


@traced_once(static_argnums=(1,))
def _avg_pool(x, stride: int):
    """3x3 average pool, padding 1, over the pixels inside the image (padding not counted)."""
    count = sum(_windows(np.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, stride))
    return sum(_windows(x, 0.0, stride)) / jnp.asarray(count, x.dtype)


def _op(op: str, c: int, stride: int, cal):
    """Operation ``op`` as a branch ``(edge module, h) -> out``, named ``op`` in its edge (cell operations: no
    affine BN; a pool is followed by a batch norm, as NASLib builds NAS-Bench-301's cells)."""
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        pool = _max_pool if op == "max_pool_3x3" else _avg_pool
        return lambda mdl, h: FrozenBatchNorm(O.BN_EPSILON, False, name=op, parent=mdl)(pool(h, stride), cal)
    if op == "skip_connect":
        if stride == 1:
            return lambda mdl, h: h
        return lambda mdl, h: O.FactorizedReduce(c, False, cal, name=op, parent=mdl)(h)
    k = int(op[-1])
    if op.startswith("sep_conv"):
        return lambda mdl, h: O.SepConv(c, k, stride, False, cal, name=op, parent=mdl)(h)
    return lambda mdl, h: O.DilConv(c, k, stride, 2, False, cal, name=op, parent=mdl)(h)


class _Edge(nn.Module):
    """An edge's operations, ``branches`` of ``(op, stride, which input)``: a direct network's one
    (``index`` None), or every candidate behind a switch on ``index``. The edge is a module of its
    own so that its switch carries this edge's variables only: on the cell's, every branch of every
    switch would take all of the cell's variables as operands, and tracing the program's
    derivatives would take several times as long."""

    c: int
    branches: tuple
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, index, *inputs):
        fns = [(lambda mdl, *hs, f=_op(op, self.c, s, self.calibrate), k=k: f(mdl, hs[k]))
               for op, s, k in self.branches]
        if index is None:
            return fns[0](self, *inputs)
        if self.is_initializing():  # declare every variable before the switch reads them: the first (stride-2)
            seen = set()            # form of an operation holds those of both
            for (op, _, _), fn in zip(self.branches, fns):
                if op not in seen:
                    seen.add(op)
                    fn(self, *inputs)
        return nn.switch(index, fns, self, *inputs)


class _Cell(nn.Module):
    c: int
    reduction: bool
    reduction_prev: bool
    pairs: tuple | None = None  # direct: this cell's (op, input) pairs
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, s0, s1, ops, inputs):
        c, cal = self.c, self.calibrate
        s0 = (O.FactorizedReduce(c, True, cal, name="pre0") if self.reduction_prev
              else O.ReLUConvBN(c, 1, 1, True, cal, name="pre0"))(s0)
        s1 = O.ReLUConvBN(c, 1, 1, True, cal, name="pre1")(s1)
        states = [s0, s1]
        for i in range(NODES):
            terms = []
            for e in (2 * i, 2 * i + 1):
                if self.pairs is not None:
                    op, src = self.pairs[e]
                    stride = 2 if self.reduction and src < 2 else 1
                    terms.append(_Edge(c, ((op, stride, 0),), cal, name=f"e{e}")(None, states[src]))
                else:
                    terms.append(self._masked(e, i, states, ops[e], inputs[e]))
            states.append(terms[0] + terms[1])
        return jnp.concatenate([states[k] for k in CONCAT], axis=-1)

    def _masked(self, e, i, states, code, src):
        choose = lambda idx, hs: jax.lax.switch(idx, [lambda *a, k=k: a[k] for k in range(len(hs))], *hs)  # noqa: E731
        edge = lambda branches: _Edge(self.c, tuple(branches), self.calibrate, name=f"e{e}")  # noqa: E731
        if not self.reduction:
            return edge((op, 1, 0) for op in OPS)(code, choose(src, states[:i + 2]))
        pre = choose(jnp.minimum(src, 1), states[:2])  # nodes 0, 1: stride 2
        if i == 0:
            return edge((op, 2, 0) for op in OPS)(code, pre)
        node = choose(jnp.maximum(src - 2, 0), states[2:i + 2])  # intermediate nodes: stride 1
        index = code + len(OPS) * (src >= 2).astype(code.dtype)
        return edge([(op, 2, 0) for op in OPS] + [(op, 1, 1) for op in OPS])(index, pre, node)


class _Net(nn.Module):
    width: int
    depth: int
    genotype: Genotype | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, scalars):
        cal = self.calibrate
        outs: dict[str, Any] = {}
        c0 = 3 * self.width
        y = O.Conv(c0, 3, name="stem_conv")(x)
        y = O.bn(cal, name="stem_bn")(y)
        outs["stem"] = y
        s0 = s1 = y
        c, prev_red = self.width, False
        g = self.genotype
        for i in range(self.depth):
            red = i in (self.depth // 3, 2 * self.depth // 3)
            c = 2 * c if red else c
            kind = "reduce" if red else "normal"
            pairs = None if g is None else getattr(g, kind)
            ops = inputs = None
            if g is None:
                ops, inputs = scalars[f"{kind}_ops"], scalars[f"{kind}_inputs"]
            s0, s1 = s1, _Cell(c, red, prev_red, pairs, cal, name=f"cell{i}")(s0, s1, ops, inputs)
            outs[f"cell{i}"] = s1
            prev_red = red
        y = O.dense_head(self, s1, NUM_CLASSES)
        outs["head"] = y
        return y, outs


def scalars(g: Genotype) -> dict:
    return O.default_scalars(normal_ops=[OPS.index(op) for op, _ in g.normal], normal_inputs=[s for _, s in g.normal],
                             reduce_ops=[OPS.index(op) for op, _ in g.reduce], reduce_inputs=[s for _, s in g.reduce])


def _program_scalars() -> dict:
    default = tuple(("sep_conv_3x3", k % 2) for k in range(2 * NODES))
    return scalars(Genotype(default, default))


@functools.lru_cache(maxsize=8)
def _program_tree(width: int, depth: int, input_shape: tuple[int, ...], dtype: str):
    """The variable shapes of the space's program (every operation on every edge)."""
    x = jnp.zeros((1, *input_shape), dtype)
    return jax.eval_shape(_Net(width, depth, None, False).init, jax.random.key(0), x, _program_scalars())


def build(space, genotype: Genotype | None):
    """The network of ``genotype`` (its initialization laid out as the program's), or (None) the space's
    program (default scalars: every edge ``sep_conv_3x3`` on nodes 0 and 1)."""
    names = ("stem", *(f"cell{i}" for i in range(space.depth)), "head")

    def make(cal):
        return _Net(space.width, space.depth, genotype, cal)

    shape = tuple(space.input_shape)
    if genotype is None:
        return layout.network(make, _program_scalars(), names, shape)
    return layout.network(make, O.default_scalars(), names, shape,
                          lambda: _program_tree(space.width, space.depth, shape, jnp.result_type(float).name))
