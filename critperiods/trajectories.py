"""What a training job does: extend the trunk by one segment, or grow one branch.

* ``trunk/e0.pt`` — the initial state (``start=None``, ``end_epoch=0``);
* ``trunk/e{E}.pt`` — the trunk continued on blurred data from ``trunk/e{E-stride}.pt``;
* ``switch{K}.pt`` — sharp training from ``trunk/e{K}.pt`` for ``epochs_after_switch``.

Each job resumes from its own resume file when one exists (written after every
epoch and on SIGTERM), so a preempted or killed job loses at most one epoch and
its result is bitwise equal to an uninterrupted one. The resume file is not a
declared output, so Snakemake never mistakes a half-finished job for a done one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from critperiods import checkpoints as ckpt
from critperiods.data import PreparedData
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
    """One training job: which trajectory, from where, to which epoch."""

    batch_size: int
    seed: int
    switch_epoch: int  # training.NEVER for the trunk
    end_epoch: int
    checkpoint_epochs: frozenset[int]

    def identity(self, start_epoch: int) -> dict:
        return {"batch_size": self.batch_size, "seed": self.seed,
                "switch_epoch": self.switch_epoch, "start_epoch": start_epoch,
                "end_epoch": self.end_epoch}

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
    trainer = Trainer(cfg, data, spec.batch_size, spec.seed, device, fast)
    checkpoints: list[dict] = []
    start_epoch = 0
    if start is not None:
        piece = ckpt.load_piece(start, config_hash)
        trainer.load_state(piece["state"])
        start_epoch = trainer.epoch
    elif 0 in spec.checkpoint_epochs:
        checkpoints.append(make_checkpoint(trainer, spec.switch_epoch, config_hash))
    if start_epoch > spec.end_epoch:
        raise ValueError(f"{start}: starts at epoch {start_epoch}, after {spec.end_epoch}")

    identity = spec.identity(start_epoch)
    resume_file = resume_path_for(output)
    resumed = ckpt.load_resume(resume_file, config_hash, identity)
    if resumed is not None:
        trainer.load_state(resumed["state"])
        checkpoints = resumed["checkpoints"]
        log.info("%s: resuming at epoch %d, step %d", spec.name, trainer.epoch, trainer.step)

    def save_resume() -> None:
        ckpt.save_resume(resume_file, config_hash=config_hash, identity=identity,
                         state=trainer.state(), checkpoints=checkpoints)

    with stop_on_sigterm() as sigterm:
        train_until(
            trainer, spec.end_epoch, spec.switch_epoch, set(spec.checkpoint_epochs), checkpoints,
            config_hash, save_resume=save_resume, should_stop=should_stop or sigterm,
            progress=progress, desc=spec.name,
        )
    ckpt.save_piece(output, config_hash=config_hash, identity=identity, state=trainer.state(),
                    checkpoints=checkpoints)
    if resume_file.exists():
        os.unlink(resume_file)
