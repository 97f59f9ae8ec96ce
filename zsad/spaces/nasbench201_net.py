"""The NAS-Bench-201 network (:mod:`zsad.spaces.nasbench201`), in two forms.

* :func:`build_network` -- one architecture; only its chosen operations are
  computed (``none`` edges and edges that cannot reach the cell output are
  skipped).
* :func:`build_masked_network` -- one program for the whole space. Every edge
  holds every candidate operation and the operation choice is *data* (an int
  array of shape ``[6]`` in ``scalars["ops"]``), so a single compilation
  serves all 15,625 architectures and can be ``vmap``-ed over a chunk of
  architectures, each with its own initialization.

The layers and their conventions are those of :mod:`zsad.spaces.nasbench201`.

Initialization (the zsad convention): every convolution and dense kernel is
drawn from :math:`N(0, \\sigma_w^2 / \\text{fan\\_in})` with
``fan_in = k*k*C_in`` (convolutions) or ``64`` (dense) and ``sigma_w =
scalars["weight_std"]`` (default :math:`\\sqrt 2`, critical for ReLU; this is
He/Kaiming normal with fan-in mode); the dense bias is drawn from
:math:`N(0, \\sigma_b^2)` with ``sigma_b = scalars["bias_std"]`` (default 0);
batch-norm scales are 1 and biases 0. Both scalars are traced: changing them
never recompiles.

Batch norm: ``calibrate`` runs the network in training mode on the scoring
batch and stores every batch norm's batch mean and biased variance
(:math:`\\epsilon = 10^{-5}`); ``apply`` then uses them frozen, so it is a
per-sample function and, on the calibration batch, equals training-mode batch
norm.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsad._errors import DataError
from zsad._types import Network
from zsad.arch.build import FrozenBatchNorm
from zsad.spaces.nasbench201 import (
    BN_EPSILON, CELLS_PER_STAGE, CHANNELS, CONV_KERNEL, EDGES, INPUT_SHAPE, LAYER_NAMES, NUM_CLASSES, OPS, Arch,
    as_ops, encode, live_edges,
)

# --------------------------------------------------------------------------- flax modules
#
# Parameters and batch-norm statistics are created by ``_init_variables`` (a
# few large random draws rather than one per layer, which keeps ``init`` cheap
# to compile); the modules below only declare them (flax checks the shapes).
# The five cells of a stage share their structure, so each stage is one
# ``nn.scan`` over cells with variables stacked on a leading axis of length 5.

class _Conv(nn.Module):
    """Convolution without bias, kernel ``[k, k, C_in, C_out]``, padding ``k // 2``."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        k = self.kernel
        w = self.param("kernel", nn.initializers.zeros_init(), (k, k, x.shape[-1], self.features), x.dtype)
        pad = ((k // 2, k // 2), (k // 2, k // 2))
        return jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


class _ReLUConvBN(nn.Module):
    features: int
    kernel: int
    stride: int = 1
    calibrate: bool = False

    @nn.compact
    def __call__(self, x):
        y = _Conv(self.features, self.kernel, self.stride, name="conv")(jax.nn.relu(x))
        return FrozenBatchNorm(BN_EPSILON, name="bn")(y, self.calibrate)


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class _Reduction(nn.Module):
    features: int
    calibrate: bool = False

    @nn.compact
    def __call__(self, x):
        y = _ReLUConvBN(self.features, 3, 2, self.calibrate, name="conv_a")(x)
        y = _ReLUConvBN(self.features, 3, 1, self.calibrate, name="conv_b")(y)
        short = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return _Conv(self.features, 1, name="shortcut")(short) + y


def _op_name(e: int, op: str) -> str:
    src, tgt = EDGES[e]
    return f"edge_{src}_{tgt}_{op}"


class _Cell(nn.Module):
    """One cell (scanned over a stage). ``ops`` given: that architecture only; ``None``: chosen by ``codes``."""

    channels: int
    ops: tuple[str, ...] | None = None
    calibrate: bool = False

    @nn.compact
    def __call__(self, x, codes):
        y = self._direct(x) if self.ops is not None else self._masked(x, codes)
        return y, y

    def _conv_op(self, e, op):
        return _ReLUConvBN(self.channels, CONV_KERNEL[op], 1, self.calibrate, name=_op_name(e, op))

    def _direct(self, x):
        ops = self.ops
        live = live_edges(ops)
        nodes: list[jax.Array | None] = [x, None, None, None]  # None: identically zero
        for e, (src, tgt) in enumerate(EDGES):
            op, h = ops[e], nodes[src]
            if not live[e]:
                continue  # `none`, or a dead end: its parameters exist but are never used
            if op in CONV_KERNEL:  # on a zero node this is the constant BN bias: computed
                out = self._conv_op(e, op)(jnp.zeros_like(x) if h is None else h)
            elif h is None:
                out = None  # skip / pool of zeros
            elif op == "skip_connect":
                out = h
            else:
                out = _avg_pool_3x3(h)
            if out is not None:
                nodes[tgt] = out if nodes[tgt] is None else nodes[tgt] + out
        return jnp.zeros_like(x) if nodes[3] is None else nodes[3]

    def _masked(self, x, codes):
        """Each edge's operation chosen by ``codes[e]`` with ``lax.switch``: only the chosen one runs.

        Under ``vmap`` over architectures the switch becomes a select over all five
        (every candidate computed, batched: right for accelerators); unbatched, as
        on CPU, the other branches are never executed.
        """
        nodes = [x, None, None, None]
        for e, (src, tgt) in enumerate(EDGES):
            branches = [_branch(e, op, self.channels, self.calibrate) for op in OPS]
            if self.is_initializing():  # declare every branch's variables before the switch reads them
                for branch in branches:
                    branch(self, nodes[src])
            out = nn.switch(codes[e], branches, self, nodes[src])
            nodes[tgt] = out if nodes[tgt] is None else nodes[tgt] + out
        return nodes[3]


def _branch(e: int, op: str, channels: int, calibrate: bool):
    """The operation ``op`` on edge ``e`` as an ``nn.switch`` branch ``(module, h) -> out``."""
    if op == "none":
        return lambda mdl, h: jnp.zeros_like(h)
    if op == "skip_connect":
        return lambda mdl, h: h
    if op == "avg_pool_3x3":
        return lambda mdl, h: _avg_pool_3x3(h)
    k = CONV_KERNEL[op]
    return lambda mdl, h: _ReLUConvBN(channels, k, 1, calibrate, name=_op_name(e, op), parent=mdl)(h)


_ScanCells = nn.scan(_Cell, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                     in_axes=nn.broadcast, length=CELLS_PER_STAGE)



class _NB201(nn.Module):
    """The whole network; ``ops=None`` builds the masked program (``scalars["ops"]`` chooses)."""

    ops: tuple[str, ...] | None = None
    calibrate: bool = False

    @nn.compact
    def __call__(self, x, scalars):
        cal = self.calibrate
        if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise DataError(f"NAS-Bench-201 input: expected shape [N, {', '.join(map(str, INPUT_SHAPE))}], "
                             f"got {list(x.shape)}")
        codes = None if self.ops is not None else scalars["ops"]
        outs: dict[str, jax.Array] = {}
        y = _Conv(CHANNELS[0], 3, name="stem_conv")(x)
        y = FrozenBatchNorm(BN_EPSILON, name="stem_bn")(y, cal)
        outs["stem"] = y
        for s, c in enumerate(CHANNELS):
            if s > 0:
                y = _Reduction(c, cal, name=f"reduction{s}")(y)
                outs[f"reduction{s}"] = y
            y, stacked = _ScanCells(c, self.ops, cal, name=f"stage{s + 1}")(y, codes)
            for i in range(CELLS_PER_STAGE):
                outs[f"cell{s * CELLS_PER_STAGE + i}"] = stacked[i]
        y = jax.nn.relu(FrozenBatchNorm(BN_EPSILON, name="head_bn")(y, cal))
        y = jnp.mean(y, axis=(1, 2))
        c_last = CHANNELS[-1]
        kernel = self.param("head_kernel", nn.initializers.zeros_init(), (c_last, NUM_CLASSES), x.dtype)
        bias = self.param("head_bias", nn.initializers.zeros_init(), (NUM_CLASSES,), x.dtype)
        y = jnp.dot(y, kernel) + bias[None, :]
        outs["head"] = y
        return y, outs


# --------------------------------------------------------------------------- initialization

def _bn_variables(c: int, lead: tuple[int, ...], dtype):
    shape = (*lead, c)
    return ({"scale": jnp.ones(shape, dtype), "bias": jnp.zeros(shape, dtype)},
            {"mean": jnp.zeros(shape, dtype), "var": jnp.ones(shape, dtype)})


def _draw_layout() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Every random block of the masked program, in draw order: (name, shape)."""
    c0, c_in = CHANNELS[0], INPUT_SHAPE[2]
    out = [("stem", (3, 3, c_in, c0))]
    for s, c in enumerate(CHANNELS):
        if s > 0:
            cp = CHANNELS[s - 1]
            out += [(f"reduction{s}/conv_a", (3, 3, cp, c)), (f"reduction{s}/conv_b", (3, 3, c, c)),
                    (f"reduction{s}/shortcut", (1, 1, cp, c))]
        for op, k in CONV_KERNEL.items():
            out.append((f"stage{s + 1}/{op}", (len(EDGES), CELLS_PER_STAGE, k, k, c, c)))
    out += [("head_kernel", (CHANNELS[-1], NUM_CLASSES)), ("head_bias", (NUM_CLASSES,))]
    return tuple(out)


def _init_variables(key, scalars, ops: tuple[str, ...] | None, dtype):
    """Draws all variables. Kernels ~ N(0, weight_std**2 / fan_in), dense bias ~ N(0, bias_std**2).

    All random numbers come from one standard-normal draw laid out as the
    masked program's variables (``_draw_layout``: every candidate operation on
    every edge of every cell), which is cheap to compile; a direct build takes
    the blocks of its chosen operations, so the masked program and every direct
    build hold the same values at the same place for the same key.
    """
    ws, bs = scalars["weight_std"], scalars["bias_std"]
    layout = _draw_layout()
    sizes = [math.prod(shape) for _, shape in layout]
    z = jax.random.normal(key, (sum(sizes),), dtype)
    blocks, offset = {}, 0
    for (name, shape), size in zip(layout, sizes):
        blocks[name] = z[offset:offset + size].reshape(shape)
        offset += size

    def kernel(name):  # fan_in = k * k * C_in of a [k, k, C_in, C_out] kernel
        w = blocks[name]
        return (ws / math.sqrt(math.prod(w.shape[-4:-1]))) * w

    def relu_conv_bn(name, c_out):
        bn_p, bn_s = _bn_variables(c_out, (), dtype)
        return {"conv": {"kernel": kernel(name)}, "bn": bn_p}, {"bn": bn_s}

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    params["stem_conv"] = {"kernel": kernel("stem")}
    params["stem_bn"], stats["stem_bn"] = _bn_variables(CHANNELS[0], (), dtype)
    for s, c in enumerate(CHANNELS):
        if s > 0:
            pa, sa = relu_conv_bn(f"reduction{s}/conv_a", c)
            pb, sb = relu_conv_bn(f"reduction{s}/conv_b", c)
            params[f"reduction{s}"] = {"conv_a": pa, "conv_b": pb,
                                       "shortcut": {"kernel": kernel(f"reduction{s}/shortcut")}}
            stats[f"reduction{s}"] = {"conv_a": sa, "conv_b": sb}
        stage_p: dict[str, Any] = {}
        stage_s: dict[str, Any] = {}
        for e in range(len(EDGES)):
            chosen = tuple(CONV_KERNEL) if ops is None else ((ops[e],) if ops[e] in CONV_KERNEL else ())
            for op in chosen:
                k = CONV_KERNEL[op]
                bn_p, bn_s = _bn_variables(c, (CELLS_PER_STAGE,), dtype)
                w = blocks[f"stage{s + 1}/{op}"][e]  # [cells, k, k, C, C]
                stage_p[_op_name(e, op)] = {"conv": {"kernel": (ws / math.sqrt(k * k * c)) * w}, "bn": bn_p}
                stage_s[_op_name(e, op)] = {"bn": bn_s}
        if stage_p:
            params[f"stage{s + 1}"], stats[f"stage{s + 1}"] = stage_p, stage_s
    params["head_bn"], stats["head_bn"] = _bn_variables(CHANNELS[-1], (), dtype)
    params["head_kernel"] = (ws / math.sqrt(CHANNELS[-1])) * blocks["head_kernel"]
    params["head_bias"] = bs * blocks["head_bias"]
    return {"params": params, "batch_stats": stats}


# --------------------------------------------------------------------------- builders

def default_scalars(arch: Arch | None = None) -> dict[str, jax.Array]:
    """Default traced scalars: ``weight_std`` = sqrt(2), ``bias_std`` = 0, and ``ops`` (int32 ``[6]``) if given."""
    dtype = jnp.result_type(float)
    out = {"weight_std": jnp.asarray(math.sqrt(2.0), dtype), "bias_std": jnp.asarray(0.0, dtype)}
    if arch is not None:
        out["ops"] = jnp.asarray(encode(arch))
    return out


def _network(ops: tuple[str, ...] | None, scalars) -> Network:
    from zsad.spaces.ops import module_network

    def init(key, scalars):
        return _init_variables(key, scalars, ops, jnp.result_type(float))

    return module_network(lambda calibrate: _NB201(ops, calibrate=calibrate), init, scalars, LAYER_NAMES,
                          INPUT_SHAPE, space="NAS-Bench-201")


def build_network(arch: Arch) -> Network:
    """The network of one architecture, computing only its chosen operations.

    ``none`` edges are skipped, and so are edges whose target cannot reach the
    cell output (their parameters still exist, see :func:`zsad.spaces.nasbench201.param_count`).

    Args:
      arch: an architecture string or six operation names.

    Returns:
      A :class:`zsad.Network`: ``init(key, scalars)``, ``calibrate(variables,
      scalars, x)``, ``apply(variables, scalars, x) -> (logits [N, 10],
      {name: output})`` with outputs named ``LAYER_NAMES`` (stem, cells
      ``cell0..cell14``, ``reduction1``, ``reduction2``, ``head`` = the
      logits); inputs ``x`` are ``[N, 32, 32, 3]``; ``scalars`` are
      ``{"weight_std", "bias_std"}`` (see :func:`default_scalars`).

    Raises:
      SpecError: a malformed architecture.

    Examples:
      >>> net = build_network("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
      >>> variables = net.init(jax.random.key(0), net.scalars)
      >>> x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
      >>> variables = net.calibrate(variables, net.scalars, x)
      >>> net.apply(variables, net.scalars, x)[0].shape
      (4, 10)
    """
    return _network(as_ops(arch), default_scalars())


def build_masked_network() -> Network:
    """One program for the whole space: the operation choice is data, ``scalars["ops"]`` (int ``[6]``, codes 0..4).

    Every edge holds all candidate operations and ``lax.switch`` runs the chosen
    one (``nn.switch``), so for every encoding the outputs
    equal those of :func:`build_network` with the variables of
    :func:`masked_to_direct` (which are also what ``build_network(...).init``
    draws from the same key). ``init``, ``calibrate`` and ``apply`` may be
    ``vmap``-ed over keys and encodings (a chunk of architectures, each with
    its own initialization); under ``vmap`` the switch computes every candidate
    and selects, which suits accelerators. On CPU, call it per architecture (or
    ``lax.map`` over a chunk): unbatched, the switch computes only the chosen
    operations, and no grouped convolutions arise.

    Returns:
      A :class:`zsad.Network` whose default scalars encode the all-``nor_conv_3x3`` cell.

    Examples:
      >>> from zsad.spaces.nasbench201 import all_archs
      >>> net = build_masked_network()
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> scalars = {**net.scalars, "ops": jnp.stack([jnp.asarray(encode(a)) for a in all_archs()[:2]])}
      >>> axes = {"weight_std": None, "bias_std": None, "ops": 0}
      >>> variables = jax.vmap(net.init, in_axes=(0, axes))(keys, scalars)
      >>> variables["params"]["head_kernel"].shape
      (2, 64, 10)
    """
    return _network(None, default_scalars(("nor_conv_3x3",) * len(EDGES)))


def masked_to_direct(variables: Any, arch: Arch) -> Any:
    """Selects, from the masked program's variables, those of :func:`build_network` for ``arch``.

    Keeps every variable outside the cells and, on each edge, the variables of
    the chosen convolution (dead ends included); drops the others.
    """
    ops = as_ops(arch)
    keep = {_op_name(e, op) for e, op in enumerate(ops) if op in CONV_KERNEL}

    def select(collection):
        out = {}
        for name, sub in collection.items():
            if name.startswith("stage"):
                sub = {k: v for k, v in sub.items() if k in keep}
                if not sub:
                    continue
            out[name] = sub
        return out

    return {col: select(tree) for col, tree in variables.items()}
