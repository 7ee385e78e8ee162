"""Stage prepare_data: read one split of the dataset once, cache sharp + blurred tensors.

The files are found through ``dataset.root`` in the config, deliberately not through the
params: the params hold what the data are (raw files' MD5 sums, subset, blur), so that
pointing ``dataset.root`` at another folder with the same files reruns nothing.
"""

from __future__ import annotations

from typing import Any

from critperiods.pipeline.stages import setup
from critperiods.train.data import prepare_split, save_prepared


def prepare_data(output: str, *, identity: dict, root: str, code: str) -> None:
    """Prepare the split ``identity`` names (name, split, subset, blur, raw MD5 sums) from
    the files under ``root`` and write it to ``output``."""
    prepared = prepare_split(identity["name"], root, identity["split"], identity["subset"],
                             identity["blur_size"], expected_raw=identity["raw"])
    prepared.meta["code"] = code
    save_prepared(prepared, output)


def run(sm: Any) -> None:
    setup(sm)
    prepare_data(sm.output[0], identity=sm.params.data, root=sm.config["dataset"]["root"],
                 code=sm.params.code)
