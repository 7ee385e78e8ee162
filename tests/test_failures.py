"""The one-line reasons a failed run ends with (critperiods.pipeline.failures)."""

from __future__ import annotations

import pytest

from critperiods.pipeline.failures import failed_jobs, say_why

SNAKEMAKE_LOG = """Select jobs to execute...
Error in rule train_branch:
    message: None
    jobid: 8
    input: results/x/data/train.pt, results/x/runs/bs64/seed0/trunk/e2.pt
    output: results/x/runs/bs64/seed0/continue/switch2.pt
    log: {branch} (check log file(s) for error details)
Error in rule aggregate:
    jobid: 9
    log: {aggregate} (check log file(s) for error details)
Error in rule plots:
    jobid: 10
Shutting down, this might take some time.
"""


def test_each_failed_job_is_named_with_the_exception_its_log_ends_with(tmp_path):
    branch, aggregate = tmp_path / "branch.log", tmp_path / "aggregate.log"
    branch.write_text("epoch 1\nTraceback (most recent call last):\n  File \"x.py\", line 3\n"
                      "critperiods.pipeline.checkpoints.CheckpointError: e2.pt: holds a branch\n")
    aggregate.write_text("reading cubes\nsomething went wrong without a traceback\n\n")
    log = tmp_path / "snakemake.log"
    log.write_text(SNAKEMAKE_LOG.format(branch=branch, aggregate=aggregate))
    assert failed_jobs(log) == [
        ("train_branch", "CheckpointError: e2.pt: holds a branch", str(branch)),
        ("aggregate", "something went wrong without a traceback", str(aggregate))]
    said = say_why([log]).splitlines()  # Snakemake 9 hands onerror a list of its logs
    assert said[0] == (f"critperiods: train_branch failed: CheckpointError: e2.pt: holds a "
                       f"branch (log: {branch})")
    assert len(said) == 2  # plots names no log: nothing to read a reason from
    assert say_why(tmp_path / "missing.log") == ""


def test_a_job_retried_is_named_only_if_its_last_attempt_failed(tmp_path):
    """The profiles retry failed jobs (a preempted training job resumes on its retry):
    an attempt followed by "Trying to restart job N." is not a failure of the run, and a job
    that fails every attempt is named once."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.log").write_text(f"ValueError: bad {name}\n")
    entry = "Error in rule {rule}:\n    jobid: {jobid}\n    log: {log} (check log file(s) for " \
            "error details)\n"
    a = entry.format(rule="a", jobid=1, log=tmp_path / "a.log")
    b = entry.format(rule="b", jobid=2, log=tmp_path / "b.log")
    log = tmp_path / "snakemake.log"
    log.write_text(a + "Trying to restart job 1.\n" + b + "Trying to restart job 2.\n" + b
                   + "Finished jobid: 1 (Rule: a)\n")
    assert failed_jobs(log) == [("b", "ValueError: bad b", str(tmp_path / "b.log"))]


def test_an_executors_message_and_a_group_member_are_read(tmp_path):
    """The SLURM plugin puts the job's state on the entry's message line (the rule's log then
    ends wherever the job was killed); a group job's members are indented entries."""
    (tmp_path / "t.log").write_text("epoch 3: 40%|████\n")
    (tmp_path / "e.log").write_text("ValueError: bad e\n")
    log = tmp_path / "snakemake.log"
    log.write_text(
        "Error in rule train_trunk:\n    message: SLURM-job '42' failed, SLURM status is: "
        "'TIMEOUT'\n    jobid: 3\n    log: " + str(tmp_path / "t.log") + ", slurm/42.log (check "
        "log file(s) for error details)\n"
        "Error in group g:\n    Error in rule evaluate:\n        jobid: 4\n        log: "
        + str(tmp_path / "e.log") + " (check log file(s) for error details)\n")
    assert failed_jobs(log) == [
        ("train_trunk", "SLURM-job '42' failed, SLURM status is: 'TIMEOUT'; stopped from "
         "outside, with no error in its log (Ctrl-C, a kill, the time or memory limit), at: "
         "epoch 3: 40%|████", str(tmp_path / "t.log")),
        ("evaluate", "ValueError: bad e", str(tmp_path / "e.log"))]


def test_a_killed_job_and_a_job_that_never_started_are_said_so(tmp_path):
    """A job killed outright (kill -9, out of memory) leaves a progress bar as its log's last
    line, which is not its reason; a job stopped before it opened its log has none."""
    killed = tmp_path / "killed.log"
    killed.write_text("OSError: a read it retried and went on after\n"
                      "bs64 seeds 1 trunk→e2:   0%|          | 0/2\n")
    log = tmp_path / "snakemake.log"
    log.write_text(SNAKEMAKE_LOG.format(branch=killed, aggregate=tmp_path / "never.log"))
    (branch, why, _), (aggregate, never, _) = failed_jobs(log)
    assert why.startswith("stopped from outside, with no error in its log") and "0/2" in why
    assert never.startswith("no log: it ended before its setup opened one")
    said = say_why(log).splitlines()  # the log of the job that never wrote one: not named
    assert said[0].endswith(f"(log: {killed})") and "(log:" not in said[1]


def test_a_stage_that_ends_with_its_own_verdict_is_named_by_it(tmp_path, capsys):
    """``prepare_data`` ends its log with one line of its own, ``critperiods: dataset.name: …``
    (what to do, where it looked), after the traceback of the failed download beneath it:
    the run ends with that line, not with the download's ``RuntimeError: Error downloading
    train-images-idx3-ubyte.gz:`` the traceback ends with (an MNIST offline, say)."""
    from critperiods.pipeline.stages.prepare_data import exit_on_unavailable
    from critperiods.train.dataset_files import DatasetUnavailable

    verdict = ("dataset.name: mnist: the raw files are not in dataset.root (/data) and "
               "downloading them failed: RuntimeError: Error downloading "
               "train-images-idx3-ubyte.gz: no network; copy the four IDX files into "
               "dataset.root")
    with pytest.raises(SystemExit) as caught, exit_on_unavailable():
        try:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried …")
        except RuntimeError as err:
            raise DatasetUnavailable(verdict) from err
    job_log = tmp_path / "prepare_data_train.log"
    job_log.write_text(f"{capsys.readouterr().err}{caught.value.code}\n")  # sys.exit prints it
    log = tmp_path / "snakemake.log"
    log.write_text(f"Error in rule prepare_data:\n    jobid: 1\n    log: {job_log} (check "
                   "log file(s) for error details)\n")
    assert failed_jobs(log) == [("prepare_data", verdict, str(job_log))]
