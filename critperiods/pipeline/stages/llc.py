"""Stage llc: λ̂ by SGLD, with its diagnostics, at the selected checkpoints of one piece of
a seed group (every seed of the group)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from critperiods.measure.llc.estimate import estimate_llc
from critperiods.measure.llc.sampler import LLCConfig
from critperiods.measure.llc.stability import STABILITY_SAMPLES, sharpness
from critperiods.pipeline.checkpoints import config_hash, load_checkpoints
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.layout import parse_piece
from critperiods.pipeline.llc_inputs import llc_config_from_params, llc_data
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stages import setup
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig, model_for


def llc_at_checkpoints(
    checkpoints: Sequence[dict], model: nn.Module, data_for: Callable[[str], tuple[Tensor, Tensor]],
    config: LLCConfig, label: str = "", progress: bool = True,
    stability_samples: int | None = STABILITY_SAMPLES,
) -> Any:
    """λ̂ at each checkpoint, with its diagnostics, as an ``xarray.Dataset`` with dims
    ``epoch``, ``chain``, ``draw``.

    ``data_for(phase)`` returns the ``(inputs, targets)`` the sampler sees for a checkpoint
    of that phase (``"blurred"`` or ``"sharp"``). Variables: ``llc_mean``, ``llc_std``,
    ``llc_chain`` (NaN for diverged chains), ``llc_diverged_chains`` (count),
    ``llc_init_loss``, ``llc_loss_trace`` (minibatch loss per draw, burn-in included), the
    convergence diagnostics ``llc_rhat``, ``llc_ess``, ``llc_trend_z``, ``llc_tail_khat`` and
    ``llc_distance_growth`` (:mod:`critperiods.measure.llc.quality`, which also turns the
    first three into the quality flag), ``llc_sharpness``, the top eigenvalue of the loss's
    Hessian at the checkpoint on ``stability_samples`` of the sampler's images, and
    ``llc_sharpness_sd``, the spread of the curvature along its eigenvector over the
    sampler's minibatches (:mod:`critperiods.measure.llc.stability`; both NaN for a
    preconditioned sampler, whose drift has no such limit), and the sampler's settings as
    0-d variables ``llc_nbeta``, ``llc_burn_in``, ``llc_step_size``, ``llc_gamma``,
    ``llc_bf16``, ``llc_stability_samples`` (0 for all).
    """
    from critperiods.measure.llc.quality import diagnose

    rows, curvature = [], []
    for c in checkpoints:
        model.load_state_dict(c["model"])
        sampled = data_for(c["phase"])
        rows.append(estimate_llc(model, torch.nn.functional.cross_entropy, sampled, config,
                                 label=f"{label} epoch {c['epoch']}", progress=progress))
        curvature.append((float("nan"),) * 2 if config.sampler != "sgld" else sharpness(
            model, torch.nn.functional.cross_entropy, sampled, samples=stability_samples,
            batch_size=config.batch_size, seed=config.seed))
    checks = [diagnose(r.loss_trace, r.burn_in, r.diverged, r.distance_trace) for r in rows]
    epochs = np.asarray([int(c["epoch"]) for c in checkpoints], dtype=np.int64)
    draws = config.burn_in + config.draws
    trace = np.stack([r.loss_trace for r in rows]) if rows else np.zeros((0, config.chains, draws))

    def per_epoch(values: list[float]) -> tuple[str, np.ndarray]:
        return "epoch", np.asarray(values, dtype=float)

    ds = xr.Dataset(
        {
            "llc_mean": per_epoch([r.llc_mean for r in rows]),
            "llc_std": per_epoch([r.llc_std for r in rows]),
            "llc_chain": (("epoch", "chain"),
                          np.asarray([r.llc_per_chain for r in rows], dtype=float).reshape(
                              len(rows), config.chains)),
            "llc_diverged_chains": per_epoch([int(np.sum(r.diverged)) for r in rows]),
            "llc_init_loss": per_epoch([r.init_loss for r in rows]),
            "llc_loss_trace": (("epoch", "chain", "draw"), trace.astype(np.float32)),
            "llc_rhat": per_epoch([d.rhat for d in checks]),
            "llc_ess": per_epoch([d.ess for d in checks]),
            "llc_trend_z": per_epoch([d.trend_z for d in checks]),
            "llc_distance_growth": per_epoch([d.distance_growth for d in checks]),
            "llc_tail_khat": per_epoch([d.tail_khat for d in checks]),
            "llc_sharpness": per_epoch([c[0] for c in curvature]),
            "llc_sharpness_sd": per_epoch([c[1] for c in curvature]),
            "llc_nbeta": ((), rows[0].nbeta if rows else float("nan")),
            "llc_burn_in": ((), config.burn_in),
            "llc_step_size": ((), config.step_size),
            "llc_gamma": ((), config.gamma),
            "llc_bf16": ((), np.int8(config.precision == "bfloat16")),
            "llc_stability_samples": ((), np.int64(stability_samples or 0)),
        },
        coords={"epoch": epochs, "chain": np.arange(config.chains), "draw": np.arange(draws)},
    )
    return ds


def llc(output: str, pieces: list[str], train_data: str, *, training: dict, params: dict,
        epochs: list[int], code: str, stage: str = "llc", device: Any = "cpu") -> None:
    """λ̂ at ``epochs`` of the piece (its files: trunk segments, or one branch file) for every
    seed of its group; the result has a ``seed`` dim (the sampler's settings stay 0-d)."""
    data = load_prepared(train_data, device=device)
    cfg, expected = TrainConfig.from_params(training), config_hash(training)
    wanted, model = set(epochs), model_for(cfg, data, device)
    data_for = llc_data(data, params)
    config = llc_config_from_params(params, device, cfg.model)
    stability_samples = params.get("stability_samples", STABILITY_SAMPLES)
    parts = []
    for seed in parse_piece(pieces[0]).seeds:
        checkpoints = [c for c in load_checkpoints(pieces, expected, seed) if c["epoch"] in wanted]
        parts.append(llc_at_checkpoints(checkpoints, model, data_for, config,
                                        label=f"{output} seed {seed}",
                                        stability_samples=stability_samples))
    settings = [v for v in parts[0].data_vars if not parts[0][v].dims]
    result = xr.concat([p.drop_vars(settings).expand_dims(seed=[s])
                        for p, s in zip(parts, parse_piece(pieces[0]).seeds, strict=True)],
                       dim="seed").merge(parts[0][settings])
    result.attrs.update(piece_attrs(stage, code, data.fingerprints, pieces, device))
    write_netcdf(result, output)


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    llc(sm.output[0], list(sm.input.pieces), sm.input.data, training=sm.params.training,
        params=sm.params.llc, epochs=list(sm.params.epochs), code=sm.params.code,
        stage=sm.rule, device=device)
