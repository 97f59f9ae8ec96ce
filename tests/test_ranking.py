"""The ranking score and the rank mathematics (zsad.ranking), on hand-made rows."""

import math

import numpy as np
import pytest

from zsad import ranking
from zsad.ranking import (
    CANDIDATES, DEFAULT_CANDIDATE, INGREDIENTS, average_ranks, band_distance, default_ingredients, legacy_score,
    oriented, rank_combination, score_rows,
)


def ok(**kw):
    return {"status": "ok", **kw}


def test_band_distance():
    from zsad.verdict import HEALTHY_MAX, LINEAR_MAX

    middle = math.sqrt(LINEAR_MAX * HEALTHY_MAX)
    assert band_distance(LINEAR_MAX) == band_distance(middle) == band_distance(HEALTHY_MAX) == 0.0
    assert band_distance(2 * HEALTHY_MAX) == pytest.approx(math.log(2))
    assert band_distance(LINEAR_MAX / 2) == pytest.approx(math.log(2))


def test_average_ranks_ties_and_nulls():
    assert average_ranks([1.0, 1.0, 1.0]) == [2.0, 2.0, 2.0]
    assert average_ranks([2.0, None, 1.0, None]) == [1.0, 3.5, 2.0, 3.5]
    assert average_ranks([]) == []


def test_rank_combination_by_hand():
    rows = [ok(nlc=2.0, params=10), ok(nlc=8.0, params=30), ok(nlc=4.0, params=20)]
    # nonlin ranks (1 = worst): 1, 3, 2; capacity: 1, 3, 2  ->  mean of ln(r / 3)
    got = rank_combination(rows, ("nonlin", "capacity"))
    assert got == pytest.approx([math.log(1 / 3), 0.0, math.log(2 / 3)])
    # ties average their ranks: two equal NLCs share rank 1.5 of 3
    rows[1]["nlc"] = 2.0
    got = rank_combination(rows, ("nonlin",))
    assert got == pytest.approx([math.log(1.5 / 3), math.log(1.5 / 3), 0.0])


def test_rank_combination_is_independent_of_each_metrics_scale():
    rng = np.random.default_rng(0)
    rows = [ok(nlc=float(n), sigma2=float(s), params=int(p)) for n, s, p in
            zip(rng.uniform(1, 300, 40), np.exp(rng.normal(0, 3, 40)), rng.integers(10**4, 10**7, 40))]
    names = ("nonlin", "scale_full", "capacity")
    base = rank_combination(rows, names)
    # any increasing map of a metric (here a power and a factor) leaves the score unchanged
    moved = [{**r, "nlc": 5.0 * r["nlc"] ** 3, "params": r["params"] * 1000} for r in rows]
    assert rank_combination(moved, names) == pytest.approx(base)
    # sigma2 enters through |ln sigma2|: sigma2 and 1/sigma2 are equally far from isometry
    flipped = [{**r, "sigma2": 1.0 / r["sigma2"]} for r in rows]
    assert rank_combination(flipped, names) == pytest.approx(base)


def test_missing_metrics_rank_at_the_bottom_and_degenerate_rows_last():
    rows = [ok(nlc=3.0, params=100, naswot=None), ok(nlc=2.0, params=100, naswot=5.0),
            {"status": "degenerate", "nlc": None, "params": 10**9}, ok(nlc=1.5, params=100, naswot=4.0)]
    scores = rank_combination(rows, ("naswot",))
    assert scores[2] is None
    assert scores[0] == pytest.approx(math.log(1 / 3))  # undefined naswot: the bottom of the ingredient
    out = score_rows(rows, ("score",), metrics=("nlc", "params"))
    assert out[2]["score"] is None and out[2]["rank"] == 4  # degenerate: last, whatever its params
    assert [r["rank"] for r in out] == [1, 2, 4, 3]  # ties in params: the NLC decides
    # a row whose NLC is undefined (ok status, e.g. constant in one seed) ranks at the bottom of the NLC
    rows[0]["nlc"] = None
    out = score_rows(rows, ("score",), metrics=("nlc", "params"))
    assert out[0]["rank"] == 3


def test_sigma2_undefined_or_vanished_is_the_worst_scale():
    rows = [ok(sigma2=None), ok(sigma2=0.0), ok(sigma2=1e-300), ok(sigma2=1.0), ok(sigma2=1e3)]
    values = [INGREDIENTS["scale_full"].value(r) for r in rows]
    assert values[0] == values[1] < values[2] < values[4] < values[3] == 0.0


def test_default_score_uses_the_computed_columns_only():
    names = CANDIDATES[DEFAULT_CANDIDATE]
    assert default_ingredients() == names
    cols = {INGREDIENTS[n].column for n in names}
    only_nlc = default_ingredients(["nlc"])
    assert all(INGREDIENTS[n].column == "nlc" for n in only_nlc) and (("nlc" in cols) == bool(only_nlc))
    rows = [ok(nlc=2.0, params=10, sigma2=1.0, naswot=1.0, flops=5, nlc_block=0.1),
            ok(nlc=4.0, params=5, sigma2=50.0, naswot=2.0, flops=7, nlc_block=0.2)]
    out = score_rows(rows, ("score",), metrics=("nlc", "sigma2", "params", "flops", "naswot"))
    assert [r["score"] for r in out] == pytest.approx(rank_combination(rows, names))
    formula = ranking.score_formula(("nlc", "params"))
    left_out = [n for n in names if INGREDIENTS[n].column not in ("nlc", "nlc_std", "nlc_block", "params")]
    assert ("Left out" in formula) == bool(left_out)


def test_score_rows_single_and_aggregate():
    from zsad.verdict import HEALTHY_MAX, LINEAR_MAX

    inside = math.sqrt(LINEAR_MAX * HEALTHY_MAX)
    rows = [
        ok(arch="a", nlc=inside, params=100, naswot=1.0),
        ok(arch="b", nlc=inside, params=1000, naswot=3.0),
        ok(arch="c", nlc=4 * HEALTHY_MAX, params=10**6, naswot=2.0),
        {"arch": "d", "status": "degenerate", "nlc": None, "params": 10**7, "naswot": None},
        ok(arch="e", nlc=1.0, params=100, naswot=None),
    ]
    out = score_rows(rows, ("naswot",))
    assert [r["rank"] for r in out] == [3, 1, 2, 4, 5]  # nulls last, in the space's order
    out = score_rows(rows, ("params", "nlc"))
    # params ranks (ok rows a,b,c,e): c=1, b=2, a=e=3.5; nlc (band): a=b=1.5, e=3, c=4
    assert [r["score"] for r in out] == [-2.5, -1.75, -2.5, None, -3.25]
    assert [r["rank"] for r in out] == [2, 1, 3, 5, 4]  # a and c tie: the space's order


def test_legacy_score_penalizes_a_vanishing_jacobian():
    healthy = ok(nlc=1.3, params=1000, sigma2=0.5)  # inside the NLC band
    vanishing = {**healthy, "sigma2": 1e-6}  # |ln| = 13.8, ln 100 = 4.6: penalty 4.6
    exploding = {**healthy, "sigma2": 1e6}
    assert legacy_score(healthy) == pytest.approx(0.03)
    assert legacy_score(vanishing) == pytest.approx(0.03 - 0.5 * (math.log(1e6) - math.log(100)))
    assert legacy_score(exploding) == pytest.approx(legacy_score(vanishing))
    no_column = {k: v for k, v in healthy.items() if k != "sigma2"}
    assert legacy_score(no_column) == pytest.approx(0.03)  # --metrics without sigma2
    worst = legacy_score({**healthy, "sigma2": 0.0})
    assert legacy_score({**healthy, "sigma2": None}) == pytest.approx(worst)
    assert worst < legacy_score({**healthy, "sigma2": 1e-300})
    assert oriented("sigma2", 0.0) == pytest.approx(math.log(np.finfo(np.float64).tiny))
    assert oriented("sigma2", 4.0) == pytest.approx(oriented("sigma2", 0.25))


def test_candidate_scores_k0_is_the_legacy_formula():
    rows = [ok(nlc=1.3, params=100, sigma2=1.0), ok(nlc=5.0, params=10**6, sigma2=1e-8)]
    assert ranking.candidate_scores(rows, "K0") == [legacy_score(r) for r in rows]
    for k, names in CANDIDATES.items():
        assert all(n in INGREDIENTS for n in names), k


def test_the_default_and_its_evidence_are_those_of_the_committed_benchmark():
    """DEFAULT_CANDIDATE is what the selection rule chose on the stored figures, and EVIDENCE quotes them."""
    import json
    from pathlib import Path

    res = json.loads((Path(__file__).parent.parent / "benchmarks/results/score_dev.json").read_text())
    assert res["selection"]["chosen"] == DEFAULT_CANDIDATE
    assert res["candidates"] == {k: list(v) for k, v in CANDIDATES.items()}
    figs = res["nb201"]["200ep"][DEFAULT_CANDIDATE]
    quoted = {"nas-bench-201 cifar10": figs["cifar10_val_200ep"]["spearman"],
              "nas-bench-201 cifar100": figs["cifar100_val_200ep"]["spearman"],
              "nas-bench-201 imagenet16-120": figs["imagenet16_val_200ep"]["spearman"]}
    for ds, cases in res["study"].items():
        for t, fig in cases[DEFAULT_CANDIDATE].items():
            quoted[f"study {ds} {t}"] = fig["spearman"]
    assert ranking.EVIDENCE == {k: round(v, 2) for k, v in quoted.items()}
