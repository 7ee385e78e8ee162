"""The results cube: every per-piece result merged into one self-describing netCDF file.

Dims are named after what was swept (``batch_size``, ``lr_schedule``, ``switch_epoch``,
``seed``, ``epoch``, ``chain``, …); a run's values at epochs up to its switch are its
trunk's; entries of runs that were not run are NaN. See docs/architecture.md for the schema.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from critperiods.measure.llc.error import NEGATIVE_MCSE, llc_mcse, upper_bound
from critperiods.measure.llc.quality import MAX_RHAT, MAX_TREND_Z
from critperiods.pipeline.config_record import digest
from critperiods.pipeline.files import read_netcdf
from critperiods.pipeline.layout import parse_divergence, parse_perturbation
from critperiods.results.assemble import RUN_DIMS, assemble_runs, load_pieces
from critperiods.results.selection import read_in_attrs
from critperiods.variables import (
    ANCILLARY,
    VARIABLES,
    llc_quality_flag_attrs,
    run_diverged_flag_attrs,
    variable_attrs,
)


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
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import snakemake
    import torch

    import critperiods

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"torch_version": torch.__version__, "snakemake_version": snakemake.__version__,
            "critperiods_version": critperiods.__version__,
            "python_version": platform.python_version(),
            **{f"{name.replace('-', '_')}_version": installed(name)
               for name in ("numpy", "scipy", "xarray", "arviz-stats")}}


def _merge(parts: list[xr.Dataset]) -> xr.Dataset:
    """Outer-join ``parts``; overlapping values must agree (NaN fills gaps)."""
    if not parts:
        return xr.Dataset()
    return xr.merge(parts, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")


def merge_files(files: Iterable[str | Path]) -> xr.Dataset:
    """Datasets already laid out on the cube's dims (one per seed group or batch size),
    merged into one."""
    return _merge([read_netcdf(f) for f in files])


def assemble_divergence(files: Iterable[str | Path],
                        parse: Callable[[str | Path], tuple[int, str]] = parse_divergence,
                        ) -> xr.Dataset:
    """Per-(batch size, schedule) results on ``batch_size`` and ``lr_schedule`` dims: the
    divergences (``…/divergence/bs<B>_<schedule>.nc``), or with ``parse=parse_perturbation``
    the perturbation comparisons (``…/perturbations/bs<B>_<schedule>.nc``)."""
    parts = []
    for f in files:
        batch_size, lr_schedule = parse(f)
        ds = read_netcdf(f)
        parts.append(ds.expand_dims(batch_size=[batch_size], lr_schedule=[lr_schedule]))
    return _merge(parts)


def build_cube(
    metrics_files: Iterable[str | Path], llc_files: Iterable[str | Path], grid: dict,
    epochs_after_switch: int, training: dict, config_yaml: str,
    divergence_files: Iterable[str | Path] = (), analysis: dict | None = None,
    perturbation_files: Iterable[str | Path] = (), descent_files: Iterable[str | Path] = (),
) -> xr.Dataset:
    """Merge per-piece metrics, λ̂ (and its descent, ``llc.descent``) and divergences into
    the cube (docs/architecture.md).

    ``analysis`` holds the config's ``analysis:`` section (the λ̂ quality thresholds and the
    interval settings of the critical-period statistics; defaults where absent).
    """
    from critperiods.measure.growth_laws import NO_FIT
    from critperiods.pipeline.checkpoints import config_hash
    from critperiods.results.summary import critical_period_summary

    settings = {**ANALYSIS_DEFAULTS, **(analysis or {})}
    schedules = list(grid.get("lr_schedules", ["continue"]))
    llc = assemble_runs(load_pieces(llc_files), schedules, grid["switch_epochs"])
    descent = assemble_runs(load_pieces(descent_files), schedules, grid["switch_epochs"])
    perturbed = assemble_divergence(perturbation_files, parse_perturbation)
    parts = [merge_files(metrics_files), llc, descent, assemble_divergence(divergence_files),
             perturbed]
    cube = _merge(parts)
    cube = cube.sel(epoch=cube.epoch[cube.test_accuracy.notnull().any(RUN_DIMS)])
    cube = cube.reindex(batch_size=sorted(grid["batch_sizes"]), lr_schedule=schedules,
                        switch_epoch=sorted(grid["switch_epochs"]), seed=sorted(grid["seeds"]))
    cube["phase_sharp"] = (cube.epoch > cube.switch_epoch).transpose("switch_epoch", "epoch")
    cube = cube.assign_coords(epochs_since_switch=cube.epoch - cube.switch_epoch)
    final_epoch = cube.switch_epoch + epochs_after_switch
    final = cube.test_accuracy.sel(epoch=final_epoch).drop_vars(["epoch", "epochs_since_switch"])
    cube["final_test_accuracy"] = final
    cube["run_diverged"] = _run_diverged(cube)
    for name in [v for v in cube.data_vars if str(v).endswith("_growth_form")]:
        # merging promotes the int8 codes to float; entries without a fit are code NO_FIT
        cube[name] = cube[name].fillna(NO_FIT).astype(np.int8)
    if "llc_loss_trace" in cube:
        cube["llc_mcse"] = _llc_mcse(cube)
    if "llc_mean" in cube:
        cube["llc_quality"] = _llc_quality(cube, settings)
    cube.attrs["lr"] = training["optimizer"]["lr"]  # the summary's temperature, lr / batch_size
    summary = critical_period_summary(cube, level=settings["interval_level"])
    cube = cube.merge(summary)
    if "perturb_l2" in cube:
        from critperiods.results.perturbation_summary import perturbation_summary

        cube = cube.merge(perturbation_summary(cube))
    cube.attrs = {
        **{k: v for k, v in perturbed.attrs.items() if k.startswith("perturbation_")},
        **{f"summary_{k}" if k in ("horizon", "level", "interval_method") else k: v
           for k, v in summary.attrs.items()},
        "Conventions": "CF-1.10",
        "title": "critperiods: critical learning periods sweep",
        "history": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                   "created by critperiods aggregate",
        "config": config_yaml,
        "config_sha256": digest(config_yaml),
        "training_config_hash": config_hash(training),
        "git_commit": _git_commit(),
        "epochs_after_switch": epochs_after_switch,
        "lr": training["optimizer"]["lr"],
        "comment": COMMENT,
        **_versions(),
    }
    return describe(cube)


#: The cube's ``comment``: what to know before averaging or counting its values.
COMMENT = ("A run's values up to its switch epoch are its trunk's: the same trunk checkpoint "
           "sits under every later switch_epoch and under both lr_schedules, and switch_epoch "
           "0 is one run under both schedules, so count or average trunk values on one copy. "
           "div_<metric> with reference=blurred is 0 up to each switch (the run is its "
           "reference there); div_<metric>_seeds holds each seed pair twice and each seed "
           "against itself (0): average over seed < seed_b. Statistics that do not depend on "
           "the schedule (the λ̂ knees and markers, their flags) repeat on both lr_schedule "
           "rows. "
           "A variable's ancillary_variables name the flags and intervals that qualify it "
           "(llc_quality, run_diverged, critical_period_end_located): read them before "
           "averaging or plotting it.")

#: Defaults of the config's ``analysis:`` section (the schema holds the same; a test checks).
ANALYSIS_DEFAULTS = {"llc_max_rhat": MAX_RHAT, "llc_max_trend_z": MAX_TREND_Z,
                     "llc_read_flagged": [], "interval_level": 0.9}


def _llc_quality(cube: xr.Dataset, settings: dict) -> xr.DataArray:
    """The λ̂ quality flag of every estimate (NaN where none was made)."""
    from critperiods.measure.llc.quality import quality_flags

    mean = cube["llc_mean"]

    def aligned(da: xr.DataArray) -> np.ndarray:
        return da.broadcast_like(mean).transpose(*mean.dims).values

    khat = cube["llc_tail_khat"].values if "llc_tail_khat" in cube else None
    # the sign test reads λ̂'s upper bound: below 0 by more than its noise is negative
    upper = upper_bound(mean.values, aligned(cube["llc_mcse"]) if "llc_mcse" in cube else None)
    flags = quality_flags(upper, cube["llc_diverged_chains"].values,
                          cube["llc_rhat"].values, cube["llc_trend_z"].values,
                          settings["llc_max_rhat"], settings["llc_max_trend_z"],
                          khat, aligned(_llc_samples(cube)), _llc_unstable(cube, aligned))
    attrs = {**llc_quality_flag_attrs(), "comment": (
        f"bit field: negative = lambda + {NEGATIVE_MCSE:g} llc_mcse < 0 (lambda below 0 by "
        "more than its Monte Carlo noise; lambda < 0 where llc_mcse is NaN); not_converged = "
        f"R-hat > {settings['llc_max_rhat']} "
        f"or |trend z| > {settings['llc_max_trend_z']}; diverged_chains = at least one chain "
        "diverged; heavy_tailed = llc_tail_khat > min(1 - 1/log10(draws), 0.7) for the "
        "healthy chains' draws after burn-in (0.7 below 100 draws); unstable_step = "
        "llc_step_size > 4 a / (a^2 + (llc_nbeta * llc_sharpness_sd)^2) with a = llc_nbeta * "
        "llc_sharpness + llc_gamma, past the SGLD drift's mean-square stability limit along "
        "the Hessian's top eigenvector. Flagged estimates are left "
        "out of the markers and drawn hollow, except those whose every flag is among "
        "read_in_flags (analysis.llc_read_flagged): those count, drawn half-filled.")}
    attrs.update(read_in_attrs(settings["llc_read_flagged"]))
    return xr.DataArray(flags, dims=mean.dims, coords=mean.coords, attrs=attrs)


def _llc_mcse(cube: xr.Dataset) -> xr.DataArray:
    """``llc_mcse``: each estimate's Monte Carlo standard error, from ``llc_loss_trace``
    (:func:`critperiods.measure.llc.error.llc_mcse`, at each piece's own burn-in and nβ)."""
    trace = cube["llc_loss_trace"]
    run = [d for d in trace.dims if d not in ("chain", "draw")]
    trace = trace.transpose(*run, "chain", "draw")
    shape = trace.isel(chain=0, draw=0, drop=True)

    def per_estimate(name: str, default: float) -> xr.DataArray:
        value = cube[name] if name in cube else xr.DataArray(default)
        return value.broadcast_like(shape).transpose(*run)

    burn_in, nbeta = per_estimate("llc_burn_in", 0), per_estimate("llc_nbeta", np.nan)
    out = np.full(burn_in.shape, np.nan)
    for start in np.unique(burn_in.values[np.isfinite(burn_in.values)]).astype(int):
        here = burn_in.values == start
        out[here] = llc_mcse(trace.values[here], start, nbeta.values[here])
    return xr.DataArray(out, dims=run, coords=burn_in.coords)


def _llc_unstable(cube: xr.Dataset, aligned: Callable[[xr.DataArray], np.ndarray]
                  ) -> np.ndarray | None:
    """Where an estimate's step size is past its drift's stability limit; None for pieces
    made before ``llc_sharpness`` was measured (and a spread of 0 for those made before
    ``llc_sharpness_sd`` was)."""
    from critperiods.measure.llc.quality import past_stability_limit

    if "llc_sharpness" not in cube:
        return None
    spread = aligned(cube["llc_sharpness_sd"]) if "llc_sharpness_sd" in cube else 0.0
    return past_stability_limit(*(aligned(cube[name]) for name in (
        "llc_step_size", "llc_sharpness", "llc_nbeta", "llc_gamma")), spread)


def _llc_samples(cube: xr.Dataset) -> xr.DataArray:
    """The draws after burn-in of each estimate's healthy chains (its λ̂ is their mean); the
    burn-in may differ from piece to piece (a DataArray then)."""
    burn_in = cube["llc_burn_in"] if "llc_burn_in" in cube else cube.sizes.get("draw", 0)
    draws = cube.sizes.get("draw", 0) - burn_in
    return (cube.sizes.get("chain", 0) - cube["llc_diverged_chains"]) * draws


def _run_diverged(cube: xr.Dataset) -> xr.DataArray:
    """The CF flag of the runs that diverged to chance (NaN for runs not run)."""
    from critperiods.results.selection import CHANCE_MULTIPLE, run_diverged

    flag = run_diverged(cube).astype(float).where(cube["final_test_accuracy"].notnull())
    flag.attrs = {**run_diverged_flag_attrs(), "comment": (
        f"final sharp test accuracy below {CHANCE_MULTIPLE} / classes (chance): the run blew "
        "up (or never learned) rather than learned less. Its sharp epochs are left out of the "
        "seed means, intervals and fits, and drawn apart in the figures.")}
    return flag


def align_at_switch(da: xr.DataArray) -> xr.DataArray:
    """``da`` (with ``switch_epoch`` and ``epoch`` dims) re-indexed by epochs since the switch.

    The result has a dim ``epochs_since_switch`` instead of ``epoch`` (negative before the
    switch), so runs with different switch epochs line up at their switch::

        align_at_switch(cube.test_accuracy).sel(epochs_since_switch=2).mean("seed")
    """
    offsets = sorted({int(e - k) for k in da["switch_epoch"].values for e in da["epoch"].values})
    parts = []
    for k in da["switch_epoch"].values:
        run = da.sel(switch_epoch=k).drop_vars("epochs_since_switch", errors="ignore")
        run = run.assign_coords(epochs_since_switch=("epoch", (run["epoch"] - k).values))
        run = run.swap_dims(epoch="epochs_since_switch").drop_vars("epoch")
        parts.append(run.reindex(epochs_since_switch=offsets).expand_dims(switch_epoch=[k]))
    out = xr.concat(parts, dim="switch_epoch")
    out["epochs_since_switch"].attrs["long_name"] = VARIABLES["epochs_since_switch"][0]
    return out


def describe(ds: xr.Dataset) -> xr.Dataset:
    """Give every variable and coordinate that :mod:`critperiods.variables` describes its
    attributes from there (``long_name``, ``units`` except on index coordinates, a family's
    flags, and ``ancillary_variables``: the flags and intervals that qualify it), replacing
    what a piece file carried: the stages write values only, and the table is the one source
    of their descriptions."""
    for name in list(ds.data_vars) + list(ds.coords):
        ds[name].attrs.update(variable_attrs(str(name), index=name in ds.dims))
        qualifiers = [q for q in (*ds[name].attrs.get("ancillary_variables", "").split(),
                                  *ANCILLARY.get(str(name), ()),
                                  *(f"{name}{suffix}" for suffix in COMPANIONS)) if q in ds]
        if qualifiers:
            ds[name].attrs["ancillary_variables"] = " ".join(dict.fromkeys(qualifiers))
    return ds


#: A statistic's companions, named by suffix, that qualify it (its interval, its flags, the
#: earliest value it can take, its test of 0): :func:`describe` names those the cube has in
#: its ``ancillary_variables``.
COMPANIONS = ("_interval", "_loo_range", "_unstable", "_within_noise", "_earliest", "_p",
              "_p_holm")


#: The swept dims the statistics and figures read in increasing order (a curve is drawn,
#: and "earliest" and "later" are taken, along them).
ORDERED_DIMS = ("batch_size", "switch_epoch", "seed", "epoch")


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube written by the pipeline, fully loaded (the file is closed again), its
    :data:`ORDERED_DIMS` in increasing order (the pipeline writes them so; a cube edited by
    hand may not be); a file that cannot be read is a ``ValueError`` naming it and the
    command that remakes it."""
    cube = read_netcdf(path)
    unsorted = [d for d in ORDERED_DIMS if d in cube.indexes
                and not cube.indexes[d].is_monotonic_increasing]
    return cube.sortby(unsorted) if unsorted else cube


__all__ = ["ANALYSIS_DEFAULTS", "ORDERED_DIMS", "align_at_switch", "build_cube", "describe",
           "merge_files", "open_cube"]
