"""critperiods.workers: forked jobs return in order, report progress, and fail loudly."""

from __future__ import annotations

import os

import pytest
import torch

from critperiods.workers import WorkerError, can_fork, run_forked

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need Linux (fork)")


def _square(value: int):
    def job(report):
        report(value)
        return value * value, os.getpid(), torch.get_num_threads()

    return job


def test_results_in_order_from_separate_single_threaded_processes() -> None:
    out = run_forked([_square(v) for v in (3, 1, 2)], total=6, desc="test", progress=False)
    assert [r[0] for r in out] == [9, 1, 4]
    assert len({r[1] for r in out} | {os.getpid()}) == 4  # three children, none is us
    assert all(r[2] == 1 for r in out)


def test_a_failing_job_raises_with_its_traceback() -> None:
    def bad(report):
        raise ValueError("chain 7 exploded")

    with pytest.raises(WorkerError, match=r"worker 1 failed:(.|\n)*ValueError: chain 7 exploded"):
        run_forked([_square(1), bad], total=1, desc="test", progress=False)


def test_a_dying_worker_is_an_error_with_its_exit_code() -> None:
    def dies(report):
        os._exit(3)

    with pytest.raises(WorkerError, match="worker 0 died without a result .exit code 3"):
        run_forked([dies], total=1, desc="test", progress=False)
