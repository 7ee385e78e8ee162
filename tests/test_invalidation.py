"""docs/invalidation.md is a contract: what each config key and each source file reruns.

The tables are checked against the real workflow: one dry run per config key (with the
change the table names) on the finished tiny run, dry runs on copies of the repository with
real and cosmetic code changes, and, for every source file, the rules whose code fingerprint
contains it (critperiods.pipeline.fingerprint) plus what depends on them (the rule graph).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import yaml

from critperiods.pipeline.fingerprint import Fingerprints
from critperiods.pipeline.plan import modules_chosen_by_config
from critperiods.train import dataset_files
from tests.test_workflow import ROOT, TINY, planned, snakemake

TOY_TINY = ROOT / "tests/configs/toy_tiny.yaml"

pytestmark = pytest.mark.workflow
DOC = ROOT / "docs/invalidation.md"
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
WORKERS = 2  # processes running dry runs


# ------------------------------------------------------------------------------- the tables


def table(section: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` of the markdown table under ``## <section>``."""
    text = DOC.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(cells[0]) <= {"-", " "} or cells[0] in {
                "key", "file"}:
            continue
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def rules_named(cell: str) -> frozenset[str]:
    """Rule names in a "reruns" cell, without the notes in parentheses; "nothing" is the
    empty set and "everything" every rule."""
    words = set(re.findall(r"[\w\[\]]+", re.sub(r"\([^)]*\)", "", cell)))
    if "everything" in words:
        return frozenset({"everything"})
    return frozenset(words - {"nothing", "and"})


def is_toy_key(key: str) -> bool:
    """Keys of the toy study: their table is tested on tests/configs/toy_tiny.yaml."""
    return key.startswith("toy.")


def schema_keys(props: dict | None = None, prefix: str = "") -> dict[str, dict]:
    """``{dotted key: schema}`` of every leaf key of the config schema."""
    props = yaml.safe_load(SCHEMA.read_text())["properties"] if props is None else props
    keys = {}
    for name, spec in props.items():
        if "properties" in spec:
            keys.update(schema_keys(spec["properties"], f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = spec
    return keys


# ------------------------------------------------------------------------------- dry runs


def rules_planned(out: str) -> frozenset[str]:
    """The rules with jobs in a dry run; ``prepare_data[test]`` where one split only."""
    jobs = planned(out)
    names = set(jobs) - {"all"}
    splits = {Path(o).stem for o in jobs.get("prepare_data", [])}
    if splits and splits != set(dataset_files.SPLITS):
        names = (names - {"prepare_data"}) | {f"prepare_data[{s}]" for s in splits}
    return frozenset(names)


def dry_run(workdir: Path, configs: list[Path] = (), repo: Path = ROOT) -> frozenset[str]:
    """The rules a dry run of the Snakefile in ``repo`` plans, from the command line."""
    return rules_planned(snakemake(workdir, "-n", "--nolock", configs=configs, repo=repo))


def dry_runs(workdir: Path, extra: list[Path], base: Path = TINY
             ) -> dict[Path, frozenset[str]]:
    """``dry_run(workdir, [e])`` for every ``e`` of ``extra`` (laid over config.yaml and
    ``base``), in WORKERS processes that each import Snakemake once (tests/dry_runs.py)."""
    def batch(part: list[Path]) -> dict[str, str]:
        cmd = [sys.executable, str(ROOT / "tests/dry_runs.py"), str(ROOT / "Snakefile"),
               str(workdir), str(ROOT / "config.yaml"), str(base), "--", *map(str, part)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    with ThreadPoolExecutor(WORKERS) as pool:
        outputs = {k: v for part in pool.map(batch, [extra[i::WORKERS] for i in range(WORKERS)])
                   for k, v in part.items()}
    for path, out in outputs.items():
        assert "DRY RUN FAILED" not in out, f"{path}:\n{out[-3000:]}"
    return {e: rules_planned(outputs[str(e)]) for e in extra}


def every_rule(base: Path = TINY) -> frozenset[str]:
    """The rules of a tiny config's workflow ("everything" in the tables)."""
    return frozenset(rule_graph(base))


@cache
def rule_graph(base: Path = TINY) -> dict[str, set[str]]:
    """``{rule: rules that consume its outputs}`` of a tiny config (without ``all``)."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", workdir,
               "--configfile", str(ROOT / "config.yaml"), str(base), "--rulegraph"]
        dot = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             check=True).stdout
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', dot))
    graph: dict[str, set[str]] = {n: set() for n in names.values() if n != "all"}
    for a, b in re.findall(r"(\d+) -> (\d+)", dot):
        if names[b] != "all":
            graph[names[a]].add(names[b])
    return graph


def both_graphs() -> dict[str, set[str]]:
    """The rule graphs of both studies (they share no rule)."""
    return {**rule_graph(TINY), **rule_graph(TOY_TINY)}


def downstream(rules: set[str]) -> set[str]:
    """``rules`` and every rule that reads their outputs, directly or not."""
    out, todo = set(rules), list(rules)
    while todo:
        for after in both_graphs()[todo.pop()]:
            if after not in out:
                out.add(after)
                todo.append(after)
    return out


def scripts_of_rules() -> dict[str, Path]:
    """``{rule: its script}`` from the rule files (``rule x:`` … ``script: "…"``)."""
    found = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(),
                                     re.M):
            script = re.search(r"script:\s*\"([^\"]+)\"", body)
            if script:
                found[name] = (smk.parent / script.group(1)).resolve()
    return found


def expand(rules: frozenset[str], base: Path | None = TINY) -> frozenset[str]:
    """A table cell's rules, with "everything" spelled out: the rules of ``base``'s study,
    or of both studies (``base`` None: the code table)."""
    if rules != {"everything"}:
        return rules
    return every_rule(base) if base is not None else frozenset(both_graphs())


# ------------------------------------------------------------------------------- config keys


def key_override(tmp: Path, key: str, cell: str, run: Path) -> Path:
    """A config file that changes ``key`` as the table says."""
    if key == "dataset.root":  # another folder holding the same files
        folder = tmp / "moved_data"
        folder.mkdir()
        for split in dataset_files.SPLITS:
            for f in dataset_files.raw_files("fashion_mnist", run / "data", split):
                (folder / f.name).symlink_to(f)
        value = str(folder)
    else:
        value = yaml.safe_load(cell.strip("`"))
    nested: dict = {}
    *parents, leaf = key.split(".")
    node = nested
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    path = tmp / f"{key}.yaml"
    path.write_text(yaml.safe_dump(nested))
    return path


def test_every_config_key_has_a_row_and_states_its_rerun_scope_in_the_schema():
    rows = {**table("Config keys"), **table("Config keys of the toy study")}
    keys = schema_keys()
    assert set(rows) == set(keys), (
        f"missing rows: {sorted(set(keys) - set(rows))}; rows of no key: "
        f"{sorted(set(rows) - set(keys))}")
    for key, spec in keys.items():
        stated = re.search(r"Reruns: (.*?)(?:\.\s|\.$)", " ".join(spec["description"].split()))
        assert stated, f"{key}: the schema's description does not say what a change reruns"
        assert rules_named(stated.group(1)) == rules_named(rows[key][1]), (
            f"{key}: schema says 'Reruns: {stated.group(1)}', docs/invalidation.md says "
            f"'{rows[key][1]}'")


def test_each_config_key_reruns_what_the_table_says(tiny_run, tmp_path):
    """One dry run per key, on the finished tiny run; the issue's rows among them: the
    evaluation sample reruns evaluate; moving the data reruns nothing; the test subset
    reruns its split and what reads it, never training. ``CRITPERIODS_TEST_KEYS=a.b,c.d``
    checks only those keys (while adding one: the full check takes minutes)."""
    rows = _only_the_keys_asked(table("Config keys"))
    overrides = {key: key_override(tmp_path, key, cells[0], tiny_run)
                 for key, cells in rows.items()}
    planned_by = dry_runs(tiny_run, list(overrides.values()))
    got = {key: planned_by[path] for key, path in overrides.items()}
    wrong = {key: (sorted(got[key]), rows[key][1]) for key in rows
             if got[key] != expand(rules_named(rows[key][1]))}
    assert not wrong, "dry run vs docs/invalidation.md:\n" + "\n".join(
        f"| `{k}` | {rows[k][0]} | {', '.join(g) or 'nothing'} |   (table: {t})"
        for k, (g, t) in sorted(wrong.items()))
    if "dataset.root" in got:
        assert got["dataset.root"] == set()
    if "dataset.test_subset" in got:
        assert not {"train_trunk", "train_branch"} & got["dataset.test_subset"]


def _only_the_keys_asked(rows: dict) -> dict:
    """``rows`` cut to the keys in ``$CRITPERIODS_TEST_KEYS`` (comma-separated), if set."""
    asked = [k.strip() for k in os.environ.get("CRITPERIODS_TEST_KEYS", "").split(",")
             if k.strip()]
    if not asked:
        return rows
    unknown = sorted(set(asked) - set(rows))
    assert not unknown, f"CRITPERIODS_TEST_KEYS names keys without a row: {unknown}"
    return {k: rows[k] for k in asked}


def test_each_toy_key_reruns_what_the_table_says(toy_tiny_run, tmp_path):
    """The toy study's keys, one dry run each on the finished toy tiny run."""
    rows = table("Config keys of the toy study")
    overrides = {key: key_override(tmp_path, key, cells[0], toy_tiny_run)
                 for key, cells in rows.items()}
    planned_by = dry_runs(toy_tiny_run, list(overrides.values()), TOY_TINY)
    got = {key: planned_by[path] for key, path in overrides.items()}
    wrong = {key: (sorted(got[key]), rows[key][1]) for key in rows
             if got[key] != expand(rules_named(rows[key][1]), TOY_TINY)}
    assert not wrong, "dry run vs docs/invalidation.md:\n" + "\n".join(
        f"| `{k}` | {rows[k][0]} | {', '.join(g) or 'nothing'} |   (table: {t})"
        for k, (g, t) in sorted(wrong.items()))


# ------------------------------------------------------------------------------- code


def code_rows_derived() -> dict[str, frozenset[str]]:
    """``{source file: rules that rerun}``: the rules whose code fingerprint contains the
    file, and everything downstream of them, in an experiment of the tiny run's model
    (``small_cnn``: the other architectures rerun nothing there)."""
    fp = Fingerprints(ROOT, by_name=modules_chosen_by_config({"model": {"name": "small_cnn"}}))
    reach = {rule: set(fp.sources(script)) for rule, script in scripts_of_rules().items()
             if rule in both_graphs()}
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "critperiods").rglob("*.py")}
    files |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").glob("*.py")}
    files |= set().union(*reach.values())
    return {f: frozenset(downstream({r for r, srcs in reach.items() if f in srcs}))
            for f in sorted(files)}


def test_every_source_file_reruns_what_the_table_says():
    rows = table("Code")
    derived = code_rows_derived()
    assert set(rows) == set(derived), (
        f"files without a row: {sorted(set(derived) - set(rows))}; rows of no file: "
        f"{sorted(set(rows) - set(derived))}")
    wrong = {f: sorted(derived[f]) for f in derived
             if expand(rules_named(rows[f][0]), None) != derived[f]}
    assert not wrong, "derived vs docs/invalidation.md:\n" + "\n".join(
        f"| `{f}` | {', '.join(r) or 'nothing'} |" for f, r in sorted(wrong.items()))


NOT_COPIED = {".git", "results", ".snakemake", "data", "bench", ".pytest_cache", ".ruff_cache"}


def edited_copy(tmp: Path, name: str, path: str, edit) -> Path:
    """A copy of the repository's sources (no outputs, environments or caches) with
    ``edit(text)`` applied to ``path``."""
    def ignore(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == ROOT
        return [n for n in names if n == "__pycache__" or n.endswith(".egg-info")
                or top and (n in NOT_COPIED or n.startswith(".venv"))]

    copy = tmp / name
    shutil.copytree(ROOT, copy, ignore=ignore)
    target = copy / path
    target.write_text(edit(target.read_text()))
    return copy


def tidy(text: str) -> str:
    """Comments, docstrings and blank lines added, the module docstring reworded: no code
    change."""
    text = text.replace('"""', '"""Reworded. ', 1)
    text = re.sub(r'^([ \t]*)(def \w+\([^()\n]*\)[^\n]*:)\n(?!\s*""")',
                  r'\1# a comment\n\1\2\n\1    """A new docstring."""\n\n', text, count=3,
                  flags=re.M)
    return text + "\n# a trailing comment\n"


CODE_CHANGES = {  # (file, real change?) → what a dry run must plan
    ("critperiods/measure/llc/estimate.py", True): lambda t: t + "\nBUG_FIX = 1\n",
    ("critperiods/measure/llc/estimate.py", False): tidy,
    ("critperiods/train/training.py", True): lambda t: t + "\nBUG_FIX = 1\n",
    ("critperiods/train/models/small_cnn.py", True): lambda t: t + "\nBUG_FIX = 1\n",
    ("critperiods/train/models/resnet18.py", True): lambda t: t + "\nBUG_FIX = 1\n",
    ("critperiods/results/plots.py", True): lambda t: t + "\nBUG_FIX = 1\n",
    ("scripts/evaluate.py", False): lambda t: "# a comment in a stage script\n" + t,
}


def test_code_changes_rerun_their_stage_and_downstream_and_tidying_reruns_nothing(
        tiny_run, tmp_path):
    """Real changes on copies of the repository, dry-run against the finished tiny run: a
    line in the λ̂ estimator reruns llc, aggregate and plots; one in training.py all but the data; a
    comment, docstring or reflowed line reruns nothing (also in a stage script, whose
    modification time the workflow profile leaves out of the rerun triggers)."""
    rows = table("Code")
    copies = {case: edited_copy(tmp_path, f"copy{i}", case[0], edit)
              for i, (case, edit) in enumerate(CODE_CHANGES.items())}
    with ThreadPoolExecutor(WORKERS) as pool:
        got = dict(zip(copies, pool.map(lambda c: dry_run(tiny_run, repo=c), copies.values()),
                       strict=True))
    for (path, real), rules in got.items():  # on the critical-period study's tiny run
        expected = (expand(rules_named(rows[path][0]), None) & every_rule(TINY) if real
                    else frozenset())
        assert rules == expected, f"{path} ({'real' if real else 'cosmetic'} change): {rules}"
    assert got[("critperiods/measure/llc/estimate.py", True)] == {"llc", "aggregate", "plots"}
    assert got[("critperiods/results/plots.py", True)] == {"plots"}
    # the tiny run is small_cnn's: its architecture retrains everything, another one nothing
    assert "train_trunk" in got[("critperiods/train/models/small_cnn.py", True)]
    assert got[("critperiods/train/models/resnet18.py", True)] == set()


def test_a_dry_run_after_a_config_edit_prints_the_change_not_the_whole_config(tiny_run,
                                                                             tmp_path):
    """``aggregate`` reruns when the config it records changes, through a param holding the
    record's digest: ``snakemake -n`` prints the edited section and two digests, where it
    printed the whole YAML before and after."""
    override = tmp_path / "level.yaml"
    override.write_text("analysis:\n  interval_level: 0.8\n")
    out = snakemake(tiny_run, "-n", "--nolock", configs=[override])
    reasons = [line for line in out.splitlines() if "Params have changed" in line]
    assert len(reasons) == 1, out[-3000:]  # aggregate's; plots reruns for its input
    assert "'interval_level': 0.8" in reasons[0] and "'interval_level': 0.9" in reasons[0]
    assert len(re.findall(r"'[0-9a-f]{64}'", reasons[0])) == 2  # the record's, before and now
    assert "experiment:" not in reasons[0] and len(reasons[0]) < 600, reasons[0]
