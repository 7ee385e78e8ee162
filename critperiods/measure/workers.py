"""Independent jobs in forked worker processes, one CPU thread each.

PyTorch's intra-op threads speed up the small kernels of this project's models poorly (two
threads run a 4-chain SGLD step of the default CNN only ~1.4x faster than one), and a job
that is mostly Python overhead does not speed up at all.  Independent pieces of work (the
SGLD chains of an LLC estimate) scale better as separate processes, each with one thread:
that is what :func:`run_forked` does, the way MCMC libraries run chains on several cores.

Workers are forked, so they inherit the model, the data and any closure without pickling;
only their results travel back (through a pipe).  Small ``tail`` tasks are taken, one at a
time, by whichever worker finishes its job first: on a machine whose cores run at different
speeds (a busy core, a noisy VM neighbour) the fast ones do them while a slow one finishes,
instead of idling.  Each sets ``torch.set_num_threads(1)``
before touching a tensor: a forked child must not start OpenMP threads of its own (GNU
OpenMP is not fork-safe).  A worker's exception is raised again in the parent with the
worker's traceback; a worker that dies (e.g. killed for memory) is an error that says so.
Progress is a shared counter per worker that the parent turns into one tqdm bar.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
from tqdm.auto import tqdm

Progress = Callable[[int], None]
Job = Callable[[Progress], Any]


class WorkerError(RuntimeError):
    """A worker process raised an exception or died."""


def can_fork() -> bool:
    """Whether worker processes are available: on Linux (fork is unsafe on macOS and absent
    on Windows, where everything runs in-process), and not inside a daemonic process such as
    another worker (which may not have children)."""
    return (os.name == "posix" and os.uname().sysname == "Linux"
            and "fork" in mp.get_all_start_methods() and not mp.current_process().daemon)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body at one intra-op thread, as every worker does, and restore the count.

    Jobs that run in this process instead of a worker then compute exactly as a worker would:
    some kernels (e.g. oneDNN's bias gradient of a grouped convolution) sum in another order
    at two threads than at one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_forked(jobs: Sequence[Job], total: int, desc: str, progress: bool = True,
               tail: Sequence[Callable[[], Any]] = ()) -> list[Any]:
    """Run ``job(report)`` for every job in its own forked process, then every ``tail()``
    task in whichever worker is free first; return the jobs' results in order, followed by
    the tail tasks' in order.  ``report(k)`` adds ``k`` to the job's progress; ``total`` is
    the sum over all jobs, shown as one bar."""
    ctx = mp.get_context("fork")
    done = ctx.Array("q", len(jobs), lock=False)
    queue = _TailQueue(tail, ctx.Value("q", 0))
    procs, conns = [], []
    sys.stdout.flush()  # a child would otherwise print the parent's pending output again
    sys.stderr.flush()
    try:
        for index, job in enumerate(jobs):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(job, queue, index, done, send,
                                                   os.getpid()), daemon=True)
            proc.start()
            send.close()
            procs.append(proc)
            conns.append(receive)
        results = _collect(procs, conns, done, total, desc, progress)
        finished = dict(item for _, tails in results for item in tails.items())
        return [result for result, _ in results] + [finished[i] for i in range(len(tail))]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
            if proc.is_alive():  # stuck, e.g. writing a result nobody reads any more
                proc.kill()
                proc.join()


class _TailQueue:
    """The tail tasks and a counter shared by the workers: the next task to take."""

    def __init__(self, tasks: Sequence[Callable[[], Any]], counter: Any) -> None:
        self.tasks, self.counter = tasks, counter

    def drain(self) -> dict[int, Any]:
        """Run tasks until none is left; return their results by index."""
        results = {}
        while True:
            with self.counter.get_lock():
                index = self.counter.value
                self.counter.value += 1
            if index >= len(self.tasks):
                return results
            results[index] = self.tasks[index]()


def _work(job: Job, queue: _TailQueue, index: int, done: Any, send: Connection, parent: int
          ) -> None:
    """Body of a worker: one thread, run the job, then tail tasks while any is left; send
    ``("ok", (result, tail results))`` or the error."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a handler inherited from the parent
    _die_with(parent)                               # (e.g. training's) must not keep it alive
    torch.set_num_threads(1)

    def report(steps: int) -> None:
        done[index] += steps

    try:
        result = job(report)
        send.send(("ok", (result, queue.drain())))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()


def _die_with(parent: int) -> None:
    """Have the kernel stop this worker when its parent dies (e.g. a SLURM job killed for its
    time limit), instead of leaving it to sample for nobody."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _collect(procs: list, conns: list[Connection], done: Any, total: int, desc: str,
             progress: bool) -> list[Any]:
    """Wait for every worker's message while updating the progress bar."""
    results: dict[int, Any] = {}
    pending = dict(enumerate(conns))
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        while pending:
            ready = wait(list(pending.values()), timeout=0.5)
            bar.update(sum(done) - bar.n)
            for index in [i for i, c in pending.items() if c in ready]:
                results[index] = _receive(pending.pop(index), procs[index], index)
    return [results[i] for i in range(len(conns))]


def _receive(conn: Connection, proc: Any, index: int) -> Any:
    """A worker's result, or a :class:`WorkerError` with its traceback or exit code."""
    try:
        status, payload = conn.recv()
    except EOFError:
        proc.join()
        raise WorkerError(f"worker {index} died without a result (exit code {proc.exitcode})"
                          ) from None
    if status == "error":
        raise WorkerError(f"worker {index} failed:\n{payload}")
    return payload
