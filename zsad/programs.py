"""The compiled measurement program of one structure, as :mod:`zsad.scorer` keeps and runs it.

:func:`make_program` wraps :func:`zsad.measure.make_measure` with what does not depend on scalars
(parameter and FLOP counts, NASWOT's code layers, sigma2's segment, the labels of the gradient
proxies, the initialization's draws shared across a structure's architectures);
:data:`PROGRAM_CACHE` keeps the recent ones (an LRU shared by every run in the process), and
:func:`chunk_program` runs a chunk of architectures over several devices.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import numpy as np

from zsad import draws, proxies
from zsad._batching import map_leading
from zsad._types import Network
from zsad.arch.spec import Activation, Architecture, named_layers
from zsad.measure import MeasureConfig, make_measure, measure_fn
from zsad.ranking import RankOptions

PROGRAMS = 8  # compiled programs kept (LRU), shared by every run in the process
PROGRAM_CACHE: "collections.OrderedDict[Any, Program]" = collections.OrderedDict()
#: The most elements (seeds x the initialization's draws) drawn once and shared by a structure's
#: architectures; larger networks draw inside their program (same numbers, no memory held).
SHARED_DRAWS = 1 << 26


# --------------------------------------------------------------------------- the compiled program

def largest_block_growth(profile: Sequence[float]) -> float:
    """``max_b ln(NLC_b / NLC_{b-1})`` over the top-level outputs (``NLC_{-1} = 1``, the input): how much
    more nonlinear the most nonlinear single block makes the network; NaN where a prefix's NLC is not
    finite. On the host in float64, so that every program that gives the same profile gives the same value.

    Examples:
      >>> round(largest_block_growth([1.0, 2.0, 3.0]), 4)   # ln 2 (the second block) beats ln 1.5
      0.6931
    """
    logs = np.log(np.concatenate([[1.0], np.asarray(profile, np.float64)]))
    return float(np.max(np.diff(logs)))


@dataclass
class Program:
    """One structure's compiled program(s) and what does not depend on scalars."""

    measure: Callable  # (per_seed, x, labels, scalars) -> zsad.measure.Measurements (unjitted)
    fn: Callable  # the same, jitted (zsad.measure.make_measure)
    draws: tuple  # the initialization's draws made outside the program and shared (empty: drawn inside)
    layer_names: tuple[str, ...]
    code_layers: tuple | None
    params: int | None
    flops: int | None
    labels: np.ndarray | None
    chunked: dict = dataclasses.field(default_factory=dict)  # (per-device length, devices) -> program of a chunk
    compiled: bool = False  # fn has run (or been compiled ahead) once


def jacob_cov_degenerate(batch: int, input_shape: Sequence[int]) -> bool:
    """jacob_cov is a constant when the batch exceeds the input dimension: the n x n correlation matrix of
    the per-sample input gradients has rank at most d_in, so its zero eigenvalues dominate the score."""
    return batch > math.prod(input_shape)


def make_program(net: Network, options: RankOptions, code_layers: tuple | None, *, params: int | None,
                  flops: int | None, dtype, batched: bool, segment_range: tuple[int, int] | None = None,
                  sigma2_output: str | None = None, structure: Any = None, code_mask: Callable | None = None,
                  segment_dims: Callable | None = None) -> Program:
    metrics = tuple(m for m in options.metrics if m not in ("params", "flops")
                    and not (m == "jacob_cov" and jacob_cov_degenerate(options.batch, net.input_shape)))
    config = MeasureConfig(metrics, options.tangents, batched, code_layers, tuple(net.input_shape), segment_range,
                           sigma2_output, code_mask=code_mask, segment_dims=segment_dims)
    shared = (net.init_with is not None and draws.available()
              and options.seeds * sum(math.prod(sh) for *_, shapes in net.draws for sh in shapes) <= SHARED_DRAWS)
    labels = None
    if "grad_norm" in metrics or "snip" in metrics:
        variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        x = jax.ShapeDtypeStruct((options.batch, *net.input_shape), dtype)
        y, _ = jax.eval_shape(net.apply, variables, net.scalars, x)
        classes = max(1, math.prod(y.shape[1:]))
        labels = np.random.default_rng(options.data_seed + 1).integers(0, classes, options.batch).astype(np.int32)
    return Program(measure_fn(net, config), make_measure(net, config, structure=structure),
                    net.draws if shared else (), tuple(net.layer_names), code_layers, params, flops, labels)


def chunk_program(measure: Callable, devices: Sequence, batched: bool) -> Callable:
    """``measure`` over a chunk of architectures (scalars with a leading architecture axis).

    The architecture axis is split over ``devices`` (``shard_map``, one program
    for all of them). On each device the architectures run ``vmap``-ed when
    ``batched`` (accelerators) or one after another with ``lax.map`` (CPU:
    nothing to gain from batching, and unbatched ``lax.switch`` computes only the
    chosen NAS-Bench-201 operations).
    """

    def local(per_seed, x, labels, scalars):
        one = lambda s: measure(per_seed, x, labels, s)  # noqa: E731
        return map_leading(one, scalars, batched=batched)

    if len(devices) == 1:
        return jax.jit(local)
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.asarray(devices), ("arch",))
    # check_vma=False: with the check on, jax 0.10.2 returns one shard's jacob_cov (its float64
    # section, jax.enable_x64 inside the body) for every shard; tests/test_cluster.py compares rows.
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P("arch")), out_specs=P("arch"),
                                 check_vma=False))


def xla_flops(net: Network, dtype) -> int:
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    scalars = net.scalars
    value = proxies.flops(lambda v, x: net.apply(v, scalars, x)[0], variables,
                          jax.ShapeDtypeStruct((1, *net.input_shape), dtype))
    return int(round(value))


def segment_range(arch: Architecture, net: Network) -> tuple[int, int] | None:
    """The layers of ``sigma2``'s Jacobian: ``zsad score``'s default segment (None: input to output)."""
    if net.segment is None:
        return None
    from zsad.score import resolve_between

    start, stop, _ = resolve_between(arch, list(net.layer_names), None)
    return start, stop


def code_layers(arch: Architecture) -> tuple | None:
    """Pre-activations of the top-level activation layers: the previous layer's output (None: the input)."""
    named = named_layers(arch.layers)
    out = []
    for i, (_, layer) in enumerate(named):
        if isinstance(layer, Activation):
            out.append(named[i - 1][0] if i > 0 else None)
    return tuple(out) or None
