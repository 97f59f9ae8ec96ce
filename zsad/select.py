"""Choosing the operation at each position of a search space, fairly, without training.

A space whose architectures are *one choice per position* (Luo et al. 2023,
*Dynamical Isometry based Rigorous Fair Neural Architecture Search*) asks which
candidate is best at each position. :func:`select` answers it from a seeded
uniform sample of the space, scored with the default ranking score
(:mod:`zsad.ranking`), and says how fair the comparison is.

Positions and candidates: :func:`zsad.select_space.load_select_space`; other
forms (an explicit list, a generator) have no positions: a one-line error.

Sampling. ``samples`` architectures are drawn i.i.d. uniformly: each position's
candidate uniformly and independently, with ``numpy.random.default_rng(seed)``
(with replacement: an architecture drawn twice is computed once and counts
twice). A candidate among ``k`` is then expected ``samples / k`` times; the
default is the smallest ``samples`` for which every candidate of every position
is expected :data:`MIN_APPEARANCES` times (``30 k_max``), and fewer are refused.

Per-architecture values. The distinct sampled architectures are scored with
:func:`zsad.rank.rank_space` (metrics :data:`METRICS`: one compiled program per
structure). Each ingredient ``k`` of the default score
(:func:`zsad.ranking.default_ingredients`) is ranked among the ``N`` sampled
architectures (1 = worst, ``N`` = best, ties averaged; degenerate, diverged and
failed ones share the bottom ranks of every ingredient, so that they rank last
as in ``zsad rank`` and still count) and contributes ``ln(r_k / N)``; the score
is the mean of the contributions. With every architecture ``ok`` this is
exactly the ``score`` column of ``zsad rank`` on the sample.

Marginal effect of candidate ``c`` at position ``p``: the mean score of the
sampled architectures with ``c`` at ``p`` minus the mean over all ``N`` (the
same for each ingredient's contribution). Interval: the 2.5 and 97.5
percentiles over :data:`BOOTSTRAP` bootstrap resamples of the ``N``
architectures (ranks kept as computed on the full sample). Selection: per
position the candidate with the largest marginal effect on the score; the
selected architecture (it may not be in the sample) is scored with
``rank_space`` and ranked among the sample (``score`` and ``rank`` of ``N + 1``).

Fair initialization (on by default; ``fair=False`` compares as is) puts every
parametric candidate at criticality for the input it receives before the
comparison: :mod:`zsad.select_space`.

Each candidate's own Jacobian spectrum (:func:`zsad.spectrum.jacobian_spectrum`;
mean σ², var/mean², condition number, share of σ within a factor 2 of 1),
mean over :data:`SPECTRUM_SEEDS` initializations and :data:`SPECTRUM_SAMPLES`
inputs:

* product spaces, activation candidates: the segment the candidate occupies,
  the feeding dense/conv layer (its weight_std fair or as in the base) followed
  by the activation, the base architecture's other values kept, on a standard
  Gaussian input of the feeding layer's output width (``[features]``; a conv:
  ``[8, 8, features]``), so that a dense map is square. An activation with no
  feeding layer: the activation alone on a standard Gaussian input of width 64.
  Other candidates have no spectrum of their own (``None``, with the reason);
* NAS-Bench-201: the operation alone on a batch-normalized Gaussian input of the
  first stage's cell input shape ``[32, 32, 16]`` (standard Gaussian entries,
  which a batch norm leaves standard), the convolutions He-initialized as in
  the network (``weight_std = sqrt 2``) and their batch norm calibrated on a
  batch of :data:`NB201_SPECTRUM_BATCH` such inputs, then frozen. ``none`` is the
  zero map: σ² = 0, no finite condition number, isometry share 0.

Isometry alone would always pick the identity, which adds nothing: the
selection uses the marginal effect on the score, the spectra stand beside it.

Pure: no printing, no files (the CLI renders, writes and plots).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from zsad._errors import SpecError
from zsad.arch.spec import parse_architecture
from zsad.ranking import INGREDIENTS, average_ranks, default_ingredients, score_rows
from zsad.select_space import Position, SelectSpace
from zsad.space import Space, SpaceItem, fingerprint_of
from zsad.spaces import nasbench201 as nb201

#: Every candidate of every position is expected at least this many times in the default sample.
MIN_APPEARANCES = 30
#: Metrics scored per sampled architecture (the default score's ingredients and the parameter count).
METRICS: tuple[str, ...] = ("nlc", "sigma2", "params", "flops")
#: Bootstrap resamples of the marginal effects' intervals.
BOOTSTRAP = 1000
#: Initializations and inputs of each candidate's Jacobian spectrum.
SPECTRUM_SEEDS = 2
SPECTRUM_SAMPLES = 4
#: Batch on which a NAS-Bench-201 operation's batch norm is calibrated.
NB201_SPECTRUM_BATCH = 16


# --------------------------------------------------------------------------- sampling

def minimum_samples(space: SelectSpace) -> int:
    """The fewest samples for which every candidate is expected :data:`MIN_APPEARANCES` times."""
    return MIN_APPEARANCES * max(len(p.choices) for p in space.positions)


def draw(space: SelectSpace, samples: int, seed: int) -> np.ndarray:
    """``[samples, positions]`` candidate indices, each drawn uniformly and independently."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, len(p.choices), size=samples) for p in space.positions], axis=1)


# --------------------------------------------------------------------------- per-architecture values


def contributions(rows: Sequence[dict], ingredients: Sequence[str]) -> dict[str, np.ndarray]:
    """Per row, each ingredient's ``ln(r / N)`` among all ``N`` rows (rows not ``ok`` share the bottom ranks)
    and ``score``, their mean.

    Examples:
      >>> rows = [{"status": "ok", "nlc": 2.0}, {"status": "ok", "nlc": 4.0}, {"status": "degenerate", "nlc": None}]
      >>> [round(float(v), 4) for v in contributions(rows, ("nonlin",))["score"]]
      [-0.4055, 0.0, -1.0986]
    """
    n = len(rows)
    out: dict[str, np.ndarray] = {}
    for name in ingredients:
        fn = INGREDIENTS[name].value
        values = [fn(r) if r.get("status") == "ok" else None for r in rows]
        best_first = np.asarray(average_ranks(values))
        out[name] = np.log((n + 1 - best_first) / n)
    out["score"] = (np.mean([out[k] for k in ingredients], axis=0) if ingredients else np.zeros(n))
    return out


def marginal_effects(values: np.ndarray, choice: np.ndarray, k: int, *, boot: np.ndarray | None = None
                     ) -> list[dict]:
    """Per candidate ``0..k-1``: ``{count, marginal, marginal_low, marginal_high}``: the mean of ``values`` over
    the rows with that choice minus the mean over all rows; the interval over the bootstrap resamples ``boot``
    (``[B, N]`` row indices)."""
    values = np.asarray(values, dtype=np.float64)
    overall = float(values.mean())
    out = []
    for c in range(k):
        mask = choice == c
        count = int(mask.sum())
        row: dict[str, Any] = {"count": count, "marginal": None, "marginal_low": None, "marginal_high": None}
        if count:
            row["marginal"] = float(values[mask].mean()) - overall
            if boot is not None:
                m = mask[boot]
                v = values[boot]
                with np.errstate(invalid="ignore", divide="ignore"):
                    diffs = (v * m).sum(1) / m.sum(1) - v.mean(1)
                diffs = diffs[np.isfinite(diffs)]
                if diffs.size:
                    row["marginal_low"], row["marginal_high"] = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
        out.append(row)
    return out


# --------------------------------------------------------------------------- spectra


def _summary(spec) -> dict:
    def mean(field):
        v = np.asarray(getattr(spec, field), dtype=np.float64)
        v = v[np.isfinite(v)] if field != "condition" else v
        if v.size == 0 or not np.all(np.isfinite(v)):
            return None
        return float(np.mean(v))

    return {"sigma2": mean("sigma2_mean"), "sigma2_ratio": mean("sigma2_ratio"), "condition": mean("condition"),
            "isometry_share": mean("isometry_share")}


def _product_spectrum(space: SelectSpace, position: Position, index: int, fair: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from zsad.arch.build import build
    from zsad.score import seed_keys
    from zsad.spectrum import jacobian_spectrum

    site = space.activation_site(position, index)
    if site is None:
        return {"sigma2": None, "spectrum_on": "no spectrum: measured for activation candidates only"}
    _, act, feed = site
    layers = []
    if feed is not None and feed.get("type") in ("dense", "conv"):
        feed = copy.deepcopy(feed)
        feed.pop("repeat", None)
        init = dict(feed.get("init") or {})
        glob = space.base_node.get("init") if isinstance(space.base_node.get("init"), dict) else {}
        for k in ("dist", "weight_std", "bias_std"):
            if k not in init and k in glob:
                init[k] = glob[k]
        f = space.fair_init(position, index)
        if fair and f.kind == "critical":
            init["weight_std"] = f.weight_std
        feed["init"] = init
        width = int(feed["features"])
        shape = [width] if feed["type"] == "dense" else [8, 8, width]
        layers.append(feed)
        on = (f"{feed['type']} (weight_std {init.get('weight_std', 1.0):.4g}) then the activation, on a standard "
              f"Gaussian input {shape}")
    else:
        shape = [64]
        on = "the activation alone, on a standard Gaussian input [64]"
    layers.append({k: copy.deepcopy(v) for k, v in act.items()})
    arch = parse_architecture({"name": "segment", "input": {"shape": shape, "data": "gaussian", "std": 1.0},
                               "layers": layers}, default_name="segment")
    net = build(arch)
    x = jax.random.normal(jax.random.key(1), (SPECTRUM_SAMPLES, *shape), jnp.result_type(float))
    results = []
    for key in seed_keys(0, SPECTRUM_SEEDS):
        v = net.calibrate(net.init(key, net.scalars), net.scalars, x)
        spec = jacobian_spectrum(lambda z: net.apply(v, net.scalars, z[None])[0][0], x, key)
        results.append(_summary(spec))
    return {**_mean_summaries(results), "spectrum_on": on}


def _mean_summaries(results: list[dict]) -> dict:
    out = {}
    for k in results[0]:
        vals = [r[k] for r in results]
        out[k] = None if any(v is None for v in vals) else float(np.mean(vals))
    return out


NB201_SPECTRUM_SHAPE = (32, 32, nb201.CHANNELS[0])


def _nb201_spectrum(op: str) -> dict:
    import jax
    import jax.numpy as jnp

    from zsad.score import seed_keys
    from zsad.spaces import ops
    from zsad.spectrum import jacobian_spectrum

    on = (f"the operation alone on a batch-normalized Gaussian input {list(NB201_SPECTRUM_SHAPE)} (stage-1 cell "
          "input)")
    if op == "none":
        return {"sigma2": 0.0, "sigma2_ratio": None, "condition": None, "isometry_share": 0.0, "spectrum_on": on}
    dtype = jnp.result_type(float)
    batch = jax.random.normal(jax.random.key(1), (NB201_SPECTRUM_BATCH, *NB201_SPECTRUM_SHAPE), dtype)
    c = NB201_SPECTRUM_SHAPE[-1]
    results = []
    for key in seed_keys(0, SPECTRUM_SEEDS):
        if op == "skip_connect":
            fn = lambda z: z  # noqa: E731
        elif op == "avg_pool_3x3":
            fn = lambda z: ops.avg_pool(z[None])[0]  # noqa: E731
        else:
            k = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}[op]
            w = jax.random.normal(key, (k, k, c, c), dtype) * math.sqrt(2.0 / (k * k * c))

            def conv(z, w=w, k=k):
                return jax.lax.conv_general_dilated(jax.nn.relu(z), w, (1, 1), ((k // 2, k // 2),) * 2,
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

            y = conv(batch)
            m = jnp.mean(y, (0, 1, 2), keepdims=True)[0]
            s = jax.lax.rsqrt(jnp.mean(jnp.square(y - m[None]), (0, 1, 2), keepdims=True)[0] + nb201.BN_EPSILON)
            fn = lambda z, conv=conv, m=m, s=s: (conv(z[None])[0] - m) * s  # noqa: E731
        spec = jacobian_spectrum(fn, batch[:SPECTRUM_SAMPLES], jax.random.fold_in(key, 2), num_steps=32)
        results.append(_summary(spec))
    return {**_mean_summaries(results), "spectrum_on": on}


def candidate_spectrum(space: SelectSpace, p: int, index: int, fair: bool) -> dict:
    """The candidate's own Jacobian spectrum at its position (see the module docstring for the input)."""
    position = space.positions[p]
    if space.form == "nas-bench-201":
        return _nb201_spectrum(position.values[index])
    return _product_spectrum(space, position, index, fair)


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class SelectOptions:
    """How to select.

    Attributes:
      samples: sampled architectures (None: :func:`minimum_samples`).
      seed: seed of the sample and of the bootstrap.
      fair: compare with fair initialization (and without); False: without only.
      seeds, batch, tangents: as :class:`zsad.rank.RankOptions`.
      bootstrap: resamples of the intervals.
    """

    samples: int | None = None
    seed: int = 0
    fair: bool = True
    seeds: int = 2
    batch: int = 64
    tangents: int = 2
    bootstrap: int = BOOTSTRAP

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Selection:
    """What :func:`select` found (see :meth:`to_json` for the document)."""

    space: SelectSpace
    options: SelectOptions
    samples: int
    positions: list[dict]
    selected: dict
    rows: dict[str, list[dict]]  # per comparison ('fair', 'as_is'): one row per sampled architecture
    ingredients: tuple[str, ...]
    notes: list[str]

    def to_json(self) -> dict:
        return {"space": {"name": self.space.name, "form": self.space.form, "file": self.space.source},
                "positions": self.positions, "selected": self.selected,
                "options": {**self.options.to_json(), "samples": self.samples, "metrics": list(METRICS),
                            "ingredients": list(self.ingredients), "min_appearances": MIN_APPEARANCES,
                            "fair_changes_anything": self.space.fair_changes_anything},
                "notes": self.notes}


def _rank_rows(space: SelectSpace, combos: np.ndarray, fair: bool, options: SelectOptions,
               on_progress: Callable[[str, int, int], None] | None, label: str) -> list[dict]:
    from zsad.rank import RankOptions, rank_space

    unique: dict[tuple, SpaceItem] = {}
    for combo in map(tuple, combos.tolist()):
        if combo not in unique:
            unique[combo] = space.item(combo, fair)
    items = tuple(unique.values())
    sub = Space(space.form, space.name, space.source, len(items),
                fingerprint_of({"select": space.space.fingerprint, "fair": fair, "archs": [i.id for i in items]}),
                input=space.space.input, items=lambda: iter(items))
    ropts = RankOptions(seeds=options.seeds, batch=options.batch, tangents=options.tangents, seed=options.seed,
                        metrics=METRICS)
    progress = (lambda done, total: on_progress(label, done, total)) if on_progress else None
    result = rank_space(sub, ropts, on_progress=progress)
    by_id = {r["arch"]: r for r in result.rows}
    return [dict(by_id[space.notation(c)]) for c in map(tuple, combos.tolist())]


def select(space: SelectSpace, options: SelectOptions = SelectOptions(), *,
           on_progress: Callable[[str, int, int], None] | None = None) -> Selection:
    """Marginal effects of every candidate at every position, and the selected architecture.

    Raises:
      SpecError: ``options.samples`` below :func:`minimum_samples` (one line, with the minimum).
    """
    minimum = minimum_samples(space)
    n = minimum if options.samples is None else options.samples
    if n < minimum:
        k = max(len(p.choices) for p in space.positions)
        raise SpecError(f"--samples {n}: too few for every candidate to be expected {MIN_APPEARANCES} times "
                        f"(a position has {k} candidates); at least {minimum}")
    combos = draw(space, n, options.seed)
    ingredients = default_ingredients(METRICS)
    fair_matters = options.fair and space.fair_changes_anything
    runs = {"as_is": _rank_rows(space, combos, False, options, on_progress, "as is")}
    runs["fair"] = (_rank_rows(space, combos, True, options, on_progress, "fair") if fair_matters
                    else runs["as_is"])
    main = "fair" if options.fair else "as_is"
    boot = np.random.default_rng([options.seed, 1]).integers(0, n, size=(options.bootstrap, n))
    values = {}
    for name, rows in runs.items():
        contrib = contributions(rows, ingredients)
        for i, row in enumerate(rows):
            row["select_score"] = float(contrib["score"][i])
            for k in ingredients:
                row[f"contribution_{k}"] = float(contrib[k][i])
        values[name] = contrib

    positions = []
    best: list[int] = []
    for p, pos in enumerate(space.positions):
        effects = {name: {key: marginal_effects(values[name][key], combos[:, p], len(pos.choices), boot=boot)
                          for key in ("score", *ingredients)} for name in runs}
        cands = []
        for i, choice in enumerate(pos.choices):
            m = effects[main]["score"][i]
            other = "as_is" if main == "fair" else "fair"
            c: dict[str, Any] = {"choice": choice, "count": m["count"], "marginal": m["marginal"],
                                 "marginal_low": m["marginal_low"], "marginal_high": m["marginal_high"]}
            if options.fair:
                a = effects["as_is"]["score"][i]
                c["as_is"] = {"marginal": a["marginal"], "marginal_low": a["marginal_low"],
                              "marginal_high": a["marginal_high"]}
            del other
            c["ingredients"] = {k: {kk: effects[main][k][i][kk] for kk in ("marginal", "marginal_low", "marginal_high")}
                                for k in ingredients}
            f = space.fair_init(pos, i)
            c["fair_init"] = f.to_json() if options.fair else {"kind": "off", "text": "not applied (--no-fair)"}
            spec = candidate_spectrum(space, p, i, fair=options.fair)
            c.update(spec)
            if options.fair and f.kind == "critical":
                c["spectrum_as_is"] = candidate_spectrum(space, p, i, fair=False)
            cands.append(c)
        scored = [(c["marginal"], -i) for i, c in enumerate(cands) if c["marginal"] is not None]
        choice = -max(scored)[1]
        best.append(choice)
        for i, c in enumerate(cands):
            c["selected"] = i == choice
        positions.append({"name": pos.name, "candidates": cands})

    selected = _score_selected(space, combos, runs[main], tuple(best), options.fair and fair_matters, options)
    notes = []
    if space.form == "nas-bench-201":
        notes.append("fair initialization changes nothing in NAS-Bench-201: every operation with parameters is "
                     "ReLU-conv-batch norm (invariant to the weight scale), the others have no parameters")
    elif options.fair and not fair_matters:
        notes.append("fair initialization changes nothing in this space: no activation candidate is fed directly "
                     "by a dense or conv layer")
    degenerate = sum(r["status"] != "ok" for r in runs[main])
    if degenerate:
        notes.append(f"{degenerate} of {n} sampled architectures are not ok (degenerate, diverged or failed): they "
                     "rank last on every ingredient")
    return Selection(space, options, n, positions, selected, runs, ingredients, notes)


def _score_selected(space: SelectSpace, combos: np.ndarray, rows: list[dict], best: tuple[int, ...], fair: bool,
                    options: SelectOptions) -> dict:
    arch = space.notation(best)
    cols = ("arch", "status", "reason", "nlc", "nlc_std", "nlc_block", "sigma2", "params", "flops")
    pool = [{c: r.get(c) for c in cols} for r in rows]
    in_sample = [i for i, r in enumerate(rows) if r["arch"] == arch]
    if in_sample:
        at = in_sample[0]
    else:
        row = _rank_rows(space, np.asarray([best]), fair, options, None, "selected")[0]
        pool.append({c: row.get(c) for c in cols})
        at = len(pool) - 1
    mine = score_rows(pool, ("score",), METRICS)[at]
    out = {c: mine.get(c) for c in cols}
    out.update({"score": mine["score"], "rank": mine["rank"], "ranked_among": len(pool), "in_sample": bool(in_sample),
                "choices": {p.name: p.choices[i] for p, i in zip(space.positions, best)}})
    if fair:
        out["fair_init"] = [space.fair_init(p, i).text for p, i in zip(space.positions, best)
                            if space.fair_init(p, i).kind == "critical"]
    return out
