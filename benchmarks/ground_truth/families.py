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
mean Spearman rho within structures, and the top-k quality: the test accuracy of the top-1 pick
and the median of the top-10 picks, with their percentiles within the family (100 = best).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.ground_truth.analysis import cluster_resamples, spearman_each
from benchmarks.ground_truth.runner import read_jsonl, results_of

FAMILIES = ("MLP", "CNN", "both")
N_BOOT = 1000
SEED = 0
#: Single rankings: (label, what ranks): a tuple of ``zsad.ranking.INGREDIENTS`` (their rank combination;
#: one ingredient: its own ranks) or a column ranked with zsad's direction (``zsad.ranking.oriented``).
SINGLES = (
    ("ln NLC (higher)", ("nonlin",)), ("NLC band [1.2, 1.4]", "nlc"), ("−|ln σ²|", ("scale_full",)),
    ("ln FLOPs", ("complexity",)), ("ln params", ("capacity",)), ("NASWOT", ("naswot",)),
    ("−nlc_block", ("block",)), ("−nlc_std", "nlc_std"), ("synflow", "synflow"), ("grad_norm", "grad_norm"),
    ("snip", "snip"), ("jacob_cov", "jacob_cov"),
)
REFERENCE = "ln params"


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

    return [(k, k) for k in ranking.CANDIDATES] + list(SINGLES)


def scores(rows: list[dict], by) -> np.ndarray:
    """Higher is better; -inf where the ranking leaves a row undefined (it ranks last)."""
    from zsad import ranking

    if isinstance(by, tuple):
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


def within_mean(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float | None:
    """Mean Spearman rho within groups (groups where neither x nor y is constant)."""
    rhos = []
    for g in np.unique(groups):
        m = groups == g
        if np.ptp(x[m]) > 0 and np.ptp(y[m]) > 0:
            rhos.append(stats.spearmanr(x[m], y[m]).statistic)
    return float(np.mean(rhos)) if rhos else None


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
        rho = spearman_each(xr, acc, boots)
        boot_rho[label] = rho
        fig = {"spearman": float(stats.spearmanr(xr, acc).statistic),
               "kendall": float(stats.kendalltau(xr, acc).statistic), "spearman_ci": _ci(rho),
               "n": int(len(acc)), "structures": int(len(np.unique(groups))),
               "undefined": int(np.sum(~np.isfinite(x))), "within": within_mean(xr, acc, groups)}
        fig.update(top_quality(xr, acc))
        out[label] = fig
    if REFERENCE in boot_rho:
        for label, fig in out.items():
            fig["vs_params"] = fig["spearman"] - out[REFERENCE]["spearman"]
            fig["vs_params_ci"] = _ci(boot_rho[label] - boot_rho[REFERENCE])
    return out


def subfamily_figures(rows: list[dict], acc: np.ndarray, groups: np.ndarray, ranks) -> dict[str, dict]:
    """Spearman rho of each ranking inside each sub-family (ranks taken over all ``rows``, as one space)."""
    fam = np.array([r["family"] for r in rows])
    out: dict = {}
    for label, by in ranks:
        x = stats.rankdata(scores(rows, by))
        for f in sorted(set(fam.tolist())):
            m = (fam == f) & np.isfinite(acc)
            rho = stats.spearmanr(x[m], acc[m]).statistic if np.ptp(x[m]) > 0 else float("nan")
            out.setdefault(f, {"n": int(m.sum()), "structures": int(len(np.unique(groups[m])))})[label] = float(rho)
    return out


def compute(fam_rows: dict | None = None, n_boot: int = N_BOOT) -> dict:
    """{"cases": {family: {"ds/lr": {label: figures}}}, "subfamilies": {"ds/lr": ...}, "post_hoc": ...}."""
    if fam_rows is None:
        fam_rows = family_rows(mlp_rows(), cnn_rows())
    ranks = rankings()
    res: dict = {"cases": {}, "subfamilies": {}, "sizes": {}}
    for family, per_ds in fam_rows.items():
        res["cases"][family] = {}
        for ds, (rows, accs, groups) in per_ds.items():
            res["sizes"].setdefault(family, {})[ds] = {"architectures": len(rows),
                                                      "structures": int(len(np.unique(groups)))}
            for t, acc in accs.items():
                res["cases"][family][f"{ds}/{t}"] = case_figures(rows, acc, groups, ranks, n_boot)
                if family == "CNN":
                    res["subfamilies"][f"{ds}/{t}"] = subfamily_figures(rows, acc, groups, ranks)
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
        out[family] = {k: {"worst": min(c[k]["spearman"] for c in cases.values()),
                           "mean": float(np.mean([c[k]["spearman"] for c in cases.values()]))}
                       for k in ranking.CANDIDATES}
    return out


# --------------------------------------------------------------------------- markdown

HEADING = "## The score's principles on CNN families"


def _rho(fig: dict) -> str:
    lo, hi = fig["spearman_ci"]
    return f"{fig['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _word(ci: list[float]) -> str:
    return "above 0" if ci[0] > 0 else ("below 0" if ci[1] < 0 else "contains 0")


def _family_table(cases: dict) -> list[str]:
    names = list(cases)
    labels = list(next(iter(cases.values())))
    lines = ["| ranking | " + " | ".join(f"ρ {c}" for c in names) + " | mean ρ | within structures (mean ρ) "
             "| top-1 pct | top-10 median pct |",
             "|---|" + "---|" * (len(names) + 4)]
    for label in labels:
        figs = [cases[c][label] for c in names]
        within = [f["within"] for f in figs if f["within"] is not None]
        cells = [_rho(f) for f in figs] + [f"{np.mean([f['spearman'] for f in figs]):+.2f}",
                                           f"{np.mean(within):+.2f}" if within else "—",
                                           f"{np.mean([f['top1_pct'] for f in figs]):.0f}",
                                           f"{np.mean([f['top10_median_pct'] for f in figs]):.0f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _principles(res: dict, default: str) -> list[str]:
    """One computed sentence per ingredient of the default score and for the score itself, per family."""
    from zsad import ranking

    labels = {"nonlin": "ln NLC (higher)", "scale_full": "−|ln σ²|", "complexity": "ln FLOPs",
              "capacity": "ln params", "naswot": "NASWOT", "block": "−nlc_block", "band": "NLC band [1.2, 1.4]"}
    items = [(default, f"the default score `{default}`")] + [
        (labels[n], f"its ingredient {ranking.INGREDIENTS[n].text} ({ranking.INGREDIENTS[n].failure})")
        for n in ranking.CANDIDATES[default] if n in labels]
    out = []
    for label, text in items:
        parts = []
        for family, cases in res["cases"].items():
            if not cases:
                continue
            figs = [c[label] for c in cases.values()]
            pos = sum(f["spearman_ci"][0] > 0 for f in figs)
            neg = sum(f["spearman_ci"][1] < 0 for f in figs)
            mean = np.mean([f["spearman"] for f in figs])
            within = [f["within"] for f in figs if f["within"] is not None]
            w = f", within structures {np.mean(within):+.2f}" if within else ""
            parts.append(f"{family}: mean ρ {mean:+.2f}, interval above 0 in {pos} and below 0 in {neg} of "
                         f"{len(figs)} cases{w}")
        out.append(f"- **{text}**: " + "; ".join(parts) + ".")
    cnn = res["cases"].get("CNN", {})
    if cnn and REFERENCE in next(iter(cnn.values())):
        figs = [c[default] for c in cnn.values()]
        better = sum(f["vs_params_ci"][0] > 0 for f in figs)
        worse = sum(f["vs_params_ci"][1] < 0 for f in figs)
        deltas = ", ".join(f"{c}: {f['vs_params']:+.2f} [{f['vs_params_ci'][0]:+.2f}, {f['vs_params_ci'][1]:+.2f}]"
                           for c, f in zip(cnn, figs))
        out.append(f"- **`{default}` against ln params alone on the CNN family** (paired difference of ρ, "
                   f"structures resampled): {deltas}; the interval lies above 0 (better than params) in {better} "
                   f"and below 0 in {worse} of {len(figs)} cases.")
    return out


def render(res: dict) -> list[str]:
    from benchmarks.ground_truth import cnn_population as C
    from zsad import ranking

    default = ranking.DEFAULT_CANDIDATE
    pop = C.population()
    summ = C.summary(pop)
    L = [HEADING, ""]
    L.append("Generated with the rest of this file (`python -m benchmarks.ground_truth report`; "
             "`python -m benchmarks.ground_truth families` rewrites this section alone) from "
             "`results/cnn/` and the main population's `results/` (code: `benchmarks/ground_truth/families.py`, "
             "`cnn_population.py`). **Post hoc**: the default score was chosen (`benchmarks/score_selection.md`) "
             "before the CNN population was trained; nothing here is part of that selection.\n")
    L.append(f"**The CNN population** ({summ['architectures']} architectures = {summ['structures']} structures × "
             f"{C.SETTINGS_PER_STRUCTURE} settings of weight_std ∈ {list(C.WEIGHT_STDS)}, seed "
             f"{C.CNN_POPULATION_SEED}; `python -m benchmarks.ground_truth population --population cnn` lists it): "
             + ", ".join(f"{k}: {v // C.SETTINGS_PER_STRUCTURE} structures" for k, v in summ["family"].items())
             + ". Layouts (`benchmarks/ground_truth/cnn_population.py`): plain CNNs `conv3×3 C, act, avg_pool to 4×4, "
             "[conv3×3 C, act] × (D−1), flatten, dense 10`, with batch norm after every conv (`plain_bn`) or without "
             "(`plain`); residual CNNs with D pre-activation blocks `x + s·[N?, act, conv, N?, act, conv](x)`; and "
             "NAS-Bench-201-like cells scaled to 8×8 (stem conv + BN, K cells, a residual reduction to 4×4 and 2C "
             "channels, K cells, BN, act, global pooling, dense 10), each cell a four-node DAG whose edges choose among "
             "none / skip / conv1×1 / conv3×3 / avgpool3×3 (conv edges act–conv–BN), drawn among the series-parallel "
             "cells that zsad architecture files express with nested `residual` layers. Depths "
             + ", ".join(f"{k}: {v}" for k, v in summ["depth"].items()) + "; widths "
             + ", ".join(f"{k}: {v}" for k, v in summ["width"].items()) + "; activations "
             + ", ".join(f"{k}: {v}" for k, v in summ["activation"].items())
             + " (architectures). Training: the recipe above (Adam, 400 steps of 64, both learning rates, seed 7). "
             "Zero-shot metrics: `zsad rank` with its default options (2 seeds, batch 64, every metric), on the "
             "data set's training images.\n")
    sizes = res["sizes"]
    L.append("**Coverage:** " + "; ".join(
        f"{fam}: " + ", ".join(f"{ds} {s['architectures']} architectures in {s['structures']} structures"
                               for ds, s in per.items()) for fam, per in sizes.items()) + ".\n")
    L.append("Figures: Spearman ρ with the **test accuracy** (1 − test error; positive = the ranking puts the "
             f"better-trained networks first), 95% interval from {N_BOOT} cluster-bootstrap resamples of whole "
             "structures; ranks taken within the family, as `zsad rank` would on a space file of that family alone "
             "(ties averaged; a row a ranking leaves undefined ranks last). 'within structures': mean ρ inside "
             "each structure (its settings differ only in weight_std, bias_std and branch scale). Top-1 / top-10: "
             "percentile (100 = best) of the top pick's accuracy and of the top-10 picks' median, mean over the "
             "cases. The MLP family's columns come from the main population's measurements (`zsad score`'s NLC "
             "and σ², `zsad rank`'s proxies), the CNN family's from `zsad rank`: in 'both', ranks mix the two.\n")
    L.append("### What each principle of the default score does on each family\n")
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
        L.append("Spearman ρ with test accuracy inside each CNN family (ranks taken over the whole CNN "
                 "population), mean over the cases; few structures each, so no intervals: read as descriptions.\n")
        cases = list(res["subfamilies"].values())
        fams = list(cases[0])
        labels = [k for k in cases[0][fams[0]] if k not in ("n", "structures")]
        L.append("| ranking | " + " | ".join(f"{f} ({cases[0][f]['structures']} str., {cases[0][f]['n']} arch.)"
                                          for f in fams) + " |")
        L.append("|---|" + "---|" * len(fams))
        for label in labels:
            L.append(f"| {label} | " + " | ".join(f"{np.nanmean([c[f][label] for c in cases]):+.2f}" for f in fams)
                     + " |")
        L.append("")
    L.append("### Post hoc: the selection rule's statistic on each family (not part of the selection)\n")
    L.append("The worst and the mean of each candidate's ρ over the family's cases (the rule of "
             "`benchmarks/score_selection.md` takes the worst figure). Computed after the choice, on a population "
             "the choice did not see; it does not change the default.\n")
    fams = [f for f in res["post_hoc"]]
    L.append("| candidate | " + " | ".join(f"{f} worst | {f} mean" for f in fams) + " |")
    L.append("|---|" + "---|---|" * len(fams))
    for k in ranking.CANDIDATES:
        cells = [f"{res['post_hoc'][f][k]['worst']:+.2f} | {res['post_hoc'][f][k]['mean']:+.2f}" for f in fams]
        mark = " (default)" if k == default else ""
        L.append(f"| {k}{mark} | " + " | ".join(cells) + " |")
    L.append("")
    return L


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
