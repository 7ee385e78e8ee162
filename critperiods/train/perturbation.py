"""The perturbation experiment's training: copies of a run nudged at one epoch.

A *perturbed run* is run ``(lr_schedule, switch_epoch)`` of one seed, perturbed at epoch ``e``
(after ``e`` epochs of training). From its *twin* — the run's trainer at the start of epoch
``e`` — :func:`train_copies`:

1. forks one *copy* per ``(epsilon, replicate)`` from the twin's complete state (weights,
   momentum, position) and perturbs it (:mod:`critperiods.train.perturb`): kind ``weights``
   moves the trainable weights exactly ``epsilon`` on their sphere(s) along a direction drawn
   from the replicate's own seed (the same direction for every ``epsilon``); kind
   ``batch_order`` swaps ``epsilon`` disjoint pairs of full batches of epoch ``e``;
2. trains twin and copies in lockstep for the first ``steps`` optimizer steps, recording
   ``‖θ_copy − θ_twin‖`` after every step;
3. trains each on to the end epoch with the identical ``(seed, epoch)`` batch plan, keeping
   checkpoints at the comparison epochs.

Getting the twin to epoch ``e`` (a replay from a stored training state) and writing the
result is the job's (:mod:`critperiods.pipeline.perturbations`); comparing copies with twins
is :mod:`critperiods.measure.perturbation_divergence`, which this module does not import, so
a change there never retrains a copy.

On the CPU a copy with ``epsilon = 0`` equals the twin bit for bit (tests). On CUDA,
nondeterministic kernels would make the twin drift from a copy by themselves: use
``train.deterministic: true`` there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from critperiods.train.perturb import (
    KINDS,
    SCOPES,
    batch_swap_positions,
    perturb_model_,
    perturbation_seed,
)
from critperiods.train.training import (
    EpochPlan,
    Trainer,
    make_checkpoint,
    train_until,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Perturbation:
    """What is done to each copy (the ``perturbation:`` config section, see its schema)."""

    kind: str = "weights"
    epsilons: tuple[float, ...] = (0.01,)
    replicates: int = 2
    scope: str = "layer"
    steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"perturbation.kind: unknown {self.kind!r}; choose one of {KINDS}")
        if self.scope not in SCOPES:
            raise ValueError(f"perturbation.scope: unknown {self.scope!r}; choose one of "
                             f"{SCOPES}")

    @classmethod
    def from_params(cls, params: dict) -> Perturbation:
        return cls(kind=params["kind"], epsilons=tuple(float(x) for x in params["epsilons"]),
                   replicates=int(params["replicates"]), scope=params["scope"],
                   steps=int(params["steps"]), seed=int(params["seed"]))

    def copies(self) -> list[tuple[float, int]]:
        """``(epsilon, replicate)`` of every copy of a group, in storage order."""
        return [(eps, r) for eps in self.epsilons for r in range(self.replicates)]

    def apply(self, trainer: Trainer, epsilon: float, seed: int) -> None:
        """Perturb ``trainer`` (a fresh fork of the twin) by ``epsilon`` with ``seed``."""
        if self.kind == "weights":
            perturb_model_(trainer.model, epsilon, seed, self.scope)
            return
        at, swaps, batch_size = trainer.epoch, int(epsilon), trainer.batch_size

        def swapped(epoch: int, plan: EpochPlan) -> EpochPlan:
            if epoch != at:
                return plan
            idx = batch_swap_positions(len(plan.order), batch_size, swaps, seed).to(
                plan.order.device)
            return EpochPlan(plan.order[idx], None if plan.shifts is None else plan.shifts[idx],
                             None if plan.flips is None else plan.flips[idx])

        trainer.reorder_plan = swapped


@dataclass(frozen=True)
class PerturbedRun:
    """One seed's run perturbed at one epoch, and how long it is followed."""

    batch_size: int
    seed: int
    lr_schedule: str  # as stored (critperiods.pipeline.layout.piece_schedule)
    switch_epoch: int
    perturb_epoch: int
    end_epoch: int
    checkpoint_epochs: tuple[int, ...]

    @property
    def name(self) -> str:
        return (f"bs{self.batch_size}/seed{self.seed}/{self.lr_schedule}/"
                f"switch{self.switch_epoch}/e{self.perturb_epoch}")


# ---------------------------------------------------------------------------------------------
# Training: twin and copies


def weight_distance(a: nn.Module, b: nn.Module) -> float:
    """L2 distance between the trainable parameters of ``a`` and ``b`` (float64)."""
    total = sum(float(((pa.detach().double() - pb.detach().double()) ** 2).sum())
                for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    return math.sqrt(total)


def _fork(twin: Trainer) -> Trainer:
    """A trainer in the twin's complete state (sharing its cached training inputs)."""
    copy = Trainer(twin.cfg, twin.data, twin.batch_size, twin.seed, twin.device, twin.fast)
    copy.load_state(twin.state())
    copy.ready = twin.ready
    return copy


def _one_step(trainer: Trainer, run: PerturbedRun, kept: list[dict], config_hash: str) -> None:
    """One optimizer step through the resumable interface (stop after every step), keeping
    the checkpoint when it completes a comparison epoch."""
    trainer.train_epoch(run.switch_epoch, should_stop=lambda: True)
    if trainer.batch_in_epoch == 0 and trainer.epoch in run.checkpoint_epochs:
        kept.append(make_checkpoint(trainer, run.switch_epoch, config_hash))


def replay(twin: Trainer, run: PerturbedRun, config_hash: str, progress: bool = False) -> None:
    """Train ``twin`` (a complete state at or before the perturbation epoch) on to the start
    of ``run.perturb_epoch``; exact by the determinism contract."""
    if twin.epoch > run.perturb_epoch:
        raise ValueError(f"{run.name}: the state to replay from is at epoch {twin.epoch}, "
                         f"after the perturbation epoch {run.perturb_epoch}")
    if twin.epoch < run.perturb_epoch:
        log.info("%s: replaying the run from epoch %d", run.name, twin.epoch)
        train_until(twin, run.perturb_epoch, run.switch_epoch, set(), [[]], config_hash,
                    progress=progress, desc=f"{run.name} replay")


def train_copies(run: PerturbedRun, pert: Perturbation, twin: Trainer, config_hash: str,
                 progress: bool = False) -> dict:
    """Steps 1–3 of the module docstring, from ``twin`` at the start of ``run.perturb_epoch``:
    ``{"seed", "twin": checkpoints, "copies": [{"epsilon", "replicate", "checkpoints",
    "step_l2"}]}``."""
    if twin.epoch != run.perturb_epoch or twin.batch_in_epoch:
        raise ValueError(f"{run.name}: the twin is at epoch {twin.epoch}, not at the start "
                         f"of epoch {run.perturb_epoch}")
    copies = []
    for eps, r in pert.copies():
        copy = _fork(twin)
        pert.apply(copy, eps, perturbation_seed(pert.seed, run.seed, run.perturb_epoch, r))
        copies.append(copy)
    members = [twin, *copies]
    kept: list[list[dict]] = [[] for _ in members]
    step_l2 = np.full((len(copies), pert.steps + 1), np.nan)
    step_l2[:, 0] = [weight_distance(c.model, twin.model) for c in copies]
    for i in range(1, pert.steps + 1):
        if twin.epoch >= run.end_epoch:
            break
        for member, kept_by in zip(members, kept, strict=True):
            _one_step(member, run, kept_by, config_hash)
        step_l2[:, i] = [weight_distance(c.model, twin.model) for c in copies]
    for j, (member, kept_by) in enumerate(zip(members, kept, strict=True)):
        train_until(member, run.end_epoch, run.switch_epoch, set(run.checkpoint_epochs),
                    [kept_by], config_hash, progress=progress,
                    desc=f"{run.name} {'twin' if j == 0 else f'copy {j}'}")
    return {
        "seed": run.seed, "twin": kept[0],
        "copies": [{"epsilon": eps, "replicate": r, "checkpoints": kept_by,
                    "step_l2": torch.from_numpy(row.copy())}
                   for (eps, r), kept_by, row in zip(pert.copies(), kept[1:], step_l2,
                                                     strict=True)],
    }


__all__ = ["Perturbation", "PerturbedRun", "replay", "train_copies", "weight_distance"]
