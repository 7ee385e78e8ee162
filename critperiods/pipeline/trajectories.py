"""What a training job does: extend the trunk by one segment, or grow one branch.

* ``trunk/e0.pt`` — the initial state (``start=None``, ``end_epoch=0``);
* ``trunk/e{E}.pt`` — the trunk continued on blurred data from ``trunk/e{E-stride}.pt``;
* ``switch{K}.pt`` — sharp training from ``trunk/e{K}.pt`` for ``epochs_after_switch``.

Each job resumes from its own resume file when one exists (written after every
epoch and on SIGTERM), so a preempted or killed job loses at most one epoch and
its result is bitwise equal to an uninterrupted one. (A group job writes one file
per seed; should a hard kill land between those writes, their positions differ and
the job starts its piece again — slower, never different.) The resume file is not a
declared output, so Snakemake never mistakes a half-finished job for a done one.

With ``train.seeds_per_job > 1`` the seeds of a group train together as one stacked
model (:mod:`critperiods.train.stacked`). The same resume files carry the result to the
group's other jobs: the job that trains the group leaves each sibling's finished
state as that sibling's resume file, so the sibling's own job (which the DAG runs
after it) only writes its piece. A sibling that finds no such file trains the whole
group again, so a piece never depends on which job of its group ran first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from critperiods.pipeline import checkpoints as ckpt
from critperiods.train.data import PreparedData
from critperiods.train.stacked import StackedTrainer
from critperiods.train.training import (
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
    lr_schedule: str | None = None  # a branch's schedule after the switch; None for the trunk

    def identity(self, start_epoch: int) -> dict:
        ident = {"batch_size": self.batch_size, "seed": self.seed,
                 "switch_epoch": self.switch_epoch, "start_epoch": start_epoch,
                 "end_epoch": self.end_epoch}
        if self.lr_schedule is not None:
            ident["lr_schedule"] = self.lr_schedule
        if len(self.stack) > 1:
            ident["stack"] = list(self.stack)
        return ident

    @property
    def name(self) -> str:
        kind = ("trunk" if self.switch_epoch >= NEVER
                else f"{self.lr_schedule or 'continue'}/switch{self.switch_epoch}")
        return f"bs{self.batch_size}/seed{self.seed}/{kind}→e{self.end_epoch}"


def resume_path_for(output: str | Path) -> Path:
    """Where the job that writes ``output`` keeps its resumable state."""
    output = Path(output)
    return output.with_name(f".{output.name}.resume")


def run_piece(
    spec: PieceSpec, cfg: TrainConfig, config_hash: str, data: PreparedData,
    start: str | Path | None, output: str | Path, device: torch.device | str = "cpu",
    progress: bool = True, should_stop: Callable[[], bool] | None = None,
    fast: FastPath | None = None,
) -> None:
    """Train one piece and write it atomically; raise ``Preempted`` if stopped on SIGTERM."""
    run_group([spec], cfg, config_hash, data, [start], [output], 0, device, progress,
              should_stop, fast)


def run_group(
    specs: Sequence[PieceSpec], cfg: TrainConfig, config_hash: str, data: PreparedData,
    starts: Sequence[str | Path | None], outputs: Sequence[str | Path], own: int = 0,
    device: torch.device | str = "cpu", progress: bool = True,
    should_stop: Callable[[], bool] | None = None, fast: FastPath | None = None,
    provenance: dict | None = None,
) -> None:
    """Write piece ``outputs[own]``, training the pieces of ``specs`` (same batch size,
    switch and end epoch; one seed each) together when there are several.

    ``starts[i]`` is the piece that ``specs[i]`` continues (None: from init). The group's
    first job (``own == 0``) hands the other pieces' finished states to their resume
    files; a later job of the group first looks for its hand-over (module docstring).
    ``provenance`` (code and data fingerprints) is recorded in the pieces and resume files;
    a resume file of other code or data is not resumed from.
    """
    if len(specs) > 1:
        specs = [replace(s, stack=tuple(x.seed for x in specs)) for s in specs]
    trainer = (Trainer(cfg, data, specs[0].batch_size, specs[0].seed, device, fast)
               if len(specs) == 1 else
               StackedTrainer(cfg, data, specs[0].batch_size, [s.seed for s in specs], device,
                              fast))
    checkpoints = _start(specs, trainer, starts, config_hash)
    job = _GroupJob(specs, outputs, own, config_hash, trainer, checkpoints, provenance)
    handed = job.resumed[own]
    if own and _finished(handed, specs[own]):  # the group's first job trained it
        log.info("%s: trained by the job of seed %d (seeds_per_job); writing it",
                 specs[own].name, specs[0].seed)
        _write(outputs[own], config_hash, job.identities[own], handed, provenance)
        return
    job.resume_if_possible()
    spec = specs[own]
    with stop_on_sigterm() as sigterm:
        train_until(
            trainer, spec.end_epoch, spec.switch_epoch, set(spec.checkpoint_epochs),
            job.checkpoints, config_hash, save_resume=job.save_resume,
            should_stop=should_stop or sigterm, progress=progress, desc=spec.name,
        )
        job.finish()


class _GroupJob:
    """The files of one training job: its piece, and the resume files of its group."""

    def __init__(self, specs: Sequence[PieceSpec], outputs: Sequence[str | Path], own: int,
                 config_hash: str, trainer: Trainer | StackedTrainer,
                 checkpoints: list[list[dict]], provenance: dict | None = None) -> None:
        self.specs, self.outputs, self.own, self.hash = specs, outputs, own, config_hash
        self.provenance = provenance or {}
        self.trainer, self.checkpoints = trainer, checkpoints
        self.members = trainer.members()
        self.identities = [s.identity(trainer.epoch) for s in specs]
        self.resume_files = [resume_path_for(o) for o in outputs]
        self.resumed = [ckpt.load_resume(f, config_hash, i, self.provenance)
                        for f, i in zip(self.resume_files, self.identities, strict=True)]

    def resume_if_possible(self) -> None:
        """Continue from the group's resume files if all are there at one position."""
        if not _consistent(self.resumed):
            return
        self.trainer.load_states([r["state"] for r in self.resumed])  # type: ignore[index]
        self.checkpoints[:] = [r["checkpoints"] for r in self.resumed]  # type: ignore[index]
        log.info("%s: resuming at epoch %d, step %d", self.specs[self.own].name,
                 self.trainer.epoch, self.trainer.step)

    def save_resume(self, indices: Sequence[int] | None = None) -> None:
        """Write the resumable state of the given members (default: all)."""
        for i in range(len(self.specs)) if indices is None else indices:
            ckpt.save_resume(self.resume_files[i], config_hash=self.hash,
                             identity=self.identities[i], state=self.members[i].state(),
                             checkpoints=self.checkpoints[i], provenance=self.provenance)

    def finish(self) -> None:
        """Write the piece; the first job of a group hands every sibling its state (even
        one whose piece exists: on a forced rerun Snakemake deletes a sibling's piece only
        when the sibling's own job starts); any other job drops the group's resume files."""
        own = self.own
        others = [i for i in range(len(self.specs)) if i != own]
        if own == 0:
            self.save_resume(others)
        else:
            for i in others:
                self.resume_files[i].unlink(missing_ok=True)
        ckpt.save_piece(self.outputs[own], config_hash=self.hash,
                        identity=self.identities[own], state=self.members[own].state(),
                        checkpoints=self.checkpoints[own], provenance=self.provenance)
        self.resume_files[own].unlink(missing_ok=True)


def _start(specs: Sequence[PieceSpec], trainer: Trainer | StackedTrainer,
           starts: Sequence[str | Path | None], config_hash: str) -> list[list[dict]]:
    """Load the members' start pieces (all or none: a group shares its start epoch);
    return the checkpoints kept so far (epoch 0's when starting from init)."""
    if all(start is None for start in starts):
        return [[make_checkpoint(m, s.switch_epoch, config_hash)]
                if 0 in s.checkpoint_epochs else []
                for s, m in zip(specs, trainer.members(), strict=True)]
    pieces = [ckpt.load_piece(start, config_hash) for start in starts]  # type: ignore[arg-type]
    for start, piece, spec in zip(starts, pieces, specs, strict=True):
        made_with = piece["identity"].get("stack", [spec.seed])
        if made_with != list(spec.stack or [spec.seed]):
            raise ckpt.CheckpointError(
                f"{start}: trained with seeds {made_with} stacked, but this job stacks "
                f"{list(spec.stack or [spec.seed])} (train.seeds_per_job changed); rerun its "
                "training (snakemake --forcerun train_trunk train_branch)")
    trainer.load_states([p["state"] for p in pieces])
    if trainer.epoch > specs[0].end_epoch:
        raise ValueError(f"{starts[0]}: starts at epoch {trainer.epoch}, "
                         f"after {specs[0].end_epoch}")
    return [[] for _ in specs]


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


def _write(output: str | Path, config_hash: str, identity: dict, resumed: dict,
           provenance: dict | None = None) -> None:
    """Turn a finished resume file into the declared piece, then drop the resume file."""
    ckpt.save_piece(output, config_hash=config_hash, identity=identity, state=resumed["state"],
                    checkpoints=resumed["checkpoints"], provenance=provenance)
    resume_path_for(output).unlink()
