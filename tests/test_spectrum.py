"""Jacobian singular-value spectra: analytic references, exact vs matrix-free paths."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad import spectrum as S
from zsad._errors import ZsadError
from zsad.plotting import plot_spectrum_density


# Weights and inputs are numpy arrays (fixed seeds) passed straight to the jitted
# engines, so that the tests compile only the programs under test.


def _host(tree):
    """Results as numpy arrays, so assertions run no (compiling) eager jax ops."""
    return jax.tree.map(np.asarray, tree)


def _orthogonal(rng, rows, cols, dtype=np.float32):
    """A rows × cols matrix with orthonormal rows (rows <= cols) or columns (Haar)."""
    big = max(rows, cols)
    q, r = np.linalg.qr(rng.standard_normal((big, big)))
    q = q * np.sign(np.diag(r))[None, :]
    return q[:rows, :cols].astype(dtype)


def _normal(rng, shape, std=1.0, dtype=np.float32):
    return (std * rng.standard_normal(shape)).astype(dtype)


def _linear_apply(ws, x):
    """x -> W_L ... W_1 x for a list of matrices."""
    for w in ws:
        x = w @ x
    return x


def _orthogonal_net(seed, widths, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [_orthogonal(rng, n_out, n_in, dtype) for n_in, n_out in zip(widths[:-1], widths[1:])]


# --------------------------------------------------------------------------- #
# Deep linear networks
# --------------------------------------------------------------------------- #

# Square (64 -> 64), wide-to-narrow (d_out < d_in: J J^T is the Gram operator) and
# narrow-to-wide (d_in < d_out: J^T J). In every case the min(d_in, d_out)
# singular values are exactly 1; the trivial zeros of the larger side are not
# reported (module convention).
ORTHOGONAL_CASES = {
    "square": (64, 64, 64, 64, 64),
    "wide_to_narrow": (64, 64, 48, 48, 32),
    "narrow_to_wide": (32, 48, 48, 64, 64),
}


@pytest.mark.parametrize("method", ["exact", "lanczos"])
@pytest.mark.parametrize("widths", ORTHOGONAL_CASES.values(), ids=ORTHOGONAL_CASES.keys())
def test_orthogonal_deep_linear_is_isometric(widths, method):
    ws = _orthogonal_net(0, widths)
    xs = _normal(np.random.default_rng(1), (2, widths[0]))
    spectrum = S.make_spectrum_fn(_linear_apply, method=method, num_steps=8, num_probes=2)
    s = _host(spectrum(ws, xs, jax.random.key(2)))
    r = min(widths[0], widths[-1])
    tol = 1e-4  # float32 products of 4 orthogonal matrices: rounding ~1e-6
    for field in (s.sigma2_mean, s.sigma_max, s.sigma_min, s.condition, s.isometry_share):
        np.testing.assert_allclose(field, 1.0, atol=tol)
    np.testing.assert_allclose(s.sigma2_var, 0.0, atol=tol)
    np.testing.assert_allclose(s.density.nodes, 1.0, atol=tol)
    np.testing.assert_allclose(np.sum(s.density.weights, axis=-1), 1.0, atol=1e-6)
    if method == "exact":
        assert s.density.nodes.shape == (2, r)
    else:
        assert s.density.nodes.shape == (2, 2 * 8)


def test_orthogonal_deep_linear_float64(x64):
    # Float64 identities hold to 1e-10 on both paths.
    ws = _orthogonal_net(0, (24, 24, 24, 24), np.float64)
    x = _normal(np.random.default_rng(1), (24,), dtype=np.float64)
    fn = jax.jit(lambda ws, x: S.jacobian_singular_values(lambda v: _linear_apply(ws, v), x))
    np.testing.assert_allclose(np.asarray(fn(ws, x)), 1.0, atol=1e-10)
    def matrix_free(ws, x, k):
        fn = lambda v: _linear_apply(ws, v)  # noqa: E731
        return S.slq_density(fn, x, k, num_steps=6, num_probes=2), S.extreme_singular_values(fn, x, k, num_steps=6)

    d, extremes = _host(jax.jit(matrix_free)(ws, x, jax.random.key(2)))
    np.testing.assert_allclose(d.nodes, 1.0, atol=1e-10)
    np.testing.assert_allclose(extremes, 1.0, atol=1e-10)
    np.testing.assert_allclose(np.sum(d.weights), 1.0, atol=1e-12)


GAUSS_WIDTH = 200
GAUSS_MAX_DEPTH = 6


def _gaussian_linear_weights(seed, depth):
    """`depth` Gaussian factors of variance 1/n, padded with identities to a fixed
    depth so that every depth runs through one compiled program."""
    n = GAUSS_WIDTH
    ws = np.broadcast_to(np.eye(n), (GAUSS_MAX_DEPTH, n, n)).copy()
    ws[:depth] = np.random.default_rng(seed).standard_normal((depth, n, n)) / math.sqrt(n)
    return ws.astype(np.float32)


def test_gaussian_deep_linear_variance_grows_linearly_with_depth():
    traces = []

    def apply(ws, x):
        traces.append(None)
        return _linear_apply(list(ws), x)

    spectrum = S.make_spectrum_fn(apply, method="exact")
    depths = np.arange(1, GAUSS_MAX_DEPTH + 1)
    seeds = 4
    means = np.zeros((seeds, depths.size))
    variances = np.zeros((seeds, depths.size))
    x = np.zeros((1, GAUSS_WIDTH), np.float32)  # the map is linear: J does not depend on x
    for i in range(seeds):
        for j, depth in enumerate(depths):
            s = _host(spectrum(_gaussian_linear_weights(100 * i + int(depth), int(depth)), x, jax.random.key(0)))
            means[i, j] = float(s.sigma2_mean[0])
            variances[i, j] = float(s.sigma2_var[0])
            if i == j == 0:
                first = len(traces)

    # New weights and depths never retrace: all tracing happened in the first call.
    assert len(traces) == first
    # Mean sigma^2 = Tr(J^T J)/n: its seed-to-seed std at n = 200 is 0.01-0.02
    # (0.05 at depth 8), so 0.05 is over 2.5 std even for one seed.
    np.testing.assert_allclose(means.mean(axis=0), 1.0, atol=0.05)
    # Var sigma^2 -> L (Fuss-Catalan). Over 40 independent seed groups of this
    # exact design (4 seeds, depths 1..6, n = 200) the fitted slope was
    # 1.030 ± 0.045: a finite-width bias of +3% plus noise; 0.2 covers 3.7 std.
    slope, intercept = np.polyfit(depths, variances.mean(axis=0), 1)
    assert abs(slope - 1.0) < 0.2, (slope, variances.mean(axis=0))
    assert abs(intercept) < 0.5, intercept


# --------------------------------------------------------------------------- #
# Exact vs matrix-free on a nonlinear network
# --------------------------------------------------------------------------- #

TANH_DIMS = (50, 200, 200, 200)  # d_in = 50 < d_out = 200: r = 50, G = J^T J
TANH_STEPS, TANH_PROBES = 30, 8


def _tanh_params(rng, sigma_w2=1.5):
    return [_normal(rng, (n_out, n_in), math.sqrt(sigma_w2 / n_in)) for n_in, n_out in zip(TANH_DIMS[:-1], TANH_DIMS[1:])]


def _tanh_apply(ws, x):
    for i, w in enumerate(ws):
        x = w @ x
        if i < len(ws) - 1:
            x = jnp.tanh(x)
    return x


def _ks_distance(exact_nodes, nodes, weights):
    """sup_t |F_exact(t) - F_slq(t)| over both step functions (right and left limits)."""
    exact_nodes = np.sort(np.asarray(exact_nodes, np.float64))
    order = np.argsort(nodes)
    nodes, cum = np.asarray(nodes, np.float64)[order], np.cumsum(np.asarray(weights, np.float64)[order])
    grid = np.concatenate([exact_nodes, nodes])
    worst = 0.0
    for side in ("right", "left"):
        f_exact = np.searchsorted(exact_nodes, grid, side=side) / exact_nodes.size
        k = np.searchsorted(nodes, grid, side=side)
        f_slq = np.where(k > 0, cum[np.maximum(k - 1, 0)], 0.0)
        worst = max(worst, float(np.max(np.abs(f_exact - f_slq))))
    return worst


@pytest.fixture(scope="module")
def tanh_spectra():
    rng = np.random.default_rng(0)
    ws = _tanh_params(rng)
    xs = _normal(rng, (3, TANH_DIMS[0]))
    exact = _host(S.make_spectrum_fn(_tanh_apply, method="exact")(ws, xs, jax.random.key(2)))
    # batch_size=2 over 3 samples: the sequential path, with a remainder.
    slq = S.make_spectrum_fn(
        _tanh_apply, method="lanczos", num_steps=TANH_STEPS, num_probes=TANH_PROBES, batch_size=2
    )
    return ws, xs, exact, _host(slq(ws, xs, jax.random.key(2)))


def test_tanh_extreme_singular_values_agree(tanh_spectra):
    _, _, exact, slq = tanh_spectra
    # The spectrum of J^T J (50 × 50) is separated from 0, so 30 Lanczos steps
    # resolve both ends; the brief's 1% budget.
    np.testing.assert_allclose(slq.sigma_max, exact.sigma_max, rtol=1e-2)
    np.testing.assert_allclose(slq.sigma_min, exact.sigma_min, rtol=1e-2)
    # Ritz values interlace: sigma_max from below, sigma_min from above.
    assert np.all(slq.sigma_max <= exact.sigma_max * (1 + 1e-5))
    assert np.all(slq.sigma_min >= exact.sigma_min * (1 - 1e-5))


def test_tanh_slq_density_matches_exact_distribution(tanh_spectra):
    _, _, exact, slq = tanh_spectra
    r = TANH_DIMS[0]
    for i in range(exact.sigma_max.shape[0]):
        weights = np.asarray(slq.density.weights[i])
        ks = _ks_distance(exact.density.nodes[i], slq.density.nodes[i], weights)
        # Bound: (a) Chebyshev-Markov-Stieltjes: a Gauss rule's distribution
        # function is within its largest weight of the probe's spectral measure
        # (averaged over probes); (b) the probes' measures average to the exact
        # one with a per-point std <= sqrt(1/(2 r P)) (Rademacher probes), and 3
        # std covers the supremum over the few points where steps occur.
        per_probe_max = weights.reshape(TANH_PROBES, -1).max(axis=1) * TANH_PROBES
        bound = per_probe_max.mean() + 3.0 * math.sqrt(1.0 / (2 * r * TANH_PROBES))
        assert ks < bound, (i, ks, bound)
        assert ks < 0.15, (i, ks)  # observed 0.05-0.08


def test_tanh_hutchinson_within_standard_error(tanh_spectra):
    ws, xs, exact, slq = tanh_spectra
    # Three standard errors (fixed seeds; a 3-sigma band fails with prob. 0.3%).
    assert np.all(slq.sigma2_mean_stderr > 0)
    assert np.all(np.abs(slq.sigma2_mean - exact.sigma2_mean) < 3.0 * slq.sigma2_mean_stderr)
    est = jax.jit(lambda ws, x, k: S.hutchinson(lambda v: _tanh_apply(ws, v), x, k, num_probes=64))
    for i in range(xs.shape[0]):
        e = _host(est(ws, xs[i], jax.random.key(3 + i)))
        assert abs(float(e.mean) - float(exact.sigma2_mean[i])) < 3.0 * float(e.stderr)
        # The standalone estimator and the SLQ probes estimate the same quantity.
        assert float(e.stderr) < float(slq.sigma2_mean_stderr[i])
    # The second moment (hence the variance) comes from the same quadrature.
    np.testing.assert_allclose(slq.sigma2_var, exact.sigma2_var, rtol=0.3)


# --------------------------------------------------------------------------- #
# Tanh at the edge of chaos vs ReLU
# --------------------------------------------------------------------------- #

EOC_WIDTH, EOC_DEPTH = 128, 10


def _deep_apply(params, x):
    """Pre-activation to pre-activation map of a deep network whose activation is
    tanh (params[2] = 1) or ReLU (params[2] = 0): a traced choice, so both
    networks run through one compiled program."""
    ws, bs, is_tanh = params

    def act(h):
        return is_tanh * jnp.tanh(h) + (1.0 - is_tanh) * jax.nn.relu(h)

    h = ws[0] @ x + bs[0]
    for layer in range(1, EOC_DEPTH):
        h = ws[layer] @ act(h) + bs[layer]
    return h


def _deep_params(seed, sigma_w2, sigma_b2, orthogonal, activation):
    rng = np.random.default_rng(seed)
    n = EOC_WIDTH
    if orthogonal:
        ws = np.stack([_orthogonal(rng, n, n, np.float64) for _ in range(EOC_DEPTH)])
    else:
        ws = rng.standard_normal((EOC_DEPTH, n, n)) / math.sqrt(n)
    ws = (ws * math.sqrt(sigma_w2)).astype(np.float32)
    return ws, _normal(rng, (EOC_DEPTH, n), math.sqrt(sigma_b2)), np.float32(activation == "tanh")


DEEP_SPECTRUM = S.make_spectrum_fn(_deep_apply, method="exact")


@pytest.mark.parametrize("relu_orthogonal", [True, False], ids=["relu_orthogonal", "relu_gaussian"])
def test_relu_spread_exceeds_tanh_at_edge_of_chaos(relu_orthogonal):
    # Tanh: sigma_b^2 = 1e-6 and sigma_w^2 = 1 give q* ~ sqrt(sigma_b^2 / 2) ~ 7e-4
    # and chi_1 ~ 1 - O(q*) (critical); inputs of per-coordinate std 0.03 put the
    # first layer near q*. Orthogonal weights: close to isometric.
    xs = _normal(np.random.default_rng(1), (3, EOC_WIDTH))
    tanh = _host(DEEP_SPECTRUM(_deep_params(0, 1.0, 1e-6, True, "tanh"), 0.03 * xs, jax.random.key(2)))
    # ReLU at its own criticality (sigma_w^2 = 2): half the units are off in
    # every layer, so J has a large fraction of tiny singular values.
    relu = _host(DEEP_SPECTRUM(_deep_params(0, 2.0, 0.0, relu_orthogonal, "relu"), xs, jax.random.key(2)))
    assert np.all(tanh.sigma2_ratio < 0.01), tanh.sigma2_ratio  # observed ~1e-4
    assert np.all(tanh.isometry_share == 1.0)
    assert np.all(relu.sigma2_ratio > 1.0), relu.sigma2_ratio  # observed ~10
    assert np.all(relu.isometry_share < 0.5)
    assert np.min(relu.sigma2_ratio) > 100 * np.max(tanh.sigma2_ratio)
    assert np.min(relu.condition) > 100 * np.max(tanh.condition)


# --------------------------------------------------------------------------- #
# Reference densities, histograms, options
# --------------------------------------------------------------------------- #


def _moments(density, lo, hi, power, nodes=400):
    """Mass, mean and second moment of a density supported on [lo, hi].

    Substituting x = lo + (hi - lo) ((1 - cos t) / 2)^power, t in [0, pi], makes
    the integrand smooth at both edges for square-root edges (power = 1) and for
    an x^(-L/(L+1)) singularity at lo = 0 (power = (L+1)/2); Gauss-Legendre in t
    then converges geometrically (observed errors ~1e-12).
    """
    t, w = np.polynomial.legendre.leggauss(nodes)
    t, w = (t + 1.0) * np.pi / 2.0, w * np.pi / 2.0
    c = (1.0 - np.cos(t)) / 2.0
    x = lo + (hi - lo) * c**power
    f = density(x) * (hi - lo) * power * c ** (power - 1.0) * np.sin(t) / 2.0 * w
    return f.sum(), (f * x).sum(), (f * x * x).sum()


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.1])
def test_marchenko_pastur_integrates_to_one_with_mean_one(ratio):
    lo, hi = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    mass, mean, second = _moments(lambda x: S.marchenko_pastur_density(x, ratio), lo, hi, 1.0)
    np.testing.assert_allclose([mass, mean, second - mean**2], [1.0, 1.0, ratio], atol=1e-9)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_fuss_catalan_integrates_to_one_with_mean_one_and_variance_depth(depth):
    edge = (depth + 1) ** (depth + 1) / depth**depth
    mass, mean, second = _moments(lambda x: S.fuss_catalan_density(x, depth), 0.0, edge, (depth + 1) / 2.0)
    np.testing.assert_allclose([mass, mean, second - mean**2], [1.0, 1.0, depth], atol=1e-9)
    if depth == 1:  # L = 1 is Marchenko-Pastur with ratio 1
        x = np.linspace(0.01, 3.99, 50)
        np.testing.assert_allclose(S.fuss_catalan_density(x, 1), S.marchenko_pastur_density(x, 1.0), rtol=1e-8)


def test_density_histogram_keeps_mass():
    nodes = np.array([[1e-9, 0.5, 2.0, 1e9], [1.0, 1.0, 1.0, 1.0]])
    weights = np.full(nodes.shape, 0.25)
    h = S.density_histogram(nodes, weights)
    assert h.shape == (S.LOG_SIGMA2_EDGES.size - 1,)
    np.testing.assert_allclose(h.sum(), 1.0)
    assert h[0] == pytest.approx(0.125) and h[-1] == pytest.approx(0.125)


def test_auto_method_and_errors():
    fn = lambda x: 2.0 * x  # noqa: E731
    # Shapes only (eval_shape traces without compiling): the density's size tells the path.
    small = jax.eval_shape(lambda k: S.jacobian_spectrum(fn, jnp.ones((2, 8)), k), jax.random.key(0))
    assert small.density.nodes.shape == (2, 8)  # 8 * 8 <= EXACT_MAX_ENTRIES: exact, r values
    big = jax.eval_shape(
        lambda k: S.jacobian_spectrum(fn, jnp.ones((1, 1025)), k, num_steps=3, num_probes=2), jax.random.key(0)
    )
    assert big.density.nodes.shape == (1, 6)  # 1025^2 > EXACT_MAX_ENTRIES: Lanczos, P * m nodes
    wide = jax.eval_shape(
        lambda k: S.jacobian_spectrum(lambda x: x[:3], jnp.ones((1, 5)), k, method="lanczos", num_steps=9), jax.random.key(0)
    )
    assert wide.density.nodes.shape == (1, 4 * 3)  # steps capped at r = min(5, 3)
    with pytest.raises(ZsadError, match="method: expected one of"):
        S.jacobian_spectrum(fn, jnp.ones((2, 8)), jax.random.key(0), method="svd")
    with pytest.raises(ZsadError, match="num_probes"):
        S.make_spectrum_fn(lambda p, x: x, num_probes=0)
    with pytest.raises(ZsadError, match="ratio"):
        S.marchenko_pastur_density(1.0, ratio=2.0)
    with pytest.raises(ZsadError, match="depth"):
        S.fuss_catalan_density(1.0, 0)


def test_plot_spectrum_density_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(200, 200)) / math.sqrt(200)
    sigma2 = np.linalg.svd(w @ rng.normal(size=(200, 200)) / math.sqrt(200), compute_uv=False) ** 2
    path = plot_spectrum_density(
        tmp_path / "spectrum.png",
        sigma2,
        reference=lambda x: S.fuss_catalan_density(x, 2),
        reference_label="Fuss-Catalan, L = 2",
        title="Gaussian deep linear, L = 2",
    )
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG")
    # Weighted (SLQ) input and the sigma variable also plot.
    path2 = plot_spectrum_density(tmp_path / "slq.png", sigma2[:20], np.full(20, 0.05), variable="sigma")
    assert path2.read_bytes().startswith(b"\x89PNG")
