"""The config a cube records and the digest its stage's params carry
(critperiods.pipeline.config_record)."""

from __future__ import annotations

import hashlib

import yaml

from critperiods.pipeline.config_record import cube_record, digest, toy_record


def config(perturbation: bool = False) -> dict:
    return {"experiment": "x", "dataset": {"name": "fashion_mnist", "root": "/data"},
            "grid": {"seeds": [0]}, "plots": {"dpi": 110}, "runtime": {"train": 5},
            "study": "cnn", "toy": {"llc": {}}, "laid_over": ["a.yaml"],
            "perturbation": {"enabled": perturbation, "epochs": [2]}}


def test_the_cube_records_what_can_change_a_result_and_nothing_else() -> None:
    recorded = yaml.safe_load(cube_record(config()))
    assert recorded == {"experiment": "x", "dataset": {"name": "fashion_mnist"},
                        "grid": {"seeds": [0]}}
    assert yaml.safe_load(cube_record(config(True)))["perturbation"] == {"enabled": True,
                                                                         "epochs": [2]}
    assert list(yaml.safe_load(toy_record(config()))) == ["experiment", "study", "toy"]


def test_the_digest_is_the_cubes_config_sha256() -> None:
    text = cube_record(config())
    assert digest(text) == hashlib.sha256(text.encode()).hexdigest()
    assert digest(text) != digest(cube_record(config(True)))
