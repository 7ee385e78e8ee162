"""Local learning coefficient (LLC) estimation by localised, tempered SGLD.

The estimator follows Lau et al. (2023) and the devinterp library.  The chains
(:mod:`critperiods.measure.llc.sampler`) start at the checkpoint weights ``w*``; the estimate
per chain is

    llc_hat = nbeta * (mean over post-burn-in draws of L_B(w_t) - L_n(w*)),

with ``L_n(w*)`` the checkpoint's loss on all ``n`` samples and ``nbeta`` the inverse
temperature times ``n`` (default ``n / ln n``).  Burn-in draws are discarded (devinterp 2.x
averages them in, which biases short runs towards the initial loss).  A chain whose loss
explodes is left out (:func:`divergence_threshold`).

Any ``nn.Module`` works, including a "toy potential" whose forward ignores the data.  For a
potential ``K(w)``: let ``forward(x)`` return ``K(w).expand(x.shape[0])``, pass
``loss_fn=lambda out, y: out.mean()`` and ``data=(torch.zeros(n, 1), torch.zeros(n))``; the
mean loss is then ``K(w)`` and ``n`` only enters through the default ``nbeta``
(see ``critperiods.measure.learning_coefficients`` for ready-made potentials).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from critperiods.measure.llc.sampler import (
    DrawCallback,
    LLCConfig,
    LossFn,
    _ChainBlock,
    _sample,
    _Trace,
    _worker_count,
    cuda_numerics,
    forward_precision,
)
from critperiods.train.memory_format import channels_last_images


class LLCDivergenceWarning(RuntimeWarning):
    """Raised (as a warning) when every SGLD chain of an LLC estimate diverged."""


@dataclass
class LLCResult:
    """Outcome of ``estimate_llc``.

    ``llc_mean``/``llc_std`` are over healthy chains only (std with ddof=0 as devinterp; NaN
    if every chain diverged).  ``llc_per_chain`` is NaN for diverged chains.  ``loss_trace``
    holds the recorded minibatch losses ``L_B(w_t)`` (burn-in included), NaN from the point a
    chain was flagged as diverged; ``distance_trace`` the chains' squared distance from the
    checkpoint, ``‖w_t − w*‖²``, at the same records (NaN where ``loss_trace`` is).
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    diverged: np.ndarray
    nbeta: float
    burn_in: int = 0
    label: str = ""
    distance_trace: np.ndarray | None = None

    def running_llc(self) -> np.ndarray:
        """Running mean of the per-chain estimate over post-burn-in draws, shape (chains, draws).

        Used for step-size calibration: a good step size gives curves that flatten out.
        """
        post = self.loss_trace[:, self.burn_in :]
        counts = np.arange(1, post.shape[1] + 1)
        return self.nbeta * (np.cumsum(post, axis=1) / counts - self.init_loss)


def default_nbeta(n: int) -> float:
    """Return the default inverse temperature ``n / ln n`` (Watanabe's WBIC choice)."""
    if n < 2:
        raise ValueError("need at least 2 samples for nbeta = n / ln n")
    return n / math.log(n)


def divergence_threshold(n_params: int, nbeta: float, batch_std: float, factor: float) -> float:
    """Excess loss ``L_B(w) - L_n(w*)`` above which a chain counts as diverged.

    Under the localised tempered posterior ``nbeta * (L(w) - L(w*))`` has mean
    ``lambda <= d/2`` (``d`` = number of parameters; for a regular quadratic it is
    ``chi^2_d / 2``), and a minibatch adds noise of standard deviation ``batch_std``.  A chain
    whose excess exceeds ``factor`` times (the largest possible mean ``d/2`` per ``nbeta`` plus
    one minibatch standard deviation) cannot be drawing from that posterior: its step size is
    too large and the chain is exploding.  Non-finite losses are always divergence.
    """
    return factor * (max(n_params, 1) / (2.0 * nbeta) + batch_std)


def _init_loss_tasks(
    model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], batch_size: int,
    precision: str = "float32",
) -> list[Callable[[], list[tuple[float, int]]]]:
    """Split ``L_n(w*)`` into tasks of whole ``batch_size`` minibatches, ~``INIT_LOSS_CHUNK``
    samples each (one per minibatch when these are larger); :func:`_init_loss` combines them.

    They run after the chains, in whichever worker finishes first (``run_forked``'s tail),
    so a core that is faster than another does them while the other still samples.  The
    loss at ``w*`` is only needed afterwards: the chains are cut at the divergence ceiling
    retroactively (:func:`_cut_at_ceiling`). The forward runs in the chains' precision, so
    that ``L_B - L_n(w*)`` compares like with like.
    """
    x, y = data
    chunk = batch_size * max(1, INIT_LOSS_CHUNK // batch_size)
    return [partial(_minibatch_losses, model, loss_fn, x[s : s + chunk], y[s : s + chunk],
                    batch_size, precision) for s in range(0, x.shape[0], chunk)]


@torch.no_grad()
def _minibatch_losses(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, batch_size: int,
    precision: str = "float32",
) -> list[tuple[float, int]]:
    """Mean loss and size of every ``batch_size`` slice of ``(x, y)`` at the model's weights.

    The model runs on up to ``INIT_LOSS_CHUNK`` samples at a time, also in full-batch mode
    (one forward per chunk is much cheaper than one per minibatch), with image chunks laid
    out channels-last (~3x faster for the default CNN than NCHW).
    """
    with forward_precision(x.device, precision):
        out = torch.cat([model(channels_last_images(x[s : s + INIT_LOSS_CHUNK]))
                         for s in range(0, x.shape[0], INIT_LOSS_CHUNK)]).float()
    return [(float(loss_fn(out[s : s + batch_size], y[s : s + batch_size])),
             min(batch_size, x.shape[0] - s)) for s in range(0, x.shape[0], batch_size)]


def _init_loss(tasks: list[list[tuple[float, int]]], batch_size: int) -> tuple[float, float]:
    """``L_n(w*)`` over all samples and the std of the means of full ``batch_size`` minibatches.

    That std estimates the minibatch noise of ``L_B`` at ``w*`` (0 when fewer than two full
    minibatches exist).  The sum runs in sample order, whoever computed which task.
    """
    total, n, means = 0.0, 0, []
    for value, size in (pair for task in tasks for pair in task):
        total += value * size
        n += size
        if size == batch_size:
            means.append(value)
    std = float(np.std(means, ddof=1)) if len(means) >= 2 else 0.0
    return total / n, std


INIT_LOSS_CHUNK = 1024  # samples per forward pass when computing L_n(w*)


def _cut_at_ceiling(trace: _Trace, ceiling: float) -> _Trace:
    """Flag every chain whose loss was not finite or above ``ceiling`` at some step, and
    blank its trace from that step's record on: what freezing the chain at that step would
    give, since chains never interact."""
    over = ~(trace.peak <= ceiling)  # NaN counts as over
    first = np.where(over.any(axis=1), over.argmax(axis=1), over.shape[1])
    cut = np.arange(over.shape[1])[None, :] >= first[:, None]
    return _Trace(np.where(cut, np.nan, trace.loss), trace.peak,
                  trace.healthy & (first == over.shape[1]), np.where(cut, np.nan, trace.distance))


def _summarise(
    trace: np.ndarray, diverged: np.ndarray, init_loss: float, nbeta: float, burn_in: int
) -> tuple[np.ndarray, float, float]:
    """Per-chain estimates (NaN if diverged) and their mean/std over healthy chains."""
    per_chain = nbeta * (trace[:, burn_in:].mean(axis=1) - init_loss)
    per_chain = np.where(diverged | ~np.isfinite(per_chain), np.nan, per_chain)
    good = per_chain[np.isfinite(per_chain)]
    if good.size == 0:
        return per_chain, float("nan"), float("nan")
    return per_chain, float(good.mean()), float(good.std())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (as the sampler runs it), each submodule put back in its own
    mode afterwards (a sub-module may be frozen in eval)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def _check_data(data: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Validate ``(inputs, targets)`` and move them to the model's device."""
    x, y = data
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs and targets differ in length: {x.shape[0]} vs {y.shape[0]}")
    return x.to(device), y.to(device)


def estimate_llc(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor],
    config: LLCConfig,
    *,
    label: str = "",
    progress: bool = True,
    workers: int | None = None,
    callbacks: Sequence[DrawCallback] = (),
) -> LLCResult:
    """Estimate the local learning coefficient of ``model`` at its current weights.

    Args:
        model: any module; its current parameters are the checkpoint ``w*`` and are left
            unchanged.  It is put in eval mode while sampling (and restored afterwards), so
            BatchNorm uses its running statistics as fixed buffers: train-mode BatchNorm would
            make the loss depend on the composition of each minibatch (the sampled posterior
            would not be that of a fixed function of ``w``) and would overwrite the running
            statistics stored in the checkpoint.  Dropout is likewise off.
        loss_fn: ``loss_fn(model_output, targets)`` returning the MEAN loss over the batch.
        data: ``(inputs, targets)`` with the same first dimension ``n``.
        config: sampler settings.
        label: name of the checkpoint, used in the warning when every chain diverges.
        progress: show a tqdm progress bar.
        workers: on a CPU, sample the chains in this many processes of one thread each
            (``critperiods.measure.workers``; Linux only); default: ``torch.get_num_threads()``,
            capped so that every process has at least two chains; with one process the
            chains run here, also at one thread.  Each chain has its own random stream
            (``chain_seed``) and the grouped network computes each chain on its own, so the
            estimate does not depend on ``workers`` nor on the thread count (bit for bit on
            the development CPU; to float round-off where a CPU's kernels sum a group of two
            chains differently from a group of six), only its speed does.  Ignored on other
            devices, and with ``callbacks`` (the chains then run in this process).
        callbacks: diagnostics hooks, each called with every recorded
            :class:`~critperiods.measure.llc.sampler.Draw` (burn-in included); they only read.

    Returns:
        ``LLCResult``; a diverged chain (non-finite loss, or excess loss above
        ``divergence_threshold``) is flagged in ``diverged``, its trace is NaN from the record
        of that step on, and it is left out of ``llc_mean``/``llc_std``.  (A chain with a
        non-finite loss is frozen at once; one above the threshold, which is known only once
        ``L_n(w*)`` has been computed at the end, samples on, alone: chains never interact.)
        If all chains diverge both are NaN and an ``LLCDivergenceWarning`` is issued.
        Never returns inf.
    """
    with eval_mode(model):
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("model has no trainable parameters")
        n_params, device = sum(p.numel() for p in trainable), trainable[0].device
        x, y = _check_data(data, device)
        n = x.shape[0]
        nbeta = float(config.nbeta) if config.nbeta is not None else default_nbeta(n)
        batch = config.batch_size or n
        block = _ChainBlock(model, loss_fn, (x, y), config, nbeta, range(config.chains),
                            tuple(callbacks))
        count = 1 if callbacks else _worker_count(workers, config.chains, device)
        tasks = _init_loss_tasks(model, loss_fn, (x, y), batch, config.precision)
        with cuda_numerics(device, config.precision):
            trace, init_tasks = _sample(block, tasks, count, progress)
    # batch_std is 0 when the sampler uses the full batch (no two full minibatches)
    init_loss, batch_std = _init_loss(init_tasks, batch)
    threshold = divergence_threshold(n_params, nbeta, batch_std, config.divergence_factor)
    trace = _cut_at_ceiling(trace, init_loss + threshold)
    return _finish(trace, init_loss, nbeta, config, label)


def _finish(
    recorded: _Trace,
    init_loss: float,
    nbeta: float,
    config: LLCConfig,
    label: str,
) -> LLCResult:
    """Summarise, and warn if every chain diverged."""
    trace, diverged = recorded.loss, ~recorded.healthy
    per_chain, mean, std = _summarise(trace, diverged, init_loss, nbeta, config.burn_in)
    diverged = diverged | np.isnan(per_chain)
    if not math.isfinite(init_loss):
        warnings.warn(
            f"LLC estimate for checkpoint {label!r}: the loss at the checkpoint itself, "
            f"L_n(w*), is {init_loss}; the checkpoint is broken (e.g. training diverged), "
            "so λ̂ is NaN.",
            LLCDivergenceWarning,
            stacklevel=3,
        )
    elif diverged.all():
        warnings.warn(
            f"LLC estimate for checkpoint {label!r}: all {config.chains} SGLD chains diverged "
            f"(step_size={config.step_size:g}); try a smaller step size.",
            LLCDivergenceWarning,
            stacklevel=3,
        )
    return LLCResult(
        llc_mean=mean,
        llc_std=std,
        llc_per_chain=per_chain,
        loss_trace=trace,
        init_loss=float(init_loss),
        diverged=diverged,
        nbeta=nbeta,
        burn_in=config.burn_in,
        label=label,
        distance_trace=recorded.distance,
    )


__all__ = ["INIT_LOSS_CHUNK", "LLCDivergenceWarning", "LLCResult", "default_nbeta",
           "divergence_threshold", "estimate_llc", "eval_mode"]
