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
  the tempered posterior (W1 per coordinate and KL, on a ``sample`` dim beside the same
  distances of an exact posterior sample of the same size: the sampling level) and the noise
  covariance against the Hessian and its Gauss–Newton part (``curvature`` dim) at them.

Every random stream is seeded from the configured seeds and the landscape and cell
(:func:`cell_seed`), so adding a landscape, a learning rate or a batch size leaves the other
results as they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from critperiods.measure.llc.estimate import estimate_llc
from critperiods.measure.llc.quality import diagnose
from critperiods.measure.llc.sampler import LLCConfig
from critperiods.toy import noise, posterior
from critperiods.toy.landscapes import (
    Landscape,
    RegressionData,
    ToyModel,
    make_data,
    squared_error,
)
from critperiods.toy.llc_check import excess_above_minimum
from critperiods.toy.sgd import run_sgd

STARTS = ("far", "near", "prior")
ESCAPES = ("w1", "w2", "both", "none")  # which coordinates moved more than escape.radius
QUARTILES = (0.25, 0.5, 0.75)
SAMPLES = ("sgd", "exact")  # prior-start SGD endpoints; as many exact posterior draws
CURVATURES = ("hessian", "gauss_newton")  # what the noise covariance is fitted against
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


class ToyRunError(RuntimeError):
    """A cell whose runs left nothing to measure; the message names the cell and the key."""


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
    than that share reached it — and the share that reached each threshold. Pass the runs
    that did not diverge: with none, all NaN."""
    if not len(hits):
        return np.full((hits.shape[1], len(QUARTILES)), np.nan), np.full(hits.shape[1], np.nan)
    steps = np.where(hits >= 0, hits, np.inf).astype(float)
    q = np.quantile(steps, QUARTILES, axis=0, method="inverted_cdf").T  # no inf − inf
    return np.where(np.isfinite(q), q, np.nan), (hits >= 0).mean(0)


def escape_shares(endpoints: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Share of endpoints per ESCAPES class: which coordinates ended more than ``radius``
    from ``centre`` (a 1-D landscape only has ``w1`` and ``none``). Pass the endpoints of
    the runs that did not diverge (the cube's ``diverged_fraction`` says how many did): NaN
    if there are none."""
    if not len(endpoints):
        return np.full(len(ESCAPES), np.nan)
    moved = np.abs(endpoints - centre) > radius
    if moved.shape[1] == 1:
        return np.array([moved[:, 0].mean(), 0.0, 0.0, (~moved[:, 0]).mean()])
    w1, w2 = moved[:, 0], moved[:, 1]
    return np.array([(w1 & ~w2).mean(), (w2 & ~w1).mean(), (w1 & w2).mean(), (~w1 & ~w2).mean()])


LLC_STATS = ("mean", "std", "rhat", "trend_z", "diverged_chains", "bias", "tail_khat")


def llc_at(landscape: Landscape, data: RegressionData, point: np.ndarray,
           llc: dict[str, Any], label: str) -> dict[str, float]:
    """λ̂ at ``point`` by ``critperiods.measure.llc.estimate_llc``: per :data:`LLC_STATS`,
    its mean and std over chains, R-hat, trend z and tail k̂
    (:func:`critperiods.measure.llc.quality.diagnose`), the number of chains that diverged,
    and ``nβ ΔL``, how far the point sits
    above the minimum of its basin (:mod:`critperiods.toy.llc_check`). All NaN where the
    point is not finite (its SGD run diverged)."""
    cfg = LLCConfig(chains=llc["chains"], draws=llc["draws"], burn_in=llc["burn_in"],
                    step_size=llc["step_size"], gamma=llc["gamma"], nbeta=llc["nbeta"],
                    batch_size=llc["batch_size"], seed=llc["seed"])
    if not np.all(np.isfinite(point)):
        return dict.fromkeys(LLC_STATS, float("nan"))
    res = estimate_llc(ToyModel(landscape, torch.from_numpy(point)), squared_error,
                       (data.x, data.y), cfg, label=label, progress=False, workers=1)
    diag = diagnose(res.loss_trace, res.burn_in, res.diverged)
    return {"mean": res.llc_mean, "std": res.llc_std, "rhat": diag.rhat,
            "trend_z": diag.trend_z, "diverged_chains": float(np.sum(res.diverged)),
            "bias": res.nbeta * excess_above_minimum(landscape, data, point),
            "tail_khat": diag.tail_khat}


def _pad_weights(values: np.ndarray, *axes: int) -> np.ndarray:
    """``values`` with each of ``axes`` (a weight axis) padded with NaN to both weights."""
    values = np.asarray(values, float)
    widths = [(0, len(WEIGHTS) - values.shape[a] if a in axes else 0) for a in range(values.ndim)]
    return np.pad(values, widths, constant_values=np.nan)


def _cell(landscape: Landscape, data: RegressionData, params: ToyParams, lr: float,
          batch: int, progress: bool) -> xr.Dataset:
    """Run and measure one (learning rate, batch size) cell."""
    sgd, count = params.sgd, params.sgd["trajectories"]
    seed = cell_seed(sgd["seed"], landscape.name, lr, batch)
    thresholds = np.asarray(params.convergence["thresholds"], float)
    result = run_sgd(landscape, data, initial_points(landscape, params, seed), lr, batch,
                     sgd["steps"], seed, thresholds=thresholds, track=count, progress=progress)
    ends = result.endpoints.numpy().reshape(len(STARTS), count, landscape.dim)
    diverged = result.diverged.numpy().reshape(len(STARTS), count)
    quartiles, reached = hitting_quartiles(result.hitting_steps.numpy()[~diverged[0]])
    centre = near_centre(landscape, params)
    near_ends = ends[1][~diverged[1]]
    kept = ~diverged[2]
    prior_ends = ends[2][kept]
    if not len(prior_ends):
        raise ToyRunError(
            f"{landscape.name}, lr {lr:g}, batch {batch}: all {count} prior-start SGD runs "
            f"diverged (|w| > 1e6 or not finite), so none is left to compare with the "
            f"posterior: SGD is unstable at this learning rate. Lower it in toy.sgd.lrs.")

    post_cfg = params.posterior
    nbeta = post_cfg["nbeta"] or posterior.matched_nbeta(lr, batch, data.noise_std)
    grid = posterior.make_grid(params.starts["prior_half_width"], post_cfg["cells"],
                               post_cfg["stretch"])
    post = posterior.grid_posterior(landscape, data, nbeta, grid)
    null = posterior.posterior_sample(post, len(prior_ends), cell_seed(seed, "null"))
    display = np.linspace(-grid.half_width, grid.half_width, post_cfg["display_points"])
    density = np.full((len(display), len(display)), np.nan)
    if landscape.dim == 2:
        mesh = np.stack(np.meshgrid(display, display, indexing="ij"), -1)
        density = np.exp(posterior.log_density(post, landscape, data, mesh))
    marginals = [np.interp(display, grid.centres, post.marginal(i) / grid.widths)
                 for i in range(landscape.dim)]

    points = torch.from_numpy(prior_ends)
    cov_at = noise.noise_covariance(landscape, data, points)
    hess_at = noise.loss_hessian(landscape, data, points)
    fit = noise.fit_proportionality(cov_at, hess_at)
    fit_gn = noise.fit_proportionality(cov_at, noise.gauss_newton(landscape, data, points))
    cov, hess = np.full((count, 2, 2), np.nan), np.full((count, 2, 2), np.nan)
    cov[kept] = _pad_weights(cov_at.numpy(), 1, 2)
    hess[kept] = _pad_weights(hess_at.numpy(), 1, 2)
    llc = [llc_at(landscape, data, p, params.llc, f"{landscape.name} lr={lr} B={batch}")
           for p in np.where(diverged[0, :, None], np.nan, ends[0])[: params.llc["endpoints"]]]
    weight, pair = ("weight",), ("trajectory", "weight", "weight_b")
    return xr.Dataset({
        "endpoint": (("start", "trajectory", "weight"), _pad_weights(ends, 2)),
        "diverged_fraction": (("start",), diverged.mean(1)),
        "convergence_steps": (("threshold", "quartile"), quartiles),
        "converged_fraction": (("threshold",), reached),
        "convergence_exponent": ((), convergence_exponent(thresholds, quartiles[:, 1])),
        "escape_fraction": (("escape",), escape_shares(near_ends, centre,
                                                       params.escape["radius"])),
        "escape_displacement": (weight, _pad_weights(
            np.median(np.abs(near_ends - centre), 0) if len(near_ends)
            else np.full(landscape.dim, np.nan), 0)),
        "posterior_nbeta": ((), nbeta),
        "posterior_w1_distance": (("weight", "sample"), _pad_weights(np.stack(
            [posterior.wasserstein_per_coordinate(x, post) for x in (prior_ends, null)], 1), 0)),
        "posterior_kl": (("sample",), [posterior.kl_divergence(x, post, post_cfg["kl_bins"])
                                       for x in (prior_ends, null)]),
        "posterior_std": (weight, _pad_weights(post.std(), 0)),
        "endpoint_std": (weight, _pad_weights(prior_ends.std(0), 0)),
        "outside_prior_fraction": ((), float((np.abs(prior_ends) > grid.half_width)
                                             .any(1).mean())),
        "posterior_density": (("w1_grid", "w2_grid"), density),
        "posterior_marginal": (("weight", "w_grid"), _pad_weights(np.array(marginals), 0)),
        "noise_covariance": (pair, cov),
        "loss_hessian": (pair, hess),
        "noise_ratio": (("curvature",), [fit.ratio, fit_gn.ratio]),
        "noise_r2": (("curvature",), [fit.r2, fit_gn.r2]),
        "noise_relative_error": (("curvature",), [fit.relative_error, fit_gn.relative_error]),
        **{f"llc_{stat}": (("llc_endpoint",), [e[stat] for e in llc]) for stat in LLC_STATS},
    })


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
    ds = xr.concat(
        [xr.concat([_cell(landscape, data, params, lr, b, progress) for b in batches],
                   dim=pd.Index(batches, name="batch_size")) for lr in lrs],
        dim=pd.Index(lrs, name="lr"))
    star = llc_at(landscape, data, np.zeros(landscape.dim), params.llc,
                  f"{landscape.name} at w*")
    llc_nbeta = params.llc["nbeta"] or data.n / math.log(data.n)
    half, points = params.starts["prior_half_width"], params.posterior["display_points"]
    display = np.linspace(-half, half, points)
    ds = ds.assign(
        convergence_exponent_gradient_flow=((), landscape.gradient_flow_exponent),
        near_start_centre=(("weight",), _pad_weights(near_centre(landscape, params), 0)),
        noise_variance=((), float(data.y.pow(2).mean())),
        llc_at_critical_point=((), star["mean"]),
        **{f"llc_at_critical_point_{stat}": ((), star[stat]) for stat in LLC_STATS[1:]},
        learning_coefficient=((), landscape.learning_coefficient),
        llc_finite_nbeta_target=((), landscape.tempered_target(llc_nbeta, params.llc["gamma"])),
        learning_coefficient_multiplicity=((), landscape.multiplicity),
    )
    ds = ds.assign_coords(
        start=list(STARTS), trajectory=np.arange(params.sgd["trajectories"]),
        weight=list(WEIGHTS), weight_b=list(WEIGHTS),
        threshold=list(params.convergence["thresholds"]), quartile=list(QUARTILES),
        escape=list(ESCAPES), llc_endpoint=np.arange(params.llc["endpoints"]),
        sample=list(SAMPLES), curvature=list(CURVATURES),
        w_grid=display, w1_grid=display, w2_grid=display,
        landscape=landscape.kind, k1=landscape.k1, k2=landscape.k2,
    )
    ds.attrs["llc_nbeta"] = llc_nbeta
    return ds


__all__ = ["CURVATURES", "ESCAPES", "LLC_STATS", "QUARTILES", "SAMPLES", "STARTS", "ToyParams",
           "ToyRunError", "cell_seed", "convergence_exponent", "escape_shares",
           "hitting_quartiles", "initial_points", "llc_at", "measure_landscape", "near_centre"]
