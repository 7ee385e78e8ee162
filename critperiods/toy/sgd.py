"""Minibatch SGD on a toy landscape: thousands of trajectories advanced at once.

Every trajectory draws its own minibatch of ``batch_size`` indices, uniformly with
replacement, from the finite data set at every step: the gradient noise is the real
minibatch noise of that data set, nothing is added.  Since the loss is quadratic in the
features ``u(w)``, a minibatch gradient is ``Jᵀ (S_B u − s_B)`` with ``S_B``, ``s_B`` the
batch means of ``x xᵀ`` and ``x y``; those batch means are gathered for all trajectories in
one ``embedding_bag`` call (summed in float32; weights and updates are float64).

Deterministic: the trajectories' minibatches come from one NumPy generator (PCG64) seeded by
``seed``, so the same inputs give the same bits (the reductions run in a fixed order
whatever the thread count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from critperiods.toy.landscapes import Landscape, RegressionData, excess_loss

BLOW_UP = 1e6  # |w| beyond this (or non-finite) at the end: the trajectory diverged


@dataclass
class SGDResult:
    """``endpoints`` (trajectories, dim); ``hitting_steps`` (tracked trajectories,
    thresholds): the first step at which ``L_n(w) − L_n(w*) ≤`` each threshold, −1 if
    never; ``diverged`` (trajectories,): non-finite or beyond :data:`BLOW_UP` at the end."""

    endpoints: Tensor
    hitting_steps: Tensor
    diverged: Tensor


def minibatch_gradient(landscape: Landscape, w: Tensor, moments: Tensor) -> Tensor:
    """Gradient of the minibatch loss at ``w`` (trajectories, dim), from each trajectory's
    batch means of :meth:`RegressionData.per_sample_moments` (trajectories, m² + m)."""
    m = landscape.n_features
    s_xx = moments[:, : m * m].reshape(-1, m, m)
    s_xy = moments[:, m * m :]
    u = landscape.features(w)
    residual = torch.einsum("rab,rb->ra", s_xx, u) - s_xy
    return torch.einsum("rad,ra->rd", landscape.jacobian(w), residual)


def run_sgd(
    landscape: Landscape,
    data: RegressionData,
    start: Tensor,
    lr: float,
    batch_size: int,
    steps: int,
    seed: int,
    thresholds: Sequence[float] = (),
    track: int | None = None,
    progress: bool = False,
) -> SGDResult:
    """Run ``steps`` SGD steps ``w ← w − lr ∇L_B(w)`` from every row of ``start``.

    ``thresholds``: excess losses whose first hitting step is recorded (at the start and
    after every step) for the first ``track`` trajectories (default all).
    """
    if batch_size < 1 or steps < 0 or lr <= 0:
        raise ValueError(f"need batch_size >= 1, steps >= 0, lr > 0; got {batch_size}, "
                         f"{steps}, {lr}")
    table = data.per_sample_moments().to(torch.float32)
    rng = np.random.default_rng(seed)
    w = start.to(torch.float64).clone()
    trajectories = w.shape[0]
    tracked = trajectories if track is None else track
    levels = torch.as_tensor(list(thresholds), dtype=torch.float64)
    hits = torch.full((tracked, len(levels)), -1, dtype=torch.int64)

    def record(step: int) -> None:
        if len(levels):
            loss = excess_loss(landscape, data, w[:tracked])
            newly = (loss[:, None] <= levels) & (hits < 0)
            hits[newly] = step

    record(0)
    for step in tqdm(range(1, steps + 1), desc=f"SGD {landscape.name} lr={lr} B={batch_size}",
                     disable=not progress, mininterval=2.0):
        idx = torch.from_numpy(rng.integers(0, data.n, (trajectories, batch_size),
                                            dtype=np.int32))
        # "sum" then scale: embedding_bag's "mean" mode is several times slower on a CPU
        sums = torch.nn.functional.embedding_bag(idx, table, mode="sum")
        w = w - lr * minibatch_gradient(landscape, w, sums.to(torch.float64) / batch_size)
        record(step)
    diverged = ~torch.isfinite(w).all(1) | (w.abs() > BLOW_UP).any(1)
    return SGDResult(w, hits, diverged)


__all__ = ["BLOW_UP", "SGDResult", "minibatch_gradient", "run_sgd"]
