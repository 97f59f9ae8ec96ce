"""Random draws in blocks, bit-identical to ``jax.random``'s whole-array draws.

With JAX's default key (threefry, ``jax_threefry_partitionable`` on) element
``i`` of ``jax.random.normal(key, (n,))`` depends only on ``key`` and ``i``:
its bits are ``threefry2x32(key, (0, i))``, the two words xor-ed. So the array
can be produced block by block, each block by one small program whose shape
does not depend on ``n``. :mod:`zsad.rank` uses this to draw a structure's
initial weights once per seed, outside the structure's compiled program, and
to share them across every architecture of that structure (they differ only
in the scalars that scale the draws): one compilation serves every structure,
and the random numbers are those that :func:`zsad.arch.build.build`'s
``init`` draws itself.

:func:`available` says whether the current key type and configuration allow
this; callers fall back to drawing inside their programs otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p

#: Distributions drawn in blocks (as :func:`jax.random.normal`, ``truncated_normal(-2, 2)``, ``uniform(-1, 1)``).
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
#: Elements per block: one compiled program per (distribution, dtype, seeds) draws any size.
BLOCK = 1 << 16
_TRUNCATION = 2.0  # zsad.arch.build's truncated normal: jax.random.truncated_normal(key, -2, 2, ...)
_MAX_SIZE = 1 << 32


def available() -> bool:
    """Whether :func:`block` reproduces ``jax.random`` here (threefry keys, partitionable bits)."""
    if not jax.config.jax_threefry_partitionable:
        return False
    return str(jax.random.key_impl(jax.random.key(0))).startswith("threefry2x32")


def _bits(key: jax.Array, start: jax.Array, size: int, nbits: int) -> jax.Array:
    """Elements ``start .. start + size - 1`` of ``jax.random.bits(key, (n,))`` for any n > those (uint32/64)."""
    return _bits_at(key, lax.convert_element_type(start, np.uint32) + lax.iota(np.uint32, size), nbits)


def _bits_at(key: jax.Array, counts: jax.Array, nbits: int) -> jax.Array:
    """Elements ``counts`` (uint32, any shape) of ``jax.random.bits(key, (n,))`` for any n > those."""
    k1, k2 = (jnp.broadcast_to(k, counts.shape) for k in jax.random.key_data(key))  # as vmap needs them
    hi, lo = threefry2x32_p.bind(k1, k2, jnp.zeros_like(counts), counts)
    if nbits == 32:
        return hi ^ lo
    return lax.shift_left(hi.astype(np.uint64), np.uint64(32)) | lo.astype(np.uint64)


def _uniform(bits: jax.Array, dtype, minval, maxval) -> jax.Array:
    """``jax.random.uniform``'s map from bits to ``[minval, maxval)``."""
    finfo = jnp.finfo(dtype)
    uint = bits.dtype
    float_bits = lax.shift_right_logical(bits, jnp.array(finfo.bits - finfo.nmant, uint))
    float_bits = lax.bitwise_or(float_bits, jnp.asarray(np.array(1.0, dtype).view(uint), dtype=uint))
    floats = lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0, dtype)
    minval = lax.convert_element_type(minval, dtype)
    maxval = lax.convert_element_type(maxval, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)


def at(dist: str, key: jax.Array, index: jax.Array, dtype) -> jax.Array:
    """Elements ``index`` (non-negative integers, any shape, may be traced) of the whole-array draw of
    ``dist`` under ``key``, as :func:`block` draws them: e.g. a layer's weights at their place in a
    larger array, whatever shape that array has.

    Example:
      >>> import jax, numpy as np
      >>> key = jax.random.key(0)
      >>> whole = jax.random.normal(key, (10,))
      >>> index = np.array([[7, 2], [0, 9]])
      >>> bool(np.array_equal(at("normal", key, index, "float32"), whole[index]))
      True
    """
    dtype = jnp.dtype(dtype)
    return _transform(dist, _bits_at(key, lax.convert_element_type(index, np.uint32), jnp.finfo(dtype).bits), dtype)


def block(dist: str, key: jax.Array, start: jax.Array, size: int, dtype) -> jax.Array:
    """Elements ``start .. start + size - 1`` of the whole-array draw of ``dist`` under ``key``.

    ``normal``: ``jax.random.normal(key, (n,), dtype)``; ``truncated_normal``:
    ``jax.random.truncated_normal(key, -2, 2, (n,), dtype)``; ``uniform``:
    ``jax.random.uniform(key, (n,), dtype, -1, 1)``, for any ``n >= start + size``.
    Jittable; ``start`` may be traced.
    """
    dtype = jnp.dtype(dtype)
    return _transform(dist, _bits(key, start, size, jnp.finfo(dtype).bits), dtype)


def _transform(dist: str, bits: jax.Array, dtype) -> jax.Array:
    """``dist``'s values from random bits, as ``jax.random`` makes them."""
    if dist == "uniform":
        return _uniform(bits, dtype, -1.0, 1.0)
    sqrt2 = np.array(np.sqrt(2), dtype)
    if dist == "normal":
        lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
        return lax.mul(sqrt2, lax.erf_inv(_uniform(bits, dtype, lo, np.array(1.0, dtype))))
    if dist == "truncated_normal":
        lower, upper = jnp.asarray(-_TRUNCATION, dtype), jnp.asarray(_TRUNCATION, dtype)
        a, b = lax.erf(lower / sqrt2), lax.erf(upper / sqrt2)
        out = sqrt2 * lax.erf_inv(_uniform(bits, dtype, a, b))
        return jnp.clip(out, lax.nextafter(lower, jnp.asarray(np.inf, dtype)),
                        lax.nextafter(upper, jnp.asarray(-np.inf, dtype)))
    raise ValueError(f"unknown distribution {dist!r}; expected one of {', '.join(DISTRIBUTIONS)}")


@functools.lru_cache(maxsize=None)
def _block_program(dist: str, dtype: str, folded: bool):
    def one(key, fold, start):
        return block(dist, jax.random.fold_in(key, fold) if folded else key, start, BLOCK, dtype)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def draw(dist: str, keys: jax.Array, size: int, dtype, *, fold: int | None = None) -> np.ndarray:
    """``[len(keys), size]``: the whole-array draw of ``dist`` of length ``size`` under each key (host array);
    with ``fold``, under ``jax.random.fold_in(key, fold)``, folded in the same program.

    Runs one compiled block program ``ceil(size / BLOCK)`` times, whatever ``size`` and ``fold``.
    """
    if size >= _MAX_SIZE:
        raise ValueError(f"size: expected fewer than 2**32 elements; got {size}")
    fn = _block_program(dist, jnp.dtype(dtype).name, fold is not None)
    blocks = [fn(keys, np.uint32(fold or 0), np.uint32(start)) for start in range(0, size, BLOCK)]
    if not blocks:
        return np.zeros((keys.shape[0], 0), dtype)
    return np.concatenate(jax.device_get(blocks), axis=1)[:, :size]
