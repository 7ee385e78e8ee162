"""`python -m critperiods power`: what a config's grid can tell, on simulated runs."""

from __future__ import annotations

from pathlib import Path

from critperiods.__main__ import main
from critperiods.results.power import DEFAULT_GRID, Grid, Scenario, coverage, grid_of

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_is_the_configs_switches_llc_epochs_seeds_and_level():
    from critperiods.__main__ import _load_config

    assert grid_of(_load_config([])) == DEFAULT_GRID  # config.yaml's: 0-16 by 4, λ̂ 4-16 by 2
    study = grid_of(_load_config([str(ROOT / "configs/fmnist_study.yaml")]))
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


def test_the_command_prints_a_row_per_number_of_seeds(capsys):
    assert main(["power", str(ROOT / "tests/configs/tiny.yaml"), "--trials", "5",
                 "--seeds", "2", "4", "--offset", "2", "--llc-noise", "1"]) == 0
    out = capsys.readouterr().out
    assert "λ̂ ± 1 per estimate" in out and "knee 2 after the end: called" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 4"]


def test_the_command_declines_the_toy_study_in_one_line(capsys):
    assert main(["power", str(ROOT / "configs/toy_landscapes.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no critical period" in err
