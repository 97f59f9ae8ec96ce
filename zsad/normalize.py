"""Nonlinearity normalization: shape the activations so that the network's NLC equals a target.

Every activation layer gets one shaping scalar, chosen by one global parameter
:math:`u` (the families, their gains and the distribution over layers are
:mod:`zsad.shaping`): :math:`u = 0` is the linear network, :math:`u = 1` the
unchanged one, and every layer's nonlinearity grows with :math:`u`.

Solve: (1) mean field: :math:`u_0` solves
:math:`\\mathrm{NLC}_{\\rm mf}(u) = T^{1/\\kappa}` (Brent), with
:math:`\\kappa = \\ln\\mathrm{NLC}_{\\rm meas}(1)/\\ln\\mathrm{NLC}_{\\rm mf}(1)` the
finite-width correction of the log-NLC, measured on the unchanged network
(batch norm centres each feature over the batch here, which is what makes
networks with batch norm chaotic; see :func:`zsad.meanfield.walk.batch_norm`);
(2) measurement: a bracketing secant on
:math:`\\ln\\mathrm{NLC}_{\\rm meas}(u) - \\ln T` over :math:`[0, u_{\\max}]` (regula
falsi inside the sign change next to the best point, bisection when it stalls,
secant steps towards the target side until there is one) until the mean over
seeds is within the relative tolerance. Typically 1 to 3 measurements after the
unchanged one. Every measurement is one call of the same compiled program
(:func:`zsad.score.make_profile_fn`, :mod:`zsad.measure`'s program) with new scalars: the search
never recompiles (:attr:`NormalizeResult.compilations` counts its traces).

Reachable range. When the solve measures an end of :math:`[0, u_{\\max}]` and the
target lies beyond it, :class:`NormalizeError` gives the measured range (both
ends measured). Its bottom, :math:`u = 0`, is exactly 1 when every other layer is
affine with the batch statistics frozen (dense, conv, average pooling, batch
norm); layer norm (a division by each sample's norm) and max pooling are
nonlinear themselves and raise it (1.10 after six layer norms over 64 features,
1.38 over 16 channels). Its top, every layer at its peak, depends on the
activation and the depth:

* ReLU under ``interp`` is :math:`c_1 s + c_2 |s|`. With the gain, each layer's
  correlation map is :math:`C(c) = w c + (1 - w)\\,k(c)` with
  :math:`k(c) = \\tfrac2\\pi(\\sqrt{1 - c^2} + c \\arcsin c)` the map of :math:`|s|` and
  :math:`w = c_1^2/(c_1^2 + c_2^2)`: :math:`C'(1) = 1` for every :math:`a`, so a plain
  network stays at the edge of chaos, and its NLC is largest with :math:`|s|` in
  every layer, :math:`\\approx (1 - k^L(\\bar c))^{-1/2}` for :math:`L` activation layers
  (the predicted NLC of :func:`zsad.meanfield.predicted_nlc`): 1.66, 2.85, 4.24, 6.86, 11.9 for :math:`L` = 1, 4, 8, 16, 32 at
  infinite width, about 0.3 more per layer, and less at finite width (measured:
  2.72 for a width-64 MLP with 4 layers; 4.1 to 5.9 at 32 layers, width 64; 5.8
  to 6.9 at width 256). No scalar of this family gets a plain ReLU network to an
  NLC of 10 at a practical depth. What holds it back is the mean of
  :math:`|s|`, shared by all inputs: a normalization after the activation that
  removes it (batch norm, or layer norm over the features) leaves the centred
  map, whose slope at 1 is :math:`1/(1 - 2/\\pi) = 2.75` per layer, and the NLC
  grows geometrically (dense, relu, batch norm, six times at width 64: up to
  about 20; the same with 3x3 convolutions of 16 channels: about 18).
* GELU under ``interp`` peaks at :math:`a = 2`, :math:`s\\,\\mathrm{erf}(s/\\sqrt2)`, an
  even function between :math:`s^2` (small :math:`q`) and :math:`|s|` (large
  :math:`q`): the same picture (a plain width-64 MLP with 4 layers reaches 2.1;
  with batch norm after each of 6 activations, :math:`\\sigma_w = 2`: about 14, 12
  for the convolutional version). ``scale`` tends to ReLU as :math:`b \\to \\infty`
  and reaches less.
* Saturating activations (tanh, erf, sigmoid): ``scale`` makes every layer a
  near step function (:data:`zsad.shaping.SIGMA_MAX`), far beyond any practical target;
  ``interp`` also reaches well above 10 from a few layers on.

References:
  G. Philipp, The nonlinearity coefficient -- a practical guide to neural
  architecture design, arXiv:2105.12210, 2021.
  J. Martens et al., Rapid training of deep neural networks without skip
  connections or normalization layers using Deep Kernel Shaping, arXiv:2110.01765, 2021.
  G. Zhang, A. Botev, J. Martens, Deep learning without shortcuts: shaping the
  kernel with tailored rectified linear units, ICLR 2022.
  G. Yang et al., A mean field theory of batch normalization, ICLR 2019.
"""
from __future__ import annotations

import math
import time
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from zsad import meanfield as mf
from zsad._errors import NumericsError, SpecError, ZsadError
from zsad.activations import HOMOGENEOUS
from zsad.arch.build import build
from zsad.arch.spec import Activation, Architecture, BatchNorm, Block, Layer, LayerNorm, Residual, Shaping
from zsad.data import load_inputs
from zsad.meanfield.walk import BatchState, batch_state, propagate
from zsad.measure import TRACES
from zsad.score import make_profile_fn, seed_keys, structure_key
from zsad.shaping import BETA_RANGE, SATURATING, SIGMA_MAX, LayerCurve, activation_layers, with_shaping

METHODS = ("interp", "scale")


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


def normalize_space(space, target: float, **options) -> Iterator[tuple[str, NormalizeResult | None, str | None]]:
    """Normalizes every architecture of a search space (:class:`zsad.space.Space`) to ``target``.

    Yields ``(id, result, error)`` per architecture: ``error`` is a one-line
    reason (invalid architecture, unreachable target) and ``result`` None then.
    Options are those of :func:`normalize`.

    Raises:
      SpecError: for a NAS-Bench-201 space (its cells have no shaping scalars).
    """
    if space.form not in ("list", "product", "generator"):
        what = "NAS-Bench-201" if space.form == "nas-bench-201" else f"The {space.form} space's"
        raise SpecError(f"{space.source or space.name}: {what} cells are built in without shaping "
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
    summaries: bool = True,
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
      summaries: whether to add the mean-field summaries of the network before and
        after (``NormalizeResult.meanfield``; about a second each on a CPU).

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
    acts = _shapeable_layers(arch, target, method, tol)

    # The program: built once, called with new scalars for every evaluation.
    net = build(arch)
    x = load_inputs(arch.input, batch, seed=data_seed, base_dir=arch.base_dir, source=arch.source)
    x = jnp.asarray(x, dtype=jnp.result_type(float) if arch.input.dtype == "float32" else x.dtype)
    profile = make_profile_fn(net, tangents, structure=structure_key(arch))
    keys = seed_keys(seed, seeds)
    out_name = net.layer_names[-1]
    history: list[dict] = []

    def measure(shapes: dict[str, Shaping] | None, u: float) -> np.ndarray:
        scalars = {k: dict(v) for k, v in net.scalars.items()}
        for name, sh in (shapes or {}).items():
            old = scalars[name]
            for field in ("alpha", "beta", "gain"):
                old[field] = np.asarray(getattr(sh, field), dtype=old[field].dtype)  # as zsad.build's scalars
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
    traces0 = sum(TRACES.values())
    nb = float(np.mean(before))

    # Per-layer curves at the mean-field input moments of the unchanged network.
    start = batch_state(np.asarray(x))
    record = propagate(arch, start).walk.activation_inputs
    layers_ = [LayerCurve(name, layer, float(record[name]), method) for name, layer in acts]
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
            sum(TRACES.values()) - traces0,
            _meanfield_summaries(arch, new, np.asarray(x)) if summaries else {"reason": "not requested"})

    if abs(nb / target - 1.0) <= tol:
        return finish(1.0, before, None, True)

    # (1) mean-field first guess, its log-NLC corrected by the measured/predicted ratio at u = 1.
    u_mf = _meanfield_guess(_Predictor(arch, start, shapes_at), nb, target, u_max)
    u = _first_u(u_mf, nb, target, u_max, len(layers_) * step)

    # (2) measured correction: bracketing secant on F(u) = ln NLC(u) - ln T over [0, u_max].
    points = [(1.0, math.log(nb) - math.log(target), before)]
    for _ in range(max_iter):
        values = measure(shapes_at(u), u)
        mean = float(np.mean(values))
        if abs(mean / target - 1.0) <= tol:
            return finish(u, values, u_mf, True)
        points.append((u, math.log(mean) - math.log(target), values))
        nxt = _next_u([(p[0], p[1]) for p in points], u_max)
        if nxt is None:  # an end of [0, u_max] is measured and the target lies beyond it
            lo, hi = _reach(points, u_max, lambda v: measure(shapes_at(v), v))
            raise NormalizeError(
                f"{arch.name}: target {target:g} is out of reach of method '{method}': reachable NLC range "
                f"[{lo:.4g}, {hi:.4g}] (measured, {_reach_text(method)})"
                f"{_hint(method, acts, 'above' if target > hi else 'below', arch)}")
        if any(abs(nxt - p[0]) <= 1e-9 * max(1.0, u_max) for p in points):
            break  # no new point left between the measured ones: the closest is returned
        u = nxt
    best = min(points, key=lambda p: abs(p[1]))
    return finish(best[0], best[2], u_mf, False)


def _shapeable_layers(arch: Architecture, target: float, method: str, tol: float) -> list[tuple[str, Activation]]:
    """The activation layers :func:`normalize` shapes, after checking its arguments (one-line errors)."""
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
    acts = activation_layers(arch.layers)
    if not acts:
        raise SpecError(f"{arch.source or arch.name}: no activation layers to shape (the network is affine: "
                        "its NLC is exactly 1)")
    if method == "scale":
        for name, layer in acts:
            if layer.fn in HOMOGENEOUS:
                raise SpecError(f"{arch.source or arch.name}: layer {name}: method 'scale' needs a smooth, "
                                f"non-homogeneous activation; {layer.fn} is positively homogeneous "
                                "(phi(b s)/b = phi(s)); use --method interp")
    return acts


def _first_u(u_mf: float | None, nlc_1: float, target: float, u_max: float, slope: float) -> float:
    """The first ``u`` to measure: the mean-field guess, else a step in log-NLC (``slope`` per unit of ``u``
    above 1, proportional below); never 1, which is measured already."""
    if u_mf is not None:
        u = u_mf
    elif target < nlc_1:
        u = math.log(target) / math.log(nlc_1)
    else:
        u = min(1.0 + (math.log(target) - math.log(nlc_1)) / slope, u_max)
    if abs(u - 1.0) < 1e-6:  # the unchanged network is measured already: a step towards the target
        u = min(1.0 + 0.05 * (u_max - 1.0), u_max) if target > nlc_1 else 0.95
    return u


class _Predictor:
    """Mean-field NLC of the network at global parameter ``u`` (infinite width, no weights sampled)."""

    def __init__(self, arch: Architecture, start: BatchState, shapes_at):
        self.arch, self.start, self.shapes_at = arch, start, shapes_at

    def __call__(self, u: float) -> float:
        state = propagate(self.arch, self.start, self.shapes_at(u)).state
        return float(mf.predicted_nlc(state, self.start.c_in))


def _meanfield_guess(predict: _Predictor, nlc_1: float, target: float, u_max: float) -> float | None:
    """``u`` where the mean-field NLC, rescaled to the measured one at ``u = 1``, equals ``target``.

    The correction is in log-NLC: ``kappa = ln NLC_meas(1) / ln NLC_mf(1)`` (finite
    width, convolution borders and pooling make the measured log-NLC a roughly
    constant multiple of the predicted one); the mean-field goal is ``T^(1/kappa)``.
    None where the prediction is undefined (non-finite) along the way.
    """
    try:
        mf1 = predict(1.0)
        kappa = math.log(nlc_1) / math.log(mf1) if math.isfinite(mf1) and math.log(mf1) > 1e-6 else 1.0
        goal = math.log(target) / kappa if kappa > 0 else math.log(target)

        def f(u):
            value = predict(u)
            if not (math.isfinite(value) and value > 0):
                raise FloatingPointError
            return math.log(value) - goal

        f1 = math.log(mf1) - goal
        if f1 < 0:
            top = f(u_max)
            return u_max if top <= 0 else float(brentq(f, 1.0, u_max, xtol=1e-3, rtol=1e-4, maxiter=40))
        bottom = f(0.0)
        return 0.0 if bottom >= 0 else float(brentq(f, 0.0, 1.0, xtol=1e-3, rtol=1e-4, maxiter=40))
    except (FloatingPointError, ValueError, ZeroDivisionError, NumericsError):
        return None


def _reach(points, u_max: float, measure) -> tuple[float, float]:
    """Measured NLC range over ``[0, u_max]``: the least and largest mean NLC of the measured points,
    after measuring both ends (the linear end ``u = 0`` and the most nonlinear shaping ``u_max``)."""
    values = {p[0]: float(np.mean(p[2])) for p in points}
    for end in (0.0, u_max):
        if not any(abs(end - u) <= 1e-9 * max(1.0, u_max) for u in values):
            try:
                values[end] = float(np.mean(measure(end)))
            except NumericsError:
                pass
    return min(values.values()), max(values.values())


_EVEN = {"relu": "|s| (alpha = 2)", "leaky_relu": "|s| (alpha = 2 / (1 - negative_slope))",
         "gelu": "s erf(s/sqrt 2) (alpha = 2), close to |s|", "gelu_tanh": "close to |s| (alpha = 2)"}


def _hint(method: str, acts: list[tuple[str, Activation]], side: str, arch: Architecture) -> str:
    """Why the range ends there and what widens it (a suffix of the one-line error)."""
    if side == "below":
        return ("; the target is below it: layers other than the activations (layer norm, max pooling) keep "
                "the network nonlinear")
    kinds = {type(layer) for layer in _all_layers(arch.layers)}
    if Residual in kinds:
        return ("; the shortcuts of the residual layers add a linear path to every branch: a larger "
                "branch_scale (or more depth) widens it")
    fns = {layer.fn for _, layer in acts}
    even = sorted(fns & set(_EVEN))
    if method == "interp" and even and not kinds & {BatchNorm, LayerNorm}:
        return (f"; under interpolation {even[0]} is at most {_EVEN[even[0]]}, whose mean keeps a network "
                "without normalization near the edge of chaos, where the NLC grows only about linearly with "
                "depth (at most ~0.3 per activation layer); add depth or a batch/layer norm after each activation")
    if method == "interp" and fns <= SATURATING:
        return "; method 'scale' reaches higher values for saturating activations"
    if method == "scale" and not fns <= SATURATING:
        return "; method 'interp' reaches higher values for non-saturating activations"
    return "; more activation layers widen it"


def _all_layers(layers: tuple[Layer, ...]) -> Iterator[Layer]:
    """Every layer, blocks and residual branches included."""
    for layer in layers:
        yield layer
        if isinstance(layer, Block):
            yield from _all_layers(layer.layers)
        elif isinstance(layer, Residual):
            yield from _all_layers(layer.branch)
            yield from _all_layers(layer.shortcut)


def _reach_text(method: str) -> str:
    if method == "interp":
        return "from linear activations to every alpha at its layer's most nonlinear value"
    return (f"from beta = {BETA_RANGE[0]:g} to {SIGMA_MAX:g} / sqrt(q) (at most {BETA_RANGE[1]:g}) times each "
            "layer's own")


def _next_u(points: list[tuple[float, float]], u_max: float) -> float | None:
    """Next ``u`` to measure, from the measured ``(u, ln NLC(u) - ln T)``; None when an end is reached.

    With a sign change between two neighbouring measured points (sorted by
    ``u``): regula falsi inside the bracket next to the best point, kept 5% of
    the bracket away from its ends, and a bisection when the last two points
    fell on the same side (no stagnation on a curved function). Without one:
    a secant step through the two points nearest the target side, towards
    larger ``u`` (all below the target, capped at ``u_max``) or smaller ``u``
    (all above, down to 0); None when that end is already measured.
    """
    pts = sorted(points)
    brackets = [(a, b) for a, b in zip(pts, pts[1:]) if (a[1] < 0) != (b[1] < 0)]
    if brackets:
        best = min(points, key=lambda p: abs(p[1]))
        a, b = min(brackets, key=lambda ab: min(abs(ab[0][0] - best[0]), abs(ab[1][0] - best[0])))
        width = b[0] - a[0]
        guess = a[0] - a[1] * width / (b[1] - a[1])
        last = points[-2:]
        inside = all(a[0] <= p[0] <= b[0] for p in last)
        if len(points) >= 3 and inside and (last[0][1] < 0) == (last[1][1] < 0):
            guess = 0.5 * (a[0] + b[0])
        margin = 0.05 * width
        return float(min(max(guess, a[0] + margin), b[0] - margin))
    span = max(u_max, 1.0)
    if pts[0][1] < 0:  # every point below the target: more nonlinear
        (u1, f1), (u2, f2) = (pts[-2], pts[-1]) if len(pts) >= 2 else ((0.0, 0.0), pts[-1])
        if u2 >= u_max - 1e-9 * span:
            return None
        if len(pts) >= 2 and u2 > u1 and f2 > f1:
            guess = u2 - f2 * (u2 - u1) / (f2 - f1)
        else:  # no usable slope
            guess = u2 + 0.5 * (u_max - u2)
        guess = min(guess, u2 + max(3.0 * (u2 - u1), 1.0))
        return float(min(max(guess, u2 + 0.01 * (u_max - u2)), u_max))
    (u1, f1), (u2, f2) = pts[0], (pts[1] if len(pts) >= 2 else (u_max, 0.0))
    if u1 <= 1e-9 * span:  # every point above the target: less nonlinear
        return None
    if len(pts) >= 2 and u2 > u1 and f2 > f1:
        guess = u1 - f1 * (u2 - u1) / (f2 - f1)
    else:
        guess = 0.5 * u1
    return float(min(max(guess, 0.0), 0.99 * u1))
