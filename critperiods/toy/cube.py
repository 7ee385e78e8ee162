"""The toy cube (``results/<experiment>/toy_cube.nc``): every landscape's piece merged on
dims ``landscape`` (the kind), ``k1``, ``k2`` (0 for the 1-D ``line``), and its summary.

Cells of the (landscape, k1, k2) grid that were not configured are NaN.  The global
attribute ``cube_kind = "toy_landscapes"`` tells ``python -m critperiods summarize`` which
summary to print.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import xarray as xr
import yaml

from critperiods.measure.llc.quality import MAX_RHAT, MAX_TREND_Z
from critperiods.pipeline.config_record import digest
from critperiods.results.cube import _git_commit, _versions
from critperiods.toy.landscapes import KINDS
from critperiods.toy.llc_check import FLAGS, MAX_ENDPOINT_BIAS, llc_quality
from critperiods.toy.measure import MIN_FIT_STEPS
from critperiods.variables import llc_quality_flag_attrs

CUBE_KIND = "toy_landscapes"

ATTRS = {
    "landscape": ("kind of loss landscape: line w^(2k); sum w1^(2k1) + w2^(2k2); product "
                  "w1^(2k1) w2^(2k2)", None),
    "k1": ("degree of the first weight", None),
    "k2": ("degree of the second weight (0: the landscape has one weight)", None),
    "lr": ("SGD learning rate", None),
    "batch_size": ("SGD batch size (samples drawn with replacement)", None),
    "start": ("ensemble of runs by start: far = toy.starts.far in every coordinate; near = a "
              "box around a critical point; prior = uniform in the prior box", None),
    "trajectory": ("SGD run within an ensemble", None),
    "weight": ("coordinate of the weight vector", None),
    "weight_b": ("second coordinate of a matrix entry", None),
    "threshold": ("excess empirical loss L_n(w) - L_n(w*) that counts as reached", "1"),
    "quartile": ("quantile over runs", "1"),
    "escape": ("coordinates that ended more than escape.radius from the near start's "
               "critical point (none: stuck)", None),
    "llc_endpoint": ("far-start run at whose endpoint the LLC is estimated", None),
    "w_grid": ("weight value of the display grid", "1"),
    "w1_grid": ("first weight of the display grid", "1"),
    "w2_grid": ("second weight of the display grid", "1"),
    "endpoint": ("weights after the last SGD step", "1"),
    "diverged_fraction": ("share of runs that diverged (non-finite or |w| > 1e6)", "1"),
    "convergence_steps": ("SGD steps until L_n(w) - L_n(w*) first falls below the threshold, "
                          "quantile over the far-start runs that did not diverge (NaN: not "
                          "reached by that share)", "1"),
    "converged_fraction": ("share of the far-start runs that did not diverge that reached "
                           "the threshold", "1"),
    "convergence_exponent": ("p in median convergence steps proportional to threshold^(-p), "
                             "least squares over the thresholds reached", "1"),
    "convergence_exponent_gradient_flow": ("p of gradient flow from the far start as the "
                                           "threshold goes to 0", "1"),
    "escape_fraction": ("share of the near-start runs that did not diverge per escape class",
                        "1"),
    "escape_displacement": ("median |w - centre| per coordinate at the end of near-start runs",
                            "1"),
    "near_start_centre": ("critical point the near-start runs begin around", "1"),
    "posterior_nbeta": ("n beta of the tempered posterior compared with the prior-start "
                        "endpoints", "1"),
    "sample": ("points compared with the tempered posterior: sgd = prior-start SGD "
               "endpoints; exact = as many exact posterior draws (the sampling level)", None),
    "posterior_w1_distance": ("Wasserstein-1 distance per coordinate between a sample and "
                              "the tempered posterior", "1"),
    "posterior_kl": ("KL divergence (in nats) of a sample's histogram from the tempered "
                     "posterior, on coarse bins", "1"),
    "posterior_std": ("standard deviation per coordinate of the tempered posterior", "1"),
    "endpoint_std": ("standard deviation per coordinate of the prior-start endpoints", "1"),
    "outside_prior_fraction": ("share of prior-start endpoints outside the prior box", "1"),
    "posterior_density": ("tempered posterior density on the display grid (2-D landscapes)",
                          "1"),
    "posterior_marginal": ("marginal density of each coordinate under the tempered posterior",
                           "1"),
    "noise_covariance": ("per-sample gradient covariance over the data set at a prior-start "
                         "endpoint (a minibatch of B has 1/B of it)", "1"),
    "loss_hessian": ("Hessian of the empirical loss at a prior-start endpoint", "1"),
    "curvature": ("matrix the noise covariance is fitted against: hessian = Hessian of L_n; "
                  "gauss_newton = its Gauss-Newton part J^T S J", None),
    "noise_ratio": ("least-squares c in noise covariance = c curvature over the prior-start "
                    "endpoints", "1"),
    "noise_r2": ("R^2 (through the origin) of noise covariance = c curvature", "1"),
    "noise_relative_error": ("Frobenius norm of (noise covariance - c curvature) over that of "
                             "the noise covariance", "1"),
    "noise_variance": ("mean squared noise of the data set, sigma^2", "1"),
    "llc_mean": ("local learning coefficient at a far-start SGD endpoint, mean over chains",
                 "1"),
    "llc_std": ("local learning coefficient at a far-start SGD endpoint, std over chains",
                "1"),
    "llc_rhat": ("rank-normalised split R-hat of the LLC chains at a far-start SGD endpoint",
                 "1"),
    "llc_trend_z": ("drift of the LLC chains at a far-start SGD endpoint: mean of the first "
                    "20 % of draws minus the last 50 %, in Monte Carlo standard errors", "1"),
    "llc_diverged_chains": ("LLC chains at a far-start SGD endpoint that diverged and were "
                            "left out", "1"),
    "llc_bias": ("n beta (L_n(endpoint) - L_n(minimum of its basin)): how far the LLC "
                 "estimate at a far-start SGD endpoint comes off by not starting at a minimum",
                 "1"),
    "llc_tail_khat": ("Pareto k-hat of the right tail of the LLC draws at a far-start SGD "
                      "endpoint (ArviZ)", "1"),
    "llc_quality": ("quality of the LLC estimate at a far-start SGD endpoint (0 = ok)", "1"),
    "llc_at_critical_point": ("local learning coefficient at w* = 0, mean over chains", "1"),
    "llc_at_critical_point_std": ("local learning coefficient at w* = 0, std over chains", "1"),
    "llc_at_critical_point_rhat": ("rank-normalised split R-hat of the LLC chains at w* = 0",
                                   "1"),
    "llc_at_critical_point_trend_z": ("drift of the LLC chains at w* = 0, in Monte Carlo "
                                      "standard errors", "1"),
    "llc_at_critical_point_diverged_chains": ("LLC chains at w* = 0 that diverged", "1"),
    "llc_at_critical_point_bias": ("n beta (L_n(w*) - L_n(minimum of its basin))", "1"),
    "llc_at_critical_point_tail_khat": ("Pareto k-hat of the right tail of the LLC draws at "
                                        "w* = 0 (ArviZ)", "1"),
    "llc_at_critical_point_quality": ("quality of the LLC estimate at w* = 0 (0 = ok)", "1"),
    "learning_coefficient": ("exact learning coefficient of w* = 0", "1"),
    "llc_finite_nbeta_target": ("expected n beta (L - L(w*)) under the localised tempered "
                                "posterior of the population loss at the sampler's n beta and "
                                "gamma: the value the LLC estimator converges to", "1"),
    "learning_coefficient_multiplicity": ("multiplicity of the exact learning coefficient",
                                          "1"),
}


def build_toy_cube(files: Iterable[str | Path], config_yaml: str,
                   max_endpoint_bias: float = MAX_ENDPOINT_BIAS, max_rhat: float = MAX_RHAT,
                   max_trend_z: float = MAX_TREND_Z) -> xr.Dataset:
    """Merge landscape pieces (from :func:`critperiods.toy.measure.measure_landscape`) and
    flag their λ̂ estimates (``llc_quality``, ``llc_at_critical_point_quality``:
    :func:`critperiods.toy.llc_check.llc_quality` with ``toy.llc.max_endpoint_bias``,
    ``analysis.llc_max_rhat`` and ``analysis.llc_max_trend_z``)."""
    pieces = []
    for f in files:
        with xr.open_dataset(f) as opened:
            # drop_encoding: a piece's string coordinates were written as fixed-width
            # characters ("line" as 4): reused, they would truncate "product"
            pieces.append(opened.load().drop_encoding().expand_dims(["landscape", "k1", "k2"]))
    if not pieces:
        raise ValueError("no landscape results to merge")
    llc_nbeta = pieces[0].attrs.get("llc_nbeta")
    cube = xr.merge(pieces, join="outer", compat="no_conflicts", combine_attrs="drop")
    kinds = [k for k in KINDS if k in cube.landscape.values]
    cube = cube.reindex(landscape=kinds, k1=sorted(cube.k1.values), k2=sorted(cube.k2.values))
    cube["learning_coefficient_multiplicity"] = cube.learning_coefficient_multiplicity.astype(
        float)  # NaN where no landscape
    sampler = yaml.safe_load(config_yaml)["toy"]["llc"]  # toy_record: the whole section
    for prefix in ("llc", "llc_at_critical_point"):  # at the endpoints, and at w*
        mean = cube["llc_mean" if prefix == "llc" else prefix]
        stats = (cube[f"{prefix}_{stat}"].values
                 for stat in ("diverged_chains", "rhat", "trend_z", "bias"))
        khat = cube.get(f"{prefix}_tail_khat")  # absent from pieces made before it
        samples = (sampler["chains"] - cube[f"{prefix}_diverged_chains"]) * sampler["draws"]
        cube[f"{prefix}_quality"] = mean.copy(data=llc_quality(
            mean.values, *stats, max_endpoint_bias=max_endpoint_bias, max_rhat=max_rhat,
            max_trend_z=max_trend_z, tail_khat=None if khat is None else khat.values,
            samples=samples.values))
        cube[f"{prefix}_quality"].attrs = llc_quality_flag_attrs(FLAGS)
    cube.attrs = {
        "Conventions": "CF-1.10",
        "title": "critperiods: SGD on toy landscapes of known degeneracy",
        "history": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                   "created by critperiods toy_cube",
        "cube_kind": CUBE_KIND,
        "config": config_yaml,
        "config_sha256": digest(config_yaml),
        "git_commit": _git_commit(),
        "llc_nbeta": llc_nbeta if llc_nbeta is not None else float("nan"),
        "convergence_min_fit_steps": MIN_FIT_STEPS,
        "llc_max_endpoint_bias": max_endpoint_bias,
        "llc_max_rhat": max_rhat,
        "llc_max_trend_z": max_trend_z,
        **_versions(),
    }
    return describe(cube)


def describe(ds: xr.Dataset) -> xr.Dataset:
    """``long_name`` (and ``units``, never on index coordinates) from :data:`ATTRS`."""
    for name in list(ds.data_vars) + list(ds.coords):
        if name in ATTRS:
            long_name, units = ATTRS[name]
            ds[name].attrs["long_name"] = long_name
            if units is not None and name not in ds.indexes:
                ds[name].attrs["units"] = units
    return ds


def configured(cube: xr.Dataset) -> list[tuple[str, int, int]]:
    """(landscape, k1, k2) cells that hold a landscape."""
    known = cube.learning_coefficient.notnull()
    return [(str(kind), int(k1), int(k2))
            for kind in cube.landscape.values for k1 in cube.k1.values for k2 in cube.k2.values
            if bool(known.sel(landscape=kind, k1=k1, k2=k2))]


def _name(kind: str, k1: int, k2: int) -> str:
    return f"line_k{k1}" if kind == "line" else f"{kind}_k{k1}-{k2}"


def flag_names(quality: float) -> str:
    """``ok``, the flags of a ``llc_quality`` value joined by ``+``, or ``n/a`` (NaN)."""
    if quality != quality:
        return "n/a"
    return "+".join(name for name, bit in FLAGS.items() if int(quality) & bit) or "ok"


def cells(cube: xr.Dataset) -> list[tuple[float, int]]:
    """Every (learning rate, batch size) cell, in the cube's order."""
    return [(float(lr), int(b)) for lr in cube.lr.values for b in cube.batch_size.values]


def hottest(cube: xr.Dataset) -> tuple[float, int]:
    """The (learning rate, batch size) cell of largest ``lr / B`` (most SGD noise)."""
    return max(cells(cube), key=lambda c: c[0] / c[1])


#: A Hessian entry this close to 0 is rounding, not curvature: the orthogonalised noise's
#: cross moment ``s`` is 0 only to ~1e-17, so an endpoint SGD has collapsed onto ``w*``
#: (``|w|`` below ~1e-9, where the true entry is ~0) can show ``−2s`` as a "negative"
#: curvature. The toy data are O(1), so a real entry is far above this.
ROUNDING_CURVATURE = 1e-12


def _nonpositive_curvature(c: xr.Dataset, lr: float, batch: int) -> float:
    """The largest share, over coordinates, of measured prior-start endpoints whose Hessian
    diagonal entry is ≤ 0 in the cell (lr, batch): there the noise cannot be c × H. Entries
    within :data:`ROUNDING_CURVATURE` of 0 are rounding and left out (NaN where every one
    is)."""
    hess = c.loss_hessian.sel(lr=lr, batch_size=batch)
    hess = hess.where(abs(hess) > ROUNDING_CURVATURE)
    shares = [float((d <= 0).sum() / d.notnull().sum())
              for w in c.weight.values
              if int((d := hess.sel(weight=w, weight_b=w)).notnull().sum())]
    return max(shares, default=float("nan"))


def summary_table(cube: xr.Dataset) -> pd.DataFrame:
    """One row per landscape; means over learning rates, batch sizes (and coordinates).
    ``llc_at_end`` averages only the ``end_n`` endpoint estimates that are not flagged
    (``end_flagged``: how many are); ``exponent`` averages the ``exponent_cells`` cells
    where it could be fitted; ``R2_min``: the worst cell's R²; ``H<=0_hot``: in the
    hottest cell (:func:`hottest`), the largest share over coordinates of endpoints whose
    Hessian diagonal entry is ≤ 0; ``diverged``: the largest share of runs that diverged
    in any cell and ensemble."""
    rows = []
    hot_lr, hot_batch = hottest(cube)
    for kind, k1, k2 in configured(cube):
        c = cube.sel(landscape=kind, k1=k1, k2=k2)
        exact = float(c.learning_coefficient)
        made = c.llc_quality.notnull()
        ok = c.llc_quality == 0
        llc_end = float(c.llc_mean.where(ok).mean()) if bool(ok.any()) else float("nan")
        escape = c.escape_fraction.mean(["lr", "batch_size"])
        rows.append({
            "landscape": _name(kind, k1, k2),
            "lambda": exact,
            "m": int(c.learning_coefficient_multiplicity),
            "target": float(c.llc_finite_nbeta_target),
            "llc_at_w*": float(c.llc_at_critical_point),
            "w*_flags": flag_names(float(c.llc_at_critical_point_quality)),
            "llc_at_end": llc_end,
            "llc_end_err_%": 100 * (llc_end - exact) / exact,
            "end_n": int(ok.sum()),
            "end_flagged": int((made & ~ok).sum()),
            "exponent": float(c.convergence_exponent.mean()),
            "exponent_cells": int(c.convergence_exponent.notnull().sum()),
            "exponent_gf": float(c.convergence_exponent_gradient_flow),
            "escape_w1": float(escape.sel(escape="w1")),
            "escape_w2": float(escape.sel(escape="w2")),
            "escape_both": float(escape.sel(escape="both")),
            "stuck": float(escape.sel(escape="none")),
            "W1": float(c.posterior_w1_distance.sel(sample="sgd").mean()),
            "W1_null": float(c.posterior_w1_distance.sel(sample="exact").mean()),
            "KL": float(c.posterior_kl.sel(sample="sgd").mean()),
            "KL_null": float(c.posterior_kl.sel(sample="exact").mean()),
            "noise/H": float(c.noise_ratio.sel(curvature="hessian").mean()),
            "R2": float(c.noise_r2.sel(curvature="hessian").mean()),
            "R2_min": float(c.noise_r2.sel(curvature="hessian").min()),
            "H<=0_hot": _nonpositive_curvature(c, hot_lr, hot_batch),
            "noise/GN": float(c.noise_ratio.sel(curvature="gauss_newton").mean()),
            "diverged": float(c.diverged_fraction.max()),
        })
    return pd.DataFrame(rows).set_index("landscape")


def distance_table(cube: xr.Dataset) -> pd.DataFrame:
    """W1 (mean over coordinates) per landscape and (learning rate, batch size) cell, with
    the sampling level in brackets."""
    rows = {}
    for kind, k1, k2 in configured(cube):
        c = cube.sel(landscape=kind, k1=k1, k2=k2)
        w1 = c.posterior_w1_distance.sel(sample="sgd").mean("weight")
        null = c.posterior_w1_distance.sel(sample="exact").mean("weight")
        rows[_name(kind, k1, k2)] = {
            f"lr={lr:g} B={b}": f"{float(w1.sel(lr=lr, batch_size=b)):.4f} "
                                f"({float(null.sel(lr=lr, batch_size=b)):.4f})"
            for lr in c.lr.values for b in c.batch_size.values}
    return pd.DataFrame.from_dict(rows, orient="index")


def format_summary(cube: xr.Dataset) -> str:
    """The summary ``python -m critperiods summarize`` prints for a toy cube."""
    bias = cube.attrs.get("llc_max_endpoint_bias", MAX_ENDPOINT_BIAS)
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.float_format", "{:.3g}".format):
        return "\n".join([
            "Toy landscapes: means over learning rates and batch sizes",
            "(λ̂ at w* and at far-start SGD endpoints vs exact λ; llc_at_end averages the",
            " end_n endpoint estimates not flagged, end_flagged counts those that are:",
            " not_at_minimum (the endpoint sits so far above a minimum that λ̂ comes off by",
            f" more than {bias:.0%} of its value there), negative, not_converged,",
            " diverged_chains or heavy_tailed; convergence exponent p of median steps ∝",
            " threshold^-p vs gradient flow; near-start escape shares; prior-start endpoints",
            " vs tempered posterior: W1 per coordinate and KL, beside the sampling level of an",
            " exact posterior sample; noise covariance / Hessian and / J^T S J; the largest",
            " share of diverged runs in any cell)",
            "",
            summary_table(cube).to_string(),
            "",
            "W1 distance to the tempered posterior per cell (sampling level):",
            distance_table(cube).to_string(),
        ])


def summary_csv(cube: xr.Dataset, path: str | Path) -> None:
    """The summary table as CSV (written atomically)."""
    from critperiods.pipeline.files import write_atomic

    table = summary_table(cube)
    write_atomic(path, lambda tmp: table.to_csv(tmp, float_format="%.6g"))


__all__ = ["ATTRS", "CUBE_KIND", "build_toy_cube", "cells", "configured", "describe",
           "distance_table", "hottest", "format_summary", "summary_csv", "summary_table"]
