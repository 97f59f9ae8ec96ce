"""Scoring one architecture: build, initialize over seeds, measure, judge.

The measurement is :mod:`zsad.measure`'s program (:func:`make_metrics_fn`): one
compiled program per network structure computes the NLC profile and the
Jacobian spectrum for all seeds (vmapped on accelerators, one seed after
another on the CPU: :mod:`zsad._batching`), the batch-norm statistics in the
same primal pass. Scalars are traced inputs, so architectures that differ only
in scalars reuse it."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zsad.spaces import nasbench201 as nb201, nasbench201_net as nb201_net
from zsad._errors import SpecError
from zsad._memory import check_fits
from zsad._types import Network
from zsad.arch.build import build, structure
from zsad.arch.spec import Architecture, family_of
from zsad.data import load_inputs
from zsad.measure import MeasureConfig, make_measure, seed_inputs
from zsad.layer_values import LayerValues
from zsad.nlc import NLCResult
from zsad.cell_file import CellArchitecture
from zsad.spectrum import JacobianSpectrum, resolution
from zsad.spectrum import resolve_method
from zsad.meanfield_arch import meanfield_summary
from zsad.verdict import COVERED, SCALE_BAND, Verdict, combine, meanfield_verdict, nlc_verdict, outside_evidence


@dataclass(frozen=True)
class ScoreOptions:
    """How to score.

    Attributes:
      seeds: number of random initializations (the NLC is reported as mean and spread over them).
      batch: samples in the scoring batch.
      tangents: permutations (tangent vectors) per sample in the NLC estimator.
      seed: base seed; initialization ``i`` uses ``fold_in(key(seed), i)``.
      data_seed: seed of the Gaussian inputs (or of the subset drawn from a data file);
        the same inputs serve every initialization, so the spread is the initialization's.
      spectrum: whether to compute the Jacobian singular-value spectrum (:mod:`zsad.spectrum`).
      between: the two points of the network whose Jacobian is taken: layer names
        or indices, ``"input"`` or ``"output"``; default: from the output of the
        first dense/conv layer to the input of the last one (square-ish map).
      spectrum_method: ``auto``, ``exact`` or ``lanczos`` (see ``zsad.spectrum``).
      spectrum_samples: inputs at which the Jacobian is evaluated.
      spectrum_steps, spectrum_probes: Lanczos steps and probe vectors (matrix-free path).
      meanfield: whether to add the mean-field summary (:mod:`zsad.meanfield_arch`; infinite width, from
        the scoring batch's statistics; no weights sampled).
    """

    seeds: int = 3
    batch: int = 256
    tangents: int = 2
    seed: int = 0
    data_seed: int = 0
    spectrum: bool = True
    between: tuple[str, str] | None = None
    spectrum_method: str = "auto"
    spectrum_samples: int = 8
    spectrum_steps: int = 64
    spectrum_probes: int = 4
    meanfield: bool = True


class SpectrumConfig(NamedTuple):
    """Static configuration of the Jacobian spectrum inside the scoring program.

    The Jacobian is that of the top-level layers ``start .. stop-1`` (from the
    output of layer ``start - 1``, or the input, to the output of layer
    ``stop - 1``), at the first ``samples`` inputs of the batch.
    """

    start: int
    stop: int
    method: str = "auto"
    num_steps: int = 64
    num_probes: int = 4
    samples: int = 8


def make_metrics_fn(net: Network, num_tangents: int, spectrum: SpectrumConfig | None = None, *,
                    structure: Hashable | None = None):
    """``fn(keys[S], x, scalars) -> (NLCResult, JacobianSpectrum | None)``, ``[S]``-leading leaves, the NLC's
    fields mappings ``{layer name: [S]}`` (:class:`~zsad.layer_values.LayerValues`): the program of
    :func:`zsad.measure.make_measure` (``structure``: its cache key's structure; None: not shared)."""
    metrics = ("nlc", "spectrum") if spectrum is not None else ("nlc",)
    config = MeasureConfig(metrics, num_tangents, jax.default_backend() != "cpu", spectrum=spectrum)
    program = make_measure(net, config, structure=structure)
    names = tuple(net.layer_names)

    def fn(keys, x, scalars):
        m = program(seed_inputs(keys, x, num_tangents), x, jnp.zeros((x.shape[0],), jnp.int32), scalars)
        # per layer by name, sliced only where read (on the host after device_get, not as one operation each)
        layers = NLCResult(*(LayerValues(((names, part, 0),), names) for part in m.layers))
        return layers, m.spectrum

    return fn


def make_profile_fn(net: Network, num_tangents: int, *, structure: Hashable | None = None):
    """``fn(keys[S], x, scalars) -> NLCResult`` with ``[S]``-leading leaves per layer (one jitted program)."""
    metrics = make_metrics_fn(net, num_tangents, structure=structure)
    return functools.partial(_first, metrics)


def _first(fn, *args):
    return fn(*args)[0]


def structure_key(arch: Architecture | CellArchitecture) -> Hashable | None:
    """What identifies the network of ``arch`` up to its traced scalars (its measurement program's cache
    key); None for a flax or PyTorch module (not shared)."""
    if isinstance(arch, CellArchitecture):
        return ("nb201-cell", tuple(arch.ops))
    if arch.module is not None:
        return None
    return ("layers", structure(arch.layers), tuple(arch.input.shape), arch.input.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def seed_keys(seed: int, seeds: int) -> jax.Array:
    """The keys of initializations ``0 .. seeds-1`` under ``seed``, as one program (not one per operation)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(seeds))


def param_count(net: Network) -> int:
    """Number of trainable parameters (batch statistics excluded)."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes.get("params", {}))))


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None]
    if not finite:
        return None, None
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return mean, std


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class ScoreReport:
    """Everything ``zsad score`` reports about one architecture."""

    name: str
    params: int
    nlc_per_seed: list[float | None]
    nlc_mean: float | None
    nlc_std: float | None
    nlc_reason: str | None
    profile: list[dict]
    diverged: dict[int, str]
    verdict: Verdict
    options: ScoreOptions
    seconds: float
    extra: dict = field(default_factory=dict)
    density: tuple[np.ndarray, np.ndarray] | None = None  # σ² nodes and weights, pooled (for plots)

    def to_json(self) -> dict:
        """The stable machine-readable document (keys documented in the README)."""
        return {
            "name": self.name,
            "params": self.params,
            "nlc": {"mean": self.nlc_mean, "std": self.nlc_std, "per_seed": self.nlc_per_seed,
                    "reason": self.nlc_reason},
            "profile": self.profile,
            "diverged": {str(k): v for k, v in self.diverged.items()} or None,
            "verdict": {"status": self.verdict.status, "summary": self.verdict.summary,
                        "reasons": list(self.verdict.reasons)},
            **self.extra,
            "options": dataclasses.asdict(self.options),
            "dtype": str(jnp.result_type(float)),
            "seconds": round(self.seconds, 3),
        }


def score_architecture(arch: Architecture | CellArchitecture, options: ScoreOptions = ScoreOptions()) -> ScoreReport:
    """Scores ``arch``: NLC with spread over ``options.seeds`` initializations and its profile.

    ``arch``: an architecture file's, or one architecture of a built-in space
    (:class:`zsad.cell_file.CellArchitecture`, from ``space:`` + ``arch:``), whose Jacobian runs
    from the input to the last feature map and which has no mean-field summary.

    A seed whose forward pass overflows contributes ``None`` and the first layer
    with non-finite values is recorded in ``diverged``; an output that is constant
    across the batch gives ``None`` with a reason. Never raises on numerics.
    """
    t0 = time.perf_counter()
    cell = isinstance(arch, CellArchitecture)
    model = arch.model if cell else None
    net = (model.network(arch.ops) if model is not None else nb201_net.build_network(arch.ops)) if cell else build(arch)
    check_fits(net, options.batch, jnp.result_type(float) if arch.input.dtype == "float32" else arch.input.dtype,
               source=arch.source, name="layers" if not cell else "arch")  # before anything is allocated
    x = load_inputs(arch.input, options.batch, seed=options.data_seed, base_dir=arch.base_dir,
                    source=arch.source)
    x = jnp.asarray(x, dtype=jnp.result_type(float) if arch.input.dtype == "float32" else x.dtype)
    names = list(net.layer_names)
    spectrum_cfg = between = None
    if options.spectrum:
        start, stop, between = (_cell_between(names, options.between, model) if cell else
                                resolve_between(arch, names, options.between, has_segment=net.segment is not None))
        spectrum_cfg = SpectrumConfig(start, stop, options.spectrum_method, options.spectrum_steps,
                                      options.spectrum_probes, min(options.spectrum_samples, x.shape[0]))
    fn = make_metrics_fn(net, options.tangents, spectrum_cfg, structure=structure_key(arch))
    result, spec = jax.device_get(fn(seed_keys(options.seed, options.seeds), x, net.scalars))
    out = names[-1]

    diverged: dict[int, str] = {}
    for s in range(options.seeds):
        bad = [n for n in names if not bool(result.finite[n][s])]
        if bad:
            diverged[s] = bad[0]
    per_seed = [None if s in diverged else _num(result.nlc[out][s]) for s in range(options.seeds)]
    constant = all(np.isnan(result.nlc[out][s]) for s in range(options.seeds) if s not in diverged)
    mean, std = _stats(per_seed)
    reason = None
    if mean is None:
        reason = (f"diverged: non-finite values from layer {next(iter(diverged.values()))}"
                  if len(diverged) == options.seeds else "output is constant across the batch")
    profile = []
    for i, n in enumerate(names):  # a diverged seed's layers before its first non-finite one still count
        vals = [None if s in diverged and i >= names.index(diverged[s]) else _num(result.nlc[n][s])
                for s in range(options.seeds)]
        m, sd = _stats(vals)
        profile.append({"layer": n, "nlc": m, "nlc_std": sd})
    outside = outside_evidence(**(_CELL_FAMILY if cell else family_of(arch)))
    items = [nlc_verdict(mean, std, diverged_at=diverged[min(diverged)] if len(diverged) == options.seeds else None,
                         constant_output=constant and not diverged, outside=outside)]
    if diverged and len(diverged) < options.seeds:
        items.append(("warning", f"{len(diverged)} of {options.seeds} initializations diverge "
                                 f"(first non-finite layer: {diverged[min(diverged)]})"))
    extra: dict = {"evidence": {"bands_cover": COVERED, "outside": outside}}
    density = None
    if spectrum_cfg is not None:
        d_in, d_out = _segment_dims(net, x, spectrum_cfg)
        method = resolve_method(spectrum_cfg.method, d_in, d_out)
        floor = resolution(method, d_in, d_out, x.dtype)
        extra["spectrum"] = summarize_spectrum(spec, sorted(diverged), between, method, spectrum_cfg.samples,
                                               resolution=floor)
        extra["spectrum"]["affine_layers"] = sum(
            1 for n in names[spectrum_cfg.start:spectrum_cfg.stop] if _kind(n) in _AFFINE_KINDS)
        items.extend(spectrum_verdict(extra["spectrum"], outside=outside))
        density = spectrum_density(spec, sorted(diverged), resolution=floor)
    if options.meanfield and cell:
        extra["meanfield"] = {"reason": "mean field propagates an architecture file's layers; a built-in space's "
                                        "cells are not described that way"}
    elif options.meanfield:
        extra["meanfield"] = meanfield_summary(arch, np.asarray(x))
        items.extend(meanfield_verdict(extra["meanfield"]))
    if cell:
        extra["space"] = {"name": arch.space, "arch": arch.notation}
    elif arch.module is not None and arch.module.startswith("torch:"):
        from zsad.torch_bridge import init_description

        extra["init"] = init_description(arch)
    return ScoreReport(
        name=arch.name, params=_cell_params(arch) if cell else param_count(net), nlc_per_seed=per_seed, nlc_mean=mean, nlc_std=std,
        nlc_reason=reason, profile=profile, diverged=diverged, verdict=combine(items), options=options,
        seconds=time.perf_counter() - t0, extra=extra, density=density,
    )


# --------------------------------------------------------------------------- Jacobian spectrum

_AFFINE_KINDS = ("dense", "conv")


def _kind(name: str) -> str:
    """The type part of a layer name ``"{index}.{type}"`` (foreign modules' names are returned whole)."""
    return name.split(".", 1)[-1]


def _index(point: str, names: list[str], *, end: bool) -> int:
    """Top-level layer index (``-1`` = input, ``len`` - 1 = output) of a layer name or index."""
    if point == "input":
        return -1
    if point == "output":
        return len(names) - 1
    if point in names:
        return names.index(point)
    try:
        index = int(point)
    except ValueError:
        index = None
    if index is None or not -len(names) <= index < len(names):
        raise SpecError(f"--between: expected 'input', 'output', a layer index 0..{len(names) - 1} or a layer "
                        f"name ({', '.join(names[:6])}{', …' if len(names) > 6 else ''}); got {point!r}")
    return index % len(names)


#: What a NAS-Bench-201 network holds, for :func:`zsad.verdict.outside_evidence`.
_CELL_FAMILY = {"kinds": {"conv", "batch_norm", "activation", "avg_pool", "global_avg_pool", "dense"},
                "residual_conv": True, "multi_branch": True, "foreign": False}


def _cell_params(arch: CellArchitecture) -> int:
    """The benchmark's parameter count of a built-in space's architecture."""
    return nb201.param_count(arch.ops) if arch.model is None else arch.model.params(arch.ops)


def _cell_between(names: list[str], between: tuple[str, str] | None,
                  model=None) -> tuple[int, int, tuple[str, str]]:
    """The Jacobian's segment in a built-in space's network: from the input (the only place it can be cut)
    to a named output; default the last feature map (:data:`zsad.spaces.nasbench201.FEATURES`, or the
    space's ``features``)."""
    a, b = between or ("input", nb201.FEATURES if model is None else model.features)
    if a != "input":
        raise SpecError(f"--between: a built-in space's network's Jacobian starts at the input; got {a!r}")
    stop = _index(b, names, end=True)
    if stop < 0:
        raise SpecError(f"--between: the second point must be a layer ({', '.join(names)}); got {b!r}")
    return 0, stop + 1, ("input", names[stop])


def resolve_between(arch: Architecture, names: list[str], between: tuple[str, str] | None, *,
                    has_segment: bool = True) -> tuple[int, int, tuple[str, str]]:
    """(start, stop, labels) of the Jacobian's segment: layers ``start .. stop-1``.

    Default: from the output of the first dense/conv layer to the output of the
    layer before the last dense/conv layer (the hidden, square-ish part), stopping
    before a global average pooling inside it (which alone scales the mean squared
    singular value by 1/(H W)), or the whole network when that part is empty or
    the network cannot be cut.
    """
    n = len(names)
    if not has_segment:
        if between not in (None, ("input", "output")):
            raise SpecError(f"{arch.name}: --between needs an architecture file's layers; a flax or PyTorch module "
                            "gives input → output only")
        return 0, n, ("input", "output")
    if between is None:
        kinds = [_kind(name) for name in names]
        affine = [i for i, kind in enumerate(kinds) if kind in _AFFINE_KINDS]
        if len(affine) >= 2 and affine[-1] - 1 > affine[0]:
            a, b = affine[0], affine[-1] - 1
            # Global pooling alone scales sigma2 by 1 / (H W): the hidden part ends before it.
            pools = [i for i in range(a + 1, b + 1) if kinds[i] == "global_avg_pool"]
            if pools and pools[0] - 1 > a:
                b = pools[0] - 1
        else:
            a, b = -1, n - 1
    else:
        a, b = _index(between[0], names, end=False), _index(between[1], names, end=True)
        if b <= a:
            raise SpecError(f"--between: the first point ({between[0]}) must come before the second "
                            f"({between[1]})")
    label_a = "input" if a < 0 else names[a]
    return a + 1, b + 1, (label_a, names[b])


def _segment_dims(net: Network, x, cfg: SpectrumConfig) -> tuple[int, int]:
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    _, outs = jax.eval_shape(net.apply, variables, net.scalars, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    shapes = [math.prod(v.shape[1:]) for v in outs.values()]
    d_in = math.prod(x.shape[1:]) if cfg.start == 0 or net.segment is None else shapes[cfg.start - 1]
    return d_in, shapes[cfg.stop - 1] if net.segment is not None else shapes[-1]


SPECTRUM_KEYS = ("sigma2_mean", "sigma2_var", "sigma2_ratio", "sigma_max", "sigma_min", "condition",
                 "isometry_share")


def summarize_spectrum(spec: JacobianSpectrum, skip: list[int], between, method: str, samples: int, *,
                       resolution: float | None = None) -> dict:
    """Per-seed means over samples, then mean and spread (std over seeds) of each summary.

    ``resolution`` (:func:`zsad.spectrum.resolution`): a σ_min below ``resolution * σ_max`` is
    round-off, not a value; it counts as that bound, ``sigma_min_is_bound`` (and ``condition_is_bound``,
    the condition then a lower bound) is true, and the Jacobian is called singular only where σ_min is
    exactly 0. The Lanczos path's σ_min (the smallest Ritz value) is always an upper bound.
    """
    out: dict[str, Any] = {"between": list(between), "method": method, "samples": samples}
    std: dict[str, float | None] = {}
    arrays = {key: np.asarray(getattr(spec, key), dtype=np.float64) for key in SPECTRUM_KEYS}  # [S, samples]
    keep = [s for s in range(arrays["sigma_max"].shape[0]) if s not in skip]
    bound = np.zeros(arrays["sigma_min"].shape, bool)
    exact_zero = bool(np.any(arrays["sigma_min"][keep] == 0)) if keep else False
    if resolution is not None:
        floor = resolution * arrays["sigma_max"]
        bound = (arrays["sigma_min"] < floor) | (method != "exact")
        arrays["sigma_min"] = np.maximum(arrays["sigma_min"], floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            arrays["condition"] = arrays["sigma_max"] / arrays["sigma_min"]
    for key in SPECTRUM_KEYS:
        per_seed = [_num(np.mean(arrays[key][s])) for s in keep]
        out[key], std[key] = _stats(per_seed)
    out["std"] = std
    if resolution is not None and keep:
        out["sigma_min_is_bound"] = out["condition_is_bound"] = bool(np.any(bound[keep]))
    if all(out[k] is None for k in SPECTRUM_KEYS):
        out["reason"] = "every initialization diverged"
    elif exact_zero and (resolution is None or method == "exact"):
        out["condition_reason"] = "infinite: the Jacobian is singular (σ_min = 0) at some input"
        if resolution is not None:
            out["condition"] = std["condition"] = None
    elif out["condition"] is None:
        out["condition_reason"] = "infinite: the Jacobian is singular (σ_min = 0) at some input"
    return out


def spectrum_density(spec: JacobianSpectrum, skip: list[int], *,
                     resolution: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled σ² nodes and weights of the initializations not in ``skip``; values below what the method
    resolves (``(resolution * σ_max)²``, round-off) are put at that floor, not at 1e-39."""
    keep = [s for s in range(np.shape(spec.sigma_max)[0]) if s not in skip]
    if not keep:
        return None
    nodes = np.asarray(spec.density.nodes)[keep]
    if resolution is not None:
        floor = (resolution * np.asarray(spec.sigma_max, np.float64)[keep]) ** 2  # [S, samples]
        nodes = np.maximum(nodes, floor[..., None].astype(nodes.dtype))
    nodes = nodes.reshape(-1)
    weights = np.asarray(spec.density.weights)[keep].reshape(-1)
    ok = np.isfinite(nodes) & np.isfinite(weights)
    return nodes[ok], weights[ok] / max(weights[ok].sum(), 1e-300)


#: var(σ²)/mean(σ²)² above this: far from dynamical isometry.
SPREAD_MAX = 10.0
#: Share of singular values within a factor 2 of 1 above which a map is called nearly isometric.
ISOMETRIC_SHARE = 0.8


def spectrum_verdict(summary: dict, outside: str | None = None) -> list[tuple[str, str]]:
    """(status, reason) items from the Jacobian spectrum.

    ``outside``: what puts the network outside the families the scale band was estimated on
    (:func:`zsad.verdict.outside_evidence`); there a scale outside the band is reported without a
    judgment (``unknown``): in NAS-Bench-201's batch-normalized cells the input-to-features σ² runs
    from about 1 to 1e16 and does not go with trained accuracy (benchmarks/RESULTS_SCORE.md).
    """
    mean, ratio = summary.get("sigma2_mean"), summary.get("sigma2_ratio")
    a, b = summary["between"]
    items = []
    if mean is None:
        return items
    if mean < 1 / SCALE_BAND or mean > SCALE_BAND:
        word = "vanish" if mean < 1 else "explode"
        status = "bad" if (mean < 1 / SCALE_BAND**2 or mean > SCALE_BAND**2) else "warning"
        if outside:
            items.append(("unknown", f"mean σ² = {mean:.3g} between {a} and {b} lies outside [{1 / SCALE_BAND:g}, "
                                     f"{SCALE_BAND:g}], the range that trained well on {COVERED}; this network "
                                     f"has {outside}, where the scale of σ² has not gone with trained accuracy "
                                     "(NAS-Bench-201), so no judgment from it"))
        else:
            items.append((status, f"signals and gradients {word} between {a} and {b}: mean σ² = {mean:.3g} "
                                  "(1 is isometric; adjust weight_std towards the edge of chaos)"))
    elif ratio is not None and ratio > SPREAD_MAX:
        items.append(("warning", f"the Jacobian between {a} and {b} is far from isometric: var(σ²)/mean(σ²)² = "
                                 f"{ratio:.3g}"))
    else:
        share = summary.get("isometry_share") or 0.0
        quality = "close to dynamical isometry" if share >= ISOMETRIC_SHARE else "acceptably scaled"
        items.append(("good", f"the Jacobian between {a} and {b} is {quality}: mean σ² = {mean:.3g}, "
                              f"var/mean² = {ratio:.3g}, {100 * share:.0f}% of singular values within a "
                              "factor 2 of 1"))
    return items
