"""The population of architectures: MLPs and small CNNs, drawn with a fixed seed.

A *structure* fixes everything that changes the compiled program: kind (``mlp`` or ``cnn``),
depth, width, activation, residual connections and normalization. Each structure is
instantiated with ``SETTINGS_PER_STRUCTURE`` draws of the *scalars* -- weight_std,
bias_std, the residual branch scale and the activation's own parameter (leaky_relu's
negative_slope, elu's alpha) -- which zsad passes to its compiled programs as traced
inputs, so each structure costs one compilation per data set however many settings it has.

Layouts (``D`` = depth = number of activation layers, ``w`` = width / channels, ``N`` =
the optional normalization layer, placed before the activation):

  mlp, plain     [dense w, N, act] x D, dense 10
  mlp, residual  dense w, N, act, then D-1 residual blocks with branch [dense w, N, act]
                 (identity shortcut, output = x + branch_scale * branch(x)), dense 10
  cnn, plain     conv3x3 w, N, act, avg_pool to 4x4, [conv3x3 w, N, act] x (D-1), flatten, dense 10
  cnn, residual  conv3x3 w, N, act, avg_pool to 4x4, D-1 residual blocks [conv3x3 w, N, act], flatten, dense 10

30 structures (25 MLPs, 5 CNNs) are drawn with ``POPULATION_SEED``: every built-in activation
name of ``zsad.activations.ACTIVATIONS`` gets two structures (``swish`` and ``silu`` separately,
although they are the same function) and the four in ``EXTRA`` a third; MLP depths follow the
quota ``MLP_DEPTHS`` (2 to 32), CNN depths ``CNN_DEPTHS``; widths are drawn from
``MLP_WIDTHS`` / ``CNN_WIDTHS`` with a cost cap (width 128 only up to depth 8, depth 32 only at
width 32, CNN width 16 only at depth 2); residual connections with probability 0.4 from depth 3;
normalization none / layer / batch norm with probabilities 0.5 / 0.25 / 0.25 (CNNs: none / batch
norm, 0.6 / 0.4). Every structure gets all eleven weight_std values of ``WEIGHT_STDS``; bias_std,
branch scale and activation parameter are drawn per setting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from zsad.activations import ACTIVATIONS
from zsad.arch.spec import Architecture, parse_architecture

POPULATION_SEED = 2024
#: Every structure is trained with every weight_std of this grid (11 settings per structure).
WEIGHT_STDS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.41, 1.7, 2.0, 2.4, 2.8, 4.0)
SETTINGS_PER_STRUCTURE = len(WEIGHT_STDS)
BIAS_STDS = (0.0, 0.1, 0.5)
BRANCH_SCALES = (0.3, 1.0)
ACT_PARAM_VALUES = {"leaky_relu": ("negative_slope", (0.01, 0.1, 0.3)), "elu": ("alpha", (0.5, 1.0, 1.5))}

#: Two structures per activation name, plus one more for these.
EXTRA = ("relu", "tanh", "gelu", "leaky_relu")
#: Depths of the 25 MLP structures (shallow ones are cheap to compile, so they are more numerous).
MLP_DEPTHS = (2,) * 7 + (4,) * 6 + (8,) * 6 + (16,) * 4 + (32,) * 2
MLP_WIDTHS = (32, 64, 128)
#: Depths of the 5 CNN structures (XLA:CPU convolutions are slow at these sizes: < 1 GFLOP/s).
CNN_DEPTHS = (2, 2, 3, 3, 4)
CNN_WIDTHS = (8, 16)
NORMS = ("none", "layer_norm", "batch_norm")


@dataclass(frozen=True)
class Structure:
    kind: str          # mlp | cnn
    activation: str
    depth: int
    width: int
    residual: bool
    norm: str          # none | layer_norm | batch_norm

    @property
    def id(self) -> str:
        return (f"{self.kind}-{self.activation}-d{self.depth}-w{self.width}"
                f"-{'res' if self.residual else 'plain'}-{self.norm.replace('_norm', '')}")

    def cost(self) -> float:
        """Rough training cost (multiply-adds per sample, relative)."""
        if self.kind == "mlp":
            return self.depth * self.width ** 2 / 4096
        return 4 * self.depth * 9 * self.width ** 2 / 4096 + 1


@dataclass(frozen=True)
class Member:
    """One architecture: a structure plus its scalars."""

    structure: Structure
    index: int
    weight_std: float
    bias_std: float
    branch_scale: float | None
    act_param: tuple[str, float] | None

    @property
    def id(self) -> str:
        return f"{self.structure.id}-s{self.index}"

    def record(self) -> dict:
        """Flat description stored with every result row."""
        s = asdict(self.structure)
        return {"arch": self.id, "structure": self.structure.id, **s, "weight_std": self.weight_std,
                "bias_std": self.bias_std, "branch_scale": self.branch_scale,
                "act_param": None if self.act_param is None else self.act_param[1]}

    def architecture(self, input_shape: tuple[int, ...], data: str = "gaussian") -> Architecture:
        """The zsad Architecture on inputs of ``input_shape`` (data: 'gaussian' or a .npy path)."""
        return parse_architecture(self.mapping(input_shape, data))

    def mapping(self, input_shape: tuple[int, ...], data: str = "gaussian") -> dict:
        st = self.structure
        act: dict = {"type": "activation", "fn": st.activation}
        if self.act_param is not None:
            act[self.act_param[0]] = self.act_param[1]
        norm = [] if st.norm == "none" else [{"type": st.norm}]
        if st.kind == "mlp":
            unit = [{"type": "dense", "features": st.width}, *norm, act]
        else:
            unit = [{"type": "conv", "features": st.width, "kernel": 3, "padding": "same"}, *norm, act]
        layers: list = list(unit)
        if st.kind == "cnn":
            layers.append({"type": "avg_pool", "window": input_shape[0] // 4})  # 4x4 maps
        if st.depth > 1:
            if st.residual:
                body = {"type": "residual", "branch": unit, "branch_scale": self.branch_scale,
                        "shortcut_scale": 1.0}
                layers.append({"type": "block", "repeat": st.depth - 1, "layers": [body]})
            else:
                layers.append({"type": "block", "repeat": st.depth - 1, "layers": unit})
        if st.kind == "cnn":
            layers.append({"type": "flatten"})
        layers.append({"type": "dense", "features": 10})
        return {"name": self.id, "input": {"shape": list(input_shape), "data": data},
                "init": {"dist": "normal", "weight_std": self.weight_std, "bias_std": self.bias_std},
                "layers": layers}


def _structures(rng: np.random.Generator) -> list[Structure]:
    acts = [a for a in ACTIVATIONS for _ in range(2)] + list(EXTRA)
    acts = [str(a) for a in rng.permutation(acts)]
    kinds = ["cnn"] * len(CNN_DEPTHS) + ["mlp"] * len(MLP_DEPTHS)
    kinds = [str(k) for k in rng.permutation(kinds)]
    mlp_depths = [int(d) for d in rng.permutation(MLP_DEPTHS)]
    cnn_depths = [int(d) for d in rng.permutation(CNN_DEPTHS)]
    out: list[Structure] = []
    for act, kind in zip(acts, kinds):
        while True:
            if kind == "mlp":
                depth = mlp_depths[-1]
                widths = [w for w in MLP_WIDTHS if not (w == 128 and depth > 8) and not (w > 32 and depth > 16)]
                norms, p = NORMS, [0.5, 0.25, 0.25]
            else:
                depth = cnn_depths[-1]
                widths = [w for w in CNN_WIDTHS if not (w == 16 and depth > 2)]
                norms, p = ("none", "batch_norm"), [0.6, 0.4]
            width = int(rng.choice(widths))
            residual = bool(depth >= 3 and rng.random() < 0.4)
            norm = str(rng.choice(norms, p=p))
            s = Structure(kind, act, depth, width, residual, norm)
            if s not in out:
                break
        (mlp_depths if kind == "mlp" else cnn_depths).pop()
        out.append(s)
    return out


def _members(s: Structure, rng: np.random.Generator) -> list[Member]:
    out = []
    for i, ws in enumerate(WEIGHT_STDS):
        bs = float(rng.choice(BIAS_STDS))
        branch = float(rng.choice(BRANCH_SCALES)) if s.residual else None
        ap = None
        if s.activation in ACT_PARAM_VALUES:
            name, values = ACT_PARAM_VALUES[s.activation]
            ap = (name, float(rng.choice(values)))
        out.append(Member(s, i, float(ws), bs, branch, ap))
    return out


def population(seed: int = POPULATION_SEED) -> list[tuple[Structure, list[Member]]]:
    """The structures with their members, in a fixed order."""
    rng = np.random.default_rng(seed)
    structures = _structures(rng)
    return [(s, _members(s, rng)) for s in structures]


def summary(pop) -> dict:
    members = [m for _, ms in pop for m in ms]
    count = lambda key: {str(k): v for k, v in sorted(  # noqa: E731
        __import__("collections").Counter(key(m) for m in members).items(), key=lambda kv: str(kv[0]))}
    return {"structures": len(pop), "architectures": len(members),
            "kind": count(lambda m: m.structure.kind), "depth": count(lambda m: m.structure.depth),
            "width": count(lambda m: m.structure.width), "activation": count(lambda m: m.structure.activation),
            "residual": count(lambda m: m.structure.residual), "norm": count(lambda m: m.structure.norm),
            "weight_std": count(lambda m: m.weight_std), "bias_std": count(lambda m: m.bias_std)}
