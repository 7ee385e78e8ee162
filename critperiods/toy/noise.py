"""SGD noise covariance against the Hessian of the empirical loss.

At a point ``w`` the per-sample gradients are ``g_i = −(y_i − u·x_i) Jᵀ x_i`` and the
*per-sample noise covariance* is their covariance over the data set,
``C(w) = mean g gᵀ − ḡ ḡᵀ``.  A minibatch of ``B`` samples drawn with replacement (as in
:mod:`critperiods.toy.sgd`) has gradient noise covariance ``C(w) / B`` exactly.

Near ``w* = 0`` the residuals are the noise, so ``C ≈ σ² Jᵀ S J`` (the Gauss–Newton
matrix).  The Hessian is ``H = Jᵀ S J + Σ_j (S u − s)_j ∇²u_j``: at a regular minimum the
second term vanishes and ``C ≈ σ² H``; near a degenerate one it does not (see
:func:`loss_hessian`), and along a coordinate of degree ``k`` ``C ≈ σ² k / (2k − 1) · H``.
Either way the noise vanishes along a direction as fast as its curvature, as long as the
other coordinates sit at their minimum. Where one does not (``u_1 ≠ 0``), the finite sample's
input correlation ``S₂₁`` adds ``S₂₁ u_1 ∇²u_2`` to the Hessian along ``w2``: for degree
``k`` it vanishes only like ``w2^(k−2)``, with either sign, so there the noise vanishes faster
than the curvature and the Hessian's diagonal entry can be ≤ 0.
:func:`fit_proportionality` measures how close to proportional they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from critperiods.toy.landscapes import Landscape, RegressionData


def per_sample_gradients(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """``g_i(w)`` for every sample and every point: shape ``(points, n, dim)``."""
    u = landscape.features(w)                                    # (P, m)
    residual = data.x @ u.T - data.y[:, None]                    # (n, P): u·x − y
    xj = torch.einsum("nm,pmd->pnd", data.x, landscape.jacobian(w))
    return residual.T[..., None] * xj


def noise_covariance(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """Per-sample gradient covariance ``C(w)`` over the data set: ``(points, dim, dim)``."""
    g = per_sample_gradients(landscape, data, w)
    mean = g.mean(1)
    return torch.einsum("pna,pnb->pab", g, g) / data.n - mean[:, :, None] * mean[:, None, :]


def gauss_newton(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """The Gauss–Newton part ``Jᵀ S J`` of the Hessian at every point: ``(points, dim, dim)``."""
    jac = landscape.jacobian(w)
    return torch.einsum("pad,ab,pbe->pde", jac, data.second_moment, jac)


def loss_hessian(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """Hessian of ``L_n`` at every point: ``(points, dim, dim)``.

    Besides the Gauss–Newton part it has ``Σ_j (S u − s)_j ∇²u_j``, which near a degenerate
    critical point is of the same order: along a coordinate of degree ``k`` (``S = 1``) the
    Hessian is ``k(2k − 1) w^(2k−2)`` while ``Jᵀ S J`` is ``k² w^(2k−2)``.
    """
    u = landscape.features(w)
    residual = u @ data.second_moment - data.cross_moment          # S u − s (S symmetric)
    return gauss_newton(landscape, data, w) + torch.einsum(
        "pa,pade->pde", residual, landscape.feature_hessians(w))


@dataclass(frozen=True)
class Proportionality:
    """``C ≈ ratio · H`` over a set of points: least squares through the origin over all
    matrix entries; ``relative_error`` = ‖C − ratio H‖ / ‖C‖ (Frobenius, all points
    together) and ``r2`` = 1 − relative_error², the R² of a regression through the origin
    (about 0, not about the mean: where every point has the same Hessian, as in a regular
    quadratic, a centred R² is undefined)."""

    ratio: float
    r2: float
    relative_error: float


def fit_proportionality(cov: Tensor, hessian: Tensor) -> Proportionality:
    """Fit ``cov ≈ ratio · hessian`` over points (``(points, dim, dim)`` each; non-finite
    points are left out).  NaN where nothing is left or every Hessian is 0."""
    ok = torch.isfinite(cov).flatten(1).all(1) & torch.isfinite(hessian).flatten(1).all(1)
    c, h = cov[ok].double(), hessian[ok].double()
    hh = float((h * h).sum())
    if not len(c) or hh == 0.0:
        nan = float("nan")
        return Proportionality(nan, nan, nan)
    ratio = float((c * h).sum()) / hh
    residual = float(((c - ratio * h) ** 2).sum())
    norm = float((c * c).sum())
    if norm == 0.0:
        return Proportionality(ratio, float("nan"), float("nan"))
    return Proportionality(ratio, 1.0 - residual / norm, (residual / norm) ** 0.5)


__all__ = ["Proportionality", "fit_proportionality", "gauss_newton", "loss_hessian",
           "noise_covariance",
           "per_sample_gradients"]
