"""Scoring architectures: one compiled measurement program per structure, rows from its measurements.

:class:`Scorer` turns the items of a space (:class:`zsad.space.SpaceItem`) into result rows: it
groups them by what is compiled (a structure and its activation choices, a padded MLP signature,
a built-in space's group), makes each group's program once (:func:`make_program` over
:func:`zsad.measure.make_measure`, an LRU of recent programs shared by every run in the process),
runs one call per architecture (or chunks of architectures over several devices) and turns the
per-seed measurements into a row: means over seeds, statuses (ok, degenerate, diverged, failed)
and the reasons for any missing metric. :func:`zsad.rank.rank_space` drives it; a runner
(:mod:`zsad.cluster`) calls it where the architectures are scored.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad import draws
from zsad.spaces import nasbench201 as nb201, nasbench201_net as nb201_net
from zsad import proxies
from zsad._errors import SpecError, ZsadError
from zsad._memory import check_fits
from zsad.arch import padding
from zsad.arch.build import activation_fns, build, signature, structure, with_choices
from zsad.arch.spec import Architecture, Input, named_layers
from zsad.data import load_inputs
from zsad.measure import seed_inputs
from zsad.score import seed_keys
from zsad.space import Space, SpaceItem
from zsad.programs import (
    PROGRAM_CACHE, PROGRAMS, Program, chunk_program, code_layers, largest_block_growth, make_program, segment_range,
    xla_flops,
)
from zsad.ranking import RankOptions, metric_columns

_FLOPS_CACHE: dict[Any, int] = {}  # FLOPs per structure (activation functions included), see Scorer._flops
#: Whether MLPs of one :func:`zsad.arch.padding.padded_signature` share one padded program (the same
#: metrics as their own programs, to float rounding). False: every shape compiles its own (a switch for
#: comparisons; the rows do not depend on it).
PADDED_MLPS = True



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
        self._shared: tuple[Program | None, dict] = (None, {})
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

    def _per_seed(self, program: Program, x: jax.Array) -> dict:
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

    def _per_seed_spec(self, program: Program, x: jax.Array) -> dict:
        """:meth:`_per_seed`'s shapes, without drawing."""
        per_seed = self._seed_inputs(x)
        if not program.draws:
            return per_seed
        flats = {dist: [jax.ShapeDtypeStruct((self.options.seeds, *sh), jnp.dtype(dtype)) for sh in shapes]
                 for dist, _, dtype, shapes in program.draws}
        return {**per_seed, "flats": flats}

    def _program(self, key: Any, make: Callable[[], Program]) -> Program:
        """The compiled program of one structure (LRU across runs: same options, same program)."""
        opts = self.options
        key = (key, opts.metrics, opts.tangents, opts.batch, opts.data_seed, str(jnp.result_type(float)), self.batched)
        cache = PROGRAM_CACHE
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        program = make()
        cache[key] = program
        while len(cache) > PROGRAMS:
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

        def compile_one(program: Program, args: tuple) -> None:
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
        ready: list[tuple[dict, Program, jax.Array, Any, bool, tuple]] = []
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
                program.chunked[per, self.devices] = chunk_program(program.measure, self.devices, self.batched)
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

    def _labels(self, program: Program) -> np.ndarray:
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
            program = self._program(("nb201",), lambda: make_program(
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

        def make() -> Program:
            from zsad.score import param_count

            check_fits(net, self.options.batch, dtype, source=arch.source, name="layers" if arch.module is None
                       else "module")  # before anything is allocated: a failed row, not a crashed run
            return make_program(
                net, self.options, code_layers(arch) if arch.module is None else None,
                params=param_count(net) if "params" in metrics else None,
                flops=xla_flops(net, dtype) if "flops" in metrics and arch.module is not None else None, dtype=dtype,
                batched=self.batched, segment_range=segment_range(arch, net), structure=key)

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

        def make() -> Program:
            net = space.program(group)
            check_fits(net, self.options.batch, dtype, source=self.context.source, name="space")
            return make_program(net, self.options, space.code_layers(group), params=None, flops=None,
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

        def make() -> Program:
            check_fits(net, self.options.batch, dtype, source=arch.source, name="layers")
            return make_program(net, self.options, padded.code_layers, params=None, flops=None, dtype=dtype,
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
            _FLOPS_CACHE[key] = xla_flops(build(arch, scan=False), dtype)
            while len(_FLOPS_CACHE) > 4096:
                _FLOPS_CACHE.pop(next(iter(_FLOPS_CACHE)))
        return _FLOPS_CACHE[key]

    def _finish(self, row: dict, program: Program, res: dict, *, module: bool, names: tuple[str, ...]) -> dict:
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

