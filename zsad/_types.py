"""Shared types: the built network every engine consumes."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

PyTree = Any
Scalars = PyTree  # pytree of jnp arrays: traced, never compile-time constants


class Network(NamedTuple):
    """A built network: pure functions of (variables, scalars, inputs).

    Attributes:
      init: ``init(key, scalars) -> variables``; jittable, scalars traced.
      apply: ``apply(variables, scalars, x) -> (y, intermediates)`` where
        ``intermediates`` is a dict from layer name to that layer's output (in
        network order, the last one being ``y``). Batch-norm layers use the
        statistics stored in ``variables`` (see ``calibrate``), so ``apply`` is
        a per-sample function of ``x``.
      calibrate: ``calibrate(variables, scalars, x) -> variables`` computes
        batch-norm statistics on the batch ``x`` and stores them in the returned
        variables (identity for networks without batch norm).
      scalars: default scalars of this architecture (a pytree of arrays).
      layer_names: names of the layers whose outputs ``apply`` returns, in order.
      input_shape: shape of one sample (no batch axis).
      segment: ``segment(variables, scalars, h, start, stop) -> h'`` runs the
        top-level layers ``start .. stop-1`` on ``h`` (the output of layer
        ``start - 1``, or the input when ``start == 0``); ``start``/``stop`` are
        static. ``None`` where the network cannot be cut (foreign modules).
      draws: the random arrays ``init`` draws that do not depend on scalars, as
        ``(dist, fold, dtype, shapes)``: one array of distribution ``dist`` (a
        :data:`zsad.draws.DISTRIBUTIONS` name) under ``jax.random.fold_in(key, fold)``,
        whose consecutive pieces, reshaped to ``shapes``, the layers scale.
        Empty where ``init`` cannot be split (foreign modules, NAS-Bench-201).
      init_with: ``init_with(flats, key, scalars) -> variables`` equals
        ``init(key, scalars)`` given ``flats = {dist: [those pieces]}`` for every
        entry of ``draws``; lets a caller draw once and share the draws across
        architectures that differ only in scalars. ``None`` where ``draws`` is empty.
      apply_calibrating: ``apply_calibrating(variables, scalars, x) -> ((y, intermediates),
        calibrated)``: ``calibrated = calibrate(variables, scalars, x)`` and ``apply(calibrated,
        scalars, x)`` in one forward pass, the batch-norm statistics of ``x`` held constant
        (``stop_gradient``), so its derivatives in ``x`` are those of ``apply`` with them frozen.
        ``None``: call the two.
      stacked: names of top-level parameter collections (the first key under ``params``) whose
        leaves hold several layers stacked on their leading axis (a scanned stage: NAS-Bench-201's
        cells), so that per-layer metrics (grad_norm) take each slice as a layer.
    """

    init: Callable[[jax.Array, Scalars], PyTree]
    apply: Callable[[PyTree, Scalars, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    calibrate: Callable[[PyTree, Scalars, jax.Array], PyTree]
    scalars: Scalars
    layer_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    segment: Callable[..., jax.Array] | None = None
    draws: tuple[tuple[str, int, str, tuple[tuple[int, ...], ...]], ...] = ()
    init_with: Callable[[dict, jax.Array, Scalars], PyTree] | None = None
    apply_calibrating: Callable[[PyTree, Scalars, jax.Array], tuple] | None = None
    stacked: tuple[str, ...] = ()
