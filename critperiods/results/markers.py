"""The markers beside the end: where λ̂ and the divergence change, with intervals, and each
one's offset from the critical period's end. Does λ̂ or the divergence mark the end?

For one (batch size, lr schedule) cell of a cube, :mod:`critperiods.results.summary` asks
this module for:

* the λ̂ arg-max markers' leave-one-out spread (:func:`marker_spread`; the markers
  themselves are :func:`critperiods.results.fits.largest_change_epoch`);
* the λ̂ knee along the blurred trunk and along the never-blurred run, its interval, its
  flags (unstable; within its curve's noise) and its offset from the end
  (:func:`knee_values`, on the numerical core :mod:`critperiods.results.knee`); where the
  run measured the chains' descent (``llc.descent``), the same for λ̂ net of it
  (:data:`NET_LLC_KNEES`);
* the divergence drop's interval and its offset from the end (:func:`drop_values`);
* each offset's p-value, the level at which its interval touches 0 (:meth:`KneeFit.offset_p`,
  :meth:`DropFit.offset_p`).

The offsets are from the end as :func:`critperiods.results.end_fit.fit_end` fits it.
:func:`knee_fit` and :func:`drop_fit` do the work on plain arrays, so that ``power``'s
simulated runs (:mod:`critperiods.results.power`) get the summary's own intervals.

It also holds the names and the attributes of the variables these become
(:func:`marker_attrs`, :func:`knee_unstable_attrs`, :func:`knee_within_noise_attrs`,
:func:`knee_earliest_attrs`, :func:`loo_range_attrs`, :func:`offset_p_attrs`,
:func:`offset_p_holm_attrs`): here, not
in :mod:`critperiods.variables`, whose every change reruns the stages that write the
cube's other variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from critperiods.results.end_fit import EndFit
from critperiods.results.fits import (
    at_least_and_within,
    change_epochs_without_each_seed,
    divergence_drop_epoch,
    jackknife_interval,
    switch_spacing_at,
)
from critperiods.results.knee import (
    SeedJackknife,
    bends_beyond_noise,
    knee_resolution,
    knee_with_interval,
    knees_without_each_seed,
    offset_floor,
    paired_offset,
    paired_offset_p,
    profile_knee_interval,
)
from critperiods.results.selection import divergence_at_horizon, divergence_to_blurred
from critperiods.variables import interval_attrs

__all__ = ["LLC_KNEES", "LLC_MARKERS", "LOO_RANGE_KIND", "MARKER_OFFSETS", "MARKER_STATISTICS",
           "NET_LLC_KNEES", "NET_MARKER_STATISTICS", "UNSTABLE_REASON", "KNEE_FLAGS", "DropFit",
           "KneeFit", "WITHIN_NOISE_REASON", "drop_fit", "drop_values", "knee_earliest_attrs",
           "knee_fit", "knee_flags", "knee_unstable_attrs", "knee_values",
           "knee_within_noise_attrs", "offset_p_attrs", "offset_p_holm_attrs", "loo_range_attrs",
           "marker_attrs", "marker_interval_kind", "marker_spread"]

#: The λ̂ markers, each with ``<name>_loo_range``: how far it moves without one seed.
LLC_MARKERS = ("llc_change_epoch_trunk", "llc_change_epoch_sharp")
LOO_RANGE_KIND = ("lowest and highest value, with all seeds and with each seed left out in "
                  "turn (a spread, not a confidence interval)")


#: The knees of λ̂ net of the chains' descent (``llc_mean − llc_descent``), along the
#: blurred trunk and along the never-blurred run, each with its offset from the end: markers
#: of their own, in a run that measured the descent (``llc.descent``) and only there.
NET_LLC_KNEES = (("llc_net_knee_trunk", "llc_net_knee_minus_end_trunk"),
                 ("llc_net_knee_sharp", "llc_net_knee_minus_end_sharp"))
#: Does a marker mark the end? Each marker with its offset from the end
#: (:func:`~critperiods.results.knee.paired_offset`), per (batch_size, lr_schedule), in the
#: order the verdicts say them: the λ̂ knee along the blurred trunk and along the
#: never-blurred run (:func:`~critperiods.results.knee.knee_with_interval`), the same knees
#: of λ̂ net of the descent (:data:`NET_LLC_KNEES`, absent from a run without it), and the
#: divergence drop. Every marker and offset has ``<name>_interval``. Their metadata is here
#: (:func:`marker_attrs`).
MARKER_OFFSETS = (("llc_knee_trunk", "llc_knee_minus_end_trunk"),
                  ("llc_knee_sharp", "llc_knee_minus_end_sharp"),
                  *NET_LLC_KNEES,
                  ("divergence_drop_epoch", "divergence_drop_minus_end"))
#: Every λ̂ knee, raw and net of the descent.
LLC_KNEES = MARKER_OFFSETS[:4]
#: The variables this module adds for the markers in every run (``divergence_drop_epoch``
#: itself is a :data:`~critperiods.variables.SUMMARY_STATISTICS` one; its interval is added
#: here).
MARKER_STATISTICS = ("llc_knee_trunk", "llc_knee_minus_end_trunk", "llc_knee_sharp",
                     "llc_knee_minus_end_sharp", "divergence_drop_minus_end")
#: The variables it adds in a run that measured the descent (:data:`NET_LLC_KNEES`).
NET_MARKER_STATISTICS = tuple(name for pair in NET_LLC_KNEES for name in pair)
#: ``<knee>_unstable`` (a 0/1 flag per knee of :data:`LLC_KNEES`): with some seed left out,
#: the knee sits at an edge of the range a knee can take (the second or the second-to-last
#: λ̂ epoch), or there is none. The bend may then lie outside the epochs λ̂ was measured
#: at, or λ̂ bends too little to place it; the interval says more than the value.
UNSTABLE_REASON = ("with some seed left out, the knee sits at an edge of its range or is "
                   "gone: the bend may lie outside the epochs with λ̂, or λ̂ bends too little "
                   "to place it; read the interval, not the value")
#: ``<knee>_within_noise`` (a 0/1 flag per knee of :data:`LLC_KNEES`): 1 where the seed-mean
#: curve does not bend beyond its noise (:func:`~critperiods.results.knee.bends_beyond_noise`
#: false); 0 where it does, and where there is no knee or no test (one seed with λ̂). A
#: least-squares knee finds some bend in any noisy line; a flagged one is no evidence of a
#: change.
WITHIN_NOISE_REASON = ("the seed-mean λ̂ bends no more than its noise lets a straight line "
                       "seem to (the broken stick's gain over a line, tested at the "
                       "intervals' level against straight lines simulated on the same "
                       "epochs and seeds): the knee is the best of near-equal fits, not "
                       "evidence that λ̂ changes there")
#: The flags of a knee, each with the words the table, the verdicts and the report use.
KNEE_FLAGS = (("unstable", "unstable"), ("within_noise", "within-noise"))
_MARKER_LONG_NAMES = {
    "llc_knee_trunk": "knee of valid lambda-hat along the blurred trunk (continuous broken-stick "
                      "fit to the seed mean), in epochs",
    "llc_knee_sharp": "knee of valid lambda-hat of the never-blurred run (continuous "
                      "broken-stick fit to the seed mean), in epochs",
    "llc_knee_minus_end_trunk": "llc_knee_trunk minus critical_period_end, in epochs (NaN where "
                                "the end is not located)",
    "llc_knee_minus_end_sharp": "llc_knee_sharp minus critical_period_end, in epochs (NaN where "
                                "the end is not located)",
    "divergence_drop_minus_end": "divergence_drop_epoch minus critical_period_end, in epochs "
                                 "(NaN where the end is not located)",
    "llc_net_knee_trunk": "knee of valid lambda-hat net of the chains' descent (llc_mean - "
                          "llc_descent) along the blurred trunk (continuous broken-stick fit "
                          "to the seed mean), in epochs",
    "llc_net_knee_sharp": "knee of valid lambda-hat net of the chains' descent (llc_mean - "
                          "llc_descent) of the never-blurred run (continuous broken-stick fit "
                          "to the seed mean), in epochs",
    "llc_net_knee_minus_end_trunk": "llc_net_knee_trunk minus critical_period_end, in epochs "
                                    "(NaN where the end is not located)",
    "llc_net_knee_minus_end_sharp": "llc_net_knee_sharp minus critical_period_end, in epochs "
                                    "(NaN where the end is not located)",
}
_MARKER_INTERVAL_KINDS = {
    "knee": "{level} jackknife-t over seeds (leave one seed out), joined with the mean "
            "curve's profile interval (the knees an F test on its noise cannot tell from "
            "the best); at least ± half the lambda-hat epoch spacing, within the range a "
            "knee can take: the second to the second-to-last epoch with valid lambda-hat",
    "drop": "{level} jackknife-t over seeds (leave one seed out; at least ± half the switch "
            "spacing, within the switch epochs with a distance at the horizon: all of them "
            "where leaving some seed out leaves no drop)",
    "offset": "{level} paired jackknife-t over seeds (each seed left out of the marker and the "
              "end together; at least the end's and the marker's resolutions added in "
              "quadrature: for the end and a knee the larger of half their grid's spacing "
              "and the far side of their profile interval, for the divergence drop half the "
              "switch spacing; within what the marker and the end can give)",
}


def marker_interval_kind(name: str, level: float) -> str:
    """What the interval of the marker or offset ``name`` (:data:`MARKER_OFFSETS`) is."""
    kind = ("offset" if "_minus_end" in name else "drop" if name.startswith("divergence")
            else "knee")
    return _MARKER_INTERVAL_KINDS[kind].format(level=f"{level:.0%}")


def knee_earliest_attrs(knee: str) -> dict:
    """Attributes of ``<knee>_earliest``: the earliest epoch the knee can take."""
    return {"long_name": f"earliest epoch {knee} can take: the second epoch with valid "
                         "lambda-hat (where it is later than the end, the knee cannot come "
                         "before the end)", "units": "1"}


def knee_unstable_attrs(knee: str) -> dict:
    """Attributes of the flag ``<knee>_unstable`` (CF: 0 stable, 1 unstable)."""
    return {"long_name": f"whether {knee} is unstable: {UNSTABLE_REASON}", "units": "1",
            "flag_values": np.asarray([0, 1], dtype=np.int8),
            "flag_meanings": "stable unstable"}


def knee_within_noise_attrs(knee: str) -> dict:
    """Attributes of the flag ``<knee>_within_noise`` (CF: 0 bends beyond its noise, or
    untested: no knee, or one seed; 1 within noise)."""
    return {"long_name": f"whether {knee} is within noise: {WITHIN_NOISE_REASON} (0: it bends "
                         "beyond its noise, or there is no knee, or one seed gives no test)",
            "units": "1", "flag_values": np.asarray([0, 1], dtype=np.int8),
            "flag_meanings": "bends_beyond_noise_or_untested within_noise"}


def knee_flags(row: dict, knee: str) -> list[str]:
    """The words of the flags (:data:`KNEE_FLAGS`) raised for ``knee`` in a table ``row``:
    ``["unstable"]``, ``["within-noise"]``, both, or none (an empty flag, NaN or None,
    where there is no knee, is not raised)."""
    return [word for flag, word in KNEE_FLAGS
            if (value := row.get(f"{knee}_{flag}")) is not None and value == value and value]


def marker_attrs(name: str, level: float | None = None) -> dict:
    """Attributes of a :data:`MARKER_STATISTICS` variable, or (with ``level``) of the
    ``<name>_interval`` of any marker or offset of :data:`MARKER_OFFSETS`."""
    if level is None:
        return {"long_name": _MARKER_LONG_NAMES[name], "units": "1"}
    return interval_attrs(name, marker_interval_kind(name, level))


def offset_p_attrs(offset: str) -> dict:
    """Attributes of ``<offset>_p``: the offset interval's test of 0 as a p-value
    (:func:`~critperiods.results.knee.paired_offset_p`)."""
    return {"long_name": f"p-value of {offset}_interval as a test that {offset} is 0: the "
                         "smallest 1 - level at which the interval, floor and range included, "
                         "excludes 0 (1 where the offset is within the floor)", "units": "1"}


def offset_p_holm_attrs(offset: str, tests: int) -> dict:
    """Attributes of ``<offset>_p_holm``: ``<offset>_p`` after Holm's correction for the
    ``tests`` offsets with a p-value in the run
    (:func:`~critperiods.results.multiple_testing.holm_adjusted`)."""
    return {"long_name": f"{offset}_p adjusted by Holm's step-down method over the {tests} "
                         "marker offsets with a p-value in this run (all markers, batch sizes "
                         "and schedules): an offset is told from 0 at family-wise level alpha "
                         "where this is below alpha", "units": "1", "tests": np.int32(tests)}


def loo_range_attrs(name: str) -> dict:
    """Attributes of ``<name>_loo_range`` (here, not in :mod:`critperiods.variables`, whose
    every change reruns the stages that write the cube's other variables)."""
    return {"long_name": f"{name}: {LOO_RANGE_KIND}", "units": "1"}


def marker_spread(curve_by_seed: xr.DataArray, marker: float) -> tuple[float, float, str | None]:
    """The λ̂ marker's lowest and highest value, with all seeds (``marker``) and with each
    seed left out in turn (:func:`change_epochs_without_each_seed`; an arg-max can leave the
    all-seed value outside the others' range), and why they are NaN where the marker is not:
    one seed, or a seed without which no marker is left."""
    if not np.isfinite(marker):
        return float("nan"), float("nan"), None
    if "seed" not in curve_by_seed.dims or curve_by_seed.sizes["seed"] < 2:
        return float("nan"), float("nan"), "one seed: nothing to leave out"
    values = curve_by_seed.transpose("epoch", "seed")
    present = np.isfinite(values.values).any(axis=0)
    if present.sum() < 2:
        return float("nan"), float("nan"), "one seed has valid λ̂: nothing to leave out"
    markers = change_epochs_without_each_seed(values["epoch"].values, values.values)
    gone = [str(s) for s, m, p in zip(values["seed"].values, markers, present, strict=True)
            if p and not np.isfinite(m)]
    if gone:
        return float("nan"), float("nan"), (f"without seed {', '.join(gone)} no marker is "
                                             "left (too few valid points, or a straight line)")
    return float(min(marker, np.nanmin(markers))), float(max(marker, np.nanmax(markers))), None


@dataclass(frozen=True)
class DropFit:
    """The divergence drop's interval and its offset from the end (:func:`drop_fit`)."""

    interval: tuple[float, float]  #: ``(lower, upper)``, NaN without a drop
    offset: tuple[float, float, float]  #: drop − end, NaN without a drop or a located end
    #: the drop and the end refitted without each seed, and the offset's floor at any level
    #: (None without a drop or a located end)
    pair: tuple[SeedJackknife, SeedJackknife, Callable[[float], float]] | None = None

    def offset_p(self) -> float:
        """The offset interval's test of 0 as a p-value (:func:`paired_offset_p`; NaN
        without an offset)."""
        return float("nan") if self.pair is None else paired_offset_p(*self.pair)


def drop_fit(switch_epochs: np.ndarray, measured: np.ndarray, drop: float,
             without_each_seed: np.ndarray, present: np.ndarray, level: float, end: EndFit
             ) -> DropFit:
    """The divergence drop's interval and its offset from the ``end``, from the drop of the
    seed mean (``drop``), the drop refitted ``without_each_seed`` and the seeds ``present``
    (with a distance at all): a jackknife-t interval, at least ± half the spacing of the
    switch epochs with a distance at the horizon (``measured``) and within them; the offset
    by :func:`paired_offset` (its p-value: :meth:`DropFit.offset_p`), NaN unless the end is
    located. NaN throughout without a drop."""
    nan2, nan3 = (float("nan"),) * 2, (float("nan"),) * 3
    measured = np.asarray(measured, dtype=float)
    if not np.isfinite(drop) or measured.size == 0:
        return DropFit(nan2, nan3)
    present = np.asarray(present, dtype=bool)
    half = switch_spacing_at(measured, drop) / 2
    bounds = (float(measured.min()), float(measured.max()))
    lower, upper = at_least_and_within(
        drop, *jackknife_interval(drop, np.asarray(without_each_seed)[present], level), half,
        bounds)
    if not end.located:
        return DropFit((lower, upper), nan3)
    jackknife = SeedJackknife(drop, without_each_seed, present, bounds)
    return DropFit((lower, upper),
                   paired_offset(jackknife, end.jackknife, level,
                                 min_half_width=offset_floor(half, end.resolution)),
                   (jackknife, end.jackknife,
                    lambda at: offset_floor(half, end.resolution_at(at))))


def drop_values(cube: xr.Dataset, batch_size: float, lr_schedule: str, horizon: float,
                level: float, drop: float, end: EndFit) -> DropFit:
    """:func:`drop_fit` of one cell of a cube: the drop of the distance to the always-blurred
    run at the ``horizon`` (``drop``, :func:`~critperiods.results.fits.divergence_drop_epoch`
    of its seed mean), refitted without each seed that has a distance."""
    nan2, nan3 = (float("nan"),) * 2, (float("nan"),) * 3
    div = divergence_to_blurred(cube, batch_size, lr_schedule)
    if div is None or not np.isfinite(drop) or "seed" not in div.dims:
        return DropFit(nan2, nan3)
    switches = cube["switch_epoch"].values.astype(float)
    at_horizon = divergence_at_horizon(cube, batch_size, horizon, lr_schedule)
    seeds = div["seed"].values
    present = np.isfinite(div).any(dim=[d for d in div.dims if d != "seed"]).values
    loo = np.full(seeds.size, np.nan)
    for i in np.flatnonzero(present) if present.sum() > 1 else []:  # one seed: none left
        loo[i] = divergence_drop_epoch(switches, divergence_at_horizon(
            cube, batch_size, horizon, lr_schedule, without_seed=seeds[i]))
    return drop_fit(switches, switches[np.isfinite(at_horizon)], drop, loo, present, level, end)


@dataclass(frozen=True)
class KneeFit:
    """A λ̂ curve's knee and its offset from the end (:func:`knee_fit`)."""

    knee: tuple[float, float, float]  #: ``(value, lower, upper)``, NaN without a knee
    offset: tuple[float, float, float]  #: knee − end, NaN without a knee or a located end
    unstable: int  #: 1 where, with some seed left out, the knee sits at an edge or is gone
    within_noise: int  #: 1 where the curve bends no more than its noise lets a line seem to
    #: (0 also where one seed gives no test)
    earliest: float  #: the earliest epoch a knee can take (NaN without a knee)
    jackknife: SeedJackknife | None  #: the knee refitted without each seed (None without one)
    resolution: float  #: the knee's resolution (NaN without a knee)
    #: the knee and the end refitted without each seed, and the offset's floor at any level
    #: (None without a knee or a located end)
    pair: tuple[SeedJackknife, SeedJackknife, Callable[[float], float]] | None = None

    def offset_p(self) -> float:
        """The offset interval's test of 0 as a p-value (:func:`paired_offset_p`; NaN
        without an offset)."""
        return float("nan") if self.pair is None else paired_offset_p(*self.pair)


def knee_fit(epochs: np.ndarray, llc_by_seed: np.ndarray, level: float, end: EndFit
             ) -> KneeFit:
    """The knee of a λ̂ curve laid out ``(epoch, seed)`` (NaN where λ̂ is flagged or absent;
    :func:`knee_with_interval`), whether it is unstable, whether the curve bends within its
    noise (:func:`bends_beyond_noise` false), the earliest epoch it can take, and
    its offset from the ``end`` (:func:`paired_offset`, at least the two resolutions added in
    quadrature; its p-value: :meth:`KneeFit.offset_p`), NaN unless the end is located."""
    nan3 = (float("nan"),) * 3
    epochs = np.asarray(epochs, dtype=float)
    matrix = np.asarray(llc_by_seed, dtype=float).reshape(epochs.size, -1)
    loo = knees_without_each_seed(epochs, matrix)
    profile = profile_knee_interval(epochs, matrix, level)  # the knee's interval and floor
    knee = knee_with_interval(epochs, matrix, level, loo, profile)
    if not np.isfinite(knee[0]):
        return KneeFit(knee, nan3, 0, 0, float("nan"), None, float("nan"))
    within_noise = int(bends_beyond_noise(epochs, matrix, level) is False)
    present = np.isfinite(matrix).any(axis=0)
    x = np.sort(epochs[np.isfinite(matrix).any(axis=1)])
    unstable = int(np.isin(loo[present], [x[1], x[-2]]).any()
                   or (present.sum() > 1 and not np.isfinite(loo[present]).all()))
    jackknife = SeedJackknife(knee[0], loo, present, (x[1], x[-2]))
    half = knee_resolution(epochs, matrix, knee[0], level, profile)
    if not end.located:
        return KneeFit(knee, nan3, unstable, within_noise, float(x[1]), jackknife, half)

    def floor_at(at: float) -> float:  # the profile intervals, hence the floor, widen with it
        return offset_floor(knee_resolution(epochs, matrix, knee[0], at), end.resolution_at(at))

    return KneeFit(knee, paired_offset(jackknife, end.jackknife, level,
                                       min_half_width=offset_floor(half, end.resolution)),
                   unstable, within_noise, float(x[1]), jackknife, half,
                   (jackknife, end.jackknife, floor_at))


def knee_values(curve_by_seed: xr.DataArray, level: float, end: EndFit) -> KneeFit:
    """:func:`knee_fit` of a cube's λ̂ curve (dims ``epoch`` and ``seed``); NaN throughout
    without both dims."""
    nan3 = (float("nan"),) * 3
    if "seed" not in curve_by_seed.dims or "epoch" not in curve_by_seed.dims:
        return KneeFit(nan3, nan3, 0, 0, float("nan"), None, float("nan"))
    values = curve_by_seed.transpose("epoch", "seed")
    return knee_fit(values["epoch"].values, values.values, level, end)
