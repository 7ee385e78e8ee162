"""How often the markers' intervals cover the truth, and how often a marker's offset from
the end is called "after" or "before the end", on simulated runs of the default grid: the
table in docs/analysis.md. The simulation is :mod:`critperiods.results.power` (what each run
draws, and how the summary's intervals are computed from it); ``python -m critperiods
power`` runs it on a config's grid.

    python bench/marker_coverage.py [--trials 300] [--seeds 3 5] [--out FILE]

Deterministic (fixed RNG seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from markdown_table import emit

from critperiods.results.power import DEFAULT_GRID, Scenario, coverage

LEVEL = DEFAULT_GRID.level

SCENARIOS = {
    "markers at the end (knee = drop = end = 7), λ̂ noise 5": Scenario(7.0, 7.0),
    "knee 4 epochs after the end (7, 11), drop 3 before (4), λ̂ noise 5": Scenario(
        7.0, 11.0, drop=4.0),
    "knee 4 epochs after the end, λ̂ noise 15": Scenario(7.0, 11.0, llc_noise=15.0),
    "markers at the end, seeds shift all three together (s.d. 15 %)": Scenario(
        7.0, 7.0, seed_shift=0.15),
    "knee after the end, drop before, seeds shift all three (s.d. 15 %)": Scenario(
        7.0, 11.0, drop=4.0, seed_shift=0.15),
}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [f"Nominal {LEVEL:.0%} intervals, {args.trials} simulated runs per row "
             "(`python bench/marker_coverage.py`). Coverage, then median width in epochs in "
             "brackets; \"excl. 0\" is how often the paired interval excludes 0 (says "
             "\"after\" or \"before the end\"):", "",
             "| scenario | seeds | knee | knee − end, paired | knee − end, unpaired | "
             "knee − end excl. 0 | drop | drop − end, paired | drop − end excl. 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            g = coverage(scenario, replace(DEFAULT_GRID, seeds=n_seeds), args.trials)
            cells = [f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                     for k in ("knee", "paired", "unpaired")]
            cells.append(pct(g["paired excludes 0"]))
            cells += [f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                      for k in ("drop", "drop paired")]
            cells.append(pct(g["drop paired excludes 0"]))
            lines.append(f"| {name} | {n_seeds} | " + " | ".join(cells) + " |")
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
