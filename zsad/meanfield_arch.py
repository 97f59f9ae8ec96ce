"""Mean-field kernel propagation through an architecture file, and phase diagrams.

:func:`meanfield_profile` walks an :class:`~zsad.arch.spec.Architecture` layer
by layer and carries the wide-network :class:`~zsad.meanfield.KernelState`
(length ``q``, the correlations of many input pairs, the mean feature and the
log-slope of the input-to-here correlation map at :math:`c = 1`) from the
statistics of the *actual* input batch to the output. :func:`meanfield_summary`
adds the fixed point of the network's repeated hidden layer (SPEC §3) and the
predicted NLC; it is the ``meanfield`` entry of ``zsad score``.

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
  common length ``q_in`` (the mean-field assumption of SPEC §3).

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
  with its parameters and shaping scalars (:func:`zsad.activations.shaped`).
  Its input is taken as centred Gaussian of variance ``q`` (exact after a
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
  features whose batch mean is already ~0 this is the plain "rescale q to 1"
  of SPEC §3.
* ``avg_pool``, ``global_avg_pool``: :func:`zsad.meanfield.avg_pool` with
  spatial correlation 1 (the per-position approximation: the positions of a
  window carry the same kernel, so averaging leaves it unchanged).
* ``max_pool``: the identity on the state, the same per-position approximation
  (the max of identical features is that feature). A max over partially
  correlated positions is itself a nonlinearity (and raises the mean and
  second moment); that part of the NLC is not predicted (on a small ReLU CNN,
  a 2x2 max pool raised the measured NLC from 1.40 to 1.71), and the summary
  lists it under ``approximations``.
* ``flatten``: the identity (the per-position state *is* the average over the
  flattened entries, so a following dense layer sees exactly it).
* ``residual``: branch and shortcut propagated from the same input state and
  combined by :func:`zsad.meanfield.residual` with their scales; ``block``:
  its layers, ``repeat`` times.

The per-layer maps run eagerly except the quadrature-heavy ones (activation,
fixed points, batch norm), which are jitted with the activation *name* static
and every scalar traced, so that architectures differing only in scalars reuse
the compiled code.

References:
  B. Poole et al., NeurIPS 2016; S. S. Schoenholz et al., ICLR 2017;
  L. Xiao et al., Dynamical isometry and a mean field theory of CNNs, ICML 2018;
  G. Philipp, arXiv:2105.12210, 2021; SPEC sections 3 and 5.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad import meanfield as mf
from zsad._errors import DataError, SpecError
from zsad.activations import ACTIVATION_PARAMS, ACTIVATIONS, HOMOGENEOUS, closest, get_activation, shaped
from zsad.arch.shapes import layer_output_shape
from zsad.arch.spec import (
    Activation, Architecture, AvgPool, BatchNorm, Block, Conv, Dense, Flatten, GlobalAvgPool, Layer,
    LayerNorm, MaxPool, Residual, Shaping, expand, named_layers,
)
from zsad.meanfield import KernelState
from zsad.quadrature import ORDER_1D

#: Samples of the batch whose pairwise correlations are propagated (all pairs).
MAX_SAMPLES = 64
#: 2-D quadrature order used for the many-pair propagation; with the polar rule
#: (kinks on arc boundaries) it agrees with the default (32, 32) to ~1e-6 for
#: every registry activation at three times the cost.
ORDER_2D_PAIRS = (16, 16)

#: Keys of the fixed-point part of :func:`meanfield_summary`.
SUMMARY_KEYS = ("q_star", "q_converged", "chi1", "chi_q", "c_star", "chi_c", "xi_q", "xi_c", "phase",
                "nlc_predicted")


# --------------------------------------------------------------------------- activations (static name, traced scalars)

ActKey = tuple[str, tuple[tuple[str, float], ...], tuple[float, float, float]]


def activation_key(layer: Activation) -> ActKey:
    """Hashable identity of an activation: name, parameters, shaping ``(alpha, beta, gain)``."""
    sh = layer.shaping
    return layer.fn, tuple(layer.params), (sh.alpha, sh.beta, sh.gain)


def _dtype():
    return jnp.result_type(float)


def _values(key: ActKey) -> jax.Array:
    """The traced scalars of an activation: ``[alpha, beta, gain, *params]``."""
    _, params, shaping = key
    return jnp.asarray([*shaping, *(v for _, v in params)], dtype=_dtype())


def _phi(fn: str, names: tuple[str, ...], values: jax.Array):
    """The elementwise function of an activation from its static name and traced scalars."""
    return shaped(get_activation(fn), values[0], values[1], values[2],
                  {k: values[3 + i] for i, k in enumerate(names)})


def _static(key: ActKey) -> tuple[str, tuple[str, ...]]:
    return key[0], tuple(k for k, _ in key[1])


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _activation_step(state: KernelState, values, *, fn, names):
    out = mf.activation(state, _phi(fn, names, values), order_2d=ORDER_2D_PAIRS)
    return out


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _fixed_point(values, weight_var, bias_var, *, fn, names) -> mf.MeanField:
    return mf.fixed_point_summary(_phi(fn, names, values), weight_var, bias_var)


# --------------------------------------------------------------------------- input statistics

def input_statistics(x: np.ndarray, max_samples: int = MAX_SAMPLES) -> tuple[float, float, np.ndarray]:
    """``(q_in, mean_in, c_in)`` of a batch ``x`` of shape ``[n, *shape]`` (see the module docstring).

    ``c_in`` holds the correlations of the ``m(m-1)/2`` pairs ``i < j`` of an
    evenly spaced subsample of ``m = min(n, max_samples)`` samples, in
    ``numpy.triu_indices(m, 1)`` order.

    Raises:
      DataError: fewer than 2 samples, non-finite values, or all-zero inputs.
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


# --------------------------------------------------------------------------- batch norm on the pair Gram matrix

@functools.partial(jax.jit, static_argnames=("m", "n"))
def _batch_norm_step(state: KernelState, *, m: int, n: int) -> KernelState:
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
class _Hidden:
    """A hidden layer: a dense/conv layer and the activation it feeds (or follows)."""

    weight_var: float
    bias_var: float
    act: ActKey
    name: str


@dataclass
class _Walk:
    n_batch: int
    m: int
    q_in: float
    hidden: list[_Hidden] = field(default_factory=list)
    activations: int = 0
    affine: list[tuple[float, float]] = field(default_factory=list)
    approximations: dict[str, list[str]] = field(default_factory=dict)

    def sequence(self, layers: Sequence[Layer], state: KernelState, shape: tuple[int, ...], prefix: str,
                 rows: list | None) -> tuple[KernelState, tuple[int, ...]]:
        last_affine: tuple[float, float, str] | None = None
        waiting: list[tuple[ActKey, str]] = []  # activations not preceded by a dense/conv in this sequence
        for name, layer in named_layers(tuple(layers), prefix):
            before = state
            state, out_shape = self.layer(layer, name, state, shape)
            if isinstance(layer, (Dense, Conv)):
                wv, bv = self._variances(layer, shape)
                self.affine.append((wv, bv))
                for act, act_name in waiting:
                    self.hidden.append(_Hidden(wv, bv, act, act_name))
                waiting = []
                last_affine = (wv, bv, name)
            elif isinstance(layer, Activation):
                self.activations += 1
                if last_affine is not None:
                    self.hidden.append(_Hidden(last_affine[0], last_affine[1], activation_key(layer), name))
                    last_affine = None
                else:
                    waiting.append((activation_key(layer), name))
            elif isinstance(layer, Residual):
                last_affine, waiting = None, []
            shape = out_shape
            if rows is not None:
                rows.append((name, before, state))
        return state, shape

    @staticmethod
    def _variances(layer: Dense | Conv, shape: tuple[int, ...]) -> tuple[float, float]:
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

    def layer(self, layer: Layer, name: str, state: KernelState, shape: tuple[int, ...]):
        if type(layer) in _APPROXIMATIONS:
            self.approximations.setdefault(_APPROXIMATIONS[type(layer)], []).append(name)
        out_shape = layer_output_shape(_SHAPE_ARCH, layer, shape) if not isinstance(layer, Residual) else None
        if isinstance(layer, (Dense, Conv)):
            wv, bv = self._variances(layer, shape)
            return mf.dense(state, wv, bv), out_shape
        if isinstance(layer, Activation):
            key = activation_key(layer)
            fn, names = _static(key)
            return _activation_step(state, _values(key), fn=fn, names=names), out_shape
        if isinstance(layer, LayerNorm):
            return mf.layer_norm(state), out_shape
        if isinstance(layer, BatchNorm):
            return _batch_norm_step(state, m=self.m, n=self.n_batch), out_shape
        if isinstance(layer, (AvgPool, GlobalAvgPool)):
            window = math.prod(layer.window) if isinstance(layer, AvgPool) else max(1, math.prod(shape[:-1]))
            return mf.avg_pool(state, window, spatial_corr=1.0), out_shape
        if isinstance(layer, (MaxPool, Flatten)):
            return state, out_shape
        if isinstance(layer, Block):
            return self.sequence(tuple(expand((layer,))), state, shape, f"{name}/", None)
        if isinstance(layer, Residual):
            branch, b_shape = self.sequence(layer.branch, state, shape, f"{name}/branch.", None)
            short, _ = self.sequence(layer.shortcut, state, shape, f"{name}/shortcut.", None)
            return mf.residual(short, branch, layer.branch_scale, layer.shortcut_scale), b_shape
        raise TypeError(f"meanfield: unsupported layer {type(layer).__name__}")


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


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _check_input(arch: Architecture, x) -> np.ndarray:
    x = np.asarray(x)
    if tuple(x.shape[1:]) != tuple(arch.input.shape):
        raise DataError(f"meanfield: x: expected samples of shape [n, {', '.join(map(str, arch.input.shape))}], "
                        f"got an array of shape {list(x.shape)}")
    return x


def _propagate(arch: Architecture, x) -> tuple[list[dict], KernelState, jax.Array, _Walk]:
    x = _check_input(arch, x)
    q_in, mean_in, c_in = input_statistics(x)
    c = jnp.asarray(c_in, dtype=_dtype())
    m = int(round((1 + math.sqrt(1 + 8 * c_in.size)) / 2))
    walk = _Walk(n_batch=int(x.shape[0]), m=m, q_in=q_in)
    rows: list[tuple[str, KernelState, KernelState]] = []
    state, _ = walk.sequence(arch.layers, mf.input_state(q_in, c, mean_in), tuple(arch.input.shape), "", rows)
    profile = []
    for name, before, after in rows:
        nlc = mf.predicted_nlc(after, c)
        profile.append({
            "layer": name,
            "q": _num(after.q),
            "c_mean": _num(jnp.mean(after.c)),
            "chi": _num(jnp.exp(after.log_slope - before.log_slope)),
            "nlc_predicted": _num(nlc),
        })
    return profile, state, c, walk


# --------------------------------------------------------------------------- public API

def meanfield_profile(arch: Architecture, x: np.ndarray) -> list[dict]:
    """Mean-field state after every top-level layer of ``arch``, from the input batch ``x``.

    Each row has ``layer`` (the name of :func:`~zsad.arch.spec.named_layers`,
    e.g. ``"3.tanh"``), ``q`` (mean squared feature), ``c_mean`` (mean
    correlation of the tracked input pairs), ``chi`` (slope of *that layer's*
    correlation map at :math:`c = 1`; their product over a prefix is its
    :math:`C'(1)`) and ``nlc_predicted`` (predicted NLC of the prefix ending at
    the layer, :func:`zsad.meanfield.predicted_nlc`). Non-finite values are
    ``None``. Residual layers appear as one row (their sub-layers are inside).

    Args:
      arch: an architecture with ``layers`` (not a ``module:`` entry point).
      x: the input batch, shape ``[n, *arch.input.shape]``, ``n >= 2``.

    Returns:
      One dict per top-level layer (blocks unrolled), in order.

    Raises:
      SpecError: ``arch`` is a flax entry point.
      DataError: ``x`` has the wrong shape or unusable values.
    """
    if arch.module is not None:
        raise SpecError(f"{arch.name}: meanfield: a module entry point (flax or PyTorch) has no layer list to propagate")
    return _propagate(arch, x)[0]


#: Slopes of the length map within this of 1 count as marginal (float32 rounding of an exact 1).
_MARGINAL = 1e-5

_DIVERGES = "the length map has no finite fixed point: q grows without bound with depth"
_EVERY_Q = "every q is a fixed point: the length map is the identity (positively homogeneous activation, no bias)"


def _q_star_status(q, converged, chi_q, bias_var, fn: str) -> tuple[float | None, str | None]:
    """``(q*, None)`` for a genuine fixed point, else ``(None, reason)``.

    The solver's relative tolerance also accepts the huge iterates of a length
    that grows linearly (slope 1 with a bias, e.g. ReLU at :math:`\\sigma_w^2 = 2`,
    :math:`\\sigma_b^2 > 0`), so a marginal slope with a bias means divergence; a
    marginal slope without bias for a homogeneous activation means every ``q``
    is fixed.
    """
    q, chi_q = float(q), float(chi_q)
    if not (bool(converged) and math.isfinite(q)):
        return None, _DIVERGES
    if math.isfinite(chi_q) and chi_q >= 1.0 - _MARGINAL:
        if bias_var > 0.0:
            return None, _DIVERGES
        if fn in HOMOGENEOUS:
            return None, _EVERY_Q
    return q, None


def _fixed_point_dict(hidden: _Hidden) -> tuple[dict, dict]:
    fn, names = _static(hidden.act)
    res = jax.device_get(_fixed_point(_values(hidden.act), jnp.asarray(hidden.weight_var, _dtype()),
                                      jnp.asarray(hidden.bias_var, _dtype()), fn=fn, names=names))
    q_star, q_reason = _q_star_status(res.q_star, res.q_converged, res.chi_q, hidden.bias_var, fn)
    out: dict[str, Any] = {
        "q_star": q_star,
        "q_converged": q_star is not None,
        "chi1": _num(res.chi1),
        "chi_q": _num(res.chi_q),
        "c_star": _num(res.c_star),
        "chi_c": _num(res.chi_c),
    }
    reasons: dict[str, str] = {}
    if q_reason is not None:
        reasons["q_star_reason"] = q_reason + (" (chi1, chi_q and c* are taken at the last iterate: its large-q "
                                               "limit)" if q_reason == _DIVERGES else "")
    for key, value in (("xi_q", res.xi_q), ("xi_c", res.xi_c)):
        v = float(value)
        out[key] = v if math.isfinite(v) and not (key == "xi_q" and q_reason == _DIVERGES) else None
        if out[key] is None:
            if key == "xi_c" and q_star == 0.0:
                reasons["xi_c_reason"] = ("infinite: at q* = 0 the layers act linearly and keep correlations; "
                                          "the signal itself shrinks instead (see chi1 and xi_q)")
            elif key == "xi_c":
                reasons["xi_c_reason"] = "infinite at the edge of chaos (the correlation map is marginal at c*)"
            elif q_reason == _DIVERGES:
                reasons["xi_q_reason"] = "undefined: the length map has no finite fixed point"
            else:
                reasons["xi_q_reason"] = "infinite: the length map is marginal at q* (chi_q = 1)"
    out["phase"] = mf.phase(out["chi1"]) if out["chi1"] is not None else None
    if out["phase"] is None:
        reasons["phase_reason"] = "chi1 is not finite"
    return out, reasons


def meanfield_summary(arch: Architecture, x: np.ndarray) -> dict:
    """Mean-field summary of ``arch`` at infinite width, with the input statistics of ``x``.

    Keys (SPEC §5 ``meanfield``): ``q_star``, ``q_converged``, ``chi1``, ``chi_q``,
    ``c_star``, ``chi_c``, ``xi_q``, ``xi_c``, ``phase`` (``'ordered'``,
    ``'critical'`` or ``'chaotic'``, :func:`zsad.meanfield.phase`),
    ``nlc_predicted``, ``hidden`` (the layer the fixed point describes),
    ``q_in``, ``c_in_mean``, ``samples`` (size of the subsample whose pairs are
    propagated), ``approximations`` (one line per approximated layer kind
    present, with the layers; see the module docstring) and ``layers``
    (:func:`meanfield_profile`). JSON-safe: every
    value that cannot be computed, or is infinite, is ``None`` with a
    ``<key>_reason`` string beside it (``reason`` when the whole fixed-point
    part is missing); e.g. ``xi_c`` at the edge of chaos is ``None`` with
    ``xi_c_reason = "infinite at the edge of chaos ..."``.

    Which fixed point. The network's *repeated hidden layer*: every activation
    is paired with the nearest dense/conv layer before it in the same layer
    sequence (normalization and pooling in between are skipped; an activation
    that opens a sequence, as in pre-activation residual branches, is paired
    with the next one), and the most common
    :math:`(\\sigma_w^2, \\sigma_b^2, \\phi)` among these pairs wins (ties: the
    first in network order). :math:`q^*`, :math:`\\chi_1`, :math:`c^*`,
    :math:`\\xi_q`, :math:`\\xi_c` are those of the map
    :math:`q \\mapsto \\sigma_w^2\\mathbb E\\phi(\\sqrt q z)^2 + \\sigma_b^2`
    (:func:`zsad.meanfield.fixed_point_summary`). A network without
    activations reports the fixed point of its most common dense/conv layer as
    a linear map (:math:`\\phi` = identity, so :math:`\\chi_1 = \\sigma_w^2`, the
    per-layer gradient scale), with a ``reason`` saying so.

    The predicted NLC is *not* derived from that fixed point: it is the exact
    layer-by-layer propagation of the whole network from the batch's own
    statistics (first-layer lengths :math:`q^1 = \\sigma_w^2 q_{\\rm in} + \\sigma_b^2`,
    every layer's own scalars, normalizations, residual sums),

    .. math::
        \\mathrm{NLC}^2 \\approx C_f'(1)\\,\\frac{1-\\overline{c_{\\rm in}}}{1-\\overline{C_f(c_{\\rm in})}}

    (SPEC §3; :func:`zsad.meanfield.predicted_nlc`).

    Args:
      arch: a parsed architecture.
      x: the input batch ``[n, *arch.input.shape]`` (the scoring batch).

    Returns:
      A JSON-serializable dict.

    Raises:
      DataError: ``x`` has the wrong shape or unusable values.
    """
    if arch.module is not None:
        out: dict[str, Any] = {k: None for k in SUMMARY_KEYS}
        out["reason"] = ("a module entry point (module:, flax or PyTorch) is a black box: the mean-field kernel can only be "
                         "propagated through an architecture file's layers")
        out["layers"] = []
        return out
    profile, state, c_in, walk = _propagate(arch, x)
    out = {}
    reasons: dict[str, str] = {}
    hidden = None
    if walk.hidden:
        counts = Counter((h.weight_var, h.bias_var, h.act) for h in walk.hidden)
        key = counts.most_common(1)[0][0]
        members = [h for h in walk.hidden if (h.weight_var, h.bias_var, h.act) == key]
        hidden = members[0]
        fp, fp_reasons = _fixed_point_dict(hidden)
        out.update(fp)
        reasons.update(fp_reasons)
        out["hidden"] = {"activation": hidden.act[0], "params": dict(hidden.act[1]),
                         "shaping": dict(zip(("alpha", "beta", "gain"), hidden.act[2])),
                         "weight_var": hidden.weight_var, "bias_var": hidden.bias_var,
                         "count": len(members), "layers": [h.name for h in members]}
    elif walk.affine:
        wv, bv = Counter(walk.affine).most_common(1)[0][0]
        linear = _Hidden(wv, bv, ("identity", (), (1.0, 1.0, 1.0)), "")
        fp, fp_reasons = _fixed_point_dict(linear)
        out.update(fp)
        reasons.update(fp_reasons)
        out["hidden"] = {"activation": "identity", "params": {}, "shaping": {"alpha": 1.0, "beta": 1.0, "gain": 1.0},
                         "weight_var": wv, "bias_var": bv, "count": Counter(walk.affine)[(wv, bv)], "layers": []}
        reasons["reason"] = ("no activation layer: the network is affine (NLC = 1); the fixed point is that of its "
                             "most common dense/conv layer as a linear map (chi1 = sigma_w^2)")
    else:
        out.update({k: None for k in SUMMARY_KEYS if k != "nlc_predicted"})
        out["hidden"] = None
        reasons["reason"] = "no dense or conv layer: there is no length/correlation map to take a fixed point of"
    nlc = _num(mf.predicted_nlc(state, c_in))
    out["nlc_predicted"] = nlc
    if nlc is None:
        reasons["nlc_predicted_reason"] = ("undefined: the output correlations of all input pairs are 1 (the "
                                           "network maps the batch to one point) or the lengths overflow")
    out["q_in"] = _num(walk.q_in)
    out["c_in_mean"] = _num(jnp.mean(c_in))
    out["samples"] = walk.m
    out["approximations"] = [f"{what} ({', '.join(names[:4])}{', …' if len(names) > 4 else ''})"
                             for what, names in walk.approximations.items()]
    out.update(reasons)
    out["layers"] = profile
    return out


# --------------------------------------------------------------------------- phase diagrams

def resolve_activation(name: str, params: dict | None = None, shaping: Shaping | None = None) -> ActKey:
    """An :data:`ActKey` from a registry name (default parameters unless given).

    Raises:
      SpecError: unknown name (one line, with the closest valid name) or parameter.
    """
    if name not in ACTIVATIONS:
        raise SpecError(f"--activation: expected one of {', '.join(ACTIVATIONS)}; got {name!r}"
                        + closest(name, ACTIVATIONS))
    merged = dict(ACTIVATION_PARAMS.get(name, {}))
    for k, v in (params or {}).items():
        if k not in merged:
            raise SpecError(f"--activation: {name} has no parameter {k!r}")
        merged[k] = float(v)
    sh = shaping or Shaping()
    return name, tuple(sorted(merged.items())), (sh.alpha, sh.beta, sh.gain)


def _critical_weight_var(phi, bias_var, bracket=(1e-2, 1e2), iterations: int = 64):
    """Bisection on :math:`\\ln\\sigma_w^2` of :math:`\\chi_1(q^*) - 1`, with :math:`\\chi_1` taken at
    :math:`q \\to 0^+` when :math:`q^* = 0` (so that kinked activations such as leaky ReLU, whose
    derivative at exactly 0 is not the limit of :math:`\\mathbb E\\phi'(\\sqrt q z)^2`, are right);
    ``nan`` when the sign does not change over ``bracket``."""

    def excess(log_wv):
        wv = jnp.exp(log_wv)
        q = mf.q_star(phi, wv, bias_var).value
        return mf.chi1(phi, mf._positive(q), wv) - 1.0

    dtype = jnp.result_type(bias_var, float)
    lo, hi = (jnp.log(jnp.asarray(v, dtype)) for v in bracket)
    valid = (excess(lo) <= 0.0) & (excess(hi) >= 0.0)

    def body(_, ab):
        a, b = ab
        mid = 0.5 * (a + b)
        up = excess(mid) < 0.0
        return jnp.where(up, mid, a), jnp.where(up, b, mid)

    a, b = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return jnp.where(valid, jnp.exp(0.5 * (a + b)), jnp.nan)


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _edge(values, bias_vars, *, fn, names):
    phi = _phi(fn, names, values)

    def one(b):
        wc = _critical_weight_var(phi, b)
        w = jnp.where(jnp.isfinite(wc), wc, 1.0)
        fp = mf.q_star(phi, w, b)
        return wc, fp.value, fp.converged, mf.chi_q(phi, fp.value, w)

    return jax.vmap(one)(bias_vars)


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _chi1_grid(values, weight_vars, bias_vars, *, fn, names):
    phi = _phi(fn, names, values)

    def one(w, b):
        q = mf.q_star(phi, w, b).value
        return mf.chi1(phi, mf._positive(q), w)

    return jax.vmap(jax.vmap(one, (0, None)), (None, 0))(weight_vars, bias_vars)


def edge_of_chaos(act: ActKey, bias_vars: Sequence[float]) -> list[dict]:
    """Critical :math:`\\sigma_w^2` (:math:`\\chi_1(q^*) = 1`) for each :math:`\\sigma_b^2`.

    Rows ``{"bias_var", "weight_var", "q_star"}``; ``weight_var`` is ``None`` (with
    a ``reason``) when no :math:`\\sigma_w^2` in ``[0.01, 100]`` is critical,
    ``q_star`` ``None`` when the length diverges there (e.g. ReLU with
    :math:`\\sigma_b^2 > 0`). Uses :func:`zsad.meanfield.critical_weight_var`.
    """
    fn, names = _static(act)
    b = jnp.asarray(np.asarray(bias_vars, dtype=np.float64), dtype=_dtype())
    wc, q, ok, slope = jax.device_get(_edge(_values(act), b, fn=fn, names=names))
    rows = []
    for bv, w, qs, conv, xq in zip(np.asarray(bias_vars, dtype=float), wc, q, ok, slope):
        row: dict[str, Any] = {"bias_var": float(bv), "weight_var": _num(w), "q_star": None}
        if row["weight_var"] is None:
            row["reason"] = "chi1(q*) - 1 does not change sign for sigma_w^2 in [0.01, 100]"
        else:
            row["q_star"], reason = _q_star_status(qs, conv, xq, float(bv), fn)
            if reason is not None:
                row["reason"] = reason
        rows.append(row)
    return rows


def chi1_grid(act: ActKey, weight_vars: Sequence[float], bias_vars: Sequence[float]) -> np.ndarray:
    """:math:`\\chi_1(q^*)` on a grid, shape ``[len(bias_vars), len(weight_vars)]``."""
    fn, names = _static(act)
    w = jnp.asarray(np.asarray(weight_vars, dtype=np.float64), dtype=_dtype())
    b = jnp.asarray(np.asarray(bias_vars, dtype=np.float64), dtype=_dtype())
    return np.asarray(jax.device_get(_chi1_grid(_values(act), w, b, fn=fn, names=names)), dtype=np.float64)


@dataclass
class PhaseDiagram:
    """Result of :func:`phase_diagram`.

    Attributes:
      activation: the activation's name; ``params``/``shaping`` its scalars.
      edge: :func:`edge_of_chaos` rows.
      network: the user's network point (``name``, ``weight_var``, ``bias_var``,
        ``chi1``, ``phase``, ``activation``) or ``None``.
      weight_vars, bias_vars, chi1: the grid of the figure (``None`` unless asked).
    """

    activation: str
    params: dict
    shaping: dict
    edge: list[dict]
    network: dict | None = None
    weight_vars: np.ndarray | None = None
    bias_vars: np.ndarray | None = None
    chi1: np.ndarray | None = None

    def to_json(self) -> dict:
        return {"activation": self.activation, "params": self.params, "shaping": self.shaping,
                "edge_of_chaos": self.edge, "network": self.network}


def phase_diagram(activation: str | None = None, *, arch: Architecture | None = None, bias_var_max: float = 0.5,
                  rows: int = 11, weight_var_max: float | None = None, grid: tuple[int, int] | None = None,
                  x: np.ndarray | None = None) -> PhaseDiagram:
    """Edge of chaos of an activation over :math:`\\sigma_b^2 \\in [0, B]`, and optionally the grid of a figure.

    Args:
      activation: registry name; default: the hidden activation of ``arch``
        (with its parameters and shaping).
      arch: a network to place on the diagram (its repeated hidden layer, see
        :func:`meanfield_summary`); ``x`` its input batch (default: 8 Gaussian
        samples; only the fixed point is used, which does not depend on it).
      bias_var_max: ``B``; the table has ``rows`` evenly spaced values from 0.
      weight_var_max: right end of the figure's :math:`\\sigma_w^2` axis; default
        1.25 times the largest critical value (and past the network's point).
      grid: ``(n_weight, n_bias)`` points of the :math:`\\chi_1` grid, or ``None``.

    Raises:
      SpecError: unknown activation, bad ranges, or neither ``activation`` nor ``arch``.
    """
    if not bias_var_max >= 0.0 or not math.isfinite(bias_var_max):
        raise SpecError(f"--bias-var-max: expected a finite number >= 0, got {bias_var_max!r}")
    if weight_var_max is not None and not (weight_var_max > 0.0 and math.isfinite(weight_var_max)):
        raise SpecError(f"--weight-var-max: expected a finite number > 0, got {weight_var_max!r}")
    network = None
    act = resolve_activation(activation) if activation is not None else None
    if arch is not None:
        if arch.module is not None:
            raise SpecError(f"{arch.name}: --arch: a module entry point (flax or PyTorch) has no hidden layers to place")
        if x is None:
            x = np.random.default_rng(0).standard_normal((8, *arch.input.shape))
        summary = meanfield_summary(arch, x)
        hid = summary.get("hidden")
        if hid is None:
            raise SpecError(f"{arch.name}: --arch: the network has no dense/conv layer to place on the diagram")
        network = {"name": arch.name, "activation": hid["activation"], "weight_var": hid["weight_var"],
                   "bias_var": hid["bias_var"], "chi1": summary["chi1"], "phase": summary["phase"]}
        if act is None:
            sh = hid["shaping"]
            act = resolve_activation(hid["activation"], hid["params"], Shaping(sh["alpha"], sh["beta"], sh["gain"]))
    if act is None:
        raise SpecError("--activation: expected an activation name (or --arch FILE to take it from a network)")
    bias_vars = np.round(np.linspace(0.0, bias_var_max, rows), 12) if bias_var_max > 0 else np.zeros(1)
    edge = edge_of_chaos(act, bias_vars)
    result = PhaseDiagram(act[0], dict(act[1]), dict(zip(("alpha", "beta", "gain"), act[2])), edge, network)
    if grid is not None:
        crit = [r["weight_var"] for r in edge if r["weight_var"] is not None]
        top = weight_var_max
        if top is None:
            top = 1.25 * max(crit + [2.0 if not crit else 0.0])
            if network is not None:
                top = max(top, 1.1 * network["weight_var"])
        b_top = max(bias_var_max, 1.1 * network["bias_var"] if network else 0.0) or 1.0
        result.weight_vars = np.linspace(top / grid[0], top, grid[0])
        result.bias_vars = np.linspace(0.0, b_top, grid[1])
        result.chi1 = chi1_grid(act, result.weight_vars, result.bias_vars)
    return result
