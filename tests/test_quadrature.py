"""Quadrature rules, Gaussian expectations and the reference activation NLC."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad import quadrature as qd
from zsad._errors import NumericsError
from zsad.activations import ACTIVATIONS, shaped

relu = ACTIVATIONS["relu"]
erf = ACTIVATIONS["erf"]

# SPEC section 1: NLC of one activation on N(0, s^2), checked to 1e-5 relative.
SPEC_S = (0.1, 0.5, 1.0, 2.0, 5.0)
SPEC_TABLE = {
    "tanh": (1.000063, 1.016657, 1.085268, 1.269497, 1.770584),
    "gelu": (1.006146, 1.084897, 1.148410, 1.193695, 1.214289),
    "sigmoid": (1.000004, 1.001900, 1.016657, 1.085268, 1.361761),
    "erf": (1.000064, 1.019981, 1.107113, 1.331198, 1.903959),
}
SPEC_CASES = [(name, s, v) for name, vals in SPEC_TABLE.items() for s, v in zip(SPEC_S, vals)]

SMOOTH = ("tanh", "gelu", "softplus")


def _half_moment(k):
    """int_0^inf z^k N(z) dz."""
    return 2 ** ((k - 1) / 2) * math.gamma((k + 1) / 2) / math.sqrt(2 * math.pi)


def _radial_moment(k):
    """int_0^inf r^(k+1) exp(-r^2/2) dr."""
    return 2 ** (k / 2) * math.gamma(k / 2 + 1)


# --------------------------------------------------------------------------- rules

@pytest.mark.parametrize("order", [4, 12, 24])
@pytest.mark.parametrize(
    "rule, moment", [(qd.half_hermite, _half_moment), (qd.radial, _radial_moment)], ids=["half_hermite", "radial"]
)
def test_nonclassical_rules_are_gauss(rule, moment, order):
    x, w = rule(order)
    assert np.all(x > 0) and np.all(w > 0)
    for k in range(2 * order):  # exact up to degree 2n - 1, odd powers included
        np.testing.assert_allclose(np.sum(w * x**k), moment(k), rtol=1e-11, err_msg=f"degree {k}")


@pytest.mark.parametrize("order", [32, 64, 128])
def test_half_hermite_high_order_accuracy(order):
    # int_0^inf N(z) e^{a z} dz = e^{a^2/2} Phi(a); weights at the far nodes must be relatively accurate.
    x, w = qd.half_hermite(order)
    for a in (-3.0, -1.0, 1.0, 3.0):
        exact = math.exp(a * a / 2) * 0.5 * (1 + math.erf(a / math.sqrt(2)))
        np.testing.assert_allclose(np.sum(w * np.exp(a * x)), exact, rtol=1e-12)


def test_rules_are_cached_and_read_only():
    assert qd.half_hermite(16) is qd.half_hermite(16)
    x, _ = qd.gauss_hermite(16)
    with pytest.raises(ValueError):
        x[0] = 1.0
    with pytest.raises(ValueError, match="positive integer"):
        qd.radial(0)


def test_gauss_hermite_normalized():
    x, w = qd.gauss_hermite(30)
    np.testing.assert_allclose([np.sum(w), np.sum(w * x * x), np.sum(w * x**4)], [1.0, 1.0, 3.0], rtol=1e-12)


# --------------------------------------------------------------------------- 1-D expectations

@pytest.mark.parametrize("q", [0.01, 1.0, 25.0], ids=lambda q: f"q={q}")
def test_expect_closed_forms(x64, q):
    got = jax.jit(lambda q: jnp.stack([
        qd.expect(lambda x: relu(x) ** 2, q),
        qd.expect(relu, q),
        qd.expect(lambda x: erf(x) ** 2, q),
        qd.expect(lambda x: jnp.where(x > 0, 1.0, 0.0), q),
    ]))(q)
    exact = [q / 2, math.sqrt(q / (2 * math.pi)), 2 / math.pi * math.asin(2 * q / (1 + 2 * q)), 0.5]
    np.testing.assert_allclose(got, exact, rtol=1e-10)


def test_expect_broadcasts_and_differentiates(x64):
    q = jnp.array([[0.5, 1.0, 2.0]])
    vals = jax.jit(lambda q: qd.expect(lambda x: erf(x) ** 2, q))(q)
    assert vals.shape == (1, 3)
    # d/dq (2/pi) arcsin(2q/(1+2q)) = (2/pi) * 2 / ((1+2q) sqrt(1+4q))
    grad = jax.jit(jax.vmap(jax.grad(lambda q: qd.expect(lambda x: erf(x) ** 2, q))))(q[0])
    qs = np.asarray(q[0])
    np.testing.assert_allclose(grad, 4 / np.pi / ((1 + 2 * qs) * np.sqrt(1 + 4 * qs)), rtol=1e-9)


def test_half_range_beats_gauss_hermite_on_kinks(x64):
    # The pitfall of SPEC section 1: a kink at 0 defeats plain Gauss-Hermite.
    exact = math.sqrt(2 / math.pi)  # E|z|
    assert abs(float(qd.expect_hermite(jnp.abs, 1.0, 200)) - exact) > 1e-3
    assert abs(float(qd.expect(jnp.abs, 1.0, 16)) - exact) < 1e-14


# --------------------------------------------------------------------------- 2-D expectations

def _relu_cov(q1, q2, c):
    t = np.arccos(c)
    return np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))


def _erf_cov(q1, q2, c):
    return 2 / np.pi * np.arcsin(2 * c * np.sqrt(q1 * q2) / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


C_GRID = np.array([-1.0, -0.9, 0.0, 0.5, 0.9, 0.999, 0.999999, 1.0])


@pytest.mark.parametrize("q1, q2", [(0.1, 0.3), (1.0, 1.0), (1.0, 4.0)], ids=lambda q: f"{q}")
def test_expect2_closed_forms(x64, q1, q2):
    fn = jax.jit(lambda c: jnp.stack([qd.expect2(relu, relu, q1, q2, c), qd.expect2(erf, erf, q1, q2, c)]))
    got = fn(C_GRID)
    np.testing.assert_allclose(got[0], _relu_cov(q1, q2, C_GRID), atol=1e-12 * math.sqrt(q1 * q2))
    np.testing.assert_allclose(got[1], _erf_cov(q1, q2, C_GRID), atol=1e-9)


def test_expect2_hermite_agrees_on_smooth(x64):
    c = jnp.array([0.0, 0.5, 0.95])
    a = jax.jit(lambda c: qd.expect2(erf, erf, 0.5, 0.8, c))(c)
    b = jax.jit(lambda c: qd.expect2_hermite(erf, erf, 0.5, 0.8, c, 51))(c)
    np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name", SMOOTH)
def test_quadrature_converges(x64, name):
    # doubling the order changes the results by < 1e-6 at the default orders
    f = ACTIVATIONS[name]
    q = jnp.array([0.1, 1.0, 4.0])
    c = jnp.array([0.0, 0.6, 0.99])

    def both(o1, o2):
        return jnp.concatenate([qd.expect(lambda x: f(x) ** 2, q, o1), qd.expect2(f, f, q, q, c, o2)])

    doubled = (2 * qd.ORDER_1D, tuple(2 * o for o in qd.ORDER_2D))
    base, fine = jax.jit(lambda: (both(qd.ORDER_1D, qd.ORDER_2D), both(*doubled)))()
    np.testing.assert_allclose(base, fine, atol=1e-6 * float(jnp.max(jnp.abs(fine))))


# --------------------------------------------------------------------------- activation NLC

@pytest.mark.parametrize("name, s, expected", SPEC_CASES, ids=[f"{n}-s={s}" for n, s, _ in SPEC_CASES])
def test_activation_nlc_spec_table(name, s, expected):
    assert qd.activation_nlc(name, s) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("s", [0.01, 1.0, 100.0], ids=lambda s: f"s={s}")
def test_activation_nlc_relu_constant(s):
    exact = math.sqrt(math.pi / (math.pi - 1))
    assert qd.activation_nlc("relu", s) == exact
    # the quadrature path (a callable) agrees with the closed form: kinks are split
    assert qd.activation_nlc(relu, s) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("s", [0.1, 1.0, 5.0, 30.0], ids=lambda s: f"s={s}")
def test_activation_nlc_erf_closed_form_vs_quadrature(s):
    assert qd.activation_nlc(erf, s) == pytest.approx(qd.activation_nlc("erf", s), rel=1e-12)


def test_activation_nlc_leaky_relu_and_identity():
    a = 0.2
    leaky = lambda x: jnp.where(x >= 0, x, a * x)
    closed = qd.activation_nlc("leaky_relu", 2.0, {"negative_slope": a})
    assert qd.activation_nlc(leaky, 2.0) == pytest.approx(closed, rel=1e-12)
    assert qd.activation_nlc("identity", 3.0) == 1.0
    assert qd.activation_nlc(lambda x: 3.0 * x + 1.0, 0.3) == pytest.approx(1.0, rel=1e-13)


@pytest.mark.parametrize("name", ["tanh", "gelu", "selu", "elu", "softplus"])
@pytest.mark.parametrize("s", [0.05, 5.0, 50.0], ids=lambda s: f"s={s}")
def test_activation_nlc_converges(name, s):
    assert qd.activation_nlc(name, s, panels=2) == pytest.approx(qd.activation_nlc(name, s), rel=1e-12)


def test_activation_nlc_tanh_small_s():
    # NLC - 1 = (2/3) s^4 (1 + O(s^2)) as s -> 0
    for s in (0.01, 0.005):
        assert (qd.activation_nlc("tanh", s) - 1) / s**4 == pytest.approx(2 / 3, rel=1e-3)


def test_activation_nlc_shaped_alpha_zero_is_linear():
    assert qd.activation_nlc(shaped(jnp.tanh, alpha=0.0), 2.0) == pytest.approx(1.0, rel=1e-13)


def test_activation_nlc_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        qd.activation_nlc("tanh", 0.0)
    with pytest.raises(KeyError, match="did you mean 'tanh'"):
        qd.activation_nlc("tahn", 1.0)
    with pytest.raises(NumericsError, match="undefined"):
        qd.activation_nlc(lambda x: 0.0 * x + 1.0, 1.0)
