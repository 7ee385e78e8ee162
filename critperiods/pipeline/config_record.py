"""The config a cube records (YAML), and the digest its stage's params carry instead.

``aggregate`` writes the config beside the cube (``config.yaml``) and into its attributes;
``toy_cube`` into the toy cube's. Each stage must rerun when what it records changes, so its
rule has a param for it. That param is the record's SHA-256 (:func:`digest`), not its
text: Snakemake prints a changed param's old and new values, and ``snakemake -n`` after a
config edit printed the whole YAML twice. The stage rebuilds the text from its own config
and checks it against the digest the plan computed (:func:`check_digest`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

__all__ = ["check_digest", "cube_record", "digest", "toy_record"]

#: Keys the cube does not record: plot options (plots rerun alone), cluster time limits
#: (which never change a result), the toy study's keys, and which files a config is laid
#: over (a check of the command line).
NOT_RECORDED = ("plots", "runtime", "study", "toy", "laid_over")


def cube_record(config: dict[str, Any]) -> str:
    """The config recorded in the cube: everything but :data:`NOT_RECORDED`, the
    perturbation section while it is off (its keys rerun nothing), and where the data are
    read from (the data's fingerprints are in the cube's provenance instead: moving the
    data folder reruns nothing)."""
    recorded = {k: v for k, v in config.items() if k not in NOT_RECORDED}
    if not config["perturbation"]["enabled"]:
        del recorded["perturbation"]
    recorded["dataset"] = {k: v for k, v in config["dataset"].items() if k != "root"}
    return yaml.safe_dump(recorded, sort_keys=False)


def toy_record(config: dict[str, Any]) -> str:
    """The config a toy cube records: the experiment, the study and ``toy``."""
    return yaml.safe_dump({k: config[k] for k in ("experiment", "study", "toy")},
                          sort_keys=False)


def digest(record: str) -> str:
    """The SHA-256 of a record, as the cube's ``config_sha256`` attribute holds it."""
    return hashlib.sha256(record.encode()).hexdigest()


def check_digest(record: str, expected: str, stage: str) -> str:
    """``record`` if its digest is ``expected`` (the plan's); else a ``RuntimeError``: the
    job's config differs from the one Snakemake planned with, and the cube would record a
    config its jobs were not planned from."""
    got = digest(record)
    if got != expected:
        raise RuntimeError(f"{stage}: the config this job sees (sha256 {got[:12]}) is not the "
                           f"one Snakemake planned it with ({expected[:12]}); rerun the "
                           "workflow with the same --configfile on every machine")
    return record
