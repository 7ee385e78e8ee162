"""Checkpoint files: what a training job writes and every later stage reads.

A training job writes one *piece* of a trajectory for every seed of its seed group, in one
file (docs/architecture.md, glossary: "piece"): a trunk segment (``trunk/e{E}.pt``: the
blurred trunk up to epoch E) or a branch (``<schedule>/switch{K}.pt``). For each seed (a
*member*) a piece holds the complete training state at its end (to continue from) and the
checkpoints (weights + buffers) of the epochs it covers, each tagged with epoch, step, phase
and the training-config hash.

Files are written atomically and read with ``torch.load(weights_only=True)``:
a checkpoint is data, never code. A truncated file, a foreign file, or one of
another training config is refused with a message naming the file and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critperiods.pipeline.files import remake, said, torch_save_atomic

log = logging.getLogger(__name__)

FORMAT = "critperiods-trajectory/2"  # /1: one seed per file (critperiods < 0.2)
RESUME_FORMAT = "critperiods-resume/2"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file and the reason."""


def config_hash(training_params: dict) -> str:
    """Hash of everything that shapes a trajectory besides its grid coordinates (12 hex digits).

    The learning-rate schedule after the switch is a grid axis (``grid.lr_schedules``), not
    part of this slice, so both schedules' branches continue the same trunks.
    """
    blob = json.dumps(training_params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def state_digest(states: Any) -> str:
    """SHA-256 (12 hex digits) of nested training states: every tensor's dtype, shape and
    bytes, and every other value's repr, dicts in key order. Equal bits, equal digest."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, np.ndarray):
            walk(torch.from_numpy(np.ascontiguousarray(x)))
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(states)
    return h.hexdigest()[:12]


def save_piece(path: str | Path, *, config_hash: str, identity: dict, members: list[dict],
               provenance: dict | None = None) -> None:
    """Write a trajectory piece atomically. ``members``: one ``{"seed", "state",
    "checkpoints"}`` per seed of the group; ``provenance``: the code and data fingerprints
    that made it (critperiods.pipeline.provenance)."""
    torch_save_atomic(
        {"format": FORMAT, "config_hash": config_hash, "identity": identity,
         "members": members, "provenance": provenance or {}},
        path,
    )


def _read(path: str | Path, fmt: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure means the same
        raise CheckpointError(
            f"{path}: cannot be read ({said(err)}); it is truncated, "
            "corrupt or not a file critperiods wrote — regenerate it, with the run's own "
            f"options: {remake(path)}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = ("; it was written by critperiods before 0.2 (one seed per file): retrain it, "
                f"with the run's own options: {remake(path)}"
                if str(found).endswith("/1") else "")
        raise CheckpointError(
            f"{path}: not a critperiods file of format {fmt!r} (found {found!r}){hint}")
    missing = [key for key in FIELDS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: a {fmt!r} file without {', '.join(missing)}; it was "
                              f"not written by critperiods — regenerate it: {remake(path)}")
    return payload


FIELDS = ("config_hash", "identity", "members")  # what save_piece/save_resume write


def load_piece(path: str | Path, expected_hash: str) -> dict:
    """Read a piece and check that it belongs to the training config ``expected_hash``."""
    payload = _read(path, FORMAT)
    if payload["config_hash"] != expected_hash:
        raise CheckpointError(
            f"{path}: belongs to training config {payload['config_hash']}, but this run's "
            f"config is {expected_hash}; it was made with other settings — retrain it "
            f"({remake(path)}) or give this config another "
            "experiment name"
        )
    return payload


def save_resume(path: str | Path, *, config_hash: str, identity: dict, members: list[dict],
                provenance: dict | None = None, devices: list[str] | None = None) -> None:
    """Write the resumable state of an unfinished job (never a declared output);
    ``devices``: the hardware it has trained on so far (a resumed job adds its own)."""
    torch_save_atomic(
        {"format": RESUME_FORMAT, "config_hash": config_hash, "identity": identity,
         "members": members, "provenance": provenance or {}, "devices": devices or []},
        path,
    )


def load_resume(path: str | Path, config_hash: str, identity: dict,
                provenance: dict | None = None) -> dict | None:
    """The resumable state at ``path`` if it belongs to this very job, else None.

    A state saved by other code or from other data (``provenance`` differs) is not resumed
    from: a piece is made by one code version from start to end.
    """
    if not Path(path).exists():
        return None
    try:
        payload = _read(path, RESUME_FORMAT)
    except CheckpointError:  # it only costs the work since the job started
        return _not_resumed(path, "unreadable, or not a resume file of this version")
    if payload["config_hash"] != config_hash:
        return _not_resumed(path, "saved with other training settings")
    if payload["identity"] != identity:
        saved = payload["identity"]
        differ = sorted(k for k in saved.keys() | identity.keys()
                        if k not in saved or k not in identity or saved[k] != identity[k])
        return _not_resumed(path, f"saved with another {', '.join(differ)}")
    if provenance is not None and payload.get("provenance", {}) != provenance:
        return _not_resumed(path, "saved by other code or from other data")
    return payload


def _not_resumed(path: str | Path, why: str) -> None:
    """Say, in the job's log, why a resume file is passed over (the job starts its piece
    afresh and overwrites it)."""
    log.warning("%s: not resumed from (%s); the piece is trained from its start", path, why)
    return None


def read_provenance(path: str | Path) -> dict:
    """The ``provenance`` a piece records (empty for pieces written before it existed),
    read without loading its tensors into memory."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure means the same
        raise CheckpointError(f"{path}: cannot be read ({said(err)})") from err
    return dict(payload.get("provenance", {})) if isinstance(payload, dict) else {}


def member(piece: dict, seed: int, path: str | Path = "") -> dict:
    """The member of a loaded piece for ``seed`` (its ``state`` and ``checkpoints``)."""
    for m in piece["members"]:
        if int(m["seed"]) == int(seed):
            return m
    held = [int(m["seed"]) for m in piece["members"]]
    raise CheckpointError(f"{path}: holds seeds {held}, not seed {seed}")


def checkpoint_map(member: dict) -> dict[int, dict[str, Any]]:
    """``{epoch: checkpoint}`` of one member of a loaded piece."""
    return {int(c["epoch"]): c for c in member["checkpoints"]}


def load_checkpoints(paths: list[str | Path], expected_hash: str, seed: int) -> list[dict]:
    """All checkpoints of one seed in several pieces (e.g. every trunk segment), by epoch."""
    found: dict[int, dict] = {}
    for path in paths:
        found.update(checkpoint_map(member(load_piece(path, expected_hash), seed, path)))
    return [found[e] for e in sorted(found)]
