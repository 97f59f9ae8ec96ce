"""The ranking score and the rank mathematics: pure functions of result rows.

Also the vocabulary they share with :func:`zsad.rank.rank_space` and its
results files: the metric names (:data:`METRICS`), the options of a run
(:class:`RankOptions`) and the columns of a results file (:func:`columns`).

A row is a dict of metric columns (``nlc``, ``sigma2``, ``params``, ...) with
a ``status``; only ``ok`` rows are scored, every other row ranks last.

The default score combines **within-space ranks** of a few ingredients, each
oriented so that higher is better and each standing for one way an
architecture fails:

.. math::
    \\mathrm{score}(a) = \\frac{1}{K} \\sum_{k=1}^{K} \\ln \\frac{r_k(a)}{N}

where :math:`r_k(a)` is architecture :math:`a`'s rank on ingredient
:math:`k` among the :math:`N` scored architectures (1 = worst, :math:`N` =
best, ties averaged). The score lies in :math:`[\\ln(1/N), 0]`; 0 means best
on every ingredient. Ranks make the combination independent of each metric's
scale (an NLC of 300 and a parameter count of 10⁶ weigh the same), and the
logarithm makes a bad rank on one ingredient costly (AZ-NAS, Lee & Ham 2024,
combines its ingredients the same way). The ingredients and the candidate
family they were chosen from are :data:`INGREDIENTS` and :data:`CANDIDATES`;
``benchmarks/score_selection.md`` states the rule that chose
:data:`DEFAULT_CANDIDATE`, and ``benchmarks/RESULTS_SCORE.md`` every
candidate's figures.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from zsad._errors import DataError, SpecError, closest
from zsad.verdict import HEALTHY_MAX, LINEAR_MAX, SCALE_BAND

#: Metrics that ``--metrics`` selects from, in column order (``nlc`` gives ``nlc`` and ``nlc_std``).
METRICS: tuple[str, ...] = ("nlc", "sigma2", "params", "flops", "naswot", "synflow", "grad_norm", "snip",
                             "jacob_cov")
STATUSES = ("ok", "degenerate", "diverged", "failed")

#: Direction of each proxy: ``'higher'`` means a larger value is taken as a
#: better architecture.
#:
#: * ``params``, ``flops``: higher -- the convention of the zero-cost NAS
#:   benchmarks (Abdelfattah et al. 2021; NAS-Bench-Suite-Zero), where both
#:   correlate positively with accuracy on NAS-Bench-201.
#: * ``naswot``: higher -- Mellor et al. rank by log|K_H|: more distinct
#:   activation patterns across inputs (a less singular kernel) is better.
#: * ``synflow``: higher -- Tanaka et al.'s saliency measures conserved
#:   synaptic flow; summed over parameters, more flow is better.
#: * ``grad_norm``: higher -- scored as-is by Abdelfattah et al. (positive
#:   rank correlation with accuracy).
#: * ``snip``: higher -- Lee et al.'s connection sensitivity; summed, a more
#:   sensitive network is better (Abdelfattah et al.).
#: * ``jacob_cov``: higher -- the score is maximal when per-sample Jacobians
#:   are uncorrelated (eigenvalues near 1) and very negative when they are
#:   correlated (eigenvalues near 0).
PROXY_DIRECTION: dict[str, str] = {
    "params": "higher",
    "flops": "higher",
    "naswot": "higher",
    "synflow": "higher",
    "grad_norm": "higher",
    "snip": "higher",
    "jacob_cov": "higher",
}

#: Direction of each metric column: ``higher`` or ``lower`` is better, or
#: ``band``: best inside ``[LINEAR_MAX, HEALTHY_MAX]``, worse with the
#: log-distance from it, or ``near 1``: best at 1, worse with ``|ln value|``.
DIRECTION: dict[str, str] = {"nlc": "band", "nlc_std": "lower", "nlc_block": "lower", "sigma2": "near 1",
                             **PROXY_DIRECTION, "score": "higher"}

#: Weight of capacity in the previous default score (:func:`legacy_score`).
CAPACITY_WEIGHT = 0.01
#: The Jacobian-scale term: no penalty while sqrt(sigma2) lies within a factor 10 of 1
#: (|ln sigma2| <= ln SCALE_BAND), then the excess of |ln sigma2|.
SCALE_FREE = math.log(SCALE_BAND)
#: Weight of the Jacobian-scale term in :func:`legacy_score`.
SCALE_WEIGHT = 0.5

_TINY = float(np.finfo(np.float64).tiny)


def band_distance(nlc: float) -> float:
    """Log-distance of ``nlc`` from the band ``[LINEAR_MAX, HEALTHY_MAX]`` (0 inside it).

    Examples:
      >>> band_distance(1.3), round(band_distance(2.8), 4)   # the band [1.2, 1.4]
      (0.0, 0.6931)
    """
    return max(0.0, math.log(LINEAR_MAX / nlc), math.log(nlc / HEALTHY_MAX))


def abs_log_sigma2(sigma2: float | None) -> float:
    """``|ln sigma2|``; an exactly vanished Jacobian (0) or an undefined one (None: non-finite in some
    initialization, i.e. overflowing) counts as far from 1 as float64 can say.

    Examples:
      >>> abs_log_sigma2(1.0), round(abs_log_sigma2(0.01), 4) == round(abs_log_sigma2(100.0), 4)
      (0.0, True)
    """
    if sigma2 is None:
        return -math.log(_TINY)
    return abs(math.log(max(float(sigma2), _TINY)))


def oriented(column: str, value: float | None) -> float | None:
    """``value`` mapped so that higher is better (``band``: minus :func:`band_distance`)."""
    if value is None:
        return None
    direction = DIRECTION[column]
    if direction == "higher":
        return float(value)
    if direction == "lower":
        return -float(value)
    if direction == "near 1":
        return -abs_log_sigma2(value)
    return -band_distance(float(value))


# --------------------------------------------------------------------------- ingredients


class Ingredient(NamedTuple):
    """One term of a rank-combined score.

    Attributes:
      column: the metric column it reads (the score leaves the ingredient out when the column was not computed).
      value: ``value(row) -> float | None``, higher is better; None ranks at the bottom.
      failure: the way of failing it sees.
      text: the formula, for the results file's metadata and the help.
    """

    column: str
    value: Callable[[dict], float | None]
    failure: str
    text: str


def _log(column: str) -> Callable[[dict], float | None]:
    def value(row: dict) -> float | None:
        v = row.get(column)
        return None if v is None or not v > 0 else math.log(v)

    return value


def _scale(row: dict) -> float | None:
    return -max(0.0, abs_log_sigma2(row.get("sigma2")) - SCALE_FREE)


def _scale_full(row: dict) -> float | None:
    return -abs_log_sigma2(row.get("sigma2"))


def _band(row: dict) -> float | None:
    return None if row.get("nlc") is None else -band_distance(row["nlc"])


def _negated(column: str) -> Callable[[dict], float | None]:
    return lambda row: None if row.get(column) is None else -float(row[column])


#: Every ingredient of :data:`CANDIDATES`, oriented so that higher is better.
INGREDIENTS: dict[str, Ingredient] = {
    "band": Ingredient("nlc", _band, "wrong-sized nonlinearity",
                       f"-d(nlc; {LINEAR_MAX:g}, {HEALTHY_MAX:g}), the log-distance of the NLC from the band"),
    "nonlin": Ingredient("nlc", _log("nlc"), "too little nonlinearity (an effectively linear network underfits)",
                         "ln nlc"),
    "scale": Ingredient("sigma2", _scale, "vanishing or exploding signals",
                        f"-max(0, |ln sigma2| - ln {SCALE_BAND:g})"),
    "scale_full": Ingredient("sigma2", _scale_full, "untrainable signal propagation (Jacobian far from isometry "
                             "in scale)", "-|ln sigma2|"),
    "capacity": Ingredient("params", _log("params"), "too little capacity", "ln params"),
    "complexity": Ingredient("flops", _log("flops"), "too little capacity (compute)", "ln flops"),
    "naswot": Ingredient("naswot", lambda r: r.get("naswot"), "poor feature-kernel expressivity", "naswot"),
    "block": Ingredient("nlc_block", _negated("nlc_block"), "one block far more nonlinear than the rest",
                        "-nlc_block"),
}

#: The candidate family of the default score (benchmarks/score_selection.md): K0 is the previous
#: formula on raw values (:func:`legacy_score`); the others are rank combinations of ingredients.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "K0": (),
    "K1": ("band", "scale", "capacity"),
    "K2": ("nonlin", "scale_full", "capacity"),
    "K3": ("nonlin", "scale_full", "complexity"),
    "K4": ("nonlin", "scale_full", "capacity", "naswot"),
    "K5": ("nonlin", "scale_full", "capacity", "block"),
    "K6": ("nonlin", "capacity"),
}

#: The candidate ``--by score`` uses, chosen by the rule of benchmarks/score_selection.md.
DEFAULT_CANDIDATE = "K3"


#: The data the default score was chosen on (benchmarks/score_selection.md).
CHOSEN_ON = ("NAS-Bench-201: 300 architectures with 200-epoch accuracies on CIFAR-10, CIFAR-100 and "
             "ImageNet16-120 (benchmarks/data/nb201_dev_200ep.csv); the ground-truth study's 330 MLPs and "
             "small CNNs on 8x8 digits and MNIST (benchmarks/ground_truth)")
#: Its figures there (benchmarks/RESULTS_SCORE.md, rounded to 0.01): Spearman rho with the trained accuracy
#: (NAS-Bench-201, 200 epochs) or with minus the test error (the study, per data set and learning rate).
EVIDENCE: dict[str, float] = {
    "nas-bench-201 cifar10": 0.70, "nas-bench-201 cifar100": 0.71, "nas-bench-201 imagenet16-120": 0.67,
    "study digits lr 0.001": 0.39, "study digits lr 0.01": 0.38, "study mnist lr 0.001": 0.38,
    "study mnist lr 0.01": 0.28,
}


def default_ingredients(metrics: Sequence[str] | None = None) -> tuple[str, ...]:
    """The default score's ingredients whose columns are among ``metrics`` (None: all of them)."""
    names = CANDIDATES[DEFAULT_CANDIDATE]
    if metrics is None:
        return names
    cols = set(metric_columns(metrics))
    return tuple(n for n in names if INGREDIENTS[n].column in cols)


def short_formula() -> str:
    """The default score in one line (the CLI's help).

    Examples:
      >>> short_formula()
      'the mean over ln nlc, -|ln sigma2|, ln flops of ln(rank / N), ranks taken within the space'
    """
    terms = ", ".join(INGREDIENTS[n].text for n in CANDIDATES[DEFAULT_CANDIDATE])
    return f"the mean over {terms} of ln(rank / N), ranks taken within the space"


def score_formula(metrics: Sequence[str] | None = None) -> str:
    """The default score in words, with the ingredients that ``metrics`` allow."""
    names = default_ingredients(metrics)
    terms = "; ".join(f"{INGREDIENTS[n].text} ({INGREDIENTS[n].failure})" for n in names)
    left_out = [n for n in CANDIDATES[DEFAULT_CANDIDATE] if n not in names]
    text = (f"score = mean over the ingredients of ln(r / N), r the architecture's rank on the ingredient "
            f"within the space (1 = worst, N = best, ties averaged), N the scored architectures. "
            f"Ingredients: {terms}. Chosen as candidate {DEFAULT_CANDIDATE} of benchmarks/score_selection.md.")
    if left_out:
        text += f" Left out (their metric was not computed): {', '.join(left_out)}."
    return text + " Degenerate, diverged and failed architectures have no score and rank last."


def score_meta(by: Sequence[str], metrics: Sequence[str]) -> dict:
    """What the results file's metadata says of its ``score`` column."""
    if tuple(by) != ("score",):
        return {"by": list(by), "formula": f"oriented {by[0]} (higher is better)" if len(by) == 1 else
                "minus the mean of the per-metric ranks (1 = best, each with its direction, ties averaged)"}
    names = default_ingredients(metrics)
    return {"by": ["score"], "formula": score_formula(metrics), "candidate": DEFAULT_CANDIDATE,
            "ingredients": {n: {"column": INGREDIENTS[n].column, "value": INGREDIENTS[n].text,
                                "failure": INGREDIENTS[n].failure} for n in names},
            "chosen_on": CHOSEN_ON, "evidence": EVIDENCE}


def metric_columns(metrics: Sequence[str]) -> list[str]:
    """The result columns of the metrics (``nlc`` gives ``nlc``, ``nlc_std`` and ``nlc_block``)."""
    out = []
    for m in metrics:
        out += ["nlc", "nlc_std", "nlc_block"] if m == "nlc" else [m]
    return out


def legacy_score(row: dict) -> float | None:
    """The previous default score (candidate K0): ``-d(nlc) - max(0, |ln sigma2| - ln 100) / 2
    + 0.01 log10(params)`` on raw values; None for rows that are not ``ok``."""
    if row.get("status") != "ok" or row.get("nlc") is None:
        return None
    score = -band_distance(row["nlc"])
    if "sigma2" in row:  # the column was computed
        score -= SCALE_WEIGHT * max(0.0, abs_log_sigma2(row["sigma2"]) - SCALE_FREE)
    if row.get("params"):
        score += CAPACITY_WEIGHT * math.log10(row["params"])
    return score


# --------------------------------------------------------------------------- rank mathematics


def average_ranks(values: Sequence[float | None]) -> list[float]:
    """Ranks (1 = best, higher value better), ties averaged; None shares the bottom positions.

    Examples:
      >>> average_ranks([3.0, None, 5.0, 3.0])
      [2.5, 4.0, 1.0, 2.5]
    """
    n = len(values)
    order = sorted((i for i, v in enumerate(values) if v is not None), key=lambda i: -values[i])
    ranks = [0.0] * n
    pos = 0
    while pos < len(order):
        end = pos
        while end + 1 < len(order) and values[order[end + 1]] == values[order[pos]]:
            end += 1
        for k in range(pos, end + 1):
            ranks[order[k]] = (pos + end) / 2 + 1
        pos = end + 1
    bottom = (len(order) + 1 + n) / 2
    for i, v in enumerate(values):
        if v is None:
            ranks[i] = bottom
    return ranks


def rank_combination(rows: Sequence[dict], ingredients: Sequence[str]) -> list[float | None]:
    """The rank-combined score of every row (None for rows that are not ``ok``).

    Each ingredient is ranked among the ``ok`` rows; a row whose ingredient is
    None ranks at the bottom of that ingredient. With no ingredient, every
    ``ok`` row scores 0.

    Examples:
      >>> rows = [{"status": "ok", "nlc": 2.0, "params": 10}, {"status": "ok", "nlc": 4.0, "params": 5},
      ...         {"status": "degenerate", "nlc": None, "params": 7}]
      >>> [None if s is None else round(s, 4) for s in rank_combination(rows, ("nonlin", "capacity"))]
      [-0.3466, -0.3466, None]
    """
    idx = [i for i, r in enumerate(rows) if r.get("status") == "ok"]
    n = len(idx)
    scores: list[float | None] = [None] * len(rows)
    if not n:
        return scores
    total = np.zeros(n)
    for name in ingredients:
        fn = INGREDIENTS[name].value
        best_first = average_ranks([fn(rows[i]) for i in idx])
        total += np.log((n + 1 - np.asarray(best_first)) / n)
    total /= max(1, len(ingredients))
    for j, i in enumerate(idx):
        scores[i] = float(total[j])
    return scores


def candidate_scores(rows: Sequence[dict], candidate: str) -> list[float | None]:
    """Scores of candidate ``candidate`` of :data:`CANDIDATES` (K0: :func:`legacy_score` per row)."""
    if candidate == "K0":
        return [legacy_score(r) for r in rows]
    return rank_combination(rows, CANDIDATES[candidate])


def _score_value(x: float) -> float:
    """A score as written to results files: 12 significant digits, never a negative zero."""
    return float(f"{x:.12g}") + 0.0


def score_rows(rows: list[dict], by: Sequence[str], metrics: Sequence[str] | None = None) -> list[dict]:
    """Fills ``score`` and ``rank`` (rows in the space's order; ties keep it).

    ``by == ("score",)``: the default score (:func:`rank_combination` of
    :func:`default_ingredients` of ``metrics``; None: of the columns present
    in the rows). One metric: its value oriented so that higher is better.
    Several: minus the mean of the per-metric ranks (each with its direction,
    ties averaged). Rows whose status is not ``ok`` have no score and rank last.
    """
    ok = [r.get("status") == "ok" for r in rows]
    if tuple(by) == ("score",):
        if metrics is None:
            present = {k for r in rows for k in r}
            metrics = [m for m in ("nlc", "sigma2", "params", "flops", "naswot") if m in present]
        scores = rank_combination(rows, default_ingredients(metrics))
    elif len(by) == 1:
        scores = [oriented(by[0], r.get(by[0])) if good else None for r, good in zip(rows, ok)]
    else:
        idx = [i for i, good in enumerate(ok) if good]
        per_metric = [average_ranks([oriented(m, rows[i].get(m)) for i in idx]) for m in by]
        scores = [None] * len(rows)
        for j, i in enumerate(idx):
            scores[i] = -sum(r[j] for r in per_metric) / len(by)
    order = sorted(range(len(rows)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
    out = [dict(r) for r in rows]
    for i, s in enumerate(scores):
        out[i]["score"] = None if s is None else _score_value(s)
    for rank, i in enumerate(order, start=1):
        out[i]["rank"] = rank
    return out


# --------------------------------------------------------------------------- options and columns

@dataclass(frozen=True)
class RankOptions:
    """How to score each architecture.

    Attributes:
      seeds: initializations per architecture (metrics are means over them; NLC also its spread).
      batch: samples in the scoring batch (NASWOT and jacob_cov are n x n in it).
      tangents: permutations per sample in the NLC estimator.
      seed: base seed; initialization ``i`` uses ``fold_in(key(seed), i)``.
      data_seed: seed of the Gaussian inputs (or of the subset of a data file) and of the labels
        of grad_norm and snip (uniform over the output units).
      metrics: metrics to compute, a subset of :data:`METRICS`.
    """

    seeds: int = 2
    batch: int = 64
    tangents: int = 2
    seed: int = 0
    data_seed: int = 0
    metrics: tuple[str, ...] = METRICS

    def __post_init__(self):
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise SpecError(f"metrics: expected names among {', '.join(METRICS)}; got {bad[0]!r}"
                            f"{closest(bad[0], METRICS)}")
        if not self.metrics:
            raise SpecError(f"metrics: expected at least one of {', '.join(METRICS)}; got none")
        object.__setattr__(self, "metrics", tuple(m for m in METRICS if m in self.metrics))
        if self.batch < 2:
            raise DataError(f"batch: expected at least 2 samples; got {self.batch}")
        if self.seeds < 1 or self.tangents < 1:
            raise DataError(f"seeds, tangents: expected integers >= 1; got {self.seeds}, {self.tangents}")

    def to_json(self) -> dict:
        import jax.numpy as jnp  # the dtype of floats: jax's setting (--x64)

        return {**dataclasses.asdict(self), "metrics": list(self.metrics), "dtype": str(jnp.result_type(float))}


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list of metric names -> a tuple (validated by :class:`RankOptions`)."""
    text = text.strip()
    if text in ("", "all"):
        return METRICS
    return tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


def columns(metrics: Sequence[str]) -> list[str]:
    """Columns of the results file: arch, status, reason, the metric columns, score, rank."""
    return ["arch", "status", "reason", *metric_columns(metrics), "score", "rank"]


def parse_by(by: str, metrics: Sequence[str]) -> tuple[str, ...]:
    """``"score"`` or a comma-separated list of metric columns, checked against ``metrics``."""
    names = tuple(dict.fromkeys(b.strip() for b in by.split(",") if b.strip()))
    available = metric_columns(metrics)
    if names in ((), ("score",)):
        needed = sorted({INGREDIENTS[n].column for n in default_ingredients()}, key=METRICS.index)
        if not default_ingredients(metrics):
            raise SpecError(f"--by score: the default score needs at least one of {', '.join(needed)}; add it to "
                            "--metrics or rank --by a computed metric")
        return ("score",)
    for name in names:
        if name not in available:
            raise SpecError(f"--by: expected score or computed metrics ({', '.join(available)}); got {name!r}"
                            f"{closest(name, available)}")
    return names
