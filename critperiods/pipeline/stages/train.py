"""Stage train_trunk / train_branch / train_reference: train one trajectory piece of a seed
group (resumable). A piece with a switch epoch in its wildcards is a branch, or a segment of
the never-blurred run's continuation (``switch_epoch`` 0); else a trunk segment.

One job trains every seed of its group (``train.seeds_per_job``; several as one stacked
model) and writes one file holding them all (``critperiods.pipeline.trajectories``). A job
stopped by SIGTERM (preemption, time limit), SIGINT (Ctrl-C) or SIGHUP (its terminal closed)
saves its state and exits with 143; the retry, or the next run, resumes from it.
"""

from __future__ import annotations

import sys
from typing import Any

from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.stages import setup
from critperiods.pipeline.trajectories import PieceSpec, train_piece
from critperiods.train.data import load_prepared
from critperiods.train.training import ALWAYS_BLURRED, FastPath, Preempted, TrainConfig

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the retry resumes from the saved state


def train(output: str, train_data: str, start: str | None, *, batch_size: int,
          seeds: list[int], end_epoch: int, checkpoint_epochs: list[int], training: dict,
          speed: dict, code: str, switch_epoch: int | None = None,
          lr_schedule: str | None = None, device: Any = "cpu") -> None:
    """Train the group's piece from ``start`` (None: the initial weights) to ``end_epoch``:
    the trunk when ``switch_epoch`` is None, else the branch from that switch epoch."""
    spec = PieceSpec(
        batch_size=batch_size, seeds=tuple(seeds),
        switch_epoch=ALWAYS_BLURRED if switch_epoch is None else switch_epoch, end_epoch=end_epoch,
        checkpoint_epochs=frozenset(checkpoint_epochs), lr_schedule=lr_schedule)
    cfg = TrainConfig.from_params(training, lr_schedule or "continue")
    data = load_prepared(train_data, device=device)
    train_piece(spec, cfg, config_hash(training), data, start, output, device=device,
                fast=FastPath.from_params(speed, device, cfg.model),
                provenance={"code": code, "data": data.fingerprints})


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    w = sm.wildcards
    branch = "switch_epoch" in w.keys()  # noqa: SIM118 - Wildcards has no __contains__
    try:
        train(sm.output[0], sm.input.data, sm.input.get("start") or None,
              batch_size=int(w["batch_size"]), seeds=[int(s) for s in sm.params.seeds],
              end_epoch=int(sm.params.end_epoch),
              checkpoint_epochs=list(sm.params.checkpoint_epochs),
              training=sm.params.training, speed=sm.params.speed, code=sm.params.code,
              switch_epoch=int(w["switch_epoch"]) if branch else None,
              lr_schedule=w["lr_schedule"] if branch else None, device=device)
    except Preempted as stop:
        print(f"stopped by SIGTERM, SIGINT or SIGHUP (preemption, a time limit, Ctrl-C, a closed "
              f"terminal): {stop}; state "
              "saved, the retry or the next run resumes from it", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
