"""What a training job does: extend the trunk by one segment, or grow one branch, for every
seed of its seed group at once.

* ``trunk/e0.pt`` — the initial state (``start=None``, ``end_epoch=0``);
* ``trunk/e{E}.pt`` — the trunk continued on blurred data from ``trunk/e{E-stride}.pt``;
* ``<schedule>/switch{K}.pt`` — sharp training from ``trunk/e{K}.pt``.

One seed trains with a :class:`~critperiods.train.training.Trainer`; a group of several
(``train.seeds_per_job``) as one stacked model (:mod:`critperiods.train.stacked`), and the
job writes one piece file holding every seed's piece. The job resumes from its own resume
file when one exists (written after the first epoch, then at most every
:data:`RESUME_EVERY_S`, and on SIGTERM), so a preempted job loses nothing, a killed one at
most that long and an epoch, and its result is bitwise equal to an uninterrupted one. The
resume file is not a declared output, so Snakemake never mistakes a half-finished job for
a done one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from critperiods.pipeline import checkpoints as ckpt
from critperiods.pipeline.files import remake
from critperiods.pipeline.provenance import device_label
from critperiods.train.data import PreparedData
from critperiods.train.stacked import StackedTrainer
from critperiods.train.training import (
    ALWAYS_BLURRED,
    FastPath,
    TrainConfig,
    Trainer,
    make_checkpoint,
    stop_on_sigterm,
    train_until,
)

log = logging.getLogger(__name__)

#: A resume file holds every checkpoint of the piece so far (some 180 MB at the end of a
#: CIFAR-10 branch, whose epochs take seconds on a GPU): it is written after the first epoch,
#: then at most once this many seconds, and always when the job is stopped.
RESUME_EVERY_S = 60.0


@dataclass(frozen=True)
class PieceSpec:
    """One training job: which trajectories (one per seed of the group), from where, to
    which epoch."""

    batch_size: int
    seeds: tuple[int, ...]
    switch_epoch: int  # training.ALWAYS_BLURRED for the trunk
    end_epoch: int
    checkpoint_epochs: frozenset[int]
    lr_schedule: str | None = None  # a branch's schedule after the switch; None for the trunk

    def identity(self, start_epoch: int) -> dict:
        ident = {"batch_size": self.batch_size, "seeds": list(self.seeds),
                 "switch_epoch": self.switch_epoch, "start_epoch": start_epoch,
                 "end_epoch": self.end_epoch}
        if self.lr_schedule is not None:
            ident["lr_schedule"] = self.lr_schedule
        return ident

    @property
    def name(self) -> str:
        """The job's label in logs and progress bars (not a path: training knows no layout)."""
        kind = ("trunk" if self.switch_epoch == ALWAYS_BLURRED
                else f"{self.lr_schedule or 'continue'}/switch{self.switch_epoch}")
        seeds = ",".join(map(str, self.seeds))
        return f"bs{self.batch_size} seeds {seeds} {kind}→e{self.end_epoch}"


def resume_path_for(output: str | Path) -> Path:
    """Where the job that writes ``output`` keeps its resumable state."""
    output = Path(output)
    return output.with_name(f".{output.name}.resume")


def train_piece(
    spec: PieceSpec, cfg: TrainConfig, config_hash: str, data: PreparedData,
    start: str | Path | None, output: str | Path, device: torch.device | str = "cpu",
    progress: bool = True, should_stop: Callable[[], bool] | None = None,
    fast: FastPath | None = None, provenance: dict | None = None,
) -> None:
    """Train the piece of every seed of ``spec`` and write them to ``output`` atomically.

    ``start`` is the piece file it continues (None: from the initial weights). Raises
    ``Preempted`` after saving the resumable state if stopped on SIGTERM; a later call
    resumes from that state only for the same piece, checkpoints, :class:`FastPath`, number
    of torch threads and start state (the bits ``start`` held when it was saved).
    ``provenance`` (code and data fingerprints) is recorded in the piece and the resume
    file; a resume file of other code or data is not resumed from. The piece also records
    the device that trained it (``provenance["device"]``; a job that resumed on other
    hardware records both).
    """
    seeds = list(spec.seeds)
    trainer: Trainer | StackedTrainer = (
        Trainer(cfg, data, spec.batch_size, seeds[0], device, fast) if len(seeds) == 1
        else StackedTrainer(cfg, data, spec.batch_size, seeds, device, fast))
    checkpoints, started_from = _start(spec, trainer, start, config_hash)
    identity = spec.identity(trainer.epoch)
    resume_file = resume_path_for(output)
    # a resume file also belongs to the checkpoints its piece keeps: one saved before a
    # change of checkpoints.every (or a switch epoch that adds one) would leave a hole; and to
    # how the steps ran (train.fast_path, compile, deterministic, and the threads, which
    # change a CPU reduction's bits): a piece half trained in bf16 is not the float32 piece
    # its rerun was asked for; and to the very state it started from: a start piece retrained
    # since (on a GPU without deterministic: true, its bits differ) begins another trajectory
    resumable = {**identity, "checkpoint_epochs": sorted(spec.checkpoint_epochs),
                 "fast_path": asdict(trainer.fast), "threads": torch.get_num_threads(),
                 "start_state": started_from}

    def members() -> list[dict]:
        return [{"seed": s, "state": m.state(), "checkpoints": kept}
                for s, m, kept in zip(seeds, trainer.members(), checkpoints, strict=True)]

    resumed = ckpt.load_resume(resume_file, config_hash, resumable, provenance)
    devices = {device_label(device)}
    if resumed is not None:
        devices.update(resumed.get("devices", []))
        trainer.load_states([ckpt.member(resumed, s)["state"] for s in seeds])
        checkpoints[:] = [ckpt.member(resumed, s)["checkpoints"] for s in seeds]
        log.info("%s: resuming at epoch %d, step %d", spec.name, trainer.epoch, trainer.step)

    saved_at = -float("inf")

    with stop_on_sigterm() as sigterm:
        stop = should_stop or sigterm

        def save_resume() -> None:
            nonlocal saved_at
            if stop() or time.monotonic() - saved_at >= RESUME_EVERY_S:
                ckpt.save_resume(resume_file, config_hash=config_hash, identity=resumable,
                                 members=members(), provenance=provenance,
                                 devices=sorted(devices))
                saved_at = time.monotonic()

        train_until(trainer, spec.end_epoch, spec.switch_epoch, set(spec.checkpoint_epochs),
                    checkpoints, config_hash, save_resume=save_resume, should_stop=stop,
                    progress=progress, desc=spec.name)
    ckpt.save_piece(output, config_hash=config_hash, identity=identity, members=members(),
                    provenance={**(provenance or {}), "device": " + ".join(sorted(devices))})
    resume_file.unlink(missing_ok=True)


def _start(spec: PieceSpec, trainer: Trainer | StackedTrainer, start: str | Path | None,
           config_hash: str) -> tuple[list[list[dict]], str | None]:
    """Load the start piece into the trainer; return the checkpoints kept so far per seed
    (epoch 0's when starting from the initial weights) and the digest of the states loaded
    (None for the initial weights, which the seeds determine)."""
    if start is None:
        return [[make_checkpoint(m, spec.switch_epoch, config_hash)]
                if 0 in spec.checkpoint_epochs else [] for m in trainer.members()], None
    piece = ckpt.load_piece(start, config_hash)
    made_with = [int(s) for s in piece["identity"]["seeds"]]
    if made_with != list(spec.seeds):
        raise ckpt.CheckpointError(
            f"{start}: holds seeds {made_with}, but this job trains {list(spec.seeds)}")
    wrong = _not_a_start_for(spec, piece["identity"])
    if wrong:
        raise ckpt.CheckpointError(
            f"{start}: holds {wrong}, not where this job starts ({spec.name}): a file copied "
            f"or moved by hand? Retrain it: {remake(start)}")
    states = [ckpt.member(piece, s, start)["state"] for s in spec.seeds]
    trainer.load_states(states)
    if trainer.epoch > spec.end_epoch:
        raise ckpt.CheckpointError(
            f"{start}: holds the state at epoch {trainer.epoch}, after {spec.end_epoch}, where "
            "this piece ends: it was trained for another plan (by an older version, or kept "
            f"with --touch); retrain it: {remake(start)}")
    return [[] for _ in spec.seeds], ckpt.state_digest(states)


def _describe(identity: dict) -> str:
    """A piece's trajectory in words: "the trunk to epoch 4", "the continue branch from switch
    epoch 2 to epoch 8"."""
    if int(identity["switch_epoch"]) == ALWAYS_BLURRED:
        return f"the trunk to epoch {identity['end_epoch']}"
    schedule = identity.get("lr_schedule")
    return (f"the {schedule + ' ' if schedule else ''}branch from switch epoch "
            f"{identity['switch_epoch']} to epoch {identity['end_epoch']}")


def _not_a_start_for(spec: PieceSpec, identity: dict) -> str:
    """What is wrong with the piece of ``identity`` as the start of ``spec``, "" if nothing: a
    trunk segment continues the trunk; a branch starts from the trunk at its switch epoch; a
    segment of the never-blurred run's continuation (switch epoch 0) continues that run's
    branch file or an earlier segment, of the same schedule. Each starts from a piece of its
    batch size (a start past the job's end is refused by :func:`_start` with its own
    reason)."""
    same_batch = int(identity["batch_size"]) == spec.batch_size
    trunk = int(identity["switch_epoch"]) == ALWAYS_BLURRED
    if spec.switch_epoch == ALWAYS_BLURRED:
        fits = trunk
    elif trunk:
        fits = int(identity["end_epoch"]) == spec.switch_epoch
    else:  # only the never-blurred run is continued past its branch file
        fits = (spec.switch_epoch == 0 == int(identity["switch_epoch"])
                and identity.get("lr_schedule") == spec.lr_schedule)
    if same_batch and fits:
        return ""
    return f"{_describe(identity)} at batch size {identity['batch_size']}"


__all__ = ["PieceSpec", "resume_path_for", "train_piece"]
