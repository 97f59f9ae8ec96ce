"""Repeated layers: their names per repeat, their draws cut at once, and runs of equal layers folded.

A block repeated ``N`` times runs as one loop over its repeats (:mod:`zsad.arch.build`). The helpers
here name one repeat's variables, scalars and outputs under the block's own (local) layer names, group
the repeats' modules so that their parameters are cut from a distribution's draw by one gather, and
find runs of equal top-level layers that can run the same way.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zsad.arch.spec import (
    Activation, BatchNorm, Block, Conv, Dense, Layer, LayerNorm, Residual, expand, layer_label, named_layers,
)

MIN_FOLDED_REPEATS = 4  # a run of equal layers repeated at least this often becomes a block


def sub_prefix(name: str, part: str) -> str:
    """The name prefix of the layers of a residual layer's ``part`` (``shortcut`` or ``branch``)."""
    return f"{name}/{part}."


def count_layers(layers: tuple[Layer, ...]) -> int:
    """The number of top-level layers once blocks are unrolled."""
    return sum(layer.repeat * count_layers(layer.layers) if isinstance(layer, Block) else 1 for layer in layers)


def all_named(layers, prefix: str = "") -> list[tuple[str, Layer]]:
    """Every layer with its scalar name, residual sub-layers included."""
    out = []
    for name, layer in named_layers(layers, prefix):
        out.append((name, layer))
        if isinstance(layer, Residual):
            out += all_named(layer.shortcut, sub_prefix(name, "shortcut"))
            out += all_named(layer.branch, sub_prefix(name, "branch"))
    return out


class RepeatNames(NamedTuple):
    """The names of one repeat of a block's layers, keyed by their names in the block alone:
    ``modules`` (variables), ``scalars`` and ``outputs`` (the repeat's top-level layers)."""

    modules: dict[str, str]
    scalars: dict[str, str]
    outputs: dict[str, str]


@functools.lru_cache(maxsize=4096)
def repeat_names(layers: tuple[Layer, ...], base: int, inner: int, prefix: str, r: int) -> RepeatNames:
    """The names of repeat ``r`` of a block of ``layers`` (``inner`` top-level layers each) whose first
    layer has index ``base`` in the layer list named under ``prefix``."""
    offset = base + r * inner

    def renamed(local: str) -> str:  # "{j}.rest" -> "{prefix}{offset + j}.rest"
        index, _, rest = local.partition(".")
        return f"{prefix}{offset + int(index)}.{rest}"

    named = all_named(layers)
    scalars = {n: renamed(n) for n, layer in named if isinstance(layer, (Dense, Conv, Activation, Residual))}
    modules = {n.replace("/", "|"): renamed(n).replace("/", "|") for n, layer in named
               if isinstance(layer, (Dense, Conv, BatchNorm, LayerNorm))}
    outputs = {n: renamed(n) for n, _ in named_layers(layers)}
    return RepeatNames(modules, scalars, outputs)


def repeat_groups(layers: tuple[Layer, ...], prefix: str = "") -> dict[str, tuple]:
    """``{module name: (group, repeat)}`` for the modules of repeated blocks: a group is one module of
    the block's layers, the repeat its index."""
    groups: dict[str, tuple] = {}
    base = 0
    for layer in layers:
        if isinstance(layer, Block) and layer.repeat > 1:
            inner = count_layers(layer.layers)
            for r in range(layer.repeat):
                for local, mod in repeat_names(layer.layers, base, inner, prefix, r).modules.items():
                    groups[mod] = ((prefix, base, local), r)
        else:
            for i, sub in enumerate(expand((layer,)), start=base):
                if isinstance(sub, Residual):
                    name = f"{prefix}{i}.{layer_label(sub)}"
                    groups.update(repeat_groups(sub.shortcut, sub_prefix(name, "shortcut")))
                    groups.update(repeat_groups(sub.branch, sub_prefix(name, "branch")))
        base += count_layers((layer,))
    return groups


def cut_draw(flat: jax.Array, items: list, groups: dict[str, tuple], params: dict) -> None:
    """Cuts one distribution's draw ``flat`` into the pieces ``items`` (``(module, name, leaf, scale)``
    in the draw's order), scaled, into ``params[module][name]``.

    The same piece of every repeat of a block (``groups``, :func:`repeat_groups`) is cut by one gather
    and then split, so that the block's loop stacks them back without a program that grows with the
    repeats; the values are those of slicing each piece alone.
    """
    sizes = [int(np.prod(leaf.shape)) for _, _, leaf, _ in items]
    offsets = np.cumsum([0, *sizes[:-1]])
    together: dict[tuple, list[tuple[int, int]]] = {}
    for n, (mod, pname, leaf, _) in enumerate(items):
        where = groups.get(mod)
        key = (where[0], pname, tuple(leaf.shape)) if where else (None, n)
        together.setdefault(key, []).append((where[1] if where else 0, n))
    for members in together.values():
        members.sort()
        first = members[0][1]
        if len(members) == 1:
            mod, pname, leaf, scale = items[first]
            o = int(offsets[first])
            params[mod][pname] = scale * flat[o:o + sizes[first]].reshape(leaf.shape)
            continue
        shape = items[first][2].shape
        starts = np.asarray([offsets[n] for _, n in members], np.int32)
        pieces = jax.vmap(lambda o: jax.lax.dynamic_slice(flat, (o,), (sizes[first],)))(starts)
        scales = jnp.stack([jnp.asarray(items[n][3], flat.dtype) for _, n in members])
        pieces = scales.reshape(-1, *([1] * len(shape))) * pieces.reshape(len(members), *shape)
        for k, (_, n) in enumerate(members):
            params[items[n][0]][items[n][1]] = pieces[k]


def fold_repeats(layers: tuple[Layer, ...], min_repeats: int = MIN_FOLDED_REPEATS,
                 max_period: int = 16) -> tuple[Layer, ...]:
    """``layers`` with every run of a period of equal layers repeated at least ``min_repeats`` times
    written as a block (inside residual branches too); the expanded layers, hence every name, stay.

    Equal means equal as written (:func:`zsad.arch.build.structure` first, to compare shapes alone).
    At each position the period covering most layers is taken (the shortest among equals); a block
    written as such is kept whole.

    Example:
      >>> from zsad.arch.spec import Activation, Dense
      >>> d, t = Dense(features=8), Activation(fn="tanh")
      >>> out = fold_repeats((Dense(features=4), *(d, t) * 5))
      >>> [type(x).__name__ for x in out], out[1].repeat
      (['Dense', 'Block'], 5)
    """
    items = [_fold_inside(layer, min_repeats, max_period) for layer in layers]
    out: list[Layer] = []
    i, n = 0, len(items)
    while i < n:
        best = (0, 0)  # (layers covered, period)
        for p in range(1, min(max_period, (n - i) // min_repeats) + 1):
            unit = items[i:i + p]
            if any(isinstance(x, Block) for x in unit):
                continue
            r = 1
            while items[i + r * p:i + (r + 1) * p] == unit:
                r += 1
            if r >= min_repeats and r * p > best[0]:
                best = (r * p, p)
        if best[0]:
            out.append(Block(layers=tuple(items[i:i + best[1]]), repeat=best[0] // best[1]))
            i += best[0]
        else:
            out.append(items[i])
            i += 1
    return tuple(out)


def _fold_inside(layer: Layer, min_repeats: int, max_period: int) -> Layer:
    if isinstance(layer, Residual):
        return dataclasses.replace(layer, shortcut=fold_repeats(layer.shortcut, min_repeats, max_period),
                                   branch=fold_repeats(layer.branch, min_repeats, max_period))
    return layer
