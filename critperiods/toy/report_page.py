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

from critperiods.results.rst import PAGE_STYLE, figure_rst, list_table
from critperiods.results.setup import recorded_config
from critperiods.toy.cube import hottest, summary_table
from critperiods.toy.figures import FIGURE_LABELS

#: W1 up to this many times an exact posterior sample's counts as at the sampling level
SAMPLING_LEVEL = 2.0
#: a fitted convergence exponent this close to gradient flow's counts as agreeing with it
EXPONENT_TOLERANCE = 0.1
#: a larger share of endpoints with a Hessian diagonal entry ≤ 0 is named on the page
NONPOSITIVE_CURVATURE = 0.05


def _names(index: pd.Index) -> str:
    return ", ".join(index)


def _span(values: pd.Series, digits: int = 2) -> str:
    """``lo–hi`` of the finite values (one value where both round alike; ``n/a`` if none)."""
    values = values[np.isfinite(values)]
    if values.empty:
        return "n/a"
    lo, hi = values.min(), values.max()
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else \
        f"{lo:.{digits}f}–{hi:.{digits}f}"


def _w1_ratio(table: pd.DataFrame) -> pd.Series:
    """W1 over its sampling level, NaN where that level is 0 (nothing to compare with)."""
    return table["W1"] / table["W1_null"].where(table["W1_null"] > 0)


def _percent(values: pd.Series) -> str:
    """``2–9 %`` (whole percent), or ``n/a``."""
    span = _span(values, 0)
    return span if span == "n/a" else f"{span} %"


def _signed_span(values: pd.Series) -> str:
    """``−48 to −20 %``-style span of the finite percentages (a single value where both round
    alike; ``n/a`` if none)."""
    values = values[np.isfinite(values)]
    if values.empty:
        return "n/a"

    def pct(v: float) -> str:
        return "0" if round(v) == 0 else f"{v:+.0f}".replace("-", "−")
    lo, hi = pct(values.min()), pct(values.max())
    return f"{lo} %" if lo == hi else f"{lo} to {hi} %"


def _convergence_line(table: pd.DataFrame, n_cells: int | None) -> str:
    fitted = table[table["exponent"].notna()]
    gap = fitted["exponent"] - fitted["exponent_gf"]
    off = gap[gap.abs() > EXPONENT_TOLERANCE]
    line = ("* **1. Convergence** — the fitted exponent p (median steps ∝ threshold^−p) is "
            f"within {EXPONENT_TOLERANCE:g} of gradient flow's on {len(fitted) - len(off)} of "
            f"{len(fitted)} landscapes")
    if not off.empty:
        line += "; off by more: " + ", ".join(
            f"{n} {table.loc[n, 'exponent']:.2f} against {table.loc[n, 'exponent_gf']:.2f}"
            for n in off.index)
    if len(fitted) < len(table):
        line += ("; not fitted (fewer than 3 thresholds reached) on "
                 + _names(table.index[table["exponent"].isna()]))
    if n_cells is not None and "exponent_cells" in fitted:
        part = fitted[fitted["exponent_cells"] < n_cells]
        if not part.empty:  # a mean over fewer cells than the page's other means
            line += ("; fitted in only some cells, and averaged over those, on " + ", ".join(
                f"{n} ({int(k)} of {n_cells})" for n, k in part["exponent_cells"].items()))
    return line + "."


def _escape_line(table: pd.DataFrame) -> str:
    stuck, escaped = table.index[table["stuck"] >= 0.9], table.index[table["stuck"] <= 0.2]
    between = table.index.difference(stuck.union(escaped), sort=False)
    parts = ([f"≥ 90 % on {_names(stuck)}"] if len(stuck) else []) + (
        [f"≤ 20 % on {_names(escaped)}"] if len(escaped) else []) + (
        [f"in between on {_names(between)}"] if len(between) else [])
    return ("* **2. Escape** — near-start runs that stayed within the escape radius: "
            + "; ".join(parts) + ".")


#: An R² the noise line calls high: the fit over all entries hides a coordinate's misfit.
HIGH_R2 = 0.95


def _noise_line(table: pd.DataFrame, hot: tuple[float, int] | None) -> str:
    r2 = table["R2_min"] if "R2_min" in table else table["R2"]
    line = ("* **3. Noise vs Hessian** — the noise covariance is c times the Hessian with c "
            f"{_span(table['noise/H'])} (R² {_span(r2, 3)} in the worst cell), and "
            f"{_span(table['noise/GN'])} times the Gauss–Newton matrix JᵀSJ")
    if "H<=0_hot" not in table:
        return line + "."
    bad = table["H<=0_hot"][table["H<=0_hot"] > NONPOSITIVE_CURVATURE]
    if bad.empty:
        return line + "."
    cell = "" if hot is None else f" (lr {hot[0]:g}, B {hot[1]})"
    return (line + "; but not along a degenerate coordinate where the Hessian's diagonal "
            f"entry is ≤ 0, which no c can match: in the cell with the most noise{cell} "
            "at " + ", ".join(f"{100 * v:.0f} % of {n}'s endpoints" for n, v in bad.items())
            + (" (along one coordinate; R², a fit over all entries, stays high)."
               if (r2[bad.index] >= HIGH_R2).all() else " (along one coordinate)."))


def _posterior_line(table: pd.DataFrame) -> str:
    ratio = _w1_ratio(table)
    level, above = ratio[ratio <= SAMPLING_LEVEL], ratio[ratio > SAMPLING_LEVEL]
    compared = int(ratio.notna().sum())
    unmeasured = table.index[table["W1"].isna()]
    no_level = table.index[table["W1"].notna() & ratio.isna()]
    verdict = (f"differ on {len(above)} of {compared} landscapes" if len(above) else
               "not compared" if not compared else
               "match on the one compared" if compared == 1 else
               f"match on all {compared} compared")
    parts = ([f"{_span(above, 1)}× an exact posterior sample's level on "
              f"{_names(above.index)}"] if len(above) else []) + (
        [f"at that level (≤ {SAMPLING_LEVEL:g}×) on {_names(level.index)}"]
        if len(level) and len(above) else
        [f"at an exact posterior sample's level (≤ {SAMPLING_LEVEL:g}×) on "
         f"{_names(level.index)}"] if len(level) else []) + (
        [f"not compared on {_names(no_level)} (a sampling level of 0)"]
        if len(no_level) else []) + (
        [f"not measured on {_names(unmeasured)} (no prior-start endpoint)"]
        if len(unmeasured) else [])
    return (f"* **4. Endpoints vs the tempered posterior** — {verdict}: W1 is "
            + "; ".join(parts) + ".")


def _llc_line(table: pd.DataFrame) -> str:
    def off(estimate: pd.Series, reference: pd.Series) -> pd.Series:  # in % of the reference
        return 100 * (estimate - reference[estimate.index]) / reference[estimate.index]

    exact, target = table["lambda"], table["target"]
    end = table["llc_at_end"].dropna()
    missing = table.index[~np.isfinite(table["llc_at_w*"])]
    flags = table["w*_flags"][table["w*_flags"] != "ok"]
    none = table.index.difference(end.index, sort=False)
    line = ("* **5. λ̂ against the exact λ** — at w* "
            f"{_signed_span(off(table['llc_at_w*'], exact))}"
            + ("" if end.empty else ", at far-start SGD endpoints (means of the estimates not "
               f"flagged) {_signed_span(off(end, exact))}")
            + "; the finite-nβ target (what the estimator converges to at its nβ and γ; λ "
            f"is its limit as nβ grows) is itself {_signed_span(off(target, exact))} off λ. "
            f"Against that target λ̂ is off by {_percent(off(table['llc_at_w*'], target).abs())}"
            " at w*"
            + ("" if flags.empty else
               " (flagged: " + ", ".join(f"{n} {f}" for n, f in flags.items()) + ")")
            + (f" (no estimate at w* on {_names(missing)})" if len(missing) else ""))
    counts = (f"{int(table['end_n'].sum())} endpoint estimates are not flagged and "
              f"{int(table['end_flagged'].sum())} flagged and left out")
    if end.empty:
        return line + f"; {counts}: no unflagged estimate to compare."
    return (line + f" and by {_percent(off(end, target).abs())} at the endpoints ({counts}"
            + (f"; none unflagged on {_names(none)}" if len(none) else "") + ").")


def answer_lines(table: pd.DataFrame, n_cells: int | None = None,
                 hot: tuple[float, int] | None = None) -> list[str]:
    """The answer as rst bullets, one per finding, from :func:`summary_table`'s rows; the
    page's table gives every landscape's numbers. ``n_cells``: how many (lr, batch size)
    cells the means are over; ``hot``: the cell with the most SGD noise."""
    lines = [
        _convergence_line(table, n_cells),
        _escape_line(table),
        _noise_line(table, hot),
        _posterior_line(table),
        _llc_line(table),
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
              "W1 / sampling level", "noise / H (mean R²)"]
    ratio = _w1_ratio(table)

    def num(value: float, digits: int, suffix: str = "") -> str:
        return f"{value:.{digits}f}{suffix}" if np.isfinite(value) else "n/a"

    rows = [[name, f"{row['lambda']:.3f} ({row.m})", f"{row.target:.3f}",
             num(row["llc_at_w*"], 3) + ("" if row["w*_flags"] == "ok"
                                          else f" ({row['w*_flags']})"),
             num(row.llc_at_end, 3) + f" ({row.end_n} / {row.end_flagged})",
             f"{num(row.exponent, 2)} ({row.exponent_gf:.2f})", f"{row.stuck:.2f}",
             num(ratio[name], 1, "×"), f"{row['noise/H']:.2f} ({row.R2:.3f})"]
            for name, row in table.iterrows()]
    return "\n".join(list_table(header, rows))


def protocol(toy: dict) -> str:
    """How the numbers were made, in a paragraph (rst), with this run's settings (the
    ``toy`` section of its recorded config)."""
    sgd, llc, data = toy["sgd"], toy["llc"], toy["data"]
    nbeta = toy["posterior"].get("nbeta")
    return (
        "Each landscape is a regression y = u(w)·x + ε whose features u are monomials of one "
        f"or two weights, on n = {data['n']} samples"
        + (" with the noise projected off the inputs, so that the empirical loss keeps its "
           "minimum exactly at w* = 0 and its degree" if data.get("orthogonal_noise") else "")
        + ". For every learning rate and batch size (a cell), three ensembles of "
        f"{sgd['trajectories']} runs take {sgd['steps']} steps of plain minibatch SGD: from a "
        "far start (steps to each loss threshold, and λ̂ at endpoints), from near a critical "
        "point (which coordinates escape), and from the prior box (endpoints against the "
        "tempered posterior, computed exactly on a grid at "
        + ("nβ = 2B / (lr σ²), each cell's SGD temperature" if nbeta is None
           else f"nβ = {nbeta:g}")
        + ", and the noise covariance and Hessian there). λ̂ comes from the pipeline's SGLD "
        f"estimator ({llc['chains']} chains × {llc['burn_in']} + {llc['draws']} steps) at w* "
        "and at far-start endpoints, against the exact learning coefficient and the "
        "finite-nβ target. The protocol, its caveats and a reading of every finding: "
        "docs/toy_landscapes.md.")


def landing_page(cube: xr.Dataset, figure: str | Path) -> str:
    """The toy report's first page (reStructuredText) for ``cube``, embedding ``figure``
    (the λ̂ figure); the protocol, with the run's settings, closes the page."""
    table = summary_table(cube)
    config = recorded_config(cube)
    experiment = config.get("experiment", "run")
    title = "Toy landscapes" + ("" if experiment == "toy_landscapes" else f": {experiment}")
    cube_path = f"{config.get('results_dir', 'results')}/{experiment}/toy_cube.nc"
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
        *answer_lines(table, n_cells=cube.lr.size * cube.batch_size.size,
                      hot=hottest(cube)), "",
        figure_rst(figure, alt="estimated λ̂ against the exact learning coefficient"), "",
        "Summary table", "-------------", "",
        table_rst(table), "",
        "*λ̂ at endpoints*: mean of the estimates not flagged; *flagged*: not at a minimum, "
        "negative, not converged, with diverged chains or heavy-tailed (``llc_quality`` in "
        "the cube); "
        "*stuck*: near-start runs that moved less than the escape radius; *W1 / sampling "
        "level*: prior-start SGD endpoints' W1 distance to the tempered posterior over an "
        "exact posterior sample's. Every column, and more: ``python -m critperiods summarize "
        f"{cube_path}`` and the *T0 summary table (CSV)*.", "",
        "Figures, in reading order", "-------------------------", "",
        reading, "",
        "How the numbers were made", "-------------------------", "",
        protocol(config["toy"]) if "toy" in config else "See docs/toy_landscapes.md.", "",
    ]
    return "\n".join(parts)


__all__ = ["answer_lines", "landing_page", "protocol", "table_rst"]
