"""The score's principles on each family: MLPs, CNNs, and both together.

Families (rows in ``zsad rank``'s column names):

* ``MLP``: the MLPs of the main population (``population.py``; results in ``results/``), their
  columns as ``benchmarks.score_dev.study_rows`` reads them (the NLC of ``zsad score``, 3 seeds,
  batch 256; sigma2 the mean squared singular value of its hidden-segment Jacobian; the proxies of
  ``zsad rank``, 2 seeds, batch 64). The main population's five small CNN structures are left out:
  they are neither MLPs nor one of the CNN families below.
* ``CNN``: the CNN population (``cnn_population.py``; results in ``results/cnn/``), every column
  from ``zsad rank`` with its default options and metrics.
* ``both``: the union of the two.

For each family, data set and learning rate (a *case*), each ranking -- every candidate of
``zsad.ranking.CANDIDATES`` and every single ingredient or metric, computed on the family's rows
only, as ``zsad rank`` would on a space file holding just that family -- is compared with the
test accuracy (1 - test error): Spearman rho and Kendall tau-b (ties averaged; rows a score
leaves undefined rank below every defined row, tied), a 95% percentile cluster-bootstrap interval
(whole structures resampled, ``N_BOOT`` resamples, the same resamples for every ranking of one
case, so differences are paired), the difference from ln params with its paired interval, the
mean Spearman rho within structures (over the rows the ranking defines, structures with at least
``WITHIN_MIN`` of them; interval: the structures' rhos resampled), and the top-k quality: the test
accuracy of the top-1 pick and the median of the top-10 picks, with their percentiles within the family (100 = best).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import stats

from benchmarks.ground_truth.analysis import cluster_resamples, spearman_each
from benchmarks.ground_truth.runner import RESULTS, read_jsonl, results_of

FAMILIES = ("MLP", "CNN", "both")
N_BOOT = 1000
SEED = 0
#: Rows a structure needs (defined by the ranking) to enter the within-structure figure.
WITHIN_MIN = 3


class Band(NamedTuple):
    """A ranking by -d(NLC; lo, hi), the log-distance of the NLC from the band [lo, hi] (0 inside)."""

    lo: float
    hi: float

    def label(self) -> str:
        return f"NLC band [{self.lo:g}, {self.hi:g}]"

#: Single rankings: (label, what ranks): a tuple of ``zsad.ranking.INGREDIENTS`` (their rank combination;
#: one ingredient: its own ranks) or a column ranked with zsad's direction (``zsad.ranking.oriented``).
SINGLES = (
    ("ln NLC (higher)", ("nonlin",)), ("−|ln σ²|", ("scale_full",)),
    ("ln FLOPs", ("complexity",)), ("ln params", ("capacity",)), ("NASWOT", ("naswot",)),
    ("−nlc_block", ("block",)), ("−nlc_std", "nlc_std"), ("synflow", "synflow"), ("grad_norm", "grad_norm"),
    ("snip", "snip"), ("jacob_cov", "jacob_cov"),
)
REFERENCE = "ln params"
#: What varies inside one CNN structure.
SETTINGS_TEXT = "weight_std, bias_std and, for residual structures, the branch scale"


def band_rankings(summary: Path | None = None) -> list[tuple[str, Band]]:
    """The NLC band of ``zsad.verdict`` (``LINEAR_MAX``, ``HEALTHY_MAX``), then the pooled bands the main
    population's band search finds at each minimum share (``band_sensitivity_pooled`` of its ``summary.json``,
    when stored): how much the band's principle depends on that setting."""
    from zsad.verdict import HEALTHY_MAX, LINEAR_MAX

    out = [(f"{Band(LINEAR_MAX, HEALTHY_MAX).label()} (zsad.verdict)", Band(LINEAR_MAX, HEALTHY_MAX))]
    summary = summary or RESULTS / "summary.json"
    pooled = json.loads(summary.read_text()).get("band_sensitivity_pooled", {}) if summary.exists() else {}
    for share, (lo, hi) in sorted(pooled.items(), key=lambda kv: -float(kv[0])):
        frac = Fraction(float(share)).limit_denominator(64)
        out.append((f"{Band(lo, hi).label()} (minimum share {frac.numerator}/{frac.denominator})", Band(lo, hi)))
    return out


# --------------------------------------------------------------------------- rows

def cnn_rows(results: Path | None = None) -> dict[str, tuple[list[dict], dict[str, np.ndarray], np.ndarray]]:
    """Per data set of the CNN population: rows (``zsad rank`` columns plus ``family``), the test accuracy per
    learning rate (``"lr 0.001"``: array), and the structure of each row. Only architectures with both zero-shot
    metrics and training at every stored learning rate."""
    results = results or results_of("cnn")
    metrics = read_jsonl(results / "metrics.jsonl")
    train = read_jsonl(results / "train.jsonl")
    return join_rows(metrics, train)


def join_rows(metrics: list[dict], train: list[dict]):
    lrs = sorted({t["lr"] for t in train})
    err: dict = defaultdict(dict)
    for t in train:
        err[(t["arch"], t["dataset"])][t["lr"]] = t["test_error"]
    out = {}
    seen = set()
    for ds in sorted({m["dataset"] for m in metrics}):
        rows, acc, groups = [], defaultdict(list), []
        for m in metrics:
            key = (m["arch"], ds)
            if m["dataset"] != ds or key in seen or set(err.get(key, {})) != set(lrs):
                continue
            seen.add(key)
            rows.append({"arch": m["arch"], "family": m.get("family", m.get("kind")), **m["metrics"]})
            groups.append(m["structure"])
            for lr in lrs:
                acc[f"lr {lr:g}"].append(1.0 - err[key][lr])
        if rows:
            out[ds] = (rows, {k: np.asarray(v, float) for k, v in acc.items()}, np.asarray(groups))
    return out


def mlp_rows() -> dict[str, tuple[list[dict], dict[str, np.ndarray], np.ndarray]]:
    """The main population's MLPs, as :func:`cnn_rows` (accuracy = 1 - test error)."""
    from benchmarks.score_dev import study_rows

    out = {}
    for ds, (rows, targets, groups) in study_rows().items():
        keep = np.array([r["arch"].startswith("mlp-") for r in rows])
        out[ds] = ([{**r, "family": "mlp"} for r, k in zip(rows, keep) if k],
                   {t: 1.0 + v[keep] for t, v in targets.items()}, groups[keep])
    return out


def family_rows(mlp: dict, cnn: dict) -> dict[str, dict]:
    """{family: {data set: (rows, accuracies, groups)}} for the data sets both sources hold."""
    out: dict = {"MLP": {}, "CNN": {}, "both": {}}
    for ds in sorted(set(mlp) & set(cnn)):
        out["MLP"][ds] = mlp[ds]
        out["CNN"][ds] = cnn[ds]
        (r1, a1, g1), (r2, a2, g2) = mlp[ds], cnn[ds]
        cases = sorted(set(a1) & set(a2))
        out["both"][ds] = (r1 + r2, {t: np.concatenate([a1[t], a2[t]]) for t in cases}, np.concatenate([g1, g2]))
    return out


# --------------------------------------------------------------------------- statistics

def rankings() -> list[tuple[str, object]]:
    """(label, what ranks): every candidate, then :data:`SINGLES`."""
    from zsad import ranking

    return [(k, k) for k in ranking.CANDIDATES] + list(SINGLES[:2]) + band_rankings() + list(SINGLES[2:])


def scores(rows: list[dict], by) -> np.ndarray:
    """Higher is better; -inf where the ranking leaves a row undefined (it ranks last)."""
    from zsad import ranking

    if isinstance(by, Band):
        vals = [-max(0.0, math.log(by.lo / r["nlc"]), math.log(r["nlc"] / by.hi))
                if r.get("status") == "ok" and r.get("nlc") else None for r in rows]
    elif isinstance(by, tuple):
        vals = ranking.rank_combination(rows, by)
    elif by in ranking.CANDIDATES:
        vals = ranking.candidate_scores(rows, by)
    else:
        vals = [ranking.oriented(by, r.get(by)) if r.get("status") == "ok" else None for r in rows]
    return np.array([-math.inf if v is None or not math.isfinite(v) else float(v) for v in vals])


def top_quality(score: np.ndarray, acc: np.ndarray) -> dict:
    """Accuracy of the top-1 pick and median accuracy of the top-10 picks, with their percentiles (share of the
    rows at or below them, 100 = best). Ties in the score are broken towards the *lower* accuracy."""
    order = np.lexsort((acc, -score))  # by score descending, then accuracy ascending (no luck from ties)
    pct = lambda v: float(100.0 * np.mean(acc <= v))  # noqa: E731
    top10 = acc[order[:10]]
    return {"top1": float(acc[order[0]]), "top1_pct": pct(acc[order[0]]),
            "top10_median": float(np.median(top10)), "top10_median_pct": pct(float(np.median(top10)))}


def within_figure(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int = N_BOOT,
                  seed: int = SEED) -> dict | None:
    """Mean Spearman rho within groups, over the rows where ``x`` is finite (a row the ranking leaves undefined
    says nothing about the order inside its structure), in groups with at least :data:`WITHIN_MIN` such rows and
    neither x nor y constant; 95% interval from the groups' rhos resampled; None when no group qualifies."""
    rhos = []
    for g in np.unique(groups):
        m = (groups == g) & np.isfinite(x)
        if m.sum() >= WITHIN_MIN and np.ptp(x[m]) > 0 and np.ptp(y[m]) > 0:
            rhos.append(stats.spearmanr(x[m], y[m]).statistic)
    if not rhos:
        return None
    rhos = np.asarray(rhos)
    boot = rhos[np.random.default_rng(seed).integers(0, len(rhos), size=(n_boot, len(rhos)))].mean(axis=1)
    return {"mean": float(rhos.mean()), "ci": _ci(boot), "structures": len(rhos)}


def _ci(v: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]


def case_figures(rows: list[dict], acc: np.ndarray, groups: np.ndarray, ranks, n_boot: int = N_BOOT,
                 seed: int = SEED) -> dict[str, dict]:
    """Figures of every ranking on one case (rows without an accuracy dropped)."""
    keep = np.isfinite(acc)
    rows = [r for r, k in zip(rows, keep) if k]
    acc, groups = acc[keep], groups[keep]
    boots = cluster_resamples(groups, n_boot, seed)
    # -inf ties at the bottom; spearman_each ranks with ties averaged, like scipy
    out, boot_rho = {}, {}
    for label, by in ranks:
        x = scores(rows, by)
        xr = stats.rankdata(x)  # finite stand-in with the same ranks
        if np.ptp(xr) == 0:  # a constant ranking says nothing
            out[label] = {"spearman": None, "n": int(len(acc))}
            continue
        rho = spearman_each(xr, acc, boots)
        boot_rho[label] = rho
        fig = {"spearman": float(stats.spearmanr(xr, acc).statistic),
               "kendall": float(stats.kendalltau(xr, acc).statistic), "spearman_ci": _ci(rho),
               "n": int(len(acc)), "structures": int(len(np.unique(groups))),
               "undefined": int(np.sum(~np.isfinite(x))), "within": within_figure(x, acc, groups, n_boot, seed)}
        fig.update(top_quality(xr, acc))
        out[label] = fig
    if REFERENCE in boot_rho:
        for label, fig in out.items():
            if label not in boot_rho:
                continue
            fig["vs_params"] = fig["spearman"] - out[REFERENCE]["spearman"]
            fig["vs_params_ci"] = _ci(boot_rho[label] - boot_rho[REFERENCE])
    return out


def subfamily_figures(rows: list[dict], acc: np.ndarray, groups: np.ndarray, ranks, n_boot: int = N_BOOT,
                      seed: int = SEED) -> dict[str, dict]:
    """Spearman rho of each ranking inside each sub-family (ranks taken over all ``rows``, as one space), with a
    95% interval from resampling the sub-family's structures; None where the ranking is constant there."""
    fam = np.array([r["family"] for r in rows])
    ranked = [(label, stats.rankdata(scores(rows, by))) for label, by in ranks]
    out: dict = {}
    for f in sorted(set(fam.tolist())):
        m = (fam == f) & np.isfinite(acc)
        y, g = acc[m], groups[m]
        boots = cluster_resamples(g, n_boot, seed)
        cell: dict = {"n": int(m.sum()), "structures": int(len(np.unique(g)))}
        for label, x in ranked:
            if np.ptp(x[m]) == 0:
                cell[label] = None
                continue
            cell[label] = {"spearman": float(stats.spearmanr(x[m], y).statistic),
                           "spearman_ci": _ci(spearman_each(x[m], y, boots))}
        out[f] = cell
    return out


def compute(fam_rows: dict | None = None, n_boot: int = N_BOOT) -> dict:
    """{"cases": {family: {"ds/lr": {label: figures}}}, "subfamilies": {"ds/lr": ...}, "post_hoc": ...}."""
    if fam_rows is None:
        fam_rows = family_rows(mlp_rows(), cnn_rows())
    ranks = rankings()
    res: dict = {"cases": {}, "subfamilies": {}, "sizes": {},
                 "cnn_structures": {ds: sorted(set(g.tolist())) for ds, (_, _, g) in fam_rows["CNN"].items()}}
    for family, per_ds in fam_rows.items():
        res["cases"][family] = {}
        for ds, (rows, accs, groups) in per_ds.items():
            res["sizes"].setdefault(family, {})[ds] = {"architectures": len(rows),
                                                      "structures": int(len(np.unique(groups)))}
            for t, acc in accs.items():
                res["cases"][family][f"{ds}/{t}"] = case_figures(rows, acc, groups, ranks, n_boot)
                if family == "CNN":
                    res["subfamilies"][f"{ds}/{t}"] = subfamily_figures(rows, acc, groups, ranks, n_boot)
    res["post_hoc"] = post_hoc(res)
    return res


def post_hoc(res: dict) -> dict:
    """The selection rule's statistic (the worst figure) per candidate on each family's cases. Computed after the
    selection, on data it did not see (the CNN population); not part of the selection."""
    from zsad import ranking

    out = {}
    for family, cases in res["cases"].items():
        if not cases:
            continue
        out[family] = {}
        for k in ranking.CANDIDATES:
            figs = [c[k]["spearman"] for c in cases.values()]
            ok = [f for f in figs if f is not None]
            out[family][k] = {"worst": min(figs) if len(ok) == len(figs) else None,
                              "mean": float(np.mean(ok)) if ok else None}
    return out


# --------------------------------------------------------------------------- markdown

HEADING = "## The score's principles on CNN families"


def _rho(fig: dict | None) -> str:
    if not fig or fig.get("spearman") is None:
        return "— (constant)"
    lo, hi = fig["spearman_ci"]
    return f"{fig['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _delta(fig: dict) -> str:
    if fig.get("vs_params") is None:
        return "—"
    lo, hi = fig["vs_params_ci"]
    return f"{fig['vs_params']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _within(w: dict | None) -> str:
    if not w:
        return "—"
    return f"{w['mean']:+.2f} [{w['ci'][0]:+.2f}, {w['ci'][1]:+.2f}] ({w['structures']})"


def _family_table(cases: dict) -> list[str]:
    names = list(cases)
    labels = list(next(iter(cases.values())))
    head = "".join(f" ρ {c} | Δρ vs ln params, {c} | within structures, {c} |" for c in names)
    lines = ["| ranking |" + head + " top-1 pct | top-10 median pct |", "|---|" + "---|" * (3 * len(names) + 2)]
    for label in labels:
        figs = [cases[c][label] for c in names]
        defined = [f for f in figs if f.get("spearman") is not None]
        cells = [x for f in figs for x in (_rho(f), _delta(f), _within(f.get("within")))]
        cells += ([f"{np.mean([f['top1_pct'] for f in defined]):.0f}",
                   f"{np.mean([f['top10_median_pct'] for f in defined]):.0f}"] if defined else ["—", "—"])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _cases_word(figs: list[dict]) -> str:
    """What the intervals of one ranking's cases say, in words."""
    pos = sum(f["spearman_ci"][0] > 0 for f in figs)
    neg = sum(f["spearman_ci"][1] < 0 for f in figs)
    if neg:
        return f"wrong direction in {neg} of {len(figs)} cases" + (f" (right in {pos})" if pos else "")
    if pos == len(figs):
        return f"predicts in every case ({pos} of {len(figs)} intervals above 0)"
    if pos:
        return f"predicts in {pos} of {len(figs)} cases (the other intervals contain 0)"
    return f"no evidence (all {len(figs)} intervals contain 0)"


def principle_items(res: dict, default: str) -> list[tuple[str, str]]:
    """(label, description) of the rankings that test a principle of the default score or of the verdict."""
    from zsad import ranking

    labels = {"nonlin": "ln NLC (higher)", "scale_full": "−|ln σ²|", "complexity": "ln FLOPs",
              "capacity": "ln params", "naswot": "NASWOT", "block": "−nlc_block"}
    ing = ranking.INGREDIENTS
    items = [(labels[n], f"Does a higher {ing[n].text} predict accuracy? (against {ing[n].failure})")
             for n in ranking.CANDIDATES[default] if n in labels]
    if "capacity" not in ranking.CANDIDATES[default]:
        items.append((labels["capacity"], f"Does a higher {ing['capacity'].text} predict accuracy? (against "
                                          f"{ing['capacity'].failure})"))
    first = next(iter(next(iter(res["cases"].values())).values()))
    for label in first:
        if label.startswith("NLC band "):
            band, _, source = label[len("NLC band "):].partition(" (")
            where = ("the healthy band of `zsad.verdict`" if source.startswith("zsad.verdict") else
                     f"the main population's band search at {source.rstrip(')')}")
            items.append((label, f"Does an NLC inside {band} predict accuracy? ({where})"))
    terms = ", ".join(ing[n].text for n in ranking.CANDIDATES[default])
    return items + [(default, f"The default score `{default}` (rank combination of {terms})")]


def _principles(res: dict, default: str) -> list[str]:
    """One computed sentence per principle (the default score, its ingredients, params, the verdict's band at each
    minimum share), per family, then per CNN sub-family."""
    out = []
    for label, text in principle_items(res, default):
        parts = []
        for family, cases in res["cases"].items():
            if not cases:
                continue
            figs = [c[label] for c in cases.values() if c[label].get("spearman") is not None]
            if not figs:
                parts.append(f"{family}: constant")
                continue
            within = [f["within"]["mean"] for f in figs if f.get("within")]
            w = f", within structures {np.mean(within):+.2f}" if within else ""
            parts.append(f"{family}: mean ρ {np.mean([f['spearman'] for f in figs]):+.2f}, {_cases_word(figs)}{w}")
        sub = _subfamily_words(res, label)
        out.append(f"- **{text}**: " + "; ".join(parts) + "." + (f" Inside the CNN sub-families: {sub}." if sub
                                                                    else ""))
    cnn = res["cases"].get("CNN", {})
    if cnn and all(c[default].get("vs_params") is not None for c in cnn.values()):
        figs = [c[default] for c in cnn.values()]
        better = sum(f["vs_params_ci"][0] > 0 for f in figs)
        worse = sum(f["vs_params_ci"][1] < 0 for f in figs)
        deltas = ", ".join(f"{c}: {_delta(f)}" for c, f in zip(cnn, figs))
        out.append(f"- **`{default}` against ln params alone on the CNN family** (paired difference of ρ, "
                   f"structures resampled): {deltas}; the interval lies above 0 (better than params) in {better} "
                   f"and below 0 in {worse} of {len(figs)} cases.")
    out += _what_failed(res, default)
    return out


def _subfamily_words(res: dict, label: str) -> str:
    """Per CNN sub-family: in how many cases the ranking's interval lies above / below 0."""
    subs = list(res.get("subfamilies", {}).values())
    if not subs:
        return ""
    parts = []
    for fam in subs[0]:
        figs = [c[fam][label] for c in subs if c[fam].get(label)]
        if not figs:
            parts.append(f"{fam} constant")
            continue
        mean = np.mean([f["spearman"] for f in figs])
        pos = sum(f["spearman_ci"][0] > 0 for f in figs)
        neg = sum(f["spearman_ci"][1] < 0 for f in figs)
        parts.append(f"{fam} {mean:+.2f} (interval above 0 in {pos}, below 0 in {neg} of {len(figs)})")
    return ", ".join(parts)


def _what_failed(res: dict, default: str) -> list[str]:
    """The rankings that did not predict the CNN family's accuracy, by kind of failure."""
    cnn = res["cases"].get("CNN", {})
    if not cnn:
        return []
    labels = list(next(iter(cnn.values())))
    figs = {k: [c[k] for c in cnn.values() if c[k].get("spearman") is not None] for k in labels}
    wrong = [k for k, f in figs.items() if f and any(x["spearman_ci"][1] < 0 for x in f)]
    none = [k for k, f in figs.items() if f and all(x["spearman_ci"][0] <= 0 <= x["spearman_ci"][1] for x in f)]
    inverted = [k for k, f in figs.items() if f and all(x.get("within") for x in f)
                and all(x["within"]["ci"][1] < 0 for x in f)]
    not_better = [k for k, f in figs.items() if k != REFERENCE and f and all(x.get("vs_params") is not None for x in f)
                  and not any(x["vs_params_ci"][0] > 0 for x in f)]
    q = lambda ks: ", ".join(f"`{k}`" for k in ks) or "none"  # noqa: E731
    n = len(cnn)
    return [f"- **What did not work on the CNN family** ({n} cases): no evidence either way (every interval contains "
            f"0): {q(none)}; wrong direction in at least one case: {q(wrong)}; within structures in the wrong "
            f"direction in every case (interval below 0): {q(inverted)}. Rankings whose ρ is not above ln params' "
            f"(paired interval above 0) in any case: {len(not_better)} of {len(figs) - 1}"
            + (f", the default `{default}` among them" if default in not_better else "") + "."]


def _cnn_coverage(res: dict, pop) -> list[str]:
    """Which CNN structures are measured and trained, per data set (``run`` goes cheapest first, so a population
    measured in part leans towards small networks: the missing ones are named)."""
    planned = [s.id for s, _ in pop]
    n_arch = sum(len(ms) for _, ms in pop)
    out = []
    for ds, done in res.get("cnn_structures", {}).items():
        missing = [s for s in planned if s not in done]
        text = (f"**CNN coverage on {ds}:** {res['sizes']['CNN'][ds]['architectures']} of {n_arch} architectures, "
                f"{len(done)} of {len(planned)} structures")
        out.append(text + (f"; not yet trained: {', '.join(f'`{m}`' for m in missing)} (`run --population cnn` "
                           "computes them).\n" if missing else ".\n"))
    return out


def _population_text(C, summ: dict) -> str:
    """The paragraph that describes the CNN population."""
    from benchmarks.ground_truth import train as T
    from zsad.rank import RankOptions

    opts = RankOptions()
    return (f"**The CNN population** ({summ['architectures']} architectures = {summ['structures']} structures × "
            f"{C.SETTINGS_PER_STRUCTURE} settings of weight_std ∈ {list(C.WEIGHT_STDS)}; a first draw of "
            f"{sum(C.FAMILY_STRUCTURES.values())} structures with seed {C.CNN_POPULATION_SEED} and an extension of "
            f"{sum(C.EXTENSION_STRUCTURES.values())} ({', '.join(C.EXTENSION_STRUCTURES)}) with seed "
            f"{C.EXTENSION_SEED}; `python -m benchmarks.ground_truth population --population cnn` lists it): "
            + ", ".join(f"{k}: {v // C.SETTINGS_PER_STRUCTURE} structures" for k, v in summ["family"].items())
            + ". Layouts (`benchmarks/ground_truth/cnn_population.py`): plain CNNs `conv3×3 C, act, avg_pool to 4×4, "
            "[conv3×3 C, act] × (D−1), flatten, dense 10`, with batch norm after every conv (`plain_bn`) or without "
            "(`plain`); residual CNNs with D pre-activation blocks `x + s·[N?, act, conv, N?, act, conv](x)`; and "
            "NAS-Bench-201-like cells scaled to 8×8 (stem conv + BN, K cells, a residual reduction to 4×4 and 2C "
            "channels, K cells, BN, act, global pooling, dense 10), each cell a four-node DAG whose edges choose "
            "among none / skip / conv1×1 / conv3×3 / avgpool3×3 (conv edges act–conv–BN), drawn among the "
            "series-parallel cells that zsad architecture files express with nested `residual` layers. Depths "
            + ", ".join(f"{k}: {v}" for k, v in summ["depth"].items()) + "; widths "
            + ", ".join(f"{k}: {v}" for k, v in summ["width"].items()) + "; activations "
            + ", ".join(f"{k}: {v}" for k, v in summ["activation"].items())
            + f" (architectures). Training: the recipe above (Adam, {T.STEPS} steps of {T.BATCH}, learning rates "
            f"{', '.join(f'{lr:g}' for lr in T.LEARNING_RATES)}, seed {T.INIT_SEED}). Zero-shot metrics: `zsad rank` "
            f"with its default options ({opts.seeds} seeds, batch {opts.batch}, every metric), on the data set's "
            "training images.\n")


def render(res: dict) -> list[str]:
    from benchmarks.ground_truth import cnn_population as C
    from zsad import ranking

    default = ranking.DEFAULT_CANDIDATE
    pop = C.population()
    L = [HEADING, ""]
    L.append("Generated with the rest of this file (`python -m benchmarks.ground_truth report`; "
             "`python -m benchmarks.ground_truth families` rewrites this section alone) from "
             "`results/cnn/` and the main population's `results/` (code: `benchmarks/ground_truth/families.py`, "
             "`cnn_population.py`). **Post hoc**: the default score was chosen (`benchmarks/score_selection.md`) "
             "before the CNN population was trained; nothing here is part of that selection.\n")
    L.append(_population_text(C, C.summary(pop)))
    sizes = res["sizes"]
    L += _cnn_coverage(res, pop)
    L.append("**Rows per family:** " + "; ".join(
        f"{fam}: " + ", ".join(f"{ds} {s['architectures']} architectures in {s['structures']} structures"
                               for ds, s in per.items()) for fam, per in sizes.items()) + ".\n")
    L.append("Figures: Spearman ρ with the **test accuracy** (1 − test error; positive = the ranking puts the "
             f"better-trained networks first), 95% interval from {N_BOOT} cluster-bootstrap resamples of whole "
             "structures; ranks taken within the family, as `zsad rank` would on a space file of that family alone "
             "(ties averaged; a row a ranking leaves undefined ranks last). Δρ vs ln params: the paired difference "
             "from ranking by the parameter count alone (the same resamples). 'within structures': mean ρ inside "
             "each structure (its settings differ only in weight_std, bias_std and branch scale), over the rows the "
             f"ranking defines, in structures with at least {WITHIN_MIN} of them and neither side constant; 95% "
             "interval from resampling those structures; their number in parentheses. NLC band rows: the verdict's "
             "band (`zsad.verdict`) and the bands the main population's band search finds at each minimum share "
             "(section 'How the band depends on the minimum share'), so that the band's sensitivity to that setting "
             "is visible on CNNs too. Top-1 / top-10: "
             "percentile (100 = best) of the top pick's accuracy and of the top-10 picks' median, mean over the "
             "cases. The MLP family's columns come from the main population's measurements (`zsad score`'s NLC "
             "and σ², `zsad rank`'s proxies), the CNN family's from `zsad rank`: in 'both', ranks mix the two.\n")
    L.append("### What the figures say about each principle of the score\n")
    L.append("Each principle as a ranking of its own, then the default score that combines them, on each family; "
             "'predicts' = the case's interval lies above 0. Sentences and counts are computed from the tables "
             "below.\n")
    L += _principles(res, default)
    L.append("")
    for family, cases in res["cases"].items():
        if not cases:
            continue
        L.append(f"### {family}\n")
        L += _family_table(cases)
        L.append("")
    if res["subfamilies"]:
        L.append("### Inside the CNN population\n")
        L.append("Spearman ρ with test accuracy inside each CNN sub-family (ranks taken over the whole CNN "
                 f"population, as `zsad rank` would rank it), 95% interval from {N_BOOT} resamples of the sub-family's "
                 "structures. With 4 to 6 structures per sub-family the intervals are wide and themselves rough "
                 "(few distinct resamples): read them as descriptions.\n")
        for case, cells in res["subfamilies"].items():
            fams = list(cells)
            labels = [k for k in cells[fams[0]] if k not in ("n", "structures")]
            L.append(f"**{case}**\n")
            L.append("| ranking | " + " | ".join(f"{f} ({cells[f]['structures']} str., {cells[f]['n']} arch.)"
                                              for f in fams) + " |")
            L.append("|---|" + "---|" * len(fams))
            for label in labels:
                L.append(f"| {label} | " + " | ".join(_rho(cells[f][label]) for f in fams) + " |")
            L.append("")
    L.append("### Post hoc: the selection rule's statistic on each family (not part of the selection)\n")
    L.append("The worst and the mean of each candidate's ρ over the family's cases (the rule of "
             "`benchmarks/score_selection.md` takes the worst figure). Computed after the choice, on a population "
             "the choice did not see; it does not change the default.\n")
    fams = [f for f in res["post_hoc"]]
    L.append("| candidate | " + " | ".join(f"{f} worst | {f} mean" for f in fams) + " |")
    L.append("|---|" + "---|---|" * len(fams))
    for k in ranking.CANDIDATES:
        fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
        cells = [f"{fmt(res['post_hoc'][f][k]['worst'])} | {fmt(res['post_hoc'][f][k]['mean'])}" for f in fams]
        mark = " (default)" if k == default else ""
        L.append(f"| {k}{mark} | " + " | ".join(cells) + " |")
    L.append("")
    L += _limits(res)
    return L


def _limits(res: dict) -> list[str]:
    """How far the CNN figures reach: the population's size, its data sets and its training seeds."""
    from benchmarks.ground_truth import train as T

    sizes = res["sizes"].get("CNN", {})
    if not sizes:
        return []
    subs = next(iter(res["subfamilies"].values()), {})
    per = sorted(c["structures"] for c in subs.values())
    n_struct = max(s["structures"] for s in sizes.values())
    return ["### Limits of the CNN figures\n",
            f"- {n_struct} structures on {len(sizes)} data set(s) ({', '.join(sizes)}), one training seed (seed "
            f"{T.INIT_SEED}) per architecture and learning rate: an interval from {n_struct} resampled structures "
            "is itself rough, and the training noise of one architecture is not measured.",
            f"- The sub-families hold {per[0]} to {per[-1]} structures each: their intervals rest on so few "
            "independent units that they describe these structures rather than the sub-family.",
            f"- Within a structure only the initialization scalars vary ({SETTINGS_TEXT}), so 'within "
            "structures' asks whether a ranking orders initialization scales, not architectures.", ""]


def write(out: Path, res: dict | None = None, log=print) -> Path:
    """Replaces the section of ``out`` (RESULTS.md) that starts at :data:`HEADING` (or appends it), and writes
    ``results/cnn/summary.json``."""
    import json

    res = compute() if res is None else res
    text = out.read_text() if out.exists() else ""
    head = text.split("\n" + HEADING)[0].rstrip("\n") + "\n\n" if HEADING in text else (text.rstrip("\n") + "\n\n")
    out.write_text(head + "\n".join(render(res)))
    (results_of("cnn") / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote the CNN families section of {out} and {results_of('cnn') / 'summary.json'}")
    return out
