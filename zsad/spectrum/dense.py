r"""The exact path: singular values of the materialized Jacobian of a per-sample map.

Shared by both paths: :data:`PerSampleFn`, :func:`flatten_fn` and :func:`io_dims`.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from zsad._errors import DataError
from zsad.canonical import canonical_gradients

#: A map of one sample ``x -> y`` (arrays of any shape, no batch axis).
PerSampleFn = Callable[[jax.Array], jax.Array]


def flatten_fn(fn: PerSampleFn, x: jax.Array) -> tuple[PerSampleFn, jax.Array]:
    """``fn`` as a map between flat vectors, and the flat point."""
    x = jnp.asarray(x)
    shape = x.shape

    def flat(v):
        return jnp.ravel(fn(jnp.reshape(v, shape)))

    return flat, jnp.ravel(x)


def io_dims(fn: PerSampleFn, shape: tuple[int, ...], dtype) -> tuple[int, int]:
    """``(d_in, d_out)`` of ``fn`` on inputs of this shape, from shapes only (no computation)."""
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(shape), dtype))
    if not hasattr(out, "shape"):
        raise DataError(f"fn: expected a single array output, got {type(out).__name__}")
    return int(math.prod(shape)), int(math.prod(out.shape))


def transposed_product(flat: PerSampleFn, x_flat: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``u -> Jᵀ u`` of the flat map ``flat`` at ``x_flat``, by reverse mode through
    :func:`~zsad.canonical.canonical_gradients`: JAX's transposed convolutions keep permuted
    dimension numbers, which XLA:CPU runs as naive loop nests inside loops (the seeds' ``lax.map``,
    Lanczos' iterations); the rewritten ones run in the canonical layout. One forward pass, whose
    residuals the product keeps."""
    _, pull = jax.vjp(canonical_gradients(flat), x_flat)
    return lambda u: pull(u)[0]


def jacobian_singular_values(fn: PerSampleFn, x: jax.Array) -> jax.Array:
    r"""Singular values of the materialized Jacobian of ``fn`` at ``x``.

    .. math::
        J = \frac{\partial\, \mathrm{vec} f(x)}{\partial\, \mathrm{vec}\, x}
        \in \mathbb{R}^{d_{out} \times d_{in}}, \qquad
        J = U \operatorname{diag}(\sigma_1 \ge \dots \ge \sigma_r) V^\top,
        \quad r = \min(d_{in}, d_{out}).

    ``J`` is built column by column with ``jacfwd`` when ``d_in <= d_out`` and
    row by row with ``jacrev`` otherwise (the number of passes is ``r``; the rows through
    :func:`~zsad.canonical.canonical_gradients`, as :func:`transposed_product`'s); the
    singular values are those of the ``r x r`` triangular factor of a QR
    decomposition of ``J`` (or ``Jᵀ``), by an SVD: backward stable, so small
    ones are resolved to about ``eps * sigma_max`` (not ``sqrt(eps) * sigma_max``,
    as the eigenvalues of the Gram matrix ``JᵀJ`` would be). See
    :func:`resolution` for the smallest value a method resolves.

    Args:
      fn: per-sample map ``x -> y`` (arrays of any shape).
      x: one input point (no batch axis).

    Returns:
      ``[r]`` singular values in descending order (the ``|d_in - d_out|`` trivial
      zeros of the larger side are not included).

    Examples:
      >>> import jax.numpy as jnp
      >>> s = jacobian_singular_values(lambda x: 2.0 * x[:2], jnp.ones(3))
      >>> [round(float(v), 4) for v in s]
      [2.0, 2.0]

    References:
      Pennington, Schoenholz & Ganguli, NeurIPS 2017.
    """
    flat, x_flat = flatten_fn(fn, x)
    d_in, d_out = io_dims(fn, jnp.shape(x), jnp.result_type(x))
    jac = jax.jacfwd(flat)(x_flat) if d_in <= d_out else jax.jacrev(canonical_gradients(flat))(x_flat)
    # The SVD of the r x r factor R of J = QR (tall side first) rather than of J itself: LAPACK's SVD
    # of a very wide Jacobian allocates workspace of the larger side squared; the QR does not. Not the
    # eigenvalues of the Gram matrix JᵀJ either: they lose half the digits of the small singular values.
    tall = jac if d_in <= d_out else jac.T
    factor = jnp.linalg.qr(tall, mode="r") if tall.shape[0] > tall.shape[1] else tall
    return jnp.linalg.svd(factor, compute_uv=False)


def resolution(method: str, d_in: int, d_out: int, dtype) -> float:
    """The smallest singular value, relative to ``sigma_max``, that ``method`` resolves in ``dtype``:
    below ``resolution * sigma_max`` a computed value is round-off (an upper bound, not a value).

    ``'exact'`` (QR and SVD, backward stable): ``eps * max(d_in, d_out)``, the numerical-rank
    tolerance of LAPACK and NumPy. ``'lanczos'`` works with eigenvalues of the Gram operator, resolved
    to ``eps * sigma_max**2``: ``sqrt(eps * min(d_in, d_out))``.
    """
    eps = float(jnp.finfo(dtype).eps)
    if method == "exact":
        return eps * max(d_in, d_out)
    return math.sqrt(eps * min(d_in, d_out))
