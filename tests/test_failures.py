"""The one-line reasons a failed run ends with (critperiods.pipeline.failures)."""

from __future__ import annotations

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
