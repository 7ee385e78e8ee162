"""The listing of ``python -m critperiods provenance``: which pieces of a cube came from which
code and data version, and on which device (:mod:`critperiods.pipeline.provenance` records
them), flagging a stage whose results come from more than one code version, or a data split
with more than one version, and noting a stage that ran on more than one device. Only the
command line imports this module (``provenance``, and ``compare`` through
:mod:`critperiods.results.comparison`).
"""

from __future__ import annotations

import re

from critperiods.pipeline.provenance import TRAIN_STAGE, UNKNOWN

__all__ = ["data_versions", "devices", "piece_name", "report", "versions"]


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
    return _by_stage(prov, "code", "training_code", "perturb_code")


def devices(prov: dict) -> dict[str, dict[str, list[str]]]:
    """``{stage: {device: [pieces]}}``; under ``train``, the results computed from training
    pieces trained on each device (cubes from before devices were recorded: ``unknown``)."""
    return _by_stage(prov, "device", "training_device", "perturb_device")


def _by_stage(prov: dict, key: str, training_key: str,
              perturb_key: str | None = None) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    trained: dict[str, set[str]] = {}
    for r in prov.get("pieces", []):
        name = piece_name(r["file"])
        out.setdefault(r["stage"], {}).setdefault(r.get(key, UNKNOWN), []).append(name)
        for value in r.get(training_key) or ([UNKNOWN] if r.get("training_code") else []):
            trained.setdefault(value, set()).add(name)
        for value in r.get(perturb_key, ()) if perturb_key else ():
            out.setdefault("perturb", {}).setdefault(value, []).append(name)
    if trained:  # the training pieces by name; a divergence result only where it is all
        out[TRAIN_STAGE] = {value: sorted({n for n in names if "/seed" in n} or names)
                            for value, names in trained.items()}
    return {stage: {value: sorted(names) for value, names in values.items()}
            for stage, values in out.items()}


def data_versions(prov: dict) -> dict[str, dict[str, list[str]]]:
    """``{split: {data fingerprint: [pieces]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    for r in prov.get("pieces", []):
        for split, fingerprint in r["data"].items():
            out.setdefault(split, {}).setdefault(fingerprint, []).append(piece_name(r["file"]))
    return out


def _pieces(names: list[str], limit: int = 4, stage: str = "") -> str:
    """"3 pieces: a, b, c"; for ``train``, the results computed from its training pieces
    (the cube records those, not the training files themselves)."""
    shown = ", ".join(names[:limit])
    noun = ("result" if stage == TRAIN_STAGE else "piece") + "s" * (len(names) != 1)
    said = " from training pieces" if stage == TRAIN_STAGE else ""
    return f"{len(names)} {noun}{said}: {shown}" + (", …" if len(names) > limit else "")


STAGE_ORDER = [TRAIN_STAGE, "evaluate", "llc", "llc_descent", "divergence", "perturb",
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
            lines.append(f"{stage:<11} {code:<13} {_pieces(names, stage=stage)}")
        if len(codes) > 1:
            problems.append(
                f"MIXED: {stage} results come from {len(codes)} code versions ("
                + "; ".join(f"{c}: {len(n)} piece{'s' * (len(n) != 1)}"
                            for c, n in sorted(codes.items()))
                + f"); rerun them with one version (snakemake --forcerun "
                f"{'train_trunk train_branch train_reference' if stage == TRAIN_STAGE else stage}"
                ", with the run's own --configfile and options)")
    lines += ["", f"{'data split':<11} {'fingerprint':<13} pieces"]
    for split, fingerprints in sorted(data_versions(prov).items()):
        for fingerprint, names in sorted(fingerprints.items()):
            lines.append(f"{split:<11} {fingerprint:<13} {_pieces(names)}")
        if len(fingerprints) > 1:
            problems.append(f"MIXED: the {split} data differ between pieces "
                            f"({', '.join(sorted(fingerprints))})")
    lines += ["", f"{'stage':<11} device"]
    by_device = devices(prov)
    for stage in sorted(by_device, key=lambda s: (STAGE_ORDER + [s]).index(s)):
        for device, names in sorted(by_device[stage].items()):
            lines.append(f"{stage:<11} {device}: {_pieces(names, stage=stage)}")
        if len(by_device[stage]) > 1:
            lines.append(f"{'':<11} note: {stage} ran on {len(by_device[stage])} devices; "
                         "results repeat bit for bit only on the same device")
    return lines, problems
