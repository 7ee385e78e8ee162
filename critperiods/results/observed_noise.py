"""The noise and the effect sizes a finished run measured, in the terms of the power
simulation (:class:`critperiods.results.power.Scenario`), so that ``python -m critperiods
power --noise-from CUBE`` says what a grid can tell at *that* run's noise, not the default's.

Per batch size, on one schedule's runs (:func:`observed_noise`):

* **final accuracy**: each run's spread around the additive model ``switch + seed``
  (:func:`~critperiods.results.fits.additive_spread`: the seeds' own offsets taken out, as
  the end's fit ignores them), in pp; the **deficit slope** and the **end** are the hinge's
  (:func:`~critperiods.results.fits.hinge_end`), the end only where the run located it;
* **λ̂ along the trunk** (the valid estimates, :func:`~critperiods.results.selection.
  llc_trunk_by_seed`): each estimate's spread around ``epoch + seed``; the seeds' levels'
  spread (their offsets' s.d., less the part the estimates' own noise puts into them); and
  the slopes of the seed-mean curve's broken stick before and after its knee
  (:func:`broken_stick_slopes`), where it bends beyond its noise
  (:func:`~critperiods.results.knee.bends_beyond_noise`: a least-squares knee finds a bend
  in any noisy line, so a bend the noise could make is no effect size);
* **the distance to the always-blurred run at the horizon**: its spread around ``switch +
  seed`` on a log scale: the s.d. of a distance relative to its value, as the simulation
  draws it. Pooled over the switch epochs; in the default run most of it is at the earliest
  switch, where the seeds' distances differ most.

What cannot be estimated (one seed, too few λ̂ points, a straight λ̂ line, no divergence)
is NaN and named in :attr:`ObservedNoise.missing`; :meth:`ObservedNoise.scenario` keeps the
fallback's value there. Plain numpy in the estimators, xarray only in
:func:`observed_noise`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr

from critperiods.results.fits import additive_residuals, additive_spread, hinge_end
from critperiods.results.knee import bends_beyond_noise, fit_broken_stick
from critperiods.results.power import Scenario
from critperiods.results.selection import (
    at_horizon,
    default_horizon,
    divergence_to_blurred,
    llc_trunk_by_seed,
    seed_mean,
    valid_final_accuracy,
)

__all__ = ["ObservedNoise", "ResidualCorrelation", "broken_stick_slopes", "observed_noise",
           "residual_correlation"]

NAN = float("nan")


def broken_stick_slopes(epochs: np.ndarray, curve: np.ndarray) -> tuple[float, float, float]:
    """``(knee, slope before, slope after)`` of the least-squares continuous broken stick
    through a curve (:func:`~critperiods.results.knee.fit_broken_stick`); NaN where it has
    no knee."""
    x, y = np.asarray(epochs, dtype=float), np.asarray(curve, dtype=float)
    keep = np.isfinite(y)
    knee = fit_broken_stick(x[keep], y[keep])
    if not np.isfinite(knee):
        return NAN, NAN, NAN
    x, y = x[keep], y[keep]
    design = np.column_stack([np.ones(x.size), x, np.maximum(x - knee, 0.0)])
    (_, before, bend), *_ = np.linalg.lstsq(design, y, rcond=None)
    return knee, float(before), float(before + bend)


@dataclass(frozen=True)
class ObservedNoise:
    """What one batch size of a run measured, in :class:`Scenario`'s units (pp, epochs, λ̂);
    NaN where it could not be estimated, with the reason in ``missing``."""

    batch_size: int
    seeds: int
    accuracy_noise: float
    deficit_slope: float
    end: float  #: the hinge's end where the run located it (its deficit's interval > 0)
    llc_noise: float
    llc_seed_spread: float
    llc_slopes: tuple[float, float]
    divergence_noise: float
    missing: dict[str, str] = field(default_factory=dict)

    def scenario(self, fallback: Scenario) -> tuple[Scenario, list[str]]:
        """``fallback`` with every value this run measured put in, and the names of those
        it kept (the run could not estimate them)."""
        measured = {"accuracy_noise": self.accuracy_noise, "deficit_slope": self.deficit_slope,
                    "llc_noise": self.llc_noise, "llc_seed_spread": self.llc_seed_spread,
                    "llc_slopes": self.llc_slopes, "divergence_noise": self.divergence_noise}
        usable = {k: v for k, v in measured.items() if np.isfinite(v).all()}
        return replace(fallback, **usable), [k for k in measured if k not in usable]


def _accuracy(cube: xr.Dataset, batch_size: int, schedule: str | None
              ) -> tuple[np.ndarray, np.ndarray]:
    acc = valid_final_accuracy(cube).sel(batch_size=batch_size)
    if "lr_schedule" in acc.dims:
        acc = acc.sel(lr_schedule=schedule)
    switches = cube["switch_epoch"].values.astype(float)
    return switches, 100 * acc.transpose("switch_epoch", ...).values.reshape(switches.size, -1)


def _located_end(cube: xr.Dataset, batch_size: int, schedule: str | None, end: float
                 ) -> tuple[float, str | None]:
    """``end`` where the cube's deficit interval says the run located one, else NaN and
    why."""
    if "permanent_deficit_interval" not in cube:
        return NAN, ("the cube has no permanent_deficit_interval (aggregated before it was "
                     "recorded): no located end")
    lower = cube["permanent_deficit_interval"].sel(batch_size=batch_size, bound="lower")
    if "lr_schedule" in lower.dims:
        lower = lower.sel(lr_schedule=schedule)
    if float(lower) > 0 and np.isfinite(end):
        return end, None
    return NAN, "the run located no end (its deficit's interval reaches 0)"


def _divergence_noise(cube: xr.Dataset, batch_size: int, schedule: str | None) -> float:
    """The log-additive spread of the distance at the summary's horizon (NaN without it)."""
    div = divergence_to_blurred(cube, batch_size, schedule)
    horizon = default_horizon(cube)
    if div is None or not np.isfinite(horizon) or "seed" not in div.dims:
        return NAN
    at = at_horizon(cube, div.transpose("switch_epoch", "epoch", "seed").values, horizon)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(at > 0, np.log(at), np.nan)
    return additive_spread(logs).sd


def _schedule(cube: xr.Dataset, schedule: str | None) -> str | None:
    """``schedule``, or the one the noise is read on by default: ``continue`` where the cube
    has it, else its first (None for a cube without the dimension)."""
    if "lr_schedule" in cube.dims and schedule is None:
        schedules = [str(s) for s in cube["lr_schedule"].values]
        schedule = "continue" if "continue" in schedules else schedules[0]
    return schedule


@dataclass(frozen=True)
class ResidualCorrelation:
    """How far a seed's runs at different batch sizes err together
    (:func:`residual_correlation`)."""

    r: float  #: the mean over pairs of batch sizes of their residuals' correlation
    pairs: int  #: pairs of batch sizes with a correlation
    cells: int  #: the fewest (switch epoch, seed) cells a pair shared
    chance: float  #: the s.d. of ``r`` where the residuals are independent (about)


def residual_correlation(cube: xr.Dataset, schedule: str | None = None) -> ResidualCorrelation:
    """The correlation of final accuracy's residuals around ``switch + seed`` (the noise the
    end's fit sees; :func:`~critperiods.results.fits.additive_residuals`) between batch
    sizes, cell by cell (same switch epoch, same seed), averaged over the pairs of batch
    sizes, on ``schedule``'s runs (as :func:`observed_noise`). ``power``'s exponent
    simulation draws each batch size's runs independently (0), although a seed's runs share
    its initialisation and data order. ``chance`` is ``r``'s s.d. under independence, about
    ``1 / √(cells − seeds − switches + 1)`` (the residuals' degrees of freedom) for one pair,
    over √pairs. NaN with fewer than two batch sizes, or fewer than 3 degrees of freedom
    shared."""
    schedule = _schedule(cube, schedule)
    residuals = {int(b): additive_residuals(_accuracy(cube, int(b), schedule)[1])[0]
                 for b in cube["batch_size"].values}
    rs, cells, chance = [], [], []
    sizes = sorted(residuals)
    for i, a in enumerate(sizes):
        for b in sizes[i + 1:]:
            x, y = residuals[a].ravel(), residuals[b].ravel()
            both = np.isfinite(x) & np.isfinite(y)
            free = int(both.sum()) - sum(residuals[a].shape) + 1  # the additive fit's dof
            if free < 3 or np.std(x[both]) == 0 or np.std(y[both]) == 0:
                continue
            rs.append(float(np.corrcoef(x[both], y[both])[0, 1]))
            cells.append(int(both.sum()))
            chance.append(1 / np.sqrt(free))
    if not rs:
        return ResidualCorrelation(NAN, 0, 0, NAN)
    return ResidualCorrelation(float(np.mean(rs)), len(rs), min(cells),
                               float(np.mean(chance) / np.sqrt(len(rs))))


def observed_noise(cube: xr.Dataset, batch_size: int, schedule: str | None = None
                   ) -> ObservedNoise:
    """:class:`ObservedNoise` of ``batch_size`` in a critical-period cube, read on
    ``schedule``'s runs (default ``continue`` where the cube has it, else its first); the
    trunk's λ̂ is every schedule's."""
    schedule = _schedule(cube, schedule)
    missing: dict[str, str] = {}
    switches, acc = _accuracy(cube, batch_size, schedule)
    seeds = int(np.isfinite(acc).any(axis=0).sum())
    accuracy_noise = additive_spread(acc).sd
    end, *_, slope = hinge_end(switches, acc)
    deficit_slope = -slope if np.isfinite(slope) and slope < 0 else NAN
    if not np.isfinite(accuracy_noise):
        missing["accuracy_noise"] = "too few runs (one seed, or one switch epoch)"
    if not np.isfinite(deficit_slope):
        missing["deficit_slope"] = ("no final accuracy to fit" if not np.isfinite(slope)
                                    else "a later switch costs no accuracy in this run")
    located, why = _located_end(cube, batch_size, schedule, end)
    if why:
        missing["end"] = why

    trunk = llc_trunk_by_seed(cube, batch_size)
    llc_noise, spread, slopes = NAN, NAN, (NAN, NAN)
    if trunk.size == 0 or "seed" not in trunk.dims:
        for name in ("llc_noise", "llc_seed_spread", "llc_slopes"):
            missing[name] = ("no valid λ̂ along the trunk (λ̂ off, or every estimate "
                             "flagged)")
    else:
        by_seed = trunk.transpose("epoch", "seed").values
        llc_noise, offsets, _ = additive_spread(by_seed)
        points = int(np.isfinite(by_seed).any(axis=1).sum())
        present = np.isfinite(by_seed).any(axis=0)
        if np.isfinite(llc_noise) and present.sum() > 1:  # less the estimates' share
            var = np.var(offsets[present], ddof=1) - llc_noise ** 2 / points
            spread = float(np.sqrt(max(var, 0.0)))
        _, before, after = broken_stick_slopes(trunk["epoch"].values, seed_mean(trunk).values)
        level = float(cube.attrs.get("summary_level", 0.9))  # the run's interval level
        bends = bends_beyond_noise(trunk["epoch"].values, by_seed, level)
        slopes = (before, after) if bends else (NAN, NAN)
        if not np.isfinite(llc_noise):
            missing["llc_noise"] = missing["llc_seed_spread"] = (
                f"too few valid λ̂ estimates ({int(np.isfinite(by_seed).sum())} over "
                f"{points} epoch(s) and {int(present.sum())} seed(s): a spread around each "
                "epoch's mean and each seed's offset needs 2 of each and one value more than "
                "those fit)")
        if not np.isfinite(before):
            missing["llc_slopes"] = (f"the trunk's mean λ̂ has no knee ({points} valid epochs; "
                                     "a knee needs 4 and a bend)")
        elif not bends:
            missing["llc_slopes"] = (
                f"the trunk's mean λ̂ bends no more than its noise lets a straight line seem "
                f"to (rising {before:.2g}, then {after:.2g} per epoch; tested at "
                f"{level:.0%})")
    divergence_noise = _divergence_noise(cube, batch_size, schedule)
    if not np.isfinite(divergence_noise):
        missing["divergence_noise"] = "no distance at the horizon for two seeds"
    return ObservedNoise(int(batch_size), seeds, accuracy_noise, deficit_slope, located,
                         llc_noise, spread, slopes, divergence_noise, missing)
