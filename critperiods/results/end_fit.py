"""The critical period's end of one cell, as the summary reports it and as the markers'
offsets need it.

:func:`fit_end` takes one (batch size, lr schedule) cell's final accuracy laid out
``(switch_epoch, seed)`` and returns an :class:`EndFit`: the hinge's kink with its interval
(:func:`~critperiods.results.fits.hinge_end`), the permanent deficit that says whether the
end is located at all (:func:`end_located`), and what an offset from the end needs: the
kink refitted without each seed, within the switch epochs with runs
(:class:`~critperiods.results.knee.SeedJackknife`), and its resolution, at the run's level
and at any other (an offset's p-value needs the floor at every level). The summary
(:mod:`critperiods.results.summary`) and ``power``'s simulations
(:mod:`critperiods.results.power`) both call it, so that what ``power`` promises is what the
summary computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from critperiods.results.fits import (
    hinge_end,
    hinge_profile_interval,
    hinge_resolution,
    kinks_without_each_seed,
    permanent_deficit,
)
from critperiods.results.knee import SeedJackknife

__all__ = ["EndFit", "end_located", "fit_end"]


def end_located(deficit_lower: float) -> bool:
    """Whether a cell has a critical-period end to report: the lower bound of its permanent
    deficit's interval is above zero. Otherwise the hinge kink was fitted to a curve that
    need not decline at all and is noise: the exponents, the markers' offsets, the
    perturbation split, the table, the report and the figures leave it out (the CSV and the
    cube keep the fitted kink)."""
    return bool(deficit_lower > 0)


@dataclass(frozen=True)
class EndFit:
    """One cell's end (:func:`fit_end`)."""

    end: float  #: the hinge's kink (NaN without finite accuracy)
    lower: float  #: the end's interval: jackknife-t joined with the profile interval
    upper: float
    slope: float  #: the hinge's slope after the kink (pp per epoch)
    deficit: float  #: the permanent deficit of the latest switch (pp)
    deficit_lower: float  #: its Student-t interval over seeds
    deficit_upper: float
    deficit_seeds: int  #: the seeds with both the earliest and the latest switch
    jackknife: SeedJackknife  #: the end refitted without each seed, within the switches with runs
    resolution: float  #: the end's resolution (:func:`~critperiods.results.fits.resolution`)
    #: the end's resolution at any level: its profile interval is the level's (NaN without
    #: an end)
    resolution_at: Callable[[float], float]

    @property
    def located(self) -> bool:
        """Whether the end is reported (:func:`end_located`)."""
        return end_located(self.deficit_lower)


def fit_end(switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray, level: float = 0.90
            ) -> EndFit:
    """The end of the cell whose final accuracy is ``accuracy_by_seed`` (``(switch_epoch,
    seed)``, NaN for a run left out) on ``switch_epochs``, with ``level`` intervals. Each
    profile and refit is computed once."""
    switches = np.asarray(switch_epochs, dtype=float)
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(switches.size, -1)
    without_each_seed = kinks_without_each_seed(switches, acc)
    profile = hinge_profile_interval(switches, acc, level)
    end, lower, upper, slope = hinge_end(switches, acc, level, without_each_seed, profile)
    deficit, d_lo, d_hi, pairs = permanent_deficit(switches, acc, level)
    with_runs = switches[np.isfinite(acc).any(axis=1)]  # where the hinge can put the end
    bounds = ((float(with_runs.min()), float(with_runs.max())) if with_runs.size
              else (float("nan"),) * 2)
    jackknife = SeedJackknife(end, without_each_seed, np.isfinite(acc).any(axis=0), bounds)
    if not np.isfinite(end):
        return EndFit(end, lower, upper, slope, deficit, d_lo, d_hi, pairs, jackknife,
                      float("nan"), lambda _level: float("nan"))
    return EndFit(end, lower, upper, slope, deficit, d_lo, d_hi, pairs, jackknife,
                  hinge_resolution(switches, acc, end, level, profile),
                  functools.partial(hinge_resolution, switches, acc, end))
