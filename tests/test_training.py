"""Determinism contract: trunk sharing and resumption never change a bit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from critperiods.pipeline.checkpoints import load_piece
from critperiods.pipeline.trajectories import PieceSpec, resume_path_for, train_piece
from critperiods.train.training import (
    ALWAYS_BLURRED,
    Preempted,
    epoch_plan,
    learning_rate,
    phase,
    train_from_scratch,
)

HASH = "testhash0001"


def solo(piece: dict) -> dict:
    """The one member (seed) of a single-seed piece."""
    (member,) = piece["members"]
    return member


def assert_state_equal(a: dict, b: dict) -> None:
    """Bitwise equality of two nested state dicts."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_state_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def trunk_then_branch(tmp_path, cfg, data, switch: int, stride: int, end: int, ckpts: set[int],
                      batch_size: int = 32, seed: int = 3):
    """Train like the workflow: trunk segments of ``stride`` epochs, then the branch."""
    prev = None
    for e in range(0, switch + 1, stride):
        out = tmp_path / f"trunk_e{e}.pt"
        inside = {c for c in ckpts if (e - stride if e else -1) < c <= e}
        train_piece(PieceSpec(batch_size, (seed,), ALWAYS_BLURRED, e, frozenset(inside)), cfg, HASH,
                    data, prev, out, progress=False)
        prev = out
    branch = tmp_path / f"switch{switch}.pt"
    inside = {c for c in ckpts if switch < c <= end}
    train_piece(PieceSpec(batch_size, (seed,), switch, end, frozenset(inside)), cfg, HASH, data,
                prev, branch, progress=False)
    return prev, branch


@pytest.mark.parametrize("augmentation", [False, True])
def test_branch_from_trunk_equals_run_from_scratch(tmp_path, cfg, data, augmentation):
    cfg = replace(cfg, augmentation=augmentation)
    ckpts = {0, 1, 2, 3, 4, 5}
    trunk, branch = trunk_then_branch(tmp_path, cfg, data, switch=2, stride=1, end=5, ckpts=ckpts)
    state, scratch_ckpts = train_from_scratch(cfg, data, 32, 3, switch_epoch=2, end_epoch=5,
                                              checkpoint_epochs=ckpts, config_hash=HASH)
    piece = solo(load_piece(branch, HASH))
    assert_state_equal(piece["state"], state)
    # the branch's checkpoints equal the from-scratch run's at the same epochs
    scratch = {c["epoch"]: c for c in scratch_ckpts}
    for c in piece["checkpoints"]:
        assert_state_equal(c["model"], scratch[c["epoch"]]["model"])
        assert c["phase"] == "sharp" and scratch[c["epoch"]]["phase"] == "sharp"
    assert {c["epoch"] for c in piece["checkpoints"]} == {3, 4, 5}
    # and the trunk's checkpoints before the switch are the scratch run's blurred ones
    trunk_ckpt = solo(load_piece(trunk, HASH))["checkpoints"]
    assert [c["epoch"] for c in trunk_ckpt] == [2]
    assert_state_equal(trunk_ckpt[0]["model"], scratch[2]["model"])
    assert scratch[2]["phase"] == "blurred"


def test_trunk_segments_do_not_depend_on_stride(tmp_path, cfg, data):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    trunk_a, _ = trunk_then_branch(a, cfg, data, switch=4, stride=1, end=5, ckpts=set())
    trunk_b, _ = trunk_then_branch(b, cfg, data, switch=4, stride=2, end=5, ckpts=set())
    assert_state_equal(solo(load_piece(trunk_a, HASH))["state"],
                       solo(load_piece(trunk_b, HASH))["state"])


def stop_after(steps: int):
    """A should_stop callback that fires after ``steps`` polls (a simulated SIGTERM)."""
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] >= steps

    return should_stop


@pytest.mark.parametrize("stop_at", [3, 6, 13])  # mid-epoch and at an epoch boundary
def test_killed_and_resumed_equals_uninterrupted(tmp_path, cfg, data, stop_at):
    spec = PieceSpec(32, (1,), 2, 3, frozenset({1, 2, 3}))  # 6 steps per epoch
    whole = tmp_path / "whole.pt"
    train_piece(spec, cfg, HASH, data, None, whole, progress=False)

    cut = tmp_path / "cut.pt"
    with pytest.raises(Preempted):
        train_piece(spec, cfg, HASH, data, None, cut, progress=False,
                    should_stop=stop_after(stop_at))
    assert not cut.exists(), "a stopped job must not leave its declared output"
    resume = resume_path_for(cut)
    assert resume.exists()
    saved = solo(torch.load(resume, weights_only=True))["state"]
    assert saved["step"] >= stop_at - 2, "resume from the last step, not from zero"
    train_piece(spec, cfg, HASH, data, None, cut, progress=False)
    assert not resume.exists()
    a, b = solo(load_piece(whole, HASH)), solo(load_piece(cut, HASH))
    assert_state_equal(a["state"], b["state"])
    assert [c["epoch"] for c in a["checkpoints"]] == [c["epoch"] for c in b["checkpoints"]]
    for ca, cb in zip(a["checkpoints"], b["checkpoints"], strict=True):
        assert_state_equal(ca["model"], cb["model"])


def test_a_piece_records_every_device_that_trained_it(tmp_path, cfg, data):
    """A job preempted on one machine and resumed on another records both devices (the
    resume file carries the first): bits repeat only on one device, so the record says so."""
    from critperiods.pipeline.checkpoints import read_provenance
    from critperiods.pipeline.provenance import device_label

    spec = PieceSpec(32, (1,), 2, 2, frozenset())
    out = tmp_path / "piece.pt"
    with pytest.raises(Preempted):
        train_piece(spec, cfg, HASH, data, None, out, progress=False,
                    should_stop=stop_after(4), provenance={"code": "c"})
    resume = resume_path_for(out)
    payload = torch.load(resume, weights_only=True)
    assert payload["devices"] == [device_label("cpu")]
    payload["devices"] = ["cuda Some GPU"]  # as if the first part had run there
    torch.save(payload, resume)
    train_piece(spec, cfg, HASH, data, None, out, progress=False, provenance={"code": "c"})
    assert read_provenance(out) == {"code": "c",
                                    "device": f"{device_label('cpu')} + cuda Some GPU"}
    train_piece(spec, cfg, HASH, data, None, tmp_path / "whole.pt", progress=False)
    assert read_provenance(tmp_path / "whole.pt") == {"device": device_label("cpu")}


def test_resume_file_of_another_job_is_ignored(tmp_path, cfg, data):
    out = tmp_path / "piece.pt"
    with pytest.raises(Preempted):
        train_piece(PieceSpec(32, (1,), 2, 2, frozenset()), cfg, HASH, data, None, out,
                  progress=False, should_stop=stop_after(4))
    # another seed writing to the same path must not pick up seed 1's state
    train_piece(PieceSpec(32, (2,), 2, 2, frozenset()), cfg, HASH, data, None, out, progress=False)
    fresh, _ = train_from_scratch(cfg, data, 32, 2, 2, 2, set())
    assert_state_equal(solo(load_piece(out, HASH))["state"], fresh)


def test_epoch_plan_depends_only_on_seed_and_epoch():
    a = epoch_plan(100, seed=1, epoch=5, augment=True, device=torch.device("cpu"))
    torch.rand(10)  # the global RNG must not matter
    b = epoch_plan(100, seed=1, epoch=5, augment=True, device=torch.device("cpu"))
    c = epoch_plan(100, seed=1, epoch=6, augment=True, device=torch.device("cpu"))
    assert torch.equal(a.order, b.order) and torch.equal(a.shifts, b.shifts)
    assert not torch.equal(a.order, c.order)


def test_learning_rate_continues_or_restarts(cfg):
    assert learning_rate(cfg, 5, switch_epoch=3) == pytest.approx(0.05 * 0.9**5)
    restart = replace(cfg, lr_after_switch="restart")
    assert learning_rate(restart, 5, switch_epoch=3) == pytest.approx(0.05 * 0.9**2)
    assert learning_rate(restart, 2, switch_epoch=3) == pytest.approx(0.05 * 0.9**2)
    assert learning_rate(restart, 3, switch_epoch=3) == pytest.approx(0.05)  # the first sharp
    assert learning_rate(cfg, 3, switch_epoch=3) == pytest.approx(0.05 * 0.9**3)  # epoch
    # the always-blurred run never switches, so it never restarts
    assert learning_rate(restart, 5, ALWAYS_BLURRED) == learning_rate(cfg, 5, ALWAYS_BLURRED)
    assert phase(0, ALWAYS_BLURRED) == phase(10**6, ALWAYS_BLURRED) == "blurred"


def test_training_learns(cfg, data):
    from critperiods.measure.evaluation import evaluate_piece
    from critperiods.train.training import model_for

    cfg = replace(cfg, augmentation=False)
    _, ckpts = train_from_scratch(cfg, data, 16, 0, 0, 6, {0, 6})
    metrics = evaluate_piece(ckpts, model_for(cfg, data, "cpu"), data, None)
    assert float(metrics.train_loss.sel(epoch=6)) < float(metrics.train_loss.sel(epoch=0)) * 0.5
    assert float(metrics.test_accuracy.sel(epoch=6)) > 0.5


def test_fast_path_runs_on_cpu_and_default_cpu_path_is_untouched(cfg, data):
    """bf16 + channels-last is a CUDA speed path; on the CPU it must still train correctly."""
    from critperiods.train.training import FastPath, Trainer, train_until

    cpu = FastPath.for_device(torch.device("cpu"))
    assert cpu.channels_last and not cpu.bf16 and not cpu.cudnn_benchmark
    auto_cuda = FastPath.for_device(torch.device("cuda"))
    assert auto_cuda.bf16 and auto_cuda.channels_last and auto_cuda.cudnn_benchmark
    fast = FastPath.for_device(torch.device("cpu"), mode="on")
    cfg = replace(cfg, augmentation=False)
    trainer = Trainer(cfg, data, 16, 0, "cpu", fast)
    ckpts: list = []
    train_until(trainer, 3, ALWAYS_BLURRED, {3}, [ckpts], HASH, progress=False)
    plain, _ = train_from_scratch(cfg, data, 16, 0, ALWAYS_BLURRED, 3, set())
    w_fast = ckpts[0]["model"]["classifier.weight"]
    w_plain = plain["model"]["classifier.weight"]
    assert torch.isfinite(w_fast).all()
    assert not torch.equal(w_fast, w_plain)  # bf16 did change the numerics …
    assert torch.allclose(w_fast, w_plain, atol=0.05)  # … but not the outcome


@pytest.mark.parametrize("channels_last", [False, True])
def test_cached_inputs_equal_per_batch_inputs(cfg, data, channels_last):
    """Without augmentation batches index a once-built input set: the very same bits."""
    from critperiods.train.training import BatchCache, FastPath, make_batch

    fast = FastPath(channels_last=channels_last)
    ready = BatchCache(data, cfg, fast)
    plan = epoch_plan(len(data.train.labels), 0, 1, False, torch.device("cpu"))
    for epoch_phase in ("blurred", "sharp"):
        for part in plan.batches(40):  # includes the short last batch
            direct, y = make_batch(data, cfg, fast, plan, part, epoch_phase)
            cached, y2 = make_batch(data, cfg, fast, plan, part, epoch_phase, ready)
            assert torch.equal(direct, cached) and torch.equal(y, y2)
            assert direct.stride() == cached.stride()


def test_training_sees_the_prepared_blurred_images_that_evaluation_and_llc_read(cfg, data):
    """One blur route: a blurred training batch is the prepared (uint8) blurred tensor at the
    batch's indices, normalised, exactly what the evaluation and the λ̂ stage read; with
    augmentation, it is that image cropped and flipped."""
    from critperiods.pipeline.llc_inputs import llc_data
    from critperiods.train.training import BatchCache, FastPath, augment_batch, make_batch

    n = len(data.train.labels)
    llc_images, _ = llc_data(data, {"samples": None, "data": "phase"})("blurred")
    for augment in (False, True):
        run = replace(cfg, augmentation=augment)
        plan = epoch_plan(n, 0, 3, augment, torch.device("cpu"))
        ready = BatchCache(data, run, FastPath())
        for part in plan.batches(40):
            idx = plan.order[part]
            x, y = make_batch(data, run, FastPath(), plan, part, "blurred", ready)
            prepared = data.normalize(data.train.blurred[idx])
            assert torch.equal(prepared, llc_images[idx])
            if augment:
                prepared = augment_batch(prepared, plan.shifts[part], plan.flips[part])
            assert torch.equal(x, prepared) and torch.equal(y, data.train.labels[idx])


def test_data_prepared_with_another_blur_are_refused(cfg, data):
    from critperiods.train.training import Trainer

    other = replace(data, meta={**data.meta, "blur_size": cfg.blur_size + 1})
    with pytest.raises(ValueError, match="dataset.blur_size"):
        Trainer(cfg, other, 16, 0)


def test_ctrl_c_and_a_closed_terminal_stop_training_at_a_step_like_sigterm():
    """SIGINT (a terminal's Ctrl-C reaches Snakemake's local jobs too) and SIGHUP (the
    terminal or SSH session closed) raise the same flag as SIGTERM, so the job saves its
    state at the current step instead of dying; the handlers before are restored
    afterwards."""
    import os
    import signal

    from critperiods.train.training import stop_on_sigterm

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    outside = {sig: signal.getsignal(sig) for sig in signals}
    try:
        # as in a terminal (the test may run under nohup, or in the background, where
        # SIGHUP or SIGINT is ignored, which training leaves alone: the test below)
        for sig in signals:
            signal.signal(sig, signal.default_int_handler)
        before = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            with stop_on_sigterm() as stopped:
                assert not stopped()
                os.kill(os.getpid(), sig)
                assert stopped()
        assert {sig: signal.getsignal(sig) for sig in signals} == before
    finally:
        for sig, handler in outside.items():
            signal.signal(sig, handler)


def test_a_sighup_that_nohup_ignores_stays_ignored():
    """Under ``nohup snakemake …`` SIGHUP is ignored, and the training jobs inherit that: a
    dropped SSH session must not stop them, so training leaves an ignored signal alone."""
    import os
    import signal

    from critperiods.train.training import stop_on_sigterm

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_sigterm() as stopped:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert not stopped()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
