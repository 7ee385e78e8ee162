"""GPU selection (critperiods.pipeline.devices) without a GPU: torch.cuda is mocked."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import torch

from critperiods.pipeline import devices


@pytest.fixture
def gpus(monkeypatch, tmp_path):
    """Pretend torch sees ``n`` GPUs; lock files go to a private folder."""

    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in (*devices.SLURM_GPU_VARIABLES, "CRITPERIODS_ALLOW_CPU"):
        monkeypatch.delenv(name, raising=False)  # the tests may run inside a job
    monkeypatch.setenv("CRITPERIODS_GPU_LOCK_DIR", str(tmp_path))
    devices.release_devices()
    yield fake
    devices.release_devices()


def test_cpu_and_auto_without_gpu(gpus):
    gpus(0)
    assert devices.acquire_device("cpu") == torch.device("cpu")
    assert devices.acquire_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        devices.acquire_device("cuda")


def test_resolve_device_unchanged(gpus):
    gpus(0)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError):
        devices.resolve_device("cuda")
    gpus(2)
    assert devices.resolve_device("auto") == torch.device("cuda")


def test_two_acquirers_get_different_gpus(gpus, tmp_path):
    gpus(2)
    first = devices.acquire_device("auto", wait_s=0)
    second = devices.acquire_device("cuda", wait_s=0)
    assert {first, second} == {torch.device("cuda:0"), torch.device("cuda:1")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "critperiods-gpu-0.lock", "critperiods-gpu-1.lock"]


def test_released_gpu_is_taken_again(gpus):
    gpus(2)
    assert devices.acquire_device("auto", wait_s=0) == torch.device("cuda:0")
    devices.release_devices()
    assert devices.acquire_device("auto", wait_s=0) == torch.device("cuda:0")


def _hold_lock_in_child(lock_file) -> subprocess.Popen:
    """Another process (another job) holding a GPU's lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import fcntl, sys
        f = open({str(lock_file)!r}, "w")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


@contextlib.contextmanager
def _locks_held(*lock_files) -> Iterator[None]:
    """Other jobs holding these GPU locks for the duration of the block."""
    children = [_hold_lock_in_child(f) for f in lock_files]
    try:
        yield
    finally:
        for child in children:
            child.stdin.close()
            child.wait(timeout=10)


def test_gpu_locked_by_another_process_is_skipped(gpus, tmp_path):
    gpus(2)
    with _locks_held(tmp_path / "critperiods-gpu-0.lock"):
        assert devices.acquire_device("auto", wait_s=0) == torch.device("cuda:1")
    devices.release_devices()
    # The lock dies with its process: GPU 0 is free again.
    assert devices.acquire_device("auto", wait_s=0) == torch.device("cuda:0")


def test_all_gpus_busy_waits_then_shares(gpus, tmp_path, caplog):
    gpus(2)
    locks = [tmp_path / f"critperiods-gpu-{i}.lock" for i in (0, 1)]
    with _locks_held(*locks), caplog.at_level("WARNING"):
        device = devices.acquire_device("auto", wait_s=0.2)
    assert device.type == "cuda" and device.index in (0, 1)
    assert "locked by other jobs" in caplog.text


@pytest.mark.parametrize("visible", ["3", "GPU-5b1e7a3c-0000-0000-0000-000000000000"])
def test_cuda_visible_devices_is_honoured(gpus, monkeypatch, tmp_path, visible):
    """SLURM sets CUDA_VISIBLE_DEVICES to the job's GPU: use cuda:0, take no lock."""
    gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.acquire_device("auto") == torch.device("cuda:0")
    assert devices.acquire_device("cuda") == torch.device("cuda:0")  # no lock: same answer
    assert list(tmp_path.iterdir()) == []


def test_several_visible_devices_are_locked_by_their_ids(gpus, monkeypatch, tmp_path):
    gpus(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with _locks_held(tmp_path / "critperiods-gpu-2.lock"):
        assert devices.acquire_device("auto", wait_s=0) == torch.device("cuda:1")
    assert (tmp_path / "critperiods-gpu-3.lock").exists()


def test_explicit_index_is_used_as_given(gpus, tmp_path):
    gpus(2)
    assert devices.acquire_device("cuda:1") == torch.device("cuda:1")
    assert list(tmp_path.iterdir()) == []


def test_auto_refuses_a_slurm_gpu_that_torch_cannot_see(gpus, monkeypatch):
    """A SLURM job given a GPU (SLURM_JOB_GPUS, and CUDA_VISIBLE_DEVICES naming it) whose
    torch sees none has a broken install: `auto` fails at once, naming the GPU and the fix,
    instead of training on the CPU until the time limit, and `cuda` says the same. A
    CUDA_VISIBLE_DEVICES of the user's own (no SLURM GPU variable; or -1, which hides every
    GPU) and CRITPERIODS_ALLOW_CPU=1 leave `auto` on the CPU."""
    gpus(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert devices.acquire_device("auto") == torch.device("cpu")  # a workstation's setting
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with pytest.raises(RuntimeError) as err:
        devices.acquire_device("auto")
    said = str(err.value)
    assert "SLURM gave this job a GPU (SLURM_JOB_GPUS=0, CUDA_VISIBLE_DEVICES=0)" in said
    assert torch.__version__ in said and "device: cpu" in said and "docs/slurm.md" in said
    with pytest.raises(RuntimeError, match="device: cuda: SLURM gave this job a GPU"):
        devices.acquire_device("cuda")
    monkeypatch.setenv("CRITPERIODS_ALLOW_CPU", "1")
    assert devices.acquire_device("auto") == torch.device("cpu")
    monkeypatch.delenv("CRITPERIODS_ALLOW_CPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert devices.acquire_device("auto") == torch.device("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.acquire_device("auto") == torch.device("cpu")
    assert devices.acquire_device("cpu") == torch.device("cpu")
