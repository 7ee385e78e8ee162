"""Tests of the critical-period statistics (:mod:`critperiods.results.fits`, ``selection``,
``summary``, ``tables``) on synthetic curves with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from critperiods.results import fits, selection, tables
from critperiods.results.markers import marker_spread
from critperiods.results.multiple_testing import holm_adjusted
from critperiods.results.summary import (
    INTERVAL_METHOD,
    critical_period_summary,
    located_end,
)

SWITCHES = np.arange(0.0, 61.0, 5.0)
TRUE_KINK, LEVEL, SLOPE, NOISE = 25.0, 0.88, -0.003, 0.005


def hinge(s: np.ndarray, kink: float = TRUE_KINK) -> np.ndarray:
    """Noiseless hinge with the module-level level and slope."""
    return LEVEL + SLOPE * np.maximum(np.asarray(s, dtype=float) - kink, 0.0)


def noisy_accuracy(seed: int, n_seeds: int = 5, kink: float = TRUE_KINK) -> np.ndarray:
    """(switch_epoch × seed) accuracies: hinge plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    return hinge(SWITCHES, kink)[:, None] + rng.normal(0.0, NOISE, (SWITCHES.size, n_seeds))


def brute_force_hinge(s: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    """Reference fit: dense grid over k with a constrained (b <= 0) linear solve."""
    x = np.repeat(s[:, None], acc.shape[1], axis=1)[np.isfinite(acc)]
    y = acc[np.isfinite(acc)]
    best_sse, best_k = float(np.sum((y - y.mean()) ** 2)), float(s.max())
    for k in np.linspace(s.min(), s.max(), 12001):
        design = np.c_[np.ones_like(x), np.maximum(x - k, 0.0)]
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        if coef[1] < 0:
            sse = float(np.sum((y - design @ coef) ** 2))
            if sse < best_sse:
                best_sse, best_k = sse, float(k)
    return best_k, best_sse


# --------------------------------------------------------------------------------------
# hinge
# --------------------------------------------------------------------------------------


def test_fit_hinge_noiseless_is_exact() -> None:
    fit = fits.fit_hinge(SWITCHES, hinge(SWITCHES, 27.3))
    assert fit.kink == pytest.approx(27.3, abs=1e-9)
    assert fit.level == pytest.approx(LEVEL)
    assert fit.slope == pytest.approx(SLOPE)
    assert fit.sse == pytest.approx(0.0, abs=1e-12)
    assert fit.k == fit.kink


def test_fit_hinge_noisy_within_one_grid_step() -> None:
    fit = fits.fit_hinge(SWITCHES, noisy_accuracy(0))
    assert abs(fit.kink - TRUE_KINK) <= 5.0
    assert fit.slope == pytest.approx(SLOPE, rel=0.2)
    assert fit.n_points == SWITCHES.size * 5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_hinge_matches_brute_force(seed: int) -> None:
    acc = noisy_accuracy(seed, kink=float(np.random.default_rng(seed).uniform(5, 55)))
    fit = fits.fit_hinge(SWITCHES, acc)
    k_ref, sse_ref = brute_force_hinge(SWITCHES, acc)
    assert fit.sse <= sse_ref + 1e-12
    assert fit.kink == pytest.approx(k_ref, abs=0.05)


def test_fit_hinge_flat_and_rising_report_max_switch() -> None:
    for acc in (np.full(SWITCHES.size, 0.9), 0.8 + 0.001 * SWITCHES):
        fit = fits.fit_hinge(SWITCHES, acc)
        assert fit.kink == SWITCHES.max()
        assert fit.slope == 0.0
        assert fit.level == pytest.approx(np.mean(acc))


def test_fit_hinge_ignores_nans() -> None:
    acc = np.tile(hinge(SWITCHES)[:, None], (1, 4))
    acc[3, :] = np.nan  # a switch epoch with no runs at all
    acc[7, 1] = np.nan  # a single missing run
    acc[-1, 1:] = np.nan
    fit = fits.fit_hinge(SWITCHES, acc)
    assert fit.kink == pytest.approx(TRUE_KINK)
    assert fit.n_points == int(np.isfinite(acc).sum())
    assert np.isnan(fits.fit_hinge(SWITCHES, np.full(SWITCHES.size, np.nan)).kink)


def test_fit_hinge_kink_range_excludes_empty_switches() -> None:
    acc = hinge(SWITCHES)
    acc[-3:] = np.nan  # largest observed switch is then 45
    flat = fits.fit_hinge(SWITCHES, np.where(np.isfinite(acc), 0.9, np.nan))
    assert flat.kink == 45.0


def test_jackknife_interval_is_t_times_the_jackknife_standard_error() -> None:
    # 3 seeds, leave-one-out values 1, 2, 3: se = sqrt(2/3 * 2), t(0.95, 2) = 2.919986
    lower, upper = fits.jackknife_interval(10.0, np.array([1.0, 2.0, 3.0]), level=0.9)
    half = 2.919986 * np.sqrt(2 / 3 * 2)
    assert (lower, upper) == pytest.approx((10 - half, 10 + half), abs=1e-5)
    assert all(np.isnan(fits.jackknife_interval(10.0, np.array([1.0]))))  # one seed
    assert all(np.isnan(fits.jackknife_interval(np.nan, np.array([1.0, 2.0]))))
    # leaving a seed out makes the statistic undefined: the data do not bound it
    assert fits.jackknife_interval(1.0, np.array([1.0, np.nan])) == (-np.inf, np.inf)
    # another level: t(0.75, 2) = 0.816497
    lower, upper = fits.jackknife_interval(10.0, np.array([1.0, 2.0, 3.0]), level=0.5)
    half = 0.816497 * np.sqrt(2 / 3 * 2)
    assert (lower, upper) == pytest.approx((10 - half, 10 + half), abs=1e-5)


def test_kinks_without_each_seed_are_refits_on_the_other_seeds() -> None:
    acc = noisy_accuracy(4, n_seeds=4)
    acc[:, 2] = np.nan  # a seed with no run in this cell: nothing to leave out
    loo = fits.kinks_without_each_seed(SWITCHES, acc)
    assert np.isnan(loo[2])
    for i in (0, 1, 3):
        assert loo[i] == pytest.approx(fits.fit_hinge(SWITCHES, np.delete(acc, i, 1)).kink)


def test_hinge_end_is_the_pooled_kink_with_its_jackknife_interval() -> None:
    acc = noisy_accuracy(4)
    k_hat, lower, upper, slope = fits.hinge_end(SWITCHES, acc)
    assert k_hat == fits.fit_hinge(SWITCHES, acc).kink and slope < 0
    want = fits.jackknife_interval(k_hat, fits.kinks_without_each_seed(SWITCHES, acc))
    assert (lower, upper) == pytest.approx(want)
    assert lower < k_hat < upper
    assert fits.hinge_end(SWITCHES, acc) == (k_hat, lower, upper, slope)  # no randomness


def test_hinge_end_interval_is_clipped_to_the_switch_epochs() -> None:
    acc = hinge(SWITCHES, kink=2.0)[:, None] + np.random.default_rng(5).normal(
        0.0, 4 * NOISE, (SWITCHES.size, 3))
    _, lower, upper, _ = fits.hinge_end(SWITCHES, acc)
    assert SWITCHES.min() <= lower <= upper <= SWITCHES.max()


def test_a_missing_run_of_a_seed_that_runs_high_does_not_tilt_the_end() -> None:
    """Pooled, the other seeds alone stand at the switch where seed 0 (2 points above them)
    has no run, which bends the curve there; its offset taken out, the fit is the one of the
    complete sweep, and its leave-one-out refits likewise."""
    acc = np.tile(hinge(SWITCHES)[:, None], (1, 3)) + np.array([0.02, 0.0, -0.02])
    complete = fits.hinge_end(SWITCHES, acc)
    assert complete[0] == pytest.approx(TRUE_KINK)
    holed = acc.copy()
    holed[4, 0] = np.nan  # switch 20, before the end
    assert abs(fits.fit_hinge(SWITCHES, holed).kink - TRUE_KINK) > 0.3  # pooled: tilted
    assert fits.hinge_end(SWITCHES, holed)[0] == pytest.approx(TRUE_KINK)
    loo = fits.kinks_without_each_seed(SWITCHES, holed)
    np.testing.assert_allclose(loo, TRUE_KINK)
    assert fits.without_seed_offsets(acc) is not None
    np.testing.assert_array_equal(fits.without_seed_offsets(acc), acc)  # complete: untouched


def test_hinge_end_interval_is_never_finer_than_the_switch_grid() -> None:
    """Every seed left out can keep a kink on the same switch epoch (jackknife width 0); the
    grid cannot place an end more finely than half its spacing."""
    acc = np.tile(hinge(SWITCHES)[:, None], (1, 3))  # kink 25, on the grid (spacing 5)
    k, lower, upper, _ = fits.hinge_end(SWITCHES, acc)
    assert k == TRUE_KINK and (lower, upper) == (22.5, 27.5)
    assert fits.switch_spacing_at(np.array([0.0, 2, 4, 8, 16]), 5.0) == 4.0
    assert fits.switch_spacing_at(np.array([0.0, 2, 4, 8, 16]), 4.0) == 4.0  # the wider side
    assert fits.switch_spacing_at(np.array([0.0, 2, 4, 8, 16]), 0.0) == 2.0


def test_hinge_end_interval_covers_the_true_end_near_its_level_with_three_seeds() -> None:
    """The reason for the jackknife: with 3 seeds a percentile seed bootstrap of the kink
    covers the true end about 65 % of the time at a nominal 90 % (see
    bench/interval_coverage.py); the jackknife-t close to 90 %."""
    n_trials = 200
    covered = sum(
        lower <= TRUE_KINK <= upper
        for trial in range(n_trials)
        for _, lower, upper, _ in [fits.hinge_end(SWITCHES, noisy_accuracy(100 + trial, 3))])
    assert covered / n_trials >= 0.82


def test_hinge_end_single_seed_and_all_nan() -> None:
    k, lower, upper, _ = fits.hinge_end(SWITCHES, hinge(SWITCHES))
    assert k == pytest.approx(TRUE_KINK) and np.isnan(lower) and np.isnan(upper)
    assert all(np.isnan(fits.hinge_end(SWITCHES, np.full((13, 3), np.nan))))


# --------------------------------------------------------------------------------------
# model-free estimators
# --------------------------------------------------------------------------------------


def test_half_deficit_noiseless_hinge() -> None:
    # final deficit 0.003 * 35; half of it is reached at 25 + 35 / 2
    assert fits.half_deficit_epoch(SWITCHES, hinge(SWITCHES)) == pytest.approx(42.5)
    assert fits.half_deficit_epoch(SWITCHES, hinge(SWITCHES, 30.0)) == pytest.approx(45.0)


def test_half_deficit_nan_cases() -> None:
    assert np.isnan(fits.half_deficit_epoch(SWITCHES, np.full(SWITCHES.size, 0.9)))
    assert np.isnan(fits.half_deficit_epoch(SWITCHES, 0.8 + 0.001 * SWITCHES))
    acc = hinge(SWITCHES)
    acc[[2, 8]] = np.nan  # 40 is missing: interpolate between 35 and 45 (same line)
    assert fits.half_deficit_epoch(SWITCHES, acc) == pytest.approx(42.5)
    for edge in (0, -1):  # the deficit is the earliest's minus the latest's, or nothing
        cut = hinge(SWITCHES)
        cut[edge] = np.nan
        assert np.isnan(fits.half_deficit_epoch(SWITCHES, cut))


def test_a_missing_latest_switch_leaves_no_half_deficit_and_says_so() -> None:
    """With no final accuracy at the latest switch, the permanent deficit is NaN, and so is
    the half-deficit epoch (not one of the switches left); each NaN names its cause."""
    cube = synthetic_cube(with_llc=False, with_div=False)
    last = cube["switch_epoch"].values.max()
    cube["final_test_accuracy"].loc[{"batch_size": BATCHES[0], "switch_epoch": last}] = np.nan
    summary = critical_period_summary(cube).sel(lr_schedule="continue")
    assert np.isnan(summary["half_deficit_epoch"].sel(batch_size=BATCHES[0]))
    assert np.isfinite(summary["half_deficit_epoch"].sel(batch_size=BATCHES[1]))
    missing = summary["half_deficit_epoch"].attrs["missing"]
    assert f"batch {BATCHES[0]:g}, continue: no final accuracy at the latest switch" in missing
    cube["final_test_accuracy"][:] = np.nan
    assert "no final accuracy at the earliest and the latest switch" in critical_period_summary(
        cube)["half_deficit_epoch"].attrs["missing"]


def test_largest_change_epoch_slope_break() -> None:
    epochs = np.arange(0.0, 41.0)
    values = np.where(epochs < 17, 2.0 * epochs, 34.0 + 0.2 * (epochs - 17))
    assert fits.largest_change_epoch(epochs, values, smooth=0) == 17.0
    assert fits.largest_change_epoch(epochs, values, smooth=1.5) == 17.0
    rng = np.random.default_rng(0)
    noisy = values + rng.normal(0, 0.3, epochs.size)
    assert abs(fits.largest_change_epoch(epochs, noisy, smooth=2.0) - 17.0) <= 2.0


def test_largest_change_epoch_non_uniform_and_short() -> None:
    epochs = np.array([0.0, 1, 2, 4, 8, 12, 16, 24, 32])
    values = np.minimum(epochs, 8.0)
    assert fits.largest_change_epoch(epochs, values, smooth=0) == 8.0
    assert np.isnan(fits.largest_change_epoch(np.array([0.0, 1.0]), np.array([1.0, 2.0])))


def test_largest_change_epoch_needs_two_interior_points_and_a_change() -> None:
    """Three points have one interior epoch, returned whatever they do; a straight line has
    no slope change. Both say nothing and give NaN; four points with a break find it."""
    for three in ([1.0, 2.0, 3.0], [1.0, 5.0, 5.1], [3.0, 2.0, 10.0]):
        assert np.isnan(fits.largest_change_epoch(np.array([12.0, 14.0, 16.0]),
                                                  np.array(three), smooth=0))
    epochs = np.arange(10.0)
    assert np.isnan(fits.largest_change_epoch(epochs, 3.0 + 0.5 * epochs))
    assert np.isnan(fits.largest_change_epoch(epochs, np.full(10, 2.0)))
    assert fits.largest_change_epoch(np.array([0.0, 1, 2, 3]), np.array([0.0, 1, 1, 1]),
                                     smooth=0) == 1.0


def test_smoothing_keeps_lines_straight() -> None:
    line = 3.0 + 0.5 * np.arange(10.0)
    np.testing.assert_allclose(fits._smooth(line, 2.0), line)


def test_divergence_drop_epoch() -> None:
    div = 10.0 * np.exp(-SWITCHES / 20.0)  # halves at 20 ln 2 ≈ 13.86
    expected_between = (10.0, 15.0)
    got = fits.divergence_drop_epoch(SWITCHES, div)
    assert expected_between[0] < got < expected_between[1]
    linear = np.interp(SWITCHES, [0, 20, 60], [8.0, 8.0, 0.0])  # half (4) reached at 40
    assert fits.divergence_drop_epoch(SWITCHES, linear) == pytest.approx(40.0)
    assert np.isnan(fits.divergence_drop_epoch(SWITCHES, np.full(SWITCHES.size, 3.0)))
    assert np.isnan(fits.divergence_drop_epoch(SWITCHES, np.full(SWITCHES.size, np.nan)))


# --------------------------------------------------------------------------------------
# power law
# --------------------------------------------------------------------------------------


def test_fit_power_law_recovers_exponent() -> None:
    x = np.array([16.0, 32, 64, 128, 256, 512])
    rng = np.random.default_rng(0)
    y = 3.0 * x**-0.7 * np.exp(rng.normal(0, 0.02, x.size))
    without = y * np.exp(rng.normal(0, 0.02, (4, x.size)))  # 4 seeds, each left out
    p, c, lower, upper = fits.fit_power_law(x, y, without)
    assert p == pytest.approx(-0.7, abs=0.05)
    assert c == pytest.approx(3.0, rel=0.2)
    slopes = [np.polyfit(np.log(x), np.log(row), 1)[0] for row in without]
    assert (lower, upper) == pytest.approx(fits.jackknife_interval(p, np.array(slopes)))
    assert np.isnan(fits.fit_power_law(x, y)[2])  # no leave-one-out values: no interval


def test_fit_power_law_leaves_one_seed_out_everywhere_and_skips_absent_seeds() -> None:
    x = np.array([32.0, 64, 128])
    y = 10 * x**-0.5
    without = np.array([[11 * 32**-0.5, np.nan, 10 * 128**-0.5],  # seed 0: not at batch 64
                        [10 * 32**-0.5, 10 * 64**-0.5, 9 * 128**-0.5],
                        [np.nan, np.nan, np.nan]])  # seed 2: no data at all (not counted)
    p, _, lower, upper = fits.fit_power_law(x, y, without)
    filled = np.where(np.isnan(without[:2]), y, without[:2])
    slopes = [np.polyfit(np.log(x), np.log(row), 1)[0] for row in filled]
    assert (lower, upper) == pytest.approx(fits.jackknife_interval(p, np.array(slopes)))


def test_fit_power_law_interval_is_unbounded_when_a_seed_left_out_puts_an_end_at_zero() -> None:
    x = np.array([32.0, 64, 128])
    y = np.array([6.0, 4.0, 2.0])
    without = np.array([[6.0, 4.0, 0.0], [6.0, 4.0, 2.5], [5.5, 4.0, 2.0]])
    assert fits.fit_power_law(x, y, without)[2:] == (-np.inf, np.inf)


def test_a_censored_end_is_left_out_of_the_fit_and_unbounds_its_interval() -> None:
    """An end at the first switch says "no later than it": fitting the others alone with a
    tight interval would hide that it could be anywhere below."""
    x = np.array([32.0, 64, 128, 256])
    y = np.array([8.0, 6.0, 4.0, 2.0])
    without = y * np.array([[1.0], [1.1], [0.9]])
    p, _, lower, upper = fits.fit_power_law(x, y, without, censored_at=2.0)
    assert p == pytest.approx(np.polyfit(np.log(x[:3]), np.log(y[:3]), 1)[0])
    assert (lower, upper) == (-np.inf, np.inf)
    assert np.isfinite(fits.fit_power_law(x, y, without, censored_at=1.0)[2])


def test_fit_power_law_needs_three_points() -> None:
    assert all(np.isnan(fits.fit_power_law(np.array([1.0, 2.0]), np.array([1.0, 4.0]))))
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array([1.0, np.nan, -1.0, 64.0])  # only two usable points
    assert all(np.isnan(fits.fit_power_law(x, y, np.ones((3, 4)))))


# --------------------------------------------------------------------------------------
# cube summary
# --------------------------------------------------------------------------------------

BATCHES = np.array([32, 64, 128])
KINKS = {32: 35.0, 64: 25.0, 128: 17.5}  # kink ∝ (lr / B)^0.5 up to a constant


def synthetic_cube(with_llc: bool = True, with_div: bool = True) -> xr.Dataset:
    """Small cube: 3 batch sizes × 13 switches × 3 seeds × epochs 0..70 (step 1)."""
    rng = np.random.default_rng(7)
    seeds = np.arange(3)
    epochs = np.arange(0.0, 71.0)
    acc = np.stack(
        [hinge(SWITCHES, KINKS[b])[:, None] + rng.normal(0, 0.002, (13, 3)) for b in BATCHES]
    )
    acc[0, 4, 1] = np.nan  # a missing run
    coords = {"batch_size": BATCHES, "switch_epoch": SWITCHES, "seed": seeds, "epoch": epochs}
    data = {"final_test_accuracy": (("batch_size", "switch_epoch", "seed"), acc)}
    shape = (BATCHES.size, SWITCHES.size, seeds.size, epochs.size)
    if with_llc:
        # λ̂ rises 1/epoch until epoch 20 then 0.1/epoch on every run
        curve = np.where(epochs < 20, epochs, 20 + 0.1 * (epochs - 20))
        data["llc_mean"] = (tuple(coords), np.broadcast_to(curve, shape).copy())
    if with_div:
        # divergence measured only after the switch; early value 10, halves at switch 30
        after = epochs[None, :] - SWITCHES[:, None]
        level = np.interp(SWITCHES, [0, 20, 40, 60], [10.0, 10.0, 0.0, 0.0])
        div = np.where(after > 0, level[:, None] * (1 + 0.01 * after), np.nan)
        div = np.broadcast_to(div[None, :, None, None, :], (*shape[:3], 2, shape[3]))
        data["div_l2"] = (("batch_size", "switch_epoch", "seed", "reference", "epoch"), div)
        coords["reference"] = ["blurred", "sharp"]
    return xr.Dataset(data, coords=coords, attrs={"lr": 0.1})


def with_schedules(cube: xr.Dataset, restart_acc: np.ndarray | None = None) -> xr.Dataset:
    """``cube`` with an ``lr_schedule`` dim: restart equal to continue unless given."""
    both = xr.concat([cube, cube], dim=xr.DataArray(["continue", "restart"], dims="lr_schedule"))
    if restart_acc is not None:
        both["final_test_accuracy"].loc[{"lr_schedule": "restart"}] = restart_acc
    return both


EXPECTED_VARS = (
    "critical_period_end",
    "critical_period_end_interval",
    "critical_period_slope",
    "permanent_deficit",
    "permanent_deficit_interval",
    "half_deficit_epoch",
    "llc_change_epoch_trunk",
    "llc_change_epoch_sharp",
    "divergence_drop_epoch",
    "temperature_exponent",
    "temperature_exponent_interval",
    "batch_size_exponent",
    "batch_size_exponent_interval",
)


def test_critical_period_summary_full_cube() -> None:
    cube = synthetic_cube()
    summary = critical_period_summary(cube)
    for name in EXPECTED_VARS:
        assert name in summary, name
        assert {"long_name", "units"} <= set(summary[name].attrs), name
    assert summary["critical_period_end"].attrs["units"] == "1"  # UDUNITS has no "epoch"
    assert "in epochs" in summary["critical_period_end"].attrs["long_name"]
    assert summary["critical_period_end_interval"].dims == ("batch_size", "lr_schedule", "bound")
    assert list(summary["bound"].values) == ["lower", "upper"]
    ends = summary["critical_period_end"].sel(lr_schedule="continue").values
    np.testing.assert_allclose(ends, [KINKS[b] for b in BATCHES], atol=0.5)  # grid step: 5
    interval = summary["critical_period_end_interval"].sel(lr_schedule="continue").values
    assert np.all(interval[:, 0] <= ends) and np.all(ends <= interval[:, 1])
    np.testing.assert_allclose(summary["llc_change_epoch_trunk"].values, 20.0)
    np.testing.assert_allclose(summary["llc_change_epoch_sharp"].values, 20.0)
    assert summary.attrs["horizon"] == 1.0
    np.testing.assert_allclose(summary["divergence_drop_epoch"].values, 30.0, atol=0.5)
    assert summary["batch_size_exponent"].item() == pytest.approx(-0.5, abs=0.1)
    assert summary["temperature_exponent"].item() == pytest.approx(0.5, abs=0.1)
    assert np.all(np.isfinite(summary["temperature_exponent_interval"].values))
    for name in ("temperature_exponent_interval", "batch_size_exponent_interval"):
        # the jackknife over seeds does not carry the switch grid's resolution: it says so
        assert "critical_period_end_interval" in summary[name].attrs["comment"]
    # the hinge drops 0.003 per epoch after the kink, up to switch 60
    deficit = summary["permanent_deficit"].sel(lr_schedule="continue").values
    np.testing.assert_allclose(deficit, [-SLOPE * (60 - KINKS[b]) for b in BATCHES], atol=0.004)


def test_the_end_and_exponent_intervals_are_jackknifes_over_seeds_left_out_everywhere() -> None:
    """Seed s gives every batch size the same initialisation and data order, so the
    exponent's jackknife leaves seed s out at every batch size at once."""
    cube = synthetic_cube()
    summary = critical_period_summary(cube)
    assert summary.attrs["interval_kind"] == (
        "90% jackknife-t over seeds (leave one seed out), joined with the kink's profile "
        "interval (the kinks an F test on the noise cannot tell from the best); at least ± "
        "half the switch spacing")
    assert "jackknife-t over seeds" in tables.format_table(summary)
    acc = selection.valid_final_accuracy(cube)
    ends, without = [], []
    for b in BATCHES:
        a = acc.sel(batch_size=b).transpose("switch_epoch", "seed").values
        ends.append(fits.hinge_end(SWITCHES, a)[0])
        without.append(fits.kinks_without_each_seed(SWITCHES, a))
        k, lo, hi, _ = fits.hinge_end(SWITCHES, a)
        got = summary["critical_period_end_interval"].sel(batch_size=b).squeeze().values
        np.testing.assert_allclose(got, [lo, hi])
    p, _, lo, hi = fits.fit_power_law(BATCHES.astype(float), np.array(ends),
                                      np.array(without).T)
    assert summary["batch_size_exponent"].item() == pytest.approx(p)
    np.testing.assert_allclose(summary["batch_size_exponent_interval"].squeeze().values, [lo, hi])
    one = critical_period_summary(cube.isel(seed=[0]))
    assert np.isnan(one["critical_period_end_interval"].values).all()
    assert "one seed has runs: no interval" in one["critical_period_end_interval"].attrs["missing"]


def test_an_exponent_whose_jackknife_puts_an_end_at_the_first_switch_is_unbounded() -> None:
    cube = synthetic_cube(with_llc=False, with_div=False)
    # batch 256 (largest): seed 2 alone declines from switch 0, the others from 25
    acc = cube["final_test_accuracy"]
    early = hinge(SWITCHES, 0.0) + 0.0
    acc.loc[{"batch_size": BATCHES[-1], "seed": [0, 1]}] = early[:, None]
    summary = critical_period_summary(cube)
    interval = summary["batch_size_exponent_interval"].squeeze().values
    assert tuple(interval) == (-np.inf, np.inf)
    said = summary["batch_size_exponent_interval"].attrs["unbounded"]
    assert f"batch {BATCHES[-1]:g} without seed 2" in said
    text = tables.format_table(summary)
    assert "[-inf, inf]" in text and "without seed 2" in text
    # the end censored by itself (every seed declines from switch 0): not fitted
    acc.loc[{"batch_size": BATCHES[-1]}] = early[:, None]
    summary = critical_period_summary(cube)
    assert np.isnan(summary["batch_size_exponent"].item())
    assert "2 batch size(s) with a located end after the first switch" in summary[
        "batch_size_exponent"].attrs["missing"]


def test_critical_period_summary_missing_inputs_give_nan_and_say_why() -> None:
    summary = critical_period_summary(synthetic_cube(with_llc=False, with_div=False))
    for name in EXPECTED_VARS:
        assert name in summary and "units" in summary[name].attrs
    for name in ("llc_change_epoch_trunk", "llc_change_epoch_sharp", "divergence_drop_epoch"):
        assert np.all(np.isnan(summary[name].values)), name
        assert "not estimated" in summary[name].attrs["missing"] or \
            "not computed" in summary[name].attrs["missing"], name
    assert np.all(np.isfinite(summary["critical_period_end"].values))
    text = tables.format_table(summary)
    assert "why some values are nan" in text and "llc.enabled: false" in text


def test_critical_period_summary_too_few_batch_sizes() -> None:
    cube = synthetic_cube().isel(batch_size=[0, 1])
    summary = critical_period_summary(cube, horizon=2)
    assert np.isnan(summary["batch_size_exponent"].item())
    assert "a power law needs 3" in summary["batch_size_exponent"].attrs["missing"]
    assert np.all(np.isnan(summary["temperature_exponent_interval"].values))
    assert summary.attrs["horizon"] == 2.0
    assert np.all(np.isfinite(summary["divergence_drop_epoch"].values))


def test_flagged_llc_estimates_are_left_out_of_the_markers() -> None:
    """A flagged λ̂ never moves a marker: flagging the kink's neighbourhood moves it, and
    flagging all but two points of the never-blurred run leaves it NaN, saying why."""
    cube = synthetic_cube(with_div=False)
    quality = xr.zeros_like(cube["llc_mean"])
    assert np.all(critical_period_summary(cube)["llc_change_epoch_trunk"] == 20)
    # the kink's neighbourhood flagged negative: 20 is no longer seen
    cube["llc_quality"] = quality.where((cube.epoch < 18) | (cube.epoch > 22), 1.0)
    trunk = critical_period_summary(cube)["llc_change_epoch_trunk"].values
    assert np.all(np.isfinite(trunk)) and not np.any((trunk >= 18) & (trunk <= 22))
    cube["llc_quality"] = quality.where(cube.epoch > 25, 1.0)  # only the straight part left
    summary = critical_period_summary(cube)
    assert np.all(np.isnan(summary["llc_change_epoch_trunk"].values))
    assert "a straight line" in summary["llc_change_epoch_trunk"].attrs["missing"]
    cube["llc_quality"] = quality.where(cube.epoch >= 69, 2.0)
    summary = critical_period_summary(cube)
    assert np.all(np.isnan(summary["llc_change_epoch_sharp"].values))
    assert "2 valid λ̂ point(s)" in summary["llc_change_epoch_sharp"].attrs["missing"]


def test_seed_adjusted_mean_follows_the_curve_not_the_mix_of_seeds() -> None:
    rng = np.random.default_rng(0)
    curve = np.linspace(0.0, 10.0, 8)
    values = curve[:, None] + np.array([-2.0, 0.0, 2.0]) + rng.normal(0, 0.01, (8, 3))
    assert np.array_equal(fits.seed_adjusted_mean(values), fits.nanmean(values, axis=1))
    holes = values.copy()
    holes[3, 2] = holes[5, 0] = np.nan  # the high seed missing at 3, the low one at 5
    np.testing.assert_allclose(fits.seed_adjusted_mean(holes), curve, atol=0.03)
    plain = fits.nanmean(holes, axis=1)
    assert plain[3] - curve[3] < -0.9 and plain[5] - curve[5] > 0.9  # what it corrects
    alone = np.full((3, 2), np.nan)
    alone[1, 1] = 2.0
    np.testing.assert_array_equal(fits.seed_adjusted_mean(alone), [np.nan, 2.0, np.nan])


def test_a_flagged_estimate_of_one_seed_does_not_bend_the_seed_mean_of_llc() -> None:
    """Seeds with different λ̂ levels: leaving out the high seed's estimate at one epoch
    would dent a plain seed mean there and put a slope change at it."""
    cube = synthetic_cube(with_div=False)
    offsets = xr.DataArray([-3.0, 0.0, 3.0], dims="seed", coords={"seed": cube.seed})
    cube["llc_mean"] = cube["llc_mean"] + offsets
    quality = xr.zeros_like(cube["llc_mean"])
    cube["llc_quality"] = quality.where((cube.seed != 2) | (cube.epoch != 40), 1.0)
    summary = critical_period_summary(cube)
    np.testing.assert_allclose(summary["llc_change_epoch_trunk"].values, 20.0)
    np.testing.assert_allclose(summary["llc_change_epoch_sharp"].values, 20.0)


def test_a_lambda_marker_that_rests_on_one_seed_moves_when_that_seed_is_left_out() -> None:
    """Two seeds change slope at epoch 10; the third steepens sharply at 20. With all three
    (and without seed 0 or 1) the largest change is at 20; without seed 2 it is at 10."""
    epochs = np.arange(0.0, 32.0, 2.0)
    base = np.where(epochs < 10, epochs, 10 + 0.1 * (epochs - 10))
    wild = base + np.where(epochs > 20, 3.0 * (epochs - 20), 0.0)
    values = np.stack([base, base + 1.0, wild], axis=1)
    assert fits.largest_change_epoch(epochs, fits.seed_adjusted_mean(values), smooth=0) == 20
    np.testing.assert_array_equal(
        fits.change_epochs_without_each_seed(epochs, values, smooth=0), [20.0, 20.0, 10.0])
    one = values.copy()
    one[:, 1:] = np.nan  # one seed: nothing to leave out
    assert np.all(np.isnan(fits.change_epochs_without_each_seed(epochs, one)))


def test_the_lambda_markers_carry_their_loo_range_and_say_why_it_is_missing() -> None:
    cube = synthetic_cube(with_div=False)
    summary = critical_period_summary(cube)
    for name in ("llc_change_epoch_trunk", "llc_change_epoch_sharp"):
        spread = summary[f"{name}_loo_range"]
        assert spread.dims == ("batch_size", "lr_schedule", "bound")
        assert "not a confidence interval" in spread.attrs["long_name"]
        np.testing.assert_allclose(spread.values, 20.0)  # every seed agrees
    # one seed's λ̂ steepens from epoch 40: the marker's range reaches there
    wild = xr.where((cube.seed == 2) & (cube.epoch > 40), 5.0 * (cube.epoch - 40), 0.0)
    cube["llc_mean"] = cube["llc_mean"] + wild
    spread = critical_period_summary(cube)["llc_change_epoch_sharp_loo_range"].values
    assert np.all(spread[..., 0] <= 20) and np.all(spread[..., 1] >= 40)
    single = critical_period_summary(synthetic_cube(with_div=False).isel(seed=[0]))
    assert np.all(np.isfinite(single["llc_change_epoch_trunk"].values))
    assert np.all(np.isnan(single["llc_change_epoch_trunk_loo_range"].values))
    assert "nothing to leave out" in single["llc_change_epoch_trunk_loo_range"].attrs["missing"]


def test_restart_verdict_says_whether_the_deficit_survives() -> None:
    cube = synthetic_cube(with_llc=False, with_div=False)
    flat = np.broadcast_to(0.9 + np.zeros((13, 3)), (3, 13, 3)).copy()  # no deficit at all
    summary = critical_period_summary(with_schedules(cube, flat))
    verdicts = tables.restart_verdicts(summary)
    assert set(verdicts) == {32.0, 64.0, 128.0}
    # an interval that includes 0 does not show the deficit gone: it bounds it
    assert all(v.startswith("not told from 0 under the restart") for v in verdicts.values())
    for b, v in verdicts.items():
        hi = 100 * float(summary["permanent_deficit_interval"].sel(
            batch_size=b, lr_schedule="restart")[1])
        continued = 100 * float(summary["permanent_deficit"].sel(batch_size=b,
                                                                 lr_schedule="continue"))
        restarted = 100 * float(summary["permanent_deficit"].sel(batch_size=b,
                                                                 lr_schedule="restart"))
        assert f", up to {hi:.1f} pp within its interval; the restart lowers it by " \
            f"{continued - restarted:.1f} pp [" in v, v
        assert v.endswith("against the rate continued (paired by seed, told from 0)"), v
    summary = critical_period_summary(with_schedules(cube))
    assert all(v.startswith("survives") for v in tables.restart_verdicts(summary).values())
    # a restart that gains accuracy beyond its noise: told from 0, below it
    summary["permanent_deficit"].loc[{"lr_schedule": "restart"}] = -0.017
    summary["permanent_deficit_interval"].loc[{"lr_schedule": "restart"}] = [[-0.03, -0.005]] * 3
    gains = tables.restart_verdicts(summary)
    assert all(v.startswith("below 0 under the restart (a gain): -1.7 pp [-3.0, -0.5]")
               for v in gains.values()), gains
    assert tables.unlocated_text(-0.017, -0.03, -0.005) == "deficit below 0 (a gain)"
    assert tables.unlocated_text(0.001, -0.01, 0.012) == "deficit not told from 0"
    # the cube's own wording: a gain is not "not told from 0"
    from critperiods.results.summary import unlocated_reason
    assert unlocated_reason(-0.017, -0.03, -0.005) == "deficit below 0 (a gain)"
    assert unlocated_reason(0.001, -0.01, 0.012) == "deficit not told from 0"
    assert unlocated_reason(0.001, float("nan")) == "no interval (1 seed)"
    assert tables.restart_verdicts(critical_period_summary(cube)) == {}


def test_the_restart_comparison_is_paired_by_seed() -> None:
    """The switch-0 run is one run under both schedules, so a seed's noise there widens both
    deficits' intervals until they overlap, yet cancels from their paired difference: the
    restart's reduction (continued minus restarted deficit, per seed) is told from 0, and
    the short answer says most of the deficit is the learning-rate confound (it said the
    seeds could not tell the two apart: the intervals overlapped)."""
    from critperiods.results.report_page import short_answer

    rng = np.random.default_rng(3)
    switches = np.array([0.0, 4.0, 8.0, 12.0, 16.0])
    seeds, batches = np.arange(3), np.array([64.0, 128.0, 256.0])
    noise = np.array([0.03, -0.025, -0.005])  # each seed's switch-0 accuracy, shared
    cont = 0.85 - 0.005 * np.clip(switches - 4, 0, None)[:, None] + rng.normal(0, 1e-3, (5, 3))
    rest = 0.85 + rng.normal(0, 1e-3, (5, 3))
    cont[0], rest[0] = 0.85 + noise, 0.85 + noise  # one run under both schedules
    acc = np.stack([np.stack([cont, rest]) for _ in batches])  # batch, schedule, switch, seed
    cube = xr.Dataset(
        {"final_test_accuracy": (("batch_size", "lr_schedule", "switch_epoch", "seed"), acc)},
        coords={"batch_size": batches, "lr_schedule": ["continue", "restart"],
                "switch_epoch": switches, "seed": seeds}, attrs={"lr": 0.1})
    summary = critical_period_summary(cube)
    deficit = summary["permanent_deficit_interval"]
    # the intervals overlap: the restart's top is above the continued deficit's bottom
    assert (deficit.sel(lr_schedule="restart", bound="upper")
            > deficit.sel(lr_schedule="continue", bound="lower")).all()
    removed = summary["restart_deficit_reduction"]
    np.testing.assert_allclose(removed, 0.06, atol=0.005)  # 12 epochs × 0.5 pp
    lower = summary["restart_deficit_reduction_interval"].sel(bound="lower")
    assert (lower > 0.05).all() and (summary["restart_deficit_reduction_seeds"] == 3).all()
    said = short_answer(cube.merge(summary))
    by = f"{100 * float(removed[0]):.1f}"  # the batch sizes share their accuracies here
    assert f"paired by seed, the restart lowers it by {by} pp, at each batch size more than " \
        "can remain: most of what looks like a critical period here is the learning-rate " \
        "confound" in said, said
    assert "whether a critical period remains is open" not in said
    verdicts = tables.restart_verdicts(summary)
    assert all(f"the restart lowers it by {by} pp [" in v for v in verdicts.values()), verdicts
    # a restart that raises the deficit is said to raise it, and the answer says so
    worse = cube.copy(deep=True)
    worse["final_test_accuracy"].loc[{"lr_schedule": "restart", "switch_epoch": 16.0}] -= 0.09
    raised = critical_period_summary(worse)
    assert "the restart raises it by " in tables.restart_verdicts(raised)[64.0]
    # one switch epoch: no deficit, so nothing for the restart to lower (it was 0 [0, 0])
    single = critical_period_summary(cube.sel(switch_epoch=[0.0]))
    assert single["restart_deficit_reduction"].isnull().all()
    assert "one switch epoch: no deficit" in single["restart_deficit_reduction"].attrs[
        "missing"]
    assert ("restart_deficit_reduction", single["restart_deficit_reduction"].attrs["missing"]
            ) in tables.nan_reasons(single)
    # one seed: no interval, so no call
    one = critical_period_summary(cube.isel(seed=[0]))
    assert one["restart_deficit_reduction_interval"].isnull().all()
    assert "one seed: no interval" in tables.restart_verdicts(one)[64.0]
    # no restart schedule: no variable
    assert "restart_deficit_reduction" not in critical_period_summary(
        cube.sel(lr_schedule=["continue"]))


def test_half_deficit_epoch_is_half_of_the_latest_switchs_deficit_not_of_the_largest() -> None:
    """Deficits 0, 0.2, 0.1, 0.1: half of the final 0.1 is first reached at 2.5 (half of the
    largest, 0.2, would be at 5)."""
    switches = np.array([0.0, 10.0, 20.0, 30.0])
    assert fits.half_deficit_epoch(switches, np.array([1.0, 0.8, 0.9, 0.9])) == pytest.approx(2.5)


def test_the_end_interval_stays_within_the_switches_that_have_runs() -> None:
    """Flat until the last switch with runs (40; 45-60 have none): the end is 40, and the
    interval, widened to ± half the spacing, is clipped at 40, not at the grid's 60."""
    acc = np.tile(hinge(SWITCHES, 60.0)[:, None], (1, 3))
    acc[SWITCHES > 40] = np.nan
    kink, lower, upper, _ = fits.hinge_end(SWITCHES, acc)
    assert (kink, lower, upper) == (40.0, 37.5, 40.0)


def test_the_lambda_markers_without_each_seed_take_out_the_seeds_offsets_around_holes() -> None:
    """Three seeds of one curve (slope 1 until epoch 10, then 0) at offsets 0, 100, 200, the
    highest without its first four epochs: a plain mean would jump where it enters; the
    seed-adjusted mean keeps the break at 10 whichever seed is left out."""
    epochs = np.arange(0.0, 21.0)
    curve = np.minimum(epochs, 10.0)
    values = curve[:, None] + np.array([0.0, 100.0, 200.0])
    values[:4, 2] = np.nan
    assert list(fits.change_epochs_without_each_seed(epochs, values, smooth=0)) == [10.0] * 3


def test_permanent_deficit_pairs_runs_by_seed() -> None:
    switches = np.array([0.0, 10.0, 20.0])
    acc = np.array([[0.90, 0.80], [0.88, 0.79], [0.85, 0.75]])  # seed 1 is worse throughout
    deficit, lo, hi, n = fits.permanent_deficit(switches, acc)
    assert deficit == pytest.approx(0.05) and n == 2
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)  # both seeds lose 5 points
    assert all(np.isnan(fits.permanent_deficit(switches[:1], acc[:1])[:3]))


def test_the_permanent_deficit_interval_is_students_t_over_seeds() -> None:
    """Deficits 0.3, 0.5, 0.7: mean 0.5 ± t(0.95, 2) · 0.2 / √3 = ± 0.3372 (a percentile
    bootstrap of the three would give about ± 0.2, too narrow); one seed gives no interval."""
    switches = np.array([0.0, 8.0])
    acc = np.array([[0.9, 0.9, 0.9], [0.6, 0.4, 0.2]])
    deficit, lo, hi, n = fits.permanent_deficit(switches, acc, level=0.9)
    assert (deficit, n) == (pytest.approx(0.5), 3)
    assert (lo, hi) == (pytest.approx(0.16283, abs=1e-4), pytest.approx(0.83717, abs=1e-4))
    deficit, lo, hi, n = fits.permanent_deficit(switches, acc[:, :1])
    assert deficit == pytest.approx(0.3) and n == 1 and np.isnan(lo) and np.isnan(hi)


def test_the_permanent_deficit_is_at_the_grids_latest_switch_or_nan() -> None:
    """With no run at the latest switch the deficit is NaN, not the deficit of an earlier
    switch passed off as the latest's."""
    switches = np.array([0.0, 10.0, 20.0])
    acc = np.array([[0.90, 0.90], [0.85, 0.86], [np.nan, np.nan]])
    assert all(np.isnan(fits.permanent_deficit(switches, acc)[:3]))
    acc[2, 1] = 0.80
    deficit, lo, hi, n = fits.permanent_deficit(switches, acc)
    assert deficit == pytest.approx(0.10) and n == 1


def test_the_exponent_rests_on_located_ends_only() -> None:
    """A restart curve that is flat but for noise has kinks, none of them an end: its
    exponent is NaN and says why, while the declining continue curves give one."""
    base = synthetic_cube(with_llc=False, with_div=False)
    rng = np.random.default_rng(3)
    flat = 0.9 + rng.normal(0, 0.002, base["final_test_accuracy"].shape)
    summary = critical_period_summary(with_schedules(base, flat))
    kinks = summary["critical_period_end"].sel(lr_schedule="restart").values
    assert np.all(np.isfinite(kinks) & (kinks > 0))  # fitted, finite, positive …
    assert np.isnan(float(summary["batch_size_exponent"].sel(lr_schedule="restart")))
    assert "0 batch size(s) with a located end after the first switch" in summary[
        "batch_size_exponent"].attrs["missing"]
    assert np.isfinite(float(summary["batch_size_exponent"].sel(lr_schedule="continue")))


def test_a_restart_verdict_on_one_seed_is_undetermined() -> None:
    """One seed: the deficit has no interval, so no end is located, and every place says it
    is the single seed, not that there is no deficit."""
    from critperiods.results.report_page import answer_lines

    cube = synthetic_cube(with_llc=False, with_div=False).isel(seed=[0])
    summary = critical_period_summary(with_schedules(cube))
    verdicts = tables.restart_verdicts(summary)
    assert all(v.startswith("undetermined") and "(1 seed)" in v for v in verdicts.values())
    assert "no interval (1 seed)" in tables.format_table(summary)
    assert "no deficit" not in tables.format_table(summary)
    assert "not told from 0" not in tables.format_table(summary)
    assert "one seed has both runs" in summary["permanent_deficit_interval"].attrs["missing"]
    answer = "\n".join(answer_lines(cube.merge(summary.isel(lr_schedule=[0]))))
    assert "one seed, so no interval to locate an end with" in answer
    summary = critical_period_summary(with_schedules(synthetic_cube(with_llc=False,
                                                                    with_div=False)))
    assert all("(3 seeds)" in v for v in tables.restart_verdicts(summary).values())
    assert np.all(summary["permanent_deficit_seeds"].sel(batch_size=64) == 3)
    assert int(summary["permanent_deficit_seeds"].sel(batch_size=32, lr_schedule="continue")) \
        == 3  # the missing run (batch 32, switch 20, seed 1) is not an end of the curve


def test_llc_flag_counts_count_shared_estimates_once() -> None:
    k, e = np.array([0, 2]), np.array([0, 1, 2, 3, 4])
    # runs (schedule, switch) × epochs; the trunk (e ≤ k) and the never-blurred run are shared
    quality = np.full((2, 2, 5), np.nan)
    quality[:, :, 1:] = 0.0
    quality[:, 1, 1] = 1.0  # a trunk estimate, flagged negative, seen in both schedules
    cube = xr.Dataset({"llc_quality": (("lr_schedule", "switch_epoch", "epoch"), quality)},
                      coords={"lr_schedule": ["continue", "restart"], "switch_epoch": k,
                              "epoch": e})
    counts = tables.llc_flag_counts(cube)
    # distinct: trunk e1, e2; never-blurred e1..e4; continue/switch2 e3, e4; restart e3, e4
    assert counts["estimates"] == 10
    assert counts["negative"] == 1 and counts["ok"] == 9


def flat_restart(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` with both schedules, the restart's accuracy flat: every switch ends where
    switch 0 does (no deficit)."""
    acc = cube["final_test_accuracy"]
    flat = acc.isel(switch_epoch=0).broadcast_like(acc).transpose(*acc.dims)
    return with_schedules(cube, restart_acc=flat.values)


def test_tables(tmp_path: Path) -> None:
    summary = critical_period_summary(flat_restart(synthetic_cube(with_div=False)))
    table = tables.summary_table(summary)
    assert list(table["batch_size"]) == [b for b in BATCHES for _ in range(2)]
    assert list(table["lr_schedule"])[:2] == ["continue", "restart"]
    assert {"critical_period_end_lower", "temperature_exponent_upper",
            "permanent_deficit_upper"} <= set(table.columns)
    text = tables.format_table(summary)
    lines = text.splitlines()
    assert len({len(line) for line in lines[: 1 + 2 * BATCHES.size]}) == 1  # aligned columns
    assert "temperature_exponent (restart)" in text and "nan" in text
    # the λ̂ knees: every seed bends at 20, so the interval is the floor, ± half the spacing
    assert "20.0 [19.5, 20.5]" in text and "broken-stick knee" in text
    assert {"llc_change_epoch_trunk_loo_lower", "llc_change_epoch_sharp_loo_upper",
            "llc_knee_trunk_lower", "llc_knee_minus_end_sharp_upper"} <= set(table.columns)
    path = tables.to_csv(summary, tmp_path / "out" / "summary.csv")
    back = pd.read_csv(path)
    np.testing.assert_allclose(back["critical_period_end"], table["critical_period_end"])
    # the CSV says which ends are located: the restart rows of this cube have no deficit,
    # yet their hinge still puts a kink somewhere
    located = dict(zip(zip(back["batch_size"], back["lr_schedule"], strict=True),
                       back["critical_period_end_located"], strict=True))
    lower = summary["permanent_deficit_interval"].sel(bound="lower")
    for (b, r), ok in located.items():
        assert ok == bool(lower.sel(batch_size=b, lr_schedule=r) > 0), (b, r)
    assert [located[b, r] for b in BATCHES for r in ("continue", "restart")] == [True, False] * 3


def test_runs_at_chance_accuracy_are_named() -> None:
    """A run that diverged to chance is named by its coordinates; healthy runs are not."""
    cube = synthetic_cube(with_llc=False, with_div=False)
    assert tables.runs_at_chance(cube) == []
    acc = cube["final_test_accuracy"].copy()
    where = {d: acc[d].values[1] for d in acc.dims}
    acc.loc[where] = 0.094
    cube["final_test_accuracy"] = acc
    (line,) = tables.runs_at_chance(cube)
    assert f"switch epoch {where['switch_epoch']:g}" in line and f"seed {where['seed']:g}" in line
    assert line.startswith(f"batch {where['batch_size']:g}") and line.endswith("9.4 %")
    # the never-blurred run is one run under both schedules: named and counted once
    from critperiods.results.plots import _diverged_note

    cube = flat_restart(synthetic_cube(with_llc=False, with_div=False)).copy(deep=True)
    cube["final_test_accuracy"].loc[{"switch_epoch": 0, "seed": cube["seed"].values[0],
                                     "batch_size": cube["batch_size"].values[0]}] = 0.094
    cube["final_test_accuracy"].loc[{"switch_epoch": cube["switch_epoch"].values[1],
                                     "seed": cube["seed"].values[0],
                                     "batch_size": cube["batch_size"].values[0],
                                     "lr_schedule": "restart"}] = 0.094
    lines = tables.runs_at_chance(cube)
    assert len(lines) == 2 and _diverged_note(cube) == "; 2 runs diverged to chance, left out"
    assert sum("the never-blurred run (every lr schedule)" in v and "switch epoch 0" in v
               for v in lines) == 1, lines


def with_a_run_at_chance(cube: xr.Dataset, **where) -> xr.Dataset:
    """``cube`` with the runs at ``where`` (a label per run dim, or a list) at chance."""
    cube = cube.copy(deep=True)
    cube["final_test_accuracy"].loc[where] = 0.094
    return cube


SUMMARY_VALUES = ("critical_period_end", "critical_period_end_interval", "permanent_deficit",
                  "permanent_deficit_interval", "critical_period_slope", "half_deficit_epoch",
                  "divergence_drop_epoch", "batch_size_exponent", "batch_size_exponent_interval")


def test_a_run_diverged_to_chance_is_left_out_of_every_statistic() -> None:
    """The summary of a cube with one run at chance equals the summary of the cube without
    that run (NaN): the end, its interval, the deficit, the exponent and the divergence
    marker; the summary counts the run where it was left out, and only there."""
    cube = with_schedules(synthetic_cube())
    where = {"batch_size": 64, "lr_schedule": "restart", "switch_epoch": 60.0, "seed": 1}
    diverged = with_a_run_at_chance(cube, **where)
    missing = cube.copy(deep=True)
    missing["final_test_accuracy"].loc[where] = np.nan
    missing["div_l2"].loc[{**where, "epoch": missing.epoch > 60}] = np.nan
    got = critical_period_summary(diverged)
    want = critical_period_summary(missing)
    for name in SUMMARY_VALUES:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    # the deficit of that cell is the mean of the other two seeds' paired deficits
    acc = cube["final_test_accuracy"].sel(batch_size=64, lr_schedule="restart")
    paired = (acc.sel(switch_epoch=0.0) - acc.sel(switch_epoch=60.0)).sel(seed=[0, 2])
    assert float(got["permanent_deficit"].sel(batch_size=64, lr_schedule="restart")) == \
        pytest.approx(float(paired.mean()))
    counts = got["diverged_runs"]
    assert int(counts.sel(batch_size=64, lr_schedule="restart")) == 1 and int(counts.sum()) == 1
    assert {"long_name", "units"} <= set(counts.attrs)
    assert list(tables.summary_table(got)["diverged_runs"]) == [0, 0, 0, 1, 0, 0]


def test_a_diverged_run_keeps_its_trunk_and_loses_its_branch() -> None:
    """Epochs up to the switch are the shared blurred trunk, still valid; the sharp epochs of
    the diverged run are NaN to every λ̂ seed mean."""
    cube = with_a_run_at_chance(synthetic_cube(with_div=False), batch_size=32,
                                switch_epoch=30.0, seed=2)
    assert int(selection.run_diverged(cube).sum()) == 1
    llc = selection.valid_llc(cube).sel(batch_size=32, switch_epoch=30.0, seed=2)
    assert np.all(np.isfinite(llc.sel(epoch=slice(0, 30)))) and np.all(
        np.isnan(llc.sel(epoch=slice(31, None))))
    other = selection.valid_llc(cube).sel(batch_size=32, switch_epoch=30.0, seed=1)
    assert np.isfinite(other).all()


def test_a_cell_whose_runs_all_diverged_gives_nan_and_says_why() -> None:
    cube = with_a_run_at_chance(with_schedules(synthetic_cube(with_llc=False, with_div=False)),
                                batch_size=32, lr_schedule="restart")
    summary = critical_period_summary(cube)
    cell = summary.sel(batch_size=32, lr_schedule="restart")
    assert int(cell["diverged_runs"]) == 39  # 13 switches × 3 seeds
    for name in ("critical_period_end", "permanent_deficit", "half_deficit_epoch"):
        assert np.isnan(float(cell[name])), name
        assert "batch 32, restart: " in summary[name].attrs["missing"]
        assert "39 run(s) diverged to chance and are left out" in summary[name].attrs["missing"]
    assert np.isfinite(float(summary["critical_period_end"].sel(batch_size=32,
                                                                 lr_schedule="continue")))
    assert "diverged to chance" in tables.format_table(summary)


def test_summarize_and_the_report_say_diverged_runs_are_left_out(tmp_path, capsys) -> None:
    """``summarize`` names the run as left out; a cube from before the flag has its stored
    statistics recomputed; the report's landing page says the same."""
    from critperiods.__main__ import main
    from critperiods.results.report_page import landing_page

    base = with_schedules(synthetic_cube(with_llc=False, with_div=False)).transpose(
        "batch_size", "lr_schedule", ...)  # the cube's order
    cube = with_a_run_at_chance(base, batch_size=128, lr_schedule="restart", switch_epoch=10.0,
                                seed=0)
    old = cube.merge(critical_period_summary(base))  # stale: run still in
    old.to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "statistics recomputed: this cube predates the run_diverged flag" in printed
    assert ("1 run diverged to chance and is left out of means and fits:\n"
            "  batch 128, restart, switch epoch 10, seed 0, final accuracy 9.4 %") in printed
    assert "still in the means" not in printed
    fresh = cube.merge(critical_period_summary(cube))
    fresh["run_diverged"] = selection.run_diverged(cube).astype(float)
    fresh.to_netcdf(tmp_path / "new.nc")
    assert main(["summarize", str(tmp_path / "new.nc")]) == 0
    printed = capsys.readouterr().out
    assert "recomputed" not in printed and "1 run diverged to chance" in printed
    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    page = landing_page(fresh, figure, "described")
    assert ("* 1 run diverged to chance and is left out of means and fits:\n\n"
            "  * batch 128, restart, switch epoch 10, seed 0") in page


def test_summarize_recomputes_a_cube_with_bootstrap_deficit_intervals(tmp_path, capsys) -> None:
    """A cube aggregated before the t interval stores seed-bootstrap deficit ranges:
    ``summarize`` recomputes them rather than print verdicts that rest on them."""
    from critperiods.__main__ import main

    base = with_schedules(synthetic_cube(with_llc=False, with_div=False)).transpose(
        "batch_size", "lr_schedule", ...)
    old = base.merge(critical_period_summary(base)).drop_vars(
        "permanent_deficit_seeds")
    old["permanent_deficit_interval"][:] = 0.5  # what an old bootstrap range might say
    old.to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "statistics recomputed: this cube predates the Student-t interval" in printed
    assert "(3 seeds)" in printed and "[50.0, 50.0]" not in printed


def test_summarize_recomputes_a_cube_with_bootstrap_end_intervals(tmp_path, capsys) -> None:
    """A cube aggregated before the jackknife stores bootstrap ranges for the end and the
    exponents (too narrow with few seeds): ``summarize`` recomputes them and says why."""
    from critperiods.__main__ import main

    base = with_schedules(synthetic_cube(with_llc=False, with_div=False))
    old = base.merge(critical_period_summary(base))
    old["critical_period_end_interval"][:] = 25.0  # what an old bootstrap range might say
    old.attrs["summary_n_boot"] = 1000  # as aggregate wrote before the jackknife
    old.to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "predates the jackknife intervals of the end and the exponents" in printed
    assert "[25, 25]" not in printed
    new = old.assign_attrs(summary_interval_method=INTERVAL_METHOD)  # as aggregate writes now
    del new.attrs["summary_n_boot"]
    new.to_netcdf(tmp_path / "new.nc")
    assert main(["summarize", str(tmp_path / "new.nc")]) == 0
    assert "recomputed" not in capsys.readouterr().out


def test_summarize_recomputes_a_cube_without_the_lambda_markers_loo_ranges(tmp_path,
                                                                           capsys) -> None:
    from critperiods.__main__ import main

    base = with_schedules(synthetic_cube(with_div=False))
    old = base.merge(critical_period_summary(base)).assign_attrs(
        summary_interval_method=INTERVAL_METHOD)
    old.drop_vars(["llc_change_epoch_trunk_loo_range", "llc_change_epoch_sharp_loo_range"]
                  ).to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "predates the λ̂ markers' leave-one-out ranges" in printed
    assert "20.0 [19.5, 20.5]" in printed


def test_summarize_recomputes_a_cube_without_the_lambda_knees(tmp_path, capsys) -> None:
    """A cube aggregated before the λ̂ knees gets them, and says whether λ̂ marks the end:
    every seed's λ̂ bends at epoch 20, before the ends of batch 32 and 64 (35, 25), and 2.5
    epochs after batch 128's (17.5): just beyond the floor of the two grids' resolutions
    in quadrature (± 2.55 with switches 5 apart and λ̂ every epoch)."""
    from critperiods.__main__ import main

    base = flat_restart(synthetic_cube(with_div=False))
    summary = critical_period_summary(base)
    old = base.merge(summary).assign_attrs(summary_interval_method=INTERVAL_METHOD)
    new = [v for v in summary.data_vars
           if v.startswith(("llc_knee_", "divergence_drop_minus_end", "divergence_drop_epoch_"))]
    old.drop_vars(new).to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "predates the markers' intervals and their offsets from the end" in printed
    verdicts = printed.split("\ndo λ̂ and the divergence mark the end?")[1].splitlines()[1:]
    ends = summary["critical_period_end"].sel(lr_schedule="continue").values
    for b, end, said in zip(BATCHES, ends, ("before the end", "before the end",
                                            "after the end"), strict=True):
        (line,) = [v for v in verdicts if v.startswith(f"  batch {b}, continue: ")]
        assert f"λ̂ trunk {20 - end:+.1f} [" in line and line.count(said) == 2, line
    assert "λ̂ trunk +2.6 [0.05, 5.1]" in printed  # 2.6 − hypot(2.5, 0.5), no wider
    assert not any(", restart: " in v for v in verdicts)  # no end to compare with
    assert "power --noise-from" not in printed  # every offset is called: nothing to size


def test_the_markers_answer_counts_the_offsets_told_from_the_end_and_their_flags() -> None:
    """One line per kind of marker over every cell with a located end: how many offsets
    exclude 0, which, and how many of those rest on a flagged knee. Every seed's λ̂ bends at
    epoch 20 here: before the ends of batch 32 and 64, after batch 128's."""
    from critperiods.results import report_page

    cube = flat_restart(synthetic_cube(with_div=False))
    summary = critical_period_summary(cube)
    (llc,) = tables.marker_tally(summary)  # no divergence: no line for it
    assert llc.startswith("λ̂ knees: 6 of 6 offsets from the end exclude 0 (batch 32, "
                          "continue, trunk: before; batch 32, continue, never-blurred: before")
    assert "batch 128, continue, trunk: after" in llc and "flagged" not in llc
    summary["llc_knee_sharp_within_noise"][:] = 1
    (llc,) = tables.marker_tally(summary)
    assert llc.endswith("3 of them on flagged knees (within-noise); all 6 hold after Holm's "
                        "correction for the run's 6 offsets"), llc
    # one offset told from the end, on a flagged knee; a cube from before Holm's correction
    one = summary.drop_vars([v for v in summary.data_vars
                             if str(v).endswith("_p_holm")]).copy(deep=True)
    for name in ("llc_knee_minus_end_trunk_interval", "llc_knee_minus_end_sharp_interval"):
        one[name][:] = [-1.0, 1.0]
    one["llc_knee_minus_end_sharp_interval"].loc[{"batch_size": BATCHES[2],
                                                   "lr_schedule": "continue"}] = [0.5, 9.0]
    (llc,) = tables.marker_tally(one)
    assert llc.startswith(f"λ̂ knees: 1 of 6 offsets from the end exclude 0 (batch "
                          f"{BATCHES[2]:g}, continue, never-blurred: after), on a flagged knee "
                          "(within-noise); the other 5 include 0"), llc
    answer = report_page.answer_lines(cube.merge(summary))
    assert "* **Do λ̂ and the divergence mark the end?** λ̂ knees: 6 of 6" in "\n".join(answer)
    assert tables.marker_tally(summary.drop_vars("llc_knee_minus_end_trunk")) == []

def test_the_short_answer_does_not_call_one_seed_or_no_accuracy_an_absence() -> None:
    """With one seed the deficits have no interval, and with no final accuracy there is no
    deficit: the short answer says the runs cannot tell, not that there is no critical
    period; only intervals that include 0 earn "no critical period to locate"."""
    from critperiods.results.report_page import short_answer

    cube = synthetic_cube(with_llc=False, with_div=False)
    one = cube.isel(seed=[0])
    said = short_answer(one.merge(critical_period_summary(one)))
    assert "have no interval: fewer than two seeds have both the earliest and the latest " \
        "switch, so these runs cannot tell a critical period from none" in said, said
    assert f"points at batch sizes {BATCHES[0]:g}, {BATCHES[1]:g}, {BATCHES[2]:g})" in said
    assert "no critical period" not in said
    blank = cube.copy(deep=True)
    blank["final_test_accuracy"][:] = np.nan
    said = short_answer(blank.merge(critical_period_summary(blank)))
    assert "no batch size has a deficit to measure" in said, said
    flat = cube.copy(deep=True)
    flat["final_test_accuracy"][:] = 0.8 + 0.01 * flat["seed"]
    said = short_answer(flat.merge(critical_period_summary(flat)))
    assert said.endswith("no batch size has a deficit whose interval lies above 0: no "
                         "critical period to locate here."), said


def test_the_short_answer_says_whether_the_markers_mark_the_end() -> None:
    """The first page's short answer answers the question's third part too: it names the
    markers told from the end on clear knees; with every such call on a flagged knee it says
    the seeds cannot tell; and it names where the divergence drop follows the rate."""
    from critperiods.results.report_page import short_answer

    cube = flat_restart(synthetic_cube(with_div=False))
    summary = critical_period_summary(cube)
    said = short_answer(cube.merge(summary))
    # every seed's λ̂ bends at epoch 20: before batch 32's and 64's ends, after batch 128's
    assert (f"Told apart from the end: λ̂'s knee on the trunk comes before the end at batch "
            f"{BATCHES[0]:g}, {BATCHES[1]:g} (continue) and after it at batch {BATCHES[2]:g} "
            "(continue); λ̂'s knee on the never-blurred run comes before the end") in said, said
    assert "cannot tell" not in said and "follows the learning rate" not in said
    for knee in ("llc_knee_trunk", "llc_knee_sharp"):
        summary[f"{knee}_within_noise"][:] = 1
    said = short_answer(cube.merge(summary))
    assert said.endswith("Whether λ̂ marks the end, these seeds cannot tell: every offset "
                         "from the end includes 0 or rests on a flagged knee."), said
    cube = flat_restart(synthetic_cube())
    summary = critical_period_summary(cube)
    drop = summary["divergence_drop_epoch"]
    drop.loc[{"lr_schedule": "continue"}] = [4.0, 3.0, 2.5]
    drop.loc[{"lr_schedule": "restart"}] = [np.nan, np.nan, 3.5]
    said = short_answer(cube.merge(summary))
    assert said.endswith(f"the divergence drop follows the learning rate at batch "
                         f"{BATCHES[0]:g}, {BATCHES[1]:g}: it never halves with the rate "
                         "restarted."), said
    # where the drop follows the rate, a continue drop is that confound, not a marker
    assert f"the divergence drop comes before the end at batch {BATCHES[0]:g}" not in said
    # a call of the restart schedule alone is named as such, not as the decaying rate's
    restart = summary.copy(deep=True)
    for offset in ("llc_knee_minus_end_trunk", "llc_knee_minus_end_sharp",
                   "divergence_drop_minus_end"):
        restart[offset] = restart[offset].fillna(1.0)
        restart[f"{offset}_interval"].loc[{"lr_schedule": "continue"}] = [-50.0, 50.0]
        restart[f"{offset}_interval"].loc[{"lr_schedule": "restart"}] = [-50.0, 50.0]
    restart["llc_knee_minus_end_trunk_interval"].loc[{"lr_schedule": "restart",
                                                      "batch_size": BATCHES[0]}] = [0.5, 9.0]
    restart["critical_period_end"].loc[{"lr_schedule": "restart"}] = 10.0
    restart["permanent_deficit_interval"].loc[{"lr_schedule": "restart"}] = [0.01, 0.05]
    said = short_answer(cube.merge(restart))
    assert (f"λ̂'s knee on the trunk comes after the end at batch {BATCHES[0]:g} (restart)"
            in said), said
    # without λ̂ and divergences, the short answer stops at the restart
    plain = flat_restart(synthetic_cube(with_llc=False, with_div=False))
    assert "marks the end" not in short_answer(plain.merge(critical_period_summary(plain)))


def test_an_offset_told_from_0_only_by_its_own_interval_is_not_told_apart_from_the_end(
) -> None:
    """Nine offsets at 90 % each: about one excludes 0 by chance. The summary stores each
    offset's p-value and Holm's adjustment over all of them; an offset whose own interval
    excludes 0 but whose adjusted p-value is not below 10 % is said to be so in the verdict
    and the tally, and the short answer does not tell that marker from the end."""
    from critperiods.results.report_page import _offsets_caveat, short_answer

    cube = flat_restart(synthetic_cube(with_div=False))
    summary = critical_period_summary(cube)
    offsets = ("llc_knee_minus_end_trunk", "llc_knee_minus_end_sharp")
    p = np.stack([summary[f"{o}_p"].values for o in offsets])
    assert np.isfinite(p).sum() == 6 and (p < 0.1).sum() == 6  # every interval excludes 0
    holm = np.stack([summary[f"{o}_p_holm"].values for o in offsets])
    np.testing.assert_allclose(holm[np.isfinite(holm)],
                               holm_adjusted(p[np.isfinite(p)]))
    assert summary["llc_knee_minus_end_trunk_p_holm"].attrs["tests"] == 6
    assert (summary["llc_knee_minus_end_trunk"].attrs["ancillary_variables"]
            == "llc_knee_minus_end_trunk_interval llc_knee_minus_end_trunk_p "
               "llc_knee_minus_end_trunk_p_holm")
    late = {"batch_size": BATCHES[2], "lr_schedule": "continue"}
    summary["llc_knee_minus_end_trunk_p_holm"].loc[late] = 0.3  # as if chance among many
    (llc,) = tables.marker_tally(summary)
    assert llc.endswith("; 5 of the 6 hold after Holm's correction for the run's 6 offsets"), llc
    verdict = tables.marker_verdicts(summary)[(BATCHES[2], "continue")]
    assert "after the end by its own interval only (Holm-adjusted p 0.3)" in verdict, verdict
    said = short_answer(cube.merge(summary))
    assert f"λ̂'s knee on the trunk comes before the end at batch {BATCHES[0]:g}, " \
           f"{BATCHES[1]:g} (continue)" in said, said
    assert f"and after it at batch {BATCHES[2]:g}" not in said.split("never-blurred")[0]
    assert ("the other offset from the end includes 0 or is within what chance gives among 6 "
            "offsets (Holm's correction)") in said, said
    for o in offsets:
        summary[f"{o}_p_holm"][:] = 0.5
    said = short_answer(cube.merge(summary))
    assert said.endswith("Whether λ̂ marks the end, these seeds cannot tell: every offset from "
                         "the end includes 0 or is within what chance gives among 6 offsets "
                         "(Holm's correction)."), said
    (caveat,) = _offsets_caveat(cube.merge(summary))
    assert "6 tests of one question" in caveat and "up to 10 % of them may exclude 0" in caveat


def test_the_markers_answer_says_where_the_divergence_drop_follows_the_learning_rate() -> None:
    """A distance that halves with the rate decaying but never with it restarted is the
    learning-rate confound, not a marker of the end: the tally's last line names those batch
    sizes, and says nothing where the restart halves too."""
    summary = critical_period_summary(flat_restart(synthetic_cube()))
    drop = summary["divergence_drop_epoch"]
    drop.loc[{"lr_schedule": "continue"}] = [4.0, 3.0, 2.5]
    drop.loc[{"lr_schedule": "restart"}] = [np.nan, np.nan, 3.5]
    last = tables.marker_tally(summary)[-1]
    assert last.startswith("divergence drops follow the learning rate: at batch 32, 64 the "
                           "distance halves with the rate decaying (continue) but never with "
                           "it restarted"), last
    drop.loc[{"lr_schedule": "restart"}] = [5.0, 4.0, 3.5]
    assert not any("follow the learning rate" in line for line in tables.marker_tally(summary))


def test_summarize_recomputes_a_cube_without_the_within_noise_flag(tmp_path, capsys) -> None:
    """A cube aggregated before the within-noise flag is recomputed, so a knee on a line
    within its noise is marked as such rather than read as a bend."""
    from critperiods.__main__ import main

    cube = synthetic_cube(with_div=False)
    noise = xr.DataArray(np.random.default_rng(0).normal(0, 1.0, cube["llc_mean"].shape),
                         dims=cube["llc_mean"].dims, coords=cube["llc_mean"].coords)
    cube["llc_mean"] = (2 * cube["epoch"]).broadcast_like(cube["llc_mean"]) + noise
    summary = critical_period_summary(cube)
    old = cube.merge(summary).assign_attrs(summary_interval_method=INTERVAL_METHOD)
    old.drop_vars([v for v in summary.data_vars if str(v).endswith("_within_noise")]).to_netcdf(
        tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "statistics recomputed: this cube predates the flag of a λ̂ knee" in printed
    assert "~ within-noise knee:" in printed


def test_summarize_recomputes_a_cube_with_the_descent_but_without_its_knees(tmp_path,
                                                                           capsys) -> None:
    """A cube aggregated with ``llc.descent`` before the knees of λ̂ net of it is recomputed,
    so that they are fitted and join Holm's correction; the report's descent sentence points
    to their columns only where the cube has them."""
    from critperiods.__main__ import main
    from critperiods.results.report_page import descent_sentence

    _, cube = llc_cube_with_the_descent()
    old = cube.drop_vars([v for v in cube.data_vars if str(v).startswith("llc_net_")])
    assert "*net of descent* columns" in descent_sentence(cube)
    assert "net of descent" not in descent_sentence(old)
    old.assign_attrs(summary_interval_method=INTERVAL_METHOD).to_netcdf(tmp_path / "old.nc")
    assert main(["summarize", str(tmp_path / "old.nc")]) == 0
    printed = capsys.readouterr().out
    assert "statistics recomputed: this cube predates the knees of λ̂ net of" in printed
    assert "llc_net_trunk" in printed


def test_where_the_drift_raised_the_loss_the_report_says_the_step_is_past_its_limit() -> None:
    """A noise-free gradient step raises the localised loss only beyond its stability limit:
    where ``llc_descent`` is above 0 the descent sentence (the report's λ̂ caveat, and
    ``summarize``) says where, and that ε exceeds 4 / (nβ λ_max + γ) there; where the drift
    only lowered the loss it says nothing of it."""
    from critperiods.results.report_page import descent_sentence

    _, cube = llc_cube_with_the_descent()
    assert "raised the loss" not in descent_sentence(cube)
    rising = cube.copy()
    rising["llc_descent"] = cube["llc_descent"].where(
        (cube.batch_size != 64) | ~cube.epoch.isin([55, 60]), 5.0).where(
        cube["llc_mean"].notnull())
    said = descent_sentence(rising)
    assert " the drift raised the loss instead (batch 64 at epochs 55, 60): " in said
    assert "ε > 4 / (nβ λ_max + γ)" in said


def test_where_the_step_is_past_its_stability_limit_the_report_says_where_and_below_what(
        tmp_path, capsys) -> None:
    """Estimates flagged ``unstable_step`` are named by batch size and epoch in the report's
    λ̂ caveat and by ``summarize``, with the smallest limit ``4 / (nβ λ_max + γ)`` measured
    (a step below it keeps every checkpoint stable); a run with none flagged, or without
    ``llc_sharpness``, says nothing of it."""
    from critperiods.__main__ import main
    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results.report_page import _llc_caveat, stability_sentence

    cube = llc_cube_with_a_flagged_trunk_estimate()
    assert stability_sentence(cube) == ""  # no sharpness measured: nothing to say
    sharp = (cube.batch_size == 64) & cube.epoch.isin([55, 60]) & (cube.switch_epoch == 0)
    trunk = (cube.batch_size == 128) & (cube.epoch <= cube.switch_epoch)
    cube["llc_sharpness"] = xr.where(sharp | trunk, 30.0, 10.0).where(
        cube["llc_mean"].notnull())
    cube = cube.assign(llc_nbeta=1000.0, llc_gamma=100.0, llc_step_size=1e-4)
    # none flagged: the margin to the smallest limit, 4 / (1000 · 30 + 100)
    assert "No estimate's step size is past" in stability_sentence(cube)
    assert "the smallest limit is 0.00013, 1.3 times the step size" in stability_sentence(cube)
    # the minibatches' curvature noise lowers it: (nβ s / a)² = 0.25 at every checkpoint
    noisy = cube.assign(llc_sharpness_sd=0.5 * (1000 * cube["llc_sharpness"] + 100) / 1000)
    assert "the smallest limit is 0.00011, 1.1 times the step size" in stability_sentence(noisy)
    cube = cube.assign(llc_step_size=2e-4)
    cube["llc_quality"] = cube["llc_quality"].where(~(sharp | trunk), FLAGS["unstable_step"])
    said = stability_sentence(cube)
    trunk_epochs = cube.epoch.values[cube.epoch.values <= 60]
    assert " is past the SGLD drift's stability limit at the checkpoint" in said
    assert ("(0.0002)" in said and ": batch 64: 6 (never-blurred run at epochs 55, 60), batch "
            f"128: {3 * len(trunk_epochs)} (trunk at epochs 0–60). " in said)
    assert "left out of the λ̂ markers and knees" in said
    assert "The smallest limit measured is 0.00013: " in said
    assert said in " ".join(_llc_caveat(cube))
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)
    assert main(["summarize", str(path)]) == 0
    assert "stability limit at the checkpoint" in " ".join(capsys.readouterr().out.split())
    assert stability_sentence(cube.drop_vars("llc_sharpness")) == ""


def test_summarize_reads_flagged_estimates_in_only_where_asked(tmp_path, capsys) -> None:
    """``summarize --read-flagged unstable_step`` recomputes the statistics with the
    estimates whose only flag that is taken in: batch 128's trunk, all of it flagged, gets
    a knee back; the flag counts and the stability sentence stay the estimates' own, and
    the output says what it took in. A cube without λ̂ flags, or an unknown flag, gets one
    line."""
    import pandas as pd

    from critperiods.__main__ import main
    from critperiods.measure.llc.quality import FLAGS

    cube = llc_cube_with_a_flagged_trunk_estimate(raw=True)
    trunk = (cube.batch_size == 128) & (cube.epoch <= cube.switch_epoch)
    cube["llc_quality"] = cube["llc_quality"].where(
        ~trunk, cube["llc_quality"] + FLAGS["unstable_step"])
    cube["llc_sharpness"] = xr.where(trunk, 30.0, 10.0).where(cube["llc_mean"].notnull())
    cube = cube.assign(llc_nbeta=1000.0, llc_gamma=100.0, llc_step_size=2e-4)
    path = tmp_path / "cube.nc"
    cube.merge(critical_period_summary(cube)).to_netcdf(path)
    knee = {}
    for read in ([], ["unstable_step"]):
        csv = tmp_path / f"{len(read)}.csv"
        assert main(["summarize", str(path), "--csv", str(csv),
                     *(["--read-flagged", *read] if read else [])]) == 0
        said = " ".join(capsys.readouterr().out.split())
        knee[len(read)] = pd.read_csv(csv).set_index(
            ["batch_size", "lr_schedule"])["llc_knee_trunk"]
        assert ("flagged unstable_step only taken in as valid (--read-flagged)" in said) \
            == bool(read)
        assert "unstable_step" in said.split("λ̂ estimates:")[1]  # the estimates' own flags
        assert "is past the SGLD drift's stability limit" in said
        assert "No estimate's step size is past" not in said
    assert np.isnan(knee[0][(128, "continue")]) and np.isfinite(knee[1][(128, "continue")])
    assert knee[0][(64, "continue")] == knee[1][(64, "continue")]  # nothing flagged there
    unflagged = tmp_path / "unflagged.nc"
    cube.drop_vars("llc_quality").to_netcdf(unflagged)
    with pytest.raises(SystemExit, match="has no λ̂ quality flags"):
        main(["summarize", str(unflagged), "--read-flagged", "negative"])
    with pytest.raises(SystemExit):
        main(["summarize", str(path), "--read-flagged", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_cube_that_reads_a_flag_in_counts_those_estimates_everywhere(monkeypatch, tmp_path,
                                                                     capsys) -> None:
    """``analysis.llc_read_flagged: [unstable_step]`` (``llc_quality``'s ``read_in_flags``)
    makes the stored statistics those ``summarize --read-flagged unstable_step`` gives the
    same cube without it: batch 128's flagged trunk gets its knee back, while an estimate
    flagged unstable_step and negative stays out. The report's count line and table say how
    many count though flagged, the figure draws them half-filled and still draws the other
    flagged estimates hollow, and the attribute survives the netCDF file."""
    from critperiods.__main__ import main
    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results import plots
    from critperiods.results.cube import open_cube
    from critperiods.results.report_page import landing_page, table_rst
    from critperiods.results.selection import READ_IN, valid_llc

    cube = llc_cube_with_a_flagged_trunk_estimate(raw=True)
    trunk = (cube.batch_size == 128) & (cube.epoch <= cube.switch_epoch)
    cube["llc_quality"] = cube["llc_quality"].where(
        ~trunk, cube["llc_quality"] + FLAGS["unstable_step"])  # seed 2, epoch 6: also negative
    plain = tmp_path / "plain.nc"
    cube.merge(critical_period_summary(cube)).to_netcdf(plain)
    assert main(["summarize", str(plain), "--read-flagged", "unstable_step", "--csv",
                 str(tmp_path / "asked.csv")]) == 0
    capsys.readouterr()
    cube["llc_quality"].attrs[READ_IN] = "unstable_step"
    valid = valid_llc(cube).sel(batch_size=128, lr_schedule="continue", switch_epoch=60)
    valid = valid.where(valid.epoch <= 60, drop=True)  # the trunk
    assert np.isfinite(valid.sel(seed=[0, 1])).all() and np.isnan(valid.sel(seed=2, epoch=6))
    path = tmp_path / "read.nc"
    cube.merge(critical_period_summary(cube)).to_netcdf(path)
    assert main(["summarize", str(path), "--csv", str(tmp_path / "stored.csv")]) == 0
    said = " ".join(capsys.readouterr().out.split())
    knees = [pd.read_csv(tmp_path / f"{name}.csv").set_index(
        ["batch_size", "lr_schedule"])["llc_knee_trunk"] for name in ("asked", "stored")]
    assert np.isfinite(knees[1][(128, "continue")])
    pd.testing.assert_series_equal(*knees)
    for name in ("asked", "stored"):  # each CSV says what its knees count
        assert set(pd.read_csv(tmp_path / f"{name}.csv")["llc_read_in_flags"]) == {
            "unstable_step"}
    assert main(["summarize", str(plain), "--csv", str(tmp_path / "none.csv")]) == 0
    assert pd.read_csv(tmp_path / "none.csv", keep_default_na=False)[
        "llc_read_in_flags"].eq("").all()
    trunk_estimates = int(trunk.sel(switch_epoch=60).sum()) * 3
    assert (f"except the {trunk_estimates - 1} flagged unstable_step only, which count "
            "(analysis.llc_read_flagged)") in said
    assert "(--read-flagged)" not in said
    # --read-flagged adds to what the cube reads in, and says what the stored reading was
    assert main(["summarize", str(path), "--read-flagged", "negative", "--csv",
                 str(tmp_path / "both.csv")]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert set(pd.read_csv(tmp_path / "both.csv")["llc_read_in_flags"]) == {
        "unstable_step negative"}
    assert ("estimates whose every flag is among unstable_step, negative taken in as valid "
            "(--read-flagged): the stored statistics, the report and the figures take in "
            "those flagged unstable_step only (analysis.llc_read_flagged))") in said
    assert ("every flagged estimate counts in the λ̂ markers and knees, its flags all read in "
            "(analysis.llc_read_flagged and --read-flagged: unstable_step, negative)") in said
    stored = open_cube(path)
    assert stored["llc_quality"].attrs[READ_IN] == "unstable_step"
    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    page = " ".join(landing_page(stored, figure, "described").split())
    assert (f"drawn hollow, except the {trunk_estimates - 1} flagged unstable_step only, "
            "which count (analysis.llc_read_flagged) and are drawn half-filled.") in page
    only = stored["llc_quality"].where(stored["llc_quality"].isin([0, 32])
                                       | stored["llc_quality"].isnull(), 32)
    only.attrs = stored["llc_quality"].attrs  # every flagged estimate read in, then
    assert tables.flagged_fate(stored.assign(llc_quality=only), drawn=True) == (
        "every flagged estimate counts in the λ̂ markers and knees, its flags all read in "
        "(analysis.llc_read_flagged: unstable_step) and drawn half-filled")
    # a run at chance: its branch's estimates do not count, read in or not
    branch = {"batch_size": 128, "switch_epoch": 0.0, "seed": 2}
    on_branch = ((stored.batch_size == 128) & (stored.switch_epoch == 0) & (stored.seed == 2)
                 & (stored.epoch > 0) & stored["llc_quality"].notnull())
    quality = stored["llc_quality"].where(~on_branch, FLAGS["unstable_step"])
    quality.attrs = stored["llc_quality"].attrs
    sharp = stored.assign(llc_quality=quality)
    m = int(on_branch.sel(lr_schedule="continue").sum())  # the schedules share switch 0
    assert m > 0 and tables.llc_read_in_count(sharp) == trunk_estimates - 1 + m
    assert tables.llc_read_in_count(with_a_run_at_chance(sharp, **branch)) == (
        trunk_estimates - 1)
    cells = [row for row in table_rst(stored).split("   * - ")[1:] if row.startswith("128")]
    assert all(f" (+{trunk_estimates - 1} counted) / " in row for row in cells), cells
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc(stored, tmp_path / "llc.png")
    def points(fillstyle: str) -> set[tuple[int, float, float]]:
        return {(i, float(x), round(float(y), 9)) for i, ax in enumerate(figures[0].axes)
                for line in ax.get_lines()
                if line.get_marker() == "o" and line.get_fillstyle() == fillstyle
                for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}

    panel = list(stored.batch_size.values).index(128)
    assert {i for i, _, _ in points("left")} == {panel}
    assert len(points("left")) == trunk_estimates - 1
    # seed 2 at epoch 6, left out in every panel: at batch 128 unstable and negative
    assert {(i, x) for i, x, _ in points("full")} == {(i, 6.0) for i in range(3)}
    legend = [t.get_text() for t in figures[0].axes[-1].get_legend().get_texts()]
    assert "flagged unstable step only: counted (analysis.llc_read_flagged)" in legend
    assert "flagged estimate (negative, unstable step), left out" in legend


def test_the_report_says_which_calls_the_other_reading_of_unstable_step_would_change(
        tmp_path, capsys) -> None:
    """Beside the flag counts, the report and ``summarize`` say which markers' calls would
    change were the estimates flagged ``unstable_step`` alone read the other way: counted
    where the run leaves them out, left out where it counts them (the same changes,
    reversed). Nothing where no estimate carries the flag alone."""
    from critperiods.__main__ import main
    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results.flag_reading import LISTED, _calls, other_reading, reading_sentence
    from critperiods.results.report_page import landing_page
    from critperiods.results.selection import READ_IN

    cube = llc_cube_with_a_flagged_trunk_estimate(raw=True)
    trunk = (cube.batch_size == 128) & (cube.epoch <= cube.switch_epoch)
    cube["llc_quality"] = cube["llc_quality"].where(
        ~trunk, cube["llc_quality"] + FLAGS["unstable_step"])
    left_out = cube.merge(critical_period_summary(cube))
    cube["llc_quality"].attrs[READ_IN] = "unstable_step"
    counted = cube.merge(critical_period_summary(cube))
    # the other reading of each is the other cube's
    assert _calls(other_reading(left_out, "unstable_step")) == _calls(counted)
    assert _calls(other_reading(counted, "unstable_step")) == _calls(left_out)
    ours, theirs = _calls(left_out), _calls(counted)
    assert (128, "continue", "llc_knee_trunk") in theirs
    assert (128, "continue", "llc_knee_trunk") not in ours
    changed = sum(ours.get(k) != theirs.get(k) for k in set(ours) | set(theirs))
    n = int(trunk.sel(switch_epoch=60).sum()) * 3 - 1  # seed 2 at epoch 6 is also negative
    said = reading_sentence(left_out)
    assert said.startswith(" Reading in ``unstable_step`` (``analysis.llc_read_flagged: "
                           f"[unstable_step]``) would count {n} more estimates and change "
                           f"{changed} of the markers' calls: ")
    assert "batch 128, continue, λ̂ trunk: no offset → after the end" in said
    assert said.count(" → ") == min(changed, LISTED)
    back = reading_sentence(counted)
    assert back.startswith(" Leaving ``unstable_step`` out (``analysis.llc_read_flagged: []``) "
                           f"would drop {n} estimates and change {changed} of the markers' "
                           "calls: ")
    # the setting it names keeps the flags the cube reads in already
    heavy = left_out["llc_quality"].copy()
    heavy.attrs[READ_IN] = "heavy_tailed"
    assert reading_sentence(left_out.assign(llc_quality=heavy)).startswith(
        " Reading in ``unstable_step`` (``analysis.llc_read_flagged: [heavy_tailed, "
        "unstable_step]``) would count")
    assert "batch 128, continue, λ̂ trunk: after the end" in back and "→ no offset" in back
    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    assert said in landing_page(left_out, figure, "described")
    path = tmp_path / "cube.nc"
    left_out.to_netcdf(path)
    assert main(["summarize", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(said.replace("``", "").split()) in out
    plain = cube.merge(critical_period_summary(cube)).assign(
        llc_quality=cube["llc_quality"].where(~trunk, 0.0))
    assert reading_sentence(plain) == ""  # nothing carries the flag
    both = left_out.assign(llc_quality=left_out["llc_quality"].where(
        ~trunk, FLAGS["unstable_step"] | FLAGS["heavy_tailed"]))
    assert reading_sentence(both) == ""  # every one so flagged stays out either way


def test_summarize_points_an_undecided_marker_to_the_power_command(tmp_path, capsys) -> None:
    """λ̂ bends at epoch 25, batch 64's end: its offset includes 0, and `summarize` says how
    to ask whether this grid could have told them apart."""
    from critperiods.__main__ import main

    cube = flat_restart(synthetic_cube(with_div=False))
    epochs = cube["epoch"].values
    cube["llc_mean"].values[:] = np.where(epochs < 25, epochs, 25 + 0.1 * (epochs - 25))
    path = tmp_path / "cube.nc"
    cube.merge(critical_period_summary(cube)).assign_attrs(
        summary_interval_method=INTERVAL_METHOD).to_netcdf(path)
    assert main(["summarize", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("In short: with the learning rate decaying, smaller batches end")
    (line,) = [v for v in printed.splitlines() if v.startswith("  batch 64, continue: ")]
    assert "includes 0" in line
    assert f"python -m critperiods power --noise-from {path}" in printed
    with pytest.raises(SystemExit, match=r"--csv .*: a folder; give a file name"):
        main(["summarize", str(path), "--csv", str(tmp_path)])  # was an IsADirectoryError
    capsys.readouterr()
    (tmp_path / "a.csv").write_text("")
    for command in (["summarize", str(path)], ["compare", str(path), str(path)]):
        with pytest.raises(SystemExit, match=r"--csv .*/x\.csv: .*a\.csv is a file, not a "
                                             "folder"):
            main([*command, "--csv", str(tmp_path / "a.csv" / "x.csv")])
        assert capsys.readouterr().out == ""  # refused before any of the work


def test_calibrate_llc_refuses_a_plot_it_cannot_write_before_sampling(tmp_path) -> None:
    """``calibrate-llc --out`` is checked before the sweep (minutes at real settings): a
    folder, a path through a file and a suffix matplotlib would not save under that name
    are refused in one line; the types it names all are ones matplotlib saves."""
    import matplotlib.figure

    from critperiods.__main__ import main
    from critperiods.cli.common import IMAGE_TYPES

    piece = tmp_path / "not_even_read.pt"  # the check comes before the piece is opened
    with pytest.raises(SystemExit, match=r"e4\.llc\.nc: not a checkpoint file \(\.pt"):
        main(["calibrate-llc", str(tmp_path / "e4.llc.nc"), "--epoch", "4"])
    (tmp_path / "a.csv").write_text("")
    for out, said in ((tmp_path, "a folder; give a file name, e.g. "),
                      (tmp_path / "a.csv" / "x.png", "a.csv is a file, not a folder"),
                      (tmp_path / "plot", "not a file type this can write; give one of .png"),
                      (tmp_path / "plot.txt", "(e.g. " + str(tmp_path / "plot.png") + ")"),
                      (tmp_path / "ok.png", "not_even_read.pt: not a piece")):
        with pytest.raises(SystemExit) as stop:
            main(["calibrate-llc", str(piece), "--epoch", "1", "--out", str(out)])
        assert said in str(stop.value), stop.value
    saved = matplotlib.figure.Figure().canvas.get_supported_filetypes()
    assert set(IMAGE_TYPES) <= set(saved)


def test_a_seed_without_its_latest_switch_run_keeps_its_trunk() -> None:
    """The trunk is read from the run with the latest switch; a seed whose run there is
    missing keeps its trunk λ̂ from its earlier switches' runs, which hold the same
    estimates up to their switch (it lost its whole trunk, and the knee moved)."""
    from critperiods.results.selection import llc_trunk_by_seed

    cube = synthetic_cube(with_div=False)
    b, last = BATCHES[0], cube["switch_epoch"].values.max()
    seed = cube["seed"].values[1]
    full = llc_trunk_by_seed(cube, b)
    gap = cube.copy(deep=True)
    gap["llc_mean"] = gap["llc_mean"].where(~((gap.switch_epoch == last) & (gap.seed == seed)))
    kept = llc_trunk_by_seed(gap, b).sel(seed=seed)
    below = full["epoch"] <= cube["switch_epoch"].values[-2]  # held by an earlier switch too
    xr.testing.assert_equal(kept.where(below, drop=True),
                            full.sel(seed=seed).where(below, drop=True))
    assert kept.where(~below, drop=True).isnull().all()  # only the missing run held these


def test_the_curves_keep_a_seed_whose_latest_switch_run_is_missing() -> None:
    """The figures draw each run's trunk from the latest switch's run, as the markers read
    it; a seed without that run keeps its trunk in the curves' means too (it was left out,
    so the drawn trunk followed the other seeds' mean while the markers counted it)."""
    from critperiods.results.plots import _run_means

    switches, seeds, epochs = np.array([0.0, 4.0, 8.0]), np.arange(3), np.arange(0.0, 13.0)
    # the shared trunk (seed-dependent) up to each run's switch, then the run's own values
    trunk = epochs[None, :] + 10.0 * seeds[:, None] ** 2
    own = 100.0 + switches[:, None, None] + trunk[None]
    values = np.where(epochs <= switches[:, None, None], trunk[None], own)
    panel = xr.DataArray(values, dims=("switch_epoch", "seed", "epoch"),
                         coords={"switch_epoch": switches, "seed": seeds, "epoch": epochs})
    gap = panel.where(~((panel.switch_epoch == 8.0) & (panel.seed == 1)))
    full, kept = _run_means(panel, switches), _run_means(gap, switches)
    for k in (4.0, 8.0):
        xr.testing.assert_allclose(kept[k].sel(epoch=slice(None, 4.0)),
                                   full[k].sel(epoch=slice(None, 4.0)))
    # seed 1's trunk beyond epoch 4 only its missing run held: the adjusted mean fills it
    np.testing.assert_allclose(kept[8.0].sel(epoch=slice(None, 8.0)),
                               full[8.0].sel(epoch=slice(None, 8.0)))


def test_two_switch_epochs_place_no_end() -> None:
    """Through two switch epochs every kink between them fits exactly, so the hinge does not
    place an end (it reported the earliest switch, located, with offsets from it), and the
    half-deficit epoch would be their midpoint whatever the data: both NaN, each with its
    reason; the short answer says the deficit is above 0 but its end cannot be placed. The
    λ̂ knee and the divergence drop are still found, and their offsets from the end are NaN
    for that reason (they were NaN with none given)."""
    from critperiods.results.report_page import short_answer

    cube = flat_restart(synthetic_cube())
    switches = cube["switch_epoch"].values
    two = cube.sel(switch_epoch=[switches[0], switches[-1]])
    summary = critical_period_summary(two)
    cont = summary.sel(lr_schedule="continue")
    assert (cont["permanent_deficit_interval"].sel(bound="lower") > 0).all()
    assert cont["critical_period_end"].isnull().all()
    assert cont["half_deficit_epoch"].isnull().all()
    assert "2 switch epoch(s) with a final accuracy: a hinge's kink needs 3" in summary[
        "critical_period_end"].attrs["missing"]
    for marker, offset in (("llc_knee_trunk", "llc_knee_minus_end_trunk"),
                           ("divergence_drop_epoch", "divergence_drop_minus_end")):
        assert cont[marker].notnull().all() and cont[offset].isnull().all()
        assert f"{BATCHES[0]:g}, continue" in summary[offset].attrs["missing"]
        assert "no critical_period_end (2 switch epoch(s)" in summary[offset].attrs["missing"]
    said = short_answer(two.merge(summary))
    assert "the deficit lies above 0 at batch sizes" in said and \
        "these switch epochs cannot place its end" in said, said
    row = next(v for v in tables.format_table(summary).splitlines()
               if v.split()[:2] == [f"{BATCHES[0]:g}", "continue"])
    assert row.split()[2:6] == ["-", "no", "end", "(<"], row
    three = critical_period_summary(cube.sel(switch_epoch=switches[[0, 1, -1]]))
    assert three["critical_period_end"].sel(lr_schedule="continue").notnull().all()


def test_a_restart_with_no_distance_to_halve_is_not_said_to_never_halve() -> None:
    """Where every restarted run after switch 0 diverged, the restart has no distance at
    the horizon to halve: its drop is NaN for that reason (said so), and the continue drop
    there is not called the learning-rate confound ("never halves with the rate
    restarted")."""
    cube = flat_restart(synthetic_cube())
    last = BATCHES[-1]
    later = cube["switch_epoch"].values[1:]
    blown = with_a_run_at_chance(cube, batch_size=last, lr_schedule="restart",
                                 switch_epoch=list(later))
    summary = critical_period_summary(blown)
    assert np.isnan(float(summary["divergence_drop_epoch"].sel(batch_size=last,
                                                              lr_schedule="restart")))
    assert (f"batch {last:g}, restart: fewer than two switch epochs with a distance at the "
            "horizon") in summary["divergence_drop_epoch"].attrs["missing"]
    assert last not in tables.drops_follow_the_rate(blown.merge(summary))


def test_a_restart_that_gains_accuracy_is_said_as_a_gain_not_as_not_told() -> None:
    """A restart deficit whose interval lies below 0 is a gain: beside one that survives,
    the short answer says so, not "not told from 0" (which it keeps for an interval that
    includes 0)."""
    from critperiods.results.report_page import _restart_sentence

    verdicts = {64.0: "below 0 (a gain): -2.7 pp", 128.0: "not told from 0: 0.3 pp",
                256.0: "survives: 7.2 pp"}
    said = _restart_sentence(verdicts, [64.0, 128.0, 256.0], 3)
    assert said == ("The deficit survives restarting the rate at the switch at batch 256; it "
                    "is not told from 0 with it restarted at batch 128; it is below 0 with it "
                    "restarted (a gain) at batch 64"), said


def test_the_landing_page_leads_with_a_short_answer() -> None:
    """The first page opens with the answer in a sentence or two: which way the end moves
    with the batch size (no direction where the exponent's interval includes 0), and whether
    the deficit survives restarting the rate everywhere, nowhere or only at some batch sizes,
    and how much the restart removes (paired by seed) against what can remain."""
    from critperiods.results.report_page import short_answer

    cube = with_schedules(synthetic_cube(with_llc=False, with_div=False))
    cube = cube.merge(critical_period_summary(cube))

    def said(p, interval, restart_lower, restart_upper=0.05, removed_lower=0.04) -> str:
        c = cube.copy(deep=True)
        c["batch_size_exponent"].loc[{"lr_schedule": "continue"}] = p
        c["batch_size_exponent_interval"].loc[{"lr_schedule": "continue"}] = interval
        c["permanent_deficit"].loc[{"lr_schedule": "restart"}] = 0.01
        lower = c["permanent_deficit_interval"].sel(lr_schedule="restart").copy()
        lower[:, 0] = restart_lower
        lower[:, 1] = restart_upper
        c["permanent_deficit_interval"].loc[{"lr_schedule": "restart"}] = lower
        c["restart_deficit_reduction"][:] = 0.07
        c["restart_deficit_reduction_interval"].loc[{"bound": "lower"}] = removed_lower
        c["restart_deficit_reduction_interval"].loc[{"bound": "upper"}] = 0.1
        return short_answer(c)

    gone = said(-0.5, [-0.71, -0.29], [-0.01, -0.01, -0.01])
    assert gone.startswith("**In short:** with the learning rate decaying, smaller batches end "
                           "their critical period later (end ∝ batch size^-0.50, 90 % interval "
                           f"[-0.71, -0.29], over {cube.sizes['seed']} seeds).")
    # the restart bounds the deficit (the intervals' top, 5 pp) beside the continued one;
    # paired by seed it removes 7 pp, at least 4 pp: told from 0, but not more than the 5 pp
    # that can remain: part of the deficit is the confound
    continued = 100 * cube["permanent_deficit"].sel(lr_schedule="continue").values
    span = f"{continued.min():.1f}" + ("" if f"{continued.min():.1f}" == f"{continued.max():.1f}"
                                       else f"–{continued.max():.1f}")
    assert ("leaves no deficit these seeds tell above 0 at any batch size (at most 5.0 pp; "
            f"{span} pp with the rate continued); paired by seed, the restart lowers it by "
            "7.0 pp, told from 0 at each: part of what looks like a critical period here is "
            "the learning-rate confound, and a remainder up to that bound is not ruled "
            "out") in gone
    assert "most of" not in gone
    # it removes at least 4 pp where at most 3 pp can remain: most
    most = said(-0.5, [-0.71, -0.29], [-0.01, -0.01, -0.01], 0.03)
    assert ("(at most 3.0 pp; " in most and "the restart lowers it by 7.0 pp, at each batch "
            "size more than can remain: most of what looks like a critical period here is the "
            "learning-rate confound") in most
    # an interval wholly below 0 (a gain) is told from 0, not "not told from 0"
    gain = said(-0.5, [-0.71, -0.29], [-0.03, -0.03, -0.03], -0.01)
    assert "leaves no deficit these seeds tell above 0" in gain and "at most -1.0 pp" in gain
    # a reduction not told from 0 at batch 32: an open question there
    unsure = said(-0.5, [-0.71, -0.29], [-0.01, -0.01, -0.01],
                  removed_lower=np.array([-0.01, 0.04, 0.04]))
    assert (f"but at batch {BATCHES[0]:g} they do not tell it from the continued deficit "
            "either (paired by seed): whether a critical period remains is open") in unsure
    assert "confound" not in unsure
    either = said(-0.43, [-0.96, 0.09], [0.002, 0.002, 0.002])
    assert ("with the learning rate decaying, these seeds cannot tell whether smaller batches "
            "end their critical period later or earlier (end ∝ batch size^-0.43, 90 % interval "
            "[-0.96, 0.09], over 3 seeds, which includes 0)") in either
    assert "survives restarting the rate at the switch at every batch size" in either
    some = said(0.3, [0.1, 0.5], [0.002, -0.01, -0.01])
    assert "end their critical period earlier" in some
    assert (f"The deficit survives restarting the rate at the switch at batch {BATCHES[0]:g}; "
            f"it is not told from 0 with it restarted at batch sizes {BATCHES[1]:g}, "
            f"{BATCHES[2]:g} (at most 5.0 pp;") in some
    assert "no power law" in said(np.nan, [np.nan, np.nan], [-0.01, -0.01, -0.01])
    assert "no interval (one seed)" in said(-0.5, [np.nan, np.nan], [-0.01, -0.01, -0.01])
    assert "unbounded interval" in said(-0.5, [-np.inf, 0.3], [-0.01, -0.01, -0.01])
    # no deficit with the rate continued: nothing for the restart to explain
    flat = cube.copy(deep=True)
    flat["permanent_deficit_interval"].loc[{"lr_schedule": "continue"}] = [[-0.01, 0.02]] * 3
    assert short_answer(flat) == ("**In short:** with the learning rate decaying, no batch "
                                  "size has a deficit whose interval lies above 0: no "
                                  "critical period to locate here.")
    # located at one batch size only: the restart's verdict is about that one
    one = cube.copy(deep=True)
    one["permanent_deficit_interval"].loc[{"lr_schedule": "continue",
                                            "batch_size": BATCHES[1:]}] = [[-0.01, 0.02]] * 2
    one["permanent_deficit_interval"].loc[{"lr_schedule": "restart"}] = [[-0.01, 0.05]] * 3
    assert ("leaves no deficit these seeds tell above 0 at any batch size that has one, "
            f"{BATCHES[0]:g} (at most 5.0 pp;") in short_answer(one)


def test_without_an_exponent_the_short_answer_says_whether_the_ends_are_ordered() -> None:
    """Two located ends give no power law; the answer still gives them and says whether
    their intervals overlap (then these seeds do not order them)."""
    from critperiods.results.report_page import short_answer

    cube = synthetic_cube(with_llc=False, with_div=False)
    cube = cube.merge(critical_period_summary(with_schedules(cube)))
    cube["batch_size_exponent"].loc[{"lr_schedule": "continue"}] = np.nan

    def with_ends(*intervals):
        c = cube.copy(deep=True)
        for b, interval in zip(BATCHES, intervals, strict=True):
            c["critical_period_end_interval"].loc[{"lr_schedule": "continue",
                                                   "batch_size": b}] = interval
        return short_answer(c)

    overlap = with_ends([3.0, 16.0], [1.5, 9.5], [2.0, 12.0])
    assert "(ends " in overlap and ", whose intervals overlap: these seeds do not order them" \
        in overlap
    apart = with_ends([20.0, 30.0], [10.5, 19.5], [1.5, 9.5])
    assert "whose intervals do not overlap" in apart and "[20.0, 30.0]" in apart
    some = with_ends([20.0, 30.0], [1.5, 9.5], [2.0, 12.0])
    assert "some of whose intervals overlap: these seeds do not order all of them" in some


def test_the_caveats_give_the_chance_of_a_call_at_some_batch_size() -> None:
    """Per-batch calls are one-sided 5 % tests: over 3 batch sizes, 1 − 0.95³ ≈ 14 %."""
    from critperiods.results.report_page import _per_batch_caveat

    cube = synthetic_cube(with_llc=False, with_div=False)
    said = _per_batch_caveat(cube)
    assert said and "over 3 batch sizes" in said[0] and "about 14 % of runs" in said[0]
    assert _per_batch_caveat(cube.isel(batch_size=[0])) == []


def test_the_llc_caveat_says_from_the_chains_distances_whether_they_still_spread() -> None:
    """The caveat reads ``llc_distance_growth`` over the distinct estimates (a trunk's
    repeat under every later switch counted once, as the flag counts do): how many grew by
    more than 10 %, the median and range (one value where all round alike), and, for plain
    SGLD at one setting, what a flat
    direction gives (1 − (1 − εγ/2)^(2t): +45 % at 30 + 60 steps of ε γ = 0.01); no growth
    above 10 %: no longer spreading, and short chains are no longer named among what moves
    λ̂; no variable: no sentence."""
    from critperiods.results.report_page import _llc_caveat, llc_relaxation
    from critperiods.results.tables import distinct_estimates, llc_flag_counts

    cube = synthetic_cube(with_div=False).assign_coords(draw=np.arange(90))
    growth = xr.where(cube.llc_mean.notnull(), 0.45, np.nan)
    growth[0, 0, 0, 10] = 0.02  # one estimate of the never-blurred run that relaxed
    cube = cube.assign(llc_distance_growth=growth, llc_quality=growth * 0, llc_step_size=1e-4,
                       llc_gamma=100.0, llc_burn_in=30)
    n = int(np.isfinite(distinct_estimates(cube, "llc_distance_growth")).sum())
    assert n == llc_flag_counts(cube)["estimates"] < int(growth.notnull().sum())
    said = llc_relaxation(cube)
    assert said.startswith("The chains' squared distance from the checkpoint grew by more "
                           f"than 10 % from the first to the second half of the draws in "
                           f"{n - 1} of {n} unflagged estimates (median +45 %, range +2 to "
                           "+45 %;")
    assert ("their weights were still spreading, as where the loss is flat (+45 % at these "
            "settings: only the localisation pulls a chain back there, over ~1/(εγ) = 100 "
            "steps, and the chains ran 30 burn-in and 60 draw steps)") in said
    caveat = _llc_caveat(cube)[0]
    assert said in caveat and "coefficient: short chains, minibatch noise" in caveat
    settled = _llc_caveat(cube.assign(llc_distance_growth=growth * 0 + 0.02))[0]
    assert "coefficient: minibatch noise and checkpoints off their minima" in settled
    assert settled.endswith("and ``calibrate-llc --descent`` how much of it the chains' descent "
                            "from the checkpoint takes.")  # the probe that measures the latter
    unknown = _llc_caveat(cube.drop_vars("llc_distance_growth"))[0]  # nothing shows they settled
    assert "coefficient: short chains, minibatch noise" in unknown
    rms = cube.assign_attrs(config="llc:\n  sampler: rmsprop_sgld\n")
    assert "as where the loss is flat" not in llc_relaxation(rms)
    alike = llc_relaxation(cube.assign(llc_distance_growth=growth * 0 + 0.451))
    assert f" in {n} of {n} unflagged estimates (each +45 %; ``llc_distance_growth``)" in alike
    runaway = cube.assign(llc_quality=xr.where(growth > 0.1, 16.0, growth * 0))  # heavy-tailed
    assert " in 0 of 1 unflagged estimates (+2 %;" in llc_relaxation(runaway)
    rms_relaxed = rms.assign(llc_distance_growth=growth * 0 + 0.02)
    assert llc_relaxation(rms_relaxed).endswith("they were no longer spreading.")
    relaxed = llc_relaxation(cube.assign(llc_distance_growth=growth * 0 + 0.02))
    assert " in 0 of " in relaxed and relaxed.endswith(
        "they were no longer spreading (a direction the loss leaves flat gives +45 % at these "
        "settings).")
    assert llc_relaxation(cube.drop_vars("llc_distance_growth")) == ""


def test_the_llc_caveat_gives_the_monte_carlo_error_and_the_estimates_below_0_within_it(
) -> None:
    """Over the distinct counted estimates: ``llc_mcse``'s range and median, and how many
    λ̂ below 0 count because they lie within 2 MCSE of it; a flagged estimate is left out;
    no MCSE (an older cube): no sentence."""
    from critperiods.results.report_page import _llc_caveat, llc_error_sentence
    from critperiods.results.tables import llc_flag_counts

    cube = synthetic_cube(with_div=False)
    error = xr.where(cube.llc_mean.notnull(), 10.0, np.nan)
    error[0, 0, 0, 10] = 14.0  # the never-blurred run of the smallest batch, seed 0, epoch 10
    cube = cube.assign(llc_mcse=error, llc_quality=error * 0)
    n = llc_flag_counts(cube)["estimates"]
    said = llc_error_sentence(cube)
    assert said == (f"λ̂'s Monte Carlo error (``llc_mcse``, from the chains' draws) is 10–14 "
                    f"(median 10) over the {n} unflagged estimates: read a λ̂ as ± that.")
    assert said in _llc_caveat(cube)[0]
    low = cube.copy(deep=True)
    low["llc_mean"][0, 0, 0, 10] = -5.0
    assert llc_error_sentence(low).endswith(
        " 1 of them lies below 0 by less than 2 of its errors and counts: only a λ̂ further "
        "below is flagged negative.")
    far = low.copy(deep=True)  # 10 errors below 0: negative, counted only as read in
    far["llc_mean"][0, 0, 0, 10] = -140.0
    read = far.assign(llc_quality=xr.where(far.llc_mean < 0, 1.0, far.llc_quality))
    read["llc_quality"].attrs["read_in_flags"] = "negative"
    assert "below 0" not in llc_error_sentence(read) and f"the {n} counted" in \
        llc_error_sentence(read)
    flagged = low.assign(llc_quality=xr.where(low.llc_mean < 0, 1.0, low.llc_quality))
    assert f"draws) is 10 over the {n - 1} unflagged" in llc_error_sentence(flagged)
    assert "below 0" not in llc_error_sentence(flagged)
    assert llc_error_sentence(cube.drop_vars("llc_mcse")) == ""


def test_a_grid_of_three_switches_is_said_to_interpolate_the_end() -> None:
    """With as many switch epochs as the hinge has parameters the end cannot disagree with
    the data: the caveats say so; with more they do not."""
    from critperiods.results.report_page import _few_switches_caveat

    cube = synthetic_cube(with_llc=False, with_div=False)
    assert _few_switches_caveat(cube) == []
    three = _few_switches_caveat(cube.isel(switch_epoch=[0, 6, 12]))
    assert three and three[0].startswith("* 3 switch epochs:") and "interpolation" in three[0]
    assert "as many parameters" in three[0]
    two = _few_switches_caveat(cube.isel(switch_epoch=[0, 12]))
    assert "more parameters (level, kink, slope) than there are points" in two[0]


def test_the_landing_page_locates_no_end_where_there_is_no_deficit(tmp_path) -> None:
    """A restart whose curve is flat gets no end in the answer (a kink fitted to noise), as
    in the figures; the continue schedule's decline gets one."""
    from critperiods.results.report_page import answer_lines

    cube = flat_restart(synthetic_cube(with_llc=False, with_div=False))
    cube = cube.merge(critical_period_summary(cube))
    text = "\n".join(answer_lines(cube))
    assert text.count("continue: ends at epoch") == cube.sizes["batch_size"]
    assert text.count("restart: no end to locate. The deficit is not told from 0 under the "
                      "restart: 0.0 pp") == cube.sizes["batch_size"]
    from critperiods.results.report_page import table_rst

    rows = table_rst(cube).split("   * - ")[1:]
    restart = [r for r in rows if "     - restart\n" in r]
    assert len(restart) == cube.sizes["batch_size"]
    assert all("     - restart\n     - deficit not told from 0\n" in r for r in restart)
    assert not any("not told from 0" in r for r in rows if "     - continue\n" in r)
    lines = tables.format_table(cube).splitlines()[1:1 + 2 * cube.sizes["batch_size"]]
    assert [("not told from 0" in line) for line in lines] == [
        " restart " in line for line in lines]


def test_the_landing_page_lists_only_the_figures_the_run_drew(tmp_path) -> None:
    from critperiods.results.report_page import landing_page

    cube = synthetic_cube(with_llc=False, with_div=False)
    cube = cube.merge(critical_period_summary(cube))
    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    page = landing_page(cube, figure, "described",
                        drawn=["critical_period", "learning_curves", "divergence"])
    order = page.split("Figures, in reading order")[1].split("How the numbers")[0]
    # the report's own numbers (1a, 2, 4a), which captions and docs cite, not a running count
    assert "* 1a final sharp accuracy vs switch epoch (Critical period)" in order
    assert "* 2 learning curves (Training)" in order
    assert "* 4a distance to the always-blurred run (Divergence)" in order
    assert "Perturbations" not in order and "lambda-hat" not in order


def test_the_landing_page_says_its_words_before_its_answer_uses_them(tmp_path) -> None:
    """The answer's bullets speak of trunks, knees and offsets, which the table's legend
    defined only further down: a **Words.** line after the short answer defines them,
    only those of the stages the run has."""
    from critperiods.results.report_page import landing_page

    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    for full in (True, False):
        cube = synthetic_cube(with_llc=full, with_div=full)
        page = landing_page(cube.merge(critical_period_summary(cube)), figure, "described")
        said = page.split("**Words.**")[1].split("\n")[0]
        assert page.index("**In short:**") < page.index("**Words.**") < page.index(
            "**Answer from this run**")
        assert "*trunk*" in said and "*never-blurred run*" in said and "*deficit*" in said
        assert ("*knee*" in said) is full and ("*divergence drop*" in said) is full
        assert ("*offset*" in said) is full


def test_the_landing_page_opens_at_its_top_with_its_table_in_its_column(tmp_path) -> None:
    """Rendered as Snakemake renders it (docutils), the critical-period table sits in a
    block that scrolls sideways, and the page widens its column where the window has room,
    so the table never runs under the workflow graph beside it; a page taller than the
    window starts at its title, not scrolled past its question."""
    from docutils.core import publish_parts

    from critperiods.results.report_page import landing_page

    cube = synthetic_cube(with_llc=False, with_div=False)
    cube = cube.merge(critical_period_summary(cube))
    figure = tmp_path / "f.png"
    figure.write_bytes(b"\x89PNG")
    html = publish_parts(landing_page(cube, figure, "described"), writer="html")["body"]
    table = html.split("<h1>Critical-period table</h1>")[1]
    assert table.lstrip().startswith('<div style="overflow-x: auto"><table')
    assert table.split("</table>")[1].lstrip().startswith("</div>")
    assert "<th class=\"head\">end (epoch)</th>" in table.split("</table>")[0]
    assert "@media (min-width: 1400px) { .prose.max-w-lg { max-width: 48rem; } }" in html
    # Snakemake centres the page in a window-high box: a taller page would overflow upwards,
    # out of reach, unless it is centred only while it fits
    assert ".h-screen.items-center { align-items: flex-start; align-items: safe center; }" \
        in html


@pytest.mark.parametrize("llc, div", [(True, True), (True, False), (False, True),
                                      (False, False)])
def test_the_table_has_columns_only_for_the_markers_the_run_computed(llc, div) -> None:
    """A run without λ̂ (or divergences) gets no λ̂ (divergence) columns of n/a, and a line
    under the table says so and names the config key."""
    from critperiods.results.report_page import landing_page, table_rst

    cube = synthetic_cube(with_llc=llc, with_div=div)
    cube = cube.merge(critical_period_summary(cube))
    header = table_rst(cube).split("   * - ")[1]
    assert ("λ̂ knee: trunk" in header) == llc and ("λ̂ ok / estimates" in header) == llc
    assert ("divergence marker" in header) == div
    assert header.count("     - ") == 4 + 3 * llc + div
    page = landing_page(cube, Path(__file__), "described")
    assert ("``llc.enabled``" in page) != llc and ("``divergence.enabled``" in page) != div
    assert ("*λ̂ knee*" in page) == llc and ("*divergence marker*" in page) == div  # legend
    text = tables.format_table(cube, tables.markers_not_computed(cube))  # `summarize`
    assert ("llc_trunk" in text.splitlines()[0]) == llc
    assert ("div_drop" in text.splitlines()[0]) == div
    assert ("no λ̂" in text) != llc and ("no divergences" in text) != div  # one line, not
    assert "not estimated" not in text and "not computed" not in text  # a reason per statistic
    assert ("not estimated" in tables.format_table(cube)) != llc  # (which it would be)


def test_the_critical_period_figure_leaves_a_diverged_run_out_of_its_mean(monkeypatch,
                                                                            tmp_path) -> None:
    """The mean drawn at the diverged run's switch is the other seeds' (adjusted for the
    missing seed's offset, as the markers' means are); the run is marked apart, and the
    legend and caption say it is left out."""
    from critperiods.results import plots

    cube = with_a_run_at_chance(synthetic_cube(with_llc=False, with_div=False),
                                batch_size=64, switch_epoch=20.0, seed=0)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.critical_period(cube, tmp_path / "cp.png")
    (ax,) = figures[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert "batch 64: run diverged to chance (left out)" in lines
    (bars,) = [c for c in ax.containers if c.get_label() == "batch 64"]
    mean = bars.lines[0].get_ydata()[list(SWITCHES).index(20.0)]
    valid = selection.valid_final_accuracy(cube).sel(batch_size=64)
    assert mean == pytest.approx(100 * float(selection.seed_mean(valid).sel(switch_epoch=20.0)))
    others = cube["final_test_accuracy"].sel(batch_size=64, switch_epoch=20.0, seed=[1, 2])
    assert mean == pytest.approx(100 * float(others.mean()), abs=0.2)  # not the 9 % run
    assert "1 run diverged to chance, left out" in figures[0]._suptitle.get_text().replace(
        "\n", " ")


def llc_cube_with_a_flagged_trunk_estimate(raw: bool = False) -> xr.Dataset:
    """A cube shaped like a run's: λ̂ on the trunk (a branch's values up to its switch) and
    the never-blurred run, seeds 3 apart plus noise, seed 2's trunk estimate at epoch 6
    flagged; with its summary (``raw``: without)."""
    cube = with_schedules(synthetic_cube(with_div=False))
    noise = np.random.default_rng(3).normal(0, 1.0, (3, cube.sizes["epoch"]))
    cube["llc_mean"] = (cube["llc_mean"] + xr.DataArray([-3.0, 0.0, 3.0], dims="seed")
                        + xr.DataArray(noise, dims=("seed", "epoch")))
    cube["llc_mean"] = cube["llc_mean"].where((cube.switch_epoch == 0)
                                              | (cube.epoch <= cube.switch_epoch))
    cube["llc_quality"] = xr.zeros_like(cube["llc_mean"]).where(
        (cube.seed != 2) | (cube.epoch != 6) | (cube.switch_epoch == 0), 1.0)
    cube["llc_std"] = xr.ones_like(cube["llc_mean"])
    return cube if raw else cube.merge(critical_period_summary(cube))


def test_the_llc_figure_shows_the_end_beside_the_lambda_knees(monkeypatch, tmp_path) -> None:
    """Each panel draws the continue schedule's located end (dashed, interval shaded) and the
    two λ̂ knees as triangles at their values, their intervals as bars; the curves are the
    ones the knees are fitted to (the trunk's seed-adjusted mean, not the plain mean of the
    seeds left at epoch 6)."""
    from critperiods.results import plots

    cube = llc_cube_with_a_flagged_trunk_estimate()
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc(cube, tmp_path / "llc.png")
    panels = figures[0].axes[: BATCHES.size]
    for ax, b in zip(panels, BATCHES, strict=True):
        end = float(located_end(cube).sel(batch_size=b, lr_schedule="continue"))
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_xdata()[0] for line in dashed] == [pytest.approx(end)]
        knees = {float(cube[n].sel(batch_size=b, lr_schedule="continue"))
                 for n in ("llc_knee_trunk", "llc_knee_sharp")}
        triangles = {float(line.get_xdata()[0]) for line in ax.get_lines()
                     if line.get_marker() == "v"}
        assert triangles == knees
        bars = {tuple(line.get_xdata()) for line in ax.get_lines() if line.get_linewidth() == 2}
        assert bars == {tuple(cube[f"{n}_interval"].sel(batch_size=b, lr_schedule="continue")
                              .values) for n in ("llc_knee_trunk", "llc_knee_sharp")}
        at_6 = {round(float(y), 6) for line in ax.get_lines() if line.get_marker() == "."
                for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True) if x == 6}
        trunk = float(selection.llc_trunk(cube, b).sel(epoch=6))
        sharp = float(selection.llc_sharp(cube, b).sel(epoch=6))
        assert at_6 == {round(trunk, 6), round(sharp, 6)}
        plain = float(cube["llc_mean"].sel(batch_size=b, lr_schedule="continue", switch_epoch=60,
                                           epoch=6, seed=[0, 1]).mean())
        assert abs(trunk - plain) > 1.0  # what the adjustment changes
    legend = [t.get_text() for t in figures[0].axes[-1].get_legend().get_texts()]
    assert "critical-period end (continue), interval shaded" in legend
    assert "flagged estimate (negative), left out" in legend  # the flag raised, named
    assert "triangles: where a broken stick fitted to λ̂ bends" in (
        figures[0]._suptitle.get_text().replace("\n", " "))


def test_the_llc_figure_of_a_restart_only_grid_has_markers_and_no_end(monkeypatch,
                                                                      tmp_path) -> None:
    from critperiods.results import plots

    cube = llc_cube_with_a_flagged_trunk_estimate().sel(lr_schedule=["restart"])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc(cube, tmp_path / "llc.png")
    ax = figures[0].axes[0]
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len([line for line in ax.get_lines() if line.get_marker() == "v"]) == 2


def test_the_knee_offset_pairs_each_seeds_knee_with_its_own_end() -> None:
    """Seeds 0, 1, 2 end at kink − 6, kink, kink + 6 and bend λ̂ at 14, 20, 26: leaving a
    seed out moves the knee and the end the same way. The summary's offset and interval are
    those of the knee and the end refitted without the same seed, seed by seed in the cube's
    order; at one batch size seed 2 has no run at all, so leaving it out leaves the end
    as it is."""
    from critperiods.results.knee import (
        SeedJackknife,
        knee_resolution,
        knees_without_each_seed,
        paired_offset,
    )

    cube = synthetic_cube(with_div=False)
    shift = np.array([-6.0, 0.0, 6.0])
    acc = np.stack([np.stack([hinge(SWITCHES, KINKS[b] + d) for d in shift], axis=1)
                    for b in BATCHES])
    acc[1, :, 2] = np.nan
    cube["final_test_accuracy"].values[:] = acc
    epochs = cube["epoch"].values
    llc = np.stack([np.where(epochs < 20 + d, epochs - d, 20 + 0.1 * (epochs - 20 - d))
                    for d in shift])  # (seed, epoch)
    cube["llc_mean"].values[:] = llc[None, None]
    summary = critical_period_summary(cube)
    for i, b in enumerate(BATCHES):
        cell = summary.sel(batch_size=b, lr_schedule="continue")
        a = acc[i]
        present = np.isfinite(a).any(axis=0)
        end_loo = fits.kinks_without_each_seed(SWITCHES, a)
        end = SeedJackknife(fits.hinge_end(SWITCHES, a)[0], end_loo, present)
        trunk = selection.llc_trunk_by_seed(cube, b).transpose("epoch", "seed")
        knee_loo = knees_without_each_seed(trunk["epoch"].values, trunk.values)
        knee = SeedJackknife(float(cell["llc_knee_trunk"]), knee_loo, np.ones(3, bool))
        floor = np.hypot(fits.hinge_resolution(SWITCHES, a, end.value),  # in quadrature
                         knee_resolution(trunk["epoch"].values, trunk.values, knee.value))
        expected = paired_offset(knee, end, 0.9, floor)
        got = (float(cell["llc_knee_minus_end_trunk"]),
               *cell["llc_knee_minus_end_trunk_interval"].values)
        np.testing.assert_allclose(got, expected)
        if present.all():  # the shared shift cancels, in part: narrower than either alone
            alone = [np.ptp(fits.jackknife_interval(v.value, v.without_each_seed))
                     for v in (knee, end)]
            assert expected[2] - expected[1] < min(alone)
            mismatched = SeedJackknife(knee.value, knee_loo[::-1], knee.present)
            assert np.ptp(paired_offset(mismatched, end, 0.9, floor)[1:]) > np.ptp(
                expected[1:])


def test_a_knee_on_a_line_within_its_noise_is_flagged_and_said(tmp_path) -> None:
    """λ̂ along a straight line with noise: the broken stick still finds a knee, and the
    summary flags it within noise; a clear bend with the same noise is not flagged. The flag
    reaches the table ("~" and its footnote), the verdicts, the report's answer and the CSV."""
    from critperiods.results import report_page

    rng = np.random.default_rng(0)  # a line passes the screen in about 90 % of draws per
    cube = synthetic_cube(with_div=False)  # cell; this draw passes in all three
    epochs = cube["epoch"]
    noise = xr.DataArray(rng.normal(0, 1.0, cube["llc_mean"].shape), dims=cube["llc_mean"].dims,
                         coords=cube["llc_mean"].coords)
    bent = cube.copy()
    bent["llc_mean"] = (xr.where(epochs < 20, 3 * epochs, 60 + 0.2 * (epochs - 20))
                        .broadcast_like(cube["llc_mean"]) + noise)
    flat = cube.copy()
    flat["llc_mean"] = (2 * epochs).broadcast_like(cube["llc_mean"]) + noise
    assert not critical_period_summary(bent)["llc_knee_trunk_within_noise"].any()
    summary = critical_period_summary(flat)
    flag = summary["llc_knee_trunk_within_noise"]
    assert flag.all() and np.isfinite(summary["llc_knee_trunk"]).all()
    assert flag.dtype == np.int8 and flag.attrs["flag_meanings"] == (
        "bends_beyond_noise_or_untested within_noise")
    text = tables.format_table(summary)
    assert "~" in text.splitlines()[1] and "~ within-noise knee: the seed-mean λ̂ bends" in text
    assert all("within-noise knee) " in v for v in tables.marker_verdicts(summary).values())
    assert "λ̂ trunk (within-noise knee) " in "\n".join(
        report_page.answer_lines(flat.merge(summary)))
    assert "(within noise)" in report_page.table_rst(flat.merge(summary))
    tables.to_csv(flat.merge(summary), tmp_path / "table.csv")
    assert pd.read_csv(tmp_path / "table.csv")["llc_knee_trunk_within_noise"].all()


def test_a_knee_at_an_edge_or_gone_without_a_seed_is_flagged_unstable(monkeypatch,
                                                                     tmp_path) -> None:
    """Every seed bending at 20 is stable. A bend at the second λ̂ epoch (the earliest a knee
    can be) is unstable: it may lie earlier. So is a knee only one seed makes (without it
    the curve is straight). The flag reaches the table ("*"), the verdicts and figure 3a
    (a hollow triangle)."""
    from critperiods.results import plots

    stable = critical_period_summary(synthetic_cube(with_div=False))
    assert not stable["llc_knee_trunk_unstable"].any()
    assert stable["llc_knee_trunk_unstable"].attrs["flag_meanings"] == "stable unstable"
    early = synthetic_cube(with_div=False)
    epochs = early["epoch"]
    early["llc_mean"] = xr.where(epochs < 1, 5 * epochs, 5 + 0.1 * (epochs - 1)).broadcast_like(
        early["llc_mean"]).transpose(*early["llc_mean"].dims)
    summary = critical_period_summary(early)
    assert (summary["llc_knee_trunk"] == 1).all() and summary["llc_knee_trunk_unstable"].all()
    one = synthetic_cube(with_div=False)
    one["llc_mean"] = one["llc_mean"].where(one["seed"] == 0, one["epoch"])
    summary = critical_period_summary(one)
    assert summary["llc_knee_sharp_unstable"].all() and np.isfinite(summary["llc_knee_sharp"]).all()
    text = tables.format_table(summary)
    assert "]*" in text and "* unstable knee: with some seed left out" in text
    verdicts = tables.marker_verdicts(summary)
    # a bend only one seed makes is also within the mean curve's noise
    assert len(verdicts) == BATCHES.size and all(
        v.startswith("λ̂ trunk (unstable, within-noise knee) ")
        and "λ̂ never-blurred (unstable, within-noise knee) " in v for v in verdicts.values())
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    cube = one.merge(summary)
    cube["llc_std"] = xr.ones_like(cube["llc_mean"])
    plots.llc(cube, tmp_path / "llc.png")
    triangles = [line for line in figures[0].axes[0].get_lines() if line.get_marker() == "v"]
    assert triangles and all(line.get_markerfacecolor() == "none" for line in triangles)


def test_the_divergence_drop_gets_a_jackknife_interval_and_a_paired_offset() -> None:
    """Seeds 0, 1, 2 halve their distance at switch 25, 30, 35: the drop of the seed mean
    and of each seed left out, the interval over them (at least ± half the switch spacing)
    and the drop minus the end, each seed left out of both."""
    from critperiods.results.knee import SeedJackknife, paired_offset

    cube = synthetic_cube()
    after = cube["epoch"] - cube["switch_epoch"]
    level = xr.concat([xr.DataArray(np.interp(SWITCHES, [0, 20 + d, 40 + d, 60],
                                              [10.0, 10.0, 0.0, 0.0]), dims="switch_epoch")
                       for d in (-5.0, 0.0, 5.0)], dim="seed")
    cube["div_l2"] = (level * (1 + 0.01 * after)).where(after > 0).broadcast_like(
        cube["div_l2"]).transpose(*cube["div_l2"].dims)
    without = selection.divergence_at_horizon(cube, 64, 1.0, without_seed=0)
    both = cube["div_l2"].sel(batch_size=64, reference="blurred", seed=[1, 2]).mean("seed")
    np.testing.assert_allclose(without, [float(both.sel(switch_epoch=k, epoch=k + 1))
                                         if k + 1 <= 70 else np.nan for k in SWITCHES])
    summary = critical_period_summary(cube)
    for b in BATCHES:
        cell = summary.sel(batch_size=b, lr_schedule="continue")
        drop = fits.divergence_drop_epoch(SWITCHES, selection.divergence_at_horizon(cube, b, 1.0))
        loo = np.array([fits.divergence_drop_epoch(SWITCHES, selection.divergence_at_horizon(
            cube, b, 1.0, without_seed=s)) for s in range(3)])
        assert float(cell["divergence_drop_epoch"]) == drop and np.ptp(loo) > 2
        lo, hi = fits.jackknife_interval(drop, loo)
        np.testing.assert_allclose(cell["divergence_drop_epoch_interval"].values,
                                   [min(lo, drop - 2.5), max(hi, drop + 2.5)])
        acc = selection.valid_final_accuracy(cube).sel(batch_size=b).transpose(
            "switch_epoch", "seed").values
        end = SeedJackknife(fits.hinge_end(SWITCHES, acc)[0],
                            fits.kinks_without_each_seed(SWITCHES, acc),
                            np.isfinite(acc).any(axis=0))
        floor = np.hypot(2.5, fits.switch_spacing_at(SWITCHES, end.value) / 2)
        expected = paired_offset(SeedJackknife(drop, loo, np.ones(3, bool)), end, 0.9, floor)
        np.testing.assert_allclose((float(cell["divergence_drop_minus_end"]),
                                    *cell["divergence_drop_minus_end_interval"].values),
                                   expected)


def test_a_seed_without_which_no_drop_is_left_widens_the_drop_to_the_whole_range() -> None:
    """Only seed 0's distance falls; without it the seed mean never halves, so the data do
    not bound the drop: its interval is every switch epoch with a distance at the horizon,
    and its offset's everything a drop minus an end can be. One seed gives no interval."""
    cube = synthetic_cube()
    falls = xr.DataArray([1.0, 0.0, 0.0], dims="seed")  # the others stay at 4: mean 6 → 2.7
    cube["div_l2"] = (falls * cube["div_l2"] + (1 - falls) * 4.0).where(
        np.isfinite(cube["div_l2"]))
    summary = critical_period_summary(cube)
    measured = SWITCHES[np.isfinite(selection.divergence_at_horizon(cube, 64, 1.0))]
    assert np.isfinite(summary["divergence_drop_epoch"]).all()
    np.testing.assert_allclose(summary["divergence_drop_epoch_interval"].values,
                               np.broadcast_to([measured.min(), measured.max()],
                                               summary["divergence_drop_epoch_interval"].shape))
    possible = [measured.min() - SWITCHES.max(), measured.max() - SWITCHES.min()]
    np.testing.assert_allclose(summary["divergence_drop_minus_end_interval"].values,
                               np.broadcast_to(possible, (BATCHES.size, 1, 2)))
    one = critical_period_summary(cube.isel(seed=[0]))
    assert np.isfinite(one["divergence_drop_epoch"]).all()
    assert np.isnan(one["divergence_drop_epoch_interval"].values).all()
    assert np.isnan(one["divergence_drop_minus_end_interval"].values).all()


def test_the_table_explains_only_the_marker_columns_it_shows() -> None:
    """Knees: the knee legend and not the arg-max's spread; no divergence: no drop legend."""
    summary = critical_period_summary(synthetic_cube(with_div=False))
    text = tables.format_table(summary.drop_vars("divergence_drop_epoch_interval"))
    assert "λ̂ knees (llc_trunk, llc_sharp;" in text and "a spread, not" not in text
    assert "divergence marker (div_drop)" not in text
    with_div = tables.format_table(critical_period_summary(synthetic_cube()))
    assert "divergence marker (div_drop): switch epoch where the distance" in with_div


def test_a_verdict_says_when_no_knee_could_come_before_the_end() -> None:
    """λ̂ valid from epoch 20 only: the earliest possible knee is epoch 21 (the second valid
    epoch), before batch 64's end (25) and after batch 128's (17.5), whose offsets then
    cannot be negative; the verdicts say so there only."""
    cube = synthetic_cube(with_div=False)
    cube["llc_mean"] = cube["llc_mean"].where(cube["epoch"] >= 20)
    cube["llc_mean"] = cube["llc_mean"] + 0.5 * (cube["epoch"] - 30).clip(min=0)  # bend at 30
    summary = critical_period_summary(cube)
    assert (summary["llc_knee_trunk_earliest"] == 21).all()
    verdicts = tables.marker_verdicts(summary)
    note = "(the earliest possible knee, epoch 21, is after this end)"
    assert note not in verdicts[(64.0, "continue")]
    assert verdicts[(128.0, "continue")].count(note) == 2  # trunk and never-blurred


def test_each_missing_knee_or_offset_says_why() -> None:
    cube = flat_restart(synthetic_cube(with_div=False))
    cube["llc_mean"] = cube["llc_mean"].where(cube["epoch"] <= 2)  # 3 points: too few
    summary = critical_period_summary(cube)
    assert "3 valid λ̂ point(s)" in summary["llc_knee_trunk"].attrs["missing"]
    assert ("no llc_knee_trunk: 3 valid λ̂ point(s)"
            in summary["llc_knee_minus_end_trunk"].attrs["missing"])
    straight = flat_restart(synthetic_cube(with_div=False))
    straight["llc_mean"] = straight["llc_mean"] * 0 + straight["epoch"]
    summary = critical_period_summary(straight)
    assert "straight line" in summary["llc_knee_sharp"].attrs["missing"]
    located = critical_period_summary(flat_restart(synthetic_cube(with_div=False)))
    missing = located["llc_knee_minus_end_trunk"].attrs["missing"]
    assert missing.count("no located end (deficit not told from 0)") == 1
    assert "continue" not in missing
    assert located["divergence_drop_minus_end"].attrs["missing"] == (
        "every batch size and schedule: no divergence_drop_epoch: divergence not computed "
        "(divergence.enabled: false)")
    with_div = critical_period_summary(flat_restart(synthetic_cube()))
    missing = with_div["divergence_drop_minus_end"].attrs["missing"]
    assert ("restart: no located end (deficit not told from 0): nothing to compare the drop "
            "with") in missing
    assert "continue" not in missing


def llc_cube_with_the_descent() -> tuple[xr.Dataset, xr.Dataset]:
    """:func:`llc_cube_with_a_flagged_trunk_estimate`'s λ̂ without and with the chains'
    descent measured (``llc.descent``), each with its summary: the descent takes off λ̂ what
    makes it bend at epoch 20, so that λ̂ net of it bends at 40 (and lies above it, as the
    drift lowers the loss)."""
    raw = llc_cube_with_a_flagged_trunk_estimate(raw=True)
    epochs = raw["epoch"]
    bends_at_20 = xr.where(epochs < 20, epochs, 20 + 0.1 * (epochs - 20))
    bends_at_40 = xr.where(epochs < 40, 0.5 * epochs, 20 + 0.05 * (epochs - 40)) + 25
    measured = raw.assign(llc_descent=(bends_at_20 - bends_at_40).where(raw["llc_mean"].notnull()))
    return (raw.merge(critical_period_summary(raw)),
            measured.merge(critical_period_summary(measured)))


def test_the_knees_of_lambda_net_of_the_descent_are_markers_of_their_own(tmp_path) -> None:
    """With ``llc_descent`` in the cube, the knees of λ̂ − llc_descent are fitted beside
    λ̂'s own, along the trunk and the never-blurred run, with intervals, flags and offsets
    from the end; their offsets join Holm's family; the table, its CSV, the verdicts and the
    report's table name them. Without it, none of this is there."""
    from critperiods.results.report_page import table_rst

    raw, measured = llc_cube_with_the_descent()
    assert not [v for v in raw.data_vars if v.startswith("llc_net_")]
    assert "net of descent" not in table_rst(raw)
    assert "llc_net_trunk" not in tables.format_table(raw)
    for where in ("trunk", "sharp"):
        np.testing.assert_allclose(measured[f"llc_knee_{where}"].values, 20.0, atol=2.0)
        np.testing.assert_allclose(measured[f"llc_net_knee_{where}"].values, 40.0, atol=2.0)
        knee, offset = f"llc_net_knee_{where}", f"llc_net_knee_minus_end_{where}"
        np.testing.assert_allclose(measured[offset], measured[knee]
                                   - measured["critical_period_end"])
        lo, hi = measured[f"{knee}_interval"].transpose("bound", ...).values
        assert (lo <= measured[knee].values).all() and (measured[knee].values <= hi).all()
        for flag in ("unstable", "within_noise", "earliest"):
            assert f"{knee}_{flag}" in measured
        assert measured[offset].attrs["ancillary_variables"] == (
            f"{offset}_interval {offset}_p {offset}_p_holm")
    net_tests = int(sum(np.isfinite(measured[f"{o}_p"]).sum()
                        for o in ("llc_net_knee_minus_end_trunk", "llc_net_knee_minus_end_sharp")))
    assert net_tests > 0
    tests = measured["llc_knee_minus_end_trunk_p_holm"].attrs["tests"]
    assert tests == raw["llc_knee_minus_end_trunk_p_holm"].attrs["tests"] + net_tests
    table = tables.summary_table(measured)
    assert {"llc_net_knee_trunk", "llc_net_knee_minus_end_sharp_p_holm"} <= set(table)
    tables.to_csv(measured, tmp_path / "summary.csv")
    written = pd.read_csv(tmp_path / "summary.csv")
    assert "llc_net_knee_trunk_lower" in written
    assert (written["interval_level"] == float(measured.attrs.get(
        "summary_level", measured.attrs.get("level", 0.9)))).all()  # a CSV read cold
    text = tables.format_table(measured)
    assert "llc_net_trunk" in text and "λ̂ knees net of descent" in text
    verdicts = tables.marker_verdicts(measured)
    assert all("λ̂ trunk net of descent " in v for v in verdicts.values()) and verdicts
    assert "net of descent: trunk" in table_rst(measured)


def test_the_llc_figure_draws_lambda_net_of_the_descent_and_its_knees(monkeypatch,
                                                                      tmp_path) -> None:
    """With ``llc_descent`` in the cube each panel also draws λ̂ net of it along the trunk
    and the never-blurred run (dash-dotted: the curves its knees are fitted to) and those
    knees as diamonds; the caption and the legend say so."""
    from critperiods.results import plots

    _, cube = llc_cube_with_the_descent()
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc(cube, tmp_path / "llc.png")
    for ax, b in zip(figures[0].axes[: BATCHES.size], BATCHES, strict=True):
        net = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
        expected = [selection.llc_sharp(cube, b, net_of_descent=True),
                    selection.llc_trunk(cube, b, net_of_descent=True)]
        assert len(net) == 2
        for line, curve in zip(net, expected, strict=True):
            np.testing.assert_allclose(line.get_ydata(), curve.values[np.isfinite(curve.values)])
        diamonds = {float(line.get_xdata()[0]) for line in ax.get_lines()
                    if line.get_marker() == "d"}
        assert diamonds == {float(cube[n].sel(batch_size=b, lr_schedule="continue"))
                            for n in ("llc_net_knee_trunk", "llc_net_knee_sharp")}
    legend = [t.get_text() for t in figures[0].axes[-1].get_legend().get_texts()]
    assert "knee of λ̂ net of descent, blurred trunk" in legend
    assert "dash-dotted: λ̂ net of the chains' descent" in (
        figures[0]._suptitle.get_text().replace("\n", " "))
    # the legend's hollow marker is drawn as the flagged knees are: a diamond where only
    # knees of λ̂ net of the descent are flagged, a triangle where a raw knee is

    def hollow_marker(cube: xr.Dataset) -> str:
        figures.clear()
        plots.llc(cube, tmp_path / "llc.png")
        legend = figures[0].axes[-1].get_legend()
        return {text.get_text(): handle for text, handle in zip(
            legend.get_texts(), legend.legend_handles, strict=True)
            }["hollow: unstable knee, λ̂ bending within noise,\nor an interval over every "
              "epoch it can take"].get_marker()

    flags = [f"{knee}_{flag}" for knee in ("llc_knee_trunk", "llc_knee_sharp",
                                           "llc_net_knee_trunk", "llc_net_knee_sharp")
             for flag in ("unstable", "within_noise")]
    cleared = cube.assign({name: cube[name] * 0 for name in flags if name in cube})
    net_only = cleared.assign(llc_net_knee_trunk_unstable=cleared[
        "llc_net_knee_trunk_unstable"] + 1)
    assert hollow_marker(net_only) == "d"
    assert hollow_marker(net_only.assign(llc_knee_sharp_unstable=net_only[
        "llc_knee_sharp_unstable"] + 1)) == "v"
    # an unflagged knee whose interval spans every epoch a knee can take there (the second
    # to the second-to-last with valid λ̂) is drawn hollow too: it places no knee

    def knee_face(cube: xr.Dataset) -> str:
        figures.clear()
        plots.llc(cube, tmp_path / "llc.png")
        knee = float(cube["llc_knee_trunk"].sel(batch_size=BATCHES[0], lr_schedule="continue"))
        (marker,) = [line for line in figures[0].axes[0].get_lines() if line.get_marker() == "v"
                     and float(line.get_xdata()[0]) == knee]
        return str(marker.get_markerfacecolor())

    assert knee_face(cleared) != "none"
    valid = selection.llc_trunk(cleared, BATCHES[0])
    epochs = np.sort(valid["epoch"].values[np.isfinite(valid.values)])
    wide = cleared.copy(deep=True)
    wide["llc_knee_trunk_interval"].loc[{"batch_size": BATCHES[0]}] = [epochs[1], epochs[-2]]
    assert knee_face(wide) == "none"


def test_the_report_gives_each_lambda_knee_its_interval_and_its_offset_from_the_end() -> None:
    """The table: each knee with its interval. The answer: per batch size, the knee minus
    the end, and whether its interval says after, before or cannot tell."""
    from critperiods.results.report_page import answer_lines, table_rst

    cube = llc_cube_with_a_flagged_trunk_estimate()
    cell = cube.sel(batch_size=BATCHES[0], lr_schedule="continue")
    lo, hi = cell["llc_knee_trunk_interval"].values
    assert f"     - {float(cell['llc_knee_trunk']):.1f} [{lo:.1f}, {hi:.1f}]" in table_rst(cube)
    (line,) = [x for x in answer_lines(cube) if x.startswith(f"* **batch {BATCHES[0]}**")]
    offset = float(cell["llc_knee_minus_end_trunk"])
    assert offset < 0 and cell["llc_knee_minus_end_trunk_interval"].values[1] < 0  # 20 vs 35
    assert (f"Marker minus the end (epochs): continue: λ̂ trunk {offset:+.1f} [" in line
            and "before the end" in line)


def test_plots_draw_an_end_only_where_a_deficit_survives() -> None:
    """A hinge kink fitted where the deficit's interval reaches 0 is noise: not drawn."""
    from critperiods.results.plots import _end_of, _located_ends

    coords = {"batch_size": [64, 128], "lr_schedule": ["continue", "restart"],
              "bound": ["lower", "upper"]}
    cube = xr.Dataset({
        "critical_period_end": (("batch_size", "lr_schedule"), [[6.0, 4.0], [5.0, 7.0]]),
        "permanent_deficit_interval": (("batch_size", "lr_schedule", "bound"),
                                       [[[0.03, 0.04], [-0.007, 0.008]],
                                        [[0.05, 0.07], [0.002, 0.01]]]),
    }, coords=coords)
    ends = _located_ends(cube)
    assert _end_of(ends, 64, "continue") == 6.0
    assert np.isnan(_end_of(ends, 64, "restart"))
    assert _end_of(ends, 128, "restart") == 7.0


def test_the_llc_figure_draws_one_row_for_shared_values_and_only_runs_with_values(
        monkeypatch, tmp_path) -> None:
    """λ̂ of the trunk and the never-blurred run is the same under both schedules: one row,
    said in the titles; a switch epoch without λ̂ gets no legend entry."""
    from critperiods.results import plots

    cube = with_schedules(synthetic_cube(with_div=False))
    cube["llc_mean"] = cube["llc_mean"].where(cube.switch_epoch.isin([0.0, 60.0]))
    cube["llc_std"] = xr.ones_like(cube["llc_mean"])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc(cube, tmp_path / "llc.png")
    axes = figures[0].axes
    assert len(axes) == cube.sizes["batch_size"]
    assert all("(both lr schedules)" in ax.get_title() for ax in axes)
    assert axes[-1].get_legend_handles_labels()[1] == ["switch 0.0", "switch 60.0"]
    cube["llc_mean"].loc[{"lr_schedule": "restart"}] += 1.0  # schedules differ: two rows
    plots.llc(cube, tmp_path / "llc.png")
    assert len(figures[1].axes) == 2 * cube.sizes["batch_size"]


def test_the_interval_coverage_bench_runs_and_puts_the_jackknife_nearer_its_level() -> None:
    """bench/interval_coverage.py, in a few trials, so that it cannot rot; the full run's
    table is in docs/analysis.md."""
    from tests.conftest import bench_module

    bench = bench_module("interval_coverage")
    study = bench.SCENARIOS["study grid (switch 0-20 by 4, batch 32-256), noise 0.5 pp"]
    got = bench.coverage(study, n_seeds=3, trials=40)
    assert got["jack cover"] > got["boot cover"]
    assert got["jack cover"] >= 0.8
    weak = bench.SCENARIOS["default grid, a weak deficit (0.25 pp per epoch, noise 1 pp)"]
    got = bench.coverage(weak, n_seeds=3, trials=40)  # the profile interval's doing
    assert got["jack cover"] > got["jack alone cover"] and got["jack cover"] >= 0.85


def test_the_summary_reads_every_seed_and_its_level() -> None:
    """The half-deficit epoch is that of the seed-adjusted mean curve (seed 0 alone ends at
    10, the others at 40); ``level`` reaches the deficit's Student-t interval (its half-width
    scales by t(0.75, 2) / t(0.95, 2))."""
    cube = synthetic_cube(with_llc=False, with_div=False)
    acc = np.stack([np.stack([hinge(SWITCHES, k) for k in (10.0, 40.0, 40.0)], axis=1)
                    - 0.001 * np.arange(3) * (SWITCHES[:, None] > 50)  # deficits differ
                    for _ in BATCHES])
    cube["final_test_accuracy"].values[:] = acc
    wide = critical_period_summary(cube, level=0.9)
    narrow = critical_period_summary(cube, level=0.5)
    wide, narrow = wide.isel(batch_size=0).squeeze(), narrow.isel(batch_size=0).squeeze()
    want = fits.half_deficit_epoch(SWITCHES, fits.seed_adjusted_mean(acc[0]))
    assert float(wide["half_deficit_epoch"]) == pytest.approx(want)
    assert want != pytest.approx(fits.half_deficit_epoch(SWITCHES, acc[0][:, 0]))
    lo, hi = wide["permanent_deficit_interval"].values
    n_lo, n_hi = narrow["permanent_deficit_interval"].values
    assert (n_hi - n_lo) / (hi - lo) == pytest.approx(0.816497 / 2.919986, rel=1e-5)


def test_the_divergence_marker_is_each_schedules_own() -> None:
    """Restart's distance stays at its early level until switch 40 (half at 50), continue's
    falls from switch 20 (half at 30): each schedule's marker reads its own runs."""
    cube = with_schedules(synthetic_cube(with_llc=False))
    after = cube["epoch"] - cube["switch_epoch"]
    level = xr.DataArray(np.interp(SWITCHES, [0, 40, 60], [10.0, 10.0, 0.0]),
                         coords={"switch_epoch": SWITCHES})
    restart = (level * (1 + 0.01 * after)).where(after > 0)
    cube["div_l2"].loc[{"lr_schedule": "restart"}] = restart.broadcast_like(
        cube["div_l2"].sel(lr_schedule="restart")).transpose(
        *cube["div_l2"].sel(lr_schedule="restart").dims)
    drop = critical_period_summary(cube)["divergence_drop_epoch"]
    assert list(drop.sel(lr_schedule="continue").values) == pytest.approx([30.0] * 3)
    assert list(drop.sel(lr_schedule="restart").values) == pytest.approx([50.0] * 3)


def test_a_diverged_runs_distance_is_left_out_of_the_divergence_marker() -> None:
    """A run at chance at switch 30 (where the distance crosses half) whose distance blew
    up: the marker is the one of the other seeds."""
    cube = synthetic_cube(with_llc=False)
    where = {"batch_size": 64, "switch_epoch": 30.0, "seed": 1}
    diverged = with_a_run_at_chance(cube, **where)
    diverged["div_l2"].loc[{**where, "epoch": diverged.epoch > 30}] = 1e3
    got = critical_period_summary(diverged)["divergence_drop_epoch"].sel(batch_size=64).squeeze()
    assert float(got) == pytest.approx(
        float(critical_period_summary(cube)["divergence_drop_epoch"].sel(batch_size=64).squeeze()))


def test_a_restart_without_any_deficit_has_no_located_end() -> None:
    """Every seed's restart ends exactly where it starts: the deficit's interval is [0, 0],
    so no end is located (lower bound 0 is not above 0), though the hinge has a kink."""
    summary = critical_period_summary(flat_restart(synthetic_cube(with_llc=False,
                                                                  with_div=False)))
    lower = summary["permanent_deficit_interval"].sel(lr_schedule="restart", bound="lower")
    assert (lower == 0).all()
    assert located_end(summary).sel(lr_schedule="restart").isnull().all()
    assert located_end(summary).sel(lr_schedule="continue").notnull().all()


def test_the_cube_flags_a_kink_that_is_no_end() -> None:
    """A hinge puts a kink even where the deficit is not told from 0; the cube keeps it (for
    inspection) but flags it: ``critical_period_end_located`` is 0 there and 1 at the
    located ends, the end's ``comment`` names the cells and why, and the end points to its
    flag through ``ancillary_variables``, so that a reader of the cube alone cannot take
    the restart's kinks for ends."""
    from critperiods.results.cube import describe

    summary = describe(critical_period_summary(flat_restart(
        synthetic_cube(with_llc=False, with_div=False))))
    flag = summary["critical_period_end_located"]
    assert flag.dtype == np.int8 and flag.attrs["flag_meanings"] == "not_located located"
    assert (flag.sel(lr_schedule="restart") == 0).all()
    assert (flag.sel(lr_schedule="continue") == 1).all()
    assert summary["critical_period_end"].sel(lr_schedule="restart").notnull().all()
    comment = summary["critical_period_end"].attrs["comment"]
    assert comment.startswith("no end where critical_period_end_located is 0: ")
    assert "restart" in comment and "continue" not in comment
    assert "deficit not told from 0" in comment
    assert summary["critical_period_end"].attrs["ancillary_variables"] == (
        "critical_period_end_located critical_period_end_interval")
    assert summary["half_deficit_epoch"].attrs["ancillary_variables"] == (
        "critical_period_end_located")


def test_a_lambda_markers_range_holds_the_all_seed_value() -> None:
    """An arg-max can put the marker with all seeds outside the markers without each seed:
    the range spans it too."""
    epochs = np.arange(0.0, 21.0)
    curve = xr.DataArray(np.minimum(epochs, 10.0)[:, None] + np.arange(3.0),
                         coords={"epoch": epochs, "seed": [0, 1, 2]}, dims=("epoch", "seed"))
    assert marker_spread(curve, 10.0)[:2] == (10.0, 10.0)
    assert marker_spread(curve, 16.0)[:2] == (10.0, 16.0)
    assert marker_spread(curve, 4.0)[:2] == (4.0, 10.0)


def test_the_perturbation_growth_figure_names_each_runs_line_style() -> None:
    """Solid is the never-blurred run (switch 0), not whichever run comes first; each blurred
    run gets its own dash pattern, and the title names them all."""
    from critperiods.results.plots import _run_styles, _run_styles_note

    assert _run_styles_note(_run_styles(np.array([2]))) == "dashed: blurred until 2"
    styles = _run_styles(np.array([16, 0, 8]))
    assert styles[0][1] == "-" and len({str(s[1]) for s in styles.values()}) == 3
    assert _run_styles_note(styles) == ("solid: never blurred, dashed: blurred until 8, "
                                        "dotted: blurred until 16")


def test_the_divergence_figure_shows_the_drop_beside_the_end(monkeypatch, tmp_path) -> None:
    """Figure 4b's third panel: per batch size, the continue schedule's distance at the
    horizon over the earliest switch's (starting at 1, the drop where it crosses 0.5), the
    drop as a triangle at its value with its interval as a bar, the located end dotted, and
    the restart schedule's distance dashed with hollow markers beside it."""
    from critperiods.results import plots
    from critperiods.results.selection import divergence_at_horizon

    cube = with_schedules(synthetic_cube())
    summary = critical_period_summary(cube)
    cube = cube.merge(summary)
    cube.attrs.update(summary_horizon=summary.attrs["horizon"], epochs_after_switch=10)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.divergence_final(cube, tmp_path / "divergence_final.png")
    assert len(figures[0].axes) == 3
    ax = figures[0].axes[2]
    lines = ax.get_lines()
    drops = cube.divergence_drop_epoch.sel(lr_schedule="continue").values
    assert np.isfinite(drops).all()
    triangles = [float(line.get_xdata()[0]) for line in lines if line.get_marker() == "v"]
    assert triangles == pytest.approx(list(drops))
    bars = [tuple(line.get_xdata()) for line in lines if line.get_linewidth() == 2]
    assert bars == [tuple(v) for v in
                    cube.divergence_drop_epoch_interval.sel(lr_schedule="continue").values]
    ends = located_end(cube).sel(lr_schedule="continue").values
    dotted = [float(line.get_xdata()[0]) for line in lines if line.get_linestyle() == ":"]
    assert dotted == pytest.approx(list(ends[np.isfinite(ends)]))
    curves = [line for line in lines if line.get_marker() == "o"]
    solid = [c for c in curves if c.get_linestyle() == "-"]
    dashed = [c for c in curves if c.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == BATCHES.size
    assert all(float(c.get_ydata()[np.isfinite(c.get_ydata())][0]) == 1.0 for c in curves)
    assert all(c.get_markerfacecolor() == "white" for c in dashed)
    for b, c in zip(BATCHES, dashed, strict=True):
        at = divergence_at_horizon(cube, b, summary.attrs["horizon"], "restart")
        np.testing.assert_allclose(c.get_ydata(), at / at[np.isfinite(at)][0])
    assert "restart dashed" in ax.get_title()
    without = cube.drop_vars([v for v in cube.data_vars if str(v).startswith("divergence_drop")])
    figures.clear()
    plots.divergence_final(without, tmp_path / "divergence_final.png")
    assert len(figures[0].axes) == 2  # a cube without the drop keeps the two panels


def test_the_end_interval_holds_a_weak_deficit_at_its_level() -> None:
    """A weak deficit (0.25 pp per epoch of delay, runs ± 1 pp, 3 seeds, switches 0-16 by 4):
    the jackknife alone held the true end in fewer sweeps than its nominal 90 %; with the
    profile interval it holds about that. The profile interval of a strong deficit is
    narrow, and a flat curve's reaches the last switch (the end may not have come)."""
    rng = np.random.default_rng(5)
    switches = np.arange(0, 17, 4.0)
    held = {"jackknife": [], "with profile": []}
    for _ in range(150):
        acc = (85 - 0.25 * np.maximum(switches[:, None] - 6.0, 0)
               + rng.normal(0, 1.0, (switches.size, 3)))
        loo = fits.kinks_without_each_seed(switches, acc)
        kink, lower, upper, _ = fits.hinge_end(switches, acc, 0.9, loo)
        jk = fits.at_least_and_within(kink, *fits.jackknife_interval(kink, loo), 2.0, (0, 16))
        held["jackknife"].append(jk[0] <= 6.0 <= jk[1])
        held["with profile"].append(lower <= 6.0 <= upper)
        assert lower <= jk[0] and upper >= jk[1]  # the hull: never narrower
    assert np.mean(held["with profile"]) >= 0.86
    assert np.mean(held["jackknife"]) < np.mean(held["with profile"])
    strong = (85 - 3.0 * np.maximum(switches[:, None] - 6.0, 0)
              + rng.normal(0, 0.3, (switches.size, 3)))
    lo, hi = fits.hinge_profile_interval(switches, strong)
    assert lo <= 6.0 <= hi and hi - lo < 2.0
    flat = 85 + rng.normal(0, 1.0, (switches.size, 3))
    assert fits.hinge_profile_interval(switches, flat)[1] == 16.0
    assert np.isnan(fits.hinge_profile_interval(switches, flat[:, :1])).all()  # one seed


def test_the_end_resolution_is_the_grid_or_the_profile_whichever_is_coarser() -> None:
    rng = np.random.default_rng(6)
    switches = np.arange(0, 17, 4.0)
    weak = 85 - 0.25 * np.maximum(switches[:, None] - 6.0, 0) + rng.normal(0, 1, (5, 3))
    kink = fits.hinge_end(switches, weak)[0]
    lo, hi = fits.hinge_profile_interval(switches, weak)
    assert fits.hinge_resolution(switches, weak, kink) == pytest.approx(
        max(2.0, kink - lo, hi - kink))
    exact = np.tile(85 - 3.0 * np.maximum(switches - 6.0, 0)[:, None], (1, 3)) + [0, 1, 2]
    assert fits.hinge_resolution(switches, exact, 6.0) == 2.0  # no noise: the grid decides


def test_a_curve_with_no_values_of_its_own_leaves_the_legend() -> None:
    """λ̂ measured on the trunk only: a run's values up to its switch are the trunk's, under
    the latest switch's curve; the legend names those switches once, not as curves no one
    can see. A branch whose values differ after its switch keeps its entry."""
    from critperiods.results.plots import _under_later_curves

    epochs = np.arange(0.0, 10.0)

    def curve(values):
        return xr.DataArray(np.asarray(values, dtype=float), coords={"epoch": epochs},
                            dims="epoch")

    trunk = np.linspace(1, 2, 10)
    means = {0: curve(np.linspace(3, 4, 10)),
             4: curve(np.where(epochs <= 4, trunk, np.nan)),
             8: curve(np.where(epochs <= 8, trunk, np.nan)),
             9: curve(trunk)}
    assert _under_later_curves(means, np.array([0, 4, 8, 9])) == {4: 9, 8: 9}
    means[4] = curve(np.where(epochs <= 6, np.where(epochs <= 4, trunk, 5.0), np.nan))
    assert _under_later_curves(means, np.array([0, 4, 8, 9])) == {8: 9}
    means[0] = curve(trunk)  # the same values, as far: a run of its own, kept
    assert 0 not in _under_later_curves(means, np.array([0, 4, 8, 9]))
    # the trunk's later estimates left out: the latest switch's curve ends there too, and
    # the earlier switches, all trunk, lie under it (the legend named each as a curve)
    stop = curve(np.where(epochs <= 4, trunk, np.nan))
    means = {0: curve(np.linspace(3, 4, 10)), 4: stop, 8: stop, 9: stop}
    assert _under_later_curves(means, np.array([0, 4, 8, 9])) == {4: 9, 8: 9}
    # the legend: one dotted entry per curve they lie under, naming the panels where they
    # do when that is not every panel
    from critperiods.results.plots import _hidden_entries

    _, labels = _hidden_entries({"batch 64": {4: 9, 8: 9}, "batch 128": {4: 9}})
    assert labels == ["switch 4 (dotted): under switch 9's curve",
                      "switch 8 (dotted): under switch 9's curve (batch 64)"]


def test_the_sgld_traces_figure_is_a_grid_with_its_legend_on_a_drawn_panel(monkeypatch,
                                                                          tmp_path) -> None:
    """Figure 3b: a row per batch size, the earliest and latest switch side by side; a
    panel with no traces is switched off, and the chains' legend goes on the first panel
    drawn, not on the grid's first (which may be off)."""
    from critperiods.results import plots

    shape = (2, 2, 1, 2, 3, 5)  # batch, switch, seed, epoch, chain, draw
    trace = np.arange(np.prod(shape), dtype=float).reshape(shape)
    trace[0, 0] = np.nan  # batch 64, switch 0: no λ̂ there
    cube = xr.Dataset(
        {"llc_loss_trace": (("batch_size", "switch_epoch", "seed", "epoch", "chain", "draw"),
                            trace)},
        coords={"batch_size": [64, 128], "switch_epoch": [0, 8], "seed": [0], "epoch": [4, 8],
                "chain": [0, 1, 2], "draw": np.arange(5)})
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.llc_traces(cube, tmp_path / "llc_traces.png")
    axes = figures[0].axes
    assert len(axes) == 4 and not axes[0].axison  # 2 × 2, batch 64's switch 0 off
    assert axes[1].get_legend() is not None
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == [
        "chain 0", "chain 1", "chain 2"]
    assert axes[3].get_title().startswith("batch 128, switch 8, epoch 8")
    figures.clear()  # one switch epoch: one column, not the same panel twice
    plots.llc_traces(cube.sel(switch_epoch=[8]), tmp_path / "llc_traces.png")
    assert [ax.get_title().split(",")[:2] for ax in figures[0].axes] == [
        ["batch 64", " switch 8"], ["batch 128", " switch 8"]]


def test_an_exponent_apart_from_0_on_ends_not_apart_says_so() -> None:
    """The exponent's interval (a jackknife over seeds) can exclude 0 while every pair of
    ends has overlapping intervals (which carry the kink's profile uncertainty): the short
    answer then says so instead of claiming the ordering outright; ends that are apart, or a
    single located end, add nothing."""
    import pandas as pd

    from critperiods.results.report_page import _ends_overlap

    def rows(intervals, deficit_lower=(1.0, 1.0, 1.0)):
        return pd.DataFrame({"batch_size": [256, 64, 128],
                             "critical_period_end": [sum(i) / 2 for i in intervals],
                             "critical_period_end_lower": [i[0] for i in intervals],
                             "critical_period_end_upper": [i[1] for i in intervals],
                             "permanent_deficit_lower": list(deficit_lower)})

    said = _ends_overlap(rows([(0.8, 5.8), (0.0, 13.8), (0.0, 13.7)]))
    assert said.startswith(", though no two ends' own intervals are apart ([0.0, 13.8], "
                           "[0.0, 13.7] and [0.8, 5.8] at batch sizes 64, 128, 256)")
    assert _ends_overlap(rows([(0.8, 5.8), (6.0, 13.8), (0.0, 13.7)])) == ""  # 64 vs 256 apart
    assert _ends_overlap(rows([(0.8, 5.8), (0.0, 13.8), (0.0, 13.7)],
                              deficit_lower=(1.0, -1.0, -1.0))) == ""  # one located end


def test_the_short_answer_hedges_an_exponent_only_where_its_ends_are_not_apart() -> None:
    """The hedge rides on an exponent whose interval excludes 0: with the ends' intervals
    apart it is absent, with them all overlapping it is said, and with an interval that
    includes 0 the answer says that instead. The report's exponent caveat is there only
    where an exponent was fitted."""
    from critperiods.results.report_page import _exponent_caveat, short_answer

    cube = with_schedules(synthetic_cube(with_llc=False, with_div=False))
    cube = cube.merge(critical_period_summary(cube))

    def said(interval, ends) -> str:
        c = cube.copy(deep=True)
        c["batch_size_exponent"].loc[{"lr_schedule": "continue"}] = -0.5
        c["batch_size_exponent_interval"].loc[{"lr_schedule": "continue"}] = interval
        c["critical_period_end_interval"].loc[{"lr_schedule": "continue"}] = ends
        return short_answer(c)

    apart = [[10.0, 20.0], [21.0, 30.0], [31.0, 40.0]]
    overlapping = [[0.0, 40.0], [5.0, 30.0], [10.0, 20.0]]
    assert "no two ends' own intervals are apart" not in said([-0.71, -0.29], apart)
    hedged = said([-0.71, -0.29], overlapping)
    assert ("[-0.71, -0.29], over 3 seeds), though no two ends' own intervals are apart "
            "([0.0, 40.0], [5.0, 30.0] and [10.0, 20.0] at batch sizes") in hedged, hedged
    loose = said([-0.9, 0.1], overlapping)
    assert "which includes 0" in loose and "are apart" not in loose
    assert _exponent_caveat(cube) and _exponent_caveat(
        cube.assign(batch_size_exponent=cube["batch_size_exponent"] * np.nan)) == []


def test_the_report_says_what_lambda_hat_is_at_the_runs_settings() -> None:
    """Where λ̂ was estimated, the caveats give the SGLD settings it was estimated at and
    say that its level and shape move with them; without λ̂, no such caveat."""
    from critperiods.results.report_page import _llc_caveat

    cube = synthetic_cube(with_div=False).expand_dims(chain=4, draw=90)
    cube = cube.assign(llc_burn_in=30, llc_step_size=1e-4, llc_gamma=100.0, llc_nbeta=1086.0)
    cube.attrs["config"] = "llc:\n  batch_size: 32\n"
    (said,) = _llc_caveat(cube)
    assert ("SGLD settings (4 chains × 30 burn-in + 60 draws, SGLD batch 32, ε = 0.0001, "
            "γ = 100, nβ = 1086), not the checkpoint's equilibrium") in said
    assert "level *and* its shape" in said
    assert _llc_caveat(synthetic_cube(with_llc=False)) == []


def test_summarize_and_the_report_say_what_ran_first(tmp_path, capsys) -> None:
    """Two runs that differ in a key off the grid (the blur) must not read alike: the
    summary's first line and the report's setup line name the data, the blur, the network,
    the rate and the grid (from the cube's coordinates); a cube without a config says
    nothing of it."""
    from critperiods.__main__ import main
    from critperiods.results.report_page import landing_page
    from critperiods.results.setup import setup_sentence

    config = ("experiment: blur8\ndataset:\n  name: fashion_mnist\n  train_subset: 10000\n"
              "  blur_size: 8\nmodel:\n  name: small_cnn\n  width: 8\nepochs_after_switch: 6\n"
              "optimizer:\n  lr: 0.05\n  momentum: 0.9\n  weight_decay: 0.0\n  lr_decay: 0.85\n"
              "augmentation: false\n")
    cube = synthetic_cube(with_llc=False, with_div=False).isel(batch_size=[1])
    cube = cube.merge(critical_period_summary(cube)).assign_attrs(config=config)
    said = setup_sentence(cube)
    assert said == ("small CNN (width 8) on 10,000 Fashion-MNIST training images, blurred by "
                    "downsampling to 8×8 pixels (and back) until the switch; SGD at lr 0.05 × "
                    "0.85 per epoch, momentum 0.9; batch size 64; switch epochs "
                    + ", ".join(str(int(k)) for k in SWITCHES) + ", then 6 sharp epochs; "
                    "seeds 0, 1, 2")
    assert setup_sentence(cube.assign_attrs(config="")) == ""
    cube.to_netcdf(tmp_path / "cube.nc")
    assert main(["summarize", str(tmp_path / "cube.nc")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("blur8: small CNN (width 8) on 10,000 Fashion-MNIST")
    assert "downsampling to 8×8 pixels" in " ".join(printed.split("\n\n")[0].split())
    page = landing_page(cube, Path(__file__), "described")
    assert f"**Setup.** S{said[1:]}." in page
    assert page.index("**Question.**") < page.index("**Setup.**") < page.index("In short")


def test_one_batch_size_gets_one_line_for_the_exponents_and_no_knee_no_knee_flags(
        tmp_path) -> None:
    """With fewer batch sizes than a power law needs, ``summarize`` says so once instead of
    a NaN exponent and its reason per exponent and schedule; and a knee that does not exist
    (λ̂ off) has empty flags in the CSV, not ``False`` ("bends beyond noise")."""
    one = synthetic_cube(with_llc=False, with_div=False).isel(batch_size=[1])
    summary = one.merge(critical_period_summary(one))
    text = tables.format_table(summary)
    assert ("exponents (temperature_exponent, batch_size_exponent): not fitted: a power law "
            "of the end needs 3 batch sizes, this grid has 1") in text
    assert "temperature_exponent (continue)" not in text and "a power law needs 3" not in text
    from critperiods.results.report_page import answer_lines

    said = [line for line in answer_lines(summary) if "batch size^p" in line]
    assert said == ["* end ∝ batch size^p: n/a — a power law needs 3 batch sizes, this grid "
                    "has 1"]
    three = synthetic_cube(with_llc=False, with_div=False)
    assert "batch_size_exponent (continue): " in tables.format_table(
        three.merge(critical_period_summary(three)))
    csv = pd.read_csv(tables.to_csv(summary, tmp_path / "s.csv"))
    for knee in ("llc_knee_trunk", "llc_knee_sharp"):
        assert csv[f"{knee}_unstable"].isna().all() and csv[f"{knee}_within_noise"].isna().all()
    with_llc = synthetic_cube().merge(critical_period_summary(synthetic_cube()))
    flags = tables.summary_table(with_llc)["llc_knee_trunk_within_noise"]
    assert flags.notna().all() and set(flags) <= {True, False}


def test_a_cube_with_its_sweeps_out_of_order_opens_in_order(tmp_path: Path) -> None:
    """A cube edited by hand may hold its switch epochs (or batch sizes) out of order; the
    figures draw curves, and the statistics take "earliest" and "later", along them, so
    ``open_cube`` returns them in increasing order."""
    from critperiods.results.cube import open_cube

    cube = synthetic_cube(with_llc=False, with_div=False)
    shuffled = cube.isel(switch_epoch=[2, 0, 1, *range(3, cube.sizes["switch_epoch"])],
                         batch_size=[2, 0, 1])
    shuffled.to_netcdf(tmp_path / "cube.nc")
    opened = open_cube(tmp_path / "cube.nc")
    assert list(opened["switch_epoch"].values) == sorted(cube["switch_epoch"].values)
    assert list(opened["batch_size"].values) == sorted(cube["batch_size"].values)
    xr.testing.assert_allclose(opened["final_test_accuracy"],
                               cube["final_test_accuracy"].transpose(*opened[
                                   "final_test_accuracy"].dims))


def test_figure_1b_dashes_a_power_law_whose_interval_tells_no_direction(monkeypatch) -> None:
    """Figure 1b's legend gives the exponent's interval; the fitted line is dashed where
    that interval includes 0 or is unbounded (a censored end), solid where it excludes 0
    (an unbounded interval was drawn solid, with no interval, as if a direction held)."""
    from critperiods.results import plots

    cube = with_schedules(synthetic_cube(with_llc=False, with_div=False))
    cube = cube.merge(critical_period_summary(cube))
    for bounds, dashed, said in (([-0.71, -0.29], False, "[-0.71, -0.29]"),
                                 ([-0.9, 0.2], True, "[-0.90, 0.20], includes 0"),
                                 ([-np.inf, np.inf], True, "interval unbounded")):
        c = cube.copy(deep=True)
        for name in ("batch_size_exponent", "temperature_exponent"):
            c[name].loc[{"lr_schedule": "continue"}] = -0.5
            c[f"{name}_interval"].loc[{"lr_schedule": "continue"}] = bounds
        figures = []
        monkeypatch.setattr(plots, "_save", lambda fig, path, dpi, got=figures: got.append(fig))
        plots.critical_period_vs_temperature(c, "unused.png")
        line = next(ln for ln in figures[0].axes[0].lines
                    if ln.get_label().startswith("continue: power law"))
        assert said in line.get_label(), line.get_label()
        assert (line.get_linestyle() == "--") is dashed


def test_the_net_of_descent_reads_its_own_sign() -> None:
    """A raw λ̂ below 0 at a checkpoint off its minimum is what the chains' descent gives;
    λ̂ net of it (``llc_mean − llc_descent``) is there to undo that, so its ``negative``
    flag is judged on the net value: −5 with a descent of −116 counts as 111 in the net
    markers (it was dropped with the raw one), while a net value below 0 is left out."""
    from critperiods.measure.llc.quality import FLAGS

    epochs = np.array([2.0, 4.0])
    cube = xr.Dataset(
        {"llc_mean": (("epoch",), [-5.0, 30.0]), "llc_descent": (("epoch",), [-116.0, 40.0]),
         "llc_quality": (("epoch",), [float(FLAGS["negative"]), 0.0])},
        coords={"epoch": epochs})
    raw = selection.valid_llc(cube)
    net = selection.valid_llc(cube, net_of_descent=True)
    assert np.isnan(raw.sel(epoch=2.0)) and float(raw.sel(epoch=4.0)) == 30.0
    assert float(net.sel(epoch=2.0)) == 111.0 and np.isnan(net.sel(epoch=4.0))
    # other flags stay whatever the sign
    cube["llc_quality"][0] = float(FLAGS["negative"] | FLAGS["unstable_step"])
    assert np.isnan(selection.valid_llc(cube, net_of_descent=True).sel(epoch=2.0))


def test_a_figure_of_a_stage_that_did_not_run_says_so(tmp_path) -> None:
    """The workflow asks for the λ̂, divergence and perturbation figures only where their
    stages ran; called on a cube without them, each says which variable and which config
    key, not a KeyError."""
    import re

    from critperiods.results.plots import NEEDS, PLOTTERS

    cube = synthetic_cube(with_llc=False, with_div=False)
    for figure, (name, key) in NEEDS.items():
        with pytest.raises(ValueError, match=rf"figure {figure}: the cube has no {name} .*"
                                             rf"{re.escape(key)} is off"):
            PLOTTERS[figure](cube, tmp_path / f"{figure}.png")
