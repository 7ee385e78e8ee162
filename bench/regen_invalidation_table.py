"""Regenerate the "## Code" table of docs/invalidation.md from the code fingerprints.

``tests/test_invalidation.py::test_every_source_file_reruns_what_the_table_says`` derives
the table from the rules' code fingerprints and the rule graph; after moving or adding a
module, run this from the repository root and review the diff::

    PYTHONPATH=$PWD python bench/regen_invalidation_table.py

Notes in parentheses of existing rows are kept.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tests.test_invalidation as ti  # noqa: E402

ORDER = ["prepare_data", "train_trunk", "train_branch", "train_reference", "evaluate", "llc",
         "llc_descent", "divergence", "aggregate", "plots", "toy_landscape", "toy_cube",
         "toy_plots"]
COMMAND_LINE = " (the command line; no stage imports it)"
NOTES = {**{f"cli/{name}.py": COMMAND_LINE for name in (
             "__init__", "calibrate", "common", "planning", "power", "provenance", "results")},
         "llc/calibration.py": " (the calibrate-llc command; no stage imports it)",
         "llc/descent.py": " (calibrate-llc --descent; with llc.descent on, the llc_descent "
                           "rule: llc_descent, aggregate, plots)",
         "stages/llc_descent.py": " (with llc.descent on, the llc_descent rule: llc_descent, "
                                  "aggregate, plots)",
         "scripts/llc_descent.py": " (with llc.descent on, the llc_descent rule: llc_descent, "
                                   "aggregate, plots)",
         "pipeline/llc_inputs.py": " (with llc.descent on, also llc_descent: both λ̂ stages "
                                   "read the sampler's settings and images here)",
         "results/power.py": " (the power command and bench/marker_coverage.py; no stage "
                             "imports it)",
         "results/observed_noise.py": " (the power command's --noise-from; no stage imports "
                                      "it)",
         "models/small_cnn.py": " (in an experiment whose `model.name` is small_cnn, as this "
                                "table's; nothing in another)",
         "models/all_cnn_c.py": " (in an experiment whose `model.name` is all_cnn_c: what "
                                "models/small_cnn.py reruns in a small_cnn one)",
         "models/blocks.py": " (weight matching's rules; in an experiment whose `model.name` "
                             "is resnet18, also what models/resnet18.py reruns)",
         "models/resnet18.py": " (in an experiment whose `model.name` is resnet18: what "
                               "models/small_cnn.py reruns in a small_cnn one)",
         "stages/__init__.py": " (the stages' shared setup: logging, threads, device)",
         "critperiods/_version.py": " (the version the cube records: a version bump "
                                    "retrains nothing)",
         "pipeline/failures.py": " (the Snakefile's onerror, after a failed run; no stage "
                                 "imports it)"}


def rows() -> list[str]:
    """The table's rows, one per source file."""
    old, derived, everything = ti.table("Code"), ti.code_rows_derived(), frozenset(ti.both_graphs())
    lines = []
    for path in sorted(derived):
        rules = derived[path]
        found = re.search(r"\(.*\)", old[path][0]) if path in old else None
        note = " " + found.group(0) if found else next(
            (n for suffix, n in NOTES.items() if path.endswith(suffix)), "")
        if rules == everything:
            cell = "everything"
        elif not rules:
            cell = "nothing"
        else:
            cell = ", ".join(sorted(rules, key=lambda r: ORDER.index(r) if r in ORDER else 99))
        lines.append(f"| `{path}` | {cell}{note} |")
    return lines


def main() -> None:
    doc = ROOT / "docs/invalidation.md"
    text = doc.read_text()
    section = text.split("## Code\n", 1)[1].split("\n## ", 1)[0]
    head = section.partition("| file | reruns |")[0]
    lines = section.split("\n")
    last = [i for i, line in enumerate(lines) if line.startswith("|")][-1]
    after = "\n".join(lines[last + 1:])
    table = "| file | reruns |\n|---|---|\n" + "\n".join(rows()) + "\n"
    doc.write_text(text.replace(section, head + table + after))


if __name__ == "__main__":
    main()
