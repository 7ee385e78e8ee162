"""The config a cube records (YAML), and the digest its stage's params carry instead.

``aggregate`` writes the config beside the cube (``config.yaml``) and into its attributes;
``toy_cube`` into the toy cube's. Each stage must rerun when what it records changes, so its
rule has a param for it. That param is the record's SHA-256 (:func:`digest`), not its
text: Snakemake prints a changed param's old and new values, and ``snakemake -n`` after a
config edit printed the whole YAML twice. The stage builds the text from its own config,
the same dict the Snakefile planned with (both rules run where Snakemake runs).
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

__all__ = ["cube_record", "digest", "toy_record"]

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
    """The SHA-256 of a record: the rules' param, and the cube's ``config_sha256``."""
    return hashlib.sha256(record.encode()).hexdigest()
