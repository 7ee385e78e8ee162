"""CUDA graphs: a whole SGD step, and a whole SGLD record, replayed as one launch.

At the batch sizes of the experiments a GPU waits for Python: an All-CNN-C step at batch
128 is a few hundred small kernels, and launching them one by one costs more than running
them. Capturing the step once as a CUDA graph and replaying it removes that cost.

**Training** (:class:`GraphedSGD`, used by ``Trainer`` and ``StackedTrainer`` when
``FastPath.cuda_graphs``). One step reads everything from tensors whose addresses never
change, so one graph serves every full batch of every epoch:

* the epoch's plan (order, crop offsets, flips; one per stacked seed) is copied into static
  buffers at the start of the epoch; the step gathers its batch at ``pos * batch_size`` and
  advances ``pos`` on the device;
* the learning rate is a 0-d tensor filled once per epoch (no recapture when it decays);
* the SGD update (weight decay, momentum, ``p -= lr * buf``) is done here with ``_foreach``
  ops on the optimizer's own momentum buffers, so ``optimizer.state_dict()`` keeps
  ``torch.optim.SGD``'s format and old pieces load; ``torch.optim.SGD.step`` itself reads the
  learning rate as a Python number, which a graph would freeze;
* BatchNorm running statistics are module buffers updated in place, so they are static too;
* one graph per phase (blurred / sharp input); the short last batch of an epoch and the
  very first step of a run (which creates the momentum buffers) run the same step eagerly.

Which steps replay a graph depends only on the position in training, so a run resumed
anywhere takes the same kernels in the same order as one never interrupted: with
``train.deterministic`` (deterministic kernels, no ``cudnn.benchmark``) a branch resumed
from a trunk equals a run from scratch bit for bit. Loading a state copies INTO the
captured tensors (``load_state_dict`` copies parameters and buffers in place; the momentum
buffers are adopted by :meth:`GraphedSGD.adopt_optimizer_state` before every epoch).
Capture warms up and then restores every tensor it touched, so capturing never changes a
result. Every step, eager or replayed, runs on one side stream of its own (:func:`own_stream`):
autograd ties a parameter's gradient accumulator to the stream it was created on, and one
created on the default stream would make the capture depend on it (which CUDA refuses).

On the CPU (tests, ``bench/bench_gpu.py --smoke``) the same static-buffer step runs eagerly.

**λ̂** (:func:`run_chains_graphed`): one recorded point of the SGLD chains (``loss_every``
steps: minibatch draw, forward, backward, health check, noise, update, trace write) as one
graph; the chains' own generators are registered with the graph, so replays draw the same
random stream as eager steps would.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

WARMUP_STEPS = 3  # eager steps before a capture (then undone)
# Capture checks only this thread's CUDA calls (as torch.compile's CUDA graph trees do): a
# DataLoader's pin-memory thread elsewhere in the process must not invalidate a capture.
CAPTURE_MODE = "thread_local"
EAGER_RECORDS = 2  # SGLD records run eagerly before the capture (real steps, warm-up too)

BatchLosses = Callable[[list[Any], slice, str], Tensor]


class GraphedSGD:
    """The SGD steps of a trainer, on static buffers, replayed from CUDA graphs.

    ``optimizer`` is a ``torch.optim.SGD`` over ``params`` (one param group, no dampening
    or Nesterov); ``buffers`` are the tensors the forward pass updates in place (BatchNorm
    statistics). It holds no reference to the trainer (which holds it), so a trainer and its
    graphs are freed as soon as the trainer is dropped, never by a garbage collection that
    could run during another capture.
    """

    def __init__(self, optimizer: torch.optim.SGD, batch_size: int, params: Sequence[Tensor],
                 buffers: Sequence[Tensor], device: torch.device) -> None:
        group, *others = optimizer.param_groups
        if others or group["dampening"] or group["nesterov"] or group["maximize"]:
            raise ValueError("GraphedSGD takes plain SGD with momentum and weight decay")
        self.optimizer = optimizer
        self.params, self.buffers = list(params), list(buffers)
        self.device, self.capture = device, device.type == "cuda"
        self.batch_size = batch_size
        self._batch_losses: BatchLosses | None = None  # set during an epoch only
        self.momentum, self.weight_decay = group["momentum"], group["weight_decay"]
        self.momentum_buffers = [torch.zeros_like(p) for p in self.params] if self.momentum else []
        self.has_momentum = False  # whether the optimizer's state holds momentum buffers yet
        self.lr = torch.zeros((), device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # batch index in the epoch
        self.total = torch.zeros((), device=device)  # sum of loss × batch size this epoch
        self.steps = torch.arange(self.batch_size, device=device)
        self.plans: list[Any] = []  # static copies of the epoch's plans
        self.graphs: dict[str, torch.cuda.CUDAGraph | None] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None
        self.stream = torch.cuda.Stream(device) if self.capture else None
        self._addresses = self._current_addresses()

    # -- state --------------------------------------------------------------------------
    def adopt_optimizer_state(self) -> None:
        """Make the optimizer's momentum buffers the captured ones, copying in whatever a
        ``load_state_dict`` put there (a state without buffers: the next step creates them)."""
        state = self.optimizer.state
        found = [state[p].get("momentum_buffer") if p in state else None for p in self.params]
        self.has_momentum = bool(self.momentum) and all(b is not None for b in found)
        if not self.has_momentum:
            for p in self.params:
                state.pop(p, None)
            return
        with torch.no_grad():
            for p, mine, loaded in zip(self.params, self.momentum_buffers, found, strict=True):
                if loaded is not mine:
                    mine.copy_(loaded)
                    state[p]["momentum_buffer"] = mine

    def _started(self) -> bool:
        """Whether the momentum buffers exist (before the first step they do not)."""
        return self.has_momentum or not self.momentum

    def _current_addresses(self) -> list[int]:
        return [t.data_ptr() for t in (*self.params, *self.buffers)]

    def _mutable(self) -> list[Tensor]:
        """Every tensor a step writes (what a capture's warm-up must restore)."""
        return [*self.params, *self.buffers, *self.momentum_buffers, self.pos, self.total]

    # -- one epoch ----------------------------------------------------------------------
    def train_epoch(self, trainer: Any, lr: float, plans: Sequence[Any], epoch_phase: str,
                    batch_losses: BatchLosses, should_stop: Callable[[], bool]
                    ) -> float | None:
        """``sgd_epoch``'s contract: train the rest of epoch ``trainer.epoch`` at ``lr``
        (``trainer`` has ``epoch``, ``step`` and ``batch_in_epoch``); the sum of loss × batch
        size, or None if ``should_stop`` fired before the end. ``batch_losses(plans, part,
        epoch_phase)`` is the loss of every stacked seed (or the one loss) on batch ``part``
        of ``plans``; it must not synchronise with the host."""
        self._batch_losses = batch_losses
        try:
            with own_stream(self.stream):
                return self._train_epoch(trainer, lr, plans, epoch_phase, should_stop)
        finally:
            self._batch_losses = None

    def _train_epoch(self, trainer: Any, lr: float, plans: Sequence[Any], epoch_phase: str,
                     should_stop: Callable[[], bool]) -> float | None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # what the state records, as sgd_epoch does
        if self._current_addresses() != self._addresses:  # tensors replaced: capture anew
            self.graphs.clear()
            self._addresses = self._current_addresses()
        self.adopt_optimizer_state()
        self._load_plans(plans)
        self.lr.fill_(lr)
        self.total.zero_()
        self.pos.fill_(trainer.batch_in_epoch)
        batches = plans[0].batches(self.batch_size)
        for part in batches[trainer.batch_in_epoch:]:
            size = part.stop - part.start
            graph = (self._graph(epoch_phase)
                     if size == self.batch_size and self.capture and self._started() else None)
            if graph is not None:
                graph.replay()
            else:
                self._step(size, epoch_phase)
            trainer.step += 1
            trainer.batch_in_epoch += 1
            if should_stop() and trainer.batch_in_epoch < len(batches):
                return None
        trainer.epoch += 1
        trainer.batch_in_epoch = 0
        return float(self.total)

    def _load_plans(self, plans: Sequence[Any]) -> None:
        """Copy the epoch's plans into the static plan buffers (allocated on first use)."""
        if len(self.plans) != len(plans):
            self.plans = [replace(p, **{k: None if v is None else torch.empty_like(v)
                                        for k, v in vars(p).items()}) for p in plans]
        for static, plan in zip(self.plans, plans, strict=True):
            for key, value in vars(plan).items():
                if value is not None:
                    getattr(static, key).copy_(value)

    # -- the step -----------------------------------------------------------------------
    def _step(self, size: int, epoch_phase: str) -> None:
        """One SGD step on batch ``pos`` of the static plans (``size`` samples)."""
        index = self.pos * self.batch_size + self.steps[:size]
        batch = [replace(p, **{k: None if v is None else v[index] for k, v in vars(p).items()})
                 for p in self.plans]
        losses = self._batch_losses(batch, slice(0, size), epoch_phase)  # type: ignore[misc]
        grads = torch.autograd.grad(losses.sum(), self.params)
        with torch.no_grad():
            self._update(list(grads))
            self.total.add_(losses.detach().sum() * size)
            self.pos.add_(1)

    def _update(self, grads: list[Tensor]) -> None:
        """``torch.optim.SGD``'s update with the learning rate read from ``self.lr``."""
        d_p = (torch._foreach_add(grads, self.params, alpha=self.weight_decay)
               if self.weight_decay else grads)
        if self.momentum:
            if self.has_momentum:
                torch._foreach_mul_(self.momentum_buffers, self.momentum)
                torch._foreach_add_(self.momentum_buffers, d_p)
            else:  # the first step: buf = d_p, as torch.optim.SGD starts it
                torch._foreach_copy_(self.momentum_buffers, d_p)
                for p, buf in zip(self.params, self.momentum_buffers, strict=True):
                    self.optimizer.state[p]["momentum_buffer"] = buf
                self.has_momentum = True
            d_p = self.momentum_buffers
        torch._foreach_sub_(self.params, torch._foreach_mul(d_p, self.lr))

    def _graph(self, epoch_phase: str) -> torch.cuda.CUDAGraph | None:
        """The full-batch step of ``epoch_phase`` as a graph, captured on first use; None
        (the step runs eagerly, with a warning) where the capture fails."""
        if epoch_phase not in self.graphs:
            saved = [t.clone() for t in self._mutable()]
            start = self.pos.clone()
            graph: torch.cuda.CUDAGraph | None = torch.cuda.CUDAGraph()
            try:
                for _ in range(WARMUP_STEPS):  # cuDNN/cuBLAS set-up, benchmark runs
                    self.pos.copy_(start)  # the same batch: never past the epoch's last
                    self._step(self.batch_size, epoch_phase)
                self.pos.copy_(start)
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream,
                                      capture_error_mode=CAPTURE_MODE):
                    self._step(self.batch_size, epoch_phase)
            except RuntimeError as err:  # torch.AcceleratorError included
                warnings.warn(f"CUDA graph capture of the {epoch_phase} step failed ({err}); "
                              "this job takes eager steps", stacklevel=4)
                graph = None
                self.pool = torch.cuda.graph_pool_handle()  # the failed one still "captures"
                _after_failed_capture(self.stream)
            with torch.no_grad():  # the warm-up steps never happened
                for tensor, value in zip(self._mutable(), saved, strict=True):
                    tensor.copy_(value)
            self.graphs[epoch_phase] = graph
        return self.graphs[epoch_phase]


# --------------------------------------------------------------------------- SGLD chains


def run_chains_graphed(sampler: Any, st: Any, report: Callable[[int], None],
                       notify: Callable[[int, Tensor], None] | None = None) -> tuple:
    """``critperiods.measure.llc.sampler._run_chains`` with each record replayed from one CUDA
    graph.

    The first ``EAGER_RECORDS`` records run eagerly (real steps that also warm up cuDNN and
    the allocator), the rest replay a graph of one record; which records are eager depends
    only on the config, so a run is as reproducible as the eager sampler. ``notify(index,
    losses)`` (when given) runs after every record, outside the graph. Returns the
    ``(loss, peak, healthy, distance)`` tensors of ``_Trace``. Falls back to eager records
    where this torch cannot register a generator with a graph.
    """
    cfg = sampler.cfg
    n_rec, chains = cfg.burn_in + cfg.draws, st.w.shape[0]
    trace = torch.full((chains, n_rec), float("nan"), dtype=st.w.dtype, device=st.w.device)
    peak, distance = torch.full_like(trace, float("nan")), torch.full_like(trace, float("nan"))
    nan = torch.tensor(float("nan"), dtype=st.w.dtype, device=st.w.device)
    record_at = torch.zeros(1, dtype=torch.long, device=st.w.device)

    def record() -> None:
        loss = highest = sampler.step(st)
        for _ in range(cfg.loss_every - 1):
            loss = sampler.step(st)
            highest = torch.maximum(highest, loss)  # NaN wins
        trace.index_copy_(1, record_at, torch.where(st.healthy, loss, nan).unsqueeze(1))
        peak.index_copy_(1, record_at, highest.unsqueeze(1))
        distance.index_copy_(1, record_at, sampler.squared_distance(st).unsqueeze(1))
        record_at.add_(1)

    stream = torch.cuda.Stream(st.w.device)
    with torch.no_grad(), own_stream(stream):
        eager = min(EAGER_RECORDS, n_rec)
        for r in range(eager):
            record()
            if notify is not None:
                notify(r, trace[:, r])
            report(cfg.loss_every * chains)
        graph = _capture_record(record, sampler, stream) if n_rec > eager else None
        for r in range(eager, n_rec):
            if graph is None:
                record()
            else:
                graph.replay()
            if notify is not None:
                notify(r, trace[:, r])
            report(cfg.loss_every * chains)
    return trace, peak, st.healthy, distance


def _capture_record(record: Callable[[], None], sampler: Any,
                    stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph | None:
    """One record as a graph with the chains' generators (``sampler.gens``) registered, or
    None where this torch has no graph-safe custom generators or the capture fails. After a
    failure the sampler draws from fresh generators in the states the capture began with:
    the eager records go on as if no capture had been tried (torch ≤ 2.11 leaves a failed
    capture's generators in capture mode, where the next eager draw raises "Offset increment
    outside graph capture"; pytorch#171263)."""
    graph = torch.cuda.CUDAGraph()
    register = getattr(graph, "register_generator_state", None)
    if register is None:
        return None
    states = [(gen.device, gen.get_state()) for gen in sampler.gens]
    for gen in sampler.gens:
        register(gen)
    try:
        with torch.cuda.graph(graph, stream=stream, capture_error_mode=CAPTURE_MODE):
            record()
    except RuntimeError as err:  # the eager records go on
        warnings.warn(f"CUDA graph capture of an SGLD record failed ({err}); sampling "
                      "eagerly", stacklevel=3)
        del graph
        sampler.gens = [_generator_in_state(device, state) for device, state in states]
        _after_failed_capture(stream)
        return None
    return graph


def _generator_in_state(device: torch.device, state: Tensor) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.set_state(state)
    return gen


def _after_failed_capture(stream: torch.cuda.Stream | None) -> None:
    """Take the device's default generator out of capture mode after a failed capture, by
    one trivial capture that succeeds: torch ≤ 2.11 registers it with every capture and
    leaves it in capture mode when the capture fails (pytorch#171263), so that any later
    draw from it would raise. Nothing to do, and nothing done, where that capture fails too
    or on a torch that no longer needs it."""
    if stream is None:
        return
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=stream,
                              capture_error_mode=CAPTURE_MODE):
            torch.zeros(1, device=stream.device)
    except RuntimeError:
        pass


@contextlib.contextmanager
def own_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """Run the block on ``stream`` (nothing to do for None), ordered after the work already
    queued on the current stream and before what the caller queues next."""
    if stream is None:
        yield
        return
    caller = torch.cuda.current_stream(stream.device)
    stream.wait_stream(caller)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        caller.wait_stream(stream)


__all__ = ["EAGER_RECORDS", "WARMUP_STEPS", "GraphedSGD", "run_chains_graphed"]
