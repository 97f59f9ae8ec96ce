"""Spec -> ``Network`` (pure init/apply/calibrate functions). The only flax import.

Flax module attributes hold structure only (layer types, widths, kernel sizes,
distributions). Every scalar -- ``weight_std``, ``bias_std``, residual scales,
activation parameters and shaping scalars -- enters as a pytree of arrays, so
architectures that differ only in scalars share the same functions, hence one
compiled program (``build`` caches on the structure). An activation layer may
also choose its function by a traced index (:func:`with_choices`), so that
architectures differing in activations share a program too.

Batch norm: ``calibrate`` runs the network in training mode on a batch and
stores each layer's batch mean and (biased) variance; ``apply`` then uses these
frozen statistics, so it is a per-sample function and, on the calibration batch,
equals training-mode batch norm exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zsad._entry import import_callable
from zsad._errors import SpecError, locate
from zsad._types import Network
from zsad.activations import ACTIVATION_PARAMS, get_activation, shaped
from zsad.arch.spec import (
    Activation, Architecture, AvgPool, BatchNorm, Block, Conv, Dense, Flatten,
    GlobalAvgPool, Init, Layer, LayerNorm, MaxPool, Residual, Shaping, expand, layer_label, named_layers,
)
from zsad.arch.repeats import (
    RepeatNames, all_named, count_layers, cut_draw, fold_repeats, repeat_groups, repeat_names, sub_prefix,
)
from zsad.arch.weights import TRUNC_STD, unit_weights
from zsad.canonical import traced_once
from zsad.layer_values import LayerValues


# --------------------------------------------------------------------------- scalars

def scalars_of(arch: Architecture) -> dict[str, dict[str, np.ndarray]]:
    """The traced scalars of ``arch``: ``{layer name: {scalar name: array}}``.

    Dense/conv layers carry ``weight_std`` and ``bias_std``; activations carry
    ``alpha``, ``beta``, ``gain`` (shaping) and their own parameters under
    ``params`` (see :func:`_activation_scalars`); residual layers carry
    ``branch_scale`` and ``shortcut_scale``.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    _collect_scalars(arch.layers, "", out)
    return out


def _f(value: float) -> np.ndarray:
    # A NumPy scalar, not a jax.Array: made once per architecture (a dozen per network), where
    # jnp.asarray costs a dispatch each; jit traces both alike.
    return np.asarray(value, dtype=jnp.result_type(float))


def _collect_scalars(layers, prefix: str, out: dict) -> None:
    for name, layer in named_layers(layers, prefix):
        if isinstance(layer, (Dense, Conv)):
            out[name] = {"weight_std": _f(layer.init.weight_std), "bias_std": _f(layer.init.bias_std)}
        elif isinstance(layer, Activation):
            out[name] = _activation_scalars(layer)
        elif isinstance(layer, Residual):
            out[name] = {"branch_scale": _f(layer.branch_scale), "shortcut_scale": _f(layer.shortcut_scale)}
            _collect_scalars(layer.shortcut, sub_prefix(name, "shortcut"), out)
            _collect_scalars(layer.branch, sub_prefix(name, "branch"), out)


def _activation_scalars(layer: Activation) -> dict:
    """Shaping scalars, the function's parameters under ``params`` (their names, e.g. ELU's ``alpha``, may
    be those of shaping scalars), and for a choice of functions the index of ``fn`` under ``choice`` and
    every candidate's parameters (defaults for all but ``fn``)."""
    sh = layer.shaping
    out = {"alpha": _f(sh.alpha), "beta": _f(sh.beta), "gain": _f(sh.gain)}
    own = dict(layer.params)
    if not layer.choices:
        return {**out, "params": {k: _f(v) for k, v in own.items()}}
    params = {c: {k: _f(own.get(k, d) if c == layer.fn else d) for k, d in ACTIVATION_PARAMS.get(c, {}).items()}
              for c in layer.choices}
    return {**out, "choice": np.asarray(layer.choices.index(layer.fn), np.int32), "params": params}


def _walk_activations(layers: tuple[Layer, ...], visit: Callable[[Activation], Layer]) -> tuple[Layer, ...]:
    """``layers`` with every activation node replaced by ``visit(node)``, in a fixed order (a block's
    layers once, whatever its repeat; a residual's shortcut, then its branch)."""
    out = []
    for layer in layers:
        if isinstance(layer, Activation):
            layer = visit(layer)
        elif isinstance(layer, Block):
            layer = dataclasses.replace(layer, layers=_walk_activations(layer.layers, visit))
        elif isinstance(layer, Residual):
            layer = dataclasses.replace(layer, shortcut=_walk_activations(layer.shortcut, visit),
                                        branch=_walk_activations(layer.branch, visit))
        out.append(layer)
    return tuple(out)


def activation_fns(layers: tuple[Layer, ...]) -> tuple[str, ...]:
    """The function of every activation node, in :func:`with_choices`' order."""
    fns: list[str] = []
    _walk_activations(layers, lambda a: fns.append(a.fn) or a)
    return tuple(fns)


def with_choices(layers: tuple[Layer, ...], choices: Sequence[Sequence[str]]) -> tuple[Layer, ...]:
    """``layers`` whose i-th activation node (:func:`activation_fns`' order) chooses among ``choices[i]``
    by a traced index, where that holds more than one function: one structure, hence one compiled
    program, for architectures that differ only in those activations."""
    it = iter(choices)

    def visit(a: Activation) -> Activation:
        cands = tuple(next(it))
        if a.fn not in cands:
            raise ValueError(f"activation {a.fn!r} is not among the choices {cands}")
        return dataclasses.replace(a, choices=cands) if len(cands) > 1 else a

    out = _walk_activations(layers, visit)
    if next(it, None) is not None:
        raise ValueError("more activation choices than activation layers")
    return out


def signature(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """:func:`structure` with the activation functions left out too: the networks' shapes alone."""
    return structure(_walk_activations(layers, lambda a: dataclasses.replace(a, fn="", params=())))


def structure(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """``layers`` with every scalar replaced by a placeholder: the compile-cache key."""
    return tuple(_strip(layer) for layer in layers)


def _strip(layer: Layer) -> Layer:
    if isinstance(layer, (Dense, Conv)):
        return dataclasses.replace(layer, init=Init(dist=layer.init.dist, weight_std=0.0, bias_std=0.0))
    if isinstance(layer, Activation):
        if layer.choices:  # the function and its parameters are data
            return dataclasses.replace(layer, fn="", params=(), shaping=Shaping())
        return dataclasses.replace(layer, params=tuple((k, 0.0) for k, _ in layer.params), shaping=Shaping())
    if isinstance(layer, Block):
        return dataclasses.replace(layer, layers=structure(layer.layers))
    if isinstance(layer, Residual):
        return dataclasses.replace(layer, branch=structure(layer.branch), shortcut=structure(layer.shortcut),
                                   branch_scale=0.0, shortcut_scale=0.0)
    return layer


# --------------------------------------------------------------------------- flax modules

def _chan(v: jax.Array, ndim: int) -> jax.Array:
    """A per-channel vector shaped to broadcast against the last axis of a rank-``ndim`` array."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


class _Affine(nn.Module):
    """Dense or convolution. Its parameters are drawn by ``_sample``, not by flax initializers."""

    spec: Layer

    @nn.compact
    def __call__(self, x, s):
        spec = self.spec
        dtype = x.dtype
        if isinstance(spec, Dense):
            shape = (x.shape[-1], spec.features)
        else:
            shape = (*spec.kernel, x.shape[-1], spec.features)
        kernel = self.param("kernel", nn.initializers.zeros, shape, dtype)  # sampled by `_sample`
        if isinstance(spec, Dense):
            y = jnp.dot(x, kernel)
        else:
            rank = len(spec.kernel)
            spatial = "HW"[:rank] if rank <= 2 else "DHW"[-rank:]
            dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
            pad = spec.padding.upper() if isinstance(spec.padding, str) else [(spec.padding, spec.padding)] * rank
            y = jax.lax.conv_general_dilated(x, kernel, spec.stride, pad, dimension_numbers=dn)
        if spec.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (spec.features,), dtype)
            y = y + _chan(bias, y.ndim)
        return y


class FrozenBatchNorm(nn.Module):
    """Affine batch norm over the last axis whose statistics are frozen variables.

    ``calibrate``: False uses the stored ``batch_stats`` (``mean``, biased ``var``); True computes them on
    the batch and stores them (training mode); ``"constant"`` as True with the statistics held constant
    (``stop_gradient``). Parameters ``scale`` and ``bias`` (``2C``) where ``affine``, none otherwise.
    """

    epsilon: float
    affine: bool = True

    @nn.compact
    def __call__(self, x, calibrate: bool | str):
        c = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), x.dtype)
        var = self.variable("batch_stats", "var", jnp.ones, (c,), x.dtype)
        scale = self.param("scale", nn.initializers.ones, (c,), x.dtype) if self.affine else None
        bias = self.param("bias", nn.initializers.zeros, (c,), x.dtype) if self.affine else None
        y, m, v = _batch_norm(x, mean.value, var.value, scale, bias, self.epsilon, calibrate or False)
        if calibrate and not self.is_initializing():
            mean.value, var.value = m, v
        return y


@traced_once(static_argnums=(5, 6))
def _batch_norm(x, mean, var, scale, bias, epsilon: float, calibrate: bool | str):
    """:class:`FrozenBatchNorm`'s output and the statistics it used (the batch's where ``calibrate``)."""
    if calibrate:  # True: training mode; "constant": the batch's statistics as constants (frozen)
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        var = jnp.mean(jnp.square(x - _chan(mean, x.ndim)), axes)
        if calibrate == "constant":
            mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    n = x.ndim
    if scale is None:
        return (x - _chan(mean, n)) * _chan(jax.lax.rsqrt(var + epsilon), n), mean, var
    return (x - _chan(mean, n)) * _chan(jax.lax.rsqrt(var + epsilon) * scale, n) + _chan(bias, n), mean, var


class _LayerNorm(nn.Module):
    epsilon: float

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        m = jnp.mean(x, -1, keepdims=True)
        v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
        scale = self.param("scale", nn.initializers.ones, (c,), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), x.dtype)
        return (x - m) * jax.lax.rsqrt(v + self.epsilon) * _chan(scale, x.ndim) + _chan(bias, x.ndim)


def _pool_padding(padding, rank: int):
    return padding.upper() if isinstance(padding, str) else [(padding, padding)] * rank


class _Net(nn.Module):
    """Runs a (stripped) layer list; returns the output and every top-level layer's output.

    A block repeated at least twice runs as one ``lax.scan`` over its repeats (``scan``), its
    variables and scalars stacked per repeat from their per-layer entries, and its repeats'
    outputs unstacked into the layers' names: the program's size does not grow with the repeats,
    and the results are those of the block unrolled. Initialization runs every layer unrolled,
    so the variables are the same pytree either way.
    """

    layers: tuple[Layer, ...]
    scan: bool = True

    @nn.compact
    def __call__(self, x, scalars, calibrate: bool = False, start: int = 0, stop: int | None = None):
        outs: list = []  # (names, array, ndim or None): one layer's output, or a scanned block's
        y = self._run(self.layers, "", x, scalars, calibrate, outs, start, stop)
        if all(ndim is None for _, _, ndim in outs):
            return y, {names[0]: value for names, value, _ in outs}
        order = tuple(name for i, (name, _) in enumerate(named_layers(self.layers))
                      if start <= i and (stop is None or i < stop))
        return y, LayerValues(tuple(outs), order)

    def _run(self, layers, prefix, x, scalars, calibrate, outs, start=0, stop=None):
        stop = count_layers(layers) if stop is None else stop
        base = 0
        for layer in layers:
            size = count_layers((layer,))
            if base >= stop:
                break
            if base + size > start:
                if isinstance(layer, Block) and self._scans(layer):
                    x = self._block(layer, base, prefix, x, scalars, calibrate, outs, start, stop)
                else:
                    x = self._unrolled(layer, base, prefix, x, scalars, calibrate, outs, start, stop)
            base += size
        return x

    def _scans(self, block: Block) -> bool:
        return self.scan and block.repeat > 1 and not self.is_initializing()

    def _unrolled(self, layer, base, prefix, x, scalars, calibrate, outs, start, stop):
        for i, sub in enumerate(expand((layer,)), start=base):
            if start <= i < stop:
                name = f"{prefix}{i}.{layer_label(sub)}"
                x = self._layer(name, sub, x, scalars, calibrate)
                if not prefix:
                    outs.append(((name,), x, None))
        return x

    def _block(self, block: Block, base, prefix, x, scalars, calibrate, outs, start, stop):
        """Runs the layers of ``block`` (first one at index ``base``) that lie in ``[start, stop)``: whole
        repeats of unchanged shape as one scan, the rest unrolled."""
        inner = count_layers(block.layers)
        first = max(0, -(-(start - base) // inner))  # the whole repeats inside [start, stop)
        end = min(block.repeat, (stop - base) // inner)
        if end - first < 2:
            return self._unrolled(block, base, prefix, x, scalars, calibrate, outs, start, stop)
        at = functools.partial(repeat_names, block.layers, base, inner, prefix)
        one = functools.partial(self._repeat, _Net(block.layers, parent=None), calibrate)

        def unrolled(x, r0, r1):  # repeats r0 .. r1-1, the layers of them in [start, stop)
            if r1 <= r0:
                return x
            return self._unrolled(Block(block.layers, r1 - r0), base + r0 * inner, prefix, x, scalars, calibrate,
                                  outs, start, stop)

        x = unrolled(x, 0, first)
        while first < end:  # a repeat that changes the shape (the first, often) runs unrolled
            h = jax.eval_shape(one, self._gather(at(first), scalars), x)[0]
            if (h.shape, h.dtype) == (x.shape, x.dtype):
                break
            x = unrolled(x, first, first + 1)
            first += 1
        if end - first >= 2:
            stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                                   *(self._gather(at(r), scalars) for r in range(first, end)))
            x, (ys, stats) = jax.lax.scan(lambda h, v: one(v, h), x, stacked)
            for k, r in enumerate(range(first, end)):
                for local, values in stats.items():
                    self.put_variable("batch_stats", at(r).modules[local], jax.tree.map(lambda a: a[k], values))
            if not prefix:  # each of the block's layers: its repeats' outputs, stacked
                outs.extend((tuple(at(r).outputs[local] for r in range(first, end)), y, y.ndim - 1)
                            for local, y in ys.items())
        else:
            x = unrolled(x, first, end)
        return unrolled(x, end, block.repeat)

    def _gather(self, names: RepeatNames, scalars) -> tuple[dict, dict]:
        """One repeat's variables and scalars under the block's own (local) layer names."""
        variables = {}
        for col, tree in self.variables.items():
            leaves = {local: tree[mod] for local, mod in names.modules.items() if mod in tree}
            if leaves:
                variables[col] = leaves
        return variables, {local: scalars[name] for local, name in names.scalars.items()}

    @staticmethod
    def _repeat(body: "_Net", calibrate, repeat_vars, h):
        """One repeat of a block: ``(output, (layer outputs, new batch statistics or {}))``."""
        variables, scalars = repeat_vars
        if calibrate and "batch_stats" in variables:
            (y, ys), updates = body.apply(variables, h, scalars, calibrate, mutable=["batch_stats"])
            return y, (ys, updates["batch_stats"])
        y, ys = body.apply(variables, h, scalars, calibrate)
        return y, (ys, {})

    def _layer(self, name, layer, x, scalars, calibrate):
        mod_name = name.replace("/", "|")
        if isinstance(layer, (Dense, Conv)):
            return _Affine(layer, name=mod_name)(x, scalars[name])
        if isinstance(layer, Activation):
            s = scalars[name]
            if not layer.choices:
                return shaped(get_activation(layer.fn), s["alpha"], s["beta"], s["gain"], s["params"])(x)
            branches = [shaped(get_activation(c), s["alpha"], s["beta"], s["gain"], s["params"][c])
                        for c in layer.choices]
            return jax.lax.switch(s["choice"], branches, x)  # unbatched: only the chosen branch runs
        if isinstance(layer, BatchNorm):
            return FrozenBatchNorm(layer.epsilon, name=mod_name)(x, calibrate)
        if isinstance(layer, LayerNorm):
            return _LayerNorm(layer.epsilon, name=mod_name)(x)
        if isinstance(layer, AvgPool):
            return nn.avg_pool(x, layer.window, layer.stride, _pool_padding(layer.padding, len(layer.window)),
                               count_include_pad=layer.count_include_pad)
        if isinstance(layer, MaxPool):
            return nn.max_pool(x, layer.window, layer.stride, _pool_padding(layer.padding, len(layer.window)))
        if isinstance(layer, GlobalAvgPool):
            return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
        if isinstance(layer, Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, Residual):
            s = scalars[name]
            short = self._run(layer.shortcut, sub_prefix(name, "shortcut"), x, scalars, calibrate, [])
            branch = self._run(layer.branch, sub_prefix(name, "branch"), x, scalars, calibrate, [])
            return s["shortcut_scale"] * short + s["branch_scale"] * branch
        raise TypeError(f"unsupported layer {type(layer).__name__}")


def _sample(template, affine: dict[str, tuple[str, Layer]], key, scalars, flats: dict | None = None,
            plan_only: bool = False, groups: dict[str, tuple] | None = None):
    """Draws all parameters: one random call per distribution, sliced into the layers.

    One call per distribution (rather than per tensor) keeps the compiled
    program small: compile time no longer grows with the number of layers'
    random draws. Kernels have unit gain (``unit_weights`` conventions) times
    ``weight_std``; biases are N(0, 1) times ``bias_std``; normalization scales
    are 1 and shifts 0; batch statistics start at mean 0, variance 1.

    ``flats``: the per-distribution draws made already, cut into the pieces
    that the layers take (``{dist: [array of each shape]}``, see
    :data:`zsad._types.Network.draws`), used instead of drawing. ``plan_only``:
    returns the draws' ``(dist, fold_in index, dtype, shapes)`` instead.
    ``groups``: the repeats of scanned blocks (:func:`zsad.arch.repeats.repeat_groups`), whose pieces are cut at once.
    """
    # a plan is shapes alone: nothing allocated (a network too large for memory is refused from them)
    params = {} if plan_only else {mod: {k: jnp.zeros(v.shape, v.dtype) for k, v in leaves.items()}
                                   for mod, leaves in template.get("params", {}).items()}
    for mod, leaves in template.get("params", {}).items():
        if not plan_only and mod not in affine and "scale" in leaves:
            params[mod]["scale"] = jnp.ones(leaves["scale"].shape, leaves["scale"].dtype)
    pending: dict[str, list] = {"normal": [], "truncated_normal": [], "uniform": []}
    for i, (mod, (name, spec)) in enumerate(sorted(affine.items())):
        kernel = template["params"][mod]["kernel"]
        gain = scalars[name]["weight_std"]
        fan_in = int(np.prod(kernel.shape[:-1]))
        if spec.init.dist in pending:
            norm = {"normal": 1.0, "truncated_normal": TRUNC_STD, "uniform": 1.0 / np.sqrt(3.0)}[spec.init.dist]
            pending[spec.init.dist].append((mod, "kernel", kernel, gain / (norm * np.sqrt(fan_in))))
        elif not plan_only:
            params[mod]["kernel"] = gain * unit_weights(jax.random.fold_in(key, 1000 + i), kernel.shape,
                                                        spec.init.dist, kernel.dtype)
        if "bias" in template["params"][mod]:
            pending["normal"].append((mod, "bias", template["params"][mod]["bias"], scalars[name]["bias_std"]))
    plan = []
    for j, (dist, items) in enumerate(pending.items()):
        if not items:
            continue
        dtype = items[0][2].dtype
        total = sum(int(np.prod(leaf.shape)) for _, _, leaf, _ in items)
        plan.append((dist, j, np.dtype(dtype).name, tuple(tuple(leaf.shape) for _, _, leaf, _ in items)))
        if plan_only:
            continue
        if flats is not None:
            for (mod, pname, leaf, scale), piece in zip(items, flats[dist], strict=True):
                params[mod][pname] = scale * piece
            continue
        k = jax.random.fold_in(key, j)
        if dist == "normal":
            flat = jax.random.normal(k, (total,), dtype)
        elif dist == "truncated_normal":
            flat = jax.random.truncated_normal(k, -2.0, 2.0, (total,), dtype)
        else:
            flat = jax.random.uniform(k, (total,), dtype, -1.0, 1.0)
        cut_draw(flat, items, groups or {}, params)
    if plan_only:
        return tuple(plan)
    out = {"params": params}
    if "batch_stats" in template:
        out["batch_stats"] = {mod: {"mean": jnp.zeros(v["mean"].shape, v["mean"].dtype),
                                    "var": jnp.ones(v["var"].shape, v["var"].dtype)}
                              for mod, v in template["batch_stats"].items()}
    return out


@functools.lru_cache(maxsize=256)
def _functions(layers: tuple[Layer, ...], input_shape: tuple[int, ...], scan: bool = True):
    """init/apply/calibrate for one structure; cached so equal structures share functions.

    With ``scan``, runs of equal layers are folded into blocks first (:func:`zsad.arch.repeats.fold_repeats`):
    the same layers, names and variables, run as loops.
    """
    if scan:
        layers = fold_repeats(layers)
    net = _Net(layers, scan)
    affine = {name.replace("/", "|"): (name, layer) for name, layer in all_named(layers)
              if isinstance(layer, (Dense, Conv))}

    def template(scalars):
        x = jnp.zeros((1, *input_shape), jnp.result_type(float))
        return jax.eval_shape(net.init, jax.random.key(0), x, scalars)

    groups = repeat_groups(layers) if scan else {}

    def init(key, scalars):
        return _sample(template(scalars), affine, key, scalars, groups=groups)

    def init_with(flats, key, scalars):
        return _sample(template(scalars), affine, key, scalars, flats=flats)

    plans: dict[str, tuple] = {}

    def draws(scalars):  # shapes only: one plan per structure (and float type)
        kind = str(jnp.result_type(float))
        if kind not in plans:
            plans[kind] = _sample(template(scalars), affine, None, scalars, plan_only=True)
        return plans[kind]

    def apply(variables, scalars, x):
        return net.apply(variables, x, scalars)

    def calibrate(variables, scalars, x):
        if "batch_stats" not in variables:
            return variables
        _, updates = net.apply(variables, x, scalars, calibrate=True, mutable=["batch_stats"])
        return {**variables, **updates}

    def apply_calibrating(variables, scalars, x):
        if "batch_stats" not in variables:
            return apply(variables, scalars, x), variables
        out, updates = net.apply(variables, x, scalars, calibrate="constant", mutable=["batch_stats"])
        return out, {**variables, **updates}

    def segment(variables, scalars, h, start, stop):
        return net.apply(variables, h, scalars, start=start, stop=stop)[0]

    return init, apply, calibrate, segment, init_with, draws, apply_calibrating


def build(arch: Architecture, *, scan: bool = True) -> Network:
    """Builds the network of ``arch`` (an architecture file's layers, a flax or a PyTorch entry point).

    ``scan``: repeated blocks, and runs of at least :data:`zsad.arch.repeats.MIN_FOLDED_REPEATS` equal
    layers, run as one loop over their repeats (a program whose size does not grow with depth);
    ``False`` unrolls them, with the same variables and the same results.
    """
    if arch.module is not None and arch.module.startswith("torch:"):
        from zsad.torch_bridge import build_torch  # imports torch only for PyTorch modules

        return build_torch(arch)
    if arch.module is not None:
        return build_module(arch)
    init, apply, calibrate, segment, init_with, draws, apply_calibrating = _functions(
        structure(arch.layers), tuple(arch.input.shape), scan)
    names = tuple(name for name, _ in named_layers(arch.layers))
    scalars = scalars_of(arch)
    return Network(init, apply, calibrate, scalars, names, tuple(arch.input.shape), segment,
                   draws=draws(scalars), init_with=init_with, apply_calibrating=apply_calibrating)


# --------------------------------------------------------------------------- flax entry points

def load_factory(arch: Architecture):
    """Imports ``package.module:factory`` (the architecture file's folder is importable)."""
    module_name, _, attr = arch.module.partition(":")
    where = f"{arch.module_at or locate(arch.source)}: module"
    factory = import_callable(module_name, attr, arch.base_dir, where)
    try:
        module = factory()
    except Exception as err:
        raise SpecError(f"{where}: {arch.module}() failed: {type(err).__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise SpecError(f"{where}: {arch.module}() returned {type(module).__name__}, expected a flax.linen.Module")
    return module


def _ordered_leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, jax.Array]]:
    """Leaves of flax's captured intermediates, in call order (dict insertion order)."""
    if isinstance(tree, (tuple, list)):
        return [("/".join(path), leaf) for leaf in tree]
    out = []
    for key, value in tree.items():
        sub = path if key == "__call__" else (*path, str(key))
        out.extend(_ordered_leaves(value, sub))
    return out


def build_module(arch: Architecture) -> Network:
    """Wraps a user's flax module. It is called as ``module.apply(variables, x)`` on a batch.

    The profile covers every submodule's output (flax ``capture_intermediates``).
    Such a module has no zsad scalars; modules with batch norm must run in
    inference mode (``use_running_average=True``), since zsad cannot freeze
    statistics inside a foreign module.
    """
    module = load_factory(arch)
    shape = tuple(arch.input.shape)

    def init(key, scalars):
        return module.init(key, jnp.zeros((1, *shape), jnp.result_type(float)))

    def apply(variables, scalars, x):
        y, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        leaves = [(name, v) for name, v in _ordered_leaves(state["intermediates"])
                  if name and hasattr(v, "shape") and v.ndim >= 1 and v.shape[0] == x.shape[0]]
        outs = {name: v for name, v in leaves}
        outs["output"] = y
        return y, outs

    def calibrate(variables, scalars, x):
        return variables

    try:
        variables = jax.eval_shape(init, jax.random.key(0), {})
        _, outs = jax.eval_shape(apply, variables, {}, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    except Exception as err:
        raise SpecError(f"{locate(arch.source)}: module: {arch.module}() does not run on inputs of shape "
                        f"{list(shape)}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    return Network(init, apply, calibrate, {}, tuple(outs), shape)
