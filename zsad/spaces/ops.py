"""Cell operations shared by the built-in spaces (flax modules, NHWC).

Every module takes ``calibrate`` (False: frozen batch-norm statistics; True:
the batch's, stored; ``"constant"``: the batch's, held constant) as an
attribute and uses :class:`zsad.arch.build.FrozenBatchNorm`. Convolutions have
no bias; their kernels are initialized ``N(0, 1 / fan_in)`` (``fan_in = k * k *
C_in / groups``) and scaled by ``weight_std`` afterwards (:func:`scale_init`),
so that ``weight_std`` stays a traced scalar.

Operations: :class:`Conv` (strided, dilated, depthwise), :class:`ReLUConvBN`,
:class:`ConvBNReLU`, :class:`SepConv` and :class:`DilConv` (DARTS),
:class:`FactorizedReduce`, :func:`max_pool`, :func:`avg_pool` (padding not
counted), :func:`identity`, :func:`zero`. A depthwise convolution is
:func:`zsad.canonical.depthwise_conv`, not a grouped one, which XLA:CPU runs as
a naive loop.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsad.arch.build import FrozenBatchNorm
from zsad.canonical import depthwise_conv

BN_EPSILON = 1e-5
_UNIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


class Conv(nn.Module):
    """Convolution without bias, kernel ``[k, k, C_in / groups, features]``, symmetric padding
    ``dilation * (k - 1) // 2`` unless ``padding`` is given (``"SAME"`` or an int)."""

    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: int | str | None = None

    @nn.compact
    def __call__(self, x):
        k, d = self.kernel, self.dilation
        w = self.param("kernel", _UNIT, (k, k, x.shape[-1] // self.groups, self.features), x.dtype)
        p = self.padding if self.padding is not None else d * (k - 1) // 2
        pad = p if isinstance(p, str) else ((p, p), (p, p))
        if self.groups > 1 and self.groups == x.shape[-1]:  # depthwise (module docstring)
            if isinstance(pad, str):
                pad = jax.lax.padtype_to_pads(x.shape[1:3], (d * (k - 1) + 1,) * 2, (self.stride,) * 2, pad)
            return depthwise_conv(x, w, (self.stride, self.stride), pad, (d, d))
        return jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), pad, rhs_dilation=(d, d),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=self.groups)


def bn(calibrate, affine: bool = True, name: str = "bn"):
    """The frozen batch norm (epsilon 1e-5) as a function of ``x`` (call inside a compact method)."""
    mod = FrozenBatchNorm(BN_EPSILON, affine, name=name)
    return lambda x: mod(x, calibrate)


class ReLUConvBN(nn.Module):
    """ReLU, convolution, batch norm (DARTS' and NAS-Bench-201's ``ReLUConvBN``)."""

    features: int
    kernel: int
    stride: int = 1
    affine: bool = True
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        y = Conv(self.features, self.kernel, self.stride, name="conv")(jax.nn.relu(x))
        return bn(self.calibrate, self.affine)(y)


class ConvBNReLU(nn.Module):
    """Convolution (``"SAME"`` padding), batch norm, ReLU (NAS-Bench-101's ``conv_bn_relu``)."""

    features: int
    kernel: int
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        y = Conv(self.features, self.kernel, padding="SAME", name="conv")(x)
        return jax.nn.relu(bn(self.calibrate)(y))


class DilConv(nn.Module):
    """ReLU, depthwise ``k x k`` convolution (dilation 2, stride), pointwise convolution, batch norm."""

    features: int
    kernel: int
    stride: int = 1
    dilation: int = 2
    affine: bool = True
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = Conv(c, self.kernel, self.stride, self.dilation, groups=c, name="depthwise")(jax.nn.relu(x))
        y = Conv(self.features, 1, name="pointwise")(y)
        return bn(self.calibrate, self.affine)(y)


class SepConv(nn.Module):
    """Two ``DilConv`` of dilation 1: the first strided and keeping ``C_in``, the second ending in ``features``."""

    features: int
    kernel: int
    stride: int = 1
    affine: bool = True
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = DilConv(c, self.kernel, self.stride, 1, self.affine, self.calibrate, name="sep1")(x)
        return DilConv(self.features, self.kernel, 1, 1, self.affine, self.calibrate, name="sep2")(y)


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convolutions (``features / 2`` each) on the input and on it shifted by one
    pixel, concatenated, batch norm: halves the resolution (even sizes)."""

    features: int
    affine: bool = True
    calibrate: bool | str = False

    @nn.compact
    def __call__(self, x):
        h = jax.nn.relu(x)
        half = self.features // 2
        a = Conv(half, 1, 2, name="conv_1")(h)
        b = Conv(self.features - half, 1, 2, name="conv_2")(h[:, 1:, 1:, :])
        return bn(self.calibrate, self.affine)(jnp.concatenate([a, b], axis=-1))


def max_pool(x, k: int = 3, stride: int = 1, padding: int | str | None = None):
    """Max pool; padding ``k // 2`` (as ``-inf``) unless given."""
    p = k // 2 if padding is None else padding
    pad = p if isinstance(p, str) else ((p, p), (p, p))
    return nn.max_pool(x, (k, k), strides=(stride, stride), padding=pad)


def avg_pool(x, k: int = 3, stride: int = 1):
    """Average pool, padding ``k // 2``, padded pixels not counted."""
    p = k // 2
    return nn.avg_pool(x, (k, k), strides=(stride, stride), padding=((p, p), (p, p)), count_include_pad=False)


def identity(x):
    return x


def zero(x, stride: int = 1):
    return jnp.zeros_like(x[:, ::stride, ::stride, :])


def scale_init(variables, scalars, head: str = "head"):
    """Scales kernels by ``scalars["weight_std"]`` and the classifier bias (``{head}_bias``, drawn N(0, 1))
    by ``scalars["bias_std"]``: kernels become ``N(0, weight_std**2 / fan_in)``, the bias ``N(0, bias_std**2)``."""
    ws, bs = scalars["weight_std"], scalars["bias_std"]

    def scale(path, leaf):
        last = getattr(path[-1], "key", None)
        if last == "kernel" or last == f"{head}_kernel":
            return ws * leaf
        if last == f"{head}_bias":
            return bs * leaf
        return leaf

    params = jax.tree_util.tree_map_with_path(scale, variables["params"])
    return {**variables, "params": params}


def dense_head(mdl: nn.Module, y, classes: int):
    """Global average pool and the classifier ``{head}_kernel`` (N(0, 1 / C)), ``{head}_bias`` (N(0, 1)),
    both scaled by :func:`scale_init`."""
    y = jnp.mean(y, axis=(1, 2))
    kernel = mdl.param("head_kernel", _UNIT, (y.shape[-1], classes), y.dtype)
    bias = mdl.param("head_bias", nn.initializers.normal(1.0), (classes,), y.dtype)
    return jnp.dot(y, kernel) + bias[None, :]


def module_network(make: Callable[[Any], Any], init: Callable, scalars: dict, layer_names: Sequence[str],
                   input_shape: Sequence[int], *, space: str = "", **extra) -> Any:
    """A :class:`zsad._types.Network` of the flax module ``make(calibrate)`` (``calibrate``: False, True or
    ``"constant"``), called as ``module(x, scalars) -> (logits, {layer name: output})``, and its ``init``.

    ``apply``, ``calibrate`` (batch-norm statistics of the batch) and ``apply_calibrating`` run the module;
    ``segment`` cuts at the input only (the output of any named layer). ``space`` prefixes the segment's
    error; ``extra``: further :class:`~zsad._types.Network` fields (``draws``, ``init_with``).
    """
    from zsad._errors import SpecError
    from zsad._types import Network

    run, run_calibrating, run_constant = make(False), make(True), make("constant")
    names = tuple(layer_names)

    def apply(variables, scalars, x):
        return run.apply(variables, x, scalars)

    def calibrate(variables, scalars, x):
        _, updates = run_calibrating.apply(variables, x, scalars, mutable=["batch_stats"])
        return {**variables, **updates}

    def apply_calibrating(variables, scalars, x):
        out, updates = run_constant.apply(variables, x, scalars, mutable=["batch_stats"])
        return out, {**variables, **updates}

    def segment(variables, scalars, h, start, stop):
        if start != 0:
            raise SpecError(f"{space + ': ' if space else ''}a Jacobian starts at the input; "
                            f"got a start after {names[start - 1]}")
        return run.apply(variables, h, scalars)[1][names[stop - 1]]

    return Network(init, apply, calibrate, scalars, names, tuple(input_shape), segment=segment,
                   apply_calibrating=apply_calibrating, **extra)


def network_of(make, scalars: dict, layer_names: tuple[str, ...], input_shape: tuple[int, ...]):
    """:func:`module_network` of ``make`` with flax's own initialization, scaled by :func:`scale_init`."""
    run, dtype = make(False), jnp.result_type(float)

    def init(key, scalars):
        variables = run.init(key, jnp.zeros((1, *input_shape), dtype), scalars)
        return scale_init(dict(variables), scalars)

    return module_network(make, init, scalars, layer_names, input_shape)


def default_scalars(**extra) -> dict:
    """``weight_std`` sqrt(2) (critical for ReLU), ``bias_std`` 0, and ``extra`` (integer arrays as int32)."""
    import math

    import numpy as np

    dtype = jnp.result_type(float)
    out = {"weight_std": jnp.asarray(math.sqrt(2.0), dtype), "bias_std": jnp.asarray(0.0, dtype)}
    for k, v in extra.items():
        v = np.asarray(v)
        out[k] = jnp.asarray(v, jnp.int32 if v.dtype.kind in "iub" else dtype)
    return out
