"""The spec objects of an architecture: frozen dataclasses of its input, initialization and layers.

:mod:`zsad.arch.spec` reads them from YAML files and writes them back;
:mod:`zsad.arch.shapes` infers their shapes; :mod:`zsad.arch.build` turns them
into networks. Scalars (initialization scales, residual scales, activation
parameters, shaping) are plain floats. Imports no jax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class Init:
    """Weight initialization. ``Var(W_ij) = weight_std**2 / fan_in``; bias ~ N(0, bias_std**2)."""

    dist: str = "normal"
    weight_std: float = 1.0
    bias_std: float = 0.0


@dataclass(frozen=True)
class Input:
    """One sample's shape and where samples come from (``data`` is ``gaussian`` or a path)."""

    shape: tuple[int, ...]
    data: str = "gaussian"
    std: float = 1.0
    dtype: str = "float32"
    key: str | None = None  # array name inside a .npz file
    at: str | None = field(default=None, compare=False)  # FILE:LINE:COL of ``data`` (for error messages)


@dataclass(frozen=True)
class Layer:
    """Base of all layer specs. ``path`` locates the layer in its file (not part of equality)."""

    path: str = field(default="", compare=False, kw_only=True)
    at: str | None = field(default=None, compare=False, kw_only=True)  # FILE:LINE:COL (error messages)

    @property
    def kind(self) -> str:
        return _KIND[type(self)]


@dataclass(frozen=True)
class Dense(Layer):
    features: int
    use_bias: bool = True
    init: Init = Init()


@dataclass(frozen=True)
class Conv(Layer):
    features: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Union[str, int] = "same"
    use_bias: bool = True
    init: Init = Init()


@dataclass(frozen=True)
class AvgPool(Layer):
    window: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Union[str, int] = "valid"
    count_include_pad: bool = False


@dataclass(frozen=True)
class MaxPool(Layer):
    window: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Union[str, int] = "valid"


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    pass


@dataclass(frozen=True)
class Flatten(Layer):
    pass


@dataclass(frozen=True)
class BatchNorm(Layer):
    epsilon: float = 1e-5


@dataclass(frozen=True)
class LayerNorm(Layer):
    epsilon: float = 1e-5


@dataclass(frozen=True)
class Shaping:
    """Shaping scalars of an activation: ``gain * (alpha * phi(beta x) / beta + (1 - alpha) x)``."""

    alpha: float = 1.0
    beta: float = 1.0
    gain: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.alpha == 1.0 and self.beta == 1.0 and self.gain == 1.0


@dataclass(frozen=True)
class Activation(Layer):
    """An elementwise activation ``fn`` with its parameters and shaping.

    ``choices``: candidate functions when the function is data, chosen by a
    traced index (``fn`` is one of them). :mod:`zsad.rank` sets it so that
    architectures differing only in their activation functions share one
    compiled program; architecture files never do.
    """

    fn: str
    params: tuple[tuple[str, float], ...] = ()
    shaping: Shaping = Shaping()
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block(Layer):
    layers: tuple[Layer, ...]
    repeat: int = 1


@dataclass(frozen=True)
class Residual(Layer):
    branch: tuple[Layer, ...]
    shortcut: tuple[Layer, ...] = ()
    branch_scale: float = 1.0
    shortcut_scale: float = 1.0


_KIND = {
    Dense: "dense", Conv: "conv", AvgPool: "avg_pool", MaxPool: "max_pool",
    GlobalAvgPool: "global_avg_pool", Flatten: "flatten", BatchNorm: "batch_norm",
    LayerNorm: "layer_norm", Activation: "activation", Block: "block", Residual: "residual",
}


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture file.

    Either ``layers`` (built by ``zsad.arch.build``) or ``module`` (a
    ``package.module:factory`` entry point returning a flax module, or
    ``torch:package.module:factory`` returning a ``torch.nn.Module``:
    :mod:`zsad.torch_bridge`) is set. ``init_set``: the file gives ``init:``
    (a PyTorch module then takes zsad's distributions instead of its own).
    ``source`` is the file it came from; relative data paths resolve against it.
    """

    name: str
    input: Input
    init: Init = Init()
    layers: tuple[Layer, ...] = ()
    module: str | None = None
    source: str | None = field(default=None, compare=False)
    module_at: str | None = field(default=None, compare=False)  # FILE:LINE:COL of ``module`` (error messages)
    init_set: bool = False

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()


# --------------------------------------------------------------------------- traversal

def expand(layers: tuple[Layer, ...]) -> Iterator[Layer]:
    """Yields the top-level layers with blocks unrolled (residual branches kept whole)."""
    for layer in layers:
        if isinstance(layer, Block):
            for _ in range(layer.repeat):
                yield from expand(layer.layers)
        else:
            yield layer


def layer_label(layer: Layer) -> str:
    """Short human label: the activation name for activations (``a|b``: a choice of them), else the layer type."""
    if isinstance(layer, Activation):
        return "|".join(layer.choices) if layer.choices else layer.fn
    return layer.kind


def named_layers(layers: tuple[Layer, ...], prefix: str = "") -> list[tuple[str, Layer]]:
    """``(name, layer)`` for the expanded top-level layers; names are ``"{index}.{label}"``."""
    return [(f"{prefix}{i}.{layer_label(layer)}", layer) for i, layer in enumerate(expand(layers))]


def sub_prefix(name: str, part: str) -> str:
    """The prefix of the names of the layers in ``part`` (``"branch"`` or ``"shortcut"``) of the residual
    layer ``name``.

    >>> sub_prefix("2.residual", "branch") + "0.dense"
    '2.residual/branch.0.dense'
    """
    return f"{name}/{part}."


def activations_of(layers: tuple[Layer, ...]) -> Iterator[Activation]:
    """Every activation layer in network order, inside residual branches too."""
    for layer in expand(layers):
        if isinstance(layer, Activation):
            yield layer
        elif isinstance(layer, Residual):
            yield from activations_of(layer.shortcut)
            yield from activations_of(layer.branch)


def family_of(arch: Architecture) -> dict:
    """The layer types an architecture holds, for :func:`zsad.verdict.outside_evidence`:
    ``{"kinds", "residual_conv", "multi_branch", "foreign"}``."""
    kinds: set[str] = set()
    flags = {"residual_conv": False, "multi_branch": False}

    def walk(layers: tuple[Layer, ...]) -> set[str]:
        seen: set[str] = set()
        for layer in expand(layers):
            seen.add(layer.kind)
            if isinstance(layer, Residual):
                inner = walk(layer.branch) | walk(layer.shortcut)
                seen |= inner
                flags["residual_conv"] |= "conv" in inner
                flags["multi_branch"] |= bool(layer.shortcut)
        return seen

    kinds = walk(arch.layers)
    return {"kinds": kinds, **flags, "foreign": arch.module is not None}
