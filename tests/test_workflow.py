"""End to end: the real Snakefile on a tiny config, every stage for real.

One module-scoped run, then dry runs that show which jobs a config change plans.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cf_units
import numpy as np
import pytest
import yaml

import critperiods
from critperiods.measure.evaluation import METRICS
from tests.conftest import provide_fashion_mnist, write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/configs/tiny.yaml"
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, configs: list[Path] = (), repo: Path = ROOT,
              tiny: bool = True) -> str:
    """Run the CLI of the Snakefile in ``repo`` in ``workdir`` with ``configs`` laid over
    config.yaml and (``tiny``) tests/configs/tiny.yaml; return its output, failing loudly on
    error."""
    base = [ROOT / "config.yaml", *([TINY] if tiny else [])]
    provide_fashion_mnist(workdir / "data")  # dataset.root of config.yaml and tiny.yaml
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir),
           "--configfile", *map(str, base), *map(str, configs), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def planned(out: str) -> dict[str, list[str]]:
    """``{rule: [outputs]}`` of the jobs a dry run plans."""
    jobs: dict[str, list[str]] = {}
    for rule, output in re.findall(r"rule (\w+):\n(?:    input: .*\n)?    output: (.*)\n", out):
        jobs.setdefault(rule, []).append(output)
    return jobs


def override(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def run(tiny_run) -> Path:
    """The finished tiny run (conftest.tiny_run), shared with the invalidation tests."""
    return tiny_run


def test_cube_has_design_dims_and_no_nan_where_runs_exist(run):
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    for dim in ("batch_size", "lr_schedule", "switch_epoch", "seed", "epoch"):
        assert dim in cube.dims
    assert list(cube.batch_size.values) == [64]
    assert list(cube.lr_schedule.values) == ["continue", "restart"]
    assert list(cube.seed.values) == [0, 1]
    assert list(cube.epoch.values) == [0, 1, 2, 3, 4]
    for name in METRICS:
        var = cube[name]
        assert var.dims == ("batch_size", "lr_schedule", "switch_epoch", "seed", "epoch")
        assert var.attrs["units"] and var.attrs["long_name"]
        # the never-blurred run, the sharp reference, trains on to the last epoch (4)
        ran = (cube.epoch <= cube.switch_epoch + 2) | (cube.switch_epoch == 0)
        assert not var.where(ran).isnull().where(ran, False).any(), name
        assert var.where(~ran).isnull().all(), f"{name}: cells not run must be NaN"
    assert cube.final_test_accuracy.dims == ("batch_size", "lr_schedule", "switch_epoch", "seed")
    assert np.all(cube.final_test_accuracy > 0.1)  # better than chance on real data
    assert cube.final_test_accuracy.attrs["long_name"].startswith(
        "sharp test accuracy at epoch switch_epoch + epochs_after_switch")
    # every flag a value must be read with is named beside it, and exists
    assert cube.final_test_accuracy.attrs["ancillary_variables"] == "run_diverged"
    assert cube.llc_mean.attrs["ancillary_variables"] == "llc_quality llc_mcse llc_distance_growth"
    for name in cube.data_vars:
        for other in cube[name].attrs.get("ancillary_variables", "").split():
            assert other in cube, f"{name}: ancillary variable {other} not in the cube"
    assert "trunk" in cube.attrs["comment"]
    assert cube.phase_sharp.dims == ("switch_epoch", "epoch")
    assert bool(cube.phase_sharp.sel(switch_epoch=2, epoch=3))
    assert not bool(cube.phase_sharp.sel(switch_epoch=2, epoch=2))
    assert "critical_period_end" in cube
    config = yaml.safe_load(cube.attrs["config"])
    assert config["experiment"] == "tiny"
    for key in ("Conventions", "history", "git_commit", "torch_version", "snakemake_version",
                "critperiods_version", "training_config_hash", "numpy_version",
                "scipy_version", "xarray_version", "arviz_stats_version", "python_version"):
        assert key in cube.attrs, key
    assert "seed < seed_b" in cube.attrs["comment"]  # the seed pairs' double count
    if (ROOT / ".git").exists():  # snakemake ran with -d elsewhere: still this checkout's
        assert re.fullmatch(r"[0-9a-f]{40}", cube.attrs["git_commit"])
    for name in [*cube.data_vars, *cube.coords]:
        assert "long_name" in cube[name].attrs, f"{name} lacks a long_name"
        if name in cube.dims:
            assert "units" not in cube[name].attrs, f"index coordinate {name} has units"
        else:
            assert "units" in cube[name].attrs, f"{name} lacks units"


def test_every_unit_of_the_cube_parses_in_udunits(run):
    """Conventions: CF-1.10 holds: UDUNITS (through cf-units) parses every unit."""
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    assert cube.attrs["Conventions"] == "CF-1.10"
    units = {name: cube[name].attrs["units"] for name in [*cube.data_vars, *cube.coords]
             if "units" in cube[name].attrs}
    assert units
    for name, unit in units.items():
        cf_units.Unit(unit)  # raises ValueError on what UDUNITS cannot parse
        assert unit != "nats", name


def test_restart_runs_share_the_trunk_and_the_never_blurred_run(run):
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    acc = cube.test_accuracy.sel(batch_size=64)
    # up to the switch every schedule is the trunk; the never-blurred run is one branch
    trunk = acc.sel(switch_epoch=2, epoch=[0, 1, 2])
    np.testing.assert_array_equal(trunk.sel(lr_schedule="continue"),
                                  trunk.sel(lr_schedule="restart"))
    never = acc.sel(switch_epoch=0)
    assert never.notnull().sum() > 0
    np.testing.assert_array_equal(never.sel(lr_schedule="continue"),
                                  never.sel(lr_schedule="restart"))
    late = acc.sel(switch_epoch=2, epoch=4)
    assert (late.sel(lr_schedule="continue") != late.sel(lr_schedule="restart")).any()
    # the never-blurred run trains on as the sharp reference; its final accuracy is at epoch 2
    assert never.sel(epoch=4).notnull().all()
    np.testing.assert_array_equal(cube.final_test_accuracy.sel(batch_size=64, switch_epoch=0),
                                  never.sel(epoch=2).drop_vars("epoch"))
    runs = run / "results/tiny/runs/bs64/seed0"
    assert (runs / "continue/switch0.pt").exists() and not (runs / "restart/switch0.pt").exists()
    assert (runs / "restart/switch2.pt").exists()


def test_llc_carries_its_diagnostics_and_quality_flag(run):
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    for name in ("llc_rhat", "llc_ess", "llc_trend_z", "llc_distance_growth", "llc_tail_khat",
                 "llc_sharpness", "llc_sharpness_sd", "llc_quality"):
        assert cube[name].dims == cube.llc_mean.dims, name
    estimated = cube.llc_mean.notnull()
    assert (cube.llc_quality.notnull() == estimated).all()
    assert cube.llc_rhat.where(estimated).notnull().sum() > 0
    assert (cube.llc_distance_growth.notnull() == estimated).all()  # wherever λ̂ is
    flags = cube.llc_quality.attrs
    assert flags["flag_meanings"].split() == ["ok", "negative", "not_converged",
                                              "diverged_chains", "heavy_tailed",
                                              "unstable_step"]
    assert list(flags["flag_values"]) == [0, 1, 2, 4, 16, 32]
    # the stability check ran at every estimate, and its flag is what its limit says: a
    # step past every checkpoint's limit flags them all
    assert cube.llc_sharpness.where(estimated).notnull().sum() == estimated.sum()
    assert (cube.llc_sharpness_sd.where(estimated) > 0).sum() == estimated.sum()
    assert int(cube.llc_stability_samples) == 1024
    stiffness = cube.llc_nbeta * cube.llc_sharpness + cube.llc_gamma
    limit = 4 * stiffness / (stiffness ** 2 + (cube.llc_nbeta * cube.llc_sharpness_sd) ** 2)
    unstable = (cube.llc_quality.fillna(0).astype(int) & 32) > 0
    assert (unstable == (cube.llc_step_size > limit)).where(estimated, True).all()
    from critperiods.results.cube import ANALYSIS_DEFAULTS, _llc_quality

    past = _llc_quality(cube.assign(llc_step_size=2 * float(limit.max())), ANALYSIS_DEFAULTS)
    assert ((past.fillna(0).astype(int) & 32) > 0).where(estimated, True).all()
    # λ̂'s Monte Carlo error is there wherever λ̂ is, and the negative flag is read against it
    assert cube.llc_mcse.dims == cube.llc_mean.dims
    assert ((cube.llc_mcse > 0) == estimated).all()
    negative = (cube.llc_mean + 2 * cube.llc_mcse < 0) & estimated
    odd = (cube.llc_quality.fillna(0).astype(int) % 2) == 1
    assert (odd == negative).all(), "the negative flag is λ̂ below 0 by more than 2 MCSE"
    for name in ("llc_nbeta", "llc_burn_in", "llc_step_size", "llc_gamma", "llc_bf16",
                 "llc_stability_samples"):
        assert cube[name].dims == (), name
    assert int(cube.llc_burn_in) == 5
    assert int(cube.llc_bf16) == 0  # precision: auto is float32 on the CPU


def test_llc_and_divergence_variables(run):
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    ran = (cube.epoch <= cube.switch_epoch + 2) | (cube.switch_epoch == 0)
    # λ̂ at the selected epochs (positive multiples of llc.every = 2) of every run
    llc = cube.llc_mean.sel(epoch=[2, 4])
    assert llc.sel(switch_epoch=2).notnull().all()
    assert int(cube.llc_burn_in) == 5
    assert cube.llc_mean.sel(epoch=0).isnull().all(), "no λ̂ at initialisation"
    assert cube.llc_chain.dims[-1] == "chain" and cube.sizes["chain"] == 2
    assert (cube.llc_diverged_chains.fillna(0) >= 0).all()
    shared_with_sharp = ran  # the never-blurred run reaches the last epoch too
    for name, ref, cells in (("div_l2", "blurred", ran), ("div_cka", "blurred", ran),
                             ("div_disagreement", "sharp", shared_with_sharp)):
        var = cube[name].sel(reference=ref)
        assert var.attrs["long_name"] and var.attrs["units"]
        assert not var.where(cells).isnull().where(cells, False).any(), name
    # identical to the always-blurred path up to the switch, different after it
    l2 = cube.div_l2.sel(batch_size=64, switch_epoch=2, reference="blurred")
    assert (l2.sel(epoch=[0, 1, 2]) == 0).all()
    assert (l2.sel(epoch=[3, 4]) > 0).all()
    seeds = cube.div_l2_seeds.sel(batch_size=64, lr_schedule="restart", switch_epoch=0, epoch=2)
    assert float(seeds.sel(seed=0, seed_b=0)) == 0 and float(seeds.sel(seed=0, seed_b=1)) > 0
    assert float(seeds.sel(seed=0, seed_b=1)) == float(seeds.sel(seed=1, seed_b=0))
    aligned = cube.div_l2_aligned_seeds.sel(batch_size=64, lr_schedule="continue", switch_epoch=0,
                                            epoch=2)
    assert float(aligned.sel(seed=0, seed_b=1)) <= float(seeds.sel(seed=0, seed_b=1)) + 1e-9
    assert cube.div_l2_growth_form.dtype == np.int8  # CF flags: codes of the flags' type
    assert cube.div_l2_growth_form.attrs["flag_values"].dtype == np.int8


def test_llc_change_plans_only_llc_and_aggregation(run, tmp_path):
    out = snakemake(run, "-n", configs=[override(tmp_path, "l", "llc:\n  step_size: 0.0003\n")])
    assert set(planned(out)) == {"llc", "aggregate", "plots"}


def test_divergence_change_plans_only_divergence_and_aggregation(run, tmp_path):
    out = snakemake(run, "-n",
                    configs=[override(tmp_path, "d", "divergence:\n  probe_size: 32\n")])
    assert set(planned(out)) == {"divergence", "aggregate", "plots"}


def test_a_run_has_its_trunks_values_up_to_its_switch(run):
    cube = critperiods.open_cube(run / "results/tiny/cube.nc")
    # up to its switch a run is its trunk, evaluated (both schedules share it:
    # test_restart_runs_share_the_trunk_and_the_never_blurred_run)
    assert cube.test_accuracy.sel(switch_epoch=2, epoch=[0, 1, 2]).notnull().all()
    # epoch 0 is the initial model for every run of a (batch_size, seed)
    first = cube.test_loss.sel(epoch=0)
    assert float(abs(first.sel(switch_epoch=0) - first.sel(switch_epoch=2)).max()) == 0.0


def test_plots_exist(run):
    for name in ("critical_period", "learning_curves"):
        path = run / f"results/tiny/plots/{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_left_to_do(run):
    assert "Nothing to be done" in snakemake(run, "-n")


def test_evaluation_change_plans_no_training(run, tmp_path):
    out = snakemake(run, "-n", configs=[override(tmp_path, "e", "evaluate:\n  batch_size: 333\n")])
    jobs = planned(out)
    assert "evaluate" in jobs and "aggregate" in jobs
    assert not {"train_trunk", "train_branch", "prepare_data"} & set(jobs)


def test_stated_defaults_and_time_limits_plan_nothing(run, tmp_path):
    """A default written out (in another position than the schema's) and cluster time
    limits change no result, so nothing reruns."""
    out = snakemake(run, "-n", configs=[override(
        tmp_path, "same", "llc:\n  seed: 0\nruntime:\n  minutes_base: 20\n")])
    assert "Nothing to be done" in out


def test_time_limits_count_the_work_and_cost_sums_them_as_the_jobs_ask(tmp_path):
    """A trunk segment asks ``runtime.minutes_base`` + epochs × seeds ×
    ``minutes_per_epoch``: a stride for a segment, none for ``e0``, the initial weights (the
    tiny grid: stride 2, one seed a job, and the schema's 10 + 2 per epoch); ``cost``'s
    total per rule is the dry run's sum of its jobs' limits."""
    from critperiods.cli.common import load_config
    from critperiods.pipeline.cost import requested_minutes

    out = snakemake(tmp_path / "w", "-n")
    limits = dict(re.findall(r"output: \S+/trunk/e(\d+)\.pt\n(?:    .*\n)*?    resources: "
                             r".*\bruntime=(\d+)", out))
    assert limits["0"] == "10" and limits["2"] == str(10 + 2 * 1 * 2), limits
    asked: dict[str, int] = {}
    for rule, minutes in re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: .*"
                                    r"\bruntime=(\d+)", out):
        asked[rule] = asked.get(rule, 0) + int(minutes)
    assert asked == requested_minutes(load_config([str(TINY)]), "cpu")


def test_gpu_jobs_ask_for_no_gpu_with_device_cpu(tmp_path):
    """A cluster would otherwise queue a CPU-only run's jobs for GPUs (``GPUS``)."""
    def gpus(configs: list[Path]) -> set[str]:
        out = snakemake(tmp_path / "w", "-n", configs=configs)
        return set(re.findall(r"rule train_trunk:\n(?:    .*\n)*?    resources: .*\bgpu=(\d)",
                              out))

    assert gpus([override(tmp_path, "auto", "device: auto\n")]) == {"1"}  # may land on a GPU
    assert gpus([override(tmp_path, "cpu", "device: cpu\n")]) == {"0"}


def test_planning_imports_no_array_or_model_library(tmp_path, monkeypatch):
    """Every ``snakemake`` call (and on a cluster every job) reads the Snakefile: for the
    main study it imports only light modules, never PyTorch, xarray, SciPy or matplotlib
    (seconds each time). (The toy study's checks build its landscapes, with PyTorch.)"""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # each import on stderr, by name
    out = snakemake(tmp_path / "w", "-n")
    imported = set(re.findall(r"^import time: +\d+ \| +\d+ \| +([\w.]+)$", out, re.M))
    assert "critperiods.pipeline.plan" in imported  # the profile did list the imports
    assert not imported & {"torch", "xarray", "scipy", "matplotlib"}  # (pandas: the SLURM plugin)


def test_dropping_a_schedule_trains_nothing(run, tmp_path):
    """The cells' evaluation lays out the remaining runs again (cheap); no training, λ̂ or
    divergence reruns."""
    out = snakemake(run, "-n", configs=[
        override(tmp_path, "r", "grid:\n  lr_schedules: [continue]\n")])
    assert set(planned(out)) == {"evaluate", "aggregate", "plots"}


def test_the_old_lr_after_switch_key_names_its_replacement(run, tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(run),
           "-n", "--configfile", str(ROOT / "config.yaml"), str(TINY),
           str(override(tmp_path, "old", "optimizer:\n  lr_after_switch: restart\n"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "grid.lr_schedules" in proc.stdout + proc.stderr


def test_a_failed_run_ends_with_each_failed_jobs_reason(run, tmp_path):
    """A branch file copied over the trunk file its branch starts from: the branch job
    refuses it, and the run's console ends with that job's reason and log (the Snakefile's
    ``onerror``), not only Snakemake's "check log file(s)"."""
    import shutil

    workdir = tmp_path / "w"
    shutil.copytree(run, workdir, ignore=shutil.ignore_patterns(".snakemake"))
    group = next((workdir / "results/tiny/runs/bs64").iterdir())
    shutil.copy(group / "continue/switch2.pt", group / "trunk/e2.pt")
    provide_fashion_mnist(workdir / "data")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--cores", "1", "--keep-going", "--configfile", str(ROOT / "config.yaml"), str(TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0  # (the trunk segment after e2 fails too: --keep-going)
    said = [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("critperiods: train_branch failed: CheckpointError: ")]
    assert said and "trunk/e2.pt: holds the continue branch from switch epoch 2" in said[0]
    assert "--forcerun" in said[0] and "(log: results/tiny/logs/train/" in said[0], said


def test_the_experiment_runs_on_mnist_from_a_local_copy(tmp_path):
    """``dataset.name: mnist`` with ``dataset.root`` at a folder of MNIST's four IDX files
    (fake ones: no test downloads), as a user points at a local copy: the run reads them from
    there, not the Fashion-MNIST beside it in ``data/``, through to the cube, whose summary
    names MNIST; moving the files reruns nothing (data are identified by content). λ̂ and
    divergences are off: they read the prepared tensors, whatever the dataset."""
    from critperiods.results.setup import setup_sentence

    mnist = write_fake_mnist(tmp_path / "mnist")
    overlay = override(tmp_path, "mnist", f"experiment: tiny_mnist\ndataset:\n  name: mnist\n"
                       f"  root: {mnist}\nllc:\n  enabled: false\ndivergence:\n"
                       "  enabled: false\ngrid:\n  seeds: [0]\n")  # one seed: the data's path
    workdir = tmp_path / "w"
    out = snakemake(workdir, "--cores", "2", configs=[overlay])
    assert "will download it" not in out
    results = workdir / "results/tiny_mnist"
    assert f"reading mnist from {mnist}" in (results / "logs/prepare_data_train.log").read_text()
    cube = critperiods.open_cube(results / "cube.nc")
    assert yaml.safe_load(cube.attrs["config"])["dataset"]["name"] == "mnist"
    assert np.all(cube.final_test_accuracy > 0.1)  # the fake digits are learnable
    assert " MNIST training images" in setup_sentence(cube)
    moved = mnist.rename(tmp_path / "moved")
    again = override(tmp_path, "moved", overlay.read_text().replace(str(mnist), str(moved)))
    assert "Nothing to be done" in snakemake(workdir, "-n", configs=[again])


def test_plot_change_plans_only_plots(run, tmp_path):
    out = snakemake(run, "-n", configs=[override(tmp_path, "p", "plots:\n  dpi: 60\n")])
    assert set(planned(out)) == {"plots"}


def test_new_seed_plans_only_its_runs(run, tmp_path):
    out = snakemake(run, "-n",
                    configs=[override(tmp_path, "s", "grid:\n  seeds: [0, 1, 2]\n")])
    jobs = planned(out)
    trained = jobs["train_trunk"] + jobs["train_branch"]
    assert trained and all("/seed2/" in o for o in trained)
    assert all("/seed2/" in o for o in jobs["evaluate"] + jobs["llc"])


def test_larger_switch_epoch_plans_only_new_segments(run, tmp_path):
    """A switch epoch after the last one moves the epoch both references reach (4 + 2): the
    trunk and the never-blurred run's continuation each grow by a segment, and λ̂ is estimated
    only on the new files. Nothing trained or estimated before reruns."""
    out = snakemake(run, "-n",
                    configs=[override(tmp_path, "k", "grid:\n  switch_epochs: [0, 2, 4]\n")])
    jobs = planned(out)

    def pieces(rule: str) -> list[str]:
        return sorted(o.split("/seed", 1)[1][2:] for o in jobs.get(rule, []))

    assert pieces("train_trunk") == ["trunk/e6.pt"] * 2
    assert pieces("train_branch") == sorted(["continue/switch4.pt", "restart/switch4.pt"] * 2)
    assert pieces("train_reference") == ["continue/switch0/e6.pt"] * 2
    # λ̂ on the trunk up to the largest switch: segment e4 now holds epoch 4 (e6 holds none)
    assert pieces("llc") == sorted(["trunk/e4.llc.nc", "continue/switch0/e6.llc.nc",
                                    "continue/switch4.llc.nc", "restart/switch4.llc.nc"] * 2)
    for rule, outputs in jobs.items():
        assert all(not (run / o).exists() for o in outputs) or rule in {
            "evaluate", "divergence", "aggregate", "plots", "all"}, (rule, outputs)


def test_report_builds_with_every_figure_and_the_summary(run, tmp_path):
    """``snakemake --report``: one self-contained HTML file with the captions. Built with a
    config other than the run's, it says in which keys (the captions read this config, the
    figures are the run's); with the run's own, it says nothing of the kind."""
    out = snakemake(run, "--report", "report.html")
    assert "critperiods: note" not in out
    html = (run / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    for name in ("critical_period.png", "learning_curves.png", "llc.png", "divergence.png",
                 "critical_period_summary.csv"):
        assert name in html, name
    level = override(tmp_path, "level", "analysis:\n  interval_level: 0.8\n")
    out = snakemake(run, "--report", str(tmp_path / "other.html"), configs=[level])
    assert ("critperiods: note: results/tiny/ was made with a config that differs from this "
            "one in analysis.interval_level: the report shows that run's figures and tables, "
            "but its captions follow this config") in out, out[-3000:]


def test_seeds_per_job_trains_a_group_in_one_job_and_one_file(run, tmp_path):
    """train.seeds_per_job: 2 — one job trains both seeds stacked and writes one file that
    holds both, whose states match single-seed training within the stacked tolerance."""
    import torch

    from critperiods.train.stacked import STACKED_ATOL

    branch = "results/tiny/runs/bs64/seeds0_1/continue/switch2.pt"
    out = snakemake(tmp_path, "--cores", "2", branch,
                    configs=[override(tmp_path, "g", "train:\n  seeds_per_job: 2\n")])
    assert len(planned(out)["train_branch"]) == 1  # one job for the group
    assert (tmp_path / "results/tiny/logs/train/bs64_seeds0_1_continue_switch2.log").exists()
    stacked = torch.load(tmp_path / branch, weights_only=True)
    assert stacked["identity"]["seeds"] == [0, 1]
    for member in stacked["members"]:
        single = torch.load(run / f"results/tiny/runs/bs64/seed{member['seed']}/continue/"
                            "switch2.pt", weights_only=True)["members"][0]
        for key, value in single["state"]["model"].items():
            assert torch.allclose(member["state"]["model"][key], value, atol=STACKED_ATOL), key
    assert not list((tmp_path / "results/tiny/runs").rglob(".*.resume"))


def job_table(out: str) -> dict[str, int]:
    """``{rule: jobs}`` of the job table a dry run prints, less the ``all`` target."""
    table = out[out.index("Job stats:"):]
    table = table[:table.index("\ntotal")]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)
            if rule not in ("all", "job")}


@pytest.mark.parametrize(("configs", "extra"), [
    ([TINY], "train:\n  seeds_per_job: 1\n"),
    # seed groups of two; perturbations of both schedules' runs (the never-blurred one once)
    ([TINY, ROOT / "tests/configs/perturbation_tiny.yaml"],
     "train:\n  seeds_per_job: 2\nperturbation:\n  switch_epochs: [0, 2]\n"),
    ([ROOT / "configs/perturbation.yaml"], None),
    ([TINY], "llc:\n  descent: true\n"),
], ids=["tiny", "tiny-perturbed-2-seeds-per-job", "perturbation-yaml", "tiny-descent"])
def test_cost_counts_the_jobs_the_workflow_plans(tmp_path, configs, extra):
    """`critperiods cost` counts, rule by rule, the jobs a fresh run plans (one per seed
    group and piece, perturbation jobs included), so its per-job overhead is charged for jobs
    that exist, and it prices the perturbation experiment's training."""
    from critperiods.cli.common import load_config
    from critperiods.pipeline.cost import grid_cost

    configs = [*configs, *([override(tmp_path, "g", extra)] if extra else [])]
    out = snakemake(tmp_path, "-n", configs=configs, tiny=False)
    cost = grid_cost(load_config(list(map(str, configs))), "cpu")
    assert cost.rules == job_table(out), out[-3000:]
    assert cost.jobs == int(re.search(r"^total\s+(\d+)", out, re.M)[1]) - 1
    assert (cost.perturbation_epochs > 0) == ("perturb" in cost.rules)


# -- The chains' descent (llc.descent) ----------------------------------------------------------


def test_the_descent_runs_beside_llc_and_lands_in_the_cube(tiny_run, tmp_path):
    """``llc.descent: true`` on a finished run adds an ``llc_descent`` job per ``llc`` job and
    reruns only aggregate and plots: no λ̂ is estimated again. The cube's ``llc_descent`` is
    the noise-free drift's nβ ΔL at exactly the estimates λ̂ has, each what
    ``measure.llc.descent`` gives for that checkpoint, and the report's λ̂ caveat says it."""
    import shutil

    import torch
    import xarray as xr

    from critperiods.measure.llc.descent import descent
    from critperiods.pipeline.checkpoints import config_hash, load_checkpoints
    from critperiods.pipeline.llc_inputs import llc_config_from_params, llc_data
    from critperiods.pipeline.plan import training_params
    from critperiods.results.report_page import _llc_caveat
    from critperiods.train.data import load_prepared
    from critperiods.train.training import TrainConfig, model_for

    shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
    on = override(tmp_path, "descent", "llc:\n  descent: true\n")
    llc_files = sorted((tmp_path / "results/tiny/runs").rglob("*.llc.nc"))
    before = {f: f.stat().st_mtime_ns for f in llc_files}
    out = snakemake(tmp_path, "--cores", "2", configs=[on])
    jobs = planned(out)
    assert set(jobs) == {"llc_descent", "aggregate", "plots"}, sorted(jobs)
    assert len(jobs["llc_descent"]) == len(llc_files)
    assert {f: f.stat().st_mtime_ns for f in llc_files} == before  # no λ̂ again
    cube = xr.open_dataset(tmp_path / "results/tiny/cube.nc")
    assert (cube["llc_descent"].notnull() == cube["llc_mean"].notnull()).all()
    assert "llc_descent" in cube["llc_mean"].attrs["ancillary_variables"]
    assert "This run measured the descent at " in _llc_caveat(cube)[0]
    # one estimate by hand: seed 1's trunk checkpoint at epoch 2 (in e2.pt)
    config = yaml.safe_load((tmp_path / "results/tiny/config.yaml").read_text())
    piece = tmp_path / "results/tiny/runs/bs64/seed1/trunk/e2.pt"
    data = load_prepared(str(tmp_path / "results/tiny/data/train.pt"))
    training = training_params(config)
    checkpoint = next(c for c in load_checkpoints([str(piece)], config_hash(training), 1)
                      if c["epoch"] == 2)
    model = model_for(TrainConfig.from_params(training), data, "cpu")
    model.load_state_dict(checkpoint["model"])
    found = descent(model, torch.nn.functional.cross_entropy,
                    llc_data(data, config["llc"])(checkpoint["phase"]),
                    llc_config_from_params(config["llc"]), progress=False)
    got = cube["llc_descent"].sel(batch_size=64, lr_schedule="continue", switch_epoch=2,
                                  seed=1, epoch=2)
    assert float(got) == pytest.approx(found.over_draws, rel=1e-6)


# -- Perturbations (tests/configs/perturbation_tiny.yaml) -------------------------------------


@pytest.fixture(scope="module")
def perturbed(tiny_run, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny run with the perturbation experiment added (the other tests keep
    theirs), and the log of the run that added it."""
    import shutil

    workdir = tmp_path_factory.mktemp("perturbed")
    shutil.copytree(tiny_run, workdir, dirs_exist_ok=True)
    out = snakemake(workdir, "--cores", "2",
                    configs=[ROOT / "tests/configs/perturbation_tiny.yaml"])
    return workdir, out


def test_the_perturbation_numbers_tool_reads_a_short_run(perturbed):
    """tools/perturbation_numbers.py (the numbers docs/perturbations.md quotes) on a run of
    20 steps: the step windows shrink to the steps recorded."""
    workdir, _ = perturbed
    proc = subprocess.run([sys.executable, str(ROOT / "tools/perturbation_numbers.py"),
                           str(workdir / "results/tiny")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps 10-20" in proc.stdout and "steps 50-" not in proc.stdout


def test_adding_perturbations_trains_only_twins_and_copies(perturbed):
    _, out = perturbed
    jobs = planned(out)
    assert set(jobs) == {"perturb", "perturbation_divergence", "aggregate", "plots"}
    assert len(jobs["perturb"]) == 8  # 2 seed groups × run 2 (two schedules) × epochs 1, 3


def test_the_perturbation_report_names_the_nudge(perturbed):
    """Figure 6a's caption says which nudge the copies got: its kind and, for weights, its
    scope (runs that differ only in it would otherwise read alike)."""
    workdir, _ = perturbed
    snakemake(workdir, "--report", "report.html",
              configs=[ROOT / "tests/configs/perturbation_tiny.yaml"])
    html = (workdir / "report.html").read_text(errors="replace")
    assert "Figure 6a" in html and "weights, scope layer, epsilon" in html


def test_perturbations_land_in_the_cube_on_their_own_dims(perturbed, capsys):
    import torch

    from critperiods.__main__ import main

    workdir, _ = perturbed
    results = workdir / "results/tiny"
    cube = critperiods.open_cube(results / "cube.nc")
    dims = ("batch_size", "lr_schedule", "switch_epoch", "seed", "perturb_epoch", "epsilon",
            "replicate")
    assert cube.perturb_l2.dims == (*dims, "epoch")
    assert cube.perturb_step_l2.dims == (*dims, "step") and cube.sizes["step"] == 21
    for name in ("perturb_early_rate", "perturb_l2_growth_form", "perturb_step_growth_form",
                 "perturb_accuracy_change"):
        assert cube[name].dims == dims, name
    l2 = cube.perturb_l2.sel(batch_size=64, lr_schedule="continue", replicate=0)
    assert float(l2.sel(epsilon=0.0).max()) == 0.0  # ε = 0 is the twin, bit for bit
    assert bool((l2.sel(epsilon=0.01, switch_epoch=2, epoch=4) > 0).all())
    assert np.allclose(cube.perturb_step_l2.sel(epsilon=0.01, step=0, switch_epoch=2), 0.01,
                       rtol=1e-4)
    assert cube.perturb_cp_ratio.dims == ("batch_size", "lr_schedule", "switch_epoch")
    assert cube.perturb_cp_ratio_seeds.dims[-1] == "seed"
    for name in [v for v in [*cube.data_vars, *cube.coords] if str(v).startswith("perturb")]:
        assert cube[name].attrs["long_name"], name
        if name not in cube.dims:
            cf_units.Unit(cube[name].attrs["units"])
    for name in ("epsilon", "replicate", "step", "perturb_epoch"):
        assert "units" not in cube[name].attrs and cube[name].attrs["long_name"]
    # the twin, replayed in the job from the trunk's initial state, is the stored run
    group = torch.load(results / "perturbations/bs64/seed0/continue/switch2/e1.pt",
                       weights_only=True)
    assert group["identity"]["seeds"] == [0] and [m["seed"] for m in group["members"]] == [0]
    twin = {c["epoch"]: c["model"] for c in group["members"][0]["twin"]}
    stored = [c for piece in ("trunk/e2", "continue/switch2")
              for c in torch.load(results / f"runs/bs64/seed0/{piece}.pt",
                                  weights_only=True)["members"][0]["checkpoints"]]
    shared = [c for c in stored if c["epoch"] in twin]
    assert [c["epoch"] for c in shared] == [2, 3, 4]
    for c in shared:
        assert all(torch.equal(v, twin[c["epoch"]][k]) for k, v in c["model"].items())
    assert main(["summarize", str(results / "cube.nc")]) == 0
    printed = capsys.readouterr().out
    assert ("perturbations: how far a nudge carries (copy vs its unperturbed twin; kind "
            "weights, scope layer)") in printed and "lasting L2 / epsilon" in printed
    # a perturbation run answers its own question first, then the critical period's
    assert printed.index("In short:") < printed.index("The critical period itself, in short:")
    assert "**" not in printed and "``" not in printed
    for name in ("perturbation", "perturbation_growth"):
        assert (results / f"plots/{name}.png").read_bytes()[:4] == b"\x89PNG"
    landing = (results / "report/landing.rst").read_text()
    assert "Perturbations\n-------------" in landing
    # a perturbation run's page opens on its own question, answer and figure 6a, before
    # the critical period it rests on
    opening = landing.split("Perturbations\n-------------")[0]
    assert "**Question.** Does a small nudge of the weights" in opening
    assert "**In short:**" in opening and 'alt="lasting distance of a nudged copy' in opening
    assert "Critical-period table" not in opening
    from docutils.core import publish_parts  # both tables scroll in the page's column

    html = publish_parts(landing, writer="html")["body"]
    assert html.count('<div style="overflow-x: auto"><table') == html.count("<table") == 2
    assert "growth after a perturbation (Perturbations)" in landing  # drawn, so listed


@pytest.mark.parametrize(("change", "expected"), [
    ("perturbation:\n  epsilons: [0.0, 0.02]\n",
     {"perturb", "perturbation_divergence", "aggregate", "plots"}),
    ("perturbation:\n  epochs: [1, 2, 3]\n",
     {"perturb", "perturbation_divergence", "aggregate", "plots"}),
    ("divergence:\n  probe_size: 32\n",
     {"divergence", "perturbation_divergence", "aggregate", "plots"}),
])
def test_perturbation_changes_rerun_only_what_they_invalidate(perturbed, tmp_path, change,
                                                               expected):
    workdir, _ = perturbed
    out = snakemake(workdir, "-n", configs=[ROOT / "tests/configs/perturbation_tiny.yaml",
                                            override(tmp_path, "c", change)])
    jobs = planned(out)
    assert set(jobs) == expected
    if "epochs" in change:  # only the added epoch's copies are trained
        assert len(jobs["perturb"]) == 4 and all(o.endswith("/e2.pt") for o in jobs["perturb"])


def test_the_readmes_cube_example_runs_on_a_real_cube(run):
    """The README's "Opening the cube" block, and the fuller one in docs/architecture.md,
    run as written on the tiny run's cube."""
    for doc, heading in (("README.md", "## Opening the cube"),
                         ("docs/architecture.md", "### Opening it")):
        text = (ROOT / doc).read_text()
        block = text.split(heading)[1].split("```python\n")[1].split("```")[0]
        assert "results/fmnist_quick/cube.nc" in block
        code = block.replace("results/fmnist_quick/cube.nc", str(run / "results/tiny/cube.nc"))
        namespace: dict = {}
        exec(compile(code, doc, "exec"), namespace)  # noqa: S102 - the docs' own code
        assert namespace["acc"].dims and "critical_period_end" in namespace["cube"]


def test_calibrate_llc_reads_the_config_its_run_recorded(run, capsys):
    """`calibrate-llc PIECE` without --configfile takes the config the piece's run recorded
    (results/<x>/config.yaml), not config.yaml, whose training hash the piece would not
    match; a step size or thread count that is not above 0, or not finite, is a usage
    error."""
    from critperiods.__main__ import main

    piece = next((run / "results/tiny/runs").glob("bs*/*/continue/switch*.pt"))
    with pytest.raises(SystemExit) as stop:
        main(["calibrate-llc", str(piece), "--epoch", "999"])
    assert "no checkpoint at epoch 999" in str(stop.value), stop.value
    assert "results/tiny/config.yaml (as recorded by its run" in capsys.readouterr().out
    for bad, says in ((["--step-sizes", "-1"], "-1: must be above 0"),
                      (["--threads", "0"], "0: must be above 0"),
                      (["--nbetas", "nan"], "nan: must be a finite number")):
        with pytest.raises(SystemExit) as stop:
            main(["calibrate-llc", str(piece), "--epoch", "1", *bad])
        assert stop.value.code == 2 and says in capsys.readouterr().err, bad


def test_calibrate_llc_runs_chains_of_the_length_and_batch_asked_for(run, tmp_path,
                                                                     monkeypatch, capsys):
    """A step size's λ̂ levels off only in a chain long enough to relax, so the calibration
    takes --draws, --burn-in and --batch-size instead of the config's short chains."""
    from critperiods.__main__ import main
    from critperiods.measure import llc

    piece = next((run / "results/tiny/runs").glob("bs*/*/continue/switch*.pt"))
    seen = {}
    real = llc.estimate_llc

    def spy(model, loss_fn, data, cfg, **kw):
        seen.update(draws=cfg.draws, burn_in=cfg.burn_in, batch_size=cfg.batch_size)
        return real(model, loss_fn, data, cfg, **kw)

    monkeypatch.setattr("critperiods.measure.llc.calibration.estimate_llc", spy)
    out = tmp_path / "cal.png"
    assert main(["calibrate-llc", str(piece), "--epoch", "1", "--step-sizes", "1e-5",
                 "--draws", "7", "--burn-in", "3", "--batch-size", "8", "--threads", "1",
                 "--out", str(out)]) == 0
    assert seen == {"draws": 7, "burn_in": 3, "batch_size": 8} and out.stat().st_size > 0
    said = capsys.readouterr().out
    assert re.search(r"nβ \S+, step size 1e-05: λ̂ \S+ \(MCSE \S+, chains' s\.d\. ", said)
    assert "That step differs from checkpoint to checkpoint: sweep a few" in said
    assert main(["calibrate-llc", str(piece), "--epoch", "1", "--threads", "1", "--out",
                 str(out)]) == 0  # the config's chains; the run's own step size among them
    said = capsys.readouterr().out
    assert "step size 0.0002 (the run's): λ̂" in said
    assert "step size 0.001: λ̂" in said  # the default sweep reaches 5 times the run's step
    assert re.search(r"tail k̂ \S+, limit 0\.70", said)  # 2 chains × 20 draws: too few for the rule
    # the checkpoint's stability limit, and the flag a step above it gets
    stability = re.search(r"curvature along its eigenvector has s\.d\. \S+ over minibatches "
                          r"of \d+: the drift is stable \(in mean square\) for step sizes "
                          r"below 4 a / \(a² \+ \(nβ s\)²\) \(a = nβ λ_max \+ γ\) = (\S+) at nβ",
                          said)
    assert stability, said
    limit = float(stability.group(1))
    assert main(["calibrate-llc", str(piece), "--epoch", "1", "--step-sizes",
                 f"{limit / 2:.3g}", f"{limit * 1.5:.3g}", "--draws", "7", "--burn-in", "3",
                 "--threads", "1", "--out", str(out)]) == 0
    below, above = (line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("nβ "))
    assert "unstable step" not in below and "unstable step" in above
    assert main(["calibrate-llc", str(piece), "--epoch", "1", "--step-sizes", "2e-4", "--draws",
                 "7", "--burn-in", "3", "--threads", "1", "--out", str(out), "--descent"]) == 0
    said = capsys.readouterr().out
    found = re.search(r"descent: the noise-free, full-batch drift from the checkpoint \(step size "
                      r"0\.0002, γ \S+, nβ \S+, 10 steps\) changes nβ L_n by (\S+) averaged over "
                      r"the draws \(\S+ at the last\): without it λ̂ at this step size would be "
                      r"about (\S+) rather than (\S+) \(", said)
    assert found, said  # λ̂ without the descent is λ̂ minus what the descent changed
    change, without, llc_hat = map(float, found.groups())
    assert without == pytest.approx(llc_hat - change, rel=1e-3, abs=1e-3)


def test_the_cubes_summary_is_the_summary_of_the_stored_cube(run, monkeypatch):
    """``summarize --recompute`` on a finished cube gives back what aggregate stored, to the
    bit: aggregate computes the summary on a cube that already carries the run's ``lr``
    (the temperature is ``lr / batch_size``; it used 1 before the attribute was set)."""
    import xarray as xr

    from critperiods.pipeline.plan import training_params
    from critperiods.results import summary as summary_module
    from critperiods.results.cube import build_cube

    results = run / "results/tiny"
    stored = xr.load_dataset(results / "cube.nc")
    again = summary_module.critical_period_summary(stored, level=stored.attrs["summary_level"])
    for name in again.data_vars:
        np.testing.assert_array_equal(again[name].values, stored[name].values, err_msg=name)

    seen = []
    real = summary_module.critical_period_summary
    monkeypatch.setattr(summary_module, "critical_period_summary",
                        lambda cube, **kw: seen.append(cube.attrs.get("lr")) or real(cube, **kw))
    config = yaml.safe_load((results / "config.yaml").read_text())
    build_cube(metrics_files=sorted(results.glob("runs/*/*/metrics.nc")), llc_files=[],
               grid=config["grid"], epochs_after_switch=config["epochs_after_switch"],
               training=training_params(config), config_yaml="")
    assert seen == [config["optimizer"]["lr"]]


@pytest.mark.parametrize("configfile", [None, "configs/cifar10_achille.yaml"])
def test_the_dag_trains_the_epochs_the_plan_counts(configfile):
    """The cost model's epochs with trunk sharing (``plan.epochs_trained``) are the ones the
    jobs of a dry run train, seed groups and the never-blurred branch's longer run
    included (``bench/bench_training.py`` reports both)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_training

    row = bench_training.sharing(ROOT / configfile if configfile else None)[0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == cells[2], row
