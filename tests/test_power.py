"""`python -m critperiods power`: what a config's grid can tell, on simulated runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from critperiods.__main__ import main
from critperiods.results.power import DEFAULT_GRID, DEFAULT_NOISE, Grid, Scenario, coverage, grid_of

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_is_the_configs_switches_llc_epochs_seeds_and_level():
    from critperiods.cli.common import load_config

    assert grid_of(load_config([])) == DEFAULT_GRID  # config.yaml's: 0-16 by 4, λ̂ 2-16 by 2
    study = grid_of(load_config([str(ROOT / "configs/fmnist_study.yaml")]))
    assert study.seeds == 5 and study.switches[-1] == 20.0


def test_power_grows_with_the_offset_and_false_calls_stay_rare():
    """A knee and a drop 6 epochs from the end, 10 seeds: called in most runs; markers at
    the end: called in few (at a nominal 90 %, at most about 10 %)."""
    grid = Grid(DEFAULT_GRID.switches, DEFAULT_GRID.llc_epochs, 10)
    away = coverage(Scenario(7.0, 13.0, drop=1.0), grid, trials=30)
    at = coverage(Scenario(7.0, 7.0, drop=7.0), grid, trials=30)
    assert away["paired excludes 0"] > 0.8 and away["drop paired excludes 0"] > 0.8
    assert at["paired excludes 0"] < 0.25 and at["drop paired excludes 0"] < 0.25
    assert at["paired cover"] > 0.75 and at["drop paired cover"] > 0.75


def test_power_counts_apart_the_calls_the_short_answer_would_make():
    """A call on a knee the answer flags (unstable, within noise, or unable to come before
    the end) is a call `power` counts but the short answer reads as "cannot tell": at the
    default noise and 3 seeds, a clear share of the calls are such."""
    grid = Grid(DEFAULT_GRID.switches, DEFAULT_GRID.llc_epochs, 3)
    away = coverage(replace(DEFAULT_NOISE, end=8.0, knee=12.0), grid, trials=80)
    assert 0 < away["paired excludes 0, unflagged"] < away["paired excludes 0"]


def test_the_bend_shows_beyond_the_noise_where_there_is_one():
    """The share of runs whose knee is not flagged within noise: most where λ̂ bends
    clearly, few where it is a straight line (the test's false rate, about 1 − level)."""
    grid = Grid(DEFAULT_GRID.switches, DEFAULT_GRID.llc_epochs, 5)
    clear = coverage(Scenario(7.0, 10.0, llc_noise=3.0), grid, trials=30)
    line = coverage(Scenario(7.0, 10.0, llc_noise=3.0, llc_slopes=(4.0, 4.0)), grid, trials=30)
    assert clear["bends"] > 0.9 and line["bends"] < 0.3


def test_the_command_prints_a_row_per_number_of_seeds(capsys):
    assert main(["power", str(ROOT / "tests/configs/tiny.yaml"), "--trials", "5",
                 "--seeds", "2", "4", "--offset", "2", "--llc-noise", "1"]) == 0
    out = capsys.readouterr().out
    assert "λ̂ ± 1 per estimate" in out and "knee 2 after the end: called" in out
    rows = [line for line in out.splitlines() if line[:3] in ("| 2", "| 4")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 4"]


def test_a_one_seed_config_is_told_that_it_can_call_nothing(tmp_path, capsys):
    one = tmp_path / "one.yaml"
    one.write_text("grid:\n  seeds: [0]\n")
    assert main(["power", str(one), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 seed in this config: an interval over seeds needs 2" in out
    rows = [line.split(" | ")[0] for line in out.splitlines() if line[:2] == "| "]
    assert rows == ["| seeds", "| 2"] * 2  # the markers' table and the exponent's: one row


@pytest.mark.parametrize("flags, says", [
    (["--trials", "0"], "argument --trials: 0: must be at least 1"),
    (["--seeds", "1"], "argument --seeds: 1: must be at least 2"),  # no interval over 1 seed
    (["--llc-noise", "-5"], "argument --llc-noise: -5: must be at least 0"),
    (["--seed-shift", "-1"], "argument --seed-shift: -1: must be at least 0"),
    (["--deficit-slope", "0"], "argument --deficit-slope: 0: must be above 0"),
    (["--llc-noise", "nan"], "argument --llc-noise: nan: must be a finite number"),
])
def test_the_command_refuses_impossible_flags_naming_them(capsys, flags, says):
    """Values no simulation can mean end with one line naming the flag, not a table of
    n/a, a 100 % from an untested row, or a numpy traceback."""
    with pytest.raises(SystemExit) as stop:
        main(["power", *flags])
    assert stop.value.code == 2 and says in capsys.readouterr().err


def test_the_command_declines_the_toy_study_in_one_line(capsys):
    assert main(["power", str(ROOT / "configs/toy_landscapes.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no critical period" in err


# --- power --noise-from: the noise a finished run measured ------------------------------


def simulated_cube(truth: Scenario, seeds: int, *, deficit: bool = True, llc: bool = True,
                   divergence: bool = True, batch_size: int = 64, draws: int = 11):
    """A cube of one batch size and schedule whose final accuracy, trunk λ̂ and distances
    at the horizon (2 epochs after each switch) are :func:`simulate`'s draws (seeded by
    ``draws``) of ``truth`` on switch epochs 0-20 by 4 and λ̂ epochs 4-20 by 1."""
    import numpy as np
    import xarray as xr

    from critperiods.results.power import simulate

    grid = Grid(tuple(np.arange(0, 21, 4.0)), tuple(np.arange(4, 21, 1.0)), seeds)
    acc, llc_values, div = simulate(truth, grid, np.random.default_rng(draws))
    switches, llc_epochs = np.asarray(grid.switches), np.asarray(grid.llc_epochs)
    epochs = np.union1d(llc_epochs, switches + 2)
    run = {"batch_size": [batch_size], "lr_schedule": ["continue"], "switch_epoch": switches,
           "seed": np.arange(seeds)}
    dims = tuple(run)
    data = {"final_test_accuracy": (dims, acc[None, None] / 100)}
    if llc:
        values = np.full((1, 1, switches.size, seeds, epochs.size), np.nan)
        values[0, 0, -1][:, np.isin(epochs, llc_epochs)] = llc_values.T  # the longest trunk
        data["llc_mean"] = ((*dims, "epoch"), values)
    if divergence:
        distances = np.full((1, 1, switches.size, seeds, 2, epochs.size), np.nan)
        for i, s in enumerate(switches):
            distances[0, 0, i, :, 0, np.flatnonzero(epochs == s + 2)[0]] = div[i]
        data["div_l2"] = ((*dims, "reference", "epoch"), distances)
    if deficit:
        data["permanent_deficit_interval"] = (("batch_size", "lr_schedule", "bound"),
                                              [[[1.0, 2.0]]])
    return xr.Dataset(data, coords={**run, "epoch": epochs, "reference": ["blurred", "sharp"],
                                    "bound": ["lower", "upper"]})


def test_a_simulated_run_gets_the_summarys_own_intervals():
    """What power's simulation reports for a run (fit_end, knee_fit, drop_fit on its arrays)
    is what the summary computes on a cube of the same draws: the end, the knee, the drop and
    both offsets with their intervals, to the last bit. The offsets are clipped to what the
    marker and the end can give, and vanish where the end is not located."""
    import numpy as np

    from critperiods.results.end_fit import fit_end
    from critperiods.results.markers import drop_fit, knee_fit
    from critperiods.results.power import _drop, simulate
    from critperiods.results.summary import critical_period_summary

    truth = Scenario(9.0, 12.0, drop=6.0)
    summary = critical_period_summary(simulated_cube(truth, 4)).isel(batch_size=0,
                                                                      lr_schedule=0)
    grid = Grid(tuple(np.arange(0, 21, 4.0)), tuple(np.arange(4, 21, 1.0)), 4)
    acc, llc, div = simulate(truth, grid, np.random.default_rng(11))  # simulated_cube's draws
    switches = np.asarray(grid.switches)
    end = fit_end(switches, acc / 100, 0.9)  # the cube holds accuracy as a fraction
    knee = knee_fit(np.asarray(grid.llc_epochs), llc, 0.9, end)
    drop = drop_fit(switches, switches, *_drop(switches, div), np.ones(4, bool), 0.9, end)

    def triple(name):
        return (float(summary[name]), *summary[f"{name}_interval"].values.tolist())

    assert end.located
    assert triple("critical_period_end") == (end.end, end.lower, end.upper)
    assert triple("llc_knee_trunk") == knee.knee
    assert triple("llc_knee_minus_end_trunk") == knee.offset
    assert summary["divergence_drop_epoch_interval"].values.tolist() == list(drop.interval)
    assert triple("divergence_drop_minus_end") == drop.offset
    assert float(summary["llc_knee_minus_end_trunk_p"]) == knee.offset_p()
    assert float(summary["divergence_drop_minus_end_p"]) == drop.offset_p()
    # seeds that scatter the drop over the whole grid: the offset's interval is clipped to
    # what a drop (switch 0-20) minus an end (switch 0-20) can give
    scattered = np.array([0.0, 20.0, 2.0, 18.0])
    _, lower, upper = drop_fit(switches, switches, 10.0, scattered, np.ones(4, bool), 0.9,
                               end).offset
    assert end.jackknife.bounds == (0.0, 20.0) and (lower, upper) == (-20.0, 20.0)

    unlocated = fit_end(switches, np.full_like(acc, 0.85)
                        + np.random.default_rng(1).normal(0, 0.01, acc.shape), 0.9)
    assert not unlocated.located
    assert np.isnan(knee_fit(np.asarray(grid.llc_epochs), llc, 0.9, unlocated).offset).all()


def test_a_cube_gives_back_the_noise_and_effects_put_in():
    """A run simulated with known noise and shape, 60 seeds: observed_noise reads back the
    spread of final accuracy, the deficit's slope and the end, λ̂'s spread per estimate and
    across the seeds' levels (corrected for the estimates' share), its slopes where it bends
    beyond its noise, and the distances' relative spread."""
    from critperiods.results.observed_noise import observed_noise

    truth = Scenario(9.0, 12.0, drop=6.0, llc_noise=6.0, accuracy_noise=0.8, deficit_slope=0.7,
                     llc_slopes=(6.0, 1.0), llc_seed_spread=9.0, divergence_noise=0.15)
    seen = observed_noise(simulated_cube(truth, 60), 64)
    assert seen.seeds == 60 and not seen.missing
    assert abs(seen.accuracy_noise - 0.8) < 0.1 and abs(seen.deficit_slope - 0.7) < 0.1
    assert abs(seen.end - 9.0) < 1.0
    assert abs(seen.llc_noise - 6.0) < 0.5 and abs(seen.llc_seed_spread - 9.0) < 2.0
    assert abs(seen.llc_slopes[0] - 6.0) < 0.6 and abs(seen.llc_slopes[1] - 1.0) < 0.6
    assert abs(seen.divergence_noise - 0.15) < 0.03
    flat = observed_noise(simulated_cube(replace(truth, llc_slopes=(3.0, 3.0)), 3), 64)
    assert "llc_slopes" in flat.missing and "straight line" in flat.missing["llc_slopes"]


def test_what_a_cube_lacks_keeps_the_default_and_says_why():
    """No deficit interval, no λ̂, no distances: each is named, and the default's noise is
    used for it."""
    from critperiods.results.observed_noise import observed_noise

    truth = Scenario(9.0, 12.0, drop=6.0)
    bare = simulated_cube(truth, 4, deficit=False, llc=False, divergence=False)
    seen = observed_noise(bare, 64)
    assert set(seen.missing) == {"end", "llc_noise", "llc_seed_spread", "llc_slopes",
                                 "divergence_noise"}
    assert "no permanent_deficit_interval" in seen.missing["end"]
    scenario, kept = seen.scenario(DEFAULT_NOISE)
    assert scenario.llc_noise == DEFAULT_NOISE.llc_noise and "llc_noise" in kept
    assert scenario.accuracy_noise == seen.accuracy_noise


def test_flags_and_end_given_win_over_the_cube(tmp_path, capsys):
    cube = simulated_cube(Scenario(9.0, 12.0, drop=6.0), 4)
    cube.attrs["config"] = "experiment: simulated\n"
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)
    assert main(["power", "--noise-from", str(path), "--trials", "3", "--seeds", "4",
                 "--llc-noise", "2.5", "--end", "10"]) == 0
    out = capsys.readouterr().out
    assert "note: llc_noise: --llc-noise is used, not the run's" in out
    assert "λ̂ ± 2.5 per estimate" in out and "the end at epoch 10" in out
    assert "note: end: --end is used, not the run's" in out
    assert "the command line's for llc_noise" in out and "default's for llc_noise" not in out


def test_a_bad_recorded_config_names_the_cube(tmp_path):
    """A cube whose recorded config this version cannot load: one line naming the key and
    the cube, not config.yaml."""
    import pytest

    cube = simulated_cube(Scenario(9.0, 12.0, drop=6.0), 3)
    cube.attrs["config"] = "experiment: simulated\ngrid:\n  seeds: 0\n"
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)
    with pytest.raises(SystemExit) as err:
        main(["power", "--noise-from", str(path)])
    said = str(err.value)
    assert "grid.seeds" in said and str(path) in said and "config.yaml" not in said
    assert "\n" not in said


def test_the_noise_read_back_is_the_noise_put_in():
    """Runs simulated with a known noise and shape, many seeds: the estimators give back
    each run's spread of final accuracy, λ̂'s spread per estimate and across seeds' levels,
    and the λ̂ curve's knee and slopes, within sampling error."""
    import numpy as np

    from critperiods.results.fits import additive_spread
    from critperiods.results.observed_noise import broken_stick_slopes
    from critperiods.results.power import simulate

    truth = Scenario(8.0, 10.0, llc_noise=6.0, accuracy_noise=0.8, llc_slopes=(5.0, 1.0),
                     llc_seed_spread=9.0)
    grid = Grid(tuple(np.arange(0, 21, 2.0)), tuple(np.arange(2, 21, 1.0)), 80)
    acc, llc, _ = simulate(truth, grid, np.random.default_rng(3))
    assert abs(additive_spread(acc).sd - 0.8) < 0.08
    noise, offsets, _ = additive_spread(llc)
    assert abs(noise - 6.0) < 0.5
    assert abs(np.std(offsets, ddof=1) - 9.0) < 2.0
    knee, before, after = broken_stick_slopes(np.asarray(grid.llc_epochs), llc.mean(axis=1))
    assert abs(knee - 10.0) < 1.0 and abs(before - 5.0) < 0.5 and abs(after - 1.0) < 0.5


def test_the_spread_takes_out_seed_offsets_keeps_holes_and_needs_two_seeds():
    import numpy as np

    from critperiods.results.fits import additive_spread

    rng = np.random.default_rng(0)
    cells = np.linspace(0, 50, 30)[:, None]
    values = cells + np.array([-20.0, 0.0, 20.0, 5.0]) + rng.normal(0, 2.0, (30, 4))
    full, offsets, _ = additive_spread(values)
    assert abs(full - 2.0) < 0.5 and offsets[2] - offsets[0] > 35  # the offsets are not noise
    values[rng.random(values.shape) < 0.15] = np.nan  # a flagged λ̂, a diverged run
    assert abs(additive_spread(values).sd - full) < 0.5
    assert np.isnan(additive_spread(values[:, :1]).sd)  # one seed: no spread to read


def test_a_marker_the_grid_cannot_place_is_not_counted():
    """An end before the second λ̂ epoch: a knee there is neither called nor missed (n/a),
    and the note says why; the drop's cells still count."""
    from critperiods.results.power import power_table

    lines = power_table(DEFAULT_GRID, [3], trials=5, offset=4, end=2.0)
    assert any("a knee at epoch 2 is outside" in line for line in lines)
    unplaced = power_table(DEFAULT_GRID, [3], trials=5, offset=4, end=-2.0)  # no drop either
    assert next(line for line in unplaced if line.startswith("| 3 ")).split(" | ")[-2] == "n/a"
    row = next(line for line in lines if line.startswith("| 3 "))
    knee_false, drop_false = row.split(" | ")[1].split(", ")
    assert knee_false == "n/a" and drop_false.endswith("%")


def test_a_grid_without_trunk_llc_says_so_instead_of_failing():
    """Switch epochs that end before llc.first_epoch leave no λ̂ along the trunk: the knee's
    cells are n/a with a note (this raised a reshape error), the drop's still count."""
    from critperiods.results.power import power_table

    grid = Grid((0.0, 2.0, 4.0), (), 3)
    lines = power_table(grid, [3], trials=3, offset=2, end=2.0)
    assert lines[0].startswith("switch epochs 0, 2, 4; λ̂ along the trunk at none;")
    assert any(line.startswith("note: no λ̂ epoch along the trunk") for line in lines)
    row = next(line for line in lines if line.startswith("| 3 "))
    assert row.split(" | ")[1].split(", ")[0] == "n/a"
    assert row.split(" | ")[1].split(", ")[1].endswith("%")
    # the first calls are each offset's own; the last two columns, the report's, Holm's
    assert lines[-1].startswith("note: the first calls are each offset's own interval's")
    assert "The last two columns are those calls: a run of 3 batch sizes" in lines[-1]


def test_power_says_where_an_interval_falls_short_and_how_noisy_its_shares_are():
    """A drop 2 epochs before an end at 3.3 on a grid of switches 2 apart sits within a
    spacing of the first switch, where its interval runs short of the nominal level: a
    note names the interval and its coverage. With the end mid-grid no note. The header
    says how noisy a share is at this many runs, and the offset asked about."""
    from critperiods.results.power import power_table

    grid = Grid(tuple(float(k) for k in range(0, 21, 2)),
                tuple(float(e) for e in range(3, 21)), 8)
    lines = power_table(grid, [8], trials=100, offset=2, end=3.3)
    assert ("100 simulated runs per row (a share near 50 % has a standard error of 5.0 "
            "points)") in lines[0]
    assert lines[0].endswith("the markers away from it 2 epochs (--offset)")
    note = [line for line in lines if line.startswith("note: with 8 seeds")]
    assert len(note) == 1 and "the drop − end interval held the true offset in " in note[0]
    assert "against a nominal 90%" in note[0] and "knee − end" not in note[0]
    middle = power_table(grid, [8], trials=100, offset=2, end=10)
    assert not [line for line in middle if line.startswith("note: with")]


def test_the_offset_defaults_to_the_switch_spacing(tmp_path, capsys):
    """A grid of switches 20 epochs apart is asked about markers 20 epochs from the end, not
    the 4 that suit config.yaml's grid (which no grid this coarse can resolve)."""
    wide = tmp_path / "wide.yaml"
    wide.write_text("grid:\n  switch_epochs: [0, 20, 40, 60]\nepochs_after_switch: 4\n"
                    "llc:\n  every: 20\n  first_epoch: 20\n")
    assert main(["power", str(wide), "--trials", "3", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "knee 20 after the end" in out and "drop 20 before" in out
    assert main(["power", "--trials", "3", "--seeds", "2"]) == 0
    assert "knee 4 after the end" in capsys.readouterr().out


def test_power_reads_a_finished_runs_noise_off_its_cube(tiny_run, tmp_path, capsys):
    """On the tiny run: a table per batch size at the noise it measured, the cube's own grid
    (2 switch epochs), and a note for each value it could not estimate, which keeps the
    default's; a config's batch size the cube lacks is named, with no table."""
    cube = tiny_run / "results/tiny/cube.nc"
    assert main(["power", "--noise-from", str(cube), "--trials", "3", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "## batch 64 (2 seeds in the run)" in out
    assert "switch epochs 0, 2;" in out and "measured at batch 64" in out
    assert "note: llc_slopes:" in out and "the default's is used" in out
    rows = [line for line in out.splitlines() if line.startswith("| 2 ")]
    assert len(rows) == 1
    assert "not in" not in out  # the cube's own grid: every batch size measured
    assert ("note: grid.switch_epochs has 2: the deficit is measured, but the critical "
            "period's end (a hinge's kink) needs 3 switch epochs") in out  # as `check` says
    assert ("Every call below needs a located end, so its 0 % means nothing can be called on "
            "this grid, not that false calls are rare") in out
    wider = tmp_path / "wider.yaml"
    wider.write_text("grid:\n  batch_sizes: [32, 64, 512]\n")
    assert main(["power", str(wider), "--noise-from", str(cube), "--trials", "3",
                 "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert f"note: batch sizes 32, 512 of the config are not in {cube}: no noise measured " \
           "there, no table" in out
    assert "## batch 64" in out and "## batch 32" not in out
    assert (f"the exponent: 1 of the config's 3 batch sizes have noise measured in {cube}, "
            "and a power law needs 3: not simulated") in out
    three = tmp_path / "three.yaml"  # the tiny run's batch size 64 and a cube of three
    three.write_text("grid:\n  batch_sizes: [32, 64, 128, 256, 512]\n")
    default = xr.open_dataset(cube).load()
    wide = xr.concat([default.assign_coords(batch_size=[b]) for b in (64, 128, 256)],
                     "batch_size", data_vars="minimal", coords="minimal",
                     combine_attrs="override")
    wide.to_netcdf(tmp_path / "wide.nc")
    assert main(["power", str(three), "--noise-from", str(tmp_path / "wide.nc"), "--trials",
                 "3", "--seeds", "2"]) == 0
    assert ("note: the exponent is simulated on the 3 of the config's 5 batch sizes with "
            "noise measured (64, 128, 256), not on the others (32, 512)") in \
        capsys.readouterr().out


def simulated_grid(ends: dict[int, float], seeds: int, same_draws: bool = False):
    """A cube of several batch sizes (``ends``: batch size → true end), each simulated as
    :func:`simulated_cube` does, with its own draws or (``same_draws``) all with the same."""
    import xarray as xr

    return xr.concat([simulated_cube(Scenario(end, end + 3.0, drop=end), seeds,
                                     batch_size=batch, draws=11 if same_draws else batch)
                      for batch, end in ends.items()], dim="batch_size", data_vars="minimal",
                     coords="minimal", compat="override")


def test_the_correlation_across_batch_sizes_is_read_off_the_runs_residuals():
    """Batch sizes drawn independently correlate by chance only; the same draws at every
    batch size (one truth) correlate fully. Fewer than two batch sizes: NaN."""
    from critperiods.results.observed_noise import residual_correlation

    independent = residual_correlation(simulated_grid({64: 9.0, 128: 9.0, 256: 9.0}, 6))
    assert independent.pairs == 3 and independent.cells == 36
    assert abs(independent.r) < 3 * independent.chance < 0.5
    same = residual_correlation(simulated_grid({64: 9.0, 128: 9.0}, 6, same_draws=True))
    assert same.pairs == 1 and same.r == pytest.approx(1.0)
    one = residual_correlation(simulated_cube(Scenario(9.0, 12.0), 6))
    assert np.isnan(one.r) and one.pairs == 0


def test_the_exponent_at_a_runs_noise_is_centred_on_its_located_ends(tmp_path, capsys):
    """power --noise-from on a run of three batch sizes: the exponent's true ends pass
    through the geometric mean of the ends the run located (as observed_noise reads them),
    and the correlation between batch sizes is said beside the independence the simulation
    assumes."""
    from statistics import geometric_mean

    from critperiods.results.observed_noise import observed_noise

    cube = simulated_grid({64: 12.0, 128: 9.0, 256: 6.0}, 4)
    cube.attrs["config"] = "experiment: simulated\ngrid:\n  batch_sizes: [64, 128, 256]\n"
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)
    ends = [observed_noise(cube, b).end for b in (64, 128, 256)]
    assert all(np.isfinite(ends))
    assert main(["power", "--noise-from", str(path), "--trials", "2", "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    middle = geometric_mean(ends)
    assert (f"true ends {middle * 2 ** 0.5:.3g} at batch 64, {middle:.3g} at batch 128, "
            f"{middle * 2 ** -0.5:.3g} at batch 256 (the end at the middle batch size: the "
            "geometric mean of the run's 3 located ends; --end sets it)") in out
    assert "a seed's runs at different batch sizes err together by r = " in out
    assert "mean of 3 pairs of batch sizes, ≥ 24 runs each; s.d. " in out
    assert out.index("err together") < out.index("the exponent (end ∝")


def test_power_noise_from_something_else_is_one_line(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as err:
        main(["power", "--noise-from", str(tmp_path / "nope.nc")])
    assert "nope.nc: no such file" in str(err.value) and "\n" not in str(err.value)


def test_the_exponent_table_says_how_often_a_grid_fits_holds_and_calls_the_exponent():
    """Ends on a power law of the batch size (p = −0.5 through the middle of the switch
    range): with little noise and a steep deficit every grid fits an exponent whose interval
    holds p and excludes 0; at the default run's noise with 3 seeds only some grids locate
    all three ends. Fewer than 3 batch sizes, or an end outside the switches, is said."""
    from critperiods.results.power import exponent_coverage, exponent_table

    grid = Grid(tuple(float(k) for k in range(0, 21, 2)), (), 5)
    ends = 10 * (np.array([64, 128, 256]) / 128) ** -0.5
    sharp = replace(DEFAULT_NOISE, accuracy_noise=0.1, deficit_slope=2.0)
    clean = exponent_coverage(grid, [64, 128, 256], ends, -0.5, 40, sharp)
    assert clean["fitted"] == 1.0 and clean["excludes 0"] == 1.0 and clean["cover"] >= 0.9
    assert clean["width"] < 0.3
    noisy = exponent_coverage(replace(DEFAULT_GRID, seeds=3), [64, 128, 256],
                              8 * (np.array([64, 128, 256]) / 128) ** -0.5, -0.5, 40)
    assert noisy["fitted"] < 0.9 and noisy["excludes 0"] < clean["excludes 0"]
    lines = exponent_table(grid, [64, 128, 256], [5], 10, -0.5)
    assert lines[0].startswith("the exponent (end ∝ batch size^p, p = -0.5, --exponent): "
                               "true ends 14.1 at batch 64, 10 at batch 128, 7.07 at batch 256")
    assert lines[-1].startswith("| 5 | ")
    assert exponent_table(grid, [64, 128], [5], 10, -0.5) == [
        "the exponent: a power law needs 3 batch sizes, this grid has 2: not simulated"]
    steep = exponent_table(grid, [16, 128, 1024], [5], 3, -1.0)
    assert any(line.startswith("note: an end at or outside the switch range") for line in steep)


def test_power_prints_the_exponent_table_after_the_markers(capsys):
    assert main(["power", "--trials", "3", "--seeds", "2", "--exponent", "-0.3"]) == 0
    out = capsys.readouterr().out
    assert out.index("coverage of knee − end") < out.index(
        "the exponent (end ∝ batch size^p, p = -0.3, --exponent)")
    assert ("| seeds | exponent fitted (of all grids) | interval unbounded (an end, or one "
            "refitted without a seed, at or before the first switch; of all) | interval holds "
            "p (of the bounded) |") in out
    assert "(the end at the middle batch size: the middle of the switch range; --end" in out
    # an end given on the command line is said to be that one; an offset must be above 0
    assert main(["power", "--trials", "2", "--seeds", "2", "--end", "6"]) == 0
    assert "(the end at the middle batch size: --end);" in capsys.readouterr().out
    for offset in ("0", "-4"):
        with pytest.raises(SystemExit):
            main(["power", "--trials", "2", "--offset", offset])
        assert f"argument --offset: {offset}: must be above 0" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(6))
def test_an_offsets_p_value_is_the_level_at_which_the_summarys_interval_touches_0(seed):
    """End to end, on simulated runs: the knee's and the drop's offset intervals, recomputed
    at each level with that level's floors (their profile intervals widen with it), exclude
    0 exactly where the offset's p-value is below 1 − level."""
    from critperiods.results.end_fit import fit_end
    from critperiods.results.markers import drop_fit, knee_fit
    from critperiods.results.power import DEFAULT_GRID, _drop, simulate

    truth = Scenario(7.0, 9.0 + seed, drop=5.0)
    acc, llc, div = simulate(truth, DEFAULT_GRID, np.random.default_rng(seed))
    switches, epochs = np.asarray(DEFAULT_GRID.switches), np.asarray(DEFAULT_GRID.llc_epochs)
    present = np.ones(DEFAULT_GRID.seeds, dtype=bool)
    drop, loo = _drop(switches, div)
    end = fit_end(switches, acc, 0.9)
    p = (knee_fit(epochs, llc, 0.9, end).offset_p(),
         drop_fit(switches, switches, drop, loo, present, 0.9, end).offset_p())
    for level in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        at = fit_end(switches, acc, level)
        if not at.located:
            continue
        offsets = (knee_fit(epochs, llc, level, at).offset,
                   drop_fit(switches, switches, drop, loo, present, level, at).offset)
        for p_value, (_, lo, hi) in zip(p, offsets, strict=True):
            if np.isfinite(p_value) and abs(p_value - (1 - level)) > 1e-6:
                assert (lo > 0 or hi < 0) == (p_value < 1 - level), (level, p_value, lo, hi)


def test_holms_correction_over_a_run_calls_less_the_more_offsets_the_run_tests():
    """A knee p-value of 0.05 holds at 10 % on its own (one cell, one knee: the drop has no
    offset) and not among 6 knees (Holm's smallest threshold is 0.1 / 6); one of 0.001 holds
    among them too. A weak knee (flagged, or unable to come before the end) is not called,
    as the short answer does not name it. Runs without an offset hold nothing."""
    from critperiods.results.power import Offsets, held_after_holm

    n = 10
    nan = np.full(n, np.nan)
    weak = np.zeros(n, dtype=bool)
    for p, knees, cells, held in ((0.05, 1, 1, 1.0), (0.05, 2, 3, 0.0), (0.001, 2, 3, 1.0)):
        got = held_after_holm(Offsets(np.full(n, p), nan, weak), cells, knees, 0.9)
        assert got == {"some held": held, "knee held": held}, (p, knees, cells)
    flagged = held_after_holm(Offsets(np.full(n, 0.001), nan, ~weak), 3, 2, 0.9)
    assert flagged == {"some held": 0.0, "knee held": 0.0}
    told_by_drops = held_after_holm(Offsets(np.full(n, 0.001), np.full(n, 0.001), ~weak), 3, 2,
                                    0.9)
    assert told_by_drops == {"some held": 1.0, "knee held": 0.0}
    assert held_after_holm(Offsets(nan, nan, weak), 3, 2, 0.9) == {"some held": 0.0,
                                                                   "knee held": 0.0}
    # half the runs with a clear knee: a family around one of them holds its knee
    mixed = Offsets(np.where(np.arange(n) % 2, 0.001, np.nan), nan, weak)
    assert held_after_holm(mixed, 3, 2, 0.9)["knee held"] == 0.5
    # counted as the familywise bench counts them, flagged knees are called too
    assert held_after_holm(Offsets(np.full(n, 0.001), nan, ~weak), 3, 2, 0.9,
                           weak_knees=False) == {"some held": 1.0, "knee held": 1.0}


def test_the_power_table_gives_the_calls_after_holms_correction_over_the_run():
    """The last two columns are the report's calls: never more than each offset's own, and
    at the default grid, noise and a knee 4 epochs after the end, a small share. The header
    counts the run's offsets: 3 batch sizes × 3, or × 5 with the knees net of the descent."""
    from critperiods.results.power import power_table

    lines = power_table(DEFAULT_GRID, [3], trials=60, offset=4, end=7.0)
    header = next(line for line in lines if line.startswith("| seeds"))
    assert header.endswith("| after Holm over 9 offsets (one schedule's): runs with a false "
                           "call | after Holm: knee 4 after called |")
    cells = next(line for line in lines if line.startswith("| 3 ")).strip("| ").split(" | ")
    own = float(cells[2].split(" (")[1].rstrip("%) "))  # on knees the answer does not flag
    runs_false, knee_held = (float(c.rstrip(" %")) for c in cells[-2:])
    assert knee_held <= own and knee_held < 10 and runs_false <= 10
    with_net = power_table(DEFAULT_GRID, [3], trials=5, offset=4, end=7.0, knees_per_cell=4)
    assert "after Holm over 15 offsets" in next(line for line in with_net
                                                if line.startswith("| seeds"))
