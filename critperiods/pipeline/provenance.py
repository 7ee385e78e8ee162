"""Provenance: which code and which data made each result.

Every rule that runs a script has a ``code`` param, the fingerprint of the code it runs
(:mod:`critperiods.pipeline.fingerprint`), and every prepared split a fingerprint of its content
(:func:`critperiods.train.data.data_fingerprint`). The outputs record them:

* a training piece (``*.pt``): ``{"code": …, "data": {"train": …}, "device": …}`` (its
  ``provenance``; ``device``: :func:`device_label` of the hardware that trained it, several
  joined by `` + `` where a preempted job resumed elsewhere);
* a per-piece result (``*.metrics.nc``, ``*.llc.nc``, ``divergence/bs<B>.nc``): the netCDF
  attributes ``provenance_stage`` (the rule), ``provenance_code``, ``provenance_data``
  (``train:<fingerprint> test:<fingerprint>``), ``provenance_device`` (where it was
  computed), ``provenance_training_code`` (the code fingerprints of the training pieces it
  read, space-separated) and ``provenance_training_device`` (their devices, separated by
  ``; ``); a perturbation comparison (``perturbations/bs<B>_<schedule>.nc``) also
  ``provenance_perturb_code`` and ``provenance_perturb_device``, the code and devices of the
  perturbation groups it read (listed as the stage ``perturb``);
* the cube: ``provenance`` (JSON: aggregate's code and one record per file it was assembled
  from).

:func:`critperiods.pipeline.provenance_report.report` turns a cube's record into the listing of
``python -m critperiods provenance`` (a module of its own: the stages import this one, so
rewording the listing reruns none of them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

UNKNOWN = "unknown"  # results written before provenance was recorded
TRAIN_STAGE = "train"  # train_trunk, train_branch and train_reference run one script


def device_label(device: object) -> str:
    """The hardware a job computes on, as provenance records it: ``cuda <GPU name>`` or
    ``cpu <processor>``. The determinism contract (same config, seed and device → same
    bits) holds between results of one label."""
    import platform

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {_processor() or platform.machine()}"


def _processor() -> str:
    """The CPU's model name (Linux), or empty."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ""


def recorded(pieces: Iterable[str | Path], keys: Iterable[str] = ("code", "device")
             ) -> dict[str, list[str]]:
    """``{key: values}``: the ``provenance`` values that the piece files ``pieces`` (training
    pieces or perturbation groups) record under each of ``keys`` (sorted, unique; ``unknown``
    where a file records none), each file read once."""
    from critperiods.pipeline.checkpoints import read_provenance

    provenances = [read_provenance(p) for p in pieces]
    return {key: sorted({str(prov.get(key, UNKNOWN)) for prov in provenances})
            for key in keys}


def piece_attrs(stage: str, code: str, data: dict[str, str],
                pieces: Iterable[str | Path] = (), device: object = None) -> dict[str, str]:
    """netCDF attributes of a per-piece result: the rule that made it, its code, the data
    splits it read (``{split: fingerprint}``), the device it ran on (``device``: a torch
    device, None: not recorded) and the code and devices of the training pieces it read."""
    trained = recorded(pieces)
    return {
        "provenance_stage": stage,
        "provenance_code": code,
        "provenance_data": " ".join(f"{k}:{v}" for k, v in sorted(data.items())),
        "provenance_device": UNKNOWN if device is None else device_label(device),
        "provenance_training_code": " ".join(trained["code"]),
        "provenance_training_device": "; ".join(trained["device"]),
    }


def record(path: str | Path, attrs: dict) -> dict:
    """One file's entry in the cube's record, from its attributes."""
    data = dict(item.split(":", 1) for item in str(attrs.get("provenance_data", "")).split())
    return {"file": str(path), "stage": str(attrs.get("provenance_stage", UNKNOWN)),
            "code": str(attrs.get("provenance_code", UNKNOWN)), "data": data,
            "device": str(attrs.get("provenance_device", UNKNOWN)),
            "training_code": str(attrs.get("provenance_training_code", "")).split(),
            "training_device": [d for d in str(attrs.get("provenance_training_device", ""))
                                .split("; ") if d],
            "perturb_code": str(attrs.get("provenance_perturb_code", "")).split(),
            "perturb_device": [d for d in str(attrs.get("provenance_perturb_device", ""))
                               .split("; ") if d]}


def collect(files: Iterable[str | Path]) -> list[dict]:
    """The records of per-piece result files (their attributes only are read)."""
    from critperiods.pipeline.files import read_netcdf  # it imports torch: not at planning

    return [record(f, read_netcdf(f, attrs_only=True)) for f in files]


def cube_attrs(files: Iterable[str | Path], code: str) -> dict[str, str]:
    """The cube's ``provenance`` attribute: aggregate's ``code`` and every file's record."""
    return {"provenance": json.dumps({"aggregate": {"code": code}, "pieces": collect(files)},
                                     indent=1)}


__all__ = ["collect", "cube_attrs", "device_label", "piece_attrs", "record", "recorded"]
