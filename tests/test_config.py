"""Bad configs fail before any job runs, naming the key and the bad value."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from critperiods.pipeline.plan import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def load_default() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def checked(config: dict) -> dict:
    config = copy.deepcopy(config)
    validate(config, SCHEMA)
    check_config(config, yaml.safe_load(Path(SCHEMA).read_text()))
    return config


def test_default_config_is_valid_and_gets_defaults():
    config = checked(load_default())
    assert config["evaluate"]["batch_size"] == 1000  # filled from the schema
    assert config["llc"]["chains"] == 4


def test_every_schema_property_has_type_default_description():
    schema = yaml.safe_load(Path(SCHEMA).read_text())

    def walk(props: dict, prefix: str) -> None:
        for key, spec in props.items():
            for field in ("type", "default", "description"):
                assert field in spec, f"{prefix}{key} lacks {field}"
            if "properties" in spec:
                walk(spec["properties"], f"{prefix}{key}.")

    walk(schema["properties"], "")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["optimizer"].update(lr_decya=0.9), "lr_decya"),  # typo → unknown key
        (lambda c: c.update(epochs_after_swtich=3), "epochs_after_swtich"),
        (lambda c: c["grid"].update(batch_sizes=[32, -4]), "-4"),
        (lambda c: c["grid"].update(batch_sizes=[0]), "batch_sizes"),
        (lambda c: c["grid"].update(seeds=[]), "seeds"),
        (lambda c: c["grid"].update(seeds=[0, 1, 0]), "seeds"),  # repeated: the schema's
        (lambda c: c["grid"].update(lr_schedules=["restart", "restart"]), "lr_schedules"),
        (lambda c: c["dataset"].update(name="imagenet"), "imagenet"),
        (lambda c: c["model"].update(name="vgg"), "vgg"),
        (lambda c: c.update(device="tpu"), "tpu"),
        (lambda c: c.setdefault("analysis", {}).update(llc_read_flagged=["unstable"]),
         "unstable"),
    ],
)
def test_schema_errors_name_key_and_value(mutate, expected):
    config = load_default()
    mutate(config)
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    assert expected in str(err.value)


def _schema_bounds() -> list[tuple[str, int, str, float]]:
    """Every bound of the schema: (dotted key, how deep in lists it bounds the value: 0 the
    value itself, 1 a list's items, 2 the items of a list of lists; the bound's name, a value
    just outside it)."""
    bounds = []

    def walk(props: dict, path: list[str]) -> None:
        for key, spec in props.items():
            if "properties" in spec:
                walk(spec["properties"], [*path, key])
            items, depth, levels = spec, 0, [(0, spec)]
            while isinstance(items.get("items"), dict):  # lists of lists of numbers too
                items, depth = items["items"], depth + 1
                levels.append((depth, items))
            for of_items, where in levels:
                types = where.get("type", spec.get("type"))
                whole = "integer" in (types if isinstance(types, list) else [types])
                for bound in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
                    if bound in where:
                        m = where[bound]
                        step = 1 if whole else abs(m) * 1e-6 or 1e-9
                        outside = {"minimum": m - step, "maximum": m + step}.get(bound, m)
                        bounds.append((".".join([*path, key]), of_items, bound, outside))

    walk(yaml.safe_load(Path(SCHEMA).read_text())["properties"], [])
    return bounds


def test_every_bound_of_the_schema_refuses_a_value_just_outside_it_by_name():
    """Each minimum and maximum of the schema (a learning rate ≤ 0, a momentum of 1, …) is
    enforced, and the refusal names the key: walked from the schema itself, so a bound
    dropped by mistake, or one added later, is checked without a hand-written case."""
    bounds = _schema_bounds()
    assert len(bounds) > 80 and ("optimizer.lr", 0, "exclusiveMinimum", 0) in bounds
    assert any(key.startswith("toy.landscapes") and depth == 2 for key, depth, _, _ in bounds)
    missed = []
    for key, depth, bound, outside in bounds:
        config = load_default()
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        for _ in range(depth):
            outside = [outside]
        node[leaf] = outside
        try:
            validate(config, SCHEMA)
            missed.append(f"{key} = {node[leaf]} accepted ({bound})")
        except WorkflowError as err:
            if leaf not in str(err):
                missed.append(f"{key} = {node[leaf]} refused without naming {leaf}")
    assert not missed, missed


def test_switch_epoch_not_multiple_of_stride():
    config = load_default()
    config["grid"]["switch_epochs"] = [0, 4, 6]
    with pytest.raises(ConfigError, match=r"grid.switch_epochs: \[6\].*trunk_stride=4"):
        checked(config)


def test_batch_size_larger_than_dataset():
    config = load_default()
    config["dataset"]["train_subset"] = 100
    config["grid"]["batch_sizes"] = [32, 64, 128, 256]
    with pytest.raises(ConfigError, match=r"grid.batch_sizes: \[128, 256\]"):
        checked(config)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(trunk_stride=4.0), "trunk_stride: must be a whole number"),
        (lambda c: c["grid"].update(switch_epochs=[0, 4.0]), "grid.switch_epochs: must be"),
        (lambda c: c["grid"].update(batch_sizes=[32.0]), "grid.batch_sizes: must be"),
        (lambda c: c.setdefault("llc", {}).update(chains=4.0), "llc.chains: must be"),
        (lambda c: c.setdefault("checkpoints", {}).update(every=4.0), "checkpoints.every: must"),
    ],
)
def test_whole_numbers_are_refused_as_floats(mutate, expected):
    """JSON Schema's "integer" accepts 4.0, which would end up in file names as "4.0"."""
    config = load_default()
    mutate(config)
    with pytest.raises(ConfigError, match=expected):
        checked(config)


def test_llc_epochs_must_be_checkpoint_epochs():
    config = load_default()
    config.setdefault("llc", {})["epochs"] = [4, 999]
    with pytest.raises(ConfigError, match=r"llc.epochs: \[999\] are not checkpoint epochs"):
        checked(config)
    config["llc"]["epochs"] = [4]
    checked(config)
    config.setdefault("divergence", {})["barrier_epochs"] = [3]
    with pytest.raises(ConfigError, match=r"divergence.barrier_epochs: \[3\]"):
        checked(config)


def test_schema_order_makes_a_stated_default_print_the_same():
    """Rule params are compared as text: a default written in a config file must print like
    the default the schema fills in."""
    from critperiods.pipeline.plan import in_schema_order

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    filled = checked(load_default())
    stated = load_default()
    stated["llc"] = {"seed": 0, **stated["llc"]}  # the default, first instead of last
    stated = checked(stated)
    assert list(stated["llc"]) != list(filled["llc"])
    a, b = in_schema_order(filled, schema), in_schema_order(stated, schema)
    assert yaml.safe_dump(a, sort_keys=False) == yaml.safe_dump(b, sort_keys=False)
    assert list(a["llc"])[:2] == ["enabled", "every"]  # the schema's order, not sorted



def test_a_whole_number_prints_like_the_same_float():
    """``gamma: 100`` and ``gamma: 100.0`` are one setting: as rule params they print alike
    (they reran every λ̂ job), while integer keys stay integers (they name files)."""
    from critperiods.pipeline.plan import in_schema_order

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    plain, whole = checked(load_default()), load_default()
    whole["llc"]["gamma"] = int(whole["llc"]["gamma"])
    whole["optimizer"]["weight_decay"] = 0
    plain["optimizer"]["weight_decay"] = 0.0
    whole = checked(whole)
    assert isinstance(whole["llc"]["gamma"], int)
    a, b = in_schema_order(plain, schema), in_schema_order(whole, schema)
    assert yaml.safe_dump(a, sort_keys=False) == yaml.safe_dump(b, sort_keys=False)
    assert b["llc"]["gamma"] == 100.0 and isinstance(b["llc"]["gamma"], float)
    assert all(isinstance(s, int) for s in b["grid"]["switch_epochs"])
    assert isinstance(b["llc"]["chains"], int) and b["llc"]["enabled"] is True

def test_snakemake_refuses_bad_config_before_planning(tmp_path):
    """Through the real CLI: a typo fails the dry run, and no job is planned."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("trunk_stride: 4\ngrid:\n  switch_epochs: [0, 5]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "critperiods: config error: grid.switch_epochs: [5]" in out
    assert f"(set in {bad})" in out  # keys that disagree name the file too
    assert "Job stats" not in out
    assert 'File "' not in out and "Traceback" not in out  # one line, no frames
    bad.write_text("grid:\n  batch_size: [64]\n")  # a typo: the key, its file, no schema dump
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"grid.batch_size: unknown key; did you mean grid.batch_sizes? (set in {bad})" in out
    assert "additionalProperties" not in out and len(out.splitlines()) < 30


def test_seed_groups_are_blocks_of_seed_values():
    from critperiods.pipeline.plan import seed_group

    config = {"grid": {"seeds": [5, 0, 1, 2]}, "train": {"seeds_per_job": 2}}
    assert seed_group(config, 0) == seed_group(config, 1) == [0, 1]
    assert seed_group(config, 2) == [2]  # its block (2, 3) has one seed so far
    assert seed_group(config, 5) == [5]
    assert seed_group(config, 7) == [7]  # outside the grid: alone
    assert seed_group({"grid": {"seeds": [0, 1]}, "train": {"seeds_per_job": 1}}, 1) == [1]


@pytest.mark.parametrize(("name", "size"), [("fashion_mnist", 28), ("cifar10", 32)])
def test_a_blur_as_large_as_the_image_is_refused(name, size):
    config = load_default()
    config["dataset"].update(name=name, blur_size=size)
    with pytest.raises(ConfigError, match=r"dataset\.blur_size: .* would do nothing"):
        checked(config)
    config["dataset"]["blur_size"] = size - 1
    checked(config)


def test_a_first_lambda_epoch_after_every_checkpoint_is_refused():
    config = load_default()
    config["llc"]["first_epoch"] = 100
    with pytest.raises(ConfigError, match=r"llc\.first_epoch: 100 .* selects no checkpoint"):
        checked(config)
    config["llc"]["enabled"] = False  # nothing to estimate: nothing to refuse
    checked(config)
    config["llc"].update(enabled=True, first_epoch=20)  # the branches' last checkpoints
    checked(config)


def test_data_that_would_be_downloaded_are_named_before_the_run(tmp_path):
    """A dry run says which key to set and where it looked, once, before any job; data
    already prepared, or on disk, need no line."""
    from critperiods.pipeline.plan import data_download_note

    config = {"dataset": {"name": "mnist", "root": str(tmp_path / "nowhere")}}
    prepared = {split: str(tmp_path / f"{split}.pt") for split in ("train", "test")}
    note = data_download_note(config, prepared)
    assert note.startswith(f"dataset.root: mnist (train, test) is not in {tmp_path}/nowhere, ")
    assert "download" in note
    (tmp_path / "train.pt").touch()
    assert "mnist (test)" in data_download_note(config, prepared)
    (tmp_path / "test.pt").touch()
    assert data_download_note(config, prepared) is None
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-d", str(tmp_path / "w"), "--configfile",
         str(ROOT / "config.yaml"), str(_write(tmp_path / "dl.yaml", config))],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (out.stdout + out.stderr).count("dataset.root: mnist (train, test) is not in") == 1


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_moved_lr_after_switch_key_names_grid_lr_schedules():
    from critperiods.pipeline.plan import check_moved_keys

    config = load_default()
    config["optimizer"]["lr_after_switch"] = "restart"
    with pytest.raises(ConfigError, match=r"grid\.lr_schedules"):
        check_moved_keys(config)
    check_moved_keys(load_default())


def test_the_removed_bootstrap_samples_key_says_what_replaced_it():
    from critperiods.pipeline.plan import check_moved_keys

    config = load_default()
    config.setdefault("analysis", {})["bootstrap_samples"] = 1000
    with pytest.raises(ConfigError, match=r"^analysis\.bootstrap_samples: removed.*jackknife"):
        check_moved_keys(config)


def test_analysis_defaults_agree_with_the_library():
    """The λ̂ quality thresholds and interval settings have one default: the schema's equals
    the library's (used when the cube is built without a config)."""
    from critperiods.results.cube import ANALYSIS_DEFAULTS

    schema = yaml.safe_load(Path(SCHEMA).read_text())["properties"]["analysis"]["properties"]
    assert {k: v["default"] for k, v in schema.items()} == ANALYSIS_DEFAULTS


def test_the_flags_a_config_can_read_in_are_the_llc_stages():
    """``analysis.llc_read_flagged`` takes exactly the names of ``llc_quality``'s bits."""
    from critperiods.measure.llc.quality import FLAGS

    schema = yaml.safe_load(Path(SCHEMA).read_text())["properties"]["analysis"]["properties"]
    assert schema["llc_read_flagged"]["items"]["enum"] == list(FLAGS)


def test_llc_defaults_agree_with_the_library():
    """λ̂'s settings have one default: every ``llc:`` key the estimator takes defaults in the
    schema to the value ``LLCConfig`` has when built without it."""
    import dataclasses

    from critperiods.measure.llc import LLCConfig

    schema = yaml.safe_load(Path(SCHEMA).read_text())["properties"]["llc"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(LLCConfig)}
    shared = sorted(set(schema) & set(fields) - {"precision"})
    assert {"chains", "draws", "burn_in", "step_size", "gamma", "batch_size"} <= set(shared)
    assert {k: schema[k]["default"] for k in shared} == {k: fields[k] for k in shared}
    # precision's schema default, auto, is resolved per job; on the CPU it is the library's
    from critperiods.pipeline.llc_inputs import llc_config_from_params

    params = {k: schema[k]["default"] for k in schema}
    assert schema["precision"]["default"] == "auto"
    assert llc_config_from_params(params, "cpu", "all_cnn_c").precision == fields["precision"]


@pytest.mark.parametrize("content", [None, b"experiment: x\n", b"\x89HDF\r\n\x1a\ncut",
                                     "folder"])
def test_summarize_on_a_missing_or_foreign_file_is_one_line(tmp_path, content):
    """A missing file, a folder, a file that is no netCDF at all (a config) and a netCDF
    file cut short each get one line; only the last is called truncated or corrupt (and
    given the command that remakes it)."""
    path = tmp_path / "cube.nc"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "critperiods", "summarize", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    expected = {None: "no such file", "folder": "a folder, not a cube file",
                b"experiment: x\n": "not a netCDF file (expected results/<experiment>/cube.nc"}
    assert expected.get(content, "cannot be read as netCDF") in lines[0]
    assert ("forcerun" in lines[0]) == (content == b"\x89HDF\r\n\x1a\ncut")


def test_the_never_blurred_run_continues_in_segments_as_the_sharp_reference():
    from critperiods.pipeline import plan

    config = checked(load_default())
    last, end = plan.last_epoch(config), plan.run_end(config, 0)
    assert plan.reference_end(config) == last > end
    assert max(plan.branch_checkpoints(config, 0)) == end  # the branch file ends with its run
    ends = plan.reference_epochs(config)
    stride = config["trunk_stride"]
    assert ends[-1] == last and all(e % stride == 0 for e in ends[:-1]) and ends[0] > end
    # the segments chain after the branch and hold every checkpoint after its end, once
    held = [e for s in ends for e in plan.reference_segment_checkpoints(config, s)]
    assert held == [e for e in plan.checkpoint_epochs(config) if end < e <= last]
    starts = [plan.reference_start(config, e) for e in ends]
    assert starts == [("continue/switch0", end)] + [(f"continue/switch0/e{e}", e)
                                                     for e in ends[:-1]]
    # a replay of the never-blurred run starts from the latest state on its way
    assert plan.perturbation_start(config, "continue", 0, ends[1] + 1) == (
        f"continue/switch0/e{ends[1]}", ends[1])
    config["llc"]["enabled"] = config["divergence"]["enabled"] = False
    assert plan.reference_epochs(config) == []  # nothing needs it


def test_a_longer_grid_keeps_every_training_and_llc_file_it_had():
    """Adding a switch epoch after the last one adds files: every training file and λ̂ file
    of the shorter grid keeps its checkpoints and its λ̂ epochs (so its jobs do not rerun),
    except a last segment of the continuation that ended off the stride."""
    from critperiods.pipeline import plan

    short = checked(load_default())
    long = checked(load_default())
    long["grid"]["switch_epochs"] = [*short["grid"]["switch_epochs"], 20]
    assert plan.reference_end(short) % short["trunk_stride"] != 0  # the off-stride case
    replaced = [f"continue/switch0/e{plan.reference_end(short)}"]
    kept = [p for p in plan.training_pieces(short) if p not in replaced]
    assert set(kept) < set(plan.training_pieces(long))
    for piece in kept:
        assert plan.piece_checkpoints(short, piece) == plan.piece_checkpoints(long, piece), piece
    llc = [p for p in plan.llc_pieces(short) if p not in replaced]
    assert set(llc) < set(plan.llc_pieces(long))
    for piece in llc:
        assert plan.piece_llc_epochs(short, piece) == plan.piece_llc_epochs(long, piece), piece


def test_the_cli_says_its_version_and_documents_every_option():
    from critperiods import __version__
    from critperiods.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    parser_help = subprocess.run([sys.executable, "-m", "critperiods", "summarize", "--help"],
                                 capture_output=True, text=True, timeout=120).stdout
    assert "--recompute" in parser_help and "--csv" in parser_help
    assert __version__.count(".") == 2
    import tomllib

    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert packaged == __version__  # a bump edits both: pyproject.toml and _version.py


@pytest.mark.parametrize("command", ["summarize", "calibrate-llc", "check", "cost", "power",
                                     "provenance"])
def test_every_subcommand_help_says_what_it_does_and_its_defaults(command, capsys):
    """``<command> --help`` opens on the command's bullet of the CLI's docstring, and the
    options say their defaults in one spelling, "(default: …)"."""
    from critperiods.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"`{command}" in text and " — " in text, text[:400]
    if command == "power":  # not "…(before): 4", which reads as part of the sentence
        assert "(before) (default: the switch epochs' spacing, 4 in config.yaml)" in text
        assert "per row (default: 200)" in text


@pytest.mark.parametrize("text, expected", [
    ("epochs_after_swtich: 5\n", "epochs_after_swtich: unknown key; did you mean "
                                 "epochs_after_switch? (set in {path})"),
    ("grid:\n  batch_size: [64]\n", "grid.batch_size: unknown key; did you mean "
                                    "grid.batch_sizes? (set in {path})"),
    ("grid:\n  batch_sizes: [64, -5]\n", "grid.batch_sizes[1]: -5 is less than"),
    ("grid: [oops\n", "{path}: not valid YAML (line 2, column 1)"),
    ("optimizer:\n  lr_after_switch: restart\n", "optimizer.lr_after_switch: replaced by the "
                                                   "sweep axis grid.lr_schedules; write grid:"),
    ("optimizer:\n  lr_after_switch: restart\n", "(set in {path})"),
    ("toy:\n  sgd:\n    lrs: [0.02]\n", "toy: set, but study is 'critical_period', which "
                                         "ignores it"),
    # a run used to finish with exit 0 and every run "diverged to chance"
    ("optimizer:\n  lr: .nan\n", "optimizer.lr: nan is not a finite number (set in {path})"),
    ("optimizer:\n  lr: 1e-3\n", "optimizer.lr: '1e-3' is not of type 'number' (YAML reads "
                                  "1e-3 as text: write it with a decimal point and a signed "
                                  "exponent, e.g. 1.0e-3) (set in {path})"),
    # was clamped to the 60,000 images, and recorded as asked
    ("dataset:\n  train_subset: 1000000\n", "dataset.train_subset: 1000000 is more than the "
                                             "60000 images of fashion_mnist's train split"),
    ("dataset:\n  test_subset: 20000\n", "dataset.test_subset: 20000 is more than the 10000"),
    ("optimizer:\n  lr:\n", "optimizer.lr: empty, but must be of type 'number' (give it a "
                             "value, or delete the key for its default) (set in {path})"),
    ("checkpoints:\n  epochs: [1, 99]\n", "checkpoints.epochs: [99] after epoch 24, the last "
                                          "any run (or reference) is trained to"),
    # plain YAML keeps the last and drops the first
    ("grid:\n  seeds: [0]\ngrid:\n  seeds: [1]\n",
     "{path}: not valid YAML (line 3, column 1): the key 'grid' is given twice (first on line "
     "1)"),
])
def test_cost_names_the_bad_key_and_its_file_in_one_line(tmp_path, text, expected):
    """A typo, a bad value or broken YAML in a config file: one line that names the key (and
    the key it resembles) and the file that sets it, instead of a traceback or a schema dump."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "critperiods", "cost", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.format(path=path) in lines[0], proc.stderr
    missing = subprocess.run([sys.executable, "-m", "critperiods", "cost", str(tmp_path / "no")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.stderr.strip() == (
        f"critperiods: config error: {tmp_path / 'no'}: no such config file")


def test_a_folder_given_as_a_config_file_is_named_as_such(tmp_path):
    from critperiods.pipeline.config_file import read_config_file

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: a folder, not a config"):
        read_config_file(tmp_path)
    merged = tmp_path / "merged.yaml"  # a merge key is no duplicate: Snakemake takes it too
    merged.write_text("base: &b\n  lr: 0.1\n  momentum: 0.5\noptimizer:\n  <<: *b\n  lr: 0.2\n")
    assert read_config_file(merged)["optimizer"] == {"lr": 0.2, "momentum": 0.5}
    merged.write_text("base: &a {lr: 0.1, momentum: 0.9}\ndefaults: {inner: &b {<<: *a, lr: "
                      "0.2}}\nuse: {<<: *b, momentum: 0.5}\n")  # a merge of a merge
    assert read_config_file(merged)["use"] == {"lr": 0.2, "momentum": 0.5}
    binary = tmp_path / "cube.nc"  # a cube named where a config goes: was a UnicodeDecodeError
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"cube\.nc: not a text file \(.*\); a config file is "
                                          r"YAML text"):
        read_config_file(binary)
    empty = tmp_path / "empty.yaml"  # Snakemake refuses it, naming neither file nor reason
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: empty \(no keys\)"):
        read_config_file(empty)


def test_the_schema_check_names_the_last_file_that_sets_a_key(tmp_path):
    """Of the layered config files, the error names the one whose value is in force."""
    from critperiods.pipeline.config_file import check_against_schema

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("grid:\n  seeds: [0, 1]\n")
    second.write_text("grid:\n  seeds: [0, 0]\n")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["grid"]["seeds"] = [0, 0]
    with pytest.raises(ConfigError, match=rf"^grid\.seeds: .* \(set in {second}\)$"):
        check_against_schema(config, ROOT / "workflow/schemas/config.schema.yaml",
                             [ROOT / "config.yaml", first, second])
    check_against_schema(yaml.safe_load((ROOT / "config.yaml").read_text()),
                         ROOT / "workflow/schemas/config.schema.yaml")


def test_the_schema_check_gives_every_reason_a_key_fails(tmp_path):
    """A list both too short and holding a bad value gets both reasons on one line; before,
    only the first (``too short``) was said, and the fix for it still failed."""
    from critperiods.pipeline.config_file import check_against_schema

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["toy"] = {"convergence": {"thresholds": [0.01, -1]}}
    with pytest.raises(ConfigError) as caught:
        check_against_schema(config, ROOT / "workflow/schemas/config.schema.yaml")
    message = str(caught.value)
    assert message.startswith("toy.convergence.thresholds: [0.01, -1] is too short; also "
                              "toy.convergence.thresholds[1]: -1 is less than"), message
    assert "\n" not in message


@pytest.mark.parametrize(("mutate", "expected"), [
    # an unknown key: its siblings are named too, but not errors elsewhere in the config
    (lambda c: c.update(fooo=1, gird=2) or c["grid"].update(batch_sizes=[-1]),
     r"^fooo: unknown key; the keys here are [^;]*; also gird: unknown key; did you mean "
     r"grid\?$"),
    (lambda c: c["grid"].update(bogus=1) or c["llc"].update(chains=0),
     r"^grid\.bogus: unknown key; the keys here are [^;]*$"),
    # a bad list item: the other bad items of the list, then a count
    (lambda c: c["grid"].update(batch_sizes=[-1, -2, -3, -4, -5]),
     r"^grid\.batch_sizes\[\d\]: -\d is less than or equal to the minimum of 0"
     r"(; also grid\.batch_sizes\[\d\]: -\d is less [^;]*){3}; and 1 more$"),
    (lambda c: c["grid"].update(seeds=[0, 0]), r"^grid\.seeds: \[0, 0\] has non-unique elements$"),
    # two bad values of one section: both (the second used to wait for the next run)
    (lambda c: c["llc"].update(draws=0, chains=0),
     r"^llc\.(draws|chains): 0 is less than [^;]*; also llc\.(draws|chains): 0 is less [^;]*$"),
])
def test_further_reasons_stay_with_the_key_that_fails(mutate, expected):
    from critperiods.pipeline.config_file import check_against_schema, exit_on_config_error

    config = load_default()
    mutate(config)
    with pytest.raises(ConfigError, match=expected) as caught:
        check_against_schema(config, SCHEMA)
    assert caught.value.located  # looked up here: exit_on_config_error adds no second file
    with pytest.raises(SystemExit) as exiting, exit_on_config_error([ROOT / "config.yaml"]):
        raise caught.value
    assert "(set in" not in str(exiting.value.code)


@pytest.mark.parametrize(("message", "key"), [
    ("grid.batch_sizes[0]: must be positive", ["grid", "batch_sizes", 0]),
    ("dataset.blur_size: 64 is not smaller", ["dataset", "blur_size"]),
    ("trunk_stride: 0", ["trunk_stride"]),
    ("/tmp/x.yaml: no such config file", None),
])
def test_a_config_errors_key_is_read_from_its_message(message, key):
    from critperiods.pipeline.config_file import _key_of

    assert _key_of(message) == key


def test_cost_prices_a_job_at_the_rate_measured_for_its_seeds(monkeypatch):
    """A job of k stacked seeds costs images / the rate of the largest measured group of at
    most k seeds (the smallest measured if none): stacking 3 seeds is priced as measured,
    not as 3 single seeds."""
    from critperiods.pipeline import cost

    key = ("cpu", "small_cnn", 8, 28)
    monkeypatch.setattr(cost, "RATES", {(*key, 1): {128: 100.0}, (*key, 3): {128: 300.0}})
    assert cost.rates_for(key, 1) == {128: 100.0} and cost.rates_for(key, 5) == {128: 300.0}
    assert cost.rates_for(key, 2) == {128: 100.0} and cost.rates_for(("cpu", "x", 1, 28), 1) == {}
    config = load_default()
    config["grid"]["batch_sizes"] = [128]
    config["llc"]["enabled"] = False
    config["train"]["seeds_per_job"] = 3
    stacked = cost.grid_cost(config, "cpu")
    config["train"]["seeds_per_job"] = 1
    alone = cost.grid_cost(config, "cpu")
    overhead = cost.JOB_OVERHEAD_S["cpu"] / cost.PARALLEL_JOBS["cpu"]
    # the same images, 3× the rate: a third of the training time (start-ups aside)
    assert stacked.images == alone.images
    assert (alone.seconds - alone.jobs * overhead) == pytest.approx(
        3 * (stacked.seconds - stacked.jobs * overhead))
    # the CPU line gives the core-hours too: the reference's minutes × its 2 cores
    said = cost.describe(alone, "cpu")
    assert f"{alone.seconds * 2 / 3600:.2g} core-hours, shared by as many cores" in said
    assert "core-hours" not in cost.describe(alone, "cuda")


def test_the_descent_of_a_preconditioned_sampler_is_refused_before_any_job():
    """llc.descent follows plain SGLD's drift; with rmsprop_sgld every llc_descent job would
    fail after training, so the plan refuses it, naming both keys."""
    config = load_default()
    config["llc"].update(descent=True, sampler="rmsprop_sgld")
    with pytest.raises(ConfigError, match=r"llc.descent: .* llc.sampler is 'rmsprop_sgld'"):
        checked(config)
    config["llc"]["sampler"] = "sgld"
    assert checked(config)["llc"]["descent"] is True


def test_cost_counts_the_descents_full_batch_passes():
    """``llc.descent`` adds, per λ̂ estimate, the chain's steps as full-batch passes over
    λ̂'s data (not chains × SGLD batch images), and a job per llc job."""
    from critperiods.pipeline import cost

    config = load_default()
    base = cost.grid_cost(config, "cpu")
    config["llc"]["descent"] = True
    more = cost.grid_cost(config, "cpu")
    llc, grid = config["llc"], config["grid"]
    estimates = cost._llc_estimates(config)
    n = config["dataset"]["train_subset"]
    assert more.llc_images - base.llc_images == pytest.approx(
        len(grid["batch_sizes"]) * estimates * len(grid["seeds"])
        * (llc["burn_in"] + llc["draws"]) * n)
    assert more.rules["llc_descent"] == base.rules["llc"] and more.seconds > base.seconds


def test_cost_counts_the_sgld_batch_within_the_images_the_sampler_sees():
    """``llc.samples`` caps λ̂'s data: an SGLD batch larger than it draws no more images per
    step than there are, and the descent's full-batch pass is over those images only."""
    from critperiods.pipeline import cost

    config = load_default()
    llc, grid = config["llc"], config["grid"]
    steps = llc["burn_in"] + llc["draws"]
    estimates = cost._llc_estimates(config)
    llc.update(samples=16, batch_size=32, descent=True)  # a batch larger than the subset
    few = cost.grid_cost(config, "cpu")
    assert few.llc_images == pytest.approx(  # SGLD, the descent, the stability check
        len(grid["batch_sizes"]) * estimates * len(grid["seeds"])
        * (steps * (llc["chains"] * 16 + 16) + cost.STABILITY_PASSES * 16
           + cost.CURVATURE_BATCHES * 16 * cost.HESSIAN_PRODUCT_PASSES))


def test_cost_counts_the_stability_check_on_its_images():
    """Each λ̂ estimate's stability check costs ``STABILITY_PASSES`` passes over
    ``llc.stability_samples`` images (all λ̂'s images for null) and one Hessian-vector
    product on each of ``CURVATURE_BATCHES`` minibatches, and nothing for a preconditioned
    sampler, which has none."""
    from critperiods.pipeline import cost

    config = load_default()
    llc, grid = config["llc"], config["grid"]
    per_image = (len(grid["batch_sizes"]) * cost._llc_estimates(config) * len(grid["seeds"])
                 * cost.STABILITY_PASSES)
    base = cost.grid_cost(config, "cpu").llc_images
    llc["stability_samples"] = None  # all 10,000 of λ̂'s images
    assert cost.grid_cost(config, "cpu").llc_images - base == pytest.approx(
        per_image * (config["dataset"]["train_subset"] - 1024))
    noise = (per_image // cost.STABILITY_PASSES * cost.CURVATURE_BATCHES * llc["batch_size"]
             * cost.HESSIAN_PRODUCT_PASSES)  # one product on each of its minibatches
    llc["sampler"] = "rmsprop_sgld"
    assert base - cost.grid_cost(config, "cpu").llc_images == pytest.approx(
        per_image * 1024 + noise)


def test_cost_reads_an_unmeasured_batch_size_off_the_measured_ones_and_says_so():
    """The CIFAR-10 grid's batch 64 and 256 were never measured on a GPU (32 and 128 were):
    64 is interpolated (log rate against log batch), 256 priced at 128's rate (no more than
    it costs), and the estimate says both; a measured batch size is used as measured."""
    from critperiods.pipeline import cost

    rates = {32: 100.0, 128: 400.0}
    assert cost.rate_at(rates, 128) == (400.0, "")
    rate, how = cost.rate_at(rates, 64)
    assert rate == pytest.approx(200.0) and how == "batch 64 interpolated between 32 and 128"
    assert cost.rate_at(rates, 256) == (400.0, "batch 256 at batch 128's rate")
    assert cost.rate_at(rates, 16) == (100.0, "batch 16 at batch 32's rate")
    assert cost.rate_at({}, 64) == (None, "")
    from critperiods.cli.common import load_config

    estimate = cost.grid_cost(load_config([str(ROOT / "configs/cifar10_achille.yaml")]), "cuda")
    assert estimate.seconds is not None and estimate.projected == (
        "batch 64 interpolated between 32 and 128", "batch 256 at batch 128's rate")
    assert "projected: batch 64 interpolated" in cost.describe(estimate, "cuda")
    assert not cost.grid_cost(load_config([]), "cpu").projected


def test_cost_of_the_toy_study_counts_its_jobs_and_refuses_its_bad_keys(tmp_path):
    """The cost model is the critical_period study's: for the toy study, `cost` says so and
    counts the toy jobs instead of pricing a sweep it will not run; a bad toy key is the
    same one line as in the Snakefile."""
    def cost(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "critperiods", "cost", *map(str, paths)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    shipped = ROOT / "configs/toy_landscapes.yaml"
    landscapes = yaml.safe_load(shipped.read_text())["toy"]["landscapes"]
    out = cost(shipped)
    assert out.returncode == 0, out.stderr
    jobs = sum(len(degrees) for degrees in landscapes.values())
    assert f"{jobs} toy_landscape jobs" in out.stdout and "train_trunk" not in out.stdout
    bad = _write(tmp_path / "toy.yaml", {"study": "toy_landscapes",
                                         "toy": {"starts": {"far": 5.0}}})
    out = cost(bad)
    assert out.returncode == 1 and out.stderr.strip() == (
        "critperiods: config error: toy.starts.far: 5.0 lies outside the prior box [-1.0, 1.0] "
        f"(toy.starts.prior_half_width) (set in {bad})")
    unread = _write(tmp_path / "main.yaml", {"toy": {"starts": {"far": 5.0}}})
    out = cost(unread)  # `toy` without `study: toy_landscapes`: refused, as by the Snakefile
    assert out.returncode == 1 and "add `study: toy_landscapes`" in out.stderr, out.stderr


def test_more_batch_swaps_than_an_epoch_has_pairs_are_refused():
    """batch_order swaps disjoint pairs of full batches: at batch 256, 10,000 images give 39
    full batches, so 19 pairs at most; found when the config is read, not after a replay."""
    config = load_default()
    config["dataset"]["train_subset"] = 10000
    config["perturbation"] = {"enabled": True, "kind": "batch_order", "epsilons": [0, 19]}
    checked(config)
    config["perturbation"]["epsilons"] = [0, 20]
    with pytest.raises(ConfigError, match=r"perturbation\.epsilons: \[20\] .* batch size 256 "
                                          r"\(grid\.batch_sizes=\[64, 128, 256\]\) has 39 full "
                                          r"batches, so at most 19"):
        checked(config)


def test_cost_names_config_yaml_once_when_it_is_given_too(tmp_path):
    """`cost config.yaml` reads the base config once more and must not say so twice."""
    from critperiods.cli.common import layers

    extra = tmp_path / "a.yaml"
    assert layers([str(ROOT / "config.yaml")]) == "config.yaml"
    assert layers([str(ROOT / "config.yaml"), str(extra)]) == f"config.yaml + {extra}"
    assert layers([str(extra)], "cube.nc's config") == f"config.yaml + cube.nc's config + {extra}"


def test_cost_marks_the_local_rules_and_says_when_stacking_needs_a_gpu_in_sight(capsys):
    """The rules `cost` calls local are the Snakefile's ``localrules`` (never cluster jobs),
    and with ``seeds_per_job: auto`` it says that its cuda column assumes CUDA in sight."""
    from critperiods.__main__ import main
    from critperiods.pipeline.cost import LOCAL_RULES

    snakefile = (ROOT / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", snakefile, re.M).group(1)
    assert tuple(block.replace(",", " ").split()) == ("all", *LOCAL_RULES)
    assert main(["cost", str(ROOT / "configs/fmnist_study.yaml")]) == 0
    out = capsys.readouterr().out
    local = [line.split()[0] for line in out.splitlines() if "(local:" in line]
    assert local == list(LOCAL_RULES)
    assert "with `device: auto` it does so only where the machine" in " ".join(out.split())
    assert main(["cost"]) == 0  # config.yaml: 3 seeds per job, no auto, no such line
    assert "device: auto" not in capsys.readouterr().out


def test_check_names_a_file_that_is_not_yaml_with_its_line(tmp_path):
    """Snakemake's message for a config file that is not YAML names neither the file nor the
    line; `critperiods check` (which `make run CONFIG=…` runs first) names both, and passes
    a good file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\ngrid:\n  seeds: [0, 1\n")

    def check(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "critperiods", "check", *map(str, paths)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    out = check(bad)
    assert out.returncode == 1 and out.stderr.strip().startswith(
        f"critperiods: config error: {bad}: not valid YAML (line 4, column 1)"), out.stderr
    out = check(ROOT / "configs/perturbation.yaml")
    assert out.returncode == 0, out.stderr
    given = ROOT / "configs/perturbation.yaml"
    assert out.stdout.splitlines()[0] == (f"perturbation (config.yaml + {given}): ok, study "
                                          "critical_period")
    assert "error" not in out.stdout  # its two batch sizes get a note, not a refusal
    make = subprocess.run(["make", "-n", "run", f"CONFIG={bad}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    planned = make.stdout.splitlines()  # the check comes before the dataset and the run
    check_at = next(i for i, line in enumerate(planned) if "critperiods check" in line)
    assert str(bad) in planned[check_at]
    assert all("apt-get" not in line and "snakemake" not in line
               for line in planned[:check_at]), planned


def test_every_shipped_config_writes_to_a_results_folder_of_its_own():
    """Each config file names its own ``experiment`` (the results folder): an overlay laid
    alone by mistake, or a CPU-reduced variant beside its full-size run, never writes into
    another run's folder (configs/fmnist_study_recovery_cpu.yaml once shared the full
    recovery run's)."""
    files = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]
    names = {f.name: yaml.safe_load(f.read_text()).get("experiment") for f in files}
    assert None not in names.values(), names
    assert len(set(names.values())) == len(names), names


@pytest.mark.parametrize("given, refused", [
    (["fmnist_study_recovery_cpu"], "fmnist_study.yaml was not given before it"),
    (["fmnist_study", "fmnist_study_recovery", "fmnist_study_recovery_cpu"],
     "fmnist_study_cpu.yaml was not given before it"),
    (["fmnist_study", "fmnist_study_recovery", "fmnist_study_cpu",
      "fmnist_study_recovery_cpu"], "that order was not kept"),
    (["fmnist_study", "fmnist_study_cpu", "fmnist_study_recovery",
      "fmnist_study_recovery_cpu"], None),
])
def test_an_overlay_given_without_the_files_it_is_laid_over_is_refused(given, refused):
    """An overlay laid alone is another experiment under its name (the CPU recovery run laid
    alone trained 6 sharp epochs, not 20, into the recovery run's folder): `check` refuses
    it in one line naming the file, what it needs and the command line that lays it."""
    proc = subprocess.run([sys.executable, "-m", "critperiods", "check",
                           *(f"configs/{name}.yaml" for name in given)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    if refused is None:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 1 and refused in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    last = f"configs/{given[-1]}.yaml"
    needs = yaml.safe_load((ROOT / last).read_text())["laid_over"]
    assert f"run it as --configfile {' '.join(f'configs/{n}' for n in needs)} {last}" \
        in proc.stderr


def test_an_overlay_given_before_its_base_is_told_what_was_given_after_it():
    """The refusal lists every file given, in order: a base given after its overlay reads
    as given, only too late (the list stopped at the overlay)."""
    proc = subprocess.run([sys.executable, "-m", "critperiods", "check",
                           "configs/fmnist_study_cpu.yaml", "configs/fmnist_study.yaml"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert ("fmnist_study.yaml was not given before it (given: config.yaml + "
            "fmnist_study_cpu.yaml + fmnist_study.yaml); run it as --configfile "
            "configs/fmnist_study.yaml configs/fmnist_study_cpu.yaml") in proc.stderr


def test_an_overlay_kept_elsewhere_is_told_where_its_base_lies(tmp_path):
    """An overlay of one's own (outside configs/) laid over a shipped config is told the
    base's real path, not a file beside the overlay that does not exist."""
    from critperiods.pipeline.config_file import CONFIGS, ConfigError, check_layers

    mine = tmp_path / "mine.yaml"
    mine.write_text("laid_over: [perturbation.yaml]\n")
    with pytest.raises(ConfigError) as refused:
        check_layers([mine])
    assert f"run it as --configfile {CONFIGS / 'perturbation.yaml'} {mine}" in str(refused.value)
    (tmp_path / "perturbation.yaml").write_text("{}\n")  # one beside it wins
    with pytest.raises(ConfigError) as refused:
        check_layers([mine])
    assert f"--configfile {tmp_path / 'perturbation.yaml'} {mine}" in str(refused.value)


def test_laid_over_takes_file_names_of_other_files_and_is_not_checked_over_a_cube(tmp_path):
    """A path or the file's own name in ``laid_over`` is refused as such (not as a missing
    layer with a command that would be refused again); over a cube's recorded config, the
    layers are already laid, so an overlay given on top is not refused."""
    from critperiods.cli.common import load_config
    from critperiods.pipeline.config_file import check_layers

    own = tmp_path / "own.yaml"
    own.write_text("laid_over: [own.yaml]\n")
    with pytest.raises(ConfigError, match="names own.yaml: give the file names"):
        check_layers([ROOT / "config.yaml", own])
    path = tmp_path / "path.yaml"
    path.write_text("laid_over: [configs/fmnist_study.yaml]\n")
    with pytest.raises(ConfigError, match="not paths"):
        check_layers([ROOT / "config.yaml", path])
    study = load_config([str(ROOT / "configs/fmnist_study.yaml")])
    recovery = str(ROOT / "configs/fmnist_study_recovery.yaml")
    config = load_config([recovery], recorded=("results/fmnist_study/cube.nc", study))
    assert config["epochs_after_switch"] == 20 and config["experiment"] == "fmnist_study_recovery"


def test_snakemake_refuses_an_overlay_laid_alone(tmp_path):
    """The Snakefile runs the same check, before anything is planned."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"),
                           "-d", str(tmp_path), "--configfile",
                           str(ROOT / "configs/fmnist_study_recovery_cpu.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "critperiods: config error: laid_over:" in proc.stderr + proc.stdout


def test_cost_says_what_makes_sharing_dearer_than_training_from_scratch():
    """Where sharing trains more epochs than training every run from scratch, the reason
    named is the reference the config needs: λ̂'s alone continues the never-blurred run."""
    from critperiods.cli.planning import _times

    assert _times(12, 6, {"divergence": {"enabled": False}}) == "2.00× more"
    llc_only = _times(6, 8, {"divergence": {"enabled": False}})
    assert llc_only == "1.33× less: the never-blurred run is continued as λ̂'s sharp reference"
    assert "divergences' references" in _times(6, 8, {"divergence": {"enabled": True}})


def test_a_cross_key_error_names_the_file_of_each_key(tmp_path):
    """Batch sizes from config.yaml against a train_subset from an overlay: both files are
    named, not only the one that sets the key the message starts with."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("dataset:\n  train_subset: 32\n")
    proc = subprocess.run([sys.executable, "-m", "critperiods", "check", str(overlay)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"larger than dataset.train_subset=32 (set in {ROOT / 'config.yaml'}; "
        f"dataset.train_subset set in {overlay})"), proc.stderr
    # the switch epochs an overlay cuts under the perturbation config's: both named
    overlay.write_text("grid:\n  switch_epochs: [0, 4]\n")
    proc = subprocess.run([sys.executable, "-m", "critperiods", "check",
                           "configs/perturbation.yaml", str(overlay)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "are not in grid.switch_epochs=[0, 4], so there is no such run to perturb (set in "
        f"configs/perturbation.yaml; grid.switch_epochs set in {overlay})"), proc.stderr


def test_the_cli_hashes_a_config_as_the_pipeline_does(tmp_path):
    """calibrate-llc and the other commands read configs through load_config: with
    `weight_decay: 0` it must give the training-config hash the Snakefile's params give
    (0.0), or the run's own pieces are refused as another config's."""
    from critperiods.cli.common import load_config
    from critperiods.pipeline.checkpoints import config_hash
    from critperiods.pipeline.plan import training_params

    whole, real = tmp_path / "whole.yaml", tmp_path / "real.yaml"
    whole.write_text("optimizer:\n  weight_decay: 0\n")
    real.write_text("optimizer:\n  weight_decay: 0.0\n")
    a, b = load_config([str(whole)]), load_config([str(real)])
    assert a["optimizer"]["weight_decay"] == 0.0 and isinstance(a["optimizer"]["weight_decay"],
                                                                float)
    assert config_hash(training_params(a)) == config_hash(training_params(b))


def test_check_notes_an_overlay_that_would_write_into_the_default_experiment(tmp_path, capsys):
    """Files laid over config.yaml that change a key that can change a result (the blur) but
    leave the results in the default run's folder would replace the default's results:
    the check says so, naming the folder and the key, also where a file names the default's
    experiment itself. Another name, another results folder, a figure setting alone, and
    config.yaml alone get no note."""
    from critperiods.__main__ import main

    files = {"unnamed": "dataset:\n  blur_size: 8\n",
             "default_name": "experiment: fmnist_quick\ndataset:\n  blur_size: 8\n",
             "named": "experiment: blur8\ndataset:\n  blur_size: 8\n",
             "elsewhere": "results_dir: elsewhere\ndataset:\n  blur_size: 8\n",
             "figures": "plots:\n  dpi: 60\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    for noted in ("unnamed", "default_name"):
        assert main(["check", str(tmp_path / f"{noted}.yaml")]) == 0
        assert ("note: this run writes to results/fmnist_quick/, the default run's folder, but "
                "differs from it in dataset.blur_size: its results would replace the "
                "default's there") in capsys.readouterr().out, noted
    for paths in ([tmp_path / "named.yaml"], [tmp_path / "unnamed.yaml", tmp_path / "named.yaml"],
                  [tmp_path / "elsewhere.yaml"], [tmp_path / "figures.yaml"],
                  [ROOT / "config.yaml"], []):
        assert main(["check", *map(str, paths)]) == 0
        assert "note: this run writes" not in capsys.readouterr().out, paths


def test_check_says_before_a_run_that_the_data_would_be_downloaded(tmp_path, capsys):
    """Where the raw files are not in dataset.root (nor prepared yet), check says what the
    workflow says when it plans: the run would download them, which needs the network (and,
    where they lie there uncompressed, to gzip them); with the files there, no note."""
    from critperiods.__main__ import main
    from tests.conftest import write_fake_fashion_mnist

    missing = tmp_path / "missing.yaml"
    missing.write_text(f"experiment: xm\ndataset:\n  name: mnist\n  root: {tmp_path / 'no'}\n")
    assert main(["check", str(missing)]) == 0
    assert (f"note: dataset.root: mnist (train, test) is not in {tmp_path / 'no'}, "
            f"{tmp_path / 'no' / 'MNIST/raw'}; prepare_data will download it with torchvision, "
            "which needs the network") in capsys.readouterr().out
    (tmp_path / "no").mkdir()
    (tmp_path / "no/train-images-idx3-ubyte").write_bytes(b"")  # gunzipped: not read
    assert main(["check", str(missing)]) == 0
    assert (f"{tmp_path / 'no'} holds them uncompressed, which is not read: gzip them"
            in capsys.readouterr().out)
    there = tmp_path / "there.yaml"
    there.write_text(f"experiment: xf\ndataset:\n  root: "
                     f"{write_fake_fashion_mnist(tmp_path / 'fashion')}\n")
    assert main(["check", str(there)]) == 0
    assert "note:" not in capsys.readouterr().out

def test_the_schedules_the_config_accepts_are_the_ones_the_layout_knows():
    """``grid.lr_schedules``' enum and ``layout.LR_SCHEDULES`` (the wildcards and path
    patterns) name the same schedules, in the same order (docs/architecture.md, "An lr
    schedule"), and each trains at its own rate: ``restart`` resets the decay at the switch,
    ``continue`` goes on with it."""
    from critperiods.pipeline.layout import LR_SCHEDULES
    from critperiods.train.training import TrainConfig, learning_rate

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    grid = schema["properties"]["grid"]["properties"]["lr_schedules"]
    assert grid["items"]["enum"] == list(LR_SCHEDULES) == grid["default"]
    base = {"model": "small_cnn", "width": 4, "blur_size": 4, "momentum": 0.9,
            "weight_decay": 0.0, "lr": 0.1, "lr_decay": 0.5}
    rates = {r: [learning_rate(TrainConfig(**base, lr_after_switch=r), e, 2)
                 for e in range(4)] for r in LR_SCHEDULES}
    assert rates == {"continue": [0.1, 0.05, 0.025, 0.0125], "restart": [0.1, 0.05, 0.1, 0.05]}


def test_every_dataset_the_config_accepts_is_known_wherever_a_dataset_is_looked_up():
    """``dataset.name``'s enum and the tables keyed by it name the same datasets
    (docs/architecture.md, "A dataset"): the loader's list, the published MD5 sums (the
    data's identity before a download), what to do offline, the image size and split sizes
    the config check and ``cost`` read, and the name the summary's first line prints."""
    from critperiods.pipeline.plan import IMAGE_SIZE, TEST_IMAGES, TRAIN_IMAGES
    from critperiods.results.setup import DATASET_NAMES
    from critperiods.train.dataset_files import (
        DATASETS,
        IDX_FILES,
        OFFLINE_HINTS,
        PUBLISHED_MD5,
        TORCHVISION_FOLDER,
    )

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    names = schema["properties"]["dataset"]["properties"]["name"]["enum"]
    assert names == list(DATASETS)
    for table in (PUBLISHED_MD5, OFFLINE_HINTS, IMAGE_SIZE, TRAIN_IMAGES, TEST_IMAGES,
                  DATASET_NAMES):
        assert set(table) == set(names), table
    for name in TORCHVISION_FOLDER:  # the IDX datasets: their sums are of the four files
        assert {f for split in PUBLISHED_MD5[name].values() for f in split} == \
            set(IDX_FILES.values()), name


def test_the_stable_lambda_config_is_the_default_with_a_stable_step_and_the_descent():
    """configs/fmnist_llc_stable.yaml changes only λ̂'s chains: a step below the smallest
    stability limit measured on the default's checkpoints (8.7e-5, batch 256's trunk at
    epoch 6; docs/llc.md), chains of at least four relaxation times 1 / (ε γ), and the
    descent on, so that its knees are λ̂'s net of it; training and the grid are the
    default's."""
    from critperiods.cli.common import load_config

    default = load_config([])
    stable = load_config([str(ROOT / "configs/fmnist_llc_stable.yaml")])
    llc = stable["llc"]
    assert llc["step_size"] < 8.7e-5 and llc["descent"] is True
    assert (llc["burn_in"] + llc["draws"]) * llc["step_size"] * llc["gamma"] >= 4
    assert {k: v for k, v in stable.items() if k not in ("llc", "experiment")} == \
        {k: v for k, v in default.items() if k not in ("llc", "experiment")}


def test_the_docs_quote_the_cifar_grids_cost_as_cost_prints_it(capsys):
    """docs/pipeline.md and docs/performance.md quote `cost configs/cifar10_achille.yaml`
    (its CUDA hours, its SGLD images): a change to the grid or the rates must update them."""
    from critperiods.__main__ import main

    assert main(["cost", str(ROOT / "configs/cifar10_achille.yaml")]) == 0
    out = capsys.readouterr().out
    hours = re.search(r"cuda: (~[\d.]+ h) on one NVIDIA H200", out).group(1)
    images = re.search(r"([\d,.]+ M) images through SGLD steps", out).group(1)
    pipeline = " ".join((ROOT / "docs/pipeline.md").read_text().split())
    assert f'is "{hours} on one NVIDIA H200' in pipeline
    performance = " ".join((ROOT / "docs/performance.md").read_text().split())
    assert f"`cost`: {images} images through SGLD steps" in performance
    assert f"`cost` prints {hours.strip('~')}" in performance


def test_a_file_that_sets_a_key_beside_the_one_that_replaces_it_is_refused(tmp_path):
    """``llc.epochs`` replaces ``llc.every`` and ``llc.first_epoch`` (``checkpoints.epochs``
    ``checkpoints.every``): one file setting both would lose one unsaid, so `check` and the
    Snakefile refuse it, naming the file; an overlay replacing its base's ``every`` is fine."""
    both = tmp_path / "both.yaml"
    both.write_text("llc:\n  every: 4\n  first_epoch: 6\n  epochs: [2, 4]\n")
    proc = subprocess.run([sys.executable, "-m", "critperiods", "check", str(both)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"critperiods: config error: llc.epochs: {both} sets it beside llc.every and "
        "llc.first_epoch, which it replaces (so they are ignored); keep one"), proc.stderr
    both.write_text("checkpoints:\n  every: 3\n  epochs: [0, 4, 8]\n")
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(both)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert dry.returncode != 0
    assert (f"checkpoints.epochs: {both} sets it beside checkpoints.every, which it replaces"
            in dry.stderr + dry.stdout), dry.stderr
    alone = tmp_path / "alone.yaml"
    alone.write_text("experiment: own\nllc:\n  epochs: [2, 4]\n")  # over config.yaml's every
    assert subprocess.run([sys.executable, "-m", "critperiods", "check", str(alone)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120).returncode == 0


def test_check_says_what_a_valid_grid_cannot_answer(tmp_path, capsys):
    """A grid the schema accepts can still be unable to answer: two switch epochs place no
    end, one seed gives no interval, two batch sizes fit no power law. `check` (which
    `make run` runs first) says each before the run, naming the key; the default grid gets
    none of these notes."""
    from critperiods.__main__ import main

    small = tmp_path / "small.yaml"
    small.write_text("experiment: small\ngrid:\n  batch_sizes: [64, 128]\n"
                     "  switch_epochs: [0, 8]\n  seeds: [0]\n  lr_schedules: [continue]\n"
                     "llc:\n  enabled: false\n")
    assert main(["check", str(small)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    for note in ("note: grid.switch_epochs has 2: the deficit is measured, but the critical "
                 "period's end (a hinge's kink) needs 3 switch epochs",
                 "note: grid.seeds has one seed: no interval on the deficit",
                 "note: grid.batch_sizes has 2: the end's power law in the batch size"):
        assert note in said, said
    (tmp_path / "one.yaml").write_text("experiment: one\ngrid:\n  switch_epochs: [0]\n"
                                       "llc:\n  enabled: false\n")
    assert main(["check", str(tmp_path / "one.yaml")]) == 0
    assert "note: grid.switch_epochs has 1: no deficit can be measured" in " ".join(
        capsys.readouterr().out.split())
    assert main(["check"]) == 0
    assert "note: grid." not in capsys.readouterr().out
