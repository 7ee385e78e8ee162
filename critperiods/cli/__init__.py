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
  that is empty or not YAML names neither). A valid grid that cannot answer gets a note:
  fewer than 3 switch epochs place no end, one seed gives no interval.
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
import os
import re
import sys

from critperiods.cli.calibrate import calibrate_llc
from critperiods.cli.common import config_file_args, interval_level, number, positive
from critperiods.cli.planning import check, cost
from critperiods.cli.power import power
from critperiods.cli.provenance import provenance
from critperiods.cli.results import compare, summarize


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
    p.add_argument("--level", type=interval_level, default=0.9,
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
    p.add_argument("--step-sizes", type=positive(float), nargs="+", default=None,
                   help="SGLD step sizes to try (default: the run's own llc.step_size times "
                        "0.1, 0.3, 1, 1.5, 2.5, 3.5 and 5, up to where the chains run away)")
    p.add_argument("--nbetas", type=positive(float), nargs="+", default=None,
                   help="inverse temperatures n·β to try (default: the config's)")
    p.add_argument("--draws", type=positive(int), default=None,
                   help="recorded draws per chain after burn-in (default: the config's "
                        "llc.draws); a step size's λ̂ levels off only in a chain long enough "
                        "to relax, about 2 / (step size · γ) steps")
    p.add_argument("--burn-in", type=positive(int, zero=True), default=None,
                   help="draws per chain discarded first (default: the config's llc.burn_in)")
    p.add_argument("--batch-size", type=positive(int), default=None,
                   help="SGLD minibatch size (default: the config's llc.batch_size); a small "
                        "one heats the chains (docs/llc.md)")
    p.add_argument("--threads", type=positive(int), default=2,
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
    config_file_args(p)
    p.set_defaults(func=check)

    p = sub.add_parser("cost", help="epochs, images and time a grid costs (trunk sharing on)",
                       **_described("cost"))
    config_file_args(p)
    p.set_defaults(func=cost)

    p = sub.add_parser("power", help="what a grid can tell: simulated power and coverage of "
                                     "the markers' offsets from the end", **_described("power"))
    config_file_args(p)
    p.add_argument("--seeds", type=number(int, 2, "intervals over seeds need 2 of them"),
                   nargs="+", default=None,
                   help="numbers of seeds to simulate, each at least 2 (default: the config's, "
                        "and twice that)")
    p.add_argument("--offset", type=positive(float), default=None,
                   help="epochs between the end and the knee (after) or drop (before) (default: "
                        "the switch epochs' spacing, 4 in config.yaml)")
    p.add_argument("--end", type=float, default=None,
                   help="the true end (default: the middle of the switch range; with "
                        "--noise-from, the run's located end)")
    p.add_argument("--trials", type=number(int, 1), default=200,
                   help="simulated runs per row (default: 200)")
    p.add_argument("--exponent", type=float, default=-0.5,
                   help="the true exponent of end ∝ batch size^p for the exponent's table "
                        "(default: -0.5; the ends lie on it through --end at the middle "
                        "batch size)")
    p.add_argument("--noise-from", metavar="CUBE", default=None,
                   help="a finished run's cube: a table per batch size at the noise and effect "
                        "sizes it measured, its located end as the end (the grid: its own, "
                        "or the configs given)")
    p.add_argument("--llc-noise", type=number(float, 0), default=None,
                   help="s.d. of a λ̂ estimate (default: 10)")
    p.add_argument("--llc-slopes", type=float, nargs=2, default=None,
                   metavar=("BEFORE", "AFTER"),
                   help="λ̂ per epoch before and after the knee (default: 8 2)")
    p.add_argument("--accuracy-noise", type=number(float, 0), default=None,
                   help="s.d. of a run's final accuracy, pp (default: 1)")
    p.add_argument("--deficit-slope", type=number(float, 0, "a flat sweep has no end",
                                                   strict=True), default=None,
                   help="final accuracy lost per epoch of delay past the end, pp (default: 0.5)")
    p.add_argument("--seed-shift", type=number(float, 0), default=None,
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


__all__ = ["main"]
