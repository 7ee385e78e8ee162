"""Stacked copies of one network (a seed group's models, SGLD's chains): which layout a
device gets, and the forward that evaluates all copies at once.

Two layouts run ``C`` copies as one network: side by side in the channels
(:class:`~critperiods.train.grouped.GroupedModel`, right for a CPU) or folded into the batch
(:class:`~critperiods.train.folded.FoldedModel`, for GPUs, where cuDNN's grouped
convolutions are slow). :func:`copies_layout` picks one per device, use and model (measured:
``bench/bench_gpu.py``), and :func:`copies_forward` builds it, falling back to
``vmap(functional_call)`` for a model neither can run. A module of its own so that the two
layouts need not import each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from critperiods.train.folded import FoldedModel
from critperiods.train.grouped import CopiesForward, GroupedModel, NotGroupable, Tensors

#: The layout of copies on CUDA, where it measured faster on an H200 (bench/bench_gpu.py,
#: docs/performance.md): stacked seeds train fastest side by side in the channels for every
#: model measured (small_cnn w8 1.63× vs 1.20× at 5 seeds; All-CNN-C w96 0.81× vs 0.72× at
#: batch 128); λ̂ chains of a network with BatchNorm sample faster folded into the batch
#: (All-CNN-C w96: 24.6 vs 28.9 ms per step at 4 chains), small_cnn's in the channels.
CUDA_LAYOUT = {"train": "channels", "llc": "channels", "llc_batchnorm": "batch"}
#: Set (to "batch" or "channels") to force one layout on CUDA: for benchmarks only.
LAYOUT_OVERRIDE: str | None = None


def copies_layout(device: torch.device | str, use: str = "train",
                  model: nn.Module | None = None) -> str:
    """The layout of stacked copies of ``model``: ``channels`` (:class:`GroupedModel`) or
    ``batch`` (:class:`FoldedModel`). Off CUDA always channels; on CUDA :data:`CUDA_LAYOUT`
    for ``use`` ("train" or "llc"; λ̂ of a model with BatchNorm is "llc_batchnorm")."""
    if torch.device(device).type != "cuda":
        return "channels"
    if use == "llc" and model is not None and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        use = "llc_batchnorm"
    return LAYOUT_OVERRIDE or CUDA_LAYOUT[use]


def copies_forward(model: nn.Module, layout: str = "channels") -> CopiesForward:
    """``f(params, buffers, x)`` evaluating stacked copies of ``model``: a
    :class:`GroupedModel` (``layout="channels"``) or a :class:`FoldedModel`
    (``layout="batch"``, for GPUs) for the inputs and modes it supports, else
    ``vmap(functional_call)`` (the same values to float round-off)."""
    fallback = vmap(lambda p, b, xx: functional_call(model, (p, b), (xx,)))
    try:
        grouped = FoldedModel(model) if layout == "batch" else GroupedModel(model)
    except NotGroupable:
        return fallback

    def forward(params: Tensors, buffers: Tensors, x: Tensor) -> Tensor:
        graph = grouped._graph_for(params, buffers, x)  # one check per call
        if graph is None:
            return fallback(params, buffers, x)
        return grouped._execute(graph, params, buffers, x)

    return forward


def per_copy_losses(loss_fn: Callable[[Tensor, Tensor], Tensor], outputs: Tensor,
                    targets: Tensor) -> Tensor:
    """``(C,)`` losses, one ``loss_fn`` call per copy: any loss works (``vmap`` would
    restrict it), and for a few copies on a CPU this is cheaper than vmap's batching rules."""
    return torch.stack([loss_fn(o, t) for o, t in zip(outputs, targets, strict=True)])


def stack_like(tensors: Tensors, copies: int) -> Tensors:
    """Shared tensors (e.g. a checkpoint's buffers) as ``copies`` stacked views, no copy."""
    return {k: v.unsqueeze(0).expand(copies, *v.shape) for k, v in tensors.items()}


__all__ = ["CUDA_LAYOUT", "LAYOUT_OVERRIDE", "copies_forward", "copies_layout",
           "per_copy_losses", "stack_like"]
