"""``summarize`` and ``compare``: a finished run's critical-period table, and several
runs side by side."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from critperiods.cli.common import check_out_path, open_cube_or_exit, plain


def _stale_statistics(cube, diverged: list[str]) -> str | None:
    """Why the statistics stored in an older cube cannot be read as they are (None if they
    can)."""
    from critperiods.results.summary import INTERVAL_METHOD

    if diverged and "run_diverged" not in cube:
        return ("predates the run_diverged flag and its stored statistics include the "
                "diverged runs")
    if "critical_period_end" in cube and "permanent_deficit_seeds" not in cube:
        return ("predates the Student-t interval of the permanent deficit (its stored "
                "intervals are seed-bootstrap ranges, too narrow with few seeds)")
    method = cube.attrs.get("summary_interval_method",
                            "bootstrap" if "summary_n_boot" in cube.attrs else INTERVAL_METHOD)
    if "critical_period_end" in cube and method != INTERVAL_METHOD:
        return ("predates the jackknife intervals of the end and the exponents (its stored "
                "ones are bootstrap ranges, too narrow with few seeds or batch sizes)")
    if "llc_mean" in cube and "llc_change_epoch_trunk" in cube and (
            "llc_change_epoch_trunk_loo_range" not in cube):
        return ("predates the λ̂ markers' leave-one-out ranges (how far each moves without "
                "one seed)")
    if "critical_period_end" in cube and "divergence_drop_minus_end" not in cube:
        return ("predates the markers' intervals and their offsets from the end (do λ̂ and "
                "the divergence mark it?)")
    if "llc_knee_trunk" in cube and "llc_knee_trunk_within_noise" not in cube:
        return ("predates the flag of a λ̂ knee whose curve bends no more than its noise "
                "(llc_knee_<trunk|sharp>_within_noise)")
    if "llc_descent" in cube and "critical_period_end" in cube and (
            "llc_net_knee_trunk" not in cube):
        return ("predates the knees of λ̂ net of the chains' descent (llc_net_knee_<trunk|"
                "sharp>), which join Holm's correction")
    if "critical_period_end" in cube and "lr_schedule" in cube.dims and {
            "continue", "restart"} <= set(map(str, cube["lr_schedule"].values)) and (
            "restart_deficit_reduction" not in cube):
        return ("predates the paired comparison of the deficit with the rate continued and "
                "restarted (restart_deficit_reduction)")
    return None


def _statistics(cube, recompute: bool, diverged: list[str]) -> tuple[Any, Any, str | None, bool]:
    """``(cube, summary, stale, recomputed)``: the critical-period statistics of ``cube``,
    those it stores, or recomputed (at the cube's own interval level) where asked, where it
    has none or where they are stale (:func:`_stale_statistics`, which says why); the cube
    then carries them too (what the perturbation statistics read)."""
    from critperiods.results.selection import with_lr_schedule
    from critperiods.results.summary import critical_period_summary

    stale = _stale_statistics(cube, diverged)
    recompute = recompute or stale is not None or "critical_period_end" not in cube
    if not recompute:
        return cube, cube, stale, False
    cube = with_lr_schedule(cube)  # as the summary treats it: one continue schedule
    summary = critical_period_summary(cube, level=float(cube.attrs.get("summary_level", 0.9)))
    return cube.assign(summary.data_vars), summary, stale, True


def compare(args: argparse.Namespace) -> int:
    from critperiods.results.comparison import (
        Run,
        accuracy_differences,
        comparison_table,
        format_comparison,
        run_names,
    )
    from critperiods.results.tables import runs_at_chance, summary_table

    if len(args.cubes) < 2:
        raise SystemExit("critperiods: compare needs at least two cubes (the first is the "
                         "baseline)")
    if args.csv:
        check_out_path(args.csv, example="comparison.csv")
    cubes = [open_cube_or_exit(path) for path in args.cubes]
    for path, cube in zip(args.cubes, cubes, strict=True):
        if cube.attrs.get("cube_kind") == "toy_landscapes":
            raise SystemExit(f"critperiods: {path}: a toy cube; compare reads the critical "
                             "period's cubes (results/<experiment>/cube.nc)")
    runs = []
    for name, cube in zip(run_names(cubes, args.cubes), cubes, strict=True):
        diverged = runs_at_chance(cube)
        _, summary, stale, _ = _statistics(cube, False, diverged)
        runs.append(Run(name, cube, summary_table(summary), tuple(diverged), stale))
    try:
        differences = accuracy_differences(cubes, level=args.level)
    except ValueError as err:
        raise SystemExit(f"critperiods: {err}") from None
    if any(run.name != str(path) for run, path in zip(runs, args.cubes, strict=True)):
        for run, path in zip(runs, args.cubes, strict=True):
            print(f"{run.name}: {path}")
        print()
    print(format_comparison(runs, differences))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        comparison_table(differences, [r.name for r in runs]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def summarize(args: argparse.Namespace) -> int:
    from critperiods.results.selection import read_in_flags
    from critperiods.results.setup import recorded_config, setup_sentence
    from critperiods.results.tables import (
        as_said,
        diverged_sentence,
        flag_reasons,
        flagged_fate,
        format_table,
        llc_flag_counts,
        marker_tally,
        marker_verdicts,
        markers_not_computed,
        read_in_phrase,
        restart_verdicts,
        runs_at_chance,
        to_csv,
    )

    if args.csv:
        check_out_path(args.csv)
    cube = open_cube_or_exit(args.cube)
    if cube.attrs.get("cube_kind") == "toy_landscapes":
        from critperiods.toy.cube import format_summary, summary_csv

        if args.read_flagged or args.recompute:
            option = "--read-flagged" if args.read_flagged else "--recompute"
            raise SystemExit(
                f"critperiods: summarize: {option} reads a critical-period cube; "
                f"{args.cube} is a toy cube, whose λ̂ flags follow analysis.llc_max_rhat, "
                "analysis.llc_max_trend_z and toy.llc.max_endpoint_bias: change those in "
                "the config and rerun (only toy_cube and toy_plots rerun)")

        print(format_summary(cube))
        if args.csv:
            summary_csv(cube, args.csv)
            print(f"wrote {args.csv}")
        return 0
    stored = read_in_flags(cube)  # what the stored statistics read in (the config's)
    if args.read_flagged:
        cube = _read_flagged(cube, args.cube, args.read_flagged)
    diverged = runs_at_chance(cube)
    cube, summary, stale, recompute = _statistics(cube, args.recompute or bool(args.read_flagged),
                                               diverged)
    setup = setup_sentence(cube)
    if setup:  # what ran, first: runs that differ in a key off the grid look alike otherwise
        experiment = recorded_config(cube).get("experiment")
        print(textwrap.fill(f"{experiment}: {setup}." if experiment else f"{setup}.",
                            width=100) + "\n")
    if stale and not args.recompute:
        print(f"(statistics recomputed: this cube {stale})\n")
    if args.read_flagged:
        print(textwrap.fill(
            f"(statistics recomputed with the λ̂ estimates {read_in_phrase(read_in_flags(cube))}"
            " taken in as valid (--read-flagged): the stored statistics, the report and the "
            "figures " + (f"take in those {read_in_phrase(stored)}"
                          " (analysis.llc_read_flagged))" if stored else "leave them out)"),
            width=100, break_on_hyphens=False) + "\n")
    if "perturb_l2" in cube and (recompute or "perturb_cp_ratio" not in cube):
        from critperiods.results.perturbation_summary import perturbation_summary

        cube = cube.assign(perturbation_summary(cube).data_vars)
    if "perturb_l2" in cube:  # a perturbation run answers its own question first
        from critperiods.results import perturbation_page

        said = perturbation_page.short_answer(cube.assign(summary.data_vars))
        print(textwrap.fill(plain(said), width=100))
        for caveat in perturbation_page.caveats(cube):
            print(textwrap.fill(plain(caveat), width=100, subsequent_indent="  "))
        print()
    if "lr_schedule" in cube.dims:  # the answer first, as on the report's first page
        from critperiods.results.report_page import short_answer

        said = plain(short_answer(cube.assign(summary.data_vars)))
        if "perturb_l2" in cube:
            said = said.replace("In short:", "The critical period itself, in short:")
        print(textwrap.fill(said, width=100) + "\n")
    print(format_table(summary, markers_not_computed(cube)))
    verdicts = restart_verdicts(summary)
    if verdicts:
        print("\ndoes the permanent deficit survive restarting the learning rate at the switch?")
        for b, verdict in verdicts.items():
            print(f"  batch {b:g}: {verdict}")
    markers = marker_verdicts(summary)
    if markers:
        print("\ndo λ̂ and the divergence mark the end? Each marker minus the end, in epochs "
              "(λ̂: its knee; divergence: div_drop); intervals: "
              + as_said(summary.attrs.get('offset_interval_kind', 'over seeds')))
        for (b, r), verdict in markers.items():
            print(f"  batch {b:g}, {r}: {verdict}")
        for line in marker_tally(cube):
            print(f"  {line}")
        if any("includes 0" in verdict for verdict in markers.values()):
            print("  (\"includes 0\": these seeds cannot tell the marker from the end; how "
                  "often this grid could have, at this run's noise: python -m critperiods "
                  f"power --noise-from {args.cube})")
    if diverged:
        print(f"\n{diverged_sentence(len(diverged))}:")
        for run in diverged:
            print(f"  {run}")
    counts = llc_flag_counts(cube)
    if counts:
        key = " and ".join(name for name, given in (("analysis.llc_read_flagged", stored),
                                                    ("--read-flagged", args.read_flagged))
                           if given) or "analysis.llc_read_flagged"
        fate = flagged_fate(cube, key=key)
        print(f"\nλ̂ estimates: {counts['estimates']}, ok {counts['ok']}, {flag_reasons(counts)}"
              + (f"; {fate}" if fate else ""))
        from critperiods.results.flag_reading import reading_sentence

        said = reading_sentence(cube).strip()
        if said:
            print(textwrap.fill(plain(said), width=100, break_on_hyphens=False))
        from critperiods.results.report_page import (
            descent_sentence,
            llc_error_sentence,
            llc_relaxation,
            stability_sentence,
        )

        for said in (llc_error_sentence(cube), llc_relaxation(cube),
                     descent_sentence(cube).strip(),
                     stability_sentence(cube, key).strip()):
            if said:
                print(textwrap.fill(plain(said), width=100))
    if "perturb_l2" in cube:
        from critperiods.results.perturbation_page import nudge_label
        from critperiods.results.perturbation_summary import format_perturbation

        label = nudge_label(cube)
        print("\nperturbations: how far a nudge carries (copy vs its unperturbed twin"
              + (f"; {label})" if label else ")"))
        print(format_perturbation(cube))
    if args.csv:
        to_csv(cube, args.csv)  # the cube carries the statistics, and what λ̂ reads in
        print(f"wrote {args.csv}")
    return 0


def _read_flagged(cube: Any, path: str, names: list[str]) -> Any:
    """``cube`` reading in the estimates flagged ``names`` as well as those it reads in
    already (``llc_quality``'s ``read_in_flags``), so that those carrying no other flag
    count as valid; exits with one line for a cube without λ̂ flags or a toy cube."""
    from critperiods.results.selection import read_in_flags, with_read_in

    if cube.attrs.get("cube_kind") == "toy_landscapes" or "llc_quality" not in cube:
        raise SystemExit(f"critperiods: --read-flagged: {path} has no λ̂ quality flags "
                         "(llc_quality) of the critical-period pipeline")
    return with_read_in(cube, [*read_in_flags(cube), *names])


__all__ = ["compare", "summarize"]
