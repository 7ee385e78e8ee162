"""Everything measured on one landscape, as one Dataset (a piece of the toy cube).

For every learning rate and batch size, three ensembles of ``trajectories`` SGD runs are
advanced together, each from its own start (dimension ``start``):

* ``far`` — every run from ``(a, …, a)``, ``a = starts.far``: the first step at which
  ``L_n − L_n(w*)`` falls below each ``convergence.thresholds`` value (its quartiles over
  runs, and the exponent ``p`` of ``median step ∝ threshold^(−p)``); λ̂ at the first
  ``llc.endpoints`` endpoints.  From the diagonal, every landscape ends where its exact λ
  is that of ``w* = 0`` (see ``Landscape.gradient_flow_exponent``).
* ``near`` — uniform in a box of half-width ``starts.near_radius`` around a critical point:
  ``w* = 0`` for ``line`` and ``sum``, ``(0, starts.manifold_point)`` on the line of minima
  ``w1 = 0`` for ``product``: how often each coordinate ends more than ``escape.radius``
  from that point (escape directions).
* ``prior`` — uniform in ``[−R, R]^dim``, the posterior's prior box: the endpoints against
  the tempered posterior (W1 per coordinate, KL, each beside the null level of an exact
  posterior sample of the same size) and the noise covariance against the Hessian at them.

Every random stream is seeded from the configured seeds and the landscape and cell
(:func:`cell_seed`), so adding a landscape, a learning rate or a batch size leaves the other
results as they were.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from critperiods.llc import LLCConfig, estimate_llc
from critperiods.toy import noise, posterior
from critperiods.toy.landscapes import (
    Landscape,
    RegressionData,
    ToyModel,
    make_data,
    squared_error,
)
from critperiods.toy.sgd import run_sgd

log = logging.getLogger(__name__)

STARTS = ("far", "near", "prior")
ESCAPES = ("w1", "w2", "both", "none")  # which coordinates moved more than escape.radius
QUARTILES = (0.25, 0.5, 0.75)
MIN_FIT_STEPS = 10  # thresholds reached (in median) sooner are left out of the exponent fit
WEIGHTS = ("w1", "w2")


@dataclass(frozen=True)
class ToyParams:
    """The ``toy`` section of the config that a landscape job needs (all but the list of
    landscapes): ``data``, ``sgd``, ``starts``, ``convergence``, ``escape``, ``posterior``,
    ``llc`` as dicts of the schema's keys."""

    data: dict[str, Any]
    sgd: dict[str, Any]
    starts: dict[str, Any]
    convergence: dict[str, Any]
    escape: dict[str, Any]
    posterior: dict[str, Any]
    llc: dict[str, Any]

    @classmethod
    def from_config(cls, toy: dict[str, Any]) -> ToyParams:
        return cls(**{k: dict(toy[k]) for k in
                      ("data", "sgd", "starts", "convergence", "escape", "posterior", "llc")})


def cell_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (seeds, landscape name, cell values, a stream's name)."""
    digest = hashlib.sha256(":".join(map(str, ("critperiods-toy", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def near_centre(landscape: Landscape, params: ToyParams) -> np.ndarray:
    """The critical point the ``near`` ensemble starts around."""
    centre = np.zeros(landscape.dim)
    if landscape.kind == "product":
        centre[1] = params.starts["manifold_point"]
    return centre


def initial_points(landscape: Landscape, params: ToyParams, seed: int) -> torch.Tensor:
    """Starts of the three ensembles stacked: ``(3 × trajectories, dim)`` in STARTS order."""
    count, dim = params.sgd["trajectories"], landscape.dim
    rng = np.random.default_rng(seed)
    far = np.full((count, dim), params.starts["far"])
    near = near_centre(landscape, params) + params.starts["near_radius"] * rng.uniform(
        -1, 1, (count, dim))
    prior = params.starts["prior_half_width"] * rng.uniform(-1, 1, (count, dim))
    return torch.from_numpy(np.concatenate([far, near, prior]))


def convergence_exponent(thresholds: np.ndarray, median_steps: np.ndarray) -> float:
    """``p`` of a least-squares fit ``log median step = c − p log threshold`` over the
    thresholds reached (median finite) after at least ``MIN_FIT_STEPS`` steps; NaN with
    fewer than three such thresholds."""
    ok = np.isfinite(median_steps) & (median_steps >= MIN_FIT_STEPS)
    if ok.sum() < 3:
        return float("nan")
    slope = np.polyfit(np.log(thresholds[ok]), np.log(median_steps[ok]), 1)[0]
    return float(-slope)


def hitting_quartiles(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quartiles over trajectories of the hitting steps (thresholds, 3) — NaN where fewer
    than that share reached it — and the share that reached each threshold."""
    steps = np.where(hits >= 0, hits, np.inf).astype(float)
    q = np.quantile(steps, QUARTILES, axis=0, method="inverted_cdf").T  # no inf − inf
    return np.where(np.isfinite(q), q, np.nan), (hits >= 0).mean(0)


def escape_shares(endpoints: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Share of endpoints per ESCAPES class: which coordinates ended more than ``radius``
    from ``centre`` (a 1-D landscape only has ``w1`` and ``none``)."""
    moved = np.abs(endpoints - centre) > radius
    if moved.shape[1] == 1:
        return np.array([moved[:, 0].mean(), 0.0, 0.0, (~moved[:, 0]).mean()])
    w1, w2 = moved[:, 0], moved[:, 1]
    return np.array([(w1 & ~w2).mean(), (w2 & ~w1).mean(), (w1 & w2).mean(), (~w1 & ~w2).mean()])


def llc_at(landscape: Landscape, data: RegressionData, point: np.ndarray,
           llc: dict[str, Any], label: str) -> tuple[float, float]:
    """λ̂ (mean and std over chains) by ``critperiods.llc.estimate_llc`` at ``point``."""
    cfg = LLCConfig(chains=llc["chains"], draws=llc["draws"], burn_in=llc["burn_in"],
                    step_size=llc["step_size"], gamma=llc["gamma"], nbeta=llc["nbeta"],
                    batch_size=llc["batch_size"], seed=llc["seed"])
    if not np.all(np.isfinite(point)):
        return float("nan"), float("nan")
    res = estimate_llc(ToyModel(landscape, torch.from_numpy(point)), squared_error,
                       (data.x, data.y), cfg, label=label, progress=False, workers=1)
    return res.llc_mean, res.llc_std


def _cell(landscape: Landscape, data: RegressionData, params: ToyParams, lr: float,
          batch: int, progress: bool) -> dict[str, Any]:
    """Run and measure one (learning rate, batch size) cell."""
    sgd, count = params.sgd, params.sgd["trajectories"]
    seed = cell_seed(sgd["seed"], landscape.name, lr, batch)
    thresholds = np.asarray(params.convergence["thresholds"], float)
    result = run_sgd(landscape, data, initial_points(landscape, params, seed), lr, batch,
                     sgd["steps"], seed, thresholds=thresholds, track=count, progress=progress)
    ends = result.endpoints.numpy().reshape(len(STARTS), count, landscape.dim)
    diverged = result.diverged.numpy().reshape(len(STARTS), count)
    quartiles, reached = hitting_quartiles(result.hitting_steps.numpy())

    post_cfg = params.posterior
    nbeta = post_cfg["nbeta"] or posterior.matched_nbeta(lr, batch, data.noise_std)
    grid = posterior.make_grid(params.starts["prior_half_width"], post_cfg["cells"],
                               post_cfg["stretch"])
    post = posterior.grid_posterior(landscape, data, nbeta, grid)
    prior_ends = ends[2][~diverged[2]]
    null = posterior.posterior_sample(post, len(prior_ends), cell_seed(seed, "null"))
    display = np.linspace(-grid.half_width, grid.half_width, post_cfg["display_points"])
    if landscape.dim == 2:
        mesh = np.stack(np.meshgrid(display, display, indexing="ij"), -1)
        density = np.exp(posterior.log_density(post, landscape, data, mesh))
    else:
        density = np.full((len(display), len(display)), np.nan)
    marginals = [np.interp(display, grid.centres, post.marginal(i) / grid.widths)
                 for i in range(landscape.dim)]

    points = torch.from_numpy(prior_ends)
    cov = noise.noise_covariance(landscape, data, points)
    hess = noise.loss_hessian(landscape, data, points)
    fit = noise.fit_proportionality(cov, hess)
    fit_gn = noise.fit_proportionality(cov, noise.gauss_newton(landscape, data, points))

    llc_points = ends[0][: params.llc["endpoints"]]
    llc = [llc_at(landscape, data, p, params.llc, f"{landscape.name} lr={lr} B={batch}")
           for p in llc_points]
    return {
        "endpoints": ends, "diverged": diverged, "quartiles": quartiles, "reached": reached,
        "exponent": convergence_exponent(thresholds, quartiles[:, 1]),
        "escape": escape_shares(ends[1], near_centre(landscape, params),
                                params.escape["radius"]),
        "displacement": np.nanmedian(np.abs(ends[1] - near_centre(landscape, params)), 0),
        "nbeta": nbeta,
        "w1": posterior.wasserstein_per_coordinate(prior_ends, post),
        "w1_null": posterior.wasserstein_per_coordinate(null, post),
        "kl": posterior.kl_divergence(prior_ends, post, post_cfg["kl_bins"]),
        "kl_null": posterior.kl_divergence(null, post, post_cfg["kl_bins"]),
        "post_std": post.std(), "end_std": prior_ends.std(0),
        "outside": float((np.abs(prior_ends) > grid.half_width).any(1).mean()),
        "density": density, "marginals": np.array(marginals),
        "cov": cov.numpy(), "hess": hess.numpy(), "fit": fit, "fit_gn": fit_gn,
        "llc": np.array(llc).reshape(-1, 2),
    }


def measure_landscape(landscape: Landscape, params: ToyParams,
                      progress: bool = False) -> xr.Dataset:
    """Run every cell of ``landscape`` and collect the results (see the module docstring).

    The Dataset has dims ``lr``, ``batch_size``, ``start``, ``trajectory``, ``weight``,
    ``weight_b``, ``threshold``, ``quartile``, ``escape``, ``llc_endpoint``, ``w_grid``,
    ``w1_grid``, ``w2_grid`` and scalar coordinates ``landscape``, ``k1``, ``k2``; a 1-D
    landscape fills the ``w1`` entries only.
    """
    d = params.data
    data = make_data(landscape, d["n"], d["noise_std"], cell_seed(d["seed"], landscape.name),
                     d["orthogonal_noise"])
    lrs, batches = params.sgd["lrs"], params.sgd["batch_sizes"]
    cells = {(lr, b): _cell(landscape, data, params, lr, b, progress)
             for lr in lrs for b in batches}
    dim = landscape.dim

    def grid_of(key: str, shape: tuple[int, ...], pad_axes: tuple[int, ...] = ()) -> np.ndarray:
        """Stack ``cells[..][key]`` into (lr, batch_size, *shape), padding weight axes."""
        out = np.full((len(lrs), len(batches), *shape), np.nan)
        for i, lr in enumerate(lrs):
            for j, b in enumerate(batches):
                value = np.asarray(cells[(lr, b)][key], float)
                index = tuple(slice(0, value.shape[a]) for a in range(value.ndim))
                out[(i, j, *index)] = value
        return out

    count, nthr = params.sgd["trajectories"], len(params.convergence["thresholds"])
    points = params.posterior["display_points"]
    llc_n = params.llc["endpoints"]
    cellwise = ("lr", "batch_size")
    pairs = ("trajectory", "weight", "weight_b")
    cov = np.full((len(lrs), len(batches), count, 2, 2), np.nan)
    hess = np.full_like(cov, np.nan)
    for i, lr in enumerate(lrs):
        for j, b in enumerate(batches):
            c = cells[(lr, b)]
            kept = ~c["diverged"][2]
            cov[i, j, kept, :dim, :dim] = c["cov"]
            hess[i, j, kept, :dim, :dim] = c["hess"]
    ends = grid_of("endpoints", (len(STARTS), count, 2))
    fits = {(key, attr): np.array([[getattr(cells[(lr, b)][key], attr) for b in batches]
                                   for lr in lrs])
            for key in ("fit", "fit_gn") for attr in ("ratio", "r2", "relative_error")}
    llc = grid_of("llc", (llc_n, 2))
    centre = np.full(2, np.nan)
    centre[:dim] = near_centre(landscape, params)
    star = llc_at(landscape, data, np.zeros(dim), params.llc, f"{landscape.name} at w*")
    llc_nbeta = params.llc["nbeta"] or data.n / math.log(data.n)
    ds = xr.Dataset(
        {
            "endpoint": (cellwise + ("start", "trajectory", "weight"), ends),
            "diverged_fraction": (cellwise + ("start",),
                                  grid_of("diverged", (len(STARTS), count)).mean(-1)),
            "convergence_steps": (cellwise + ("threshold", "quartile"),
                                  grid_of("quartiles", (nthr, len(QUARTILES)))),
            "converged_fraction": (cellwise + ("threshold",), grid_of("reached", (nthr,))),
            "convergence_exponent": (cellwise, grid_of("exponent", ())),
            "convergence_exponent_gradient_flow": ((), landscape.gradient_flow_exponent),
            "escape_fraction": (cellwise + ("escape",), grid_of("escape", (len(ESCAPES),))),
            "escape_displacement": (cellwise + ("weight",), grid_of("displacement", (2,))),
            "near_start_centre": (("weight",), centre),
            "posterior_nbeta": (cellwise, grid_of("nbeta", ())),
            "posterior_w1_distance": (cellwise + ("weight",), grid_of("w1", (2,))),
            "posterior_w1_distance_null": (cellwise + ("weight",), grid_of("w1_null", (2,))),
            "posterior_kl": (cellwise, grid_of("kl", ())),
            "posterior_kl_null": (cellwise, grid_of("kl_null", ())),
            "posterior_std": (cellwise + ("weight",), grid_of("post_std", (2,))),
            "endpoint_std": (cellwise + ("weight",), grid_of("end_std", (2,))),
            "outside_prior_fraction": (cellwise, grid_of("outside", ())),
            "posterior_density": (cellwise + ("w1_grid", "w2_grid"),
                                  grid_of("density", (points, points))),
            "posterior_marginal": (cellwise + ("weight", "w_grid"),
                                   grid_of("marginals", (2, points))),
            "noise_covariance": (cellwise + pairs, cov),
            "loss_hessian": (cellwise + pairs, hess),
            "noise_hessian_ratio": (cellwise, fits["fit", "ratio"]),
            "noise_hessian_r2": (cellwise, fits["fit", "r2"]),
            "noise_hessian_relative_error": (cellwise, fits["fit", "relative_error"]),
            "noise_gauss_newton_ratio": (cellwise, fits["fit_gn", "ratio"]),
            "noise_gauss_newton_relative_error": (cellwise, fits["fit_gn", "relative_error"]),
            "noise_variance": ((), float(data.y.pow(2).mean())),
            "llc_mean": (cellwise + ("llc_endpoint",), llc[..., 0]),
            "llc_std": (cellwise + ("llc_endpoint",), llc[..., 1]),
            "llc_at_critical_point": ((), star[0]),
            "llc_at_critical_point_std": ((), star[1]),
            "learning_coefficient": ((), landscape.learning_coefficient),
            "llc_finite_nbeta_target": ((), landscape.tempered_target(llc_nbeta,
                                                                      params.llc["gamma"])),
            "learning_coefficient_multiplicity": ((), landscape.multiplicity),
        },
        coords={
            "lr": list(lrs), "batch_size": list(batches), "start": list(STARTS),
            "trajectory": np.arange(count), "weight": list(WEIGHTS), "weight_b": list(WEIGHTS),
            "threshold": list(params.convergence["thresholds"]), "quartile": list(QUARTILES),
            "escape": list(ESCAPES), "llc_endpoint": np.arange(llc_n),
            "w_grid": np.linspace(-params.starts["prior_half_width"],
                                  params.starts["prior_half_width"], points),
            "landscape": landscape.kind, "k1": landscape.k1, "k2": landscape.k2,
        },
    )
    ds = ds.assign_coords(w1_grid=ds.w_grid.values, w2_grid=ds.w_grid.values)
    ds.attrs["llc_nbeta"] = llc_nbeta
    return ds


__all__ = ["ESCAPES", "QUARTILES", "STARTS", "ToyParams", "cell_seed", "convergence_exponent",
           "escape_shares", "hitting_quartiles", "initial_points", "llc_at",
           "measure_landscape", "near_centre"]
