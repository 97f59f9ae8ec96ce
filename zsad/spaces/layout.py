"""One standard-normal draw laid out as a space's shared program: the initialization of its networks.

A built-in space's program holds every candidate operation of every edge; a
directly built network holds only its own. :func:`network` initializes both
from one ``jax.random.normal`` draw whose consecutive blocks are the
program's random variables (kernels, ``head_kernel``, ``head_bias``) in
path order, so that

* the same key gives a direct network the values its program holds under the
  same names (a direct network takes its blocks at the program's offsets);
* the program's initialization is one random call (small to compile,
  whatever the number of operations), and its draws can be made once outside
  the program and shared by every architecture
  (:attr:`zsad._types.Network.draws`, :mod:`zsad.draws`).

Kernels are ``N(0, weight_std**2 / fan_in)`` (``fan_in`` the product of all
but the last axis), ``head_bias`` ``N(0, bias_std**2)``; batch-norm scales and
variances 1, shifts and means 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from zsad._types import Network

#: ``fold_in`` index of the draw under an initialization key.
FOLD = 0
_DRAWN = ("kernel", "head_kernel", "head_bias")


def _path(path) -> tuple[str, ...]:
    return tuple(str(getattr(p, "key", p)) for p in path)


def blocks(tree: Any) -> dict[tuple[str, ...], tuple[int, tuple[int, ...]]]:
    """``{path: (offset, shape)}`` of the random parameters of the variable tree ``tree`` (shapes suffice),
    in ``jax.tree_util`` order (sorted keys), and the total size under the key ``()``."""
    out, offset = {}, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(tree.get("params", {})))[0]:
        names = _path(path)
        if names[-1] in _DRAWN:
            out[names] = (offset, tuple(leaf.shape))
            offset += math.prod(leaf.shape)
    out[()] = (offset, ())
    return out


def _fill(tree: Any, pieces: dict, scalars: dict) -> dict:
    """Variables of ``tree``: ``pieces[path]`` (standard normal, the block's shape) scaled; constants elsewhere."""
    ws, bs = scalars["weight_std"], scalars["bias_std"]

    def leaf(path, spec):
        names = _path(path)
        last = names[-1]
        if names[0] == "params" and names[1:] in pieces:
            z = pieces[names[1:]]
            return bs * z if last == "head_bias" else (ws / math.sqrt(math.prod(spec.shape[:-1]))) * z
        if last in ("scale", "var"):
            return jnp.ones(spec.shape, spec.dtype)
        return jnp.zeros(spec.shape, spec.dtype)

    return jax.tree_util.tree_map_with_path(leaf, dict(tree))


def network(make: Callable[[Any], Any], scalars: dict, layer_names: tuple[str, ...], input_shape: tuple[int, ...],
            program_tree: Callable[[], Any] | None = None) -> Network:
    """A :class:`zsad._types.Network` from ``make(calibrate) -> flax module`` called as
    ``module(x, scalars) -> (logits, {layer name: output})``; Jacobian segments start at the input.

    ``program_tree``: the variable shapes of the space's program (None: this network is the program),
    whose layout the draw follows. Only a program shares its draws (``draws``, ``init_with``).
    """
    from zsad.spaces.ops import module_network

    run = make(False)
    dtype = jnp.result_type(float)
    cache: dict[str, Any] = {}

    def tree():
        if "tree" not in cache:
            cache["tree"] = jax.eval_shape(run.init, jax.random.key(0), jnp.zeros((1, *input_shape), dtype), scalars)
        return cache["tree"]

    def layout():
        if "layout" not in cache:
            cache["layout"] = blocks(tree() if program_tree is None else program_tree())
        return cache["layout"]

    def init(key, scalars):
        lay = layout()
        z = jax.random.normal(jax.random.fold_in(key, FOLD), (lay[()][0],), dtype)
        own = blocks(tree())
        pieces = {p: z[lay[p][0]:lay[p][0] + math.prod(shape)].reshape(shape)
                  for p, (_, shape) in own.items() if p}
        return _fill(tree(), pieces, scalars)

    def init_with(flats, key, scalars):
        del key
        own = [p for p in blocks(tree()) if p]
        return _fill(tree(), dict(zip(own, flats["normal"], strict=True)), scalars)

    draws: tuple = ()
    if program_tree is None:
        shapes = tuple(shape for p, (_, shape) in layout().items() if p)
        draws = (("normal", FOLD, jnp.dtype(dtype).name, shapes),)
    return module_network(make, init, scalars, layer_names, input_shape, draws=draws,
                          init_with=init_with if draws else None)
