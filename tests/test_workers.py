"""critperiods.measure.workers: forked jobs return in order, report progress, and fail loudly."""

from __future__ import annotations

import os

import pytest
import torch

from critperiods.measure.workers import WorkerError, can_fork, run_forked

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


def test_tail_tasks_run_in_the_worker_that_is_free_first() -> None:
    """Tail tasks go to whichever worker has finished its job; their results follow the
    jobs' results, in the tasks' order."""
    import time

    def slow(report):
        time.sleep(1.0)
        return "slow", os.getpid()

    def fast(report):
        return "fast", os.getpid()

    tail = [lambda i=i: (i, os.getpid()) for i in range(5)]
    out = run_forked([slow, fast], total=1, desc="test", progress=False, tail=tail)
    assert [r[0] for r in out] == ["slow", "fast", 0, 1, 2, 3, 4]
    assert {r[1] for r in out[2:]} == {out[1][1]} != {os.getpid()}


def test_a_failing_tail_task_raises_with_its_traceback() -> None:
    def bad():
        raise ValueError("chunk 3 unreadable")

    with pytest.raises(WorkerError, match=r"ValueError: chunk 3 unreadable"):
        run_forked([_square(1), _square(2)], total=1, desc="test", progress=False, tail=[bad])


def test_a_failing_job_raises_with_its_traceback() -> None:
    def bad(report):
        raise ValueError("chain 7 exploded")

    with pytest.raises(WorkerError, match=r"worker 1 failed:(.|\n)*ValueError: chain 7 exploded"):
        run_forked([_square(1), bad], total=1, desc="test", progress=False)


def test_a_failure_stops_the_others_despite_an_inherited_sigterm_handler() -> None:
    """Workers inherit the parent's signal handlers (training installs one for SIGTERM); a
    worker must still stop when the parent gives up on it."""
    import signal
    import time

    def fails(report):
        time.sleep(0.2)
        raise RuntimeError("first worker failed")

    def sleeps(report):
        time.sleep(30)

    old = signal.signal(signal.SIGTERM, lambda *args: None)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerError, match="first worker failed"):
            run_forked([fails, sleeps], total=1, desc="test", progress=False)
        assert time.monotonic() - start < 10
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_dying_worker_is_an_error_with_its_exit_code() -> None:
    def dies(report):
        os._exit(3)

    with pytest.raises(WorkerError, match="worker 0 died without a result .exit code 3"):
        run_forked([dies], total=1, desc="test", progress=False)


def test_workers_stop_when_their_parent_dies(tmp_path) -> None:  # noqa: ANN001
    """A worker whose parent is killed (SLURM time limit) is stopped by the kernel instead of
    sampling on for nobody."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, time
        from critperiods.measure.workers import run_forked
        def job(report):
            open({str(pids)!r}, "a").write(f"{{os.getpid()}}\\n")
            time.sleep(60)
        run_forked([job, job], total=1, desc="x", progress=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.05)
    children = [int(p) for p in pids.read_text().split()]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie of a reaped orphan counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
