"""The listing of ``python -m critperiods provenance``: which pieces of a cube came from which
code and data version (:mod:`critperiods.pipeline.provenance` records them), flagging a
stage whose results come from more than one code version, or a data split with more than
one version. Only the command line imports this module.
"""

from __future__ import annotations

import re

from critperiods.pipeline.provenance import TRAIN_STAGE, UNKNOWN

__all__ = ["data_versions", "piece_name", "report", "versions"]


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
