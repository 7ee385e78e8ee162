"""Provenance: which code and which data made each result.

Every rule that runs a script has a ``code`` param, the fingerprint of the code it runs
(:mod:`critperiods.pipeline.fingerprint`), and every prepared split a fingerprint of its content
(:func:`critperiods.train.data.data_fingerprint`). The outputs record them:

* a training piece (``*.pt``): ``{"code": …, "data": {"train": …}}`` (its ``provenance``);
* a per-piece result (``*.metrics.nc``, ``*.llc.nc``, ``divergence/bs<B>.nc``): the netCDF
  attributes ``provenance_stage`` (the rule), ``provenance_code``, ``provenance_data``
  (``train:<fingerprint> test:<fingerprint>``) and ``provenance_training_code`` (the code
  fingerprints of the training pieces it read, space-separated); a perturbation comparison
  (``perturbations/bs<B>_<schedule>.nc``) also ``provenance_perturb_code``, the code of the
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
TRAIN_STAGE = "train"  # train_trunk and train_branch run the same script


def training_code(pieces: Iterable[str | Path]) -> list[str]:
    """The code fingerprints recorded by the training pieces ``pieces`` (sorted, unique)."""
    from critperiods.pipeline.checkpoints import read_provenance

    return sorted({read_provenance(p).get("code", UNKNOWN) for p in pieces})


def piece_attrs(stage: str, code: str, data: dict[str, str],
                pieces: Iterable[str | Path] = ()) -> dict[str, str]:
    """netCDF attributes of a per-piece result: the rule that made it, its code, the data
    splits it read (``{split: fingerprint}``) and the code of the training pieces it read."""
    return {
        "provenance_stage": stage,
        "provenance_code": code,
        "provenance_data": " ".join(f"{k}:{v}" for k, v in sorted(data.items())),
        "provenance_training_code": " ".join(training_code(pieces)),
    }


def record(path: str | Path, attrs: dict) -> dict:
    """One file's entry in the cube's record, from its attributes."""
    data = dict(item.split(":", 1) for item in str(attrs.get("provenance_data", "")).split())
    return {"file": str(path), "stage": str(attrs.get("provenance_stage", UNKNOWN)),
            "code": str(attrs.get("provenance_code", UNKNOWN)), "data": data,
            "training_code": str(attrs.get("provenance_training_code", "")).split(),
            "perturb_code": str(attrs.get("provenance_perturb_code", "")).split()}


def collect(files: Iterable[str | Path]) -> list[dict]:
    """The records of per-piece result files (their attributes only are read)."""
    import xarray as xr

    records = []
    for f in files:
        with xr.open_dataset(f) as ds:
            records.append(record(f, dict(ds.attrs)))
    return records


def cube_attrs(files: Iterable[str | Path], code: str) -> dict[str, str]:
    """The cube's ``provenance`` attribute: aggregate's ``code`` and every file's record."""
    return {"provenance": json.dumps({"aggregate": {"code": code}, "pieces": collect(files)},
                                     indent=1)}


__all__ = ["collect", "cube_attrs", "piece_attrs", "record", "training_code"]
