"""Stage perturb: the twins and perturbed copies of one seed group's run from one
perturbation epoch on (:mod:`critperiods.pipeline.perturbations`)."""

from __future__ import annotations

from typing import Any

from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.perturbations import perturb_group
from critperiods.pipeline.stages import setup
from critperiods.train.data import load_prepared
from critperiods.train.perturbation import Perturbation, PerturbedRun
from critperiods.train.training import FastPath, TrainConfig


def perturb(output: str, train_data: str, start: str, *, batch_size: int, seeds: list[int],
            lr_schedule: str, switch_epoch: int, perturb_epoch: int, end_epoch: int,
            checkpoint_epochs: list[int], training: dict, perturbation: dict, speed: dict,
            code: str, device: Any = "cpu") -> None:
    """Perturb run ``(lr_schedule, switch_epoch)`` of every seed of the group at
    ``perturb_epoch``, replaying it from the complete state in ``start``; train twins and
    copies to ``end_epoch`` and write them to ``output``."""
    runs = [PerturbedRun(batch_size=batch_size, seed=s, lr_schedule=lr_schedule,
                         switch_epoch=switch_epoch, perturb_epoch=perturb_epoch,
                         end_epoch=end_epoch, checkpoint_epochs=tuple(checkpoint_epochs))
            for s in seeds]
    cfg = TrainConfig.from_params(training)
    data = load_prepared(train_data, device=device)
    perturb_group(runs, Perturbation.from_params(perturbation), cfg, config_hash(training), data,
                  start, output, device, FastPath.from_params(speed, device, cfg.model),
                  provenance={"code": code, "data": data.fingerprints})


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    w = sm.wildcards
    perturb(sm.output[0], sm.input.data, sm.input.start, batch_size=int(w.batch_size),
            seeds=[int(s) for s in sm.params.seeds], lr_schedule=w.lr_schedule,
            switch_epoch=int(w.switch_epoch), perturb_epoch=int(w.perturb_epoch),
            end_epoch=int(sm.params.end_epoch),
            checkpoint_epochs=list(sm.params.checkpoint_epochs), training=sm.params.training,
            perturbation=sm.params.perturbation, speed=sm.params.speed, code=sm.params.code,
            device=device)
