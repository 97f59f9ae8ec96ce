"""Mean-field summary of an architecture file, and phase diagrams.

:func:`meanfield_profile` walks an :class:`~zsad.arch.spec.Architecture` layer
by layer with :func:`zsad.meanfield.walk.propagate` (the input statistics and
the map of every layer kind are described there) and reports the state after
every top-level layer. :func:`meanfield_summary` adds the fixed point of the
network's repeated hidden layer (the mean-field theory of a deep homogeneous
network: :math:`q^*`, :math:`\\chi_1`, :math:`c^*`, depth scales, phase) and the
predicted NLC; it is the ``meanfield`` entry of ``zsad score``.
:func:`phase_diagram` and :func:`edge_of_chaos` place an activation (or a
network's hidden layer) on the ordered/chaotic plane of
:math:`(\\sigma_w^2, \\sigma_b^2)`.

The quadrature-heavy maps (fixed points, edge of chaos, the grid of a phase
diagram) are jitted with the activation *name* static and every scalar traced,
so that architectures differing only in scalars reuse the compiled code.

References:
  B. Poole et al., NeurIPS 2016; S. S. Schoenholz et al., ICLR 2017;
  L. Xiao et al., Dynamical isometry and a mean field theory of CNNs, ICML 2018;
  G. Philipp, arXiv:2105.12210, 2021.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad import meanfield as mf
from zsad._errors import DataError, SpecError
from zsad.activations import ACTIVATION_PARAMS, ACTIVATIONS, HOMOGENEOUS, closest
from zsad.arch.spec import Architecture, Shaping
from zsad.meanfield.walk import (
    ActKey, BatchState, HiddenLayer, Propagation, activation_key, batch_state, default_dtype, input_statistics, key_function,
    key_static, key_values, propagate,
)

__all__ = ["SUMMARY_KEYS", "ActKey", "PhaseDiagram", "activation_key", "chi1_grid", "edge_of_chaos",
           "input_statistics", "meanfield_profile", "meanfield_summary", "phase_diagram", "resolve_activation"]

#: Keys of the fixed-point part of :func:`meanfield_summary`.
SUMMARY_KEYS = ("q_star", "q_converged", "chi1", "chi_q", "c_star", "chi_c", "xi_q", "xi_c", "phase",
                "nlc_predicted")


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _fixed_point(values, weight_var, bias_var, *, fn, names) -> mf.MeanField:
    return mf.fixed_point_summary(key_function(fn, names, values), weight_var, bias_var)


def _finite(value) -> float | None:
    """``value`` as a float, or None when it is not finite (JSON-safe)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _check_input(arch: Architecture, x) -> np.ndarray:
    x = np.asarray(x)
    if tuple(x.shape[1:]) != tuple(arch.input.shape):
        raise DataError(f"meanfield: x: expected samples of shape [n, {', '.join(map(str, arch.input.shape))}], "
                        f"got an array of shape {list(x.shape)}")
    return x


def _propagate(arch: Architecture, x) -> tuple[list[dict], Propagation, BatchState]:
    start = batch_state(_check_input(arch, x))
    result = propagate(arch, start, rows=True)
    profile = []
    for name, before, after in result.rows:
        profile.append({
            "layer": name,
            "q": _finite(after.q),
            "c_mean": _finite(jnp.mean(after.c)),
            "chi": _finite(jnp.exp(after.log_slope - before.log_slope)),
            "nlc_predicted": _finite(mf.predicted_nlc(after, start.c_in)),
        })
    return profile, result, start


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


def _fixed_point_dict(hidden: HiddenLayer) -> tuple[dict, dict]:
    fn, names = key_static(hidden.act)
    res = jax.device_get(_fixed_point(key_values(hidden.act), jnp.asarray(hidden.weight_var, default_dtype()),
                                      jnp.asarray(hidden.bias_var, default_dtype()), fn=fn, names=names))
    q_star, q_reason = _q_star_status(res.q_star, res.q_converged, res.chi_q, hidden.bias_var, fn)
    out: dict[str, Any] = {
        "q_star": q_star,
        "q_converged": q_star is not None,
        "chi1": _finite(res.chi1),
        "chi_q": _finite(res.chi_q),
        "c_star": _finite(res.c_star),
        "chi_c": _finite(res.chi_c),
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

    Keys (the ``meanfield`` entry of ``zsad score --json``): ``q_star``, ``q_converged``, ``chi1``, ``chi_q``,
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

    (:func:`zsad.meanfield.predicted_nlc`).

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
    profile, result, start = _propagate(arch, x)
    walk = result.walk
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
        linear = HiddenLayer(wv, bv, ("identity", (), (1.0, 1.0, 1.0)), "")
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
    nlc = _finite(mf.predicted_nlc(result.state, start.c_in))
    out["nlc_predicted"] = nlc
    if nlc is None:
        reasons["nlc_predicted_reason"] = ("undefined: the output correlations of all input pairs are 1 (the "
                                           "network maps the batch to one point) or the lengths overflow")
    out["q_in"] = _finite(start.q_in)
    out["c_in_mean"] = _finite(jnp.mean(start.c_in))
    out["samples"] = start.m
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


def _edge(values, bias_vars, *, fn, names):
    phi = key_function(fn, names, values)

    def one(b):
        wc = mf.critical_weight_var(phi, b)
        w = jnp.where(jnp.isfinite(wc), wc, 1.0)
        fp = mf.q_star(phi, w, b)
        return wc, fp.value, fp.converged, mf.chi_q(phi, fp.value, w)

    return jax.vmap(one)(bias_vars)


@functools.partial(jax.jit, static_argnames=("fn", "names"))
def _chi1_grid(values, weight_vars, bias_vars, *, fn, names):
    phi = key_function(fn, names, values)

    def one(w, b):
        q = mf.q_star(phi, w, b).value
        return mf.chi1(phi, q, w)  # chi1 takes q* = 0 as the limit q -> 0+

    return jax.vmap(jax.vmap(one, (0, None)), (None, 0))(weight_vars, bias_vars)


#: What the ``q_star`` of an :func:`edge_of_chaos` row is: a finite fixed point; ``infinite`` (the length
#: grows without bound with depth); ``any`` (every q is a fixed point); ``undefined`` (no critical
#: sigma_w^2).
Q_STAR_KINDS = ("finite", "infinite", "any", "undefined")
_KIND_OF_REASON = {None: "finite", _DIVERGES: "infinite", _EVERY_Q: "any"}


def edge_of_chaos(act: ActKey, bias_vars: Sequence[float]) -> list[dict]:
    """Critical :math:`\\sigma_w^2` (:math:`\\chi_1(q^*) = 1`) for each :math:`\\sigma_b^2`.

    Rows ``{"bias_var", "weight_var", "q_star", "q_star_kind"}``; ``weight_var`` is ``None`` (with
    a ``reason``) when no :math:`\\sigma_w^2` in ``[0.01, 100]`` is critical,
    ``q_star`` ``None`` when the length diverges there (e.g. ReLU with
    :math:`\\sigma_b^2 > 0`) or every ``q`` is fixed; ``q_star_kind`` says which, one of
    :data:`Q_STAR_KINDS`. Uses :func:`zsad.meanfield.critical_weight_var`.
    """
    fn, names = key_static(act)
    b = jnp.asarray(np.asarray(bias_vars, dtype=np.float64), dtype=default_dtype())
    wc, q, ok, slope = jax.device_get(_edge(key_values(act), b, fn=fn, names=names))
    rows = []
    for bv, w, qs, conv, xq in zip(np.asarray(bias_vars, dtype=float), wc, q, ok, slope):
        row: dict[str, Any] = {"bias_var": float(bv), "weight_var": _finite(w), "q_star": None,
                               "q_star_kind": "undefined"}
        if row["weight_var"] is None:
            row["reason"] = "chi1(q*) - 1 does not change sign for sigma_w^2 in [0.01, 100]"
        else:
            row["q_star"], reason = _q_star_status(qs, conv, xq, float(bv), fn)
            row["q_star_kind"] = _KIND_OF_REASON[reason]
            if reason is not None:
                row["reason"] = reason
        rows.append(row)
    return rows


def chi1_grid(act: ActKey, weight_vars: Sequence[float], bias_vars: Sequence[float]) -> np.ndarray:
    """:math:`\\chi_1(q^*)` on a grid, shape ``[len(bias_vars), len(weight_vars)]``."""
    fn, names = key_static(act)
    w = jnp.asarray(np.asarray(weight_vars, dtype=np.float64), dtype=default_dtype())
    b = jnp.asarray(np.asarray(bias_vars, dtype=np.float64), dtype=default_dtype())
    return np.asarray(jax.device_get(_chi1_grid(key_values(act), w, b, fn=fn, names=names)), dtype=np.float64)


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
