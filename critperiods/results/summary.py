"""The critical-period summary: per (batch size, lr schedule), the cube's statistics.

:func:`critical_period_summary` reads the runs that count from the cube
(:mod:`critperiods.results.selection`), fits them (:mod:`critperiods.results.fits`) and
returns a Dataset on ``batch_size`` and ``lr_schedule`` that the aggregate stage merges into
the cube:

* the end of the critical period (hinge kink) with a seed-bootstrap interval, and its slope;
* the permanent deficit of the latest switch, per learning-rate schedule: the deficit
  "survives the restart" when it stays above 0 with the rate reset at the switch;
* the model-free half-deficit epoch;
* where the local learning coefficient (λ̂, ``llc_mean``) changes slope most, along the
  blurred trunk and along the never-blurred run;
* when the distance to the blurred continuation (``div_l2``, ``reference="blurred"``) at a
  fixed horizon after the switch drops below half of its early value;
* the runs that diverged to chance, left out of all of the above (``diverged_runs``);
* power-law exponents of the end versus temperature (``lr / batch_size``) and batch size.

A NaN statistic says why in its ``missing`` attribute.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from critperiods.results.fits import (
    bootstrap_hinge,
    deficit_bootstrap,
    divergence_drop_epoch,
    fit_power_law,
    half_deficit_epoch,
    largest_change_epoch,
    nanmean,
)
from critperiods.results.selection import (
    default_horizon,
    divergence_at_horizon,
    llc_sharp,
    llc_trunk,
    run_diverged,
    valid_final_accuracy,
)
from critperiods.variables import SUMMARY_STATISTICS, exponent_attrs, interval_attrs
from critperiods.variables import attrs as variable_attrs

__all__ = ["EXPONENTS", "INTERVAL_STATISTICS", "MIN_LLC_POINTS", "MIN_SEEDS_FOR_INTERVAL",
           "critical_period_summary"]

#: Below this many seeds a seed-bootstrap interval is reported as a range, not a confidence
#: interval: resampling 2–4 seeds only shuffles the few values there are.
MIN_SEEDS_FOR_INTERVAL = 5
#: Points a slope change needs (:func:`largest_change_epoch`).
MIN_LLC_POINTS = 3

#: The statistics with a seed-bootstrap interval (``<name>_interval``); every statistic per
#: (batch_size, lr_schedule) is in :data:`critperiods.variables.SUMMARY_STATISTICS`.
INTERVAL_STATISTICS = ("critical_period_end", "permanent_deficit")
#: The power-law exponents of the end, per lr_schedule (each with ``<name>_interval``).
EXPONENTS = ("temperature_exponent", "batch_size_exponent")


def _llc_reason(cube: xr.Dataset, curve: xr.DataArray, where: str) -> str | None:
    """Why a λ̂ marker is NaN (None if it is not)."""
    if "llc_mean" not in cube:
        return "λ̂ not estimated (llc.enabled: false)"
    n = int(np.isfinite(curve.values).sum()) if curve.size else 0
    if n < MIN_LLC_POINTS:
        return (f"{n} valid λ̂ point(s) on the {where} (a slope change needs "
                f"{MIN_LLC_POINTS}; see llc.every/llc.epochs/llc.first_epoch and the λ̂ flags)")
    return None


def _cell_values(
    cube: xr.Dataset, batch_size: float, lr_schedule: str, horizon: float, n_boot: int,
    rng_seed: int, level: float,
) -> tuple[dict[str, float], dict[str, str]]:
    """The statistics of one (batch size, schedule) as plain floats, and why any is NaN."""
    switches = cube["switch_epoch"].values.astype(float)
    acc = valid_final_accuracy(cube).sel(batch_size=batch_size)
    diverged = run_diverged(cube).sel(batch_size=batch_size)
    if "lr_schedule" in acc.dims:
        acc = acc.sel(lr_schedule=lr_schedule)
        diverged = diverged.sel(lr_schedule=lr_schedule)
    acc = acc.transpose("switch_epoch", ...).values.reshape(switches.size, -1)
    n_diverged = int(diverged.sum())
    k, lower, upper, slope = bootstrap_hinge(switches, acc, n_boot, rng_seed, level)
    deficit, d_lo, d_hi = deficit_bootstrap(switches, acc, n_boot, rng_seed, level)
    trunk, sharp = llc_trunk(cube, batch_size), llc_sharp(cube, batch_size)
    div = divergence_at_horizon(cube, batch_size, horizon, lr_schedule)
    values = {
        "critical_period_end": k, "critical_period_end_lower": lower,
        "critical_period_end_upper": upper, "critical_period_slope": slope,
        "permanent_deficit": deficit, "permanent_deficit_lower": d_lo,
        "permanent_deficit_upper": d_hi,
        "half_deficit_epoch": half_deficit_epoch(switches, nanmean(acc, axis=1)),
        "llc_change_epoch_trunk": largest_change_epoch(trunk["epoch"].values, trunk.values),
        "llc_change_epoch_sharp": largest_change_epoch(sharp["epoch"].values, sharp.values),
        "divergence_drop_epoch": divergence_drop_epoch(switches, div),
        "diverged_runs": n_diverged,
    }
    left_out = (f" ({n_diverged} run(s) diverged to chance and are left out)" if n_diverged
                else "")
    reasons = {
        "critical_period_end": "no finite final accuracy" + left_out,
        "permanent_deficit": "no seed with both the earliest and the latest switch" + left_out,
        "half_deficit_epoch": "the latest switch costs no accuracy (no positive deficit)"
                              + left_out,
        "llc_change_epoch_trunk": _llc_reason(cube, trunk, "blurred trunk"),
        "llc_change_epoch_sharp": (
            _llc_reason(cube, sharp, "never-blurred run") if 0 in switches
            else "no switch epoch 0 (the never-blurred run) in the grid"),
        "divergence_drop_epoch": (
            "divergence not computed (divergence.enabled: false)" if "div_l2" not in cube
            else "the distance at the horizon never falls below half its early value"),
    }
    why = {name: reason for name, reason in reasons.items()
           if reason and not np.isfinite(values[name])}
    return values, why


def _temperature(cube: xr.Dataset, batch_sizes: np.ndarray) -> np.ndarray:
    """``lr / batch_size`` per batch size; lr from a variable ``lr(batch_size)``, else the
    ``lr`` attribute, else 1 (a constant lr only changes the prefactor, not the exponent)."""
    if "lr" in cube.data_vars and cube["lr"].dims == ("batch_size",):
        lr = cube["lr"].values.astype(float)
    else:
        lr = np.full(batch_sizes.size, float(cube.attrs.get("lr", 1.0)))
    return lr / batch_sizes


def _exponents(ends: np.ndarray, temperature: np.ndarray, batch_sizes: np.ndarray,
               schedules: list[str], n_boot: int, seed: int, level: float
               ) -> dict[str, xr.DataArray]:
    """Power-law exponents (with intervals) of the end vs T and vs batch size, per schedule.

    ``ends`` is (batch_size, lr_schedule). The interval resamples batch sizes, so with 3–5 of
    them it is a crude band, not a test.
    """
    out: dict[str, xr.DataArray] = {}
    for name, x, what in (
        ("temperature_exponent", temperature, "lr / batch_size"),
        ("batch_size_exponent", batch_sizes, "batch size"),
    ):
        fits = [fit_power_law(x, ends[:, j], n_boot, seed, level) for j in range(len(schedules))]
        usable = [int(np.sum(np.isfinite(ends[:, j]) & (ends[:, j] > 0)))
                  for j in range(len(schedules))]
        missing = "; ".join(
            f"{r}: {n} batch size(s) with a finite, positive end (a power law needs 3)"
            for r, n, f in zip(schedules, usable, fits, strict=True) if not np.isfinite(f[0]))
        meta = exponent_attrs(name, what, level)
        out[name] = xr.DataArray(
            np.array([f[0] for f in fits]), dims=["lr_schedule"],
            attrs={**meta["value"], **({"missing": missing} if missing else {})})
        out[f"{name}_interval"] = xr.DataArray(
            np.array([[f[2], f[3]] for f in fits]).reshape(-1, 2), dims=["lr_schedule", "bound"],
            attrs=meta["interval"])
    return out


def critical_period_summary(
    cube: xr.Dataset,
    horizon: float | None = None,
    n_boot: int = 1000,
    rng_seed: int = 0,
    level: float = 0.90,
) -> xr.Dataset:
    """Critical-period statistics per (batch size, lr schedule), and scaling exponents.

    Per ``(batch_size, lr_schedule)``: ``critical_period_end`` (hinge kink) with
    ``critical_period_end_interval(…, bound)`` (seed bootstrap), ``critical_period_slope``,
    ``permanent_deficit`` (+ ``_interval``; the deficit "survives the restart" when the
    restart schedule's lower bound is above 0), ``half_deficit_epoch``,
    ``llc_change_epoch_trunk``/``_sharp`` (valid λ̂ only: flagged estimates are left out) and
    ``divergence_drop_epoch`` (distance to the always-blurred run at ``epoch = switch +
    horizon``; ``horizon`` defaults to :func:`default_horizon`), and ``diverged_runs``: the
    runs that diverged to chance (:func:`run_diverged`), left out of every statistic (their
    branches are NaN to the seed means, bootstraps and fits; a cell left with no run gives
    NaN and says so). Per ``lr_schedule``:
    ``temperature_exponent`` and ``batch_size_exponent`` (+ ``_interval``), NaN with fewer
    than 3 batch sizes. A NaN statistic says why in its ``missing`` attribute; the dataset's
    ``interval_kind`` attribute says whether the intervals rest on enough seeds
    (:data:`MIN_SEEDS_FOR_INTERVAL`) to be read as confidence intervals. A cube without an
    ``lr_schedule`` dim is treated as one ``continue`` schedule.
    """
    if "lr_schedule" not in cube.dims:
        cube = cube.expand_dims(lr_schedule=["continue"])
    batch_sizes = cube["batch_size"].values
    schedules = [str(r) for r in cube["lr_schedule"].values]
    h = default_horizon(cube) if horizon is None else float(horizon)
    cells = {(b, r): _cell_values(cube, b, r, h, n_boot, rng_seed, level)
             for b in batch_sizes for r in schedules}

    def grid(key: str) -> np.ndarray:
        return np.array([[cells[(b, r)][0][key] for r in schedules] for b in batch_sizes],
                        dtype=float).reshape(len(batch_sizes), len(schedules))

    dims = ["batch_size", "lr_schedule"]
    data: dict[str, xr.DataArray] = {}
    for name in SUMMARY_STATISTICS:
        missing = "; ".join(f"batch {b}, {r}: {cells[(b, r)][1][name]}"
                            for b in batch_sizes for r in schedules if name in cells[(b, r)][1])
        data[name] = xr.DataArray(grid(name), dims=dims, attrs={
            **variable_attrs(name), **({"missing": missing} if missing else {})})
    data["diverged_runs"] = xr.DataArray(grid("diverged_runs").astype(np.int32), dims=dims,
                                         attrs=variable_attrs("diverged_runs"))
    seeds = int(cube.sizes.get("seed", 1))
    kind = (f"{level:.0%} seed-bootstrap interval" if seeds >= MIN_SEEDS_FOR_INTERVAL else
            f"range of the seed bootstrap over only {seeds} seed(s): not a confidence interval")
    for name in INTERVAL_STATISTICS:
        data[f"{name}_interval"] = xr.DataArray(
            np.stack([grid(f"{name}_lower"), grid(f"{name}_upper")], axis=-1),
            dims=[*dims, "bound"],
            attrs=interval_attrs(name, kind))
    data.update(_exponents(data["critical_period_end"].values,
                           _temperature(cube, batch_sizes.astype(float)),
                           batch_sizes.astype(float), schedules, n_boot, rng_seed, level))
    coords = {"batch_size": batch_sizes, "lr_schedule": schedules, "bound": ["lower", "upper"]}
    attrs = {"horizon": h, "n_boot": int(n_boot), "rng_seed": int(rng_seed), "level": level,
             "seeds": seeds, "interval_kind": kind}
    return xr.Dataset(data, coords=coords, attrs=attrs)

