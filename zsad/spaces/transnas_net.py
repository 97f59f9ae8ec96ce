"""Flax modules of the TransNAS-Bench-101 networks (Duan et al., CVPR 2021) and their builder.

The encoder is the benchmark's ``MacroNet`` backbone: a stem (conv3x3 stride 2 to ``base/2``
channels, batch norm, ReLU-conv3x3 stride 2-BN to ``base``) and one stage per digit of the
macro code, two cells (micro space) or two residual basic blocks (macro space) each, the
first of them carrying the stage's stride and channel change. The task heads follow the
benchmark's decoders: global average pooling and a dense layer (``class_object``,
``class_scene``, ``room_layout``), the same fed by the nine tiles of a jigsaw puzzle run
through one shared encoder (``jigsaw``), and the conv/deconv decoders of the pixel tasks
(``autoencoder``, ``normal``: 14 layers ending in tanh; ``segmentsemantic``: 17-class
logits).

Initialization (the zsad convention): every convolution and dense kernel ~
:math:`N(0, \\sigma_w^2/\\text{fan\\_in})` (``fan_in`` = ``k*k*C_in``; for a transposed
convolution that of the equivalent input-dilated convolution), biases of convolutions and
dense layers ~ :math:`N(0, \\sigma_b^2)`, batch-norm scales 1 and biases 0, with
``sigma_w = scalars["weight_std"]`` and ``sigma_b = scalars["bias_std"]`` traced. All
random numbers come from one standard-normal draw laid out by the variables' names
(:func:`make_network`); a directly built micro network takes its variables from the masked
program's draw (:meth:`zsad.spaces.transnas.TransNASMicro.network`), so both hold the same
values for the same key.

Cell operations come from :mod:`zsad.spaces.ops` (convolution, ReLU-conv-BN, frozen batch
norm); the benchmark's factorized reduce (any stride, odd sizes) and the decoders'
convolutions with bias (plain and transposed) are defined here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsad._errors import DataError
from zsad._types import Network
from zsad.spaces.ops import Conv, ReLUConvBN, bn, module_network

BN_EPSILON = 1e-5
LEAKY_SLOPE = 0.2
#: Operation codes of a micro cell's edges.
ZERO, SKIP, CONV1X1, CONV3X3 = 0, 1, 2, 3
#: The six edges ``(source, target)`` of a micro cell in notation order ``a_bc_def``.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in (1, 2, 3) for i in range(j))
_OP_NAMES = {SKIP: "reduce", CONV1X1: "conv1x1", CONV3X3: "conv3x3"}


def _chan(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape((1,) * (ndim - 1) + (-1,))


def out_size(h: int, stride: int) -> int:
    """Spatial size after a stride-``stride`` layer of the benchmark (kernel 1 pad 0 or kernel 3 pad 1)."""
    return (h + stride - 1) // stride


class DecoderConv(nn.Module):
    """A decoder's 3x3 convolution with bias, padding 1; ``transpose``: PyTorch's ``ConvTranspose2d`` of
    stride 2, padding 1, output padding 1 (written as an input-dilated convolution), which doubles the size."""

    features: int
    transpose: bool = False

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.normal(1.0), (3, 3, x.shape[-1], self.features), x.dtype)
        dn = ("NHWC", "HWIO", "NHWC")
        if self.transpose:
            y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2),
                                             dimension_numbers=dn)
        else:
            y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return y + _chan(self.param("bias", nn.initializers.normal(1.0), (self.features,), x.dtype), y.ndim)


class PaddedFactorizedReduce(nn.Module):
    """The benchmark's factorized reduce: ReLU; two 1x1 convolutions of stride ``stride`` (the second on
    the input zero-padded by one pixel at the bottom and right and shifted by one) to ``C_out // 2`` and
    ``C_out - C_out // 2`` channels, concatenated; batch norm. Unlike :class:`zsad.spaces.ops.FactorizedReduce`
    it keeps odd sizes and takes stride 1 (a width change alone)."""

    features: int
    stride: int
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(x)
        half = self.features // 2
        shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
        y = jnp.concatenate([Conv(half, 1, self.stride, name="conv_0")(x),
                             Conv(self.features - half, 1, self.stride, name="conv_1")(shifted)], axis=-1)
        return bn(self.calibrate)(y)


def _edge_fn(op: int, features: int, stride: int, identity: bool, calibrate, name: str) -> Callable:
    """Operation ``op`` of one edge as ``(module, h) -> out`` (an ``nn.switch`` branch)."""
    if op == ZERO:
        def zero(mdl, h):
            n, hh, ww, _ = h.shape
            return jnp.zeros((n, out_size(hh, stride), out_size(ww, stride), features), h.dtype)
        return zero
    if op == SKIP and identity:
        return lambda mdl, h: h
    if op == SKIP:
        return lambda mdl, h: PaddedFactorizedReduce(features, stride, calibrate, name=name, parent=mdl)(h)
    k = 1 if op == CONV1X1 else 3
    return lambda mdl, h: ReLUConvBN(features, k, stride, calibrate=calibrate, name=name, parent=mdl)(h)


class MicroCell(nn.Module):
    """One micro cell: ``node_j = sum_{i<j} op_{i->j}(node_i)``, output node 3; edges from node 0 carry the
    cell's stride and channel change. ``code`` given: that cell only; ``None``: chosen by ``codes``."""

    features: int
    stride: int
    code: tuple[int, ...] | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, codes=None):
        nodes = [x]
        for target in (1, 2, 3):
            total = None
            for e, (src, tgt) in enumerate(EDGES):
                if tgt != target:
                    continue
                out = self._edge(e, src, nodes[src], codes)
                if out is not None:
                    total = out if total is None else total + out
            if total is None:  # every incoming edge is `none`
                n, h, w, _ = x.shape
                s = self.stride
                total = jnp.zeros((n, out_size(h, s), out_size(w, s), self.features), x.dtype)
            nodes.append(total)
        return nodes[3]

    def _edge(self, e: int, src: int, h, codes):
        stride = self.stride if src == 0 else 1
        identity = stride == 1 and h.shape[-1] == self.features
        branches = [_edge_fn(op, self.features, stride, identity, self.calibrate, f"edge{e}_{_OP_NAMES.get(op)}")
                    for op in range(4)]
        if self.code is not None:
            return None if self.code[e] == ZERO else branches[self.code[e]](self, h)
        if self.is_initializing():  # declare every branch's variables before the switch reads them
            for branch in branches:
                branch(self, h)
        return nn.switch(codes[e], branches, self, h)


class BasicBlock(nn.Module):
    """The benchmark's residual basic block: ReLU-conv3x3-BN twice, plus the input (conv1x1-BN when the
    stride or the width changes)."""

    features: int
    stride: int
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        y = ReLUConvBN(self.features, 3, self.stride, calibrate=self.calibrate, name="conv_a")(x)
        y = ReLUConvBN(self.features, 3, 1, calibrate=self.calibrate, name="conv_b")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = bn(self.calibrate, name="down_bn")(Conv(self.features, 1, self.stride, name="down")(x))
        return x + y


class Encoder(nn.Module):
    """The backbone: stem to ``base`` channels, then ``blocks`` (``(C_out, stride)`` each) of basic
    blocks or micro cells; ``cell=None`` with ``basic=False``: micro cells chosen by ``codes``."""

    base: int
    blocks: tuple[tuple[int, int], ...]
    basic: bool
    cell: tuple[int, ...] | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, codes):
        outs: dict[str, jax.Array] = {}
        cal, half = self.calibrate, self.base // 2
        y = bn(cal, name="stem_bn")(Conv(half, 3, 2, name="stem_conv")(x))
        y = ReLUConvBN(self.base, 3, 2, calibrate=cal, name="stem_relu_conv_bn")(y)
        outs["stem"] = y
        blocks = self.blocks
        for i, (c, s) in enumerate(blocks):
            if self.basic:
                y = BasicBlock(c, s, cal, name=f"block{i}")(y)
            else:
                y = MicroCell(c, s, self.cell, cal, name=f"cell{i}")(y, codes)
            outs["encoder" if i == len(blocks) - 1 else f"{'block' if self.basic else 'cell'}{i}"] = y
        return y, outs


class PixelDecoder(nn.Module):
    """Conv(bias)-BN-LeakyReLU(0.2) layers (``layers``: after a first ``C_in -> 1024``), then a 3x3
    convolution with bias to ``out_channels`` (tanh when ``tanh``)."""

    layers: tuple[tuple[int, int, bool], ...]
    out_channels: int
    tanh: bool
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        outs: dict[str, jax.Array] = {}
        spec = ((x.shape[-1], 1024, False),) + self.layers
        for i, (_, co, transposed) in enumerate(spec):
            y = DecoderConv(co, transposed, name=f"conv{i + 1}")(x)
            x = nn.leaky_relu(bn(self.calibrate, name=f"bn{i + 1}")(y), LEAKY_SLOPE)
            outs[f"decoder{i + 1}"] = x
        x = DecoderConv(self.out_channels, name=f"conv{len(spec) + 1}")(x)
        return (jnp.tanh(x) if self.tanh else x), outs


class TNBNet(nn.Module):
    """Encoder and task head. ``head``: ``("dense", classes)``, ``("jigsaw", classes)``,
    ``("generative", 3)`` or ``("segmentation", 17)``; pixel heads are laid out by ``decoder``
    (``(C_in, C_out, transposed)`` of the layers after the first)."""

    base: int
    blocks: tuple[tuple[int, int], ...]
    basic: bool
    head: tuple[str, int]
    decoder: tuple[tuple[int, int, bool], ...] = ()
    cell: tuple[int, ...] | None = None
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x, scalars):
        kind, arg = self.head
        want = 27 if kind == "jigsaw" else 3
        if x.ndim != 4 or x.shape[-1] != want:
            raise DataError(f"TransNAS-Bench-101 input: expected shape [N, H, W, {want}], got {list(x.shape)}")
        codes = None if self.basic or self.cell is not None else scalars["ops"]
        encoder = Encoder(self.base, self.blocks, self.basic, self.cell, self.calibrate, name="encoder")
        if kind == "jigsaw":  # nine 3-channel tiles through one encoder, features concatenated tile by tile
            n, h, w, _ = x.shape
            tiles = x.reshape(n, h, w, 9, 3).transpose(0, 3, 1, 2, 4).reshape(n * 9, h, w, 3)
            _, outs = encoder(tiles, codes)
            outs = {name: v.reshape(n, 9, *v.shape[1:]).transpose(0, 2, 3, 1, 4).reshape(n, *v.shape[1:3], -1)
                    for name, v in outs.items()}
            y = outs["encoder"]
        else:
            y, outs = encoder(x, codes)
        if kind in ("dense", "jigsaw"):
            y = nn.Dense(arg, kernel_init=nn.initializers.normal(1.0), bias_init=nn.initializers.normal(1.0),
                         name="head")(jnp.mean(y, axis=(1, 2)))
        else:
            y, more = PixelDecoder(self.decoder, arg, kind == "generative", self.calibrate, name="decoder")(y)
            outs.update(more)
        outs["head"] = y
        return y, outs


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _draw(template: Any, key: jax.Array, ws, bs) -> Any:
    """Variables shaped as ``template``: kernels ~ N(0, ws**2 / fan_in) and the biases beside them
    ~ N(0, bs**2), all from one standard-normal draw (cheap to compile); batch norms 1 and 0."""
    flat = jax.tree_util.tree_flatten_with_path(template)[0]
    names = [_path_name(path) for path, _ in flat]
    parents = {}
    for name in names:
        parents.setdefault(name.rsplit("/", 1)[0], set()).add(name.rsplit("/", 1)[-1])
    random = [n.startswith("params/") and "kernel" in parents[n.rsplit("/", 1)[0]] for n in names]
    total = sum(math.prod(spec.shape) for (_, spec), r in zip(flat, random) if r)
    dtype = flat[0][1].dtype
    z = jax.random.normal(key, (total,), dtype)
    leaves, offset = [], 0
    for (path, spec), name, r in zip(flat, names, random):
        last = name.rsplit("/", 1)[-1]
        if r:
            size = math.prod(spec.shape)
            w = z[offset:offset + size].reshape(spec.shape)
            offset += size
            leaves.append((ws / math.sqrt(math.prod(spec.shape[:-1]))) * w if last == "kernel" else bs * w)
        else:
            leaves.append((jnp.ones if last in ("scale", "var") else jnp.zeros)(spec.shape, spec.dtype))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def make_network(module_kw: dict, layer_names: Sequence[str], input_shape: tuple[int, ...],
                 scalars: dict) -> Network:
    """A :class:`zsad.Network` of ``TNBNet(**module_kw)``; ``segment`` cuts at the input only."""
    run = TNBNet(**module_kw)
    names = tuple(layer_names)

    dummy = jax.ShapeDtypeStruct((1, 8, 8, input_shape[-1]), jnp.result_type(float))
    template = jax.eval_shape(run.init, jax.random.key(0), dummy, scalars)

    def init(key, scalars):
        return _draw(template, key, scalars["weight_std"], scalars["bias_std"])

    return module_network(lambda calibrate: TNBNet(**module_kw, calibrate=calibrate), init, scalars, names,
                          input_shape, space="TransNAS-Bench-101")
