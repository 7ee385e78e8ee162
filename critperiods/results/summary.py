"""The critical-period summary: per (batch size, lr schedule), the cube's statistics.

:func:`critical_period_summary` reads the runs that count from the cube
(:mod:`critperiods.results.selection`), fits them (:mod:`critperiods.results.fits`) and
returns a Dataset on ``batch_size`` and ``lr_schedule`` that the aggregate stage merges into
the cube:

* the end of the critical period (hinge kink) with a leave-one-seed-out jackknife interval,
  and its slope;
  an end is *located* (:func:`critperiods.results.end_fit.end_located`) only where the
  permanent deficit's interval is above 0, and only located ends enter the exponents;
* the permanent deficit of the latest switch, per learning-rate schedule, with a Student-t
  interval over the seeds that have both runs (``permanent_deficit_seeds``): the deficit
  "survives the restart" when it stays above 0 with the rate reset at the switch;
* the model-free half-deficit epoch;
* where the local learning coefficient (λ̂, ``llc_mean``) changes slope most, along the
  blurred trunk and along the never-blurred run (an arg-max, with a leave-one-out spread);
* the knee of λ̂ along each (a broken-stick fit) with a jackknife-t interval, and where the
  run measured the chains' descent (``llc.descent``), the knee of λ̂ net of it as well;
* when the distance to the blurred continuation (``div_l2``, ``reference="blurred"``) at a
  fixed horizon after the switch drops below half of its early value, with a jackknife-t
  interval;
* each marker (the knees, the drop) minus the end, with a paired jackknife-t interval: do
  λ̂ and the divergence mark the end? (:mod:`critperiods.results.markers`); with each
  interval's p-value and that p-value after Holm's correction for all of the summary's
  offsets (:mod:`critperiods.results.multiple_testing`);
* the runs that diverged to chance, left out of all of the above (``diverged_runs``);
* power-law exponents of the located ends versus temperature (``lr / batch_size``) and
  batch size.

A NaN statistic says why in its ``missing`` attribute (the p-values: in their offset's).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from critperiods.results.end_fit import end_located, fit_end  # end_located: also here
from critperiods.results.fits import (
    MIN_CHANGE_POINTS,
    divergence_drop_epoch,
    fit_power_law,
    half_deficit_epoch,
    hinge_switches,
    largest_change_epoch,
    mean_t_interval,
    seed_adjusted_mean,
)
from critperiods.results.markers import (
    LLC_KNEES,
    LLC_MARKERS,
    MARKER_OFFSETS,
    MARKER_STATISTICS,
    NET_LLC_KNEES,
    NET_MARKER_STATISTICS,
    drop_values,
    knee_earliest_attrs,
    knee_unstable_attrs,
    knee_values,
    knee_within_noise_attrs,
    loo_range_attrs,
    marker_attrs,
    marker_interval_kind,
    marker_spread,
    offset_p_attrs,
    offset_p_holm_attrs,
)
from critperiods.results.multiple_testing import holm_adjusted
from critperiods.results.selection import (
    default_horizon,
    divergence_at_horizon,
    llc_sharp_by_seed,
    llc_trunk_by_seed,
    run_diverged,
    seed_mean,
    valid_final_accuracy,
    with_lr_schedule,
)
from critperiods.variables import (
    SUMMARY_STATISTICS,
    exponent_attrs,
    interval_attrs,
    located_flag_attrs,
)
from critperiods.variables import attrs as variable_attrs

__all__ = ["EXPONENTS", "INTERVAL_METHOD", "INTERVAL_STATISTICS", "MIN_LLC_POINTS",
           "critical_period_summary", "end_located", "located_end", "restart_reduction",
           "unlocated_reason"]

#: How the end's and the exponents' intervals are computed; stored as the cube attribute
#: ``summary_interval_method`` so that ``summarize`` recognises statistics of older cubes.
INTERVAL_METHOD = "jackknife-t over seeds"
#: Points a slope change needs (:func:`largest_change_epoch`).
MIN_LLC_POINTS = MIN_CHANGE_POINTS

#: The statistics with an interval (``<name>_interval``); every statistic per
#: (batch_size, lr_schedule) is in :data:`critperiods.variables.SUMMARY_STATISTICS`.
INTERVAL_STATISTICS = ("critical_period_end", "permanent_deficit")
#: The power-law exponents of the end, per lr_schedule (each with ``<name>_interval``).
EXPONENTS = ("temperature_exponent", "batch_size_exponent")
def unlocated_reason(deficit: float, deficit_lower: float,
                     deficit_upper: float = float("nan")) -> str:
    """Why a cell has no located end, in a few words: no deficit measured, no interval (one
    seed), a deficit whose interval reaches 0 ("deficit not told from 0": few seeds cannot
    show an absence, so never "no deficit"), or one whose interval lies below 0 (a gain)."""
    if not np.isfinite(deficit):
        return "no deficit measured"
    if not np.isfinite(deficit_lower):
        return "no interval (1 seed)"
    if deficit_upper < 0:
        return "deficit below 0 (a gain)"
    return "deficit not told from 0"


def located_end(summary: xr.Dataset) -> xr.DataArray:
    """``critical_period_end`` where it is located
    (:func:`~critperiods.results.end_fit.end_located`), NaN elsewhere."""
    end = summary["critical_period_end"]
    if "permanent_deficit_interval" not in summary:
        return end
    lower = summary["permanent_deficit_interval"].sel(bound="lower", drop=True)
    return end.where(lower > 0)


def _half_deficit_reason(switches: np.ndarray, mean_accuracy: np.ndarray,
                         with_accuracy: int) -> str:
    """Why :func:`~critperiods.results.fits.half_deficit_epoch` is NaN for this curve (or
    left out: with two switch epochs it is their midpoint, whatever the data)."""
    ends = {"earliest": np.argmin(switches), "latest": np.argmax(switches)}
    missing = [name for name, i in ends.items() if not np.isfinite(mean_accuracy[i])]
    if missing:
        return f"no final accuracy at the {' and the '.join(missing)} switch"
    if with_accuracy < 3:
        return ("two switch epochs with a final accuracy: the half-way crossing between them "
                "is their midpoint, whatever the data (it needs 3)")
    return "the latest switch costs no accuracy (no positive deficit)"


def _llc_reason(cube: xr.Dataset, curve: xr.DataArray, where: str, knee: bool = False
                ) -> str | None:
    """Why a λ̂ marker (``knee``: a knee) is NaN (read only where it is)."""
    if "llc_mean" not in cube:
        return "λ̂ not estimated (llc.enabled: false)"
    n = int(np.isfinite(curve.values).sum()) if curve.size else 0
    if n < MIN_LLC_POINTS:
        return (f"{n} valid λ̂ point(s) on the {where} (a {'knee' if knee else 'slope change'} "
                f"needs {MIN_LLC_POINTS}; see llc.every/llc.epochs/llc.first_epoch and the λ̂ "
                "flags)")
    return f"valid λ̂ on the {where} is a straight line (no {'knee' if knee else 'slope change'})"


def _cell_values(
    cube: xr.Dataset, batch_size: float, lr_schedule: str, horizon: float, level: float,
) -> tuple[dict[str, float], dict[str, str], np.ndarray]:
    """The statistics of one (batch size, schedule) as plain floats, why any is NaN, and the
    end refitted without each seed (for the exponents' jackknife)."""
    switches = cube["switch_epoch"].values.astype(float)
    acc = valid_final_accuracy(cube).sel(batch_size=batch_size)
    diverged = run_diverged(cube).sel(batch_size=batch_size)
    if "lr_schedule" in acc.dims:
        acc = acc.sel(lr_schedule=lr_schedule)
        diverged = diverged.sel(lr_schedule=lr_schedule)
    acc = acc.transpose("switch_epoch", ...).values.reshape(switches.size, -1)
    n_diverged = int(diverged.sum())
    end = fit_end(switches, acc, level)
    mean_acc = seed_adjusted_mean(acc)
    with_accuracy = hinge_switches(switches, acc)  # a kink, and a half-way crossing, need 3
    trunk_by_seed, sharp_by_seed = llc_trunk_by_seed(cube, batch_size), llc_sharp_by_seed(
        cube, batch_size)
    trunk, sharp = seed_mean(trunk_by_seed), seed_mean(sharp_by_seed)
    div = divergence_at_horizon(cube, batch_size, horizon, lr_schedule)
    values = {
        "critical_period_end": end.end, "critical_period_end_lower": end.lower,
        "critical_period_end_upper": end.upper, "critical_period_slope": end.slope,
        "permanent_deficit": end.deficit, "permanent_deficit_lower": end.deficit_lower,
        "permanent_deficit_upper": end.deficit_upper,
        "half_deficit_epoch": (half_deficit_epoch(switches, mean_acc)
                               if with_accuracy >= 3 else float("nan")),
        "llc_change_epoch_trunk": largest_change_epoch(trunk["epoch"].values, trunk.values),
        "llc_change_epoch_sharp": largest_change_epoch(sharp["epoch"].values, sharp.values),
        "divergence_drop_epoch": divergence_drop_epoch(switches, div),
        "diverged_runs": n_diverged, "permanent_deficit_seeds": end.deficit_seeds,
        "seeds_fitted": int(np.isfinite(acc).any(axis=0).sum()),
    }
    left_out = (f" ({n_diverged} run(s) diverged to chance and are left out)" if n_diverged
                else "")
    reasons = {
        "critical_period_end": (
            f"{with_accuracy} switch epoch(s) with a final accuracy: a "
            "hinge's kink needs 3 (through two points every kink between them fits)"
            if 0 < with_accuracy < 3 else "no finite final accuracy")
            + left_out,
        "permanent_deficit": "no seed with both the earliest and the latest switch" + left_out,
        "half_deficit_epoch": _half_deficit_reason(switches, mean_acc, with_accuracy)
                              + left_out,
        "llc_change_epoch_trunk": _llc_reason(cube, trunk, "blurred trunk"),
        "llc_change_epoch_sharp": (
            _llc_reason(cube, sharp, "never-blurred run") if 0 in switches
            else "no switch epoch 0 (the never-blurred run) in the grid"),
        "divergence_drop_epoch": (
            "divergence not computed (divergence.enabled: false)" if "div_l2" not in cube
            else "fewer than two switch epochs with a distance at the horizon (their runs "
                 "diverged or were not run): nothing to halve" if np.isfinite(div).sum() < 2
            else "the distance at the horizon never falls below half its early value"),
    }
    why = {name: reason for name, reason in reasons.items()
           if reason and not np.isfinite(values[name])}
    for name, curve in zip(LLC_MARKERS, (trunk_by_seed, sharp_by_seed), strict=True):
        lo, hi, reason = marker_spread(curve, values[name])
        values[f"{name}_lower"], values[f"{name}_upper"] = lo, hi
        if reason:
            why[f"{name}_loo_range"] = reason
    unlocated = ("" if end.located
                 else "no located end "
                 f"({unlocated_reason(end.deficit, end.deficit_lower, end.deficit_upper)})")
    if unlocated and np.isfinite(end.end):
        why["not_an_end"] = unlocated
    # an offset from the end needs a located, finite end
    no_end = unlocated or ("" if np.isfinite(end.end)
                           else f"no critical_period_end ({reasons['critical_period_end']})")
    knees = [(*LLC_KNEES[0], trunk_by_seed, why.get(LLC_MARKERS[0])),
             (*LLC_KNEES[1], sharp_by_seed, why.get(LLC_MARKERS[1]))]
    if "llc_descent" in cube:  # λ̂ net of the chains' descent: markers of their own
        net_trunk = llc_trunk_by_seed(cube, batch_size, net_of_descent=True)
        net_sharp = llc_sharp_by_seed(cube, batch_size, net_of_descent=True)
        knees += [(*NET_LLC_KNEES[0], net_trunk, _llc_reason(
                      cube, seed_mean(net_trunk), "blurred trunk net of the descent", knee=True)),
                  (*NET_LLC_KNEES[1], net_sharp, _llc_reason(
                      cube, seed_mean(net_sharp), "never-blurred run net of the descent",
                      knee=True) if 0 in switches
                   else "no switch epoch 0 (the never-blurred run) in the grid")]
    for knee_name, offset_name, curve, reason in knees:
        knee = knee_values(curve, level, end)
        for name, triple in ((knee_name, knee.knee), (offset_name, knee.offset)):
            values[name], values[f"{name}_lower"], values[f"{name}_upper"] = triple
        values[f"{offset_name}_p"] = knee.offset_p()
        values[f"{knee_name}_unstable"] = knee.unstable
        values[f"{knee_name}_within_noise"] = knee.within_noise
        values[f"{knee_name}_earliest"] = knee.earliest
        if not np.isfinite(knee.knee[0]):
            why[knee_name] = reason or "valid λ̂ is a straight line (no knee)"
            why[offset_name] = f"no {knee_name}: {why[knee_name]}"
        elif no_end:
            why[offset_name] = f"{no_end}: nothing to compare the knee with"
    drop = drop_values(cube, batch_size, lr_schedule, horizon, level,
                       values["divergence_drop_epoch"], end)
    values["divergence_drop_epoch_lower"], values["divergence_drop_epoch_upper"] = drop.interval
    (values["divergence_drop_minus_end"], values["divergence_drop_minus_end_lower"],
     values["divergence_drop_minus_end_upper"]) = drop.offset
    values["divergence_drop_minus_end_p"] = drop.offset_p()
    if not np.isfinite(values["divergence_drop_epoch"]):
        why["divergence_drop_minus_end"] = ("no divergence_drop_epoch: "
                                            + why["divergence_drop_epoch"])
    elif no_end:
        why["divergence_drop_minus_end"] = f"{no_end}: nothing to compare the drop with"
    return values, why, end.jackknife.without_each_seed


def restart_reduction(cube: xr.Dataset, level: float = 0.90) -> dict[str, xr.DataArray]:
    """How much of the permanent deficit restarting the rate removes, per batch size:
    ``restart_deficit_reduction`` (+ ``_interval``, ``_seeds``), per seed the deficit with
    the rate continued minus that with it restarted, mean and Student-t interval over the
    seeds with all four runs (:func:`~critperiods.results.fits.mean_t_interval`; runs that
    diverged to chance are left out).

    Where the earliest switch is 0, the never-blurred run is one run under both schedules
    and both latest runs start from the seed's trunk, so the difference is the latest
    switch's final accuracy restarted minus continued, and the seed's own noise, which
    widens each deficit's interval, cancels. Two deficit intervals that overlap can
    therefore still differ beyond doubt. Needs a ``continue`` and a ``restart`` schedule;
    NaN (with the reason in ``missing``) with one switch epoch or no seed with all four
    runs."""
    acc = valid_final_accuracy(with_lr_schedule(cube))
    s = acc["switch_epoch"]
    deficit = acc.sel(switch_epoch=s.min(), drop=True) - acc.sel(switch_epoch=s.max(), drop=True)
    removed = deficit.sel(lr_schedule="continue") - deficit.sel(lr_schedule="restart")
    if s.size < 2:  # one switch epoch: no deficit, so nothing to lower
        removed = removed * np.nan
    batch_sizes = removed["batch_size"].values
    cells = [mean_t_interval(removed.sel(batch_size=b).values, level) for b in batch_sizes]
    name = "restart_deficit_reduction"
    missing = "; ".join(f"batch {b:g}" for b, c in zip(batch_sizes, cells, strict=True)
                        if not np.isfinite(c[0]))
    why = ("one switch epoch: no deficit" if s.size < 2 else
           "no seed with the earliest and the latest switch's runs under both schedules")
    dims = ["batch_size"]
    return {
        name: xr.DataArray([c[0] for c in cells], dims=dims, attrs={
            **variable_attrs(name), **({"missing": f"{missing}: {why}"} if missing else {})}),
        f"{name}_interval": xr.DataArray(
            [[c[1], c[2]] for c in cells], dims=[*dims, "bound"],
            attrs=interval_attrs(name, f"{level:.0%} Student-t interval over seeds")),
        f"{name}_seeds": xr.DataArray(np.array([c[3] for c in cells], dtype=np.int32),
                                      dims=dims, attrs=variable_attrs(f"{name}_seeds")),
    }


def _why_missing(reasons: dict[tuple, str | None]) -> str:
    """One ``missing`` attribute from the cells' reasons, each reason said once: "every batch
    size and schedule: …" when all share it, else "batch 64, continue; batch 128, continue:
    …"."""
    said: dict[str, list[str]] = {}
    for (b, r), reason in reasons.items():
        if reason:
            said.setdefault(reason, []).append(f"batch {b}, {r}")
    if len(said) == 1 and len(next(iter(said.values()))) == len(reasons) > 1:
        return f"every batch size and schedule: {next(iter(said))}"
    return "; ".join(f"{'; '.join(where)}: {reason}" for reason, where in said.items())


def _temperature(cube: xr.Dataset, batch_sizes: np.ndarray) -> np.ndarray:
    """``lr / batch_size`` per batch size, with the cube's initial ``lr`` (1 without it: a
    constant lr only changes the prefactor, not the exponent)."""
    return float(cube.attrs.get("lr", 1.0)) / batch_sizes


def _censored(ends: np.ndarray, ends_without_each_seed: np.ndarray, batch_sizes: np.ndarray,
              schedules: list[str], seeds: np.ndarray, first_switch: float,
              unbounded: list[bool]) -> str:
    """For the schedules whose exponent interval is ``unbounded``: which located ends are at
    or before the first switch (censored), by themselves or with some seed left out. ""
    where none."""
    said = []
    for j, r in enumerate(schedules):
        if not unbounded[j]:
            continue
        located = np.isfinite(ends[:, j])
        hits = [f"batch {b:g}" for b in batch_sizes[located & (ends[:, j] <= first_switch)]]
        fitted = located & (ends[:, j] > first_switch)
        hits += [f"batch {batch_sizes[b]:g} without seed {seeds[i]}"
                 for i, b in zip(*np.nonzero(
                     (ends_without_each_seed[:, :, j] <= first_switch) & fitted), strict=True)]
        if hits:
            said.append(f"{r}: {'; '.join(hits)}")
    return (f"an end at or before the first switch (epoch {first_switch:g}) says only that it "
            "is no later, so the data do not bound how steep the power law is: "
            + " | ".join(said)) if said else ""


def _exponents(ends: np.ndarray, ends_without_each_seed: np.ndarray, temperature: np.ndarray,
               batch_sizes: np.ndarray, schedules: list[str], seeds: np.ndarray,
               first_switch: float, level: float) -> dict[str, xr.DataArray]:
    """Power-law exponents (with intervals) of the end vs T and vs batch size, per schedule.

    ``ends`` is (batch_size, lr_schedule), NaN where no end is located;
    ``ends_without_each_seed`` (seed, batch_size, lr_schedule) the ends refitted with each
    seed left out. The interval is the jackknife over seeds left out at every batch size
    at once (:func:`fit_power_law`): it carries the ends' sampling error, not the power
    law's misfit. An end at or before ``first_switch`` is censored: left out of the fit,
    and the interval is unbounded (its ``unbounded`` attribute says which).
    """
    out: dict[str, xr.DataArray] = {}
    for name, x, what in (
        ("temperature_exponent", temperature, "lr / batch_size"),
        ("batch_size_exponent", batch_sizes, "batch size"),
    ):
        fits = [fit_power_law(x, ends[:, j], ends_without_each_seed[:, :, j], level,
                              censored_at=first_switch)
                for j in range(len(schedules))]
        unbounded = _censored(ends, ends_without_each_seed, batch_sizes, schedules, seeds,
                              first_switch, [bool(np.isinf(f[2])) for f in fits])
        usable = [int(np.sum(np.isfinite(ends[:, j]) & (ends[:, j] > max(first_switch, 0))))
                  for j in range(len(schedules))]
        missing = "; ".join(
            f"{r}: {n} batch size(s) with a located end after the first switch (located: a "
            f"hinge end, with the permanent deficit's interval above 0; a power law needs 3)"
            for r, n, f in zip(schedules, usable, fits, strict=True) if not np.isfinite(f[0]))
        out[name] = xr.DataArray(
            np.array([f[0] for f in fits]), dims=["lr_schedule"],
            attrs={**exponent_attrs(what),
                   **({"missing": missing} if missing else {})})
        out[f"{name}_interval"] = xr.DataArray(
            np.array([[f[2], f[3]] for f in fits]).reshape(-1, 2), dims=["lr_schedule", "bound"],
            attrs={**interval_attrs(name, f"{level:.0%} {INTERVAL_METHOD} (left out at every "
                                          "batch size)"),
                   "comment": "the ends' seed-to-seed error only: it does not carry how "
                              "loosely the switch grid pins each end, so read it beside "
                              "critical_period_end_interval (ends whose intervals overlap "
                              "are not ordered, whatever this says)",
                   **({"unbounded": unbounded} if unbounded else {})})
    return out


def critical_period_summary(
    cube: xr.Dataset,
    horizon: float | None = None,
    level: float = 0.90,
) -> xr.Dataset:
    """Critical-period statistics per (batch size, lr schedule), and scaling exponents.

    Per ``(batch_size, lr_schedule)``: ``critical_period_end`` (hinge kink) with
    ``critical_period_end_interval(…, bound)`` (leave-one-seed-out jackknife-t,
    :func:`hinge_end`), ``critical_period_slope``,
    ``permanent_deficit`` (+ ``_interval``, a Student-t interval over the
    ``permanent_deficit_seeds`` seeds with both runs; the deficit "survives the restart" when
    the restart schedule's lower bound is above 0), ``half_deficit_epoch``,
    ``llc_change_epoch_trunk``/``_sharp`` (valid λ̂ only: flagged estimates are left out
    unless their flags are read in, :func:`~critperiods.results.selection.llc_counted`;
    ``_loo_range``: the lowest and highest marker, with all seeds and with each seed left
    out in turn) and
    ``divergence_drop_epoch`` (distance to the always-blurred run at ``epoch = switch +
    horizon``; ``horizon`` defaults to :func:`default_horizon`), and ``diverged_runs``: the
    runs that diverged to chance (:func:`run_diverged`), left out of every statistic (their
    branches are NaN to the seed means, intervals and fits; a cell left with no run gives
    NaN and says so). Per ``lr_schedule``:
    ``temperature_exponent`` and ``batch_size_exponent`` (+ ``_interval``) of the located
    ends (:func:`~critperiods.results.end_fit.end_located`), NaN with fewer than 3 of them;
    their interval leaves each seed out at every batch size at once. A NaN statistic says
    why in its ``missing`` attribute. The dataset's attributes ``interval_kind`` and
    ``deficit_interval_kind`` say what the end's and the deficit's intervals are,
    ``interval_method`` is :data:`INTERVAL_METHOD`. With one seed in a cell its intervals
    are NaN. A cube without an ``lr_schedule`` dim is treated as one ``continue`` schedule.
    Each marker offset of :data:`~critperiods.results.markers.MARKER_OFFSETS` has its
    interval's p-value ``<offset>_p`` and ``<offset>_p_holm``: that p-value after Holm's
    correction for every offset with one in the summary. The knees of λ̂ net of the chains'
    descent (:data:`~critperiods.results.markers.NET_LLC_KNEES`) and their offsets are there
    only for a cube with ``llc_descent``, and join that correction there.
    """
    cube = with_lr_schedule(cube)
    batch_sizes = cube["batch_size"].values
    schedules = [str(r) for r in cube["lr_schedule"].values]
    h = default_horizon(cube) if horizon is None else float(horizon)
    cells = {(b, r): _cell_values(cube, b, r, h, level)
             for b in batch_sizes for r in schedules}

    def grid(key: str) -> np.ndarray:
        return np.array([[cells[(b, r)][0][key] for r in schedules] for b in batch_sizes],
                        dtype=float).reshape(len(batch_sizes), len(schedules))

    dims = ["batch_size", "lr_schedule"]
    data: dict[str, xr.DataArray] = {}
    for name in SUMMARY_STATISTICS:
        missing = _why_missing({(b, r): cells[(b, r)][1].get(name) for b in batch_sizes
                                for r in schedules})
        data[name] = xr.DataArray(grid(name), dims=dims, attrs={
            **variable_attrs(name), **({"missing": missing} if missing else {})})
    data["diverged_runs"] = xr.DataArray(grid("diverged_runs").astype(np.int32), dims=dims,
                                         attrs=variable_attrs("diverged_runs"))
    data["permanent_deficit_seeds"] = xr.DataArray(
        grid("permanent_deficit_seeds").astype(np.int32), dims=dims,
        attrs=variable_attrs("permanent_deficit_seeds"))
    seeds = int(cube.sizes.get("seed", 1))
    kinds = {"critical_period_end": f"{level:.0%} {INTERVAL_METHOD} (leave one seed out), "
                                    "joined with the kink's profile interval (the kinks an F "
                                    "test on the noise cannot tell from the best); at least ± "
                                    "half the switch spacing",
             "permanent_deficit": f"{level:.0%} Student-t interval over seeds"}
    seed_counts = {"critical_period_end": ("seeds_fitted", "one seed has runs: no interval"),
                   "permanent_deficit": ("permanent_deficit_seeds",
                                         "one seed has both runs: no interval")}
    for name in INTERVAL_STATISTICS:
        count, reason = seed_counts[name]
        missing = _why_missing({(b, r): reason if cells[(b, r)][0][count] == 1 else None
                                for b in batch_sizes for r in schedules})
        data[f"{name}_interval"] = xr.DataArray(
            np.stack([grid(f"{name}_lower"), grid(f"{name}_upper")], axis=-1),
            dims=[*dims, "bound"],
            attrs={**interval_attrs(name, kinds[name]), **({"missing": missing} if missing
                                                             else {})})
    for name in LLC_MARKERS:
        missing = _why_missing({(b, r): cells[(b, r)][1].get(f"{name}_loo_range")
                                for b in batch_sizes for r in schedules})
        data[f"{name}_loo_range"] = xr.DataArray(
            np.stack([grid(f"{name}_lower"), grid(f"{name}_upper")], axis=-1),
            dims=[*dims, "bound"],
            attrs={**loo_range_attrs(name),
                   **({"missing": missing} if missing else {})})
    net = "llc_descent" in cube  # the knees of λ̂ net of the descent are markers too
    statistics = (*MARKER_STATISTICS, *(NET_MARKER_STATISTICS if net else ()))
    offsets = [(marker, offset) for marker, offset in MARKER_OFFSETS
               if net or (marker, offset) not in NET_LLC_KNEES]
    for name in statistics:
        missing = _why_missing({(b, r): cells[(b, r)][1].get(name) for b in batch_sizes
                                for r in schedules})
        data[name] = xr.DataArray(grid(name), dims=dims, attrs={
            **marker_attrs(name), **({"missing": missing} if missing else {})})
    for name in (*statistics, "divergence_drop_epoch"):
        data[f"{name}_interval"] = xr.DataArray(
            np.stack([grid(f"{name}_lower"), grid(f"{name}_upper")], axis=-1),
            dims=[*dims, "bound"], attrs=marker_attrs(name, level))
    p_values = np.stack([grid(f"{offset}_p") for _, offset in offsets])
    tests = int(np.isfinite(p_values).sum())
    for (_, offset), p, holm in zip(offsets, p_values, holm_adjusted(p_values), strict=True):
        data[f"{offset}_p"] = xr.DataArray(p, dims=dims, attrs=offset_p_attrs(offset))
        data[f"{offset}_p_holm"] = xr.DataArray(holm, dims=dims,
                                                attrs=offset_p_holm_attrs(offset, tests))
        data[offset].attrs["ancillary_variables"] = \
            f"{offset}_interval {offset}_p {offset}_p_holm"
    for knee, _ in (pair for pair in LLC_KNEES if pair in offsets):
        data[f"{knee}_unstable"] = xr.DataArray(grid(f"{knee}_unstable").astype(np.int8),
                                                dims=dims, attrs=knee_unstable_attrs(knee))
        data[f"{knee}_within_noise"] = xr.DataArray(
            grid(f"{knee}_within_noise").astype(np.int8), dims=dims,
            attrs=knee_within_noise_attrs(knee))
        data[f"{knee}_earliest"] = xr.DataArray(grid(f"{knee}_earliest"), dims=dims,
                                                attrs=knee_earliest_attrs(knee))
    coords = {"batch_size": batch_sizes, "lr_schedule": schedules, "bound": ["lower", "upper"]}
    ends = located_end(xr.Dataset(data, coords=coords)).values
    data["critical_period_end_located"] = xr.DataArray(
        np.isfinite(ends).astype(np.int8), dims=dims, attrs=located_flag_attrs())
    not_an_end = _why_missing({(b, r): cells[(b, r)][1].get("not_an_end") for b in batch_sizes
                               for r in schedules})
    if not_an_end:
        for name in ("critical_period_end", "half_deficit_epoch"):
            data[name].attrs["comment"] = ("no end where critical_period_end_located is 0: "
                                           + not_an_end)
    without_each_seed = np.array([[cells[(b, r)][2] for r in schedules] for b in batch_sizes]
                                 ).transpose(2, 0, 1)  # (seed, batch_size, lr_schedule)
    data.update(_exponents(ends, without_each_seed, _temperature(cube, batch_sizes.astype(float)),
                           batch_sizes.astype(float), schedules,
                           cube["seed"].values if "seed" in cube.dims else np.array([0]),
                           float(cube["switch_epoch"].min()), level))
    if {"continue", "restart"} <= set(schedules):
        data.update(restart_reduction(cube, level))
    attrs = {"horizon": h, "level": level, "seeds": seeds,
             "interval_method": INTERVAL_METHOD,
             "interval_kind": kinds["critical_period_end"],
             "deficit_interval_kind": kinds["permanent_deficit"],
             "knee_interval_kind": marker_interval_kind("llc_knee_trunk", level),
             "drop_interval_kind": marker_interval_kind("divergence_drop_epoch", level),
             "offset_interval_kind": marker_interval_kind("divergence_drop_minus_end", level)}
    return xr.Dataset(data, coords=coords, attrs=attrs)

