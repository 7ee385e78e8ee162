"""Image classifiers used in the sweep, selected by name.

Every model is split into ``features`` (everything up to the penultimate
representation, flattened) and ``classifier`` (one ``nn.Linear``), so that
``model(x) == model.classifier(model.features(x))``. The divergence stage uses
``features`` for CKA and the module structure for weight matching.

* ``small_cnn`` — the default: two conv layers and a linear read-out, no
  BatchNorm, cheap enough for a 2-core laptop; ``width`` scales the channels.
* ``all_cnn_c`` — All-CNN-C (Springenberg et al. 2015) with BatchNorm, one of
  the two architectures of Achille et al. (2019); ``width`` scales 96/192.
* ``resnet18`` — pre-activation CIFAR ResNet-18 (He et al. 2016), the other one;
  ``width`` is the channel count of the first stage (64 in the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ModelBuilder = Callable[[int, int, int, int], nn.Module]


class Classifier(nn.Module):
    """A feature extractor followed by a linear read-out."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn(width: int, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """conv(w)-relu-pool → conv(2w)-relu-pool → linear; ~20k parameters at w=16 on 28×28.

    Written pool-then-ReLU: ReLU is monotone, so max-pooling commutes with it exactly —
    the same outputs and the same gradients, bit for bit — and the ReLU (forward and
    backward) touches 4× fewer elements, about 10% of a CPU training step.
    """
    side = image_size // 4
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )
    return Classifier(features, 2 * width * side * side, num_classes)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def all_cnn_c(width: int, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """All-CNN-C with BatchNorm; ``width`` is the first stage's channels (96 in the paper).

    The final 1×1 convolution to the classes followed by global average pooling
    is written as global pooling followed by a linear layer (the same function,
    since both are linear), so the model has a ``classifier`` like the others.
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


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv-BN-ReLU-conv plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


def resnet18(width: int, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
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


MODELS: dict[str, ModelBuilder] = {
    "small_cnn": small_cnn,
    "all_cnn_c": all_cnn_c,
    "resnet18": resnet18,
}


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model.to(memory_format=torch.channels_last)``, including convolutions with ONE input
    channel (the stem on grayscale images).

    PyTorch cannot tell the two layouts of an ``(out, 1, k, k)`` weight apart (the channel
    dimension has size 1), keeps its NCHW strides, and so runs such a convolution NCHW: its
    output comes back NCHW through a oneDNN reorder, the gradient goes through another, and
    the pooling after it runs NCHW — together about a fifth of a ``small_cnn`` training step
    on a CPU. Giving the weight channels-last strides (the same storage, the same values)
    makes the output channels-last.
    """
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.weight.shape[1] == 1:
                w = module.weight
                kh, kw = w.shape[2:]
                w.set_(w.untyped_storage(), w.storage_offset(), w.shape, (kh * kw, 1, kw, 1))
    return model


def channels_last_images(x: torch.Tensor) -> torch.Tensor:
    """A copy of a batch of images ``(N, C, H, W)`` in channels-last layout (other tensors
    are returned as they are).

    Made with explicit strides because ``x.contiguous(memory_format=torch.channels_last)``
    is a no-op on a one-channel batch (both layouts look alike), and a convolution whose
    input and weight both have NCHW strides runs NCHW, with the slow NCHW max-pool after it
    (the default ``small_cnn`` then takes ~3x longer per forward pass on a CPU).
    """
    if x.dim() != 4:
        return x
    n, c, h, w = x.shape
    out = torch.empty_strided(x.shape, (h * w * c, 1, w * c, c), dtype=x.dtype, device=x.device)
    return out.copy_(x)


#: Initialisations (``model.init``): PyTorch's default Kaiming-uniform draw, or each layer's
#: weights uniform on the sphere of that draw's root-mean-square norm (critperiods.train.perturb).
INITS = ("kaiming", "kaiming_sphere")


def build_model(
    name: str, width: int, in_channels: int, image_size: int, num_classes: int, seed: int,
    init: str = "kaiming",
) -> nn.Module:
    """Build model ``name`` with initial weights that depend only on ``seed`` (and ``init``).

    The global RNG is forked, so building a model neither reads nor disturbs
    any other random stream of the caller.
    """
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    if init not in INITS:
        raise ValueError(f"model.init: unknown initialisation {init!r}; choose one of {INITS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](width, in_channels, image_size, num_classes)
        if init == "kaiming_sphere":
            from critperiods.train.sphere_init import sphere_init_

            sphere_init_(model)  # continues the seeded stream
        return model
