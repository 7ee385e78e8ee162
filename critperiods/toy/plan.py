"""The toy study's plan: which landscapes a config asks for, what each job needs, and the
cross-key checks a JSON schema cannot express (run before any job is planned)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from critperiods.pipeline.config_file import read_config_file
from critperiods.pipeline.plan import ConfigError

if TYPE_CHECKING:
    from critperiods.toy.landscapes import Landscape

JOB_SECTIONS = ("data", "sgd", "starts", "convergence", "escape", "posterior", "llc")


def landscapes(toy: dict[str, Any]) -> list[Landscape]:
    """The landscapes of ``toy.landscapes``, in kind order, each once."""
    # imported here, not above: the landscapes need torch, and the Snakefile reads this
    # module for every study, the toy study's checks only when it runs
    from critperiods.toy.landscapes import KINDS, Landscape

    spec, out = toy["landscapes"], []
    for kind in KINDS:
        for entry in spec.get(kind) or ():
            k1, k2 = (entry, 0) if kind == "line" else entry
            landscape = Landscape(kind, int(k1), int(k2))
            if landscape in out:
                raise ConfigError(f"toy.landscapes.{kind}: {entry!r} listed more than once")
            out.append(landscape)
    if not out:
        raise ConfigError("toy.landscapes: no landscape listed")
    return out


def piece_paths(toy: dict[str, Any], pattern: str) -> list[str]:
    """``pattern`` (with a ``{landscape}`` field) for every configured landscape."""
    return [pattern.format(landscape=land.name) for land in landscapes(toy)]


CUBE_KEYS = {"llc": ("max_endpoint_bias",)}  # applied by toy_cube, not by the jobs


def job_params(toy: dict[str, Any]) -> dict[str, Any]:
    """What a landscape job reads: every ``toy`` section but the list of landscapes and the
    keys the cube applies (:data:`CUBE_KEYS`), so that adding a landscape never reruns the
    others and a flag threshold reruns no job."""
    return {k: {key: value for key, value in toy[k].items() if key not in CUBE_KEYS.get(k, ())}
            for k in JOB_SECTIONS}


def check_toy_config(toy: dict[str, Any]) -> None:
    """Checks across ``toy`` keys; each error names the key."""
    landscapes(toy)
    post, starts = toy["posterior"], toy["starts"]
    if post["cells"] % post["kl_bins"]:
        raise ConfigError(f"toy.posterior.kl_bins: {post['kl_bins']} must divide "
                          f"toy.posterior.cells ({post['cells']}): bins are unions of cells")
    box = starts["prior_half_width"]
    for key in ("far", "manifold_point"):
        if starts[key] > box:
            raise ConfigError(f"toy.starts.{key}: {starts[key]} lies outside the prior box "
                              f"[-{box}, {box}] (toy.starts.prior_half_width)")
    if toy["escape"]["radius"] <= starts["near_radius"]:
        raise ConfigError(f"toy.escape.radius: {toy['escape']['radius']} must exceed "
                          f"toy.starts.near_radius ({starts['near_radius']}), or a run counts "
                          "as escaped where it started")
    if toy["llc"]["endpoints"] > toy["sgd"]["trajectories"]:
        raise ConfigError(f"toy.llc.endpoints: {toy['llc']['endpoints']} exceeds "
                          f"toy.sgd.trajectories ({toy['sgd']['trajectories']})")


def check_study_chosen(config: dict[str, Any], files: Sequence[str | Path]) -> None:
    """Refuse a config file that sets ``toy`` while ``study`` is not ``toy_landscapes``: it
    would run the critical-period sweep and ignore the toy section."""
    if config["study"] == "toy_landscapes":
        return
    if any("toy" in read_config_file(path) for path in files):
        raise ConfigError(f"toy: set, but study is {config['study']!r}, which ignores it and "
                          "runs the blur-switch sweep; add `study: toy_landscapes` to run the "
                          "toy study, or remove the toy section")


__all__ = ["CUBE_KEYS", "JOB_SECTIONS", "check_study_chosen",
           "check_toy_config", "job_params", "landscapes", "piece_paths"]
