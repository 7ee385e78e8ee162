"""What the statistics read from the cube: the runs that count, and their curves.

A run that diverged to chance accuracy (:func:`run_diverged`) is no data point of a curve
that a seed mean or a fit should see: :func:`valid_final_accuracy`, :func:`valid_llc` and
:func:`divergence_at_horizon` leave its sharp epochs out (its epochs up to the switch are
the blurred trunk it shares with its seed's other runs). λ̂ counts only where its quality
flag is ok, or where its every flag is among those the cube reads in
(:func:`llc_counted`). Every read-out here is a seed mean over what is left.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from critperiods.results.fits import seed_adjusted_mean

__all__ = ["CHANCE_MULTIPLE", "CLASSES", "at_horizon", "below_chance", "default_horizon",
           "distinct_diverged",
           "diverged_branches",
           "divergence_at_horizon", "divergence_to_blurred", "llc_sharp", "llc_sharp_by_seed",
           "llc_counted", "llc_negative", "llc_trunk", "llc_trunk_by_seed", "lr_schedules",
           "read_in_flags",
           "read_in_attrs", "run_diverged", "seed_mean", "with_read_in",
           "shared_by_schedules",
           "valid_final_accuracy", "valid_llc", "with_lr_schedule", "without_diverged"]

#: A run whose final sharp test accuracy is below this multiple of chance (1 / classes) has
#: diverged rather than learned less: e.g. a restarted learning rate that blew it up.
CHANCE_MULTIPLE = 1.5
#: Classes of every dataset here (Fashion-MNIST, MNIST, CIFAR-10): chance accuracy is 1 / CLASSES.
CLASSES = 10


def run_diverged(cube: xr.Dataset, classes: int = CLASSES) -> xr.DataArray:
    """True for each run (the dims of ``final_test_accuracy``) that diverged to chance: its
    final sharp test accuracy is below :data:`CHANCE_MULTIPLE` / ``classes``. False for runs
    that were not run (NaN accuracy).

    The one definition of a diverged run: the cube's ``run_diverged`` flag stores it, and
    the statistics recompute it from ``final_test_accuracy``, so cubes written before the
    flag existed are read the same way.
    """
    return below_chance(cube["final_test_accuracy"], classes).rename("run_diverged")


def below_chance(accuracy: xr.DataArray, classes: int = CLASSES) -> xr.DataArray:
    """True where a final sharp test ``accuracy`` is below :data:`CHANCE_MULTIPLE` /
    ``classes``: the one rule for having diverged to chance (a run, and a perturbed copy or
    its twin alike); False where it is NaN."""
    return accuracy < CHANCE_MULTIPLE / classes


def distinct_diverged(cube: xr.Dataset, classes: int = CLASSES) -> xr.DataArray:
    """:func:`run_diverged` with each run once: the never-blurred run (switch epoch 0) is
    one run under every lr schedule, so only the first schedule's copy counts (for counting
    and naming runs; a cell's own count, ``diverged_runs``, counts it in both)."""
    diverged = run_diverged(cube, classes)
    if "lr_schedule" not in diverged.dims or diverged.sizes["lr_schedule"] < 2:
        return diverged
    copy = (diverged["switch_epoch"] == 0) & (diverged["lr_schedule"]
                                               != diverged["lr_schedule"][0])
    return diverged & ~copy


def diverged_branches(cube: xr.Dataset) -> xr.DataArray:
    """True at the sharp epochs (``epoch > switch_epoch``) of runs that diverged to chance.

    A run's epochs up to its switch are its blurred trunk's, shared with every other run of
    its seed, so they stay valid; only its own branch is left out.
    """
    return run_diverged(cube) & (cube["epoch"] > cube["switch_epoch"])


def without_diverged(cube: xr.Dataset, da: xr.DataArray, whole_run: bool = False
                     ) -> xr.DataArray:
    """``da`` (on the run dims, with or without ``epoch``) with the values of diverged runs'
    branches set to NaN — every value of such a run with ``whole_run`` (e.g. perturbed
    copies that follow its branch); unchanged for a cube without ``final_test_accuracy``."""
    if "final_test_accuracy" not in cube:
        return da
    bad = diverged_branches(cube) if "epoch" in da.dims and not whole_run else run_diverged(cube)
    bad = bad.sel({d: da[d] for d in bad.dims if d in da.dims})
    for d in [d for d in bad.dims if d not in da.dims]:
        bad = bad.any(d)  # da shared across that dim (no lr_schedule in an old cube)
    return da.where(~bad)


def valid_final_accuracy(cube: xr.Dataset) -> xr.DataArray:
    """``final_test_accuracy`` with the runs that diverged to chance set to NaN: what the
    seed means, intervals and fits use."""
    return cube["final_test_accuracy"].where(~run_diverged(cube))


def seed_mean(da: xr.DataArray) -> xr.DataArray:
    """Average over ``seed`` (if present), adjusted for the seeds that are missing at some
    points (:func:`~critperiods.results.fits.seed_adjusted_mean`), so that a curve's shape
    does not follow the mix of seeds left; with every seed present, the plain mean."""
    if "seed" not in da.dims:
        return da
    dims = [d for d in da.dims if d != "seed"]
    coords = {d: da.coords[d] for d in dims if d in da.coords}
    values = da.transpose(*dims, "seed").values
    mean = seed_adjusted_mean(values.reshape(-1, values.shape[-1])).reshape(values.shape[:-1])
    return xr.DataArray(mean, dims=dims, coords=coords)


def lr_schedules(cube: xr.Dataset) -> list[str]:
    """The cube's learning-rate schedules, in order (a cube without the dim is "continue")."""
    return [str(r) for r in cube["lr_schedule"].values] if "lr_schedule" in cube.dims \
        else ["continue"]


def with_lr_schedule(ds: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """``ds`` (a cube, or one of its variables) with an ``lr_schedule`` dim: one without it
    (from before the restart control) is read as one ``continue`` schedule, as
    :func:`lr_schedules` says."""
    return ds if "lr_schedule" in ds.dims else ds.expand_dims(lr_schedule=["continue"])


def shared_by_schedules(da: xr.DataArray) -> xr.DataArray:
    """One schedule's copy of values every schedule shares (the trunk, the never-blurred run,
    the λ̂ markers)."""
    return da.isel(lr_schedule=0, drop=True) if "lr_schedule" in da.dims else da


#: The attribute of ``llc_quality`` naming the flags (space-separated) whose estimates the
#: statistics and figures take in as valid all the same (``analysis.llc_read_flagged``).
READ_IN = "read_in_flags"


def read_in_flags(cube: xr.Dataset) -> list[str]:
    """The λ̂ flags whose estimates ``cube``'s statistics read in (``llc_quality``'s
    :data:`READ_IN` attribute; empty for none, or a cube without λ̂)."""
    if "llc_quality" not in cube:
        return []
    return str(cube["llc_quality"].attrs.get(READ_IN, "")).split()


def read_in_attrs(names: list[str]) -> dict[str, str]:
    """The ``llc_quality`` attribute that reads in the λ̂ flags ``names`` (each once, in
    order); none for no flag."""
    return {READ_IN: " ".join(dict.fromkeys(names))} if names else {}


def with_read_in(cube: xr.Dataset, names: list[str]) -> xr.Dataset:
    """``cube`` whose statistics read in the λ̂ flags ``names`` and no other; its flags
    themselves unchanged."""
    quality = cube["llc_quality"].copy()
    quality.attrs.pop(READ_IN, None)
    quality.attrs.update(read_in_attrs(names))
    return cube.assign(llc_quality=quality)


def llc_counted(cube: xr.Dataset, net_of_descent: bool = False) -> xr.DataArray:
    """Where a λ̂ estimate counts as valid: its quality flag is ok, or every flag it carries
    is among :func:`read_in_flags` (False where no estimate was made; needs
    ``llc_quality``). With ``net_of_descent``, the ``negative`` flag is judged on λ̂ net of
    the chains' descent (``llc_mean − llc_descent``), the value then read, against the same
    Monte Carlo error (:func:`llc_negative`): a raw λ̂ below 0 is what the descent from a
    checkpoint off its minimum gives, and the net value is there to undo it."""
    from critperiods.measure.llc.quality import FLAGS

    quality = cube["llc_quality"]
    read_in = sum(FLAGS[name] for name in set(read_in_flags(cube)))
    bits = quality.fillna(0).astype(int)
    if net_of_descent and "llc_descent" in cube:
        negative = FLAGS["negative"]
        net = cube["llc_mean"] - cube["llc_descent"]
        bits = (bits & ~negative) | xr.where(llc_negative(net, cube.get("llc_mcse")),
                                             negative, 0)
    return quality.notnull() & ((bits & ~read_in) == 0)


def llc_negative(llc: xr.DataArray, mcse: xr.DataArray | None) -> xr.DataArray:
    """Where a λ̂ counts as ``negative``: below 0 by more than ``NEGATIVE_MCSE`` of its
    Monte Carlo standard errors ``mcse`` (``llc_mcse``); below 0 at all where the MCSE is
    NaN or not given (a cube made before it was stored). False where ``llc`` is NaN."""
    from critperiods.measure.llc.error import NEGATIVE_MCSE

    if mcse is None:
        return llc < 0
    return (llc + NEGATIVE_MCSE * mcse.fillna(0)) < 0


def valid_llc(cube: xr.Dataset, net_of_descent: bool = False) -> xr.DataArray | None:
    """``llc_mean`` where it counts (:func:`llc_counted`: its quality flag is ok, or its
    flags are all read in), NaN where it is flagged or on the branch of
    a run that diverged to chance; None without λ̂. With ``net_of_descent``, λ̂ net of the
    chains' descent, ``llc_mean − llc_descent`` (``llc.descent``; NaN where the descent was
    not measured), its ``negative`` flag judged on that net value; None without
    ``llc_descent``."""
    if "llc_mean" not in cube or (net_of_descent and "llc_descent" not in cube):
        return None
    llc = cube["llc_mean"] - cube["llc_descent"] if net_of_descent else cube["llc_mean"]
    llc = llc.where(llc_counted(cube, net_of_descent)) if "llc_quality" in cube else llc
    return without_diverged(cube, llc)


def _empty() -> xr.DataArray:
    return xr.DataArray(np.array([]), dims=["epoch"], coords={"epoch": np.array([])})


def llc_trunk_by_seed(cube: xr.Dataset, batch_size: float, net_of_descent: bool = False
                      ) -> xr.DataArray:
    """Valid λ̂ along the blurred trunk for one batch size vs epoch (and ``seed``).

    Every run trains on blurred images until its switch, so the run with the largest switch
    epoch that has any λ̂ traces the longest trunk; its values at epochs ``<=`` that switch
    are returned, a seed without that run taking its trunk from its earlier switches' runs.
    Flagged estimates are left out unless read in (:func:`valid_llc`; ``net_of_descent``:
    λ̂ net of the chains' descent, empty without it).
    """
    llc = valid_llc(cube, net_of_descent)
    if llc is None:
        return _empty()
    llc = shared_by_schedules(llc.sel(batch_size=batch_size))
    has = np.isfinite(cube["llc_mean"].sel(batch_size=batch_size))
    has = shared_by_schedules(has).any(dim=[d for d in llc.dims if d != "switch_epoch"])
    switches = llc["switch_epoch"].values[has.values]
    if switches.size == 0:
        return _empty()
    return trunk_by_seed(llc, switches.max())


def trunk_by_seed(panel: xr.DataArray, last: float) -> xr.DataArray:
    """The blurred trunk's values at epochs ``<= last`` from ``panel`` (over
    ``switch_epoch``, ``epoch`` and any others, e.g. ``seed``): the run switching at
    ``last``, a seed without it keeping its trunk from its runs of earlier switches, which
    hold the same values up to their switch (every run is restored from the shared trunk).
    """
    trunk = panel.sel(switch_epoch=last)
    trunk = trunk.where(trunk["epoch"] <= last, drop=True)
    copies = panel.where(panel["epoch"] <= panel["switch_epoch"]).sel(epoch=trunk["epoch"].values)
    return trunk.fillna(copies.max("switch_epoch"))


def llc_trunk(cube: xr.Dataset, batch_size: float, net_of_descent: bool = False
              ) -> xr.DataArray:
    """:func:`llc_trunk_by_seed` averaged over seeds (:func:`seed_mean`)."""
    return seed_mean(llc_trunk_by_seed(cube, batch_size, net_of_descent))


def llc_sharp_by_seed(cube: xr.Dataset, batch_size: float, net_of_descent: bool = False
                      ) -> xr.DataArray:
    """Valid λ̂ of the never-blurred run (``switch_epoch == 0``) vs epoch (and ``seed``).

    Empty if there is no λ̂ or no switch epoch 0 (``net_of_descent``: λ̂ net of the chains'
    descent, :func:`valid_llc`; empty also without it).
    """
    llc = valid_llc(cube, net_of_descent)
    if llc is None or 0 not in cube["switch_epoch"].values:
        return _empty()
    return shared_by_schedules(llc.sel(batch_size=batch_size, switch_epoch=0))


def llc_sharp(cube: xr.Dataset, batch_size: float, net_of_descent: bool = False
              ) -> xr.DataArray:
    """:func:`llc_sharp_by_seed` averaged over seeds (:func:`seed_mean`)."""
    return seed_mean(llc_sharp_by_seed(cube, batch_size, net_of_descent))


def default_horizon(cube: xr.Dataset) -> float:
    """Default horizon for the divergence read-out: the first checkpoint after a switch.

    Among positive offsets ``epoch - switch_epoch`` at which the divergence from the
    always-blurred run (``div_l2``, ``reference = "blurred"``) is finite (any batch size,
    schedule or seed), return the smallest offset that is available for the largest number of
    switch epochs, so that the read-out covers as many switches as possible. NaN if the
    divergence is absent or never finite after a switch.
    """
    if "div_l2" not in cube:
        return float("nan")
    div = cube["div_l2"].sel(reference="blurred")
    mask = np.isfinite(div).any(dim=[d for d in div.dims if d not in ("switch_epoch", "epoch")])
    mask = mask.transpose("switch_epoch", "epoch").values
    switches = cube["switch_epoch"].values.astype(float)
    epochs = cube["epoch"].values.astype(float)
    offsets = epochs[None, :] - switches[:, None]
    valid = mask & (offsets > 0)
    if not valid.any():
        return float("nan")
    candidates = np.unique(offsets[valid])
    counts = [int((valid & np.isclose(offsets, h)).any(axis=1).sum()) for h in candidates]
    return float(candidates[int(np.argmax(counts))])


def divergence_to_blurred(cube: xr.Dataset, batch_size: float,
                          lr_schedule: str | None = None) -> xr.DataArray | None:
    """``div_l2`` to the always-blurred run for one batch size and schedule (default the
    first), runs that diverged to chance left out; None without ``div_l2``."""
    if "div_l2" not in cube:
        return None
    div = without_diverged(cube, cube["div_l2"].sel(reference="blurred"))
    div = div.sel(batch_size=batch_size)
    if "lr_schedule" in div.dims:
        div = (div.sel(lr_schedule=lr_schedule) if lr_schedule is not None
               else div.isel(lr_schedule=0))
    return div


def at_horizon(cube: xr.Dataset, values: np.ndarray, horizon: float) -> np.ndarray:
    """From ``values`` laid out ``(switch_epoch, epoch, ...)`` on the cube's coordinates, each
    switch's value at ``epoch = switch + horizon``: ``(switch_epoch, ...)``, NaN where that
    epoch is not a checkpoint."""
    switches = cube["switch_epoch"].values.astype(float)
    epochs = cube["epoch"].values.astype(float)
    out = np.full((switches.size, *values.shape[2:]), np.nan)
    for i, s in enumerate(switches):
        col = np.flatnonzero(np.isclose(epochs, s + horizon))
        if col.size:
            out[i] = values[i, col[0]]
    return out


def divergence_at_horizon(cube: xr.Dataset, batch_size: float, horizon: float,
                          lr_schedule: str | None = None, without_seed: object = None
                          ) -> np.ndarray:
    """Seed-averaged distance to the always-blurred run at ``epoch = switch + horizon``, one
    value per switch epoch (for ``lr_schedule``, default the first); runs that diverged to
    chance are left out, and so is the seed ``without_seed`` where one is given (for the
    leave-one-seed-out refits).

    Switches whose ``switch + horizon`` is not a checkpoint give NaN; all NaN if the variable
    is absent or the horizon is not finite.
    """
    div = divergence_to_blurred(cube, batch_size, lr_schedule)
    if div is None or not np.isfinite(horizon):
        return np.full(cube.sizes["switch_epoch"], np.nan)
    if without_seed is not None:
        div = div.drop_sel(seed=without_seed)
    return at_horizon(cube, seed_mean(div).transpose("switch_epoch", "epoch").values, horizon)

