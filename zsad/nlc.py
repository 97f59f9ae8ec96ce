"""The nonlinearity coefficient (NLC) and its profile over layer prefixes.

.. math::
    \\mathrm{NLC}(f, D) = \\sqrt{\\frac{\\mathbb{E}_{x}\\,\\mathrm{Tr}(J(x)\\,\\Sigma_x J(x)^\\top)}
                              {\\mathrm{Tr}\\,\\Sigma_f}}

Estimator: for a batch ``x_1..x_n`` with mean ``mu`` and random
derangements ``pi_k`` (one per tangent),

    numerator   = mean_{i,k} || J(x_i) (x_{pi_k(i)} - mu) ||²     (forward-mode products)
    denominator = sum_j Var_i f_j(x_i)                             (biased variance)

Because each ``pi_k`` is a permutation, the estimator is exactly 1 for affine
maps; averaged over ``pi`` the numerator is unbiased. No Jacobian is ever
materialized: the tangents are pushed through the network by forward-mode
products (``jax.jvp`` vmapped over the ``num_tangents`` permutations; the
primal pass runs once, see :func:`push_tangents`).

Reference: G. Philipp, *The Nonlinearity Coefficient -- A Practical Guide to
Neural Architecture Design* (2021).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from zsad.layer_values import LayerValues

PyTree = Any


class NLCResult(NamedTuple):
    """NLC estimate with its parts; leaves mirror the function's output pytree.

    ``nlc`` is NaN where the output is constant across the batch (up to
    rounding); ``finite`` is False where the forward pass or the statistics
    produced non-finite values (overflow).
    """

    nlc: PyTree
    numerator: PyTree
    denominator: PyTree
    finite: PyTree


def derangement_tangents(x: jax.Array, key: jax.Array, num_tangents: int = 1) -> jax.Array:
    """``[num_tangents, n, ...]`` centred inputs ``x[pi_k(i)] - mean(x)`` for random derangements.

    Each ``pi_k`` is a uniformly random single n-cycle (``pi(o_i) = o_{i+1}`` for a
    random order ``o``), hence a derangement: no sample is paired with itself.
    """
    n = x.shape[0]
    mu = jnp.mean(x, axis=0, keepdims=True)

    def one(k):
        order = jax.random.permutation(k, n)
        perm = jnp.zeros_like(order).at[order].set(jnp.roll(order, -1))
        return x[perm] - mu

    return jax.vmap(one)(jax.random.split(key, num_tangents))


def _sum_sq_per_sample(t: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(t).reshape(t.shape[0], -1), axis=1)


def nlc_profile(fn: Callable[[jax.Array], PyTree], x: jax.Array, key: jax.Array, *,
                num_tangents: int = 1) -> NLCResult:
    """NLC of every leaf of ``fn``'s output pytree (e.g. every layer's output), in one pass.

    Args:
      fn: batched function ``[n, *in_shape] -> pytree of [n, ...]`` acting on each
        sample independently (batch statistics frozen).
      x: batch ``[n, *in_shape]``, n >= 2.
      key: PRNG key for the permutations.
      num_tangents: permutations per sample (more: lower variance).

    Returns:
      ``NLCResult`` whose fields have the structure of ``fn(x)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (64, 3))
      >>> r = nlc_profile(lambda x: {"out": x @ jnp.ones((3, 2))}, x, jax.random.key(1))
      >>> bool(jnp.abs(r.nlc["out"] - 1.0) < 1e-5)
      True
    """
    y, pushed = push_tangents(fn, x, derangement_tangents(x, key, num_tangents))
    return nlc_of_tangents(y, pushed)


def push_tangents(fn: Callable[[jax.Array], PyTree], x: jax.Array, tangents: jax.Array) -> tuple[PyTree, PyTree]:
    """``(fn(x), J(x) t_k for each k)``: the outputs and every tangent ``tangents[k]`` pushed through ``fn``.

    ``jax.jvp`` vmapped over the tangents: the primal pass does not depend on
    them, so it runs once, unbatched, in the same program as the tangent passes,
    and nothing is stored between the two. On XLA:CPU this is about twice as fast
    as ``jax.linearize`` followed by the linear map vmapped over the tangents,
    which keeps every residual of the primal pass in memory.

    Returns:
      ``fn(x)``, and the pushed tangents with a leading ``[K]`` axis on every leaf.
    """
    return jax.vmap(lambda t: jax.jvp(fn, (x,), (t,)), out_axes=(None, 0))(tangents)


def nlc_of_tangents(y: PyTree, pushed: PyTree) -> NLCResult:
    """The NLC estimate from the outputs ``y = fn(x)`` and the pushed tangents (:func:`push_tangents`).

    Where ``y`` is a :class:`~zsad.layer_values.LayerValues` (the layer outputs of a network whose
    repeated blocks are scanned), each field is one too: the layers of a group are estimated together
    (vmapped), so the program does not grow with the number of repeats.
    """
    if isinstance(y, LayerValues):
        return NLCResult(*y.map_groups(lambda v, t: tuple(nlc_of_tangents(v, t)), pushed))
    numerator = jax.tree.map(lambda t: jnp.mean(jax.vmap(_sum_sq_per_sample)(t)), pushed)
    denominator = jax.tree.map(lambda v: jnp.sum(jnp.var(v.reshape(v.shape[0], -1), axis=0)), y)
    finite = jax.tree.map(lambda v, a, b: jnp.all(jnp.isfinite(v)) & jnp.isfinite(a) & jnp.isfinite(b),
                          y, numerator, denominator)
    ratio = jax.tree.map(_ratio, numerator, denominator, y)
    return NLCResult(ratio, numerator, denominator, finite)


def nlc_of_linearization(y: PyTree, f_lin: Callable[[jax.Array], PyTree], x: jax.Array, key: jax.Array, *,
                         num_tangents: int = 1) -> NLCResult:
    """:func:`nlc_profile` from a linearization already made: ``y, f_lin = jax.linearize(fn, x)``.

    For callers that need ``fn(x)`` itself too: the primal pass is then shared
    instead of run twice. ``f_lin`` may return a part of what ``fn`` returns, with
    ``y`` the same part.
    """
    tangents = derangement_tangents(x, key, num_tangents)
    return nlc_of_tangents(y, jax.vmap(f_lin)(tangents))  # leaves [K, n, ...]


def _ratio(numerator: jax.Array, denominator: jax.Array, y: jax.Array) -> jax.Array:
    """sqrt(numerator / denominator), NaN where the output is constant up to rounding.

    "Constant" means a total variance below ``(1000 eps)²`` times the output's mean
    square: the spread is then rounding noise and the ratio meaningless.
    """
    eps = jnp.finfo(y.dtype).eps if jnp.issubdtype(y.dtype, jnp.floating) else 1e-7
    scale = jnp.sum(jnp.mean(jnp.square(y.reshape(y.shape[0], -1)), axis=0))
    constant = denominator <= jnp.square(1000 * eps) * scale
    return jnp.sqrt(numerator / jnp.where(constant, jnp.nan, denominator))


def nlc(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, x: jax.Array,
        key: jax.Array, *, num_tangents: int = 1) -> NLCResult:
    """NLC of the network ``x -> apply_fn(params, x)`` on the batch ``x``.

    Args:
      apply_fn: batched forward pass, per-sample (e.g. a flax ``model.apply`` with
        batch statistics in inference mode).
      params: its variables.
      x: batch ``[n, *in_shape]``.
      key: PRNG key for the permutations.
      num_tangents: permutations per sample.

    Returns:
      ``NLCResult`` of scalars.

    Example:
      >>> import flax.linen as nn, jax
      >>> model = nn.Sequential([nn.Dense(64), nn.tanh, nn.Dense(8)])
      >>> x = jax.random.normal(jax.random.key(0), (128, 16))
      >>> params = model.init(jax.random.key(1), x)
      >>> r = jax.jit(nlc, static_argnums=0)(model.apply, params, x, jax.random.key(2))
      >>> 1.0 < float(r.nlc) < 2.0
      True
    """
    return nlc_profile(lambda x: apply_fn(params, x), x, key, num_tangents=num_tangents)
