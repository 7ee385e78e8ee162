"""How much of λ̂ is the chains' descent from a checkpoint that is not a minimum.

SGLD moves each chain by ``w ← w − (ε/2) [nβ ∇L(w) + γ (w − w*)] + √ε ξ``. Without the noise
``ξ`` this is a drift that only descends: from a checkpoint off its minimum (every
checkpoint of an SGD run is, early ones most) it lowers the loss, and λ̂, which averages
``nβ (L_B(w) − L_n(w*))`` over the draws, comes out lower. Where the loss is locally
quadratic the chains' mean follows the noise-free drift exactly, and the expected loss is
that path's plus a thermal part,

    nβ (E L(w_t) − L(w*)) = nβ (L(w̄_t) − L(w*)) + ½ nβ tr(H Cov_t),

so the drift path's ``nβ ΔL``, averaged over the draws (:attr:`Descent.over_draws`), is what
the descent takes off λ̂, to first order, and λ̂ minus it is λ̂ without the descent. Beyond
the quadratic neighbourhood that split is an approximation, and minibatch gradient noise,
which heats the chains (docs/llc.md), is not in it: the drift runs on the full batch.

:func:`descent` runs that path: ``(burn_in + draws) · loss_every`` full-batch gradients, as
many as an estimate's steps but over all ``n`` samples, so it costs some ``n / (chains ·
batch_size)`` estimates (about 80 at the default experiment's settings): a probe for a few
checkpoints (``python -m critperiods calibrate-llc … --descent``), or, with
``llc.descent: true``, the ``llc_descent`` rule at every λ̂ checkpoint
(:mod:`critperiods.pipeline.stages.llc_descent`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from critperiods.measure.llc.estimate import INIT_LOSS_CHUNK, default_nbeta
from critperiods.measure.llc.sampler import LLCConfig, LossFn, cuda_numerics, forward_precision
from critperiods.train.memory_format import channels_last_images


@dataclass(frozen=True)
class Descent:
    """The noise-free drift path of an SGLD estimate.

    ``excess[t]``: ``nβ (L_n(w̄_t) − L_n(w*))`` at the weights where the chains read the loss
    of draw ``t`` (burn-in included, ``0 … burn_in + draws − 1``); ``burn_in``: how many of
    them are burn-in; ``nbeta``: the ``nβ`` used.
    """

    excess: np.ndarray
    burn_in: int
    nbeta: float

    @property
    def over_draws(self) -> float:
        """The path's ``nβ ΔL`` averaged over the draws: what the descent adds to λ̂, to
        first order (≤ 0 while the drift only descends)."""
        return float(np.mean(self.excess[self.burn_in:]))

    @property
    def at_end(self) -> float:
        """The path's ``nβ ΔL`` at the last draw."""
        return float(self.excess[-1])


def _full_batch_loss(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor,
                     precision: str) -> float:
    """``L_n`` at the model's weights, its gradient accumulated into the parameters'
    ``.grad`` (chunks of ``INIT_LOSS_CHUNK`` samples, as the estimate's ``L_n(w*)``, each
    weighted by its share of ``n``)."""
    n, total = x.shape[0], 0.0
    for s in range(0, n, INIT_LOSS_CHUNK):
        xb, yb = x[s : s + INIT_LOSS_CHUNK], y[s : s + INIT_LOSS_CHUNK]
        with forward_precision(x.device, precision):
            out = model(channels_last_images(xb))
        loss = loss_fn(out.float(), yb) * (xb.shape[0] / n)
        loss.backward()
        total += float(loss.detach())
    return total


def descent(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor],
            config: LLCConfig, *, progress: bool = True) -> Descent:
    """The noise-free, full-batch drift of ``config``'s SGLD from ``model``'s weights
    ``w*``, for as many steps as one of its chains takes (``(burn_in + draws) ·
    loss_every``), reading ``L_n`` where a chain reads its loss.

    ``model`` is left unchanged (the path runs on a copy, in eval mode, as the sampler
    does); ``data`` and ``loss_fn`` (a mean loss) are the estimate's. ``ValueError`` for a
    preconditioned sampler (``rmsprop_sgld``: its drift depends on the noise it has seen)
    and for a loss at ``w*`` that is not finite.
    """
    if config.sampler != "sgld":
        raise ValueError(f"the descent is that of plain SGLD; sampler {config.sampler!r} "
                         "preconditions its drift by the gradients its noise led to")
    walker = copy.deepcopy(model).eval()
    params = [p for p in walker.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    x, y = data
    device = params[0].device
    x, y = x.to(device), y.to(device)
    nbeta = float(config.nbeta) if config.nbeta is not None else default_nbeta(x.shape[0])
    half_eps, record = 0.5 * config.step_size, config.loss_every
    steps = (config.burn_in + config.draws) * record
    losses = []
    with cuda_numerics(device, config.precision):  # the estimate's kernels and arithmetic
        for step in tqdm(range(steps), desc="descent", unit="step", disable=not progress):
            for p in params:
                p.grad = None
            loss = _full_batch_loss(walker, loss_fn, x, y, config.precision)
            if step == 0 and not np.isfinite(loss):
                raise ValueError(f"the loss at the checkpoint is {loss}: no descent to follow")
            if step % record == 0:
                losses.append(loss)
            with torch.no_grad():
                for p, p0 in zip(params, start, strict=True):
                    drift = p.grad.mul(nbeta).add_(torch.sub(p, p0).mul_(config.gamma))
                    p.sub_(drift.mul_(half_eps))
    excess = nbeta * (np.asarray(losses) - losses[0])
    return Descent(excess=excess, burn_in=config.burn_in, nbeta=nbeta)


def descent_line(found: Descent, llc: float | None, config: LLCConfig) -> str:
    """What ``calibrate-llc --descent`` prints: the path's ``nβ ΔL`` over the draws and at
    the end and, given the λ̂ of an estimate at ``config``'s settings, λ̂ without it."""
    steps = (config.burn_in + config.draws) * config.loss_every
    line = (f"descent: the noise-free, full-batch drift from the checkpoint (step size "
            f"{config.step_size:g}, γ {config.gamma:g}, nβ {found.nbeta:.4g}, {steps} steps) "
            f"changes nβ L_n by {found.over_draws:+.4g} averaged over the draws "
            f"({found.at_end:+.4g} at the last)")
    if llc is None or not np.isfinite(llc):
        return line + ": λ̂ at this step size comes out that much lower, to first order"
    return (line + f": without it λ̂ at this step size would be about "
            f"{llc - found.over_draws:.4g} rather than {llc:.4g} (to first order; minibatch "
            "noise is not in it, docs/llc.md)")


__all__ = ["Descent", "descent", "descent_line"]
