"""Toy regression models with a degenerate critical point of known degree at ``w* = 0``.

Every model is a linear regression in monomial features of the weights,
``f(w, x) = u(w)·x`` with ``x ~ N(0, I)`` and per-sample loss ``½ (y − f(w, x))²``:

============  ===============================  ====================================
kind          features ``u(w)``                population loss ``L(w) − L(w*)``
============  ===============================  ====================================
``line``      ``w^k``                          ``½ w^(2k)``
``sum``       ``(w1^k1, w2^k2)`` (x in R²)     ``½ (w1^(2k1) + w2^(2k2))``
``product``   ``w1^k1 · w2^k2``                ``½ w1^(2k1) w2^(2k2)``
============  ===============================  ====================================

The data are ``y = u(w*)·x + ε = ε`` with ``ε ~ N(0, σ²)``.  With ``orthogonal_noise`` the
noise vector is projected off the columns of the inputs (and rescaled to mean square
``σ²``), so ``Σ x_i ε_i = 0``: the empirical loss ``L_n`` then has exactly the form above
(with the sample second moment of ``x`` in place of ``I``) and its minimum exactly at ``w*``,
while every sample keeps its own noise.  Without it a finite sample moves the minimum of a
degenerate model to ``|w| ~ n^(−1/(2k))`` and resolves the singularity.

Because the loss is quadratic in ``u``, everything the study needs is closed form: the loss
from the moments ``S = mean x xᵀ``, ``s = mean x y``; the minibatch gradient from the same
moments over the batch; per-sample gradients ``−(y − u·x) Jᵀ x`` with ``J = ∂u/∂w``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from critperiods.measure.learning_coefficients import (
    normal_crossing_lc,
    normal_crossing_multiplicity,
    normal_crossing_tempered_mean,
)

KINDS = ("line", "sum", "product")
_NAME = re.compile(r"^(?P<kind>line|sum|product)_k(?P<k1>\d+)(?:-(?P<k2>\d+))?$")


@dataclass(frozen=True)
class Landscape:
    """One model: ``kind`` and the degrees ``k1`` (and ``k2`` for the 2-D kinds; 0 for
    ``line``, which has one weight)."""

    kind: str
    k1: int
    k2: int = 0

    def __post_init__(self) -> None:
        """Refuse a kind or degrees that define no model, naming the landscape."""
        if self.kind not in KINDS:
            raise ValueError(f"landscape kind must be one of {KINDS}, got {self.kind!r}")
        if self.k1 < 1:
            raise ValueError(f"{self.kind}: degree k1 must be >= 1, got {self.k1}")
        if self.kind == "line" and self.k2 != 0:
            raise ValueError(f"line landscapes have one weight (k2 = 0), got k2={self.k2}")
        if self.kind != "line" and self.k2 < 1:
            raise ValueError(f"{self.kind}: degree k2 must be >= 1, got {self.k2}")

    @classmethod
    def parse(cls, name: str) -> Landscape:
        """The landscape named ``line_k<k>``, ``sum_k<k1>-<k2>`` or ``product_k<k1>-<k2>``."""
        m = _NAME.match(name)
        if m is None or (m["kind"] == "line") != (m["k2"] is None):
            raise ValueError(f"{name!r}: not a landscape name (line_k<k>, sum_k<k1>-<k2>, "
                             "product_k<k1>-<k2>)")
        return cls(m["kind"], int(m["k1"]), int(m["k2"] or 0))

    @property
    def name(self) -> str:
        """``line_k2``, ``sum_k1-2``, ``product_k2-1``: the wildcard and file name."""
        return f"line_k{self.k1}" if self.kind == "line" else f"{self.kind}_k{self.k1}-{self.k2}"

    @property
    def dim(self) -> int:
        """Number of weights."""
        return 1 if self.kind == "line" else 2

    @property
    def n_features(self) -> int:
        """Number of input features (columns of ``x``)."""
        return 2 if self.kind == "sum" else 1

    @property
    def degrees(self) -> tuple[int, ...]:
        """The degree of each weight."""
        return (self.k1,) if self.kind == "line" else (self.k1, self.k2)

    # -- features and their derivatives, vectorised over leading dims of ``w`` -------------

    def features(self, w: Tensor) -> Tensor:
        """``u(w)``: shape ``(..., n_features)`` for ``w`` of shape ``(..., dim)``."""
        if self.kind == "line":
            return w[..., :1] ** self.k1
        if self.kind == "sum":
            return torch.stack([w[..., 0] ** self.k1, w[..., 1] ** self.k2], -1)
        return (w[..., 0] ** self.k1 * w[..., 1] ** self.k2).unsqueeze(-1)

    def jacobian(self, w: Tensor) -> Tensor:
        """``∂u/∂w``: shape ``(..., n_features, dim)``."""
        if self.kind == "line":
            return _dpow(w[..., 0], self.k1, 1)[..., None, None]
        d1, d2 = _dpow(w[..., 0], self.k1, 1), _dpow(w[..., 1], self.k2, 1)
        if self.kind == "sum":
            zero = torch.zeros_like(d1)
            return torch.stack([torch.stack([d1, zero], -1), torch.stack([zero, d2], -1)], -2)
        p1, p2 = w[..., 0] ** self.k1, w[..., 1] ** self.k2
        return torch.stack([d1 * p2, p1 * d2], -1).unsqueeze(-2)

    def feature_hessians(self, w: Tensor) -> Tensor:
        """``∂²u_j/∂w∂w``: shape ``(..., n_features, dim, dim)``."""
        if self.kind == "line":
            return _dpow(w[..., 0], self.k1, 2)[..., None, None, None]
        w1, w2 = w[..., 0], w[..., 1]
        h11, h22 = _dpow(w1, self.k1, 2), _dpow(w2, self.k2, 2)
        zero = torch.zeros_like(h11)
        if self.kind == "sum":
            first = torch.stack([torch.stack([h11, zero], -1), torch.stack([zero, zero], -1)], -2)
            second = torch.stack([torch.stack([zero, zero], -1), torch.stack([zero, h22], -1)], -2)
            return torch.stack([first, second], -3)
        p1, p2 = w1**self.k1, w2**self.k2
        cross = _dpow(w1, self.k1, 1) * _dpow(w2, self.k2, 1)
        rows = [torch.stack([h11 * p2, cross], -1), torch.stack([cross, p1 * h22], -1)]
        return torch.stack(rows, -2).unsqueeze(-3)

    # -- exact answers --------------------------------------------------------------------

    @property
    def learning_coefficient(self) -> float:
        """Exact learning coefficient λ of the critical point ``w* = 0``."""
        if self.kind == "line":
            return 1.0 / (2 * self.k1)
        if self.kind == "sum":
            return 1.0 / (2 * self.k1) + 1.0 / (2 * self.k2)
        return normal_crossing_lc((self.k1, self.k2))

    @property
    def multiplicity(self) -> int:
        """Multiplicity of λ: 2 for a product with ``k1 = k2``, else 1."""
        return normal_crossing_multiplicity((self.k1, self.k2)) if self.kind == "product" else 1

    def tempered_target(self, nbeta: float, gamma: float) -> float:
        """What the λ̂ estimator converges to at finite ``nbeta``: ``E[nβ (L − L(w*))]`` under
        ``exp(−nβ (L − L(w*)) − γ |w|² / 2)``, ``L`` the population loss.

        Equal to λ for ``line`` and ``sum`` without localisation (``γ = 0``: ``nβ ½ w^(2k)``
        has mean ``1/(2k)`` at any ``nβ``); a product's tends to λ only like
        ``λ − (m − 1) / log nβ`` and is computed by 2-d quadrature
        (``normal_crossing_tempered_mean``; NaN at ``γ = 0``, where it is not normalisable).
        """
        if self.kind == "product":
            if gamma <= 0:
                return float("nan")
            return normal_crossing_tempered_mean((self.k1, self.k2), nbeta / 2, gamma)
        return sum(_monomial_tempered_mean(k, nbeta, gamma) for k in self.degrees)

    @property
    def gradient_flow_exponent(self) -> float:
        """``p`` in ``T(ε) ∝ ε^(−p)``: the time gradient flow from a point ``(a, a)`` on the
        diagonal needs to bring ``L − L(w*)`` below ``ε``, as ``ε → 0``.

        A coordinate that ends at 0 with degree ``k`` gives ``1 − 1/k`` (``0``: geometric, a
        time ∝ ``log 1/ε``).  ``sum``: the slower coordinate, ``max(k1, k2)``.  ``product``
        with ``k1 ≠ k2``: the coordinate of larger degree falls faster and ends at 0, the other
        at a positive value, so ``max(k1, k2)``; with ``k1 = k2`` the flow stays on the diagonal
        where the loss is ``½ w^(2(k1 + k2))``.
        """
        if self.kind == "product" and self.k1 == self.k2:
            return 1.0 - 1.0 / (self.k1 + self.k2)
        return 1.0 - 1.0 / max(self.degrees)


def _monomial_tempered_mean(k: int, nbeta: float, gamma: float) -> float:
    """``E[nβ ½ w^(2k)]`` under ``exp(−nβ ½ w^(2k) − γ w² / 2)`` (1-d quadrature)."""
    from scipy import integrate

    scale = (2.0 / nbeta) ** (1.0 / (2 * k))  # where nβ ½ w^(2k) = 1

    def moment(power: int) -> float:
        def f(w: float) -> float:
            energy = 0.5 * nbeta * w ** (2 * k)
            return energy**power * math.exp(-energy - 0.5 * gamma * w * w)

        return sum(integrate.quad(f, a, b, limit=200)[0]
                   for a, b in ((0, scale), (scale, 10 * scale), (10 * scale, math.inf)))

    return moment(1) / moment(0)


def _dpow(w: Tensor, k: int, order: int) -> Tensor:
    """``d^order/dw^order w^k`` (0 where ``order > k``: never ``0 · w^(−1)``)."""
    if order > k:
        return torch.zeros_like(w)
    return math.perm(k, order) * w ** (k - order)


# -------------------------------------------------------------------------------------------
# Data and losses
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegressionData:
    """A finite data set ``(x, y)`` of one landscape (float64), with its noise level."""

    x: Tensor
    y: Tensor
    noise_std: float

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @cached_property
    def second_moment(self) -> Tensor:
        """``S = mean x xᵀ``."""
        return self.x.T @ self.x / self.n

    @cached_property
    def cross_moment(self) -> Tensor:
        """``s = mean x y``."""
        return self.x.T @ self.y / self.n

    @cached_property
    def mean_square_target(self) -> float:
        return float(self.y.pow(2).mean())

    def per_sample_moments(self) -> Tensor:
        """Per-sample ``(x_a x_b for all a, b; x_a y)``, shape ``(n, m² + m)``: the batch mean
        of these rows gives a minibatch's ``S_B`` and ``s_B``."""
        m = self.x.shape[1]
        xx = (self.x[:, :, None] * self.x[:, None, :]).reshape(self.n, m * m)
        return torch.cat([xx, self.x * self.y[:, None]], 1)


def make_data(landscape: Landscape, n: int, noise_std: float, seed: int,
              orthogonal_noise: bool = True) -> RegressionData:
    """``n`` samples ``x ~ N(0, I)``, ``y = ε``, ``ε ~ N(0, noise_std²)``, from ``seed`` alone.

    With ``orthogonal_noise`` the noise is projected off the span of ``x``'s columns and
    rescaled to mean square ``noise_std²`` (see the module docstring).
    """
    if n <= landscape.n_features:
        raise ValueError(f"need more samples than features, got n={n}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, landscape.n_features, generator=gen, dtype=torch.float64)
    eps = torch.randn(n, generator=gen, dtype=torch.float64) * noise_std
    if orthogonal_noise and noise_std > 0:
        q, _ = torch.linalg.qr(x)
        eps = eps - q @ (q.T @ eps)
        eps = eps * (noise_std / eps.pow(2).mean().sqrt())
    return RegressionData(x, eps, float(noise_std))


def empirical_loss(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """``L_n(w) = ½ mean (y − u(w)·x)²`` for ``w`` of shape ``(..., dim)``."""
    return excess_loss(landscape, data, w) + 0.5 * data.mean_square_target


def excess_loss(landscape: Landscape, data: RegressionData, w: Tensor) -> Tensor:
    """``L_n(w) − L_n(w*)`` with ``w* = 0``: ``½ uᵀ S u − sᵀ u``."""
    return excess_from_features(data, landscape.features(w))


def excess_from_features(data: RegressionData, u: Tensor) -> Tensor:
    """:func:`excess_loss` from the features ``u = u(w)``."""
    return 0.5 * ((u @ data.second_moment) * u).sum(-1) - u @ data.cross_moment


class ToyModel(nn.Module):
    """``f(w, x) = u(w)·x`` as an ``nn.Module`` whose parameter ``w`` holds the 1–2 weights;
    with :func:`squared_error` it is what ``critperiods.measure.llc.estimate_llc`` samples."""

    def __init__(self, landscape: Landscape, w: Tensor) -> None:
        super().__init__()
        self.landscape = landscape
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64).reshape(landscape.dim))

    def forward(self, x: Tensor) -> Tensor:
        """``u(w)·x`` per row of ``x`` (shape ``(batch, n_features)``)."""
        return x @ self.landscape.features(self.w)


def squared_error(out: Tensor, target: Tensor) -> Tensor:
    """Mean per-sample loss ``½ (y − f)²``."""
    return 0.5 * (out - target).pow(2).mean()


__all__ = ["KINDS", "Landscape", "RegressionData", "ToyModel", "empirical_loss",
           "excess_from_features", "excess_loss", "make_data", "squared_error"]
