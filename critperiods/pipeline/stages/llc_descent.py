"""Stage llc_descent (``llc.descent: true``): how much of each λ̂ estimate is the chains'
descent from a checkpoint that is not a minimum, at the checkpoints and with the settings
of the piece's ``llc`` job (:mod:`critperiods.measure.llc.descent`).

A rule of its own, beside ``llc``: switching it on reruns no λ̂. It costs ``burn_in +
draws`` full-batch gradients per checkpoint and seed, some ``n / (chains · batch_size)``
estimates' worth of arithmetic in fewer, larger passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr

from critperiods.measure.llc.descent import descent
from critperiods.pipeline.checkpoints import config_hash, load_checkpoints
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.layout import parse_piece
from critperiods.pipeline.llc_inputs import llc_config_from_params, llc_data
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stages import setup
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig, model_for


def llc_descent(output: str, pieces: list[str], train_data: str, *, training: dict,
                params: dict, epochs: list[int], code: str, stage: str = "llc_descent",
                device: Any = "cpu") -> None:
    """The descent at ``epochs`` of the piece for every seed of its group, as the ``llc``
    job of the piece estimates λ̂ there (its data, ``nβ``, step size, γ, steps and
    precision; ``params``: the ``llc`` section without the chains' number, minibatch and
    seed, which the drift does not use): a
    dataset with dims ``seed`` and ``epoch`` holding ``llc_descent`` (the noise-free path's
    ``nβ ΔL`` averaged over the draws: λ̂ minus it is λ̂ without the descent, to first
    order) and ``llc_descent_at_end`` (at the last draw)."""
    data = load_prepared(train_data, device=device)
    cfg, expected = TrainConfig.from_params(training), config_hash(training)
    wanted, model = set(epochs), model_for(cfg, data, device)
    data_for = llc_data(data, params)
    # the drift is one chain's, on the full batch and without noise: the sampler's chains,
    # minibatch and seed (not in the rule's params) play no part
    config = llc_config_from_params({"chains": 1, "batch_size": 1, "seed": 0, **params},
                                    device, cfg.model)
    seeds = parse_piece(pieces[0]).seeds
    parts = []
    for seed in seeds:
        found, at = [], []
        for c in load_checkpoints(pieces, expected, seed):
            if c["epoch"] not in wanted:
                continue
            model.load_state_dict(c["model"])
            found.append(descent(model, torch.nn.functional.cross_entropy,
                                 data_for(c["phase"]), config))
            at.append(int(c["epoch"]))
        parts.append(xr.Dataset(
            {"llc_descent": ("epoch", np.asarray([d.over_draws for d in found], dtype=float)),
             "llc_descent_at_end": ("epoch", np.asarray([d.at_end for d in found],
                                                        dtype=float))},
            coords={"epoch": np.asarray(at, dtype=np.int64)}))
    result = xr.concat([p.expand_dims(seed=[s]) for p, s in zip(parts, seeds, strict=True)],
                       dim="seed")
    result.attrs.update(piece_attrs(stage, code, data.fingerprints, pieces, device))
    write_netcdf(result, output)


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    llc_descent(sm.output[0], list(sm.input.pieces), sm.input.data,
                training=sm.params.training, params=sm.params.llc,
                epochs=list(sm.params.epochs), code=sm.params.code, stage=sm.rule,
                device=device)
