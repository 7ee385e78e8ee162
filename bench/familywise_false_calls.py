"""How often a whole run tells some marker from the end, with every offset's own interval and
after Holm's correction: the numbers behind docs/analysis.md's "Many offsets, one question".

A simulated run is the default's: 3 batch sizes (independent cells, each as
:func:`critperiods.results.power.simulate` draws one), and in each the λ̂ knee along the
trunk, the λ̂ knee of the never-blurred run (an independent λ̂ curve of the same shape) and
the divergence drop: 9 offsets from the end, measured as the summary measures them
(:func:`~critperiods.results.markers.knee_fit`, :func:`~critperiods.results.markers.drop_fit`),
with p-values and Holm's adjustment over the 9 as the summary computes them. Beside them,
``power``'s shortcut (:func:`critperiods.results.power.held_after_holm`), which builds runs
from separately simulated cells instead, counting flagged knees as this script does: the
two should agree within the runs' noise.

    python bench/familywise_false_calls.py [--trials 500] [--seeds 3 5] [--out FILE]

Deterministic (fixed RNG seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from markdown_table import emit

from critperiods.results.end_fit import fit_end
from critperiods.results.markers import drop_fit, knee_fit
from critperiods.results.multiple_testing import holm_adjusted
from critperiods.results.power import (
    DEFAULT_GRID,
    Grid,
    Scenario,
    _drop,
    held_after_holm,
    simulate,
    simulated_offsets,
)

CELLS = 3  #: batch sizes in the default run
SCENARIOS = {
    "every marker at the end (7)": Scenario(7.0, 7.0),
    "both knees 4 epochs after the end (7, 11), drop 3 before (4)": Scenario(7.0, 11.0,
                                                                              drop=4.0),
}


def run_offsets(sc: Scenario, grid: Grid, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """One simulated run's 9 offset p-values (NaN where a cell locates no end, or has no
    knee or drop) and whether each is on a flagged knee (unstable or within noise)."""
    switches, epochs = np.asarray(grid.switches), np.asarray(grid.llc_epochs)
    present = np.ones(grid.seeds, dtype=bool)
    p, flagged = [], []
    for _ in range(CELLS):
        acc, trunk, div = simulate(sc, grid, rng)
        sharp = simulate(sc, grid, rng)[1]
        end = fit_end(switches, acc, grid.level)
        for llc in (trunk, sharp):
            knee = knee_fit(epochs, llc, grid.level, end)
            p.append(knee.offset_p())
            flagged.append(bool(knee.unstable or knee.within_noise))
        drop, loo = _drop(switches, div)
        p.append(drop_fit(switches, switches, drop, loo, present, grid.level, end).offset_p())
        flagged.append(False)
    return np.array(p), np.array(flagged)


def tally(sc: Scenario, grid: Grid, trials: int) -> dict[str, float]:
    """Over ``trials`` runs: the share with some offset told from 0 by its own interval
    (``any``) and after Holm's correction (``any holm``), the same counting only offsets on
    unflagged knees or drops (``clear``, ``clear holm``: what the short answer names), and
    the share of the trunk knees' offsets told from 0 (``trunk``, ``trunk holm``)."""
    rng = np.random.default_rng(0)
    alpha = 1 - grid.level
    out: dict[str, list] = {k: [] for k in ("any", "any holm", "clear", "clear holm", "trunk",
                                            "trunk holm")}
    for _ in range(trials):
        p, flagged = run_offsets(sc, grid, rng)
        told, held = p < alpha, holm_adjusted(p) < alpha  # NaN: not told
        out["any"].append(told.any())
        out["any holm"].append(held.any())
        out["clear"].append((told & ~flagged).any())
        out["clear holm"].append((held & ~flagged).any())
        out["trunk"] += told[0::3].tolist()
        out["trunk holm"] += held[0::3].tolist()
    return {k: float(np.mean(v)) for k, v in out.items()}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [f"{args.trials} simulated runs per row of {CELLS} batch sizes × 3 markers "
             f"(`python bench/familywise_false_calls.py`), offsets at {DEFAULT_GRID.level:.0%} "
             "each: the share of runs that tell some marker from the end by its own interval "
             "and after Holm's correction over the 9; the same counting unflagged knees and "
             "drops only (what the short answer names); and the share of trunk-knee offsets "
             "told from 0; then, after Holm, power's resampled runs (power.held_after_holm, "
             "flagged knees counted):", "",
             "| scenario | seeds | some offset | after Holm | some unflagged | after Holm | "
             "trunk knee | after Holm | resampled: some offset after Holm | trunk knee |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            grid = replace(DEFAULT_GRID, seeds=n_seeds)
            got = tally(scenario, grid, args.trials)
            offsets = simulated_offsets(scenario, grid, args.trials, p_values=True)[1]
            resampled = held_after_holm(offsets, CELLS, 2, grid.level, weak_knees=False)
            cells = [pct(got[k]) for k in ("any", "any holm", "clear", "clear holm", "trunk",
                                            "trunk holm")]
            cells += [pct(resampled["some held"]), pct(resampled["knee held"])]
            lines.append(f"| {name} | {n_seeds} | " + " | ".join(cells) + " |")
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
