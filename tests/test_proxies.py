"""Baseline proxies against values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad import proxies
from zsad._errors import DataError
from zsad.naswot import naswot, naswot_kernel, relu_codes
from zsad.proxies import (
    DIRECTION,
    FLOOR,
    JACOB_COV_K,
    cross_entropy_loss,
    flops,
    grad_norm,
    jacob_cov,
    param_count,
    snip,
    synflow,
)

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}  # relative tolerance by dtype of the result


# --------------------------------------------------------------------------- params, flops


def test_param_count_of_known_tree():
    tree = {
        "conv": {"kernel": jnp.zeros((3, 3, 2, 4)), "bias": jnp.zeros(4)},
        "bn": {"scale": jnp.zeros(4), "bias": jnp.zeros(4)},
        "head": [jax.ShapeDtypeStruct((4, 10), jnp.float32), np.zeros(10)],
    }
    assert param_count(tree) == 72 + 4 + 8 + 40 + 10
    assert isinstance(param_count(tree), int)
    assert param_count({}) == 0


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_flops_of_dense_layer_counts_multiply_add_as_two(bias):
    d_in, d_out = 8, 4
    params = {"kernel": jnp.ones((d_in, d_out)), "bias": jnp.ones(d_out)}

    def dense(p, x):
        y = x @ p["kernel"]
        return y + p["bias"][None, :] if bias else y

    expected = 2 * d_in * d_out + (d_out if bias else 0)
    # One sample, whatever the batch size.
    assert flops(dense, params, jnp.ones((1, d_in))) == expected
    assert flops(dense, params, jnp.ones((7, d_in))) == expected


# --------------------------------------------------------------------------- NASWOT


def test_naswot_hand_made_codes():
    # Hamming distances 2, 4, 2 among 4 units: K = [[4,2,0],[2,4,2],[0,2,4]], det = 32.
    codes = jnp.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(jax.jit(naswot_kernel)(codes), [[4, 2, 0], [2, 4, 2], [0, 2, 4]])
    s = jax.jit(naswot)(codes)
    assert bool(s.valid) and float(s.sign) == 1.0
    np.testing.assert_allclose(s.value, math.log(32), rtol=1e-6)
    np.testing.assert_allclose(s.logabsdet, math.log(32), rtol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 6])
def test_naswot_one_hot_codes_closed_form(n):
    # c_i = e_i: K = 2 I + (n - 2) 11^T, eigenvalues 2 (n - 1 times) and 2 + n (n - 2).
    s = jax.jit(naswot)(jnp.eye(n, dtype=bool))
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, (n - 1) * math.log(2) + math.log(2 + n * (n - 2)), rtol=1e-6)


def test_naswot_singular_kernel_is_finite_floor():
    # Samples 0 and 2 share a code: two equal rows, det K = 0.
    codes = jnp.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]], bool)
    s = jax.jit(naswot)(codes)
    assert not bool(s.valid)
    assert float(s.value) == FLOOR and np.isfinite(float(s.value))
    # Distinct codes, yet K = F F^T with features F = [c, 1 - c] of rank at most
    # N_A + 1 = 3 (c + (1 - c) = 1 per unit): four samples make K singular.
    distinct = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], bool)
    s = jax.jit(naswot)(distinct)
    assert not bool(s.valid) and float(s.value) == FLOOR


def test_naswot_kernel_matches_hamming_definition():
    rng = np.random.default_rng(0)
    codes = rng.random((9, 50)) > 0.5
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(jax.jit(naswot_kernel)(jnp.asarray(codes)), 50 - hamming)
    s = jax.jit(naswot)(jnp.asarray(codes))
    sign, logdet = np.linalg.slogdet((50 - hamming).astype(np.float64))
    assert bool(s.valid) and sign == 1
    np.testing.assert_allclose(s.value, logdet, rtol=1e-6)


@pytest.mark.parametrize("integers", [True, False], ids=["int8-products", "float64-products"])
def test_naswot_kernel_of_masked_blocks_is_that_of_the_kept_units(monkeypatch, integers):
    """Layers given as blocks (never concatenated), each with its mask, give the kernel of the kept units
    by the definition, in both the integer and the float64 path (the latter above EXACT_INT32_UNITS)."""
    from zsad import naswot as naswot_mod

    if not integers:
        monkeypatch.setattr(naswot_mod, "EXACT_INT32_UNITS", 10)
    rng = np.random.default_rng(1)
    blocks = [rng.random((7, 4, 3)) > 0.5, rng.random((7, 20)) > 0.3]
    masks = [rng.random((4, 3)) > 0.2, rng.random(20) > 0.5]
    kept = np.concatenate([b.reshape(7, -1)[:, m.ravel()] for b, m in zip(blocks, masks)], axis=1)
    hamming = (kept[:, None, :] != kept[None, :, :]).sum(-1)
    blocks, masks = [jnp.asarray(b) for b in blocks], [jnp.asarray(m) for m in masks]
    # fresh functions: a jitted function's trace of the other path is not reused
    got = jax.jit(lambda b, m: naswot_kernel(b, m))(blocks, masks)
    np.testing.assert_array_equal(got, kept.shape[1] - hamming)
    s, ref = jax.jit(lambda b, m: naswot(b, m))(blocks, masks), naswot(jnp.asarray(kept))
    assert bool(s.valid) and float(s.value) == pytest.approx(float(ref.value), rel=1e-6)
    with pytest.raises(DataError, match="one mask per block"):
        naswot_kernel(blocks, masks[:1])


def test_relu_codes_from_preactivations_and_outputs():
    pre = {
        "relu1": jnp.array([[1.0, -2.0, 0.0], [-1.0, 3.0, 0.5]]),
        "relu2": jnp.array([[[0.2], [-0.1]], [[-4.0], [2.0]]]),  # (n, 2, 1): flattened per sample
    }
    expected = [[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]]
    np.testing.assert_array_equal(relu_codes(pre), expected)
    post = [jax.nn.relu(a) for a in pre.values()]
    np.testing.assert_array_equal(relu_codes(post), expected)
    with pytest.raises(DataError, match="expected arrays of shape"):
        relu_codes([jnp.ones((2, 3)), jnp.ones((3, 3))])
    with pytest.raises(DataError, match=r"codes: expected shape \(n, N_A\)"):
        naswot(jnp.ones(4, bool))


# --------------------------------------------------------------------------- synflow


def _two_layer_linear(p, x):
    return x @ p["w1"] @ p["w2"]


def test_synflow_two_layer_linear_equals_log_2r():
    rng = np.random.default_rng(1)
    w1, w2 = rng.uniform(0.1, 1.0, (5, 4)), rng.uniform(0.1, 1.0, (4, 3))
    # R = 1^T W1 W2 1 is homogeneous of degree 2: sum theta dR/dtheta = 2 R.
    r = np.ones(5) @ w1 @ w2 @ np.ones(3)
    params = {"w1": jnp.asarray(w1, jnp.float32), "w2": jnp.asarray(w2, jnp.float32)}
    score = jax.jit(lambda p: synflow(_two_layer_linear, p, (5,)))
    s = score(params)
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, math.log(2 * r), rtol=1e-6)
    # Signs are discarded: flipping weights changes nothing.
    signs = jnp.where(jnp.arange(3) % 2 == 0, -1.0, 1.0)[None, :]
    flipped = {"w1": -params["w1"], "w2": params["w2"] * signs}
    s_flipped = score(flipped)
    np.testing.assert_allclose(s_flipped.value, s.value, rtol=1e-6)


def test_synflow_leaf_selection_with_bias():
    # y = W x + b on x = 1: theta dR/dtheta is |W| on the kernel, |b| on the bias.
    w, b = jnp.array([[1.0, -2.0], [3.0, 0.5]]), jnp.array([-0.25, 4.0])
    affine = lambda p, x: x @ p["kernel"] + p["bias"][None, :]
    params = {"kernel": w, "bias": b}
    kernels = jax.jit(lambda p: synflow(affine, p, (2,)))(params)
    every = jax.jit(lambda p: synflow(affine, p, (2,), where=None))(params)
    np.testing.assert_allclose(kernels.value, math.log(6.5), rtol=1e-6)
    np.testing.assert_allclose(every.value, math.log(10.75), rtol=1e-6)


def _deep_relu(p, x):
    """ReLU network whose weights are stacked in one (depth, width, width) leaf."""
    return jax.lax.scan(lambda h, w: (jax.nn.relu(h @ w), None), x, p)[0]


def test_synflow_through_a_padded_max_pool_in_a_compiled_program():
    """synflow's float64 passes run inside a jitted program, which is lowered after their local float64
    context has closed; a max pool's derivative then fails to lower (its padding is built as float32).
    zsad's programs run synflow through canonical.canonical_gradients, which computes max pools as
    canonical.window_max: the value equals flax's max pool run eagerly (each operation lowered inside
    the context)."""
    import flax.linen as nn

    from zsad.canonical import canonical_gradients

    rng = np.random.default_rng(4)
    params = {"k1": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
              "k2": jnp.asarray(rng.normal(size=(4 * 3 * 3, 5)), jnp.float32)}

    def net(p, x):
        h = jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = nn.max_pool(jax.nn.relu(h), (3, 3), (2, 2), "SAME")
        return h.reshape(h.shape[0], -1) @ p["k2"]

    compiled = jax.jit(lambda p: proxies.synflow(canonical_gradients(net), p, (6, 6, 2)).value)(params)
    eager = proxies.synflow(net, params, (6, 6, 2)).value
    assert np.isfinite(float(compiled)) and float(compiled) == pytest.approx(float(eager), rel=1e-6)
    with pytest.raises(TypeError, match="same dtype"):  # the failure canonical_gradients avoids
        jax.jit(lambda p: proxies.synflow(net, p, (6, 6, 2)).value)(params)


def test_synflow_finite_where_float32_overflows():
    depth, width = 40, 32
    rng = np.random.default_rng(2)
    ws = [rng.normal(size=(width, width)) for _ in range(depth)]
    # Premise: the all-ones forward pass overflows float32 (R ~ 1e66).
    h = np.ones(width, np.float32)
    with np.errstate(over="ignore"):
        for w in ws:
            h = np.maximum(h @ np.abs(w).astype(np.float32), 0)
    assert not np.isfinite(h).all()
    # With |W| and input 1 every ReLU is the identity: R is homogeneous of degree
    # `depth`, so S = depth * R; log R by rescaling each layer in float64.
    log_r, h = 0.0, np.ones(width)
    for w in ws:
        h = h @ np.abs(w)
        log_r += math.log(h.sum())
        h = h / h.sum()
    params = jnp.asarray(np.stack(ws), jnp.float32)
    s = jax.jit(lambda p: synflow(_deep_relu, p, (width,)))(params)
    assert jnp.result_type(s.value) == jnp.float32
    assert bool(s.valid) and np.isfinite(float(s.value))
    np.testing.assert_allclose(s.value, math.log(depth) + log_r, rtol=1e-6)


def test_synflow_overflow_and_zero_are_flagged():
    # R = 1e40^10 overflows float64: clamped at log(float64 max), flagged.
    huge = jnp.full((11, 1, 1), 1e30, jnp.float32)
    s = jax.jit(lambda p: synflow(_deep_relu, p, (1,)))(huge)
    assert not bool(s.valid)
    np.testing.assert_allclose(s.value, math.log(np.finfo(np.float64).max), rtol=1e-6)
    # Zero weights: S = 0, log S = -inf, reported as the floor.
    zero = {"w1": jnp.zeros((3, 2)), "w2": jnp.ones((2, 1))}
    s = jax.jit(lambda p: synflow(_two_layer_linear, p, (3,)))(zero)
    assert not bool(s.valid) and float(s.value) == FLOOR


def test_log_sum_of_scaled_terms_over_float64_range(x64):
    """The scaled sum of synflow and snip: log of the sum over 600 decades, and exact at 0, inf and NaN."""
    rng = np.random.default_rng(4)
    exps = rng.uniform(-300, 300, size=(2, 50))
    mant = rng.uniform(1, 10, size=(2, 50))
    parts = [jnp.asarray(mant[i] * 10.0 ** exps[i]) for i in range(2)]
    terms = np.log(mant) + exps * math.log(10)  # the logarithms, exactly as the data were made
    reference = float(np.logaddexp.reduce(terms.ravel()))
    assert float(proxies._log_sum_of(parts)) == pytest.approx(reference, rel=1e-13)
    assert float(proxies._log_sum_of([jnp.zeros(3), jnp.zeros((2, 2))])) == -np.inf
    assert float(proxies._log_sum_of([jnp.ones(3), jnp.asarray([np.inf])])) == np.inf
    assert np.isnan(float(proxies._log_sum_of([jnp.ones(3), jnp.asarray([np.nan, 1.0])])))


# --------------------------------------------------------------------------- grad_norm, snip


def _softmax_regression(seed=3, n=6, d=5, c=4):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(d, c)), rng.normal(size=c)
    x, y = rng.normal(size=(n, d)), rng.integers(0, c, n)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(c)[y]) / n  # dL/dlogits of the mean cross-entropy
    grads = {"kernel": x.T @ delta, "bias": delta.sum(0)}
    params = {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
    loss = cross_entropy_loss(lambda q, xb: xb @ q["kernel"] + q["bias"][None, :])
    return params, grads, loss, jnp.asarray(x), jnp.asarray(y)


def test_grad_norm_matches_analytic_softmax_gradient(x64):
    params, grads, loss, x, y = _softmax_regression()
    s = jax.jit(lambda p, xb, yb: grad_norm(loss, p, xb, yb))(params, x, y)
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, math.log(np.linalg.norm(grads["kernel"])), rtol=TOL[jnp.float64])
    # Every leaf: per-layer norms are summed (Abdelfattah et al.'s code), not pooled.
    s = jax.jit(lambda p, xb, yb: grad_norm(loss, p, xb, yb, where=None))(params, x, y)
    expected = np.linalg.norm(grads["kernel"]) + np.linalg.norm(grads["bias"])
    np.testing.assert_allclose(s.value, math.log(expected), rtol=TOL[jnp.float64])


def test_snip_matches_analytic_softmax_gradient(x64):
    params, grads, loss, x, y = _softmax_regression()
    s = jax.jit(lambda p, xb, yb: snip(loss, p, xb, yb))(params, x, y)
    expected = np.abs(np.asarray(params["kernel"]) * grads["kernel"]).sum()
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, math.log(expected), rtol=TOL[jnp.float64])
    s = jax.jit(lambda p, xb, yb: snip(loss, p, xb, yb, where=None))(params, x, y)
    expected += np.abs(np.asarray(params["bias"]) * grads["bias"]).sum()
    np.testing.assert_allclose(s.value, math.log(expected), rtol=TOL[jnp.float64])


def test_cross_entropy_accepts_labels_or_targets_and_checks_shapes(x64):
    params, _, loss, x, y = _softmax_regression()
    loss = jax.jit(loss)
    np.testing.assert_allclose(loss(params, x, y), loss(params, x, jax.nn.one_hot(y, 4)), rtol=1e-12)
    with pytest.raises(DataError, match="y: expected"):
        loss(params, x, jnp.ones((6, 3)))
    with pytest.raises(DataError, match="batch size"):
        jax.jit(lambda p, xb, yb: grad_norm(loss, p, xb, yb))(params, x, y[:5])


def test_grad_proxies_float32_and_zero_gradient():
    params, grads, loss, x, y = _softmax_regression()
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    s = jax.jit(lambda p, xb, yb: grad_norm(loss, p, xb, yb))(params, x.astype(jnp.float32), y)
    assert jnp.result_type(s.value) == jnp.float32
    np.testing.assert_allclose(s.value, math.log(np.linalg.norm(grads["kernel"])), rtol=1e-5)
    # A constant classifier has zero gradient: log 0 becomes the floor.
    zero = {"kernel": jnp.zeros((5, 4)), "bias": jnp.zeros(4)}
    constant = cross_entropy_loss(lambda q, xb: jnp.zeros((xb.shape[0], 4)) + 0.0 * q["kernel"][:1])
    for proxy in (grad_norm, snip):
        s = jax.jit(lambda p, xb, yb: proxy(constant, p, xb, yb))(zero, x.astype(jnp.float32), y)
        assert not bool(s.valid) and float(s.value) == FLOOR


# --------------------------------------------------------------------------- jacob_cov


def _jacob_cov_reference(n, eigenvalues):
    lam = np.asarray(eigenvalues, np.float64) + JACOB_COV_K
    assert lam.size == n
    return -np.sum(np.log(lam) + 1 / lam)


def test_jacob_cov_equal_jacobians(x64):
    # Linear map: every sample's Jacobian is A 1, so the correlation matrix is all
    # ones, eigenvalues n, 0, ..., 0.
    n, d = 5, 7
    a = jnp.asarray(np.random.default_rng(4).normal(size=(d, 3)))
    x = jnp.asarray(np.random.default_rng(5).normal(size=(n, d)))
    s = jax.jit(lambda p, xb: jacob_cov(lambda q, z: z @ q, p, xb))(a, x)
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, _jacob_cov_reference(n, [n] + [0] * (n - 1)), rtol=1e-9)


def test_jacob_cov_uncorrelated_jacobians():
    # f(x) = |x|^2 / 2 has Jacobian x: centred, mutually orthogonal rows of a
    # Hadamard matrix give the identity correlation, eigenvalues all 1.
    x = jnp.array([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    half_square = lambda q, z: 0.5 * jnp.sum(z * z, axis=1) * q
    s = jax.jit(lambda p, xb: jacob_cov(half_square, p, xb))(jnp.float32(1.0), x)
    assert bool(s.valid)
    np.testing.assert_allclose(s.value, _jacob_cov_reference(3, [1, 1, 1]), rtol=1e-6)


def test_jacob_cov_constant_network_is_invalid():
    x = jnp.ones((4, 3))
    constant = lambda q, z: jnp.zeros((z.shape[0], 2)) + 0.0 * q
    s = jax.jit(lambda p, xb: jacob_cov(constant, p, xb))(jnp.float32(1.0), x)
    assert not bool(s.valid) and float(s.value) == FLOOR
    with pytest.raises(DataError, match=r"x: expected a batch"):
        jacob_cov(lambda p, z: z, 1.0, jnp.ones(3))


# --------------------------------------------------------------------------- directions


def test_direction_covers_every_proxy():
    assert set(DIRECTION) == {"params", "flops", "naswot", "synflow", "grad_norm", "snip", "jacob_cov"}
    assert set(DIRECTION.values()) <= {"higher", "lower"}
    assert all(hasattr(proxies, name) for name in ("param_count", "flops", "synflow", "grad_norm", "snip",
                                                   "jacob_cov"))
    assert callable(naswot)  # zsad.naswot
