"""The NLC estimator against analytic values (SPEC §1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zsad
from zsad.nlc import derangement_tangents
from zsad import measure
from zsad.score import ScoreOptions, make_profile_fn, score_architecture, seed_keys, structure_key
from helpers import arch_from, mlp

# SPEC §1 reference table: NLC of one activation on x ~ N(0, s²), exact quadrature.
REFERENCE = {
    "tanh": {0.1: 1.000063, 0.5: 1.016657, 1: 1.085268, 2: 1.269497, 5: 1.770584},
    "gelu": {0.1: 1.006146, 0.5: 1.084897, 1: 1.148410, 2: 1.193695, 5: 1.214289},
    "sigmoid": {0.1: 1.000004, 0.5: 1.001900, 1: 1.016657, 2: 1.085268, 5: 1.361761},
    "erf": {0.1: 1.000064, 0.5: 1.019981, 1: 1.107113, 2: 1.331198, 5: 1.903959},
    "relu": {s: float(np.sqrt(np.pi / (np.pi - 1))) for s in (0.1, 0.5, 1, 2, 5)},
}

AFFINE = {
    "dense": [{"type": "dense", "features": 48}, {"type": "dense", "features": 16}],
    "conv-pool": [
        {"type": "conv", "features": 4, "kernel": 3}, {"type": "avg_pool", "window": 2},
        {"type": "conv", "features": 6, "kernel": [3, 1], "stride": 2, "padding": "valid"},
        {"type": "global_avg_pool"}, {"type": "dense", "features": 5},
    ],
    "conv-flatten": [
        {"type": "conv", "features": 3, "kernel": 3, "padding": 1},
        {"type": "avg_pool", "window": 3, "stride": 1, "padding": "same"},
        {"type": "flatten"}, {"type": "dense", "features": 7},
    ],
    "residual": [
        {"type": "dense", "features": 24},
        {"type": "residual", "repeat": 3, "branch_scale": 0.7, "shortcut_scale": 1.3,
         "branch": [{"type": "dense", "features": 24}, {"type": "dense", "features": 24}]},
        {"type": "residual", "branch": [{"type": "dense", "features": 8}],
         "shortcut": [{"type": "dense", "features": 8}]},
    ],
    "batch_norm": [{"type": "dense", "features": 32}, {"type": "batch_norm"}, {"type": "dense", "features": 8}],
}


def _shape(name):
    return [8, 8, 2] if name.startswith("conv") else [12]


@pytest.mark.parametrize("name", list(AFFINE))
def test_affine_networks_have_nlc_one(x64, name):
    arch = arch_from({"input": {"shape": _shape(name)}, "init": {"bias_std": 0.5}, "layers": AFFINE[name]})
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=32, tangents=2))
    for value in report.nlc_per_seed:
        assert abs(value - 1.0) < 1e-5
    for row in report.profile:
        assert abs(row["nlc"] - 1.0) < 1e-5, row


@pytest.mark.parametrize("s", [0.5, 1, 2, 5], ids=lambda s: f"s={s}")
@pytest.mark.parametrize("fn", list(REFERENCE))
def test_single_activation_matches_quadrature(fn, s):
    arch = arch_from({"input": {"shape": [64], "std": s}, "layers": [{"type": "activation", "fn": fn}]})
    report = score_architecture(arch, ScoreOptions(seeds=1, batch=2048, tangents=4))
    # 2048 samples x 64 independent coordinates x 4 tangents: relative standard error < 0.5%.
    assert report.nlc_mean == pytest.approx(REFERENCE[fn][s], rel=0.02)


def test_relu_network_nlc_is_independent_of_input_scale():
    values = []
    for std in (0.01, 1.0, 100.0):
        arch = arch_from(mlp("relu", depth=4, std=std, weight_std=1.4))
        values.append(score_architecture(arch, ScoreOptions(seeds=2, batch=64)).nlc_per_seed)
    np.testing.assert_allclose(values[0], values[1], rtol=1e-4)
    np.testing.assert_allclose(values[2], values[1], rtol=1e-4)
    assert values[1][0] > 1.2  # a genuinely nonlinear network, not a trivial pass


def test_tanh_becomes_linear_for_small_inputs():
    small = score_architecture(arch_from(mlp("tanh", std=1e-3)), ScoreOptions(seeds=1, batch=128))
    large = score_architecture(arch_from(mlp("tanh", std=3.0, weight_std=2.0)), ScoreOptions(seeds=1, batch=128))
    assert abs(small.nlc_mean - 1.0) < 1e-3
    assert large.nlc_mean > 1.2


def test_derangements_are_permutations_without_fixed_points():
    x = jnp.arange(50.0)[:, None]
    t = derangement_tangents(x, jax.random.key(3), num_tangents=5)
    idx = np.asarray(t[..., 0] + x.mean()).astype(int)
    for row in idx:
        assert sorted(row) == list(range(50))
        assert not np.any(row == np.arange(50))


def test_identity_permutation_would_be_wrong():
    """The random pairing matters: pairing x_i with itself gives a different (wrong) value."""
    model = nn.Sequential([nn.Dense(64), nn.tanh, nn.Dense(64), nn.tanh, nn.Dense(4)])
    x = 2.0 * jax.random.normal(jax.random.key(0), (512, 16))
    params = model.init(jax.random.key(1), x)
    right = zsad.nlc(model.apply, params, x, jax.random.key(2), num_tangents=8).nlc
    _, f_lin = jax.linearize(lambda x: model.apply(params, x), x)
    wrong = jnp.sqrt(jnp.mean(jnp.sum(f_lin(x - x.mean(0, keepdims=True)) ** 2, 1)) /
                     jnp.sum(jnp.var(model.apply(params, x), 0)))
    assert abs(float(right) - float(wrong)) > 0.05


def test_library_api_on_a_flax_model_matches_the_definition(x64):
    """zsad.nlc equals the definition computed with materialized Jacobians."""
    model = nn.Sequential([nn.Dense(20), nn.tanh, nn.Dense(3)])
    x = 1.5 * jax.random.normal(jax.random.key(0), (400, 6))
    params = model.init(jax.random.key(1), x)
    est = jax.jit(zsad.nlc, static_argnums=0, static_argnames="num_tangents")(
        model.apply, params, x, jax.random.key(2), num_tangents=16).nlc
    jac = jax.vmap(jax.jacfwd(lambda v: model.apply(params, v)))(x)  # [n, 3, 6]
    cov = jnp.cov(x.T, bias=True)
    num = jnp.mean(jnp.einsum("nij,jk,nik->n", jac, cov, jac))
    exact = jnp.sqrt(num / jnp.sum(jnp.var(model.apply(params, x), 0)))
    # 400 samples x 16 permutations: estimator noise well below 1%.
    assert float(est) == pytest.approx(float(exact), rel=0.01)
    assert float(exact) > 1.02


def test_scalars_do_not_recompile():
    a = arch_from(mlp("tanh", weight_std=1.0))
    b = arch_from(mlp("tanh", weight_std=2.5, bias_std=0.3, std=0.5))
    na, nb = zsad.build(a), zsad.build(b)
    assert na.apply is nb.apply
    fn = make_profile_fn(na, 1)
    x = jnp.ones((8, 32))
    fn(seed_keys(0, 2), x, na.scalars)
    before = sum(measure.TRACES.values())
    fn(seed_keys(0, 2), x, nb.scalars)
    assert sum(measure.TRACES.values()) == before
    key = structure_key(a)
    assert key == structure_key(b)
    # zsad score of both: one program (same structure and options), traced at most once, not for b
    traced = lambda: measure.TRACES[measure.program_key(key, measure.MeasureConfig(("nlc",), 2, False))]  # noqa: E731
    start = traced()
    options = ScoreOptions(seeds=1, batch=64, spectrum=False, meanfield=False)
    ra = score_architecture(a, options)
    after_a = traced()
    rb = score_architecture(b, options)
    assert after_a - start <= 1 and traced() == after_a >= 1
    assert ra.nlc_mean != rb.nlc_mean


def test_weight_std_scales_the_weights():
    net = zsad.build(arch_from(mlp("relu", weight_std=3.0, bias_std=0.5, width=2000, d_in=500)))
    params = net.init(jax.random.key(0), net.scalars)["params"]
    kernel, bias = params["0.dense"]["kernel"], params["0.dense"]["bias"]
    # Var(W) = 9 / fan_in; 1e6 entries: relative error of the variance ~ 0.3%.
    assert float(jnp.var(kernel)) * 500 == pytest.approx(9.0, rel=0.02)
    assert float(jnp.std(bias)) == pytest.approx(0.5, rel=0.1)


def test_orthogonal_init_is_isometric(x64):
    net = zsad.build(arch_from(mlp("relu", dist="orthogonal", weight_std=1.0, d_in=16, width=32)))
    kernel = net.init(jax.random.key(0), net.scalars)["params"]["0.dense"]["kernel"]
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(16), atol=1e-10)


def test_batch_norm_statistics_are_frozen_after_calibration():
    arch = arch_from({"input": {"shape": [10]}, "layers": [
        {"type": "dense", "features": 16}, {"type": "batch_norm"}, {"type": "activation", "fn": "tanh"},
        {"type": "dense", "features": 4}]})
    net = zsad.build(arch)
    x = 3.0 * jax.random.normal(jax.random.key(0), (64, 10)) + 1.0
    v = net.calibrate(net.init(jax.random.key(1), net.scalars), net.scalars, x)
    # per-sample: a sub-batch gives the same rows
    full, _ = net.apply(v, net.scalars, x)
    part, _ = net.apply(v, net.scalars, x[:5])
    np.testing.assert_allclose(part, full[:5], rtol=1e-5, atol=1e-6)
    # on the calibration batch the normalized pre-activations have mean 0 and variance 1
    _, outs = net.apply(v, net.scalars, x)
    bn = outs["1.batch_norm"]
    np.testing.assert_allclose(jnp.mean(bn, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(bn, 0), 1.0, rtol=1e-3)


def test_batch_norm_nlc_equals_the_frozen_affine_network(x64):
    """With stats held constant, BN is the affine map (h - m)/sqrt(v + eps): compute it by hand."""
    arch = arch_from({"input": {"shape": [10], "std": 2.0}, "layers": [
        {"type": "dense", "features": 16}, {"type": "batch_norm"}, {"type": "activation", "fn": "tanh"},
        {"type": "dense", "features": 4}]})
    net = zsad.build(arch)
    report = score_architecture(arch, ScoreOptions(seeds=1, batch=128, tangents=4))
    x = jnp.asarray(zsad.load_inputs(arch.input, 128))
    key = seed_keys(0, 1)[0]
    k_init, k_tan = jax.random.split(key)
    p = net.init(k_init, net.scalars)["params"]

    def by_hand(x):
        h = x @ p["0.dense"]["kernel"] + p["0.dense"]["bias"][None]
        return h

    h = by_hand(x)
    m, var = h.mean(0), h.var(0)

    def frozen(x):
        z = (by_hand(x) - m[None]) / jnp.sqrt(var[None] + 1e-5)
        return jnp.tanh(z) @ p["3.dense"]["kernel"] + p["3.dense"]["bias"][None]

    expected = zsad.nlc_profile(frozen, x, k_tan, num_tangents=4).nlc
    assert report.nlc_mean == pytest.approx(float(expected), rel=1e-9)


def test_diverging_network_names_the_first_non_finite_layer():
    arch = arch_from(mlp("relu", depth=10, weight_std=1e5, width=16))  # x 1e5 per layer: inf by layer ~8
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=16))
    assert report.nlc_mean is None
    assert "diverged" in report.nlc_reason
    first = report.diverged[0]
    index = int(first.split(".")[0])
    assert 4 <= index < 20
    assert report.verdict.status == "bad"
    assert first in report.verdict.summary


def test_constant_output_is_reported_not_nan():
    arch = arch_from(mlp("tanh", weight_std=0.0, bias_std=1.0))
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=16))
    assert report.nlc_mean is None
    assert report.nlc_reason == "output is constant across the batch"
    assert report.verdict.status == "bad"
