"""Exact learning coefficients and the toy models used to validate the LLC estimator.

Oracles:
* ``normal_crossing_lc`` - ``K(w) = prod_i w_i^(2 k_i)`` has ``lambda = min_{k_i>0} 1/(2 k_i)``.
* ``regular_lc`` - a regular (full-rank quadratic) model in ``d`` dimensions has ``d/2``.
* ``dln_learning_coefficient`` - deep linear networks, Aoyagi (Neural Networks 2024) as
  restated by Lau et al. (2023) / Furman & Lau (2024).

Builders (all deterministic given a seed):
* ``NormalCrossingPotential`` / ``QuadraticPotential`` - modules whose forward ignores the
  data and returns the potential, to be used with ``potential_loss`` and ``potential_data``.
* ``make_dln`` - a deep linear network sitting at a factorisation of a well-conditioned
  rank-``r`` matrix, plus realisable Gaussian-input data and ``dln_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------


def normal_crossing_lc(powers: Sequence[int]) -> float:
    """Learning coefficient of ``K(w) = prod_i w_i^(2 k_i)`` at ``w = 0``: min over k_i > 0
    of ``1 / (2 k_i)`` (coordinates with k_i = 0 do not enter K)."""
    positive = [k for k in powers if k > 0]
    if not positive:
        raise ValueError("need at least one positive power")
    return min(1.0 / (2 * k) for k in positive)


def normal_crossing_multiplicity(powers: Sequence[int]) -> int:
    """Multiplicity ``m`` (number of k_i attaining the minimum); ``m > 1`` gives the slow
    ``-(m-1)/log(nbeta)`` finite-temperature correction to the estimator's target."""
    positive = [k for k in powers if k > 0]
    return sum(1 for k in positive if k == max(positive))


def normal_crossing_tempered_mean(powers: tuple[int, int], nbeta: float, gamma: float) -> float:
    """Exact target of the SGLD estimator for a 2-d normal-crossing potential at finite
    temperature: ``E[nbeta K(w)]`` under ``exp(-nbeta K(w) - gamma |w|^2 / 2)``.

    It tends to ``lambda`` only like ``lambda - (m - 1) / log(nbeta ...)`` (multiplicity ``m``),
    so for ``m = 2`` it stays visibly below ``lambda`` at any affordable ``nbeta``; comparing
    with it separates sampler error from this asymptotic bias.  Only ``t = nbeta /
    gamma^(k1+k2)`` matters (rescale ``w = u / sqrt(gamma)``); computed by 2-d quadrature.
    """
    from scipy import integrate

    k1, k2 = powers
    t = nbeta / gamma ** (k1 + k2)
    breaks = [1e-4, 1e-3, 1e-2, 0.1, 1.0]

    def moment(power: int) -> float:
        def inner(u1: float) -> float:
            def f(u2: float) -> float:
                tk = t * u1 ** (2 * k1) * u2 ** (2 * k2)
                return tk**power * math.exp(-tk - u2 * u2 / 2)

            return integrate.quad(f, 0, 12, limit=400, points=breaks)[0] * math.exp(-u1 * u1 / 2)

        return integrate.quad(inner, 0, 12, limit=400, points=breaks)[0]

    return moment(1) / moment(0)


def regular_lc(dim: int) -> float:
    """Learning coefficient of a regular model with ``dim`` parameters: ``dim / 2``."""
    return dim / 2.0


def _aoyagi_subset(m_values: Sequence[int]) -> list[int]:
    """Indices of Aoyagi's set Sigma: the shortest prefix (|Sigma| >= 2) of indices sorted by
    ``M`` that satisfies his three inequalities (those on k not in Sigma vacuous when
    Sigma is everything)."""
    order = sorted(range(len(m_values)), key=lambda i: m_values[i])
    for size in range(2, len(order) + 1):
        sigma, rest = order[:size], order[size:]
        ell = size - 1
        s = sum(m_values[i] for i in sigma)
        mx = max(m_values[i] for i in sigma)
        mn_rest = min((m_values[i] for i in rest), default=math.inf)
        if mx < mn_rest and s >= ell * mx and s < ell * mn_rest:
            return sigma
    return order


def dln_learning_coefficient(widths: Sequence[int], rank: int) -> float:
    """Learning coefficient of a deep linear network (Aoyagi 2024).

    ``widths = [H_1, ..., H_{L+1}]`` (input dim first, output dim last), ``rank`` the rank
    ``r`` of the true end-to-end matrix.  With ``M_s = H_s - r``, Sigma from
    ``_aoyagi_subset``, ``ell = |Sigma| - 1``, ``S = sum_Sigma M`` and
    ``a = S - (ceil(S/ell) - 1) ell``::

        lambda = (-r^2 + r (H_1 + H_{L+1})) / 2 + a (ell - a) / (4 ell)
                 - ell (ell - 1) / 4 * (S / ell)^2 + 1/2 sum_{s<t in Sigma} M_s M_t
    """
    if len(widths) < 2:
        raise ValueError("need at least input and output widths")
    if rank < 0 or rank > min(widths):
        raise ValueError(f"rank {rank} impossible for widths {list(widths)}")
    m = [h - rank for h in widths]
    sigma = _aoyagi_subset(m)
    ell = len(sigma) - 1
    s = sum(m[i] for i in sigma)
    a = s - (-(-s // ell) - 1) * ell
    pairs = sum(m[i] * m[j] for x, i in enumerate(sigma) for j in sigma[x + 1 :])
    value = (  # exact rational arithmetic: the oracle values are exact
        Fraction(-(rank**2) + rank * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2
        + Fraction(pairs, 2)
    )
    return float(value)


# ---------------------------------------------------------------------------------------------
# Potentials (forward ignores the data)
# ---------------------------------------------------------------------------------------------


def potential_loss(out: Tensor, target: Tensor) -> Tensor:
    """Mean "loss" of a potential module: the potential value itself (targets unused)."""
    del target
    return out.mean()


def potential_data(n: int) -> tuple[Tensor, Tensor]:
    """Dummy ``(inputs, targets)`` with ``n`` rows; ``n`` only sets the default nbeta."""
    return torch.zeros(n, 1), torch.zeros(n)


class NormalCrossingPotential(nn.Module):
    """``K(w) = prod_i w_i^(2 k_i)`` with ``w`` initialised at the true parameter 0."""

    def __init__(self, powers: Sequence[int]) -> None:
        """Store the integer exponents ``2 k`` and create ``w = 0``."""
        super().__init__()
        self.exponents = [2 * int(k) for k in powers]
        self.w = nn.Parameter(torch.zeros(len(self.exponents)))

    def forward(self, x: Tensor) -> Tensor:
        """Return ``K(w)`` broadcast to one value per input row."""
        value = torch.ones((), dtype=self.w.dtype, device=self.w.device)
        for i, e in enumerate(self.exponents):
            value = value * self.w[i] ** e
        return value.expand(x.shape[0])


class QuadraticPotential(nn.Module):
    """Regular model ``K(w) = 1/2 (w - w0)^T A (w - w0)`` with ``A`` symmetric positive definite
    (eigenvalues spread in ``[1, 3]`` so the step size is not limited by one stiff direction)."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        """Build ``A = Q diag(e) Q^T`` from a seeded random rotation; ``w = w0`` initially."""
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
        eig = torch.linspace(1.0, 3.0, dim)
        self.register_buffer("hessian", q @ torch.diag(eig) @ q.T)
        centre = torch.randn(dim, generator=gen)
        self.register_buffer("centre", centre)
        self.w = nn.Parameter(centre.clone())

    def forward(self, x: Tensor) -> Tensor:
        """Return ``K(w)`` broadcast to one value per input row."""
        d = self.w - self.centre
        return (0.5 * d @ self.hessian @ d).expand(x.shape[0])


# ---------------------------------------------------------------------------------------------
# Deep linear networks
# ---------------------------------------------------------------------------------------------


def dln_loss(out: Tensor, target: Tensor) -> Tensor:
    """Gaussian negative log-likelihood (unit variance, constant dropped):
    ``1/2 ||y - f(x)||^2`` summed over outputs, averaged over the batch."""
    return 0.5 * (out - target).pow(2).sum(-1).mean()


@dataclass
class DLNProblem:
    """A deep linear network at a true parameter, its data, and the exact coefficient."""

    model: nn.Sequential
    data: tuple[Tensor, Tensor]
    true_matrix: Tensor
    learning_coefficient: float


def well_conditioned_matrix(
    rows: int, cols: int, rank: int, gen: torch.Generator, sv_range: tuple[float, float]
) -> Tensor:
    """Random ``rows x cols`` matrix of exact rank ``rank`` with singular values spread evenly
    in ``sv_range`` (order one, so no direction acts like a lower rank at finite nbeta)."""
    u, _ = torch.linalg.qr(torch.randn(rows, max(rank, 1), generator=gen))
    v, _ = torch.linalg.qr(torch.randn(cols, max(rank, 1), generator=gen))
    s = torch.linspace(sv_range[0], sv_range[1], max(rank, 1)) if rank > 0 else torch.zeros(1)
    return (u[:, :rank] * s[:rank]) @ v[:, :rank].T


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """Random ``rows x cols`` matrix with orthonormal columns (``cols <= rows``)."""
    q, _ = torch.linalg.qr(torch.randn(rows, max(cols, 1), generator=gen))
    return q[:, :cols]


def factor_across_layers(
    widths: Sequence[int], rank: int, gen: torch.Generator, sv_range: tuple[float, float]
) -> tuple[list[Tensor], Tensor]:
    """Layer matrices ``W_1..W_L`` whose product ``W_L ... W_1`` is a well-conditioned rank-r
    matrix: ``W_l = P_l diag(s^(1/L)) P_{l-1}^T`` with random orthonormal ``P`` (``P_0 = V``,
    ``P_L = U``), so every layer has rank exactly r and the spectrum is shared evenly."""
    depth = len(widths) - 1
    target = well_conditioned_matrix(widths[-1], widths[0], rank, gen, sv_range)
    if rank == 0:
        return [torch.zeros(widths[i + 1], widths[i]) for i in range(depth)], target
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank] ** (1.0 / depth)
    frames = [vh[:rank].T] + [_orthonormal(h, rank, gen) for h in widths[1:-1]] + [u[:, :rank]]
    layers = [frames[i + 1] @ torch.diag(root) @ frames[i].T for i in range(depth)]
    return layers, target


def make_dln(
    widths: Sequence[int],
    rank: int,
    n: int,
    seed: int = 0,
    sv_range: tuple[float, float] = (1.0, 2.0),
) -> DLNProblem:
    """Deep linear network (bias-free ``nn.Linear`` layers) at a true parameter of rank
    ``rank`` with ``n`` realisable samples ``y = W0 x``, ``x ~ N(0, I)`` (noise-free, so
    ``L_n(w*) = 0``); use with ``dln_loss``."""
    gen = torch.Generator().manual_seed(seed)
    layers, target = factor_across_layers(widths, rank, gen, sv_range)
    modules = []
    for w in layers:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        modules.append(lin)
    model = nn.Sequential(*modules)
    x = torch.randn(n, widths[0], generator=gen)
    with torch.no_grad():
        y = model(x)  # exactly realisable by w*, so L_n(w*) = 0
    return DLNProblem(
        model=model,
        data=(x, y),
        true_matrix=target,
        learning_coefficient=dln_learning_coefficient(widths, rank),
    )
