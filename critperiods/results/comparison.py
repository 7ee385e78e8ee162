"""Several runs side by side, for a question the grid does not sweep (the blur, the width,
the rate, the data): one experiment per value, then ``python -m critperiods compare``.

:func:`~critperiods.results.setup.differing_keys` names the config keys the runs differ in
(the values that can change a result); :func:`accuracy_differences` sets each run's final
sharp test accuracy, and its permanent deficit, against the first run's, paired by seed (a
seed fixes the initialisation and the data order in every experiment);
:func:`format_comparison` says them, with each run's end and deficit as its own cube gives
them, as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from critperiods.results.fits import mean_t_interval
from critperiods.results.selection import run_diverged, with_lr_schedule
from critperiods.results.setup import differing_keys, listed, recorded_config
from critperiods.results.tables import points, unlocated_text

#: The dimensions runs are matched on; a run's value is compared where every run has one.
MATCHED = ("batch_size", "lr_schedule", "switch_epoch", "seed")


@dataclass(frozen=True)
class Run:
    """One run of a comparison: its ``name`` (the experiment), its ``cube``, its summary
    ``table`` (:func:`critperiods.results.tables.summary_table`), and what the comparison
    says of it besides: the runs that diverged to chance (``diverged``, one line each) and
    why its stored statistics were recomputed (``recomputed``, or None)."""

    name: str
    cube: xr.Dataset
    table: Any
    diverged: tuple[str, ...] = ()
    recomputed: str | None = None


def _accuracy(cube: xr.Dataset) -> xr.DataArray:
    """Final sharp test accuracy per run, NaN where the run diverged to chance (as every
    statistic leaves it out), with an ``lr_schedule`` dim (:func:`with_lr_schedule`)."""
    return with_lr_schedule(cube["final_test_accuracy"].where(~run_diverged(cube)))


def _paired(per_seed: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, Student-t interval and seed count of the differences along the last axis, for
    every cell of the others (:func:`mean_t_interval`)."""
    shape = per_seed.shape[:-1]
    mean, interval = np.full(shape, np.nan), np.full((*shape, 2), np.nan)
    seeds = np.zeros(shape, dtype=int)
    for cell in np.ndindex(shape):
        m, lower, upper, n = mean_t_interval(per_seed[cell], level)
        mean[cell], interval[cell], seeds[cell] = m, (lower, upper), n
    return mean, interval, seeds


def accuracy_differences(cubes: Sequence[xr.Dataset], level: float = 0.90) -> xr.Dataset:
    """Each run's final accuracy and permanent deficit against the first run's, over the
    batch sizes, schedules, switch epochs and seeds every cube has (the ``left_out``
    attribute names the others).

    * ``accuracy`` (``run, batch_size, lr_schedule, switch_epoch``): the mean over those
      seeds, each run's valid runs among them.
    * ``difference`` (+ ``_interval`` with a ``bound`` dim, + ``_seeds``): run minus the
      first, seed by seed, then the mean over the seeds where both ran and did not diverge,
      with its central Student-t ``level`` interval (:func:`mean_t_interval`); NaN for the
      first run itself.
    * ``deficit_difference`` (+ ``_interval``, + ``_seeds``; ``run, batch_size,
      lr_schedule``): the same for each seed's deficit, the accuracy at the earliest switch
      minus that at the latest (NaN with one switch in common). Where the key changes the
      never-blurred run too (the width, the rate), an offset at every switch is no change
      of the critical period; this difference takes it out.

    Runs that diverged to chance are left out. Raises ``ValueError`` where the runs share no
    value of one of :data:`MATCHED`."""
    accs = [_accuracy(c) for c in cubes]
    seen = {dim: [set(a[dim].values.tolist()) for a in accs] for dim in MATCHED}
    common = {dim: sorted(set.intersection(*sets)) for dim, sets in seen.items()}
    if empty := [dim for dim in MATCHED if not common[dim]]:
        raise ValueError(f"these runs share no {' and no '.join(empty)}: nothing to pair "
                         "(compare pairs runs by batch size, schedule, switch epoch and seed)")
    left_out = "; ".join(f"{dim} {listed(extra)}" for dim, sets in seen.items()
                         if (extra := sorted(set().union(*sets) - set(common[dim]))))
    matched = [a.sel(common).transpose(*MATCHED) for a in accs]
    values = np.stack([a.values for a in matched])
    first_switch, last_switch = values[..., :1, :], values[..., -1:, :]
    deficits = (first_switch - last_switch)[..., 0, :]  # run, batch, schedule, seed
    if len(common["switch_epoch"]) < 2:  # one switch in common: no deficit to compare
        deficits = np.full_like(deficits, np.nan)
    diff, diff_interval, diff_seeds = _paired(values - values[:1], level)
    deficit, deficit_interval, deficit_seeds = _paired(deficits - deficits[:1], level)
    for array in (diff, diff_interval, deficit, deficit_interval):
        array[0] = np.nan  # the baseline against itself says nothing
    diff_seeds[0] = deficit_seeds[0] = 0
    dims = ("run", *MATCHED[:3])
    return xr.Dataset(
        {"accuracy": (dims, np.stack([a.mean("seed").values for a in matched])),
         "difference": (dims, diff),
         "difference_interval": ((*dims, "bound"), diff_interval),
         "difference_seeds": (dims, diff_seeds),
         "deficit_difference": (dims[:3], deficit),
         "deficit_difference_interval": ((*dims[:3], "bound"), deficit_interval),
         "deficit_difference_seeds": (dims[:3], deficit_seeds)},
        coords={"run": np.arange(len(accs)), **{d: common[d] for d in dims[1:]},
                "bound": ["lower", "upper"]},
        attrs={"level": level, "left_out": left_out})


def _difference(mean: float, interval: Sequence[float], seeds: int) -> str:
    """"+4.2 [+3.3, +5.0] (3)": a paired difference in points, its interval and seeds."""
    lower, upper = interval
    return f"{points(mean, True)} [{points(lower, True)}, {points(upper, True)}] ({seeds})"


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as right-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]


def _critical_period(run: Run, batch_size: float, lr_schedule: str) -> str:
    """A run's end and deficit in one cell, as its own summary gives them."""
    table = run.table
    hit = table[(table["batch_size"] == batch_size) & (table["lr_schedule"] == lr_schedule)]
    if hit.empty:
        return "-"
    row = hit.iloc[0]
    deficit, lower, upper = (row[f"permanent_deficit{s}"] for s in ("", "_lower", "_upper"))
    end = (f"{row['critical_period_end']:.1f} [{row['critical_period_end_lower']:.1f}, "
           f"{row['critical_period_end_upper']:.1f}]" if row["critical_period_end_located"]
           else unlocated_text(deficit, lower, upper))
    seeds = row.get("permanent_deficit_seeds", float("nan"))
    return (f"{end}; {points(deficit)} [{points(lower)}, {points(upper)}]"
            + (f" ({int(seeds)})" if np.isfinite(seeds) else ""))


def _stage_values(cube: xr.Dataset) -> dict[str, dict[str, frozenset]] | None:
    """``{"code": {stage: fingerprints}, "data": {split: fingerprints}, "device": {stage:
    devices}}`` of the cube's pieces, from its ``provenance`` attribute (None for a cube
    without one); the
    ``train`` stage's are those of the training pieces its results were computed from,
    ``aggregate``'s the code that computed the cube's statistics."""
    import json

    from critperiods.pipeline.provenance_report import data_versions, devices, versions

    text = cube.attrs.get("provenance")
    if not text:
        return None
    prov = json.loads(text)
    code = {k: frozenset(v) for k, v in versions(prov).items()}
    if "code" in prov.get("aggregate", {}):  # its statistics
        code["aggregate"] = frozenset([prov["aggregate"]["code"]])
    return {"code": code,
            "data": {k: frozenset(v) for k, v in data_versions(prov).items()},
            "device": {k: frozenset(v) for k, v in devices(prov).items()}}


def provenance_differences(names: Sequence[str], cubes: Sequence[xr.Dataset]) -> list[str]:
    """What besides the config can make the runs' results differ, one line each: each
    stage whose code (its fingerprints, ``provenance``) or device, and each data split whose
    fingerprint, differs between the runs (``names``), and the recorded library versions
    (:data:`LIBRARIES`). Where every stage's code and every split agree, commits that differ
    (``git_commit``, the commit ``aggregate`` ran at) are said to have made no difference;
    a cube without provenance is said to hide its code."""
    lines = []
    recorded = [_stage_values(c) for c in cubes]
    missing = [n for n, r in zip(names, recorded, strict=True) if r is None]
    commits = [c.attrs.get("git_commit") for c in cubes]
    if missing:
        lines.append(f"code: {', '.join(missing)} record{'s' if len(missing) == 1 else ''} no "
                     "provenance (a cube from before it was kept): cannot tell whether the "
                     "code differs")
        if len({c for c in commits if c}) > 1:
            lines.append("code (git_commit): " + " | ".join((c or "?")[:7] for c in commits)
                         + ": differences may also be the code's")
    else:
        code_differs = False
        for word, note in (("code", "differences may also be the code's"),
                           ("data", "the prepared images differ (a config key above, or the "
                            "data or their preparation changed)"),
                           ("device", "results repeat bit for bit only on one device; "
                            "differences may also be the hardware's")):
            for stage in sorted({s for r in recorded for s in r[word]}):
                values = [r[word].get(stage, frozenset()) for r in recorded]
                if len(set(values)) > 1:
                    code_differs |= word != "device"
                    lines.append(f"{word} of {stage}: " + " | ".join(
                        ", ".join(sorted(v)) or "-" for v in values) + f": {note}")
        if not code_differs and len({c for c in commits if c}) > 1:
            lines.append("code (git_commit): " + " | ".join((c or "?")[:7] for c in commits)
                         + ", but every stage ran the same code on the same data (provenance): "
                         "the commits differ in nothing these results depend on")
    for library in LIBRARIES:
        found = [c.attrs.get(f"{library}_version") for c in cubes]
        if len({v for v in found if v}) > 1:
            lines.append(f"{library}: " + " | ".join(v or "?" for v in found)
                         + ": differences may also be the library's")
    return lines


#: What else can move a result's last bits: the libraries whose versions the cube records
#: (``<name>_version``; cubes made before 2026-12-08 record torch's only).
LIBRARIES = ("torch", "numpy", "scipy", "xarray", "arviz_stats", "python")


def format_comparison(runs: Sequence[Run], differences: xr.Dataset) -> str:
    """The comparison as the terminal prints it: what the runs differ in and what was left
    out, each run's end and deficit per batch size and schedule (as its cube gives them),
    the deficits' paired differences from the first run, and the final accuracy per switch
    with each run's paired difference from the first."""
    names = [r.name for r in runs]
    lines = [f"comparing {len(runs)} runs, the first ({names[0]}) as the baseline:"]
    configs = [recorded_config(r.cube) for r in runs]
    unrecorded = [r.name for r, c in zip(runs, configs, strict=True) if not c]
    differ = {} if unrecorded else differing_keys(configs)
    lines += [f"  {key}: " + " | ".join(str(v) for v in values)
              for key, values in differ.items()]
    if unrecorded:
        lines.append(f"  {', '.join(unrecorded)}: no recorded config (the cube's config "
                     "attribute): cannot tell what the runs differ in")
    elif not differ:
        lines.append("  (their configs agree on every key that can change a result)")
    lines += [f"  {line}" for line in provenance_differences(names, [r.cube for r in runs])]
    if differences.attrs.get("left_out"):
        lines.append(f"  not in every run, left out: {differences.attrs['left_out']}")
    if "dataset.name" in differ:
        lines.append("  on different data, a seed's runs share only their initial weights and "
                     "batch order: pairing by seed still gives each difference, but need not "
                     "narrow its interval")
    if any("perturb_l2" in r.cube for r in runs):
        lines.append("  the perturbation study's results are not compared here: `summarize` "
                     "each cube for them")
    for run in runs:
        if run.recomputed:
            lines.append(f"  {run.name}: statistics recomputed (this cube {run.recomputed})")
        if run.diverged:
            lines.append(f"  {run.name}: {len(run.diverged)} run(s) diverged to chance, left "
                         "out: " + "; ".join(run.diverged))
    level = float(differences.attrs.get("level", 0.9))
    lines += ["", "each run's critical period, as its own cube gives it (intervals at its "
              "analysis.interval_level): end (epoch) [interval], or why none is located; "
              "deficit (pp) [Student-t interval] (seeds)"]
    rows = [["batch", "lr", *names]]
    cells = [(b, str(r)) for b in differences["batch_size"].values
             for r in differences["lr_schedule"].values]
    rows += [[f"{b:g}", r, *(_critical_period(run, b, r) for run in runs)] for b, r in cells]
    lines += _columns(rows)
    shared = differences["switch_epoch"].values
    span = (f"switch {shared[0]:g} minus switch {shared[-1]:g}, the earliest and latest "
            "every run has" if shared.size > 1 else "none: the runs share one switch epoch")
    own = [r.name for r in runs if shared.size > 1 and (
        float(r.cube["switch_epoch"].min()), float(r.cube["switch_epoch"].max()))
        != (shared[0], shared[-1])]
    lines += ["", f"the deficit ({span}): each later run minus "
              f"{names[0]}, paired by seed, in points [{level:.0%} Student-t interval] "
              "(seeds)"]
    if own:
        lines.append(f"  (the deficit of {', '.join(own)} above spans its own earliest and "
                     "latest switches, not these)")
    rows = [["batch", "lr", *names[1:]]]
    for b, r in cells:
        at = differences.sel(batch_size=b, lr_schedule=r)
        rows.append([f"{b:g}", r, *(_difference(
            float(at["deficit_difference"].sel(run=i)),
            at["deficit_difference_interval"].sel(run=i).values,
            int(at["deficit_difference_seeds"].sel(run=i))) for i in range(1, len(runs)))])
    lines += _columns(rows)
    lines += ["", "final sharp test accuracy (%), each run's mean over its own valid seeds "
              f"(of those every run has); each later run's difference from {names[0]}, "
              f"paired by seed (where both are valid), in points [{level:.0%} Student-t "
              "interval] (seeds)"]
    for b, r in cells:
        at = differences.sel(batch_size=b, lr_schedule=r)
        rows = [["switch", *names]]
        for k in at["switch_epoch"].values:
            one = at.sel(switch_epoch=k)
            rows.append([f"{k:g}", points(float(one["accuracy"].sel(run=0))), *(
                f"{points(float(one['accuracy'].sel(run=i)))} " + _difference(
                    float(one["difference"].sel(run=i)),
                    one["difference_interval"].sel(run=i).values,
                    int(one["difference_seeds"].sel(run=i))) for i in range(1, len(runs)))])
        lines += [f"batch {b:g}, {r}:", *("  " + line for line in _columns(rows))]
    return "\n".join(lines)


def comparison_table(differences: xr.Dataset, names: Sequence[str]) -> Any:
    """:func:`accuracy_differences` as a table (a pandas DataFrame), one row per run,
    batch size, schedule and switch epoch: ``accuracy``, ``difference`` with
    ``difference_lower``/``difference_upper`` and ``difference_seeds``, and the cell's
    ``deficit_difference`` (repeated on each switch's row) with its bounds and seeds, and
    the intervals' ``level``. Accuracies and differences are fractions, as the cube holds
    them (0.024 is 2.4 points)."""
    flat = differences.assign_coords(run=list(names))
    for name in ("difference", "deficit_difference"):
        bounds = flat[f"{name}_interval"]
        flat = flat.assign({f"{name}_lower": bounds.sel(bound="lower", drop=True),
                            f"{name}_upper": bounds.sel(bound="upper", drop=True)})
    flat = flat.drop_vars(["difference_interval", "deficit_difference_interval"])
    table = flat.drop_dims("bound").to_dataframe().reset_index()
    table["level"] = float(differences.attrs.get("level", np.nan))
    return table[["run", *MATCHED[:3], "accuracy", "difference", "difference_lower",
                  "difference_upper", "difference_seeds", "deficit_difference",
                  "deficit_difference_lower", "deficit_difference_upper",
                  "deficit_difference_seeds", "level"]]


def run_names(cubes: Sequence[xr.Dataset], paths: Sequence[str]) -> list[str]:
    """The runs' experiment names, or, where two runs share one, every run's path."""
    names = [recorded_config(c).get("experiment") or str(p) for c, p in zip(cubes, paths,
                                                                              strict=True)]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


__all__ = ["MATCHED", "Run", "accuracy_differences", "comparison_table", "format_comparison",
           "provenance_differences", "run_names"]
