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

from critperiods.toy.landscapes import Landscape, RegressionData, excess_from_features

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
    return _gradient(landscape, w, landscape.features(w), moments)


def _gradient(landscape: Landscape, w: Tensor, u: Tensor, moments: Tensor) -> Tensor:
    """:func:`minibatch_gradient` given ``u = features(w)``, written out per kind (the
    general ``Jᵀ (S_B u − s_B)`` costs twice as much in small-tensor calls)."""
    if landscape.kind == "sum":  # moments: x1x1, x1x2, x2x1, x2x2, x1y, x2y
        r1 = moments[:, 0] * u[:, 0] + moments[:, 1] * u[:, 1] - moments[:, 4]
        r2 = moments[:, 2] * u[:, 0] + moments[:, 3] * u[:, 1] - moments[:, 5]
        k1, k2 = landscape.k1, landscape.k2
        return torch.stack([k1 * w[:, 0] ** (k1 - 1) * r1, k2 * w[:, 1] ** (k2 - 1) * r2], 1)
    residual = moments[:, 0] * u[:, 0] - moments[:, 1]  # moments: x², x y
    return landscape.jacobian(w)[:, 0, :] * residual[:, None]


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
    # 16-bit draws are ~1.5x faster and exactly uniform too; embedding_bag takes int32
    draw = np.uint16 if data.n <= np.iinfo(np.uint16).max + 1 else np.int32
    w = start.to(torch.float64).clone()
    trajectories = w.shape[0]
    tracked = trajectories if track is None else track
    levels = torch.as_tensor(list(thresholds), dtype=torch.float64)
    hits = torch.full((tracked, len(levels)), -1, dtype=torch.int64)

    def record(step: int, u: Tensor) -> None:
        if len(levels):
            loss = excess_from_features(data, u[:tracked])
            newly = (loss[:, None] <= levels) & (hits < 0)
            hits[newly] = step

    for step in tqdm(range(steps + 1), desc=f"SGD {landscape.name} lr={lr} B={batch_size}",
                     disable=not progress, mininterval=2.0):
        u = landscape.features(w)
        record(step, u)
        if step == steps:
            break
        idx = rng.integers(0, data.n, (trajectories, batch_size), dtype=draw)
        # "sum" then scale: embedding_bag's "mean" mode is several times slower on a CPU
        sums = torch.nn.functional.embedding_bag(torch.from_numpy(idx.astype(np.int32)), table,
                                                 mode="sum")
        w = w - lr * _gradient(landscape, w, u, sums.to(torch.float64) / batch_size)
    diverged = ~torch.isfinite(w).all(1) | (w.abs() > BLOW_UP).any(1)
    return SGDResult(w, hits, diverged)


__all__ = ["BLOW_UP", "SGDResult", "minibatch_gradient", "run_sgd"]
