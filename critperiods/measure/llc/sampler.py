"""The sampler of λ̂: chains of localised, tempered SGLD, all advanced as one network.

Each chain starts at the checkpoint weights ``w*`` and runs

    w <- w - (eps/2) * [nbeta * grad L_B(w) + gamma * (w - w*)] + sqrt(eps) * N(0, I)

where ``L_B`` is the mean loss of a minibatch and ``nbeta`` the inverse temperature times ``n``
(``sampler="rmsprop_sgld"`` preconditions drift and noise as devinterp's RMSProp-SGLD).
:mod:`critperiods.measure.llc.estimate` turns the recorded losses into λ̂.

Why batched: all chains are advanced together by ONE forward and one backward per step over
a ``(chains, n_params)`` parameter matrix, so the Python overhead per step does not grow with
the number of chains and everything stays on the model's device.  The forward runs the chains
as one grouped network (``critperiods.train.grouped``: convolutions become one grouped
convolution, linear layers one batched matmul) when the model is built from standard layers,
and as ``torch.func.vmap`` of ``functional_call`` otherwise (e.g. toy potentials).  Each
chain draws its own minibatch indices and its own noise from its own generator
(``chain_seed``), so a run is bitwise reproducible for a fixed ``LLCConfig.seed`` on a given
machine (on CUDA with deterministic cuDNN kernels: :func:`cuda_numerics`), a chain does not
change when others are added, and on a CPU the chains can be split over worker processes
(``critperiods.measure.workers``) without changing the estimate.

Diagnostics hook (in the spirit of devinterp 1.x's sampler callbacks): ``estimate_llc(...,
callbacks=[f, ...])`` calls every ``f(draw)`` once per recorded draw of every block of chains,
burn-in included, with a :class:`Draw` (the draw's index, the chains, their minibatch losses
and their current weights). Callbacks only read; they run in this process, so with callbacks
the chains are sampled here rather than in worker processes (no bit changes; only the speed).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from critperiods.measure.workers import can_fork, one_thread, run_forked
from critperiods.train.copies import copies_forward, copies_layout, per_copy_losses, stack_like
from critperiods.train.cuda_graphs import run_chains_graphed

LossFn = Callable[[Tensor, Tensor], Tensor]

SAMPLERS = ("sgld", "rmsprop_sgld")
PRECISIONS = ("float32", "bfloat16")
SGLD_CUDA_GRAPHS = True  # on CUDA, replay each record of the chains from a CUDA graph


@dataclass(frozen=True)
class LLCConfig:
    """Hyper-parameters of the SGLD LLC estimator.

    ``burn_in`` and ``draws`` count RECORDED points; consecutive recorded points are
    ``loss_every`` SGLD steps apart, so a run takes ``(burn_in + draws) * loss_every`` steps
    and ``LLCResult.loss_trace`` always has ``burn_in + draws`` columns.  ``batch_size=None``
    or ``>= n`` gives full-batch (exact) gradients shared by all chains.

    ``precision="bfloat16"`` runs the forward and backward passes under bf16 autocast
    (convolutions and matmuls in bf16) while the chain state, the gradients, the noise, the
    update and every loss stay float32 (:func:`forward_precision`); the deep-linear oracles
    of ``tests/test_llc.py`` hold with it. ``"float32"`` is float32 throughout, with TF32
    off on CUDA (:func:`cuda_numerics`).

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
    precision: str = "float32"

    def __post_init__(self) -> None:
        """Reject settings that cannot produce an estimate, naming the field."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"LLCConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
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


@dataclass(frozen=True)
class Draw:
    """One recorded draw of a block of chains, as a diagnostics callback sees it.

    ``index``: the draw's number, burn-in included (``0 … burn_in + draws − 1``); ``burn_in``:
    whether it is a burn-in draw; ``chains``: the numbers of the block's chains in the
    estimate; ``loss``: their minibatch losses ``L_B`` at this draw, shape ``(len(chains),)``
    (NaN for a chain already frozen as diverged); ``weights``: their current weights, the
    trainable parameters flattened in ``model.named_parameters()`` order, shape
    ``(len(chains), n_params)``. Tensors are the sampler's own buffers on its device: read or
    copy them, never modify them.
    """

    index: int
    burn_in: bool
    chains: range
    loss: Tensor
    weights: Tensor


#: A diagnostics callback: called with every recorded :class:`Draw`.
DrawCallback = Callable[[Draw], None]


def _notifier(callbacks: Sequence[DrawCallback], chains: range, burn_in: int,
              weights: Tensor) -> Callable[[int, Tensor], None] | None:
    """``notify(index, loss)`` that hands a :class:`Draw` to every callback (None if none)."""
    if not callbacks:
        return None

    def notify(index: int, loss: Tensor) -> None:
        draw = Draw(index, index < burn_in, chains, loss, weights)
        for callback in callbacks:
            callback(draw)

    return notify


@contextlib.contextmanager
def cuda_numerics(device: torch.device, precision: str) -> Iterator[None]:
    """The CUDA backend settings λ̂ is computed under, restored afterwards (nothing on the
    CPU): deterministic cuDNN kernels without autotuning, so an estimate repeats bit for
    bit on a machine, and, for ``precision="float32"``, no TF32 in convolutions and matmuls
    (cuDNN uses TF32 by default, which would make "float32" a 10-bit-mantissa product)."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.deterministic, cudnn.benchmark = True, False
    if precision == "float32":
        cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def forward_precision(device: torch.device, precision: str) -> torch.autocast:
    """The context a forward pass of the sampler runs in: bf16 autocast for
    ``precision="bfloat16"`` (float32 weights in, float32 gradients out; no cast cache, so
    it can be captured in a CUDA graph), a disabled one for ``"float32"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16",
                          cache_enabled=False)


def _chain_losses_fn(
    model: nn.Module, loss_fn: LossFn, chains: int, precision: str = "float32"
) -> Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]:
    """Build ``f(params, x, y) -> (chains,)`` mean losses of ``model`` at stacked weights.

    ``params`` maps each parameter name to a ``(chains, *shape)`` tensor; ``x``/``y`` hold one
    minibatch per chain (``(chains, batch, ...)``).  The chains' forward passes run as one
    grouped network when the model is built from standard layers (``critperiods.train.grouped``),
    else through ``vmap``.  Buffers (e.g. BatchNorm running statistics) are the checkpoint's,
    shared, never updated. The forward runs in :func:`forward_precision`; the losses are
    float32 either way.
    """
    buffers = stack_like(dict(model.named_buffers()), chains)
    device = next(model.parameters()).device
    forward = copies_forward(model, copies_layout(device, "llc", model))

    def chain_losses(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        with forward_precision(device, precision):
            out = forward(params, buffers, x)
        return per_copy_losses(loss_fn, out.float(), y)

    return chain_losses


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

    def squared_distance(self, st: _Chains) -> Tensor:
        """Each chain's ``‖w − w*‖²``, shape ``(chains,)``, after a :meth:`step` (its
        scratch buffer is free then): how far the chains have spread from the checkpoint.
        In the directions the loss leaves flat only the localisation pulls them back, so
        its expectation there relaxes over ~``1 / (step_size · gamma)`` steps
        (docs/llc.md)."""
        return torch.sub(st.w, st.w0, out=self._buf).square_().sum(dim=1)

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
    steps behind each record (NaN if one was not finite), which chains stayed finite, and
    each chain's squared distance from the checkpoint, ``‖w − w*‖²``, after each record's
    steps (NaN where the loss is)."""

    loss: np.ndarray
    peak: np.ndarray
    healthy: np.ndarray
    distance: np.ndarray

    @staticmethod
    def join(blocks: list[_Trace]) -> _Trace:
        """The blocks' chains one after another."""
        return _Trace(*(np.concatenate([getattr(b, f.name) for b in blocks])
                        for f in fields(_Trace)))


def _run_chains(sampler: _Sampler, st: _Chains, report: Callable[[int], None],
                notify: Callable[[int, Tensor], None] | None = None) -> _Trace:
    """Run all steps and record every ``loss_every``-th loss (and the peak in between) and
    the chains' distance from ``w*``; ``notify(index, losses)`` (when given) after every
    record."""
    cfg = sampler.cfg
    n_rec = cfg.burn_in + cfg.draws
    trace = torch.empty(st.w.shape[0], n_rec, dtype=st.w.dtype, device=st.w.device)
    peak, distance = torch.empty_like(trace), torch.empty_like(trace)
    nan = torch.tensor(float("nan"), dtype=st.w.dtype, device=st.w.device)
    with torch.no_grad():
        for r in range(n_rec):
            loss = highest = sampler.step(st)
            for _ in range(cfg.loss_every - 1):
                loss = sampler.step(st)
                highest = torch.maximum(highest, loss)  # NaN wins
            trace[:, r] = loss if st.all_healthy else torch.where(st.healthy, loss, nan)
            peak[:, r] = highest
            distance[:, r] = sampler.squared_distance(st)
            if notify is not None:
                notify(r, trace[:, r])
            report(cfg.loss_every * st.w.shape[0])  # chain-steps
    return _trace(trace, peak, st.healthy, distance)


def _trace(loss: Tensor, peak: Tensor, healthy: Tensor, distance: Tensor) -> _Trace:
    """The recorded tensors as a :class:`_Trace` of NumPy arrays on the CPU; a distance is
    NaN where its chain's loss is (a frozen chain does not move)."""
    loss, peak, distance = (t.cpu().double().numpy() for t in (loss, peak, distance))
    return _Trace(loss, peak, healthy.cpu().numpy().astype(np.bool_),
                  np.where(np.isnan(loss), np.nan, distance))


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
    callbacks: tuple[DrawCallback, ...] = ()

    def __call__(self, report: Callable[[int], None]) -> _Trace:
        """Sample the block; ``report(k)`` is called after every ``k`` steps, the callbacks
        after every recorded draw."""
        st = _init_chains(self.model, len(self.chains), self.config.sampler)
        gens = [torch.Generator(device=st.w.device).manual_seed(chain_seed(self.config.seed, c))
                for c in self.chains]
        sampler = _Sampler(_chain_losses_fn(self.model, self.loss_fn, len(self.chains),
                                            self.config.precision),
                           self.data, self.config, self.nbeta, gens)
        notify = _notifier(self.callbacks, self.chains, self.config.burn_in, st.w)
        if st.w.device.type == "cuda" and SGLD_CUDA_GRAPHS:  # critperiods.train.cuda_graphs
            return _trace(*run_chains_graphed(sampler, st, report, notify))
        return _run_chains(sampler, st, report, notify)


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


__all__ = ["PRECISIONS", "SAMPLERS", "SGLD_CUDA_GRAPHS", "Draw", "DrawCallback", "LLCConfig",
           "LossFn", "chain_seed", "cuda_numerics", "forward_precision"]
