"""Where results live: the one mapping between result paths and sweep coordinates.

Under ``results/<experiment>/`` (templates below, with Snakemake's wildcards)::

    runs/bs<B>/<group>/trunk/e<E>.pt                 blurred trunk: full state at epoch E
    runs/bs<B>/<group>/<schedule>/switch<K>.pt        branch: sharp from epoch K, lr schedule
    runs/bs<B>/<group>/continue/switch0/e<E>.pt       the never-blurred run continued past
                                                      its end, to epoch E (the sharp reference)
    runs/bs<B>/<group>/metrics.nc                     evaluation of the group's runs
    runs/bs<B>/<group>/<piece>.llc.nc                 λ̂ of one training file's checkpoints
    divergence/bs<B>_<schedule>.nc                    comparisons of one batch size and schedule
    perturbations/bs<B>/<group>/<schedule>/switch<K>/e<E>.pt
                                                      run K of the group's seeds perturbed at
                                                      epoch E: twins and copies
    perturbations/bs<B>_<schedule>.nc                 copies vs twins of one batch size and
                                                      schedule

``<group>`` names the seeds one training job trains together (``train.seeds_per_job``):
``seed3`` for one seed, ``seeds0_1_2`` for a stacked group; every file of a group holds all
its seeds. ``<schedule>`` is ``continue`` or ``restart`` (``grid.lr_schedules``); the
never-blurred run (``K = 0``) is the same branch for both and is stored once, under
``continue`` (:func:`piece_schedule`). ``<piece>`` is a training file's path below the
group without ``.pt``: ``trunk/e8``, ``restart/switch4``, ``continue/switch0/e12``. The
trunk and the never-blurred run's continuation are chained in segments, so that a longer
grid adds files instead of retraining them; every training file has its own λ̂ file, so a
new file adds estimates instead of recomputing them. Nothing else builds or parses these
paths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The learning-rate schedules after the switch (``grid.lr_schedules``, cube dim ``lr_schedule``):
#: ``continue`` keeps the per-epoch decay across the switch (Achille et al.), ``restart`` resets
#: the learning rate to ``optimizer.lr`` at the switch epoch (the learning-rate control).
LR_SCHEDULES = ("continue", "restart")


def piece_schedule(lr_schedule: str, switch_epoch: int) -> str:
    """The schedule under which run ``(lr_schedule, switch_epoch)``'s branch is stored.

    Restarting the decay at epoch 0 is the decay itself, so the never-blurred run (switch
    epoch 0) is the same branch for every schedule: it is trained once, under ``continue``.
    """
    return "continue" if switch_epoch == 0 else lr_schedule


#: Path templates, relative to ``results/<experiment>/``; ``{piece}`` is a training file
#: without ``.pt`` (:func:`piece_name`).
RUN_GROUP = "runs/bs{batch_size}/{group}"
TRUNK = RUN_GROUP + "/trunk/e{epoch}.pt"
BRANCH = RUN_GROUP + "/{lr_schedule}/switch{switch_epoch}.pt"
#: The never-blurred run's continuation; only ``continue/switch0`` (its rule constrains it).
REFERENCE = RUN_GROUP + "/{lr_schedule}/switch{switch_epoch}/e{epoch}.pt"
METRICS = RUN_GROUP + "/metrics.nc"
PIECE = RUN_GROUP + "/{piece}"
LLC = PIECE + ".llc.nc"
DIVERGENCE = "divergence/bs{batch_size}_{lr_schedule}.nc"
PERTURBED = ("perturbations/bs{batch_size}/{group}/{lr_schedule}/switch{switch_epoch}/"
             "e{perturb_epoch}.pt")
PERTURBATION = "perturbations/bs{batch_size}_{lr_schedule}.nc"

_SCHEDULE = "|".join(LR_SCHEDULES)
#: Regular expressions of the wildcards (Snakemake's ``wildcard_constraints``).
GROUP_PATTERN = r"seeds?\d+(?:_\d+)*"
PIECE_PATTERN = rf"trunk/e\d+|continue/switch0/e\d+|(?:{_SCHEDULE})/switch\d+"

PIECE_NAME_RE = re.compile(rf"trunk/e(?P<trunk_epoch>\d+)|continue/switch0/e(?P<epoch>\d+)|"
                           rf"(?P<schedule>{_SCHEDULE})/switch(?P<switch>\d+)")
PIECE_RE = re.compile(rf"runs/bs(?P<batch_size>\d+)/(?P<group>{GROUP_PATTERN})/"
                      rf"(?P<piece>{PIECE_PATTERN})\.")
DIVERGENCE_RE = re.compile(rf"bs(?P<batch_size>\d+)_(?P<schedule>{_SCHEDULE})\.nc$")
PERTURBED_RE = re.compile(
    rf"perturbations/bs(?P<batch_size>\d+)/(?P<group>{GROUP_PATTERN})/(?P<schedule>{_SCHEDULE})/"
    r"switch(?P<switch>\d+)/e(?P<epoch>\d+)\.pt$")
PERTURBATION_RE = re.compile(
    rf"perturbations/bs(?P<batch_size>\d+)_(?P<schedule>{_SCHEDULE})\.nc$")


def group_label(seeds: Sequence[int]) -> str:
    """The path name of a seed group: ``seed3``, or ``seeds0_1_2`` for several seeds."""
    seeds = sorted(int(s) for s in seeds)
    if not seeds:
        raise ValueError("a seed group needs at least one seed")
    return f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + "_".join(map(str, seeds))


def group_seeds(label: str) -> tuple[int, ...]:
    """The seeds a group label names (the inverse of :func:`group_label`)."""
    if not re.fullmatch(GROUP_PATTERN, label):
        raise ValueError(f"{label!r}: not a seed group (seed<S> or seeds<S>_<S>_…)")
    return tuple(int(s) for s in re.findall(r"\d+", label))


@dataclass(frozen=True)
class PieceKey:
    """The coordinates of one seed's piece: a trunk (``switch_epoch`` None) or a branch."""

    batch_size: int
    seed: int
    lr_schedule: str | None
    switch_epoch: int | None

    @property
    def is_trunk(self) -> bool:
        return self.switch_epoch is None


@dataclass(frozen=True)
class PieceFile:
    """The coordinates of a piece file: one piece of every seed of a group."""

    batch_size: int
    seeds: tuple[int, ...]
    lr_schedule: str | None
    switch_epoch: int | None

    @property
    def is_trunk(self) -> bool:
        return self.switch_epoch is None

    def key(self, seed: int) -> PieceKey:
        """The piece of one seed of the group."""
        return PieceKey(self.batch_size, seed, self.lr_schedule, self.switch_epoch)


def parse_piece(path: str | Path) -> PieceFile:
    """The coordinates of a checkpoint file or of a per-piece result file; the segments of
    a trunk, or of a branch, share them."""
    m = PIECE_RE.search(str(path).replace("\\", "/"))
    if m is None:
        raise ValueError(f"{path}: not a piece (…/runs/bs<B>/<group>/trunk/e<E>.*, "
                         f"<schedule>/switch<K>.* with schedule one of {LR_SCHEDULES}, or "
                         "continue/switch0/e<E>.*)")
    schedule, switch, _ = piece_coordinates(m["piece"])
    return PieceFile(int(m["batch_size"]), group_seeds(m["group"]), schedule, switch)


def parse_divergence(path: str | Path) -> tuple[int, str]:
    """``(batch_size, lr_schedule)`` of a divergence result file."""
    m = DIVERGENCE_RE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: not a divergence result (…/divergence/bs<B>_<schedule>.nc)")
    return int(m["batch_size"]), m["schedule"]


@dataclass(frozen=True)
class PerturbedFile:
    """The coordinates of a perturbation group file: run ``(lr_schedule, switch_epoch)`` of
    every seed of a seed group of ``batch_size``, perturbed at ``perturb_epoch``
    (``lr_schedule`` as stored: :func:`piece_schedule`)."""

    batch_size: int
    seeds: tuple[int, ...]
    lr_schedule: str
    switch_epoch: int
    perturb_epoch: int


def parse_perturbed(path: str | Path) -> PerturbedFile:
    """The coordinates of a perturbation group file."""
    m = PERTURBED_RE.search(str(path).replace("\\", "/"))
    if m is None:
        raise ValueError(f"{path}: not a perturbation group (…/perturbations/bs<B>/<group>/"
                         "<schedule>/switch<K>/e<E>.pt)")
    return PerturbedFile(int(m["batch_size"]), group_seeds(m["group"]), m["schedule"],
                         int(m["switch"]), int(m["epoch"]))


def parse_perturbation(path: str | Path) -> tuple[int, str]:
    """``(batch_size, lr_schedule)`` of a perturbation comparison file."""
    m = PERTURBATION_RE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: not a perturbation comparison (…/perturbations/"
                         "bs<B>_<schedule>.nc)")
    return int(m["batch_size"]), m["schedule"]


def piece_name(schedule: str | None, switch_epoch: int | None, epoch: int | None = None) -> str:
    """The ``{piece}`` of a training file: the trunk's segment ending at ``epoch``
    (``trunk/e8``), a branch (``restart/switch4``), or the never-blurred run's segment
    ending at ``epoch`` (``continue/switch0/e12``)."""
    if switch_epoch is None:
        if epoch is None:
            raise ValueError("a trunk piece is a segment: give its end epoch")
        return f"trunk/e{epoch}"
    if epoch is not None and (schedule, switch_epoch) != ("continue", 0):
        raise ValueError(f"{schedule}/switch{switch_epoch}: only the never-blurred run "
                         "(continue/switch0) is continued in segments")
    branch = f"{schedule}/switch{switch_epoch}"
    return branch if epoch is None else f"{branch}/e{epoch}"


def piece_coordinates(piece: str) -> tuple[str | None, int | None, int | None]:
    """``(schedule, switch_epoch, epoch)`` of a ``{piece}`` (the inverse of
    :func:`piece_name`; None where the name has none)."""
    m = PIECE_NAME_RE.fullmatch(piece)
    if m is None:
        raise ValueError(f"{piece!r}: not a piece (trunk/e<E>, <schedule>/switch<K> or "
                         "continue/switch0/e<E>)")
    if m["trunk_epoch"] is not None:
        return None, None, int(m["trunk_epoch"])
    if m["epoch"] is not None:
        return "continue", 0, int(m["epoch"])
    return m["schedule"], int(m["switch"]), None


__all__ = ["BRANCH", "DIVERGENCE", "GROUP_PATTERN", "LLC", "LR_SCHEDULES", "METRICS",
           "PERTURBATION", "PERTURBED", "PIECE", "PIECE_PATTERN", "REFERENCE", "RUN_GROUP",
           "TRUNK", "PerturbedFile", "PieceFile", "PieceKey", "group_label", "group_seeds",
           "parse_divergence", "parse_perturbation", "parse_perturbed", "parse_piece",
           "piece_coordinates", "piece_name", "piece_schedule"]
