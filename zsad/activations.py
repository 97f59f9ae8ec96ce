"""Elementwise activation functions, by name (the names: :mod:`zsad.arch.activation_names`).

Every activation is a jax-traceable elementwise function ``phi(x, **params)``;
numeric parameters (``negative_slope`` of leaky ReLU, ``alpha`` of ELU) are
ordinary (traceable) arguments so that changing them never recompiles.

Shaping (used by ``zsad normalize``) wraps any activation as

.. math::
    \\phi_{\\alpha,\\beta,g}(s) = g\\,\\bigl(\\alpha\\,\\phi(\\beta s)/\\beta + (1-\\alpha)\\,s\\bigr)

with ``alpha = beta = gain = 1`` the unchanged activation.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from zsad._errors import closest
from zsad.arch.activation_names import ACTIVATION_NAMES, ACTIVATION_PARAMS, HOMOGENEOUS, KINKED

__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "ACTIVATION_PARAMS", "HOMOGENEOUS", "KINKED", "ActivationFn",
           "closest", "get_activation", "shaped"]

ActivationFn = Callable[..., jax.Array]


def _leaky_relu(x, negative_slope=0.01):
    return jnp.where(x >= 0, x, negative_slope * x)


def _elu(x, alpha=1.0):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def _relu(x):
    return jnp.maximum(x, 0.0)


ACTIVATIONS: dict[str, ActivationFn] = {
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "selu": jax.nn.selu,
    "elu": _elu,
    "erf": jax.scipy.special.erf,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}


def get_activation(name: str) -> ActivationFn:
    """Returns the activation called ``name``.

    Raises:
      KeyError: if ``name`` is unknown (the message lists the valid names).
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(
            f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
            + closest(name, ACTIVATIONS)
        ) from None


def shaped(
    phi: ActivationFn,
    alpha=1.0,
    beta=1.0,
    gain=1.0,
    params: Mapping[str, jax.typing.ArrayLike] | None = None,
) -> Callable[[jax.Array], jax.Array]:
    """``x -> gain * (alpha * phi(beta x) / beta + (1 - alpha) x)``.

    All of ``alpha``, ``beta``, ``gain`` and ``params`` may be traced arrays.
    """
    params = dict(params or {})

    def fn(x):
        return gain * (alpha * phi(beta * x, **params) / beta + (1.0 - alpha) * x)

    return fn
