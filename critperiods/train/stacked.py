"""A seed group trained as one stacked model: the same run (batch size, schedule, switch
epoch) for several seeds, one SGD step for all (docs/architecture.md, glossary: "stacked").

A small CNN leaves most of a GPU idle and, on a CPU, the vector units. :class:`StackedTrainer`
stacks the weights of ``S`` seeds (``torch.func.stack_module_state``) and runs one
forward (the seeds as one grouped network, ``critperiods.train.grouped``; ``vmap`` for other
models) and one backward per step over ``S`` minibatches, each drawn from its own seed's
``(seed, epoch)`` plan; SGD with momentum and weight decay is elementwise, so one
``torch.optim.SGD`` over the stacked tensors updates every seed exactly as its own
optimizer would.

What stays the same as :class:`critperiods.train.training.Trainer`: initial weights, the
order and augmentation of every epoch, the learning-rate schedule, and the state
format — :meth:`SeedView.state` of member ``i`` is exactly what a single-seed
``Trainer`` would save, so pieces from a stacked job load anywhere.

What changes: the batched kernels (e.g. a grouped convolution instead of ``S``
convolutions) sum in a different order, so a seed's weights equal the single-seed
run only to float tolerance, not bit for bit. One step differs by float32 round-off
(≤ ``STEP_ATOL`` = 1e-5 on weights of order 0.3, checked in ``tests/test_stacked.py``).
Like any round-off, the difference then grows with training at the rate SGD
amplifies perturbations: on the tiny test configs it stays within ``STACKED_ATOL``
(1e-3) after 12–32 steps (measured 5e-7 for one seed, 1.4e-4 for the other), and a
BatchNorm net amplifies faster (a 1e-7 perturbation of a single-seed run reaches
3e-3 in 6 steps). Over a full run, expect stacked and single-seed seeds to differ
like two runs whose initial weights differ in the last bit: the same statistics,
not the same bits. For a fixed config (seeds and ``train.seeds_per_job``) the
result is still deterministic and resumable bit for bit on the CPU (on CUDA with
``train.deterministic``); on this CPU a seed's stacked result does not even depend on
its partners or its slot in the stack.

``train.compile`` is not applied to stacked models (a warning says so). On CUDA the
step is replayed from a CUDA graph (``critperiods.train.cuda_graphs``); the seeds lie side by
side in the channels there too, the layout that measured fastest on a GPU
(``critperiods.train.copies.CUDA_LAYOUT``; folded into the batch, ``critperiods.train.folded``,
is the alternative the benchmark compares).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import stack_module_state

from critperiods.train.copies import copies_forward, copies_layout, per_copy_losses
from critperiods.train.cuda_graphs import GraphedSGD
from critperiods.train.data import PreparedData
from critperiods.train.models import build_model
from critperiods.train.training import (
    BatchCache,
    EpochPlan,
    FastPath,
    TrainConfig,
    check_blur,
    configure_backend,
    epoch_plan,
    learning_rate,
    make_batch,
    phase,
    sgd_epoch,
)

STEP_ATOL = 1e-5  # stacked vs single-seed, first steps (round-off only; see module docstring)
STACKED_ATOL = 1e-3  # … after a few epochs of the tiny test configs


class SeedView:
    """One seed of a :class:`StackedTrainer`, with the single-seed ``Trainer`` interface
    that checkpoints and resume files use (``epoch``, ``step``, ``state``, ``weights``)."""

    def __init__(self, stack: StackedTrainer, index: int) -> None:
        self.stack, self.index = stack, index

    @property
    def seed(self) -> int:
        return self.stack.seeds[self.index]

    @property
    def epoch(self) -> int:
        return self.stack.epoch

    @property
    def step(self) -> int:
        return self.stack.step

    @property
    def batch_in_epoch(self) -> int:
        return self.stack.batch_in_epoch

    def weights(self) -> dict[str, Tensor]:
        """This seed's ``model.state_dict()`` (CPU copies), keys in the model's order."""
        tensors = {**self.stack.params, **self.stack.buffers}
        return {k: tensors[k][self.index].detach().to("cpu", copy=True).contiguous()
                for k in self.stack.state_keys}

    def state(self) -> dict:
        """The full training state of this seed, in ``Trainer.state()`` format."""
        opt = self.stack.optimizer.state_dict()
        per_seed = {
            k: {name: v[self.index].detach().to("cpu", copy=True).contiguous()
                for name, v in entry.items() if isinstance(v, Tensor)}
            for k, entry in opt["state"].items()
        }
        return {
            "model": self.weights(),
            "optimizer": {"state": per_seed, "param_groups": copy.deepcopy(opt["param_groups"])},
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
        }



class StackedTrainer:
    """SGD on the same ``(batch_size, switch_epoch)`` trajectory for several seeds at once."""

    def __init__(
        self, cfg: TrainConfig, data: PreparedData, batch_size: int, seeds: Sequence[int],
        device: torch.device | str = "cpu", fast: FastPath | None = None,
    ) -> None:
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
        check_blur(data, cfg)
        self.cfg, self.data, self.batch_size, self.seeds = cfg, data, batch_size, list(seeds)
        self.device = torch.device(device)
        self.fast = fast or FastPath.for_device(self.device, model=cfg.model)
        configure_backend(self.fast, self.device)
        if self.fast.compile:
            warnings.warn("train.compile is not applied to stacked seeds (seeds_per_job > 1)",
                          stacklevel=2)
        # the grouped forward lays the seeds out channels-last itself
        self.batch_fast = replace(self.fast, channels_last=False)
        models = [
            build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, s, cfg.init).to(self.device)
            for s in self.seeds
        ]
        self.state_keys = list(models[0].state_dict())
        self.params, self.buffers = stack_module_state(models)
        self.template = copy.deepcopy(models[0]).to("meta")
        self.optimizer = torch.optim.SGD(
            list(self.params.values()), lr=cfg.lr, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.forward = copies_forward(self.template, copies_layout(self.device, "train"))
        self.ready = BatchCache(data, cfg, self.batch_fast)
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.graphs = (GraphedSGD(self.optimizer, batch_size, list(self.params.values()),
                                  list(self.buffers.values()), self.device)
                       if self.fast.cuda_graphs else None)

    def members(self) -> list[SeedView]:
        """One view per seed, in ``seeds`` order."""
        return [SeedView(self, i) for i in range(len(self.seeds))]

    def _losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of every seed's model on its own batch, shape ``(seeds,)``."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast.bf16):
            logits = self.forward(self.params, self.buffers, x)
        return per_copy_losses(lambda lg, t: F.cross_entropy(lg.float(), t), logits, y)

    def load_states(self, states: Sequence[dict]) -> None:
        """Load one ``Trainer.state()`` per seed (all at the same position in training)."""
        positions = {(int(st["epoch"]), int(st["step"]), int(st["batch_in_epoch"]))
                     for st in states}
        if len(states) != len(self.seeds) or len(positions) != 1:
            raise ValueError(f"need one state per seed {self.seeds}, all at the same "
                             f"(epoch, step, batch); got {sorted(positions)}")
        (self.epoch, self.step, self.batch_in_epoch), = positions
        self.optimizer.state.clear()
        for index, state in enumerate(states):
            self._load_member(index, state)

    def _load_member(self, index: int, state: dict) -> None:
        """Copy one seed's weights, buffers and optimizer state into slot ``index``."""
        tensors = {**self.params, **self.buffers}
        stacked = list(self.params.values())
        with torch.no_grad():
            for k, v in state["model"].items():
                tensors[k][index].copy_(v)
            for k, entry in state["optimizer"]["state"].items():
                slot = self.optimizer.state[stacked[int(k)]]
                for name, v in entry.items():
                    if name not in slot:
                        slot[name] = torch.zeros_like(stacked[int(k)])
                    slot[name][index].copy_(v)

    def train_epoch(
        self, switch_epoch: int, should_stop: Callable[[], bool] = lambda: False
    ) -> float | None:
        """Train the rest of epoch ``self.epoch`` for every seed; mean loss over seeds and
        samples, or None if stopped early (same contract as ``Trainer.train_epoch``)."""
        epoch_phase = phase(self.epoch, switch_epoch)
        n = len(self.data.train.labels)
        plans = [epoch_plan(n, s, self.epoch, self.cfg.augmentation, self.device)
                 for s in self.seeds]
        self.template.train()
        if self.graphs is not None:
            total = self.graphs.train_epoch(self, learning_rate(self.cfg, self.epoch, switch_epoch),
                                            plans, epoch_phase, self.batch_losses, should_stop)
        else:
            total = sgd_epoch(self, switch_epoch, plans[0].batches(self.batch_size),
                              lambda part: self.batch_losses(plans, part, epoch_phase),
                              should_stop)
        return None if total is None else total / (n * len(self.seeds))

    def batch_losses(self, plans: list[EpochPlan], part: slice, epoch_phase: str) -> Tensor:
        """Every seed's loss on batch ``part`` of its own plan, shape ``(seeds,)``."""
        pairs = [make_batch(self.data, self.cfg, self.batch_fast, p, part, epoch_phase,
                            self.ready) for p in plans]
        x, y = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
        return self._losses(x, y)
