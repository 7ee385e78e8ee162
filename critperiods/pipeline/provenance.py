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

:func:`report` turns a cube's record into the listing of ``python -m critperiods
provenance``, and flags a stage whose results come from more than one code version, or
from more than one version of a data split.
"""

from __future__ import annotations

import json
import re
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


def piece_name(path: str) -> str:
    """What a result file is about, from its path: ``bs64/seed0`` (a seed group's metrics),
    ``bs64/seed0/continue/switch2`` (a piece's λ̂), ``divergence/bs64_continue``."""
    m = re.search(r"(?:^|/)(runs|divergence|perturbations)/(.+?)(?:/metrics|\.metrics|\.llc)?"
                  r"\.nc$", str(path).replace("\\", "/"))
    if m is None:
        return str(path)
    return m.group(2) if m.group(1) == "runs" else f"{m.group(1)}/{m.group(2)}"


def versions(prov: dict) -> dict[str, dict[str, list[str]]]:
    """``{stage: {code fingerprint: [pieces]}}``; under ``train``, the results computed
    from training pieces of each code version."""
    out: dict[str, dict[str, list[str]]] = {}
    trained: dict[str, set[str]] = {}
    for r in prov.get("pieces", []):
        name = piece_name(r["file"])
        out.setdefault(r["stage"], {}).setdefault(r["code"], []).append(name)
        for code in r["training_code"]:
            trained.setdefault(code, set()).add(name)
        for code in r.get("perturb_code", ()):
            out.setdefault("perturb", {}).setdefault(code, []).append(name)
    if trained:  # the training pieces by name; a divergence result only where it is all
        out[TRAIN_STAGE] = {code: sorted({n for n in names if "/seed" in n} or names)
                            for code, names in trained.items()}
    return {stage: {code: sorted(names) for code, names in codes.items()}
            for stage, codes in out.items()}


def data_versions(prov: dict) -> dict[str, dict[str, list[str]]]:
    """``{split: {data fingerprint: [pieces]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    for r in prov.get("pieces", []):
        for split, fingerprint in r["data"].items():
            out.setdefault(split, {}).setdefault(fingerprint, []).append(piece_name(r["file"]))
    return out


def _pieces(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} piece{'s' * (len(names) != 1)}: {shown}" + (
        ", …" if len(names) > limit else "")


STAGE_ORDER = [TRAIN_STAGE, "evaluate", "llc", "divergence", "perturb",
               "perturbation_divergence"]


def report(prov: dict) -> tuple[list[str], list[str]]:
    """(lines listing which pieces came from which code and data version, problems: one
    line per stage or data split with more than one version)."""
    lines = [f"aggregate: code {prov.get('aggregate', {}).get('code', UNKNOWN)}", "",
             f"{'stage':<11} {'code':<13} pieces"]
    problems = []
    by_stage = versions(prov)
    for stage in sorted(by_stage, key=lambda s: (STAGE_ORDER + [s]).index(s)):
        codes = by_stage[stage]
        for code, names in sorted(codes.items()):
            lines.append(f"{stage:<11} {code:<13} {_pieces(names)}")
        if len(codes) > 1:
            problems.append(
                f"MIXED: {stage} results come from {len(codes)} code versions ("
                + "; ".join(f"{c}: {len(n)} piece{'s' * (len(n) != 1)}"
                            for c, n in sorted(codes.items()))
                + f"); rerun them with one version (snakemake --forcerun "
                f"{'train_trunk train_branch' if stage == TRAIN_STAGE else stage})")
    lines += ["", f"{'data split':<11} {'fingerprint':<13} pieces"]
    for split, fingerprints in sorted(data_versions(prov).items()):
        for fingerprint, names in sorted(fingerprints.items()):
            lines.append(f"{split:<11} {fingerprint:<13} {_pieces(names)}")
        if len(fingerprints) > 1:
            problems.append(f"MIXED: the {split} data differ between pieces "
                            f"({', '.join(sorted(fingerprints))})")
    return lines, problems


__all__ = ["collect", "cube_attrs", "piece_attrs", "record", "report", "training_code"]
