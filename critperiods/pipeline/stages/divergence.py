"""Stage divergence: every comparison between the runs of one batch size and schedule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from critperiods.measure.divergence import (
    DivergenceConfig,
    RunKey,
    State,
    bn_data_from,
    compare_runs,
    probe_from_data,
)
from critperiods.measure.growth_laws import growth_law_dataset
from critperiods.pipeline.checkpoints import checkpoint_map, config_hash, load_piece
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.layout import parse_piece
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stages import setup
from critperiods.train.data import load_prepared
from critperiods.train.training import ALWAYS_BLURRED, TrainConfig, model_for


def divergence_config(params: dict) -> DivergenceConfig:
    """The ``divergence:`` config section as a :class:`DivergenceConfig`."""
    epochs = params.get("barrier_epochs")
    return DivergenceConfig(
        probe_size=params["probe_size"], metrics=tuple(params["metrics"]),
        barrier_epochs=None if epochs is None else tuple(epochs),
        barrier_alphas=params["barrier_alphas"], matching_iterations=params["matching_iterations"],
        bn_reset_batches=params["bn_reset_batches"], batch_size=params["batch_size"],
    )


def runs_from_pieces(paths: Iterable[str], expected_hash: str) -> dict[RunKey, dict[int, State]]:
    """``{(switch_epoch, seed): {epoch: state}}`` from the trunk segments, branch files and
    the never-blurred run's segments of every seed group of one batch size and schedule.

    A run with switch epoch K takes the trunk's checkpoints at epochs ≤ K and its branch's
    afterwards; the trunk itself is the always-blurred reference ``(ALWAYS_BLURRED, seed)``.
    """
    trunks: dict[int, dict[int, State]] = {}
    branches: dict[RunKey, dict[int, State]] = {}
    for path in paths:
        piece = parse_piece(path)
        for member in load_piece(path, expected_hash)["members"]:
            seed = int(member["seed"])
            states = {e: c["model"] for e, c in checkpoint_map(member).items()}
            if piece.is_trunk:
                trunks.setdefault(seed, {}).update(states)
            else:  # a branch, or a segment of the never-blurred run's continuation
                branches.setdefault((piece.switch_epoch, seed), {}).update(states)
    runs: dict[RunKey, dict[int, State]] = {(ALWAYS_BLURRED, s): t for s, t in trunks.items()}
    for (switch, seed), states in branches.items():
        before = {e: w for e, w in trunks.get(seed, {}).items() if e <= switch}
        runs[(switch, seed)] = dict(sorted({**before, **states}.items()))
    return runs


def divergence(output: str, pieces: list[str], train_data: str, test_data: str, *,
               training: dict, params: dict, code: str, stage: str = "divergence",
               device: Any = "cpu", progress: bool = True) -> None:
    """Compare every run of the pieces with its references and the other seeds, fit the
    growth laws, and write the result."""
    data = load_prepared(train_data, test_data, device)
    cfg, config = TrainConfig.from_params(training), divergence_config(params)
    runs = runs_from_pieces(pieces, config_hash(training))
    needs_bn = "barrier" in config.metrics
    ds = compare_runs(runs, lambda: model_for(cfg, data, device), probe_from_data(data, config),
                      bn_data_from(data, config) if needs_bn else None, config, progress)
    if "l2" in config.metrics and "disagreement" in config.metrics:
        ds = ds.merge(growth_law_dataset(ds))
    ds.attrs.update(piece_attrs(stage, code, data.fingerprints, pieces, device))
    write_netcdf(ds, output)


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    divergence(sm.output[0], list(sm.input.pieces), sm.input.data, sm.input.test_data,
               training=sm.params.training, params=sm.params.divergence, code=sm.params.code,
               stage=sm.rule, device=device)
