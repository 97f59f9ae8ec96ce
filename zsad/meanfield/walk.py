"""The mean-field walk of an architecture file: the kernel of a batch, layer by layer.

:func:`propagate` carries the wide-network
:class:`~zsad.meanfield.propagation.KernelState` (length ``q``, the
correlations of many input pairs, the mean feature and the log-slope of the
input-to-here correlation map at :math:`c = 1`) from the statistics of the
*actual* input batch (:func:`batch_state`) through the layers of an
:class:`~zsad.arch.spec.Architecture` to the output. It is the one walk behind
``zsad score``'s mean-field summary (:mod:`zsad.meanfield_arch`) and the
mean-field guesses of ``zsad normalize`` (:mod:`zsad.normalize`).

Input state. With the batch ``x`` flattened to ``[n, d]``:

* ``q_in`` is the mean squared entry over the whole batch;
* the correlations are those of all :math:`m(m-1)/2` pairs of a subsample of
  :math:`m = \\min(n,` :data:`MAX_SAMPLES` :math:`)` samples, evenly spaced in
  the batch (deterministic), uncentred and normalized by the subsample's mean
  squared norm, :math:`c_{ij} = x_i\\cdot x_j / (\\tfrac1m\\sum_k \\|x_k\\|^2)`
  (clipped to :math:`[-1, 1]`). With this normalization
  :math:`1 - \\bar c` is exactly :math:`\\operatorname{Tr}\\Sigma_x / (q\\,d)` up to the
  factor :math:`n/(n-1)`, whatever the sample norms, which is what the NLC's
  numerator needs; the propagation itself treats all inputs as having the
  common length ``q_in`` (the mean-field assumption).

Layers (every map is the infinite-width limit; "per position" means that the
state describes the kernel averaged over spatial positions, which is exact for
the same-position kernel of a convolution when the kernel is the same at every
position -- stationarity, borders ignored; Xiao et al. 2018):

* ``dense`` / ``conv``: :func:`zsad.meanfield.dense` with
  :math:`\\sigma_w^2 =` ``weight_std**2``, :math:`\\sigma_b^2 =` ``bias_std**2``
  (0 without bias), from the layer's own (possibly overridden) init. Normal,
  truncated normal and uniform weights are normalized to variance
  :math:`\\sigma_w^2/\\text{fan-in}`: the same map. Orthogonal (and
  delta-orthogonal) weights give the same map to leading order in 1/width with
  an effective :math:`\\sigma_w^2\\min(1, \\text{fan-in}/\\text{fan-out})`: a
  semi-orthogonal matrix with orthonormal *rows* (fan-in < fan-out) spreads
  the input norm over more outputs. For delta-orthogonal convolutions only the
  centre tap is non-zero, so fan-in is the number of input channels.
* ``activation``: :func:`zsad.meanfield.activation` on the layer's function
  with its parameters and shaping scalars (:func:`zsad.activations.shaped`;
  the shaping may be overridden by layer name, see :func:`propagate`). Its
  input is taken as centred Gaussian of variance ``q`` (exact after a
  dense/conv layer; an approximation directly on the data or after another
  activation).
* ``layer_norm``: :func:`zsad.meanfield.layer_norm` (centre and scale each
  sample over its features; ``q -> 1``).
* ``batch_norm``: ``q -> 1`` after *centring each feature over the batch*, with
  the statistics of the scoring batch frozen as in the measured NLC. Because
  the state holds all pairs of the subsample, the centring is computed on
  their Gram matrix :math:`K`: the batch mean of row ``i`` is estimated as
  :math:`K_{ii}/n + (1 - 1/n)\\,\\mathrm{mean}_{j\\ne i}K_{ij}` (``n`` the batch size),
  :math:`\\tilde K_{ij} = K_{ij} - r_i - r_j + s`, the output correlations are
  :math:`\\tilde K_{ij}/\\sqrt{\\tilde K_{ii}\\tilde K_{jj}}` and the slope at
  :math:`c = 1` is multiplied by :math:`q/\\mathrm{mean}_i\\tilde K_{ii}` (frozen
  statistics divide tangents by the batch standard deviation). Approximations:
  per-feature batch variances are replaced by their mean over features (they
  concentrate for large batches), and the subsample stands for the batch. On
  features whose batch mean is already ~0 this is a plain rescaling of ``q``
  to 1. The centring is what makes ReLU networks with batch norm chaotic.
* ``avg_pool``, ``global_avg_pool``: :func:`zsad.meanfield.avg_pool` with
  spatial correlation 1 (the per-position approximation: the positions of a
  window carry the same kernel, so averaging leaves it unchanged).
* ``max_pool``: the identity on the state, the same per-position approximation
  (the max of identical features is that feature). A max over partially
  correlated positions is itself a nonlinearity (and raises the mean and
  second moment); that part of the NLC is not predicted (on a small ReLU CNN,
  a 2x2 max pool raised the measured NLC from 1.40 to 1.71), and
  :attr:`Walk.approximations` lists it.
* ``flatten``: the identity (the per-position state *is* the average over the
  flattened entries, so a following dense layer sees exactly it).
* ``residual``: branch and shortcut propagated from the same input state and
  combined by :func:`zsad.meanfield.residual` with their scales; ``block``:
  its layers, ``repeat`` times.

The per-layer maps run eagerly except the quadrature-heavy ones (activation,
batch norm), which are jitted with the activation *name* static and every
scalar traced, so that architectures differing only in scalars (other shaping,
other init) reuse the compiled code.

References:
  B. Poole et al., NeurIPS 2016; S. S. Schoenholz et al., ICLR 2017;
  L. Xiao et al., Dynamical isometry and a mean field theory of CNNs, ICML 2018;
  G. Yang et al., A mean field theory of batch normalization, ICLR 2019;
  G. Philipp, arXiv:2105.12210, 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad._errors import DataError
from zsad.activations import get_activation, shaped
from zsad.arch.shapes import layer_output_shape
from zsad.arch.spec import (
    Activation, Architecture, AvgPool, BatchNorm, Conv, Dense, Flatten, GlobalAvgPool, Layer, LayerNorm, MaxPool,
    Residual, Shaping, named_layers,
)
from zsad.meanfield.propagation import KernelState, activation, avg_pool, dense, input_state, layer_norm, residual

#: Samples of the batch whose pairwise correlations are propagated (all pairs).
MAX_SAMPLES = 64
#: 2-D quadrature order used for the many-pair propagation; with the polar rule
#: (kinks on arc boundaries) it agrees with the default (32, 32) to ~1e-6 for
#: every registry activation at three times the cost.
ORDER_2D_PAIRS = (16, 16)


# --------------------------------------------------------------------------- activations (static name, traced scalars)

#: Hashable identity of an activation: ``(name, ((param, value), ...), (alpha, beta, gain))``.
ActKey = tuple[str, tuple[tuple[str, float], ...], tuple[float, float, float]]


def activation_key(layer: Activation) -> ActKey:
    """Hashable identity of an activation: name, parameters, shaping ``(alpha, beta, gain)``."""
    sh = layer.shaping
    return layer.fn, tuple(layer.params), (sh.alpha, sh.beta, sh.gain)


def default_dtype():
    """The default float dtype (float32, or float64 under ``jax_enable_x64``)."""
    return jnp.result_type(float)


def key_values(key: ActKey) -> jax.Array:
    """The traced scalars of an activation: ``[alpha, beta, gain, *params]``."""
    _, params, shaping = key
    return jnp.asarray([*shaping, *(v for _, v in params)], dtype=default_dtype())


def key_static(key: ActKey) -> tuple[str, tuple[str, ...]]:
    """The static part of an activation: its name and parameter names."""
    return key[0], tuple(k for k, _ in key[1])


def key_function(fn: str, names: tuple[str, ...], values: jax.Array):
    """The elementwise function of an activation from its static part and traced :func:`key_values`."""
    return shaped(get_activation(fn), values[0], values[1], values[2],
                  {k: values[3 + i] for i, k in enumerate(names)})


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _activation_step(state: KernelState, values, *, fn, names):
    return activation(state, key_function(fn, names, values), order_2d=ORDER_2D_PAIRS)


# --------------------------------------------------------------------------- input statistics

def input_statistics(x: np.ndarray, max_samples: int = MAX_SAMPLES) -> tuple[float, float, np.ndarray]:
    """``(q_in, mean_in, c_in)`` of a batch ``x`` of shape ``[n, *shape]`` (see the module docstring).

    ``c_in`` holds the correlations of the ``m(m-1)/2`` pairs ``i < j`` of an
    evenly spaced subsample of ``m = min(n, max_samples)`` samples, in
    ``numpy.triu_indices(m, 1)`` order.

    Raises:
      DataError: fewer than 2 samples, non-finite values, or all-zero inputs.

    Examples:
      >>> q, mean, c = input_statistics(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
      >>> round(q, 4), round(mean, 4), [round(float(v), 4) for v in c]
      (0.6667, 0.6667, [0.0, 0.75, 0.75])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise DataError(f"meanfield: x: expected a batch of at least 2 samples [n, *shape], got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise DataError("meanfield: x: the samples contain NaN or infinite values")
    flat = x.reshape(x.shape[0], -1)
    q_in = float(np.mean(flat**2))
    if not q_in > 0.0:
        raise DataError("meanfield: x: every input is zero (no length to propagate)")
    m = min(flat.shape[0], max_samples)
    sub = flat[np.unique(np.linspace(0, flat.shape[0] - 1, m).round().astype(int))]
    gram = sub @ sub.T
    norm2 = float(np.mean(np.diag(gram)))
    iu = np.triu_indices(sub.shape[0], 1)
    c_in = np.clip(gram[iu] / norm2, -1.0, 1.0)
    return q_in, float(np.mean(flat)), c_in


class BatchState(NamedTuple):
    """The start of a walk: the input state of a batch.

    Attributes:
      state: the :class:`~zsad.meanfield.propagation.KernelState` of the input.
      c_in: the input correlations of the tracked pairs (as in ``state.c``).
      q_in: mean squared input entry.
      m: samples of the subsample whose pairs are tracked.
      n: samples of the batch (batch norm's statistics are over it).
    """

    state: KernelState
    c_in: jax.Array
    q_in: float
    m: int
    n: int


def batch_state(x: np.ndarray, max_samples: int = MAX_SAMPLES) -> BatchState:
    """The :class:`BatchState` of a batch ``x`` ``[n, *shape]`` (:func:`input_statistics`).

    Raises:
      DataError: fewer than 2 samples, non-finite values, or all-zero inputs.
    """
    q_in, mean_in, c_in = input_statistics(x, max_samples)
    c = jnp.asarray(c_in, dtype=default_dtype())
    m = int(round((1 + math.sqrt(1 + 8 * c_in.size)) / 2))
    return BatchState(input_state(q_in, c, mean_in), c, q_in, m, int(np.shape(x)[0]))


# --------------------------------------------------------------------------- batch norm on the pair Gram matrix

@functools.partial(jax.jit, static_argnames=("m", "n"))
def batch_norm(state: KernelState, *, m: int, n: int) -> KernelState:
    """Batch norm with the batch statistics frozen, on the Gram matrix of all ``m(m-1)/2`` tracked pairs
    of ``m`` samples out of a batch of ``n`` (see the module docstring).

    Examples:
      >>> import jax.numpy as jnp
      >>> from zsad.meanfield import input_state
      >>> out = batch_norm(input_state(2.0, jnp.zeros(3)), m=3, n=3)  # orthogonal inputs, centred
      >>> round(float(out.q), 4), [round(float(v), 4) for v in out.c]
      (1.0, [-0.5, -0.5, -0.5])
    """
    iu = np.triu_indices(m, 1)
    q = state.q
    off = jnp.zeros((m, m), state.c.dtype).at[iu].set(state.c)
    corr = off + off.T + jnp.eye(m, dtype=state.c.dtype)
    gram = q * corr
    off_mean_row = (jnp.sum(gram, axis=1) - q) / (m - 1)
    row = q / n + (1.0 - 1.0 / n) * off_mean_row
    total = q / n + (1.0 - 1.0 / n) * jnp.mean(off_mean_row)
    centred = gram - row[:, None] - row[None, :] + total
    diag = jnp.maximum(jnp.diag(centred), jnp.finfo(gram.dtype).tiny)
    var = jnp.mean(diag)
    c = centred[iu] / jnp.sqrt(diag[iu[0]] * diag[iu[1]])
    return KernelState(jnp.ones_like(q), jnp.clip(c, -1.0, 1.0), jnp.zeros_like(state.mean),
                       state.log_slope + jnp.log(q / var))


# --------------------------------------------------------------------------- the walk

@dataclass(frozen=True)
class HiddenLayer:
    """A hidden layer: a dense/conv layer and the activation it feeds (or follows)."""

    weight_var: float
    bias_var: float
    act: ActKey
    name: str


def layer_variances(layer: Dense | Conv, shape: tuple[int, ...]) -> tuple[float, float]:
    """``(sigma_w^2, sigma_b^2)`` of a dense/conv layer on inputs of ``shape`` (no batch axis), with the
    orthogonal-init factor ``min(1, fan-in/fan-out)`` (see the module docstring).

    Examples:
      >>> from zsad.arch.spec import Dense, Init
      >>> layer_variances(Dense(features=8, init=Init(weight_std=2.0, dist="orthogonal")), (4,))
      (2.0, 0.0)
    """
    init = layer.init
    wv = init.weight_std**2
    if init.dist in ("orthogonal", "delta_orthogonal"):
        c_in = shape[-1]
        if isinstance(layer, Conv) and init.dist == "orthogonal":
            fan_in = math.prod(layer.kernel) * c_in
        else:
            fan_in = c_in
        wv *= min(1.0, fan_in / layer.features)
    bv = init.bias_std**2 if layer.use_bias else 0.0
    return wv, bv


_APPROXIMATIONS = {
    Conv: "conv: per-position kernel (stationary, borders ignored)",
    AvgPool: "avg_pool: per-position approximation (pooling leaves the kernel unchanged)",
    GlobalAvgPool: "global_avg_pool: per-position approximation (pooling leaves the kernel unchanged)",
    MaxPool: "max_pool: treated as the identity, so its own nonlinearity is not part of the prediction",
    BatchNorm: "batch_norm: batch centring on the subsample's Gram matrix, mean per-feature variance",
}


class _ShapeArch:
    """Stands in for the architecture in shape errors (shapes were validated at parse time)."""

    source = None


_SHAPE_ARCH: Any = _ShapeArch()


@dataclass
class Walk:
    """One walk through a network's layers, and what it saw on the way.

    Attributes:
      n_batch, m: samples of the batch and of the subsample whose pairs are tracked.
      shaping: activation shaping by layer name, used instead of the layers' own.
      hidden: every activation paired with its dense/conv layer (see
        :func:`zsad.meanfield_arch.meanfield_summary`), in network order.
      activations: activation layers seen.
      affine: ``(sigma_w^2, sigma_b^2)`` of every dense/conv layer.
      approximations: approximated layer kinds and the layers of each.
      activation_inputs: the input length ``q`` of every activation layer, by name.
    """

    n_batch: int
    m: int
    shaping: Mapping[str, Shaping] = field(default_factory=dict)
    hidden: list[HiddenLayer] = field(default_factory=list)
    activations: int = 0
    affine: list[tuple[float, float]] = field(default_factory=list)
    approximations: dict[str, list[str]] = field(default_factory=dict)
    activation_inputs: dict[str, jax.Array] = field(default_factory=dict)

    def sequence(self, layers: Sequence[Layer], state: KernelState, shape: tuple[int, ...], prefix: str,
                 rows: list | None) -> tuple[KernelState, tuple[int, ...]]:
        """The state and shape after ``layers``; ``rows`` (if given) gets ``(name, before, after)`` per layer."""
        last_affine: tuple[float, float] | None = None
        waiting: list[tuple[ActKey, str]] = []  # activations not preceded by a dense/conv in this sequence
        for name, layer in named_layers(tuple(layers), prefix):
            if isinstance(layer, Activation) and name in self.shaping:
                layer = dataclasses.replace(layer, shaping=self.shaping[name])
            before = state
            state, out_shape = self.layer(layer, name, state, shape)
            if isinstance(layer, (Dense, Conv)):
                wv, bv = layer_variances(layer, shape)
                self.affine.append((wv, bv))
                self.hidden.extend(HiddenLayer(wv, bv, act, act_name) for act, act_name in waiting)
                waiting = []
                last_affine = (wv, bv)
            elif isinstance(layer, Activation):
                self.activations += 1
                if last_affine is not None:
                    self.hidden.append(HiddenLayer(*last_affine, activation_key(layer), name))
                    last_affine = None
                else:
                    waiting.append((activation_key(layer), name))
            elif isinstance(layer, Residual):
                last_affine, waiting = None, []
            shape = out_shape
            if rows is not None:
                rows.append((name, before, state))
        return state, shape

    def layer(self, layer: Layer, name: str, state: KernelState, shape: tuple[int, ...]):
        """The state and shape after one (expanded) layer."""
        if type(layer) in _APPROXIMATIONS:
            self.approximations.setdefault(_APPROXIMATIONS[type(layer)], []).append(name)
        out_shape = layer_output_shape(_SHAPE_ARCH, layer, shape) if not isinstance(layer, Residual) else None
        if isinstance(layer, (Dense, Conv)):
            return dense(state, *layer_variances(layer, shape)), out_shape
        if isinstance(layer, Activation):
            self.activation_inputs[name] = state.q
            key = activation_key(layer)
            fn, names = key_static(key)
            return _activation_step(state, key_values(key), fn=fn, names=names), out_shape
        if isinstance(layer, LayerNorm):
            return layer_norm(state), out_shape
        if isinstance(layer, BatchNorm):
            return batch_norm(state, m=self.m, n=self.n_batch), out_shape
        if isinstance(layer, (AvgPool, GlobalAvgPool)):
            window = math.prod(layer.window) if isinstance(layer, AvgPool) else max(1, math.prod(shape[:-1]))
            return avg_pool(state, window, spatial_corr=1.0), out_shape
        if isinstance(layer, (MaxPool, Flatten)):
            return state, out_shape
        if isinstance(layer, Residual):
            branch, b_shape = self.sequence(layer.branch, state, shape, f"{name}/branch.", None)
            short, _ = self.sequence(layer.shortcut, state, shape, f"{name}/shortcut.", None)
            return residual(short, branch, layer.branch_scale, layer.shortcut_scale), b_shape
        raise TypeError(f"meanfield: unsupported layer {type(layer).__name__}")


class Propagation(NamedTuple):
    """Result of :func:`propagate`.

    Attributes:
      state: the output state.
      walk: the :class:`Walk` (hidden layers, approximations, activation inputs).
      rows: ``(name, before, after)`` states of every top-level layer (blocks
        unrolled), or empty when not asked for.
    """

    state: KernelState
    walk: Walk
    rows: list[tuple[str, KernelState, KernelState]]


def propagate(arch: Architecture, start: BatchState, shaping: Mapping[str, Shaping] | None = None, *,
              rows: bool = False) -> Propagation:
    """The mean-field state of ``arch``'s output, from the input batch state ``start``.

    Args:
      arch: an architecture with ``layers`` (not a ``module:`` entry point).
      start: :func:`batch_state` of the input batch.
      shaping: shaping scalars by activation-layer name (the names of
        :func:`~zsad.arch.spec.named_layers`, e.g. ``"2.residual/branch.1.relu"``),
        used instead of the layers' own.
      rows: whether to keep the states before and after every top-level layer.

    Returns:
      :class:`Propagation`.

    Examples:
      >>> from zsad.arch.spec import parse_architecture
      >>> arch = parse_architecture({"name": "m", "input": {"shape": [4]}, "init": {"weight_std": 2.0},
      ...     "layers": [{"type": "dense", "features": 8}, {"type": "activation", "fn": "relu"}]})
      >>> p = propagate(arch, batch_state(np.eye(4)))  # q = 4 * 1/4 after the dense layer, then q/2
      >>> round(float(p.walk.activation_inputs["1.relu"]), 4), round(float(p.state.q), 4)
      (1.0, 0.5)
    """
    walk = Walk(n_batch=start.n, m=start.m, shaping=dict(shaping or {}))
    kept: list[tuple[str, KernelState, KernelState]] = []
    state, _ = walk.sequence(arch.layers, start.state, tuple(arch.input.shape), "", kept if rows else None)
    return Propagation(state, walk, kept)
