"""Training with a blur switch, shared blurred prefixes, and exact resumption.

A *trajectory* is defined by ``(batch_size, seed, switch_epoch)``: blurred data
for epochs ``e < switch_epoch``, sharp data afterwards. The *trunk* of a
``(batch_size, seed)`` pair is the trajectory that never switches; a *branch*
starts from the trunk's state at its switch epoch.

Determinism contract (docs/architecture.md, "Determinism"):

* initial weights depend only on ``seed`` (:func:`critperiods.train.models.build_model`);
* the order and augmentation of epoch ``e`` come from a generator seeded by
  ``(seed, e)`` alone (:func:`epoch_plan`), drawn for the whole epoch up front;
* the learning rate is a pure function of the epoch (:func:`learning_rate`).

The full training state (weights, buffers, optimizer state, epoch, step, and
position inside the epoch) therefore determines every later bit, so a branch
equals a run from scratch, and a job resumed mid-epoch equals one never
interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from critperiods.train.cuda_graphs import GraphedSGD
from critperiods.train.data import PreparedData
from critperiods.train.memory_format import to_channels_last
from critperiods.train.models import build_model

#: The switch epoch of the always-blurred run: the trunk, which never leaves the blurred
#: phase, and the reference the divergence stage compares branches with. The one sentinel
#: everywhere: piece files, the divergence stage's run keys and the divergence files'
#: ``blurred_switch_epoch`` attribute all write it as -1 (no real switch epoch is negative).
ALWAYS_BLURRED = -1
CROP_PADDING = 4  # Achille et al.'s CIFAR augmentation: pad 4, random crop, flip


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a trajectory besides ``(batch_size, seed, switch_epoch)``."""

    model: str
    width: int
    blur_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_decay: float
    lr_after_switch: str = "continue"
    augmentation: bool = False
    init: str = "kaiming"  # model.init (critperiods.train.models.INITS)

    @classmethod
    def from_params(cls, params: dict, lr_after_switch: str = "continue") -> TrainConfig:
        """Build from the ``training`` params slice that the Snakefile passes to rules; a
        branch adds its learning-rate schedule (a grid axis: ``grid.lr_schedules``)."""
        opt = params["optimizer"]
        return cls(
            model=params["model"]["name"], width=params["model"]["width"],
            blur_size=params["dataset"]["blur_size"], lr=opt["lr"], momentum=opt["momentum"],
            weight_decay=opt["weight_decay"], lr_decay=opt["lr_decay"],
            lr_after_switch=lr_after_switch, augmentation=params["augmentation"],
            init=params["model"].get("init", "kaiming"),
        )


def learning_rate(cfg: TrainConfig, epoch: int, switch_epoch: int) -> float:
    """lr of ``epoch``: exponential decay, continued across the switch or restarted at it."""
    age = epoch
    if (cfg.lr_after_switch == "restart" and switch_epoch != ALWAYS_BLURRED
            and epoch >= switch_epoch):
        age = epoch - switch_epoch
    return cfg.lr * cfg.lr_decay**age


def phase(epoch: int, switch_epoch: int) -> str:
    """The data that epoch ``epoch`` (0-based) trains on (always blurred for
    :data:`ALWAYS_BLURRED`)."""
    return "blurred" if switch_epoch == ALWAYS_BLURRED or epoch < switch_epoch else "sharp"


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch)``."""
    digest = hashlib.sha256(f"critperiods:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class EpochPlan:
    """The order of samples and their augmentation for one epoch."""

    order: torch.Tensor  # [N] sample indices
    shifts: torch.Tensor | None  # [N, 2] crop offsets in [0, 2·pad], by position in order
    flips: torch.Tensor | None  # [N] bool

    def batches(self, batch_size: int) -> list[slice]:
        n = len(self.order)
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def epoch_plan(n: int, seed: int, epoch: int, augment: bool, device: torch.device) -> EpochPlan:
    """Draw the whole epoch's randomness on the CPU from the ``(seed, epoch)`` generator."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.randperm(n, generator=g)
    shifts = flips = None
    if augment:
        shifts = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=g).to(device)
        flips = (torch.rand(n, generator=g) < 0.5).to(device)
    return EpochPlan(order.to(device), shifts, flips)


def augment_batch(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, for a whole batch at once."""
    b, _, h, w = x.shape
    padded = F.pad(x, (CROP_PADDING,) * 4)
    rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    cropped = cropped.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def make_batch(data: PreparedData, cfg: TrainConfig, fast: FastPath, plan: EpochPlan,
               part: slice, epoch_phase: str, ready: BatchCache | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of batch ``part`` of an epoch: the prepared images of the phase,
    normalised, then augmented.

    One blur route: a blurred batch is read from the prepared blurred tensor
    (``data.train.blurred``, blurred once and rounded to uint8 by ``prepare_data``), the
    same images evaluation and λ̂ read, never blurred again here. Augmentation (random crop
    with zero padding and horizontal flip) moves the prepared image: a blurred input is a
    shifted and flipped copy of the prepared blurred image. The flip commutes with the blur;
    a crop does up to the zero border and the position of the blur's block grid, which
    carries no information about the image, so the deficit is the same.

    Without augmentation an image's input is the same every epoch, so ``ready`` (when
    given) holds the whole normalised training set of each phase and the batch is just an
    index into it: the same bits, without normalising every image every epoch.
    """
    idx = plan.order[part]
    if ready is not None and plan.shifts is None:
        return ready.images(epoch_phase)[idx], data.train.labels[idx]
    x = data.normalize(data.train.images(epoch_phase)[idx])
    if plan.shifts is not None:
        x = augment_batch(x, plan.shifts[part], plan.flips[part])
    if fast.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, data.train.labels[idx]


def check_blur(data: PreparedData, cfg: TrainConfig) -> None:
    """Refuse data prepared with another blur than the training config's: training reads
    the prepared blurred images (:func:`make_batch`), it never blurs them itself."""
    prepared = data.meta.get("blur_size")
    if prepared is not None and prepared != cfg.blur_size:
        raise ValueError(f"dataset.blur_size: the prepared data are blurred to {prepared}, but "
                         f"the training config asks for {cfg.blur_size}; prepare the data again")


class BatchCache:
    """The whole training set as model input, per phase, built on first use (float32 on
    the training device: 31 MB for 10k Fashion-MNIST images, 0.6 GB for CIFAR-10)."""

    def __init__(self, data: PreparedData, cfg: TrainConfig, fast: FastPath) -> None:
        self.data, self.cfg, self.fast = data, cfg, fast
        self._by_phase: dict[str, torch.Tensor] = {}

    def images(self, epoch_phase: str) -> torch.Tensor:
        """All training images of ``epoch_phase`` as model input, built on first use."""
        if epoch_phase not in self._by_phase:
            n = len(self.data.train.labels)
            everything = EpochPlan(torch.arange(n, device=self.data.train.labels.device),
                                   None, None)
            self._by_phase[epoch_phase] = make_batch(self.data, self.cfg, self.fast,
                                                     everything, slice(0, n), epoch_phase)[0]
        return self._by_phase[epoch_phase]


# bf16 autocast on CUDA under ``fast_path: auto``, per model: only where it measured faster
# than float32 (TF32 convolutions) in the graphed step (bench/bench_gpu.py, docs/performance.md).
# A model not listed would get bf16 here but float32 λ̂ passes (``llc_inputs.resolve_precision``),
# so every model of ``models.MODELS`` is listed (tests/test_models.py holds them together):
# adding a model means deciding this from a measurement (``make bench-gpu``).
BF16_PAYS_ON_CUDA = {"small_cnn": False, "all_cnn_c": True, "resnet18": True}


@dataclass(frozen=True)
class FastPath:
    """How to run on the device — never what to compute.

    On CUDA (``mode="auto"``): channels-last tensors, the whole SGD step captured as a CUDA
    graph and replayed (``critperiods.train.cuda_graphs``), bf16 autocast where it pays for the
    model (``BF16_PAYS_ON_CUDA``; every model when the model is not named) and, unless
    determinism is requested, ``cudnn.benchmark``; ``compile`` wraps the model in
    ``torch.compile`` instead of capturing graphs (falling back to eager with a warning if
    compilation fails). ``mode="on"`` forces bf16 for every model.
    On the CPU, ``auto`` keeps float32 (bf16 only with ``mode="on"``) but uses the
    channels-last layout, which oneDNN runs about twice as fast for these small
    convolutions; it is still exact float32 and bitwise reproducible. ``mode="off"``
    is the plain contiguous float32 eager path. ``cuda_graphs`` set on the CPU runs the
    graphed step's static-buffer code eagerly (tests).
    """

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    deterministic: bool = False
    cuda_graphs: bool = False

    @classmethod
    def for_device(cls, device: torch.device, mode: str = "auto", compile: bool = False,
                   deterministic: bool = False, model: str | None = None) -> FastPath:
        on = mode == "on" or (mode == "auto" and device.type == "cuda")
        cuda = device.type == "cuda"
        bf16 = on and (mode == "on" or model is None or BF16_PAYS_ON_CUDA.get(model, True))
        return cls(channels_last=on or mode == "auto", bf16=bf16, compile=compile,
                   cudnn_benchmark=on and cuda and not deterministic,
                   deterministic=deterministic, cuda_graphs=on and cuda and not compile)

    @classmethod
    def from_params(cls, params: dict | None, device: torch.device,
                    model: str | None = None) -> FastPath:
        params = params or {}
        return cls.for_device(device, params.get("fast_path", "auto"),
                              params.get("compile", False), params.get("deterministic", False),
                              model)


def configure_backend(fast: FastPath, device: torch.device) -> None:
    """Process-wide CUDA settings of the fast path: ``cudnn.benchmark`` and, when
    determinism is requested, deterministic kernels (cuBLAS included: its workspace is
    fixed before the first matmul creates a handle). Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = fast.cudnn_benchmark
        if fast.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)


class _CompiledOrEager:
    """``torch.compile(model)``, falling back to the eager model with a warning where the
    compilation fails. ``torch.compile`` is lazy: a backend failure surfaces at the first
    call, so that call is the one guarded."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.forward, self.checked = model, torch.compile(model), False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self.forward(x)
        try:
            out = self.forward(x)
        except Exception as err:  # noqa: BLE001 - any backend failure means: run eagerly
            import warnings

            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                          "training eagerly", stacklevel=2)
            self.forward = self.model
            out = self.model(x)
        self.checked = True
        return out


def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model)``, or the eager model with a warning if that fails (at the
    first call, where a lazy compilation fails)."""
    return _CompiledOrEager(model)


class Trajectory(Protocol):
    """One trajectory's position and weights: a ``Trainer`` or one seed of a stack."""

    @property
    def epoch(self) -> int: ...

    @property
    def step(self) -> int: ...

    def weights(self) -> dict[str, torch.Tensor]: ...


class TrajectoryTrainer(Protocol):
    """What ``train_until`` drives: ``Trainer`` or ``critperiods.train.stacked.StackedTrainer``."""

    epoch: int
    step: int

    def members(self) -> Sequence[Trajectory]: ...

    def train_epoch(self, switch_epoch: int,
                    should_stop: Callable[[], bool] = ...) -> float | None: ...


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Preempted(Exception):  # noqa: N818 - it is an event, not a programming error
    """Training stopped on request (SIGTERM, SIGINT, SIGHUP) after saving its resumable state."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """Turn SIGTERM, SIGINT and SIGHUP into a flag the training loop polls after every step.

    SLURM sends SIGTERM at preemption and at the time limit, a terminal's Ctrl-C sends
    SIGINT to Snakemake and its local jobs alike, and a closed terminal or dropped SSH
    session sends them SIGHUP (unless ignored, as under nohup: an ignored signal stays
    ignored); the loop then saves its state at the
    current step and raises :class:`Preempted`, which the stage script turns into a
    non-zero exit, so that the next run (or the retry) resumes where it stopped instead of
    at the last epoch's resume file.
    """
    received = {"flag": False}

    def handler(signum: int, frame: Any) -> None:
        received["flag"] = True

    # a signal the process was told to ignore stays ignored: under nohup a closed terminal's
    # SIGHUP must not stop the jobs that nohup was meant to keep running
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield lambda: received["flag"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """SGD on one trajectory: model, optimizer, data and the position in training."""

    def __init__(
        self, cfg: TrainConfig, data: PreparedData, batch_size: int, seed: int,
        device: torch.device | str = "cpu", fast: FastPath | None = None,
    ) -> None:
        check_blur(data, cfg)
        self.cfg, self.data, self.batch_size, self.seed = cfg, data, batch_size, seed
        self.device = torch.device(device)
        self.fast = fast or FastPath.for_device(self.device, model=cfg.model)
        self.model = build_model(
            cfg.model, cfg.width, data.in_channels, data.image_size, data.num_classes, seed,
            cfg.init,
        ).to(self.device)
        if self.fast.channels_last:
            self.model = to_channels_last(self.model)
        configure_backend(self.fast, self.device)
        self.forward = _compiled(self.model) if self.fast.compile else self.model
        self.ready = BatchCache(data, cfg, self.fast)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.batch_in_epoch = 0  # batches of ``epoch`` already taken (mid-epoch resume)
        self.graphs = (GraphedSGD(self.optimizer, batch_size, list(self.model.parameters()),
                                  list(self.model.buffers()), self.device)
                       if self.fast.cuda_graphs else None)
        #: ``(epoch, plan) -> plan``: reorders an epoch's samples (the batch_order
        #: perturbation, critperiods.train.perturbation); None trains the plan as drawn.
        self.reorder_plan: Callable[[int, EpochPlan], EpochPlan] | None = None

    # -- state ------------------------------------------------------------------------
    def state(self) -> dict:
        """The complete training state: enough to continue bit for bit."""
        return {
            "model": _cpu(self.model.state_dict()),
            "optimizer": _cpu(self.optimizer.state_dict()),
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state["batch_in_epoch"])

    def load_states(self, states: list[dict]) -> None:
        """``load_state`` of the one trajectory (the interface a stacked trainer shares)."""
        (state,) = states
        self.load_state(state)

    def weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's weights and buffers (what a checkpoint stores)."""
        return _cpu(self.model.state_dict())

    def members(self) -> list[Trainer]:
        """The trajectories this trainer advances: just itself (see ``StackedTrainer``)."""
        return [self]

    # -- training ---------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy; the forward pass in bf16 autocast on the fast path."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast.bf16):
            logits = self.forward(x)
        return F.cross_entropy(logits.float(), y)

    def train_epoch(
        self, switch_epoch: int, should_stop: Callable[[], bool] = lambda: False
    ) -> float | None:
        """Train the rest of epoch ``self.epoch``; return its mean loss, None if stopped early."""
        epoch_phase = phase(self.epoch, switch_epoch)
        plan = epoch_plan(len(self.data.train.labels), self.seed, self.epoch,
                          self.cfg.augmentation, self.device)
        if self.reorder_plan is not None:
            plan = self.reorder_plan(self.epoch, plan)
        self.model.train()
        if self.graphs is not None:
            total = self.graphs.train_epoch(self, learning_rate(self.cfg, self.epoch, switch_epoch),
                                            [plan], epoch_phase, self.batch_losses, should_stop)
        else:
            total = sgd_epoch(self, switch_epoch, plan.batches(self.batch_size),
                              lambda part: self.batch_losses([plan], part, epoch_phase),
                              should_stop)
        return None if total is None else total / len(plan.order)

    def batch_losses(self, plans: list[EpochPlan], part: slice, epoch_phase: str
                     ) -> torch.Tensor:
        """The loss on batch ``part`` of the epoch's plan (``plans`` holds the one plan)."""
        (plan,) = plans
        return self.loss(*make_batch(self.data, self.cfg, self.fast, plan, part, epoch_phase,
                                     self.ready))


def sgd_epoch(trainer: Any, switch_epoch: int, batches: list[slice],
              loss_of: Callable[[slice], torch.Tensor],
              should_stop: Callable[[], bool]) -> float | None:
    """The SGD loop of ``Trainer`` and ``StackedTrainer``: the epoch's learning rate,
    then one step per batch from ``trainer.batch_in_epoch`` on, on the sum of the
    trajectories' losses (``loss_of``: a scalar, or one loss per stacked seed).

    Returns the sum of loss × batch size over the epoch, or None if ``should_stop``
    fired before its last batch (the position is kept for resuming).
    """
    for group in trainer.optimizer.param_groups:
        group["lr"] = learning_rate(trainer.cfg, trainer.epoch, switch_epoch)
    total = torch.zeros((), device=trainer.device)
    for part in batches[trainer.batch_in_epoch :]:
        loss = loss_of(part)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        trainer.optimizer.step()
        total += loss.detach().sum() * (part.stop - part.start)
        trainer.step += 1
        trainer.batch_in_epoch += 1
        if should_stop() and trainer.batch_in_epoch < len(batches):
            return None
    trainer.epoch += 1
    trainer.batch_in_epoch = 0
    return float(total)


def train_until(
    trainer: TrajectoryTrainer,
    end_epoch: int,
    switch_epoch: int,
    checkpoint_epochs: set[int],
    checkpoints: list[list[dict]],
    config_hash: str,
    save_resume: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = True,
    desc: str = "train",
) -> None:
    """Train to ``end_epoch``, appending a checkpoint at every epoch in ``checkpoint_epochs``.

    ``checkpoints`` holds one list per trajectory of ``trainer.members()`` (one for a
    :class:`Trainer`, one per seed for a stacked trainer). ``save_resume`` is called
    after every epoch and before raising :class:`Preempted` when ``should_stop()``
    turns true (at an epoch's end: a second time, after the first call).
    """
    bar = tqdm(total=end_epoch, initial=trainer.epoch, desc=desc, unit="epoch",
               disable=not progress, file=sys.stderr, mininterval=1.0)
    with bar:
        while trainer.epoch < end_epoch:
            loss = trainer.train_epoch(switch_epoch, should_stop)
            if loss is None:
                if save_resume is not None:
                    save_resume()
                raise Preempted(f"stopped at epoch {trainer.epoch}, step {trainer.step}")
            if trainer.epoch in checkpoint_epochs:
                for member, kept in zip(trainer.members(), checkpoints, strict=True):
                    kept.append(make_checkpoint(member, switch_epoch, config_hash))
            bar.set_postfix(loss=f"{loss:.4f}", phase=phase(trainer.epoch - 1, switch_epoch),
                            refresh=False)
            bar.update(1)
            if save_resume is not None and trainer.epoch < end_epoch:
                save_resume()
            if should_stop() and trainer.epoch < end_epoch:
                if save_resume is not None:  # it may have passed over this epoch (a stage
                    save_resume()  # saves at most once a minute), and the stop came since
                raise Preempted(f"stopped at epoch {trainer.epoch}, step {trainer.step}")


def make_checkpoint(trainer: Trajectory, switch_epoch: int, config_hash: str) -> dict:
    """Weights after ``trainer.epoch`` epochs, tagged as docs/architecture.md ("Checkpoints")
    requires."""
    last = trainer.epoch - 1
    return {
        "epoch": trainer.epoch, "step": trainer.step,
        "phase": phase(last, switch_epoch) if last >= 0 else "blurred",
        "config_hash": config_hash, "model": trainer.weights(),
    }


def train_from_scratch(
    cfg: TrainConfig, data: PreparedData, batch_size: int, seed: int, switch_epoch: int,
    end_epoch: int, checkpoint_epochs: set[int], config_hash: str = "", progress: bool = False,
) -> tuple[dict, list[dict]]:
    """One trajectory in one go (no trunk sharing): the reference the tests compare with."""
    trainer = Trainer(cfg, data, batch_size, seed)
    checkpoints = (
        [make_checkpoint(trainer, switch_epoch, config_hash)] if 0 in checkpoint_epochs else []
    )
    train_until(trainer, end_epoch, switch_epoch, checkpoint_epochs, [checkpoints], config_hash,
                progress=progress)
    return trainer.state(), checkpoints


def model_for(cfg: TrainConfig, data: PreparedData, device: torch.device | str) -> nn.Module:
    """An untrained model of the configured architecture, to load checkpoints into.

    Channels-last, like training (faster on both CPU and GPU; ``load_state_dict``
    keeps the layout).
    """
    model = build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, seed=0).to(device)
    return to_channels_last(model)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cpu(tree: Any) -> Any:
    """Detached CPU copies of every tensor in a nested state dict."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu(v) for v in tree)
    return tree


__all__ = [
    "ALWAYS_BLURRED", "EpochPlan", "FastPath", "Preempted", "TrainConfig", "Trainer",
    "augment_batch", "model_for",
    "check_blur", "configure_backend",
    "epoch_plan", "epoch_seed", "learning_rate", "make_batch", "make_checkpoint", "phase",
    "sgd_epoch",
    "stop_on_sigterm", "train_from_scratch", "train_until",
]
