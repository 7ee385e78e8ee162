"""The broken-stick knee of a λ̂ curve, its interval, and its paired offset from the end."""

from __future__ import annotations

import numpy as np
import pytest

from critperiods.results import fits
from critperiods.results.knee import (
    SeedJackknife,
    fit_broken_stick,
    knee_with_interval,
    knees_without_each_seed,
    offset_floor,
    paired_offset,
    paired_offset_p,
)
from tests.conftest import bench_module

EPOCHS = np.arange(4.0, 23.0, 2.0)  # the default's λ̂ epochs and more


def stick(x: np.ndarray, knee: float, before: float = 5.0, after: float = 1.0) -> np.ndarray:
    return np.where(x < knee, before * (x - knee), after * (x - knee)) + 100.0


def brute_force_knee(x: np.ndarray, y: np.ndarray, step: float = 2e-3) -> float:
    """The knee by a dense scan of [x₂, x₋₂]: slow, obviously right."""
    best = (np.inf, np.nan)
    for k in np.arange(x[1], x[-2] + step / 2, step):
        design = np.column_stack([np.ones_like(x), x, np.maximum(x - k, 0)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((y - design @ coef) ** 2))
        if sse < best[0] - 1e-12:
            best = (sse, k)
    return best[1]


@pytest.mark.parametrize("knee", [6.0, 6.7, 7.3, 8.0, 15.9, 19.3, 20.0])  # first gap to last
def test_an_exact_broken_stick_gives_its_knee_between_points_or_at_one(knee) -> None:
    assert fit_broken_stick(EPOCHS, stick(EPOCHS, knee)) == pytest.approx(knee, abs=1e-9)


def test_the_knee_is_the_least_squares_one_on_noisy_curves() -> None:
    rng = np.random.default_rng(0)
    for _ in range(8):
        y = stick(EPOCHS, rng.uniform(6, 20)) + rng.normal(0, 4, EPOCHS.size)
        assert fit_broken_stick(EPOCHS, y) == pytest.approx(brute_force_knee(EPOCHS, y),
                                                            abs=3e-3)


def test_the_knee_follows_a_shift_and_a_stretch_of_the_epochs() -> None:
    y = stick(EPOCHS, 9.4) + np.random.default_rng(1).normal(0, 3, EPOCHS.size)
    k = fit_broken_stick(EPOCHS, y)
    assert fit_broken_stick(3 * EPOCHS + 10, y) == pytest.approx(3 * k + 10)
    assert fit_broken_stick(EPOCHS[::-1], y[::-1]) == pytest.approx(k)  # order does not matter


def test_the_knee_does_not_depend_on_the_units_of_the_curve() -> None:
    y = stick(EPOCHS, 11.3)
    for scale in (1e-12, 1.0, 1e9):
        assert fit_broken_stick(EPOCHS, scale * y) == pytest.approx(11.3)
    assert np.isnan(fit_broken_stick(EPOCHS, 1e-12 * (3 * EPOCHS - 2)))


def test_a_repeated_epoch_is_an_error_not_a_missing_knee() -> None:
    with pytest.raises(ValueError, match="x repeats"):
        fit_broken_stick(np.r_[EPOCHS, EPOCHS[-1]], np.r_[stick(EPOCHS, 9.0), 0.0])


def test_no_knee_on_a_straight_line_or_with_too_few_points() -> None:
    assert np.isnan(fit_broken_stick(EPOCHS, 3 * EPOCHS - 2))
    assert np.isnan(fit_broken_stick(EPOCHS[:3], stick(EPOCHS[:3], 6)))
    with_holes = stick(EPOCHS, 9.0)
    with_holes[3:] = np.nan  # 3 finite points left
    assert np.isnan(fit_broken_stick(EPOCHS, with_holes))
    y = stick(EPOCHS, 9.0)
    y[5] = np.nan  # a hole is skipped, not a reason to give up
    assert fit_broken_stick(EPOCHS, y) == pytest.approx(9.0)


def test_the_knee_never_sits_on_the_first_or_last_point() -> None:
    """A bend at the ends would rest one segment on one point."""
    y = stick(EPOCHS, EPOCHS[0] + 0.5)
    y[0] += 50  # an outlier at the first epoch pulls the knee as far left as it may go
    assert EPOCHS[1] <= fit_broken_stick(EPOCHS, y) <= EPOCHS[-2]


def seeds_of(knees: list[float], noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(epoch, seed) λ̂: each seed its own knee and level, plus noise."""
    rng = np.random.default_rng(seed)
    return np.stack([stick(EPOCHS, k) + 10 * i + rng.normal(0, noise, EPOCHS.size)
                     for i, k in enumerate(knees)], axis=1)


def test_leaving_each_seed_out_refits_the_others() -> None:
    values = seeds_of([8.0, 10.0, 12.0], noise=1.0)
    values[:, 1] = np.nan  # seed 1 has no valid λ̂: nothing to leave out
    loo = knees_without_each_seed(EPOCHS, values)
    assert np.isnan(loo[1])
    assert loo[0] == pytest.approx(fit_broken_stick(EPOCHS, values[:, 2]))
    assert loo[2] == pytest.approx(fit_broken_stick(EPOCHS, values[:, 0]))
    assert np.isnan(knees_without_each_seed(EPOCHS, values[:, :2])).all()  # one seed left


def test_the_knee_interval_is_the_jackknife_with_a_floor_and_within_the_epochs() -> None:
    same = seeds_of([9.0, 9.0, 9.0])
    assert knee_with_interval(EPOCHS, same) == pytest.approx((9.0, 8.0, 10.0))  # ± 1 = half 2
    spread = seeds_of([7.0, 10.0, 13.0], noise=0.5)
    k, lo, hi = knee_with_interval(EPOCHS, spread)
    loo = knees_without_each_seed(EPOCHS, spread)
    assert (lo, hi) == pytest.approx(fits.jackknife_interval(k, loo))
    wide = seeds_of([6.0, 12.0, 20.0])
    _, lo, hi = knee_with_interval(EPOCHS, wide)
    assert (lo, hi) == (EPOCHS[1], EPOCHS[-2])  # clipped to where a knee can be
    k, lo, hi = knee_with_interval(EPOCHS, seeds_of([9.0]))
    assert k == pytest.approx(9.0) and np.isnan(lo) and np.isnan(hi)
    assert all(np.isnan(knee_with_interval(EPOCHS, 2 * EPOCHS[:, None] + np.arange(3))))


def test_a_seed_without_which_no_knee_is_left_leaves_the_knee_unbounded() -> None:
    """Seed 0 alone bends; without it the curve is straight: the data do not bound the knee,
    so the interval is all of where a knee can be, not a jackknife of the other refits."""
    values = np.stack([stick(EPOCHS, 12.0), 3 * EPOCHS, 3 * EPOCHS + 5], axis=1)
    loo = knees_without_each_seed(EPOCHS, values)
    assert np.isnan(loo[0]) and np.isfinite(loo[1:]).all()
    knee, lo, hi = knee_with_interval(EPOCHS, values)
    assert np.isfinite(knee) and (lo, hi) == (EPOCHS[1], EPOCHS[-2])


def test_the_offset_is_paired_a_shared_seed_effect_cancels() -> None:
    """Seed i moves the knee and the end by the same amount: knee − end is the same without
    any seed, so the paired interval is only its floor, where treating the two as
    independent would be wide."""
    shift = np.array([-3.0, 0.0, 3.0])
    knee = SeedJackknife(10.0, 10.0 - shift / 2, np.ones(3, bool))
    end = SeedJackknife(7.0, 7.0 - shift / 2, np.ones(3, bool))
    assert paired_offset(knee, end, min_half_width=1.5) == pytest.approx((3.0, 1.5, 4.5))
    lo_k, hi_k = fits.jackknife_interval(10.0, knee.without_each_seed)
    assert hi_k - lo_k > 10  # each alone is uncertain


def test_the_offset_interval_is_the_jackknife_of_the_differences() -> None:
    knee = SeedJackknife(10.0, np.array([9.0, 10.5, 11.0, 9.5]), np.ones(4, bool))
    end = SeedJackknife(6.0, np.array([6.5, 5.5, 6.0, 6.0]), np.ones(4, bool))
    expected = fits.jackknife_interval(4.0, knee.without_each_seed - end.without_each_seed)
    assert paired_offset(knee, end) == pytest.approx((4.0, *expected))


def test_the_offset_interval_stays_within_what_the_two_can_give() -> None:
    """A knee in [6, 14] minus an end in [0, 16] lies in [−10, 14], however wide the
    jackknife; unbounded (a seed without which no knee is left) means all of that."""
    everything = np.ones(3, bool)
    end = SeedJackknife(6.0, np.array([2.0, 10.0, 6.0]), everything, (0.0, 16.0))
    knee = SeedJackknife(13.0, np.array([6.0, 14.0, 14.0]), everything, (6.0, 14.0))
    offset, lo, hi = paired_offset(knee, end)
    raw = fits.jackknife_interval(7.0, knee.without_each_seed - end.without_each_seed)
    assert raw[1] > 14 and (offset, lo, hi) == pytest.approx((7.0, raw[0], 14.0))
    gone = SeedJackknife(13.0, np.array([6.0, np.nan, 14.0]), everything, (6.0, 14.0))
    assert paired_offset(gone, end) == (7.0, -10.0, 14.0)


def test_a_seed_missing_from_one_side_leaves_that_side_unchanged() -> None:
    present = np.array([True, True, False])
    knee = SeedJackknife(10.0, np.array([9.0, 11.0, np.nan]), present)
    end = SeedJackknife(6.0, np.array([6.5, 5.5, 6.0]), np.ones(3, bool))
    diffs = np.array([9.0 - 6.5, 11.0 - 5.5, 10.0 - 6.0])
    assert paired_offset(knee, end) == pytest.approx((4.0, *fits.jackknife_interval(4.0, diffs)))


def test_a_seed_without_which_no_knee_is_left_makes_the_offset_unbounded() -> None:
    knee = SeedJackknife(10.0, np.array([9.0, np.nan, 11.0]), np.ones(3, bool))
    end = SeedJackknife(6.0, np.array([6.5, 5.5, 6.0]), np.ones(3, bool))
    assert paired_offset(knee, end) == (4.0, -np.inf, np.inf)


def test_no_offset_without_a_knee_or_an_end_and_no_interval_with_one_seed() -> None:
    one = np.array([True, False])
    nothing = SeedJackknife(float("nan"), np.full(2, np.nan), one)
    some = SeedJackknife(5.0, np.full(2, np.nan), one)
    assert all(np.isnan(paired_offset(nothing, some)))
    offset, lo, hi = paired_offset(some, SeedJackknife(3.0, np.full(2, np.nan), one))
    assert offset == 2.0 and np.isnan(lo) and np.isnan(hi)


@pytest.mark.parametrize("seed", range(40))
def test_the_offset_p_value_is_the_level_at_which_its_interval_touches_0(seed) -> None:
    """p is the smallest 1 − level whose interval excludes 0, floor and range included, and
    the floor widening with the level as profile intervals do: the interval at any level,
    with that level's floor, excludes 0 exactly where p is below 1 − level."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    knee = SeedJackknife(float(rng.normal(3, 3)), rng.normal(3, 3, n), np.ones(n, bool),
                         (float(rng.uniform(-4, 2)), 20.0))
    end = SeedJackknife(0.0, rng.normal(0, 1, n), np.ones(n, bool), (0.0, 4.0))
    base, growth = float(rng.choice([0.0, 1.0, 3.0])), float(rng.choice([0.0, 0.5, 2.0]))

    def floor_at(level: float) -> float:
        return base + growth * float(np.sqrt(level / (1 - level)))

    p = paired_offset_p(knee, end, floor_at)
    assert 0.0 <= p <= 1.0
    for level in (0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        _, lo, hi = paired_offset(knee, end, level, min_half_width=floor_at(level))
        if abs(p - (1 - level)) > 1e-6:  # at the level itself the bound touches 0
            assert (lo > 0 or hi < 0) == (p < 1 - level), (level, p, lo, hi)


def test_a_floor_that_widens_with_the_level_raises_the_p_value() -> None:
    """A tight jackknife (p_t ~ 1e-4) beyond a floor that reaches the offset at level 0.99:
    the p-value is 0.01, not p_t; a floor held at its 90 % width would have given p_t."""
    everything = np.ones(4, bool)
    knee = SeedJackknife(5.0, np.array([5.0, 5.02, 4.98, 5.01]), everything)
    end = SeedJackknife(0.0, np.array([0.0, 0.01, -0.01, 0.0]), everything)
    p_t = paired_offset_p(knee, end, 0.0)
    assert p_t < 1e-3
    assert paired_offset_p(knee, end, lambda level: 2.0 if level < 0.99 else 6.0) == \
        pytest.approx(0.01, abs=1e-8)
    assert paired_offset_p(knee, end, 2.0) == p_t


def test_the_offset_p_value_is_1_within_the_floor_and_0_outside_the_range() -> None:
    everything = np.ones(3, bool)
    end = SeedJackknife(6.0, np.array([6.05, 5.95, 6.0]), everything, (0.0, 16.0))
    knee = SeedJackknife(7.0, np.array([7.0, 7.1, 6.9]), everything, (2.0, 14.0))
    assert paired_offset_p(knee, end) < 0.1  # a tight jackknife tells 1 epoch from 0 ...
    assert paired_offset_p(knee, end, 1.5) == 1.0  # ... the floor does not
    early = SeedJackknife(3.0, np.array([3.0, 3.1, 2.9]), everything, (0.0, 4.0))
    late = SeedJackknife(6.0, np.array([6.5, 5.5, 6.0]), everything, (5.0, 16.0))
    assert paired_offset_p(early, late, 10.0) == 0.0  # it cannot reach 0
    gone = SeedJackknife(7.0, np.array([7.0, np.nan, 6.9]), everything, (2.0, 14.0))
    assert paired_offset_p(gone, end) == 1.0  # unbounded: no level excludes 0
    one = np.array([True, False, False])
    assert np.isnan(paired_offset_p(SeedJackknife(7.0, np.full(3, np.nan), one),
                                    SeedJackknife(6.0, np.full(3, np.nan), one)))


def test_the_jackknife_p_value_is_dual_to_the_jackknife_interval() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        loo = rng.normal(1.0, 1.0, int(rng.integers(2, 8)))
        estimate = float(loo.mean())
        p = fits.jackknife_p_value(estimate, loo)
        lo, hi = fits.jackknife_interval(estimate, loo, 1 - p)
        assert min(abs(lo), abs(hi)) == pytest.approx(0.0, abs=1e-9)
    assert fits.jackknife_p_value(2.0, np.array([2.0, 2.0])) == 0.0
    assert fits.jackknife_p_value(0.0, np.array([0.0, 0.0])) == 1.0
    assert np.isnan(fits.jackknife_p_value(2.0, np.array([2.0])))


def test_the_marker_coverage_bench_runs_and_covers_near_its_level() -> None:
    """bench/marker_coverage.py, in a few trials, so that it cannot rot; the full run's table
    is in docs/analysis.md. Where a seed moves the knee and the end together, pairing
    narrows the interval (with 3 seeds, where the jackknife, not the floor, sets it)."""
    from dataclasses import replace

    from critperiods.results.power import DEFAULT_GRID, coverage

    bench = bench_module("marker_coverage")
    shifted = bench.SCENARIOS["knee after the end, drop before, seeds shift all three (s.d. 15 %)"]
    got = coverage(shifted, replace(DEFAULT_GRID, seeds=3), trials=40)
    assert "| knee after the end, drop before" in bench.main(["--trials", "3", "--seeds", "3"])
    assert got["paired cover"] >= 0.8 and got["knee cover"] >= 0.75
    assert got["drop cover"] >= 0.8 and got["drop paired cover"] >= 0.8
    assert got["paired width"] < got["unpaired width"]
    assert 0 < got["paired excludes 0"] < 1


def test_the_offset_floor_adds_the_two_resolutions_in_quadrature() -> None:
    """Half the switch spacing (2) and half the λ̂ spacing (1.5): ± 2.5, not ± 3.5."""
    assert offset_floor(1.5, 2.0) == pytest.approx(2.5)
    assert offset_floor(2.0, 2.0) == pytest.approx(2 * 2**0.5)
    assert offset_floor(0.0, 2.0) == 2.0


def test_the_profile_interval_holds_a_weak_knee_at_its_level() -> None:
    """Curves with a weak bend (slope 4, then 7) and noise 10 per value, 3 seeds: the
    profile interval holds the true knee near its nominal 90 %, where the jackknife alone
    does not; a clear bend (8, then 0, noise 3) gets under half the interval, and
    noise-free values the knee itself."""
    from critperiods.results.knee import profile_knee_interval

    rng = np.random.default_rng(1)
    epochs = np.arange(4, 17, 2.0)

    def curves(before: float, after: float, noise: float) -> np.ndarray:
        rel = epochs[:, None] - 10.0
        return (np.where(rel < 0, before * rel, after * rel) + rng.normal(0, 10, 3)[None]
                + rng.normal(0, noise, (epochs.size, 3)))

    held = {"profile": [], "jackknife": []}
    widths = []
    for _ in range(150):
        values = curves(4.0, 7.0, 10.0)
        lo, hi = profile_knee_interval(epochs, values)
        held["profile"].append(lo <= 10.0 <= hi)
        widths.append(hi - lo)
        knee = fit_broken_stick(epochs, values.mean(axis=1))
        jk = fits.jackknife_interval(knee, knees_without_each_seed(epochs, values))
        held["jackknife"].append(jk[0] <= 10.0 <= jk[1])
    assert np.mean(held["profile"]) >= 0.85
    assert np.mean(held["jackknife"]) < np.mean(held["profile"])
    with_holes = []  # a mean over fewer seeds weighs less: the level holds with holes too
    for _ in range(150):
        values = curves(4.0, 7.0, 10.0)
        values[rng.random(values.shape) < 0.3] = np.nan
        lo, hi = profile_knee_interval(epochs, values)
        if np.isfinite(lo):
            with_holes.append(lo <= 10.0 <= hi)
    assert np.mean(with_holes) >= 0.85
    clear = [np.subtract(*profile_knee_interval(epochs, curves(8.0, 0.0, 3.0)))
             for _ in range(50)]
    assert -np.median(clear) < 0.5 * np.median(widths)
    exact = np.where(epochs < 10, 8 * (epochs - 10), 2 * (epochs - 10))[:, None] + [0, 5, 9]
    assert profile_knee_interval(epochs, exact) == pytest.approx((10.0, 10.0))
    assert all(np.isnan(profile_knee_interval(epochs, exact[:, :1])))  # one seed: no noise


def test_the_knee_interval_and_resolution_take_in_the_profile() -> None:
    """The knee's interval spans its profile interval, and its resolution (the floor's
    knee share) is the farther side of it where that exceeds half the grid spacing."""
    from critperiods.results.knee import knee_resolution, profile_knee_interval

    rng = np.random.default_rng(2)
    values = (np.where(EPOCHS < 9, 4 * (EPOCHS - 9), 6 * (EPOCHS - 9))[:, None]
              + rng.normal(0, 8, (EPOCHS.size, 3)))
    knee, lo, hi = knee_with_interval(EPOCHS, values)
    p_lo, p_hi = profile_knee_interval(EPOCHS, values)
    assert lo <= p_lo and hi >= p_hi
    half = fits.switch_spacing_at(EPOCHS, knee) / 2
    assert knee_resolution(EPOCHS, values, knee) == pytest.approx(
        max(half, knee - p_lo, p_hi - knee))
    assert knee_resolution(EPOCHS, values, knee) > half  # a weak bend: the noise decides


def test_the_batched_weighted_fits_match_least_squares_one_by_one() -> None:
    """weighted_fits' normal equations give lstsq's coefficients and weighted residual sums
    on √w-scaled designs, a column of zeros included."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 20, 9))
    knots = np.array([2.0, 7.5, 11.0, 25.0])  # the last: (x − k)₊ is all zero
    designs = np.stack(np.broadcast_arrays(1.0, x[None, :] - x.mean(),
                                           np.maximum(x[None, :] - knots[:, None], 0.0)), -1)
    y, w = rng.normal(0, 3, x.size) + 0.5 * x, rng.integers(1, 4, x.size).astype(float)
    sse, coef = fits.weighted_fits(designs, y, w)
    for d, got_sse, got_coef in zip(designs, sse, coef, strict=True):
        want, *_ = np.linalg.lstsq(d * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)
        assert got_coef == pytest.approx(want, rel=1e-8, abs=1e-9)
        assert got_sse == pytest.approx(float(np.sum(w * (y - d @ want) ** 2)), rel=1e-9)


def test_the_end_profile_ignores_order_holds_the_kink_and_weighs_holes() -> None:
    """The same runs with the switch epochs shuffled give the same interval; it holds the
    hinge's kink; a hole makes it no narrower than the run without it did."""
    rng = np.random.default_rng(4)
    switches = np.arange(0, 21, 4.0)
    acc = (85 - 0.4 * np.maximum(switches[:, None] - 7.0, 0)
           + rng.normal(0, 0.8, (switches.size, 4)))
    lower, upper = fits.hinge_profile_interval(switches, acc)
    kink = fits.hinge_end(switches, acc)[0]
    assert lower <= kink <= upper
    order = rng.permutation(switches.size)
    assert fits.hinge_profile_interval(switches[order], acc[order]) == pytest.approx(
        (lower, upper))
    holed = acc.copy()
    holed[2, :2] = np.nan
    assert np.all(np.isfinite(fits.hinge_profile_interval(switches, holed)))


def test_a_bend_beyond_the_noise_is_told_from_a_noisy_line() -> None:
    """Straight lines with noise 10 per value, 3 seeds: a bend is found in the test's 10 %
    (its critical value is simulated for the design, so searching for the knee does not
    inflate it, as it did an F test's); the designed bend (8, then 2 per epoch) in most
    runs; without noise, exactly."""
    from critperiods.results.knee import bends_beyond_noise

    rng = np.random.default_rng(8)
    epochs = np.arange(4, 17, 2.0)

    def noisy(curve: np.ndarray) -> np.ndarray:
        return curve[:, None] + rng.normal(0, 10, 3)[None] + rng.normal(0, 10, (epochs.size, 3))

    line, bent = 5 * epochs, np.where(epochs < 10, 8 * (epochs - 10), 2 * (epochs - 10))
    false = np.mean([bends_beyond_noise(epochs, noisy(line)) for _ in range(600)])
    found = np.mean([bends_beyond_noise(epochs, noisy(bent)) for _ in range(100)])
    assert 0.07 <= false <= 0.13 and found >= 0.6
    assert bends_beyond_noise(epochs, bent[:, None] + [0.0, 3.0, 7.0]) is True
    assert bends_beyond_noise(epochs, line[:, None] + [0.0, 3.0, 7.0]) in (False, None)
    assert bends_beyond_noise(epochs, noisy(bent)[:, :1]) is None  # one seed: no noise
