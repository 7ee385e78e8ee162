"""Whether the answer hinges on how a λ̂ flag is read: the markers' calls (:func:`marker_calls`)
of the run's own reading against those with the estimates carrying that flag read the other
way, counted where the run leaves them out (``analysis.llc_read_flagged``) or left out where
it counts them. ``unstable_step`` marks a condition more than a visible error
(docs/llc.md), so the report and ``summarize`` say what reading it otherwise would change.
"""

from __future__ import annotations

import xarray as xr

from critperiods.results.selection import read_in_flags, with_lr_schedule, with_read_in
from critperiods.results.summary import critical_period_summary
from critperiods.results.tables import (
    MARKER_NAMES,
    MarkerCall,
    llc_read_in_count,
    marker_calls,
)

__all__ = ["LISTED", "other_reading", "reading_sentence"]

#: How many changed calls a sentence lists (the rest it counts).
LISTED = 6


def _read_the_other_way(cube: xr.Dataset, flag: str) -> xr.Dataset:
    """``cube`` with ``flag`` added to the flags it reads in, or taken out of them."""
    names = read_in_flags(cube)
    return with_read_in(cube, [n for n in names if n != flag] if flag in names
                        else [*names, flag])


def _with_statistics(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` with its statistics recomputed at its own interval level."""
    cube = with_lr_schedule(cube)
    summary = critical_period_summary(cube, level=float(cube.attrs.get("summary_level", 0.9)))
    return cube.assign(summary.data_vars)


def other_reading(cube: xr.Dataset, flag: str) -> xr.Dataset:
    """``cube`` (with its statistics) reading the estimates flagged ``flag`` the other way:
    counted where it leaves them out, left out where it counts them; its statistics
    recomputed at the cube's interval level."""
    return _with_statistics(_read_the_other_way(cube, flag))


def _said(call: MarkerCall | None) -> str:
    """One call in words: "no offset", "includes 0", "after the end (within-noise knee: no
    evidence that λ̂ bends there; holds after Holm's correction)"."""
    if call is None:
        return "no offset"
    if call.side is None:
        return "includes 0"
    notes = [f"{'/'.join(call.flags)} knee"
             + (": no evidence that λ̂ bends there" if "within-noise" in call.flags else "")
             ] if call.flags else []
    if call.holds is not None:
        notes.append("holds after Holm's correction" if call.holds else
                     "not after Holm's correction")
    return f"{call.side} the end" + (f" ({'; '.join(notes)})" if notes else "")


def _calls(cube: xr.Dataset) -> dict[tuple[float, str, str], str]:
    return {(c.batch_size, c.lr_schedule, c.marker): _said(c) for c in marker_calls(cube)}


def reading_sentence(cube: xr.Dataset, flag: str = "unstable_step") -> str:
    """" Reading in ``unstable_step`` (``analysis.llc_read_flagged: [unstable_step]``) would
    count 84 more estimates and change 1 of the markers' calls: batch 256, continue, λ̂
    trunk: no offset → after the end (…)." or "… and change none of the markers' calls.";
    " Leaving ``unstable_step`` out (``analysis.llc_read_flagged: []``) would drop 84 …"
    where the cube reads it in. The setting named keeps the other flags the cube reads in.
    "" where no estimate the other reading moves carries ``flag`` (none carries it, or each
    also carries a flag left out either way), or the cube has no markers' offsets.
    ``cube`` holds its statistics."""
    if "llc_quality" not in cube or "llc_knee_minus_end_trunk" not in cube:
        return ""
    flipped = _read_the_other_way(cube, flag)
    moved = abs(llc_read_in_count(flipped) - llc_read_in_count(cube))
    if not moved:
        return ""
    ours, theirs = _calls(cube), _calls(_with_statistics(flipped))
    changed = [(where, ours.get(where, "no offset"), theirs.get(where, "no offset"))
               for where in sorted(set(ours) | set(theirs))
               if ours.get(where, "no offset") != theirs.get(where, "no offset")]
    setting = f"``analysis.llc_read_flagged: [{', '.join(read_in_flags(flipped))}]``"
    estimates = f"{moved} {'more ' if flag not in read_in_flags(cube) else ''}estimate" + (
        "s" if moved != 1 else "")
    how = (f"Leaving ``{flag}`` out ({setting}) would drop {estimates}"
           if flag in read_in_flags(cube) else
           f"Reading in ``{flag}`` ({setting}) would count {estimates}")
    if not changed:
        return f" {how} and change none of the markers' calls."
    said = "; ".join(f"batch {b:g}, {r}, {MARKER_NAMES[m]}: {was} → {now}"
                     for (b, r, m), was, now in changed[:LISTED])
    if len(changed) > LISTED:
        said += f"; and {len(changed) - LISTED} more"
    return f" {how} and change {len(changed)} of the markers' calls: {said}."
