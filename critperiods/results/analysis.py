"""Statistics that turn the results cube into critical-period estimates.

The critical period is read off the *permanent deficit curve*: the final sharp test accuracy
as a function of the switch epoch ``s`` (blurred inputs for epochs ``< s``, sharp afterwards).
Early switches cost nothing; once ``s`` passes the end of the critical period the final
accuracy declines.  We summarise that curve with

* a continuous hinge fit (flat, then linear decline) whose kink ``k`` is the end of the
  critical period, with a seed-bootstrap percentile interval;
* a model-free "half-deficit" epoch;
* where the local learning coefficient (LLC, ``llc_mean``) changes slope most, along the
  blurred trunk and along the sharp-from-the-start run;
* when the weight distance to the blurred continuation (``div_l2``, ``reference="blurred"``)
  at a fixed horizon after the switch drops below half of its early value;
* the permanent deficit of the latest switch, per learning-rate schedule: the deficit
  "survives the restart" when it stays above 0 with the rate reset at the switch;
* power-law exponents of the critical-period end versus temperature (``lr / batch_size``)
  and versus batch size.

Numerical cores take plain numpy arrays so they can be tested in isolation;
:func:`critical_period_summary` is the xarray wrapper that the pipeline calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from critperiods.variables import SUMMARY_STATISTICS, exponent_attrs, interval_attrs
from critperiods.variables import attrs as variable_attrs

__all__ = [
    "CHANCE_MULTIPLE",
    "MIN_SEEDS_FOR_INTERVAL",
    "HingeFit",
    "bootstrap_hinge",
    "critical_period_summary",
    "default_horizon",
    "deficit_bootstrap",
    "divergence_at_horizon",
    "divergence_drop_epoch",
    "fit_hinge",
    "fit_power_law",
    "format_table",
    "half_deficit_epoch",
    "largest_change_epoch",
    "llc_flag_counts",
    "llc_sharp",
    "llc_trunk",
    "restart_verdicts",
    "runs_at_chance",
    "summary_table",
    "to_csv",
    "valid_llc",
]

_TINY = 1e-300


# --------------------------------------------------------------------------------------
# small array helpers
# --------------------------------------------------------------------------------------


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """NaN-ignoring mean that returns NaN (without a RuntimeWarning) for all-NaN slices."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _sorted_finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` restricted to pairs where both are finite, sorted by ``x``.

    The model-free estimators all walk along a curve in increasing ``x``; dropping missing
    points first lets them interpolate across holes instead of propagating NaN.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order]


def _first_crossing(x: np.ndarray, exceed: np.ndarray, y: np.ndarray, target: float) -> float:
    """Linearly interpolated ``x`` where ``y`` first reaches ``target``.

    ``exceed`` flags the points that are at/over the target (in whichever direction the
    caller cares about); the crossing is interpolated between the first flagged point and its
    predecessor.  Returns NaN if no point is flagged.
    """
    hits = np.flatnonzero(exceed)
    if hits.size == 0:
        return float("nan")
    i = int(hits[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    if y1 == y0:
        return float(x1)
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


# --------------------------------------------------------------------------------------
# hinge fit
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HingeFit:
    """Least-squares hinge ``acc(s) = level + slope * max(s - kink, 0)`` with ``slope <= 0``.

    ``kink`` is the estimated end of the critical period (epochs), ``level`` the accuracy
    before it, ``slope`` the accuracy lost per epoch of further delay, ``sse`` the residual
    sum of squares and ``n_points`` the number of finite observations pooled.
    """

    kink: float
    level: float
    slope: float
    sse: float
    n_points: int

    @property
    def k(self) -> float:
        """Alias of :attr:`kink` (the notation used in the paper)."""
        return self.kink


def _hinge_core(
    s: np.ndarray, n: np.ndarray, y1: np.ndarray, y2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact continuous-kink hinge fit from per-switch sufficient statistics.

    ``s`` (G,) are the distinct switch epochs, ascending and shifted so that ``s[0] == 0``;
    ``n``, ``y1``, ``y2`` (B, G) are the count, sum and sum of squares of the (centred)
    accuracies at each switch for B independent datasets (B > 1 for the bootstrap).

    Why it is exact: for a kink strictly inside a gap ``(s_j, s_j+1)`` the points split into a
    fixed left set (fitted by the level ``a``) and a fixed right set (fitted by a line
    ``c + b s``); continuity only ties them via ``k = (a - c) / b``.  The optimum inside the gap
    is therefore either the unconstrained pair (left mean, right OLS line) if its implied kink
    lies in the gap with ``b < 0``, or else it sits at a gap end ``k = s_j`` where the model is
    linear in ``(a, b)`` and is solved in closed form (``b`` clipped at 0).  Scanning all gaps
    and all grid points gives the global least-squares solution without a numerical search,
    vectorised over B.

    Returns ``(kink, level, slope, sse)``, each of shape (B,), still in shifted/centred units.
    """
    x1, x2, xy = n * s, n * s**2, y1 * s
    cum = np.cumsum(np.stack([n, y1, y2, x1, x2, xy]), axis=-1)
    tot = cum[..., -1:]
    n_l, y_l, yy_l = cum[0], cum[1], cum[2]
    n_r, y_r, yy_r, x_r, xx_r, xy_r = tot - cum  # groups strictly right of index j
    big_n, big_y, big_yy = tot[0], tot[1], tot[2]

    with np.errstate(invalid="ignore", divide="ignore"):
        # candidates 1: kink at a grid point s_j (model linear in a, b)
        k_end = np.broadcast_to(s, n.shape)
        xx = xx_r - 2 * k_end * x_r + n_r * k_end**2
        xs = x_r - n_r * k_end
        xys = xy_r - k_end * y_r
        den = big_n * xx - xs**2
        ok = den > 1e-12 * np.maximum(big_n * xx, _TINY)
        b_end = np.minimum(np.where(ok, (big_n * xys - xs * big_y) / np.where(ok, den, 1.0), 0), 0)
        a_end = (big_y - b_end * xs) / big_n
        sse_end = (
            big_yy
            - 2 * a_end * big_y
            - 2 * b_end * xys
            + big_n * a_end**2
            + 2 * a_end * b_end * xs
            + b_end**2 * xx
        )
        # a clipped (b == 0) fit is the flat model, reported with the kink at max s
        k_end = np.where(b_end < 0, k_end, s[-1])

        # candidates 2: kink strictly inside a gap (unconstrained left mean + right OLS line)
        sl = np.s_[..., :-1]
        a_in = y_l[sl] / n_l[sl]
        den_r = n_r[sl] * xx_r[sl] - x_r[sl] ** 2
        b_in = (n_r[sl] * xy_r[sl] - x_r[sl] * y_r[sl]) / den_r
        c_in = (y_r[sl] - b_in * x_r[sl]) / n_r[sl]
        k_in = (a_in - c_in) / b_in
        ok_in = (
            (n_l[sl] > 0)
            & (den_r > 1e-12 * np.maximum(n_r[sl] * xx_r[sl], _TINY))
            & (b_in < 0)
            & (k_in > s[:-1])
            & (k_in < s[1:])
        )
        sse_in = (yy_l[sl] - 2 * a_in * y_l[sl] + n_l[sl] * a_in**2) + (
            yy_r[sl]
            - 2 * c_in * y_r[sl]
            - 2 * b_in * xy_r[sl]
            + n_r[sl] * c_in**2
            + 2 * c_in * b_in * x_r[sl]
            + b_in**2 * xx_r[sl]
        )
        sse_in = np.where(ok_in, sse_in, np.inf)

    # flat model (last grid point) first so that argmin prefers it on exact ties
    order = np.r_[n.shape[-1] - 1, np.arange(n.shape[-1] - 1)]
    ks = np.concatenate([k_end[..., order], k_in], axis=-1)
    a_all = np.concatenate([a_end[..., order], a_in], axis=-1)
    b_all = np.concatenate([b_end[..., order], b_in], axis=-1)
    sse_all = np.concatenate([sse_end[..., order], sse_in], axis=-1)
    sse_all = np.where(np.isfinite(sse_all), sse_all, np.inf)
    best = np.argmin(sse_all, axis=-1)
    pick = np.take_along_axis
    kink, level, slope, sse = (
        pick(v, best[:, None], axis=-1)[:, 0] for v in (ks, a_all, b_all, sse_all)
    )
    # a decline must beat the flat model by more than round-off to be reported
    flat_sse = sse_all[:, 0]
    tol = 1e-9 * flat_sse + 1e-24 * big_n[:, 0]
    flat = (sse > flat_sse - tol) | (slope >= 0)
    kink = np.where(flat, s[-1], kink)
    level = np.where(flat, a_all[:, 0], level)
    slope = np.where(flat, 0.0, slope)
    sse = np.where(flat, flat_sse, sse)
    empty = big_n[:, 0] == 0
    nan = np.nan
    return (
        np.where(empty, nan, kink),
        np.where(empty, nan, level),
        np.where(empty, nan, slope),
        np.where(empty, nan, sse),
    )


def _prepare_hinge(
    switch_epochs: np.ndarray, accuracy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Group a (switch × seed) accuracy matrix into per-(switch value, seed) statistics.

    Returns ``(s, n, y1, y2, s0, mu)``: ``s`` (G,) distinct switch epochs with at least one
    finite accuracy, shifted by ``s0``; ``n``, ``y1``, ``y2`` (G, seeds) counts, sums and sums
    of squares of accuracies centred by their overall mean ``mu``.  Centring keeps the
    sum-of-squares formulas in :func:`_hinge_core` free of cancellation.
    """
    s_raw = np.asarray(switch_epochs, dtype=float).ravel()
    acc = np.asarray(accuracy, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    if acc.ndim != 2 or acc.shape[0] != s_raw.size:
        raise ValueError(
            f"accuracy must be (switch_epoch,) or (switch_epoch, seed) with {s_raw.size} rows, "
            f"got shape {acc.shape}"
        )
    finite = np.isfinite(acc) & np.isfinite(s_raw)[:, None]
    mu = float(acc[finite].mean()) if finite.any() else 0.0
    rows = finite.any(axis=1)
    s_vals, inverse = np.unique(s_raw[rows], return_inverse=True)
    onehot = np.zeros((s_vals.size, int(rows.sum())))
    onehot[inverse, np.arange(inverse.size)] = 1.0
    yc = np.where(finite, acc - mu, 0.0)[rows]
    n = onehot @ finite[rows].astype(float)
    s0 = float(s_vals[0]) if s_vals.size else 0.0
    return s_vals - s0, n, onehot @ yc, onehot @ yc**2, s0, mu


def fit_hinge(switch_epochs: np.ndarray, accuracy: np.ndarray) -> HingeFit:
    """Least-squares hinge fit of final accuracy against switch epoch.

    Model: ``acc(s) = a`` for ``s <= k`` and ``a + b (s - k)`` for ``s > k`` with ``b <= 0`` and
    ``k`` continuous in ``[min s, max s]``.  ``accuracy`` is 1-D (one value per switch epoch) or
    2-D (switch_epoch × seed); every finite value is pooled, NaNs (missing runs) are ignored, and
    switch epochs with no finite value do not bound ``k``.  The solution is exact (see
    :func:`_hinge_core`), not a grid search.

    If the data show no decline (the best ``b`` is ``>= 0`` for every kink, or a decline does
    not reduce the residual at all) the fit is the flat line and the kink is reported as the
    largest switch epoch with slope 0: the critical period has not ended within the tested
    range.  With no finite data every field is NaN.
    """
    s, n, y1, y2, s0, mu = _prepare_hinge(switch_epochs, accuracy)
    if s.size == 0:
        return HingeFit(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    k, a, b, sse = _hinge_core(s, n.sum(1)[None], y1.sum(1)[None], y2.sum(1)[None])
    return HingeFit(float(k[0] + s0), float(a[0] + mu), float(b[0]), float(sse[0]), int(n.sum()))


def bootstrap_hinge(
    switch_epochs: np.ndarray,
    accuracy_by_seed: np.ndarray,
    n_boot: int = 1000,
    rng_seed: int = 0,
    level: float = 0.90,
) -> tuple[float, float, float, float]:
    """Hinge kink with a seed-bootstrap percentile interval.

    Seeds (columns of the switch_epoch × seed matrix) are resampled with replacement, because
    a seed is the independent unit: all its switch runs share initialisation and data order.
    Each resample is refitted exactly (vectorised), and the interval is the central ``level``
    percentile range of the resampled kinks.  Deterministic for a given ``rng_seed``.  With a
    single seed (1-D input) the interval collapses to the point estimate.

    Returns ``(k_hat, lower, upper, slope)`` where ``k_hat`` and ``slope`` come from the fit
    to all data.
    """
    fit = fit_hinge(switch_epochs, accuracy_by_seed)
    if not np.isfinite(fit.kink):
        return (float("nan"),) * 4
    s, n, y1, y2, s0, _ = _prepare_hinge(switch_epochs, accuracy_by_seed)
    n_seed = n.shape[1]
    rng = np.random.default_rng(rng_seed)
    picks = rng.integers(0, n_seed, size=(int(n_boot), n_seed))
    weights = np.zeros((int(n_boot), n_seed))
    np.add.at(weights, (np.arange(int(n_boot))[:, None], picks), 1.0)
    k_boot, *_ = _hinge_core(s, weights @ n.T, weights @ y1.T, weights @ y2.T)
    k_boot = k_boot[np.isfinite(k_boot)] + s0
    if k_boot.size == 0:
        return fit.kink, float("nan"), float("nan"), fit.slope
    tail = 50.0 * (1.0 - level)
    lower, upper = np.percentile(k_boot, [tail, 100.0 - tail])
    return fit.kink, float(lower), float(upper), fit.slope


# --------------------------------------------------------------------------------------
# model-free estimators
# --------------------------------------------------------------------------------------


def half_deficit_epoch(switch_epochs: np.ndarray, mean_accuracy: np.ndarray) -> float:
    """First switch epoch at which the permanent deficit reaches half its final size.

    The deficit at ``s`` is ``acc(s_min) - acc(s)`` (``s_min`` is normally 0, the sharp-only
    run); its final size is the deficit at the largest switch epoch.  The crossing of half the
    final deficit is linearly interpolated between switch epochs.  This needs no model, so it
    cross-checks the hinge kink (for an exact hinge it equals ``(k + s_max) / 2``).  NaN if the
    final deficit is not positive or fewer than two finite points exist.
    """
    s, acc = _sorted_finite(switch_epochs, mean_accuracy)
    if s.size < 2:
        return float("nan")
    deficit = acc[0] - acc
    final = deficit[-1]
    if not final > 0:
        return float("nan")
    target = 0.5 * final
    return _first_crossing(s, deficit >= target, deficit, target)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (``sigma`` in samples) with point-reflected padding.

    Point reflection (``2 v[0] - v[i]``) continues linear trends through the ends, so a
    straight line stays straight and the edges do not fake a slope change.
    """
    if sigma <= 0 or values.size < 3:
        return values.copy()
    half = min(max(1, int(np.ceil(3.0 * sigma))), values.size - 1)
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    left = 2 * values[0] - values[1 : half + 1][::-1]
    right = 2 * values[-1] - values[-half - 1 : -1][::-1]
    padded = np.concatenate([left, values, right])
    return np.convolve(padded, kernel, mode="valid")


def largest_change_epoch(epochs: np.ndarray, values: np.ndarray, smooth: float = 1.0) -> float:
    """Epoch at which the slope of ``values`` versus epoch changes most.

    Used for "where does λ̂ change regime": the LLC typically rises and then flattens (or the
    reverse), i.e. a slope break.  Procedure: drop non-finite points, sort by epoch, smooth with
    a Gaussian of standard deviation ``smooth`` *samples* (0 disables smoothing; ends are
    point-reflected so linear trends are preserved), compute the finite-difference slope on each
    interval (true epoch spacing, so non-uniform checkpoints are fine), and return the interior
    epoch where the slope changes most in magnitude (``|slope_after - slope_before|``).  The
    endpoints can never be returned.  NaN with fewer than 3 finite points.
    """
    x, v = _sorted_finite(epochs, values)
    if x.size < 3:
        return float("nan")
    v = _smooth(v, float(smooth))
    slopes = np.diff(v) / np.diff(x)
    change = np.abs(np.diff(slopes))
    if not np.any(np.isfinite(change)):
        return float("nan")
    return float(x[1 + int(np.nanargmax(change))])


def divergence_drop_epoch(switch_epochs: np.ndarray, div_at_horizon: np.ndarray) -> float:
    """First switch epoch at which the divergence falls below half of its early value.

    ``div_at_horizon[i]`` is the L2 distance between the switched run and the blurred
    continuation, ``h`` epochs after switch ``switch_epochs[i]`` (seed-averaged).  Early in
    training the switch sends the weights far from the blurred path; after the critical
    period the network barely moves.  The early value is the one at the smallest switch
    epoch, and the half-crossing is linearly interpolated.  NaN if it never drops below half,
    if the early value is not positive, or with fewer than two finite points.
    """
    s, div = _sorted_finite(switch_epochs, div_at_horizon)
    if s.size < 2 or not div[0] > 0:
        return float("nan")
    target = 0.5 * div[0]
    return _first_crossing(s, div < target, div, target)


# --------------------------------------------------------------------------------------
# power law
# --------------------------------------------------------------------------------------


def _loglog_slope(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """OLS ``ly = intercept + slope * lx``; NaN when ``lx`` has no spread."""
    dx = lx - lx.mean()
    sxx = float(dx @ dx)
    if sxx <= 1e-12 * max(float(lx @ lx), _TINY):
        return float("nan"), float("nan")
    slope = float(dx @ (ly - ly.mean())) / sxx
    return slope, float(ly.mean() - slope * lx.mean())


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 1000,
    rng_seed: int = 0,
    level: float = 0.90,
) -> tuple[float, float, float, float]:
    """Fit ``y = c * x**p`` by least squares in log-log space.

    Only pairs with finite, positive ``x`` and ``y`` are used.  The interval on ``p`` is a
    percentile bootstrap over the *points* (pairs resampled with replacement; resamples whose
    ``x`` values are all equal are discarded).  With few points (typically 3–5 batch sizes) the
    interval is crude and tends to be too narrow; it is a sanity band, not a test.

    Returns ``(exponent, prefactor, lower, upper)``; all NaN with fewer than 3 usable points.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    if lx.size < 3:
        return (float("nan"),) * 4
    p, log_c = _loglog_slope(lx, ly)
    if not np.isfinite(p):
        return (float("nan"),) * 4
    rng = np.random.default_rng(rng_seed)
    idx = rng.integers(0, lx.size, size=(int(n_boot), lx.size))
    boots = np.array([_loglog_slope(lx[i], ly[i])[0] for i in idx])
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return p, float(np.exp(log_c)), float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    lower, upper = np.percentile(boots, [tail, 100.0 - tail])
    return p, float(np.exp(log_c)), float(lower), float(upper)


def deficit_bootstrap(
    switch_epochs: np.ndarray,
    accuracy_by_seed: np.ndarray,
    n_boot: int = 1000,
    rng_seed: int = 0,
    level: float = 0.90,
) -> tuple[float, float, float]:
    """The permanent deficit of the latest switch, with a seed-bootstrap interval.

    Per seed, the final accuracy at the smallest switch epoch (normally 0, never blurred) minus
    that at the largest, paired because both runs share the seed's initialisation and data
    order; then the mean over seeds. Seeds are resampled with replacement for the central
    ``level`` percentile interval. Returns ``(deficit, lower, upper)``; NaN without a seed that
    has both ends, and an interval equal to the point with a single seed.
    """
    s = np.asarray(switch_epochs, dtype=float)
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(s.size, -1)
    rows = np.flatnonzero(np.isfinite(acc).any(axis=1) & np.isfinite(s))
    if rows.size < 2:
        return (float("nan"),) * 3
    first, last = rows[np.argmin(s[rows])], rows[np.argmax(s[rows])]
    diffs = acc[first] - acc[last]
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(rng_seed)
    boots = diffs[rng.integers(0, diffs.size, size=(int(n_boot), diffs.size))].mean(axis=1)
    tail = 50.0 * (1.0 - level)
    lower, upper = np.percentile(boots, [tail, 100.0 - tail])
    return float(diffs.mean()), float(lower), float(upper)


# --------------------------------------------------------------------------------------
# cube accessors
# --------------------------------------------------------------------------------------

#: Below this many seeds a seed-bootstrap interval is reported as a range, not a confidence
#: interval: resampling 2–4 seeds only shuffles the few values there are.
MIN_SEEDS_FOR_INTERVAL = 5
#: Points a slope change needs (:func:`largest_change_epoch`).
MIN_LLC_POINTS = 3


def _seed_mean(da: xr.DataArray) -> xr.DataArray:
    """Average over ``seed`` (if present) ignoring NaNs, without all-NaN warnings."""
    if "seed" not in da.dims:
        return da
    axis = da.get_axis_num("seed")
    dims = [d for d in da.dims if d != "seed"]
    coords = {d: da.coords[d] for d in dims if d in da.coords}
    return xr.DataArray(_nanmean(da.values, axis=axis), dims=dims, coords=coords)


def _shared(da: xr.DataArray) -> xr.DataArray:
    """One schedule's copy of values every schedule shares (the trunk, the never-blurred run)."""
    return da.isel(lr_schedule=0, drop=True) if "lr_schedule" in da.dims else da


def valid_llc(cube: xr.Dataset) -> xr.DataArray | None:
    """``llc_mean`` where its quality flag is ok, NaN where it is flagged; None without λ̂."""
    if "llc_mean" not in cube:
        return None
    llc = cube["llc_mean"]
    return llc.where(cube["llc_quality"] == 0) if "llc_quality" in cube else llc


def _empty() -> xr.DataArray:
    return xr.DataArray(np.array([]), dims=["epoch"], coords={"epoch": np.array([])})


def llc_trunk(cube: xr.Dataset, batch_size: float) -> xr.DataArray:
    """Valid λ̂ along the blurred trunk for one batch size (mean over seeds) vs epoch.

    Every run trains on blurred images until its switch, so the run with the largest switch
    epoch that has any λ̂ traces the longest trunk; its values at epochs ``<=`` that switch
    are returned. Flagged estimates are left out (:func:`valid_llc`).
    """
    llc = valid_llc(cube)
    if llc is None:
        return _empty()
    llc = _shared(llc.sel(batch_size=batch_size))
    has = np.isfinite(cube["llc_mean"].sel(batch_size=batch_size))
    has = _shared(has).any(dim=[d for d in llc.dims if d != "switch_epoch"])
    switches = llc["switch_epoch"].values[has.values]
    if switches.size == 0:
        return _empty()
    s_max = switches.max()
    trunk = _seed_mean(llc.sel(switch_epoch=s_max))
    return trunk.where(trunk["epoch"] <= s_max, drop=True)


def llc_sharp(cube: xr.Dataset, batch_size: float) -> xr.DataArray:
    """Valid λ̂ of the never-blurred run (``switch_epoch == 0``), mean over seeds, vs epoch.

    Empty if there is no λ̂ or no switch epoch 0.
    """
    llc = valid_llc(cube)
    if llc is None or 0 not in cube["switch_epoch"].values:
        return _empty()
    return _seed_mean(_shared(llc.sel(batch_size=batch_size, switch_epoch=0)))


def default_horizon(cube: xr.Dataset) -> float:
    """Default horizon for the divergence read-out: the first checkpoint after a switch.

    Among positive offsets ``epoch - switch_epoch`` at which the divergence from the
    always-blurred run (``div_l2``, ``reference = "blurred"``) is finite (any batch size,
    schedule or seed), return the smallest offset that is available for the largest number of
    switch epochs, so that the read-out covers as many switches as possible. NaN if the
    divergence is absent or never finite after a switch.
    """
    if "div_l2" not in cube:
        return float("nan")
    div = cube["div_l2"].sel(reference="blurred")
    mask = np.isfinite(div).any(dim=[d for d in div.dims if d not in ("switch_epoch", "epoch")])
    mask = mask.transpose("switch_epoch", "epoch").values
    switches = cube["switch_epoch"].values.astype(float)
    epochs = cube["epoch"].values.astype(float)
    offsets = epochs[None, :] - switches[:, None]
    valid = mask & (offsets > 0)
    if not valid.any():
        return float("nan")
    candidates = np.unique(offsets[valid])
    counts = [int((valid & np.isclose(offsets, h)).any(axis=1).sum()) for h in candidates]
    return float(candidates[int(np.argmax(counts))])


def divergence_at_horizon(cube: xr.Dataset, batch_size: float, horizon: float,
                          lr_schedule: str | None = None) -> np.ndarray:
    """Seed-averaged distance to the always-blurred run at ``epoch = switch + horizon``, one
    value per switch epoch (for ``lr_schedule``, default the first).

    Switches whose ``switch + horizon`` is not a checkpoint give NaN; all NaN if the variable
    is absent or the horizon is not finite.
    """
    switches = cube["switch_epoch"].values.astype(float)
    out = np.full(switches.size, np.nan)
    if "div_l2" not in cube or not np.isfinite(horizon):
        return out
    div = cube["div_l2"].sel(batch_size=batch_size, reference="blurred")
    if "lr_schedule" in div.dims:
        div = (div.sel(lr_schedule=lr_schedule) if lr_schedule is not None
               else div.isel(lr_schedule=0))
    div = _seed_mean(div).transpose("switch_epoch", "epoch")
    epochs = cube["epoch"].values.astype(float)
    for i, s in enumerate(switches):
        col = np.flatnonzero(np.isclose(epochs, s + horizon))
        if col.size:
            out[i] = float(div.values[i, col[0]])
    return out


# --------------------------------------------------------------------------------------
# summary dataset
# --------------------------------------------------------------------------------------

#: Per (batch_size, lr_schedule) statistics (their metadata: critperiods.variables).
_PER_CELL = SUMMARY_STATISTICS
_INTERVALS = ("critical_period_end", "permanent_deficit")


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
    acc = cube["final_test_accuracy"].sel(batch_size=batch_size)
    if "lr_schedule" in acc.dims:
        acc = acc.sel(lr_schedule=lr_schedule)
    acc = acc.transpose("switch_epoch", ...).values.reshape(switches.size, -1)
    k, lower, upper, slope = bootstrap_hinge(switches, acc, n_boot, rng_seed, level)
    deficit, d_lo, d_hi = deficit_bootstrap(switches, acc, n_boot, rng_seed, level)
    trunk, sharp = llc_trunk(cube, batch_size), llc_sharp(cube, batch_size)
    div = divergence_at_horizon(cube, batch_size, horizon, lr_schedule)
    values = {
        "critical_period_end": k, "critical_period_end_lower": lower,
        "critical_period_end_upper": upper, "critical_period_slope": slope,
        "permanent_deficit": deficit, "permanent_deficit_lower": d_lo,
        "permanent_deficit_upper": d_hi,
        "half_deficit_epoch": half_deficit_epoch(switches, _nanmean(acc, axis=1)),
        "llc_change_epoch_trunk": largest_change_epoch(trunk["epoch"].values, trunk.values),
        "llc_change_epoch_sharp": largest_change_epoch(sharp["epoch"].values, sharp.values),
        "divergence_drop_epoch": divergence_drop_epoch(switches, div),
    }
    reasons = {
        "critical_period_end": "no finite final accuracy",
        "permanent_deficit": "no seed with both the earliest and the latest switch",
        "half_deficit_epoch": "the latest switch costs no accuracy (no positive deficit)",
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
    horizon``; ``horizon`` defaults to :func:`default_horizon`). Per ``lr_schedule``:
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
    for name in _PER_CELL:
        missing = "; ".join(f"batch {b}, {r}: {cells[(b, r)][1][name]}"
                            for b in batch_sizes for r in schedules if name in cells[(b, r)][1])
        data[name] = xr.DataArray(grid(name), dims=dims, attrs={
            **variable_attrs(name), **({"missing": missing} if missing else {})})
    seeds = int(cube.sizes.get("seed", 1))
    kind = (f"{level:.0%} seed-bootstrap interval" if seeds >= MIN_SEEDS_FOR_INTERVAL else
            f"range of the seed bootstrap over only {seeds} seed(s): not a confidence interval")
    for name in _INTERVALS:
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


def restart_verdicts(summary: xr.Dataset) -> dict[float, str]:
    """Per batch size, whether the permanent deficit survives restarting the learning rate.

    Empty without a ``restart`` schedule. "survives" needs the restart deficit's interval
    above 0; the wording says when the interval rests on few seeds.
    """
    if "lr_schedule" not in summary.dims or "restart" not in summary["lr_schedule"].values:
        return {}
    few = "not a confidence interval" in summary.attrs.get("interval_kind", "")
    out = {}
    for b in summary["batch_size"].values:
        cell = summary.sel(batch_size=b, lr_schedule="restart")
        d = float(cell["permanent_deficit"])
        lo, hi = (float(v) for v in cell["permanent_deficit_interval"].values)
        if not np.isfinite(d):
            out[float(b)] = "unknown (no restart deficit)"
        elif lo > 0:
            out[float(b)] = (f"survives the restart: {100 * d:.1f} pp [{100 * lo:.1f}, "
                             f"{100 * hi:.1f}]" + (" (few seeds)" if few else ""))
        else:
            out[float(b)] = (f"does not survive the restart: {100 * d:.1f} pp [{100 * lo:.1f}, "
                             f"{100 * hi:.1f}] includes no loss" + (" (few seeds)" if few else ""))
    return out


#: A run whose final sharp test accuracy is below this multiple of chance (1 / classes) has
#: diverged rather than learned less: e.g. a restarted learning rate that blew it up.
CHANCE_MULTIPLE = 1.5


def runs_at_chance(cube: xr.Dataset, classes: int = 10) -> list[str]:
    """The runs whose final sharp test accuracy is at chance (below :data:`CHANCE_MULTIPLE`
    / ``classes``), one line each: "batch B, <schedule>, switch K, seed S".

    Such a run diverged; it is still in the means and fits, so ``summarize`` and the report
    name it. Every dataset here has 10 classes.
    """
    if "final_test_accuracy" not in cube:
        return []
    acc = cube["final_test_accuracy"]
    low = acc.where(acc < CHANCE_MULTIPLE / classes)
    hits = low.to_dataframe().dropna()
    out = []
    for index in hits.index:
        where = dict(zip(hits.index.names, index, strict=True))
        out.append(", ".join(
            f"{name.replace('_', ' ').replace('batch size', 'batch')} {where[name]:g}"
            if name != "lr_schedule" else str(where[name])
            for name in acc.dims))
    return out


def llc_flag_counts(cube: xr.Dataset) -> dict[str, int]:
    """Distinct λ̂ estimates of the cube, how many are ok and how many carry each flag.

    An estimate shared by several runs (a trunk checkpoint, the never-blurred run) counts once.
    """
    from critperiods.measure.llc.quality import count_flags

    if "llc_quality" not in cube:
        return {}
    quality = cube["llc_quality"]
    if "lr_schedule" in quality.dims:
        first = quality["lr_schedule"] == quality["lr_schedule"][0]
    else:
        first = xr.DataArray(True)
    k, e = quality["switch_epoch"], quality["epoch"]
    branch = (e > k) & ((k > 0) | first)
    trunk = (e <= k) & (k == k.max()) & first
    return count_flags(quality.where(branch | trunk).values)


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------

_GLOBAL = ("temperature_exponent", "batch_size_exponent")


def summary_table(summary: xr.Dataset) -> pd.DataFrame:
    """One row per (batch size, schedule): the statistics, each interval split into
    ``_lower``/``_upper``, and the schedule's exponents repeated on every row (so the CSV is
    self-contained)."""
    if "lr_schedule" not in summary.dims:
        summary = summary.expand_dims(lr_schedule=["continue"])
    rows = []
    for b in summary["batch_size"].values:
        for r in summary["lr_schedule"].values:
            cell = summary.sel(batch_size=b, lr_schedule=r)
            row: dict[str, object] = {"batch_size": b, "lr_schedule": str(r)}
            for name in _PER_CELL:
                row[name] = float(cell[name])
                if name in _INTERVALS:
                    lo, hi = cell[f"{name}_interval"].values
                    row[f"{name}_lower"], row[f"{name}_upper"] = float(lo), float(hi)
            for name in _GLOBAL:
                row[name] = float(cell[name])
                lo, hi = cell[f"{name}_interval"].values
                row[f"{name}_lower"], row[f"{name}_upper"] = float(lo), float(hi)
            rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: float) -> str:
    """Compact number for the terminal table ("nan" for missing)."""
    return "nan" if not np.isfinite(value) else f"{value:.4g}"


def _pp(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{100 * value:.1f}"


def format_table(summary: xr.Dataset) -> str:
    """Aligned plain-text table of the per-(batch, schedule) statistics, the exponents, what
    the intervals are, and why any value is NaN."""
    table = summary_table(summary)
    columns = {
        "batch": table["batch_size"].map(lambda v: f"{v:g}"),
        "lr": table["lr_schedule"],
        "cp_end": table["critical_period_end"].map(_fmt),
        "cp_interval": [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(
            table["critical_period_end_lower"], table["critical_period_end_upper"], strict=True)],
        "slope_pp/ep": table["critical_period_slope"].map(_pp),
        "deficit_pp": [f"{_pp(d)} [{_pp(lo)}, {_pp(hi)}]" for d, lo, hi in zip(
            table["permanent_deficit"], table["permanent_deficit_lower"],
            table["permanent_deficit_upper"], strict=True)],
        "half_def": table["half_deficit_epoch"].map(_fmt),
        "llc_trunk": table["llc_change_epoch_trunk"].map(_fmt),
        "llc_sharp": table["llc_change_epoch_sharp"].map(_fmt),
        "div_drop": table["divergence_drop_epoch"].map(_fmt),
    }
    widths = {k: max(len(k), *(len(str(v)) for v in col)) for k, col in columns.items()}
    lines = ["  ".join(k.rjust(widths[k]) for k in columns)]
    for i in range(len(table)):
        lines.append("  ".join(str(list(columns[k])[i]).rjust(widths[k]) for k in columns))
    lines.append(f"intervals: {summary.attrs.get('interval_kind', 'seed-bootstrap interval')}")
    schedules = (summary["lr_schedule"].values if "lr_schedule" in summary.dims
                 else ["continue"])
    for name in _GLOBAL:
        for r in schedules:
            var = summary[name].sel(lr_schedule=r) if "lr_schedule" in summary[name].dims \
                else summary[name]
            interval = summary[f"{name}_interval"]
            lo, hi = (interval.sel(lr_schedule=r) if "lr_schedule" in interval.dims
                      else interval).values
            lines.append(f"{name} ({r}): {_fmt(float(var))} [{_fmt(lo)}, {_fmt(hi)}]")
    missing = [f"  {name}: {summary[name].attrs['missing']}" for name in [*_PER_CELL, *_GLOBAL]
               if name in summary and "missing" in summary[name].attrs]
    if missing:
        lines += ["why some values are nan:", *missing]
    return "\n".join(lines)


def to_csv(summary: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`summary_table` to ``path`` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_table(summary).to_csv(path, index=False)
    return path
