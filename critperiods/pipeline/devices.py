"""Choosing the device a job runs on.

:func:`resolve_device` maps the config's ``device`` value to a torch device.
:func:`acquire_device` does the same for a job that may share the machine with
other jobs, and makes sure concurrent jobs do not land on the same GPU:

* under SLURM (or whenever ``CUDA_VISIBLE_DEVICES`` names exactly one device) the
  job uses ``cuda:0`` of the visible set: the scheduler already gave it its own GPU;
* otherwise (a workstation running ``snakemake --resources gpu=N``, which only caps
  how many GPU jobs run at once and assigns no indices) the job takes the first GPU
  whose lock file it can lock exclusively (``fcntl.flock`` on
  ``<lock dir>/critperiods-gpu-<id>.lock``) and holds the lock until the process
  exits, so the next job takes another GPU. The lock dir is
  ``$CRITPERIODS_GPU_LOCK_DIR``, else ``$TMPDIR``, else the system temp dir; all jobs
  of a machine must agree on it. When ``CUDA_VISIBLE_DEVICES`` lists several
  devices, the lock is taken among those (keyed by the listed ids).

``auto`` runs on the CPU where torch sees no GPU, except in a SLURM job that was given one
(SLURM's ``SLURM_JOB_GPUS``, ``SLURM_STEP_GPUS`` or ``SLURM_GPUS_ON_NODE`` names one, and
``CUDA_VISIBLE_DEVICES`` a device): there torch not seeing it means a broken install (a
CUDA build newer than the node's driver), and the job fails at once, naming the cause,
rather than train on the CPU until its time limit. ``CRITPERIODS_ALLOW_CPU=1`` lets it run
on the CPU anyway (the test suite's SLURM has only fake GPUs). ``cuda`` fails there with the
same diagnosis, and without a GPU anywhere.

If every GPU stays locked for ``wait_s`` seconds (more GPU jobs than GPUs, or GPUs
used by another program), the job shares one of them (picked by its process id, so that
waiting jobs spread over the GPUs) and logs a warning rather than failing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LOCK_PREFIX = "critperiods-gpu-"
DEFAULT_WAIT_S = 60.0
POLL_S = 0.5

# File descriptors of the GPU locks this process holds: kept open (locked) until exit.
_held: dict[str, int] = {}


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def lock_dir() -> Path:
    """Folder of the per-GPU lock files (shared by all jobs on this machine)."""
    return Path(os.environ.get("CRITPERIODS_GPU_LOCK_DIR") or tempfile.gettempdir())


def visible_devices() -> list[str] | None:
    """Entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs); None when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _try_lock(key: str, directory: Path) -> bool:
    """Lock ``critperiods-gpu-<key>.lock`` exclusively without waiting; keep it on success."""
    if key in _held:
        return False  # this process already uses that GPU
    path = directory / f"{LOCK_PREFIX}{key}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # created by another user without write permission for us
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    if _writable(fd):  # who holds it, for humans looking at the lock dir
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    return True


def _writable(fd: int) -> bool:
    return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) != os.O_RDONLY


def release_devices() -> None:
    """Drop every GPU lock this process holds (the process exit does it too)."""
    for fd in _held.values():
        os.close(fd)  # closing the last descriptor releases the flock
    _held.clear()


#: What SLURM sets in a job (or step) given GPUs; a user's shell sets none of them.
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")


def _given_gpu_unseen(name: str) -> str:
    """Where SLURM gave this job a GPU that torch cannot see, what to say (else ""): a
    broken install, not a machine without GPUs (module docstring)."""
    given = [v for v in visible_devices() or [] if v.lower() != "nodevfiles" and v != "-1"]
    slurm = [f"{k}={os.environ[k]}" for k in SLURM_GPU_VARIABLES  # GPU ids; a count
             if os.environ.get(k, "").strip() not in ("", "0" if k.endswith("NODE") else "")]
    if not given or not slurm:
        return ""
    return (f"device: {name}: SLURM gave this job a GPU ({slurm[0]}, CUDA_VISIBLE_DEVICES="
            f"{','.join(given)}), but torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}) sees none: install a torch build for the node's driver "
            "(docs/slurm.md, 'Installing on a cluster'; `nvidia-smi` shows the driver's CUDA "
            "version), or set device: cpu so that no GPU is asked for")


def _refuse_a_given_gpu_unseen() -> None:
    """Raise under ``auto`` where SLURM gave this job a GPU that torch cannot see, unless
    ``CRITPERIODS_ALLOW_CPU=1``: it would train on the CPU until its time limit."""
    said = _given_gpu_unseen("auto")
    if said and os.environ.get("CRITPERIODS_ALLOW_CPU") != "1":
        raise RuntimeError(f"{said}; CRITPERIODS_ALLOW_CPU=1 runs it on the CPU anyway")


def acquire_device(name: str, wait_s: float | None = None) -> torch.device:
    """The device for this job, with a GPU no concurrent job of this machine uses.

    ``name`` is the config's ``device`` (``auto``, ``cpu``, ``cuda``) or an explicit
    ``cuda:<i>`` (used as given, no lock). Call it once per process: every call locks
    one more GPU. See the module docstring for the rules; ``auto`` raises ``RuntimeError``
    in a SLURM job given a GPU that torch cannot see.
    """
    if name == "auto" and not torch.cuda.is_available():
        _refuse_a_given_gpu_unseen()
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        return resolve_device(name)
    if not torch.cuda.is_available():
        raise RuntimeError(_given_gpu_unseen("cuda")
                           or "device: 'cuda' requested but torch sees no CUDA device")

    visible = visible_devices()
    if visible is not None and len(visible) <= 1:
        return torch.device("cuda:0")  # SLURM (or the user) picked our GPU already
    count = torch.cuda.device_count()
    # Lock keys name physical devices, so jobs that see the same set agree on them.
    keys = visible[:count] if visible else [str(i) for i in range(count)]
    if not keys:
        raise RuntimeError("device: CUDA is available but no device is visible")
    if len(keys) == 1:
        return torch.device("cuda:0")

    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    wait_s = float(os.environ.get("CRITPERIODS_GPU_WAIT_S", DEFAULT_WAIT_S)) \
        if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        for index, key in enumerate(keys):
            if _try_lock(key, directory):
                log.info("using GPU cuda:%d (lock %s%s.lock in %s)", index, LOCK_PREFIX, key,
                         directory)
                return torch.device(f"cuda:{index}")
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    index = os.getpid() % len(keys)
    log.warning("all %d GPUs are locked by other jobs after %.0f s; sharing cuda:%d "
                "(run fewer concurrent GPU jobs: snakemake --resources gpu=<number of GPUs>)",
                len(keys), wait_s, index)
    return torch.device(f"cuda:{index}")


__all__ = ["acquire_device", "lock_dir", "release_devices", "resolve_device", "visible_devices"]
