"""The activation functions an architecture file may name, and what is known of each (no jax).

Their jax implementations are :data:`zsad.activations.ACTIVATIONS`, keyed by
these names in this order; parsing a file needs only the names.
"""

from __future__ import annotations

#: Every activation name, in the order error messages list them.
ACTIVATION_NAMES: tuple[str, ...] = (
    "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "swish", "silu", "selu", "elu", "erf",
    "softplus", "identity",
)

#: Numeric parameters each activation accepts, with their defaults.
ACTIVATION_PARAMS: dict[str, dict[str, float]] = {
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
}

#: Activations that are positively homogeneous (phi(c x) = c phi(x), c > 0):
#: their NLC does not depend on the input scale.
HOMOGENEOUS = frozenset({"relu", "leaky_relu", "identity"})

#: Activations with a kink (non-differentiable point) at 0: quadrature must split there.
KINKED = frozenset({"relu", "leaky_relu", "elu", "selu"})
