"""The perturbation experiment's answer as the report's first page opens it: the question,
a short answer computed from the run, and the caveats that bound it (reStructuredText).

The short answer says how much further a nudge made before the critical-period end carries
than one made after it (:func:`~critperiods.results.perturbation_summary.sensitivity_ratio`),
how loosely the ends are placed, where the sensitivity halves, whether it falls at every
perturbation epoch (then any split gives a ratio above 1), and when the learning rate itself
halves: with the rate decaying, a later nudge trains at a smaller rate, which the restart
schedule does not undo before a run's switch.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from critperiods.results.selection import with_lr_schedule
from critperiods.results.setup import recorded_config
from critperiods.results.summary import located_end

#: What a nudge is, per ``perturbation.kind`` (the cube's ``perturbation_kind``).
_NUDGES = {"weights": "a small nudge of the weights",
           "batch_order": "a small change of the batch order"}


def nudge_label(cube: xr.Dataset) -> str:
    """The nudge as the config names it, e.g. ``kind weights, scope layer``: runs that differ
    only in it would otherwise read alike ("" for a cube that does not record it)."""
    kind = str(cube.attrs.get("perturbation_kind", ""))
    scope = str(cube.attrs.get("perturbation_scope", ""))
    return (f"kind {kind}" + (f", scope {scope}" if kind == "weights" and scope else "")
            if kind else "")


def question(cube: xr.Dataset) -> str:
    """The perturbation question (rst), for the kind of nudge the run made."""
    nudge = _NUDGES.get(str(cube.attrs.get("perturbation_kind", "weights")), "a small nudge")
    return (f"**Question.** Does {nudge} made before the critical period ends carry further, "
            "by the end of training, than the same nudge made after it, and where does that "
            "sensitivity fall?")


def _g(x: float) -> str:
    return f"{x:.3g}"


def _span(values: list[float]) -> str:
    """"5.67–12.9", or one number where the range rounds to one."""
    low, high = _g(min(values)), _g(max(values))
    return low if low == high else f"{low}–{high}"


def rate_half_life(cube: xr.Dataset) -> float:
    """The epochs in which the continue schedule's learning rate halves
    (``optimizer.lr_decay`` of the run's recorded config); NaN without a decay."""
    config = recorded_config(cube)
    decay = float(config.get("optimizer", {}).get("lr_decay", 1.0))
    return math.log(0.5) / math.log(decay) if 0 < decay < 1 else float("nan")


def _perturbed_runs(cube: xr.Dataset) -> list[dict]:
    """The (batch size, schedule, switch epoch) of each run with a sensitivity ratio."""
    ratio = cube["perturb_cp_ratio"]
    return [at for b in ratio["batch_size"].values for r in ratio["lr_schedule"].values
            for k in ratio["switch_epoch"].values
            if np.isfinite(float(ratio.sel(at := {"batch_size": b, "lr_schedule": r,
                                                   "switch_epoch": k})))]


def _falls_everywhere(cube: xr.Dataset, runs: list[dict]) -> bool:
    """Whether the lasting L2 (mean over seeds) falls from each perturbation epoch to the
    next, in every perturbed run and at every nonzero epsilon."""
    lasting = cube["perturb_lasting_l2"].where(cube["epsilon"] > 0)
    for at in runs:
        curve = lasting.sel(at).transpose("epsilon", "perturb_epoch").values
        for row in curve:
            row = row[np.isfinite(row)]
            if row.size < 2 or not (np.diff(row) < 0).all():
                return False
    return True


def _at(da: xr.DataArray, cell: dict) -> xr.DataArray:
    """``da`` at ``cell``, on the dims it has (an older cube's end has no lr_schedule)."""
    return da.sel({k: v for k, v in cell.items() if k in da.dims})


def _why_no_ratio(cube: xr.Dataset) -> str:
    """Why no run has a sensitivity ratio: nothing nudged (only ε = 0), or the reasons the
    ratio records per batch size and schedule (no located end, every nudge on one side)."""
    if not (cube["epsilon"] > 0).any():
        return "no copy was nudged (perturbation.epsilons holds only 0, the identity)"
    return cube["perturb_cp_ratio"].attrs.get("missing") or "no ratio could be formed"


def _epochs_inside(cube: xr.Dataset, runs: list[dict]) -> str:
    """`` (their intervals hold 3 of the 4 perturbation epochs)``: how many perturbation
    epochs lie inside some perturbed cell's end interval, where the before/after split is
    the end's point estimate's guess; "" where none does or there is no interval."""
    if "critical_period_end_interval" not in cube:
        return ""
    epochs = cube["perturb_epoch"].values.astype(float)
    inside = np.zeros(epochs.size, dtype=bool)
    for at in runs:
        cell = {"batch_size": at["batch_size"], "lr_schedule": at["lr_schedule"]}
        lo, hi = _at(cube["critical_period_end_interval"], cell).values
        if np.isfinite([lo, hi]).all():
            inside |= (epochs >= lo) & (epochs <= hi)
    if not inside.any():
        return ""
    return (f" (their intervals hold {int(inside.sum())} of the {epochs.size} perturbation "
            f"epoch{'s' if epochs.size != 1 else ''}, which the split puts on one side or "
            "the other by the estimate alone)")


def _bracket(cube: xr.Dataset, drops: list[float]) -> str:
    """"2 and 6": the perturbation epochs around the halving epochs ``drops``."""
    epochs = np.sort(cube["perturb_epoch"].values.astype(float))
    below = epochs[epochs <= min(drops)]
    above = epochs[epochs >= max(drops)]
    lo = below.max() if below.size else epochs.min()
    hi = above.min() if above.size else epochs.max()
    return f"{lo:g} and {hi:g}"


def short_answer(cube: xr.Dataset) -> str:
    """The answer in two or three sentences (rst), computed from the run: the sensitivity
    ratios' range and how many seeds agree, the ends with their intervals, where the
    sensitivity halves, whether it falls at every perturbation epoch, and the learning
    rate's half-life where the rate decays. Without a ratio it says why none was taken."""
    cube = with_lr_schedule(cube)
    runs = _perturbed_runs(cube)
    if not runs:
        return (f"**In short:** this run cannot say whether a nudge inside the critical period "
                f"carries further: {_why_no_ratio(cube)}." + "".join(
                    f" {s[:1].upper()}{s[1:]}." for s in [_rate_sentence(cube)] if s))
    ratios = [float(cube["perturb_cp_ratio"].sel(at)) for at in runs]
    seeds = np.concatenate([cube["perturb_cp_ratio_seeds"].sel(at).values for at in runs])
    seeds = seeds[np.isfinite(seeds)]
    epsilons = [f"{e:g}" for e in cube["epsilon"].values if e > 0]
    if str(cube.attrs.get("perturbation_kind", "weights")) == "batch_order":
        pairs = "pair" if epsilons == ["1"] else "pairs"  # ε counts the swapped pairs
        nudge = f"a swap of {' or '.join(epsilons)} {pairs} of batches"
    else:
        nudge = f"a nudge of ε = {', '.join(epsilons)}" if epsilons else "a nudge"
    span = _span(ratios)
    if all(x > 1 for x in ratios):
        agree = int((seeds > 1).sum())
        said = f"{nudge} made before the critical-period end carries {span}× further than " \
               "one made after it"
    elif all(x < 1 for x in ratios):
        agree = int((seeds < 1).sum())
        said = f"{nudge} made before the critical-period end carries less far than one " \
               f"made after it ({span}×)"
    else:
        agree = -1
        rest = sum(x <= 1 for x in ratios)
        said = (f"{nudge} made before the critical-period end carries further than one made "
                f"after it in {sum(x > 1 for x in ratios)} of {len(ratios)} perturbed runs "
                f"and less far in the {'other' if rest == 1 else 'others'} ({span}×)")
    n = len(ratios)
    runs_said = ("the one perturbed run" if n == 1 else "both perturbed runs" if n == 2
                 else f"all {n} perturbed runs")
    said += (f" ({runs_said}"
             + ("" if agree < 0 else ", every seed agreeing" if agree == seeds.size
                else f", {agree} of {seeds.size} seed ratios on that side of 1") + ")")
    ends = located_end(cube)
    one_schedule = cube.sizes["lr_schedule"] == 1
    placed = []
    for at in runs:
        cell = {"batch_size": at["batch_size"], "lr_schedule": at["lr_schedule"]}
        label = f"batch {float(at['batch_size']):g}" + (
            "" if one_schedule else f", {at['lr_schedule']}")
        where = f"{label}: {float(_at(ends, cell)):.1f}"
        interval = (_at(cube["critical_period_end_interval"], cell).values
                    if "critical_period_end_interval" in cube else [np.nan, np.nan])
        if np.isfinite(interval).all():
            where += f" [{interval[0]:.1f}, {interval[1]:.1f}]"
        if where not in placed:  # two perturbed runs of one cell share its end
            placed.append(where)
    level = f"{100 * float(cube.attrs.get('summary_level', 0.9)):.0f} %"
    said += (f". The ends, with their {level} intervals: " if any("[" in w for w in placed)
             else ". The ends: ") + "; ".join(placed) + _epochs_inside(cube, runs)
    drops = [float(cube["perturb_drop_epoch"].sel(at)) for at in runs
             if "perturb_drop_epoch" in cube]
    drops = [d for d in drops if np.isfinite(d)]
    halves = (f" and halves by perturbation epoch {_span(drops)} (interpolated linearly "
              f"between perturbation epochs {_bracket(cube, drops)})" if drops else "")
    if _falls_everywhere(cube, runs):
        # a steady fall gives a ratio above 1 for any split: it leads, the ratio follows
        sentences = ["the sensitivity (lasting L2 / ε) falls at every later perturbation "
                     f"epoch{halves}, so any split of the epochs gives a before/after ratio "
                     "above 1, and this grid cannot tell whether it steps at the "
                     "critical-period end",
                     "split at the ends' estimates, " + said]
    else:
        sentences = [said] + ([f"the sensitivity (lasting L2 / ε) {halves.removeprefix(' and ')}"]
                              if drops else [])
    if rate := _rate_sentence(cube):
        sentences.append(rate)
    text = ". ".join([sentences[0], *(s[:1].upper() + s[1:] for s in sentences[1:])])
    return f"**In short:** {text}."


def _rate_sentence(cube: xr.Dataset) -> str:
    """The learning-rate confound (a sentence, "" where the rate does not decay): under
    either schedule the rate decays until a run's switch (restart resets it only there), so
    a later nudge trains at a smaller rate."""
    half = rate_half_life(cube)
    if not np.isfinite(half):
        return ""
    return (f"with the rate decaying, the learning rate itself halves by epoch {half:.1f}: a "
            "later nudge trains at a smaller rate, so a fall in the sensitivity may be the "
            "learning rate's rather than the critical period's (the restart schedule cannot "
            "tell: it restarts the rate only after a run's switch)")


def caveats(cube: xr.Dataset) -> list[str]:
    """The perturbation experiment's caveats (rst bullets). Where the short answer already
    leads with a fall at every perturbation epoch, the first says only what would show a
    step."""
    seeds = int(cube.sizes.get("seed", 1))
    replicates = int(cube.sizes.get("replicate", 1))
    runs = _perturbed_runs(with_lr_schedule(cube)) if "perturb_cp_ratio" in cube else []
    said = bool(runs) and _falls_everywhere(with_lr_schedule(cube), runs)
    ratio = "perturb_cp_ratio" in cube and bool(np.isfinite(cube["perturb_cp_ratio"]).any())
    return [
        "* Perturbation epochs closer together around the end would show whether the "
        "sensitivity steps there." if said else
        "* A sensitivity that falls steadily gives a before/after ratio above 1 for any "
        "split: the ratio shows the fall, not a step at the critical-period end; "
        "perturbation epochs closer together around the end would show a step." if ratio else
        "* No before/after ratio here: no critical-period end splits the perturbation epochs. "
        "Where one does, a sensitivity that falls steadily gives a ratio above 1 for any "
        "split, so perturbation epochs closer together around the end would be needed to "
        "show a step there.",
        f"* {seeds} seed{'s' if seeds != 1 else ''} and {replicates} "
        f"replicate{'s' if replicates != 1 else ''} per perturbation: indications, not "
        "tests (``grid.seeds``, ``perturbation.replicates``).",
    ]


__all__ = ["caveats", "nudge_label", "question", "rate_half_life", "short_answer"]
