"""The loss barrier between two networks: the probe loss along the straight line from one
to the other, above the interpolation of its endpoints (BatchNorm statistics re-estimated at
every point, since averaged weights do not match averaged statistics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from critperiods.measure.divergence.metrics import State

# ---------------------------------------------------------------------------------------------
# Loss barrier


@dataclass(frozen=True)
class Barrier:
    """Loss barrier on the segment a → b: both variants plus the loss at every alpha."""

    barrier: float
    barrier_mean: float
    alphas: np.ndarray
    losses: np.ndarray


def interpolate(a: State, b: State, alpha: float) -> dict[str, Tensor]:
    """``(1 − α) a + α b`` for floating entries (exact at α = 0 and 1); others taken from ``a``."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v.clone()
            for k, v in a.items()}


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reset_bn_statistics(model: nn.Module, data: Tensor | None, batches: int,
                        batch_size: int) -> bool:
    """Re-estimate every BatchNorm's running statistics as a cumulative average over batches.

    Interpolated weights do not match either endpoint's statistics (Jordan et al. 2023), so
    they are recomputed from the first ``batches`` batches of ``data`` in train mode with
    ``momentum=None``; the model is left in eval mode. Returns False for models without BN.
    """
    norms = _batch_norms(model)
    if not norms:
        return False
    if data is None or len(data) == 0:
        raise ValueError("the model has BatchNorm: barrier needs bn_data to reset its statistics")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, min(len(data), batches * batch_size), batch_size):
        model(data[i:i + batch_size])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return True


@torch.no_grad()
def probe_loss(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    """Mean cross-entropy (nats) of ``model`` in eval mode on the probe."""
    model.eval()
    total = 0.0
    for i in range(0, len(labels), batch_size):
        logits = model(images[i:i + batch_size])
        total += float(F.cross_entropy(logits.double(), labels[i:i + batch_size],
                                       reduction="sum"))
    return total / len(labels)


def loss_barrier(model: nn.Module, a: State, b: State, probe: tuple[Tensor, Tensor],
                 bn_data: Tensor | None, alphas: int = 11, bn_reset_batches: int = 8,
                 batch_size: int = 500) -> Barrier:
    """Loss barrier between ``a`` and ``b`` on a grid of ``alphas`` points of ``[0, 1]``.

    ``barrier = max_α [L(θ_α) − ((1−α) L(θ_a) + α L(θ_b))]`` and Frankle et al.'s
    ``barrier_mean = max_α L(θ_α) − (L(θ_a) + L(θ_b)) / 2``, with ``L`` the probe loss. BatchNorm
    statistics are re-estimated at every alpha, endpoints included, so all points are alike.
    ``model`` is used as scratch space: its weights are overwritten.
    """
    grid = np.linspace(0.0, 1.0, alphas)
    losses = np.empty(alphas)
    for i, alpha in enumerate(grid):
        model.load_state_dict(interpolate(a, b, float(alpha)))
        reset_bn_statistics(model, bn_data, bn_reset_batches, batch_size)
        losses[i] = probe_loss(model, *probe, batch_size)
    linear = (1 - grid) * losses[0] + grid * losses[-1]
    return Barrier(barrier=float(np.max(losses - linear)),
                   barrier_mean=float(losses.max() - (losses[0] + losses[-1]) / 2),
                   alphas=grid, losses=losses)


__all__ = ["Barrier", "interpolate", "loss_barrier", "probe_loss", "reset_bn_statistics"]
