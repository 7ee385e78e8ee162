"""Local learning coefficient (LLC) estimation by localised, tempered SGLD.

The estimator follows Lau et al. (2023) and the devinterp library.  Each chain starts at the
checkpoint weights ``w*`` and runs

    w <- w - (eps/2) * [nbeta * grad L_B(w) + gamma * (w - w*)] + sqrt(eps) * N(0, I)

where ``L_B`` is the mean loss of a minibatch and ``nbeta`` the inverse temperature times ``n``
(default ``n / ln n``).  The estimate per chain is

    llc_hat = nbeta * (mean over post-burn-in draws of L_B(w_t) - L_n(w*)),

with ``L_n(w*)`` the checkpoint's loss on all ``n`` samples.  Burn-in draws are discarded
(devinterp 2.x averages them in, which biases short runs towards the initial loss).

Why batched: all chains are advanced together by ONE forward and one backward per step over
a ``(chains, n_params)`` parameter matrix, so the Python overhead per step does not grow with
the number of chains and everything stays on the model's device.  The forward runs the chains
as one grouped network (``critperiods.train.grouped``: convolutions become one grouped
convolution, linear layers one batched matmul) when the model is built from standard layers,
and as ``torch.func.vmap`` of ``functional_call`` otherwise (e.g. toy potentials).  Each
chain draws its own minibatch indices and its own noise from its own generator
(``chain_seed``), so a run is bitwise reproducible for a fixed ``LLCConfig.seed`` on a given
machine, a chain does not change when others are added, and on a CPU the chains can be split
over worker processes (``critperiods.measure.workers``) without changing the estimate.

Any ``nn.Module`` works, including a "toy potential" whose forward ignores the data.  For a
potential ``K(w)``: let ``forward(x)`` return ``K(w).expand(x.shape[0])``, pass
``loss_fn=lambda out, y: out.mean()`` and ``data=(torch.zeros(n, 1), torch.zeros(n))``; the
mean loss is then ``K(w)`` and ``n`` only enters through the default ``nbeta``
(see ``critperiods.measure.learning_coefficients`` for ready-made potentials).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from critperiods.measure.workers import can_fork, one_thread, run_forked
from critperiods.train.cuda_graphs import run_chains_graphed
from critperiods.train.folded import copies_layout
from critperiods.train.grouped import copies_forward, per_copy_losses, stack_like
from critperiods.train.models import channels_last_images

LossFn = Callable[[Tensor, Tensor], Tensor]

SAMPLERS = ("sgld", "rmsprop_sgld")
SGLD_CUDA_GRAPHS = True  # on CUDA, replay each record of the chains from a CUDA graph


class LLCDivergenceWarning(RuntimeWarning):
    """Raised (as a warning) when every SGLD chain of an LLC estimate diverged."""


@dataclass(frozen=True)
class LLCConfig:
    """Hyper-parameters of the SGLD LLC estimator.

    ``burn_in`` and ``draws`` count RECORDED points; consecutive recorded points are
    ``loss_every`` SGLD steps apart, so a run takes ``(burn_in + draws) * loss_every`` steps
    and ``LLCResult.loss_trace`` always has ``burn_in + draws`` columns.  ``batch_size=None``
    or ``>= n`` gives full-batch (exact) gradients shared by all chains.

    ``divergence_factor`` sets the explosion threshold (see ``divergence_threshold``).
    ``rmsprop_alpha``/``rmsprop_eps`` are the RMSProp moving-average coefficient and
    stabiliser of ``sampler="rmsprop_sgld"`` (devinterp defaults 0.99 and 0.1).

    The defaults of the fields the config's ``llc:`` section sets are the schema's
    (workflow/schemas/config.schema.yaml; a test checks that they agree).
    """

    chains: int = 4
    draws: int = 200
    burn_in: int = 100
    step_size: float = 1e-4
    gamma: float = 100.0
    nbeta: float | None = None
    batch_size: int | None = 256
    sampler: str = "sgld"
    seed: int = 0
    loss_every: int = 1
    divergence_factor: float = 100.0
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 0.1

    def __post_init__(self) -> None:
        """Reject settings that cannot produce an estimate, naming the field."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        counts = {"chains": 1, "draws": 1, "burn_in": 0, "loss_every": 1, "seed": 0}
        if self.batch_size is not None:
            counts["batch_size"] = 1
        for name, least in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"LLCConfig.{name} must be an integer >= {least}, got {value!r}")
        positive = {"step_size": self.step_size, "divergence_factor": self.divergence_factor,
                    "rmsprop_eps": self.rmsprop_eps}
        if self.nbeta is not None:
            positive["nbeta"] = self.nbeta
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"LLCConfig.{name} must be finite and > 0, got {value!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"LLCConfig.gamma must be finite and >= 0, got {self.gamma!r}")
        if not 0 <= self.rmsprop_alpha < 1:
            raise ValueError(
                f"LLCConfig.rmsprop_alpha must be in [0, 1), got {self.rmsprop_alpha!r}")


@dataclass
class LLCResult:
    """Outcome of ``estimate_llc``.

    ``llc_mean``/``llc_std`` are over healthy chains only (std with ddof=0 as devinterp; NaN
    if every chain diverged).  ``llc_per_chain`` is NaN for diverged chains.  ``loss_trace``
    holds the recorded minibatch losses ``L_B(w_t)`` (burn-in included), NaN from the point a
    chain was flagged as diverged.
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


def _chain_losses_fn(
    model: nn.Module, loss_fn: LossFn, chains: int
) -> Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]:
    """Build ``f(params, x, y) -> (chains,)`` mean losses of ``model`` at stacked weights.

    ``params`` maps each parameter name to a ``(chains, *shape)`` tensor; ``x``/``y`` hold one
    minibatch per chain (``(chains, batch, ...)``).  The chains' forward passes run as one
    grouped network when the model is built from standard layers (``critperiods.train.grouped``),
    else through ``vmap``.  Buffers (e.g. BatchNorm running statistics) are the checkpoint's,
    shared, never updated.
    """
    buffers = stack_like(dict(model.named_buffers()), chains)
    forward = copies_forward(model, copies_layout(next(model.parameters()).device, "llc", model))

    def chain_losses(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return per_copy_losses(loss_fn, forward(params, buffers, x), y)

    return chain_losses


def _init_loss_tasks(
    model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], batch_size: int
) -> list[Callable[[], list[tuple[float, int]]]]:
    """Split ``L_n(w*)`` into tasks of whole ``batch_size`` minibatches, ~``INIT_LOSS_CHUNK``
    samples each (one per minibatch when these are larger); :func:`_init_loss` combines them.

    They run after the chains, in whichever worker finishes first (``run_forked``'s tail),
    so a core that is faster than another does them while the other still samples.  The
    loss at ``w*`` is only needed afterwards: the chains are cut at the divergence ceiling
    retroactively (:func:`_cut_at_ceiling`).
    """
    x, y = data
    chunk = batch_size * max(1, INIT_LOSS_CHUNK // batch_size)
    return [partial(_minibatch_losses, model, loss_fn, x[s : s + chunk], y[s : s + chunk],
                    batch_size) for s in range(0, x.shape[0], chunk)]


@torch.no_grad()
def _minibatch_losses(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, batch_size: int
) -> list[tuple[float, int]]:
    """Mean loss and size of every ``batch_size`` slice of ``(x, y)`` at the model's weights.

    The model runs on up to ``INIT_LOSS_CHUNK`` samples at a time, also in full-batch mode
    (one forward per chunk is much cheaper than one per minibatch), with image chunks laid
    out channels-last (~3x faster for the default CNN than NCHW).
    """
    out = torch.cat([model(channels_last_images(x[s : s + INIT_LOSS_CHUNK]))
                     for s in range(0, x.shape[0], INIT_LOSS_CHUNK)])
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


def chain_seed(seed: int, chain: int) -> int:
    """A 63-bit seed for chain ``chain`` of an estimate with ``LLCConfig.seed = seed``.

    Every chain draws its minibatches and noise from its own generator, so a chain's
    trajectory depends only on ``(seed, chain)``: not on how many chains run beside it, nor
    on how they are split between worker processes.
    """
    digest = hashlib.sha256(f"critperiods-llc:{seed}:{chain}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class _Chains:
    """State of a block of chains.

    ``w`` holds one row of weights per chain.  ``params`` are views of ``w`` shaped like the
    model's parameters with a leading chain dimension: leaf tensors that require grad, so the
    forward reads the current weights without copying them out of ``w``, and the gradient of
    each lands, through ``grad_views``, in the matching columns of ``grad``.  ``v`` holds the
    RMSProp second moments; ``healthy`` is False for chains flagged as diverged, and
    ``all_healthy`` says so without looking at the tensor (kept on CPU only, where the check is
    free; None on other devices).
    """

    w: Tensor
    w0: Tensor
    v: Tensor | None
    healthy: Tensor
    params: dict[str, Tensor]
    grad: Tensor
    grad_views: list[Tensor]
    all_healthy: bool | None


def _init_chains(model: nn.Module, chains: int, sampler: str) -> _Chains:
    """Start ``chains`` chains at the checkpoint weights (the model's trainable parameters)."""
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]  # checked non-empty
    w0 = torch.cat([p.detach().reshape(-1) for _, p in named]).unsqueeze(0)
    w, grad = w0.repeat(chains, 1), torch.empty(chains, w0.shape[1], dtype=w0.dtype,
                                                  device=w0.device)
    params, grad_views, start = {}, [], 0
    for name, p in named:
        cols = slice(start, start + p.numel())
        params[name] = w[:, cols].view(chains, *p.shape).detach().requires_grad_()
        grad_views.append(grad[:, cols].view(chains, *p.shape))
        start = cols.stop
    return _Chains(
        w=w, w0=w0,
        v=torch.zeros_like(w) if sampler == "rmsprop_sgld" else None,
        healthy=torch.ones(chains, dtype=torch.bool, device=w.device),
        params=params, grad=grad, grad_views=grad_views,
        all_healthy=True if w.device.type == "cpu" else None,
    )


class _Sampler:
    """One SGLD / RMSProp-SGLD transition for a block of chains at once."""

    def __init__(
        self,
        chain_losses: Callable[[dict[str, Tensor], Tensor, Tensor], Tensor],
        data: tuple[Tensor, Tensor],
        config: LLCConfig,
        nbeta: float,
        generators: list[torch.Generator],
    ) -> None:
        """Prepare the batched loss function, the chains' generators and buffers."""
        self.x, self.y = data
        self.n = self.x.shape[0]
        self.cfg = config
        self.nbeta = nbeta
        self.gens = generators
        self.full_batch = config.batch_size is None or config.batch_size >= self.n
        self.chain_losses = chain_losses
        self.half_eps = 0.5 * config.step_size
        self.sqrt_eps = math.sqrt(config.step_size)
        batch = 0 if self.full_batch else int(config.batch_size)  # type: ignore[arg-type]
        self._idx = torch.empty(len(generators), batch, dtype=torch.long, device=self.x.device)
        self._noise: Tensor | None = None
        self._buf: Tensor | None = None

    def batch(self) -> tuple[Tensor, Tensor]:
        """Draw an independent minibatch (with replacement) for every chain."""
        chains = len(self.gens)
        if self.full_batch:
            return self.x.expand(chains, *self.x.shape), self.y.expand(chains, *self.y.shape)
        for row, gen in zip(self._idx, self.gens, strict=True):
            torch.randint(self.n, row.shape, generator=gen, out=row)
        idx, shape = self._idx.view(-1), tuple(self._idx.shape)
        xb = self.x.index_select(0, idx).view(shape + self.x.shape[1:])
        return xb, self.y.index_select(0, idx).view(shape + self.y.shape[1:])

    def step(self, st: _Chains) -> Tensor:
        """Advance all healthy chains one step; return the losses L_B at the old weights.

        A chain whose loss is not finite is flagged and frozen (the divergence ceiling is
        applied afterwards, :func:`_cut_at_ceiling`).  The update
        ``w - (eps/2) [nbeta g + gamma (w - w0)] + sqrt(eps) xi`` is done with the same
        elementary operations in the same order as the textbook expression (so the rounding
        is identical), in place in preallocated buffers; while every chain is healthy (the
        usual case, known on CPU where the check is free) the masked update is skipped.
        """
        xb, yb = self.batch()
        loss = self.grad_and_loss(st, xb, yb)
        self._check_health(st, loss)
        if self._noise is None:
            self._noise = torch.empty_like(st.w)
            self._buf = torch.empty_like(st.w)
        noise, buf = self._noise, self._buf
        for row, gen in zip(noise, self.gens, strict=True):
            row.normal_(generator=gen)
        grad = st.grad
        precond = self._rmsprop(st.v, grad) if st.v is not None else None  # raw gradient
        drift = grad.mul_(self.nbeta).add_(torch.sub(st.w, st.w0, out=buf).mul_(self.cfg.gamma))
        if precond is not None:
            drift = drift.mul_(precond)
            noise.mul_(precond.sqrt_())
        step = drift.mul_(self.half_eps)
        noise.mul_(self.sqrt_eps)
        if st.all_healthy:
            st.w.sub_(step).add_(noise)
        else:  # frozen chains keep their weights; ``w`` is updated in place (``params`` view it)
            new_w = torch.sub(st.w, step, out=buf).add_(noise)
            st.w.copy_(torch.where(st.healthy.unsqueeze(1), new_w, st.w))
        return loss

    @staticmethod
    def _check_health(st: _Chains, loss: Tensor) -> None:
        """Flag chains whose loss is not finite.

        On the CPU the few losses are read once as Python floats (cheaper than three tensor
        operations per step) and ``all_healthy`` kept up to date; elsewhere the flags are
        updated on the device, without a sync.
        """
        if st.all_healthy is None:
            st.healthy &= torch.isfinite(loss)
            return
        ok = [math.isfinite(v) for v in loss.tolist()]
        if not all(ok):
            st.healthy &= torch.tensor(ok, device=st.healthy.device)
            st.all_healthy = False

    def grad_and_loss(self, st: _Chains, xb: Tensor, yb: Tensor) -> Tensor:
        """Per-chain losses; their gradients are written to ``st.grad``.

        A batched FORWARD plus one ordinary backward of the summed losses is ~30% cheaper
        than ``vmap(grad)`` and exact: chains never interact, so d(sum_c L_c)/dw_c = dL_c/dw_c.
        """
        leaves = list(st.params.values())
        with torch.enable_grad():
            loss = self.chain_losses(st.params, xb, yb)
            # a parameter the loss does not use (e.g. an unused head) has gradient zero
            grads = torch.autograd.grad(loss.sum(), leaves, materialize_grads=True)
        torch._foreach_copy_(st.grad_views, grads)  # one call for every parameter
        return loss.detach()

    def _rmsprop(self, v: Tensor, grad: Tensor) -> Tensor:
        """Update ``v`` in place (EMA of squared minibatch-mean-loss gradients) and return
        ``G = 1 / (sqrt(v) + eps)``, as devinterp's ``RMSpropPreconditioner``."""
        alpha = self.cfg.rmsprop_alpha
        v.mul_(alpha).addcmul_(grad, grad, value=1.0 - alpha)
        return 1.0 / (v.sqrt() + self.cfg.rmsprop_eps)


@dataclass
class _Trace:
    """What a block of chains returns: the recorded losses ``(chains, burn_in + draws)``
    (NaN from the record at which a chain's loss was not finite), the highest loss of the
    steps behind each record (NaN if one was not finite), and which chains stayed finite."""

    loss: np.ndarray
    peak: np.ndarray
    healthy: np.ndarray

    @staticmethod
    def join(blocks: list[_Trace]) -> _Trace:
        """The blocks' chains one after another."""
        return _Trace(*(np.concatenate([getattr(b, f.name) for b in blocks])
                        for f in fields(_Trace)))


def _run_chains(sampler: _Sampler, st: _Chains, report: Callable[[int], None]) -> _Trace:
    """Run all steps and record every ``loss_every``-th loss (and the peak in between)."""
    cfg = sampler.cfg
    n_rec = cfg.burn_in + cfg.draws
    trace = torch.empty(st.w.shape[0], n_rec, dtype=st.w.dtype, device=st.w.device)
    peak = torch.empty_like(trace)
    nan = torch.tensor(float("nan"), dtype=st.w.dtype, device=st.w.device)
    with torch.no_grad():
        for r in range(n_rec):
            loss = highest = sampler.step(st)
            for _ in range(cfg.loss_every - 1):
                loss = sampler.step(st)
                highest = torch.maximum(highest, loss)  # NaN wins
            trace[:, r] = loss if st.all_healthy else torch.where(st.healthy, loss, nan)
            peak[:, r] = highest
            report(cfg.loss_every * st.w.shape[0])  # chain-steps
    return _Trace(*(t.cpu().double().numpy() for t in (trace, peak)), st.healthy.cpu().numpy())


def _cut_at_ceiling(trace: _Trace, ceiling: float) -> _Trace:
    """Flag every chain whose loss was not finite or above ``ceiling`` at some step, and
    blank its trace from that step's record on: what freezing the chain at that step would
    give, since chains never interact."""
    over = ~(trace.peak <= ceiling)  # NaN counts as over
    first = np.where(over.any(axis=1), over.argmax(axis=1), over.shape[1])
    cut = np.arange(over.shape[1])[None, :] >= first[:, None]
    return _Trace(np.where(cut, np.nan, trace.loss), trace.peak,
                  trace.healthy & (first == over.shape[1]))


@dataclass(frozen=True)
class _ChainBlock:
    """Chains ``chains`` of one estimate, sampled as one grouped network: everything a
    worker process needs (it inherits it by forking, nothing is pickled)."""

    model: nn.Module
    loss_fn: LossFn
    data: tuple[Tensor, Tensor]
    config: LLCConfig
    nbeta: float
    chains: range

    def __call__(self, report: Callable[[int], None]) -> _Trace:
        """Sample the block; ``report(k)`` is called after every ``k`` steps."""
        st = _init_chains(self.model, len(self.chains), self.config.sampler)
        gens = [torch.Generator(device=st.w.device).manual_seed(chain_seed(self.config.seed, c))
                for c in self.chains]
        sampler = _Sampler(_chain_losses_fn(self.model, self.loss_fn, len(self.chains)),
                           self.data, self.config, self.nbeta, gens)
        if st.w.device.type == "cuda" and SGLD_CUDA_GRAPHS:  # critperiods.train.cuda_graphs
            return _Trace(*run_chains_graphed(sampler, st, report))
        return _run_chains(sampler, st, report)


def _worker_count(workers: int | None, chains: int, device: torch.device) -> int:
    """How many processes sample the chains: ``workers`` (default: torch's intra-op thread
    count), but blocks of at least two chains (a lone chain runs a different, ungrouped
    kernel, so its bits would depend on the split), and 1 off the CPU or where processes
    cannot be forked."""
    if device.type != "cpu" or not can_fork():
        return 1
    wanted = torch.get_num_threads() if workers is None else workers
    return max(1, min(wanted, chains // 2))


def _sample(block: _ChainBlock, tail: list[Callable[[], Any]], workers: int, progress: bool
            ) -> tuple[_Trace, list[Any]]:
    """Sample every chain, in this process or split into ``workers`` contiguous blocks (the
    progress bar counts chain-steps), then run the ``tail`` tasks (in the workers that
    finish first).  Every block runs at one CPU thread, here as in a worker, so the split
    never changes a bit."""
    cfg = block.config
    total = cfg.chains * (cfg.burn_in + cfg.draws) * cfg.loss_every
    if workers == 1:
        with one_thread(), tqdm(total=total, disable=not progress, desc="SGLD",
                                leave=False) as bar:
            return block(bar.update), [task() for task in tail]
    parts = [replace(block, chains=range(int(p[0]), int(p[-1]) + 1))
             for p in np.array_split(np.arange(cfg.chains), workers)]
    results = run_forked(parts, total, "SGLD", progress, tail=tail)
    return _Trace.join(results[:workers]), results[workers:]


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
            devices.

    Returns:
        ``LLCResult``; a diverged chain (non-finite loss, or excess loss above
        ``divergence_threshold``) is flagged in ``diverged``, its trace is NaN from the record
        of that step on, and it is left out of ``llc_mean``/``llc_std``.  (A chain with a
        non-finite loss is frozen at once; one above the threshold, which is known only once
        ``L_n(w*)`` has been computed at the end, samples on, alone: chains never interact.)
        If all chains diverge both are NaN and an ``LLCDivergenceWarning`` is issued.
        Never returns inf.
    """
    modes = {m: m.training for m in model.modules()}  # a sub-module may be frozen in eval
    model.eval()
    try:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("model has no trainable parameters")
        n_params, device = sum(p.numel() for p in trainable), trainable[0].device
        x, y = _check_data(data, device)
        n = x.shape[0]
        nbeta = float(config.nbeta) if config.nbeta is not None else default_nbeta(n)
        batch = config.batch_size or n
        block = _ChainBlock(model, loss_fn, (x, y), config, nbeta, range(config.chains))
        trace, init_tasks = _sample(block, _init_loss_tasks(model, loss_fn, (x, y), batch),
                                    _worker_count(workers, config.chains, device), progress)
    finally:
        for module, training in modes.items():
            module.training = training
    # batch_std is 0 when the sampler uses the full batch (no two full minibatches)
    init_loss, batch_std = _init_loss(init_tasks, batch)
    threshold = divergence_threshold(n_params, nbeta, batch_std, config.divergence_factor)
    trace = _cut_at_ceiling(trace, init_loss + threshold)
    return _finish(trace.loss, trace.healthy, init_loss, nbeta, config, label)


def _finish(
    trace: np.ndarray,
    healthy: np.ndarray,
    init_loss: float,
    nbeta: float,
    config: LLCConfig,
    label: str,
) -> LLCResult:
    """Summarise, and warn if every chain diverged."""
    diverged = ~healthy
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
    )


def calibrate(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor],
    config: LLCConfig,
    step_sizes: Sequence[float],
    nbetas: Sequence[float] | None = None,
    *,
    label: str = "",
    progress: bool = False,
) -> Any:
    """Sweep step sizes (and optionally nbetas) and collect running LLC traces.

    Returns an ``xarray.Dataset`` with dims ``(nbeta, step_size, chain, draw)`` holding
    ``llc_running`` (running mean of the per-chain estimate over post-burn-in draws),
    ``loss_trace``, ``llc_mean``, ``llc_std`` and ``diverged``.  Pick the largest step size
    whose curves flatten without diverging; ``plot_calibration`` draws them.
    """
    import xarray as xr

    if nbetas is None:
        n = data[0].shape[0]
        nbetas = [float(config.nbeta) if config.nbeta is not None else default_nbeta(n)]
    results = [
        [
            estimate_llc(
                model,
                loss_fn,
                data,
                replace(config, step_size=eps, nbeta=nb),
                label=label,
                progress=progress,
            )
            for eps in step_sizes
        ]
        for nb in nbetas
    ]
    return _calibration_dataset(xr, results, list(step_sizes), list(nbetas))


def _calibration_dataset(
    xr: Any, results: list[list[LLCResult]], step_sizes: list[float], nbetas: list[float]
) -> Any:
    """Pack a grid of ``LLCResult`` into an ``xarray.Dataset``."""

    def stack(fn: Callable[[LLCResult], Any]) -> np.ndarray:
        return np.array([[fn(r) for r in row] for row in results])

    dims = ("nbeta", "step_size")
    return xr.Dataset(
        {
            "llc_running": (dims + ("chain", "draw"), stack(LLCResult.running_llc)),
            "loss_trace": (dims + ("chain", "step"), stack(lambda r: r.loss_trace)),
            "llc_mean": (dims, stack(lambda r: r.llc_mean)),
            "llc_std": (dims, stack(lambda r: r.llc_std)),
            "diverged": (dims + ("chain",), stack(lambda r: r.diverged)),
        },
        coords={"nbeta": nbetas, "step_size": step_sizes},
    )


def plot_calibration(result: Any, path: str | Path) -> Path:
    """Plot the calibration sweep: running LLC (mean over chains) per step size, one panel
    per nbeta; saves a PNG at ``path`` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nbetas = result["nbeta"].values
    fig, axes = plt.subplots(1, len(nbetas), figsize=(5 * len(nbetas), 3.5), squeeze=False)
    for ax, nb in zip(axes[0], nbetas, strict=True):
        _plot_panel(ax, result.sel(nbeta=nb), float(nb))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_panel(ax: Any, sub: Any, nbeta: float) -> None:
    """Draw running-LLC curves (mean ± std over chains) for each step size."""
    for eps in sub["step_size"].values:
        run = sub["llc_running"].sel(step_size=eps).values
        mean, std = np.nanmean(run, axis=0), np.nanstd(run, axis=0)
        draws = np.arange(1, mean.size + 1)
        ax.plot(draws, mean, label=f"eps={eps:g}")
        ax.fill_between(draws, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("draw")
    ax.set_ylabel("running LLC estimate")
    ax.set_title(f"nbeta={nbeta:.3g}")
    ax.legend(fontsize="small")

