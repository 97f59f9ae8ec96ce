"""Static shape inference for architecture specs (pure Python, no jax).

Runs before anything is traced so that a shape mismatch is reported as one line
naming the layer and both shapes, not as an XLA error.
"""

from __future__ import annotations

import math

from zsad._errors import SpecError, locate
from zsad.arch.layers import (
    Activation, Architecture, AvgPool, BatchNorm, Block, Conv, Dense, Flatten,
    GlobalAvgPool, Layer, LayerNorm, MaxPool, Residual, expand, layer_label,
)

Shape = tuple[int, ...]


def _fail(arch: Architecture, layer: Layer, message: str) -> SpecError:
    return SpecError(f"{layer.at or locate(arch.source)}: {layer.path or '<layer>'} ({layer_label(layer)}): {message}")


def spatial_out(n: int, window: int, stride: int, padding) -> int:
    """Output length of a windowed op along one axis (same/valid/explicit padding)."""
    if padding == "same":
        return -(-n // stride)
    pad = 0 if padding == "valid" else int(padding)
    return (n + 2 * pad - window) // stride + 1


def _windowed(arch, layer, shape: Shape, window, stride, padding, channels_out=None) -> Shape:
    rank = len(window)
    if len(shape) != rank + 1:
        want = "[L, C]" if rank == 1 else "[H, W, C]" if rank == 2 else f"{rank} spatial axes and channels"
        raise _fail(arch, layer, f"expected an input of shape {want}, got {list(shape)}")
    out = []
    for n, k, s in zip(shape[:-1], window, stride):
        m = spatial_out(n, k, s, padding)
        if m < 1:
            raise _fail(arch, layer, f"window {list(window)} does not fit input of shape {list(shape)}")
        out.append(m)
    return (*out, channels_out if channels_out is not None else shape[-1])


def layer_output_shape(arch: Architecture, layer: Layer, shape: Shape) -> Shape:
    """Output shape of ``layer`` on one sample of ``shape``; raises SpecError on mismatch."""
    if isinstance(layer, Dense):
        return (*shape[:-1], layer.features)
    if isinstance(layer, Conv):
        return _windowed(arch, layer, shape, layer.kernel, layer.stride, layer.padding, layer.features)
    if isinstance(layer, (AvgPool, MaxPool)):
        return _windowed(arch, layer, shape, layer.window, layer.stride, layer.padding)
    if isinstance(layer, GlobalAvgPool):
        if len(shape) < 2:
            raise _fail(arch, layer, f"expected an input with spatial axes and channels, got {list(shape)}")
        return (shape[-1],)
    if isinstance(layer, Flatten):
        return (math.prod(shape),)
    if isinstance(layer, (BatchNorm, LayerNorm, Activation)):
        return shape
    if isinstance(layer, Block):
        for sub in expand((layer,)):
            shape = layer_output_shape(arch, sub, shape)
        return shape
    if isinstance(layer, Residual):
        branch = sequence_output_shape(arch, layer.branch, shape)
        short = sequence_output_shape(arch, layer.shortcut, shape)
        if branch != short:
            raise _fail(arch, layer, f"branch output shape {list(branch)} differs from shortcut output "
                                     f"shape {list(short)}")
        return branch
    raise TypeError(type(layer))


def sequence_output_shape(arch: Architecture, layers, shape: Shape) -> Shape:
    for layer in expand(tuple(layers)):
        shape = layer_output_shape(arch, layer, shape)
    return shape


def infer_shapes(arch: Architecture) -> list[Shape]:
    """Output shape (one sample) of every expanded top-level layer, in order."""
    shape: Shape = tuple(arch.input.shape)
    shapes = []
    for layer in expand(arch.layers):
        shape = layer_output_shape(arch, layer, shape)
        shapes.append(shape)
    return shapes
