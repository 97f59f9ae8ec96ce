"""PyTorch factories of the torch benchmark's space (benchmarks/bench_torch.py): five structures on 3 x 16 x 16."""

from __future__ import annotations

from torch import nn

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _mlp(depth: int, width: int, act: str) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    features = 3 * 16 * 16
    for _ in range(depth):
        layers += [nn.Linear(features, width), ACTS[act]()]
        features = width
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


def _cnn(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


def mlp_relu_d4_w256() -> nn.Module:
    return _mlp(4, 256, "relu")


def mlp_tanh_d4_w256() -> nn.Module:
    return _mlp(4, 256, "tanh")


def mlp_gelu_d2_w512() -> nn.Module:
    return _mlp(2, 512, "gelu")


def cnn_bn_w16() -> nn.Module:
    return _cnn(16)


def cnn_bn_w32() -> nn.Module:
    return _cnn(32)


FACTORIES = ("mlp_relu_d4_w256", "mlp_tanh_d4_w256", "mlp_gelu_d2_w512", "cnn_bn_w16", "cnn_bn_w32")
