"""The workflow on a real SLURM, through profiles/slurm.

Two runs of the same tiny experiment (cluster_tiny.yaml) go through the cluster at
the same time, each in its own working and results directory:

* ``reference``: uninterrupted (test A checks the cube and the GPU requests);
* ``preempted``: while one of its training jobs is RUNNING and mid-way through its
  second epoch, the job gets ``scancel --signal=TERM`` (what SLURM sends at
  preemption and at the time limit). The training script saves its state and exits
  143, the job fails, Snakemake resubmits it (``retries``) with more time, and the
  retry resumes. Test B checks that the result is bitwise the reference's.

Running both at once halves the wall time: most of a SLURM job's life here is
start-up (two Snakemake processes and a torch import) and status polling.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import fake_fashion_mnist_if_needed

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TINY = Path(__file__).with_name("cluster_tiny.yaml")
RUN_TIMEOUT_S = 420
TEST_MEM_MB = 500  # memory per job on the first attempt, in place of the rules' estimates
THREADS = 1  # train.threads: the schema default, which cluster_tiny.yaml keeps
SACCT_FIELDS = "JobID,State,ExitCode,ReqTRES,AllocTRES,Timelimit,Elapsed,Comment,WorkDir"


@dataclass
class Run:
    name: str
    workdir: Path
    results: Path
    proc: subprocess.Popen | None = None
    log: Path | None = None
    started: float = 0.0
    wall_s: float | None = None
    jobs: list[dict] = field(default_factory=list)  # sacct rows of this run

    @property
    def experiment(self) -> Path:
        return self.results / "cluster_tiny"


def make_test_profile(tmp: Path, account: str, partition: str) -> Path:
    """profiles/slurm with only what is site-specific replaced for the local cluster.

    The account and partitions are the placeholders the user edits; the memory of every
    rule that states one is scaled to the 1-node test cluster (keeping its growth with
    the attempt); the first status check comes after 1 s instead of 20 s. GPU requests,
    CPUs, time limits, retries, requeue and everything else are the shipped profile's
    and the rules'.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    assert "<" in profile["default-resources"]["slurm_account"], "placeholder expected"
    assert profile["slurm-requeue"] is True, "the preemption story relies on requeueing"
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_account" in resources:
            resources["slurm_account"] = account
        if "slurm_partition" in resources:
            resources["slurm_partition"] = partition
    rules = rules_with_memory()
    assert {"train_trunk", "train_branch", "evaluate"} <= set(rules), rules
    for rule in rules:
        profile["set-resources"].setdefault(rule, {})["mem_mb"] = f"{TEST_MEM_MB}*attempt"
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["latency-wait"] = 5
    folder = tmp / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def rules_with_memory() -> list[str]:
    """The rules whose ``resources:`` state ``mem_mb`` (workflow/rules/*.smk)."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(),
                                     re.M):
            if "mem_mb=" in body:
                found.append(name)
    return found


def start_run(name: str, tmp: Path, profile: Path, env: dict) -> Run:
    run = Run(name, tmp / name / "work", tmp / name / "results")
    run.workdir.mkdir(parents=True)
    config = yaml.safe_load(TINY.read_text())
    config["results_dir"] = str(run.results)
    # Debian's package where installed, else fake files: never a download
    config["dataset"]["root"] = str(fake_fashion_mnist_if_needed() or REPO / "data")
    configfile = tmp / name / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    run.log = tmp / name / "snakemake.log"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--profile", str(profile), "--configfile", str(configfile),
           "--directory", str(run.workdir)]
    with open(run.log, "w") as out:
        run.started = time.monotonic()
        run.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env}, start_new_session=True)
    return run


def wait_runs(runs: list[Run], timeout: float) -> dict[str, int]:
    """Wait for every run; record each one's wall time when it ends."""
    rcs: dict[str, int] = {}
    while len(rcs) < len(runs):
        for run in runs:
            if run.name not in rcs and run.proc.poll() is not None:
                rcs[run.name] = run.proc.returncode
                run.wall_s = time.monotonic() - run.started
            elif run.name not in rcs and time.monotonic() - run.started > timeout:
                run.proc.terminate()  # snakemake cancels its SLURM jobs on the way out
                run.proc.wait(timeout=60)
                pytest.fail(f"{run.name}: snakemake still running after {timeout} s; "
                            f"log {run.log}")
        time.sleep(0.5)
    return rcs


def sacct(cluster, run: Run) -> list[dict]:
    names = SACCT_FIELDS.split(",")
    out = cluster.run("sacct", "-X", "-n", "-P", "-o", SACCT_FIELDS, "--starttime", "now-1day")
    rows = [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]
    return [r for r in rows if Path(r["WorkDir"]) == run.workdir]


def rule_of(job: dict) -> str:
    m = re.match(r"rule_(\w+?)(_wildcards_|$)", job["Comment"])
    assert m, f"unexpected job comment {job['Comment']!r}"
    return m.group(1)


def expected_comment(resume: Path) -> str:
    """The SLURM job comment of the job that writes the resume file's output."""
    run = re.search(r"bs(\d+)/seed(\d+)", str(resume))
    trunk = re.fullmatch(r"\.e(\d+)\.pt\.resume", resume.name)
    if trunk:
        return f"rule_train_trunk_wildcards_{run[1]}_seed{run[2]}_{trunk[1]}"
    branch = re.fullmatch(r"\.switch(\d+)\.pt\.resume", resume.name)
    assert branch, resume
    schedule = resume.parent.name  # runs/bs<B>/seed<S>/<schedule>/switch<K>.pt
    return f"rule_train_branch_wildcards_{run[1]}_seed{run[2]}_{schedule}_{branch[1]}"


@dataclass
class Preemption:
    jobid: str
    comment: str
    resume: Path
    at_s: float  # seconds after the run started


def preempt_a_training_job(cluster, run: Run, timeout: float = 240) -> Preemption:
    """Wait until a training job of ``run`` has saved its first epoch, then SIGTERM it.

    The resume file appears after the first epoch of a multi-epoch piece; the second
    epoch lasts seconds, so the signal lands mid-epoch.
    """
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"{run.name} ended before a training job could be preempted ({seen})")
        for resume in sorted(run.experiment.glob("runs/**/.*.resume")):
            comment = expected_comment(resume)
            seen = cluster.run("squeue", "-h", "-o", "%i|%T|%k|%Z")
            for line in seen.splitlines():
                jobid, state, job_comment, workdir = line.split("|")
                if (Path(workdir) == run.workdir and job_comment == comment
                        and state == "RUNNING"):
                    # Default scancel --signal reaches every job step but not the batch
                    # shell: the rule's srun step, where the training script runs.
                    cluster.run("scancel", "--signal=TERM", jobid)
                    return Preemption(jobid, comment, resume, time.monotonic() - run.started)
        time.sleep(0.2)
    pytest.fail(f"no training job of {run.name} caught running in {timeout} s ({seen})")


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    from slurm_harness import ACCOUNT, PARTITION

    tmp = tmp_path_factory.mktemp("slurm_runs")
    profile = make_test_profile(tmp, ACCOUNT, PARTITION)
    reference = start_run("reference", tmp, profile, slurm_cluster.env)
    preempted = start_run("preempted", tmp, profile, slurm_cluster.env)
    try:
        preemption = preempt_a_training_job(slurm_cluster, preempted)
        rcs = wait_runs([reference, preempted], RUN_TIMEOUT_S)
    finally:
        for r in (reference, preempted):
            if r.proc.poll() is None:
                r.proc.terminate()
                r.proc.wait(timeout=60)
    for r in (reference, preempted):
        r.jobs = sacct(slurm_cluster, r)
        print(f"\n{r.name}: snakemake rc {rcs[r.name]}, wall {r.wall_s:.1f} s, "
              f"{len(r.jobs)} SLURM jobs", file=sys.stderr)
        for j in r.jobs:
            print("  " + " ".join(f"{k}={j[k]}" for k in SACCT_FIELDS.split(",")[:-1]),
                  file=sys.stderr)
    for r in (reference, preempted):
        assert rcs[r.name] == 0, f"{r.name} failed:\n{r.log.read_text()[-4000:]}"
    return {"reference": reference, "preempted": preempted, "preemption": preemption}


def test_a_workflow_through_profile_requests_gpus(runs):
    run = runs["reference"]
    cube = run.experiment / "cube.nc"
    assert cube.exists()
    assert (run.experiment / "plots" / "critical_period.png").exists()
    import xarray as xr

    with xr.open_dataset(cube) as ds:
        acc = ds["final_test_accuracy"].values
        # 1 batch × 2 schedules × 2 switches (switch 0 is shared by both schedules)
        assert acc.size == 4 and ((acc > 0) & (acc <= 1)).all(), acc

    # What Snakemake asked for, per SLURM job id, against what SLURM recorded.
    planned = submitted_jobs(run.log)
    submitted = {rule for rule, _ in planned.values()}
    assert {"train_trunk", "train_branch", "evaluate"} <= submitted, planned
    # cheap steps are `localrules` in the Snakefile: they never become cluster jobs
    assert not {"prepare_data", "aggregate", "plots"} & submitted, planned
    assert sorted(planned) == sorted(j["JobID"] for j in run.jobs), (planned, run.jobs)
    for job in run.jobs:
        rule, gpus = planned[job["JobID"]]
        assert rule == rule_of(job), (rule, job)
        assert job["State"] == "COMPLETED", job
        if rule in ("train_trunk", "train_branch", "evaluate"):
            assert gpus == 1, f"{rule} must ask for one GPU"
        requested = "gres/gpu=1" in job["ReqTRES"] and "gres/gpu=1" in job["AllocTRES"]
        assert requested == (gpus == 1), f"{rule}: gpu={gpus} but SLURM has {job}"
        # as many cores as the job runs threads, GPU jobs included
        assert f"cpu={THREADS}," in job["ReqTRES"], f"{rule}: {job['ReqTRES']}"
        assert _tres_mem_mb(job["ReqTRES"]) == TEST_MEM_MB, f"{rule}: {job['ReqTRES']}"


def submitted_jobs(log: Path) -> dict[str, tuple[str, int]]:
    """SLURM job id → (rule, gpu resource) from a Snakemake log."""
    jobs, rule, gpus, out = {}, None, 0, {}
    for line in log.read_text().splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule, gpus = m[1], 0
        elif m := re.match(r"\s+jobid: (\d+)", line):
            jobs[m[1]] = (rule, gpus)
        elif line.strip().startswith("resources:") and (m := re.search(r"\bgpu=(\d+)", line)):
            last = list(jobs)[-1]
            jobs[last] = (jobs[last][0], int(m[1]))
        elif m := re.match(r"Job (\d+) has been submitted with SLURM jobid (\d+)", line):
            out[m[2]] = jobs[m[1]]
    return out


def _assert_same(a, b, where: str) -> None:
    """Bitwise equality of nested checkpoint payloads (dicts, lists, tensors, scalars)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_b_preempted_training_job_resumes_bitwise(runs, slurm_cluster):
    import torch
    import xarray as xr

    reference, run, pre = runs["reference"], runs["preempted"], runs["preemption"]
    print(f"\npreempted SLURM job {pre.jobid} ({pre.comment}) {pre.at_s:.1f} s into the run",
          file=sys.stderr)
    # The signalled job failed; the same rule+wildcards ran again and completed, with
    # the attempt-scaled time limit of the profile.
    attempts = [j for j in run.jobs if j["Comment"] == pre.comment]
    assert [j["JobID"] for j in attempts][0] == pre.jobid, attempts
    assert len(attempts) == 2, attempts
    first, retry = attempts
    assert first["State"] == "FAILED", first
    assert retry["State"] == "COMPLETED", retry
    assert "gres/gpu=1" in retry["ReqTRES"], retry
    assert _minutes(retry["Timelimit"]) == 2 * _minutes(first["Timelimit"]), attempts
    assert _tres_mem_mb(retry["ReqTRES"]) == 2 * _tres_mem_mb(first["ReqTRES"]), attempts
    # The SIGTERM reached the Python process: it saved its state mid-epoch (a resume
    # file written at an epoch end would hold a whole number of epochs of steps).
    piece_log = _rule_log(run, pre.comment)
    m = re.search(r"resuming at epoch (\d+), step (\d+)", piece_log)
    assert m, f"the retry did not resume:\n{piece_log[-2000:]}"
    steps_per_epoch = -(-8192 // 16)
    assert int(m[2]) % steps_per_epoch != 0, f"saved at an epoch end, not on SIGTERM: {m[0]}"
    assert not pre.resume.exists(), "the resume file must be removed once the piece is done"
    # Same results as the uninterrupted run, bitwise: every piece file and the cube.
    pieces = sorted(p.relative_to(reference.experiment)
                    for p in reference.experiment.glob("runs/**/*.pt"))
    # trunk e0, e2; continue switch0, switch2; restart switch2
    assert len(pieces) == 5, pieces
    for rel in pieces:
        _assert_same(torch.load(reference.experiment / rel, weights_only=False),
                     torch.load(run.experiment / rel, weights_only=False), str(rel))
    with (xr.open_dataset(reference.experiment / "cube.nc") as ref,
          xr.open_dataset(run.experiment / "cube.nc") as got):
        assert (ref["final_test_accuracy"].values == got["final_test_accuracy"].values).all()
        xr.testing.assert_equal(ref, got)


def _minutes(timelimit: str) -> int:
    """sacct Timelimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = timelimit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def _tres_mem_mb(tres: str) -> int:
    """The memory of a sacct TRES list (``billing=1,cpu=1,mem=500M,node=1``) in MB."""
    m = re.search(r"\bmem=(\d+(?:\.\d+)?)([MG])\b", tres)
    assert m, tres
    return round(float(m[1]) * (1024 if m[2] == "G" else 1))


def _rule_log(run: Run, comment: str) -> str:
    m = re.fullmatch(r"rule_(train_trunk|train_branch)_wildcards_(\d+)_seed(\d+)_(?:(\w+)_)?(\d+)",
                     comment)
    assert m, comment
    piece = f"trunk_e{m[5]}" if m[1] == "train_trunk" else f"{m[4]}_switch{m[5]}"
    return (run.experiment / "logs" / "train" / f"bs{m[2]}_seed{m[3]}_{piece}.log").read_text()
