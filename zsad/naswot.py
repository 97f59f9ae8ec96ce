"""NASWOT (Mellor et al. 2021): binary activation codes, their Hamming kernel and its log-determinant.

A zero-cost proxy of :mod:`zsad.proxies`' conventions: :func:`naswot` returns a finite value and
whether it is exact (:data:`zsad.proxies.FLOOR` for a singular kernel, ranked last). ``mask``
arguments restrict the codes to the units that count (a padded network's own units,
:mod:`zsad.arch.padding`): the kernel is then exactly that of the unpadded codes.

References:
  Mellor, Turner, Storkey, Crowley. Neural Architecture Search without Training. ICML 2021.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from zsad._errors import DataError
from zsad.proxies import FLOOR


class NaswotScore(NamedTuple):
    """NASWOT score with the raw sign and log-determinant of the kernel.

    Attributes:
      value: ``logabsdet`` when the kernel has full numerical rank, else
        :data:`FLOOR`.
      valid: whether the kernel has full numerical rank (``sign == 1``).
      sign: sign of ``det K_H``, the product of the signs of its eigenvalues
        (0 when exactly singular).
      logabsdet: ``log|det K_H|``, the sum of ``log|eigenvalue|`` (may be
        :math:`-\\infty` or meaningless rounding noise when ``valid`` is False).
    """

    value: jax.Array
    valid: jax.Array
    sign: jax.Array
    logabsdet: jax.Array


def relu_codes(preactivations: Mapping[str, jax.Array] | Sequence[jax.Array]) -> jax.Array:
    """Binary activation codes of ReLU units, concatenated per sample.

    Unit ``u`` of sample ``i`` has code 1 when its pre-activation is positive.
    A ReLU's output is positive exactly when its input is, so the outputs of
    ReLU layers give the same codes as their inputs.

    Args:
      preactivations: per ReLU layer, an array ``(n, ...)`` of pre-activations
        (or ReLU outputs); a mapping (its values in order) or a sequence.

    Returns:
      Boolean array ``(n, N_A)`` with ``N_A`` the total number of ReLU units.

    Examples:
      >>> relu_codes({'a': jnp.array([[1., -1.], [0., 2.]])}).astype(int)
      Array([[1, 0],
             [0, 1]], dtype=int32)
    """
    arrays = list(preactivations.values()) if isinstance(preactivations, Mapping) else list(preactivations)
    if not arrays:
        raise DataError("preactivations: expected at least one ReLU layer, got none")
    n = jnp.shape(arrays[0])[0] if jnp.ndim(arrays[0]) else None
    for a in arrays:
        if jnp.ndim(a) < 1 or jnp.shape(a)[0] != n:
            raise DataError(
                f"preactivations: expected arrays of shape ({n}, ...), got shapes "
                f"{[tuple(jnp.shape(b)) for b in arrays]}"
            )
    return jnp.concatenate([jnp.reshape(a, (n, -1)) > 0 for a in arrays], axis=1)


#: Units below which the Hamming kernel is computed in integers (codes as int8, products accumulated in
#: int32, every intermediate at most ``2 N_A`` < 2**31); float64 above.
EXACT_INT32_UNITS = 2**30

Codes = jax.Array | Sequence[jax.Array]


def _blocks(codes: Codes, mask: Codes | None) -> tuple[list, list]:
    """``codes`` and ``mask`` as lists of ``(n, units)`` and ``(units,)`` blocks (one array: one block)."""
    if isinstance(codes, (list, tuple)):
        blocks = [jnp.reshape(c, (jnp.shape(c)[0], -1)) if jnp.ndim(c) >= 1 else c for c in codes]
        masks = [None] * len(blocks) if mask is None else [jnp.ravel(m) for m in mask]
        if len(masks) != len(blocks):
            raise DataError(f"mask: expected one mask per block of codes ({len(blocks)}), got {len(masks)}")
    else:
        blocks, masks = [codes], [mask]
    if not blocks:
        raise DataError("codes: expected at least one block of codes, got none")
    for c, m in zip(blocks, masks):
        _check_codes(c, m)
    n = {jnp.shape(c)[0] for c in blocks}
    if len(n) > 1:
        raise DataError(f"codes: expected blocks of one batch size, got {sorted(n)}")
    return blocks, masks


def _hamming_kernel(blocks: list, masks: list, dtype) -> jax.Array:
    """``K = C C^T + (1 - C)(1 - C)^T`` in ``dtype`` over the units the masks keep; exact integer entries.

    Summed over the blocks (a network's layers, never concatenated), each as ``units - d_H`` with the
    Hamming distance ``d_H[i, j] = s_i + s_j - 2 C_i . C_j`` (``s_i`` the ones of code ``i``): one product
    of the codes per block, in int8 with int32 accumulation (several times faster than a float product on
    the CPU) below :data:`EXACT_INT32_UNITS` units, in float64 above.
    """
    exact = sum(int(jnp.shape(c)[1]) for c in blocks) < EXACT_INT32_UNITS
    kind, acc = (jnp.int8, jnp.int32) if exact else (jnp.float64, jnp.float64)
    total = None
    for codes, mask in zip(blocks, masks):
        c = codes.astype(kind)
        if mask is None:
            units = jnp.asarray(c.shape[1], acc)
        else:
            m = jnp.asarray(mask).astype(kind)
            c = c * m[None, :]
            units = jnp.sum(m, dtype=acc)
        ones = jnp.sum(c, axis=1, dtype=acc)
        both = jax.lax.dot_general(c, c, (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST,
                                   preferred_element_type=acc)
        k = units - ((ones[:, None] + ones[None, :]) - 2 * both)
        total = k if total is None else total + k
    return total.astype(dtype)


def _check_codes(codes: jax.Array, mask: jax.Array | None = None) -> None:
    if jnp.ndim(codes) != 2:
        raise DataError(f"codes: expected shape (n, N_A), got shape {tuple(jnp.shape(codes))}")
    if mask is not None and tuple(jnp.shape(mask)) != tuple(jnp.shape(codes))[1:]:
        raise DataError(f"mask: expected shape ({jnp.shape(codes)[1]},) (one per unit), got shape "
                        f"{tuple(jnp.shape(mask))}")


def naswot_kernel(codes: Codes, mask: Codes | None = None) -> jax.Array:
    """The Hamming agreement kernel of binary activation codes.

    .. math::
        K_H[i, j] = N_A - d_H(c_i, c_j)
                  = c_i \\cdot c_j + (1 - c_i) \\cdot (1 - c_j)

    Entries are integers in ``[0, N_A]``, computed exactly (in integers below
    :data:`EXACT_INT32_UNITS` units, in float64 above).

    Args:
      codes: ``(n, N_A)`` binary codes (bool or 0/1), e.g. from :func:`relu_codes`; or a sequence of
        ``(n, ...)`` blocks of them (a network's layers), which need not be concatenated.
      mask: ``(N_A,)`` bool, the units that count (None: all): the kernel of ``codes[:, mask]``,
        with a shape that does not depend on the mask (e.g. a padded network's units); for blocks,
        one mask per block.

    Returns:
      ``(n, n)`` kernel in the default float dtype.

    Examples:
      >>> naswot_kernel(jnp.array([[1, 1, 0], [0, 1, 1]]))
      Array([[3., 1.],
             [1., 3.]], dtype=float32)
      >>> naswot_kernel(jnp.array([[1, 1, 0, 0], [0, 1, 1, 0]]), mask=jnp.array([True, True, True, False]))
      Array([[3., 1.],
             [1., 3.]], dtype=float32)
      >>> naswot_kernel([jnp.array([[1], [0]]), jnp.array([[1, 0, 0], [1, 1, 0]])],
      ...               mask=[jnp.array([True]), jnp.array([True, True, False])])
      Array([[3., 1.],
             [1., 3.]], dtype=float32)
    """
    blocks, masks = _blocks(codes, mask)
    out = jnp.result_type(float)
    with jax.enable_x64(True):
        return _hamming_kernel(blocks, masks, jnp.float64).astype(out)


def naswot(codes: Codes, mask: Codes | None = None) -> NaswotScore:
    """NASWOT score of Mellor et al. (2021): log-determinant of the Hamming kernel.

    .. math::
        s = \\log \\lvert \\det K_H \\rvert, \\qquad
        K_H[i, j] = N_A - d_H(c_i, c_j)

    over the binary ReLU codes ``c_i`` of the ``n`` samples of a batch (all
    ReLU layers concatenated, :func:`relu_codes`). ``K_H`` is a Gram matrix
    (positive semidefinite) with integer entries, so ``det K_H`` is 0 or at
    least 1. It is singular whenever two samples share a code or the codes are
    linearly dependent; the paper's value is then :math:`-\\infty`. Here the
    kernel is factorized in float64 and counted as singular when its smallest
    eigenvalue is below ``n * eps * lambda_max`` (numpy's ``matrix_rank``
    tolerance); a singular kernel gives ``valid=False`` and
    ``value=FLOOR`` (ranked last), with the raw ``sign`` and ``logabsdet``
    kept. Higher is better.

    Args:
      codes: ``(n, N_A)`` binary codes, or blocks of them (see :func:`naswot_kernel`).
      mask: ``(N_A,)`` bool, the units that count (None: all), or one per block (see :func:`naswot_kernel`).

    Returns:
      :class:`NaswotScore`.

    References:
      Mellor et al., Neural Architecture Search without Training, ICML 2021,
      eq. (2) and its reference code (``hooklogdet``).

    Examples:
      >>> s = naswot(jnp.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]))
      >>> round(float(s.value), 4), bool(s.valid)   # det = 32
      (3.4657, True)
    """
    blocks, masks = _blocks(codes, mask)
    n = jnp.shape(blocks[0])[0]
    out = jnp.result_type(float)
    with jax.enable_x64(True):
        k = _hamming_kernel(blocks, masks, jnp.float64)
        # One symmetric eigendecomposition gives both the determinant and the rank test (K is
        # symmetric: det K = prod(eig)). A second LAPACK call (slogdet's LU) beside it would let
        # XLA:CPU run the two batched kernels at once, and on a two-thread pool both then wait
        # for workers that never come free (a deadlock in jaxlib's ParallelBatchMap).
        eig = jnp.linalg.eigvalsh(k)
        sign = jnp.prod(jnp.sign(eig))
        logabsdet = jnp.sum(jnp.log(jnp.abs(eig)))
        tol = max(n, 1) * float(jnp.finfo(jnp.float64).eps) * jnp.max(jnp.abs(eig))
        valid = (sign > 0) & (eig[0] > tol) & jnp.isfinite(logabsdet)
        value = jnp.where(valid, logabsdet, FLOOR)
        return NaswotScore(value.astype(out), valid, sign.astype(out), logabsdet.astype(out))
