"""What a summary says, as text: the table, its CSV, the restart verdicts, the markers'
calls (each offset's verdict, and which still hold after Holm's correction for all of a
run's offsets), the runs left out as diverged and the λ̂ flag counts. ``summarize`` prints
these; the report page and the aggregate stage use them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from critperiods.results.end_fit import end_located
from critperiods.results.fits import POWER_LAW_POINTS
from critperiods.results.markers import (
    KNEE_FLAGS,
    LLC_KNEES,
    LLC_MARKERS,
    LOO_RANGE_KIND,
    MARKER_OFFSETS,
    MARKER_STATISTICS,
    NET_MARKER_STATISTICS,
    UNSTABLE_REASON,
    WITHIN_NOISE_REASON,
    knee_flags,
)
from critperiods.results.selection import (
    CLASSES,
    default_horizon,
    distinct_diverged,
    divergence_at_horizon,
    llc_counted,
    lr_schedules,
    read_in_flags,
    with_lr_schedule,
    without_diverged,
)
from critperiods.results.summary import (
    EXPONENTS,
    INTERVAL_STATISTICS,
    restart_reduction,
    unlocated_reason,
)
from critperiods.variables import SUMMARY_STATISTICS

__all__ = ["MARKER_NAMES", "MARKER_STAGES", "MarkerCall", "MarkerStage", "as_said",
           "distinct_estimates", "diverged_sentence", "drops_follow_the_rate",
           "familywise_alpha", "flag_reasons", "flagged_fate", "format_table", "llc_flag_counts",
           "llc_read_in_count", "read_in_phrase",
           "marker_calls", "marker_tally", "marker_verdict",
           "marker_verdicts", "markers_not_computed", "nan_reasons", "not_computed_sentence",
           "offset_tests", "points", "restart_reductions", "restart_verdicts",
           "runs_at_chance", "summary_table", "to_csv", "unlocated_text"]

#: How the verdicts name each marker of :data:`MARKER_OFFSETS`.
MARKER_NAMES = {"llc_knee_trunk": "λ̂ trunk", "llc_knee_sharp": "λ̂ never-blurred",
                "llc_net_knee_trunk": "λ̂ trunk net of descent",
                "llc_net_knee_sharp": "λ̂ never-blurred net of descent",
                "divergence_drop_epoch": "divergence"}

def unlocated_text(deficit: float, deficit_lower: float,
                   deficit_upper: float = float("nan")) -> str:
    """Why a cell has no located end, as a table cell says it (:func:`unlocated_reason`:
    "deficit not told from 0", "deficit below 0 (a gain)", ...; it names the deficit, so the
    end column does not read as an end not told from epoch 0)."""
    return unlocated_reason(deficit, deficit_lower, deficit_upper)


def restart_verdicts(summary: xr.Dataset) -> dict[float, str]:
    """Per batch size, whether the permanent deficit survives restarting the learning rate.

    Empty without a ``restart`` schedule. "survives" needs the restart deficit's interval
    above 0; an interval that includes 0 is "not told from 0", with the largest deficit it
    leaves possible (never "no deficit": few seeds cannot show an absence); one wholly below
    0 is "below 0 (a gain)". Each verdict says how many seeds its interval rests on, and one
    seed decides nothing. With a ``continue`` schedule too, each verdict adds how much the
    restart lowers the deficit, paired by seed (:func:`restart_reductions`).
    """
    if "lr_schedule" not in summary.dims or "restart" not in summary["lr_schedule"].values:
        return {}
    out = {}
    reductions = restart_reductions(summary)
    for b in summary["batch_size"].values:
        cell = summary.sel(batch_size=b, lr_schedule="restart")
        d = float(cell["permanent_deficit"])
        lo, hi = (float(v) for v in cell["permanent_deficit_interval"].values)
        n = int(cell["permanent_deficit_seeds"]) if "permanent_deficit_seeds" in cell else None
        seeds = "" if n is None else f" ({n} seed{'s' if n != 1 else ''})"
        interval = f"{100 * d:.1f} pp [{100 * lo:.1f}, {100 * hi:.1f}]"
        if not np.isfinite(d):
            out[float(b)] = "unknown (no restart deficit)"
        elif not np.isfinite(lo):
            out[float(b)] = f"undetermined: {100 * d:.1f} pp{seeds}, no interval"
        elif lo > 0:
            out[float(b)] = f"survives the restart: {interval}{seeds}"
        elif hi < 0:  # told from 0, on the other side: the late switch gains accuracy
            out[float(b)] = f"below 0 under the restart (a gain): {interval}{seeds}"
        else:
            out[float(b)] = (f"not told from 0 under the restart: {interval}{seeds}, up to "
                             f"{100 * hi:.1f} pp within its interval")
        removed = reductions.get(float(b))
        if np.isfinite(d) and removed is not None:
            out[float(b)] += f"; {_reduction_said(removed)}"
    return out


def restart_reductions(summary: xr.Dataset) -> dict[float, tuple[float, float, float, int]]:
    """Per batch size, how much restarting the rate lowers the permanent deficit, paired by
    seed: ``(mean, lower, upper, seeds)`` from ``restart_deficit_reduction`` (computed from
    the final accuracies, :func:`~critperiods.results.summary.restart_reduction`, where a
    cube predates it); empty without both a ``continue`` and a ``restart`` schedule."""
    names = set(lr_schedules(summary)) if "lr_schedule" in summary.dims else set()
    if not {"continue", "restart"} <= names:
        return {}
    if "restart_deficit_reduction" not in summary:
        if "final_test_accuracy" not in summary:
            return {}
        summary = xr.Dataset(restart_reduction(
            summary, float(summary.attrs.get("summary_level", summary.attrs.get("level", 0.9)))),
            coords={"batch_size": summary["batch_size"].values})
    name = "restart_deficit_reduction"
    return {float(b): (float(summary[name].sel(batch_size=b)),
                       *(float(v) for v in summary[f"{name}_interval"].sel(batch_size=b).values),
                       int(summary[f"{name}_seeds"].sel(batch_size=b)))
            for b in summary["batch_size"].values}


def _reduction_said(removed: tuple[float, float, float, int]) -> str:
    """One batch size's :func:`restart_reductions` entry in words."""
    mean, lower, upper, _ = removed
    if not np.isfinite(mean):
        return ("no paired comparison with the rate continued (no seed with the earliest and "
                "the latest switch's runs under both schedules)")
    interval = (f" [{100 * lower:.1f}, {100 * upper:.1f}]" if np.isfinite(lower)
                else " (one seed: no interval)")
    side = ("" if not np.isfinite(lower) else ", told from 0" if lower > 0 or upper < 0
            else ", not told from 0")
    if mean < 0:  # the restart's deficit is the larger
        return (f"the restart raises it by {-100 * mean:.1f} pp [{-100 * upper:.1f}, "
                f"{-100 * lower:.1f}] against the rate continued (paired by seed{side})"
                if np.isfinite(lower) else
                f"the restart raises it by {-100 * mean:.1f} pp (one seed: no interval) "
                "against the rate continued (paired by seed)")
    return (f"the restart lowers it by {100 * mean:.1f} pp{interval} against the rate "
            f"continued (paired by seed{side})")


def _side(lower: float, upper: float) -> str | None:
    """Which side of the end an offset's interval puts the marker: "after" (above 0),
    "before" (below 0), or None (it includes 0, or there is none)."""
    return "after" if lower > 0 else "before" if upper < 0 else None


def marker_verdict(offset: float, lower: float, upper: float,
                   flags: Sequence[str] = (), p_holm: float = float("nan"),
                   alpha: float = 0.1) -> str:
    """What a marker's offset from the end says: "+9.2 [0.8, 17.6], after the end",
    "… before the end" or "… includes 0" (the seeds cannot tell the marker from the end),
    prefixed with a λ̂ knee's ``flags`` (:func:`knee_flags`): "(unstable knee) ",
    "(within-noise knee) " or "(unstable, within-noise knee) " (:data:`UNSTABLE_REASON`,
    :data:`WITHIN_NOISE_REASON`); "" without an offset. A side is followed by its
    Holm-adjusted p-value where there is one: "after the end (Holm-adjusted p 0.04)", or,
    where that is not below ``alpha``, "after the end by its own interval only
    (Holm-adjusted p 0.27)"."""
    if not np.isfinite(offset):
        return ""
    said = (f"({', '.join(flags)} knee) " if flags else "") + f"{offset:+.1f}"
    if not np.isfinite(lower) and not np.isinf(lower):
        return f"{said} (one seed: no interval)"
    said += f" [{_bound(lower)}, {_bound(upper)}]"
    side = _side(lower, upper)
    if not side:
        return f"{said}, includes 0"
    if not np.isfinite(p_holm):
        return f"{said}, {side} the end"
    only = "" if p_holm < alpha else " by its own interval only"
    return f"{said}, {side} the end{only} (Holm-adjusted p {_p_text(p_holm)})"


def _p_text(p: float) -> str:
    """A p-value to three significant digits (so that 0.0996 is not read as 0.1), or
    "< 0.001"."""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _bound(value: float) -> str:
    """An interval bound to 0.1, or to two significant digits where 0.1 would round it to
    0 and hide its sign."""
    return f"{value:.1f}" if round(value, 1) != 0 or value == 0 else f"{value:.2g}"


def _too_late(row: pd.Series, marker: str) -> str:
    """" (the earliest possible knee, epoch E, is after this end)" where the λ̂ epochs leave a
    knee no room before the end, so that its offset cannot be negative; "" otherwise."""
    earliest = row.get(f"{marker}_earliest", np.nan)
    if np.isfinite(earliest) and earliest >= row["critical_period_end"]:
        return f" (the earliest possible knee, epoch {earliest:g}, is after this end)"
    return ""


def marker_verdicts(summary: xr.Dataset) -> dict[tuple[float, str], str]:
    """Per (batch size, schedule) with a located end: do λ̂ and the divergence mark it? "λ̂
    trunk −0.4 [−13.1, 12.3], includes 0; λ̂ never-blurred +9.2 [0.8, 17.6], after the end;
    divergence −2.8 [−5.1, −0.5], before the end" (:func:`marker_verdict` of each offset
    of :data:`MARKER_OFFSETS`). Empty for a summary computed before the offsets existed or
    without a located end."""
    if any(name not in summary for name in MARKER_STATISTICS):
        return {}
    table = summary_table(summary)
    alpha = familywise_alpha(summary)
    out = {}
    for _, row in table.iterrows():
        said = [f"{MARKER_NAMES[marker]} {verdict}{_too_late(row, marker)}"
                for marker, offset in MARKER_OFFSETS if offset in row  # net: llc.descent
                if (verdict := marker_verdict(row[offset], row[f"{offset}_lower"],
                                              row[f"{offset}_upper"], knee_flags(row, marker),
                                              row.get(f"{offset}_p_holm", np.nan), alpha))]
        if said:
            out[(float(row["batch_size"]), str(row["lr_schedule"]))] = "; ".join(said)
    return out


@dataclass(frozen=True)
class MarkerCall:
    """One marker's offset from a located end, as :func:`marker_calls` reads it."""

    kind: str  #: "λ̂ knees" or "divergence drops"
    batch_size: float
    lr_schedule: str
    marker: str  #: a marker of :data:`MARKER_OFFSETS`
    side: str | None  #: "after", "before", or None where the interval includes 0
    flags: tuple[str, ...]  #: the knee's flag words (:func:`knee_flags`)
    floored: bool  #: the earliest possible knee is not before the end (:func:`_too_late`)
    #: whether the offset is told from 0 after Holm's correction for the run's offsets
    #: (:func:`familywise_alpha`); None for a cube written before the correction
    holds: bool | None = None

    @property
    def weak(self) -> bool:
        """Told from the end, but on a flagged knee or one that could not come before it."""
        return self.side is not None and bool(self.flags or self.floored)

    @property
    def chance(self) -> bool:
        """Told from the end by its own interval, but not after Holm's correction: among
        the offsets the run tests, one this far from 0 may be chance."""
        return self.side is not None and self.holds is False


def familywise_alpha(summary: xr.Dataset) -> float:
    """The family-wise level Holm's correction of the marker offsets is read at: 1 minus the
    run's interval level (the cube's ``summary_level``, a summary's ``level``)."""
    return 1 - float(summary.attrs.get("summary_level", summary.attrs.get("level", 0.9)))


def offset_tests(summary: xr.Dataset) -> int:
    """How many marker offsets Holm's correction counts in ``summary`` (0 for a cube written
    before it)."""
    return int(next((summary[f"{o}_p_holm"].attrs.get("tests", 0) for _, o in MARKER_OFFSETS
                     if f"{o}_p_holm" in summary), 0))


def marker_calls(summary: xr.Dataset) -> list[MarkerCall]:
    """Every marker offset from a located end that has an interval, row by row of the
    summary table and in the order of :data:`MARKER_OFFSETS` within a row, with whether it
    holds after Holm's correction (``<offset>_p_holm`` below :func:`familywise_alpha`).
    Empty for a summary without the offsets."""
    if any(name not in summary for name in MARKER_STATISTICS):
        return []
    alpha = familywise_alpha(summary)
    calls = []
    for _, row in summary_table(summary).iterrows():
        for marker, offset in MARKER_OFFSETS:
            if offset not in row:  # the net knees' offsets, in a run without llc.descent
                continue
            lo, hi = row[f"{offset}_lower"], row[f"{offset}_upper"]
            if not (np.isfinite(row[offset]) and not np.isnan(lo) and not np.isnan(hi)):
                continue
            holm = row.get(f"{offset}_p_holm", np.nan)
            calls.append(MarkerCall(
                "λ̂ knees" if marker.startswith("llc_") else "divergence drops",
                float(row["batch_size"]), str(row["lr_schedule"]), marker, _side(lo, hi),
                tuple(knee_flags(row, marker)), bool(_too_late(row, marker)),
                bool(holm < alpha) if np.isfinite(holm) else None))
    return calls


def marker_tally(summary: xr.Dataset) -> list[str]:
    """Do λ̂ and the divergence mark the end, over every cell with a located end: for the λ̂
    knees and for the divergence drop, how many offsets from the end exclude 0, which, and
    for λ̂ how many of those rest on a flagged knee (:func:`knee_flags`). "λ̂ knees: 2 of 6
    offsets exclude 0 (batch 64, continue, never-blurred: after; …), both on flagged knees
    (within-noise); the other 4 include 0", or "divergence drops: none of 3 offsets from
    the end excludes 0"; the offsets that exclude 0 with whether they still do after Holm's
    correction for all the run's offsets (:func:`_holm_clause`). Empty without offsets. A
    last line says where the divergence drop follows the learning rate
    (:func:`drops_follow_the_rate`)."""
    if any(name not in summary for name in MARKER_STATISTICS):
        return []
    calls = marker_calls(summary)
    lines = []
    for kind in ("λ̂ knees", "divergence drops"):
        of_kind = [c for c in calls if c.kind == kind]
        told = [c for c in of_kind if c.side]
        if not of_kind:
            continue
        if not told:
            lines.append(f"{kind}: none of {len(of_kind)} offsets from the end excludes 0")
            continue
        said = f"{kind}: {len(told)} of {len(of_kind)} offsets from the end exclude 0 (" + \
            "; ".join(f"batch {c.batch_size:g}, {c.lr_schedule}"
                      + (f", {MARKER_NAMES[c.marker].removeprefix('λ̂ ')}"
                         if kind == "λ̂ knees" else "") + f": {c.side}" for c in told) + ")"
        marked = [c.flags for c in told if c.flags]
        if marked:
            words = ", ".join(sorted({w for f in marked for w in f}))
            if len(told) == 1:
                said += f", on a flagged knee ({words})"
            else:
                share = (("both" if len(told) == 2 else "all") if len(marked) == len(told)
                         else f"{len(marked)} of them")
                said += f", {share} on flagged knees ({words})"
        said += _holm_clause(told, offset_tests(summary))
        if len(of_kind) > len(told):
            said += f"; the other {len(of_kind) - len(told)} include 0"
        lines.append(said)
    batches = drops_follow_the_rate(summary)
    if batches:
        lines.append(f"divergence drops follow the learning rate: at batch "
                     f"{', '.join(f'{b:g}' for b in batches)} the distance halves with the "
                     "rate decaying (continue) but never with it restarted: there the drop "
                     "reflects the smaller rate a later switch trains at, not the critical "
                     "period (the learning-rate confound, as for the deficit)")
    return lines


def _holm_clause(told: Sequence[MarkerCall], tests: int) -> str:
    """Whether the offsets ``told`` from 0 by their own intervals still are after Holm's
    correction for the run's ``tests`` offsets: "; it holds after Holm's correction for the
    run's 9 offsets", "; 1 of the 2 holds after …"; "" for a cube without the correction."""
    known = [c for c in told if c.holds is not None]
    if not known:
        return ""
    family = f"Holm's correction for the run's {tests} offsets"
    held = sum(bool(c.holds) for c in known)
    if len(known) == 1:
        return (f"; it holds after {family}" if held else
                f"; it does not hold after {family} (among {tests}, one this far from 0 may "
                "be chance)")
    said = ("both hold" if held == len(known) == 2 else f"all {held} hold"
            if held == len(known) else "none of them holds" if not held
            else f"{held} of the {len(known)} hold{'s' if held == 1 else ''}")
    return f"; {said} after {family}"


def drops_follow_the_rate(summary: xr.Dataset) -> list[float]:
    """The batch sizes where the distance halves with the rate decaying (``continue``) but
    never with it restarted: there a later switch's smaller learning rate alone shrinks the
    distance, and the drop is the learning-rate confound, as the deficit is. Empty without a
    ``restart`` schedule or where the restart halves too."""
    drop = summary.get("divergence_drop_epoch")
    if drop is None or "lr_schedule" not in drop.dims or not {"continue", "restart"} <= set(
            drop["lr_schedule"].values.tolist()):
        return []
    return [float(b) for b in drop["batch_size"].values
            if np.isfinite(float(drop.sel(batch_size=b, lr_schedule="continue")))
            and np.isnan(float(drop.sel(batch_size=b, lr_schedule="restart")))
            and _restart_distance_measured(summary, b)]


def _restart_distance_measured(cube: xr.Dataset, batch_size: float) -> bool:
    """Whether the restarted runs have a distance to halve at two switch epochs or more
    (where every restarted run after switch 0 diverged there is none: no drop, but no
    "never halves" either). True where the cube holds no distances to tell."""
    if "div_l2" not in cube:
        return True
    horizon = float(cube.attrs.get("summary_horizon", default_horizon(cube)))
    at = divergence_at_horizon(cube, batch_size, horizon, "restart")
    return int(np.isfinite(at).sum()) >= 2


def runs_at_chance(cube: xr.Dataset, classes: int = CLASSES) -> list[str]:
    """The runs that diverged to chance (:func:`distinct_diverged`: the never-blurred run
    once, for every schedule), one line each: "batch B, <schedule>, switch epoch K, seed
    S, final accuracy A %".

    They are left out of the means and fits; ``summarize``, the report and the plots name
    them.
    """
    if "final_test_accuracy" not in cube:
        return []
    acc = cube["final_test_accuracy"]
    low = acc.where(distinct_diverged(cube, classes))  # the never-blurred run once
    hits = low.to_dataframe().dropna()
    shared = "lr_schedule" in acc.dims and acc.sizes["lr_schedule"] > 1
    out = []
    for index in hits.index:
        where = dict(zip(hits.index.names, index, strict=True))
        if shared and where["switch_epoch"] == 0:
            where["lr_schedule"] = "the never-blurred run (every lr schedule)"
        out.append(", ".join(
            f"{name.replace('_', ' ').replace('batch size', 'batch')} {where[name]:g}"
            if name != "lr_schedule" else str(where[name])
            for name in acc.dims) + f", final accuracy {100 * hits.loc[index, low.name]:.1f} %")
    return out


def diverged_sentence(n: int) -> str:
    """"N run(s) diverged to chance and are left out of means and fits" (no full stop)."""
    return (f"{n} run{'s' if n != 1 else ''} diverged to chance and "
            f"{'are' if n != 1 else 'is'} left out of means and fits")


def distinct_estimates(cube: xr.Dataset, name: str) -> np.ndarray:
    """The values of the per-estimate λ̂ variable ``name`` (``llc_quality``,
    ``llc_distance_growth``, …), each estimate once: one shared by several runs (a trunk
    checkpoint under every later switch, the never-blurred run under both schedules) is kept
    where it was made and NaN elsewhere, as are the epochs without an estimate."""
    values = cube[name]
    if "lr_schedule" in values.dims:
        first = values["lr_schedule"] == values["lr_schedule"][0]
    else:
        first = xr.DataArray(True)
    k, e = values["switch_epoch"], values["epoch"]
    branch = (e > k) & ((k > 0) | first)
    trunk = (e <= k) & (k == k.max()) & first
    return np.asarray(values.where(branch | trunk).values, dtype=float)


def llc_flag_counts(cube: xr.Dataset) -> dict[str, int]:
    """Distinct λ̂ estimates of the cube (:func:`distinct_estimates`), how many are ok and
    how many carry each flag."""
    from critperiods.measure.llc.quality import count_flags

    if "llc_quality" not in cube:
        return {}
    return count_flags(distinct_estimates(cube, "llc_quality"))


def flag_reasons(counts: dict[str, int]) -> str:
    """``2 flagged (not_converged 2, diverged_chains 1; an estimate can carry several)``:
    how many estimates :func:`llc_flag_counts` found flagged, then each flag raised."""
    flagged = counts["estimates"] - counts["ok"]
    raised = [(name, n) for name, n in counts.items() if name not in ("estimates", "ok") and n]
    if not flagged:
        return "none flagged"
    return (f"{flagged} flagged (" + ", ".join(f"{name} {n}" for name, n in raised)
            + ("; an estimate can carry several" if sum(n for _, n in raised) > flagged else "")
            + ")")


def llc_read_in_count(cube: xr.Dataset) -> int:
    """How many distinct λ̂ estimates (:func:`distinct_estimates`) are flagged yet count,
    their every flag among those the cube reads in (``analysis.llc_read_flagged``) and their
    run not diverged to chance."""
    if "llc_quality" not in cube:
        return 0
    read_in = without_diverged(cube, ((cube["llc_quality"] > 0) & llc_counted(cube)).astype(
        float))
    made = distinct_estimates(cube, "llc_quality")
    counted = distinct_estimates(cube.assign(llc_quality=read_in), "llc_quality")
    return int(np.sum(np.isfinite(made) & (counted == 1)))


def read_in_phrase(names: Sequence[str]) -> str:
    """How a sentence names the estimates that flags ``names`` read in: "flagged
    unstable_step only", "whose every flag is among heavy_tailed, unstable_step" ("" for
    none)."""
    names = list(dict.fromkeys(names))  # once each, in the order given
    if len(names) < 2:
        return f"flagged {names[0]} only" if names else ""
    return f"whose every flag is among {', '.join(names)}"


def flagged_fate(cube: xr.Dataset, drawn: bool = False,
                 key: str = "analysis.llc_read_flagged") -> str:
    """What the statistics do with the flagged λ̂ estimates: "flagged estimates are left out
    of the λ̂ markers and knees", with "and drawn hollow" where ``drawn``, and the estimates
    the cube reads in all the same (by config ``key``) excepted, or, where it reads in
    every one, "every flagged estimate counts …, its flags all read in (…)"; "" where none
    is flagged."""
    counts = llc_flag_counts(cube)
    if not counts or counts["ok"] == counts["estimates"]:
        return ""
    n = llc_read_in_count(cube)
    if n == counts["estimates"] - counts["ok"]:  # every flagged estimate is read in
        return (f"every flagged estimate counts in the λ̂ markers and knees, its flags all "
                f"read in ({key}: {', '.join(read_in_flags(cube))})"
                + (" and drawn half-filled" if drawn else ""))
    said = ("flagged estimates are left out of the λ̂ markers and knees"
            + (" and drawn hollow" if drawn else ""))
    if n:
        said += (f", except the {n} {read_in_phrase(read_in_flags(cube))}, which count ({key})"
                 + (" and are drawn half-filled" if drawn else ""))
    return said


def summary_table(summary: xr.Dataset) -> pd.DataFrame:
    """One row per (batch size, schedule): the statistics, each interval split into
    ``_lower``/``_upper``, the schedule's exponents repeated on every row (so the CSV is
    self-contained), the seeds the deficit rests on (``permanent_deficit_seeds``), the runs
    left out as diverged (``diverged_runs``) and, with both schedules, how much the restart
    lowers the batch size's deficit, paired by seed (``restart_deficit_reduction`` with its
    interval and seeds, repeated on both its rows).

    ``critical_period_end_located`` says whether the end is located (the permanent deficit's
    interval lies above 0, :func:`end_located`). The hinge puts a kink even on a flat curve, so
    ``critical_period_end`` and ``half_deficit_epoch`` of a row with ``False`` are not ends of a
    critical period; they are kept, as in the cube, for inspection.

    Given a cube with λ̂ flags (``llc_quality``), every row also says which flags the λ̂
    markers read in (``llc_read_in_flags``, space-separated, empty where none:
    ``analysis.llc_read_flagged``), so a CSV read cold says what its knees count; and
    every row gives the intervals' level (``interval_level``)."""
    summary = with_lr_schedule(summary)
    read_in = " ".join(read_in_flags(summary)) if "llc_quality" in summary else None
    level = float(summary.attrs.get("summary_level", summary.attrs.get("level", 0.9)))
    rows = []
    for b in summary["batch_size"].values:
        for r in summary["lr_schedule"].values:
            cell = summary.sel(batch_size=b, lr_schedule=r)
            row: dict[str, object] = {
                "batch_size": b, "lr_schedule": str(r),
                "critical_period_end_located": end_located(
                    float(cell["permanent_deficit_interval"].sel(bound="lower")))}
            for name in SUMMARY_STATISTICS:
                row[name] = float(cell[name])
                if name in INTERVAL_STATISTICS:
                    lo, hi = cell[f"{name}_interval"].values
                    row[f"{name}_lower"], row[f"{name}_upper"] = float(lo), float(hi)
                if name in LLC_MARKERS and f"{name}_loo_range" in cell:
                    lo, hi = cell[f"{name}_loo_range"].values
                    row[f"{name}_loo_lower"], row[f"{name}_loo_upper"] = float(lo), float(hi)
            for name in (*MARKER_STATISTICS, *NET_MARKER_STATISTICS):  # absent from cubes
                if name in cell:  # written before the offsets, the net ones without llc.descent
                    row[name] = float(cell[name])
            for name in (*MARKER_STATISTICS, *NET_MARKER_STATISTICS, "divergence_drop_epoch"):
                if f"{name}_interval" in cell:
                    lo, hi = cell[f"{name}_interval"].values
                    row[f"{name}_lower"], row[f"{name}_upper"] = float(lo), float(hi)
            for _, offset in MARKER_OFFSETS:  # absent from cubes written before Holm's
                for name in (f"{offset}_p", f"{offset}_p_holm"):  # correction
                    if name in cell:
                        row[name] = float(cell[name])
            for knee, _ in LLC_KNEES:
                has_knee = knee in cell and np.isfinite(float(cell[knee]))
                for flag, _ in KNEE_FLAGS:  # absent from cubes written before the flag
                    if f"{knee}_{flag}" in cell:  # no knee: nothing to flag (an empty cell)
                        row[f"{knee}_{flag}"] = (bool(cell[f"{knee}_{flag}"]) if has_knee
                                                 else None)
                if f"{knee}_earliest" in cell:
                    row[f"{knee}_earliest"] = float(cell[f"{knee}_earliest"])
            for name in EXPONENTS:
                row[name] = float(cell[name])
                lo, hi = cell[f"{name}_interval"].values
                row[f"{name}_lower"], row[f"{name}_upper"] = float(lo), float(hi)
            for name in ("permanent_deficit_seeds", "diverged_runs"):
                if name in cell:  # absent from cubes written before they were counted
                    row[name] = int(cell[name])
            if "restart_deficit_reduction" in cell:  # per batch size, on both its rows
                row["restart_deficit_reduction"] = float(cell["restart_deficit_reduction"])
                lo, hi = cell["restart_deficit_reduction_interval"].values
                row["restart_deficit_reduction_lower"] = float(lo)
                row["restart_deficit_reduction_upper"] = float(hi)
                row["restart_deficit_reduction_seeds"] = int(
                    cell["restart_deficit_reduction_seeds"])
            if read_in is not None:
                row["llc_read_in_flags"] = read_in
            row["interval_level"] = level
            rows.append(row)
    return pd.DataFrame(rows)


def as_said(text: str) -> str:
    """A cube attribute as the terminal says it: "λ̂", not the attributes' ASCII
    "lambda-hat"."""
    return text.replace("lambda-hat", "λ̂")


def _fmt(value: float, digits: int = 1) -> str:
    """A number for the terminal table to ``digits`` decimals, as the report writes it
    (epochs to 0.1, exponents to 0.01); "nan" for missing, "-inf"/"inf" unbounded."""
    if np.isinf(value):
        return "-inf" if value < 0 else "inf"
    return "nan" if np.isnan(value) else f"{round(value, digits) + 0.0:.{digits}f}"


def points(value: float, sign: bool = False) -> str:
    """A fraction in percentage points to 0.1 ("0.0", never "-0.0"; with its sign where
    ``sign``; "nan" for missing)."""
    if not np.isfinite(value):
        return "nan"
    return f"{round(100 * value, 1) + 0.0:{'+' if sign else ''}.1f}"


def _with_interval(table: pd.DataFrame, name: str, lower: str, upper: str) -> list[str]:
    """A column of values with their intervals: "6.3 [4.0, 16.0]" ("6.3" without one)."""
    return [_fmt(v) if not np.isfinite(lo) and not np.isinf(lo)
            else f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]"
            for v, lo, hi in zip(table[name], table[lower], table[upper], strict=True)]


def _llc_column(table: pd.DataFrame, knee: str, marker: str | None = None) -> list[str]:
    """A λ̂ column: the knee with its interval, "*" where it is unstable and "~" where its
    curve bends within its noise; for a summary computed before the knees, the arg-max
    ``marker`` with its leave-one-out range where it has one."""
    if knee in table:
        marks = [("*" if "unstable" in flags else "") + ("~" if "within-noise" in flags else "")
                 for flags in (knee_flags(row, knee) for _, row in table.iterrows())]
        return [text + mark for text, mark in zip(
            _with_interval(table, knee, f"{knee}_lower", f"{knee}_upper"), marks, strict=True)]
    if f"{marker}_loo_lower" in table:
        return _with_interval(table, marker, f"{marker}_loo_lower", f"{marker}_loo_upper")
    return list(table[marker].map(_fmt))


@dataclass(frozen=True)
class MarkerStage:
    """A marker a run may leave out, as the tables know it: the cube variable its stage
    writes, the config key that turns the stage on, the prefix of its statistics' names, its
    columns in :func:`format_table` and its column headers on the report's first page."""

    plural: str
    variable: str
    key: str
    statistics: str
    columns: tuple[str, ...]
    headers: tuple[str, ...]


#: The markers a run may leave out (its stage off), by name.
MARKER_STAGES = {
    "λ̂": MarkerStage("λ̂", "llc_mean", "llc.enabled", "llc_",
                     ("llc_trunk", "llc_sharp", "llc_net_trunk", "llc_net_sharp"),
                     ("λ̂ knee: trunk", "λ̂ knee: never blurred", "net of descent: trunk",
                      "net of descent: never blurred", "λ̂ ok / estimates")),
    "divergence": MarkerStage("divergences", "div_l2", "divergence.enabled", "divergence_",
                              ("div_drop",), ("divergence marker",)),
}


def markers_not_computed(cube: xr.Dataset) -> list[str]:
    """The markers of :data:`MARKER_STAGES` that ``cube``'s run did not compute (its stage
    was off): their columns are left out of the tables."""
    return [name for name, stage in MARKER_STAGES.items() if stage.variable not in cube]


def not_computed_sentence(not_computed: Sequence[str], key: Callable[[str], str] = str) -> str:
    """E.g. ``"no λ̂ and no divergences in this run (llc.enabled, divergence.enabled:
    false)"``, with each config key written by ``key``; "" when nothing is left out."""
    if not not_computed:
        return ""
    stages = [MARKER_STAGES[m] for m in not_computed]
    return (f"no {' and no '.join(stage.plural for stage in stages)} in this run "
            f"({', '.join(key(stage.key) for stage in stages)}: false)")


def format_table(summary: xr.Dataset, not_computed: Sequence[str] = ()) -> str:
    """Aligned plain-text table of the per-(batch, schedule) statistics, the exponents, what
    the intervals are, and why any value is NaN. A cell whose permanent deficit's interval
    reaches zero shows no end and no half-deficit epoch ("-", "deficit not told from 0").
    The markers in ``not_computed`` (:func:`markers_not_computed` of the run's cube) get no
    columns and one line instead of a NaN reason per statistic."""
    table = summary_table(summary)
    located = table["critical_period_end_located"]
    columns = {
        "batch": table["batch_size"].map(lambda v: f"{v:g}"),
        "lr": table["lr_schedule"],
        "cp_end": [_fmt(v) if ok and np.isfinite(v) else "-" for v, ok in zip(
            table["critical_period_end"], located, strict=True)],
        "cp_interval": [(f"[{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(end)
                         else "no end (< 3 switches)") if ok
                        else unlocated_text(d, d_lo, d_hi)
                        for end, lo, hi, ok, d, d_lo, d_hi in zip(
                            table["critical_period_end"], table["critical_period_end_lower"],
                            table["critical_period_end_upper"], located,
                            table["permanent_deficit"], table["permanent_deficit_lower"],
                            table["permanent_deficit_upper"], strict=True)],
        "slope_pp/ep": table["critical_period_slope"].map(points),
        "deficit_pp": [f"{points(d)} [{points(lo)}, {points(hi)}]" for d, lo, hi in zip(
            table["permanent_deficit"], table["permanent_deficit_lower"],
            table["permanent_deficit_upper"], strict=True)],
        "seeds": (table["permanent_deficit_seeds"].map(str)
                  if "permanent_deficit_seeds" in table else ["?"] * len(table)),
        "half_def": [_fmt(v) if ok else "-" for v, ok in zip(
            table["half_deficit_epoch"], located, strict=True)],
        "llc_trunk": _llc_column(table, "llc_knee_trunk", "llc_change_epoch_trunk"),
        "llc_sharp": _llc_column(table, "llc_knee_sharp", "llc_change_epoch_sharp"),
        **({"llc_net_trunk": _llc_column(table, "llc_net_knee_trunk"),
            "llc_net_sharp": _llc_column(table, "llc_net_knee_sharp")}
           if "llc_net_knee_trunk" in table else {}),
        "div_drop": (_with_interval(table, "divergence_drop_epoch",
                                    "divergence_drop_epoch_lower",
                                    "divergence_drop_epoch_upper")
                     if "divergence_drop_epoch_lower" in table
                     else table["divergence_drop_epoch"].map(_fmt)),
    }
    stages = [MARKER_STAGES[m] for m in not_computed]
    columns = {k: col for k, col in columns.items()
               if not any(k in stage.columns for stage in stages)}
    widths = {k: max(len(k), *(len(str(v)) for v in col)) for k, col in columns.items()}
    lines = ["  ".join(k.rjust(widths[k]) for k in columns)]
    for i in range(len(table)):
        lines.append("  ".join(str(list(columns[k])[i]).rjust(widths[k]) for k in columns))
    lines.append("cp_end: the end of the critical period (hinge kink: the switch epoch after "
                 "which switching later costs final accuracy); slope_pp/ep: accuracy lost per "
                 "epoch of delay after it; deficit_pp: earliest minus latest switch, paired by "
                 "seed, over the seeds counted; half_def: switch epoch at half that deficit")
    lines.append(f"intervals: end, {summary.attrs.get('interval_kind', 'over seeds')}"
                 f"; deficit, {summary.attrs.get('deficit_interval_kind', 'over seeds')}")
    llc_shown = "λ̂" not in not_computed
    if llc_shown and "llc_knee_trunk" in table:
        lines.append("λ̂ knees (llc_trunk, llc_sharp; shared by both schedules): broken-stick "
                     "knee of the seed-mean λ̂ along the blurred trunk and along the "
                     "never-blurred run, " + as_said(summary.attrs.get("knee_interval_kind",
                                                                         "interval over seeds")))
        if any(table.get(f"{knee}_unstable", pd.Series(dtype=bool)).any()
               for knee, _ in LLC_KNEES):
            lines.append(f"* unstable knee: {UNSTABLE_REASON}")
        if any(table.get(f"{knee}_within_noise", pd.Series(dtype=bool)).any()
               for knee, _ in LLC_KNEES):
            lines.append(f"~ within-noise knee: {WITHIN_NOISE_REASON}")
        if "llc_net_knee_trunk" in table:
            lines.append("λ̂ knees net of descent (llc_net_trunk, llc_net_sharp): the same knees "
                         "of λ̂ minus the chains' descent from each checkpoint (llc_mean − "
                         "llc_descent, llc.descent), markers of their own")
    elif llc_shown and "llc_change_epoch_trunk_loo_lower" in table:
        lines.append(f"λ̂ markers (llc_trunk, llc_sharp) [lower, upper]: {LOO_RANGE_KIND}")
    if "divergence" not in not_computed and "divergence_drop_epoch_lower" in table and np.isfinite(
            table["divergence_drop_epoch_lower"]).any():
        lines.append("divergence marker (div_drop): switch epoch where the distance to the "
                     "always-blurred run halves, "
                     + as_said(summary.attrs.get("drop_interval_kind", "interval over seeds")))
    schedules = (summary["lr_schedule"].values if "lr_schedule" in summary.dims
                 else ["continue"])
    few = summary.sizes.get("batch_size", 1) < POWER_LAW_POINTS
    if few:  # no grid of this size can give one: one line, not a NaN per exponent and schedule
        lines.append(f"exponents ({', '.join(EXPONENTS)}): not fitted: a power law of the end "
                     f"needs {POWER_LAW_POINTS} batch sizes, this grid has "
                     f"{summary.sizes.get('batch_size', 1)}")
    for name in EXPONENTS if not few else ():
        for r in schedules:
            var = summary[name].sel(lr_schedule=r) if "lr_schedule" in summary[name].dims \
                else summary[name]
            interval = summary[f"{name}_interval"]
            lo, hi = (interval.sel(lr_schedule=r) if "lr_schedule" in interval.dims
                      else interval).values
            lines.append(f"{name} ({r}): {_fmt(float(var), 2)} [{_fmt(lo, 2)}, "
                         f"{_fmt(hi, 2)}]")
    unbounded = {summary[f"{name}_interval"].attrs.get("unbounded") for name in EXPONENTS
                 if f"{name}_interval" in summary} - {None}
    lines += [f"exponent interval [-inf, inf]: {text}" for text in sorted(unbounded)]
    missing = [f"  {name}: {why}" for name, why in nan_reasons(summary, not_computed)]
    if not_computed:
        lines.append(not_computed_sentence(not_computed) + ": no columns for "
                     + ("them" if len(not_computed) > 1 else "it"))
    if missing:
        lines += ["why some values are nan:", *missing]
    return "\n".join(lines)


def nan_reasons(summary: xr.Dataset, not_computed: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(statistic, why)`` for each of the summary's statistics that is NaN somewhere, from
    its ``missing`` attribute (which names the cells), leaving out the markers of stages
    ``not_computed`` (:func:`markers_not_computed`: said once, not per statistic) and, on a
    grid with too few batch sizes for any power law, the exponents."""
    left_out = tuple(MARKER_STAGES[m].statistics for m in not_computed)
    few = summary.sizes.get("batch_size", 1) < POWER_LAW_POINTS
    return [(name, summary[name].attrs["missing"])
            for name in [*SUMMARY_STATISTICS, *MARKER_STATISTICS, *NET_MARKER_STATISTICS,
                         *(EXPONENTS if not few else ()),
                         *(f"{m}_loo_range" for m in LLC_MARKERS), "restart_deficit_reduction"]
            if name in summary and "missing" in summary[name].attrs
            and not name.startswith(left_out)]


def to_csv(summary: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`summary_table` to ``path`` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_table(summary).to_csv(path, index=False)
    return path
