"""PyTorch models for zsad's ``module: "torch:torch_models:FACTORY"`` (see torch_*.yaml beside this file)."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Two conv-batch norm-ReLU stages and a linear head, for 3 x 32 x 32 inputs."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.pool(self.stage(self.stem(x))).flatten(1))


def small_cnn() -> nn.Module:
    return SmallCNN()


def resnet18() -> nn.Module:
    """torchvision's ResNet-18, architecture only (no pretrained weights), 10 classes."""
    from torchvision.models import resnet18 as make

    return make(weights=None, num_classes=10)
