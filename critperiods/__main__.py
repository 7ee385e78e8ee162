"""Command line: ``python -m critperiods <command>`` (also installed as ``critperiods``).

* ``summarize CUBE`` — the critical-period table (end per batch size with its interval,
  and where λ̂ and divergence mark it) in the terminal; ``--csv`` writes it too. With
  perturbations: the lasting divergence per perturbation epoch and whether a nudge inside
  the critical period carries further. For a toy cube (``toy_cube.nc``) the toy study's
  summary instead.
* ``calibrate-llc PIECE --epoch E`` — sweep the SGLD step size at one checkpoint and plot
  the running λ̂ per setting, to choose ``llc.step_size``.
* ``check [CONFIG …]`` (or ``--configfile CONFIG …``) — read the configs laid over
  config.yaml and check them as the Snakefile does; a file that is empty or not YAML, a
  misspelt key or a bad value is one line naming the file (and line or key) and the reason,
  exit status 1 (``make run CONFIG=…`` runs it first: Snakemake's own message for a file
  that is empty or not YAML names neither).
* ``cost [CONFIG …]`` (or ``--configfile CONFIG …``) — epochs of SGD a grid costs with and
  without trunk sharing (and the perturbation experiment's), its images, the time on the
  reference CPU and GPU, and the jobs per rule a fresh run plans.
* ``power [CONFIG …]`` — what a grid can tell: on simulated runs of its switch epochs, λ̂
  epochs and seeds, how often a marker a few epochs from the end is called "after" or
  "before the end", how often one at the end is called anyway, how often λ̂'s bend shows
  beyond its noise at all, and the intervals' coverage; then, for ends on a power law of the
  batch size (``--exponent``), how often the exponent is fitted, bounded, held by its
  interval and told from 0; ``--noise-from CUBE`` at a finished run's own noise.
* ``compare CUBE CUBE …`` — several runs side by side, for a question the grid does not
  sweep (one experiment per blur, width or rate): the config keys they differ in, each
  one's end and deficit, and, paired by seed against the first run with a Student-t
  interval, the deficit's difference and the final accuracy's at every switch; ``--csv``
  writes them.
* ``provenance CUBE`` — which pieces of a cube came from which code and data version; exits
  with 1, naming the stage, where one stage's results come from more than one version.
* ``--version``.

The experiment itself and its HTML report are Snakemake's, not commands of this tool:
``make run`` and ``make report`` (``snakemake --cores all`` and ``snakemake --report
report.html``, each with the same ``--configfile``; README).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_config(paths: list[str], recorded: tuple[str, dict] | None = None) -> dict:
    """config.yaml overlaid with ``recorded`` (``(cube path, the config it recorded)``), then
    with ``paths`` (as Snakemake does), validated, defaults filled; a bad file or key exits
    with one line that names it (the cube, where no file given sets the key)."""
    from snakemake.utils import update_config, validate

    from critperiods.pipeline.config_file import (
        check_against_schema,
        check_layers,
        exit_on_config_error,
        read_config_file,
    )
    from critperiods.pipeline.plan import check_config, check_moved_keys, in_schema_order
    from critperiods.toy.plan import check_study_chosen, check_toy_config

    files = [ROOT / "config.yaml", *map(Path, paths)]
    blamed = files[1:] if recorded else files  # over a cube's config, config.yaml sets nothing
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    try:
        with exit_on_config_error(blamed):  # the same one line as the Snakefile's
            config = read_config_file(files[0])
            update_config(config, recorded[1] if recorded else {})
            for path in files[1:]:
                update_config(config, read_config_file(path))
            if not recorded:  # over a cube's recorded config the layers are already laid
                check_layers(files)  # an overlay given without the files it is laid over
            check_moved_keys(config)
            check_against_schema(config, schema, blamed)
            validate(config, str(schema))
            check_config(config, yaml.safe_load(schema.read_text()))
            check_study_chosen(config, files[1:])  # as the Snakefile
            if config["study"] == "toy_landscapes":  # as the Snakefile: only the toy study
                check_toy_config(config["toy"])
    except SystemExit as err:
        if recorded and "(set in " not in str(err):
            raise SystemExit(f"{err} (in the config {recorded[0]} records)") from None
        raise
    return in_schema_order(config, yaml.safe_load(schema.read_text()))  # as the Snakefile


def _config_file_args(parser: argparse.ArgumentParser) -> None:
    """The configs a command lays over config.yaml: positional, or as snakemake takes them."""
    parser.add_argument("configfile", nargs="*", default=[],
                        help="configs laid over config.yaml (none: the default experiment)")
    parser.add_argument("--configfile", nargs="+", default=[], dest="configfiles",
                        help="the same, spelled as for snakemake")


def _config_paths(args: argparse.Namespace) -> list[str]:
    return [*args.configfile, *args.configfiles]


def _layers(paths: list[str], *between: str) -> str:
    """How a command names the config it read: config.yaml, ``between`` (e.g. a cube's
    recorded config), then the files laid over them, config.yaml itself not twice."""
    base = ROOT / "config.yaml"
    return " + ".join(["config.yaml", *between,
                       *(p for p in paths if Path(p).resolve() != base.resolve())])


def _number(kind: type, least: float, why: str = "", strict: bool = False):
    """An argparse ``type`` that reads ``kind`` and refuses a value below ``least`` (or equal
    to it, with ``strict``), saying why: the flag, the value and the bound in one line."""
    def read(text: str):
        value = kind(text)
        if value < least or (strict and value == least):
            bound = f"{'above' if strict else 'at least'} {least:g}"
            raise argparse.ArgumentTypeError(f"{text}: must be {bound}"
                                             + (f" ({why})" if why else ""))
        return value
    read.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return read


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read (a folder, or nothing there), or None."""
    if path.is_file():
        return None
    return "a folder, not a cube file" if path.is_dir() else "no such file"


#: The first bytes of a netCDF file: netCDF-4 (HDF5) or the classic format.
_NETCDF_MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF")
_WHERE_CUBES_ARE = "expected results/<experiment>/cube.nc, or toy_cube.nc for the toy study"


def _open_cube_or_exit(path: str) -> object:
    """The cube at ``path``, or a one-line error (no traceback) naming the file and why:
    a file that is no netCDF at all (a config, a CSV) is told so, and only a netCDF file
    the library cannot read is called truncated or corrupt."""
    from critperiods import open_cube

    if why := _not_a_file(Path(path)):
        raise SystemExit(f"critperiods: {path}: {why}")
    with open(path, "rb") as file:
        head = file.read(8)
    if head and not head.startswith(_NETCDF_MAGIC):
        raise SystemExit(f"critperiods: {path}: not a netCDF file ({_WHERE_CUBES_ARE})")
    try:
        cube = open_cube(path)
    except ValueError as err:  # unreadable: the file named with the command that remakes it
        raise SystemExit(f"critperiods: {err}") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means: not a cube
        raise SystemExit(f"critperiods: {path}: not a netCDF cube ({type(err).__name__})") from None
    if "final_test_accuracy" not in cube and cube.attrs.get("cube_kind") != "toy_landscapes":
        raise SystemExit(f"critperiods: {path}: not a critperiods cube (no final_test_accuracy; "
                         f"{_WHERE_CUBES_ARE})")
    return cube


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
    return None


def _summary(cube, recompute: bool, diverged: list[str]) -> tuple[Any, Any, str | None, bool]:
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
        _check_out_path(args.csv, example="comparison.csv")
    cubes = [_open_cube_or_exit(path) for path in args.cubes]
    for path, cube in zip(args.cubes, cubes, strict=True):
        if cube.attrs.get("cube_kind") == "toy_landscapes":
            raise SystemExit(f"critperiods: {path}: a toy cube; compare reads the critical "
                             "period's cubes (results/<experiment>/cube.nc)")
    runs = []
    for name, cube in zip(run_names(cubes, args.cubes), cubes, strict=True):
        diverged = runs_at_chance(cube)
        _, summary, stale, _ = _summary(cube, False, diverged)
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


#: The file types ``--out`` may name for a figure (a subset of what matplotlib saves).
_IMAGE_TYPES = ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "webp", "eps")


def _check_out_path(path: str, option: str = "--csv", example: str = "summary.csv",
                    suffixes: Sequence[str] = ()) -> None:
    """Exit with one line, before any work, where ``option``'s file cannot be written: it
    names a folder, a folder on its way is a file, or (with ``suffixes``) its suffix is
    not one of them. A missing parent folder is fine: the writer makes it."""
    target = Path(path)
    if target.is_dir():
        raise SystemExit(f"critperiods: {option} {path}: a folder; give a file name, e.g. "
                         f"{target / example}")
    blocked = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise SystemExit(f"critperiods: {option} {path}: {blocked} is a file, not a folder")
    if suffixes and target.suffix.lower().lstrip(".") not in suffixes:
        raise SystemExit(f"critperiods: {option} {path}: not a file type this can write; "
                         f"give one of {', '.join('.' + s for s in suffixes)} (e.g. "
                         f"{target.with_suffix(Path(example).suffix)})")


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
        _check_out_path(args.csv)
    cube = _open_cube_or_exit(args.cube)
    if cube.attrs.get("cube_kind") == "toy_landscapes":
        from critperiods.toy.cube import format_summary, summary_csv

        print(format_summary(cube))
        if args.csv:
            summary_csv(cube, args.csv)
            print(f"wrote {args.csv}")
        return 0
    stored = read_in_flags(cube)  # what the stored statistics read in (the config's)
    if args.read_flagged:
        cube = _read_flagged(cube, args.cube, args.read_flagged)
    diverged = runs_at_chance(cube)
    cube, summary, stale, recompute = _summary(cube, args.recompute or bool(args.read_flagged),
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
        print(textwrap.fill(_plain(said), width=100))
        for caveat in perturbation_page.caveats(cube):
            print(textwrap.fill(_plain(caveat), width=100, subsequent_indent="  "))
        print()
    if "lr_schedule" in cube.dims:  # the answer first, as on the report's first page
        from critperiods.results.report_page import short_answer

        said = _plain(short_answer(cube.assign(summary.data_vars)))
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
        for line in marker_tally(summary):
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
            print(textwrap.fill(_plain(said), width=100, break_on_hyphens=False))
        from critperiods.results.report_page import (
            descent_sentence,
            llc_relaxation,
            stability_sentence,
        )

        for said in (llc_relaxation(cube), descent_sentence(cube).strip(),
                     stability_sentence(cube, key).strip()):
            if said:
                print(textwrap.fill(_plain(said), width=100))
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


def _plain(rst: str) -> str:
    """A report sentence (reStructuredText) as the terminal prints it: without its bold
    (double asterisks) and literal (double backquotes) markup."""
    return rst.replace("**", "").replace("``", "")


def calibrate_llc(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np
    import torch

    from critperiods.measure.llc.calibration import (
        calibrate,
        calibration_lines,
        default_step_sizes,
        plot_calibration,
    )
    from critperiods.pipeline.checkpoints import (
        CheckpointError,
        checkpoint_map,
        config_hash,
        load_piece,
        member,
    )
    from critperiods.pipeline.layout import parse_piece
    from critperiods.pipeline.llc_inputs import llc_config_from_params, llc_data
    from critperiods.pipeline.plan import training_params
    from critperiods.train.data import load_prepared
    from critperiods.train.training import TrainConfig, model_for

    _check_out_path(args.out, "--out", "llc_calibration.png", _IMAGE_TYPES)
    if Path(args.piece).suffix != ".pt":  # e.g. the piece's λ̂ file beside it
        raise SystemExit(f"critperiods: {args.piece}: not a checkpoint file (.pt, e.g. "
                         "results/<experiment>/runs/bs64/seeds0_1_2/trunk/e4.pt)")
    recorded = None if args.configfile else _recorded_config_of(args.piece)
    if recorded is not None:
        print(f"the config of {args.piece}'s experiment: {recorded} (as recorded by its run; "
              "--configfile to give another)")
    config = _load_config([str(recorded)] if recorded is not None else args.configfile)
    # the piece's own run folder, wherever it was run from (snakemake -d puts it anywhere)
    results = (recorded.parent if recorded is not None
               else Path(config["results_dir"]) / config["experiment"])
    params = training_params(config)
    try:
        seeds = parse_piece(args.piece).seeds
        seed = seeds[0] if args.seed is None else args.seed
        ckpts = checkpoint_map(member(load_piece(args.piece, config_hash(params)), seed,
                                      args.piece))
    except (CheckpointError, ValueError) as err:
        hint = ("" if "belongs to training config" not in str(err) else
                " (give the configs of the piece's experiment: --configfile configs/<x>.yaml)")
        raise SystemExit(f"critperiods: {err}{hint}") from None
    if args.epoch not in ckpts:
        raise SystemExit(f"critperiods: {args.piece}: no checkpoint at epoch {args.epoch}; "
                         f"has {sorted(ckpts)}")
    torch.set_num_threads(args.threads)
    try:
        data = load_prepared(results / "data" / "train.pt")
    except ValueError as err:  # not there: a run not yet aggregated, read from another folder
        hint = "" if recorded is not None else " (run this from the run's folder)"
        raise SystemExit(f"critperiods: {err}{hint}") from None
    model = model_for(TrainConfig.from_params(params), data, "cpu")
    model.load_state_dict(ckpts[args.epoch]["model"])
    llc_params = config["llc"]
    chains = {k: v for k, v in (("draws", args.draws), ("burn_in", args.burn_in),
                                ("batch_size", args.batch_size)) if v is not None}
    own = float(llc_params["step_size"])
    step_sizes = args.step_sizes or default_step_sizes(own)
    sampler = replace(llc_config_from_params(llc_params), **chains)
    sampled = llc_data(data, llc_params)(ckpts[args.epoch]["phase"])  # the sampler's images
    try:
        result = calibrate(model, torch.nn.functional.cross_entropy, sampled, sampler,
                           step_sizes, args.nbetas, label=f"{args.piece} epoch {args.epoch}")
    except ValueError as err:  # a broken checkpoint: nothing to calibrate
        raise SystemExit(f"critperiods: {err}") from None
    from critperiods.measure.llc.stability import STABILITY_SAMPLES, sharpness

    curvature = sharpness(
        model, torch.nn.functional.cross_entropy, sampled, batch_size=sampler.batch_size,
        samples=llc_params.get("stability_samples", STABILITY_SAMPLES), seed=sampler.seed)
    print("\n".join(calibration_lines(result, sampler, own, config["analysis"], *curvature)))
    plot_calibration(result, args.out)
    print(f"wrote {args.out}")
    if args.descent:
        from critperiods.measure.llc.descent import descent, descent_line

        found = descent(model, torch.nn.functional.cross_entropy, sampled, sampler)
        nbetas = [v for v in result["nbeta"].values if np.isclose(v, found.nbeta)]
        own_llc = (float(result["llc_mean"].sel(step_size=own, nbeta=nbetas[0]))
                   if nbetas and own in result["step_size"].values else None)  # the path's λ̂
        print(descent_line(found, own_llc, sampler))
    return 0


def _recorded_config_of(piece: str) -> Path | None:
    """``results/<experiment>/config.yaml``, the config a run records beside its ``runs/``
    folder, for a piece file inside it; None where there is none."""
    for folder in Path(piece).resolve().parents:
        if folder.name == "runs":
            recorded = folder.parent / "config.yaml"
            return recorded if recorded.is_file() else None
    return None


def _level(text: str) -> float:
    """An argparse type: an interval level strictly between 0 and 1, else a one-line usage
    error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (e.g. 0.9)")
    return value


def _positive(kind: type, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` above 0 (0 too with ``zero``), else a one-line
    usage error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if zero and value < 0:
            raise argparse.ArgumentTypeError(f"{text} is below 0")
        if not (value > 0 or zero and value == 0) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value
    return parse


def _times(scratch: int, shared: int, config: dict) -> str:
    """How much more (or less) training from scratch costs than sharing trunks.

    Sharing can cost more: it also trains the references, the never-blurred run continued
    past its end (for λ̂ or the divergences) and the always-blurred trunk extended to the last
    epoch any run reaches (for the divergences)."""
    if scratch >= shared:
        return f"{scratch / shared:.2f}× more"
    divergence = config["divergence"]["enabled"]
    extended = ("the trunk and the never-blurred run are extended as the divergences' "
                "references" if divergence else
                "the never-blurred run is continued as λ̂'s sharp reference")
    return f"{shared / scratch:.2f}× less: {extended}"


def check(args: argparse.Namespace) -> int:
    paths = _config_paths(args)
    config = _load_config(paths)  # exits with the one line on a bad file or key
    print(f"{config['experiment']} ({_layers(paths)}): ok, study {config['study']}")
    print(_unnamed_note(paths, config), end="")
    if config["study"] == "critical_period":  # as `snakemake -n` says it, before a run
        from critperiods.pipeline.plan import data_download_note

        data = Path(config["results_dir"]) / config["experiment"] / "data"
        if note := data_download_note(config, {s: str(data / f"{s}.pt") for s in ("train",
                                                                                   "test")}):
            print(f"note: {note}")
    return 0


def _unnamed_note(paths: list[str], config: dict) -> str:
    """A note (a line, or "") where files laid over config.yaml change a key that can change
    a result but leave the results in the default run's folder: they would replace the
    default run's results there."""
    from critperiods.results.setup import differing_keys

    base = (ROOT / "config.yaml").resolve()
    if not [p for p in paths if Path(p).resolve() != base]:
        return ""
    default = _load_config([])
    folder = Path(config["results_dir"]) / config["experiment"]
    if folder != Path(default["results_dir"]) / default["experiment"]:
        return ""
    changed = list(differing_keys([default, config]))
    if not changed:
        return ""
    return (f"note: this run writes to {folder}/, the default run's folder, but differs from "
            f"it in {', '.join(changed)}: its results would replace the default's there; give "
            "it its own name (`experiment: <name>`: a folder of its own, where its whole grid "
            f"trains anew), or copy {folder}/cube.nc aside to keep the default's numbers and "
            "rerun only what the change touches\n")


def cost(args: argparse.Namespace) -> int:
    from critperiods.pipeline.cost import LOCAL_RULES, describe, grid_cost
    from critperiods.pipeline.plan import epochs_trained

    paths = _config_paths(args)
    config = _load_config(paths)
    layered = _layers(paths)
    if config["study"] == "toy_landscapes":  # the cost model is the critical_period study's
        from critperiods.toy.plan import landscapes

        print(f"{config['experiment']} ({layered}): the toy_landscapes study, "
              f"{len(landscapes(config['toy']))} toy_landscape jobs, then toy_cube and "
              "toy_plots; this cost model covers the critical_period study only "
              "(docs/toy_landscapes.md gives a measured time)")
        return 0
    shared, scratch = epochs_trained(config, True), epochs_trained(config, False)
    print(f"{config['experiment']} ({layered}): {shared} epochs "
          f"with trunk sharing, {scratch} training every run from scratch "
          f"({_times(scratch, shared, config)})")
    found = {device: grid_cost(config, device) for device in ("cpu", "cuda")}
    cpu = found["cpu"]
    if cpu.perturbation_epochs:
        print(f"  perturbations: {cpu.perturbation_epochs} more epochs (each seed's replay to "
              "the perturbation epoch, its twin and its copies)")
    print(f"  {cpu.images / 1e6:,.1f} M training images"
          + (f", {cpu.llc_images / 1e6:,.1f} M images through SGLD steps" if cpu.llc_images
             else " (λ̂ off: no SGLD steps)")
          + (f", {cpu.perturbation_images / 1e6:,.1f} M through perturbed copies and twins"
             if cpu.perturbation_epochs else ""))
    for device, cost_on in found.items():
        print(f"  {describe(cost_on, device)}")
    print(f"  {'jobs per rule':<25} {'cpu':>5} {'cuda':>5}")
    for rule in cpu.rules:
        local = "  (local: beside Snakemake, never a cluster job)" if rule in LOCAL_RULES else ""
        print(f"    {rule:<23} {cpu.rules[rule]:>5} {found['cuda'].rules[rule]:>5}{local}")
    if config["train"].get("seeds_per_job") == "auto" and cpu.rules != found["cuda"].rules:
        print(textwrap.fill(
            "the cuda column stacks seeds as `seeds_per_job: auto` does with `device: cuda`; "
            "with `device: auto` it does so only where the machine that runs Snakemake shows a "
            "GPU (on a cluster, write `device: cuda`)", 96, initial_indent="  ",
            subsequent_indent="  "))
    return 0


_NOISE_FLAGS = ("llc_noise", "llc_slopes", "accuracy_noise", "deficit_slope", "seed_shift")


def _config_of_cube(cube, path: str) -> dict:
    """The config a cube records (its ``config`` attribute: the keys that shape results)."""
    text = cube.attrs.get("config")
    if not text:
        raise SystemExit(f"critperiods: {path}: the cube records no config (not written by "
                         "the pipeline's aggregate stage)")
    return yaml.safe_load(text)


def power(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from critperiods.results.power import (
        DEFAULT_NOISE,
        exponent_table,
        grid_of,
        power_table,
        switch_spacing,
    )

    paths = _config_paths(args)
    cube = _open_cube_or_exit(args.noise_from) if args.noise_from else None
    if cube is not None and "final_test_accuracy" not in cube:
        print(f"critperiods: {args.noise_from}: a toy_landscapes cube has no critical period; "
              "--noise-from needs a critical_period cube", file=sys.stderr)
        return 2
    config = _load_config(paths, None if cube is None else (
        args.noise_from, _config_of_cube(cube, args.noise_from)))
    if config["study"] == "toy_landscapes":
        print(f"critperiods: {config['experiment']}: the toy_landscapes study has no critical "
              "period to locate; power is for the critical_period study", file=sys.stderr)
        return 2
    grid = grid_of(config)
    if args.offset is None:
        args.offset = switch_spacing(grid)
    seeds = args.seeds or sorted({max(2, grid.seeds), 2 * grid.seeds})  # 1 seed: no interval
    given = {k: tuple(v) if isinstance(v, list) else v
             for k in _NOISE_FLAGS if (v := getattr(args, k)) is not None}
    noise = replace(DEFAULT_NOISE, **given)
    off = [what for what, on in (("λ̂", config["llc"]["enabled"]),
                                 ("divergences", config["divergence"]["enabled"])) if not on]
    recorded = [] if cube is None else [f"{args.noise_from}'s config"]
    print(f"{config['experiment']} ({_layers(paths, *recorded)})")
    if grid.seeds < 2 and not args.seeds:
        print("note: 1 seed in this config: an interval over seeds needs 2, so it can call "
              "nothing; the rows are for 2 seeds and more")
    if off:
        print(f"note: {' and '.join(off)} off in this config: its runs would have no "
              f"{'knee or drop' if len(off) > 1 else 'knee' if off[0] == 'λ̂' else 'drop'}; "
              "the rows say what turning them on would give")
    batch_sizes = sorted(config["grid"]["batch_sizes"])
    family = {"cells": len(batch_sizes),  # Holm's correction: the run's knees and drops
              "knees_per_cell": 4 if config["llc"].get("descent") else 2}
    if cube is None:
        for line in power_table(grid, seeds, args.trials, args.offset, args.end, noise,
                                **family):
            print(line)
        print()
        print("\n".join(exponent_table(grid, batch_sizes, seeds, args.trials, args.exponent,
                                       args.end, noise)))
        return 0
    return _power_at_observed_noise(cube, args, grid, seeds, noise, given, batch_sizes, family)


def _power_at_observed_noise(cube, args: argparse.Namespace, grid, seeds: list[int],
                             fallback, given: dict, batch_sizes: list[int], family: dict
                             ) -> int:
    """``power --noise-from``: a table per batch size of the cube, at the noise and effect
    sizes that batch size measured (flags given on the command line win); a note names the
    config's ``batch_sizes`` the cube has none of."""
    from dataclasses import replace
    from statistics import geometric_mean

    from critperiods.results.observed_noise import observed_noise, residual_correlation
    from critperiods.results.power import exponent_table, power_table

    print(f"noise and effect sizes read off {args.noise_from} "
          "(critperiods.results.observed_noise; docs/analysis.md)")
    unseen = sorted(set(batch_sizes) - {int(b) for b in cube["batch_size"].values})
    if unseen:
        print(f"note: batch size{'s' * (len(unseen) > 1)} {', '.join(map(str, unseen))} of the "
              f"config {'are' if len(unseen) > 1 else 'is'} not in {args.noise_from}: no noise "
              "measured there, no table (a nearby batch size's table, or a pilot run at it, "
              "stands in)")
    flags = {k: "--" + k.replace("_", "-") for k in given}
    measured, ends = {}, {}  # batch size → the noise its table used, its located end
    for batch_size in cube["batch_size"].values:
        seen = observed_noise(cube, int(batch_size))
        noise, kept = seen.scenario(fallback)
        noise = replace(noise, **given)
        kept = [k for k in kept if k not in given]
        print(f"\n## batch {seen.batch_size} ({seen.seeds} seed{'s' * (seen.seeds != 1)} in "
              "the run)")
        for name, why in seen.missing.items():
            used = (f"{flags[name]} is used" if name in given
                    else "the default's is used" if name in kept
                    else "--end is used" if name == "end" and args.end is not None
                    else "the middle of the switch range is used" if name == "end" else "")
            print(f"note: {name}: {why}" + (f"; {used}" if used else ""))
        for name in (k for k in given if k not in seen.missing):
            print(f"note: {name}: {flags[name]} is used, not the run's")
        if args.end is not None and "end" not in seen.missing:
            print(f"note: end: --end is used, not the run's ({seen.end:.3g})")
        end = args.end if args.end is not None else (
            seen.end if math.isfinite(seen.end) else None)
        source = (f"measured at batch {seen.batch_size}"
                  + (f", the default's for {', '.join(kept)}" if kept else "")
                  + (f", the command line's for {', '.join(given)}" if given else "")
                  + ("" if "seed_shift" in given else "; the seeds' shift is not measured"))
        lines = power_table(grid, seeds, args.trials, args.offset, end, noise, source, **family)
        print("\n".join(lines))
        measured[int(batch_size)], ends[int(batch_size)] = noise, seen.end
    shared = [b for b in batch_sizes if b in measured]
    print()
    if len(shared) < len(batch_sizes) and len(shared) < 3:
        print(f"the exponent: {len(shared)} of the config's {len(batch_sizes)} batch sizes have "
              f"noise measured in {args.noise_from}, and a power law needs 3: not simulated "
              "(without --noise-from, at the default noise, it is)")
        return 0
    together = residual_correlation(cube)
    if math.isfinite(together.r):
        beyond = abs(together.r) > 2 * together.chance
        print(f"{'note: ' * beyond}a seed's runs at different batch sizes err together by "
              f"r = {together.r:+.2f} (final accuracy's residuals, mean of {together.pairs} "
              f"pair{'s' * (together.pairs > 1)} of batch sizes, ≥ {together.cells} runs each; "
              f"s.d. {together.chance:.2f} if independent); the exponent's simulation draws them "
              + ("independently, so its shares below may be off" if beyond
                 else "independently"))
    located = [ends[b] for b in shared if math.isfinite(ends[b])]
    anchor, said = args.end, "--end"
    if anchor is None and located:  # the run's own ends: their geometric mean, in the middle
        anchor = geometric_mean(located)
        said = (f"the geometric mean of the run's {len(located)} located "
                f"end{'s' * (len(located) > 1)}")
    print("\n".join(exponent_table(grid, shared, seeds, args.trials, args.exponent, anchor,
                                   [measured[b] for b in shared],
                                   "each batch size's noise as above",
                                   said if anchor is not None else "")))
    return 0


def provenance(args: argparse.Namespace) -> int:
    import json

    from critperiods.pipeline.provenance_report import report

    path = Path(args.cube)
    if why := _not_a_file(path):
        print(f"critperiods: {path}: {why}", file=sys.stderr)
        return 2
    try:
        import netCDF4

        with netCDF4.Dataset(path) as nc:
            text = nc.getncattr("provenance") if "provenance" in nc.ncattrs() else None
        if text is None:
            raise ValueError("no provenance attribute (a cube written before it was recorded, "
                             "or not a cube: expected results/<experiment>/cube.nc)")
        prov = json.loads(text)
    except (OSError, ValueError) as err:
        print(f"critperiods: {path}: not a critperiods cube with provenance: {err}",
              file=sys.stderr)
        return 2
    lines, problems = report(prov)
    print(f"{path}")
    print("\n".join(lines))
    if problems:
        print("\n" + "\n".join(problems))
        return 1
    print("\nconsistent: every stage's results come from one code version and one data version")
    return 0


def _flag_names() -> list[str]:
    """The λ̂ quality flags' names (``llc_quality``'s bits), for ``--read-flagged``."""
    from critperiods.measure.llc.quality import FLAGS

    return list(FLAGS)


def _described(command: str) -> dict:
    """The ``description`` of a subcommand's ``--help``: its bullet of this module's
    docstring (one text for the help and the docs)."""
    bullet = re.search(rf"^\* ``{re.escape(command)}\b.*?(?=^\* |\Z)", __doc__, re.S | re.M)
    return {"description": " ".join(bullet.group(0).removeprefix("* ").split()).replace("``", "`")}


def main(argv: list[str] | None = None) -> int:
    from critperiods import __version__

    parser = argparse.ArgumentParser(prog="critperiods", description=__doc__.replace("``", "`"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"critperiods {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summarize", help="print the summary of a cube (critical period or toy)",
                       **_described("summarize"))
    p.add_argument("cube", help="a cube written by the pipeline: results/<experiment>/cube.nc "
                                "or toy_cube.nc")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--recompute", action="store_true",
                   help="recompute the statistics from the raw variables instead of reading "
                        "the stored ones")
    p.add_argument("--read-flagged", nargs="+", metavar="FLAG", default=[],
                   choices=_flag_names(),
                   help="recompute the statistics with the λ̂ estimates whose only flags are "
                        "these taken in as valid (e.g. unstable_step: docs/llc.md, \"Crossing "
                        "the limit shows as no break\"), besides those the cube reads in "
                        "already (analysis.llc_read_flagged, which does so for the report and "
                        "figures too); the flag counts stay the estimates' own. FLAG: "
                        + ", ".join(_flag_names()))
    p.set_defaults(func=summarize)

    p = sub.add_parser("compare", help="several runs side by side (one experiment per "
                       "value of a key the grid does not sweep)", **_described("compare"))
    p.add_argument("cubes", nargs="+", metavar="cube",
                   help="cubes written by the pipeline (results/<experiment>/cube.nc); the "
                        "first is the baseline")
    p.add_argument("--level", type=_level, default=0.9,
                   help="the paired differences' interval level (default 0.9, the "
                        "summary's)")
    p.add_argument("--csv", help="also write the accuracies and paired differences to this "
                                 "CSV file")
    p.set_defaults(func=compare)

    p = sub.add_parser("calibrate-llc", help="sweep the SGLD step size at one checkpoint",
                       **_described("calibrate-llc"))
    p.add_argument("piece", help="a trunk segment or branch file "
                                 "(…/<group>/trunk/e<E>.pt, …/<group>/<schedule>/switch<K>.pt)")
    p.add_argument("--epoch", type=int, required=True,
                   help="the checkpoint epoch inside that file")
    p.add_argument("--seed", type=int, default=None,
                   help="which seed of the file's group (default: its first)")
    p.add_argument("--configfile", nargs="+", default=[],
                   help="configs laid over config.yaml (the experiment the piece belongs to; "
                        "default: the config its run recorded, results/<x>/config.yaml)")
    p.add_argument("--step-sizes", type=_positive(float), nargs="+", default=None,
                   help="SGLD step sizes to try (default: the run's own llc.step_size times "
                        "0.1, 0.3, 1, 1.5, 2.5, 3.5 and 5, up to where the chains run away)")
    p.add_argument("--nbetas", type=_positive(float), nargs="+", default=None,
                   help="inverse temperatures n·β to try (default: the config's)")
    p.add_argument("--draws", type=_positive(int), default=None,
                   help="recorded draws per chain after burn-in (default: the config's "
                        "llc.draws); a step size's λ̂ levels off only in a chain long enough "
                        "to relax, about 2 / (step size · γ) steps")
    p.add_argument("--burn-in", type=_positive(int, zero=True), default=None,
                   help="draws per chain discarded first (default: the config's llc.burn_in)")
    p.add_argument("--batch-size", type=_positive(int), default=None,
                   help="SGLD minibatch size (default: the config's llc.batch_size); a small "
                        "one heats the chains (docs/llc.md)")
    p.add_argument("--threads", type=_positive(int), default=2,
                   help="worker processes for the chains (default: 2)")
    p.add_argument("--out", default="llc_calibration.png",
                   help="where to write the plot (default: llc_calibration.png)")
    p.add_argument("--descent", action="store_true",
                   help="also follow the noise-free, full-batch drift of one chain at the "
                        "run's step size and say how much of λ̂ the chains' descent from the "
                        "checkpoint takes (about 80 estimates' time at the default; "
                        "docs/llc.md)")
    p.set_defaults(func=calibrate_llc)

    p = sub.add_parser("check", help="check configs as the Snakefile does, one line per error",
                       **_described("check"))
    _config_file_args(p)
    p.set_defaults(func=check)

    p = sub.add_parser("cost", help="epochs, images and time a grid costs (trunk sharing on)",
                       **_described("cost"))
    _config_file_args(p)
    p.set_defaults(func=cost)

    p = sub.add_parser("power", help="what a grid can tell: simulated power and coverage of "
                                     "the markers' offsets from the end", **_described("power"))
    _config_file_args(p)
    p.add_argument("--seeds", type=_number(int, 2, "intervals over seeds need 2 of them"),
                   nargs="+", default=None,
                   help="numbers of seeds to simulate, each at least 2 (default: the config's, "
                        "and twice that)")
    p.add_argument("--offset", type=_positive(float), default=None,
                   help="epochs between the end and the knee (after) or drop (before) (default: "
                        "the switch epochs' spacing, 4 in config.yaml)")
    p.add_argument("--end", type=float, default=None,
                   help="the true end (default: the middle of the switch range; with "
                        "--noise-from, the run's located end)")
    p.add_argument("--trials", type=_number(int, 1), default=200,
                   help="simulated runs per row (default: 200)")
    p.add_argument("--exponent", type=float, default=-0.5,
                   help="the true exponent of end ∝ batch size^p for the exponent's table "
                        "(default: -0.5; the ends lie on it through --end at the middle "
                        "batch size)")
    p.add_argument("--noise-from", metavar="CUBE", default=None,
                   help="a finished run's cube: a table per batch size at the noise and effect "
                        "sizes it measured, its located end as the end (the grid: its own, "
                        "or the configs given)")
    p.add_argument("--llc-noise", type=_number(float, 0), default=None,
                   help="s.d. of a λ̂ estimate (default: 10)")
    p.add_argument("--llc-slopes", type=float, nargs=2, default=None,
                   metavar=("BEFORE", "AFTER"),
                   help="λ̂ per epoch before and after the knee (default: 8 2)")
    p.add_argument("--accuracy-noise", type=_number(float, 0), default=None,
                   help="s.d. of a run's final accuracy, pp (default: 1)")
    p.add_argument("--deficit-slope", type=_number(float, 0, "a flat sweep has no end",
                                                   strict=True), default=None,
                   help="final accuracy lost per epoch of delay past the end, pp (default: 0.5)")
    p.add_argument("--seed-shift", type=_number(float, 0), default=None,
                   help="s.d. of a seed's relative shift of the end, knee and drop (default: 0)")
    p.set_defaults(func=power)

    p = sub.add_parser("provenance", **_described("provenance"),
                       help="which pieces of a cube came from which code and data version")
    p.add_argument("cube", help="a cube written by the pipeline: results/<experiment>/cube.nc")
    p.set_defaults(func=provenance)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader left early (`summarize … | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs do
        return 0


if __name__ == "__main__":
    sys.exit(main())
