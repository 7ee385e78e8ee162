"""The perturbation stage: twins equal the stored runs, a zero perturbation changes no bit,
a group file holds every seed of its group, and the comparison lays every copy out against
its twin."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from critperiods.measure import perturbation_divergence as pdiv
from critperiods.pipeline.checkpoints import CheckpointError, checkpoint_map, load_piece, member
from critperiods.pipeline.perturbations import load_group, perturb_group
from critperiods.pipeline.plan import perturbation_start
from critperiods.pipeline.provenance import device_label
from critperiods.pipeline.stages.perturbation_divergence import compare_groups
from critperiods.pipeline.trajectories import PieceSpec, train_piece
from critperiods.results.cube import describe
from critperiods.train import perturbation as pt
from critperiods.train.training import ALWAYS_BLURRED

HASH = "testhash0002"
BS, SEEDS, SWITCH, END = 32, (3, 4), 2, 5  # a group of two seeds, trained one at a time
CKPTS = (1, 2, 3, 4, 5)
DIVERGENCE = {"probe_size": 32, "metrics": ["l2", "l2_rel", "l2_aligned", "disagreement", "kl",
                                            "acc_gap", "barrier"],
              "barrier_epochs": None, "barrier_alphas": 3, "matching_iterations": 5,
              "bn_reset_batches": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def pieces(tmp_path_factory, data):
    """Trunk segments e0, e2 and the branch switch2 → e5 of each seed, as the workflow trains
    them with ``train.seeds_per_job: 1``; the group's pieces (``seeds3_4``) hold both seeds'
    members, as a stacked job writes them."""
    cfg = _cfg()
    root = tmp_path_factory.mktemp("pieces")
    for seed in SEEDS:
        prev = None
        for e in (0, 2):
            out = root / f"seed{seed}/trunk/e{e}.pt"
            out.parent.mkdir(parents=True, exist_ok=True)
            inside = frozenset(c for c in CKPTS if (e - 2 if e else -1) < c <= e)
            train_piece(PieceSpec(BS, (seed,), ALWAYS_BLURRED, e, inside), cfg, HASH, data,
                        prev, out, progress=False)
            prev = out
        branch = root / f"seed{seed}/continue/switch{SWITCH}.pt"
        branch.parent.mkdir()
        train_piece(PieceSpec(BS, (seed,), SWITCH, END, frozenset(c for c in CKPTS if c > SWITCH),
                              lr_schedule="continue"), cfg, HASH, data, prev, branch,
                    progress=False)
    for piece in ("trunk/e0", "trunk/e2", f"continue/switch{SWITCH}"):
        loaded = [load_piece(root / f"seed{s}/{piece}.pt", HASH) for s in SEEDS]
        out = root / f"group/{piece}.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**loaded[0], "identity": {**loaded[0]["identity"], "seeds": list(SEEDS)},
                    "members": [m for p in loaded for m in p["members"]]}, out)
    return root


def _cfg():
    from critperiods.train.training import TrainConfig

    return TrainConfig(model="small_cnn", width=4, blur_size=4, lr=0.05, momentum=0.9,
                       weight_decay=5e-4, lr_decay=0.9, augmentation=True)


def _group(pieces, data, root, epoch: int, pert: pt.Perturbation, seeds=SEEDS):
    config = {"trunk_stride": 2, "epochs_after_switch": END - SWITCH}
    start, start_epoch = perturbation_start(config, "continue", SWITCH, epoch)
    runs = [pt.PerturbedRun(BS, s, "continue", SWITCH, epoch, END,
                            tuple(c for c in CKPTS if c > epoch)) for s in seeds]
    label = f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + "_".join(map(str, seeds))
    out = root / f"perturbations/bs{BS}/{label}/continue/switch{SWITCH}/e{epoch}.pt"
    source = pieces / ("group" if len(seeds) > 1 else f"seed{seeds[0]}") / f"{start}.pt"
    perturb_group(runs, pert, _cfg(), HASH, data, source, out, progress=False)
    return out, start_epoch


@pytest.fixture(scope="module")
def groups(pieces, data, tmp_path_factory):
    """Run switch2 perturbed inside the blurred phase (epoch 1: replayed from trunk e0) and
    after the switch (epoch 3: replayed from the branch start, trunk e2)."""
    root = tmp_path_factory.mktemp("groups")
    pert = pt.Perturbation(epsilons=(0.0, 0.05), replicates=1, steps=10)
    return {e: _group(pieces, data, root, e, pert) for e in (1, 3)}


@pytest.mark.parametrize("epoch", [1, 3])
def test_a_zero_perturbation_reproduces_the_twin_and_the_stored_run_bit_for_bit(
        pieces, groups, epoch):
    out, start = groups[epoch]
    assert start == (0 if epoch == 1 else SWITCH)
    payload = load_group(out, HASH)
    assert payload["identity"]["seeds"] == list(SEEDS)
    assert payload["provenance"]["device"] == device_label("cpu")  # bits repeat on one device
    assert [m["seed"] for m in payload["members"]] == list(SEEDS)
    for seed in SEEDS:
        _twin_and_zero_copy_are_the_stored_run(pieces, member(payload, seed), seed, epoch)


def _twin_and_zero_copy_are_the_stored_run(pieces, run: dict, seed: int, epoch: int) -> None:
    stored = {**checkpoint_map(member(load_piece(pieces / "group/trunk/e2.pt", HASH), seed)),
              **checkpoint_map(member(load_piece(pieces / f"group/continue/switch{SWITCH}.pt",
                                                 HASH), seed))}
    twin = checkpoint_map({"checkpoints": run["twin"]})
    assert sorted(twin) == [c for c in CKPTS if c > epoch]
    zero, nudged = run["copies"]
    assert (zero["epsilon"], nudged["epsilon"]) == (0.0, 0.05)
    for e, ckpt in twin.items():
        for k, v in ckpt["model"].items():
            assert torch.equal(v, stored[e]["model"][k]), (e, k)  # twin = stored run
        copy = checkpoint_map(zero)[e]["model"]
        assert all(torch.equal(copy[k], v) for k, v in ckpt["model"].items())  # ε = 0
        assert not all(torch.equal(checkpoint_map(nudged)[e]["model"][k], v)
                       for k, v in ckpt["model"].items())
    assert torch.all(zero["step_l2"] == 0)
    assert float(nudged["step_l2"][0]) == pytest.approx(0.05, rel=1e-4)
    assert torch.all(nudged["step_l2"][1:] > 0)


def test_the_never_blurred_run_in_segments_is_one_run_and_replays_from_a_segment(
        data, tmp_path):
    """The workflow's never-blurred run with λ̂ on: its branch file to its run's end (2),
    then segments e4 and e5 of its continuation (``plan.reference_epochs``). Chained, they
    are one uninterrupted run bit for bit; a perturbation at epoch 4 replays from segment e4
    (``plan.perturbation_start``), and its twin equals the stored run."""
    config = {"trunk_stride": 2, "epochs_after_switch": 2, "llc": {"enabled": True},
              "grid": {"switch_epochs": [0, 3]}, "checkpoints": {"every": 1, "epochs": None}}
    from critperiods.pipeline import plan

    assert plan.reference_epochs(config) == [4, 5]
    start, start_epoch = plan.perturbation_start(config, "continue", 0, 4)
    assert (start, start_epoch) == ("continue/switch0/e4", 4)
    cfg, seed, ends = _cfg(), SEEDS[0], (1, 2, 3, 4, 5)

    def train(out, start_file, end: int, after: int) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        inside = frozenset(e for e in ends if after < e <= end)
        train_piece(PieceSpec(BS, (seed,), 0, end, inside, lr_schedule="continue"), cfg, HASH,
                    data, start_file, out, progress=False)

    run = tmp_path / f"runs/bs{BS}/seed{seed}"
    trunk = run / "trunk/e0.pt"
    trunk.parent.mkdir(parents=True)
    train_piece(PieceSpec(BS, (seed,), ALWAYS_BLURRED, 0, frozenset()), cfg, HASH, data, None,
                trunk, progress=False)
    train(run / "continue/switch0.pt", trunk, 2, 0)
    train(run / "continue/switch0/e4.pt", run / "continue/switch0.pt", 4, 2)
    train(run / "continue/switch0/e5.pt", run / "continue/switch0/e4.pt", 5, 4)
    train(tmp_path / "whole.pt", trunk, 5, 0)
    chained = {}
    for piece in ("continue/switch0", "continue/switch0/e4", "continue/switch0/e5"):
        chained.update(checkpoint_map(member(load_piece(run / f"{piece}.pt", HASH), seed)))
    whole = checkpoint_map(member(load_piece(tmp_path / "whole.pt", HASH), seed))
    assert sorted(chained) == sorted(whole) == [1, 2, 3, 4, 5]
    for e, ckpt in whole.items():
        assert all(torch.equal(v, chained[e]["model"][k]) for k, v in ckpt["model"].items()), e

    out = tmp_path / f"perturbations/bs{BS}/seed{seed}/continue/switch0/e4.pt"
    perturbed = [pt.PerturbedRun(BS, seed, "continue", 0, 4, 5, (5,))]
    perturb_group(perturbed, pt.Perturbation(epsilons=(0.0,), replicates=1, steps=4), cfg, HASH,
                  data, run / f"{start}.pt", out, progress=False)
    twin = checkpoint_map({"checkpoints": member(load_group(out, HASH), seed)["twin"]})
    assert sorted(twin) == [5]
    assert all(torch.equal(v, whole[5]["model"][k]) for k, v in twin[5]["model"].items())

    # a start piece past this piece's end (an older plan's, or one kept with --touch)
    with pytest.raises(CheckpointError,
                       match=r"epoch 4, after 3.*snakemake --cores all --forcerun"):
        train(tmp_path / "late.pt", run / "continue/switch0/e4.pt", 3, 2)


def test_a_batch_swap_changes_nothing_before_its_first_swapped_batch(pieces, data, tmp_path):
    pert = pt.Perturbation(kind="batch_order", epsilons=(0.0, 1.0), replicates=1, steps=6)
    out, _ = _group(pieces, data, tmp_path, 3, pert, seeds=SEEDS[:1])
    (run,) = load_group(out, HASH)["members"]
    zero, swapped = run["copies"]
    assert (zero["epsilon"], swapped["epsilon"]) == (0, 1)
    assert torch.all(zero["step_l2"] == 0)
    d = swapped["step_l2"].numpy()
    assert d[0] == 0 and d[-1] > 0
    first = int(np.flatnonzero(d > 0)[0])
    assert np.all(d[first:] > 0)  # once apart, never exactly together again


def test_the_comparison_lays_out_every_copy_against_its_twin(groups, data):
    files = [out for out, _ in groups.values()]
    ds = compare_groups(files, HASH, _cfg(), data, DIVERGENCE, progress=False)
    described = describe(ds.copy())
    for name in ("perturb_l2", "perturb_l2_aligned", "perturb_disagreement", "perturb_barrier"):
        assert ds[name].dims == ("switch_epoch", "seed", "perturb_epoch", "epsilon",
                                 "replicate", "epoch"), name
        assert described[name].attrs["long_name"].endswith("its unperturbed twin)")
    for name in ("perturb_step_l2", "perturb_accuracy_change", "perturb_epoch", "epsilon"):
        assert described[name].attrs["long_name"], name
    assert list(ds.perturb_epoch.values) == [1, 3] and list(ds.epsilon.values) == [0.0, 0.05]
    assert list(ds.seed.values) == list(SEEDS)
    seed = SEEDS[1]  # the second member of the group
    l2 = ds.perturb_l2.sel(switch_epoch=SWITCH, seed=seed)
    assert float(l2.sel(epsilon=0.0).max()) == 0.0
    assert bool((l2.sel(epsilon=0.05, perturb_epoch=1, epoch=[2, 3, 4, 5]) > 0).all())
    assert bool(l2.sel(perturb_epoch=3, epoch=[2, 3]).isnull().all())  # before the nudge
    aligned = ds.perturb_l2_aligned.sel(switch_epoch=SWITCH, seed=seed, epsilon=0.05)
    assert bool((aligned <= l2.sel(epsilon=0.05) + 1e-9).where(aligned.notnull(), True).all())
    barrier = ds.perturb_barrier.sel(switch_epoch=SWITCH, seed=seed, epsilon=0.05)
    assert barrier.sel(epoch=END).notnull().all() and barrier.sel(epoch=4).isnull().all()
    steps = ds.perturb_step_l2.sel(switch_epoch=SWITCH, seed=seed, epsilon=0.05)
    assert np.allclose(steps.sel(step=0), 0.05, rtol=1e-4)
    rate = ds.perturb_early_rate.sel(switch_epoch=SWITCH, seed=seed)
    assert rate.sel(epsilon=0.0).isnull().all() and rate.sel(epsilon=0.05).notnull().all()
    form = ds.perturb_l2_growth_form.sel(switch_epoch=SWITCH, seed=seed, epsilon=0.05)
    assert form.dtype == np.int8 and bool((form.sel(perturb_epoch=1) >= 0).all())
    change = ds.perturb_accuracy_change.sel(switch_epoch=SWITCH, seed=seed)
    assert float(abs(change.sel(epsilon=0.0)).max()) == 0.0


def test_early_rate_is_the_slope_of_the_log_distance() -> None:
    steps = np.arange(50)
    assert pdiv.early_rate(steps, 1e-3 * np.exp(0.07 * steps)) == pytest.approx(0.07)
    assert np.isnan(pdiv.early_rate(steps, np.zeros(50)))


def test_an_unknown_kind_names_the_key() -> None:
    with pytest.raises(ValueError, match="perturbation.kind"):
        replace(pt.Perturbation(), kind="noise")


# --- planning and the critical-period link -----------------------------------------------------


def _config(**perturbation) -> dict:
    return {"grid": {"switch_epochs": [0, 4, 8], "batch_sizes": [32], "seeds": [0],
                     "lr_schedules": ["continue"]},
            "trunk_stride": 4, "epochs_after_switch": 6,
            "checkpoints": {"every": 2, "epochs": None},
            "perturbation": {"enabled": True, "epochs": [2], "epsilons": [0.01],
                             "kind": "weights", **perturbation}}


def test_the_twin_starts_from_the_latest_complete_state_on_its_path() -> None:
    config = _config()
    assert perturbation_start(config, "continue", 8, 6) == ("trunk/e4", 4)  # blurred phase
    assert perturbation_start(config, "continue", 8, 8) == ("trunk/e8", 8)  # at the switch
    assert perturbation_start(config, "restart", 8, 11) == ("trunk/e8", 8)  # branch start
    assert perturbation_start(config, "continue", 0, 3) == ("trunk/e0", 0)  # never blurred
    assert perturbation_start(config, "continue", 0, 9) == ("continue/switch0", 6)  # past its end
    # with λ̂ on, the never-blurred run is continued in segments (8, 12, 14): the latest one
    config["llc"] = {"enabled": True}
    assert perturbation_start(config, "continue", 0, 9) == ("continue/switch0/e8", 8)
    assert perturbation_start(config, "continue", 0, 13) == ("continue/switch0/e12", 12)
    assert perturbation_start(config, "continue", 8, 13) == ("trunk/e8", 8)  # other runs: as before


def test_copies_are_compared_at_the_checkpoints_after_the_nudge_and_at_the_end() -> None:
    from critperiods.pipeline.plan import (
        perturbation_checkpoints,
        perturbation_end,
        perturbation_epochs,
        perturbed_switch_epochs,
    )

    config = _config()
    assert perturbation_end(config) == 14
    assert perturbation_checkpoints(config, 5) == [6, 8, 10, 12, 14]
    assert perturbed_switch_epochs(config) == [0, 8]
    assert perturbed_switch_epochs(_config(switch_epochs=[4])) == [4]
    assert perturbation_epochs(config) == [2] and perturbation_epochs(_config(epochs=None)) == [
        0, 4, 8]


def test_a_perturbation_job_trains_the_replay_the_twin_and_each_copy() -> None:
    from critperiods.pipeline.plan import perturbation_job_epochs, perturbation_jobs

    config = _config(epochs=[2, 11], epsilons=[0.0, 0.01], replicates=1)
    config["grid"]["lr_schedules"] = ["continue", "restart"]
    assert perturbation_jobs(config) == [  # the never-blurred run once, under continue
        ("continue", 0, 2), ("continue", 0, 11), ("continue", 8, 2), ("continue", 8, 11),
        ("restart", 8, 2), ("restart", 8, 11)]
    # replay from trunk/e4 to 6, then the twin and two copies from 6 to 14
    assert perturbation_job_epochs(config, "continue", 8, 6) == 2 + 3 * 8
    # the never-blurred branch ends at 6: replay 6 → 9, then three members 9 → 14
    assert perturbation_job_epochs(config, "continue", 0, 9) == 3 + 3 * 5
    assert perturbation_job_epochs(config, "restart", 8, 8) == 3 * 6  # from the trunk's state


@pytest.mark.parametrize(("perturbation", "expected"), [
    ({"switch_epochs": [5]}, "perturbation.switch_epochs: [5]"),
    ({"epochs": [2, 14]}, "perturbation.epochs: [14]"),
    ({"kind": "batch_order", "epsilons": [1.5]}, "whole number"),
    ({"epsilons": []}, "perturbation.epsilons: empty"),
    # it planned no perturbation but two comparisons, which failed after the whole grid
    ({"switch_epochs": []}, "perturbation.switch_epochs: empty; list at least one value (or "
                            "null"),
])
def test_inconsistent_perturbation_settings_name_the_key(perturbation, expected) -> None:
    from critperiods.pipeline.plan import ConfigError, check_perturbation

    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_perturbation(_config(**perturbation))
    check_perturbation(_config(enabled=False, **perturbation))  # off: nothing to check


def _synthetic_cube(end: float) -> xr.Dataset:
    """Run 8: L2 / epsilon of 10 at the end for nudges before epoch 7 and of 2 after; at a
    delay of 2 epochs, 4 and 2. The never-blurred run (0): half of that."""
    epochs, nudges = [4, 8, 12], [2, 6, 10]
    l2 = np.full((1, 1, 2, 2, 3, 1, 1, 3), np.nan)
    for p, e in enumerate(nudges):
        for j, t in enumerate(epochs):
            if t > e:
                l2[..., p, :, :, j] = 0.01 * (2.0 if e > 7 else 4.0 if t == e + 2 else 10.0)
    l2[:, :, 0] /= 2
    dims = ("batch_size", "lr_schedule", "switch_epoch", "seed", "perturb_epoch", "epsilon",
            "replicate", "epoch")
    return xr.Dataset(
        {"perturb_l2": (dims, l2),
         "critical_period_end": (("batch_size", "lr_schedule"), [[end]])},
        coords={"batch_size": [32], "lr_schedule": ["continue"], "switch_epoch": [0, 8],
                "seed": [0, 1], "perturb_epoch": nudges, "epsilon": [0.01], "replicate": [0],
                "epoch": epochs})


def test_the_perturbation_verdicts_say_what_was_not_measured() -> None:
    """A matched delay that lands on no compared epoch is not a disagreement between the two
    measures; a missing earliest epoch does not move the halving to a later reference; and
    a sensitivity that never halves is said so, not "halves by perturbation epoch nan"."""
    from critperiods.results.perturbation_summary import perturbation_summary, verdict_lines

    cube = _synthetic_cube(7.0)
    # the delay (2 epochs) lands on epochs 4, 8, 12: drop them, keep the end epoch 12
    undelayed = cube.copy(deep=True)
    undelayed["perturb_l2"] = undelayed["perturb_l2"].where(undelayed["epoch"] == 12)
    summary = perturbation_summary(undelayed)
    assert bool(summary["perturb_cp_ratio_delay"].isnull().all())
    lines = verdict_lines(undelayed.merge(summary))
    said = next(line for line in lines if "run blurred until epoch 8" in line
                and "critical-period end" in line)
    assert "disagree" not in said
    assert "carries further than one after it at the end epoch (the matched delay has no " \
        "compared epoch to confirm it)" in said, said
    assert "2 epochs after the nudge: n/a, 2 epochs after perturbation epochs 2, 6 no " \
        "distance was compared" in said, said
    # the earliest perturbation epoch missing: no halving measured against a later one
    gap = cube.copy(deep=True)
    gap["perturb_l2"] = gap["perturb_l2"].where(gap["perturb_epoch"] != 2)
    summary = perturbation_summary(gap)
    assert bool(summary["perturb_drop_epoch"].isnull().all())
    assert "no lasting distance at the earliest perturbation epoch (2)" in summary[
        "perturb_drop_epoch"].attrs["missing"]
    lines = verdict_lines(gap.merge(summary))
    assert any("does not halve: no lasting distance at the earliest perturbation epoch (2)"
               in line for line in lines), lines
    # one perturbation epoch: nothing to halve (not "stays above half")
    single = cube.isel(perturb_epoch=[0])
    lines = verdict_lines(single.merge(perturbation_summary(single)))
    assert any("does not halve: fewer than two perturbation epochs with a lasting distance"
               in line for line in lines), lines
    # a sensitivity that stays up never halves
    flat = cube.copy(deep=True)
    flat["perturb_l2"] = flat["perturb_l2"].where(flat["perturb_l2"].isnull(), 0.1)
    lines = verdict_lines(flat.merge(perturbation_summary(flat)))
    assert any("does not halve: it stays above half its value at the earliest perturbation "
               "epoch" in line for line in lines), lines
    assert not any("epoch nan" in line for line in lines)


def test_the_sensitivity_ratio_compares_nudges_before_and_after_the_critical_period_end():
    from critperiods.results.perturbation_summary import perturbation_summary, verdict_lines

    cube = _synthetic_cube(7.0)
    summary = perturbation_summary(cube)
    run = summary.sel(batch_size=32, lr_schedule="continue")
    assert float(run.perturb_cp_ratio.sel(switch_epoch=8)) == pytest.approx(5.0)
    assert float(run.perturb_cp_ratio_delay.sel(switch_epoch=8)) == pytest.approx(2.0)
    np.testing.assert_allclose(run.perturb_cp_ratio_seeds.sel(switch_epoch=8), [5.0, 5.0])
    assert float(run.perturb_cp_ratio.sel(switch_epoch=0)) == pytest.approx(5.0)
    lasting = run.perturb_lasting_l2.sel(switch_epoch=8, epsilon=0.01)
    np.testing.assert_allclose(lasting, [0.1, 0.1, 0.02])
    np.testing.assert_allclose(run.perturb_blur_ratio.sel(switch_epoch=8), [2.0, 2.0, 2.0])
    assert bool(run.perturb_blur_ratio.sel(switch_epoch=0).isnull().all())
    assert float(run.perturb_drop_epoch.sel(switch_epoch=8)) == pytest.approx(8.5)  # 10 → 2
    lines = verdict_lines(cube.merge(summary))
    assert any("run blurred until epoch 8" in line and "carries further" in line
               for line in lines)
    assert any("inside its blurred phase (epochs 2, 6) 2×" in line for line in lines)
    assert any("halves by perturbation epoch 8.5, interpolated between perturbation epochs 6 "
               "and 10" in line for line in lines), lines  # the grid places it, not the data
    unknown = perturbation_summary(_synthetic_cube(np.nan))
    assert bool(unknown.perturb_cp_ratio.isnull().all())
    assert "no critical-period end" in unknown.perturb_cp_ratio.attrs["missing"]


def swaps_of(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` as a batch-order perturbation run records itself."""
    return cube.assign_attrs(perturbation_kind="batch_order", perturbation_scope="layer")


def test_the_first_page_answers_in_short_with_the_caveats_that_bound_it():
    """The perturbation run's short answer: the ratio and how many seeds agree, the end it
    splits at, where the sensitivity halves, that a fall at every epoch gives a ratio above 1
    for any split, and the learning rate's own half-life where it decays."""
    from critperiods.results.perturbation_page import (
        caveats,
        nudge_label,
        question,
        rate_half_life,
        short_answer,
    )
    from critperiods.results.perturbation_summary import perturbation_summary

    cube = _synthetic_cube(7.0)
    said = short_answer(cube.merge(perturbation_summary(cube)))
    assert said.startswith("**In short:** a nudge of ε = 0.01 made before the critical-period "
                           "end carries 5× further than one made after it (both perturbed "
                           "runs, every seed agreeing). The ends: batch 32: 7.0. The "
                           "sensitivity (lasting L2 / ε) halves by perturbation epoch 8.5 "
                           "(interpolated linearly between perturbation epochs 6 and 10)."), said
    assert "falls at every" not in said and "learning rate" not in said  # 0.1 → 0.1; no decay
    assert caveats(cube.merge(perturbation_summary(cube)))[0].startswith(
        "* A sensitivity that falls steadily gives a before/after ratio above 1 for any split")
    cube.attrs["config"] = "optimizer:\n  lr_decay: 0.85\n"
    assert rate_half_life(cube) == pytest.approx(4.265, abs=1e-3)
    cube["perturb_l2"] = cube["perturb_l2"] * xr.DataArray([1.0, 0.5, 1.0], dims="perturb_epoch",
                                                           coords={"perturb_epoch": [2, 6, 10]})
    said = short_answer(cube.merge(perturbation_summary(cube)))
    # a steady fall leads: the ratio is then the split's, not evidence of a step
    assert said.startswith("**In short:** the sensitivity (lasting L2 / ε) falls at every "
                           "later perturbation epoch"), said
    assert ("so any split of the epochs gives a before/after ratio above 1, and this grid "
            "cannot tell whether it steps at the critical-period end. Split at the ends' "
            "estimates, a nudge of ε = 0.01 made before") in said, said
    assert "the learning rate itself halves by epoch 4.3" in said
    # under restart the rate decays too, until a run's switch: the confound is still said
    restarted = cube.assign_coords(lr_schedule=["restart"])
    assert "the learning rate itself halves by epoch 4.3" in short_answer(
        restarted.merge(perturbation_summary(restarted)))
    # and without a ratio, beside the halving the page still reports
    unsplit = _synthetic_cube(np.nan)
    unsplit.attrs["config"] = cube.attrs["config"]
    assert short_answer(unsplit.merge(perturbation_summary(unsplit))).endswith(
        "no critical-period end located. With the rate decaying, the learning rate itself "
        "halves by epoch 4.3: a later nudge trains at a smaller rate, so a fall in the "
        "sensitivity may be the learning rate's rather than the critical period's (the "
        "restart schedule cannot tell: it restarts the rate only after a run's switch).")
    # said in the answer already: the caveat keeps only what would show a step
    assert caveats(cube.merge(perturbation_summary(cube)))[0] == (
        "* Perturbation epochs closer together around the end would show whether the "
        "sensitivity steps there.")
    wide = cube.merge(perturbation_summary(cube))
    end = wide["critical_period_end"]
    wide["critical_period_end_interval"] = xr.concat(
        [xr.full_like(end, 1.0), xr.full_like(end, 9.0)],
        dim=xr.DataArray(["lower", "upper"], dims="bound"))  # epochs 2 and 6 inside
    assert ("(their intervals hold 2 of the 3 perturbation epochs, which the split puts on "
            "one side or the other by the estimate alone)") in short_answer(wide)
    none = _synthetic_cube(np.nan)
    assert short_answer(none.merge(perturbation_summary(none))) == (
        "**In short:** this run cannot say whether a nudge inside the critical period carries "
        "further: batch 32, continue: no critical-period end located.")
    assert caveats(none.merge(perturbation_summary(none)))[0].startswith(  # no ratio to read
        "* No before/after ratio here: no critical-period end splits the perturbation epochs.")
    assert nudge_label(none) == "" and nudge_label(swaps_of(none)) == "kind batch_order"
    none.attrs.update(perturbation_kind="weights", perturbation_scope="network")
    assert nudge_label(none) == "kind weights, scope network"
    identity = _synthetic_cube(7.0).assign_coords(epsilon=[0.0])  # a control run, no nudge
    assert short_answer(identity.merge(perturbation_summary(identity))).endswith(
        "no copy was nudged (perturbation.epsilons holds only 0, the identity).")
    swaps = _synthetic_cube(7.0).assign_coords(epsilon=[1.0])  # kind: batch_order
    swaps.attrs["perturbation_kind"] = "batch_order"
    assert short_answer(swaps.merge(perturbation_summary(swaps))).startswith(
        "**In short:** a swap of 1 pair of batches made before the critical-period end")
    assert "a small change of the batch order" in question(swaps)
    old = _synthetic_cube(7.0).isel(lr_schedule=0, drop=True)  # an end without lr_schedule
    assert "The ends: batch 32: 7.0." in short_answer(old.merge(perturbation_summary(old)))


def test_a_kink_without_a_deficit_does_not_split_the_nudges():
    """An end whose deficit's interval reaches 0 is a kink fitted to noise: no inside/after
    ratio rests on it; with the interval above 0 the same end splits them."""
    from critperiods.results.perturbation_summary import perturbation_summary

    cube = _synthetic_cube(7.0)
    for lower, located in ((-0.01, False), (0.01, True)):
        cube["permanent_deficit"] = (("batch_size", "lr_schedule"), [[0.02]])
        cube["permanent_deficit_interval"] = (("batch_size", "lr_schedule", "bound"),
                                              [[[lower, 0.05]]])
        cube = cube.assign_coords(bound=["lower", "upper"])
        ratio = perturbation_summary(cube).perturb_cp_ratio
        assert bool(ratio.notnull().all()) is located
        if not located:
            assert ("no critical-period end located (deficit not told from 0)"
                    in ratio.attrs["missing"])


def test_the_copies_of_a_run_that_diverged_to_chance_are_left_out_and_named():
    from critperiods.results.perturbation_summary import perturbation_summary, verdict_lines

    cube = _synthetic_cube(7.0)
    l2 = cube["perturb_l2"].values
    l2[:, :, 1, 1] *= np.array([1000.0, 1000.0, 1.0])[:, None, None, None]  # seed 1 blew up
    accuracy = np.array([[[[0.90, 0.91], [0.88, 0.10]]]])  # run 8, seed 1: chance
    cube["final_test_accuracy"] = (("batch_size", "lr_schedule", "switch_epoch", "seed"),
                                   accuracy)
    summary = perturbation_summary(cube)
    run = summary.sel(batch_size=32, lr_schedule="continue", switch_epoch=8)
    assert float(run.perturb_cp_ratio) == pytest.approx(5.0)  # seed 0 alone, not 5000
    assert np.isnan(float(run.perturb_cp_ratio_seeds.sel(seed=1)))
    np.testing.assert_allclose(run.perturb_lasting_l2.sel(epsilon=0.01), [0.1, 0.1, 0.02])
    lines = verdict_lines(cube.merge(summary))
    assert lines[-1].startswith("diverged to chance (final sharp accuracy below 1.5 × "
                                "chance), and left out of every ratio and mean")
    assert "batch 32, lr continue, run 8, seed 1" in lines[-1]
    assert not any("diverged" in line for line in verdict_lines(
        _synthetic_cube(7.0).merge(perturbation_summary(_synthetic_cube(7.0)))))


def test_a_twin_at_chance_leaves_its_copies_out_and_a_copy_at_chance_is_named():
    """The twin is retrained alone and a late nudge trains past its run's own end: the
    stored run's accuracy cannot tell that either blew up. A twin below 1.5 × chance breaks
    the reference: its copies are left out of the means and ratios, and it is named. A copy
    that blew up while its twin did not is the nudge's own, largest response: counted, and
    named (leaving it out would select on the outcome)."""
    from critperiods.results.perturbation_summary import perturbation_summary, verdict_lines

    cube = _synthetic_cube(7.0)
    dims = ("batch_size", "lr_schedule", "switch_epoch", "seed", "perturb_epoch")
    twin = np.full((1, 1, 2, 2, 3), 0.9)
    change = np.zeros((*twin.shape, 1, 1))
    change[0, 0, 1, 0, 1] = -0.8  # run 8, seed 0, nudged at 6: its one copy at 10 %
    twin[0, 0, 1, 1, 0] = 0.05  # run 8, seed 1, nudged at 2: the twin itself at chance
    cube["perturb_twin_accuracy"] = (dims, twin)
    cube["perturb_accuracy_change"] = ((*dims, "epsilon", "replicate"), change)
    l2 = cube["perturb_l2"].values
    l2[0, 0, 1, 1, 0] *= 1000.0  # the broken twin's copy
    run = perturbation_summary(cube).sel(batch_size=32, lr_schedule="continue",
                                         switch_epoch=8)
    np.testing.assert_allclose(run.perturb_lasting_l2.sel(epsilon=0.01), [0.1, 0.1, 0.02])
    assert float(run.perturb_cp_ratio) == pytest.approx(5.0)
    assert float(run.perturb_accuracy_change_mean.sel(perturb_epoch=6, epsilon=0.01)) \
        == pytest.approx(-0.4)  # the blown-up copy counts
    lines = verdict_lines(cube.merge(perturbation_summary(cube)))
    left_out = next(line for line in lines if line.startswith("diverged to chance"))
    assert "batch 32, lr continue, run 8, seed 1, nudged at epoch 2: the twin" in left_out
    blown = next(line for line in lines if line.startswith("nudged copies that ended at "
                                                           "chance"))
    assert "batch 32, lr continue, run 8, seed 0, nudged at epoch 6: 1 of 1 copies" in blown
    assert "counted in every ratio and mean" in blown


def test_the_growth_laws_and_figure_6b_leave_out_a_run_that_diverged_to_chance(
        monkeypatch, tmp_path):
    """The growth-law counts, the early rate and figure 6b read the copies too: those of a
    run that diverged to chance follow its blown-up branch and are left out there as well."""
    from critperiods.results import plots
    from critperiods.results.perturbation_summary import growth_lines

    cube = _synthetic_cube(7.0)
    shape = cube["perturb_l2"].isel(epoch=0, drop=True).shape
    dims = [d for d in cube["perturb_l2"].dims if d != "epoch"]
    cube["perturb_l2_growth_form"] = (dims, np.zeros(shape, dtype=np.int8))  # every copy: 0
    cube["perturb_early_rate"] = (dims, np.full(shape, 0.01))
    cube["perturb_early_rate"][{"switch_epoch": 1, "seed": 1}] = 5.0  # the blown-up run's
    steps = xr.DataArray(np.ones((*shape, 2)), dims=[*dims, "step"], coords={"step": [0, 10]})
    cube["perturb_step_l2"] = steps * 0.01
    cube["perturb_step_l2"][{"switch_epoch": 1, "seed": 1, "step": 1}] = 1e3
    counted = growth_lines(cube)
    assert "12 copies" in counted[0] and "median 0.01 [" in counted[1]
    cube["final_test_accuracy"] = (("batch_size", "lr_schedule", "switch_epoch", "seed"),
                                   np.array([[[[0.90, 0.91], [0.88, 0.10]]]]))
    lines = growth_lines(cube)
    assert "9 copies" in lines[0], lines  # the 3 nudges of run 8, seed 1 left out
    assert "median 0.01 [quartiles 0.01, 0.01]" in lines[1], lines
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.perturbation_growth(cube, tmp_path / "growth.png")
    heights = [max(line.get_ydata()) for line in figures[0].axes[0].get_lines()]
    assert heights and max(heights) == pytest.approx(1.0), heights  # no 1e5 from the blow-up
    # only epsilon 0: no empty panels, a line saying why nothing is drawn
    zero = cube.assign_coords(epsilon=[0.0])
    plots.perturbation_growth(zero, tmp_path / "zero.png")
    assert not figures[-1].axes[0].get_lines()
    assert "only ε = 0 here" in figures[-1].axes[0].texts[0].get_text()


def test_the_table_marks_nudges_inside_the_ends_interval_and_never_compares_a_run_with_itself():
    """`cp` is the end's estimate's side, with '?' where the nudge's epoch lies in the end's
    interval (the split there is the estimate's guess); `vs_never` is '–' on the
    never-blurred run's own rows."""
    from critperiods.results.perturbation_summary import (
        format_perturbation,
        perturbation_rows,
        perturbation_summary,
    )

    cube = _synthetic_cube(7.0)
    cube = cube.merge(perturbation_summary(cube))
    end = cube["critical_period_end"]
    cube["critical_period_end_interval"] = xr.concat(
        [xr.full_like(end, 1.0), xr.full_like(end, 9.0)],
        dim=xr.DataArray(["lower", "upper"], dims="bound"))
    rows = perturbation_rows(cube)
    marks = dict(zip(rows["perturb_epoch"], rows["critical_period"], strict=False))
    assert marks == {2: "inside?", 6: "inside?", 10: "after"}
    table = format_perturbation(cube).splitlines()
    assert "vs_never" in table[0]
    for line in table[1:1 + len(rows)]:
        run = line.split()[2]  # batch, lr, run, …
        assert (" – " in f"{line} ") == (run == "0"), line
    from critperiods.results.perturbation_summary import _points

    # a mean of equal accuracies' round-off is no change (one test image is 1/N)
    assert (_points(-3.7e-17), _points(0.0123), _points(np.nan)) == ("0", "1.23", "nan")


def test_the_perturbation_table_says_why_a_column_is_empty_and_shows_no_one_seed_range():
    """`summarize`'s perturbation table: with the never-blurred run unperturbed its vs_never
    column is n/a and a line says why (it printed nan unexplained); epsilon 0 has no blur
    ratio of its own ("–", not the nudges' pooled one); one seed prints no [x, x] range."""
    from critperiods.results.perturbation_summary import (
        format_perturbation,
        perturbation_summary,
    )

    cube = _synthetic_cube(7.0)
    cube["perturb_l2"] = cube["perturb_l2"].where(cube["switch_epoch"] != 0)
    text = format_perturbation(cube.merge(perturbation_summary(cube)))
    assert "vs_never n/a: the never-blurred run (switch epoch 0) was not perturbed" in text
    one = _synthetic_cube(7.0).isel(seed=[0])
    text = format_perturbation(one.merge(perturbation_summary(one)))
    table = text.split("(run: switch epoch")[0]
    assert "[" not in table and "one seed: no range" in text
    zero = _synthetic_cube(7.0)
    l2 = zero["perturb_l2"]
    zero = zero.drop_vars("perturb_l2").drop_dims("epsilon").assign(perturb_l2=xr.concat(
        [l2.assign_coords(epsilon=[0.0]) * 0, l2], dim="epsilon"))
    rows = format_perturbation(zero.merge(perturbation_summary(zero))).splitlines()
    assert rows[0].split()[4] == "eps" and rows[0].split()[-1] == "vs_never"
    at_zero = [r.split() for r in rows[1:] if r.startswith("   32") and r.split()[4] == "0"]
    assert at_zero and all(r[-1] == "–" for r in at_zero), rows[:8]
    nudged = [r.split() for r in rows[1:] if r.startswith("   32") and r.split()[4] != "0"
              and r.split()[2] != "0"]
    assert nudged and all(r[-1] != "–" for r in nudged), rows[:8]
