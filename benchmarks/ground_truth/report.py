"""``benchmarks/RESULTS.md`` and the plots, from the stored results (no computation is redone)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from benchmarks.ground_truth import analysis as A
from benchmarks.ground_truth import population as P
from benchmarks.ground_truth import train as T
from benchmarks.ground_truth.runner import HERE, RESULTS, read_jsonl
from zsad import verdict

#: The band before this study (Philipp 2021: roughly 1.2 to 5): the value an edge moves from.
PRIOR_LO, PRIOR_HI = 1.2, 5.0

OUT = HERE.parent / "RESULTS.md"
PLOTS = HERE / "plots"
DATASETS = ("digits", "mnist")

#: Metrics in the correlation tables: (column, label, the direction zsad/the paper gives it).
METRICS = [
    ("nlc", "NLC (mean over 3 seeds)", "band"),
    ("band_distance", "log-distance of NLC from [1.2, 5]", "lower"),
    ("default_score", "previous default score (band + capacity)", "higher"),
    ("nlc_std", "NLC std over seeds", "lower"),
    ("nlc_predicted", "mean-field predicted NLC", "band"),
    ("params", "params", "higher"),
    ("flops", "flops", "higher"),
    ("naswot", "naswot", "higher"),
    ("synflow", "synflow", "higher"),
    ("grad_norm", "grad_norm", "higher"),
    ("snip", "snip", "higher"),
    ("jacob_cov", "jacob_cov", "higher"),
    ("sigma2_mean", "Jacobian mean σ²", "—"),
    ("abs_log_sigma2", "abs(ln mean σ²)", "lower"),
    ("sigma2_ratio", "var(σ²)/mean(σ²)²", "lower"),
    ("condition", "condition number", "lower"),
    ("isometry_share", "isometry share", "higher"),
    ("mf_chi1", "χ1 (mean field)", "—"),
    ("abs_log_chi1", "abs(ln χ1)", "lower"),
    ("depth_over_xi_c", "depth / ξ_c", "lower"),
    ("mf_q_star", "q*", "—"),
]

ACT_COLORS = None


def _fmt(v, nd=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.{nd}f}" if isinstance(v, float) else str(v)


def _cell(c: dict, key: str) -> str:
    if c.get(key) is None:
        return "—"
    ci = c.get(f"{key}_ci")
    return f"{c[key]:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{c[key]:+.2f}"


def targets(lrs) -> list[tuple[str, str]]:
    return [(f"test_error@{lr:g}", f"lr {lr:g}") for lr in lrs] + [("test_error@best", "best of the two lrs")]


# --------------------------------------------------------------------------- plots

def _scatter(table: A.Table, xcol: str, xlabel: str, path: Path, color_by: str, lrs, logx: bool = True,
             band: tuple[float, float] | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(DATASETS), len(lrs), figsize=(5.2 * len(lrs), 4.2 * len(DATASETS)),
                             squeeze=False, sharex=True)
    if color_by == "activation":
        cats = sorted({r["activation"] for r in table.rows})
        cmap = plt.get_cmap("tab20")
        colors = {c: cmap(i % 20) for i, c in enumerate(cats)}
    else:
        cats = sorted({r["depth"] for r in table.rows})
        cmap = plt.get_cmap("viridis")
        colors = {c: cmap(i / max(1, len(cats) - 1)) for i, c in enumerate(cats)}
    for i, ds in enumerate(DATASETS):
        rows = table.subset(ds)
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            tcol = f"test_error@{lr:g}"
            for c in cats:
                sel = [r for r in rows if r[color_by] == c and r.get(xcol) is not None and r.get(tcol) is not None]
                if not sel:
                    continue
                marker = [("s" if r["kind"] == "cnn" else "o") for r in sel]
                xs = np.array([r[xcol] for r in sel])
                ys = np.array([r[tcol] for r in sel])
                for mk in ("o", "s"):
                    m = np.array([q == mk for q in marker])
                    if m.any():
                        ax.scatter(xs[m], ys[m], s=14, color=colors[c], marker=mk, alpha=0.75,
                                   label=str(c) if mk == "o" or not any(q == "o" for q in marker) else None,
                                   edgecolors="none")
            if band is not None:
                ax.axvspan(band[0], band[1], color="0.85", zorder=0)
            if logx:
                _log_ticks(ax)
            ax.set_yscale("log")
            ax.set_title(f"{ds}, Adam lr {lr:g}", fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test error")
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, title=color_by + " (■ = CNN)")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _log_ticks(ax) -> None:
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator([1, 1.2, 1.5, 2, 3, 5, 10, 20, 50, 100, 1e3, 1e4, 1e6, 1e9]))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _band_plot(table: A.Table, path: Path, lrs, proposed: tuple[float, float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.log(np.array([1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7, 10, 20, 50, 1e4]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for ds, ls in zip(DATASETS, ("-", "--")):
        for lr, col in zip(lrs, ("tab:blue", "tab:orange")):
            prof = A.band_profile(table.col("log_nlc", ds), table.col(f"test_error@{lr:g}", ds), edges)
            xs = [math.sqrt(p["lo"] * p["hi"]) for p in prof if p["n"] >= 5]
            ys = [p["median"] for p in prof if p["n"] >= 5]
            ax.plot(xs, ys, ls, color=col, marker="o", ms=3, label=f"{ds}, lr {lr:g}")
    ax.axvspan(*proposed, color="0.85", zorder=0, label=f"proposed band [{proposed[0]:g}, {proposed[1]:g}]")
    _log_ticks(ax)
    ax.set_yscale("log")
    ax.set_xlabel("NLC at initialization (bin centre)")
    ax.set_ylabel("median test error in the bin")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# --------------------------------------------------------------------------- computations

GRID = np.array([1.0, 1.02, 1.05, 1.1, 1.15, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0,
                 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0])
SCALE_TOL = math.log(verdict.SCALE_BAND)  # mean sigma^2 within [1/SCALE_BAND, SCALE_BAND] is not penalized
#: Below this NLC a network counts as effectively linear (the report compares its test error with the band's).
LINEAR_NLC = 1.05
#: The proxies whose relation to the Jacobian scale the report states (they grow with gradient magnitude).
GRADIENT_PROXIES = ("grad_norm", "snip", "synflow")


def score_variants(table: A.Table, ds: str, band: tuple[float, float]) -> dict[str, np.ndarray]:
    """Candidate scores (higher = better) for the ablation; ``band`` is the proposed band."""
    nlc = table.col("nlc", ds)
    s2 = table.col("abs_log_sigma2", ds)
    xi = table.col("depth_over_xi_c", ds)
    logp = table.col("log10_params", ds)
    d_cur = table.col("band_distance", ds)
    d_new = A.band_dist(nlc, *band)
    s_pen = np.maximum(0.0, s2 - SCALE_TOL) / 2.0  # ln of the factor by which sigma leaves the scale band
    xi_pen = np.maximum(0.0, xi - 1.0)  # depth beyond one correlation depth scale
    sb = f"{verdict.SCALE_BAND:g}"
    out = {
        "previous default: −d(NLC; 1.2, 5) + 0.01·log10 params": table.col("default_score", ds),
        "nonlinearity only, prior band: −d(NLC; 1.2, 5)": -d_cur,
        f"nonlinearity only, proposed band: −d(NLC; {band[0]:g}, {band[1]:g})": -d_new,
        "signal propagation: −abs(ln mean σ²)": -s2,
        f"signal propagation: −max(0, abs(ln mean σ²) − ln {sb})/2": -s_pen,
        "signal propagation: −depth/ξ_c": -xi,
        "signal propagation: −abs(ln χ1)": -table.col("abs_log_chi1", ds),
        "capacity only: log10 params": logp,
        f"proposed band + capacity: −d(NLC; {band[0]:g}, {band[1]:g}) + 0.01·log10 params": -d_new + 0.01 * logp,
        f"proposed band + scale: −d(NLC; {band[0]:g}, {band[1]:g}) − max(0, abs(ln σ²) − ln {sb})/2":
            -d_new - s_pen,
        f"proposed: −d(NLC; {band[0]:g}, {band[1]:g}) − max(0, abs(ln σ²) − ln {sb})/2 + 0.01·log10 params":
            -d_new - s_pen + 0.01 * logp,
        f"proposed band + depth/ξ_c: −d(NLC; {band[0]:g}, {band[1]:g}) − max(0, depth/ξ_c − 1)":
            -d_new - xi_pen,
        "rank average of (−d(NLC; proposed), −abs(ln σ²), log10 params)":
            A.rank_normal(-d_new) + A.rank_normal(-s2) + A.rank_normal(logp),
    }
    return out


def compute(table: A.Table, lrs, n_boot: int, log=print) -> dict:
    res: dict = {"corr": {}, "bands": {}, "ablation": {}, "within": {}, "profiles": {}, "fail": {}}
    n_band_boot = max(100, n_boot // 5)
    for ds in DATASETS:
        rows = table.subset(ds)
        if not rows:
            continue
        g = table.groups(ds)
        for tcol, tlabel in targets(lrs):
            y = table.col(tcol, ds)
            cell = {}
            for col, _, _ in METRICS:
                cell[col] = A.correlation(table.col(col, ds), y, n_boot, groups=g)
            res["corr"][(ds, tcol)] = cell
            res["bands"][(ds, tcol)] = A.best_band(table.col("nlc", ds), y, GRID, n_boot=n_band_boot, groups=g)
        log(f"correlations and bands of {ds} done")
    # how the band moves with the minimum share of the search (the 1/4 of the main table included)
    res["band_sensitivity"] = {}
    for ds in DATASETS:
        if not table.subset(ds):
            continue
        g = table.groups(ds)
        for tcol, _ in targets(lrs)[:-1]:
            other = A.band_sensitivity(table.col("nlc", ds), table.col(tcol, ds), GRID, n_boot=n_band_boot, groups=g,
                                       shares=[sh for sh in A.BAND_SHARES if sh != 0.25])
            other[0.25] = res["bands"][(ds, tcol)]
            res["band_sensitivity"][(ds, tcol)] = {sh: other[sh] for sh in A.BAND_SHARES if sh in other}
    res["band_sensitivity_pooled"] = {}
    for sh in A.BAND_SHARES:
        cases = [per[sh] for per in res["band_sensitivity"].values() if sh in per and per[sh]["lo"] is not None]
        if cases:
            res["band_sensitivity_pooled"][sh] = (
                _round_edge(float(np.exp(np.median([math.log(b["lo"]) for b in cases])))),
                _round_edge(float(np.exp(np.median([math.log(b["hi"]) for b in cases])))))
    log("band sensitivity done")
    res["nlc_dist"] = {}
    for ds in DATASETS:
        v = table.col("nlc", ds)
        v = v[np.isfinite(v)]
        if len(v):
            res["nlc_dist"][ds] = {"n": int(len(v)), "below_1.2": float(np.mean(v < 1.2)),
                                   "1.2_2": float(np.mean((v >= 1.2) & (v < 2))), "2_5": float(np.mean((v >= 2) & (v < 5))),
                                   "5_20": float(np.mean((v >= 5) & (v < 20))), "above_20": float(np.mean(v >= 20)),
                                   "median": float(np.median(v)), "max": float(np.max(v))}
    # the proposed band: pooled over data sets and learning rates (medians of the per-case bands)
    cases = [b for (ds, t), b in res["bands"].items() if t != "test_error@best" and b["lo"] is not None]
    lo = float(np.exp(np.median([math.log(b["lo"]) for b in cases]))) if cases else PRIOR_LO
    hi = float(np.exp(np.median([math.log(b["hi"]) for b in cases]))) if cases else PRIOR_HI
    estimate = (_round_edge(lo), _round_edge(hi))
    # an edge moves from its prior value only if at least 3 of the 4 (data set, lr) bootstrap intervals
    # exclude the prior value; otherwise the data do not support moving it
    lr_cases = [b for (ds, t), b in res["bands"].items() if t != "test_error@best" and b.get("lo_ci")]
    excl_lo = sum(not (b["lo_ci"][0] <= PRIOR_LO <= b["lo_ci"][1]) for b in lr_cases)
    excl_hi = sum(not (b["hi_ci"][0] <= PRIOR_HI <= b["hi_ci"][1]) for b in lr_cases)
    need = max(1, math.ceil(0.75 * len(lr_cases)))
    band = (estimate[0] if excl_lo >= need else PRIOR_LO, estimate[1] if excl_hi >= need else PRIOR_HI)
    res["verdict_constants"] = {"LINEAR_MAX": verdict.LINEAR_MAX, "HEALTHY_MAX": verdict.HEALTHY_MAX,
                                "CHAOTIC_MIN": verdict.CHAOTIC_MIN}
    res["band_estimate"] = estimate
    res["band_moves"] = {"lo_excluding": excl_lo, "hi_excluding": excl_hi, "cases": len(lr_cases), "need": need}
    res["band"] = band
    for ds in DATASETS:
        rows = table.subset(ds)
        if not rows:
            continue
        g = table.groups(ds)
        variants = score_variants(table, ds, band)
        for tcol, _ in targets(lrs):
            y = table.col(tcol, ds)
            cur = None
            out = {}
            for name, s in variants.items():
                c = A.correlation(s, y, n_boot, kendall=False, seed=1, groups=g)
                out[name] = c
                if cur is None:
                    cur = c
            for name, c in out.items():
                c["delta_ci"] = A.paired_difference(c, cur)
                c["delta"] = (c["spearman"] - cur["spearman"]) if (c.get("spearman") is not None and
                                                                   cur.get("spearman") is not None) else None
            res["ablation"][(ds, tcol)] = out
        # within-structure: does the metric order the scalar settings of one structure?
        for tcol, _ in targets(lrs):
            y = table.col(tcol, ds)
            per = {}
            for col in WITHIN_COLUMNS:
                m = A.group_mean(A.within_groups(table.col(col, ds), y, g), n_boot)
                if m is not None:
                    per[col] = m
            res["within"][(ds, tcol)] = per
        nlc = table.col("nlc", ds)
        inside = (nlc >= band[0]) & (nlc <= band[1])
        for tcol, _ in targets(lrs):
            y = table.col(tcol, ds)
            inside_y = inside & np.isfinite(y)
            ref = float(np.median(y[inside_y])) if inside_y.any() else float(np.nanmedian(y))
            res["fail"][(ds, tcol)] = {"reference": ref,
                                       "rows": A.failure_rate_above(nlc, y, 2 * ref, GRID[GRID >= 2])}
            # failures the band does not see: inside the band, test error above twice the in-band median
            miss = [r for r, inn, e in zip(rows, inside_y, y) if inn and e > 2 * ref]
            kept = [r for r, inn, e in zip(rows, inside_y, y) if inn and e <= 2 * ref]
            out_ok = [r for r, e, v in zip(rows, y, nlc) if np.isfinite(v) and not (band[0] <= v <= band[1])
                      and e <= ref]
            res.setdefault("misses", {})[(ds, tcol)] = {
                "inside": int(inside_y.sum()), "failed_inside": len(miss), "good_outside": len(out_ok),
                "outside": int((np.isfinite(nlc) & ~inside).sum()),
                "by_depth": _count(miss, "depth"), "by_norm": _count(miss, "norm"),
                "by_activation": _count(miss, "activation"),
                "failed_scale": sum(1 for r in miss if r.get("abs_log_sigma2") is not None
                                    and r["abs_log_sigma2"] > SCALE_TOL),
                "failed_abs_log_sigma2": [r.get("abs_log_sigma2") for r in miss],
                "kept_abs_log_sigma2": [r.get("abs_log_sigma2") for r in kept],
                "examples": [{"arch": r["arch"], "nlc": r.get("nlc"), "sigma2_mean": r.get("sigma2_mean"),
                              "error": r.get(tcol)} for r in sorted(miss, key=lambda r: -r[tcol])[:5]]}
            # effectively linear networks against the band
            res.setdefault("linear", {})[(ds, tcol)] = A.median_difference(
                y, np.isfinite(nlc) & (nlc < LINEAR_NLC), inside, n_boot, groups=g, seed=5)
        # do the gradient-magnitude proxies grow with the Jacobian scale?
        for col in GRADIENT_PROXIES:
            res.setdefault("proxy_scale", {})[(ds, col)] = A.correlation(
                table.col(col, ds), table.col("sigma2_mean", ds), n_boot, kendall=False, seed=6, groups=g)
    # the proposal: among a small, pre-declared set of formulas, the one with the lowest mean Spearman rho
    # (over both data sets and both learning rates)
    cands = [n for n in next(iter(res["ablation"].values()), {}) if n.startswith(CANDIDATE_PREFIXES)]
    means = {}
    for n in cands:
        vals = [res["ablation"][(ds, t)][n]["spearman"] for ds in DATASETS for t, _ in targets(lrs)[:-1]
                if (ds, t) in res["ablation"] and res["ablation"][(ds, t)][n].get("spearman") is not None]
        if vals:
            means[n] = float(np.mean(vals))
    res["candidate_means"] = means
    res["chosen"] = min(means, key=means.get) if means else None
    # band transfer: the band estimated on one data set, evaluated on the other
    res["transfer"] = {}
    for ds in DATASETS:
        other = [d for d in DATASETS if d != ds]
        cases = [b for (d, t), b in res["bands"].items() if d in other and t != "test_error@best" and b["lo"]]
        if not cases or not table.subset(ds):
            continue
        g = table.groups(ds)
        blo = _round_edge(float(np.exp(np.median([math.log(b["lo"]) for b in cases]))))
        bhi = _round_edge(float(np.exp(np.median([math.log(b["hi"]) for b in cases]))))
        for tcol, _ in targets(lrs)[:-1]:
            y = table.col(tcol, ds)
            c_new = A.correlation(-A.band_dist(table.col("nlc", ds), blo, bhi), y, n_boot, kendall=False, seed=3,
                                  groups=g)
            c_cur = A.correlation(-table.col("band_distance", ds), y, n_boot, kendall=False, seed=3, groups=g)
            res["transfer"][(ds, tcol)] = {"band": (blo, bhi), "new": c_new, "current": c_cur,
                                           "delta_ci": A.paired_difference(c_new, c_cur)}
    log("ablation done")
    res.update(adopted(table, lrs, n_boot))
    log("adopted default score done")
    return res


#: Metrics of the within-structure table.
WITHIN_COLUMNS = ("nlc", "band_distance", "default_score", "abs_log_sigma2", "depth_over_xi_c", "grad_norm",
                  "synflow", "snip", "naswot", "jacob_cov")


def adopted_scores(table: A.Table) -> dict[str, np.ndarray]:
    """The default score of ``zsad rank`` (``zsad.ranking.DEFAULT_CANDIDATE``, read now) of every row of each
    data set, ranks taken within the data set (NaN where the score is undefined)."""
    from benchmarks.score_dev import study_rows
    from zsad import ranking

    out = {}
    for ds, (rows, _, _) in study_rows().items():
        if [r["arch"] for r in rows] != [r["arch"] for r in table.subset(ds)]:
            raise ValueError(f"{ds}: benchmarks.score_dev.study_rows() and the study's table disagree on the rows")
        scores = ranking.candidate_scores(rows, ranking.DEFAULT_CANDIDATE)
        out[ds] = np.array([np.nan if v is None else float(v) for v in scores], float)
    return out


def adopted_info() -> dict:
    """Which candidate the default score is, in words (read from ``zsad.ranking`` at run time)."""
    from zsad import ranking

    cand = ranking.DEFAULT_CANDIDATE
    names = ranking.CANDIDATES[cand]
    if names:
        formula = ("mean over the ingredients of ln(r / N), r the rank of the architecture on the ingredient "
                   "within its data set's population (1 = worst, N = best): " +
                   "; ".join(f"`{n}` = {ranking.INGREDIENTS[n].text}" for n in names))
    else:
        formula = "`zsad.ranking.legacy_score` on raw values (" + (ranking.legacy_score.__doc__ or "").split(
            "\n")[0].strip() + ")"
    return {"candidate": cand, "ingredients": list(names), "formula": formula}


def adopted(table: A.Table, lrs, n_boot: int) -> dict:
    """The adopted default score against the previous one (the ``default_score`` column): Spearman rho with
    the test error over each data set's architectures (structures resampled) and the mean within-structure
    rho (structures resampled), both on the rows where both scores are defined, with paired differences."""
    scores = adopted_scores(table)
    out: dict = {"adopted": {}, "adopted_info": adopted_info()}
    for ds in DATASETS:
        if ds not in scores or not table.subset(ds):
            continue
        g = table.groups(ds)
        prev = table.col("default_score", ds)
        new = scores[ds]
        both = np.isfinite(prev) & np.isfinite(new)
        prev = np.where(both, prev, np.nan)
        new = np.where(both, new, np.nan)
        for tcol, _ in targets(lrs):
            y = table.col(tcol, ds)
            c_prev = A.correlation(prev, y, n_boot, kendall=False, groups=g)
            c_new = A.correlation(new, y, n_boot, kendall=False, groups=g)
            w_prev = A.within_groups(prev, y, g)
            w_new = A.within_groups(new, y, g)
            out["adopted"][(ds, tcol)] = {
                "previous": c_prev, "adopted": c_new, "delta_ci": A.paired_difference(c_new, c_prev),
                "delta": (c_new["spearman"] - c_prev["spearman"]) if (c_new.get("spearman") is not None and
                                                                      c_prev.get("spearman") is not None) else None,
                "within_previous": A.group_mean(w_prev, n_boot), "within_adopted": A.group_mean(w_new, n_boot),
                "within_delta": A.group_mean_difference(w_new, w_prev, n_boot)}
    return out


#: The pre-declared family from which the proposed score is chosen (ablation rows starting with these).
CANDIDATE_PREFIXES = ("nonlinearity only, proposed band", "proposed band + capacity", "proposed band + scale",
                      "proposed:", "proposed band + depth")


def _count(rows, key) -> dict:
    out: dict = {}
    for r in rows:
        out[str(r[key])] = out.get(str(r[key]), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _round_edge(v: float) -> float:
    """Rounds a band edge to a readable value (2 significant digits)."""
    if v <= 0:
        return v
    return float(f"{v:.2g}")


# --------------------------------------------------------------------------- markdown

def _timing() -> dict:
    runs = read_jsonl(RESULTS / "runs.jsonl")
    tasks = read_jsonl(RESULTS / "tasks.jsonl")
    secs: dict[str, float] = {}
    per_ds: dict[str, float] = {}
    for t in tasks:
        for k, v in (t.get("seconds") or {}).items():
            part = k.split("_")[0]
            secs[part] = secs.get(part, 0.0) + v
        # per data set, over the tasks that computed everything for each data set in order (the first one compiles)
        todo = t.get("todo") or {}
        if len(todo) > 1 and all(set(parts) == {"metrics", "train"} for parts in todo.values()):
            for ds in todo:
                per_ds[ds] = per_ds.get(ds, 0.0) + sum(v for k, v in t["seconds"].items() if k.endswith("_" + ds))
    # structures finished by the runs that were stopped early, before the first run that completed
    complete = [r["started"] for r in runs if not r.get("interrupted")]
    early = sum(1 for t in tasks if complete and t.get("finished", "") < min(complete))
    return {"runs": runs, "wall_s": sum(r["wall_s"] for r in runs), "task_seconds": secs,
            "dataset_seconds": per_ds, "early_structures": early,
            "interrupted": sum(1 for r in runs if r.get("interrupted")),
            "tasks_failed": [t for t in tasks if t.get("status", "ok") != "ok"],
            "loads": [r.get("load_avg_end") for r in runs]}


def _corr_table(res, ds, lrs) -> list[str]:
    head = "| metric | zsad direction | n | " + " | ".join(
        f"ρ {lab} | τ {lab}" for _, lab in targets(lrs)) + " |"
    sep = "|---|---|---|" + "---|---|" * len(targets(lrs))
    lines = [head, sep]
    for col, label, direction in METRICS:
        cells = []
        n = None
        for tcol, _ in targets(lrs):
            c = res["corr"].get((ds, tcol), {}).get(col, {})
            n = c.get("n", n)
            cells += [_cell(c, "spearman"), _cell(c, "kendall")]
        lines.append(f"| {label} | {direction} | {n} | " + " | ".join(cells) + " |")
    return lines


def _ablation_table(res, ds, lrs) -> list[str]:
    lines = ["| score (higher = better predicted) | " + " | ".join(f"ρ {lab}" for _, lab in targets(lrs)) +
             " | Δρ vs previous default, lr " + f"{lrs[0]:g}" + " |",
             "|---|" + "---|" * len(targets(lrs)) + "---|"]
    names = list(res["ablation"].get((ds, targets(lrs)[0][0]), {}))
    for name in names:
        cells = [_cell(res["ablation"][(ds, t)][name], "spearman") for t, _ in targets(lrs)]
        c0 = res["ablation"][(ds, targets(lrs)[0][0])][name]
        d = c0.get("delta")
        dci = c0.get("delta_ci")
        delta = "—" if d is None else (f"{d:+.2f} [{dci[0]:+.2f}, {dci[1]:+.2f}]" if dci else f"{d:+.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {delta} |")
    return lines


def _pop_table(table: A.Table) -> list[str]:
    pop = P.population()
    summ = P.summary(pop)
    lines = ["| property | values (number of architectures) |", "|---|---|"]
    for key in ("kind", "depth", "width", "activation", "residual", "norm", "weight_std", "bias_std"):
        lines.append(f"| {key} | " + ", ".join(f"{k}: {v}" for k, v in summ[key].items()) + " |")
    return lines


def write_report(n_boot: int = 1000, log=print, out: Path = OUT) -> Path:
    from benchmarks.ground_truth import data as D
    from benchmarks.ground_truth import narrative

    table, info = A.load_table()
    lrs = info["lrs"] or list(T.LEARNING_RATES)
    log(f"{info['joined']} (architecture, data set) rows with metrics and training results")
    res = compute(table, lrs, n_boot, log=log)
    band = res["band"]
    PLOTS.mkdir(parents=True, exist_ok=True)
    figs = {
        "nlc_act": _scatter(table, "nlc", "NLC at initialization", PLOTS / "error_vs_nlc_by_activation.png",
                            "activation", lrs, band=band),
        "nlc_depth": _scatter(table, "nlc", "NLC at initialization", PLOTS / "error_vs_nlc_by_depth.png", "depth",
                              lrs, band=band),
        "score": _scatter(table, "default_score", "previous default score (band + capacity)", PLOTS / "error_vs_default_score.png",
                          "depth", lrs, logx=False),
        "sigma2": _scatter(table, "sigma2_mean", "Jacobian mean σ² (hidden segment)", PLOTS / "error_vs_sigma2.png",
                           "depth", lrs),
        "band": _band_plot(table, PLOTS / "median_error_by_nlc.png", lrs, band),
    }
    timing = _timing()
    pop = P.population()
    n_arch = sum(len(ms) for _, ms in pop)
    datasets = [D.describe(d) for d in DATASETS]
    md = narrative.render(table=table, info=info, res=res, lrs=lrs, figs=figs, timing=timing, n_arch=n_arch,
                          n_struct=len(pop), datasets=datasets, corr_table=lambda ds: _corr_table(res, ds, lrs),
                          ablation_table=lambda ds: _ablation_table(res, ds, lrs), pop_table=_pop_table(table),
                          targets=targets(lrs), n_boot=n_boot)
    out.write_text(md)
    from benchmarks.ground_truth import families
    from benchmarks.ground_truth.runner import results_of

    if (results_of("cnn") / "metrics.jsonl").exists():
        families.write(out, log=log)
    (RESULTS / "summary.json").write_text(json.dumps(_summary(res, info, lrs), indent=1) + "\n")
    log(f"wrote {out} and {len(figs)} plots")
    return out


def _summary(res, info, lrs) -> dict:
    """Machine-readable headline numbers (results/summary.json)."""
    out = {"info": info, "band": res["band"], "band_estimate": res.get("band_estimate"),
           "band_moves": res.get("band_moves"), "chosen_score": res.get("chosen"), "bands": {}, "corr": {}}
    for (ds, t), b in res["bands"].items():
        out["bands"][f"{ds}/{t}"] = b
    for (ds, t), cells in res["corr"].items():
        out["corr"][f"{ds}/{t}"] = {k: _public(v) for k, v in cells.items()}
    out["band_sensitivity"] = {f"{ds}/{t}": {f"{sh:g}": b for sh, b in per.items()}
                               for (ds, t), per in res.get("band_sensitivity", {}).items()}
    out["band_sensitivity_pooled"] = {f"{sh:g}": b for sh, b in res.get("band_sensitivity_pooled", {}).items()}
    out["adopted_score"] = {"info": res.get("adopted_info"), "cases": {
        f"{ds}/{t}": {k: (_public(v) if isinstance(v, dict) else v) for k, v in a.items()}
        for (ds, t), a in res.get("adopted", {}).items()}}
    return out


def _public(cell: dict) -> dict:
    """A correlation cell without its bootstrap arrays."""
    return {k: v for k, v in cell.items() if not k.startswith("_")}
