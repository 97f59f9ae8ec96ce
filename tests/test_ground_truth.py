"""The ground-truth study's statistics (benchmarks/ground_truth/analysis.py) on hand-made data, and
its stored score columns against the formulas that label them. Pure numpy: no training, no programs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.ground_truth import analysis as A
from benchmarks.ground_truth import metrics as M

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "ground_truth" / "results"


def _groups():
    # unequal group sizes, labels not in row order
    return np.array(["c"] * 3 + ["a"] * 5 + ["b"] * 1 + ["d"] * 4 + ["a"] * 2)


def test_cluster_resamples_take_whole_groups():
    groups = _groups()
    labels = np.unique(groups)
    size = {g: int((groups == g).sum()) for g in labels}
    boots = A.cluster_resamples(groups, 200, seed=3)
    assert len(boots) == 200
    drawn_counts = []
    for b in boots:
        counts = np.bincount(b, minlength=len(groups))
        drawn = {}
        for g in labels:
            c = counts[groups == g]
            # every row of a group appears equally often: the group was drawn whole, k times
            assert np.all(c == c[0])
            drawn[g] = int(c[0])
        assert sum(drawn.values()) == len(labels)  # as many groups drawn as there are
        assert len(b) == sum(k * size[g] for g, k in drawn.items())
        drawn_counts.append(drawn)
    # the draws vary: some group is missing from some resample and repeated in another
    assert any(0 in d.values() for d in drawn_counts) and any(max(d.values()) > 1 for d in drawn_counts)


def test_cluster_resamples_with_one_row_per_group_is_the_ordinary_bootstrap():
    n = 17
    boots = A.cluster_resamples(np.arange(n), 50, seed=5)
    assert np.array_equal(np.stack(boots), A.bootstrap_indices(n, 50, seed=5))


def test_correlation_groups_and_pairing():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 11)
    shared = np.repeat(rng.normal(size=20), 11)  # a structure-level effect common to x and y
    x = shared + 0.3 * rng.normal(size=len(groups))
    y = shared + 0.3 * rng.normal(size=len(groups))
    z = x + 0.5 * rng.normal(size=len(groups))
    plain = A.correlation(x, y, 300, kendall=False)
    clustered = A.correlation(x, y, 300, kendall=False, groups=groups)
    assert plain["spearman"] == clustered["spearman"]
    width = lambda c: c["spearman_ci"][1] - c["spearman_ci"][0]  # noqa: E731
    assert width(clustered) > width(plain)  # correlated rows carry less information than independent ones
    other = A.correlation(z, y, 300, kendall=False, groups=groups)
    assert A.paired_difference(clustered, other) is not None
    assert A.paired_difference(clustered, plain) is None  # resampled differently: not paired
    assert A.paired_difference(clustered, A.correlation(z, y, 300, kendall=False, groups=groups, seed=9)) is None


def test_band_sensitivity_gives_a_band_per_share():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(24), 10)
    nlc = np.exp(rng.uniform(0.0, math.log(4.0), size=len(groups)))
    err = np.abs(np.log(nlc / 1.4)) + 0.05 * rng.random(len(groups))
    grid = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 3.0, 4.0])
    bands = A.band_sensitivity(nlc, err, grid, n_boot=20, groups=groups)
    assert list(bands) == list(A.BAND_SHARES)
    for share, b in bands.items():
        assert b["min_share"] == share
        assert b["lo"] is not None and b["lo"] < b["hi"]
        assert b["min_n"] == max(15, int(len(nlc) * share))
        inside = int(((nlc >= b["lo"]) & (nlc <= b["hi"])).sum())
        assert inside >= b["min_n"]
        assert b["lo_ci"][0] <= b["lo_ci"][1] and b["hi_ci"][0] <= b["hi_ci"][1]
        assert set(b["lo_ci"]) <= set(grid) and set(b["hi_ci"]) <= set(grid)
    # the main table's search is the share 1/4
    main = A.best_band(nlc, err, grid, n_boot=20, groups=groups)
    assert (main["lo"], main["hi"], main["lo_ci"], main["hi_ci"]) == (
        bands[0.25]["lo"], bands[0.25]["hi"], bands[0.25]["lo_ci"], bands[0.25]["hi_ci"])


def test_stored_score_columns_are_the_prior_formulas():
    path = RESULTS / "metrics.jsonl"
    if not path.exists():
        pytest.skip("the study's results are not stored")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    checked = 0
    for r in rows:
        m = r["metrics"]
        if m.get("nlc"):
            assert m["band_distance"] == pytest.approx(M.prior_band_distance(m["nlc"]), rel=1e-9, abs=1e-12)
            assert m["default_score"] == pytest.approx(M.prior_score(m["nlc"], m.get("params")), rel=1e-9,
                                                       abs=1e-12)
            checked += 1
        else:
            assert m.get("band_distance") is None and m.get("default_score") is None
    assert checked > 0
    assert M.PRIOR_BAND == (1.2, 5.0)
