"""The results cube: every per-piece result merged into one self-describing netCDF file.

Dims are named after what was swept (``batch_size``, ``switch_epoch``, ``seed``,
``epoch``, ``chain``); a run's values at epochs up to its switch are its
trunk's; cells that were not run are NaN. See DESIGN.md for the schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from critperiods.files import write_atomic

PIECE_RE = re.compile(
    r"bs(?P<batch_size>\d+)/seed(?P<seed>\d+)/(?:(?P<trunk>trunk)[./]|switch(?P<switch>\d+)\.)"
)

ATTRS = {
    "batch_size": ("SGD batch size", "1"),
    "switch_epoch": ("epoch at which the blur deficit is removed", "epoch"),
    "seed": ("seed of initial weights and data order", "1"),
    "epoch": ("training epochs completed at the checkpoint", "epoch"),
    "chain": ("SGLD chain", "1"),
    "draw": ("SGLD draw, burn-in included (the first llc_burn_in draws)", "1"),
    "seed_b": ("the other seed of a pair of runs", "1"),
    "bound": ("lower and upper bound of a bootstrap interval", "1"),
    "phase_sharp": ("true where the epoch's checkpoint was last trained on sharp data", "1"),
    "final_test_accuracy": ("sharp test accuracy at the run's last epoch", "1"),
    "llc_mean": ("local learning coefficient, mean over healthy SGLD chains", "1"),
    "llc_std": ("local learning coefficient, std over healthy SGLD chains", "1"),
    "llc_chain": ("local learning coefficient per SGLD chain (NaN if diverged)", "1"),
    "llc_diverged_chains": ("SGLD chains that diverged (excluded from the mean)", "1"),
    "llc_init_loss": ("loss of the checkpoint on the LLC samples, L_n(w*)", "nats"),
}


def parse_piece(path: str | Path) -> tuple[int, int, int | None]:
    """``(batch_size, seed, switch_epoch)`` from a piece path; switch_epoch None for the trunk."""
    m = PIECE_RE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: not a piece result (…/bs<B>/seed<S>/trunk.* or switch<K>.*)")
    switch = None if m["trunk"] else int(m["switch"])
    return int(m["batch_size"]), int(m["seed"]), switch


def _load_pieces(files: Iterable[str | Path]) -> tuple[dict, dict]:
    """Per-piece datasets, split into trunks ``{(b, s): ds}`` and branches ``{(b, s, k): ds}``."""
    trunks: dict[tuple[int, int], xr.Dataset] = {}
    branches: dict[tuple[int, int, int], xr.Dataset] = {}
    for f in files:
        b, s, switch = parse_piece(f)
        with xr.open_dataset(f) as opened:
            ds = opened.load()
        if switch is None:
            trunks[(b, s)] = ds
        else:
            branches[(b, s, switch)] = ds
    return trunks, branches


def assemble_runs(files: Iterable[str | Path]) -> xr.Dataset:
    """One Dataset over (batch_size, switch_epoch, seed, epoch[, …]) from per-piece files.

    A run's value at epoch ``e ≤ switch_epoch`` is its trunk's; later epochs come
    from its branch. Runs that do not exist stay NaN.
    """
    trunks, branches = _load_pieces(files)
    runs = []
    for (b, s, k), branch in sorted(branches.items()):
        trunk = trunks.get((b, s))
        parts = [branch]
        if trunk is not None:
            parts.insert(0, trunk.sel(epoch=trunk.epoch[trunk.epoch <= k]))
        run = xr.concat(parts, dim="epoch", data_vars="all") if len(parts) > 1 else branch
        runs.append(run.expand_dims(batch_size=[b], switch_epoch=[k], seed=[s]))
    if not runs:
        return xr.Dataset()
    return xr.merge(runs, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")


def _git_commit() -> str:
    """The commit of the critperiods checkout that runs (not of the working folder, which
    ``snakemake -d`` can put anywhere); "unknown" for an installed copy."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import snakemake
    import torch

    import critperiods

    return {"torch_version": torch.__version__, "snakemake_version": snakemake.__version__,
            "critperiods_version": critperiods.__version__}


def assemble_divergence(files: Iterable[str | Path]) -> xr.Dataset:
    """Per-batch-size divergence results (``…/divergence/bs<B>.nc``) on a ``batch_size`` dim."""
    parts = []
    for f in files:
        m = re.search(r"bs(\d+)\.nc$", str(f))
        if m is None:
            raise ValueError(f"{f}: not a divergence result (…/divergence/bs<B>.nc)")
        with xr.open_dataset(f) as opened:
            ds = opened.load()
        parts.append(ds.expand_dims(batch_size=[int(m[1])]))
    return xr.merge(parts, join="outer", combine_attrs="drop_conflicts") if parts else xr.Dataset()


def build_cube(
    metrics_files: Iterable[str | Path], llc_files: Iterable[str | Path], grid: dict,
    epochs_after_switch: int, training: dict, config_yaml: str,
    divergence_files: Iterable[str | Path] = (),
) -> xr.Dataset:
    """Merge per-piece metrics, λ̂ and divergences into the cube of DESIGN.md."""
    from critperiods.analysis import critical_period_summary
    from critperiods.checkpoints import config_hash
    from critperiods.growth_laws import NO_FIT

    parts = [assemble_runs(metrics_files), assemble_runs(llc_files),
             assemble_divergence(divergence_files)]
    cube = xr.merge(parts, join="outer", combine_attrs="drop_conflicts")
    cube = cube.sel(epoch=cube.epoch[cube.test_accuracy.notnull().any(
        ["batch_size", "switch_epoch", "seed"])])
    cube = cube.reindex(batch_size=sorted(grid["batch_sizes"]),
                        switch_epoch=sorted(grid["switch_epochs"]), seed=sorted(grid["seeds"]))
    cube["phase_sharp"] = (cube.epoch > cube.switch_epoch).transpose("switch_epoch", "epoch")
    final_epoch = cube.switch_epoch + epochs_after_switch
    final = cube.test_accuracy.sel(epoch=final_epoch).drop_vars("epoch")
    final.attrs = {}  # its own long_name (describe), not test_accuracy's
    cube["final_test_accuracy"] = final
    for name in [v for v in cube.data_vars if str(v).endswith("_growth_form")]:
        # merging promotes the int8 codes to float; cells without a fit are code NO_FIT
        cube[name] = cube[name].fillna(NO_FIT).astype(np.int8)
    cube = cube.merge(critical_period_summary(cube, n_boot=1000, rng_seed=0))
    cube.attrs = {
        "Conventions": "CF-1.10",
        "title": "critperiods: critical learning periods sweep",
        "history": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                   "created by critperiods aggregate",
        "config": config_yaml,
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(),
        "training_config_hash": config_hash(training),
        "git_commit": _git_commit(),
        "epochs_after_switch": epochs_after_switch,
        "lr": training["optimizer"]["lr"],
        "lr_after_switch": training["optimizer"]["lr_after_switch"],
        **_versions(),
    }
    return describe(cube)


def describe(ds: xr.Dataset) -> xr.Dataset:
    """Fill ``long_name``/``units`` from :data:`ATTRS` and the evaluation metrics."""
    from critperiods.evaluation import METRICS

    known = {**ATTRS, **METRICS}
    for name in list(ds.data_vars) + list(ds.coords):
        if name in known:
            long_name, units = known[name]
            ds[name].attrs.setdefault("long_name", long_name)
            ds[name].attrs.setdefault("units", units)
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` atomically as compressed netCDF4."""
    encoding = {
        name: {"zlib": True, "complevel": 4}
        for name, var in ds.data_vars.items()
        if var.dtype.kind in "fiub"
    }
    write_atomic(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding))


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube written by the pipeline, fully loaded (the file is closed again)."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


__all__ = ["assemble_runs", "build_cube", "describe", "open_cube", "parse_piece", "write_netcdf"]
