"""The ground-truth study's statistics (benchmarks/ground_truth/analysis.py) on hand-made data, and
its stored score columns against the formulas that label them. Pure numpy: no training, no programs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

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


# --------------------------------------------------------------------------- the CNN population

def _without(node, key):
    if isinstance(node, dict):
        return {k: _without(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_without(v, key) for v in node]
    return node


def test_cnn_population_builds_distinct_architectures_of_every_family():
    from benchmarks.ground_truth import cnn_population as C

    pop = C.population()
    assert [s for s, _ in pop] == [s for s, _ in C.population()]  # fixed by the seed
    structures = [s for s, _ in pop]
    assert len(set(structures)) == len(structures) == sum(C.FAMILY_STRUCTURES.values()) + sum(
        C.EXTENSION_STRUCTURES.values())
    assert {s.family for s in structures} == set(C.FAMILIES)
    mappings, ids = set(), set()
    for s, members in pop:
        assert len(members) == C.SETTINGS_PER_STRUCTURE
        assert [m.weight_std for m in members] == list(C.WEIGHT_STDS)
        skeletons = set()
        for m in members:
            arch = m.architecture((8, 8, 1))
            assert arch.name == m.id
            ids.add(m.id)
            mappings.add(repr(m.mapping((8, 8, 1))))
            # the members of a structure differ only in their scalars
            skeleton = {k: v for k, v in m.mapping((8, 8, 1)).items() if k not in ("name", "init")}
            skeletons.add(repr(_without(skeleton, "branch_scale")))
        assert len(skeletons) == 1
        if s.family == "cell":
            assert any(op.startswith("conv") for op in s.cell[1:])
            assert s.cell[2 if s.cell[0] == "A" else 5] == "none"
    n = sum(len(ms) for _, ms in pop)
    assert len(ids) == len(mappings) == n


def _avgpool3(x):
    """3x3 average pooling, stride 1, 'same' padding, the padding not counted ([H, W, C])."""
    h, w, _ = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(0, i - 1):i + 2, max(0, j - 1):j + 2].mean(axis=(0, 1))
    return out


@pytest.mark.parametrize("cell", [("A", "avgpool3x3", "none", "skip", "avgpool3x3", "skip", "avgpool3x3"),
                                  ("B", "avgpool3x3", "skip", "avgpool3x3", "avgpool3x3", "none", "skip"),
                                  ("A", "skip", "none", "none", "avgpool3x3", "avgpool3x3", "skip"),
                                  ("B", "none", "avgpool3x3", "skip", "skip", "none", "avgpool3x3")])
def test_cell_layers_compute_the_cell_dag(cell):
    """A cell without weights through zsad against the DAG evaluated directly: node j = sum over i < j of
    e_ij(node i), the cell's output node 3."""
    import jax
    import jax.numpy as jnp

    from benchmarks.ground_truth import cnn_population as C
    from zsad.arch.build import build
    from zsad.arch.spec import parse_architecture

    layers = C.cell_layers(cell, 2, "relu")
    net = build(parse_architecture({"name": "cell", "input": {"shape": [5, 4, 2]}, "layers": layers}))
    x = np.random.default_rng(0).normal(size=(3, 5, 4, 2)).astype(np.float32)
    variables = net.init(jax.random.key(0), net.scalars)
    got = np.asarray(net.apply(variables, net.scalars, jnp.asarray(x))[0])
    ops = dict(zip(("01", "02", "03", "12", "13", "23"), cell[1:]))
    edge = {"none": lambda v: 0.0 * v, "skip": lambda v: v, "avgpool3x3": _avgpool3}
    for b in range(len(x)):
        nodes = [x[b].astype(np.float64)]
        for j in (1, 2, 3):
            nodes.append(sum(edge[ops[f"{i}{j}"]](nodes[i]) for i in range(j)))
        np.testing.assert_allclose(got[b], nodes[3], rtol=1e-5, atol=1e-5)


def test_cell_layers_refuse_cells_outside_the_templates():
    from benchmarks.ground_truth import cnn_population as C

    with pytest.raises(ValueError):
        C.cell_layers(("A", "skip", "skip", "skip", "skip", "skip", "skip"), 2, "relu")  # edge 0->2 used
    with pytest.raises(ValueError):
        C.cell_layers(("B", "none", "skip", "skip", "none", "none", "skip"), 2, "relu")  # x + x: no branch
    assert C.cell_layers(("A", "none", "none", "none", "conv3x3", "skip", "skip"), 2, "relu") is None  # zero


def test_a_resumed_run_plans_only_the_unfinished_structures(tmp_path, monkeypatch):
    from benchmarks.ground_truth import cnn_population as C
    from benchmarks.ground_truth import runner as R
    from benchmarks.ground_truth.train import LEARNING_RATES

    monkeypatch.setitem(R.POPULATIONS, "cnn", (R.POPULATIONS["cnn"][0], tmp_path))
    pop = C.population()
    tasks, skipped = R.plan(["digits", "mnist"], population="cnn")
    assert skipped == 0 and len(tasks) == len(pop)
    (first, members), (second, members2) = pop[0], pop[1]
    # the first structure complete on digits; the second has metrics but lacks one learning rate's training
    R.append_jsonl(tmp_path / "metrics.jsonl", [{"arch": m.id, "dataset": "digits"} for m in members + members2])
    R.append_jsonl(tmp_path / "train.jsonl", [{"arch": m.id, "dataset": "digits", "lr": lr} for m in members
                                              for lr in LEARNING_RATES])
    R.append_jsonl(tmp_path / "train.jsonl", [{"arch": m.id, "dataset": "digits", "lr": LEARNING_RATES[0]}
                                              for m in members2])
    with open(tmp_path / "train.jsonl", "a") as fh:
        fh.write('{"arch": "torn')  # an interrupted write
    tasks, skipped = R.plan(["digits", "mnist"], population="cnn")
    todo = {s.id: t for s, t in tasks}
    assert skipped == 1 and len(tasks) == len(pop)
    assert todo[first.id] == {"mnist": ("metrics", "train")}
    assert todo[second.id] == {"digits": ("train",), "mnist": ("metrics", "train")}
    tasks, skipped = R.plan(["digits"], population="cnn")
    assert skipped == 1 and first.id not in {s.id for s, _ in tasks}


# --------------------------------------------------------------------------- per-family figures

def _synthetic_case(n_struct=6, per=4, seed=0):
    rng = np.random.default_rng(seed)
    acc = rng.permutation(np.linspace(0.5, 0.95, n_struct * per))
    groups = np.repeat([f"s{i}" for i in range(n_struct)], per)
    rows = [{"arch": f"a{i}", "family": "cnn", "status": "ok", "nlc": float(np.exp(a)), "params": float(10 - a),
             "flops": 100.0, "sigma2": 1.0} for i, a in enumerate(acc)]
    rows[0]["status"] = "degenerate"  # ranks last on every ranking
    return rows, acc, groups


def test_case_figures_known_answers():
    from benchmarks.ground_truth import families as F

    rows, acc, groups = _synthetic_case()
    ranks = [("ln NLC (higher)", ("nonlin",)), ("ln params", ("capacity",)), ("flat", ("complexity",))]
    figs = F.case_figures(rows, acc, groups, ranks, n_boot=50)
    ok = np.array([r["status"] == "ok" for r in rows])
    # ln NLC orders the ok rows exactly as the accuracy; the degenerate row is last
    expect = stats.spearmanr(np.where(ok, acc, -1.0), acc).statistic
    assert figs["ln NLC (higher)"]["spearman"] == pytest.approx(expect)
    assert figs["ln params"]["spearman"] == pytest.approx(stats.spearmanr(np.where(ok, -acc, -9.0), acc).statistic)
    assert figs["ln NLC (higher)"]["undefined"] == 1
    best = int(np.argmax(acc))
    assert figs["ln NLC (higher)"]["top1"] == acc[best] and figs["ln NLC (higher)"]["top1_pct"] == 100.0
    # a constant ranking picks, among its ties, the worst: no luck from the order of the rows
    assert figs["flat"]["top1"] == np.min(acc[ok])
    d = figs["ln NLC (higher)"]
    assert d["vs_params"] == pytest.approx(d["spearman"] - figs["ln params"]["spearman"])
    assert d["vs_params_ci"][0] <= d["vs_params"] <= d["vs_params_ci"][1]
    assert figs["ln params"]["vs_params"] == 0.0
    assert d["structures"] == 6 and d["n"] == len(rows)
    # within structures: over the rows the ranking defines (the degenerate row is left out of its structure)
    assert d["within"]["mean"] == pytest.approx(1.0) and d["within"]["structures"] == 6
    assert figs["ln params"]["within"]["mean"] == pytest.approx(-1.0)
    assert figs["flat"]["within"] is None  # constant inside every structure


def test_within_figure_uses_defined_rows_of_large_enough_structures():
    from benchmarks.ground_truth import families as F

    x = np.array([1.0, 2.0, 3.0, -np.inf, -np.inf, 5.0, 4.0, 3.0, 1.0, 2.0])
    y = np.array([0.1, 0.2, 0.3, 0.0, 0.9, 0.1, 0.2, 0.3, 0.5, 0.6])
    groups = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 3 + ["d"] * 2)
    w = F.within_figure(x, y, groups, n_boot=200)
    # a: rho +1; b: no defined row; c: rho -1; d: two rows only (fewer than WITHIN_MIN)
    assert F.WITHIN_MIN == 3 and w["structures"] == 2 and w["mean"] == pytest.approx(0.0)
    assert w["ci"][0] >= -1.0 and w["ci"][1] <= 1.0 and w["ci"][0] < 0 < w["ci"][1]


def test_band_ranking_is_minus_the_log_distance():
    from benchmarks.ground_truth import families as F

    rows = [{"status": "ok", "nlc": v} for v in (1.0, 1.3, 2.8)] + [{"status": "degenerate", "nlc": None}]
    got = F.scores(rows, F.Band(1.2, 1.4))
    np.testing.assert_allclose(got[:3], [-np.log(1.2), 0.0, -np.log(2.0)])
    assert got[3] == -np.inf and F.Band(1.2, 1.4).label() == "NLC band [1.2, 1.4]"


def test_band_rankings_read_the_sensitivity_bands(tmp_path):
    from benchmarks.ground_truth import families as F
    from zsad.verdict import HEALTHY_MAX, LINEAR_MAX

    path = tmp_path / "summary.json"
    path.write_text('{"band_sensitivity_pooled": {"0.125": [1.2, 1.3], "0.5": [1.1, 1.5]}}')
    got = F.band_rankings(path)
    assert [b for _, b in got] == [(LINEAR_MAX, HEALTHY_MAX), (1.1, 1.5), (1.2, 1.3)]
    assert got[1][0] == "NLC band [1.1, 1.5] (minimum share 1/2)" and got[2][0].endswith("(minimum share 1/8)")
    assert len(F.band_rankings(tmp_path / "missing.json")) == 1


def test_subfamily_figures_rank_over_the_population():
    from benchmarks.ground_truth import families as F

    rows, acc, groups = _synthetic_case(n_struct=8)
    for i, r in enumerate(rows):
        r["family"] = "plain" if groups[i] in ("s0", "s1", "s2", "s3") else "cell"
    figs = F.subfamily_figures(rows, acc, groups, [("ln NLC (higher)", ("nonlin",)), ("flat", ("complexity",))],
                               n_boot=50)
    assert set(figs) == {"plain", "cell"} and figs["cell"]["structures"] == 4 and figs["cell"]["n"] == 16
    assert figs["cell"]["ln NLC (higher)"]["spearman"] == pytest.approx(1.0)  # every cell row ok, exact order
    m = np.isin(groups, ["s0", "s1", "s2", "s3"])
    ok = np.array([r["status"] == "ok" for r in rows])
    expect = stats.spearmanr(np.where(ok, acc, -1.0)[m], acc[m]).statistic
    assert figs["plain"]["ln NLC (higher)"]["spearman"] == pytest.approx(expect)
    lo, hi = figs["plain"]["ln NLC (higher)"]["spearman_ci"]
    assert lo <= hi <= 1.0
    # 'flat' ranks only the degenerate row (a plain row) apart from the rest: constant on the cell rows
    assert figs["cell"]["flat"] is None


def test_join_rows_keeps_only_architectures_trained_at_every_rate():
    from benchmarks.ground_truth import families as F

    metrics = [{"arch": a, "structure": "s", "family": "plain", "dataset": "digits", "metrics": {"status": "ok",
                "nlc": 1.5}} for a in ("a", "b", "c")]
    train = [{"arch": "a", "dataset": "digits", "lr": 0.001, "test_error": 0.1},
             {"arch": "a", "dataset": "digits", "lr": 0.01, "test_error": 0.2},
             {"arch": "b", "dataset": "digits", "lr": 0.001, "test_error": 0.3},
             {"arch": "c", "dataset": "digits", "lr": 0.001, "test_error": 0.4},
             {"arch": "c", "dataset": "digits", "lr": 0.01, "test_error": 0.5}]
    rows, acc, groups = F.join_rows(metrics, train)["digits"]
    assert [r["arch"] for r in rows] == ["a", "c"]
    np.testing.assert_allclose(acc["lr 0.001"], [0.9, 0.6])
    np.testing.assert_allclose(acc["lr 0.01"], [0.8, 0.5])
    assert list(groups) == ["s", "s"] and rows[0]["family"] == "plain"


def test_family_rows_pool_both_families():
    from benchmarks.ground_truth import families as F

    a = ([{"arch": "m"}], {"lr 0.01": np.array([0.5])}, np.array(["g1"]))
    b = ([{"arch": "c"}, {"arch": "d"}], {"lr 0.01": np.array([0.6, 0.7])}, np.array(["g2", "g2"]))
    fam = F.family_rows({"digits": a, "mnist": a}, {"digits": b})
    assert set(fam["both"]) == {"digits"}
    rows, acc, groups = fam["both"]["digits"]
    assert [r["arch"] for r in rows] == ["m", "c", "d"] and list(groups) == ["g1", "g2", "g2"]
    np.testing.assert_allclose(acc["lr 0.01"], [0.5, 0.6, 0.7])


def test_prior_columns_must_match_the_constants_they_are_labelled_with():
    from benchmarks.ground_truth import analysis as A
    from benchmarks.ground_truth import metrics as M

    nlc, params = 7.5, 1000.0
    good = {"nlc": nlc, "params": params, "band_distance": float(np.log(nlc / M.PRIOR_BAND[1])),
            "default_score": float(-np.log(nlc / M.PRIOR_BAND[1]) + M.PRIOR_CAPACITY_WEIGHT * 3.0)}
    assert A.derived(good, {"arch": "a", "depth": 2})["band_distance"] == good["band_distance"]
    # the same NLC scored against another band (e.g. zsad's verdict band of the day) is refused
    moved = {**good, "band_distance": float(np.log(nlc / 1.4))}
    with pytest.raises(ValueError, match="a: stored band_distance"):
        A.derived(moved, {"arch": "a", "depth": 2})
    A.derived({"nlc": None, "params": params}, {"arch": "b", "depth": 2})  # undefined NLC: nothing stored, fine


def test_unrolled_writes_out_every_repeat():
    from benchmarks.ground_truth.metrics import unrolled

    conv = {"type": "conv", "features": 4, "kernel": 3, "padding": "same"}
    layers = [{"type": "residual", "repeat": 3, "branch": [conv, {"type": "block", "repeat": 2, "layers": [conv]}],
               "branch_scale": 0.3}, {"type": "dense", "features": 10}]
    got = unrolled(layers)
    assert [x["type"] for x in got] == ["residual"] * 3 + ["dense"]
    assert all("repeat" not in x for x in got) and got[0]["branch"][1:] == [{"type": "block", "layers": [conv]}] * 2
    assert layers[0]["repeat"] == 3  # the input is left as it was
    got[0]["branch"][0]["features"] = 99
    assert got[1]["branch"][0]["features"] == 4  # copies, not shared


def test_cnn_population_extension_leaves_the_first_draw_alone():
    from benchmarks.ground_truth import cnn_population as C

    first = C.population(extension=False)
    pop = C.population()
    assert [s for s, _ in pop[:len(first)]] == [s for s, _ in first]
    more = [s for s, _ in pop[len(first):]]
    assert len(more) == sum(C.EXTENSION_STRUCTURES.values()) and len({s.id for s, _ in pop}) == len(pop)
    assert {s.family for s in more} == set(C.EXTENSION_STRUCTURES)


def test_rank_metrics_count_flops_of_repeated_blocks_on_the_unrolled_network():
    from benchmarks.ground_truth.metrics import rank_metrics
    from zsad.arch.spec import parse_architecture
    from zsad.rank import RankOptions

    d, a = {"type": "dense", "features": 8}, {"type": "activation", "fn": "tanh"}
    head = {"type": "dense", "features": 3}

    def arch(layers):
        return parse_architecture({"name": "net", "input": {"shape": [5]}, "layers": layers})

    # two repeats: written out, a run of three equal (dense, tanh) pairs, too short for zsad to fold into a loop
    repeated = arch([d, a, {"type": "block", "repeat": 2, "layers": [d, a]}, head])
    by_hand = arch([d, a, d, a, d, a, head])
    opts = RankOptions(seeds=1, batch=8, metrics=("params", "flops", "naswot"))
    plain = rank_metrics([repeated], options=opts)[0]
    fixed = rank_metrics([repeated], flops_archs=[by_hand], options=opts)[0]
    reference = rank_metrics([by_hand], options=opts)[0]
    # zsad counts the unrolled network too, so the unrolled copy changes nothing (older versions counted a loop once)
    assert fixed["flops"] == reference["flops"] == plain["flops"] > 0
    # only the flops column comes from the unrolled copy; the rest is the network's own (the same network)
    assert fixed["params"] == reference["params"] and fixed["naswot"] == pytest.approx(reference["naswot"], rel=1e-5)
    assert fixed["rank_options"]["seeds"] == 1
