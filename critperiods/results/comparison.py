"""Several runs side by side, for a question the grid does not sweep (the blur, the width,
the rate, the data): one experiment per value, then ``python -m critperiods compare``.

:func:`differing_keys` names the config keys the runs differ in (the values that can change
a result); :func:`accuracy_differences` sets each run's final sharp test accuracy against
the first run's, switch by switch, paired by seed (a seed fixes the initialisation and the
data order in every experiment, so the never-blurred runs of two blurs are the same run);
:func:`format_comparison` says both, with each run's end and deficit, as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from critperiods.results.fits import mean_t_interval
from critperiods.results.selection import run_diverged
from critperiods.results.setup import recorded_config

#: Keys that cannot change a result (names, folders, figure and cluster settings): never
#: reported as a difference. A key ending in "." stands for everything under it.
NOT_RESULTS = ("experiment", "results_dir", "laid_over", "dataset.root", "plots.",
               "runtime.")


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dataset.blur_size": 4, …}``: the nested config as dotted keys (lists as values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The dotted config keys whose values are not the same in every config, with each
    config's value (None where it has none), keys that cannot change a result
    (:data:`NOT_RESULTS`) left out."""
    flat = [_flat(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys
            if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in NOT_RESULTS)
            and any(f.get(k) != flat[0].get(k) for f in flat[1:])}


def _accuracy(cube: xr.Dataset) -> xr.DataArray:
    """Final sharp test accuracy per run, NaN where the run diverged to chance (as every
    statistic leaves it out)."""
    acc = cube["final_test_accuracy"]
    acc = acc.where(~run_diverged(cube))
    return acc if "lr_schedule" in acc.dims else acc.expand_dims(lr_schedule=["continue"])


def accuracy_differences(cubes: Sequence[xr.Dataset], level: float = 0.90) -> xr.Dataset:
    """Each run's final accuracy per (batch size, schedule, switch epoch), and against the
    first run's, over the coordinates every cube has.

    ``accuracy`` (dims ``run, batch_size, lr_schedule, switch_epoch``): the mean over the
    run's own seeds. ``difference`` (+ ``difference_interval`` with a ``bound`` dim, and
    ``difference_seeds``): run minus the first, per seed, then the mean over the seeds both
    have and its central Student-t ``level`` interval (:func:`mean_t_interval`; NaN for the
    first run itself and with a single seed). Runs that diverged to chance are left out, and
    so are coordinates some cube lacks (the ``left_out`` attribute names them)."""
    accs = [_accuracy(c) for c in cubes]
    dims = ("batch_size", "lr_schedule", "switch_epoch", "seed")
    common = {dim: sorted(set.intersection(*(set(a[dim].values.tolist()) for a in accs)))
              for dim in dims}
    left_out = "; ".join(
        f"{dim} " + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in extra)
        for dim in dims
        if (extra := sorted(set().union(*(set(a[dim].values.tolist()) for a in accs))
                            - set(common[dim]))))
    accs = [a.sel(common).transpose("batch_size", "lr_schedule", "switch_epoch", "seed")
            for a in accs]
    shape = (len(accs), *(len(common[d]) for d in ("batch_size", "lr_schedule",
                                                     "switch_epoch")))
    diff, interval = np.full(shape, np.nan), np.full((*shape, 2), np.nan)
    seeds = np.zeros(shape, dtype=int)
    first = accs[0].values
    for i, acc in enumerate(accs[1:], start=1):
        per_seed = acc.values - first
        for cell in np.ndindex(shape[1:]):
            mean, lower, upper, n = mean_t_interval(per_seed[cell], level)
            diff[(i, *cell)], interval[(i, *cell)], seeds[(i, *cell)] = mean, (lower, upper), n
    dims = ("run", *dims[:3])
    coords = {"run": np.arange(len(accs)), **{d: common[d] for d in dims[1:]}}
    return xr.Dataset(
        {"accuracy": (dims, np.stack([a.mean("seed").values for a in accs])),
         "difference": (dims, diff),
         "difference_interval": ((*dims, "bound"), interval),
         "difference_seeds": (dims, seeds)},
        coords={**coords, "bound": ["lower", "upper"]},
        attrs={"level": level, "left_out": left_out})


def _pp(value: float) -> str:
    """A fraction in percentage points to 0.1, signed where asked ("nan" for missing)."""
    return "nan" if not np.isfinite(value) else f"{round(100 * value, 1) + 0.0:.1f}"


def _signed_pp(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{round(100 * value, 1) + 0.0:+.1f}"


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as right-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]


def format_comparison(names: Sequence[str], tables: Sequence[Any],
                      differences: xr.Dataset, configs: Sequence[Mapping[str, Any]],
                      commits: Sequence[str | None]) -> str:
    """The comparison as the terminal prints it: what the runs differ in, each run's end and
    deficit per batch size and schedule (``tables``: each run's
    :func:`critperiods.results.tables.summary_table`), and the final accuracy per switch
    with each run's paired difference from the first."""
    lines = [f"comparing {len(names)} runs, the first ({names[0]}) as the baseline:"]
    differ = differing_keys(configs)
    lines += [f"  {key}: " + " | ".join(str(v) for v in values)
              for key, values in differ.items()]
    if not differ:
        lines.append("  (their configs agree on every key that can change a result)")
    if len({c for c in commits if c}) > 1:
        lines.append("  code (git_commit): " + " | ".join((c or "?")[:7] for c in commits)
                     + ": differences may also be the code's")
    if differences.attrs.get("left_out"):
        lines.append(f"  not in every run, left out: {differences.attrs['left_out']}")
    level = float(differences.attrs.get("level", 0.9))
    lines += ["", "the critical period of each run: end (epoch) [interval], or why none is "
              "located; deficit (pp) [Student-t interval] (seeds)"]
    rows = [["batch", "lr", *names]]
    for b in differences["batch_size"].values:
        for r in differences["lr_schedule"].values:
            cells = []
            for table in tables:
                hit = table[(table["batch_size"] == b) & (table["lr_schedule"] == str(r))]
                if hit.empty:
                    cells.append("-")
                    continue
                row = hit.iloc[0]
                end = (f"{row['critical_period_end']:.1f} [{row['critical_period_end_lower']:.1f},"
                       f" {row['critical_period_end_upper']:.1f}]"
                       if row["critical_period_end_located"] else "not located")
                seeds = int(row.get("permanent_deficit_seeds", 0))
                cells.append(f"{end}; {_pp(row['permanent_deficit'])} "
                             f"[{_pp(row['permanent_deficit_lower'])}, "
                             f"{_pp(row['permanent_deficit_upper'])}] ({seeds})")
            rows.append([f"{b:g}", str(r), *cells])
    lines += _columns(rows)
    lines += ["", f"final sharp test accuracy (%), mean over seeds; for each later run, its "
              f"difference from {names[0]} (pp), paired by seed, [{level:.0%} Student-t "
              "interval] (seeds)"]
    for b in differences["batch_size"].values:
        for r in differences["lr_schedule"].values:
            cell = differences.sel(batch_size=b, lr_schedule=r)
            rows = [["switch", *names]]
            for k in cell["switch_epoch"].values:
                at = cell.sel(switch_epoch=k)
                texts = [_pp(float(at["accuracy"].sel(run=0)))]
                for i in range(1, len(names)):
                    one = at.sel(run=i)
                    lo, hi = one["difference_interval"].values
                    texts.append(f"{_pp(float(one['accuracy']))} "
                                 f"{_signed_pp(float(one['difference']))} "
                                 f"[{_signed_pp(lo)}, {_signed_pp(hi)}] "
                                 f"({int(one['difference_seeds'])})")
                rows.append([f"{k:g}", *texts])
            lines += [f"batch {b:g}, {r}:", *("  " + line for line in _columns(rows))]
    return "\n".join(lines)


def comparison_table(differences: xr.Dataset, names: Sequence[str]) -> Any:
    """:func:`accuracy_differences` as a table (a pandas DataFrame), one row per run,
    batch size, schedule and switch epoch: ``accuracy``, ``difference`` with
    ``difference_lower``/``difference_upper`` and ``difference_seeds``."""
    bounds = differences["difference_interval"]
    flat = differences.drop_vars("difference_interval").assign(
        difference_lower=bounds.sel(bound="lower", drop=True),
        difference_upper=bounds.sel(bound="upper", drop=True)).drop_dims("bound")
    table = flat.assign_coords(run=list(names)).to_dataframe().reset_index()
    return table[["run", "batch_size", "lr_schedule", "switch_epoch", "accuracy",
                  "difference", "difference_lower", "difference_upper", "difference_seeds"]]


def run_names(cubes: Sequence[xr.Dataset], paths: Sequence[str]) -> list[str]:
    """Each run's experiment name (its path where two share one)."""
    names = [recorded_config(c).get("experiment") or str(p) for c, p in zip(cubes, paths,
                                                                              strict=True)]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


__all__ = ["NOT_RESULTS", "accuracy_differences", "comparison_table", "differing_keys",
           "format_comparison", "run_names"]
