"""``all_cnn_c``: All-CNN-C (Springenberg et al. 2015) with BatchNorm, one of the two
architectures of Achille et al. (2019); ``width`` scales 96/192."""

from __future__ import annotations

from torch import nn

from critperiods.train.models import Classifier


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def build(width: int, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """All-CNN-C with BatchNorm; ``width`` is the first stage's channels (96 in the paper).

    One difference from Springenberg et al.'s Table 1: its seventh layer is a valid 3×3
    convolution (global averaging over 6 × 6 for a 32×32 input); here it is padded (8 × 8),
    so that any image of at least 4×4 pixels fits. The final 1×1 convolution to the classes
    followed by global average pooling is written as global pooling followed by a linear
    layer (the same function, since both are linear), so the model has a ``classifier``
    like the others.
    """
    a, b = width, 2 * width
    layers = [
        *_conv_bn_relu(in_channels, a, 3, padding=1),
        *_conv_bn_relu(a, a, 3, padding=1),
        *_conv_bn_relu(a, a, 3, stride=2, padding=1),
        *_conv_bn_relu(a, b, 3, padding=1),
        *_conv_bn_relu(b, b, 3, padding=1),
        *_conv_bn_relu(b, b, 3, stride=2, padding=1),
        *_conv_bn_relu(b, b, 3, padding=1),
        *_conv_bn_relu(b, b, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return Classifier(nn.Sequential(*layers), b, num_classes)
