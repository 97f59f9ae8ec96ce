"""Development benchmark of the ranking score: NAS-Bench-201 splits and the ground-truth study.

Ranks the two NAS-Bench-201 development splits (``benchmarks/data``) with ``zsad rank``'s engine
and compares every single metric and every candidate score of ``zsad.ranking.CANDIDATES`` with
the trained accuracies; does the same on the ground-truth study's stored metrics and training
results; applies the selection rule of ``benchmarks/score_selection.md``; writes
``benchmarks/results/score_dev.json`` and ``benchmarks/RESULTS_SCORE.md``.

    python -m benchmarks.score_dev measure    # zsad rank on both splits (resumable; ~1 h on 2 cores)
    python -m benchmarks.score_dev report     # figures, selection and the report from stored results

Conventions: every figure is the Spearman rho (and Kendall tau-b) between the ranking that
``zsad rank --by X`` would give (rank 1 = best; degenerate rows last) and the trained accuracy,
so that positive is good everywhere (the study's test error is negated). 95% intervals are
percentile bootstraps (1000 resamples): of architectures for NAS-Bench-201, whose architectures
are independent; of whole structures for the study, whose 11 architectures per structure share
everything but their scalars.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.ground_truth.analysis import cluster_resamples, spearman_each

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
REPORT = HERE / "RESULTS_SCORE.md"
SPLITS = {
    "200ep": ("nb201_dev_200ep.csv", ("cifar10_val_200ep", "cifar100_val_200ep", "imagenet16_val_200ep")),
    "12ep": ("nb201_dev_12ep.csv", ("cifar10_test_12ep", "cifar100_test_12ep", "imagenet16_test_12ep")),
}
#: What the benchmark measures: the default score's inputs and the proxies compared with it.
#: grad_norm and snip are left out: about 25 s per NAS-Bench-201 architecture on 2 cores.
METRICS = ("nlc", "sigma2", "params", "flops", "naswot", "synflow", "jacob_cov")
SINGLE = ("nlc", "nlc_block", "sigma2", "params", "flops", "naswot", "synflow", "jacob_cov")
N_BOOT = 1000
SEED = 0


# --------------------------------------------------------------------------- measuring

def measure(split: str) -> Path:
    """``zsad rank`` (the engine, default options but the metrics above) on one split; resumable."""
    from zsad.rank import RankOptions, rank_space
    from zsad.space import load_space

    out = RESULTS / f"score_dev_{split}.csv"
    archs = measuring_order(split)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"nb201_dev_{split}.yaml"
        path.write_text("space: nas-bench-201\narchs:\n" + "".join(f"  - '{a}'\n" for a in archs))
        space = load_space(path)
        rank_space(space, RankOptions(metrics=METRICS), out=out, resume=out.exists(),
                   on_progress=lambda done, total: print(f"\r{split}: {done}/{total}", end="", file=sys.stderr))
    print(file=sys.stderr)
    return out


def measuring_order(split: str) -> list[str]:
    """The split's architectures in the order ``measure`` computes them: the file's order for the
    200-epoch split; a seeded random order for the 1,000-architecture split, so that a measurement
    stopped early holds a uniform random sample of it (the report then uses the longest measured
    prefix of this order, and says how many)."""
    name, _ = SPLITS[split]
    archs = [r["arch"] for r in csv.DictReader(open(DATA / name))]
    if split == "12ep":
        archs = [archs[i] for i in np.random.default_rng(SEED).permutation(len(archs))]
    return archs


# --------------------------------------------------------------------------- statistics

def ranking_of(rows: list[dict], by: str) -> np.ndarray:
    """``-rank`` of every row when ranked by ``by`` (a metric column, or a candidate id): higher is better."""
    from zsad import ranking

    if isinstance(by, tuple):  # a rank combination of ingredients (the ablation)
        scores = ranking.rank_combination(rows, by)
    elif by in ranking.CANDIDATES:
        scores = ranking.candidate_scores(rows, by)
    else:
        scores = [ranking.oriented(by, r.get(by)) if r.get("status") == "ok" else None for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
    out = np.empty(len(rows))
    for rank, i in enumerate(order, start=1):
        out[i] = -rank
    return out


def correlation(x: np.ndarray, y: np.ndarray, boot: list[np.ndarray]) -> dict:
    rho = float(stats.spearmanr(x, y).statistic)
    tau = float(stats.kendalltau(x, y).statistic)
    rhos = spearman_each(x, y, boot)
    return {"spearman": rho, "spearman_ci": [float(np.nanpercentile(rhos, 2.5)), float(np.nanpercentile(rhos, 97.5))],
            "kendall": tau}


def top_quality(score: np.ndarray, acc: np.ndarray) -> dict:
    """Accuracy of the top-1 and top-10 picks, and their percentile within the split (100 = best)."""
    order = np.argsort(-score, kind="stable")
    pct = lambda v: float(100.0 * np.mean(acc <= v))  # noqa: E731
    top10 = acc[order[:10]]
    return {"top1": float(acc[order[0]]), "top1_pct": pct(acc[order[0]]), "top10_mean": float(top10.mean()),
            "top10_median": float(np.median(top10)), "top10_median_pct": pct(float(np.median(top10))),
            "best": float(acc.max())}


# --------------------------------------------------------------------------- the two data sources

def nb201_rows(split: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    name, targets = SPLITS[split]
    acc = {r["arch"]: r for r in csv.DictReader(open(DATA / name))}
    path = RESULTS / f"score_dev_{split}.csv"
    measured = {}
    for r in csv.DictReader(open(path)):
        row = {"arch": r["arch"], "status": r["status"]}
        for k in SINGLE:
            row[k] = float(r[k]) if r.get(k) not in (None, "") else None
        measured[r["arch"]] = row
    order = measuring_order(split)
    prefix = next((i for i, a in enumerate(order) if a not in measured), len(order))
    if prefix == 0:
        raise SystemExit(f"{path}: nothing of {name} measured yet: run 'measure'")
    rows = [measured[a] for a in order[:prefix]]  # the longest measured prefix of the measuring order
    value = lambda text: float(text) if text.strip() else np.nan  # noqa: E731  (one ImageNet value is missing)
    return rows, {t: np.array([value(acc[r["arch"]][t]) for r in rows]) for t in targets}


def _block_from_profile(profile: list | None) -> float | None:
    if not profile or any(p is None or not p > 0 for p in profile):
        return None
    logs = np.log([1.0, *profile])
    return float(np.max(np.diff(logs)))


def study_rows() -> dict[str, tuple[list[dict], dict[str, np.ndarray], np.ndarray]]:
    """Per data set of the ground-truth study: rows in zsad's column names, minus the test error per
    learning rate, and the structure of each row."""
    from benchmarks.ground_truth.analysis import load_table

    table, info = load_table()
    out = {}
    for ds in sorted({r["dataset"] for r in table.rows}):
        rows, targets, groups = [], {}, []
        sub = table.subset(ds)
        for r in sub:
            rows.append({"arch": r["arch"], "status": r["status"] if r.get("nlc") is not None else "degenerate",
                         "nlc": r.get("nlc"), "sigma2": r.get("sigma2_mean"), "params": r.get("params"),
                         "flops": r.get("flops"), "naswot": r.get("naswot"), "synflow": r.get("synflow"),
                         "jacob_cov": r.get("jacob_cov"), "grad_norm": r.get("grad_norm"), "snip": r.get("snip"),
                         "nlc_block": _block_from_profile(r.get("profile"))})
            groups.append(r["structure"])
        for lr in info["lrs"]:
            targets[f"lr {lr:g}"] = -np.array([r[f"test_error@{lr:g}"] for r in sub])
        out[ds] = (rows, targets, np.array(groups))
    return out


# --------------------------------------------------------------------------- figures

def figures(rows: list[dict], targets: dict[str, np.ndarray], groups: np.ndarray, columns: list[str],
            top: bool) -> dict:
    boot = cluster_resamples(groups, N_BOOT, SEED)
    out = {}
    for by in columns:
        x = ranking_of(rows, by)
        key = by if isinstance(by, str) else "-".join(by)
        out[key] = {}
        for t, y in targets.items():
            keep = np.isfinite(y)  # rows with a trained accuracy for this target
            if keep.all():
                xs, ys, bs = x, y, boot
            else:
                xs, ys = x[keep], y[keep]
                bs = cluster_resamples(groups[keep], N_BOOT, SEED)
            fig = correlation(xs, ys, bs)
            fig["n"] = int(keep.sum())
            if top:
                fig.update(top_quality(xs, ys))
            out[key][t] = fig
    return out


def ablation(chosen: str) -> list:
    """The chosen candidate without each of its ingredients in turn, and each ingredient alone."""
    from zsad.ranking import CANDIDATES

    names = CANDIDATES[chosen]
    if len(names) < 2:
        return []
    return [tuple(n for n in names if n != drop) for drop in names] + [(n,) for n in names]


def within_structures(rows: list[dict], targets: dict[str, np.ndarray], groups: np.ndarray,
                      columns: list[str]) -> dict:
    """Mean Spearman rho within structures (ranks computed on the whole data set, as zsad rank would)."""
    out = {}
    for by in columns:
        x = ranking_of(rows, by)
        out[by] = {}
        for t, y in targets.items():
            rhos = []
            for g in np.unique(groups):
                m = groups == g
                if np.ptp(x[m]) > 0 and np.ptp(y[m]) > 0:
                    rhos.append(stats.spearmanr(x[m], y[m]).statistic)
            out[by][t] = float(np.mean(rhos)) if rhos else None
    return out


def select(nb: dict, study: dict) -> dict:
    """The rule of benchmarks/score_selection.md: the highest worst figure of seven; ties within 0.02
    go to fewer ingredients, then the lower id."""
    from zsad.ranking import CANDIDATES

    worst = {}
    for k in CANDIDATES:
        figs = [nb[k][t]["spearman"] for t in nb[k]]
        figs += [study[ds][k][t]["spearman"] for ds in study for t in study[ds][k]]
        worst[k] = min(figs)
    best = max(worst.values())
    tied = [k for k in CANDIDATES if worst[k] >= best - 0.02]
    chosen = min(tied, key=lambda k: (len(CANDIDATES[k]) if k != "K0" else 3, k))
    return {"worst": worst, "tied": tied, "chosen": chosen}


def compute() -> dict:
    from zsad.ranking import CANDIDATES

    cands = list(CANDIDATES)
    res: dict = {"candidates": {k: list(v) for k, v in CANDIDATES.items()}, "nb201": {}, "study": {},
                 "study_within": {}}
    for split in SPLITS:
        if not (RESULTS / f"score_dev_{split}.csv").exists():
            print(f"{split}: not measured yet (run 'measure'); left out of the report", file=sys.stderr)
            continue
        rows, targets = nb201_rows(split)
        res["nb201"][split] = figures(rows, targets, np.arange(len(rows)), [*SINGLE, *cands], top=True)
        res["nb201"][split]["_n"] = len(rows)
        res["nb201"][split]["_of"] = len(measuring_order(split))
        res["nb201"][split]["_ok"] = sum(r["status"] == "ok" for r in rows)
    for ds, (rows, targets, groups) in study_rows().items():
        cols = [*SINGLE, "grad_norm", "snip", *cands]
        res["study"][ds] = figures(rows, targets, groups, cols, top=False)
        res["study"][ds]["_n"] = len(rows)
        res["study_within"][ds] = within_structures(rows, targets, groups, cols)
    nb = {k: res["nb201"]["200ep"][k] for k in cands}
    study = {ds: {k: res["study"][ds][k] for k in cands} for ds in res["study"]}
    res["selection"] = select(nb, study)
    variants = ablation(res["selection"]["chosen"])
    res["ablation"] = {"variants": ["-".join(v) for v in variants], "nb201": {}, "study": {}}
    for split in res["nb201"]:
        rows, targets = nb201_rows(split)
        res["ablation"]["nb201"][split] = figures(rows, targets, np.arange(len(rows)), variants, top=True)
    for ds, (rows, targets, groups) in study_rows().items():
        res["ablation"]["study"][ds] = figures(rows, targets, groups, variants, top=False)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=("measure", "report", "all"))
    args = ap.parse_args(argv)
    if args.step in ("measure", "all"):
        for split in SPLITS:
            measure(split)
    if args.step in ("report", "all"):
        from benchmarks.score_dev_report import write_report

        res = compute()
        (RESULTS / "score_dev.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
        write_report(res, REPORT)
        print(f"selected: {res['selection']['chosen']}  (worst figures: "
              + ", ".join(f"{k} {v:+.3f}" for k, v in res["selection"]["worst"].items()) + ")")


if __name__ == "__main__":
    main()
