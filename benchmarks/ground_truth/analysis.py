"""Analysis of the stored results: correlations with bootstrap intervals, band estimate, ablation.

Conventions:
  * every correlation is between a metric's raw value and the *test error* (a misclassification
    rate): a negative value means "higher metric, lower error";
  * Spearman's rho and Kendall's tau-b, on the architectures where both are defined;
  * 95% intervals: percentile cluster bootstrap over *structures*: each resample draws as many
    structures as there are, with replacement, and takes every architecture of each drawn
    structure (the 11 architectures of a structure share everything but their scalars, so they
    are not independent draws); the same resamples for every metric of one table so that
    differences are paired;
  * targets: the test error at each learning rate, and at the better of the two ("best lr").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.ground_truth.runner import RESULTS, read_jsonl

SEED = 0


# --------------------------------------------------------------------------- the table

def _log(v):
    return math.log(v) if v is not None and v > 0 else None


def check_prior_columns(m: dict, rec: dict) -> None:
    """Raises ValueError unless the stored ``band_distance`` and ``default_score`` are those of the prior band
    and capacity weight of :mod:`benchmarks.ground_truth.metrics`, the constants their labels name."""
    from benchmarks.ground_truth import metrics as M

    nlc = m.get("nlc")
    want = {"band_distance": M.prior_band_distance(nlc) if nlc else None,
            "default_score": M.prior_score(nlc, m.get("params"))}
    for col, v in want.items():
        got = m.get(col, v)
        if (got is None) != (v is None) or (v is not None and not math.isclose(got, v, rel_tol=1e-9, abs_tol=1e-12)):
            raise ValueError(f"{rec.get('arch')}: stored {col} {got} is not the one of the band {M.PRIOR_BAND} and "
                             f"capacity weight {M.PRIOR_CAPACITY_WEIGHT} ({v}): recompute the metrics")


def derived(m: dict, rec: dict) -> dict:
    """Metric columns of one (architecture, data set), including derived signal-propagation terms."""
    check_prior_columns(m, rec)
    out = dict(m)
    nlc = m.get("nlc")
    out["log_nlc"] = _log(nlc)
    s2 = m.get("sigma2_mean")
    out["abs_log_sigma2"] = abs(math.log(s2)) if s2 and s2 > 0 else None
    chi1 = m.get("mf_chi1")
    out["abs_log_chi1"] = abs(math.log(chi1)) if chi1 and chi1 > 0 else None
    chi_c = m.get("mf_chi_c")
    # depth / xi_c = depth * |ln chi_c| (0 at the edge of chaos, where xi_c is infinite)
    out["depth_over_xi_c"] = rec["depth"] * abs(math.log(chi_c)) if chi_c and chi_c > 0 else None
    pred = m.get("nlc_predicted") if "nlc_predicted" in m else m.get("mf_nlc_predicted")
    out["nlc_predicted"] = pred
    out["log10_params"] = math.log10(m["params"]) if m.get("params") else None
    out["rel_nlc_std"] = (m["nlc_std"] / nlc) if (nlc and m.get("nlc_std") is not None) else None
    return out


@dataclass
class Table:
    rows: list[dict]  # one per (arch, dataset): record + metrics + errors per lr

    def col(self, name: str, dataset: str | None = None) -> np.ndarray:
        rows = [r for r in self.rows if dataset is None or r["dataset"] == dataset]
        return np.array([np.nan if r.get(name) is None else float(r[name]) for r in rows], dtype=float)

    def subset(self, dataset: str) -> list[dict]:
        return [r for r in self.rows if r["dataset"] == dataset]

    def groups(self, dataset: str | None = None) -> np.ndarray:
        """The structure of each row (in the order of :meth:`col`): the bootstrap's clusters."""
        return np.array([r["structure"] for r in self.rows if dataset is None or r["dataset"] == dataset])


def load_table(results: Path = RESULTS) -> tuple[Table, dict]:
    metrics = read_jsonl(results / "metrics.jsonl")
    train = read_jsonl(results / "train.jsonl")
    errs: dict[tuple[str, str], dict[float, dict]] = {}
    for t in train:
        errs.setdefault((t["arch"], t["dataset"]), {})[t["lr"]] = t
    rows = []
    seen = set()
    for m in metrics:
        key = (m["arch"], m["dataset"])
        if key in seen or key not in errs:
            continue
        seen.add(key)
        per_lr = errs[key]
        row = {k: v for k, v in m.items() if k != "metrics"}
        row.update(derived(m["metrics"], m))
        lrs = sorted(per_lr)
        for lr in lrs:
            row[f"test_error@{lr:g}"] = per_lr[lr]["test_error"]
            row[f"train_error@{lr:g}"] = per_lr[lr]["train_error"]
            tl = per_lr[lr]["train_loss"]
            row[f"diverged@{lr:g}"] = tl is None or not math.isfinite(tl)
        row["test_error@best"] = min(per_lr[lr]["test_error"] for lr in lrs)
        rows.append(row)
    info = {"metrics_rows": len(metrics), "train_rows": len(train), "joined": len(rows),
            "lrs": sorted({t["lr"] for t in train})}
    return Table(rows), info


# --------------------------------------------------------------------------- correlations

def _spearman_many(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (x[b], y[b]) (2-D arrays: resamples x samples)."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / den


def bootstrap_indices(n: int, n_boot: int, seed: int = SEED) -> np.ndarray:
    """Ordinary bootstrap: ``n_boot`` rows of ``n`` indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def cluster_resamples(groups, n_boot: int, seed: int = SEED) -> list[np.ndarray]:
    """Cluster-bootstrap index sets: each resample draws as many groups as there are, with
    replacement, and takes every row of each drawn group (a group drawn twice appears twice).

    With one row per group, labelled ``0 .. n-1``, this is :func:`bootstrap_indices` (the same
    draws from the same ``seed``).
    """
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
    return [np.concatenate([members[g] for g in d]) for d in draws]


def spearman_each(x: np.ndarray, y: np.ndarray, boots: list[np.ndarray]) -> np.ndarray:
    """Spearman rho of (x[b], y[b]) for every index set b (sets of equal length computed together)."""
    out = np.empty(len(boots))
    by_len: dict[int, list[int]] = {}
    for i, b in enumerate(boots):
        by_len.setdefault(len(b), []).append(i)
    for ii in by_len.values():
        idx = np.stack([boots[i] for i in ii])
        out[ii] = _spearman_many(x[idx], y[idx])
    return out


def correlation(x: np.ndarray, y: np.ndarray, n_boot: int, kendall: bool = True, seed: int = SEED,
                groups=None) -> dict:
    """Spearman and Kendall of x with y, with percentile-bootstrap 95% intervals.

    Rows where x or y is undefined are dropped. ``groups`` (one label per row, e.g. the structure)
    makes the bootstrap resample whole groups (:func:`cluster_resamples`); None resamples rows.
    The ``n_boot`` resamples are drawn from ``seed``, so metrics defined on the same rows with the
    same groups share resamples and their differences are paired (:func:`paired_difference`).
    """
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    out = {"n": n}
    if n < 10 or np.nanstd(x[ok]) == 0:
        return {**out, "spearman": None, "kendall": None}
    out["spearman"] = float(stats.spearmanr(x[ok], y[ok]).statistic)
    out["kendall"] = float(stats.kendalltau(x[ok], y[ok]).statistic)
    idx = np.flatnonzero(ok)
    g = np.arange(n) if groups is None else np.asarray(groups)[ok]
    boots = [idx[b] for b in cluster_resamples(g, n_boot, seed)]
    rho = spearman_each(x, y, boots)
    out["spearman_ci"] = [float(np.nanpercentile(rho, 2.5)), float(np.nanpercentile(rho, 97.5))]
    if kendall:
        tau = np.array([stats.kendalltau(x[b], y[b]).statistic for b in boots])
        out["kendall_ci"] = [float(np.nanpercentile(tau, 2.5)), float(np.nanpercentile(tau, 97.5))]
    out["_rho_boot"] = rho
    out["_mask"] = ok
    out["_groups"] = None if groups is None else np.asarray(groups)
    out["_seed"] = seed
    return out


def paired_difference(a: dict, b: dict) -> list[float] | None:
    """95% interval of rho_a - rho_b from paired bootstrap draws: only when both were resampled
    alike (same defined rows, same groups, same seed), else None."""
    if "_rho_boot" not in a or "_rho_boot" not in b or not np.array_equal(a["_mask"], b["_mask"]):
        return None
    if a["_seed"] != b["_seed"] or len(a["_rho_boot"]) != len(b["_rho_boot"]):
        return None
    ga, gb = a["_groups"], b["_groups"]
    if (ga is None) != (gb is None) or (ga is not None and not np.array_equal(ga, gb)):
        return None
    d = a["_rho_boot"] - b["_rho_boot"]
    return [float(np.nanpercentile(d, 2.5)), float(np.nanpercentile(d, 97.5))]


def within_groups(x: np.ndarray, y: np.ndarray, groups, min_rows: int = 5) -> dict:
    """Spearman rho of x with y inside each group (groups with ``min_rows`` defined rows where
    neither x nor y is constant): {group: rho}."""
    groups = np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        m = (groups == g) & np.isfinite(x) & np.isfinite(y)
        if m.sum() >= min_rows and np.std(x[m]) > 0 and np.std(y[m]) > 0:
            r = stats.spearmanr(x[m], y[m]).statistic
            if np.isfinite(r):
                out[g] = float(r)
    return out


def group_mean(per: dict, n_boot: int, seed: int = 2) -> dict | None:
    """Mean of per-group values with a 95% bootstrap interval over the groups."""
    vals = np.array(list(per.values()), float)
    if not len(vals):
        return None
    rng = np.random.default_rng(seed)
    bm = [np.mean(vals[rng.integers(0, len(vals), len(vals))]) for _ in range(n_boot)]
    return {"mean": float(np.mean(vals)), "ci": [float(np.percentile(bm, 2.5)), float(np.percentile(bm, 97.5))],
            "structures": int(len(vals))}


def group_mean_difference(a: dict, b: dict, n_boot: int, seed: int = 2) -> dict | None:
    """Mean over the groups present in both of a[g] - b[g], with a 95% interval from resampling
    those groups (the same groups for both: paired)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return group_mean({g: a[g] - b[g] for g in common}, n_boot, seed)


def median_difference(err: np.ndarray, sel_a: np.ndarray, sel_b: np.ndarray, n_boot: int, groups=None,
                      seed: int = SEED) -> dict | None:
    """median(err[sel_a]) - median(err[sel_b]) with a percentile-bootstrap 95% interval (groups
    resampled whole when given)."""
    ok = np.isfinite(err)
    a, b = sel_a & ok, sel_b & ok
    if not a.any() or not b.any():
        return None
    idx = np.flatnonzero(a | b)
    g = np.arange(len(idx)) if groups is None else np.asarray(groups)[idx]
    diffs = []
    for r in cluster_resamples(g, n_boot, seed):
        j = idx[r]
        ea, eb = err[j][a[j]], err[j][b[j]]
        if len(ea) and len(eb):
            diffs.append(np.median(ea) - np.median(eb))
    return {"a_n": int(a.sum()), "b_n": int(b.sum()), "a_median": float(np.median(err[a])),
            "b_median": float(np.median(err[b])), "diff": float(np.median(err[a]) - np.median(err[b])),
            "ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))] if diffs else None}


# --------------------------------------------------------------------------- the NLC band

def band_profile(log_nlc: np.ndarray, err: np.ndarray, edges: np.ndarray) -> list[dict]:
    """Per NLC bin: count, median test error, share of architectures within the good set."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = np.isfinite(log_nlc) & (log_nlc >= lo) & (log_nlc < hi) & np.isfinite(err)
        e = err[sel]
        out.append({"lo": float(math.exp(lo)), "hi": float(math.exp(hi)), "n": int(sel.sum()),
                    "median": float(np.median(e)) if len(e) else None,
                    "q25": float(np.percentile(e, 25)) if len(e) else None,
                    "q75": float(np.percentile(e, 75)) if len(e) else None})
    return out


#: The band search's defaults: an interval must hold this share of the architectures, and at least BAND_MIN_N.
BAND_MIN_SHARE = 1 / 4
BAND_MIN_N = 15


def best_band(nlc: np.ndarray, err: np.ndarray, grid: np.ndarray, min_n: int = BAND_MIN_N,
              n_boot: int = 400, seed: int = SEED, groups=None, min_share: float = BAND_MIN_SHARE) -> dict:
    """The NLC interval [a, b] (a < b from ``grid``) whose architectures have the lowest median test
    error among intervals holding at least ``min_n`` architectures *and* a share ``min_share`` of the
    defined ones, and a bootstrap distribution of a and b (``groups``: whole groups resampled, the
    share taken of each resample's rows; None: architectures resampled)."""
    ok = np.isfinite(nlc) & np.isfinite(err) & (nlc > 0)
    nlc, err = nlc[ok], err[ok]
    g = np.arange(len(nlc)) if groups is None else np.asarray(groups)[ok]

    def need_of(n: int) -> int:
        return max(min_n, int(n * min_share))

    def search(v, e):
        need = need_of(len(v))
        best = (math.inf, None, None)
        for i, a in enumerate(grid):
            for b in grid[i + 1:]:
                sel = (v >= a) & (v <= b)
                if sel.sum() < need:
                    continue
                med = float(np.median(e[sel]))
                # prefer the lowest median, then the widest interval among equals
                if med < best[0] - 1e-12 or (abs(med - best[0]) <= 1e-12 and (b / a) > (best[2] / best[1])):
                    best = (med, float(a), float(b))
        return best

    med, a, b = search(nlc, err)
    los, his = [], []
    for i in cluster_resamples(g, n_boot, seed):
        _, aa, bb = search(nlc[i], err[i])
        if aa is not None:
            los.append(aa)
            his.append(bb)
    def grid_ci(v):  # percentiles taken on the grid (the outer neighbouring draw), not between grid values
        return [float(np.percentile(v, 2.5, method="lower")), float(np.percentile(v, 97.5, method="higher"))]

    return {"lo": a, "hi": b, "median_error": med, "n": int(len(nlc)), "min_n": need_of(len(nlc)),
            "min_share": min_share,
            "lo_ci": grid_ci(los) if los else None,
            "hi_ci": grid_ci(his) if his else None,
            "lo_boot_median": float(np.median(los)) if los else None,
            "hi_boot_median": float(np.median(his)) if his else None}


#: Minimum shares of the band search whose bands :func:`band_sensitivity` compares.
BAND_SHARES = (1 / 2, 1 / 4, 1 / 8)


def band_sensitivity(nlc: np.ndarray, err: np.ndarray, grid: np.ndarray, shares=BAND_SHARES, n_boot: int = 400,
                     seed: int = SEED, groups=None, min_n: int = BAND_MIN_N) -> dict[float, dict]:
    """:func:`best_band` for each minimum share in ``shares``: {share: band}."""
    return {share: best_band(nlc, err, grid, min_n=min_n, n_boot=n_boot, seed=seed, groups=groups,
                             min_share=share) for share in shares}


def failure_rate_above(nlc: np.ndarray, err: np.ndarray, bad: float, grid: np.ndarray) -> list[dict]:
    """For each threshold t: share of architectures with NLC > t whose test error exceeds ``bad``."""
    ok = np.isfinite(nlc) & np.isfinite(err)
    out = []
    for t in grid:
        sel = ok & (nlc > t)
        out.append({"t": float(t), "n": int(sel.sum()),
                    "bad_share": float(np.mean(err[sel] > bad)) if sel.sum() else None})
    return out


# --------------------------------------------------------------------------- score variants

def band_dist(nlc: np.ndarray, lo: float, hi: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(0.0, np.maximum(np.log(lo / nlc), np.log(nlc / hi)))


def rank_normal(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1) (NaN kept), for rank-averaged combinations."""
    out = np.full_like(x, np.nan)
    ok = np.isfinite(x)
    out[ok] = (stats.rankdata(x[ok]) - 0.5) / ok.sum()
    return out
