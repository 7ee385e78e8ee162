"""Numerical cores of the critical-period statistics: plain numpy in, floats out.

The critical period is read off the *permanent deficit curve*: the final sharp test accuracy
as a function of the switch epoch ``s`` (blurred inputs for epochs ``< s``, sharp afterwards).
Early switches cost nothing; once ``s`` passes the end of the critical period the final
accuracy declines. This module fits and reads that curve, and the curves beside it:

* :func:`fit_hinge` / :func:`hinge_end`: a continuous hinge (flat, then linear decline)
  whose kink ``k`` is the end of the critical period, with a leave-one-seed-out jackknife
  interval (:func:`jackknife_interval`);
* :func:`permanent_deficit`: the permanent deficit of the latest switch, paired by seed,
  with a Student-t interval;
* model-free read-outs: :func:`half_deficit_epoch`, :func:`largest_change_epoch` (where a
  curve such as λ̂ changes slope most) and :func:`divergence_drop_epoch`;
* :func:`fit_power_law`: the exponent of the end against temperature or batch size, its
  interval a jackknife over the same seeds left out at every batch size.

Everything takes arrays, ignores NaN (a missing or left-out run) and returns NaN where there
is too little to estimate, so it is tested in isolation; :mod:`critperiods.results.summary`
feeds it from the cube.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["MIN_CHANGE_POINTS", "POWER_LAW_POINTS", "PROFILE_STEPS", "HingeFit", "Spread",
           "additive_residuals", "additive_spread", "at_least_and_within",
           "change_epochs_without_each_seed",
           "divergence_drop_epoch", "fit_hinge", "fit_power_law", "half_deficit_epoch", "hinge_end",
           "hinge_profile_interval", "hinge_resolution", "jackknife_interval", "jackknife_p_value",
           "kinks_without_each_seed", "largest_change_epoch", "MeanCurve", "mean_curve",
           "mean_t_interval",
           "nanmean", "permanent_deficit", "profile_interval", "resolution", "weighted_fits",
           "seed_adjusted_mean", "switch_spacing_at", "without_seed_offsets"]

_TINY = 1e-300
#: Finite points :func:`largest_change_epoch` needs: two interior epochs to choose between.
MIN_CHANGE_POINTS = 4


# --------------------------------------------------------------------------------------
# small array helpers
# --------------------------------------------------------------------------------------


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """NaN-ignoring mean that returns NaN (without a RuntimeWarning) for all-NaN slices."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _additive_fit(values: np.ndarray, iterations: int = 500
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(m, a)`` of the additive model ``y[c, s] = m[c] + a[s]`` (``Σ a = 0``) fitted by least
    squares (alternating means; a few sweeps) to the finite values of a ``(cells, seeds)``
    array: ``m`` per cell (NaN without a finite value), ``a`` per seed (0 for a seed with no
    value). Where no cell with data misses a seed that has data elsewhere, ``m`` is the plain
    mean, bit for bit, and ``a`` is None (nothing to adjust)."""
    y = np.asarray(values, dtype=float)
    finite = np.isfinite(y)
    plain = nanmean(y, axis=-1)
    seeds = finite.any(axis=0)
    rows = finite.any(axis=1)
    if (finite[rows][:, seeds]).all():
        return plain, None
    y, finite, mean = y[rows][:, seeds], finite[rows][:, seeds], plain[rows]
    offset = np.zeros(y.shape[1])
    for _ in range(iterations):
        offset_new = nanmean(np.where(finite, y - mean[:, None], np.nan), axis=0)
        offset_new -= offset_new.mean()
        mean = nanmean(np.where(finite, y - offset_new[None, :], np.nan), axis=1)
        if np.allclose(offset_new, offset, rtol=0, atol=1e-12 * (1 + np.abs(y[finite]).max())):
            break
        offset = offset_new
    out = np.full(plain.shape, np.nan)
    out[rows] = mean
    offsets = np.zeros(seeds.size)
    offsets[seeds] = offset_new
    return out, offsets


def seed_adjusted_mean(values: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Mean over seeds (the last axis) of a ``(cells, seeds)`` array with holes, adjusted
    for each seed's offset.

    A plain NaN-ignoring mean moves with the mix of seeds left at each cell: where a seed
    whose values run high is missing (a flagged λ̂, a run that diverged to chance), the mean
    dips, and a marker read off the curve can move with it. This fits the additive model
    ``y[c, s] = m[c] + a[s]`` (``Σ a = 0``) to the finite values by least squares and
    returns ``m``: each cell's mean as if every seed that has data anywhere were present.
    Where no cell with data misses such a seed, ``m`` is the plain mean, bit for bit. Cells
    without a finite value are NaN.
    """
    return _additive_fit(values, iterations)[0]


class Spread(NamedTuple):
    """A residual spread around the additive model (:func:`additive_spread`)."""

    sd: float  #: the residual s.d. (NaN with no degree of freedom left)
    offsets: np.ndarray  #: the seeds' offsets ``a`` (``Σ a = 0``; 0 for a seed with no value)
    dof: int  #: the residual degrees of freedom behind ``sd``


def additive_residuals(values_by_seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(residuals, offsets)`` of a ``(cells, seeds)`` array around the additive model
    ``m[cell] + a[seed]`` (:func:`_additive_fit`): the residuals laid out as the values (NaN
    where a value is) and the seeds' offsets ``a``."""
    y = np.asarray(values_by_seed, dtype=float)
    mean, offsets = _additive_fit(y)
    if offsets is None:  # nothing missing: the offsets are the seeds' mean residuals
        offsets = np.nan_to_num(nanmean(y - mean[:, None], axis=0))
    return y - mean[:, None] - offsets[None, :], offsets


def additive_spread(values_by_seed: np.ndarray) -> Spread:
    """The residual s.d. of a ``(cells, seeds)`` array around the additive model
    ``m[cell] + a[seed]`` (:func:`_additive_fit`, least squares over the finite values), the
    degrees of freedom the model used taken off: the noise of one value once each cell's
    mean and each seed's offset are out. NaN with fewer than 2 cells or 2 seeds with data."""
    residual, offsets = additive_residuals(values_by_seed)
    finite = np.isfinite(residual)
    cells, seeds = int(finite.any(axis=1).sum()), int(finite.any(axis=0).sum())
    dof = int(finite.sum()) - cells - seeds + 1
    if cells < 2 or seeds < 2 or dof < 1:
        return Spread(float("nan"), offsets, max(dof, 0))
    return Spread(float(np.sqrt(np.square(residual[finite]).sum() / dof)), offsets, dof)


#: Candidate values a profile interval tries across a parameter's range (besides the grid's
#: own points): a resolution far below any grid's spacing.
PROFILE_STEPS = 240


@dataclass(frozen=True)
class MeanCurve:
    """A ``(cell, seed)`` array's seed-adjusted mean curve (:func:`seed_adjusted_mean`), as
    a profile needs it: the cells with data in ascending ``x``, their mean ``y``, the number
    of seeds behind each (``weights``: a point's variance is ``σ² / weight``) and the noise
    of one value around ``cell + seed`` (``spread``, :func:`additive_spread`)."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    spread: Spread


def mean_curve(x: np.ndarray, values_by_seed: np.ndarray) -> MeanCurve | None:
    """:class:`MeanCurve` of ``values_by_seed`` at ``x``; None where its noise cannot be
    estimated (fewer than 2 seeds or 2 cells with data)."""
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    mean = seed_adjusted_mean(values)
    keep = np.isfinite(mean)
    spread = additive_spread(values[keep])
    if not np.isfinite(spread.sd):
        return None
    order = np.argsort(np.asarray(x, dtype=float)[keep])
    weights = np.isfinite(values[keep]).sum(axis=1).astype(float)
    return MeanCurve(np.asarray(x, dtype=float)[keep][order], mean[keep][order],
                     weights[order], spread)


def weighted_fits(designs: np.ndarray, y: np.ndarray, weights: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ``y`` on each of ``K`` designs ``(K, n, p)`` at once, by
    the normal equations: the weighted residual sums of squares ``(K,)`` and the
    coefficients ``(K, p)``. Column 0 of every design is the intercept (all ones), and the
    other columns should be of moderate size (centre them: the normal equations square
    their scale); a column of zeros gets coefficient 0."""
    w = np.asarray(weights, dtype=float)
    centre = float(np.average(y, weights=w))
    yc = np.asarray(y, dtype=float) - centre  # centred, for the normal equations' precision
    gram = np.einsum("kni,n,knj->kij", designs, w, designs)
    moment = np.einsum("kni,n,n->ki", designs, w, yc)
    coef = np.einsum("kij,kj->ki", np.linalg.pinv(gram), moment)
    residual = yc[None, :] - np.einsum("kni,ki->kn", designs, coef)
    coef[:, 0] += centre  # the first column is the intercept
    return np.einsum("kn,n,kn->k", residual, w, residual), coef


def profile_interval(candidates: np.ndarray, sse: np.ndarray, curve: MeanCurve,
                     level: float = 0.90) -> tuple[float, float]:
    """The hull of the ``candidates`` for a curve's change point whose fit to its mean
    ``curve`` (weighted residual sums of squares ``sse``, :func:`weighted_fits`) is worse
    than the best by less than an F test allows: ``(SSE(k) − SSE_min) / σ̂² ≤ F(level; 1,
    ν)``, with ``σ̂`` and ``ν`` the curve's ``spread``.

    This is the change point's profile-likelihood interval (Hinkley 1971, two-phase
    regression): wide where the change is weak against the noise, which a jackknife over
    3–5 seeds is not (the estimate jumps between near-equal fits as seeds are left out).
    Each point weighs by the seeds behind it, so a mean over fewer seeds counts less.
    Where the values carry no noise it is the best candidates."""
    candidates, sse = np.asarray(candidates, dtype=float), np.asarray(sse, dtype=float)
    excess = sse - np.min(sse)
    sd = curve.spread.sd
    if sd == 0:
        allowed = candidates[excess <= 1e-12 * max(float(np.min(sse)), _TINY)]
    else:
        allowed = candidates[excess / sd ** 2 <= stats.f.ppf(level, 1, curve.spread.dof)]
    return float(allowed.min()), float(allowed.max())


def without_seed_offsets(accuracy_by_seed: np.ndarray) -> np.ndarray:
    """A (switch_epoch × seed) accuracy matrix with each seed's offset (:func:`_additive_fit`)
    taken out where runs are missing, so that a pooled fit does not tilt at the switch
    where a seed that runs high or low has no run; the matrix itself where none is missing
    (with every run present the offsets leave a pooled hinge's kink unchanged)."""
    acc = np.asarray(accuracy_by_seed, dtype=float)
    if acc.ndim != 2:
        return acc
    _, offsets = _additive_fit(acc)
    return acc if offsets is None else acc - offsets[None, :]


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
    accuracies at each switch for B datasets (B > 1: the leave-one-seed-out refits).

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
    # a kink within round-off of a switch epoch is at it (e.g. exactly at the first switch,
    # where the exponents' log is undefined), whichever candidate found it
    near = np.abs(kink[:, None] - s[None, :]) <= 1e-9 * max(float(s[-1]), 1.0)
    kink = np.where(near.any(axis=-1), s[np.argmax(near, axis=-1)], kink)
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


def jackknife_interval(estimate: float, leave_one_out: np.ndarray, level: float = 0.90
                       ) -> tuple[float, float]:
    """Delete-one jackknife interval ``estimate ± t(level, n − 1) · se`` over ``n`` units.

    ``leave_one_out`` holds the statistic recomputed without each of the ``n`` independent
    units (here: seeds), ``se = sqrt((n − 1) / n · Σ (θ₍ᵢ₎ − θ̄)²)`` the jackknife standard
    error. Student's t on ``n − 1`` degrees of freedom, not the normal, because ``n`` is a
    handful of seeds. Returns ``(lower, upper)``: NaN with fewer than 2 units or a
    non-finite estimate; ``(-inf, inf)`` where a leave-one-out value is not finite (leaving
    some unit out makes the statistic undefined, so the data do not bound it).
    """
    n, se = _jackknife_se(leave_one_out)
    if n < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    if not np.isfinite(se):
        return float("-inf"), float("inf")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return float(estimate) - half, float(estimate) + half


def _jackknife_se(leave_one_out: np.ndarray) -> tuple[int, float]:
    """The number of units and the delete-one jackknife standard error over them (NaN with
    fewer than 2 units, inf where a leave-one-out value is not finite)."""
    theta = np.asarray(leave_one_out, dtype=float).ravel()
    n = theta.size
    if n < 2:
        return n, float("nan")
    if not np.isfinite(theta).all():
        return n, float("inf")
    return n, float(np.sqrt((n - 1) / n * np.sum((theta - theta.mean()) ** 2)))


def jackknife_p_value(estimate: float, leave_one_out: np.ndarray, null: float = 0.0
                      ) -> float:
    """The two-sided p-value of :func:`jackknife_interval`'s test that the statistic is
    ``null``: ``2 P(T > |estimate − null| / se)``, ``T`` Student's t on ``n − 1`` degrees of
    freedom. It is the smallest ``1 − level`` at which that interval excludes ``null``. NaN
    with fewer than 2 units or a non-finite estimate; 1 where a leave-one-out value is not
    finite (the interval is unbounded); 0 where ``se`` is 0 and the estimate is not ``null``.
    """
    n, se = _jackknife_se(leave_one_out)
    if n < 2 or not np.isfinite(estimate):
        return float("nan")
    if not np.isfinite(se):
        return 1.0
    distance = abs(float(estimate) - null)
    if se == 0:
        return 0.0 if distance > 0 else 1.0
    return float(2 * stats.t.sf(distance / se, n - 1))


def kinks_without_each_seed(switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray
                            ) -> np.ndarray:
    """The hinge's kink refitted with each seed left out, one value per seed column.

    Exact refits (vectorised through :func:`_hinge_core`; where runs are missing, one refit
    per seed, each on the other seeds with their own offsets taken out, as
    :func:`hinge_end` fits). A seed with no finite accuracy gets NaN: it is not part of this
    curve, so there is nothing to leave out.
    """
    acc = np.asarray(accuracy_by_seed, dtype=float)
    acc = acc[:, None] if acc.ndim == 1 else acc
    present = np.flatnonzero(np.isfinite(acc).any(axis=0))
    out = np.full(acc.shape[1], np.nan)
    if present.size < 2:  # leaving the only seed out leaves nothing to fit
        return out
    if _additive_fit(acc)[1] is not None:  # runs missing: each refit takes its own offsets
        for i in present:
            rest = acc.copy()
            rest[:, i] = np.nan
            out[i] = fit_hinge(switch_epochs, without_seed_offsets(rest)).kink
        return out
    s, n, y1, y2, s0, _ = _prepare_hinge(switch_epochs, acc)
    keep = 1.0 - np.eye(n.shape[1])[present]  # row i: every seed but present[i]
    kinks, *_ = _hinge_core(s, keep @ n.T, keep @ y1.T, keep @ y2.T)
    out[present] = kinks + s0
    return out


def switch_spacing_at(switch_epochs: np.ndarray, kink: float) -> float:
    """The switch grid's spacing at ``kink``: the gap between the switch epochs around it, or,
    at a switch epoch, the wider of the gaps beside it (0 for a single switch epoch). The
    grid cannot place an end more finely than about half of this."""
    s = np.unique(np.asarray(switch_epochs, dtype=float))
    i = int(np.searchsorted(s, kink))
    if i < s.size and s[i] == kink:
        return float(max(np.diff(s[max(i - 1, 0):i + 2]), default=0.0))
    return float(s[i] - s[i - 1]) if 0 < i < s.size else 0.0


def at_least_and_within(estimate: float, lower: float, upper: float, half_width: float,
                        bounds: tuple[float, float]) -> tuple[float, float]:
    """An interval ``(lower, upper)`` around ``estimate`` widened to at least
    ``estimate ± half_width`` (what its grid can resolve) and clipped to ``bounds`` (what the
    estimate can take at all); an unbounded side becomes the bound. NaN stays NaN: no
    interval (one seed)."""
    if np.isnan(lower) or np.isnan(upper):
        return float("nan"), float("nan")
    return (max(min(lower, estimate - half_width), bounds[0]),
            min(max(upper, estimate + half_width), bounds[1]))


def hinge_profile_interval(switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray,
                           level: float = 0.90, kink: float | None = None
                           ) -> tuple[float, float]:
    """The kinks a hinge through the seed-adjusted mean final accuracy cannot tell from the
    best (:func:`profile_interval`), within the switch epochs with runs; NaN with fewer
    than 2 seeds. A kink counts only with a decline after it (beyond round-off, as in
    :func:`fit_hinge`); the flat line counts as the last switch epoch, where the hinge puts
    the kink of a curve that has not declined. The interval holds ``kink`` (default: the
    hinge's own, :func:`hinge_end`'s), which the grid of candidates may miss."""
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(np.size(switch_epochs), -1)
    curve = mean_curve(switch_epochs, acc)
    if curve is None or curve.x.size < 3:
        return float("nan"), float("nan")
    if kink is None:
        kink = fit_hinge(switch_epochs, without_seed_offsets(acc)).kink
    x, y, w = curve.x, curve.y, curve.weights
    kinks = np.unique(np.concatenate([np.linspace(x[0], x[-1], PROFILE_STEPS + 1), x,
                                      np.clip([kink], x[0], x[-1])]))
    after = np.maximum(x[None, :] - kinks[:, None], 0.0)
    designs = np.stack([np.ones_like(after), after], axis=-1)
    sse, coef = weighted_fits(designs, y, w)
    flat = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
    declined = (coef[:, 1] < 0) & (sse < flat - 1e-9 * flat - 1e-24 * x.size)
    sse = np.where(declined, sse, np.inf)
    sse[-1] = flat  # the last kink is the flat model: "not ended by the last switch"
    lower, upper = profile_interval(kinks, sse, curve, level)
    return float(min(lower, kink)), float(max(upper, kink))


def resolution(points: np.ndarray, estimate: float, profile: tuple[float, float]) -> float:
    """How finely a change point ``estimate`` is placed: the larger of half the spacing of
    ``points`` (where the curve has data) at it, and the farther side of its ``profile``
    interval (:func:`profile_interval`; NaN: the grid alone). Its share of the floor of an
    offset between two markers (:func:`critperiods.results.knee.offset_floor`)."""
    half = switch_spacing_at(points, estimate) / 2
    lower, upper = profile
    return float(max(half, estimate - lower, upper - estimate)) if np.isfinite(lower) else half


def hinge_resolution(switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray, kink: float,
                     level: float = 0.90, profile: tuple[float, float] | None = None
                     ) -> float:
    """:func:`resolution` of the end ``kink`` on the switch epochs with runs, with its
    ``profile`` interval (default: :func:`hinge_profile_interval`, computed here)."""
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(np.size(switch_epochs), -1)
    if profile is None:
        profile = hinge_profile_interval(switch_epochs, acc, level, kink)
    return resolution(np.asarray(switch_epochs, dtype=float)[np.isfinite(acc).any(axis=1)],
                      kink, profile)


def hinge_switches(switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray) -> int:
    """How many switch epochs have a final accuracy: a hinge's kink needs 3 (through two
    points every kink between them fits exactly, so the end is not identified)."""
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(np.size(switch_epochs), -1)
    return int(np.isfinite(acc).any(axis=1).sum())


def hinge_end(
    switch_epochs: np.ndarray, accuracy_by_seed: np.ndarray, level: float = 0.90,
    without_each_seed: np.ndarray | None = None, profile: tuple[float, float] | None = None,
) -> tuple[float, float, float, float]:
    """Hinge kink (the critical period's end) with a leave-one-seed-out jackknife interval.

    The kink is fitted to all seeds pooled (:func:`fit_hinge`), each seed's offset taken out
    where some of its runs are missing (:func:`without_seed_offsets`). Its interval comes from
    refitting without each seed in turn (:func:`kinks_without_each_seed`), because a seed is
    the independent unit: all its switch runs share initialisation and data order. The
    interval spans :func:`jackknife_interval` over the seeds with data and the kink's
    profile interval (:func:`hinge_profile_interval`: where the deficit is weak against
    the noise, the jackknife alone held the true end in only 83–85 % of simulated sweeps at
    a nominal 90 %), widened to at least ± half the switch spacing at the kink
    (:func:`switch_spacing_at`) and clipped to the switch epochs that have data (the model
    places no kink outside them). With a single seed it is NaN.

    Why the widening: the kink often sits exactly on a switch epoch, and then every seed
    left out can leave it there, which gives an interval of width 0 that the grid cannot
    support (in a simulation of the default's grid, none of them held the true end). Why not a
    seed bootstrap: with 3–5 seeds a percentile bootstrap of the kink covers the true end
    far less often than its nominal level (``bench/interval_coverage.py`` measures both).

    ``without_each_seed``: :func:`kinks_without_each_seed` of the same data, where the
    caller already has it; ``profile``: :func:`hinge_profile_interval`, likewise. Returns
    ``(kink, lower, upper, slope)``, ``kink`` and ``slope``
    from the fit to all data.
    """
    fit = fit_hinge(switch_epochs, without_seed_offsets(accuracy_by_seed))
    if not np.isfinite(fit.kink) or hinge_switches(switch_epochs, accuracy_by_seed) < 3:
        return (float("nan"),) * 4  # two points: any kink between them fits them exactly
    loo = (kinks_without_each_seed(switch_epochs, accuracy_by_seed)
           if without_each_seed is None else np.asarray(without_each_seed, dtype=float))
    lower, upper = jackknife_interval(fit.kink, loo[np.isfinite(loo)], level)
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(np.size(switch_epochs), -1)
    if profile is None:
        profile = hinge_profile_interval(switch_epochs, acc, level, fit.kink)
    if np.isfinite(lower) and np.isfinite(profile[0]):
        lower, upper = min(lower, profile[0]), max(upper, profile[1])
    s = np.asarray(switch_epochs, dtype=float)[np.isfinite(acc).any(axis=1)]
    lower, upper = at_least_and_within(fit.kink, lower, upper, switch_spacing_at(s, fit.kink) / 2,
                                       (float(s.min()), float(s.max())))
    return fit.kink, lower, upper, fit.slope


# --------------------------------------------------------------------------------------
# model-free estimators
# --------------------------------------------------------------------------------------


def half_deficit_epoch(switch_epochs: np.ndarray, mean_accuracy: np.ndarray) -> float:
    """First switch epoch at which the permanent deficit reaches half its final size.

    The deficit at ``s`` is ``acc(s_min) - acc(s)`` (``s_min`` is normally 0, the sharp-only
    run); its final size is the deficit at the largest switch epoch.  The crossing of half the
    final deficit is linearly interpolated between switch epochs.  This needs no model, so it
    cross-checks the hinge kink (for an exact hinge it equals ``(k + s_max) / 2``).  NaN if the
    final deficit is not positive, or the earliest or latest switch epoch has no finite value
    (the deficit is theirs, as the permanent deficit's: not that of the switches left).
    """
    order = np.argsort(switch_epochs)
    if order.size < 2 or not np.isfinite(
            np.asarray(mean_accuracy, dtype=float)[order[[0, -1]]]).all():
        return float("nan")
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
    endpoints can never be returned, so it needs :data:`MIN_CHANGE_POINTS` finite points: with
    three there is one interior epoch, returned whatever the curve does.  NaN then, and for a
    straight line (no slope change beyond round-off).  It is a point read-out without an
    interval: on a noisy curve it names the largest wiggle.
    """
    x, v = _sorted_finite(epochs, values)
    if x.size < MIN_CHANGE_POINTS:
        return float("nan")
    v = _smooth(v, float(smooth))
    slopes = np.diff(v) / np.diff(x)
    change = np.abs(np.diff(slopes))
    if not np.any(np.isfinite(change)):
        return float("nan")
    if np.nanmax(change) <= 1e-9 * np.nanmax(np.abs(slopes)):
        return float("nan")
    return float(x[1 + int(np.nanargmax(change))])


def change_epochs_without_each_seed(epochs: np.ndarray, values_by_seed: np.ndarray,
                                   smooth: float = 1.0) -> np.ndarray:
    """:func:`largest_change_epoch` of the seed-adjusted mean curve
    (:func:`seed_adjusted_mean`) of an ``(epoch, seed)`` array, recomputed with each seed
    left out in turn: one value per seed column, NaN for a seed with no finite value (it is
    not part of the curve) and wherever the rest give no marker.

    A marker that names the largest wiggle of a noisy curve moves when one seed goes; how far
    it moves is the read-out's stability. It is a spread, not a confidence interval: the
    jackknife does not hold for an arg-max.
    """
    values = np.asarray(values_by_seed, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    out = np.full(values.shape[1], np.nan)
    present = np.flatnonzero(np.isfinite(values).any(axis=0))
    if present.size < 2:  # leaving the only seed out leaves no curve
        return out
    for i in present:
        rest = np.delete(values, i, axis=1)
        out[i] = largest_change_epoch(epochs, seed_adjusted_mean(rest), smooth)
    return out


def divergence_drop_epoch(switch_epochs: np.ndarray, div_at_horizon: np.ndarray) -> float:
    """First switch epoch at which the divergence falls below half of its early value.

    ``div_at_horizon[i]`` is the L2 distance between the switched run and the blurred
    continuation, ``h`` epochs after switch ``switch_epochs[i]`` (seed-averaged).  Early in
    training the switch sends the weights far from the blurred path; after the critical
    period the weights barely move (the function-space distances to the blurred run do not
    drop so: docs/divergence.md).  The early value is the one at the smallest switch
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


#: Points (batch sizes with a located end) a power law of the end is fitted to, at least.
POWER_LAW_POINTS = 3


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    y_without_each_seed: np.ndarray | None = None,
    level: float = 0.90,
    censored_at: float = 0.0,
) -> tuple[float, float, float, float]:
    """Fit ``y = c * x**p`` by least squares in log-log space, with a seed-jackknife interval.

    Pairs with finite, positive ``x`` and finite ``y`` above ``censored_at`` are fitted. A
    ``y`` at or below ``censored_at`` is *censored*: for an end, ``censored_at`` is the first
    switch epoch, and an end there means "at or before it", a value the fit cannot use.

    ``y_without_each_seed`` (seed × len(x)) holds each ``y`` recomputed with one seed left
    out, the same seed at every ``x`` (seed ``s`` gives every batch size the same
    initialisation and data order, so the points are not independent of each other). NaN
    there means the seed has no data at that ``x`` (leaving it out changes nothing). The
    interval is :func:`jackknife_interval` over the seeds with data at some fitted ``x``.
    It is ``(-inf, inf)`` where a ``y``, or a ``y`` with some seed left out, is censored:
    the data then do not say how steep the power law is. It carries the seeds' sampling
    error of the ``y``, not the power law's misfit: with 3–5 points the misfit is not
    measurable.

    Returns ``(exponent, prefactor, lower, upper)``; all NaN with fewer than 3 fitted points,
    the interval NaN without ``y_without_each_seed`` or with fewer than 2 seeds.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    floor = max(float(censored_at), 0.0)
    used = np.isfinite(x) & np.isfinite(y) & (x > 0)
    keep = used & (y > floor)
    lx = np.log(x[keep])
    if lx.size < POWER_LAW_POINTS:
        return (float("nan"),) * 4
    p, log_c = _loglog_slope(lx, np.log(y[keep]))
    if not np.isfinite(p):
        return (float("nan"),) * 4
    if y_without_each_seed is None:
        return p, float(np.exp(log_c)), float("nan"), float("nan")
    if (used & ~keep).any():  # a censored point: its true value could be anywhere below
        return p, float(np.exp(log_c)), float("-inf"), float("inf")
    loo = np.asarray(y_without_each_seed, dtype=float).reshape(-1, x.size)[:, keep]
    loo = loo[np.isfinite(loo).any(axis=1)]  # seeds with data at some used x
    loo = np.where(np.isfinite(loo), loo, y[keep])  # no data there: leaving out changes nothing
    slopes = [_loglog_slope(lx, np.log(row))[0] if (row > floor).all() else float("nan")
              for row in loo]
    lower, upper = jackknife_interval(p, np.array(slopes), level)
    return p, float(np.exp(log_c)), lower, upper


def permanent_deficit(
    switch_epochs: np.ndarray,
    accuracy_by_seed: np.ndarray,
    level: float = 0.90,
) -> tuple[float, float, float, int]:
    """The permanent deficit of the latest switch, with a Student-t interval over seeds.

    Per seed, the final accuracy at the grid's smallest switch epoch (normally 0, never
    blurred) minus that at its largest, paired because both runs share the seed's
    initialisation and data order; then the mean over the ``n`` seeds that have both runs,
    and the central ``level`` interval ``mean ± t(n − 1) · sd / √n``. A mean of a few paired
    differences is what the t interval is exact for (under normality); a percentile
    bootstrap of it is too narrow with few seeds (about 77 % coverage for a nominal 90 % at
    5 seeds, 64 % at 3).

    The ends are the grid's, not the last switch that happens to have a run: without a seed
    that has both, everything is NaN (the caller says why). Returns ``(deficit, lower, upper,
    n)``; with a single seed the interval is NaN (one difference says nothing of its spread).
    """
    s = np.asarray(switch_epochs, dtype=float)
    acc = np.asarray(accuracy_by_seed, dtype=float).reshape(s.size, -1)
    if s.size < 2 or not np.isfinite(s).all():
        return float("nan"), float("nan"), float("nan"), 0
    return mean_t_interval(acc[np.argmin(s)] - acc[np.argmax(s)], level)


def mean_t_interval(values: np.ndarray, level: float = 0.90) -> tuple[float, float, float, int]:
    """The mean of the finite ``values`` (paired differences, one per seed) and its central
    Student-t ``level`` interval ``mean ± t(n − 1) · sd / √n``: ``(mean, lower, upper, n)``;
    all NaN with no finite value, the interval NaN with one."""
    diffs = np.asarray(values, dtype=float).ravel()
    diffs = diffs[np.isfinite(diffs)]
    n = int(diffs.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(diffs.mean())
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n
