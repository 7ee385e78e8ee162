"""Holm's correction of the markers' offsets (critperiods.results.multiple_testing)."""

from __future__ import annotations

import numpy as np
import pytest

from critperiods.results.multiple_testing import holm_adjusted


def test_holm_adjusts_a_worked_example() -> None:
    """Sorted 0.005, 0.01, 0.03, 0.04 become 4·0.005, 3·0.01, 2·0.03, then max(0.06, 1·0.04):
    the adjusted values never fall as the raw ones rise."""
    got = holm_adjusted(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


def test_holm_keeps_shape_skips_nan_and_caps_at_1() -> None:
    p = np.array([[0.01, np.nan], [0.6, 0.04]])
    got = holm_adjusted(p)
    assert got.shape == p.shape and np.isnan(got[0, 1])
    np.testing.assert_allclose(got[[0, 1, 1], [0, 0, 1]], [0.03, 0.6, 0.08])
    np.testing.assert_allclose(holm_adjusted([0.4, 0.5, 0.6]), [1.0, 1.0, 1.0])
    assert np.isnan(holm_adjusted(np.full(3, np.nan))).all()


@pytest.mark.parametrize("seed", range(20))
def test_holm_is_between_the_raw_p_and_bonferroni_and_keeps_the_order(seed) -> None:
    p = np.random.default_rng(seed).uniform(0, 0.3, 9)
    got = holm_adjusted(p)
    assert (got >= p - 1e-15).all() and (got <= np.minimum(1, 9 * p) + 1e-15).all()
    assert got[np.argmin(p)] == pytest.approx(min(1.0, 9 * p.min()))  # the first step
    order = np.argsort(p)
    assert (np.diff(got[order]) >= 0).all()


def test_holm_holds_the_familywise_error_rate_under_the_null() -> None:
    """Nine true nulls with uniform p-values: a rejection anywhere at 10 % happens in at
    most 10 % of families (Bonferroni's bound; for independent tests ~9.6 %), where the
    uncorrected tests reject somewhere in ~61 %."""
    p = np.random.default_rng(0).uniform(size=(20000, 9))
    any_holm = (np.apply_along_axis(holm_adjusted, 1, p) < 0.1).any(axis=1).mean()
    any_raw = (p < 0.1).any(axis=1).mean()
    assert any_holm <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 20000) and any_raw > 0.55


def test_the_familywise_bench_runs_and_holm_calls_less_where_the_markers_are_the_end() -> None:
    """bench/familywise_false_calls.py, in a few runs, so that it cannot rot; the full table
    is in docs/analysis.md. Where every marker is the end, Holm's correction tells some
    marker from it in fewer runs than the offsets' own intervals do, never more."""
    from dataclasses import replace

    from critperiods.results.power import DEFAULT_GRID
    from tests.conftest import bench_module

    bench = bench_module("familywise_false_calls")
    table = bench.main(["--trials", "2", "--seeds", "3"])
    row = next(line for line in table.splitlines()
               if line.startswith("| every marker at the end (7) | 3 |"))
    assert row.count("|") == 11  # the whole runs' 6 shares and power's resampled 2
    null = bench.tally(bench.SCENARIOS["every marker at the end (7)"],
                       replace(DEFAULT_GRID, seeds=3), trials=40)
    assert null["any holm"] <= null["any"] and null["any"] > 0.1
    assert null["any holm"] <= 0.2 and null["clear holm"] <= null["any holm"]
