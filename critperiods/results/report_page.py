"""The landing page of ``snakemake --report``: the answer first, then the table and figure.

Snakemake renders the workflow description (``report:``) as the report's first page. The
plots stage writes this page from the cube after every run: the question, the answer in a
few sentences (critical-period end per batch size and learning-rate schedule, whether the
deficit survives restarting the rate, the scaling exponent, the λ̂ flag counts), the main
figure embedded, the critical-period table rendered, the caveats, and the reading order of
the figures. Everything is reStructuredText; the figure travels inside it as a data URI.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from critperiods.measure.llc.error import NEGATIVE_MCSE
from critperiods.measure.llc.quality import RELAXED_GROWTH, flat_direction_growth
from critperiods.results.end_fit import end_located
from critperiods.results.figures import FIGURES
from critperiods.results.fits import POWER_LAW_POINTS
from critperiods.results.flag_reading import reading_sentence
from critperiods.results.markers import UNSTABLE_REASON, WITHIN_NOISE_REASON, knee_flags
from critperiods.results.rst import PAGE_STYLE, figure_rst, list_table, rst_text
from critperiods.results.selection import llc_counted, lr_schedules, read_in_flags
from critperiods.results.setup import recorded_config, setup_sentence
from critperiods.results.tables import (
    MARKER_STAGES,
    as_said,
    distinct_estimates,
    diverged_sentence,
    drops_follow_the_rate,
    familywise_alpha,
    flag_reasons,
    flagged_fate,
    llc_flag_counts,
    llc_read_in_count,
    marker_calls,
    marker_tally,
    marker_verdicts,
    markers_not_computed,
    nan_reasons,
    not_computed_sentence,
    offset_tests,
    read_in_phrase,
    restart_reductions,
    restart_verdicts,
    runs_at_chance,
    summary_table,
    unlocated_text,
)

#: How the answer says why a cell has no end (:func:`unlocated_text`'s few words, longer).
_UNLOCATED = {"deficit not told from 0": "no deficit told from 0, so no end to locate",
              "deficit below 0 (a gain)": "a deficit below 0 (a gain), so no end to locate",
              "no interval (1 seed)": "one seed, so no interval to locate an end with"}


def _num(value: float, digits: int = 1) -> str:
    if np.isinf(value):
        return "−∞" if value < 0 else "∞"
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _interval(lo: float, hi: float, digits: int = 1) -> str:
    return f"[{_num(lo, digits)}, {_num(hi, digits)}]"


def _marker(row: pd.Series, name: str) -> str:
    """A marker (λ̂ knee, divergence drop) with its interval, where it has one, and
    a knee's flags: "(unstable)", "(within noise)" or "(unstable, within noise)"."""
    lo, hi = row.get(f"{name}_lower", np.nan), row.get(f"{name}_upper", np.nan)
    flags = ", ".join(word.replace("-", " ") for word in knee_flags(row, name))
    return (_num(row.get(name, np.nan)) + (f" {_interval(lo, hi)}" if np.isfinite(lo) else "")
            + (f" ({flags})" if flags else ""))


def _exponent(cube: xr.Dataset, schedule: str) -> tuple[float, float, float]:
    """``batch_size_exponent`` and its interval for ``schedule`` (p, lower, upper)."""
    p, interval = cube["batch_size_exponent"], cube["batch_size_exponent_interval"]
    if "lr_schedule" in p.dims:
        p, interval = p.sel(lr_schedule=schedule), interval.sel(lr_schedule=schedule)
    lo, hi = (float(v) for v in interval.values)
    return float(p), lo, hi


def _batches(values: list[float]) -> str:
    return ("batch " if len(values) == 1 else "batch sizes ") + ", ".join(f"{b:g}" for b in values)


def short_answer(cube: xr.Dataset) -> str:
    """The answer in a few sentences (rst), for the batch sizes whose deficit is located
    with the first schedule (normally continue): which way the end moves with the batch
    size and whether the exponent's interval includes 0; whether that deficit survives
    restarting the rate (a critical period), is not told from 0 under it (bounded, and set
    beside the continued deficit: :func:`_restart_sentence`) or is undetermined, at each;
    and whether λ̂ and the divergence mark the end (:func:`_markers_sentence`). Without a
    located deficit it says so and concludes nothing about the restart or the markers. The
    bullets below give the numbers."""
    names = lr_schedules(cube)
    first = "continue" if "continue" in names else names[0]
    rate = "with the learning rate decaying" if first == "continue" else f"with {first}"
    table = summary_table(cube)
    rows = table[table["lr_schedule"] == first]
    above = [row for row in rows.itertuples() if end_located(row.permanent_deficit_lower)]
    located = [float(row.batch_size) for row in above if np.isfinite(row.critical_period_end)]
    if above and not located:  # a deficit, but no hinge can place its end (two switches)
        batches = [float(row.batch_size) for row in above]
        verdicts = restart_verdicts(cube)
        restart = (". " + _restart_sentence(verdicts, batches, len(rows), table,
                                            restart_reductions(cube))
                   if verdicts else "")
        return (f"**In short:** {rate}, the deficit lies above 0 at {_batches(batches)}, but "
                "these switch epochs cannot place its end (a hinge's kink needs 3 switch "
                "epochs with a final accuracy; through two, every kink between them fits)"
                f"{restart}.")
    if not located:
        return f"**In short:** {rate}, {_nothing_located(rows)}."
    level = f"{100 * float(cube.attrs.get('summary_level', 0.9)):.0f} %"
    p, lo, hi = _exponent(cube, first)
    if not np.isfinite(p):
        said = (f"{rate}, the deficit is located at {_batches(located)}{_ends_compared(rows)}, "
                "but there is no power law of the end in the batch size (it needs 3 batch "
                "sizes whose end is located after the first switch)")
    elif np.isinf(lo) or np.isinf(hi):
        said = (f"{rate}, the end's power law in the batch size is p = {_num(p, 2)} with an "
                "unbounded interval: these seeds cannot say which way the end moves")
    else:
        way = "later" if p < 0 else "earlier"
        interval = (f", {level} interval {_interval(lo, hi, 2)}" if np.isfinite(lo)
                    else ", no interval (one seed)")
        seeds = int(cube.sizes.get("seed", 1))
        excludes_0 = np.isfinite(lo) and not lo <= 0 <= hi
        fit = (f"end ∝ batch size^{_num(p, 2)}{interval}, over {seeds} "
               f"seed{'s' if seeds != 1 else ''}")
        if np.isfinite(lo) and not excludes_0:  # no direction to state
            said = (f"{rate}, these seeds cannot tell whether smaller batches end their "
                    f"critical period later or earlier ({fit}, which includes 0)")
        else:
            said = (f"{rate}, smaller batches end their critical period {way} ({fit})"
                    + (_ends_overlap(rows) if excludes_0 else ""))
    verdicts = restart_verdicts(cube)
    if verdicts:
        said += ". " + _restart_sentence(verdicts, located, len(rows), table,
                                         restart_reductions(cube))
    markers = _markers_sentence(cube)
    return f"**In short:** {said}." + (f" {markers}." if markers else "")


def _nothing_located(rows: pd.DataFrame) -> str:
    """Why no batch size's end is located (:func:`short_answer`): no deficit measured, no
    interval (fewer than two seeds with both runs; a single seed is not an absence), or
    intervals that include 0."""
    measured = rows[np.isfinite(rows["permanent_deficit"].astype(float))]
    if measured.empty:
        return ("no batch size has a deficit to measure (no seed has a final accuracy at both "
                "the earliest and the latest switch): nothing can be said about a critical "
                "period here")
    bare = [float(row.batch_size) for row in measured.itertuples()
            if not np.isfinite(row.permanent_deficit_lower)]
    if len(bare) == len(measured):
        deficits = ", ".join(f"{_num(100 * row.permanent_deficit)}" for row in
                             measured.itertuples())
        return (f"the deficits ({deficits} points at {_batches(bare)}) have "
                "no interval: fewer than two seeds have both the earliest and the latest "
                "switch, so these runs cannot tell a critical period from none (more "
                "``seeds`` can)")
    said = "no batch size has a deficit whose interval lies above 0"
    if bare:
        return (said + f" ({_batches(bare)}: no interval, fewer than two seeds with both "
                "runs): no critical period located here")
    return said + ": no critical period to locate here"


#: How the short answer names a marker of :data:`~critperiods.results.markers.MARKER_OFFSETS`.
_MARKER_SUBJECTS = {"llc_knee_trunk": "λ̂'s knee on the trunk",
                    "llc_knee_sharp": "λ̂'s knee on the never-blurred run",
                    "llc_net_knee_trunk": "the knee of λ̂ net of the chains' descent on the "
                                          "trunk",
                    "llc_net_knee_sharp": "the knee of λ̂ net of the chains' descent on the "
                                          "never-blurred run",
                    "divergence_drop_epoch": "the divergence drop"}


def _markers_sentence(cube: xr.Dataset) -> str:
    """Whether λ̂ and the divergence mark the end, in a sentence (:func:`short_answer`):
    the markers whose offset from the end excludes 0 on a knee that is neither flagged nor
    at the earliest epoch a knee can take, and still does after Holm's correction for the
    run's offsets, by name (and schedule, where the run has several); otherwise that these
    seeds cannot tell. Then where the divergence drop follows
    the learning rate (it never halves with the rate restarted): a continue drop there is
    that confound, not a marker, and is not named as one. "" where the run has no markers."""
    follows = drops_follow_the_rate(cube)
    calls = [c for c in marker_calls(cube)
             if not (c.kind == "divergence drops" and c.lr_schedule == "continue"
                     and c.batch_size in follows)]
    clear = [c for c in calls if c.side and not c.weak and not c.chance]
    not_told = [c for c in calls if c.weak or c.chance]  # told by their own intervals only
    parts = []
    if calls and not clear:
        kinds = [name for kind, name in (("λ̂ knees", "λ̂"), ("divergence drops",
                                                            "the divergence"))
                 if any(c.kind == kind for c in calls)]
        why = ([] if not any(c.flags for c in not_told) else ["a flagged knee"]) + (
            [] if not any(c.floored and not c.flags for c in not_told)
            else ["a knee that could not come before the end"])
        reasons = ["includes 0", *([f"rests on {' or '.join(why)}"] if why else []),
                   *([_chance(cube)] if any(c.chance and not c.weak for c in not_told)
                     else [])]
        parts.append(f"Whether {' or '.join(kinds)} marks the end, these seeds cannot tell: "
                     "every offset from the end " + (
                         " or ".join(reasons) if len(reasons) < 3
                         else ", ".join(reasons[:-1]) + " or " + reasons[-1]))
    elif clear:
        schedules = len(lr_schedules(cube)) > 1
        said = []
        for marker, subject in _MARKER_SUBJECTS.items():
            sides = []
            for side in ("before", "after"):
                here = [c for c in clear if c.marker == marker and c.side == side]
                by_schedule = [", ".join(f"{c.batch_size:g}" for c in here
                                         if c.lr_schedule == r) + (f" ({r})" if schedules else "")
                               for r in dict.fromkeys(c.lr_schedule for c in here)]
                if by_schedule:
                    sides.append(f"{side} {'it' if sides else 'the end'} at batch "
                                 + " and ".join(by_schedule))
            if sides:
                said.append(f"{subject} comes " + " and ".join(sides))
        rest = len(calls) - len(clear)
        other = ("the other offset from the end includes 0" if rest == 1
                 else f"the other {rest} offsets from the end include 0")
        if any(c.weak for c in not_told):
            other += (" or rests on a weak knee" if rest == 1 else " or rest on weak knees") \
                + " (flagged, or unable to come before the end)"
        if any(c.chance and not c.weak for c in not_told):
            other += f" or {_chance(cube, many=rest > 1)}"
        parts.append("Told apart from the end: " + "; ".join(said)
                     + (f"; {other}" if rest else ""))
    if follows:
        parts.append(f"{'the' if parts else 'The'} divergence drop follows the learning rate "
                     f"at batch {', '.join(f'{b:g}' for b in follows)}: it never halves with "
                     "the rate restarted")
    return "; ".join(parts)


def _chance(cube: xr.Dataset, many: bool = False) -> str:
    """Why an offset told from 0 by its own interval is not told apart from the end (``many``:
    said of several offsets)."""
    return (f"{'are' if many else 'is'} within what chance gives among {offset_tests(cube)} "
            "offsets (Holm's correction)")


def _located_ends(rows: pd.DataFrame) -> tuple[list[tuple[float, float, float, float]],
                                                list[bool] | None]:
    """One schedule's located ends (:func:`summary_table` ``rows``) as (batch size, end,
    lower, upper) by batch size, and for each pair of them whether their intervals are
    apart (None where an interval is missing)."""
    ends = [(float(r.batch_size), r.critical_period_end, r.critical_period_end_lower,
             r.critical_period_end_upper) for r in rows.sort_values("batch_size").itertuples()
            if end_located(r.permanent_deficit_lower)]
    if not all(np.isfinite([lo, hi]).all() for _, _, lo, hi in ends):
        return ends, None
    return ends, [a[3] < b[2] or b[3] < a[2] for i, a in enumerate(ends) for b in ends[i + 1:]]


def _ends_compared(rows: pd.DataFrame) -> str:
    """`` (ends 7.0 [3.0, 15.9] and 5.6 [1.6, 9.6], whose intervals overlap: …)`` for the
    located ends of one schedule's ``rows`` (:func:`summary_table`): where no exponent can
    be fitted, whether the seeds still order the ends by batch size."""
    ends, apart = _located_ends(rows)
    if not ends:
        return ""
    listed = " and ".join(f"{_num(e)} {_interval(lo, hi)}" for _, e, lo, hi in ends)
    if len(ends) == 1:
        return f" (end {listed})"
    if apart is None:
        order = ""
    elif all(apart):
        order = ", whose intervals do not overlap"
    elif any(apart):
        order = ", some of whose intervals overlap: these seeds do not order all of them"
    else:
        order = ", whose intervals overlap: these seeds do not order them"
    return f" (ends {listed}{order})"


def _ends_overlap(rows: pd.DataFrame) -> str:
    """``, though no two ends' own intervals are apart (…)`` where every pair of one
    schedule's located ends (:func:`summary_table` ``rows``) has overlapping intervals: an
    exponent whose interval excludes 0 then rests on the seeds agreeing on the ordering,
    while its interval (a jackknife over seeds) leaves out the kinks' profile uncertainty
    that the ends' intervals carry. "" otherwise."""
    ends, apart = _located_ends(rows)
    if len(ends) < 2 or apart is None or any(apart):
        return ""
    intervals = [_interval(lo, hi) for _, _, lo, hi in ends]
    listed = (", ".join(intervals[:-1]) + f" and {intervals[-1]} at "
              + _batches([b for b, _, _, _ in ends]))
    return (f", though no two ends' own intervals are apart ({listed}): the exponent's "
            "interval, from leaving each seed out, does not carry how loosely the switch grid "
            "pins each end; more seeds or a finer switch grid would settle it")


def _llc_settings(cube: xr.Dataset) -> tuple[dict[str, float], dict]:
    """The SGLD settings every estimate shares (``burn_in``, ``step_size``, ``gamma``,
    ``nbeta``; NaN where the estimates differ or the cube has none) and the config's ``llc:``
    section."""
    def one(name: str) -> float:
        values = np.unique(np.asarray(cube[name].values, dtype=float)) if name in cube else []
        return float(values[0]) if len(values) == 1 else float("nan")

    config = recorded_config(cube)
    return ({k: one(f"llc_{k}") for k in ("burn_in", "step_size", "gamma", "nbeta")},
            config.get("llc", {}))


def _llc_caveat(cube: xr.Dataset) -> list[str]:
    """What λ̂ is at the run's SGLD settings, where λ̂ was estimated: a finite-chain estimate
    whose level and shape over the epochs move with them (docs/llc.md)."""
    if "llc_mean" not in cube:
        return []
    shared, llc = _llc_settings(cube)
    burn_in, eps, gamma, nbeta = (shared[k] for k in ("burn_in", "step_size", "gamma",
                                                      "nbeta"))
    draws = cube.sizes.get("draw", 0) - burn_in
    settings = ", ".join(text for text, ok in (
        (f"{cube.sizes.get('chain', 0)} chains × {burn_in:g} burn-in + {draws:g} draws",
         np.isfinite(draws)),
        (f"SGLD batch {llc.get('batch_size')}", llc.get("batch_size") is not None),
        (f"ε = {eps:g}", np.isfinite(eps)), (f"γ = {gamma:g}", np.isfinite(gamma)),
        (f"nβ = {nbeta:.4g}", np.isfinite(nbeta))) if ok)
    settings = f" ({settings})" if settings else ""
    relaxed = " ".join(said for said in (llc_error_sentence(cube), llc_relaxation(cube))
                       if said)
    growth = _counted_growth(cube)  # none: nothing shows the chains had stopped spreading
    short = "short chains, " if growth.size == 0 or (growth > RELAXED_GROWTH).any() else ""
    return [f"* λ̂ is an estimate at this run's SGLD settings{settings}, not the "
            f"checkpoint's equilibrium learning coefficient: {short}minibatch noise and "
            "checkpoints off their minima move its level *and* its shape over the epochs, "
            "which R-hat and the trend test do not see (docs/llc.md)."
            + (f" {relaxed}" if relaxed else "")
            + " A knee is this setting's; ``calibrate-llc`` shows how much one checkpoint's "
            "λ̂ moves with them, and ``calibrate-llc --descent`` how much of it the chains' "
            "descent from the checkpoint takes." + descent_sentence(cube)
            + stability_sentence(cube)]


def descent_sentence(cube: xr.Dataset) -> str:
    """Where the run measured the chains' descent at every estimate (``llc.descent``): how
    much it takes off λ̂ over the distinct estimates (median, range) and where most (epoch,
    batch size, seed), where the knees of λ̂ net of it are, and where the drift raised the
    loss instead (:func:`_rising_drift`); "" otherwise."""
    if "llc_descent" not in cube:
        return ""
    values = distinct_estimates(cube, "llc_descent")
    found = np.isfinite(values)
    if not found.any():
        return ""
    taken = -values[found]

    def of_each(coord: str) -> np.ndarray:  # the coordinate of each estimate found
        return _of_each_estimate(cube, coord, "llc_descent")[found]

    def at_most(coord: str) -> float:  # the coordinate of the estimate it takes most from
        return float(of_each(coord)[np.argmax(taken)])

    return (f" This run measured the descent at {found.sum()} estimates (``llc.descent``): "
            f"it takes {_num(float(np.median(taken)))} off λ̂ at the median "
            f"({_num(float(taken.min()))} to {_num(float(taken.max()))}; most at epoch "
            f"{at_most('epoch'):g}, batch {at_most('batch_size'):g}, seed "
            f"{at_most('seed'):g}). λ̂ without it, to first order and with the minibatch "
            "noise's heating still in, is ``llc_mean − llc_descent`` in the cube"
            + ("; its knees are the *net of descent* columns (``llc_net_knee_*``), markers "
               "of their own."
               if "llc_net_knee_trunk" in cube else ".")
            + _rising_drift(taken < 0, of_each("epoch"), of_each("batch_size")))


def _rising_drift(rose: np.ndarray, epochs: np.ndarray, batch_sizes: np.ndarray) -> str:
    """Where the noise-free drift raised the loss (``rose``, per distinct estimate with a
    descent), by batch size and epoch. The drift is gradient descent with step ε / 2 on the
    localised loss U = nβ L + γ ‖w − w*‖² / 2, which rises at least as much as nβ L does;
    a gradient step raises U only where it exceeds U's stability limit, ε > 4 / (nβ λ_max +
    γ) with λ_max the largest curvature of L along the path. There the chains oscillate
    along the sharpest direction, and λ̂ includes the loss that costs. "" where it never
    rose."""
    count = int(rose.sum())
    if not count:
        return ""
    return (f" At {count} estimate{'s' * (count > 1)} the drift raised the loss "
            f"instead ({_by_batch_size(rose, epochs, batch_sizes)}): a gradient step does "
            "that only where it exceeds the localised loss's stability limit, ε > 4 / "
            "(nβ λ_max + γ) with λ_max the largest curvature along the path, so there the "
            "chains oscillate along the sharpest direction and λ̂ includes the loss that "
            "costs (the stability check below flags such estimates where the checkpoint's "
            "own curvature is past the limit; docs/llc.md).")


def _of_each_estimate(cube: xr.Dataset, coord: str, like: str) -> np.ndarray:
    """The coordinate ``coord`` of each distinct estimate of the per-estimate variable
    ``like`` (:func:`distinct_estimates`' array, NaN where it has none)."""
    where = cube[coord].broadcast_like(cube[like]).astype(float)
    return distinct_estimates(cube.assign({like: where}), like)


def _by_batch_size(where: np.ndarray, epochs: np.ndarray, batch_sizes: np.ndarray) -> str:
    """"batch 128 at epochs 14, 16; batch 256 at epoch 8": the batch sizes and epochs of the
    estimates ``where`` is true (arrays of one shape)."""
    return "; ".join(
        f"batch {b:g} at epoch{'s' * (len(e) > 1)} {', '.join(f'{x:g}' for x in e)}"
        for b, e in ((b, sorted(set(epochs[where & (batch_sizes == b)])))
                     for b in sorted(set(batch_sizes[where]))))


_LIMIT = ("4 / (nβ λ_max + γ) with λ_max the top eigenvalue of the loss's Hessian there "
          "(``llc_sharpness``), lowered in mean square for the minibatches' curvature noise "
          "along its eigenvector (``llc_sharpness_sd``)")


def stability_sentence(cube: xr.Dataset, key: str = "analysis.llc_read_flagged") -> str:
    """Whether the step size is past the SGLD drift's stability limit at the checkpoints
    (``unstable_step``, :mod:`critperiods.measure.llc.stability`): how many of the distinct
    estimates are, by batch size, run (trunk or branch) and epoch, whether the statistics
    count them all the same (read in by ``key``), and the smallest limit
    measured, below which none would be flagged; where none is, how far the step is below
    the smallest limit. "" where the cube has no ``llc_sharpness``."""
    from critperiods.measure.llc.quality import FLAGS, stable_step_size

    if "llc_sharpness" not in cube or "llc_quality" not in cube:
        return ""
    quality = distinct_estimates(cube, "llc_quality")
    made = np.isfinite(quality)
    unstable = made & ((np.where(made, quality, 0).astype(int) & FLAGS["unstable_step"]) > 0)
    spread = cube.get("llc_sharpness_sd", 0.0)
    limit = xr.apply_ufunc(stable_step_size, cube["llc_sharpness"], cube["llc_nbeta"],
                           cube["llc_gamma"], spread).broadcast_like(cube["llc_quality"])
    limits = distinct_estimates(cube.assign(llc_quality=limit), "llc_quality")[made]
    if not np.isfinite(limits).any():
        return ""
    smallest = float(np.nanmin(limits))
    eps = _llc_settings(cube)[0]["step_size"]
    if not unstable.any():
        margin = (f", {smallest / eps:.2g} times the step size" if np.isfinite(eps) else "")
        return (" No estimate's step size is past the SGLD drift's stability limit at its "
                f"checkpoint, {_LIMIT} (the smallest limit is {smallest:.2g}{margin}).")

    epochs, batch_sizes, switches = (_of_each_estimate(cube, coord, "llc_quality")
                                     for coord in ("epoch", "batch_size", "switch_epoch"))
    step = f" ({eps:g})" if np.isfinite(eps) else ""
    return (f" At {int(unstable.sum())} of {int(made.sum())} estimates the step size{step} "
            f"is past the SGLD drift's stability limit at the checkpoint, {_LIMIT}: "
            f"{_by_run(unstable, epochs, batch_sizes, switches)}"
            ". Their chains swing across the sharpest direction instead of sampling it, and "
            "λ̂ includes what that costs (on the default experiment's checkpoints swept "
            "across their limits, little: λ̂ kept its trend in the step), so they are "
            + ("flagged ``unstable_step``, and this run counts those without another flag "
               f"in the λ̂ markers and knees all the same (``{key}``; "
               if "unstable_step" in read_in_flags(cube) else
               "flagged ``unstable_step`` and left out of the λ̂ markers and knees (")
            + "``llc_quality`` 32 alone selects them). The smallest limit measured is "
            f"{smallest:.2g}: at "
            "a ``llc.step_size`` below it no estimate of this run would be flagged so, with "
            "chains longer in proportion (they relax over ~1/(εγ) steps), though a "
            "checkpoint far from its minimum may then give a negative λ̂, the chains' "
            "descent outweighing the rest (docs/llc.md).")


def _by_run(where: np.ndarray, epochs: np.ndarray, batch_sizes: np.ndarray,
            switches: np.ndarray) -> str:
    """"batch 64: 1 (never-blurred run at epoch 22), batch 256: 44 (trunk at epochs 2–16
    every 2; …)": per batch size, at how many estimates ``where`` is true, and their epochs
    on each run (arrays of one shape, of the distinct estimates: a trunk estimate's epoch
    is at or before its switch)."""
    runs = np.where(epochs <= switches, -1.0, switches)  # -1: the trunk
    said = []
    for b in sorted(set(batch_sizes[where])):
        at = where & (batch_sizes == b)
        parts = []
        for run in sorted(set(runs[at])):
            name = ("trunk" if run < 0 else "never-blurred run" if run == 0
                    else f"run switched at {run:g}")
            parts.append(f"{name} at {_epoch_list(sorted(set(epochs[at & (runs == run)])))}")
        said.append(f"batch {b:g}: {int(at.sum())} ({'; '.join(parts)})")
    return ", ".join(said)


def _epoch_list(epochs: list[float]) -> str:
    """"epoch 4", "epochs 4, 6", or "epochs 2–16 every 2" where three or more are evenly
    spaced."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]:g}"
    steps = set(np.diff(epochs))
    if len(epochs) >= 3 and len(steps) == 1:
        step = steps.pop()
        return f"epochs {epochs[0]:g}–{epochs[-1]:g}" + (f" every {step:g}" if step != 1 else "")
    return "epochs " + ", ".join(f"{e:g}" for e in epochs)


def llc_error_sentence(cube: xr.Dataset) -> str:
    """λ̂'s Monte Carlo error (``llc_mcse``) over the distinct estimates the statistics count:
    its range and median, and how many of them lie below 0 within ``NEGATIVE_MCSE`` of it,
    counted rather than flagged ``negative`` (those further below, counted only because the
    cube reads the flag in, are not among them; one sentence or two; "" where the cube has
    no MCSE)."""
    if "llc_mcse" not in cube or "llc_quality" not in cube:
        return ""
    counted = llc_counted(cube)
    mean = cube["llc_mean"].where(counted)
    error = cube["llc_mcse"].transpose(*mean.dims).where(counted)
    values = cube.assign(llc_mean=mean, llc_mcse=error)
    means, errors = (distinct_estimates(values, name) for name in ("llc_mean", "llc_mcse"))
    known = np.isfinite(means) & np.isfinite(errors)
    if not known.any():
        return ""
    means, errors = means[known], errors[known]
    low, median, high = (float(f(errors)) for f in (np.min, np.median, np.max))
    spread = (f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else
              f"{low:.3g}–{high:.3g} (median {median:.3g})")
    said = (f"λ̂'s Monte Carlo error (``llc_mcse``, from the chains' draws) is {spread} over "
            f"the {errors.size} {'counted' if read_in_flags(cube) else 'unflagged'} "
            f"estimate{'s' if errors.size != 1 else ''}: read a λ̂ as ± that.")
    below = int(np.sum((means < 0) & (means + NEGATIVE_MCSE * errors >= 0)))
    if below:
        said += (f" {below} of them lie{'s' if below == 1 else ''} below 0 by less than "
                 f"{NEGATIVE_MCSE:g} of {'their' if below > 1 else 'its'} errors and "
                 f"count{'s' if below == 1 else ''}: only a λ̂ further below is flagged "
                 "negative.")
    return said


def llc_relaxation(cube: xr.Dataset) -> str:
    """Whether the run's SGLD chains were still spreading from the checkpoint, from
    ``llc_distance_growth`` over the distinct estimates the statistics count (one sentence;
    "" where the cube has none): how many grew by more than ``RELAXED_GROWTH``, the median
    and range (or the one value, where all round alike), and, for plain SGLD at one setting,
    what a direction the loss leaves flat would give. A flagged estimate's chains (a heavy
    tail, a diverged chain) run away rather than spread, and are left out, unless its flags
    are read in (``analysis.llc_read_flagged``)."""
    values = _counted_growth(cube)
    if values.size == 0:
        return ""
    above = int(np.sum(values > RELAXED_GROWTH))
    median, low, high = (round(100 * float(v)) for v in (np.median(values), values.min(),
                                                          values.max()))
    spread = (f"{low:+d} %" if values.size == 1 else f"each {low:+d} %" if low == high
              else f"median {median:+d} %, range {low:+d} to {high:+d} %")
    said = (f"The chains' squared distance from the checkpoint grew by more than "
            f"{100 * RELAXED_GROWTH:.0f} % from the first to the second half of the draws in "
            f"{above} of {values.size} {'counted' if read_in_flags(cube) else 'unflagged'} "
            f"estimates ({spread}; "
            "``llc_distance_growth``)")
    if not above:
        flat = _flat_setting(cube)
        return said + (": they were no longer spreading" if flat is None else
                       f": they were no longer spreading (a direction the loss leaves flat "
                       f"gives {round(100 * flat[0]):+d} % at these settings)") + "."
    return (said + f": their weights were still spreading{_flat_directions(cube)}. λ̂ from "
            "such chains moves with their length (docs/llc.md).")


def _counted_growth(cube: xr.Dataset) -> np.ndarray:
    """``llc_distance_growth`` of the distinct estimates the statistics count
    (:func:`~critperiods.results.selection.llc_counted`: unflagged, or flagged only as the
    cube reads in; empty where the cube has none)."""
    if "llc_distance_growth" not in cube:
        return np.array([])
    growth = cube["llc_distance_growth"]
    if "llc_quality" in cube:
        growth = growth.where(llc_counted(cube))
    values = distinct_estimates(cube.assign(llc_distance_growth=growth), "llc_distance_growth")
    return values[np.isfinite(values)]


def _flat_setting(cube: xr.Dataset) -> tuple[float, float, float, float, int] | None:
    """``(growth, ε, γ, burn-in, draws)``: what a chain's ``llc_distance_growth`` is where the
    loss is flat, at the run's one plain-SGLD setting, and that setting (None for another
    sampler or several settings)."""
    shared, llc = _llc_settings(cube)
    eps, gamma, burn_in = shared["step_size"], shared["gamma"], shared["burn_in"]
    draws = cube.sizes.get("draw", 0) - burn_in
    if (llc.get("sampler", "sgld") != "sgld" or not np.isfinite(burn_in)
            or not eps * gamma > 0 or not draws >= 2):
        return None
    return (flat_direction_growth(eps, gamma, int(burn_in), int(draws)), eps, gamma, burn_in,
            int(draws))


def _flat_directions(cube: xr.Dataset) -> str:
    """What a chain gives where the loss is flat, at the run's one plain-SGLD setting (a
    clause; "" for another sampler or several settings)."""
    setting = _flat_setting(cube)
    if setting is None:
        return ""
    flat, eps, gamma, burn_in, draws = setting
    return (f", as where the loss is flat ({round(100 * flat):+d} % at these settings: only the "
            f"localisation pulls a chain back there, over ~1/(εγ) = {1 / (eps * gamma):.0f} "
            f"steps, and the chains ran {burn_in:g} burn-in and {int(draws)} draw steps)")


def _exponent_caveat(cube: xr.Dataset) -> list[str]:
    """What the exponents rest on, where one was fitted (none: nothing to caveat)."""
    fitted = "batch_size_exponent" in cube and bool(np.isfinite(
        cube["batch_size_exponent"].values).any())
    return ["* Exponents rest on as many points as there are batch sizes; their interval "
            "leaves each seed out at every batch size at once, so it carries the ends' "
            "sampling error but neither the power law's misfit nor how loosely the switch "
            "grid pins each end."] if fitted else []


def _restart_sentence(verdicts: dict[float, str], located: list[float], batch_sizes: int,
                      table: pd.DataFrame | None = None,
                      reductions: dict[float, tuple] | None = None) -> str:
    """What restarting the rate says of the located deficits (:func:`short_answer`). A
    restart deficit whose interval includes 0 (or lies below it) is not told from 0,
    bounded by the largest upper end of those intervals (from ``table``,
    :func:`summary_table`'s rows) and set beside the deficits with the rate continued: few
    seeds never show that it is gone. Whether the restart lowers the deficit is the paired
    comparison (``reductions``, :func:`~critperiods.results.tables.restart_reductions`): it
    is said to shrink the deficit only where that interval lies above 0 at each batch size,
    and to take most of it only where, at each, it lies above the restart deficit's bound
    (more is removed than can remain); otherwise whether a critical period remains is
    open."""
    kept = [b for b in located if verdicts.get(b, "").startswith("survives")]
    gone = [b for b in located if verdicts.get(b, "").startswith(("not told", "below 0"))]
    open_ = [b for b in located if b not in kept and b not in gone]
    some = "" if len(located) == batch_sizes else \
        " that has one, " + ", ".join(f"{b:g}" for b in located)

    def at(word: str) -> str:  # "at any batch size", "at every batch size that has one, 64"
        return "at the one batch size" if batch_sizes == 1 else f"at {word} batch size{some}"
    anywhere, every = at("any"), at("every")
    bound = against = ""
    upper = pd.Series(dtype=float)
    if table is not None and gone:
        rows = table[table["batch_size"].isin(gone)].set_index(["lr_schedule", "batch_size"])
        upper = rows.loc["restart", "permanent_deficit_upper"]
        if "continue" in rows.index.get_level_values(0):
            kept_on = rows.loc["continue", "permanent_deficit"]
            lo, hi = 100 * kept_on.min(), 100 * kept_on.max()
            against = (f"{_num(lo)}" + ("" if _num(lo) == _num(hi) else f"–{_num(hi)}")
                       + " pp with the rate continued")
        if upper.notna().any():
            bound = f"at most {_num(100 * upper.max())} pp"
    said = "; ".join(x for x in (bound, against) if x)
    said = f" ({said})" if said else ""
    reductions = reductions or {}
    nan4 = (float("nan"),) * 3 + (0,)
    lowest = {b: reductions.get(b, nan4)[1] for b in gone}
    unshrunk = [b for b in gone if not lowest[b] > 0]
    if gone and not kept and not open_:
        start = (f"Restarting the rate at the switch leaves no deficit these seeds tell above 0 "
                 f"{anywhere}{said}")
        if unshrunk:
            raised = [b for b in unshrunk if reductions.get(b, nan4)[2] < 0]
            unpaired = [b for b in unshrunk if not np.isfinite(reductions.get(b, nan4)[1])]
            level = [b for b in unshrunk if b not in raised and b not in unpaired]
            why = ([f"at {_batches(level)} they do not tell it from the continued deficit "
                    "either (paired by seed)"] if level else []) + (
                [f"at {_batches(raised)} the restart's deficit is the larger (paired by "
                 "seed)"] if raised else []) + (
                [f"at {_batches(unpaired)} no seed pairs the two schedules"]
                if unpaired else [])
            return f"{start}, but {'; '.join(why)}: whether a critical period remains is open"
        means = [100 * reductions[b][0] for b in gone]
        lo, hi = _num(min(means)), _num(max(means))
        removed = (f"paired by seed, the restart lowers it by {lo}"
                   + ("" if lo == hi else f"–{hi}") + " pp")
        if all(lowest[b] > upper.get(b, np.inf) for b in gone):
            return (f"{start}; {removed}, at each batch size more than can remain: most of "
                    "what looks like a critical period here is the learning-rate confound, and "
                    "a remainder up to that bound is not ruled out")
        return (f"{start}; {removed}, told from 0 at each: part of what looks like a critical "
                "period here is the learning-rate confound, and a remainder up to that bound "
                "is not ruled out")
    if kept and not gone and not open_:
        return (f"The deficit survives restarting the rate at the switch {every}: a "
                "critical period, not only the learning-rate confound")
    not_told = [b for b in gone if verdicts[b].startswith("not told")]
    gain = [b for b in gone if b not in not_told]  # below 0: the restart gains accuracy
    parts = ([f"survives restarting the rate at the switch at {_batches(kept)}"] if kept
             else []) \
        + ([f"is not told from 0 with it restarted at {_batches(not_told)}{said}"]
           if not_told else []) \
        + ([f"is below 0 with it restarted (a gain) at {_batches(gain)}"] if gain else []) \
        + ([f"is undetermined under the restart at {_batches(open_)}"] if open_ else [])
    return "The deficit " + "; it ".join(parts)


def answer_lines(cube: xr.Dataset) -> list[str]:
    """The answer as bullet points (reStructuredText), one per batch size and exponent."""
    table = summary_table(cube)
    verdicts = restart_verdicts(cube)
    markers = marker_verdicts(cube)
    lines = []
    for b, rows in table.groupby("batch_size", sort=True):
        parts = []
        verdict = verdicts.get(float(b))
        for _, row in rows.iterrows():
            deficit = (f"deficit {_num(100 * row['permanent_deficit'])} pp "
                       + _interval(100 * row["permanent_deficit_lower"],
                                   100 * row["permanent_deficit_upper"]))
            reason = unlocated_text(row["permanent_deficit"], row["permanent_deficit_lower"],
                                    row["permanent_deficit_upper"])
            why = _UNLOCATED.get(reason, reason)
            if end_located(row["permanent_deficit_lower"]):
                end = _interval(row["critical_period_end_lower"],
                                row["critical_period_end_upper"])
                parts.append(f"{row['lr_schedule']}: ends at epoch "
                             f"{_num(row['critical_period_end'])} {end}, {deficit}")
            elif row["lr_schedule"] == "restart" and verdict:  # the verdict gives the deficit
                parts.append("restart: no end to locate"
                             if reason in ("deficit not told from 0",
                                           "deficit below 0 (a gain)")
                             else f"restart: {why}")
            else:
                parts.append(f"{row['lr_schedule']}: {why}, {deficit}")
        said = ("" if not verdict else f". The deficit {verdict}." if verdict.startswith(
            "survives") else f". The deficit is {verdict}." if verdict.startswith(
            ("not told", "below 0")) else f". Under the restart: {verdict}.")
        marked = "; ".join(f"{r}: {markers[(float(b), r)]}" for r in rows["lr_schedule"]
                           if (float(b), r) in markers)
        lines.append(f"* **batch {b:g}** — " + "; ".join(parts) + (said or ".")
                     + (f" Marker minus the end (epochs): {marked}." if marked else ""))
    tally = marker_tally(cube)
    if tally:
        lines.append("* **Do λ̂ and the divergence mark the end?** " + "; ".join(tally) + ".")
    if (n := cube.sizes.get("batch_size", 1)) < POWER_LAW_POINTS:
        return [*lines, f"* end ∝ batch size^p: n/a — a power law needs {POWER_LAW_POINTS} "
                        f"batch sizes, this grid has {n}"]
    for r in lr_schedules(cube):
        p, lo, hi = _exponent(cube, r)
        unbounded = cube["batch_size_exponent_interval"].attrs.get("unbounded")
        if np.isfinite(p):
            side = ("" if not np.isfinite(lo) else "; it includes 0: no direction told"
                    if lo <= 0 <= hi else "; it excludes 0")
            lines.append(f"* end ∝ batch size^p ({r}): p = {_num(p, 2)} "
                         f"{_interval(lo, hi, 2)} (p < 0: smaller batches end later{side})"
                         + (f"; the interval is unbounded: {unbounded}"
                            if np.isinf(lo) and unbounded else ""))
        else:
            lines.append(f"* end ∝ batch size^p ({r}): n/a — a power law needs "
                         f"{POWER_LAW_POINTS} batch sizes with a located end (a deficit whose "
                         "interval is above 0)")
    return lines


def table_rst(cube: xr.Dataset) -> str:
    """The critical-period table as an rst list-table, one row per (batch size, schedule).
    A cell whose deficit's interval reaches zero has no end to locate: the end column
    says why (:func:`~critperiods.results.tables.unlocated_text`). The λ̂ columns are left
    out of a run without λ̂, the divergence column out of one without divergences
    (:func:`markers_not_computed`); the knees of λ̂ net of the chains' descent have columns
    only in a run that measured it (``llc.descent``)."""
    table = summary_table(cube)
    counts = _flag_counts_by_cell(cube)
    header = ["batch", "lr after switch", "end (epoch)", "slope (pp/epoch)", "deficit (pp)",
              "λ̂ knee: trunk", "λ̂ knee: never blurred", "net of descent: trunk",
              "net of descent: never blurred", "divergence marker", "λ̂ ok / estimates"]
    left_out = {h for m in markers_not_computed(cube) for h in MARKER_STAGES[m].headers}
    if "llc_net_knee_trunk" not in table:
        left_out |= {"net of descent: trunk", "net of descent: never blurred"}
    dropped = {i for i, name in enumerate(header) if name in left_out}
    rows = []
    for _, row in table.iterrows():
        ok, read_in, total = counts.get((row["batch_size"], row["lr_schedule"]), (0, 0, 0))
        located = end_located(row["permanent_deficit_lower"])
        rows.append([
            f"{row['batch_size']:g}", row["lr_schedule"],
            f"{_num(row['critical_period_end'])} "
            + _interval(row["critical_period_end_lower"], row["critical_period_end_upper"])
            if located else unlocated_text(row["permanent_deficit"],
                                           row["permanent_deficit_lower"],
                                           row["permanent_deficit_upper"]),
            _num(round(100 * row["critical_period_slope"], 2) + 0.0, 2),  # never "-0.00"
            f"{_num(100 * row['permanent_deficit'])} "
            + _interval(100 * row["permanent_deficit_lower"], 100 * row["permanent_deficit_upper"]),
            _marker(row, "llc_knee_trunk"), _marker(row, "llc_knee_sharp"),
            _marker(row, "llc_net_knee_trunk"), _marker(row, "llc_net_knee_sharp"),
            _marker(row, "divergence_drop_epoch"),
            f"{ok}{f' (+{read_in} counted)' if read_in else ''} / {total}"])

    def kept(cells: list[str]) -> list[str]:
        return [c for i, c in enumerate(cells) if i not in dropped]

    return "\n".join(list_table(kept(header), [kept(cells) for cells in rows]))


def _legend(cube: xr.Dataset) -> str:
    """What the table's columns mean (rst), for the columns it has."""
    absent = markers_not_computed(cube)
    parts = [
        "*end*: kink of a hinge fit of final accuracy against switch epoch; *deficit*: final "
        "accuracy of the earliest switch (normally 0, never blurred) minus that of the latest "
        "switch (percentage points, paired by seed)"]
    if "λ̂" not in absent:
        parts.append(
            "*λ̂ knee*: where a broken stick (two lines joined at the knee) fitted to λ̂ "
            "against epoch bends, along the blurred trunk and along the never-blurred run "
            "(valid estimates only; brackets: "
            f"{as_said(cube.attrs.get('knee_interval_kind', 'an interval over seeds'))}); "
            f"*unstable*: {UNSTABLE_REASON}; *within noise*: {WITHIN_NOISE_REASON}; "
            "*λ̂ ok / estimates*: of the λ̂ estimates on the runs of that batch size and "
            "schedule, the blurred trunk's and the never-blurred run's counted in both "
            "schedules' rows"
            + (f" (*counted*: {read_in_phrase(read_in_flags(cube))}, which the knees take in "
               "all the same, ``analysis.llc_read_flagged``)" if read_in_flags(cube) else ""))
        if "llc_net_knee_trunk" in cube:
            parts.append("*net of descent*: the same knees of λ̂ minus the chains' descent "
                         "from each checkpoint (``llc_mean − llc_descent``, ``llc.descent``), "
                         "markers of their own")
    if "divergence" not in absent:
        parts.append(
            "*divergence marker*: the switch epoch where the distance to the always-blurred "
            "run halves (brackets: "
            f"{as_said(cube.attrs.get('drop_interval_kind', 'an interval over seeds'))})")
    if len(absent) < 2:
        parts.append(
            "*marker minus the end*: in the answer above, with a "
            f"{as_said(cube.attrs.get('offset_interval_kind', 'paired interval over seeds'))}"
            ": \"includes 0\" means these seeds cannot tell the marker from the end, not that "
            "they coincide; ``python -m critperiods power --noise-from results/<experiment>/"
            "cube.nc`` says how often this grid could have, at this run's noise")
    return "; ".join(parts) + ". n/a: why, in the list below."


def _nan_lines(cube: xr.Dataset) -> list[str]:
    """Why each n/a of the table is n/a (rst): a bullet per statistic, naming the cells
    (:func:`~critperiods.results.tables.nan_reasons`), or none."""
    reasons = nan_reasons(cube, markers_not_computed(cube))
    if not reasons:
        return []
    return ["**Why some values are n/a** (by the cube's variable; ``python -m critperiods "
            "summarize`` prints the same):", "",
            *(f"* ``{name}``: {rst_text(why)}" for name, why in reasons), ""]


def _not_computed_lines(cube: xr.Dataset) -> list[str]:
    """A line saying which marker columns the table leaves out, and why (rst), or none."""
    absent = markers_not_computed(cube)
    if not absent:
        return []
    sentence = not_computed_sentence(absent, key=lambda k: f"``{k}``")
    return [f"{sentence[0].upper()}{sentence[1:]}, so the table has no columns for "
            + ("them." if len(absent) > 1 else "it."), ""]


def _flag_counts_by_cell(cube: xr.Dataset) -> dict[tuple[float, str], tuple[int, int, int]]:
    """(ok, flagged but counted, estimates) of the λ̂ estimates of each (batch size,
    schedule)'s runs (the second: :func:`llc_read_in_count`)."""
    if "llc_quality" not in cube:
        return {}
    out = {}
    for b in cube["batch_size"].values:
        for r in cube["lr_schedule"].values:
            cell = cube.sel(batch_size=[b], lr_schedule=[r])
            counts = llc_flag_counts(cell)
            out[(b, str(r))] = (counts["ok"], llc_read_in_count(cell), counts["estimates"])
    return out


def perturbation_section(cube: xr.Dataset) -> list[str]:
    """The perturbation experiment's answer (rst lines), empty without one: whether a nudge
    inside the critical period carries further, the growth laws, and the table."""
    if "perturb_cp_ratio" not in cube:
        return []
    from critperiods.results.perturbation_summary import (
        growth_lines,
        perturbation_rows,
        verdict_lines,
    )

    table = perturbation_rows(cube)
    header = ["batch", "lr", "run blurred until", "perturbed at", "epsilon", "phase",
              "critical period", "lasting L2 [seed range]", "vs never blurred",
              "Δ accuracy (pp)"]
    def sig(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.3g}"

    rows = [[f"{row.batch_size}", row.lr_schedule, f"{row.run}", f"{row.perturb_epoch}",
             f"{row.epsilon:g}", row.phase, row.critical_period,
             f"{sig(row.perturb_lasting_l2)} [{sig(row.perturb_lasting_l2_lower)}, "
             f"{sig(row.perturb_lasting_l2_upper)}]",
             sig(getattr(row, "perturb_blur_ratio", np.nan)),
             _num(100 * getattr(row, "perturb_accuracy_change_mean", np.nan), 2)]
            for row in table.itertuples()]
    out = ["Perturbations", "-------------", "",
           "Copies of a run nudged at one epoch and trained on with the identical batch plan, "
           "against their unperturbed twin (docs/perturbations.md):", ""]
    out += [f"* {line}" for line in verdict_lines(cube) + growth_lines(cube)]
    return [*out, "", *list_table(header, rows), ""]


def _diverged_lines(cube: xr.Dataset) -> list[str]:
    """The caveat naming the runs that diverged to chance (rst bullets); where the cube
    flags none (``run_diverged``), a line saying so; empty for a cube without the flag."""
    runs = runs_at_chance(cube)
    if not runs:
        return (["* No run diverged to chance (``run_diverged``): every run's final accuracy "
                 "counts in the means and fits."] if "run_diverged" in cube else [])
    return [f"* {diverged_sentence(len(runs))}:", "", *[f"  * {run}" for run in runs]]


def question(cube: xr.Dataset) -> str:
    """The blur-switch question, asking only what this run can answer: the batch size's
    effect with several batch sizes, the restart control with a ``restart`` schedule, and
    the markers whose stages ran."""
    asked = ["Does the critical period end later when the batch size is smaller (a higher "
             "SGD temperature)" if cube.sizes.get("batch_size", 1) > 1
             else "Where does the critical period end"]
    if "restart" in lr_schedules(cube):
        asked.append("is the permanent deficit a critical period at all, i.e. does it "
                     "survive restarting the learning rate at the switch")
    markers = [what for name, what in (
        ("λ̂", "the local learning coefficient λ̂ (its knee)"),
        ("divergence", "the divergence between trajectories"))
        if name not in markers_not_computed(cube)]
    if markers:
        asked.append(f"do {' and '.join(markers)} mark where the period ends")
    said = ", ".join(asked[:-1]) + (", and " if len(asked) > 2 else " and ") + asked[-1] \
        if len(asked) > 1 else asked[0]
    return f"**Question.** {said}?"


def words(cube: xr.Dataset) -> str:
    """The words the answer uses before the table's legend defines them (rst), for the
    stages this run has."""
    said = ["*switch epoch*: the epochs a run trains on blurred images before the sharp ones; "
            "the *never-blurred run* switches at 0",
            "*trunk*: the blurred training one batch size and seed share up to every switch",
            "*end*: the kink of a hinge fitted to final accuracy against switch epoch, after "
            "which switching later costs accuracy; *deficit*: what the latest switch loses "
            "against the earliest"]
    absent = markers_not_computed(cube)
    if "λ̂" not in absent:
        said.append("*knee*: where a broken stick fitted to λ̂ over the epochs bends")
    if "divergence" not in absent:
        said.append("*divergence drop*: the switch epoch where a run's distance to the "
                    "always-blurred run has halved")
    if len(absent) < 2:
        said.append("*offset*: a marker minus the end, in epochs")
    return "**Words.** " + "; ".join(said) + "."


def _per_batch_caveat(cube: xr.Dataset) -> list[str]:
    """Each batch size's deficit is called on its own one-sided 5 % test (its 90 % interval
    above 0): over several, one such call arises by chance more often."""
    n = int(cube.sizes.get("batch_size", 1))
    if n < 2:
        return []
    level = float(cube.attrs.get("summary_level", 0.9))
    alpha = (1 - level) / 2
    return [f"* Each batch size's deficit is called (its {100 * level:.0f} % interval above 0, "
            f"a one-sided {100 * alpha:g} % test) on its own: over {n} batch sizes a call at one "
            f"of them arises by chance in about {100 * (1 - (1 - alpha) ** n):.0f} % of runs "
            "with no deficit anywhere, so a verdict that differs between batch sizes is not, "
            "by itself, a difference between them."]


def _offsets_caveat(cube: xr.Dataset) -> list[str]:
    """The markers' offsets are tested many at once: what their brackets are, and that
    "told apart from the end" needs Holm's correction for all of them."""
    tests = offset_tests(cube)
    if tests < 2:
        return []
    alpha = 100 * familywise_alpha(cube)
    return [f"* The markers' offsets from the end are {tests} tests of one question. Each "
            f"bracket is its own {100 - alpha:.0f} % interval, so even where every marker "
            f"marks the end, up to {alpha:.0f} % of them may exclude 0 by chance. The answer "
            "tells a marker from the end only where its offset also excludes 0 after Holm's "
            f"correction for all {tests} (family-wise {alpha:.0f} %; ``<offset>_p_holm`` in "
            "the cube)."]


def _few_switches_caveat(cube: xr.Dataset) -> list[str]:
    """With 3 switch epochs or fewer the hinge (level, kink, slope) has as many parameters
    as points: it can pass through the seed means, and the end is then an interpolation."""
    switches = int(cube.sizes.get("switch_epoch", 0))
    if switches > 3:
        return []
    many = "as many parameters (level, kink, slope) as there are points" if switches == 3 \
        else "more parameters (level, kink, slope) than there are points"
    return [f"* {switches} switch epochs: the hinge has {many}, so it can pass through their "
            "means: the end is then an interpolation between switches, not a fit that could "
            "disagree with the data; a finer grid of switch epochs is what places it."]


def _restart_caveat(cube: xr.Dataset) -> str:
    """What the restart control says of a deficit, or that this run has none."""
    if "restart" in lr_schedules(cube):
        return ("* A deficit with the rate continued but not with it restarted is the "
                "learning-rate confound (late switches train their sharp epochs at a small "
                "rate), not a critical period.")
    return ("* This run has no ``restart`` schedule (``grid.lr_schedules``): a deficit with "
            "the rate decaying may be the learning-rate confound (late switches train their "
            "sharp epochs at a small rate), which only the restart control tells apart from "
            "a critical period.")


def landing_page(cube: xr.Dataset, figure: str | Path, description: str,
                 drawn: Iterable[str] | None = None,
                 perturbation_figure: str | Path | None = None) -> str:
    """The report's first page (reStructuredText) for ``cube``, embedding ``figure``.

    ``drawn``: the stems of :data:`FIGURES` this run drew (e.g. no λ̂ figures with
    ``llc.enabled: false``, perturbation figures only with a ``perturbation:`` section); the
    reading order lists those only (all of them when None). ``description`` (the
    workflow's static description) closes the page. A perturbation run's page opens on the
    perturbation question, its short answer (:mod:`critperiods.results.perturbation_page`)
    and ``perturbation_figure``; the critical period it rests on follows.
    """
    seeds = int(cube.sizes.get("seed", 1))
    kind = cube.attrs.get("interval_kind", "interval over seeds")
    deficit_kind = cube.attrs.get("deficit_interval_kind", "interval over seeds")
    config = recorded_config(cube)
    experiment = config.get("experiment", "run")
    sharp = config.get("epochs_after_switch")
    sharp = "" if sharp is None else f", {sharp} sharp epochs after each switch"
    title = f"Critical learning periods: {experiment}"
    counts = llc_flag_counts(cube)
    fate = flagged_fate(cube, drawn=True)
    flags = ("" if not counts else
             f"λ̂: {counts['estimates']} estimates, {counts['ok']} ok, "
             + flag_reasons(counts).replace("_", " ") + (f"; {fate}" if fate else "") + "."
             + reading_sentence(cube))
    drawn = set(FIGURES if drawn is None else drawn)
    shown = [FIGURES[stem] for stem in FIGURES if stem in drawn]
    reading = "\n".join(f"* {label} ({category.split(' ', 1)[1]})"  # numbered as the report
                        for category, label in shown)
    setup = setup_sentence(cube)
    critical_period = [
        question(cube), "",
        *([f"**Setup.** {setup[:1].upper()}{setup[1:]}.", ""] if setup else []),
        short_answer(cube), "",
        words(cube), "",
        f"**Answer from this run** ({seeds} seed{'s' if seeds != 1 else ''} per cell{sharp}; "
        f"brackets: the end's {kind.rstrip(';')}; the deficit's {deficit_kind}):", "",
        *answer_lines(cube), "",
        flags, "",
        figure_rst(figure, alt="final sharp test accuracy vs switch epoch"), "",
        "Critical-period table", "---------------------", "",
        table_rst(cube), "",
        *_not_computed_lines(cube),
        _legend(cube), "",
        *_nan_lines(cube),
    ]
    perturbed = "perturb_cp_ratio" in cube
    if perturbed:
        from critperiods.results import perturbation_page

        top = [perturbation_page.question(cube), "", perturbation_page.short_answer(cube), ""]
        if perturbation_figure is not None:
            top += [figure_rst(perturbation_figure,
                               alt="lasting distance of a nudged copy vs perturbation epoch"),
                    ""]
        body = [*top, *perturbation_section(cube),
                "The critical period these perturbations are set against",
                "-------------------------------------------------------", "",
                *critical_period]
        more = perturbation_page.caveats(cube)
    else:
        body, more = critical_period, []
    parts = [
        title, "=" * len(title), "", PAGE_STYLE, "",
        *body,
        "Caveats", "-------", "",
        f"* {seeds} seed{'s' if seeds != 1 else ''} per cell: the end's brackets are a {kind}; "
        f"the deficit's are a {deficit_kind} (``permanent_deficit_seeds`` per cell in the "
        "CSV). An end is shown only where the deficit's interval is above 0.",
        _restart_caveat(cube),
        *_per_batch_caveat(cube),
        *_offsets_caveat(cube),
        *_few_switches_caveat(cube),
        *_exponent_caveat(cube),
        *_llc_caveat(cube),
        *more,
        *_diverged_lines(cube), "",
        "Figures, in reading order", "-------------------------", "",
        reading, "",
        "How the numbers were made", "-------------------------", "",
        description.strip(), "",
    ]
    return "\n".join(parts)


__all__ = ["answer_lines", "descent_sentence", "landing_page", "llc_error_sentence",
           "llc_relaxation",
           "perturbation_section", "question", "stability_sentence", "table_rst", "words"]
