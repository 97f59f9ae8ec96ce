"""What a network needs in memory, estimated from its shapes before anything is allocated."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from zsad._errors import SpecError, locate
from zsad._types import Network


def available_bytes() -> int | None:
    """Memory available to the default device: the accelerator's limit, or the host's available
    memory (``MemAvailable``) on the CPU. None when unknown."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return int(limit - stats.get("bytes_in_use", 0)) if limit else None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def needed_bytes(net: Network, batch: int, dtype) -> tuple[int, int, int]:
    """A lower bound of what scoring ``net`` on ``batch`` samples holds at once: (parameters, inputs,
    activations) in bytes, from shapes alone (``jax.eval_shape``: nothing is allocated)."""
    itemsize = np.dtype(dtype).itemsize
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    params = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(variables))
    x = jax.ShapeDtypeStruct((1, *net.input_shape), dtype)
    _, outs = jax.eval_shape(net.apply, variables, net.scalars, x)
    per_sample = sum(math.prod(o.shape[1:]) * np.dtype(o.dtype).itemsize for o in outs.values())
    return params, batch * math.prod(net.input_shape) * itemsize, batch * per_sample


def check_fits(net: Network, batch: int, dtype, *, source: str | None, name: str) -> None:
    """Raises a one-line :class:`SpecError` when ``net`` cannot fit in the memory available, saying how
    much it needs: before an allocation of terabytes fails, or the machine starts to swap."""
    available = available_bytes()
    if available is None:
        return
    params, inputs, activations = needed_bytes(net, batch, dtype)
    need = params + inputs + activations
    if need > available:
        raise SpecError(f"{locate(source)}: {name}: expected a network that fits in memory; got one that needs at "
                        f"least {_size(need)} (parameters {_size(params)}, a batch of {batch} inputs "
                        f"{_size(inputs)}, its activations {_size(activations)}), with {_size(available)} available")
