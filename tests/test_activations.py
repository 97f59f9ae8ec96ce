"""The activation registry (zsad.activations): closed-form values, the HOMOGENEOUS and KINKED sets
against the functions themselves, parameters and shaping."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad.activations import ACTIVATION_PARAMS, ACTIVATIONS, HOMOGENEOUS, KINKED, get_activation, shaped

SELU_LAMBDA, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772  # Klambauer et al. 2017


def _phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# (name, x, phi(x)) from the definitions, evaluated with the standard library
CLOSED_FORMS = [
    ("relu", -1.5, 0.0), ("relu", 2.0, 2.0),
    ("leaky_relu", -2.0, -0.02), ("leaky_relu", 3.0, 3.0),
    ("tanh", 0.5, math.tanh(0.5)),
    ("sigmoid", 1.0, 1.0 / (1.0 + math.exp(-1.0))),
    ("gelu", 1.0, _phi(1.0)), ("gelu", -2.0, -2.0 * _phi(-2.0)),
    ("gelu_tanh", 1.0, 0.5 * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (1.0 + 0.044715)))),
    ("swish", 1.0, 1.0 / (1.0 + math.exp(-1.0))), ("silu", -1.0, -1.0 / (1.0 + math.exp(1.0))),
    ("selu", 1.0, SELU_LAMBDA), ("selu", -1.0, SELU_LAMBDA * SELU_ALPHA * math.expm1(-1.0)),
    ("elu", -1.0, math.expm1(-1.0)), ("elu", 0.5, 0.5),
    ("erf", 1.0, math.erf(1.0)),
    ("softplus", 0.0, math.log(2.0)), ("softplus", 3.0, math.log1p(math.exp(3.0))),
    ("identity", -0.7, -0.7),
]


def test_closed_forms_cover_the_registry():
    assert {name for name, _, _ in CLOSED_FORMS} == set(ACTIVATIONS)


@pytest.mark.parametrize("name, x, expected", CLOSED_FORMS, ids=[f"{n}({x})" for n, x, _ in CLOSED_FORMS])
def test_closed_form_values(x64, name, x, expected):
    assert float(get_activation(name)(jnp.float64(x))) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_homogeneous_set_is_exactly_the_positively_homogeneous_activations(x64):
    x = jnp.linspace(-3.0, 3.0, 61)
    homogeneous = {name for name, fn in ACTIVATIONS.items()
                   if all(np.allclose(fn(c * x), c * fn(x), rtol=1e-12, atol=1e-14) for c in (0.3, 2.5))}
    assert homogeneous == HOMOGENEOUS


def test_kinked_set_is_exactly_the_activations_not_twice_differentiable_at_0(x64):
    """A jump of the first or the second derivative across 0 (elu: phi' is continuous, phi'' is not)."""
    h = 1e-3
    grid = h * jnp.arange(-2.0, 3.0)  # -2h .. 2h

    def jumps(fn):  # one-sided first and second differences on either side of 0
        f = np.asarray(fn(grid))
        first = ((f[3] - f[2]) - (f[2] - f[1])) / h
        second = ((f[4] - 2 * f[3] + f[2]) - (f[2] - 2 * f[1] + f[0])) / h**2
        return abs(first) > 0.1 or abs(second) > 0.1

    assert {name for name, fn in ACTIVATIONS.items() if jumps(fn)} == KINKED


def test_parameter_defaults_are_the_functions():
    for name, params in ACTIVATION_PARAMS.items():
        signature = inspect.signature(ACTIVATIONS[name])
        assert {k: signature.parameters[k].default for k in params} == params
    assert get_activation("leaky_relu")(jnp.float32(-1.0), negative_slope=0.2) == pytest.approx(-0.2)
    assert get_activation("elu")(jnp.float32(-1.0), alpha=2.0) == pytest.approx(2.0 * math.expm1(-1.0))


def test_shaping(x64):
    x = jnp.linspace(-2.0, 2.0, 9)
    tanh = get_activation("tanh")
    np.testing.assert_allclose(shaped(tanh)(x), jnp.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(shaped(tanh, alpha=0.0, gain=3.0)(x), 3.0 * x, rtol=1e-15)  # linear
    np.testing.assert_allclose(shaped(tanh, beta=4.0)(x), jnp.tanh(4.0 * x) / 4.0, rtol=1e-15)
    # alpha = 2 on ReLU: 2 relu(s) - s = |s|
    np.testing.assert_allclose(shaped(get_activation("relu"), alpha=2.0)(x), jnp.abs(x), rtol=1e-15)
    leaky = shaped(get_activation("leaky_relu"), params={"negative_slope": 0.5})
    assert float(leaky(jnp.float64(-2.0))) == -1.0


def test_shaping_scalars_are_traced_not_compiled_in():
    traces = []

    @jax.jit
    def f(alpha, beta, gain, x):
        traces.append(None)
        return shaped(get_activation("tanh"), alpha, beta, gain)(x)

    for scalars in ((1.0, 1.0, 1.0), (0.5, 2.0, 1.3)):
        got = f(*(jnp.float32(v) for v in scalars), jnp.float32(0.5))
        a, b, g = scalars
        assert float(got) == pytest.approx(g * (a * math.tanh(b * 0.5) / b + (1 - a) * 0.5), rel=1e-6)
    assert len(traces) == 1


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'tanh'"):
        get_activation("tahn")
