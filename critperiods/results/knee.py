"""Where a curve bends, with an interval: the broken-stick knee, and its offset from the end.

"Does λ̂ mark the end of the critical period?" asks whether the epoch where λ̂ changes
regime coincides with the end read off the accuracy (:func:`critperiods.results.fits.hinge_end`).
The arg-max read-out (:func:`critperiods.results.fits.largest_change_epoch`) names the
largest wiggle and has no interval. Here:

* :func:`fit_broken_stick`: least-squares continuous two-segment line ``a + b x + c (x − k)₊``
  through a curve; where the curve bends clearly, its knee ``k`` moves continuously with
  the data, so a leave-one-seed-out jackknife applies to it (where it bends little, the fit
  can jump between two bends when a seed is left out);
* :func:`profile_knee_interval`: the knees whose fit the curve's noise cannot tell from
  the best one's (an F test), which is what bounds a weak bend;
* :func:`knee_with_interval`: the knee of the seed-adjusted mean curve, with the hull of
  its jackknife-t interval over seeds and its profile interval;
* :func:`paired_offset`: knee minus end, both refitted without the same seed, with a
  jackknife-t interval: the seeds are the independent unit of both, so the pair's errors
  share them; :func:`paired_offset_p` is that interval's test of 0, as a p-value.

Plain numpy in, floats out, NaN where there is too little to estimate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from critperiods.results.fits import (
    MIN_CHANGE_POINTS,
    PROFILE_STEPS,
    MeanCurve,
    _sorted_finite,
    at_least_and_within,
    jackknife_interval,
    jackknife_p_value,
    mean_curve,
    profile_interval,
    resolution,
    seed_adjusted_mean,
    switch_spacing_at,
    weighted_fits,
)

__all__ = ["SeedJackknife", "bends_beyond_noise", "fit_broken_stick", "knee_resolution",
           "knee_with_interval", "knees_without_each_seed", "offset_floor", "paired_offset",
           "paired_offset_p", "profile_knee_interval"]


def _line_sse(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``(intercept, slope, sse)`` of the OLS line through ``(x, y)`` (at least 2 distinct x)."""
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean())) / float(dx @ dx)
    intercept = float(y.mean() - slope * x.mean())
    r = y - intercept - slope * x
    return intercept, slope, float(r @ r)


def fit_broken_stick(x: np.ndarray, y: np.ndarray) -> float:
    """The knee ``k`` of the least-squares continuous broken stick ``a + b x + c (x − k)₊``.

    ``x`` are distinct (a curve: one value per epoch; a repeated ``x`` is a ValueError).
    Non-finite points are dropped; ``k`` ranges over ``[x₂, x₋₂]`` (the second to the
    second-to-last point), so that each segment rests on at least two points. The solution
    is exact (Hudson 1966): for each split of the points into a left and a right set, the
    two separate OLS lines meet at some ``k``; where that ``k`` lies between the split's
    points it is the optimum for the split, and otherwise the optimum sits at one of the
    points, where the model is linear in ``(a, b, c)``. All candidates are compared; exact
    ties go to the earliest knee.

    NaN with fewer than :data:`~critperiods.results.fits.MIN_CHANGE_POINTS` points, and for
    a straight line (a bend that does not lower the residual beyond round-off, relative to
    the curve's own spread, so that the answer does not depend on the units of ``y``).
    """
    x, y = _sorted_finite(x, y)
    if np.unique(x).size != x.size:
        raise ValueError(f"a curve has one value per x; x repeats: {x.tolist()}")
    if x.size < MIN_CHANGE_POINTS:
        return float("nan")
    scale = float(x[-1] - x[0])
    u = (x - x[0]) / scale  # conditioning: the knee is found in [0, 1] and mapped back
    yc = y - y.mean()
    n = u.size
    *_, line = _line_sse(u, yc)
    candidates: list[tuple[float, float]] = []
    for i in range(1, n - 1):  # knee at a point
        design = np.column_stack([np.ones(n), u, np.maximum(u - u[i], 0.0)])
        coef, *_ = np.linalg.lstsq(design, yc, rcond=None)
        r = yc - design @ coef
        candidates.append((float(r @ r), float(u[i])))
    for j in range(1, n - 2):  # knee between points j and j + 1: two separate lines meet
        a_l, b_l, sse_l = _line_sse(u[:j + 1], yc[:j + 1])
        a_r, b_r, sse_r = _line_sse(u[j + 1:], yc[j + 1:])
        if b_l != b_r:
            k = (a_r - a_l) / (b_l - b_r)
            if u[j] < k < u[j + 1]:
                candidates.append((sse_l + sse_r, float(k)))
    sse, knee = min(candidates, key=lambda c: (c[0], c[1]))
    if sse >= line - 1e-9 * line - 1e-12 * float(yc @ yc):  # a straight line: no knee
        return float("nan")
    near = np.abs(u - knee) <= 1e-9  # a knee within round-off of a point is at it
    return float(x[np.argmax(near)] if near.any() else x[0] + knee * scale)


def knees_without_each_seed(epochs: np.ndarray, values_by_seed: np.ndarray) -> np.ndarray:
    """:func:`fit_broken_stick` of the seed-adjusted mean of an ``(epoch, seed)`` array,
    refitted with each seed left out in turn: one value per seed column. NaN for a seed with
    no finite value (it is not part of the curve) and wherever the rest give no knee; all
    NaN with fewer than 2 seeds with data."""
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    out = np.full(values.shape[1], np.nan)
    present = np.flatnonzero(np.isfinite(values).any(axis=0))
    if present.size < 2:
        return out
    for i in present:
        out[i] = fit_broken_stick(epochs, seed_adjusted_mean(np.delete(values, i, axis=1)))
    return out


def _knee_and_curve(epochs: np.ndarray, values: np.ndarray) -> tuple[float, MeanCurve] | None:
    """The seed-adjusted mean curve of ``values`` (``(epoch, seed)``,
    :func:`~critperiods.results.fits.mean_curve`) and the knee of its broken stick (the knee
    :func:`knee_with_interval` reports); None where the curve has no noise estimate (one
    seed) or no knee."""
    curve = mean_curve(epochs, values)
    if curve is None:
        return None
    knee = fit_broken_stick(curve.x, curve.y)
    return (knee, curve) if np.isfinite(knee) else None


def _stick_designs(x: np.ndarray, knees: np.ndarray) -> np.ndarray:
    """The broken-stick designs ``(1, x − x̄, (x − k)₊)`` for each knee ``k``, ``(K, n, 3)``
    (x centred: the normal equations of :func:`~critperiods.results.fits.weighted_fits` stay
    exact)."""
    return np.stack(np.broadcast_arrays(
        1.0, x[None, :] - x.mean(), np.maximum(x[None, :] - knees[:, None], 0.0)), axis=-1)


def profile_knee_interval(epochs: np.ndarray, values_by_seed: np.ndarray, level: float = 0.90
                          ) -> tuple[float, float]:
    """The knees a broken stick through the seed-adjusted mean curve cannot tell from the
    best (:func:`~critperiods.results.fits.profile_interval`: an F test on the curve's
    noise), as ``(lower, upper)``, between the second and the second-to-last epoch with
    data. Where the bend is weak against the noise it spans much of the curve, which a
    jackknife over 3–5 seeds does not: a broken stick's knee jumps between bends as seeds
    are left out, and on simulated runs as noisy as the default experiment's its jackknife
    interval held the knee in only 81–89 % of runs at a nominal 90 % (docs/analysis.md).
    Noise-free values give the knee itself. NaN with fewer than 2 seeds or no knee.
    """
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    found = _knee_and_curve(epochs, values)
    if found is None:
        return float("nan"), float("nan")
    knee, curve = found
    x = curve.x
    knees = np.unique(np.concatenate([np.linspace(x[1], x[-2], PROFILE_STEPS + 1), x[1:-1],
                                      [knee]]))
    sse, _ = weighted_fits(_stick_designs(x, knees), curve.y, curve.weights)
    lower, upper = profile_interval(knees, sse, curve, level)
    return float(min(lower, knee)), float(max(upper, knee))


#: Straight lines simulated per design for :func:`bends_beyond_noise`'s critical value (the
#: level it achieves is then within about ± 1.5 points of the one asked for, at 10 %).
NULL_DRAWS = 500


def _bend_gain(epochs: np.ndarray, values: np.ndarray) -> tuple[float, float, float] | None:
    """``(gain, line, σ̂)``: how much the broken stick through the seed-adjusted mean curve
    (its knee fitted to the unweighted curve, as :func:`knee_with_interval` fits it) lowers
    the weighted residual sum of squares below a straight line's (``line``), and the noise
    of one value around ``epoch + seed``; None where either is undefined (no knee, one
    seed)."""
    found = _knee_and_curve(epochs, values)
    if found is None:
        return None
    knee, curve = found
    stick = _stick_designs(curve.x, np.array([knee]))
    (bent, line), _ = zip(*(weighted_fits(d, curve.y, curve.weights)
                            for d in (stick, stick[..., :2])), strict=True)
    return float(line[0] - bent[0]), float(line[0]), curve.spread.sd


@functools.lru_cache(maxsize=256)
def _null_quantile(epochs: tuple[float, ...], present: bytes, shape: tuple[int, int],
                   level: float) -> float:
    """The ``level`` quantile of ``gain / σ̂²`` (:func:`_bend_gain`) over :data:`NULL_DRAWS`
    straight lines with unit noise, measured where ``present`` (the design's mask of values
    with data) says; a fixed generator, so the same design gets the same value."""
    x = np.asarray(epochs, dtype=float)
    mask = np.frombuffer(present, dtype=bool).reshape(shape)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(NULL_DRAWS):
        got = _bend_gain(x, np.where(mask, rng.standard_normal(shape), np.nan))
        if got is not None and got[2] > 0:
            draws.append(got[0] / got[2] ** 2)
    return float(np.quantile(draws, level)) if draws else float("nan")


def bends_beyond_noise(epochs: np.ndarray, values_by_seed: np.ndarray, level: float = 0.90
                       ) -> bool | None:
    """Whether the seed-adjusted mean curve bends more than its noise lets a straight line
    seem to: the broken stick's fit beats the line's (:func:`_bend_gain`), per unit of the
    noise's variance, by more than it does on ``level`` of straight lines measured on the
    same epochs and seeds (:func:`_null_quantile`, simulated once per design). A
    least-squares knee always finds some bend: through 7 noisy points of a straight line its
    two slopes differ by about as much as its noise per epoch. An F test on 2 and ``ν``
    degrees of freedom would take the knee as given; since the knee is searched for, it
    would be liberal (about 13 % false bends at a nominal 10 %), and the simulated quantile
    is not. The statistic does not depend on the line, the seeds' levels or the noise's
    scale, so unit-noise lines are the null. None where it cannot be tested (no knee, one
    seed)."""
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    got = _bend_gain(np.asarray(epochs, dtype=float), values)
    if got is None:
        return None
    gain, line, sd = got
    if sd == 0:  # no noise: any bend beyond round-off
        return bool(gain > 1e-12 * max(line, 1e-300))
    present = np.isfinite(values)
    critical = _null_quantile(tuple(float(e) for e in epochs), present.tobytes(),
                              present.shape, float(level))
    return bool(gain / sd ** 2 > critical)


def knee_resolution(epochs: np.ndarray, values_by_seed: np.ndarray, knee: float,
                    level: float = 0.90, profile: tuple[float, float] | None = None
                    ) -> float:
    """:func:`~critperiods.results.fits.resolution` of a curve's ``knee`` on its epochs with
    data, with its ``profile`` interval (default: :func:`profile_knee_interval`, computed
    here). The knee's share of the floor of its offset from the end (:func:`offset_floor`)."""
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if profile is None:
        profile = profile_knee_interval(epochs, values, level)
    return resolution(np.asarray(epochs, dtype=float)[np.isfinite(values).any(axis=1)], knee,
                      profile)


def knee_with_interval(epochs: np.ndarray, values_by_seed: np.ndarray, level: float = 0.90,
                       without_each_seed: np.ndarray | None = None,
                       profile: tuple[float, float] | None = None
                       ) -> tuple[float, float, float]:
    """The knee of the seed-adjusted mean curve and its interval: the hull of the
    jackknife-t interval over seeds and the profile interval.

    ``values_by_seed`` is ``(epoch, seed)``, NaN where a value is missing or left out (a
    flagged λ̂). The interval spans :func:`~critperiods.results.fits.jackknife_interval` of
    :func:`knees_without_each_seed` (how the knee moves between seeds) and
    :func:`profile_knee_interval` (how weak the bend is against the curve's noise), widened
    to at least ± half the spacing of the curve's epochs at the knee (the sampling grid
    cannot place a bend more finely) and clipped to where a knee can be, the second to the
    second-to-last epoch with data (:func:`fit_broken_stick`): the whole of that where
    leaving some seed out leaves no knee. ``without_each_seed`` and ``profile``
    (:func:`profile_knee_interval`): where the caller already has them. Returns ``(knee,
    lower, upper)``; the interval is NaN with one seed.
    """
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    knee = fit_broken_stick(epochs, seed_adjusted_mean(values))
    if not np.isfinite(knee):
        return (float("nan"),) * 3
    loo = (knees_without_each_seed(epochs, values) if without_each_seed is None
           else np.asarray(without_each_seed, dtype=float))
    present = np.isfinite(values).any(axis=0)
    lower, upper = jackknife_interval(knee, loo[present], level)
    if profile is None:
        profile = profile_knee_interval(epochs, values, level)
    if np.isfinite(lower) and np.isfinite(profile[0]):
        lower, upper = min(lower, profile[0]), max(upper, profile[1])
    x = np.sort(np.asarray(epochs, dtype=float)[np.isfinite(values).any(axis=1)])
    return (knee, *at_least_and_within(knee, lower, upper, switch_spacing_at(x, knee) / 2,
                                       (float(x[1]), float(x[-2]))))


@dataclass(frozen=True)
class SeedJackknife:
    """A statistic over seeds, as the paired jackknife needs it: its ``value`` with all
    seeds, its value refitted ``without_each_seed`` (one per seed; NaN where leaving that
    seed out leaves no estimate), which seeds are ``present`` (have data at all), and the
    ``bounds`` the statistic can take at all (e.g. a knee: the second to the second-to-last
    epoch of its curve)."""

    value: float
    without_each_seed: np.ndarray
    present: np.ndarray
    bounds: tuple[float, float] = (-np.inf, np.inf)


def offset_floor(marker_half: float, end_half: float) -> float:
    """The least half-width of a marker's offset from the end: the two grids' resolutions
    (half the spacing of each at its value) added in quadrature, as independent errors. On
    simulated runs shaped like the default the offsets' intervals keep their nominal
    coverage with it (``bench/marker_coverage.py``, docs/analysis.md); the plain sum was
    conservative, 99 % at a nominal 90 % for the divergence drop."""
    return float(np.hypot(marker_half, end_half))


def _paired(knee: SeedJackknife, end: SeedJackknife
            ) -> tuple[float, np.ndarray | None, tuple[float, float]]:
    """``knee − end``, its leave-one-seed-out values over the seeds present in either (None
    with fewer than 2 such seeds; NaN offset: None too), and the range it can take."""
    offset = float(knee.value) - float(end.value)
    possible = (knee.bounds[0] - end.bounds[1], knee.bounds[1] - end.bounds[0])
    if not np.isfinite(offset):
        return offset, None, possible
    k_present, e_present = (np.asarray(p, dtype=bool) for p in (knee.present, end.present))
    if k_present.shape != e_present.shape:
        raise ValueError(f"one value per seed in both: {k_present.shape} and "
                         f"{e_present.shape}")
    units = k_present | e_present
    if units.sum() < 2:
        return offset, None, possible
    k_loo = np.where(k_present, knee.without_each_seed, knee.value)
    e_loo = np.where(e_present, end.without_each_seed, end.value)
    return offset, (k_loo - e_loo)[units], possible


def paired_offset(knee: SeedJackknife, end: SeedJackknife, level: float = 0.90,
                  min_half_width: float = 0.0) -> tuple[float, float, float]:
    """``knee − end`` with a paired leave-one-seed-out jackknife-t interval.

    Both statistics come from the same seeds (initialisation and data order), so their
    errors are not independent: leaving seed ``i`` out of both gives ``knee₋ᵢ − end₋ᵢ``,
    and the jackknife runs over the seeds present in either. Leaving out a seed that is
    absent from one of the two leaves that one unchanged. The interval is at least
    ± ``min_half_width`` (the grids' resolution, :func:`offset_floor`), and within what the
    two can give at all: from the
    knee's lowest bound minus the end's highest to the knee's highest minus the end's
    lowest (``bounds``). Returns ``(offset, lower, upper)``; the interval is NaN with fewer
    than 2 seeds, and all of that range where leaving a seed out leaves no knee or no end.
    """
    offset, loo, possible = _paired(knee, end)
    if not np.isfinite(offset):
        return (float("nan"),) * 3
    if loo is None:
        return offset, float("nan"), float("nan")
    lower, upper = jackknife_interval(offset, loo, level)
    return (offset, *at_least_and_within(offset, lower, upper, min_half_width, possible))


def paired_offset_p(knee: SeedJackknife, end: SeedJackknife,
                    floor_at: Callable[[float], float] | float = 0.0) -> float:
    """The p-value of :func:`paired_offset`'s interval as a test that the offset is 0: the
    smallest ``1 − level`` at which that interval, floor and range included, excludes 0.

    ``floor_at(level)`` is the interval's floor at that level (its ``min_half_width``: it
    widens with the level where it takes in profile intervals, :func:`offset_floor`), or one
    floor for every level. The interval at ``level`` excludes 0 exactly where the
    jackknife-t one does (``level < 1 − p_t``,
    :func:`~critperiods.results.fits.jackknife_p_value`) and the floor there is below
    ``|offset|``. So the p-value is:

    * 0 where 0 is outside the range the offset can take (every level's interval excludes
      it);
    * 1 where even the least floor, at level 0, reaches ``|offset|``;
    * otherwise the larger of ``p_t`` and ``1 −`` the level at which the floor reaches
      ``|offset|`` (found by bisection, to 1e-9).

    NaN where the interval is NaN (no offset, or fewer than 2 seeds). These are what
    :func:`~critperiods.results.multiple_testing.holm_adjusted` corrects for the number of
    offsets a run tests.
    """
    offset, loo, possible = _paired(knee, end)
    if loo is None:
        return float("nan")
    if not possible[0] <= 0 <= possible[1]:
        return 0.0

    def floor(level: float) -> float:  # a NaN floor widens nothing (at_least_and_within)
        value = float(floor_at(level) if callable(floor_at) else floor_at)
        return 0.0 if np.isnan(value) else value

    distance = abs(offset)
    if not floor(0.0) < distance:
        return 1.0
    p_t = jackknife_p_value(offset, loo)
    top = min(1.0 - p_t, 1.0 - 1e-12)  # the levels up to which the jackknife excludes 0
    if floor(top) < distance:
        return p_t
    low, high = 0.0, top  # floor(low) < distance <= floor(high)
    while high - low > 1e-9:
        middle = (low + high) / 2
        low, high = (middle, high) if floor(middle) < distance else (low, middle)
    return 1.0 - low
