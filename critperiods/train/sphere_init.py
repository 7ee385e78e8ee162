"""The ``kaiming_sphere`` initialisation (``model.init``): each convolution's and linear
layer's weight and bias drawn uniformly on the sphere of radius ``√(n / (3·fan_in))``, the
root-mean-square norm of PyTorch's default (Kaiming-uniform, ``a = √5``) initialisation of a
tensor of ``n`` entries. Kaiming's initialisation is, to good approximation, a draw from a
thin spherical shell; this draws on the shell itself.

A module of its own because training imports it (:func:`critperiods.train.models.build_model`):
the perturbations (:mod:`critperiods.train.perturb`), which only the perturbation stages run,
stay out of the training stages' code fingerprints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["kaiming_radius", "sphere_init_"]


def kaiming_radius(numel: int, fan_in: int) -> float:
    """Root-mean-square norm of a tensor of ``numel`` entries drawn by PyTorch's default init
    of a layer with ``fan_in`` inputs: uniform on ±1/√fan_in, variance 1/(3·fan_in)."""
    return math.sqrt(numel / (3 * fan_in))


def _fan_in(weight: Tensor) -> int:
    return int(weight.shape[1] * math.prod(weight.shape[2:]))


@torch.no_grad()
def sphere_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Redraw every ``Conv``/``Linear`` weight and bias uniformly on the sphere of
    :func:`kaiming_radius`; other parameters (BatchNorm's constant scale and shift) keep
    their values. Draws from ``generator`` (default: the global stream, which
    :func:`critperiods.train.models.build_model` forks and seeds)."""
    for module in model.modules():
        if not isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            continue
        fan_in = _fan_in(module.weight)
        for p in (module.weight, module.bias):
            if p is None:
                continue
            g = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_(g / g.norm() * kaiming_radius(p.numel(), fan_in))
    return model
