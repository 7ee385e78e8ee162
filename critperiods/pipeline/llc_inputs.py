"""What λ̂'s chains run on, for the llc and llc_descent stages and ``calibrate-llc``: the
sampler's settings from the config's ``llc:`` section, and the training images it sees at a
checkpoint.

Its own module, so that editing one λ̂ stage does not change the other's code fingerprint
(:mod:`critperiods.pipeline.fingerprint`): both stages import this, neither the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from critperiods.measure.llc.sampler import LLCConfig
from critperiods.train.data import fixed_subset
from critperiods.train.training import BF16_PAYS_ON_CUDA


def resolve_precision(precision: str, device: torch.device, model: str | None) -> str:
    """The config's ``llc.precision`` for a job: ``"auto"`` is bf16 on CUDA for the models
    whose training step measured faster in bf16 (``BF16_PAYS_ON_CUDA``; the SGLD step is the
    same forward and backward), float32 for the others and always on the CPU, where the
    estimates stay bit for bit as before."""
    if precision != "auto":
        return precision
    pays = device.type == "cuda" and BF16_PAYS_ON_CUDA.get(model or "", False)
    return "bfloat16" if pays else "float32"


def llc_config_from_params(params: dict, device: torch.device | str = "cpu",
                           model: str | None = None) -> LLCConfig:
    """The estimator's settings from the workflow's ``llc:`` config section, with
    ``precision: auto`` resolved for the job's device and model (:func:`resolve_precision`)."""
    keys = ("chains", "draws", "burn_in", "step_size", "gamma", "nbeta", "batch_size",
            "sampler", "seed")
    precision = resolve_precision(params.get("precision", "auto"), torch.device(device), model)
    return LLCConfig(**{k: params[k] for k in keys}, precision=precision)


def llc_data(data: Any, params: dict) -> Callable[[str], tuple[Tensor, Tensor]]:
    """``phase → (inputs, targets)``: the training images the sampler sees at a checkpoint.

    ``llc.data: phase`` (default) uses the data the checkpoint was last trained on
    (blurred for the trunk, sharp after the switch): λ̂ then measures the geometry of
    the loss SGD was actually descending. ``sharp``/``blurred`` fix one for all.
    ``llc.samples`` takes a fixed subset of the training set (n of ``n / ln n``).
    """
    idx = fixed_subset(len(data.train.labels), params.get("samples") or None, "llc")
    idx = idx.to(data.train.labels.device)
    choice = params.get("data", "phase")
    cache: dict[str, tuple[Tensor, Tensor]] = {}

    def for_phase(phase: str) -> tuple[Tensor, Tensor]:
        which = phase if choice == "phase" else choice
        if which not in cache:
            cache[which] = (data.normalize(data.train.images(which)[idx]), data.train.labels[idx])
        return cache[which]

    return for_phase


__all__ = ["llc_config_from_params", "llc_data", "resolve_precision"]
