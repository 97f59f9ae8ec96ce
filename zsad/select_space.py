"""The positions and candidates of a space of one choice per position, and fair initialization.

Positions and candidates (:func:`load_select_space`):

* a product space (``base:`` + ``choices:``): each ``choices:`` field is a
  position, its values the candidates, named as the space names them
  (``layers.0.layers.1.fn=relu``); ``sample:``/``seed:`` of the file are
  ignored (selection draws its own sample);
* NAS-Bench-201 (``space: nas-bench-201``, whatever its ``archs:``): the six
  edges ``0->1``, ``0->2``, ``1->2``, ``0->3``, ``1->3``, ``2->3``, each with
  the five operations of :data:`zsad.spaces.nasbench201.OPS`.

Other forms (an explicit list, a generator) have no positions: a one-line error.

Fair initialization (on by default; ``fair=False`` compares as is). Before the
comparison every parametric candidate is put at criticality for the input it
receives:

* an activation candidate of a product space (a choice of an activation layer's
  ``fn``, ``params`` or ``shaping``, or a whole activation layer) fed directly by
  a ``dense`` or ``conv`` layer: that layer's ``init.weight_std`` is set to
  ``sqrt(sigma_w^2)`` with ``chi1(q*) = 1`` for the candidate's function (with its
  parameters and shaping) at the feeding layer's ``bias_std``: the edge of
  chaos of :func:`zsad.meanfield_arch.edge_of_chaos`, searched over
  ``sigma_w^2`` in [1e-4, 1e4] (the mean field of normal/uniform weights,
  ``Var W = sigma_w^2 / fan_in``). It is set in every sampled architecture
  holding the candidate, overriding the layer's own or the global weight_std
  (a ``choices:`` field of that weight_std then only matters elsewhere);
* an activation fed by ``batch_norm`` or ``layer_norm`` is invariant to the scale
  of what precedes the normalization; one with no dense/conv layer right before
  it (first in its list, or after another kind of layer) has no init scale of
  its own: both are compared as they are, and the output says so;
* other choices (layer widths, scalars, whole non-activation layers) are not
  modules with an init scale of their own and are compared as they are;
* NAS-Bench-201: every operation with parameters is ReLU-conv-batch norm, whose
  output does not depend on the convolution's weight scale (batch norm divides
  it out), and ``none``, ``skip_connect`` and ``avg_pool_3x3`` have no
  parameters: fair initialization changes nothing there, and both comparisons
  are one.

Pure: no printing, no files. :mod:`zsad.select` samples, scores and chooses.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from zsad._errors import SpecError
from zsad.arch.spec import Context, parse_architecture, read_yaml
from zsad.field_paths import set_path, split_path, value_text
from zsad.space import Space, SpaceItem, load_space
from zsad.spaces import nasbench201 as nb201

#: The search interval of the critical sigma_w^2.
CRITICAL_BRACKET = (1e-4, 1e4)
#: The positions of NAS-Bench-201: its six edges ``source->target``.
EDGE_NAMES: tuple[str, ...] = tuple(f"{a}->{b}" for a, b in nb201.EDGES)

_NO_POSITIONS = ("select needs one choice per position (a 'base:' + 'choices:' space or 'space: nas-bench-201'); "
                 "{what} has no positions")


@dataclass(frozen=True)
class Position:
    """One position: its name and its candidates (labels as the space writes them, and values)."""

    name: str
    choices: tuple[str, ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class FairInit:
    """What fair initialization does to one candidate.

    Attributes:
      kind: ``critical`` (an init scale set), ``invariant`` (output independent of the weight scale),
        ``parameter-free``, or ``as is`` (no init scale of its own).
      text: one line for people.
      layer: the dotted path of the layer whose weight_std is set (``critical``).
      weight_std: the value set (``critical``).
      q_star: the fixed point at that weight_std, when finite.
    """

    kind: str
    text: str
    layer: str | None = None
    weight_std: float | None = None
    q_star: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SelectSpace:
    """A space of one choice per position, and how to make its architectures."""

    form: str
    name: str
    source: str | None
    positions: tuple[Position, ...]
    space: Space
    base_node: Any = None
    base_file: str | None = None
    base_name: str = "base"
    default_name: str = "base"
    _fair: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    # ---- naming

    def notation(self, combo: Sequence[int]) -> str:
        """The architecture in the space's own notation (product: its id; NAS-Bench-201: its string)."""
        if self.form == "nas-bench-201":
            return nb201.format_arch(self._ops(combo))
        chosen = ",".join(f"{p.name}={p.choices[i]}" for p, i in zip(self.positions, combo))
        return f"{self.base_name}[{chosen}]"

    def _ops(self, combo: Sequence[int]) -> tuple[str, ...]:
        return tuple(p.values[i] for p, i in zip(self.positions, combo))

    # ---- making architectures

    def _trial(self, combo: Sequence[int]) -> Any:
        trial = copy.deepcopy(self.base_node)
        for p, i in zip(self.positions, combo):
            set_path(trial, split_path(p.name), copy.deepcopy(p.values[i]), create=True)
        return trial

    def item(self, combo: Sequence[int], fair: bool) -> SpaceItem:
        """The architecture of ``combo`` (candidate indices per position), fairly initialized if ``fair``."""
        ident = self.notation(combo)
        if self.form == "nas-bench-201":
            return SpaceItem(ident, self._ops(combo))
        trial = self._trial(combo)
        if fair:  # each activation layer a position touches, at criticality for its function in this architecture
            done = set()
            for p in self.positions:
                site = _site_in(trial, split_path(p.name))
                if site is None or tuple(site[0]) in done:
                    continue
                done.add(tuple(site[0]))
                f = _fair_for(self.base_node, *site)
                if f.kind == "critical":
                    set_path(trial, split_path(f.layer) + ["init", "weight_std"], f.weight_std, create=True)
        try:
            arch = parse_architecture(trial, file=self.base_file, default_name=self.default_name,
                                      ctx=Context(self.base_file))
        except Exception as err:  # an invalid combination: rank_space reports it as failed
            return SpaceItem(ident, None, f"invalid combination of choices: {err}")
        return SpaceItem(ident, dataclasses.replace(arch, name=ident))

    # ---- fair initialization

    def activation_site(self, position: Position, index: int) -> tuple[list, dict, dict | None] | None:
        """``(layer path, activation layer node, feeding layer node or None)`` when the candidate is an
        activation (in the base with this candidate), else None."""
        if self.form != "product":
            return None
        trial = copy.deepcopy(self.base_node)
        parts = split_path(position.name)
        set_path(trial, parts, copy.deepcopy(position.values[index]), create=True)
        return _site_in(trial, parts)

    def fair_init(self, position: Position, index: int) -> FairInit:
        """What fair initialization does to candidate ``index`` of ``position``."""
        key = (self.positions.index(position), index)
        if key not in self._fair:
            self._fair[key] = self._fair_init(position, index)
        return self._fair[key]

    def _fair_init(self, position: Position, index: int) -> FairInit:
        if self.form == "nas-bench-201":
            op = position.values[index]
            if op in ("nor_conv_1x1", "nor_conv_3x3"):
                return FairInit("invariant", "ReLU-conv-batch norm: its output does not depend on the convolution's "
                                             "weight scale; compared as is")
            return FairInit("parameter-free", f"{op}: no parameters; compared as is")
        site = self.activation_site(position, index)
        if site is None:
            return FairInit("as is", "not a module with an init scale of its own (a width, a scalar or a "
                                     "non-activation layer); compared as is")
        return _fair_for(self.base_node, *site)

    @property
    def fair_changes_anything(self) -> bool:
        return any(self.fair_init(p, i).kind == "critical" for p in self.positions for i in range(len(p.choices)))


def _site_in(trial: Any, parts: list) -> tuple[list, dict, dict | None] | None:
    """In the architecture mapping ``trial``: ``(layer path, activation node, feeding layer node or None)`` when
    the field ``parts`` lies in (or is) an activation layer, else None."""
    nodes = [trial]
    for part in parts:
        cur = nodes[-1]
        try:
            nodes.append(cur[part] if isinstance(cur, list) else cur[str(part)])
        except (KeyError, IndexError, TypeError):
            return None
    for depth in range(len(parts), 0, -1):  # the deepest layer mapping (a dict with a 'type') on the path
        node = nodes[depth]
        if isinstance(node, dict) and "type" in node:
            if node.get("type") != "activation":
                return None
            layer_path = parts[:depth]
            parent, idx = nodes[depth - 1], layer_path[-1]
            feed = parent[idx - 1] if isinstance(parent, list) and isinstance(idx, int) and idx > 0 else None
            return layer_path, node, feed if isinstance(feed, dict) else None
    return None


def _fair_for(base_node: Any, layer_path: list, act: dict, feed: dict | None) -> FairInit:
    kind = feed.get("type") if feed is not None else None
    if kind in ("batch_norm", "layer_norm"):
        return FairInit("invariant", f"its input is normalized by {kind}, invariant to the scale before it; "
                                     "compared as is")
    if kind not in ("dense", "conv"):
        return FairInit("as is", "no dense or conv layer directly feeds it, so no init scale of its own; "
                                 "compared as is")
    feed_path = ".".join(map(str, layer_path[:-1] + [layer_path[-1] - 1]))
    bias_std = _bias_std(base_node, feed)
    wv, q = critical_weight_var(act, bias_std ** 2)
    if wv is None:
        return FairInit("as is", f"no sigma_w^2 in [{CRITICAL_BRACKET[0]:g}, {CRITICAL_BRACKET[1]:g}] puts it at "
                                 "chi1 = 1; compared as is")
    std = math.sqrt(wv)
    q_text = f" at q* = {q:.3g}" if q is not None else ""
    return FairInit("critical", f"weight_std of {feed_path} ({kind}) set to {std:.4g}: chi1 = 1{q_text} "
                                f"(bias_std {bias_std:g})", feed_path, std, q)


def _bias_std(base_node: Any, layer: dict) -> float:
    own = layer.get("init") if isinstance(layer.get("init"), dict) else {}
    glob = base_node.get("init") if isinstance(base_node, dict) and isinstance(base_node.get("init"), dict) else {}
    value = own.get("bias_std", glob.get("bias_std", 0.0))
    return float(value)


def _phi(act: dict) -> Callable:
    from zsad.activations import ACTIVATION_PARAMS, get_activation, shaped

    params = {**ACTIVATION_PARAMS.get(act["fn"], {}), **{str(k): float(v) for k, v in (act.get("params") or {}).items()}}
    sh = {str(k): float(v) for k, v in (act.get("shaping") or {}).items()}
    return shaped(get_activation(act["fn"]), sh.get("alpha", 1.0), sh.get("beta", 1.0), sh.get("gain", 1.0), params)


def critical_weight_var(act: dict, bias_var: float) -> tuple[float | None, float | None]:
    """``(sigma_w^2, q*)`` with ``chi1(q*) = 1`` for the activation layer ``act`` (a mapping with ``fn`` and
    optionally ``params`` and ``shaping``); ``(None, None)`` when none lies in :data:`CRITICAL_BRACKET`;
    ``q*`` None when it diverges or is 0.

    Examples:
      >>> w, _ = critical_weight_var({"fn": "relu"}, 0.0); round(w, 4)
      2.0
      >>> w, _ = critical_weight_var({"fn": "identity", "shaping": {"gain": 0.5}}, 0.0); round(w, 3)
      4.0
    """
    key = (act["fn"], tuple(sorted((str(k), float(v)) for k, v in (act.get("params") or {}).items())),
           tuple(sorted((str(k), float(v)) for k, v in (act.get("shaping") or {}).items())), float(bias_var))
    return _critical(key)


@functools.lru_cache(maxsize=None)
def _critical(key) -> tuple[float | None, float | None]:
    import jax
    import jax.numpy as jnp

    from zsad import meanfield as mf

    fn, params, shaping, bias_var = key
    phi = _phi({"fn": fn, "params": dict(params), "shaping": dict(shaping)})
    b = jnp.asarray(bias_var, jnp.result_type(float))
    wv = float(jax.jit(lambda bv: mf.critical_weight_var(phi, bv, bracket=CRITICAL_BRACKET))(b))
    if not math.isfinite(wv):
        return None, None
    fp = mf.q_star(phi, jnp.asarray(wv, b.dtype), b)
    q = float(fp.value)
    return wv, (q if bool(fp.converged) and math.isfinite(q) and q > 1e-6 else None)


def load_select_space(path: str | Path) -> SelectSpace:
    """The positions and candidates of the space file at ``path``.

    Raises:
      SpecError: the file is invalid, or its form has no positions (one line).
    """
    space = load_space(path)
    if space.form == "nas-bench-201":
        positions = tuple(Position(name, nb201.OPS, nb201.OPS) for name in EDGE_NAMES)
        return SelectSpace("nas-bench-201", space.name, space.source, positions, space)
    if space.form in ("list", "generator"):
        what = {"list": "an explicit list of architectures", "generator": "a generator"}[space.form]
        raise SpecError(f"{path}: " + _NO_POSITIONS.format(what=what))
    if space.form != "product":
        raise SpecError(f"{path}: select chooses among a 'base:' + 'choices:' space's or NAS-Bench-201's "
                        f"candidates; the built-in space {space.form} is not supported yet")
    node = read_yaml(path)
    base_node, base_file = node["base"], str(path)
    default_name = "base"
    if isinstance(base_node, str):
        p = Path(base_node) if Path(base_node).is_absolute() else Path(path).resolve().parent / base_node
        base_file, default_name = str(p), p.stem
        base_node = read_yaml(p)
    base = parse_architecture(copy.deepcopy(base_node), file=base_file, default_name=default_name,
                              ctx=Context(base_file))
    positions = tuple(Position(str(k), tuple(value_text(v) for v in values), tuple(values))
                      for k, values in node["choices"].items())
    return SelectSpace("product", space.name, space.source, positions, space, base_node, base_file, base.name,
                       default_name)
