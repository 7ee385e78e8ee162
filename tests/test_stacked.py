"""Several seeds in one job (train.seeds_per_job): equal to single-seed training within the
documented tolerance, and as deterministic and resumable as a single-seed job."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from critperiods.pipeline.checkpoints import load_piece
from critperiods.pipeline.checkpoints import member as load_member
from critperiods.pipeline.trajectories import PieceSpec, resume_path_for, train_piece
from critperiods.train.stacked import STACKED_ATOL, STEP_ATOL, StackedTrainer
from critperiods.train.training import (
    ALWAYS_BLURRED,
    FastPath,
    Preempted,
    Trainer,
    train_from_scratch,
    train_until,
)
from tests.test_training import HASH, assert_state_equal, stop_after

SEEDS = (0, 1, 2)

def assert_state_close(a: dict, b: dict, atol: float) -> None:
    """Every tensor within ``atol``, every other value equal."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].shape == b[key].shape, key
            assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), (
                key, float((a[key].float() - b[key].float()).abs().max()))
        elif isinstance(a[key], dict):
            assert_state_close(a[key], b[key], atol)
        elif key != "param_groups":
            assert a[key] == b[key], key


@pytest.mark.parametrize("augmentation", [True, False])  # False: inputs from BatchCache
def test_stacked_seeds_equal_single_seed_runs(cfg, data, augmentation):
    cfg = replace(cfg, augmentation=augmentation)
    stack = StackedTrainer(cfg, data, 32, SEEDS)
    kept: list[list[dict]] = [[] for _ in SEEDS]
    train_until(stack, 2, 1, {1, 2}, kept, HASH, progress=False)
    for i, seed in enumerate(SEEDS):
        state, ckpts = train_from_scratch(cfg, data, 32, seed, 1, 2, {1, 2}, HASH)
        got = stack.members()[i].state()
        assert_state_close(got, state, STACKED_ATOL)
        assert got["model"].keys() == state["model"].keys()  # same keys, same order
        assert list(got["model"]) == list(state["model"])
        assert [c["epoch"] for c in kept[i]] == [c["epoch"] for c in ckpts] == [1, 2]
        assert [c["phase"] for c in kept[i]] == ["blurred", "sharp"]
        for c_stack, c_single in zip(kept[i], ckpts, strict=True):
            assert_state_close(c_stack["model"], c_single["model"], STACKED_ATOL)
    # seeds really are different trajectories
    w = [m.weights()["classifier.weight"] for m in stack.members()]
    assert not torch.allclose(w[0], w[1])


def test_stacked_batchnorm_model_follows_single_seed_runs(cfg, data):
    """BatchNorm running statistics are per seed too. A BatchNorm net amplifies round-off
    fast (in the single-seed trainer itself a 1e-7 weight perturbation grows to 3e-3 in
    6 steps), so the comparison covers the first steps, where it is pure round-off."""
    cfg = replace(cfg, model="all_cnn_c")
    stack = StackedTrainer(cfg, data, 32, SEEDS)
    assert stack.train_epoch(ALWAYS_BLURRED, stop_after(2)) is None
    for i, seed in enumerate(SEEDS):
        single = Trainer(cfg, data, 32, seed)
        assert single.train_epoch(ALWAYS_BLURRED, stop_after(2)) is None
        got, want = stack.members()[i].state(), single.state()
        assert_state_close(got, want, STEP_ATOL)
        mean = "features.1.running_mean"
        assert not torch.equal(got["model"][mean], torch.zeros_like(got["model"][mean]))


def test_seed_state_loads_into_a_single_seed_trainer(cfg, data):
    """A stacked job's piece continues in a single-seed job and vice versa: loaded, the
    state is the same, and the next epoch follows the stack's own (within the stacked
    tolerance; bit for bit when the stack continues from its own reloaded state)."""
    stack = StackedTrainer(cfg, data, 32, SEEDS)
    train_until(stack, 1, ALWAYS_BLURRED, set(), [[] for _ in SEEDS], HASH, progress=False)
    single = Trainer(cfg, data, 32, SEEDS[1])
    single.load_state(stack.members()[1].state())
    assert_state_equal(single.state(), stack.members()[1].state())
    back = StackedTrainer(cfg, data, 32, SEEDS)
    back.load_states([m.state() for m in stack.members()])
    for a, b in zip(back.members(), stack.members(), strict=True):
        assert_state_equal(a.state(), b.state())
    for trainer in (stack, back, single):
        train_until(trainer, 2, 1, set(), [[] for _ in trainer.members()], HASH,
                    progress=False)
    for a, b in zip(back.members(), stack.members(), strict=True):
        assert_state_equal(a.state(), b.state())
    assert single.state()["step"] == stack.members()[1].state()["step"] > 0
    assert_state_close(single.state(), stack.members()[1].state(), STACKED_ATOL)


def test_a_group_job_writes_every_seed_of_its_group_in_one_file(tmp_path, cfg, data):
    """One job, one file: every seed's final state and checkpoints, equal to the stack's own
    training (no hand-over between jobs, no resume file left behind)."""
    spec = PieceSpec(32, SEEDS, 1, 2, frozenset({1, 2}))
    out = tmp_path / "seeds0_1_2" / "switch1.pt"
    train_piece(spec, cfg, HASH, data, None, out, progress=False)
    piece = load_piece(out, HASH)
    assert [m["seed"] for m in piece["members"]] == list(SEEDS)
    assert piece["identity"]["seeds"] == list(SEEDS)
    stack = StackedTrainer(cfg, data, 32, SEEDS)
    kept: list[list[dict]] = [[] for _ in SEEDS]
    train_until(stack, 2, 1, {1, 2}, kept, HASH, progress=False)
    for seed, member in zip(SEEDS, stack.members(), strict=True):
        stored = load_member(piece, seed)
        assert_state_equal(stored["state"], member.state())
        assert [c["epoch"] for c in stored["checkpoints"]] == [1, 2]
    assert not list(out.parent.glob(".*.resume"))


def test_stacked_job_killed_and_resumed_equals_uninterrupted(tmp_path, cfg, data):
    spec = PieceSpec(32, (0, 1), 1, 2, frozenset({1, 2}))
    whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
    train_piece(spec, cfg, HASH, data, None, whole, progress=False)
    with pytest.raises(Preempted):
        train_piece(spec, cfg, HASH, data, None, cut, progress=False,
                    should_stop=stop_after(8))  # mid-epoch 1 (6 steps per epoch)
    assert not cut.exists() and resume_path_for(cut).exists()
    train_piece(spec, cfg, HASH, data, None, cut, progress=False)
    for seed in (0, 1):
        a, b = load_member(load_piece(whole, HASH), seed), load_member(load_piece(cut, HASH), seed)
        assert_state_equal(a["state"], b["state"])
        for ca, cb in zip(a["checkpoints"], b["checkpoints"], strict=True):
            assert_state_equal(ca["model"], cb["model"])


def test_a_resume_file_of_another_checkpoint_plan_is_passed_over(tmp_path, cfg, data, caplog):
    """A job stopped while its piece kept checkpoints {2}, rerun to keep {1, 2} (a change of
    checkpoints.every, or a switch epoch that adds one): resuming would leave epoch 1 out of
    the piece and the cube without a word. The resume file is passed over, and says so."""
    plain, cut = tmp_path / "plain.pt", tmp_path / "cut.pt"
    with pytest.raises(Preempted):
        train_piece(PieceSpec(32, (0,), ALWAYS_BLURRED, 2, frozenset({2})), cfg, HASH, data,
                    None, cut, progress=False, should_stop=stop_after(8))  # inside epoch 2
    assert resume_path_for(cut).exists()
    finer = PieceSpec(32, (0,), ALWAYS_BLURRED, 2, frozenset({1, 2}))
    with caplog.at_level("WARNING"):
        train_piece(finer, cfg, HASH, data, None, cut, progress=False)
    assert "not resumed from (saved with another checkpoint_epochs)" in caplog.text
    train_piece(finer, cfg, HASH, data, None, plain, progress=False)
    a, b = load_member(load_piece(plain, HASH), 0), load_member(load_piece(cut, HASH), 0)
    assert [c["epoch"] for c in b["checkpoints"]] == [1, 2]
    for ca, cb in zip(a["checkpoints"], b["checkpoints"], strict=True):
        assert_state_equal(ca["model"], cb["model"])


def test_piece_of_another_stacking_is_refused(tmp_path, cfg, data):
    """Continuing a stacked trunk with other seeds (a group file named by hand) would mix
    trajectories; the start piece is refused with the file named."""
    from critperiods.pipeline.checkpoints import CheckpointError

    trunk = tmp_path / "trunk.pt"
    train_piece(PieceSpec(32, (0, 1), ALWAYS_BLURRED, 1, frozenset()), cfg, HASH, data, None, trunk,
                progress=False)
    single = PieceSpec(32, (0,), ALWAYS_BLURRED, 2, frozenset())
    with pytest.raises(CheckpointError, match=r"trunk\.pt: holds seeds \[0, 1\]"):
        train_piece(single, cfg, HASH, data, trunk, tmp_path / "x.pt", progress=False)


def test_a_start_piece_of_another_trajectory_is_refused(tmp_path, cfg, data):
    """A branch copied over the trunk file it starts from (or a trunk of another batch size)
    used to be continued without a word: the branch came out without checkpoints and the
    cube with holes. The start piece's identity must be where the job starts."""
    from critperiods.pipeline.checkpoints import CheckpointError

    trunk, branch = tmp_path / "e1.pt", tmp_path / "switch1.pt"
    train_piece(PieceSpec(32, (0,), ALWAYS_BLURRED, 1, frozenset()), cfg, HASH, data, None,
                trunk, progress=False)
    train_piece(PieceSpec(32, (0,), 1, 2, frozenset({2}), "continue"), cfg, HASH, data, trunk,
                branch, progress=False)  # the right start: the trunk at the switch epoch
    refused = {
        "a branch as the branch's start": (PieceSpec(32, (0,), 1, 3, frozenset(), "continue"),
                                           branch, "the continue branch from switch epoch 1"),
        "a branch as a trunk segment's": (PieceSpec(32, (0,), ALWAYS_BLURRED, 3, frozenset()),
                                          branch, "the continue branch from switch epoch 1"),
        "the trunk off the switch epoch": (PieceSpec(32, (0,), 2, 4, frozenset(), "continue"),
                                           trunk, "the trunk to epoch 1"),
        "another batch size's trunk": (PieceSpec(64, (0,), ALWAYS_BLURRED, 2, frozenset()),
                                       trunk, "the trunk to epoch 1 at batch size 32"),
    }
    for case, (spec, start, said) in refused.items():
        with pytest.raises(CheckpointError, match=rf"{start.name}: holds {said}.*--forcerun"):
            train_piece(spec, cfg, HASH, data, start, tmp_path / "x.pt", progress=False)
        assert not (tmp_path / "x.pt").exists(), case


def test_stacked_fast_path_with_bf16_runs_on_cpu(cfg, data):
    """The GPU fast path (bf16 autocast, channels-last batches) also drives a stack:
    correctness only — finite, trained, and close to the float32 stack."""
    from critperiods.train.training import FastPath

    fast = FastPath.for_device(torch.device("cpu"), mode="on")
    assert fast.bf16
    runs = {}
    for name, path in (("bf16", fast), ("fp32", None)):
        stack = StackedTrainer(cfg, data, 32, (0, 1), fast=path)
        first = stack.train_epoch(ALWAYS_BLURRED)
        last = stack.train_epoch(ALWAYS_BLURRED)
        assert first is not None and last is not None and last < first
        runs[name] = stack.members()[1].weights()["classifier.weight"]
    assert torch.isfinite(runs["bf16"]).all()
    assert not torch.equal(runs["bf16"], runs["fp32"])
    assert torch.allclose(runs["bf16"], runs["fp32"], atol=0.05)


def test_a_resume_file_of_another_fast_path_is_passed_over(tmp_path, cfg, data, caplog):
    """A job stopped under one train.fast_path and rerun under another (the rerun its params
    ask for) starts over: resuming would give a piece part trained one way, part the other,
    that neither setting makes from scratch."""
    spec = PieceSpec(32, (0,), ALWAYS_BLURRED, 2, frozenset({2}))
    plain, cut = tmp_path / "plain.pt", tmp_path / "cut.pt"
    channels_last = FastPath.for_device(torch.device("cpu"))
    assert channels_last != FastPath()  # the CPU's auto differs from off
    with pytest.raises(Preempted):
        train_piece(spec, cfg, HASH, data, None, cut, progress=False, fast=channels_last,
                    should_stop=stop_after(8))
    assert resume_path_for(cut).exists()
    with caplog.at_level("WARNING"):
        train_piece(spec, cfg, HASH, data, None, cut, progress=False, fast=FastPath())
    assert "not resumed from (saved with another fast_path)" in caplog.text
    train_piece(spec, cfg, HASH, data, None, plain, progress=False, fast=FastPath())
    a, b = load_member(load_piece(plain, HASH), 0), load_member(load_piece(cut, HASH), 0)
    assert_state_equal(a["state"], b["state"])


def test_a_resume_file_of_another_thread_count_is_passed_over(tmp_path, cfg, data, caplog):
    """torch's thread count changes a CPU reduction's bits: a job stopped at 2 threads and
    rerun at 1 starts over instead of finishing a piece part trained each way."""
    spec = PieceSpec(32, (0,), ALWAYS_BLURRED, 2, frozenset({2}))
    cut = tmp_path / "cut.pt"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(Preempted):
            train_piece(spec, cfg, HASH, data, None, cut, progress=False,
                        should_stop=stop_after(8))
        torch.set_num_threads(1)
        with caplog.at_level("WARNING"):
            train_piece(spec, cfg, HASH, data, None, cut, progress=False)
    finally:
        torch.set_num_threads(before)
    assert "not resumed from (saved with another threads)" in caplog.text


def test_a_resume_file_from_a_start_piece_retrained_since_is_passed_over(
        tmp_path, cfg, data, caplog):
    """A branch stopped mid-way, whose trunk was then retrained with other bits (on a GPU
    without deterministic: true, say), starts over from the new trunk: resuming would give
    a branch that begins on one trunk and ends on another's trajectory."""
    trunk, cut, plain = tmp_path / "e1.pt", tmp_path / "cut.pt", tmp_path / "plain.pt"
    branch = PieceSpec(32, (0,), 1, 3, frozenset({3}), "continue")
    train_piece(PieceSpec(32, (0,), ALWAYS_BLURRED, 1, frozenset()), cfg, HASH, data, None,
                trunk, progress=False)
    with pytest.raises(Preempted):
        train_piece(branch, cfg, HASH, data, trunk, cut, progress=False,
                    should_stop=stop_after(8))
    assert resume_path_for(cut).exists()
    with caplog.at_level("WARNING"), pytest.raises(Preempted):  # the same trunk: resumed
        train_piece(branch, cfg, HASH, data, trunk, cut, progress=False,
                    should_stop=stop_after(2))
    assert "not resumed" not in caplog.text
    piece = load_piece(trunk, HASH)  # the trunk retrained: same epoch, other bits
    weights = piece["members"][0]["state"]["model"]
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 1e-3
    torch.save(piece, trunk)
    with caplog.at_level("WARNING"):
        train_piece(branch, cfg, HASH, data, trunk, cut, progress=False)
    assert "not resumed from (saved with another start_state)" in caplog.text
    train_piece(branch, cfg, HASH, data, trunk, plain, progress=False)
    assert_state_equal(load_member(load_piece(plain, HASH), 0)["state"],
                       load_member(load_piece(cut, HASH), 0)["state"])


def test_setup_runs_the_configured_threads_whatever_cores_snakemake_gave(tmp_path, caplog):
    """`--cores 1` scales a job of train.threads: 2 down to one thread; torch still runs 2
    (and the log says so), so that --cores cannot change a result's bits."""
    from types import SimpleNamespace

    from critperiods.pipeline.stages import setup

    before = torch.get_num_threads()
    sm = SimpleNamespace(log=[], threads=1, params={"device": "cpu"})
    try:
        with caplog.at_level("WARNING"):
            assert setup(sm, threads=2) == torch.device("cpu")
        assert torch.get_num_threads() == 2
        assert "train.threads is 2, but Snakemake gave this job 1 core(s)" in caplog.text
        setup(sm)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_resume_file_is_written_after_the_first_epoch_then_once_a_minute(
        tmp_path, cfg, data, monkeypatch):
    """It holds every checkpoint so far (hundreds of MB for a CIFAR-10 branch whose epochs
    last seconds): written after epoch 1, then at most every RESUME_EVERY_S, and always on
    a stop."""
    from critperiods.pipeline import checkpoints, trajectories

    saves = []
    real = checkpoints.save_resume
    monkeypatch.setattr(checkpoints, "save_resume",
                        lambda path, **kw: saves.append(kw["members"][0]["state"]["epoch"])
                        or real(path, **kw))
    spec = PieceSpec(32, (0,), ALWAYS_BLURRED, 4, frozenset({4}))
    train_piece(spec, cfg, HASH, data, None, tmp_path / "a.pt", progress=False)
    assert saves == [1]  # epochs 2 and 3 came within the minute; the piece follows epoch 4
    saves.clear()
    with pytest.raises(Preempted):  # a stop at the end of epoch 2 saves at once
        train_piece(spec, cfg, HASH, data, None, tmp_path / "b.pt", progress=False,
                    should_stop=stop_after(14))
    assert saves[0] == 1 and set(saves[1:]) == {2}  # within the minute, only the stop saved
    saves.clear()
    monkeypatch.setattr(trajectories, "RESUME_EVERY_S", 0.0)
    train_piece(spec, cfg, HASH, data, None, tmp_path / "c.pt", progress=False)
    assert saves == [1, 2, 3]


def test_a_stop_found_at_an_epochs_end_saves_that_epoch(cfg, data):
    """The stage's save_resume may pass over an epoch (it saves at most once a minute); a
    stop that arrives between that call and the check after it must still leave the epoch
    just finished in the resume file, so save_resume is called once more before raising."""
    trainer = Trainer(cfg, data, 32, 0)
    saved = []
    with pytest.raises(Preempted, match="stopped at epoch 1"):
        train_until(trainer, 3, ALWAYS_BLURRED, {3}, [[]], HASH, progress=False,
                    save_resume=lambda: saved.append(trainer.epoch),
                    should_stop=lambda: trainer.epoch >= 1)  # true from the end of epoch 1
    assert saved == [1, 1]
