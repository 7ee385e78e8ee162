"""End to end: the toy_landscapes study through the real Snakefile on a tiny config.

One module-scoped run, then dry runs that show which jobs a config change plans.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cf_units
import numpy as np
import pytest
import yaml

import critperiods
from critperiods.__main__ import main
from critperiods.toy.cube import summary_table
from critperiods.toy.llc_check import FLAGS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/configs/toy_tiny.yaml"
RESULTS = Path("results/toy_tiny")
PLOTS = ("toy_convergence", "toy_escape", "toy_posterior", "toy_noise_hessian", "toy_llc")
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, configs: list[Path] = ()) -> str:
    """Run the CLI in ``workdir``; return its output, failing loudly on error."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config.yaml"), str(TINY), *map(str, configs), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def planned_rules(out: str) -> list[str]:
    """Rule of every job a dry run plans (with repeats)."""
    return [line.split()[-1].rstrip(":") for line in out.splitlines()
            if line.startswith(("rule ", "localrule "))]


@pytest.fixture(scope="module")
def run(toy_tiny_run) -> Path:
    return toy_tiny_run


def test_toy_cube_has_the_swept_dims_and_self_describing_variables(run):
    cube = critperiods.open_cube(run / RESULTS / "toy_cube.nc")
    assert cube.attrs["cube_kind"] == "toy_landscapes"
    assert list(cube.landscape.values) == ["line", "sum", "product"]
    assert list(cube.k1.values) == [1, 2] and list(cube.k2.values) == [0, 1, 2]
    assert list(cube.lr.values) == [0.05] and list(cube.batch_size.values) == [4, 32]
    assert cube.sizes["trajectory"] == 64
    assert cube.endpoint.dims == ("landscape", "k1", "k2", "lr", "batch_size", "start",
                                  "trajectory", "weight")
    line = cube.sel(landscape="line", k1=2, k2=0)
    assert line.endpoint.sel(weight="w1").notnull().all()
    assert line.endpoint.sel(weight="w2").isnull().all(), "a 1-D landscape has no w2"
    assert cube.endpoint.sel(landscape="line", k1=1).isnull().all(), "not configured: NaN"
    assert float(cube.learning_coefficient.sel(landscape="sum", k1=1, k2=2)) == 0.75
    assert yaml.safe_load(cube.attrs["config"])["study"] == "toy_landscapes"
    for name in cube.data_vars:
        assert {"long_name", "units"} <= set(cube[name].attrs), name
    for name in cube.indexes:
        assert "long_name" in cube[name].attrs and "units" not in cube[name].attrs, name
    for landscape, k1, k2 in (("line", 2, 0), ("sum", 1, 2), ("product", 1, 1)):
        cell = cube.sel(landscape=landscape, k1=k1, k2=k2)
        assert np.isfinite(cell.llc_at_critical_point)
        assert cell.posterior_w1_distance.sel(weight="w1").notnull().all()
        assert list(cell.posterior_kl.sample.values) == ["sgd", "exact"]
        assert list(cell.noise_ratio.curvature.values) == ["hessian", "gauss_newton"]
        assert np.allclose(cell.escape_fraction.sum("escape"), 1.0)


def test_every_unit_of_the_toy_cube_parses_in_udunits(run):
    cube = critperiods.open_cube(run / RESULTS / "toy_cube.nc")
    for name in cube.data_vars:
        cf_units.Unit(cube[name].attrs["units"])  # raises ValueError if UDUNITS cannot parse it


def test_toy_plots_and_summary_exist(run, capsys):
    for name in PLOTS:
        assert (run / RESULTS / f"plots/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lambda" in (run / RESULTS / "toy_summary.csv").read_text().splitlines()[0]
    assert main(["summarize", str(run / RESULTS / "toy_cube.nc")]) == 0
    out = capsys.readouterr().out
    for name in ("line_k2", "sum_k1-2", "product_k1-1", "W1 distance"):
        assert name in out
    # the critical period's options do not apply to a toy cube: said, not ignored
    for option in (["--read-flagged", "not_converged"], ["--recompute"]):
        with pytest.raises(SystemExit) as stop:
            main(["summarize", str(run / RESULTS / "toy_cube.nc"), *option])
        assert f"{option[0]} reads a critical-period cube" in str(stop.value)
        assert "analysis.llc_max_rhat" in str(stop.value)


def test_toy_cube_flags_its_llc_estimates_and_the_summary_counts_them(run, capsys):
    """Every λ̂ has its quality bits (CF flags) and the bias that sets not_at_minimum; the
    summary's llc_at_end is the mean of the estimates that are not flagged."""
    cube = critperiods.open_cube(run / RESULTS / "toy_cube.nc")
    assert cube.llc_quality.attrs["flag_meanings"].split() == [
        "ok", "negative", "not_converged", "diverged_chains", "not_at_minimum", "heavy_tailed"]
    made = cube.llc_mean.notnull()
    assert (cube.llc_quality.notnull() == made).all() and (cube.llc_bias.notnull() == made).all()
    assert (cube.llc_tail_khat.notnull() == made).all()  # 2 chains × 60 draws: a tail to fit
    assert float(cube.llc_at_critical_point_bias.sel(landscape="line", k1=2, k2=0)) == 0
    # two estimates of line_k2 set by hand: 0.2 ok, 0.4 flagged → the mean is 0.2
    line = dict(landscape="line", k1=2, k2=0)
    assert cube.llc_mean.sel(line).size == 2  # lr 0.05 × batch sizes 4, 32
    cube["llc_mean"].loc[line] = [[[0.2], [0.4]]]
    cube["llc_quality"].loc[line] = [[[0], [FLAGS["not_at_minimum"]]]]
    table = summary_table(cube)
    assert table.loc["line_k2", "llc_at_end"] == pytest.approx(0.2)
    assert table.loc["line_k2", "llc_end_err_%"] == pytest.approx(-20.0)
    assert (table.loc["line_k2", "end_n"], table.loc["line_k2", "end_flagged"]) == (1, 1)
    cube["llc_quality"].loc[line] = [[[FLAGS["not_converged"]], [FLAGS["negative"]]]]
    assert np.isnan(summary_table(cube).loc["line_k2", "llc_at_end"])  # nothing left to average
    assert "diverged" in table.columns


def test_the_toy_summary_reports_the_worst_cell_and_where_the_hessian_is_not_positive(run):
    """R2_min is the worst cell's R², not the mean; H<=0_hot is the largest share, over
    coordinates, of the hottest cell's endpoints with a Hessian diagonal entry ≤ 0; and
    exponent_cells counts the cells the exponent's mean is over."""
    from critperiods.toy.cube import hottest

    cube = critperiods.open_cube(run / RESULTS / "toy_cube.nc").load()
    line = dict(landscape="line", k1=2, k2=0)
    assert hottest(cube) == (0.05, 4)
    r2 = cube.noise_r2.sel(**line, curvature="hessian")
    table = summary_table(cube)
    assert table.loc["line_k2", "R2_min"] == pytest.approx(float(r2.min()))
    assert table.loc["line_k2", "H<=0_hot"] == 0  # a line's Hessian is positive off w*
    hess = cube["loss_hessian"].loc[dict(line, lr=0.05, batch_size=4, weight="w1",
                                         weight_b="w1")]
    measured = int(hess.notnull().sum())
    hess[: measured // 2] = -1.0
    cube["loss_hessian"].loc[dict(line, lr=0.05, batch_size=4, weight="w1",
                                  weight_b="w1")] = hess
    assert summary_table(cube).loc["line_k2", "H<=0_hot"] == pytest.approx(
        (measured // 2) / measured)
    # an endpoint collapsed onto w* shows the cross moment's rounding (−2s ≈ −6e-18) as its
    # curvature: rounding, left out of the share, not a Hessian ≤ 0
    hess[: measured // 2] = -6e-18
    cube["loss_hessian"].loc[dict(line, lr=0.05, batch_size=4, weight="w1",
                                  weight_b="w1")] = hess
    assert summary_table(cube).loc["line_k2", "H<=0_hot"] == 0
    # two coordinates: the larger share (w2's half), not w1's quarter nor their mean
    cell = dict(landscape="sum", k1=1, k2=2, lr=0.05, batch_size=4)
    for weight, share in (("w1", 4), ("w2", 2)):
        at = dict(cell, weight=weight, weight_b=weight)
        entries = abs(cube["loss_hessian"].loc[at]) + 1.0
        entries[: entries.size // share] = -1.0
        cube["loss_hessian"].loc[at] = entries
    assert summary_table(cube).loc["sum_k1-2", "H<=0_hot"] == pytest.approx(0.5)
    cube["convergence_exponent"].loc[dict(line, lr=0.05, batch_size=32)] = np.nan
    assert summary_table(cube).loc["line_k2", "exponent_cells"] == 1


def test_the_lambda_hat_thresholds_rerun_only_the_toy_cube_and_plots(run, tmp_path):
    """analysis.llc_max_rhat and llc_max_trend_z flag the toy study's λ̂ too, in the cube:
    changing them reruns no landscape job."""
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text("analysis:\n  llc_max_rhat: 1.05\n  llc_max_trend_z: 2.0\n")
    out = snakemake(run, "-n", configs=[stricter])
    assert sorted(planned_rules(out)) == ["all", "toy_cube", "toy_plots"], out


def test_a_config_with_toy_keys_but_another_study_fails_naming_the_fix(run, tmp_path):
    """Without `study: toy_landscapes` a file's toy section would be ignored and the
    blur-switch sweep run in its place: refused before anything runs, naming the file."""
    plain = tmp_path / "forgot_study.yaml"
    plain.write_text("experiment: toy_forgot\ntoy:\n  sgd:\n    lrs: [0.02]\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(run),
           "-n", "--configfile", str(plain)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "study: toy_landscapes" in proc.stderr and str(plain) in proc.stderr, proc.stderr


def test_toy_study_builds_nothing_of_the_critical_period_study(run):
    assert not (run / RESULTS / "cube.nc").exists()
    assert not (run / RESULTS / "data").exists()


def test_toy_changes_rerun_only_what_they_invalidate(run, tmp_path):
    """Nothing is left to do; adding a landscape (and a plot option) plans that landscape's
    job, the cube and the plots, never the other landscapes."""
    assert "Nothing to be done" in snakemake(run, "-n")
    more = tmp_path / "more.yaml"
    more.write_text("toy:\n  landscapes:\n    line: [2, 3]\n    sum: [[1, 2]]\n"
                    "    product: [[1, 1]]\nplots:\n  dpi: 40\n")
    out = snakemake(run, "-n", configs=[more])
    assert sorted(planned_rules(out)) == ["all", "toy_cube", "toy_landscape", "toy_plots"], out
    assert "landscapes/line_k3.nc" in out


def test_report_has_the_toy_section_and_opens_on_the_toy_answer(run):
    """The report's first page is the toy study's own (toy_plots writes it), not the
    blur-switch study's description."""
    landing = (run / RESULTS / "report/toy_landing.rst").read_text()
    assert landing.startswith("Toy landscapes: toy_tiny\n")
    assert "summarize results/toy_tiny/toy_cube.nc``" in landing  # the path, not a pattern
    for finding in ("1. Convergence", "2. Escape", "3. Noise vs Hessian",
                    "4. Endpoints vs the tempered posterior", "λ̂ against the exact λ",
                    "64 runs take 300 steps"):  # the protocol, with toy_tiny's settings
        assert finding in landing, finding
    snakemake(run, "--report", "report.html")
    html = (run / "report.html").read_text(errors="replace")
    for name in ("Toy landscapes", "toy_summary.csv", *(f"{p}.png" for p in PLOTS),
                 "Answer from this run", "Endpoints vs the tempered posterior"):
        assert name in html, name


def test_power_declines_a_toy_cube_in_one_line(run, capsys):
    """`power --noise-from` needs a critical-period cube: a toy cube is one line, exit 2."""
    assert main(["power", "--noise-from", str(run / RESULTS / "toy_cube.nc")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no critical period" in err


def test_the_noise_figure_shows_a_products_mixed_entry_at_half_the_ratio(run, monkeypatch):
    """The noise figure draws each entry's ratio C/H: on a product the mixed entry's
    Hessian is twice its Gauss–Newton entry, so its ratio sits at about half the diagonal's
    (on log axes of C against H that factor of 2 was invisible, and the mixed entries, which
    pull the product's c down, were not drawn at all)."""
    from critperiods.toy import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: drawn.setdefault("fig", fig))
    cube = critperiods.open_cube(run / RESULTS / "toy_cube.nc").load()
    plots.noise_vs_hessian(cube, "unused.png")
    product = next(ax for ax in drawn["fig"].axes if ax.get_title().startswith("product"))
    dots, *_, crosses = [c for c in product.collections if len(c.get_offsets())]
    diagonal = np.median(np.asarray(dots.get_offsets())[:, 1])
    mixed = np.median(np.asarray(crosses.get_offsets())[:, 1])
    assert mixed == pytest.approx(diagonal / 2, rel=0.1), (diagonal, mixed)
    assert "crosses" in product.get_xlabel()
