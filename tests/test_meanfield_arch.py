"""Mean-field propagation through architecture files (zsad.meanfield_arch) vs measured NLC."""

import copy
import json
import math

import numpy as np
import pytest

import zsad
from zsad.arch.spec import named_layers
from zsad.meanfield_arch import SUMMARY_KEYS, input_statistics, meanfield_profile, meanfield_summary

from helpers import arch_from, mlp


def _batch(arch, n=256, seed=0):
    return zsad.load_inputs(arch.input, n, seed=seed)


# Statistical test (finite width vs mean field). Width 2048, depth 5, batch 256, 2 seeds x 2
# tangents: the NLC estimator's spread over initializations and permutations is 1-2% per seed
# (measured), the finite-width bias at this width under 1% (see the width study in
# benchmarks/meanfield_width.py), so 5% leaves room for both at fixed seeds.
@pytest.mark.parametrize("fn, weight_var, bias_var", [("tanh", 2.5, 0.05), ("relu", 2.0, 0.0)], ids=["tanh", "relu"])
def test_predicted_nlc_matches_measured_wide_mlp(fn, weight_var, bias_var):
    arch = arch_from(mlp(fn, depth=5, width=2048, d_in=256, weight_std=math.sqrt(weight_var),
                         bias_std=math.sqrt(bias_var)))
    report = zsad.score_architecture(arch, zsad.ScoreOptions(seeds=2, batch=256, spectrum=False))
    summary = json.loads(json.dumps(report.to_json()))["meanfield"]  # the section of `zsad score --json`
    assert summary["nlc_predicted"] == meanfield_summary(arch, _batch(arch))["nlc_predicted"]
    assert summary["nlc_predicted"] == pytest.approx(report.nlc_mean, rel=0.05)
    assert summary["nlc_predicted"] > 1.5  # a nonlinear regime, not a trivial agreement at NLC ~ 1
    assert summary["hidden"]["activation"] == fn and summary["hidden"]["count"] == 5


def test_relu_critical_summary_closed_form():
    arch = arch_from(mlp("relu", depth=5, width=64, d_in=256, weight_std=math.sqrt(2.0)))
    x = _batch(arch)
    s = meanfield_summary(arch, x)
    assert s["phase"] == "critical" and s["chi1"] == pytest.approx(1.0, abs=1e-5)
    # every q is fixed at (2, 0); the depth scales are infinite: None with a reason, JSON-safe
    assert s["q_star"] is None and "every q" in s["q_star_reason"]
    assert s["xi_c"] is None and "edge of chaos" in s["xi_c_reason"]
    json.dumps(s, allow_nan=False)
    # C_f'(1) = 1 at (2, 0): the prediction is sqrt((1 - c_in)/(1 - C^5(c_in))), SPEC: 1.946 at c = 0
    assert s["nlc_predicted"] == pytest.approx(1.946, abs=0.01)
    assert math.prod(row["chi"] for row in s["layers"]) == pytest.approx(1.0, abs=1e-4)


def test_profile_rows_follow_layer_names():
    arch = arch_from(mlp("tanh", depth=3, width=32, d_in=16, weight_std=1.3, bias_std=0.2))
    rows = meanfield_profile(arch, _batch(arch, 64))
    assert [r["layer"] for r in rows] == [name for name, _ in named_layers(arch.layers)]
    assert rows[0]["nlc_predicted"] == pytest.approx(1.0, abs=1e-5)  # the first dense layer is affine
    assert all(r["q"] > 0 and -1 <= r["c_mean"] <= 1 and r["chi"] > 0 for r in rows)
    nlcs = [r["nlc_predicted"] for r in rows]
    assert all(b >= a - 1e-5 for a, b in zip(nlcs, nlcs[1:])) and nlcs[-1] > 1.05  # grows along the profile


def test_block_repeated_equals_unrolled():
    unrolled = mlp("tanh", depth=4, width=48, d_in=24, weight_std=1.4, bias_std=0.3)
    block = copy.deepcopy(unrolled)
    block["layers"] = [{"type": "block", "repeat": 4, "layers": unrolled["layers"][:2]}, unrolled["layers"][-1]]
    a, b = arch_from(unrolled), arch_from(block)
    x = _batch(a, 128)
    assert meanfield_summary(a, x) == meanfield_summary(b, x)


def _residual_ln(norm: str) -> dict:
    branch = [{"type": "activation", "fn": "relu"}, {"type": "dense", "features": 64}]
    if norm == "batch_norm":
        branch.append({"type": "batch_norm"})
    layers = [{"type": "dense", "features": 64}]
    for _ in range(3):
        layers.append({"type": "residual", "branch": branch, "branch_scale": 0.7, "shortcut_scale": 1.0})
        if norm == "layer_norm":
            layers.append({"type": "layer_norm"})
    layers += [{"type": "activation", "fn": "relu"}, {"type": "dense", "features": 10}]
    return {"name": f"res-{norm}", "input": {"shape": [32]}, "init": {"weight_std": 1.2, "bias_std": 0.1},
            "layers": layers}


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm"])
def test_residual_and_normalization_finite(norm):
    arch = arch_from(_residual_ln(norm))
    s = meanfield_summary(arch, _batch(arch, 64))
    json.dumps(s, allow_nan=False)
    assert all(s[k] is not None for k in ("chi1", "phase", "c_star", "nlc_predicted"))
    assert 1.0 < s["nlc_predicted"] < 10.0
    assert s["hidden"]["activation"] == "relu" and s["hidden"]["count"] == 4
    for row in s["layers"]:
        assert all(row[k] is not None and math.isfinite(row[k]) for k in ("q", "c_mean", "chi", "nlc_predicted"))
    if norm == "layer_norm":
        assert [r["q"] for r in s["layers"] if r["layer"].endswith("layer_norm")] == pytest.approx([1.0] * 3)


def test_conv_net_with_pools_and_orthogonal_init():
    arch = arch_from({
        "name": "cnn", "input": {"shape": [8, 8, 3]}, "init": {"weight_std": 1.4, "bias_std": 0.1},
        "layers": [{"type": "conv", "features": 16, "kernel": 3}, {"type": "batch_norm"},
                   {"type": "activation", "fn": "relu"},
                   {"type": "conv", "features": 16, "kernel": 3, "init": {"dist": "delta_orthogonal"}},
                   {"type": "activation", "fn": "relu"}, {"type": "max_pool", "window": 2},
                   {"type": "avg_pool", "window": 2}, {"type": "flatten"},
                   {"type": "dense", "features": 64, "init": {"dist": "orthogonal"}},
                   {"type": "activation", "fn": "relu"}, {"type": "dense", "features": 10}]})
    s = meanfield_summary(arch, _batch(arch, 64))
    json.dumps(s, allow_nan=False)
    q = {row["layer"]: row["q"] for row in s["layers"]}
    assert q["1.batch_norm"] == pytest.approx(1.0) and q["2.relu"] == pytest.approx(0.5, rel=1e-4)
    assert q["3.conv"] == pytest.approx(1.96 * 0.5 + 0.01, rel=1e-4)  # delta-orthogonal: centre tap, same map
    # orthogonal 64 -> 64 after flatten: fan-in 64 = fan-out, same map as Gaussian
    assert q["8.dense"] == pytest.approx(1.96 * q["7.flatten"] + 0.01, rel=1e-5)
    assert any(a.startswith("max_pool") for a in s["approximations"])
    assert s["hidden"]["count"] == 3 and 1.0 < s["nlc_predicted"] < 3.0


def test_no_activation_is_affine():
    arch = arch_from({"name": "linear", "input": {"shape": [16]}, "init": {"weight_std": 1.0, "bias_std": 0.0},
                      "layers": [{"type": "dense", "features": 32}, {"type": "dense", "features": 32},
                                 {"type": "dense", "features": 4}]})
    s = meanfield_summary(arch, _batch(arch, 64))
    assert s["nlc_predicted"] == pytest.approx(1.0, abs=1e-5)
    assert s["phase"] == "critical" and s["chi1"] == pytest.approx(1.0)
    assert "no activation" in s["reason"]
    shrinking = arch_from({"name": "lin", "input": {"shape": [16]}, "init": {"weight_std": 0.7, "bias_std": 0.1},
                           "layers": [{"type": "dense", "features": 8}] * 3})
    s = meanfield_summary(shrinking, _batch(shrinking, 64))
    assert s["phase"] == "ordered" and s["chi1"] == pytest.approx(0.49, rel=1e-5)
    assert s["nlc_predicted"] == pytest.approx(1.0, abs=1e-5)


def test_flax_entry_point_gives_none_with_reason():
    arch = arch_from({"name": "foreign", "input": {"shape": [4]}, "module": "tiny_flax:make"})
    s = meanfield_summary(arch, np.zeros((8, 4), np.float32))
    assert set(SUMMARY_KEYS) <= set(s) and all(s[k] is None for k in SUMMARY_KEYS)
    assert "module" in s["reason"] and s["layers"] == []
    json.dumps(s, allow_nan=False)


def test_input_statistics_and_bad_input():
    x = np.random.default_rng(1).standard_normal((100, 4, 16))
    q, mean, c = input_statistics(x)
    assert q == pytest.approx(np.mean(x**2)) and c.shape == (64 * 63 // 2,)
    flat = x.reshape(100, -1)
    sub = flat[np.unique(np.linspace(0, 99, 64).round().astype(int))]
    # 1 - mean pair correlation = Tr(cov) / (q d) * m/(m - 1) exactly, whatever the norms (no clipping in 64-D)
    tr = np.trace(np.cov(sub.T, bias=True))
    assert 1 - c.mean() == pytest.approx(tr / np.mean(np.sum(sub**2, 1)) * 64 / 63, rel=1e-9)
    arch = arch_from(mlp("tanh", depth=1, width=8, d_in=16))
    with pytest.raises(zsad.DataError, match="shape"):
        meanfield_summary(arch, np.zeros((8, 15)))


def test_score_warns_when_depth_exceeds_correlation_depth_scales():
    # tanh at sigma_w^2 = 0.5, no bias, is deep in the ordered phase: q* = 0, chi1 = 0.5, so the
    # gradient shrinks by 0.5^12 over 12 layers (8.3 depth scales); ReLU at the edge of chaos does not.
    options = zsad.ScoreOptions(seeds=1, batch=32, spectrum=False)
    ordered = zsad.score_architecture(arch_from(mlp("tanh", depth=12, width=32, weight_std=math.sqrt(0.5))), options)
    mf = ordered.to_json()["meanfield"]
    assert mf["phase"] == "ordered" and mf["hidden"]["count"] == 12
    assert mf["q_star"] == 0.0 and mf["chi1"] == pytest.approx(0.5, rel=1e-5) and mf["xi_c"] is None
    assert ordered.verdict.status in ("warning", "bad")
    assert any("gradients vanish" in r for r in ordered.verdict.reasons)
    relu = zsad.score_architecture(arch_from(mlp("relu", depth=12, width=32, weight_std=math.sqrt(2.0))), options)
    assert relu.to_json()["meanfield"]["phase"] == "critical"
    assert not any("mean field" in r for r in relu.verdict.reasons)
    no_mf = zsad.score_architecture(arch_from(mlp("relu", depth=2, width=8)),
                                    zsad.ScoreOptions(seeds=1, batch=16, spectrum=False, meanfield=False))
    assert "meanfield" not in no_mf.to_json()


def test_meanfield_verdict_depth_scales():
    from zsad.verdict import DEPTH_SCALES_MAX, meanfield_verdict

    hidden = {"count": 20}
    chaotic = {"phase": "chaotic", "chi1": 1.05, "xi_c": 2.0, "hidden": hidden}  # 10 correlation scales
    (status, reason), = meanfield_verdict(chaotic)
    assert status == "warning" and "decorrelate" in reason and "10.0 correlation depth scales" in reason
    exploding = {"phase": "chaotic", "chi1": 2.0, "xi_c": None, "hidden": hidden}  # 20 ln 2 = 13.9 scales
    assert "gradients explode" in meanfield_verdict(exploding)[0][1]
    shallow = {"phase": "ordered", "chi1": 0.9, "xi_c": 5.0, "hidden": {"count": 3}}
    assert 3 * abs(math.log(0.9)) < DEPTH_SCALES_MAX and meanfield_verdict(shallow) == []
    assert meanfield_verdict({"phase": "critical", "chi1": 1.0, "xi_c": None, "hidden": hidden}) == []
    assert meanfield_verdict(None) == [] and meanfield_verdict({"phase": None, "reason": "module"}) == []
