"""Where results live: the mapping between result paths and sweep coordinates.

Under ``results/<experiment>/``::

    runs/bs<B>/seed<S>/trunk/e<E>.pt                blurred trunk, full state at epoch E
    runs/bs<B>/seed<S>/<schedule>/switch<K>.pt       branch: sharp from epoch K, lr schedule
    runs/bs<B>/seed<S>/trunk.<kind>.nc               per-piece results (metrics, llc)
    runs/bs<B>/seed<S>/<schedule>/switch<K>.<kind>.nc
    divergence/bs<B>_<schedule>.nc                   comparisons of one batch size and schedule

``<schedule>`` is ``continue`` or ``restart`` (``grid.lr_schedules``). The never-blurred run
(``K = 0``) is the same branch for both schedules and is stored once, under ``continue``
(:func:`critperiods.pipeline.plan.piece_schedule`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from critperiods.pipeline.plan import LR_SCHEDULES

_SCHEDULE = "|".join(LR_SCHEDULES)
PIECE_RE = re.compile(
    r"bs(?P<batch_size>\d+)/seed(?P<seed>\d+)/"
    rf"(?:(?P<trunk>trunk)[./]|(?P<schedule>{_SCHEDULE})/switch(?P<switch>\d+)\.)"
)
DIVERGENCE_RE = re.compile(rf"bs(?P<batch_size>\d+)_(?P<schedule>{_SCHEDULE})\.nc$")


@dataclass(frozen=True)
class PieceKey:
    """The coordinates of a trajectory piece: a trunk (``switch_epoch`` None) or a branch."""

    batch_size: int
    seed: int
    lr_schedule: str | None
    switch_epoch: int | None

    @property
    def is_trunk(self) -> bool:
        return self.switch_epoch is None


def parse_piece(path: str | Path) -> PieceKey:
    """The coordinates of a piece's checkpoint file or per-piece result file."""
    m = PIECE_RE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: not a piece result (…/bs<B>/seed<S>/trunk.* or "
                         f"<schedule>/switch<K>.* with schedule one of {LR_SCHEDULES})")
    if m["trunk"]:
        return PieceKey(int(m["batch_size"]), int(m["seed"]), None, None)
    return PieceKey(int(m["batch_size"]), int(m["seed"]), m["schedule"], int(m["switch"]))


def parse_divergence(path: str | Path) -> tuple[int, str]:
    """``(batch_size, lr_schedule)`` of a divergence result file."""
    m = DIVERGENCE_RE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: not a divergence result (…/divergence/bs<B>_<schedule>.nc)")
    return int(m["batch_size"]), m["schedule"]


__all__ = ["PieceKey", "parse_divergence", "parse_piece"]
