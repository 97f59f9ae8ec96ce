"""Ranking a search space: many architectures, one compiled program per structure, resumable results.

:func:`rank_space` scores every architecture of a :class:`zsad.space.Space`
and ranks them. Per architecture it measures the NLC (mean and standard
deviation over ``seeds`` initializations) and the baseline zero-cost proxies
(:mod:`zsad.proxies`), all in one jitted program per network *structure*:
architectures that differ only in scalars (weight/bias scales, residual and
shaping scalars, activation parameters) share it, and the whole NAS-Bench-201
space shares one (the masked network of :mod:`zsad.spaces.nasbench201`, operation
choice as data). Architectures that differ only in activation functions share
one too: their activation layers choose the function by a traced index
(:func:`zsad.arch.build.with_choices`; on the CPU only the chosen function
runs). MLPs (dense and activation layers) that differ in widths and depths share
one too: widths padded to power-of-two buckets, depth a masked loop
(:mod:`zsad.arch.padding`), with the metrics of their own programs. The space
is streamed in chunks; within a chunk, architectures are grouped by shape
signature so that each program is compiled once (a small LRU keeps recent
programs across chunks). Memory does not grow with the size of
the space beyond one small row per architecture.

Where the architectures are scored is a :class:`Runner`: this process by
default (:func:`local_runner`), or a Ray cluster (``ray=``,
:mod:`zsad.cluster`); a runner gets a :class:`Job` and nothing else of this
module.

Results (``out``, :mod:`zsad.results`): CSV, JSONL or Parquet by extension, one row per
architecture with the columns of :func:`zsad.ranking.columns`. Rows are appended and flushed
as they are computed; at the end the file is rewritten atomically, in the
space's order, with ``score`` and ``rank`` filled. A sidecar ``FILE.meta.json``
records the space's fingerprint, the options, every column's direction and
description and the score formula; ``resume=True`` reads it back, refuses a
file from another space or other options, and computes only the architectures
not yet in the file. Same space, seed and options give a byte-identical file.

Degenerate architectures (constant output, e.g. NAS-Bench-201 cells whose
output node is unreachable), diverged ones (non-finite activations in every
initialization) and failed ones (invalid, or an error while building or
computing) get ``null`` metrics with ``status`` and ``reason``, and rank last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad import _interrupt as interrupt
from zsad import draws
from zsad.spaces import nasbench201 as nb201, nasbench201_net as nb201_net
from zsad import proxies
from zsad._batching import map_leading
from zsad._errors import SpecError, WriteError, ZsadError
from zsad._files import FileLock
from zsad._memory import check_fits
from zsad._types import Network
from zsad.arch import padding
from zsad.arch.build import activation_fns, build, signature, structure, with_choices
from zsad.arch.spec import Activation, Architecture, Input, named_layers
from zsad.data import load_inputs
from zsad.measure import (  # noqa: F401  (SIGMA2_*, seed_inputs: also zsad.rank's)
    SIGMA2_PROBES, SIGMA2_SAMPLES, MeasureConfig, all_finite as _all_finite, make_measure, measure_fn, seed_inputs,
)
from zsad.score import seed_keys
from zsad.space import Space, SpaceItem
from zsad.ranking import (
    DIRECTION, RankOptions, columns, metric_columns, parse_by, score_meta, score_rows,
)
from zsad.results import check_out, open_results
from zsad.verdict import HEALTHY_MAX, LINEAR_MAX



DESCRIPTION: dict[str, str] = {
    "arch": "architecture name (a built-in space: the architecture in the space's notation)",
    "status": "ok, degenerate (constant output), diverged (non-finite activations) or failed",
    "reason": "why metrics are null or partial; empty when every metric is defined",
    "nlc": f"nonlinearity coefficient of the output, mean over seeds; best inside the band "
           f"[{LINEAR_MAX}, {HEALTHY_MAX}] (zsad.verdict)",
    "nlc_std": "standard deviation of the NLC over seeds (sample, ddof=1); lower is more reliable",
    "nlc_block": "largest growth of the NLC across one top-level block, max_b ln(NLC_b / NLC_{b-1}) over the "
                 "profile of prefixes (NAS-Bench-201: stem, cells, reductions, head), mean over seeds; lower "
                 "is better (no single block far more nonlinear than the rest)",
    "sigma2": "mean squared singular value of the Jacobian of the hidden layers (zsad score's default "
              "segment, which ends before global pooling and the head; NAS-Bench-201: input to the last "
              "cell's output; input to output where the network cannot be cut), Hutchinson's estimate on "
              f"{SIGMA2_SAMPLES} samples x {SIGMA2_PROBES} probes, mean over seeds; best near 1 "
              "(vanishing below, exploding above)",
    "params": "trainable parameters (exact count); higher taken as better (zero-cost NAS convention)",
    "flops": "FLOPs of one sample's forward pass. Architecture files: XLA's count (a multiply-add counts 2); "
             "NAS-Bench-201: the benchmark's convention (a multiply-add counts 1, as flops_m, "
             "zsad.spaces.nasbench201.flops); other built-in spaces: their flops method (zsad.spaces)",
    "naswot": "NASWOT, log|det K_H| of the Hamming kernel of activation codes (Mellor et al. 2021), "
              "mean over seeds; higher is better",
    "synflow": "log of synflow (Tanaka et al. 2020), float64, batch norm bypassed, mean over seeds; higher is better",
    "grad_norm": "log of the summed per-layer gradient norms of the cross-entropy (Abdelfattah et al. 2021), "
                 "mean over seeds; higher is better",
    "snip": "log of the summed |theta * dL/dtheta| (Lee et al. 2019), mean over seeds; higher is better",
    "jacob_cov": "jacob_cov score of the input-gradient correlations (Mellor et al. v1), mean over seeds; "
                 "higher is better",
    "score": "ranking score (see score.formula), higher is better; null ranks last",
    "rank": "1 = best; ties keep the space's order",
}

_CHUNK = 256  # architectures read from the space at a time (grouped by structure within)
_PROGRAMS = 8  # compiled programs kept (LRU), shared by every run in the process
_PROGRAM_CACHE: "collections.OrderedDict[Any, _Program]" = collections.OrderedDict()
_FLOPS_CACHE: dict[Any, int] = {}  # FLOPs per structure (activation functions included), see Scorer._flops
#: The most elements (seeds x the initialization's draws) drawn once and shared by a structure's
#: architectures; larger networks draw inside their program (same numbers, no memory held).
_SHARED_DRAWS = 1 << 26
#: Whether MLPs of one :func:`zsad.arch.padding.padded_signature` share one padded program (the same
#: metrics as their own programs, to float rounding). False: every shape compiles its own (a switch for
#: comparisons; the rows do not depend on it).
PADDED_MLPS = True


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
class _Program:
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


def _make_program(net: Network, options: RankOptions, code_layers: tuple | None, *, params: int | None,
                  flops: int | None, dtype, batched: bool, segment_range: tuple[int, int] | None = None,
                  sigma2_output: str | None = None, structure: Any = None, code_mask: Callable | None = None,
                  segment_dims: Callable | None = None) -> _Program:
    metrics = tuple(m for m in options.metrics if m not in ("params", "flops")
                    and not (m == "jacob_cov" and jacob_cov_degenerate(options.batch, net.input_shape)))
    config = MeasureConfig(metrics, options.tangents, batched, code_layers, tuple(net.input_shape), segment_range,
                           sigma2_output, code_mask=code_mask, segment_dims=segment_dims)
    shared = (net.init_with is not None and draws.available()
              and options.seeds * sum(math.prod(sh) for *_, shapes in net.draws for sh in shapes) <= _SHARED_DRAWS)
    labels = None
    if "grad_norm" in metrics or "snip" in metrics:
        variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        x = jax.ShapeDtypeStruct((options.batch, *net.input_shape), dtype)
        y, _ = jax.eval_shape(net.apply, variables, net.scalars, x)
        classes = max(1, math.prod(y.shape[1:]))
        labels = np.random.default_rng(options.data_seed + 1).integers(0, classes, options.batch).astype(np.int32)
    return _Program(measure_fn(net, config), make_measure(net, config, structure=structure),
                    net.draws if shared else (), tuple(net.layer_names), code_layers, params, flops, labels)


def _chunk_program(measure: Callable, devices: Sequence, batched: bool) -> Callable:
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


def _xla_flops(net: Network, dtype) -> int:
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    scalars = net.scalars
    value = proxies.flops(lambda v, x: net.apply(v, scalars, x)[0], variables,
                          jax.ShapeDtypeStruct((1, *net.input_shape), dtype))
    return int(round(value))


def _segment_range(arch: Architecture, net: Network) -> tuple[int, int] | None:
    """The layers of ``sigma2``'s Jacobian: ``zsad score``'s default segment (None: input to output)."""
    if net.segment is None:
        return None
    from zsad.score import resolve_between

    start, stop, _ = resolve_between(arch, list(net.layer_names), None)
    return start, stop


def _code_layers(arch: Architecture) -> tuple | None:
    """Pre-activations of the top-level activation layers: the previous layer's output (None: the input)."""
    named = named_layers(arch.layers)
    out = []
    for i, (_, layer) in enumerate(named):
        if isinstance(layer, Activation):
            out.append(named[i - 1][0] if i > 0 else None)
    return tuple(out) or None


# --------------------------------------------------------------------------- scoring rows

def _failure(err: Exception) -> str:
    message = str(err).splitlines()[0] if str(err) else ""
    return message if isinstance(err, ZsadError) else f"{type(err).__name__}: {message}"


def _short(value: float) -> float:
    """Rounds to the shortest decimal that identifies the value in the computation's dtype."""
    if jnp.result_type(float) == jnp.float32:
        return float(str(np.float32(value)))
    return float(value)


_UNDEFINED = {
    "naswot": "singular activation-code kernel: inputs share a code pattern",
    "synflow": "zero or overflowing synaptic flow",
    "grad_norm": "zero or non-finite gradient",
    "snip": "zero or non-finite gradient",
    "jacob_cov": "constant or non-finite input gradients",
}


@dataclass(frozen=True)
class SpaceContext:
    """What scoring needs of a space besides its items: picklable, so cluster workers get it whole."""

    input: Input | None
    base_dir: Path
    source: str | None

    @classmethod
    def of(cls, space: Space) -> "SpaceContext":
        return cls(space.input, space.base_dir, space.source)


@functools.lru_cache(maxsize=1)
def _compile_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0)) or 1,
                                                 thread_name_prefix="zsad-compile")


def _builtin_key(item: Any) -> tuple:
    """The program key of a :class:`zsad.space.BuiltinArch`: its space, configuration, input and group."""
    space = item.space
    return ("builtin", space.name, json.dumps(space.options(), sort_keys=True), tuple(space.input_shape),
            space.group(item.arch))


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _columns(m) -> dict:
    """:class:`zsad.measure.Measurements` as ``{name: values}`` with ``{proxy}_valid`` and ``nlc_profile``."""
    out = {}
    for name, value in m._asdict().items():
        if value is None:
            continue
        if isinstance(value, proxies.ProxyScore):
            out[name], out[f"{name}_valid"] = value.value, value.valid
        elif name == "layers":
            out["nlc_profile"] = value.nlc
        else:
            out[name] = value
    return out


class Scorer:
    """Turns space items into result rows.

    Items are grouped by structure; each structure's program is compiled once
    (an LRU keeps recent ones across calls and runs). With one CPU device each
    architecture is one call of its structure's program. With several devices,
    or on an accelerator, a group runs in chunks: the architectures' scalars are
    stacked on a leading axis that is split over every device (``shard_map``),
    ``vmap``-ed on accelerators and ``lax.map``-ped on CPU. A chunk holds a power
    of two architectures per device (at most ``per_device``; the last is padded
    by repeating an architecture), which bounds the compiled variants per
    structure to a handful. Results do not depend on the devices or the chunking:
    every architecture uses the same initialization keys.

    Args:
      context: :meth:`SpaceContext.of` the space.
      options: what to compute.
      devices: devices to use (default: every device of JAX's default backend).
      per_device: the most architectures per device in one call (default: 8 on
        CPU, 16 on accelerators).
    """

    def __init__(self, context: SpaceContext, options: RankOptions, *, devices: Sequence | None = None,
                 per_device: int | None = None):
        self.context, self.options = context, options
        self.devices = tuple(jax.devices() if devices is None else devices)
        if not self.devices:
            raise SpecError("devices: expected at least one device; got none")
        self.batched = self.devices[0].platform != "cpu"
        self.chunked = self.batched or len(self.devices) > 1
        self.per_device = per_device or (16 if self.batched else 8)
        self.inputs: collections.OrderedDict[Any, tuple[jax.Array, dict]] = collections.OrderedDict()
        self._shared: tuple[_Program | None, dict] = (None, {})
        self.keys = seed_keys(options.seed, options.seeds)

    # ---- grouping

    @staticmethod
    def group_key(item: SpaceItem) -> Any:
        arch = item.arch
        if item.error is not None:
            return ("error",)
        if item.is_nb201:
            return ("nb201",)
        if item.is_builtin:
            return _builtin_key(arch)
        if arch.module is not None:  # a PyTorch module with init: shares its program across weight/bias_std
            init = arch.init.dist if arch.init_set else None
            return ("module", arch.module, str(arch.base_dir), tuple(arch.input.shape), arch.input.dtype, init)
        padded = padding.padded_signature(arch) if PADDED_MLPS else None
        if padded is not None:  # MLPs of other widths and depths share it (zsad.arch.padding)
            return ("padded", padded)
        return ("layers", signature(arch.layers), tuple(arch.input.shape), arch.input.dtype)

    @staticmethod
    def choices(group: Sequence[SpaceItem]) -> tuple | None:
        """The activation functions that ``group`` (one :meth:`group_key`) holds at each activation node;
        None where every node has one function (no choice to make). A padded group (MLPs of one
        :func:`~zsad.arch.padding.padded_signature`): the functions of all its architectures."""
        archs = [item.arch for item in group if item.error is None and not item.is_nb201
                 and not item.is_builtin and item.arch.module is None]
        if not archs:
            return None
        if Scorer.group_key(group[0])[0] == "padded":
            return tuple(sorted({fn for a in archs for fn in padding.mlp_shape(a).fns}))
        per_node = tuple(tuple(sorted(set(fns))) for fns in zip(*(activation_fns(a.layers) for a in archs)))
        return per_node if any(len(c) > 1 for c in per_node) else None

    # ---- inputs and programs

    def _dtype(self, inp: Input):
        return jnp.result_type(float) if inp.dtype == "float32" else jnp.dtype(inp.dtype)

    def _x(self, inp: Input, base_dir: Path, source: str | None) -> jax.Array:
        key = (inp, str(base_dir))
        if key not in self.inputs:
            x = load_inputs(inp, self.options.batch, seed=self.options.data_seed, base_dir=base_dir, source=source)
            x = jnp.asarray(x, dtype=self._dtype(inp))
            self.inputs[key] = x, seed_inputs(self.keys, x, self.options.tangents if "nlc" in self.options.metrics
                                              else None)
            while len(self.inputs) > 4:
                self.inputs.popitem(last=False)
        return self.inputs[key][0]

    def _seed_inputs(self, x: jax.Array) -> dict:
        """The :func:`seed_inputs` stored with the batch ``x`` (an array :meth:`_x` returned)."""
        return next(p for v, p in self.inputs.values() if v is x)

    def _per_seed(self, program: _Program, x: jax.Array) -> dict:
        """:func:`seed_inputs` of the batch ``x``, with the structure's shared draws (``flats``) if it has them."""
        per_seed = self._seed_inputs(x)
        if not program.draws:
            return per_seed
        if self._shared[0] is not program:  # draw once per structure, not per architecture
            flats = {}
            for dist, fold, dtype, shapes in program.draws:
                sizes = [math.prod(sh) for sh in shapes]
                flat = draws.draw(dist, per_seed["init"], sum(sizes), dtype, fold=fold)
                ends = np.cumsum(sizes)
                flats[dist] = [jnp.asarray(flat[:, end - size:end].reshape(-1, *sh))
                               for size, end, sh in zip(sizes, ends, shapes)]
            self._shared = (program, flats)
        return {**per_seed, "flats": self._shared[1]}

    def _per_seed_spec(self, program: _Program, x: jax.Array) -> dict:
        """:meth:`_per_seed`'s shapes, without drawing."""
        per_seed = self._seed_inputs(x)
        if not program.draws:
            return per_seed
        flats = {dist: [jax.ShapeDtypeStruct((self.options.seeds, *sh), jnp.dtype(dtype)) for sh in shapes]
                 for dist, _, dtype, shapes in program.draws}
        return {**per_seed, "flats": flats}

    def _program(self, key: Any, make: Callable[[], _Program]) -> _Program:
        """The compiled program of one structure (LRU across runs: same options, same program)."""
        opts = self.options
        key = (key, opts.metrics, opts.tangents, opts.batch, opts.data_seed, str(jnp.result_type(float)), self.batched)
        cache = _PROGRAM_CACHE
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        program = make()
        cache[key] = program
        while len(cache) > _PROGRAMS:
            cache.popitem(last=False)
        return program

    # ---- rows

    def rows(self, items: Sequence[SpaceItem]) -> Iterator[dict]:
        """One row per item, yielded as computed (grouped by structure, so not in ``items``' order)."""
        groups: dict[Any, list[SpaceItem]] = {}
        for item in items:
            groups.setdefault(self.group_key(item), []).append(item)
        choices = {key: self.choices(group) for key, group in groups.items()}
        ahead = {} if self.chunked else self._compile_ahead(groups, choices)
        try:
            for key, group in groups.items():
                if key in ahead:
                    concurrent.futures.wait([ahead[key]])
                if key == ("error",):
                    for item in group:
                        yield {**self._blank(item), "status": "failed", "reason": item.error}
                elif self.chunked:
                    yield from self._chunked_rows(group, choices[key])
                else:
                    for item in group:
                        yield self.row(item, choices[key])
        finally:
            for future in ahead.values():
                future.cancel()

    def _compile_ahead(self, groups: dict[Any, list[SpaceItem]],
                       choices: dict[Any, tuple | None]) -> dict[Any, concurrent.futures.Future]:
        """Starts compiling the programs of ``groups`` not compiled yet, on a pool of threads.

        XLA compiles one program on one core. With several structures to compile,
        compiling them side by side (and while earlier structures compute) cuts
        the time to the first rows of each. A program that fails to compile here
        is left alone: its architectures' own calls report the error.
        """
        todo = []
        for key, group in groups.items():
            if key == ("error",) or self._static_only():
                continue
            try:
                prepared = self._prepare(group[0], self._blank(group[0]), choices[key])
            except Exception:  # reported by the architecture's own row
                continue
            if isinstance(prepared, dict) or prepared[0].compiled:
                continue
            program, x, scalars, _, _ = prepared
            todo.append((key, program, (self._per_seed_spec(program, x), x, jnp.asarray(self._labels(program)),
                                        scalars)))
        if len(todo) < 2:
            return {}
        x64 = jax.config.jax_enable_x64

        def compile_one(program: _Program, args: tuple) -> None:
            if jax.config.jax_enable_x64 != x64:  # a thread-local setting (jax.enable_x64) does not carry over
                return
            program.fn.lower(*args).compile()  # fills fn's cache: its first call does not compile
            program.compiled = True

        pool = _compile_pool()
        return {key: pool.submit(compile_one, program, args) for key, program, args in todo}

    def _blank(self, item: SpaceItem) -> dict:
        row: dict[str, Any] = {"arch": item.id, "status": "ok", "reason": None}
        for c in metric_columns(self.options.metrics):
            row[c] = None
        return row

    def row(self, item: SpaceItem, choices: tuple | None = None) -> dict:
        """The row of one architecture (never raises for the architecture's own failures).

        ``choices``: :meth:`choices` of the architecture's group, whose program it then runs.
        """
        row = self._blank(item)
        if item.error is not None:
            return {**row, "status": "failed", "reason": item.error}
        try:
            prepared = self._prepare(item, row, choices)
            if isinstance(prepared, dict):
                return prepared
            program, x, scalars, module, names = prepared
            if self._static_only():
                return row
            res = jax.device_get(program.fn(self._per_seed(program, x), x, jnp.asarray(self._labels(program)),
                                            scalars))
            program.compiled = True
            return self._finish(row, program, res, module=module, names=names)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # one architecture's failure must not stop the run
            return {**row, "status": "failed", "reason": _failure(err)}

    def _chunked_rows(self, group: list[SpaceItem], choices: tuple | None = None) -> Iterator[dict]:
        ready: list[tuple[dict, _Program, jax.Array, Any, bool, tuple]] = []
        for item in group:
            row = self._blank(item)
            try:
                prepared = self._prepare(item, row, choices)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as err:
                yield {**row, "status": "failed", "reason": _failure(err)}
                continue
            if isinstance(prepared, dict) or self._static_only():
                yield prepared if isinstance(prepared, dict) else row
            else:
                ready.append((row, *prepared))
        ndev, pos = len(self.devices), 0
        while pos < len(ready):
            per = min(self.per_device, _pow2(-(-(len(ready) - pos) // ndev)))
            part = ready[pos:pos + per * ndev]
            pos += len(part)
            yield from self._run_chunk(part, per * ndev)

    def _run_chunk(self, part: list, size: int) -> Iterator[dict]:
        program, x = part[0][1], part[0][2]
        padded = part + [part[-1]] * (size - len(part))
        scalars = jax.tree.map(lambda *v: np.stack([np.asarray(a) for a in v]), *[p[3] for p in padded])
        per = size // len(self.devices)
        try:
            if (per, self.devices) not in program.chunked:
                program.chunked[per, self.devices] = _chunk_program(program.measure, self.devices, self.batched)
            res = jax.device_get(program.chunked[per, self.devices](
                self._per_seed(program, x), x, jnp.asarray(self._labels(program)), scalars))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:
            for row, *_ in part:
                yield {**row, "status": "failed", "reason": _failure(err)}
            return
        for i, (row, program, _, _, module, names) in enumerate(part):
            yield self._finish(row, program, jax.tree.map(lambda a: a[i], res), module=module, names=names)

    def _static_only(self) -> bool:
        return all(m in ("params", "flops") for m in self.options.metrics)

    def _labels(self, program: _Program) -> np.ndarray:
        return program.labels if program.labels is not None else np.zeros((self.options.batch,), np.int32)

    def _prepare(self, item: SpaceItem, row: dict, choices: tuple | None = None):
        """Static columns into ``row``; returns ``(program, x, scalars, module, layer names)``, or a finished
        row. ``choices``: the activation functions of the item's group (:meth:`choices`), which share the
        program."""
        metrics = self.options.metrics
        if item.is_nb201:
            ops = item.arch
            if "params" in metrics:
                row["params"] = nb201.param_count(ops)
            if "flops" in metrics:
                row["flops"] = nb201.flops(ops)
            if nb201.is_degenerate(ops):
                return {**row, "status": "degenerate",
                        "reason": "the cell's output node is unreachable from its input (every path has a "
                                  "'none' edge): the network output is constant"}
            inp = self.context.input
            program = self._program(("nb201",), lambda: _make_program(
                nb201_net.build_masked_network(), self.options, tuple(n for n in nb201.LAYER_NAMES if n != "head"),
                params=None, flops=None, dtype=self._dtype(inp), batched=self.batched,
                sigma2_output=nb201.FEATURES, structure=("nb201",)))
            x = self._x(inp, self.context.base_dir, self.context.source)
            return program, x, nb201_net.default_scalars(ops), False, program.layer_names
        if item.is_builtin:
            return self._prepare_builtin(item, row)
        group = self.group_key(item)
        if group[0] == "padded":
            return self._prepare_padded(item, row, group, choices)
        arch: Architecture = item.arch
        names = tuple(name for name, _ in named_layers(arch.layers))
        if choices is not None and arch.module is None:
            arch = dataclasses.replace(arch, layers=with_choices(arch.layers, choices))
        net = build(arch)
        if arch.module is not None:
            names = tuple(net.layer_names)
        dtype = self._dtype(arch.input)

        def make() -> _Program:
            from zsad.score import param_count

            check_fits(net, self.options.batch, dtype, source=arch.source, name="layers" if arch.module is None
                       else "module")  # before anything is allocated: a failed row, not a crashed run
            return _make_program(
                net, self.options, _code_layers(arch) if arch.module is None else None,
                params=param_count(net) if "params" in metrics else None,
                flops=_xla_flops(net, dtype) if "flops" in metrics and arch.module is not None else None, dtype=dtype,
                batched=self.batched, segment_range=_segment_range(arch, net), structure=key)

        # Keyed by what is compiled: the structure, activation choices included.
        key = (self.group_key(item) if arch.module is not None
               else ("layers", structure(arch.layers), tuple(arch.input.shape), arch.input.dtype))
        program = self._program(key, make)
        if "params" in metrics:
            row["params"] = program.params
        if "flops" in metrics:
            row["flops"] = program.flops if arch.module is not None else self._flops(item.arch, dtype)
        return program, self._x(arch.input, arch.base_dir, arch.source), net.scalars, arch.module is not None, names

    def _prepare_builtin(self, item: SpaceItem, row: dict):
        """:meth:`_prepare` of one architecture of a built-in space (:class:`zsad.space.BuiltinArch`): its
        group's program (the architecture is data in its scalars), compiled once per group."""
        space, arch = item.arch.space, item.arch.arch
        if "params" in self.options.metrics:
            row["params"] = space.params(arch)
        if "flops" in self.options.metrics:
            row["flops"] = space.flops(arch)
        reason = space.degenerate(arch)
        if reason is not None:
            return {**row, "status": "degenerate", "reason": reason}
        group = space.group(arch)
        inp = self.context.input
        dtype = self._dtype(inp)

        def make() -> _Program:
            net = space.program(group)
            check_fits(net, self.options.batch, dtype, source=self.context.source, name="space")
            return _make_program(net, self.options, space.code_layers(group), params=None, flops=None,
                                 dtype=dtype, batched=self.batched, sigma2_output=space.features)

        program = self._program(_builtin_key(item.arch), make)
        x = self._x(inp, self.context.base_dir, self.context.source)
        return program, x, space.scalars(arch), False, program.layer_names

    def _prepare_padded(self, item: SpaceItem, row: dict, group: tuple, fns: Sequence[str] | None):
        """:meth:`_prepare` of an MLP in its group's padded program (:func:`zsad.arch.padding.build_padded`,
        activation functions ``fns``: the group's). The layer names returned hold, per layer of the
        program, the architecture's own name, None for the padding's layers."""
        arch: Architecture = item.arch
        padded = padding.build_padded(arch, fns)
        net, dtype = padded.network, self._dtype(arch.input)
        key = (group, tuple(sorted(set(fns or ()) | set(padding.mlp_shape(arch).fns))))

        def make() -> _Program:
            check_fits(net, self.options.batch, dtype, source=arch.source, name="layers")
            return _make_program(net, self.options, padded.code_layers, params=None, flops=None, dtype=dtype,
                                 batched=self.batched, segment_range=padded.segment_range, structure=key,
                                 code_mask=padded.code_mask, segment_dims=padded.segment_dims)

        program = self._program(key, make)
        if "params" in self.options.metrics:
            row["params"] = padding.param_count(arch)  # the architecture's own, not the padded network's
        if "flops" in self.options.metrics:
            row["flops"] = self._flops(arch, dtype)
        own = {padded_name: name for name, padded_name in padded.layers.items()}
        names = tuple(own.get(name) for name in net.layer_names)
        return program, self._x(arch.input, arch.base_dir, arch.source), net.scalars, False, names

    def _flops(self, arch: Architecture, dtype) -> int:
        """FLOPs of ``arch``'s own network: not of its group's program, whose activation layers may choose
        among several functions (the count would then depend on which architectures share a chunk, and
        a resumed file would differ from an uninterrupted one), and of its unrolled form: XLA's cost
        analysis counts a loop's body once, so a scanned repeated block would count as one repeat.
        Cached per structure and functions."""
        key = (structure(arch.layers), tuple(arch.input.shape), arch.input.dtype, str(dtype))
        if key not in _FLOPS_CACHE:
            _FLOPS_CACHE[key] = _xla_flops(build(arch, scan=False), dtype)
            while len(_FLOPS_CACHE) > 4096:
                _FLOPS_CACHE.pop(next(iter(_FLOPS_CACHE)))
        return _FLOPS_CACHE[key]

    def _finish(self, row: dict, program: _Program, res: dict, *, module: bool, names: tuple[str, ...]) -> dict:
        """Row from one architecture's per-seed results (leading axis: seeds); ``names``: its layers, one per
        layer of the program, None where the program's layer is not the architecture's (padding)."""
        opts = self.options
        metrics = opts.metrics
        seeds = range(opts.seeds)
        diverged = {}
        res = _columns(res)
        own = [i for i, name in enumerate(names) if name is not None]
        if len(own) < len(names):  # a padded program: the architecture's own layers, in order
            res = {**res, **{c: np.asarray(res[c])[:, own] for c in ("finite", "nlc_profile") if c in res}}
            names = tuple(names[i] for i in own)
        for s in seeds:
            finite = np.asarray(res["finite"][s])
            if not finite.all():
                diverged[s] = names[int(np.argmin(finite))]
            elif "nlc" in metrics and not bool(res["nlc_finite"][s]):
                diverged[s] = names[-1]
        reasons: list[str] = []
        if len(diverged) == opts.seeds:
            return {**row, "status": "diverged",
                    "reason": f"non-finite activations from layer {diverged[min(diverged)]} in every initialization"}
        good = [s for s in seeds if s not in diverged and not bool(res["constant"][s])]
        if not good:
            return {**row, "status": "degenerate", "reason": "the output is constant across the batch"}
        if diverged:
            reasons.append(f"{len(diverged)} of {opts.seeds} initializations diverge (first non-finite layer: "
                           f"{diverged[min(diverged)]}); metrics over the others")
        if len(good) + len(diverged) < opts.seeds:
            reasons.append(f"{opts.seeds - len(good) - len(diverged)} of {opts.seeds} initializations give a "
                           "constant output; metrics over the others")
        if "sigma2" in metrics:
            values = [float(res["sigma2"][s]) for s in good]
            if all(math.isfinite(v) for v in values):
                row["sigma2"] = _short(np.mean(values))
            else:
                reasons.append("sigma2: non-finite Jacobian in some initialization")
        if "nlc" in metrics:
            values = [float(res["nlc"][s]) for s in good]
            if all(math.isfinite(v) for v in values):
                row["nlc"] = _short(np.mean(values))
                row["nlc_std"] = _short(np.std(values, ddof=1)) if len(values) > 1 else None
                blocks = [largest_block_growth(res["nlc_profile"][s]) for s in good]
                if all(math.isfinite(v) for v in blocks):
                    row["nlc_block"] = _short(np.mean(blocks))
            else:
                reasons.append("nlc: undefined (constant output in some initialization)")
        for m in ("naswot", "synflow", "grad_norm", "snip", "jacob_cov"):
            if m not in metrics:
                continue
            if m == "jacob_cov" and m not in res:
                reasons.append(f"jacob_cov: left out, degenerate when the batch ({opts.batch}) exceeds the input "
                               "dimension (the per-sample gradients' correlation matrix is singular); use --batch "
                               "at most the input dimension to compute it")
                continue
            if m == "naswot" and m not in res:
                reasons.append("naswot: needs activation layers of an architecture file" if module
                               else "naswot: the network has no activation layer")
                continue
            valid = [bool(res[f"{m}_valid"][s]) for s in good]
            if all(valid):
                row[m] = _short(np.mean([float(res[m][s]) for s in good]))
            else:
                reasons.append(f"{m}: undefined in {valid.count(False)} of {len(good)} initializations "
                               f"({_UNDEFINED[m]})")
        row["reason"] = "; ".join(reasons) or None
        return row


# --------------------------------------------------------------------------- the driver

@dataclass
class RankResult:
    """Rows in the space's order with ``score`` and ``rank``; how many were computed vs resumed."""

    rows: list[dict]
    columns: list[str]
    by: tuple[str, ...]
    computed: int
    resumed: int
    meta: dict

    def top(self, k: int | None = None) -> list[dict]:
        ranked = sorted(self.rows, key=lambda r: r["rank"])
        return ranked if k is None else ranked[:k]


class RankInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`rank_space`; the results file holds every row computed so far."""

    def __init__(self, done: int, total: int | None, out: str | None):
        super().__init__(f"interrupted after {done} architectures")
        self.done, self.total, self.out = done, total, out


def make_meta(space: Space, options: RankOptions, by: Sequence[str]) -> dict:
    cols = columns(options.metrics)
    return {
        "format": "zsad-rank-results/1",
        "space": {"name": space.name, "form": space.form, "file": space.source, "size": space.size,
                  "fingerprint": space.fingerprint},
        "options": options.to_json(),
        "columns": {c: {"direction": DIRECTION.get(c), "description": DESCRIPTION[c]} for c in cols},
        "score": score_meta(by, options.metrics),
    }


def _chunks(items: Iterator[SpaceItem], size: int) -> Iterator[list[SpaceItem]]:
    chunk: list[SpaceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- the runner interface

@dataclass(frozen=True)
class Job:
    """What a :class:`Runner` needs to score the items of one run: picklable, so cluster workers get it whole.

    Attributes:
      context: :meth:`SpaceContext.of` the space.
      options: what to compute.
    """

    context: SpaceContext
    options: RankOptions

    def scorer(self, devices: Sequence | None = None) -> Scorer:
        """A :class:`Scorer` of this run (``devices``: as :class:`Scorer`); its ``rows(items)`` scores items."""
        return Scorer(self.context, self.options, devices=devices)

    @staticmethod
    def group(item: SpaceItem) -> Hashable:
        """The structure of ``item`` (:meth:`Scorer.group_key`): items of one group share a compiled program."""
        return Scorer.group_key(item)

    def failed(self, item: SpaceItem, reason: str) -> dict:
        """The row of an item that could not be scored: ``failed``, every metric null."""
        return {"arch": item.id, "status": "failed", "reason": reason,
                **dict.fromkeys(metric_columns(self.options.metrics))}


class Runner(Protocol):
    """Where :func:`rank_space` scores: ``runner(chunks, job)`` pulls lists of items from ``chunks`` as it
    has room for them and yields their rows, in any order (each once; a row that arrives twice is written
    once). The default scores in this process with ``job.scorer()``; :func:`zsad.cluster.ray_runner`
    scores on a Ray cluster."""

    def __call__(self, chunks: Iterator[list[SpaceItem]], job: Job) -> Iterator[dict]: ...


def local_runner(devices: Sequence | None = None) -> Runner:
    """The default :class:`Runner`: one :class:`Scorer` in this process over ``devices`` (default: all of
    JAX's default backend)."""

    def run(chunks: Iterator[list[SpaceItem]], job: Job) -> Iterator[dict]:
        scorer = job.scorer(devices)
        return (row for chunk in chunks for row in scorer.rows(chunk))

    return run


def local_devices(n: int | None) -> list | None:
    """The first ``n`` devices of JAX's default backend (None: None, i.e. all of them)."""
    if n is None:
        return None
    devices = jax.devices()
    if not 1 <= n <= len(devices):
        raise SpecError(f"--devices: expected 1 to {len(devices)} (this machine's {devices[0].platform} "
                        f"devices); got {n}")
    return devices[:n]


def check_run(out: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
              ray: str | None = None, workers: int | None = None, devices: int | Sequence | None = None,
              runner: Runner | None = None) -> None:
    """Refuses, before any work, options of :func:`rank_space` that do not go together and a results file
    that cannot be written (see :func:`zsad.results.check_out`)."""
    check_out(out, resume=resume, overwrite=overwrite)
    if ray is None and workers is not None:
        raise SpecError("--workers: applies to a Ray cluster; add --ray")
    if ray is not None and devices is not None:
        raise SpecError("--devices: applies to this machine's devices, not to Ray workers (each uses its own)")
    if runner is not None and (ray is not None or devices is not None):
        raise SpecError("runner: expected either a runner or ray/devices; got both")


def rank_space(space: Space, options: RankOptions = RankOptions(), *, out: str | Path | None = None,
               resume: bool = False, overwrite: bool = False, ray: str | None = None, workers: int | None = None,
               devices: int | Sequence | None = None, runner: Runner | None = None, **kwargs) -> RankResult:
    # The results file is locked (FILE.lock) from before it is read to after it is final: a second
    # run on the same file fails at once instead of racing this one.
    check_run(out, resume=resume, overwrite=overwrite, ray=ray, workers=workers, devices=devices, runner=runner)
    if ray is not None:
        from zsad import cluster

        with contextlib.closing(cluster.ray_runner(ray, workers=workers)) as ray_runner:
            return rank_space(space, options, out=out, resume=resume, overwrite=overwrite, runner=ray_runner,
                              **kwargs)
    if runner is None:
        runner = local_runner(local_devices(devices) if isinstance(devices, int) else devices)
    lock = FileLock(out).acquire() if out is not None else None
    try:
        with interrupt.remembered() as ctrl_c:  # a Ctrl-C that something swallows still stops the run
            result = _rank_space(space, options, out=out, resume=resume, overwrite=overwrite, runner=runner,
                                 stop=lambda: ctrl_c.requested, **kwargs)
            if ctrl_c.requested:  # after the last row: the file is complete
                raise RankInterrupted(result.computed + result.resumed, space.size,
                                      str(out) if out is not None else None)
        return result
    finally:
        if lock is not None:
            lock.release()


def _rank_space(space: Space, options: RankOptions = RankOptions(), *, out: str | Path | None = None,
                resume: bool = False, overwrite: bool = False, by: str = "score",
                on_row: Callable[[dict], None] | None = None,
                on_progress: Callable[[int, int | None], None] | None = None, runner: Runner,
                stop: Callable[[], bool] = lambda: False) -> RankResult:
    """Scores and ranks every architecture of ``space``.

    Args:
      space: from :func:`zsad.space.load_space`.
      options: what to compute.
      out: results file (.csv, .jsonl, .parquet); None keeps results in memory only.
      resume: continue ``out``: architectures already in it are not recomputed.
      overwrite: replace an existing ``out`` (without it, an existing file is refused unless ``resume``).
      by: ``"score"`` (the default formula), one metric column, or several comma-separated
        (mean of per-metric ranks).
      on_row: called with each newly computed row after it is written.
      on_progress: called with ``(done, total)`` (total None when unknown) after each architecture.
      ray: score on a Ray cluster at this address (``"local"`` starts one; see
        :func:`zsad.cluster.ray_runner`), closed when the run ends.
      workers: with ``ray``: workers in the pool (default: one per CPU, or per GPU, of the cluster).
      devices: local devices to spread chunks of architectures over, or how many of the first
        (default: all of JAX's default backend; see :class:`Scorer`). Results do not depend on it.
      runner: where to score (a :class:`Runner`; default: this process), instead of ``ray`` and
        ``devices``. A row that arrives twice (a retried chunk) is written once.

    Returns:
      :class:`RankResult`.

    Raises:
      SpecError: bad ``by``/``metrics``, an unwritable, mismatched or locked ``out`` (another run holds
        ``FILE.lock``), ``resume`` without ``out`` or with ``overwrite``, ``workers`` without ``ray``,
        ``ray`` with ``devices``, a bad generator.
      RankInterrupted: on Ctrl-C; ``out`` then holds every row computed so far.
    """
    by_cols = parse_by(by, options.metrics)
    cols = columns(options.metrics)
    meta = make_meta(space, options, by_cols)
    results, done_rows = open_results(out, cols, meta, resume=resume, overwrite=overwrite)
    job = Job(SpaceContext.of(space), options)
    order: list[str] = []
    counts = {"computed": 0, "resumed": 0}

    def progress() -> None:
        if on_progress:
            on_progress(counts["computed"] + counts["resumed"], space.size)

    def todo() -> Iterator[list[SpaceItem]]:
        for chunk in _chunks(iter(space), _CHUNK):
            pending = []
            for item in chunk:
                order.append(item.id)
                if item.id in done_rows:
                    counts["resumed"] += 1
                else:
                    pending.append(item)
            progress()
            if pending:
                yield pending

    if results is not None:
        results.start(list(done_rows.values()))
    fresh: set[str] = set()
    try:
        progress()
        for row in runner(todo(), job):
            if row["arch"] in fresh or row["arch"] in done_rows:
                continue  # a retried chunk's row that already arrived
            fresh.add(row["arch"])
            done_rows[row["arch"]] = row
            counts["computed"] += 1
            if results is not None:
                results.append(row)
            if on_row:
                on_row(row)
            progress()
            if stop():
                raise KeyboardInterrupt
        if stop():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if results is not None:
            results.close()
        raise RankInterrupted(counts["computed"] + counts["resumed"], space.size,
                              str(out) if out is not None else None) from None
    except BaseException:
        if results is not None:
            results.close()
        raise
    missing = [a for a in order if a not in done_rows]
    if missing:
        raise ZsadError(f"{len(missing)} architecture(s) came back without a row (first: {missing[0]}); "
                        f"every finished row is in {out}: rerun with --resume" if out else
                        f"{len(missing)} architecture(s) came back without a row (first: {missing[0]})")
    rows = score_rows([done_rows[a] for a in order], by_cols, options.metrics)
    if results is not None:
        try:
            results.finish(rows)
        except OSError as err:
            raise WriteError(f"{out}: could not write the final results ({err.strerror or err}); every computed "
                             "row is in it as appended (without score and rank): rerun with --resume to finish "
                             "it") from None
    return RankResult(rows, cols, by_cols, counts["computed"], counts["resumed"], {**meta, "complete": True})


rank_space.__doc__ = _rank_space.__doc__
