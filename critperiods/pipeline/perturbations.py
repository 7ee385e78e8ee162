"""What a perturbation job does, and the file it writes.

One job per seed group, perturbed run ``(lr_schedule, switch_epoch)`` and perturbation epoch
``e`` (``perturbations/bs<B>/<group>/<schedule>/switch<K>/e<E>.pt``,
:mod:`critperiods.pipeline.layout`). For every seed of the group, one after the other:

1. the *twin* starts from the latest complete training state at or before ``e`` on the run's
   path (:func:`critperiods.pipeline.plan.perturbation_start`: a trunk segment end, the
   branch's start or its end, or the end of a segment of the never-blurred run's
   continuation) and is replayed to ``e`` — exact by the determinism contract;
2. :func:`critperiods.train.perturbation.train_copies` forks, perturbs and trains the copies.

Each seed trains alone (a :class:`~critperiods.train.training.Trainer`), even when the grid
trains seeds stacked (``train.seeds_per_job > 1``): twin and copies then take the same code
path whatever trained the stored run. A stacked run differs from single-seed training at
float tolerance, which chaotic training amplifies, so copies are compared with the twin
trained here, never with the stored run. On the CPU the twin equals a run trained alone bit
for bit (tests).

The file (format :data:`FORMAT`) holds ``config_hash``, ``identity``, ``provenance`` and one
member per seed: ``{"seed", "twin": checkpoints, "copies": [...]}``. A killed job starts
again from its start piece (same result).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from critperiods.pipeline.checkpoints import (
    CheckpointError,
    load_piece,
    member,
)
from critperiods.pipeline.files import remake, torch_save_atomic
from critperiods.pipeline.provenance import device_label
from critperiods.train.data import PreparedData
from critperiods.train.perturbation import Perturbation, PerturbedRun, replay, train_copies
from critperiods.train.training import FastPath, TrainConfig, Trainer

FORMAT = "critperiods-perturbation/2"  # /1: one seed per file


def perturb_group(runs: list[PerturbedRun], pert: Perturbation, cfg: TrainConfig,
                  config_hash: str, data: PreparedData, start: str | Path, output: str | Path,
                  device: torch.device | str = "cpu", fast: FastPath | None = None,
                  progress: bool = True, provenance: dict | None = None) -> None:
    """Replay, perturb and train every run of ``runs`` (one per seed of a group, all of the
    same run and epoch) from its member of the piece ``start``; write the file atomically,
    with ``provenance`` and the device that trained it (``provenance["device"]``)."""
    piece = load_piece(start, config_hash)
    members = []
    for run in runs:
        twin = Trainer(replace(cfg, lr_after_switch=run.lr_schedule), data, run.batch_size,
                       run.seed, device, fast)
        twin.load_state(member(piece, run.seed, start)["state"])
        replay(twin, run, config_hash, progress)
        members.append(train_copies(run, pert, twin, config_hash, progress))
    first = runs[0]
    identity = {
        "batch_size": first.batch_size, "seeds": [r.seed for r in runs],
        "lr_schedule": first.lr_schedule, "switch_epoch": first.switch_epoch,
        "perturb_epoch": first.perturb_epoch, "end_epoch": first.end_epoch,
        "checkpoint_epochs": list(first.checkpoint_epochs), "kind": pert.kind,
        "scope": pert.scope, "seed_of_perturbation": pert.seed,
    }
    torch_save_atomic({"format": FORMAT, "config_hash": config_hash, "identity": identity,
                       "members": members,
                       "provenance": {**(provenance or {}), "device": device_label(device)}},
                      output)


def load_group(path: str | Path, expected_hash: str) -> dict:
    """A file written by :func:`perturb_group`, checked for its format and training hash."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure means the same
        raise CheckpointError(f"{path}: cannot be read ({type(err).__name__}); regenerate it, "
                              f"with the run's own options: {remake(path)}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a critperiods perturbation group of format "
                              f"{FORMAT!r} (found {found!r}); regenerate it: {remake(path)}")
    if payload["config_hash"] != expected_hash:
        raise CheckpointError(f"{path}: belongs to training config {payload['config_hash']}, "
                              f"but this run's config is {expected_hash}")
    return payload


__all__ = ["FORMAT", "load_group", "perturb_group"]
