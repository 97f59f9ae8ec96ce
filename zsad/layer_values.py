"""A mapping from layer names to per-layer arrays, held stacked where layers repeat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_pytree_node_class
class LayerValues(Mapping):
    """A read-only ``{layer name: array}`` whose repeated layers share one array (a pytree).

    Iteration follows ``order`` (the network's; default: group after group). Each group is
    ``(names, array, ndim)``: one layer's value when ``ndim`` is None, else the values of
    ``len(names)`` layers, each of ``ndim`` axes, stacked along axis ``-(ndim + 1)``. Axes that
    transformations add in front (``vmap`` over seeds or tangents) are kept: ``values[name]`` is then
    the layer's value with those axes. A program that returns it returns one array per group, not
    one per layer, however deep the network (:func:`zsad.arch.build.build` scans repeated blocks).

    Example:
      >>> import jax.numpy as jnp
      >>> v = LayerValues(((("a",), jnp.zeros(3), None), (("b", "c"), jnp.ones((2, 3)), 1)))
      >>> list(v), v["c"].shape
      (['a', 'b', 'c'], (3,))
    """

    def __init__(self, groups: tuple[tuple[tuple[str, ...], Any, int | None], ...],
                 order: tuple[str, ...] | None = None):
        self.groups = tuple(groups)
        self.order = tuple(order) if order is not None else tuple(n for names, _, _ in self.groups for n in names)
        self._where = {name: (g, k) for g, (names, _, _) in enumerate(self.groups) for k, name in enumerate(names)}

    def __getitem__(self, name: str):
        g, k = self._where[name]
        _, array, ndim = self.groups[g]
        if ndim is None:
            return array
        if isinstance(array, jax.ShapeDtypeStruct):  # shapes alone (jax.eval_shape)
            axis = len(array.shape) - ndim - 1
            return jax.ShapeDtypeStruct(array.shape[:axis] + array.shape[axis + 1:], array.dtype)
        return array[(..., k) + (slice(None),) * ndim]

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return f"LayerValues({', '.join(self)})"

    def map_groups(self, fn: Callable[..., tuple], *others: "LayerValues") -> tuple["LayerValues", ...]:
        """``fn(value, *other values)`` of every layer, computed once per group (vmapped over its layers).

        ``others`` hold the same names in the same groups (e.g. the tangents pushed through the same
        network), each group's arrays with any leading axes of their own. ``fn`` returns a tuple of
        arrays; each becomes a :class:`LayerValues` of the same names, a group's values stacked on
        axis 0.
        """
        columns: list[list] = []
        for g, (names, array, ndim) in enumerate(self.groups):
            arrays = [array] + [other.groups[g][1] for other in others]
            if ndim is None:
                out = fn(*arrays)
            else:
                out = jax.vmap(fn, in_axes=tuple(a.ndim - ndim - 1 for a in arrays))(*arrays)
            columns.append([(names, value, None if ndim is None else np.ndim(value) - 1) for value in out])
        return tuple(LayerValues(tuple(col[i] for col in columns), self.order) for i in range(len(columns[0])))

    def stacked(self) -> jax.Array:
        """Every layer's value in ``order``, stacked on a new last axis (values of one shape, e.g. scalars
        per layer with leading axes): one concatenation and one gather, whatever the number of layers."""
        parts, names = [], []
        for group_names, array, ndim in self.groups:
            if ndim is None:
                parts.append(array[..., None])
            elif ndim == 0:
                parts.append(array)
            else:
                parts.append(jnp.moveaxis(array, -(ndim + 1), -1))
            names.extend(group_names)
        where = {name: i for i, name in enumerate(names)}
        index = np.asarray([where[name] for name in self.order], np.int32)
        flat = jnp.concatenate(parts, axis=-1)
        return flat if np.array_equal(index, np.arange(len(names))) else jnp.take(flat, index, axis=-1)

    def tree_flatten(self):
        aux = (tuple((names, ndim) for names, _, ndim in self.groups), self.order)
        return tuple(array for _, array, _ in self.groups), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        groups, order = aux
        return cls(tuple((names, array, ndim) for (names, ndim), array in zip(groups, children)), order)
