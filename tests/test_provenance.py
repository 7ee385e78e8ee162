"""Every output records the code and data that made it; the provenance command reads it."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import pytest
import torch
import xarray as xr

from critperiods.__main__ import main
from critperiods.pipeline.fingerprint import Fingerprints
from critperiods.pipeline.plan import modules_chosen_by_config
from critperiods.pipeline.provenance import device_label, record
from critperiods.pipeline.provenance_report import report

ROOT = Path(__file__).resolve().parents[1]


def prov(devices: dict[str, str] | None = None, **codes: str) -> dict:
    """A cube's record: one trunk and one branch, evaluated and λ̂-estimated; ``devices``:
    ``{"<stage>_<piece>": device}`` where one is not ``cpu A``."""
    devices = devices or {}
    pieces = []
    for piece in ("bs64/seed0/trunk", "bs64/seed0/switch2"):
        for stage, suffix in (("evaluate", "metrics"), ("llc", "llc")):
            pieces.append(record(f"results/x/runs/{piece}.{suffix}.nc", {
                "provenance_stage": stage, "provenance_code": codes.get(f"{stage}_{piece}", stage),
                "provenance_data": "test:d2 train:d1" if stage == "evaluate" else "train:d1",
                "provenance_device": devices.get(f"{stage}_{piece}", "cpu A"),
                "provenance_training_code": codes.get(f"train_{piece}", "t1"),
                "provenance_training_device": devices.get(f"train_{piece}", "cpu A")}))
    return {"aggregate": {"code": "a1"}, "pieces": pieces}


def test_one_version_per_stage_is_consistent():
    lines, problems = report(prov())
    assert not problems
    text = "\n".join(lines)
    for row in ("train       t1", "evaluate    evaluate", "llc         llc", "train       d1",
                "test        d2"):
        assert row in text, row
    assert "2 pieces: bs64/seed0/switch2, bs64/seed0/trunk" in text


def test_the_devices_are_listed_and_a_mix_is_noted_but_not_an_error():
    lines, problems = report(prov())
    text = "\n".join(lines)
    assert "train       cpu A: 2 results from training pieces: bs64/seed0/switch2" in text
    assert "llc         cpu A: 2 pieces" in text
    assert "note:" not in text
    lines, problems = report(prov(devices={"train_bs64/seed0/trunk": "cuda H100",
                                           "llc_bs64/seed0/switch2": "cuda H100"}))
    text = "\n".join(lines)
    assert not problems  # another device is not another result, only other bits
    assert "train       cuda H100: 1 result from training pieces: bs64/seed0/trunk" in text
    assert "note: llc ran on 2 devices" in text and "note: train ran on 2 devices" in text
    assert "note: evaluate" not in text
    old = record("results/x/runs/bs64/seed0/trunk.llc.nc", {  # before devices were recorded
        "provenance_stage": "llc", "provenance_code": "c", "provenance_data": "train:d1",
        "provenance_training_code": "t1"})
    lines, _ = report({"aggregate": {"code": "a1"}, "pieces": [old]})
    text = "\n".join(lines)
    assert "llc         unknown: 1 piece" in text and "train       unknown: 1 result" in text


def test_pieces_of_different_code_versions_of_one_stage_are_flagged():
    _, problems = report(prov(**{"llc_bs64/seed0/switch2": "llc-new"}))
    assert problems == ["MIXED: llc results come from 2 code versions (llc: 1 piece; llc-new: "
                        "1 piece); rerun them with one version (snakemake --forcerun llc, with the "
                        "run's own --configfile and options)"]
    _, problems = report(prov(**{"train_bs64/seed0/trunk": "t2"}))
    assert len(problems) == 1 and problems[0].startswith("MIXED: train results come from 2")
    assert "--forcerun train_trunk train_branch train_reference" in problems[0]


def test_the_command_fails_in_one_line_on_a_missing_or_foreign_file(tmp_path, capsys):
    assert main(["provenance", str(tmp_path / "nope.nc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"critperiods: {tmp_path / 'nope.nc'}: no such file"
    assert main(["provenance", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"critperiods: {tmp_path}: a folder, not a cube file"
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(tmp_path / "plain.nc")
    assert main(["provenance", str(tmp_path / "plain.nc")]) == 2
    assert "no provenance attribute" in capsys.readouterr().err
    (tmp_path / "text.nc").write_text("not netCDF")
    assert main(["provenance", str(tmp_path / "text.nc")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


@pytest.mark.workflow
def test_outputs_record_the_fingerprints_of_the_code_and_data_that_made_them(
        tiny_run, tmp_path, capsys):
    results = tiny_run / "results/tiny"
    fp = Fingerprints(ROOT, by_name=modules_chosen_by_config({"model": {"name": "small_cnn"}}))
    data = {split: torch.load(results / f"data/{split}.pt", weights_only=True)["meta"]
            for split in ("train", "test")}
    assert data["train"]["code"] == fp.stage(ROOT / "scripts/prepare_data.py")
    fingerprints = {s: m["fingerprint"] for s, m in data.items()}
    branch = torch.load(results / "runs/bs64/seed1/continue/switch2.pt", weights_only=True)
    assert branch["provenance"] == {"code": fp.stage(ROOT / "scripts/train.py"),
                                    "data": {"train": fingerprints["train"]},
                                    "device": device_label("cpu")}
    with xr.open_dataset(results / "runs/bs64/seed0/trunk/e2.llc.nc") as llc:
        assert llc.attrs["provenance_code"] == fp.stage(ROOT / "scripts/llc.py")
        assert llc.attrs["provenance_data"] == f"train:{fingerprints['train']}"
        assert llc.attrs["provenance_training_code"] == branch["provenance"]["code"]
        assert llc.attrs["provenance_device"] == device_label("cpu")
        assert llc.attrs["provenance_training_device"] == device_label("cpu")
    with xr.open_dataset(results / "divergence/bs64_continue.nc") as div:
        assert div.attrs["provenance_data"] == (f"test:{fingerprints['test']} "
                                                f"train:{fingerprints['train']}")

    cube = results / "cube.nc"
    recorded = json.loads(xr.open_dataset(cube).attrs["provenance"])
    assert recorded["aggregate"]["code"] == fp.stage(ROOT / "scripts/aggregate.py")
    # 2 cells; λ̂ of 2 × (trunk segment e2, 3 branches, the never-blurred run's segment e4)
    stages = [r["stage"] for r in recorded["pieces"]]
    assert (stages.count("evaluate"), stages.count("llc"), stages.count("divergence")) == (
        2, 10, 2)
    assert main(["provenance", str(cube)]) == 0
    out = capsys.readouterr().out
    assert "consistent" in out and f"train       {device_label('cpu')}: " in out

    mixed = tmp_path / "cube.nc"  # one λ̂ result from other code
    mixed.write_bytes(cube.read_bytes())
    recorded["pieces"][[r["stage"] for r in recorded["pieces"]].index("llc")]["code"] = "0" * 12
    with netCDF4.Dataset(mixed, "a") as nc:
        nc.setncattr("provenance", json.dumps(recorded))
    assert main(["provenance", str(mixed)]) == 1
    assert "MIXED: llc results come from 2 code versions" in capsys.readouterr().out
