"""Nonlinearity normalization: shape the activations so that the network's NLC equals a target.

Every activation layer :math:`l` gets one shaping scalar (SPEC §4), applied to
its current activation :math:`\\phi_l` (the registry function with the layer's
existing shaping, if any):

* ``interp`` (any activation, ReLU included) -- interpolation with the identity,

  .. math:: \\phi_{l,a}(s) = g_l\\,\\bigl(a_l\\,\\phi_l(s) + (1 - a_l)\\,s\\bigr),
     \\qquad a_l \\in [0, a_l^{\\max}],\\ a_l^{\\max} \\le 4.

  :math:`a = 0` is linear, :math:`a = 1` the activation itself; :math:`a > 1`
  subtracts part of the linear component and *raises* the nonlinearity (for
  ReLU, :math:`a = 2` is :math:`|s|`). The single-layer NLC is not monotone in
  :math:`a` beyond its peak, so :math:`a_l^{\\max}` is the most nonlinear
  :math:`a \\in [1, 4]` at the layer's input variance (2 for ReLU, 2.5 for tanh at
  :math:`q = 1`).
* ``scale`` (smooth, non-homogeneous activations) -- input scaling,

  .. math:: \\phi_{l,b}(s) = g_l\\,\\phi_l(b_l s)/b_l, \\qquad b_l \\in [10^{-3}, 10^{3}],
     \\ b_l\\beta_l\\sqrt{q_l} \\le 20 \\ (:data:`SIGMA_MAX`),

  :math:`b \\to 0` is linear and :math:`b > 1` raises the nonlinearity (without
  bound for saturating activations such as tanh or erf). Positively homogeneous
  activations (relu, leaky_relu, identity) are unchanged by it and rejected.

The gain :math:`g_l` makes each layer preserve the second moment at its input
variance :math:`q_l`: :math:`\\mathbb E\\,\\phi_{l,\\cdot}(\\sqrt{q_l} z)^2 =
\\mathbb E\\,\\phi_l(\\sqrt{q_l} z)^2`, so normalization changes nonlinearity, not
scale. :math:`q_l` is the **mean-field** pre-activation second moment of the
original network, propagated from the measured second moment of the scoring
batch (:mod:`zsad.meanfield`; convolutions as dense layers, pooling and
flattening leave it unchanged, batch norm rescales it to 1). Because every
shaped layer preserves :math:`q`, the :math:`q_l` of the shaped network are the
same, so the gains are consistent (the mean of the activation output may change,
which the mean field ignores only for what follows a layer norm or a residual sum).

Distribution over layers: layer :math:`l` has native single-layer NLC
:math:`\\tau_l = \\mathrm{NLC}_{\\phi_l}(\\sqrt{q_l})` (SPEC §1). One global parameter
:math:`u` sets every layer's target single-layer log-NLC (clipped to what the
method reaches): :math:`u\\ln\\tau_l` for :math:`u \\le 1` (every layer moved towards
linear in proportion: :math:`u = 0` is the linear network, :math:`u = 1` the
unchanged one) and :math:`\\ln\\tau_l + (u - 1)\\,\\delta` for :math:`u \\ge 1`, with
:math:`\\delta` the mean :math:`\\ln\\tau_l` (every layer contributes the same factor of the
added nonlinearity, :math:`\\approx (T/\\mathrm{NLC})^{1/L}`). The per-layer scalar is
found by inverting the single-layer NLC curve (closed form in :math:`a`, a
tabulated quadrature in :math:`b`) on its increasing part.

Solve: (1) mean field: :math:`u_0` solves
:math:`\\mathrm{NLC}_{\\rm mf}(u) = T^{1/\\kappa}` (Brent), with
:math:`\\kappa = \\ln\\mathrm{NLC}_{\\rm meas}(1)/\\ln\\mathrm{NLC}_{\\rm mf}(1)` the
finite-width correction of the log-NLC, measured on the unchanged network;
(2) measurement: a safeguarded secant (regula falsi once bracketed) on
:math:`\\ln\\mathrm{NLC}_{\\rm meas}(u) - \\ln T` until the mean over seeds is within
the relative tolerance. Every measurement is one call of the same compiled
program (:func:`zsad.score.make_profile_fn`) with new scalars: the search never
recompiles (:attr:`NormalizeResult.compilations` counts it).

References:
  G. Philipp, The nonlinearity coefficient -- a practical guide to neural
  architecture design, arXiv:2105.12210, 2021.
  J. Martens et al., Rapid training of deep neural networks without skip
  connections or normalization layers using Deep Kernel Shaping, arXiv:2110.01765, 2021.
  G. Zhang, A. Botev, J. Martens, Deep learning without shortcuts: shaping the
  kernel with tailored rectified linear units, ICLR 2022.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from zsad import meanfield as mf
from zsad._errors import NumericsError, SpecError, ZsadError
from zsad.activations import HOMOGENEOUS, get_activation, shaped
from zsad.arch.build import _sub_prefix, build
from zsad.arch.spec import (
    Activation, Architecture, AvgPool, BatchNorm, Block, Conv, Dense, Flatten, GlobalAvgPool, Layer,
    LayerNorm, MaxPool, Residual, Shaping, architecture_to_dict, dump_architecture, named_layers,
)
from zsad.data import load_inputs
from zsad.quadrature import _graded_rule, _value_and_slope
from zsad.score import _metrics_over_seeds, make_profile_fn, seed_keys

METHODS = ("interp", "scale")
#: Search range of the interpolation scalar ``a`` (capped further at the layer's most nonlinear ``a``).
ALPHA_RANGE = (0.0, 4.0)
#: Search range of the input scale ``b`` (relative to the layer's current ``beta``).
BETA_RANGE = (1e-3, 1e3)
#: Largest input scale (in standard deviations of the pre-activation) ``scale`` gives an activation:
#: beyond it a saturating activation is a step function at the resolution of a finite batch (its
#: derivative vanishes at almost every sample) and the measured NLC collapses instead of growing.
SIGMA_MAX = 20.0
_ALPHA_GRID = np.linspace(*ALPHA_RANGE, 801)  # contains 1.0 exactly (index 200)
_BETA_GRID = np.logspace(-3.0, 3.0, 241)  # contains 1.0 exactly (index 120)
_FLAT = 1e-10  # a layer whose native log-NLC is below this is (numerically) linear: left alone
_MF_PAIRS = 64  # input pairs whose correlations the mean-field prediction tracks


class NormalizeError(ZsadError):
    """The target cannot be reached with this architecture and method (or is not a valid NLC)."""


class LayerShaping(NamedTuple):
    """Shaping of one activation layer after normalization.

    Attributes:
      layer: scalar name of the layer (``"3.tanh"``, ``"2.residual/branch.1.relu"``).
      fn: activation name.
      q: mean-field input second moment the gain preserves the output moment at.
      alpha, beta, gain: the layer's shaping scalars as written to the file.
      nlc_native: single-layer NLC of the layer's activation at ``q`` before normalization.
      nlc_layer: single-layer NLC after normalization.
    """

    layer: str
    fn: str
    q: float
    alpha: float
    beta: float
    gain: float
    nlc_native: float
    nlc_layer: float


class NormalizeResult(NamedTuple):
    """Outcome of :func:`normalize`.

    Attributes:
      arch: the normalized architecture (shaping recorded on every activation layer).
      target: the target NLC.
      method: ``interp`` or ``scale``.
      nlc_before, nlc_after: measured NLC ``(mean, std over seeds)`` (std None for one seed).
      per_seed_before, per_seed_after: measured NLC per initialization.
      layers: :class:`LayerShaping` of every activation layer, in network order.
      u: the global parameter of the solution (1 = unchanged, 0 = linear; see the module docstring).
      u_meanfield: the mean-field first guess of ``u``.
      iterations: measured evaluations after the first (unchanged) one.
      seconds: wall time of the whole solve (compilation included).
      history: one dict per measured evaluation: ``u``, ``nlc``, ``nlc_std``, ``seconds``.
      converged: whether the mean NLC is within ``tol`` of the target.
      compilations: compilations of the scoring program during the search (0: none).
      meanfield: ``{"before": ..., "after": ...}`` summaries of
        ``zsad.meanfield_arch.meanfield_summary``, or ``{"reason": ...}``.
    """

    arch: Architecture
    target: float
    method: str
    nlc_before: tuple[float, float | None]
    nlc_after: tuple[float, float | None]
    per_seed_before: list[float]
    per_seed_after: list[float]
    layers: list[LayerShaping]
    u: float
    u_meanfield: float | None
    iterations: int
    seconds: float
    history: list[dict]
    converged: bool
    compilations: int
    meanfield: dict

    @property
    def scalars(self) -> dict[str, dict[str, float]]:
        """``{layer: {"alpha", "beta", "gain"}}`` of every activation layer."""
        return {s.layer: {"alpha": s.alpha, "beta": s.beta, "gain": s.gain} for s in self.layers}

    def to_json(self) -> dict:
        """Machine-readable summary (``zsad normalize --json``)."""
        def nlc(pair, per_seed):
            return {"mean": pair[0], "std": pair[1], "per_seed": per_seed}

        return {
            "name": self.arch.name, "target": self.target, "method": self.method,
            "converged": self.converged,
            "nlc_before": nlc(self.nlc_before, self.per_seed_before),
            "nlc_after": nlc(self.nlc_after, self.per_seed_after),
            "layers": [s._asdict() for s in self.layers],
            "u": self.u, "u_meanfield": self.u_meanfield, "iterations": self.iterations,
            "compilations": self.compilations, "seconds": round(self.seconds, 3),
            "history": self.history, "meanfield": self.meanfield,
        }


# --------------------------------------------------------------------------- per-layer curves

def _log_target(u: float, log_native: float, step: float) -> float:
    """Target log single-layer NLC of a layer at global parameter ``u``.

    ``u <= 1``: ``u * log_native`` (every layer moved towards linear in proportion);
    ``u >= 1``: ``log_native + (u - 1) * step`` (every layer gets the same added
    log-NLC, ``step`` per unit of ``u``).
    """
    return u * log_native if u <= 1.0 else log_native + (u - 1.0) * step


class _Layer:
    """One activation layer: its current activation, input moment and single-layer NLC curve."""

    def __init__(self, name: str, spec: Activation, q: float, method: str):
        self.name, self.spec, self.q, self.method = name, spec, q, method
        sh = spec.shaping
        self.base = (sh.alpha, sh.beta, sh.gain)
        if method == "interp":
            m1, m2, ms, d1, d2 = self._moments(np.array([math.sqrt(q)]))
            self.moments = (m1[0], m2[0], ms[0], d1[0], d2[0])
            grid = _ALPHA_GRID
            nlc = self._interp_nlc(grid)
            self.m2_native = self.moments[1]
        else:
            sigma = _BETA_GRID * math.sqrt(q)
            m1, m2, _, _, d2 = self._moments(sigma)
            var = m2 - m1 * m1
            with np.errstate(divide="ignore", invalid="ignore"):
                nlc = np.sqrt(sigma * sigma * d2 / var)
            self.m2_table = m2 / (_BETA_GRID * _BETA_GRID)  # E[phi(b s)^2 / b^2] at s ~ N(0, q)
            self.m2_native = float(m2[120])
            self.table_nlc = np.maximum(nlc, 1.0)
            grid = _BETA_GRID
        if not np.all(np.isfinite(nlc)):
            raise NumericsError(f"layer {name}: the single-layer NLC of {spec.fn} is undefined at some "
                                f"shaping (input second moment q = {q:.3g})")
        nlc = np.maximum(nlc, 1.0)
        self.native = float(nlc[200] if method == "interp" else nlc[120])
        # Invert the monotone envelope: the records of the running maximum over increasing parameter.
        if method == "interp":
            top = 200 + int(np.argmax(nlc[200:]))
        else:  # input scales up to SIGMA_MAX standard deviations (and at least the current one)
            limit = max(int(np.sum(self.base[1] * _BETA_GRID * math.sqrt(q) <= SIGMA_MAX)), 121)
            top = int(np.argmax(nlc[:limit]))
        keep = [0]
        for i in range(1, top + 1):
            if nlc[i] > nlc[keep[-1]]:
                keep.append(i)
        self.grid, self.curve = grid[keep], nlc[keep]
        self.tau_max = float(self.curve[-1])
        self.log_native = math.log(self.native)

    def _moments(self, sigma: np.ndarray):
        """E phi, E phi^2, E s phi, E phi', E phi'^2 of the current activation at s ~ N(0, sigma^2)."""
        a0, b0, g0 = self.base
        xs, ws = zip(*(_graded_rule(float(s)) for s in sigma))
        x, w = np.stack(xs), np.stack(ws)
        evaluate = _value_and_slope(self.spec.fn, tuple(self.spec.params))
        with jax.enable_x64(True):
            v, d = (np.asarray(t, dtype=np.float64) for t in evaluate(jnp.asarray(b0 * x, dtype=jnp.float64)))
        v = g0 * (a0 * v / b0 + (1.0 - a0) * x)
        d = g0 * (a0 * d + (1.0 - a0))
        return tuple(np.sum(w * t, axis=-1) for t in (v, v * v, x * v, d, d * d))

    def _interp_second(self, a):
        m1, m2, ms, d1, d2 = self.moments
        second = a * a * m2 + 2.0 * a * (1.0 - a) * ms + (1.0 - a) ** 2 * self.q
        return second, second - (a * m1) ** 2, a * a * d2 + 2.0 * a * (1.0 - a) * d1 + (1.0 - a) ** 2

    def _interp_nlc(self, a):
        _, var, grad2 = self._interp_second(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.q * grad2 / var)

    def param(self, u: float, step: float) -> float:
        """The shaping parameter at global parameter ``u`` (see :func:`_log_target`)."""
        if self.tau_max <= 1.0 + 1e-12 or (u <= 1.0 and self.log_native < _FLAT):
            return 1.0
        tau = math.exp(min(_log_target(u, self.log_native, step), math.log(self.tau_max)))
        return float(np.interp(tau, self.curve, self.grid))

    def u_max(self, step: float) -> float:
        """The smallest ``u`` at which this layer is at its most nonlinear shaping."""
        return 1.0 + max(math.log(self.tau_max) - self.log_native, 0.0) / step

    def shaping(self, p: float) -> Shaping:
        """The family scalars (alpha, beta, gain) of parameter ``p`` applied to the current activation."""
        a0, b0, g0 = self.base
        if self.method == "interp":
            second = float(self._interp_second(p)[0])
            g = math.sqrt(self.m2_native / second)
            scale = p * g0 + 1.0 - p
            if abs(scale) < 1e-9:
                raise NumericsError(f"layer {self.name}: interpolation a = {p:.6g} of the shaped activation "
                                    "has no (alpha, beta, gain) form; reset its shaping and retry")
            return Shaping(alpha=p * g0 * a0 / scale, beta=b0, gain=g * scale)
        m2 = float(np.exp(np.interp(math.log(p), np.log(_BETA_GRID), np.log(self.m2_table))))
        return Shaping(alpha=a0, beta=b0 * p, gain=g0 * math.sqrt(self.m2_native / m2))

    def layer_nlc(self, p: float) -> float:
        if self.method == "interp":
            return float(self._interp_nlc(np.asarray(p)))
        return float(np.exp(np.interp(math.log(p), np.log(_BETA_GRID), np.log(self.table_nlc))))


# --------------------------------------------------------------------------- mean field

def _input_state(x: np.ndarray) -> tuple[mf.KernelState, jax.Array]:
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    d = flat.shape[1]
    q_in = float(np.mean(np.sum(flat * flat, axis=1)) / d)
    n = min(flat.shape[0] - 1, _MF_PAIRS)
    c_in = np.sum(flat[:n] * flat[1:n + 1], axis=1) / (d * q_in)
    c = jnp.asarray(c_in, dtype=jnp.result_type(float))
    return mf.input_state(q_in, c, float(np.mean(flat))), c


def _walk(layers: tuple[Layer, ...], prefix: str, state: mf.KernelState, shapes: dict[str, Shaping],
          record: dict[str, float] | None) -> mf.KernelState:
    """Mean-field state after ``layers``; records each activation's input ``q`` by scalar name."""
    for name, layer in named_layers(layers, prefix):
        if isinstance(layer, (Dense, Conv)):
            state = mf.dense(state, layer.init.weight_std ** 2, layer.init.bias_std ** 2)
        elif isinstance(layer, Activation):
            if record is not None:
                record[name] = float(state.q)
            sh = shapes.get(name, layer.shaping)
            fn = shaped(get_activation(layer.fn), sh.alpha, sh.beta, sh.gain, dict(layer.params))
            state = mf.activation(state, fn)
        elif isinstance(layer, LayerNorm):
            state = mf.layer_norm(state)
        elif isinstance(layer, BatchNorm):
            state = mf.rescale(state, 1.0)
        elif isinstance(layer, Residual):
            short = _walk(layer.shortcut, _sub_prefix(name, "shortcut"), state, shapes, record)
            branch = _walk(layer.branch, _sub_prefix(name, "branch"), state, shapes, record)
            state = mf.residual(short, branch, layer.branch_scale, layer.shortcut_scale)
        elif not isinstance(layer, (AvgPool, MaxPool, GlobalAvgPool, Flatten)):
            raise TypeError(f"unsupported layer {type(layer).__name__}")
        # pooling and flattening: the per-position kernel is unchanged (spatial correlation 1)
    return state


def _activations(layers: tuple[Layer, ...], prefix: str = "") -> list[tuple[str, Activation]]:
    out = []
    for name, layer in named_layers(layers, prefix):
        if isinstance(layer, Activation):
            out.append((name, layer))
        elif isinstance(layer, Residual):
            out += _activations(layer.shortcut, _sub_prefix(name, "shortcut"))
            out += _activations(layer.branch, _sub_prefix(name, "branch"))
    return out


# --------------------------------------------------------------------------- writing shaping back

def with_shaping(arch: Architecture, shapes: dict[str, Shaping]) -> Architecture:
    """``arch`` with the shaping of the named activation layers replaced.

    A ``block`` whose repeats end up with different shaping is unrolled (its
    copies spliced in place), since a file records one shaping per written layer.
    """
    layers, _ = _reshape(arch.layers, "", 0, shapes)
    return dataclasses.replace(arch, layers=layers)


def _reshape(layers, prefix: str, index: int, shapes) -> tuple[tuple[Layer, ...], int]:
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Block):
            copies = []
            for _ in range(layer.repeat):
                inner, index = _reshape(layer.layers, prefix, index, shapes)
                copies.append(inner)
            if all(c == copies[0] for c in copies):
                out.append(dataclasses.replace(layer, layers=copies[0]))
            else:
                for c in copies:
                    out.extend(c)
            continue
        name = f"{prefix}{index}.{layer.fn if isinstance(layer, Activation) else layer.kind}"
        if isinstance(layer, Activation) and name in shapes:
            layer = dataclasses.replace(layer, shaping=shapes[name])
        elif isinstance(layer, Residual):
            branch, _ = _reshape(layer.branch, _sub_prefix(name, "branch"), 0, shapes)
            shortcut, _ = _reshape(layer.shortcut, _sub_prefix(name, "shortcut"), 0, shapes)
            layer = dataclasses.replace(layer, branch=branch, shortcut=shortcut)
        out.append(layer)
        index += 1
    return tuple(out), index


def _relocated(arch: Architecture, folder: Path) -> Architecture:
    """``arch`` with a relative input-data path rewritten relative to ``folder``."""
    inp = arch.input
    if inp.data == "gaussian" or Path(inp.data).is_absolute():
        return arch
    data = os.path.relpath(arch.base_dir / inp.data, folder.resolve())
    return dataclasses.replace(arch, input=dataclasses.replace(inp, data=data))


def save(arch: Architecture, path: str | Path) -> Architecture:
    """Writes ``arch`` to ``path`` (``dump_architecture``); returns the architecture as written.

    A relative input-data path is rewritten relative to the new file's folder, so
    the written file reads the same samples.
    """
    path = Path(path)
    arch = _relocated(arch, path.parent)
    dump_architecture(arch, path)
    return dataclasses.replace(arch, source=str(path))


def save_space(archs: list[Architecture], path: str | Path, name: str) -> None:
    """Writes ``archs`` as a search-space file of form 1 (``archs:`` inline architectures)."""
    from ruamel.yaml import YAML

    path = Path(path)
    doc = {"name": name, "archs": [architecture_to_dict(_relocated(a, path.parent)) for a in archs]}
    yaml = YAML()
    yaml.default_flow_style = None
    with open(path, "w") as fh:
        yaml.dump(doc, fh)


def normalize_space(space, target: float, **options) -> Iterator[tuple[str, NormalizeResult | None, str | None]]:
    """Normalizes every architecture of a search space (:class:`zsad.space.Space`) to ``target``.

    Yields ``(id, result, error)`` per architecture: ``error`` is a one-line
    reason (invalid architecture, unreachable target) and ``result`` None then.
    Options are those of :func:`normalize`.

    Raises:
      SpecError: for a NAS-Bench-201 space (its cells have no shaping scalars).
    """
    if space.form == "nas-bench-201":
        raise SpecError(f"{space.source or space.name}: NAS-Bench-201 cells are built in without shaping "
                        "scalars; normalize a space of architecture files instead")
    for item in space:
        if item.error is not None or not isinstance(item.arch, Architecture):
            yield item.id, None, item.error or "not an architecture"
            continue
        try:
            yield item.id, normalize(item.arch, target, **options), None
        except ZsadError as err:
            yield item.id, None, str(err).replace("\n", " ")


# --------------------------------------------------------------------------- the solver

def _meanfield_summaries(before: Architecture, after: Architecture, x: np.ndarray) -> dict:
    try:
        from zsad.meanfield_arch import meanfield_summary
    except Exception as err:  # absent or broken module: a reason, never a crash
        return {"reason": f"mean-field summary of architectures is not available ({type(err).__name__})"}
    out = {}
    for key, arch in (("before", before), ("after", after)):
        try:
            out[key] = _plain(meanfield_summary(arch, x))
        except Exception as err:  # the summary is a by-product: its failure must not fail the solve
            out[key] = {"reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return out


def _plain(value):
    """JSON-ready copy: arrays to floats/lists, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array, np.generic)):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _stats(values: np.ndarray) -> tuple[float, float | None]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if values.size > 1 else None)


def normalize(
    arch: Architecture, target: float, *, method: str = "interp", seeds: int = 3, batch: int = 256,
    tol: float = 0.02, max_iter: int = 20, tangents: int = 2, seed: int = 0, data_seed: int = 0,
) -> NormalizeResult:
    """Shapes the activations of ``arch`` so that its measured NLC equals ``target``.

    See the module docstring for the method. The NLC is measured exactly as
    ``zsad score`` does with the same ``seeds``, ``batch``, ``tangents``,
    ``seed`` and ``data_seed`` (its mean over initializations is what must be
    within ``tol`` of ``target``).

    Args:
      arch: an architecture built from layers (not a flax entry point) with at
        least one activation layer.
      target: the target NLC, ``>= 1``.
      method: ``"interp"`` (interpolation with the identity, any activation) or
        ``"scale"`` (input scaling, smooth non-homogeneous activations).
      seeds: initializations the NLC is averaged over.
      batch: samples in the scoring batch.
      tol: relative tolerance on the mean NLC.
      max_iter: most measured evaluations after the first.
      tangents: tangents per sample in the NLC estimator.
      seed, data_seed: seeds of the initializations and of the inputs.

    Returns:
      :class:`NormalizeResult` (``converged`` False if ``max_iter`` ran out).

    Raises:
      NormalizeError: ``target < 1`` or outside the range the method reaches
        (the message gives the range).
      SpecError: no activation layers, a flax entry point, or ``scale`` on a
        positively homogeneous activation (the message names the layer).

    Example:
      >>> from zsad.arch.spec import parse_architecture
      >>> arch = parse_architecture({"name": "m", "input": {"shape": [16]}, "layers": [
      ...     {"type": "dense", "features": 32}, {"type": "activation", "fn": "tanh"},
      ...     {"type": "dense", "features": 4}]})
      >>> r = normalize(arch, 1.5, method="scale", seeds=2, batch=64)
      >>> r.converged and abs(r.nlc_after[0] / 1.5 - 1) <= 0.02
      True
    """
    t0 = time.perf_counter()
    if not isinstance(target, (int, float)) or not math.isfinite(target) or target < 1.0:
        raise NormalizeError(f"target: expected a number >= 1 (the NLC of these networks is never below 1: "
                             f"affine maps have exactly 1); got {target!r}")
    if method not in METHODS:
        raise NormalizeError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    if not (0.0 < tol < 1.0):
        raise NormalizeError(f"tol: expected a relative tolerance in (0, 1); got {tol!r}")
    if arch.module is not None:
        raise SpecError(f"{arch.source or arch.name}: normalize needs an architecture file's layers; "
                        f"a flax entry point ({arch.module}) has no activation layers to shape")
    acts = _activations(arch.layers)
    if not acts:
        raise SpecError(f"{arch.source or arch.name}: no activation layers to shape (the network is affine: "
                        "its NLC is exactly 1)")
    if method == "scale":
        for name, layer in acts:
            if layer.fn in HOMOGENEOUS:
                raise SpecError(f"{arch.source or arch.name}: layer {name}: method 'scale' needs a smooth, "
                                f"non-homogeneous activation; {layer.fn} is positively homogeneous "
                                "(phi(b s)/b = phi(s)); use --method interp")

    # The program: built once, called with new scalars for every evaluation.
    net = build(arch)
    x = load_inputs(arch.input, batch, seed=data_seed, base_dir=arch.base_dir, source=arch.source)
    x = jnp.asarray(x, dtype=jnp.result_type(float) if arch.input.dtype == "float32" else x.dtype)
    profile = make_profile_fn(net, tangents)
    keys = seed_keys(seed, seeds)
    out_name = net.layer_names[-1]
    history: list[dict] = []

    def measure(shapes: dict[str, Shaping] | None, u: float) -> np.ndarray:
        scalars = {k: dict(v) for k, v in net.scalars.items()}
        for name, sh in (shapes or {}).items():
            old = scalars[name]
            for field in ("alpha", "beta", "gain"):
                old[field] = jnp.asarray(getattr(sh, field), dtype=old[field].dtype)
        t = time.perf_counter()
        result = jax.device_get(profile(keys, x, scalars))
        values = np.asarray(result.nlc[out_name], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise NumericsError(f"{arch.name}: the NLC is undefined (diverged or constant output) at shaping "
                                f"parameter u = {u:.4g}")
        mean, std = _stats(values)
        history.append({"u": u, "nlc": mean, "nlc_std": std, "seconds": round(time.perf_counter() - t, 4)})
        return values

    before = measure(None, 1.0)
    cache0 = _metrics_over_seeds._cache_size()
    nb = float(np.mean(before))

    # Per-layer curves at the mean-field input moments of the unchanged network.
    state0, c_in = _input_state(np.asarray(x))
    record: dict[str, float] = {}
    out0 = _walk(arch.layers, "", state0, {}, record)
    layers_ = [_Layer(name, layer, record[name], method) for name, layer in acts]
    step = max(float(np.mean([l.log_native for l in layers_])), 1e-2)
    u_max = max(l.u_max(step) for l in layers_)

    def shapes_at(u: float) -> dict[str, Shaping]:
        return {l.name: l.shaping(l.param(u, step)) for l in layers_}

    def finish(u: float, after: np.ndarray, u_mf: float | None, converged: bool) -> NormalizeResult:
        shapes = shapes_at(u) if u != 1.0 else {}
        new = with_shaping(arch, shapes) if shapes else arch
        rows = []
        for layer in layers_:
            sh = shapes.get(layer.name, layer.spec.shaping)
            p = layer.param(u, step) if u != 1.0 else 1.0
            rows.append(LayerShaping(layer.name, layer.spec.fn, layer.q, sh.alpha, sh.beta, sh.gain,
                                     layer.native, layer.layer_nlc(p)))
        return NormalizeResult(
            new, float(target), method, _stats(before), _stats(after), before.tolist(), after.tolist(), rows,
            u, u_mf, len(history) - 1, time.perf_counter() - t0, history, converged,
            _metrics_over_seeds._cache_size() - cache0, _meanfield_summaries(arch, new, np.asarray(x)))

    if abs(nb / target - 1.0) <= tol:
        return finish(1.0, before, None, True)

    def mf_nlc(u: float) -> float:
        return float(mf.predicted_nlc(_walk(arch.layers, "", state0, shapes_at(u), None), c_in))

    # (1) mean-field first guess, the log-NLC corrected by the measured/predicted ratio at u = 1.
    mf1 = float(mf.predicted_nlc(out0, c_in))
    kappa = math.log(nb) / math.log(mf1) if math.isfinite(mf1) and math.log(mf1) > 1e-6 else 1.0
    goal = math.exp(math.log(target) / kappa) if kappa > 0 else target
    u_mf: float | None
    try:
        top = mf_nlc(u_max)
        if not math.isfinite(top):
            raise FloatingPointError
        u_mf = u_max if top <= goal else brentq(lambda u: math.log(mf_nlc(u)) - math.log(goal), 0.0, u_max,
                                                 xtol=1e-4, rtol=1e-6, maxiter=60)
    except (FloatingPointError, ValueError, ZeroDivisionError):
        u_mf = None  # mean field undefined here: fall back to the log-linear guess
    if u_mf is not None:
        u = u_mf
    elif target < nb:
        u = math.log(target) / math.log(nb)
    else:
        u = min(1.0 + (math.log(target) - math.log(nb)) / (len(layers_) * step), u_max)

    # (2) measured correction: safeguarded secant on F(u) = ln NLC(u) - ln T.
    points = [(1.0, math.log(nb) - math.log(target))]
    best = (abs(points[0][1]), 1.0, before)
    for _ in range(max_iter):
        values = measure(shapes_at(u), u)
        mean = float(np.mean(values))
        f = math.log(mean) - math.log(target)
        if abs(mean / target - 1.0) <= tol:
            return finish(u, values, u_mf, True)
        best = min(best, (abs(f), u, values), key=lambda b: b[0])
        points.append((u, f))
        if f < 0 and u >= u_max:
            raise NormalizeError(
                f"{arch.name}: target {target:g} is out of reach of method '{method}': reachable NLC range "
                f"[1, {mean:.4g}] (measured at the most nonlinear shaping, {_reach(method)}){_hint(method, acts)}")
        u = _next_u(points, u_max)
    return finish(best[1], best[2], u_mf, False)


def _hint(method: str, acts: list[tuple[str, Activation]]) -> str:
    fns = {layer.fn for _, layer in acts}
    if method == "interp" and not fns & HOMOGENEOUS:
        return "; method 'scale' reaches higher values for saturating activations"
    if fns & HOMOGENEOUS:
        return (f"; {', '.join(sorted(fns & HOMOGENEOUS))} activations stay positively homogeneous under "
                "shaping, which bounds the NLC a given depth can reach")
    return ""


def _reach(method: str) -> str:
    if method == "interp":
        return f"alpha up to the most nonlinear value in [1, {ALPHA_RANGE[1]:g}]"
    return f"beta up to {BETA_RANGE[1]:g} times its current value and {SIGMA_MAX:g} / sqrt(q)"


def _next_u(points: list[tuple[float, float]], u_max: float) -> float:
    """Next u: regula falsi inside the tightest bracket, else a secant step (clamped)."""
    below = [p for p in points if p[1] < 0]
    above = [p for p in points if p[1] > 0]
    if below and above:
        lo = max(below, key=lambda p: p[0])
        hi = min(above, key=lambda p: p[0])
        if lo[0] < hi[0]:
            guess = lo[0] - lo[1] * (hi[0] - lo[0]) / (hi[1] - lo[1])
            margin = 0.05 * (hi[0] - lo[0])  # keep away from the ends: no stagnation on one side
            return min(max(guess, lo[0] + margin), hi[0] - margin)
    (u1, f1), (u2, f2) = points[-2], points[-1]
    if u2 != u1 and (f2 - f1) / (u2 - u1) > 0:
        guess = u2 - f2 * (u2 - u1) / (f2 - f1)
    else:  # no usable slope: log NLC is about proportional to u
        guess = u2 * 2.0 if f2 < 0 else u2 * 0.5
    if f2 < 0:
        guess = min(max(guess, u2 * 1.01), max(u2 * 4.0, u2 + 1.0))
    else:
        guess = max(min(guess, u2 * 0.99), u2 * 0.25)
    return float(min(max(guess, 0.0), u_max))
