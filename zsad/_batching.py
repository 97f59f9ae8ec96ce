"""How a per-seed (or per-architecture) function is mapped over its leading axis.

On accelerators ``vmap`` batches the seeds into one wide program. On the CPU it
is slower: vmapping over initializations makes every weight batched, which
turns each convolution into a grouped convolution and each dense layer into a
batched matmul, and XLA:CPU runs grouped convolutions an order of magnitude
below its plain (Eigen) convolutions. There the seeds run one after another
(``lax.map``), each with unbatched weights, which also bounds memory to one
seed's activations.
"""

from __future__ import annotations

from typing import Callable

import jax


def map_leading(fn: Callable, xs, *, batched: bool | None = None):
    """``fn`` over the leading axis of ``xs``: ``vmap`` when ``batched``, else ``lax.map``.

    Args:
      fn: a function of one slice of ``xs``.
      xs: a pytree of arrays sharing a leading axis.
      batched: ``vmap`` (True) or ``lax.map`` (False); None: ``vmap`` unless JAX's
        default backend is the CPU.

    Returns:
      ``fn``'s outputs stacked on a leading axis, identical either way (up to rounding).
    """
    if batched is None:
        batched = jax.default_backend() != "cpu"
    return jax.vmap(fn)(xs) if batched else jax.lax.map(fn, xs)
