"""The Jacobian spectrum inside `zsad score` (SPEC §2): segment choice, values, CLI."""

import json

import numpy as np
import pytest

import zsad
from zsad.score import ScoreOptions, resolve_between, score_architecture

from helpers import arch_from, mlp, run_cli


def linear(dist: str, depth: int = 4, width: int = 24) -> dict:
    return {"input": {"shape": [width]}, "init": {"dist": dist, "weight_std": 1.0},
            "layers": [{"type": "dense", "features": width, "use_bias": False}] * depth}


def test_orthogonal_linear_network_is_exactly_isometric(x64):
    report = score_architecture(arch_from(linear("orthogonal")),
                                ScoreOptions(seeds=2, batch=8, between=("input", "output")))
    spec = report.to_json()["spectrum"]
    assert spec["method"] == "exact" and spec["between"] == ["input", "3.dense"]
    for key in ("sigma2_mean", "sigma_max", "sigma_min", "condition", "isometry_share"):
        assert spec[key] == pytest.approx(1.0, abs=1e-10), key
    assert spec["sigma2_var"] == pytest.approx(0.0, abs=1e-10)


def test_gaussian_linear_network_mean_one_spread_grows(x64):
    spreads = []
    for depth in (1, 4):
        arch = arch_from(linear("normal", depth=depth, width=128))
        spec = score_architecture(arch, ScoreOptions(seeds=2, batch=4, between=("input", "output"))).extra["spectrum"]
        assert spec["sigma2_mean"] == pytest.approx(1.0, abs=0.15)
        spreads.append(spec["sigma2_var"])
    # var(σ²) ≈ depth for a product of Gaussian layers (SPEC §2); 128-wide: within 25%.
    assert spreads[0] == pytest.approx(1.0, rel=0.25)
    assert spreads[1] == pytest.approx(4.0, rel=0.25)


def test_matrix_free_path_agrees_with_exact():
    arch = arch_from(mlp("tanh", depth=3, width=48, d_in=48, weight_std=1.2))
    exact = score_architecture(arch, ScoreOptions(seeds=1, batch=16, spectrum_method="exact")).extra["spectrum"]
    free = score_architecture(arch, ScoreOptions(seeds=1, batch=16, spectrum_method="lanczos",
                                                 spectrum_steps=48)).extra["spectrum"]
    assert free["method"] == "lanczos"
    # 48 Lanczos steps on a 48x48 Gram matrix span the whole space: extreme values match.
    assert free["sigma_max"] == pytest.approx(exact["sigma_max"], rel=0.01)
    # The matrix-free mean is Hutchinson's estimate: 4 Rademacher probes x 8 inputs give a relative
    # standard error of about 5% here (var/mean² ≈ 2.5 over 48 directions); allow 3 standard errors.
    assert free["sigma2_mean"] == pytest.approx(exact["sigma2_mean"], rel=0.15)


def test_default_segment_is_the_hidden_part():
    arch = arch_from(mlp("relu", depth=3))
    names = list(zsad.build(arch).layer_names)
    start, stop, labels = resolve_between(arch, names, None)
    assert labels == ("0.dense", "5.relu") and (start, stop) == (1, 6)
    assert resolve_between(arch, names, ("input", "output"))[:2] == (0, len(names))
    assert resolve_between(arch, names, ("1.relu", "4"))[:2] == (2, 5)
    with pytest.raises(zsad.SpecError, match="--between: expected 'input', 'output'"):
        resolve_between(arch, names, ("1.relu", "nope"))
    with pytest.raises(zsad.SpecError, match="must come before"):
        resolve_between(arch, names, ("4", "2"))


def test_relu_spread_exceeds_tanh_at_edge_of_chaos():
    tanh = arch_from(mlp("tanh", depth=4, width=64, d_in=64, dist="orthogonal", weight_std=1.0,
                         bias_std=0.0, std=0.05))
    relu = arch_from(mlp("relu", depth=4, width=64, d_in=64, dist="orthogonal", weight_std=1.414))
    opts = ScoreOptions(seeds=1, batch=8)
    t = score_architecture(tanh, opts).extra["spectrum"]
    r = score_architecture(relu, opts).extra["spectrum"]
    assert r["sigma2_ratio"] > 10 * t["sigma2_ratio"]
    assert t["isometry_share"] > 0.9


def test_cli_spectrum_json_and_plot(tmp_path, cli_env):
    path = tmp_path / "a.yaml"
    path.write_text("input: {shape: [16]}\nlayers:\n  - {type: dense, features: 16}\n  - {type: activation, fn: tanh}\n"
                    "  - {type: dense, features: 16}\n  - {type: activation, fn: tanh}\n  - {type: dense, features: 4}\n")
    png = tmp_path / "s.png"
    result = run_cli("score", path, "--seeds", 2, "--batch", 16, "--json", "--plot", png)
    assert result.exit_code == 0, result.output
    spec = json.loads(result.stdout)["spectrum"]
    assert {"sigma2_mean", "sigma2_var", "sigma_max", "sigma_min", "condition"} <= set(spec)
    assert spec["between"] == ["0.dense", "3.tanh"]
    assert png.stat().st_size > 1000 and spec["plot"] == str(png)
    bad = run_cli("score", path, "--between", 0, 99)
    assert bad.exit_code == 2 and "--between" in bad.stderr


# --------------------------------------------------------------------------- σ_min: values, or honest bounds

def tanh_net(width: int, depth: int, d_in: int):
    import jax

    arch = arch_from(mlp("tanh", depth=depth, width=width, d_in=d_in, weight_std=1.0, out=None))
    net = zsad.build(arch)
    v = net.init(jax.random.key(0), net.scalars)
    return lambda u: net.apply(v, net.scalars, u[None])[0][0], np.random.default_rng(0).standard_normal(d_in)


@pytest.mark.parametrize("width,depth,d_in", [(32, 3, 32), (64, 6, 16), (16, 4, 48)], ids=["square", "tall", "wide"])
def test_sigma_min_of_a_tanh_net_against_a_float64_svd(width, depth, d_in):
    """float32 singular values (QR, then an SVD) against a float64 SVD of the same float32 Jacobian: each
    within the resolution the method claims; where σ_min lies above it, it is a value, not round-off."""
    import jax

    from zsad.spectrum import jacobian_singular_values, resolution

    fn, x = tanh_net(width, depth, d_in)
    x = x.astype(np.float32)
    jac = np.asarray(jax.jacfwd(fn)(x), np.float64)
    reference = np.linalg.svd(jac, compute_uv=False)
    sigma = np.asarray(jacobian_singular_values(fn, x), np.float64)
    floor = resolution("exact", d_in, width, np.float32) * reference[0]
    assert sigma.shape == reference.shape
    np.testing.assert_allclose(sigma, reference, rtol=0, atol=floor)
    if reference[-1] > 10 * floor:  # resolved: a value with several correct digits
        assert sigma[-1] == pytest.approx(reference[-1], rel=0.1)


def test_a_sigma_min_below_the_resolution_is_a_bound_not_singular(tmp_path, cli_env):
    """The README's tanh network: float32 cannot resolve its smallest σ; zsad says "< value" and keeps
    the number with sigma_min_is_bound, never "singular"; the plot's σ² start at that floor."""
    report = score_architecture(zsad.load_architecture("examples/tanh_mlp.yaml"), ScoreOptions(seeds=2, batch=64))
    spec = report.to_json()["spectrum"]
    assert spec["sigma_min_is_bound"] is True and spec["condition_is_bound"] is True
    assert spec["sigma_min"] > 0 and spec["condition"] is not None and "condition_reason" not in spec
    floor = (spec["sigma_min"] / 10) ** 2
    assert report.density[0].min() > floor * 1e-3  # not round-off down to 1e-39
    result = run_cli("score", "examples/tanh_mlp.yaml", "--seeds", 2, "--batch", 64)
    assert result.exit_code == 0
    line = next(l for l in result.stdout.splitlines() if "σ max / min" in l)
    assert " / < " in line and "condition > " in line
    assert "(singular)" not in result.stdout and "is singular" not in result.stdout


def test_a_resolved_sigma_min_is_a_value(x64):
    report = score_architecture(arch_from(linear("orthogonal")), ScoreOptions(seeds=2, batch=16))
    spec = report.to_json()["spectrum"]
    assert spec["sigma_min_is_bound"] is False and spec["sigma_min"] == pytest.approx(1.0, abs=1e-6)
