"""What a training job does: extend the trunk by one segment, or grow one branch.

* ``trunk/e0.pt`` — the initial state (``start=None``, ``end_epoch=0``);
* ``trunk/e{E}.pt`` — the trunk continued on blurred data from ``trunk/e{E-stride}.pt``;
* ``switch{K}.pt`` — sharp training from ``trunk/e{K}.pt`` for ``epochs_after_switch``.

Each job resumes from its own resume file when one exists (written after every
epoch and on SIGTERM), so a preempted or killed job loses at most one epoch and
its result is bitwise equal to an uninterrupted one. The resume file is not a
declared output, so Snakemake never mistakes a half-finished job for a done one.

With ``train.seeds_per_job > 1`` the seeds of a group train together as one stacked
model (:mod:`critperiods.stacked`). The same resume files carry the result to the
group's other jobs: the job that trains the group leaves each sibling's finished
state as that sibling's resume file, so the sibling's own job (which the DAG runs
after it) only writes its piece. A sibling that finds no such file trains the whole
group again, so a piece never depends on which job of its group ran first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from critperiods import checkpoints as ckpt
from critperiods.data import PreparedData
from critperiods.stacked import StackedTrainer
from critperiods.training import (
    NEVER,
    FastPath,
    TrainConfig,
    Trainer,
    make_checkpoint,
    stop_on_sigterm,
    train_until,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PieceSpec:
    """One training job: which trajectory, from where, to which epoch.

    ``stack`` lists the seeds trained together with this one (``train.seeds_per_job``);
    empty means alone.
    """

    batch_size: int
    seed: int
    switch_epoch: int  # training.NEVER for the trunk
    end_epoch: int
    checkpoint_epochs: frozenset[int]
    stack: tuple[int, ...] = ()

    def identity(self, start_epoch: int) -> dict:
        ident = {"batch_size": self.batch_size, "seed": self.seed,
                 "switch_epoch": self.switch_epoch, "start_epoch": start_epoch,
                 "end_epoch": self.end_epoch}
        if len(self.stack) > 1:
            ident["stack"] = list(self.stack)
        return ident

    @property
    def name(self) -> str:
        kind = "trunk" if self.switch_epoch >= NEVER else f"switch{self.switch_epoch}"
        return f"bs{self.batch_size}/seed{self.seed}/{kind}→e{self.end_epoch}"


def resume_path_for(output: str | Path) -> Path:
    """Where the job that writes ``output`` keeps its resumable state."""
    output = Path(output)
    return output.with_name(f".{output.name}.resume")


def run_piece(
    spec: PieceSpec, cfg: TrainConfig, config_hash: str, data: PreparedData,
    start: str | Path | None, output: str | Path, device: torch.device | str = "cpu",
    progress: bool = True, should_stop=None, fast: FastPath | None = None,
) -> None:
    """Train one piece and write it atomically; raise ``Preempted`` if stopped on SIGTERM."""
    run_group([spec], cfg, config_hash, data, [start], [output], 0, device, progress,
              should_stop, fast)


def run_group(
    specs: Sequence[PieceSpec], cfg: TrainConfig, config_hash: str, data: PreparedData,
    starts: Sequence[str | Path | None], outputs: Sequence[str | Path], own: int = 0,
    device: torch.device | str = "cpu", progress: bool = True, should_stop=None,
    fast: FastPath | None = None,
) -> None:
    """Write piece ``outputs[own]``, training the pieces of ``specs`` (same batch size,
    switch and end epoch; one seed each) together when there are several.

    The other pieces' finished states go to their resume files (see the module
    docstring); ``starts[i]`` is the piece that ``specs[i]`` continues (None: from init).
    """
    if len(specs) > 1:
        specs = [replace(s, stack=tuple(x.seed for x in specs)) for s in specs]
    trainer = (Trainer(cfg, data, specs[0].batch_size, specs[0].seed, device, fast)
               if len(specs) == 1 else
               StackedTrainer(cfg, data, specs[0].batch_size, [s.seed for s in specs], device,
                              fast))
    members = trainer.members()
    checkpoints = _start(specs, members, starts, config_hash)
    identities = [s.identity(members[0].epoch) for s in specs]
    resume_files = [resume_path_for(o) for o in outputs]
    resumed = [ckpt.load_resume(f, config_hash, i) for f, i in zip(resume_files, identities,
                                                                    strict=True)]
    if _finished(resumed[own], specs[own]):  # a sibling job trained it already
        log.info("%s: trained by the job of seed %d (seeds_per_job); writing it",
                 specs[own].name, specs[0].seed)
        _write(outputs[own], config_hash, identities[own], resumed[own])
        return
    if _consistent(resumed):
        for member, r in zip(members, resumed, strict=True):
            member.load_state(r["state"])
        checkpoints = [r["checkpoints"] for r in resumed]
        log.info("%s: resuming at epoch %d, step %d", specs[own].name, trainer.epoch,
                 trainer.step)

    def save_resume(indices: Sequence[int] = range(len(specs))) -> None:
        for i in indices:
            ckpt.save_resume(resume_files[i], config_hash=config_hash, identity=identities[i],
                             state=members[i].state(), checkpoints=checkpoints[i])

    spec = specs[own]
    with stop_on_sigterm() as sigterm:
        train_until(
            trainer, spec.end_epoch, spec.switch_epoch, set(spec.checkpoint_epochs), checkpoints,
            config_hash, save_resume=save_resume, should_stop=should_stop or sigterm,
            progress=progress, desc=spec.name,
        )
    # every sibling, even one whose piece exists: when the group is rerun (e.g. forced),
    # Snakemake deletes a sibling's piece only when the sibling's own job starts
    save_resume([i for i in range(len(outputs)) if i != own])
    ckpt.save_piece(outputs[own], config_hash=config_hash, identity=identities[own],
                    state=members[own].state(), checkpoints=checkpoints[own])
    if resume_files[own].exists():
        os.unlink(resume_files[own])


def _start(specs: Sequence[PieceSpec], members: list, starts: Sequence[str | Path | None],
           config_hash: str) -> list[list[dict]]:
    """Load each member's start piece; return the checkpoints kept so far (epoch 0's)."""
    checkpoints: list[list[dict]] = []
    for spec, member, start in zip(specs, members, starts, strict=True):
        kept: list[dict] = []
        if start is not None:
            member.load_state(ckpt.load_piece(start, config_hash)["state"])
        elif 0 in spec.checkpoint_epochs:
            kept.append(make_checkpoint(member, spec.switch_epoch, config_hash))
        if member.epoch > spec.end_epoch:
            raise ValueError(f"{start}: starts at epoch {member.epoch}, after {spec.end_epoch}")
        checkpoints.append(kept)
    return checkpoints


def _consistent(resumed: Sequence[dict | None]) -> bool:
    """Whether every member has a resume file, all at the same position in training."""
    if any(r is None for r in resumed):
        return False
    positions = {tuple(int(r["state"][k]) for k in ("epoch", "step", "batch_in_epoch"))
                 for r in resumed}
    return len(positions) == 1


def _finished(resumed: dict | None, spec: PieceSpec) -> bool:
    """Whether a resume file holds the piece's complete final state."""
    return (resumed is not None and int(resumed["state"]["epoch"]) == spec.end_epoch
            and int(resumed["state"]["batch_in_epoch"]) == 0)


def _write(output: str | Path, config_hash: str, identity: dict, resumed: dict) -> None:
    """Turn a finished resume file into the declared piece, then drop the resume file."""
    ckpt.save_piece(output, config_hash=config_hash, identity=identity, state=resumed["state"],
                    checkpoints=resumed["checkpoints"])
    os.unlink(resume_path_for(output))
