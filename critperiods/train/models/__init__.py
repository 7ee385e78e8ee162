"""Image classifiers used in the sweep, selected by name (``model.name``).

Every model is split into ``features`` (everything up to the penultimate
representation, flattened) and ``classifier`` (one ``nn.Linear``), so that
``model(x) == model.classifier(model.features(x))``. The divergence stage uses
``features`` for CKA and the module structure for weight matching.

Each architecture is a module of this package named after it, whose ``build(width,
in_channels, image_size, num_classes)`` returns the model:

* ``small_cnn`` — the default: two conv layers and a linear read-out, no
  BatchNorm, cheap enough for a 2-core laptop; ``width`` scales the channels.
* ``all_cnn_c`` — All-CNN-C (Springenberg et al. 2015) with BatchNorm, one of
  the two architectures of Achille et al. (2019); ``width`` scales 96/192.
* ``resnet18`` — pre-activation CIFAR ResNet-18 (He et al. 2016), the other one;
  ``width`` is the channel count of the first stage (64 in the paper).

:func:`build_model` imports the one that is asked for, by name
(:func:`architecture_module`), and nothing imports the others. So a stage's code
fingerprint counts only the architecture of its experiment (the workflow names it from the
config, ``critperiods.pipeline.plan.modules_chosen_by_config``), and editing one architecture
reruns only the experiments that use it (docs/invalidation.md).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

#: The architectures, by ``model.name``; each is the module :func:`architecture_module` names.
MODELS = ("small_cnn", "all_cnn_c", "resnet18")


class Classifier(nn.Module):
    """A feature extractor followed by a linear read-out."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def architecture_module(name: str) -> str:
    """The dotted name of the module that builds architecture ``name`` (ValueError naming
    ``model.name`` for one that is not in :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    return f"{__name__}.{name}"


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
    if init not in INITS:
        raise ValueError(f"model.init: unknown initialisation {init!r}; choose one of {INITS}")
    build = importlib.import_module(architecture_module(name)).build
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(width, in_channels, image_size, num_classes)
        if init == "kaiming_sphere":
            from critperiods.train.sphere_init import sphere_init_

            sphere_init_(model)  # continues the seeded stream
        return model


__all__ = ["INITS", "MODELS", "Classifier", "architecture_module", "build_model"]
