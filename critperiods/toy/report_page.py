"""The toy study's report landing page: the question, this run's answer to each finding, the
summary table and the λ̂ figure, then the reading order.

``snakemake --report`` opens on the workflow description; the toy_plots stage writes this
page from the toy cube after every run so that the report leads with what the run found
(the blur-switch study's page is :mod:`critperiods.results.report_page`). Every number is a
variable of the toy cube, averaged as ``summarize`` averages it (:func:`summary_table`);
the page states numbers and compares them with the exact ones, and leaves the reading of
the findings to docs/toy_landscapes.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from critperiods.results.rst import PAGE_STYLE, figure_rst, list_table
from critperiods.toy.cube import summary_table
from critperiods.toy.figures import FIGURE_LABELS

#: W1 up to this many times an exact posterior sample's counts as at the sampling level
SAMPLING_LEVEL = 2.0
#: a fitted convergence exponent this close to gradient flow's counts as agreeing with it
EXPONENT_TOLERANCE = 0.1


def _names(index: pd.Index) -> str:
    return ", ".join(index) or "none"


def _span(values: pd.Series, digits: int = 2) -> str:
    lo, hi = values.min(), values.max()
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else \
        f"{lo:.{digits}f}–{hi:.{digits}f}"


def answer_lines(table: pd.DataFrame) -> list[str]:
    """The answer as rst bullets, one per finding, from :func:`summary_table`'s rows; the
    page's table gives every landscape's numbers."""
    gap = table["exponent"] - table["exponent_gf"]
    off = gap[gap.abs() > EXPONENT_TOLERANCE]
    ratio = table["W1"] / table["W1_null"]
    above = ratio[ratio > SAMPLING_LEVEL]
    stuck, escaped = table.index[table["stuck"] >= 0.9], table.index[table["stuck"] <= 0.2]
    w_star = 100 * (table["llc_at_w*"] - table["target"]) / table["target"]
    end = 100 * (table["llc_at_end"] - table["target"]) / table["target"]
    w_star_flags = table["w*_flags"][table["w*_flags"] != "ok"]
    lines = [
        "* **1. Convergence** — the fitted exponent p (median steps ∝ threshold^−p) is "
        f"within {EXPONENT_TOLERANCE:g} of gradient flow's on {len(table) - len(off)} of "
        f"{len(table)} landscapes"
        + ("" if off.empty else "; off by more: " + ", ".join(
            f"{n} {table.loc[n, 'exponent']:.2f} against {table.loc[n, 'exponent_gf']:.2f}"
            for n in off.index)) + ".",
        "* **2. Escape** — near-start runs that stayed within the escape radius: ≥ 90 % on "
        f"{_names(stuck)}; ≤ 20 % on {_names(escaped)}"
        + ("" if len(stuck) + len(escaped) == len(table) else
           "; in between on " + _names(table.index.difference(stuck.union(escaped),
                                                             sort=False))) + ".",
        "* **3. Noise vs Hessian** — the noise covariance is c times the Hessian with c "
        f"{_span(table['noise/H'])} (R² {_span(table['R2'], 3)}), and "
        f"{_span(table['noise/GN'])} times the Gauss–Newton matrix JᵀSJ.",
        "* **4. Endpoints vs the tempered posterior** — W1 is at an exact posterior sample's "
        f"level (≤ {SAMPLING_LEVEL:g}×) on {_names(ratio.index[ratio <= SAMPLING_LEVEL])}"
        + ("" if above.empty else f", and {_span(above, 1)}× it on {_names(above.index)}")
        + ".",
        "* **λ̂ against the finite-nβ target** (what the estimator converges to at its nβ and γ; "
        "the exact λ is its limit as nβ grows) "
        f"— at w* off by {_span(w_star.abs(), 0)} %"
        + ("" if w_star_flags.empty else " (flagged: " + ", ".join(
            f"{n} {f}" for n, f in w_star_flags.items()) + ")")
        + f"; at far-start SGD endpoints {int(table['end_n'].sum())} estimates are not "
        f"flagged and {int(table['end_flagged'].sum())} flagged (left out), and the "
        f"unflagged means are off by {_span(end.abs().dropna(), 0)} %"
        + ("" if end.notna().all() else
           f" (none unflagged on {_names(table.index[end.isna()])})") + ".",
    ]
    worst = table["diverged"].max()
    if worst > 0:
        lines.append(f"* Runs that diverged: up to {worst:.0%} of a cell's "
                     f"({_names(table.index[table['diverged'] > 0])}); they are left out "
                     "of every measurement above.")
    return lines


def table_rst(table: pd.DataFrame) -> str:
    """The summary as an rst list-table: a row per landscape."""
    header = ["landscape", "exact λ (m)", "finite-nβ target", "λ̂ at w*",
              "λ̂ at endpoints (ok / flagged)", "p (gradient flow)", "stuck",
              "W1 / sampling level", "noise / H (R²)"]
    rows = [[name, f"{row['lambda']:.3f} ({row.m})", f"{row.target:.3f}",
             f"{row['llc_at_w*']:.3f}" + ("" if row["w*_flags"] == "ok"
                                          else f" ({row['w*_flags']})"),
             (f"{row.llc_at_end:.3f}" if np.isfinite(row.llc_at_end) else "n/a")
             + f" ({row.end_n} / {row.end_flagged})",
             f"{row.exponent:.2f} ({row.exponent_gf:.2f})", f"{row.stuck:.2f}",
             f"{row.W1 / row.W1_null:.1f}×", f"{row['noise/H']:.2f} ({row.R2:.3f})"]
            for name, row in table.iterrows()]
    return "\n".join(list_table(header, rows))


def landing_page(cube: xr.Dataset, figure: str | Path, description: str) -> str:
    """The toy report's first page (reStructuredText) for ``cube``, embedding ``figure``
    (the λ̂ figure); ``description`` (the workflow's static description) closes the page."""
    table = summary_table(cube)
    experiment = (yaml.safe_load(cube.attrs.get("config", "")) or {}).get("experiment", "run")
    title = f"Toy landscapes: {experiment}"
    cells = ", ".join(f"lr {lr:g}" for lr in cube.lr.values) + "; " + ", ".join(
        f"B {b}" for b in cube.batch_size.values)
    reading = "\n".join(f"* {label}" for label in FIGURE_LABELS.values())
    parts = [
        title, "=" * len(title), "", PAGE_STYLE, "",
        "**Question.** On landscapes whose degeneracy is known exactly, does minibatch SGD "
        "behave as the SLT reading says: slower convergence to more degenerate points, escape "
        "along regular directions only, noise proportional to the Hessian, endpoints "
        "distributed as the tempered posterior; and does the SGLD estimate λ̂ recover the "
        "exact learning coefficient λ?", "",
        f"**Answer from this run** ({len(table)} landscapes; means over the cells {cells}; "
        "the reading of each finding: docs/toy_landscapes.md):", "",
        *answer_lines(table), "",
        figure_rst(figure, alt="estimated λ̂ against the exact learning coefficient"), "",
        "Summary table", "-------------", "",
        table_rst(table), "",
        "*λ̂ at endpoints*: mean of the estimates not flagged; *flagged*: not at a minimum, "
        "negative, not converged or with diverged chains (``llc_quality`` in the cube); "
        "*stuck*: near-start runs that moved less than the escape radius; *W1 / sampling "
        "level*: prior-start SGD endpoints' W1 distance to the tempered posterior over an "
        "exact posterior sample's. Every column, and more: ``python -m critperiods summarize "
        "results/<experiment>/toy_cube.nc`` and the *T0 summary table (CSV)*.", "",
        "Figures, in reading order", "-------------------------", "",
        reading, "",
        "How the numbers were made", "-------------------------", "",
        description.strip(), "",
    ]
    return "\n".join(parts)


__all__ = ["answer_lines", "landing_page", "table_rst"]
