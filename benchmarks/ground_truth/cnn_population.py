"""The CNN population: plain CNNs with and without batch norm, residual CNNs and NAS-Bench-201-like
multi-branch cells on 8x8 inputs, drawn with a fixed seed.

As in :mod:`benchmarks.ground_truth.population`, a *structure* fixes everything that changes the
compiled program and is instantiated with ``len(WEIGHT_STDS)`` settings of the scalars zsad
traces (weight_std, bias_std, the residual branch scale), so each structure costs one compilation
per program however many settings it has. Four families (``C`` = channels, ``N`` = batch norm,
``act`` = the structure's activation):

  plain      conv3x3 C, act, avg_pool to 4x4, [conv3x3 C, act] x (D-1), flatten, dense 10
  plain_bn   the same with N after every conv (before the activation)
  residual   conv3x3 C, N?, act, avg_pool to 4x4, then D residual blocks
             x + branch_scale * [N?, act, conv3x3 C, N?, act, conv3x3 C](x), flatten, dense 10
  cell       NAS-Bench-201's skeleton scaled to 8x8: stem conv3x3 C, N; K cells at 8x8;
             reduction block (act, conv3x3 stride 2 -> 2C, N, act, conv3x3 2C, N; shortcut
             avg_pool 2x2 then conv1x1 2C); K cells at 4x4; N, act, global_avg_pool, dense 10

A cell is a four-node DAG whose six edges each choose among none / skip / conv1x1 / conv3x3 /
avgpool3x3 (a conv edge is act-conv-N, as in NAS-Bench-201), and node 3 is the cell's output. zsad
architecture files sum two paths with a ``residual`` layer, so they express exactly the
series-parallel cells; the population draws from the two series-parallel templates:

  template A (edge 0->2 is none):  out = e03(x) + [e13 + e23 . e12](e01(x))
  template B (edge 1->3 is none):  out = e03(x) + e23(e02(x) + e12(e01(x)))

Structures are drawn with ``CNN_POPULATION_SEED`` from per-family quotas (``FAMILY_STRUCTURES``):
depths cycle through the family's list in a random order, activations are drawn without
repetition while the family's list lasts, residual families alternate with and without batch
norm, widths are drawn (16 only for the shallowest); a draw that repeats a structure, or a cell
with no convolution, a zero output or a bare sum of two identities, is drawn again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsad.arch.spec import Architecture, parse_architecture

CNN_POPULATION_SEED = 2025
#: Every structure is trained with every weight_std of this grid.
WEIGHT_STDS = (0.5, 1.0, 2.0, 4.0)
SETTINGS_PER_STRUCTURE = len(WEIGHT_STDS)
BIAS_STDS = (0.0, 0.1, 0.5)
BRANCH_SCALES = (0.3, 1.0)
#: Structures per family.
FAMILY_STRUCTURES = {"plain": 5, "plain_bn": 5, "residual": 4, "cell": 6}
FAMILIES = tuple(FAMILY_STRUCTURES)
DEPTHS = {"plain": (2, 3, 4, 6), "plain_bn": (2, 3, 4, 6), "residual": (1, 2, 3), "cell": (1, 2)}
#: Channels of the first stage; 16 only for the shallowest plain and residual networks (XLA:CPU convolutions
#: are slow: a 400-step training of four settings at two learning rates takes minutes even at width 8).
WIDTHS = {"plain": (4, 8, 16), "plain_bn": (4, 8, 16), "residual": (4, 8, 16), "cell": (4, 8)}
WIDE = 16
ACTIVATIONS = {"plain": ("relu", "tanh", "gelu", "elu", "softplus", "leaky_relu", "sigmoid", "swish"),
               "plain_bn": ("relu", "tanh", "gelu", "elu", "softplus", "leaky_relu", "sigmoid", "swish"),
               "residual": ("relu", "tanh", "gelu", "softplus"),
               "cell": ("relu", "relu", "gelu", "tanh")}
EDGE_OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool3x3")
TEMPLATES = ("A", "B")


@dataclass(frozen=True)
class CnnStructure:
    family: str        # plain | plain_bn | residual | cell
    activation: str
    depth: int         # plain: conv layers; residual: blocks; cell: cells per stage
    width: int         # channels of the first stage
    norm: str          # none | batch_norm
    cell: tuple[str, ...] = ()  # cell: (template, e01, e02, e03, e12, e13, e23)

    kind = "cnn"

    @property
    def residual(self) -> bool:
        return self.family in ("residual", "cell")

    @property
    def id(self) -> str:
        base = f"cnn-{self.family}-{self.activation}-d{self.depth}-w{self.width}-{self.norm.replace('_norm', '')}"
        if self.cell:
            base += "-" + self.cell[0] + "".join(op[0] if op != "conv3x3" else "3" for op in self.cell[1:])
        return base

    def cost(self) -> float:
        """Rough training cost (multiply-adds per sample, relative to one 64-wide dense layer)."""
        convs = self.depth * (2 if self.family == "residual" else 1)
        if self.family == "cell":
            convs = 2 * self.depth * sum(op.startswith("conv") for op in self.cell[1:]) + 2
        return 4 * convs * 9 * self.width ** 2 / 4096 + 1


@dataclass(frozen=True)
class CnnMember:
    """One architecture: a structure plus its scalars."""

    structure: CnnStructure
    index: int
    weight_std: float
    bias_std: float
    branch_scale: float | None

    @property
    def id(self) -> str:
        return f"{self.structure.id}-s{self.index}"

    def record(self) -> dict:
        """Flat description stored with every result row."""
        s = self.structure
        return {"arch": self.id, "structure": s.id, "kind": "cnn", "family": s.family, "activation": s.activation,
                "depth": s.depth, "width": s.width, "residual": s.residual, "norm": s.norm,
                "cell": "-".join(s.cell) if s.cell else None, "weight_std": self.weight_std,
                "bias_std": self.bias_std, "branch_scale": self.branch_scale}

    def architecture(self, input_shape: tuple[int, ...], data: str = "gaussian") -> Architecture:
        """The zsad Architecture on inputs of ``input_shape`` (data: 'gaussian' or a .npy path)."""
        return parse_architecture(self.mapping(input_shape, data))

    def mapping(self, input_shape: tuple[int, ...], data: str = "gaussian") -> dict:
        st = self.structure
        layers = _cell_network(st) if st.family == "cell" else _conv_network(st, self.branch_scale, input_shape)
        return {"name": self.id, "input": {"shape": list(input_shape), "data": data},
                "init": {"dist": "normal", "weight_std": self.weight_std, "bias_std": self.bias_std},
                "layers": layers}


# --------------------------------------------------------------------------- layer lists

def _conv(features: int, kernel: int = 3, stride: int = 1) -> dict:
    out = {"type": "conv", "features": features, "kernel": kernel, "padding": "same"}
    if stride != 1:
        out["stride"] = stride
    return out


def _act(fn: str) -> dict:
    return {"type": "activation", "fn": fn}


def _conv_network(st: CnnStructure, branch_scale: float | None, input_shape) -> list:
    norm = [{"type": "batch_norm"}] if st.norm == "batch_norm" else []
    unit = [_conv(st.width), *norm, _act(st.activation)]
    layers = [*unit, {"type": "avg_pool", "window": input_shape[0] // 4}]  # 4x4 maps
    if st.family == "residual":
        branch = [*norm, _act(st.activation), _conv(st.width), *norm, _act(st.activation), _conv(st.width)]
        layers.append({"type": "residual", "branch": branch, "branch_scale": branch_scale, "shortcut_scale": 1.0,
                       "repeat": st.depth})
    elif st.depth > 1:
        layers.append({"type": "block", "repeat": st.depth - 1, "layers": unit})
    return [*layers, {"type": "flatten"}, {"type": "dense", "features": 10}]


def _edge(op: str, channels: int, act: str) -> list | None:
    """An edge's layers: None for ``none`` (zero), [] for ``skip`` (identity)."""
    if op == "none":
        return None
    if op == "skip":
        return []
    if op == "avgpool3x3":
        return [{"type": "avg_pool", "window": 3, "stride": 1, "padding": "same"}]
    kernel = 1 if op == "conv1x1" else 3
    return [_act(act), _conv(channels, kernel), {"type": "batch_norm"}]


def _seq(*paths):
    """Composition of paths (None = zero absorbs)."""
    if any(p is None for p in paths):
        return None
    return [layer for p in paths for layer in p]


def _sum(*paths):
    """Sum of paths as nested residual layers; None when every path is zero. Raises ValueError for a sum of
    identities only (zsad's residual needs a non-empty branch)."""
    live = sorted((p for p in paths if p is not None), key=len)  # identities (empty) become shortcuts
    if not live:
        return None
    out = live[-1]
    for p in reversed(live[:-1]):
        if not out:
            raise ValueError("a sum of identities")
        res = {"type": "residual", "branch": out, "branch_scale": 1.0, "shortcut_scale": 1.0}
        if p:
            res["shortcut"] = p
        out = [res]
    return out


def cell_layers(cell: tuple[str, ...], channels: int, act: str) -> list | None:
    """One cell's layers (None: the cell's output is zero)."""
    template, e01, e02, e03, e12, e13, e23 = cell
    e = lambda op: _edge(op, channels, act)  # noqa: E731
    if template == "A":
        if e02 != "none":
            raise ValueError("template A needs edge 0->2 = none")
        return _sum(e(e03), _seq(e(e01), _sum(e(e13), _seq(e(e12), e(e23)))))
    if e13 != "none":
        raise ValueError("template B needs edge 1->3 = none")
    return _sum(e(e03), _seq(_sum(e(e02), _seq(e(e01), e(e12))), e(e23)))


def _cell_network(st: CnnStructure) -> list:
    c, act = st.width, st.activation
    bn = {"type": "batch_norm"}
    layers = [_conv(c), bn]
    layers += (cell_layers(st.cell, c, act) or []) * st.depth
    reduction = {"type": "residual",
                 "branch": [_act(act), _conv(2 * c, 3, 2), bn, _act(act), _conv(2 * c), bn],
                 "shortcut": [{"type": "avg_pool", "window": 2, "stride": 2}, _conv(2 * c, 1)]}
    layers.append(reduction)
    layers += (cell_layers(st.cell, 2 * c, act) or []) * st.depth
    return [*layers, bn, _act(act), {"type": "global_avg_pool"}, {"type": "dense", "features": 10}]


# --------------------------------------------------------------------------- drawing

def _draw_cell(rng: np.random.Generator) -> tuple[str, ...]:
    while True:
        template = str(rng.choice(TEMPLATES))
        ops = [str(rng.choice(EDGE_OPS)) for _ in range(6)]
        ops[1 if template == "A" else 4] = "none"
        cell = (template, *ops)
        try:
            layers = cell_layers(cell, 8, "relu")
        except ValueError:
            continue
        # at least one convolution, so that the cell has weights of its own
        if layers and any(op.startswith("conv") for op in ops):
            return cell


def _structures(rng: np.random.Generator) -> list[CnnStructure]:
    out: list[CnnStructure] = []
    for family, count in FAMILY_STRUCTURES.items():
        depths = [int(d) for d in rng.permutation(np.resize(DEPTHS[family], count))]
        acts = [str(a) for a in rng.permutation(ACTIVATIONS[family])]
        acts = (acts * count)[:count]  # without repetition while the list lasts
        norms = [str(n) for n in rng.permutation(np.resize(("none", "batch_norm"), count))]
        for depth, act, norm in zip(depths, acts, norms):
            while True:
                wide = 2 if family.startswith("plain") else 1
                widths = [w for w in WIDTHS[family] if not (w == WIDE and depth > wide)]
                width = int(rng.choice(widths))
                if family in ("plain", "plain_bn"):
                    s = CnnStructure(family, act, depth, width, "batch_norm" if family == "plain_bn" else "none")
                elif family == "residual":
                    s = CnnStructure(family, act, depth, width, norm)
                else:
                    s = CnnStructure(family, act, depth, width, "batch_norm", _draw_cell(rng))
                if s not in out:
                    break
            out.append(s)
    return out


def _members(s: CnnStructure, rng: np.random.Generator) -> list[CnnMember]:
    out = []
    for i, ws in enumerate(WEIGHT_STDS):
        bs = float(rng.choice(BIAS_STDS))
        branch = float(rng.choice(BRANCH_SCALES)) if s.family == "residual" else None
        out.append(CnnMember(s, i, float(ws), bs, branch))
    return out


def population(seed: int = CNN_POPULATION_SEED) -> list[tuple[CnnStructure, list[CnnMember]]]:
    """The structures with their members, in a fixed order."""
    rng = np.random.default_rng(seed)
    structures = _structures(rng)
    return [(s, _members(s, rng)) for s in structures]


def summary(pop) -> dict:
    from collections import Counter

    members = [m for _, ms in pop for m in ms]

    def count(key):
        return {str(k): v for k, v in sorted(Counter(key(m) for m in members).items(), key=lambda kv: str(kv[0]))}

    return {"structures": len(pop), "architectures": len(members),
            "family": count(lambda m: m.structure.family), "depth": count(lambda m: m.structure.depth),
            "width": count(lambda m: m.structure.width), "activation": count(lambda m: m.structure.activation),
            "norm": count(lambda m: m.structure.norm), "weight_std": count(lambda m: m.weight_std),
            "bias_std": count(lambda m: m.bias_std)}
