"""Stage evaluate: losses and accuracies of every checkpoint of one seed group's runs."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from critperiods.measure.evaluation import evaluate_piece
from critperiods.pipeline.checkpoints import config_hash, load_checkpoints
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.layout import parse_piece
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stages import setup
from critperiods.results.assemble import assemble_runs
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig, model_for


def evaluate(output: str, pieces: list[str], train_data: str, test_data: str, *,
             training: dict, evaluate: dict, grid: dict, code: str, stage: str = "evaluate",
             device: Any = "cpu") -> None:
    """Evaluate every checkpoint of the pieces (trunk segments and branch files of one seed
    group) for every seed, and write them laid out as runs (dims ``batch_size, lr_schedule,
    switch_epoch, seed, epoch``) of ``grid`` (its ``switch_epochs`` and ``lr_schedules``)."""
    data = load_prepared(train_data, test_data, device)
    cfg, expected = TrainConfig.from_params(training), config_hash(training)
    model = model_for(cfg, data, device)
    files = defaultdict(list)
    for f in pieces:
        files[parse_piece(f)].append(f)
    results = {
        piece.key(seed): evaluate_piece(load_checkpoints(paths, expected, seed), model, data,
                                        evaluate["train_samples"], evaluate["batch_size"])
        for piece, paths in files.items() for seed in piece.seeds}
    runs = assemble_runs(results, grid["lr_schedules"], grid["switch_epochs"])
    runs.attrs.update(piece_attrs(stage, code, data.fingerprints, pieces, device))
    write_netcdf(runs, output)


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    evaluate(sm.output[0], list(sm.input.pieces), sm.input.data, sm.input.test_data,
             training=sm.params.training, evaluate=sm.params.evaluate, grid=sm.params.grid,
             code=sm.params.code, stage=sm.rule, device=device)
