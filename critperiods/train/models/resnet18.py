"""``resnet18``: pre-activation CIFAR ResNet-18 (He et al. 2016), the other architecture of
Achille et al. (2019); ``width`` is the channel count of the first stage (64 in the paper)."""

from __future__ import annotations

from torch import nn

from critperiods.train.models import Classifier
from critperiods.train.models.blocks import PreActBlock


def build(width: int, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Pre-activation CIFAR ResNet-18: 3×3 stem, four stages of two blocks."""
    widths = [width, 2 * width, 4 * width, 8 * width]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False)]
    cin = width
    for stage, cout in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(PreActBlock(cin, cout, stride))
            cin = cout
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), cin, num_classes)
