"""Whether the answer hinges on how a λ̂ flag is read: the markers' calls (:func:`marker_calls`)
of the run's own reading against those with the estimates carrying that flag read the other
way, counted where the run leaves them out (``analysis.llc_read_flagged``) or left out where
it counts them. ``unstable_step`` marks a condition more than a visible error
(docs/llc.md), so the report and ``summarize`` say what reading it otherwise would change.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from critperiods.results.selection import READ_IN, read_in_flags, with_lr_schedule
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


def other_reading(cube: xr.Dataset, flag: str) -> xr.Dataset:
    """``cube`` (with its statistics) reading the estimates flagged ``flag`` the other way:
    counted where it leaves them out, left out where it counts them; its statistics
    recomputed at the cube's interval level."""
    names = read_in_flags(cube)
    names = [n for n in names if n != flag] if flag in names else [*names, flag]
    quality = cube["llc_quality"].copy()
    quality.attrs[READ_IN] = " ".join(names)
    other = with_lr_schedule(cube.assign(llc_quality=quality))
    summary = critical_period_summary(other, level=float(cube.attrs.get("summary_level", 0.9)))
    return other.assign(summary.data_vars)


def _said(call: MarkerCall | None) -> str:
    """One call in words: "no offset", "includes 0", "after the end (within-noise knee;
    holds after Holm's correction)"."""
    if call is None:
        return "no offset"
    if call.side is None:
        return "includes 0"
    notes = [f"{'/'.join(call.flags)} knee"] if call.flags else []
    if call.holds is not None:
        notes.append("holds after Holm's correction" if call.holds else
                     "not after Holm's correction")
    return f"{call.side} the end" + (f" ({'; '.join(notes)})" if notes else "")


def _calls(cube: xr.Dataset) -> dict[tuple[float, str, str], str]:
    return {(c.batch_size, c.lr_schedule, c.marker): _said(c) for c in marker_calls(cube)}


def reading_sentence(cube: xr.Dataset, flag: str = "unstable_step",
                     key: str = "analysis.llc_read_flagged") -> str:
    """" Counting the 84 estimates flagged ``unstable_step`` and nothing else (``key:
    [flag]``) would change 1 of the markers' calls: batch 256, continue, λ̂ trunk: no offset
    → after the end (…)." or "… none of the markers' calls."; "Leaving out the 84 …" where
    the cube counts them.
    "" where no estimate carries ``flag`` alone (or with flags read in), or the cube has no
    markers' offsets. ``cube`` holds its statistics."""
    if "llc_quality" not in cube or "llc_knee_minus_end_trunk" not in cube:
        return ""
    quality = cube["llc_quality"].values
    made = np.isfinite(quality)
    from critperiods.measure.llc.quality import FLAGS

    if not (np.where(made, quality, 0).astype(int) & FLAGS[flag]).any():
        return ""
    other = other_reading(cube, flag)
    ours, theirs = _calls(cube), _calls(other)
    changed = [(where, ours.get(where, "no offset"), theirs.get(where, "no offset"))
               for where in sorted(set(ours) | set(theirs))
               if ours.get(where, "no offset") != theirs.get(where, "no offset")]
    moved = abs(llc_read_in_count(other) - llc_read_in_count(cube))
    if not moved:  # every estimate so flagged carries another flag the run leaves out
        return ""
    estimates = f"the {moved} estimate{'s' if moved != 1 else ''} flagged ``{flag}``"
    how = (f"Leaving out {estimates} would change" if flag in read_in_flags(cube) else
           f"Counting {estimates} and nothing else (``{key}: [{flag}]``) would change")
    if not changed:
        return f" {how} none of the markers' calls."
    said = "; ".join(f"batch {b:g}, {r}, {MARKER_NAMES[m]}: {was} → {now}"
                     for (b, r, m), was, now in changed[:LISTED])
    if len(changed) > LISTED:
        said += f"; and {len(changed) - LISTED} more"
    return f" {how} {len(changed)} of the markers' calls: {said}."
