"""Weights of unit gain: the draws of every ``init.dist`` of an architecture file.

Shared by the flax networks (:mod:`zsad.arch.build`) and the PyTorch bridge
(:mod:`zsad.torch_bridge`), so that a distribution means the same for both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: Standard deviation of N(0, 1) truncated to [-2, 2].
TRUNC_STD = 0.87962566103423978


def _orthogonal(key, rows: int, cols: int, dtype) -> jax.Array:
    """A (rows x cols) matrix with orthonormal rows or columns (whichever is fewer)."""
    return jax.nn.initializers.orthogonal(scale=1.0)(key, (rows, cols), dtype)


def unit_weights(key, shape: tuple[int, ...], dist: str, dtype) -> jax.Array:
    """Weights of unit gain: variance ``1/fan_in`` (fan_in = prod(shape[:-1])), or (semi-)orthogonal.

    ``orthogonal`` reshapes to (fan_in, fan_out); ``delta_orthogonal`` puts an
    orthogonal (c_in x c_out) matrix at the kernel's centre tap and zeros
    elsewhere (Xiao et al. 2018); on a dense layer it is plain orthogonal.
    """
    fan_in = int(np.prod(shape[:-1]))
    if dist == "normal":
        return jax.random.normal(key, shape, dtype) / np.sqrt(fan_in)
    if dist == "truncated_normal":
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) / (TRUNC_STD * np.sqrt(fan_in))
    if dist == "uniform":
        bound = np.sqrt(3.0 / fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    if dist == "orthogonal" or (dist == "delta_orthogonal" and len(shape) == 2):
        return _orthogonal(key, fan_in, shape[-1], dtype).reshape(shape)
    if dist == "delta_orthogonal":
        centre = tuple(k // 2 for k in shape[:-2])
        return jnp.zeros(shape, dtype).at[centre].set(_orthogonal(key, shape[-2], shape[-1], dtype))
    raise ValueError(f"unknown init distribution {dist!r}")
