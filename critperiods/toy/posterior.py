"""The tempered posterior ``∝ exp(−nβ L_n(w))`` of a toy landscape, exactly on a grid, and
its distance to a set of SGD endpoints.

The prior is uniform on the box ``[−R, R]^dim`` (a degenerate landscape's posterior is not
normalisable on the whole plane: a product's valleys run along the axes to infinity).  The
grid has ``cells`` cells per axis whose widths grow away from 0 (``w = R sinh(a s) /
sinh(a)`` for ``s`` evenly spaced in ``[−1, 1]``, ``a`` = ``stretch``), so it resolves both a
regular posterior of width ``(nβ)^(−1/2)`` and a degenerate one spread over the box; each
cell carries the posterior mass ``∝ exp(−nβ L_n(centre)) × area``.

Distances between the endpoints and the posterior:

* Wasserstein-1 per coordinate, between the endpoints' values and the grid marginal
  (``scipy.stats.wasserstein_distance`` with weights);
* KL(endpoints ‖ posterior) on ``bins`` coarse bins per axis (unions of grid cells), the
  endpoints' histogram against the posterior's exact bin masses.

Both are biased upwards by the finite number of endpoints; :func:`posterior_sample` draws
as many points from the posterior itself, whose distances are the *null* level a sample of
that size reaches when SGD samples the posterior exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import wasserstein_distance

from critperiods.toy.landscapes import Landscape, RegressionData, excess_loss


@dataclass(frozen=True)
class Grid:
    """Cells of one axis (the same for every axis): ``edges`` (cells + 1), ``centres``."""

    edges: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)

    @property
    def half_width(self) -> float:
        return float(self.edges[-1])


def make_grid(half_width: float, cells: int, stretch: float = 4.0) -> Grid:
    """``cells`` cells on ``[−half_width, half_width]``, narrowest at 0 (see the module
    docstring; ``stretch = 0`` gives equal cells)."""
    if cells < 2 or half_width <= 0 or stretch < 0:
        raise ValueError(f"need cells >= 2, half_width > 0, stretch >= 0; got {cells}, "
                         f"{half_width}, {stretch}")
    s = np.linspace(-1.0, 1.0, cells + 1)
    edges = half_width * (np.sinh(stretch * s) / np.sinh(stretch) if stretch > 0 else s)
    edges[0], edges[-1] = -half_width, half_width
    return Grid(edges)


@dataclass(frozen=True)
class GridPosterior:
    """``mass``: posterior mass per cell, shape ``(cells,) * dim``, summing to 1; ``log_norm``
    turns ``−nβ (L_n − L_n(w*))`` into a log density (per unit of ``w^dim``)."""

    grid: Grid
    mass: np.ndarray
    nbeta: float
    log_norm: float

    @property
    def dim(self) -> int:
        return self.mass.ndim

    def marginal(self, coordinate: int) -> np.ndarray:
        """Mass per cell of one coordinate."""
        axes = tuple(a for a in range(self.dim) if a != coordinate)
        return self.mass.sum(axis=axes) if axes else self.mass

    def std(self) -> np.ndarray:
        """Standard deviation of each coordinate (cell centres)."""
        out = []
        for i in range(self.dim):
            p, c = self.marginal(i), self.grid.centres
            mean = float(p @ c)
            out.append(np.sqrt(float(p @ (c - mean) ** 2)))
        return np.array(out)


def grid_posterior(landscape: Landscape, data: RegressionData, nbeta: float,
                   grid: Grid) -> GridPosterior:
    """The posterior ``∝ exp(−nβ L_n(w))`` (uniform prior on the grid's box) on ``grid``."""
    if not nbeta > 0:
        raise ValueError(f"nbeta must be > 0, got {nbeta}")
    axes = np.meshgrid(*[grid.centres] * landscape.dim, indexing="ij")
    points = torch.from_numpy(np.stack(axes, -1))
    log_p = -nbeta * excess_loss(landscape, data, points).numpy()
    log_area = sum(np.log(g) for g in np.meshgrid(*[grid.widths] * landscape.dim,
                                                   indexing="ij"))
    log_mass = log_p + log_area
    log_norm = float(logsumexp(log_mass))
    return GridPosterior(grid, np.exp(log_mass - log_norm), float(nbeta), -log_norm)


def log_density(post: GridPosterior, landscape: Landscape, data: RegressionData,
                points: np.ndarray) -> np.ndarray:
    """Log posterior density at ``points`` (..., dim) inside the box."""
    excess = excess_loss(landscape, data, torch.from_numpy(np.asarray(points, np.float64)))
    return -post.nbeta * excess.numpy() + post.log_norm


def wasserstein_per_coordinate(samples: np.ndarray, post: GridPosterior) -> np.ndarray:
    """W1 between each coordinate of ``samples`` (count, dim) and the posterior marginal."""
    return np.array([
        wasserstein_distance(samples[:, i], post.grid.centres, v_weights=post.marginal(i))
        for i in range(post.dim)])


def coarse_edges(grid: Grid, bins: int) -> np.ndarray:
    """Every ``cells / bins``-th grid edge: bins that are unions of whole cells."""
    cells = len(grid.centres)
    if bins < 1 or cells % bins:
        raise ValueError(f"bins ({bins}) must divide the grid's cells ({cells})")
    return grid.edges[:: cells // bins]


def kl_divergence(samples: np.ndarray, post: GridPosterior, bins: int) -> float:
    """KL(histogram of ``samples`` ‖ posterior) on ``bins`` coarse bins per axis; samples
    outside the box count in the edge bins."""
    edges = coarse_edges(post.grid, bins)
    per = len(post.grid.centres) // bins
    q = post.mass.reshape(sum([(bins, per)] * post.dim, ())).sum(
        axis=tuple(range(1, 2 * post.dim, 2)))
    index = [np.clip(np.searchsorted(edges, samples[:, i], side="right") - 1, 0, bins - 1)
             for i in range(post.dim)]
    counts = np.zeros((bins,) * post.dim)
    np.add.at(counts, tuple(index), 1.0)
    p = counts / counts.sum()
    seen = p > 0
    return float(np.sum(p[seen] * (np.log(p[seen]) - np.log(np.maximum(q[seen], 1e-300)))))


def posterior_sample(post: GridPosterior, count: int, seed: int) -> np.ndarray:
    """``count`` exact draws from the grid posterior: a cell by its mass, then a uniform
    point inside it."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(post.mass.size, size=count, p=post.mass.ravel())
    cells = np.unravel_index(flat, post.mass.shape)
    lo, width = post.grid.edges[:-1], post.grid.widths
    return np.stack([lo[c] + width[c] * rng.random(count) for c in cells], -1)


def matched_nbeta(lr: float, batch_size: int, noise_std: float) -> float:
    """``nβ = 2 B / (η σ²)``: the inverse temperature at which SGD with step ``η`` and batch
    ``B`` samples the posterior of a regular 1-D landscape (unit curvature) in the small-step
    limit: SGD's stationary variance ``η σ² / (2B)`` equals the posterior's ``1 / nβ``."""
    return 2.0 * batch_size / (lr * noise_std**2)


__all__ = ["Grid", "GridPosterior", "coarse_edges", "grid_posterior", "kl_divergence",
           "log_density", "make_grid", "matched_nbeta", "posterior_sample",
           "wasserstein_per_coordinate"]
