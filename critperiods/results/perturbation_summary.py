"""The critical-period link: does a nudge inside the critical period carry further?

Read from the cube's perturbation variables (:mod:`critperiods.train.perturbation`) and its
critical-period end (:mod:`critperiods.results.summary`):

* the *lasting divergence*: ``perturb_l2`` (and ``perturb_disagreement``) between copy and twin
  at the end epoch, the last epoch compared;
* the change in final accuracy: ``perturb_accuracy_change``;
* per (batch size, schedule, perturbed run, perturbation epoch, epsilon): their means over
  seeds and replicates, and the range of the per-seed means;
* the *sensitivity ratio* per (batch size, schedule, perturbed run): the geometric mean of the
  amplification ``lasting l2 / epsilon`` over perturbations before the critical-period end
  (a located one: :func:`~critperiods.results.summary.located_end`), divided by that after it
  — per seed (``perturb_cp_ratio_seeds``) and over seeds (``perturb_cp_ratio``: the
  geometric mean of the seeds' ratios). Above 1, a nudge inside the critical period carries
  further than one after it.

Two further readings that need no critical-period estimate:

* the *blur ratio* per (batch size, schedule, run, perturbation epoch): lasting L2 of the run
  over that of the never-blurred run nudged at the same epoch, paired by seed (geometric mean
  over seeds, ``perturb_blur_ratio``, and per seed): how the blur history so far changes how
  far a nudge carries, inside the run's blurred phase (epoch < switch) and after it;
* the *sensitivity drop epoch* per run (``perturb_drop_epoch``): the perturbation epoch at
  which the lasting L2 / epsilon (geometric mean over seeds) first falls below half its value
  at the earliest perturbation epoch, interpolated, to set beside the critical-period end and
  the half-deficit epoch.

Every perturbation is followed to the same end epoch, so a later one has less time to grow.
The same statistics at a *matched delay* — the distance ``D`` epochs after each perturbation,
``D`` the time the latest perturbation gets (``perturb_delay_l2``, ``perturb_cp_ratio_delay``)
— give every perturbation the same time; the never-blurred run at matched epochs separates
the blur history from the rest. Copies with ``epsilon = 0`` (the identity) are left out of
the ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import xarray as xr

from critperiods.results.fits import nanmean
from critperiods.results.selection import (
    below_chance,
    run_diverged,
    with_lr_schedule,
    without_diverged,
)
from critperiods.results.summary import located_end, unlocated_reason

RUN = ("batch_size", "lr_schedule", "switch_epoch")
#: Statistics averaged over seeds and replicates: cube variable → (summary name, long_name).
AVERAGED = {
    "perturb_l2": ("perturb_lasting_l2", "L2 distance between copy and twin at the end epoch"),
    "perturb_disagreement": ("perturb_lasting_disagreement",
                             "fraction of probe images copy and twin classify differently at "
                             "the end epoch"),
    "perturb_accuracy_change": ("perturb_accuracy_change_mean",
                                "sharp test accuracy of the copy minus its twin's at the end "
                                "epoch"),
    "perturb_early_rate": ("perturb_early_rate_mean",
                           "slope of ln(L2 distance to the twin) per step after the "
                           "perturbation"),
}


def end_epoch(cube: xr.Dataset) -> int:
    """The last epoch at which copies were compared with their twins."""
    l2 = cube["perturb_l2"]
    compared = l2.notnull().any([d for d in l2.dims if d != "epoch"])
    return int(cube["epoch"].values[compared.values].max())


def valid_copies(cube: xr.Dataset, name: str) -> xr.DataArray:
    """``cube[name]`` with every copy of a run that diverged to chance set to NaN: the
    copies and the twin of such a run follow its blown-up branch, so their distances say
    nothing about a nudge (:func:`~critperiods.results.selection.without_diverged`, the rule
    the seed means and fits use too). So too every copy of a twin that ended at chance
    itself (:func:`twin_at_chance`: the twin is retrained alone, and trains on past its
    run's own end where the nudge is late): the reference is broken. A copy that ended at
    chance while its twin did not is kept: that is the nudge's own, largest response
    (:func:`copies_at_chance` names them)."""
    var = without_diverged(cube, cube[name].reset_coords(drop=True), whole_run=True)
    bad = twin_at_chance(cube)
    return var if bad is None or not set(bad.dims) <= set(var.dims) else var.where(~bad)


def twin_at_chance(cube: xr.Dataset) -> xr.DataArray | None:
    """True for each twin (dims of ``perturb_twin_accuracy``: a run, seed and perturbation
    epoch) whose final sharp accuracy is below 1.5 × chance (the rule for a diverged run);
    None for a cube without the twin's accuracy (stored since it was measured)."""
    if "perturb_twin_accuracy" not in cube:
        return None
    return below_chance(cube["perturb_twin_accuracy"].reset_coords(drop=True))


def copies_at_chance(cube: xr.Dataset) -> xr.DataArray | None:
    """True for each copy (dims of ``perturb_accuracy_change``) that ended below 1.5 ×
    chance (its twin's accuracy plus its change) while its twin did not: a nudge that blew
    the run up, counted in the statistics and named beside them; None for a cube without
    the twin's accuracy."""
    twin = twin_at_chance(cube)
    if twin is None or "perturb_accuracy_change" not in cube:
        return None
    copy = (cube["perturb_twin_accuracy"].reset_coords(drop=True)
            + cube["perturb_accuracy_change"].reset_coords(drop=True))
    return below_chance(copy) & ~twin


def diverged_perturbed_runs(cube: xr.Dataset) -> list[str]:
    """``"batch B, lr L, run S, seed K"`` for each perturbed run left out because it
    diverged to chance, then ``"…, nudged at epoch E: the twin"`` for each twin that ended
    at chance itself (:func:`twin_at_chance`), whose copies are left out too; empty without
    perturbations."""
    if "perturb_l2" not in cube:
        return []
    cube = with_lr_schedule(cube)
    l2 = cube["perturb_l2"]
    out = []
    if "final_test_accuracy" in cube:
        perturbed = l2.notnull().any([d for d in l2.dims if d not in (*RUN, "seed")])
        bad = run_diverged(cube).reset_coords(drop=True)
        bad = bad.broadcast_like(perturbed).sel({d: perturbed[d] for d in perturbed.dims})
        hits = (bad & perturbed).stack(run=[*RUN, "seed"])
        out += [f"batch {b}, lr {lr}, run {s}, seed {k}"
                for (b, lr, s, k), hit in zip(hits["run"].values, hits.values, strict=True)
                if hit]
    twins = twin_at_chance(cube)
    if twins is None:
        return out
    hits = (twins & l2.notnull().any(["epsilon", "replicate", "epoch"])).stack(
        group=[*RUN, "seed", "perturb_epoch"])
    out += [f"batch {b}, lr {lr}, run {s}, seed {k}, nudged at epoch {e}: the twin"
            for (b, lr, s, k, e), hit in zip(hits["group"].values, hits.values, strict=True)
            if hit]
    return out


def blown_up_copies(cube: xr.Dataset) -> list[str]:
    """``"batch B, lr L, run S, seed K, nudged at epoch E: N of M copies"`` where copies
    ended at chance while their twin did not (:func:`copies_at_chance`); empty without."""
    cube = with_lr_schedule(cube)
    copies = copies_at_chance(cube)
    if copies is None:
        return []
    measured = cube["perturb_accuracy_change"].notnull()
    n_bad = (copies & measured).sum(["epsilon", "replicate"])
    n_all = measured.sum(["epsilon", "replicate"])
    bad, total = (x.stack(group=n_bad.dims) for x in (n_bad, n_all.transpose(*n_bad.dims)))
    return [f"batch {b}, lr {lr}, run {s}, seed {k}, nudged at epoch {e}: {int(n)} of "
            f"{int(m)} copies"
            for (b, lr, s, k, e), n, m in zip(bad["group"].values, bad.values, total.values,
                                              strict=True)
            if n]


def _at_end(cube: xr.Dataset, name: str) -> xr.DataArray:
    """``name`` at the end epoch, without the coordinates that depend on the epoch, and
    without the runs that diverged to chance (:func:`valid_copies`)."""
    var = valid_copies(cube, name)
    return var.sel(epoch=end_epoch(cube), drop=True) if "epoch" in var.dims else var


def _nanmean(da: xr.DataArray, dims: list[str]) -> xr.DataArray:
    """Mean over ``dims`` ignoring NaN; NaN where all are (xarray's skipna mean, which
    does not warn about an empty slice)."""
    return da.mean(dims, skipna=True)


def matched_delay(cube: xr.Dataset) -> int:
    """``D``: the epochs from the latest perturbation to the end epoch."""
    return end_epoch(cube) - int(cube["perturb_epoch"].max())


def at_delay(cube: xr.Dataset, name: str = "perturb_l2") -> xr.DataArray:
    """``name`` :func:`matched_delay` epochs after each perturbation (NaN where that is not a
    compared epoch)."""
    delay = matched_delay(cube)
    var = valid_copies(cube, name)
    parts = [var.sel(perturb_epoch=[e]).reindex(epoch=[e + delay]).squeeze("epoch", drop=True)
             for e in var["perturb_epoch"].values]
    return xr.concat(parts, dim="perturb_epoch")


def sensitivity_ratio(cube: xr.Dataset, lasting: xr.DataArray | None = None,
                      ) -> tuple[xr.DataArray, xr.DataArray]:
    """``(perturb_cp_ratio, perturb_cp_ratio_seeds)`` of ``lasting`` (default: ``perturb_l2``
    at the end epoch); see the module docstring. NaN where the critical-period end is
    unknown or no perturbation falls on one side of it."""
    cube = with_lr_schedule(cube)
    lasting = _at_end(cube, "perturb_l2") if lasting is None else lasting
    amplification = _log_amplification(lasting)
    end = located_end(cube)
    inside = lasting["perturb_epoch"] < end
    pooled = ["perturb_epoch", "epsilon", "replicate"]
    before = _nanmean(amplification.where(inside), pooled)
    after = _nanmean(amplification.where(~inside & end.notnull()), pooled)
    per_seed = np.exp(before - after).transpose(*RUN, "seed")
    overall = np.exp(_nanmean(before - after, ["seed"])).transpose(*RUN)
    return overall, per_seed


def perturbation_summary(cube: xr.Dataset) -> xr.Dataset:
    """The summary variables (module docstring) on the cube's dims; ``missing`` attributes
    say why a ratio is NaN."""
    cube = with_lr_schedule(cube)
    out: dict[str, xr.DataArray] = {}
    for name, (summary, long_name) in AVERAGED.items():
        if name not in cube:
            continue
        values = _at_end(cube, name)
        per_seed = _nanmean(values, ["replicate"])
        dims = [*RUN, "perturb_epoch", "epsilon"]
        out[summary] = _nanmean(values, ["seed", "replicate"]).transpose(*dims)
        out[summary].attrs = {"long_name": f"{long_name}, mean over seeds and replicates",
                              "units": "1"}
        low, high = per_seed.min("seed"), per_seed.max("seed")
        out[f"{summary}_seed_range"] = xr.concat([low, high], dim="bound").transpose(
            *dims, "bound").assign_coords(bound=["lower", "upper"])
        out[f"{summary}_seed_range"].attrs = {
            "long_name": f"lowest and highest per-seed mean of {summary}", "units": "1"}
    delay = matched_delay(cube)
    delayed = at_delay(cube)
    out["perturb_delay_l2"] = _nanmean(delayed, ["seed", "replicate"]).transpose(
        *RUN, "perturb_epoch", "epsilon").assign_attrs(
        long_name=f"L2 distance between copy and twin {delay} epochs after the perturbation "
                  "(the time the latest perturbation gets), mean over seeds and replicates",
        units="1")
    out.update(blur_ratio(cube))
    out["perturb_drop_epoch"] = drop_epoch(cube)
    for suffix, values, when in (("", None, f"at the end epoch {end_epoch(cube)}"),
                                 ("_delay", delayed, f"{delay} epochs after the perturbation")):
        overall, per_seed = sensitivity_ratio(cube, values)
        what = (f"geometric mean of L2 / epsilon {when} for perturbations before the "
                "critical-period end over that after it")
        out[f"perturb_cp_ratio{suffix}"] = overall.assign_attrs(
            long_name=f"{what} (geometric mean over seeds)", units="1",
            **_ratio_missing(cube, overall))
        out[f"perturb_cp_ratio{suffix}_seeds"] = per_seed.assign_attrs(
            long_name=f"{what}, per seed", units="1")
    return xr.Dataset(out)


def _log_amplification(lasting: xr.DataArray) -> xr.DataArray:
    """``ln(lasting / epsilon)`` where finite (epsilon 0 and zero distances left out)."""
    eps = lasting["epsilon"]
    out = np.log(lasting.where(eps > 0) / eps.where(eps > 0))
    return out.where(np.isfinite(out))


def blur_ratio(cube: xr.Dataset) -> dict[str, xr.DataArray]:
    """``perturb_blur_ratio`` and ``perturb_blur_ratio_seeds`` (module docstring): NaN for the
    never-blurred run itself, and everywhere when it was not perturbed."""
    cube = with_lr_schedule(cube)
    lasting = _log_amplification(_at_end(cube, "perturb_l2"))
    first = int(cube["switch_epoch"].min())
    paired = (lasting - lasting.sel(switch_epoch=first, drop=True)).where(
        lasting["switch_epoch"] > first)
    per_seed = np.exp(_nanmean(paired, ["epsilon", "replicate"]))
    overall = np.exp(_nanmean(np.log(per_seed), ["seed"]))
    what = (f"lasting L2 of the run over that of the never-blurred run (switch epoch {first}) "
            "nudged at the same epoch, paired by seed")
    missing = ({} if bool(lasting.sel(switch_epoch=first).notnull().any()) else
               {"missing": f"the never-blurred run (switch epoch {first}) was not perturbed; "
                           "add it to perturbation.switch_epochs"})
    return {"perturb_blur_ratio": overall.transpose(*RUN, "perturb_epoch").assign_attrs(
                long_name=f"{what}, geometric mean over seeds", units="1", **missing),
            "perturb_blur_ratio_seeds": per_seed.transpose(*RUN, "perturb_epoch", "seed")
            .assign_attrs(long_name=f"{what}, per seed", units="1")}


def drop_epoch(cube: xr.Dataset) -> xr.DataArray:
    """``perturb_drop_epoch`` (module docstring) per (batch size, schedule, run)."""
    from critperiods.results.fits import divergence_drop_epoch

    cube = with_lr_schedule(cube)
    amplification = np.exp(_nanmean(_log_amplification(_at_end(cube, "perturb_l2")),
                                    ["seed", "epsilon", "replicate"])).transpose(
        *RUN, "perturb_epoch")
    order = np.argsort(amplification["perturb_epoch"].values)
    amplification = amplification.isel(perturb_epoch=order)
    epochs = amplification["perturb_epoch"].values
    # the halving is measured against the earliest perturbation epoch: without a value
    # there it would silently be measured against a later one
    values = np.apply_along_axis(
        lambda y: divergence_drop_epoch(epochs, y) if np.isfinite(y[0]) else np.nan, -1,
        amplification.values)
    out = xr.DataArray(values, dims=RUN, coords={d: amplification[d] for d in RUN}, attrs={
        "long_name": "perturbation epoch at which the lasting L2 / epsilon first falls below "
                     "half its value at the earliest perturbation epoch, in epochs",
        "units": "1"})
    first = amplification.isel(perturb_epoch=0)
    nothing = first.isnull() & amplification.notnull().any("perturb_epoch")
    if bool(nothing.any()):
        out.attrs["missing"] = (f"no lasting distance at the earliest perturbation epoch "
                                f"({epochs[0]:g}), which the halving is measured against")
    return out


def _no_drop_reason(cube: xr.Dataset, at: dict) -> str:
    """Why one run's ``perturb_drop_epoch`` is NaN, in a few words."""
    amplification = _log_amplification(_at_end(with_lr_schedule(cube), "perturb_l2")).sel(at)
    finite = amplification.notnull().any([d for d in amplification.dims
                                          if d != "perturb_epoch"])
    epochs = np.sort(cube["perturb_epoch"].values)
    if not bool(finite.any()):
        return "no nudged copy with a nonzero epsilon"
    if not bool(finite.sel(perturb_epoch=epochs[0])):
        return (f"no lasting distance at the earliest perturbation epoch ({epochs[0]:g}), "
                "which the halving is measured against")
    if int(finite.sum()) < 2:
        return "fewer than two perturbation epochs with a lasting distance: nothing to halve"
    return "it stays above half its value at the earliest perturbation epoch"


def _delay_not_compared(cube: xr.Dataset) -> str:
    """Which perturbation epochs have no distance at the matched delay (its epoch was not
    compared), in words; "" where every one has."""
    delayed = at_delay(cube)
    missed = [f"{e:g}" for e in delayed["perturb_epoch"].values
              if bool(delayed.sel(perturb_epoch=e).isnull().all())]
    if not missed:
        return ""
    return (f"{matched_delay(cube)} epochs after perturbation epoch"
            f"{'s' if len(missed) != 1 else ''} {', '.join(missed)} no distance was compared "
            "(an epoch off the checkpoints: checkpoints.every / checkpoints.epochs)")


def _why_no_ratio(cube: xr.Dataset, batch_size: object, lr_schedule: object) -> str | None:
    """Why the ratios of one (batch size, schedule) are NaN, None if they need not be."""
    end = float(located_end(cube).sel(batch_size=batch_size, lr_schedule=lr_schedule))
    epochs = cube["perturb_epoch"].values
    if not np.isfinite(end):
        if "permanent_deficit_interval" not in cube or "permanent_deficit" not in cube:
            return "no critical-period end located"
        cell = cube.sel(batch_size=batch_size, lr_schedule=lr_schedule)
        lower, upper = (float(cell["permanent_deficit_interval"].sel(bound=b))
                        for b in ("lower", "upper"))
        why = unlocated_reason(float(cell["permanent_deficit"]), lower, upper)
        return f"no critical-period end located ({why})"
    if not (epochs < end).any():
        return f"the critical-period end (epoch {end:.3g}) precedes every perturbation epoch"
    if (epochs < end).all():
        return f"every perturbation epoch precedes the critical-period end (epoch {end:.3g})"
    return None


def _ratio_missing(cube: xr.Dataset, ratio: xr.DataArray) -> dict[str, str]:
    """Why ratios are NaN, as a ``missing`` attribute (empty when none is)."""
    reasons = [f"batch {b}, {r}: {why}" for b in ratio["batch_size"].values
               for r in ratio["lr_schedule"].values
               if (why := _why_no_ratio(cube, b, r)) is not None]
    return {"missing": "; ".join(reasons)} if reasons else {}


# ---------------------------------------------------------------------------------------------
# Tables and sentences (summarize, report)


def _fmt(x: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.{digits}g}"


def _points(fraction: float) -> str:
    """An accuracy change in points; float round-off of a mean of equal accuracies (far below
    one test image's 1/N) reads 0, not ``-3.7e-15``."""
    return _fmt(round(100 * fraction, 9) + 0.0)


def perturbation_rows(cube: xr.Dataset) -> pd.DataFrame:
    """One row per (batch size, schedule, perturbed run, perturbation epoch, epsilon): where
    the perturbation fell (``critical_period``: "inside" or "after" the end's estimate, with
    "?" where the epoch lies in the end's interval), the lasting divergence and accuracy
    change (mean and seed range), and the early rate."""
    cube = with_lr_schedule(cube)
    rows = []
    lasting = cube["perturb_lasting_l2"]
    ends = located_end(cube)
    interval = cube.get("critical_period_end_interval")
    for b in lasting["batch_size"].values:
        for r in lasting["lr_schedule"].values:
            end = float(ends.sel(batch_size=b, lr_schedule=r))
            end_lo, end_hi = ((np.nan, np.nan) if interval is None else interval.sel(
                {d: v for d, v in (("batch_size", b), ("lr_schedule", r))
                 if d in interval.dims}).values)
            for k in lasting["switch_epoch"].values:
                for e in lasting["perturb_epoch"].values:
                    for eps in lasting["epsilon"].values:
                        at = {"batch_size": b, "lr_schedule": r, "switch_epoch": k,
                              "perturb_epoch": e, "epsilon": eps}
                        value = float(lasting.sel(at))
                        if not np.isfinite(value):
                            continue
                        row = {"batch_size": int(b), "lr_schedule": str(r), "run": int(k),
                               "perturb_epoch": int(e), "epsilon": float(eps),
                               "phase": "blurred" if e < k else "sharp",
                               "critical_period": (("inside" if e < end else "after")
                                                   + ("?" if end_lo <= e <= end_hi else ""))
                               if np.isfinite(end) else "unknown"}
                        if "perturb_blur_ratio" in cube:
                            row["perturb_blur_ratio"] = float(cube["perturb_blur_ratio"].sel(
                                {d: v for d, v in at.items() if d != "epsilon"}))
                        for name in ("perturb_lasting_l2", "perturb_delay_l2",
                                     "perturb_lasting_disagreement",
                                     "perturb_accuracy_change_mean", "perturb_early_rate_mean"):
                            if name in cube:
                                row[name] = float(cube[name].sel(at))
                                if f"{name}_seed_range" in cube:
                                    lo, hi = cube[f"{name}_seed_range"].sel(at).values
                                    row[f"{name}_lower"], row[f"{name}_upper"] = lo, hi
                        rows.append(row)
    return pd.DataFrame(rows)


def _ratio_text(cube: xr.Dataset, suffix: str, at: dict) -> tuple[float, str]:
    """A ratio over seeds and its text with the seeds' values."""
    x = float(cube[f"perturb_cp_ratio{suffix}"].sel(at))
    per = cube[f"perturb_cp_ratio{suffix}_seeds"].sel(at).values
    agree = int((per > 1).sum()) if x > 1 else int((per < 1).sum())
    return x, (f"{_fmt(x)} (per seed: {', '.join(_fmt(v) for v in per)}; {agree} of "
               f"{int(np.isfinite(per).sum())} seeds on the same side of 1)")


def _bracket(cube: xr.Dataset, drop: float) -> str:
    """Which two perturbation epochs the interpolated drop lies between: the grid places it
    there, the interpolation within them is a straight line, not data."""
    epochs = np.sort(cube["perturb_epoch"].values) if "perturb_epoch" in cube.coords else []
    below, above = [e for e in epochs if e < drop], [e for e in epochs if e > drop]
    if not (np.isfinite(drop) and below and above):
        return ""
    return (f", interpolated between perturbation epochs {_fmt(below[-1])} and "
            f"{_fmt(above[0])}")


def _marker_lines(cube: xr.Dataset, at: dict, run: str) -> list[str]:
    """Where sensitivity halves, and the blur ratio inside and after the blurred phase."""
    k = int(at["switch_epoch"])
    drop = float(cube["perturb_drop_epoch"].sel(at)) if "perturb_drop_epoch" in cube else np.nan
    half = (float(cube["half_deficit_epoch"].sel(batch_size=at["batch_size"],
                                                 lr_schedule=at["lr_schedule"]))
            if "half_deficit_epoch" in cube else np.nan)
    halves = (f"halves by perturbation epoch {_fmt(drop)}{_bracket(cube, drop)}"
              if np.isfinite(drop) else "does not halve: "
              + _no_drop_reason(cube, at))
    lines = [f"batch {at['batch_size']}, {at['lr_schedule']}, {run}: lasting L2 / epsilon "
             f"{halves} (" + (f"half-deficit epoch {_fmt(half)})" if np.isfinite(half)
                              else "no half-deficit epoch)")]
    if "perturb_blur_ratio" not in cube or k == int(cube["switch_epoch"].min()):
        return lines
    ratio = cube["perturb_blur_ratio"].sel(at)
    seeds = cube["perturb_blur_ratio_seeds"].sel(at)
    parts = []
    for where, mask in (("inside its blurred phase", ratio["perturb_epoch"] < k),
                        ("after its switch", ratio["perturb_epoch"] >= k)):
        r, per = ratio.where(mask, drop=True), seeds.where(mask, drop=True)
        if r.size and np.isfinite(r.values).any():
            geo = float(np.exp(nanmean(np.log(r.values))))
            by_seed = np.exp(nanmean(np.log(per.values), axis=0))
            epochs = r.perturb_epoch.values
            parts.append(f"{where} (epoch{'s' if epochs.size != 1 else ''} "
                         f"{', '.join(map(str, epochs))}) "
                         f"{_fmt(geo)}× (per seed {', '.join(_fmt(v) for v in by_seed)})")
    if parts:
        lines.append(f"batch {at['batch_size']}, {at['lr_schedule']}, {run}: a nudge carries, "
                     "relative to the never-blurred run nudged at the same epoch, "
                     + "; ".join(parts))
    return lines


def verdict_lines(cube: xr.Dataset) -> list[str]:
    """Per (batch size, schedule, perturbed run): the sensitivity ratios with the seeds'."""
    cube = with_lr_schedule(cube)
    lines = []
    ratio = cube["perturb_cp_ratio"]
    lasting = cube["perturb_lasting_l2"]
    ends = located_end(cube)
    missed = _delay_not_compared(cube)  # the same for every run: the grid's epochs
    for b in ratio["batch_size"].values:
        for r in ratio["lr_schedule"].values:
            end = float(ends.sel(batch_size=b, lr_schedule=r))
            for k in ratio["switch_epoch"].values:
                at = {"batch_size": b, "lr_schedule": r, "switch_epoch": k}
                if bool(lasting.sel(at).isnull().all()):
                    continue  # this run was not perturbed
                run = "never-blurred run" if k == 0 else f"run blurred until epoch {k}"
                lines += _marker_lines(cube, at, run)
                x, text = _ratio_text(cube, "", at)
                if not np.isfinite(x):
                    why = _why_no_ratio(cube, b, r) or "too few finite distances"
                    lines.append(f"batch {b}, {r}, {run}: inside vs after the critical period: "
                                 f"n/a, {why}")
                    continue
                xd, delayed = _ratio_text(cube, "_delay", at)
                delay = matched_delay(cube)
                if not np.isfinite(xd):  # the second measure was not taken: no call on it
                    answer = ("carries further than one after it at the end epoch (the "
                              "matched delay has no compared epoch to confirm it)" if x > 1
                              else "carries less far than one after it at the end epoch (the "
                              "matched delay has no compared epoch to confirm it)")
                    delayed = "n/a, " + (missed or "too few finite distances")
                elif x > 1 and xd > 1:
                    answer = "carries further than one after it"
                elif x < 1 and xd < 1:
                    answer = "carries less far than one after it"
                elif (x - 1) * (xd - 1) < 0:
                    answer = "has no consistent answer (the two measures disagree)"
                else:  # a ratio of exactly 1
                    answer = "carries no further than one after it by one measure"
                if np.isfinite(xd) and missed:  # the delayed ratio is over a subset
                    delayed += f" ({missed}: those are left out of it)"
                lines.append(
                    f"batch {b}, {r}, {run}: a nudge before the critical-period end (epoch "
                    f"{_fmt(end)}) {answer}. L2 / epsilon before over after, at the end: "
                    f"{text}; {delay} epoch{'s' if delay != 1 else ''} after the nudge: "
                    f"{delayed}")
    left_out = diverged_perturbed_runs(cube)
    if left_out:
        lines.append("diverged to chance (final sharp accuracy below 1.5 × chance), and left "
                     f"out of every ratio and mean with the copies they hold: "
                     f"{'; '.join(left_out)}")
    blown = blown_up_copies(cube)
    if blown:
        lines.append("nudged copies that ended at chance while their twin did not, counted "
                     "in every ratio and mean (the largest response a nudge can give, "
                     f"which dominates a mean of distances): {'; '.join(blown)}")
    return lines


def growth_lines(cube: xr.Dataset) -> list[str]:
    """The growth laws that won (over steps: the early phase; over epochs: the late one) and
    the early rate, over every copy with a nonzero epsilon, but those of runs that diverged
    to chance (:func:`_valid`)."""
    from critperiods.measure.growth_laws import ALL_FORMS

    lines = []
    nonzero = cube["epsilon"] > 0
    for name, what in (("perturb_step_growth_form", "first steps after"),
                       ("perturb_l2_growth_form", "epochs after")):
        if name not in cube:
            continue
        codes = valid_copies(cube, name).where(nonzero).values
        codes = codes[np.isfinite(codes) & (codes >= 0)].astype(int)
        if codes.size == 0:
            continue
        counts = {f: int((codes == i).sum()) for i, f in enumerate(ALL_FORMS)}
        ranked = ", ".join(f"{f} {n}" for f, n in sorted(counts.items(), key=lambda x: -x[1])
                           if n)
        lines.append(f"growth of the L2 distance over the {what} the perturbation "
                     f"(lowest AIC, {codes.size} copies): {ranked}")
    if "perturb_early_rate" in cube:
        rates = valid_copies(cube, "perturb_early_rate").where(nonzero).values
        rates = rates[np.isfinite(rates)]
        if rates.size:
            q1, med, q3 = np.percentile(rates, [25, 50, 75])
            steps = int(cube["step"].max())
            line = (f"early rate (slope of ln distance per step over {steps} steps): median "
                    f"{_fmt(med)} [quartiles {_fmt(q1)}, {_fmt(q3)}], x{np.exp(med * steps):.3g}"
                    f" over the {steps} steps at that rate")
            if "perturb_step_l2" in cube:  # what the copies did, beside what the fit says
                l2 = valid_copies(cube, "perturb_step_l2").where(nonzero)
                grown = (l2.sel(step=steps) / l2.sel(step=int(cube["step"].min()))).values
                grown = grown[np.isfinite(grown)]
                if grown.size:
                    g1, gm, g3 = np.percentile(grown, [25, 50, 75])
                    line += (f"; measured growth over them: median x{gm:.3g} [quartiles "
                             f"x{g1:.3g}, x{g3:.3g}]")
            lines.append(line)
    return lines


def format_perturbation(cube: xr.Dataset) -> str:
    """The perturbation table and sentences for the terminal (``summarize``)."""
    table = perturbation_rows(cube)
    if table.empty:
        return "no perturbation results"
    one_seed = int(cube.sizes.get("seed", 1)) == 1  # a range of one value says nothing

    def ranged(m: float, lo: float, hi: float, fmt: Callable[[float], str] = _fmt) -> str:
        return fmt(m) if one_seed else f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]"

    columns = {
        "batch": table["batch_size"].astype(str), "lr": table["lr_schedule"],
        "run": table["run"].astype(str), "e": table["perturb_epoch"].astype(str),
        "eps": table["epsilon"].map(_fmt), "phase": table["phase"],
        "cp": table["critical_period"],
        "lasting_l2": [ranged(m, lo, hi) for m, lo, hi in zip(
            table["perturb_lasting_l2"], table["perturb_lasting_l2_lower"],
            table["perturb_lasting_l2_upper"], strict=True)],
    }
    if "perturb_delay_l2" in table:
        columns[f"l2_after_{matched_delay(cube)}ep"] = table["perturb_delay_l2"].map(_fmt)
    if "perturb_blur_ratio" in table:
        # "–": the never-blurred run itself, or epsilon 0 (the ratio is over nudges)
        columns["vs_never"] = ["–" if run == 0 or eps == 0 else _fmt(v) for run, eps, v in
                               zip(table["run"], table["epsilon"], table["perturb_blur_ratio"],
                                   strict=True)]
    if "perturb_lasting_disagreement" in table:
        columns["disagree"] = table["perturb_lasting_disagreement"].map(_fmt)
    if "perturb_accuracy_change_mean" in table:
        columns["d_acc_pp"] = [ranged(m, lo, hi, _points)
                               for m, lo, hi in zip(
            table["perturb_accuracy_change_mean"], table["perturb_accuracy_change_mean_lower"],
            table["perturb_accuracy_change_mean_upper"], strict=True)]
    if "perturb_early_rate_mean" in table:
        columns["early_rate"] = table["perturb_early_rate_mean"].map(_fmt)
    widths = {k: max(len(k), *(len(str(v)) for v in col)) for k, col in columns.items()}
    lines = ["  ".join(k.rjust(widths[k]) for k in columns)]
    for i in range(len(table)):
        lines.append("  ".join(str(list(columns[k])[i]).rjust(widths[k]) for k in columns))
    spread = ("one seed: no range" if one_seed
              else "mean over seeds and replicates [range of the per-seed means]")
    lines.append(f"(run: switch epoch of the run perturbed; e: perturbation epoch; cp: before "
                 "(inside) or after the critical-period end's estimate, '?' where e lies in "
                 f"the end's interval; lasting at epoch {end_epoch(cube)}: {spread}; "
                 "l2_after: at the matched delay; vs_never: lasting L2 over "
                 "the never-blurred run's at the same epoch, paired by seed, over the nonzero "
                 "epsilons; d_acc: copy minus twin, percentage points)")
    if "perturb_blur_ratio" in cube and "missing" in cube["perturb_blur_ratio"].attrs:
        lines.append(f"vs_never n/a: {cube['perturb_blur_ratio'].attrs['missing']}")
    return "\n".join([*lines, "", *verdict_lines(cube), *growth_lines(cube)])


__all__ = ["at_delay", "blown_up_copies", "blur_ratio", "copies_at_chance",
           "diverged_perturbed_runs", "drop_epoch", "end_epoch", "format_perturbation",
           "growth_lines", "matched_delay", "perturbation_rows", "perturbation_summary",
           "sensitivity_ratio", "twin_at_chance", "valid_copies", "verdict_lines"]
