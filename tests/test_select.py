"""zsad select: positions and candidates, fair initialization, marginal effects, bad input."""

import json

import numpy as np
import pytest

from helpers import run_cli
from zsad.spaces import nasbench201 as nb201
from zsad._errors import SpecError
from zsad.select import SelectOptions, contributions, minimum_samples, select
from zsad.select_space import EDGE_NAMES, critical_weight_var, load_select_space

# A linear MLP whose hidden activations are an identity (gain 1) or a contraction x -> 0.2 x (gain 0.2);
# the first activation (tanh or relu) is a second position.
BASE = """\
name: lin
input: {shape: [16], data: gaussian, std: 1.0}
init: {dist: normal, weight_std: 1.0, bias_std: 0.0}
layers:
  - {type: dense, features: 16}
  - {type: activation, fn: tanh}
  - type: block
    repeat: 2
    layers:
      - {type: dense, features: 16}
      - {type: activation, fn: identity}
  - {type: dense, features: 4}
"""
SPACE = """\
base: base.yaml
choices:
  layers.2.layers.1.shaping.gain: [1.0, 0.2]
  layers.1.fn: [tanh, relu]
"""
GAIN = "layers.2.layers.1.shaping.gain"


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("select")
    (d / "base.yaml").write_text(BASE)
    (d / "space.yaml").write_text(SPACE)
    return d / "space.yaml"


@pytest.fixture(scope="module")
def selection(space_file):
    return select(load_select_space(space_file), SelectOptions(batch=16, bootstrap=300))


def _cand(sel, position, choice):
    pos = next(p for p in sel.positions if p["name"] == position)
    return next(c for c in pos["candidates"] if c["choice"] == choice)


def test_positions_and_default_samples(space_file):
    s = load_select_space(space_file)
    assert [(p.name, p.choices) for p in s.positions] == [(GAIN, ("1.0", "0.2")), ("layers.1.fn", ("tanh", "relu"))]
    assert minimum_samples(s) == 60


def test_critical_weight_var():
    assert critical_weight_var({"fn": "relu"}, 0.0)[0] == pytest.approx(2.0, rel=1e-4)
    assert critical_weight_var({"fn": "identity", "shaping": {"gain": 0.2}}, 0.0)[0] == pytest.approx(25.0, rel=1e-4)


def test_fair_initialization_removes_the_contraction_handicap(selection):
    ident, contraction = _cand(selection, GAIN, "1.0"), _cand(selection, GAIN, "0.2")
    assert contraction["fair_init"]["kind"] == "critical"
    assert contraction["fair_init"]["weight_std"] == pytest.approx(5.0, rel=1e-4)
    # as is, the contraction's own Jacobian is 0.04 of the identity's, and the score penalizes it clearly
    assert contraction["spectrum_as_is"]["sigma2"] < 0.1
    assert contraction["as_is"]["marginal_high"] < 0 < ident["as_is"]["marginal_low"]
    # at criticality its sigma2 is ~1 and it is no longer worse than the identity (x -> 0.2 x after a dense layer
    # of weight_std 5 is the identity's network in distribution; only rounding tells them apart)
    assert 0.8 < contraction["sigma2"] < 1.25
    assert contraction["marginal_high"] > 0
    assert contraction["marginal"] > contraction["as_is"]["marginal_high"]
    assert selection.selected["arch"].startswith("lin[")


def test_marginals_agree_with_the_rows(selection):
    for run in ("fair", "as_is"):
        rows = selection.rows[run]
        scores = np.array([r["select_score"] for r in rows])
        for p, pos in enumerate(selection.space.positions):
            for i, choice in enumerate(pos.choices):
                chosen = [r["select_score"] for r in rows if f"{pos.name}={choice}" in r["arch"]]
                cand = _cand(selection, pos.name, choice)
                got = cand["marginal"] if run == "fair" else cand["as_is"]["marginal"]
                assert cand["count"] == len(chosen)
                assert got == pytest.approx(np.mean(chosen) - scores.mean(), abs=1e-12)
                assert cand["marginal_low"] <= cand["marginal"] <= cand["marginal_high"]
    # every sampled architecture is ok, so the per-row score is zsad rank's score on the sample
    from zsad.ranking import score_rows

    rows = selection.rows["fair"]
    ranked = score_rows([{k: r[k] for k in ("arch", "status", "nlc", "sigma2", "params", "flops")} for r in rows],
                        ("score",), ("nlc", "sigma2", "params", "flops"))
    assert [r["select_score"] for r in rows] == pytest.approx([r["score"] for r in ranked], abs=1e-9)
    # the selection is the best marginal per position
    for pos in selection.positions:
        best = max(pos["candidates"], key=lambda c: c["marginal"])
        assert best["selected"] and sum(c["selected"] for c in pos["candidates"]) == 1


def test_contributions_rank_bad_rows_last():
    rows = [{"status": "ok", "nlc": 2.0}, {"status": "degenerate", "nlc": None}, {"status": "ok", "nlc": 4.0}]
    c = contributions(rows, ("nonlin",))
    assert c["score"].argmin() == 1 and c["score"].argmax() == 2


def test_list_space_is_refused(tmp_path, cli_env):
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "list.yaml").write_text("archs: [a.yaml]\n")
    with pytest.raises(SpecError, match="one choice per position"):
        load_select_space(tmp_path / "list.yaml")
    res = run_cli("select", tmp_path / "list.yaml")
    assert res.exit_code == 2
    assert "one choice per position" in res.output and len(res.output.strip().splitlines()) == 1


def test_too_few_samples_is_refused_with_the_minimum(space_file, cli_env):
    res = run_cli("select", space_file, "--samples", "59")
    assert res.exit_code == 2
    assert "at least 60" in res.output and len(res.output.strip().splitlines()) == 1


def test_nas_bench_201_positions(tmp_path):
    (tmp_path / "nb.yaml").write_text("space: nas-bench-201\narchs: {sample: 3, seed: 0}\n")
    s = load_select_space(tmp_path / "nb.yaml")
    assert [p.name for p in s.positions] == ["0->1", "0->2", "1->2", "0->3", "1->3", "2->3"] == list(EDGE_NAMES)
    assert all(p.choices == nb201.OPS for p in s.positions)
    assert minimum_samples(s) == 150
    combo = (3, 1, 0, 4, 2, 1)
    assert s.notation(combo) == nb201.format_arch(tuple(nb201.OPS[i] for i in combo))
    assert s.item(combo, fair=True).arch == tuple(nb201.OPS[i] for i in combo)
    kinds = {op: s.fair_init(s.positions[0], i).kind for i, op in enumerate(nb201.OPS)}
    assert kinds == {"none": "parameter-free", "skip_connect": "parameter-free", "nor_conv_1x1": "invariant",
                     "nor_conv_3x3": "invariant", "avg_pool_3x3": "parameter-free"}
    assert not s.fair_changes_anything


def test_cli_table_json_and_plot(space_file, cli_env):
    out, plot = cli_env / "sel.json", cli_env / "sel.png"
    res = run_cli("select", space_file, "--batch", "16", "--no-fair", "--out", out, "--plot", plot)
    assert res.exit_code == 0, res.output
    assert "selected: lin[" in res.output and "★" in res.output
    doc = json.loads(out.read_text())
    assert [p["name"] for p in doc["positions"]] == [GAIN, "layers.1.fn"]
    cand = doc["positions"][0]["candidates"][1]
    assert {"choice", "marginal", "marginal_low", "marginal_high", "sigma2", "condition", "isometry_share",
            "fair_init"} <= set(cand)
    assert cand["fair_init"]["kind"] == "off" and doc["options"]["fair"] is False
    assert doc["selected"]["arch"].startswith("lin[") and doc["selected"]["score"] is not None
    assert plot.read_bytes()[:4] == b"\x89PNG"
