"""Copies vs twins: how far each perturbed copy drifts from its unperturbed twin.

:func:`compare_group` measures every copy of one perturbed run
(:func:`critperiods.train.perturbation.train_copies`) against its twin at every checkpoint
with the divergence stage's metrics (:class:`critperiods.measure.divergence.PairComparer`;
``l2_aligned`` after weight matching the twin to the copy; barriers at the given epochs), and
the change of sharp test accuracy at the end. :func:`growth_dataset` adds the early rate of
the step-resolved distance (the least-squares slope of ``ln ‖θ_copy − θ_twin‖`` per step over
the recorded steps) and growth-law fits over steps and over epochs
(:mod:`critperiods.measure.growth_laws`, with √t). The comparison stage
(:mod:`critperiods.pipeline.stages.perturbation_divergence`) reads the files and runs these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from critperiods.train.data import PreparedData

#: Growth laws fitted to a copy's distance from its twin (√t to tell diffusion from drift).
FORMS = ("linear", "exponential", "power", "sqrt")
#: Metrics whose growth over epochs is fitted.
GROWTH_METRICS = ("l2", "disagreement")


@torch.no_grad()
def _test_accuracy(model: nn.Module, state: dict, data: PreparedData) -> float:
    from critperiods.measure.evaluation import loss_and_accuracy

    model.load_state_dict(state)
    return loss_and_accuracy(model, data, data.test.sharp, data.test.labels)[1]


def compare_group(perturbed: dict, comparer: Any, data: PreparedData, barrier_epochs: set[int],
                  matching_iterations: int) -> xr.Dataset:
    """Every copy of one perturbed run (``{"twin", "copies"}``) vs its twin: a Dataset with
    dims ``(epsilon, replicate, epoch)`` (metrics), ``(epsilon, replicate, step)`` and
    ``(epsilon, replicate)``."""
    from critperiods.measure.divergence import Pair, aligned_l2, state_digest
    from critperiods.measure.weight_matching import apply_permutation, weight_matching

    twin = {int(c["epoch"]): c["model"] for c in perturbed["twin"]}
    copies = perturbed["copies"]
    runs = [{int(c["epoch"]): c["model"] for c in copy["checkpoints"]} for copy in copies]
    epochs = sorted(twin)
    epsilons = sorted({float(c["epsilon"]) for c in copies})
    replicates = sorted({int(c["replicate"]) for c in copies})
    at = [(epsilons.index(float(c["epsilon"])), replicates.index(int(c["replicate"])))
          for c in copies]
    shape = (len(epsilons), len(replicates))
    values = {v: np.full((*shape, len(epochs)), np.nan) for v in comparer.config.variables()}
    comparer.barrier_epochs = {("twin",): barrier_epochs}
    for k, epoch in enumerate(epochs):
        states = {("twin",): twin[epoch], **{("copy", i): r[epoch] for i, r in enumerate(runs)}}
        pairs = [Pair("perturbed", ("copy", i), ("twin",), at[i]) for i in range(len(runs))]
        for pair, got in zip(pairs, comparer.epoch(epoch, states, pairs), strict=True):
            if "l2_aligned" in values:
                a, b = states[pair.a], states[pair.b]
                if state_digest(a) == state_digest(b):
                    got["l2_aligned"] = 0.0
                else:
                    perms = weight_matching(comparer.spec, a, b, matching_iterations)
                    got["l2_aligned"] = aligned_l2(a, apply_permutation(comparer.spec, perms, b),
                                                   comparer.names)
            for v, x in got.items():
                if v in values:
                    values[v][(*pair.index, k)] = x
    steps = max(len(c["step_l2"]) for c in copies)
    step_l2 = np.full((*shape, steps), np.nan)
    change = np.full(shape, np.nan)
    end = epochs[-1]
    twin_acc = _test_accuracy(comparer.model, twin[end], data)
    for i, copy_run in enumerate(runs):
        step_l2[at[i]] = copies[i]["step_l2"].numpy()
        change[at[i]] = _test_accuracy(comparer.model, copy_run[end], data) - twin_acc
    dims = ("epsilon", "replicate")
    data_vars = {f"perturb_{v}": ((*dims, "epoch"), x) for v, x in values.items()}
    data_vars["perturb_step_l2"] = ((*dims, "step"), step_l2)
    data_vars["perturb_accuracy_change"] = (dims, change)
    data_vars["perturb_twin_accuracy"] = ((), twin_acc)  # judges a twin or copy at chance
    return xr.Dataset(data_vars, coords={
        "epsilon": np.asarray(epsilons, dtype=float), "replicate": np.asarray(replicates),
        "epoch": np.asarray(epochs, dtype=np.int64), "step": np.arange(steps)})


# ---------------------------------------------------------------------------------------------
# Growth: early rate and growth laws


def early_rate(steps: np.ndarray, distance: np.ndarray) -> float:
    """Least-squares slope of ``ln distance`` against ``steps`` over the points with a finite,
    positive distance (per optimizer step); NaN with fewer than 3 such points."""
    steps, distance = np.asarray(steps, dtype=float), np.asarray(distance, dtype=float)
    keep = np.isfinite(distance) & (distance > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(steps[keep], np.log(distance[keep]), 1)[0])


def _fits(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Form codes, rates and R² of ``y[..., time]`` against ``t`` (one fit per leading index).
    """
    from critperiods.measure.growth_laws import fit_growth_law

    lead = y.shape[:-1]
    flat = y.reshape(-1, y.shape[-1])
    fits = [fit_growth_law(t, row, FORMS) for row in flat]
    codes = np.array([f.code for f in fits], dtype=np.int8).reshape(lead)
    rates = np.array([f.rate for f in fits]).reshape(lead)
    r2s = np.array([f.r2 for f in fits]).reshape(lead)
    return codes, rates, r2s


def _growth_vars(prefix: str, what: str, unit_of_t: str, codes: np.ndarray, rates: np.ndarray,
                 r2s: np.ndarray, dims: Sequence[str]) -> dict[str, xr.Variable]:
    from critperiods.measure.growth_laws import ALL_FORMS, NO_FIT, RATE_MEANING

    meanings = "; ".join(f"{f}: {RATE_MEANING[f].replace('epoch', unit_of_t)}" for f in FORMS)
    return {
        f"{prefix}_form": xr.Variable(dims, codes, attrs={
            "long_name": f"growth law of {what} (lowest AIC among {', '.join(FORMS)})",
            "units": "1", "flag_values": np.arange(NO_FIT, len(ALL_FORMS), dtype=np.int8),
            "flag_meanings": " ".join(("none", *ALL_FORMS))}),
        f"{prefix}_rate": xr.Variable(dims, rates, attrs={
            "long_name": f"rate or exponent of the chosen growth law of {what}", "units": "1",
            "comment": meanings}),
        f"{prefix}_r2": xr.Variable(dims, r2s, attrs={
            "long_name": f"R^2 of the chosen growth law of {what}", "units": "1"}),
    }


def growth_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Early rates and growth-law fits of every copy of ``ds`` (dims of ``compare_groups``).

    ``perturb_early_rate``: slope of ``ln perturb_step_l2`` per step; ``perturb_step_growth_*``:
    growth laws of ``perturb_step_l2`` against steps; ``perturb_<metric>_growth_*`` (l2 and
    disagreement): against epochs since the perturbation.
    """
    dims = ("switch_epoch", "seed", "perturb_epoch", "epsilon", "replicate")
    out: dict[str, xr.Variable] = {}
    steps = ds["step"].values.astype(float)
    step_l2 = ds["perturb_step_l2"].transpose(*dims, "step").values
    rates = np.apply_along_axis(lambda d: early_rate(steps, d), -1, step_l2)
    out["perturb_early_rate"] = xr.Variable(dims, rates, attrs={
        "long_name": "early rate of separation: least-squares slope of ln(L2 distance to the "
                     "twin) per optimizer step over the recorded steps", "units": "1"})
    out.update(_growth_vars("perturb_step_growth", "the L2 distance to the twin over steps",
                            "step", *_fits(steps, step_l2), dims))
    epochs = ds["epoch"].values.astype(float)
    since = epochs[None, :] - ds["perturb_epoch"].values.astype(float)[:, None]  # [P, E]
    for metric in GROWTH_METRICS:
        name = f"perturb_{metric}"
        if name not in ds:
            continue
        values = ds[name].transpose(*dims, "epoch").values
        codes = np.full(values.shape[:-1], -1, dtype=np.int8)
        rates, r2s = np.full(codes.shape, np.nan), np.full(codes.shape, np.nan)
        for p in range(values.shape[2]):
            c, r, q = _fits(since[p], values[:, :, p])
            codes[:, :, p], rates[:, :, p], r2s[:, :, p] = c, r, q
        out.update(_growth_vars(f"{name}_growth", f"{metric} to the twin over epochs since the "
                                "perturbation", "epoch", codes, rates, r2s, dims))
    return xr.Dataset(out, coords={d: ds[d] for d in dims})


__all__ = ["FORMS", "compare_group", "early_rate", "growth_dataset"]
