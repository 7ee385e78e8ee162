"""Several seeds in one job (train.seeds_per_job): equal to single-seed training within the
documented tolerance, and as deterministic and resumable as a single-seed job."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from critperiods.pipeline.checkpoints import load_piece
from critperiods.pipeline.trajectories import PieceSpec, resume_path_for, run_group
from critperiods.train.stacked import STACKED_ATOL, STEP_ATOL, StackedTrainer
from critperiods.train.training import NEVER, Preempted, Trainer, train_from_scratch, train_until
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
    assert stack.train_epoch(NEVER, stop_after(2)) is None
    for i, seed in enumerate(SEEDS):
        single = Trainer(cfg, data, 32, seed)
        assert single.train_epoch(NEVER, stop_after(2)) is None
        got, want = stack.members()[i].state(), single.state()
        assert_state_close(got, want, STEP_ATOL)
        mean = "features.1.running_mean"
        assert not torch.equal(got["model"][mean], torch.zeros_like(got["model"][mean]))


def test_seed_state_loads_into_a_single_seed_trainer(cfg, data):
    """A stacked job's piece continues in a single-seed job and vice versa."""
    stack = StackedTrainer(cfg, data, 32, SEEDS)
    train_until(stack, 1, NEVER, set(), [[] for _ in SEEDS], HASH, progress=False)
    single = Trainer(cfg, data, 32, SEEDS[1])
    single.load_state(stack.members()[1].state())
    assert_state_equal(single.state(), stack.members()[1].state())
    back = StackedTrainer(cfg, data, 32, SEEDS)
    back.load_states([m.state() for m in stack.members()])
    for a, b in zip(back.members(), stack.members(), strict=True):
        assert_state_equal(a.state(), b.state())


def _group(tmp_path, name: str, end: int = 2, stack=SEEDS):
    specs = [PieceSpec(32, s, 1, end, frozenset({1, 2})) for s in stack]
    outputs = [tmp_path / name / f"seed{s}.pt" for s in stack]
    outputs[0].parent.mkdir(exist_ok=True)
    return specs, outputs


def test_group_job_hands_siblings_their_results(tmp_path, cfg, data):
    specs, outputs = _group(tmp_path, "a")
    run_group(specs, cfg, HASH, data, [None] * 3, outputs, own=0, progress=False)
    assert outputs[0].exists() and not outputs[1].exists()
    assert resume_path_for(outputs[1]).exists() and not resume_path_for(outputs[0]).exists()
    for own in (1, 2):  # the siblings' jobs only write what the first one trained
        run_group(specs, cfg, HASH, data, [None] * 3, outputs, own=own, progress=False)
        assert not resume_path_for(outputs[own]).exists()
    # a sibling that finds no hand-over trains the group again: the very same bits, and
    # it leaves no resume files behind
    specs_b, outputs_b = _group(tmp_path, "b")
    run_group(specs_b, cfg, HASH, data, [None] * 3, outputs_b, own=2, progress=False)
    pa, pb = load_piece(outputs[2], HASH), load_piece(outputs_b[2], HASH)
    assert_state_equal(pa["state"], pb["state"])
    for ca, cb in zip(pa["checkpoints"], pb["checkpoints"], strict=True):
        assert_state_equal(ca["model"], cb["model"])
    assert not list(outputs_b[0].parent.glob(".*.resume"))
    assert load_piece(outputs[0], HASH)["identity"]["stack"] == list(SEEDS)
    # a forced rerun of the first job hands over again, though the siblings' pieces exist
    # (Snakemake deletes those only when the siblings' own jobs start)
    outputs[0].unlink()
    run_group(specs, cfg, HASH, data, [None] * 3, outputs, own=0, progress=False)
    assert resume_path_for(outputs[1]).exists() and resume_path_for(outputs[2]).exists()


def test_stacked_job_killed_and_resumed_equals_uninterrupted(tmp_path, cfg, data):
    specs, whole = _group(tmp_path, "whole", stack=(0, 1))
    run_group(specs, cfg, HASH, data, [None, None], whole, progress=False)
    _, cut = _group(tmp_path, "cut", stack=(0, 1))
    with pytest.raises(Preempted):
        run_group(specs, cfg, HASH, data, [None, None], cut, progress=False,
                  should_stop=stop_after(8))  # mid-epoch 1 (6 steps per epoch)
    assert not cut[0].exists() and resume_path_for(cut[1]).exists()
    run_group(specs, cfg, HASH, data, [None, None], cut, progress=False)
    assert_state_equal(load_piece(whole[0], HASH)["state"], load_piece(cut[0], HASH)["state"])
    run_group(specs, cfg, HASH, data, [None, None], cut, own=1, progress=False)
    run_group(specs, cfg, HASH, data, [None, None], whole, own=1, progress=False)
    assert_state_equal(load_piece(whole[1], HASH)["state"], load_piece(cut[1], HASH)["state"])


def test_piece_of_another_stacking_is_refused(tmp_path, cfg, data):
    """Continuing a stacked trunk in a single-seed job (seeds_per_job changed without a
    rerun) would mix the two; the start piece is refused with the file named."""
    from critperiods.pipeline.checkpoints import CheckpointError

    specs, outputs = _group(tmp_path, "t", end=1, stack=(0, 1))
    specs = [replace(s, switch_epoch=NEVER, checkpoint_epochs=frozenset()) for s in specs]
    run_group(specs, cfg, HASH, data, [None, None], outputs, progress=False)
    single = PieceSpec(32, 0, NEVER, 2, frozenset())
    with pytest.raises(CheckpointError, match=r"seed0\.pt: trained with seeds \[0, 1\]"):
        run_group([single], cfg, HASH, data, [outputs[0]], [tmp_path / "x.pt"], progress=False)


def test_stacked_fast_path_with_bf16_runs_on_cpu(cfg, data):
    """The GPU fast path (bf16 autocast, channels-last batches) also drives a stack:
    correctness only — finite, trained, and close to the float32 stack."""
    from critperiods.train.training import FastPath

    fast = FastPath.for_device(torch.device("cpu"), mode="on")
    assert fast.bf16
    runs = {}
    for name, path in (("bf16", fast), ("fp32", None)):
        stack = StackedTrainer(cfg, data, 32, (0, 1), fast=path)
        first = stack.train_epoch(NEVER)
        last = stack.train_epoch(NEVER)
        assert first is not None and last is not None and last < first
        runs[name] = stack.members()[1].weights()["classifier.weight"]
    assert torch.isfinite(runs["bf16"]).all()
    assert not torch.equal(runs["bf16"], runs["fp32"])
    assert torch.allclose(runs["bf16"], runs["fp32"], atol=0.05)
