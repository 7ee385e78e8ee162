"""Stage prepare_data: read one split of the dataset once, cache sharp + blurred tensors.

The files are found through ``dataset.root`` in the config, deliberately not through the
params: the params hold what the data are (raw files' MD5 sums, subset, blur), so that
pointing ``dataset.root`` at another folder with the same files reruns nothing.

Files neither on disk nor downloadable end the job with one line naming ``dataset.name``,
the folder, the missing files, the reason and what to do (:func:`exit_on_unavailable`).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from critperiods.pipeline.stages import setup
from critperiods.train.data import DatasetUnavailable, prepare_split, save_prepared


def prepare_data(output: str, *, identity: dict, root: str, code: str) -> None:
    """Prepare the split ``identity`` names (name, split, subset, blur, raw MD5 sums) from
    the files under ``root`` and write it to ``output``."""
    prepared = prepare_split(identity["name"], root, identity["split"], identity["subset"],
                             identity["blur_size"], expected_raw=identity["raw"])
    prepared.meta["code"] = code
    save_prepared(prepared, output)


@contextlib.contextmanager
def exit_on_unavailable() -> Iterator[None]:
    """A :class:`DatasetUnavailable` raised inside ends the job with exit status 1 and its
    message on one line (``critperiods: <message>``), first and last in the job's log (stderr,
    which ``setup`` sends there); the traceback between, of the download's own error (the
    chained cause), is for whoever debugs. As ``exit_on_config_error`` does for the
    Snakefile."""
    try:
        yield
    except DatasetUnavailable as err:
        message = f"critperiods: {err}"
        print(message, file=sys.stderr)
        print("details, for debugging: the download's own error", file=sys.stderr)
        traceback.print_exception(err.__cause__ or err, file=sys.stderr)
        sys.exit(message)


def run(sm: Any) -> None:
    setup(sm)
    with exit_on_unavailable():
        prepare_data(sm.output[0], identity=sm.params.data, root=sm.config["dataset"]["root"],
                     code=sm.params.code)
