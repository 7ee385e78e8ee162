"""GPU benchmark (not a test): the training step, stacked seeds and λ̂ at the hardware's pace.

One script, a few minutes on one GPU, writing ``bench/out/gpu.md`` (and ``gpu.json`` with
every raw timing). It needs only what a stock PyTorch GPU image has (torch, numpy; no
snakemake, no netCDF4); devinterp 1.3.2 is used where it can be imported.

Sections, each timed in windows of SGD steps that never contain an epoch boundary or the
first call of a new shape (warm-up and CUDA-graph capture come first), repeated in
interleaved order (A B C A B C …), medians reported:

1. **Correctness** (run last, shown first): on CUDA, a branch resumed from a trunk equals
   training from scratch bit for bit, and a job stopped mid-epoch and resumed equals one
   never stopped, with graphs and ``deterministic``; the graphed step follows the eager one
   to float tolerance.
2. **Training** (small_cnn w8 28×28, all_cnn_c w96 and resnet18 w64 on 32×32 with
   augmentation + blur, synthetic uint8 data), batch 32 / 128 / 512: the project's
   images/s with ``fast_path: off`` (fp32 eager), the previous ``auto`` (bf16 +
   channels-last, eager), the graphed step in fp32 (TF32 convolutions) and in bf16, beside a
   textbook ``DataLoader`` fp32 loop (batch 128) and a bare eager fp32 loop on resident
   data; the achieved FLOP/s as a share of the measured bf16 matmul rate.
3. **Stacked seeds** (graphed default): 1, 5, 16 seeds; both layouts of the copies.
4. **Fashion-MNIST cost model**: small_cnn width 8 and 16 on 28×28, batch 32–256, 5 seeds.
5. **λ̂** (All-CNN-C w96 and small_cnn): 4 / 8 / 16 chains, graphed, both copy layouts,
   against the eager sampler and devinterp 1.3.2 (4 chains); and ``llc.descent``'s job at
   one checkpoint (a noise-free full-batch path as long as a chain), from which
   ``runtime.minutes_per_descent_checkpoint`` can be set; and the llc stage's stability
   check (the top Hessian eigenvalue) at one checkpoint.
6. **Cost**: the CIFAR-10 grid (``configs/cifar10_achille.yaml``) in GPU-hours.
7. **Levers** (only with ``--sections levers``, a run of its own, about 5 minutes, which
   writes ``gpu_levers.md`` / ``.json``; always in ``--smoke``): ``torch.compile`` captured
   inside the graphed step, and 1 / 2 / 4 training processes sharing the GPU, at All-CNN-C
   w96 — the untried ways to bring the CIFAR grid under 5 GPU-hours.

Usage: ``python bench/bench_gpu.py [--out bench/out] [--budget-s 270]``;
``--smoke`` runs every section at tiny sizes (on the CPU unless ``--device cuda``), which
``make test`` does so that the script cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critperiods.pipeline import plan  # noqa: E402
from critperiods.train.data import PreparedData, Split, blur, blur_uint8  # noqa: E402
from critperiods.train.models import build_model  # noqa: E402
from critperiods.train.stacked import StackedTrainer  # noqa: E402
from critperiods.train.training import (  # noqa: E402
    ALWAYS_BLURRED,
    FastPath,
    TrainConfig,
    Trainer,
    augment_batch,
    epoch_plan,
    train_until,
)


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the real run and ``--smoke``."""

    n_train: int
    batches: tuple[int, ...]
    widths: dict[str, int]
    window_s: float  # target length of one timing window
    max_window: int  # steps
    repeats: int
    seeds: tuple[int, ...]
    chains: tuple[int, ...]
    llc_samples: int
    llc_batch: int
    llc_records: int
    fmnist_widths: tuple[int, ...]
    fmnist_batches: tuple[int, ...]
    dataloader_batch: int
    pixels: tuple[int, int] = (28, 32)  # side of the gray (small_cnn) and RGB images
    full: bool = True  # the real run (False: --smoke); survives dataclasses.replace


FULL = Sizes(n_train=50_000, batches=(32, 128, 512),
             widths={"small_cnn": 8, "all_cnn_c": 96, "resnet18": 64}, window_s=0.25,
             max_window=200, repeats=3, seeds=(1, 5, 16), chains=(4, 8, 16), llc_samples=10_000,
             llc_batch=256, llc_records=100, fmnist_widths=(8, 16),
             fmnist_batches=(32, 64, 128, 256), dataloader_batch=128)
SMOKE = Sizes(n_train=64, batches=(8,), widths={"small_cnn": 2, "all_cnn_c": 4, "resnet18": 2},
              window_s=0.0, max_window=3, repeats=2, seeds=(1, 2), chains=(2, 4), llc_samples=64,
              llc_batch=16, llc_records=4, fmnist_widths=(2,), fmnist_batches=(8,),
              dataloader_batch=8, pixels=(8, 8), full=False)

#: What ``make bench-gpu`` measures (about 5 minutes); ``--sections levers`` is a separate run.
DEFAULT_SECTIONS = ("correctness", "training", "llc", "stacked", "fmnist", "cost")

WARMUP = 6  # steps before timing: the eager first step, warm-up and capture of the graph


def first_line(err: BaseException) -> str:
    """An exception's first line for a table cell (an empty message too)."""
    return (str(err).splitlines() or [""])[0][:200]


def said(err: BaseException) -> str:
    """``Type: first line`` of an exception."""
    return f"{type(err).__name__}: {first_line(err)}"


class Budget:
    """Wall-clock budget: sections ask whether there is time left for them."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(n: int, channels: int, size: int, blur_size: int, device: torch.device,
              seed: int = 0) -> PreparedData:
    """Class-template uint8 images (learnable, no download), resident on ``device``."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, channels, size, size, generator=g)

    def split(count: int) -> Split:
        labels = torch.randint(0, 10, (count,), generator=g)
        noise = torch.rand(count, channels, size, size, generator=g)
        images = ((0.6 * templates[labels] + 0.4 * noise) * 255).round().to(torch.uint8)
        return Split(images, blur_uint8(images, blur_size), labels)

    train = split(n)
    scaled = train.sharp.float() / 255
    return PreparedData(train, split(max(n // 10, 16)), scaled.mean((0, 2, 3)),
                        scaled.std((0, 2, 3)), 10, {"dataset": "synthetic"}).to(device)


@dataclass(frozen=True)
class Setup:
    """A model on its data: CIFAR-like 32×32 RGB with augmentation, or 28×28 gray without."""

    model: str
    width: int
    data: PreparedData
    cfg: TrainConfig


def setup_for(model: str, width: int, sizes: Sizes, device: torch.device,
              cache: dict) -> Setup:
    gray = model == "small_cnn"
    key = "gray" if gray else "rgb"
    if key not in cache:
        cache[key] = synthetic(sizes.n_train, 1 if gray else 3, sizes.pixels[not gray],
                               4 if gray or not sizes.full else 8, device)
    cfg = TrainConfig(model, width, 4 if gray or not sizes.full else 8, lr=0.05, momentum=0.9,
                      weight_decay=5e-4, lr_decay=0.97, augmentation=not gray)
    return Setup(model, width, cache[key], cfg)


# --------------------------------------------------------------------------- timing

def stop_after(steps: int) -> Callable[[], bool]:
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] >= steps

    return should_stop


_PLANS: dict[tuple, object] = {}


@contextlib.contextmanager
def _plans_drawn_once() -> Iterator[None]:
    """Within it, the trainers reuse an epoch's plan instead of drawing it again at every
    ``train_epoch`` call: a job draws it once per epoch, a timing window once per window,
    which would charge the windows a cost the job amortises."""
    from critperiods.train import stacked, training

    def cached(n: int, seed: int, epoch: int, augment: bool, device: torch.device) -> object:
        key = (n, seed, epoch, augment, str(device))
        if key not in _PLANS:
            if len(_PLANS) > 64:
                _PLANS.clear()
            _PLANS[key] = epoch_plan(n, seed, epoch, augment, device)
        return _PLANS[key]

    saved = training.epoch_plan, stacked.epoch_plan
    training.epoch_plan = stacked.epoch_plan = cached
    try:
        yield
    finally:
        training.epoch_plan, stacked.epoch_plan = saved


class ProjectLoop:
    """A ``Trainer``/``StackedTrainer`` stepped in windows inside one epoch (each epoch's plan
    drawn once, as in a job: :func:`_plans_drawn_once`)."""

    def __init__(self, trainer: Trainer | StackedTrainer, device: torch.device) -> None:
        self.trainer, self.device = trainer, device
        self.full = len(trainer.data.train.labels) // trainer.batch_size  # full batches
        self.images_per_step = trainer.batch_size * len(getattr(trainer, "seeds", [0]))

    def steps(self, k: int) -> None:
        """``k`` steps; if the epoch has fewer full batches left, finish it first (untimed
        by the caller's window only when called from ``window``)."""
        t = self.trainer
        with _plans_drawn_once():
            while k > 0:
                room = self.full - 1 - t.batch_in_epoch  # never the last (partial) batch
                if room <= 0:
                    t.train_epoch(ALWAYS_BLURRED)
                    continue
                take = min(k, room)
                t.train_epoch(ALWAYS_BLURRED, stop_after(take))
                k -= take

    def window(self, k: int) -> float:
        """Seconds for ``k`` steps inside one epoch (moves to a fresh epoch if needed); ``k``
        at most ``full - 2`` (:func:`window_steps`), so that a rate counts what was timed."""
        if k > self.full - 2:
            raise ValueError(f"a window of {k} steps does not fit one epoch of "
                             f"{self.full} full batches")
        with _plans_drawn_once():
            t = self.trainer
            if self.full - 1 - t.batch_in_epoch < k:
                t.train_epoch(ALWAYS_BLURRED)  # the boundary, untimed
            from critperiods.train import training  # its epoch_plan: the cached one here

            for seed in getattr(t, "seeds", [getattr(t, "seed", 0)]):  # drawn, untimed
                training.epoch_plan(len(t.data.train.labels), seed, t.epoch,
                                    t.cfg.augmentation, t.device)
            training.configure_backend(t.fast, self.device)  # its own cudnn.benchmark
            sync(self.device)
            start = time.perf_counter()
            self.trainer.train_epoch(ALWAYS_BLURRED, stop_after(k))
            sync(self.device)
            return time.perf_counter() - start


class BareLoop:
    """Textbook eager fp32 loop on resident data: the same model, augmentation, blur, SGD."""

    def __init__(self, s: Setup, batch: int, device: torch.device) -> None:
        self.s, self.batch, self.device = s, batch, device
        self.model = build_model(s.model, s.width, s.data.in_channels, s.data.image_size, 10,
                                 0).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=5e-4)
        self.full = len(s.data.train.labels) // batch
        self.images_per_step = batch
        self._i = 0
        self._plan = epoch_plan(len(s.data.train.labels), 0, 0, s.cfg.augmentation, device)

    def step(self) -> None:
        part = slice(self._i * self.batch, (self._i + 1) * self.batch)
        self._i = (self._i + 1) % self.full
        d, p = self.s.data, self._plan
        x = d.normalize(d.train.sharp[p.order[part]])
        if p.shifts is not None:
            x = augment_batch(x, p.shifts[part], p.flips[part])
        x = blur(x, self.s.cfg.blur_size)
        loss = F.cross_entropy(self.model(x), d.train.labels[p.order[part]])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def window(self, k: int) -> float:
        # cuDNN autotuning on, as textbook CIFAR scripts set it (the setting is process-wide:
        # the project's loops set their own before their windows)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        sync(self.device)
        start = time.perf_counter()
        for _ in range(k):
            self.step()
        sync(self.device)
        return time.perf_counter() - start


class LoaderLoop(BareLoop):
    """Textbook ``DataLoader`` loop: per-sample crop/flip/normalise/blur in worker processes,
    pinned batches copied to the GPU, fp32 model."""

    def __init__(self, s: Setup, batch: int, device: torch.device, workers: int) -> None:
        super().__init__(s, batch, device)
        cpu = s.data.to("cpu")
        dataset = _PerSample(cpu, s.cfg.blur_size, s.cfg.augmentation)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch, shuffle=True, num_workers=workers, drop_last=True,
            persistent_workers=workers > 0, pin_memory=device.type == "cuda")
        self._it = self._forever()

    def _forever(self) -> Iterator:
        while True:
            yield from self.loader

    def step(self) -> None:
        x, y = next(self._it)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class Fallible:
    """A comparison loop whose failure costs its own column only: a DataLoader loop's
    workers (killed, say, by a container's small /dev/shm) must not lose the project's rates
    measured in the same windows. After a failure its windows time as NaN and ``error``
    says why."""

    def __init__(self, make: Callable[..., object], *args: object) -> None:
        self.loop, self.error = None, None
        self.images_per_step = float("nan")
        self._try(lambda: setattr(self, "loop", make(*args)))
        if self.loop is not None:
            self.images_per_step = self.loop.images_per_step

    def _try(self, fn: Callable[[], object]) -> object:
        if self.error is not None:
            return None
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - reported in the table and the json
            self.error = said(err)
            self.loop = None
            return None

    def step(self) -> None:
        self._try(lambda: self.loop.step())

    def window(self, k: int) -> float:
        seconds = self._try(lambda: self.loop.window(k))
        return float("nan") if seconds is None else seconds


class _PerSample(torch.utils.data.Dataset):
    def __init__(self, data: PreparedData, blur_size: int, augment: bool) -> None:
        self.data, self.blur_size, self.augment = data, blur_size, augment

    def __len__(self) -> int:
        return len(self.data.train.labels)

    def __getitem__(self, i: int):
        x = self.data.normalize(self.data.train.sharp[i : i + 1])
        if self.augment:
            shift = torch.randint(0, 9, (1, 2))
            x = augment_batch(x, shift, torch.rand(1) < 0.5)
        return blur(x, self.blur_size)[0], self.data.train.labels[i]


def window_steps(loop, sizes: Sizes) -> int:
    """Steps per timing window: about ``window_s`` seconds, from a short probe; for the
    project's loop never more than one epoch's full batches allow (:meth:`ProjectLoop.window`
    times at most ``full - 2``, and a rate must count the steps it timed)."""
    most = sizes.max_window if not isinstance(loop, ProjectLoop) else \
        min(sizes.max_window, loop.full - 2)
    if sizes.window_s <= 0:
        return most
    few = max(1, min(5, most))
    probe = loop.window(few) / few
    if not math.isfinite(probe):  # a Fallible loop that failed: its windows are NaN anyway
        return min(10, most)
    return int(max(min(10, most), min(most, sizes.window_s / max(probe, 1e-6))))


def interleaved(loops: dict[str, object], sizes: Sizes) -> dict[str, list[float]]:
    """images/s of every loop, ``repeats`` interleaved windows each (warm-up excluded)."""
    steps = {}
    for name, loop in loops.items():
        if isinstance(loop, ProjectLoop):
            loop.steps(WARMUP)
        else:
            for _ in range(WARMUP):
                loop.step()
        steps[name] = window_steps(loop, sizes)
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(sizes.repeats):
        for name, loop in loops.items():
            seconds = loop.window(steps[name])
            rates[name].append(steps[name] * loop.images_per_step / seconds)
    return rates


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- fast paths

def paths(device: torch.device, model: str) -> dict[str, FastPath]:
    """The variants compared: before this change, and the graphed step in fp32 and bf16."""
    auto = FastPath.for_device(device, "auto", model=model)
    before = replace(FastPath.for_device(device, "auto"), cuda_graphs=False)
    graphed = replace(auto, cuda_graphs=True)
    return {
        "off (fp32 eager)": FastPath.for_device(device, "off"),
        "auto before (bf16+CL eager)": before,
        "graphed fp32": replace(graphed, bf16=False),
        "graphed bf16": replace(graphed, bf16=True),
    }


def default_name(device: torch.device, model: str) -> str:
    return "graphed bf16" if FastPath.for_device(device, model=model).bf16 else "graphed fp32"


# --------------------------------------------------------------------------- sections

def section_correctness(device: torch.device, sizes: Sizes) -> tuple[list[str], dict]:
    """Bitwise: trunk → branch equals scratch; stop/resume equals uninterrupted (graphs,
    deterministic); graphed follows eager to float tolerance."""
    from critperiods.pipeline.trajectories import PieceSpec, train_piece
    from critperiods.train.training import Preempted

    data = synthetic(96 if sizes.full else 48, 3, 16 if sizes.full else 8, 4, device)
    full = len(data.train.labels) // 16  # batches per epoch (batch 16, none partial)
    rows, raw = [], {}
    for model in ("small_cnn", "all_cnn_c") if sizes.full else ("small_cnn",):
        cfg = TrainConfig(model, 4, 4, 0.05, 0.9, 5e-4, 0.9, augmentation=True)
        fast = replace(FastPath.for_device(device, "auto", deterministic=True, model=model),
                       cuda_graphs=True)  # on the CPU: the graphed step's code, eagerly
        bf16 = replace(fast, bf16=True)
        variants = (("graphed, deterministic", fast), ("graphed bf16, deterministic", bf16))
        for name, fp in variants if sizes.full else variants[:1]:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                prev = None
                for e in (0, 1, 2):
                    out = tmp / f"t{e}.pt"
                    train_piece(PieceSpec(16, (3,), ALWAYS_BLURRED, e, frozenset()), cfg, "h", data,
                                prev, out, device, progress=False, fast=fp)
                    prev = out
                branch = tmp / "b.pt"
                train_piece(PieceSpec(16, (3,), 2, 4, frozenset()), cfg, "h", data, prev,
                            branch, device, progress=False, fast=fp)
                # stopped before each of the last 3 batches of epoch 1: a job resumed there
                # captures its graph there (its warm-up steps must stay inside the epoch)
                resumed = []
                for stop in (2 * full - 3, 2 * full - 2, 2 * full - 1):
                    stopped = tmp / f"s{stop}.pt"
                    with contextlib.suppress(Preempted):
                        train_piece(PieceSpec(16, (3,), 2, 4, frozenset()), cfg, "h", data,
                                    None, stopped, device, progress=False, fast=fp,
                                    should_stop=stop_after(stop))
                    train_piece(PieceSpec(16, (3,), 2, 4, frozenset()), cfg, "h", data, None,
                                stopped, device, progress=False, fast=fp)
                    resumed.append(stopped)
                scratch = Trainer(cfg, data, 16, 3, device, fp)
                train_until(scratch, 4, 2, set(), [[]], "h", progress=False)
                want = scratch.state()
                from critperiods.pipeline.checkpoints import load_piece

                got = load_piece(branch, "h")["members"][0]["state"]
                resumed = [load_piece(r, "h")["members"][0]["state"] for r in resumed]
            same = _equal(got, want)
            same_resume = all(_equal(r, want) for r in resumed)
            raw[f"{model} {name}"] = {"branch_equals_scratch": same,
                                      "stopped_and_resumed_equals_scratch": same_resume}
            rows.append(f"| {model} | {name} | {'yes' if same else '**NO**'} "
                        f"| {'yes' if same_resume else '**NO**'} |")
        eager = Trainer(cfg, data, 16, 3, device, replace(fast, cuda_graphs=False))
        graphed = Trainer(cfg, data, 16, 3, device, fast)
        for t in (eager, graphed):
            train_until(t, 2, ALWAYS_BLURRED, set(), [[]], "h", progress=False)
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in
                   zip(eager.state()["model"].values(), graphed.state()["model"].values(),
                       strict=True))
        raw[f"{model} graphed vs eager max |Δw| after 2 epochs"] = diff
        rows.append(f"| {model} | graphed vs eager step, max abs weight difference after 2 "
                    f"epochs | {diff:.1e} | |")
    torch.use_deterministic_algorithms(False)  # process-wide: the timings run without it
    torch.backends.cudnn.deterministic = False
    lines = ["## Correctness on this device", "",
             "| model | path | branch from trunk = from scratch, bit for bit | stopped before "
             f"each of an epoch's last 3 batches (of {full}) and resumed = uninterrupted |",
             "|---|---|---|---|", *rows, ""]
    return lines, raw


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def matmul_rate(device: torch.device, smoke: bool) -> float:
    """Measured bf16 (CPU: fp32) FLOP/s of a large square matmul on random data."""
    dtype, size = (torch.bfloat16, 8192) if device.type == "cuda" and not smoke else (
        torch.float32, 256)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    reps = 10
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - start)


def step_flops(s: Setup, batch: int) -> float:
    """FLOPs of one forward + backward (torch's counter, on meta tensors: shapes only, so
    it costs no time of the budget)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    model = build_model(s.model, s.width, s.data.in_channels, s.data.image_size, 10, 0).to(meta)
    x = torch.empty(batch, s.data.in_channels, s.data.image_size, s.data.image_size, device=meta)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device=meta)).backward()
    return float(counter.get_total_flops())


def section_training(device: torch.device, sizes: Sizes, budget: Budget, cache: dict,
                     peak: float, order: list[tuple[str, int]], reserve: float
                     ) -> tuple[list[str], dict]:
    """The training table; stops starting new rows when less than ``reserve`` seconds
    (for the later sections) would be left."""
    workers = max(0, min(14, (os.cpu_count() or 2) - 2))
    raw: dict = {}
    rows, notes = [], []
    for model, batch in order:
        if budget.left() < 20 + reserve:
            rows.append(f"| {model} | {batch} | not measured (time budget) |||||||||")
            continue
        s = setup_for(model, sizes.widths[model], sizes, device, cache)
        try:  # one failed row (a DataLoader worker, a capture) must not lose the others
            loops: dict[str, object] = {
                name: ProjectLoop(Trainer(s.cfg, s.data, batch, 0, device, fp), device)
                for name, fp in paths(device, model).items()}
            loops["bare eager fp32"] = BareLoop(s, batch, device)
            if batch == sizes.dataloader_batch:
                loops[f"DataLoader fp32 ({workers} workers)"] = Fallible(
                    LoaderLoop, s, batch, device, workers)
            rates = interleaved(loops, sizes)
            failed = {k: v.error for k, v in loops.items() if getattr(v, "error", None)}
            notes += [f"* {model} at batch {batch}: {k} failed ({why}); its column is nan."
                      for k, why in failed.items()]
            notes += [f"* {model} at batch {batch}: {k} stepped eagerly (a capture failed, "
                      "see the warning): its column is not a graphed rate."
                      for k in uncaptured(loops)]
        except Exception as err:  # noqa: BLE001 - reported in the table and gpu.json
            if not sizes.full:
                raise  # the smoke run (make test) must fail loudly
            rows.append(f"| {model} | {batch} | failed: {type(err).__name__}: "
                        f"{first_line(err)} |||||||||")
            raw[f"{model} b{batch}"] = {"error": traceback.format_exc()[-3000:]}
            _free(device)
            continue
        finally:
            loops = {}
        default = default_name(device, model)
        flops = step_flops(s, batch) / batch
        m = {k: med(v) for k, v in rates.items()}
        raw[f"{model} b{batch}"] = {"images_per_s": rates, "default": default,
                                    "flop_per_image": flops, "failed": failed}
        loader = next((v for k, v in m.items() if k.startswith("DataLoader")), float("nan"))
        share = 100 * m[default] * flops / peak
        rows.append(
            f"| {model} w{s.width} | {batch} | {m['off (fp32 eager)']:,.0f} "
            f"| {m['auto before (bf16+CL eager)']:,.0f} | {m['graphed fp32']:,.0f} "
            f"| {m['graphed bf16']:,.0f} | {loader:,.0f} | {m['bare eager fp32']:,.0f} "
            f"| **{m[default] / m['auto before (bf16+CL eager)']:.2f}×** "
            f"| {m[default] / loader:.2f}× | {share:.1f} % |")
        _free(device)
    lines = [
        "## Training, images/s (one seed; medians of interleaved windows)", "",
        "Default = the graphed path in the precision `fast_path: auto` picks for the model "
        "(`BF16_PAYS_ON_CUDA`). Ratios: default over the previous `auto`, and over the "
        "DataLoader loop. Share: achieved FLOP/s of the default over the measured "
        "matmul rate.", "",
        "| model | batch | off (fp32 eager) | auto before (bf16 + CL, eager) | graphed fp32 "
        "| graphed bf16 | DataLoader fp32 | bare eager fp32 | default / auto before "
        "| default / DataLoader | share of matmul rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "", *notes,
        *([""] if notes else [])]
    return lines, raw


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def uncaptured(loops: dict[str, object]) -> list[str]:
    """The loops whose trainer meant to step from CUDA graphs but fell back to eager steps
    after a failed capture: their rates are not the graphed path's."""
    return [k for k, loop in loops.items() if isinstance(loop, ProjectLoop)
            and _captured(loop.trainer).startswith("no")]


def stacked_rates(s: Setup, batch: int, seeds: tuple[int, ...], device: torch.device,
                  sizes: Sizes, layouts: tuple[str, ...] = ("default",),
                  eager: list[str] | None = None) -> dict[str, list]:
    """images/s (all seeds) of the graphed default with S stacked seeds (S=1: Trainer);
    the keys that stepped eagerly after a failed capture are appended to ``eager``."""
    from critperiods.train import copies

    loops: dict[str, object] = {}
    for layout in layouts:
        for count in seeds:
            key = f"{count} seeds" + ("" if layout == "default" else f", {layout} layout")
            if count == 1 and layout != "default":
                continue
            saved = copies.LAYOUT_OVERRIDE
            if layout != "default":
                copies.LAYOUT_OVERRIDE = layout
            try:
                trainer = (Trainer(s.cfg, s.data, batch, 0, device) if count == 1 else
                           StackedTrainer(s.cfg, s.data, batch, list(range(count)), device))
            finally:
                copies.LAYOUT_OVERRIDE = saved
            loops[key] = ProjectLoop(trainer, device)
    rates = interleaved(loops, sizes)
    if eager is not None:
        eager += uncaptured(loops)
    return rates


def section_stacked(device: torch.device, sizes: Sizes, budget: Budget, cache: dict
                    ) -> tuple[list[str], dict]:
    raw, rows = {}, []
    mid = sizes.batches[len(sizes.batches) // 2]
    configs = list(dict.fromkeys([("small_cnn", mid), ("all_cnn_c", mid),
                                  ("all_cnn_c", sizes.batches[0])]))
    for model, batch in configs:
        if budget.left() < 25:
            rows.append(f"| {model} | {batch} | not measured (time budget) | | |")
            continue
        s = setup_for(model, sizes.widths[model], sizes, device, cache)
        layouts = ("default", "batch", "channels") if device.type == "cuda" \
            or model != "small_cnn" else ("default",)
        eager: list[str] = []
        rates = stacked_rates(s, batch, sizes.seeds, device, sizes, layouts, eager)
        raw[f"{model} b{batch}"] = rates
        one = med(rates[f"{sizes.seeds[0]} seeds"])
        for key, values in rates.items():
            rows.append(f"| {model} w{s.width} | {batch} | {key} | {med(values):,.0f} "
                        f"| {med(values) / one:.2f}×"
                        + (" (eager: a capture failed)" if key in eager else "") + " |")
        _free(device)
    lines = ["## Stacked seeds (graphed default), images/s of all seeds together", "",
             "Layout: the default for the model (`critperiods.train.copies.CUDA_LAYOUT`) unless "
             "named; `batch` = the copies folded into the batch, `channels` = one grouped "
             "convolution for all seeds.", "",
             "| model | batch | seeds | images/s (all seeds) | vs 1 seed |",
             "|---|---|---|---|---|", *rows, ""]
    return lines, raw


def section_fmnist(device: torch.device, sizes: Sizes, budget: Budget, cache: dict
                   ) -> tuple[list[str], dict]:
    raw, rows = {}, []
    seeds = 5 if sizes.full else 2
    for width in sizes.fmnist_widths:
        s = setup_for("small_cnn", width, sizes, device, cache)
        for batch in sizes.fmnist_batches:
            if budget.left() < 10:
                rows.append(f"| {width} | {batch} | not measured (time budget) |")
                continue
            rates = stacked_rates(s, batch, (seeds,), device, sizes)
            value = med(next(iter(rates.values())))
            raw[f"w{width} b{batch}"] = rates
            rows.append(f"| {width} | {batch} | {value:,.0f} |")
            _free(device)
    lines = [f"## Fashion-MNIST cost model: small_cnn on 28×28, {seeds} stacked seeds, graphed "
             "default (fp32), no augmentation", "",
             f"The rows of `critperiods.pipeline.cost.RATES[(\"{device.type}\", \"small_cnn\", "
             f"<width>, 28, {seeds})]`.", "",
             "| width | batch | images/s (all seeds together) |", "|---|---|---|", *rows, ""]
    return lines, raw


def compiled_trainer(s: Setup, batch: int, device: torch.device) -> Trainer:
    """The graphed default with ``compile`` on as well: on CUDA the model compiled by
    Inductor and captured inside the graphed step (``train.compile: true`` today replaces
    the graphs instead; making it this is a one-line change to ``FastPath.for_device`` once
    this measures faster). On the CPU (the smoke run) the ``eager`` backend, which traces
    without generating code, stands in for Inductor."""
    if device.type == "cuda":
        fast = replace(FastPath.for_device(device, model=s.model), compile=True)
        return Trainer(s.cfg, s.data, batch, 0, device, fast)
    trainer = Trainer(s.cfg, s.data, batch, 0, device)
    trainer.forward = torch.compile(trainer.model, backend="eager")
    return trainer


def _captured(trainer: Trainer) -> str:
    """Whether every phase the trainer stepped ran from a CUDA graph ('yes', 'no' after a
    failed capture, 'n/a' off CUDA), and whether ``torch.compile`` fell back to the eager
    model (then the "compile" rate is the eager one's)."""
    forward = getattr(trainer, "forward", None)
    fallback = (" (torch.compile failed: eager model, see the warning)"
                if getattr(forward, "checked", False) and forward.forward is forward.model
                else "")
    graphs = trainer.graphs
    if graphs is None or not graphs.capture:
        return "n/a" + fallback
    return ("yes" if graphs.graphs and all(g is not None for g in graphs.graphs.values())
            else "no (capture failed: eager steps)") + fallback


def _concurrent_worker(rank: int, model: str, width: int, batch: int, sizes: Sizes,
                       device_name: str, barrier, queue, windows: int, seconds: float) -> None:
    """One of K training processes sharing the device: warm up, then ``windows`` windows of
    about ``seconds`` each, started together (``barrier``); images/s of each window (only
    its timed steps) go to ``queue``."""
    try:
        device = torch.device(device_name)
        if device.type == "cpu":
            torch.set_num_threads(1)
        s = setup_for(model, width, sizes, device, {})
        loop = ProjectLoop(Trainer(s.cfg, s.data, batch, rank, device), device)
        loop.steps(WARMUP)
        chunk = max(1, min(10, loop.full - 2))
        rates = []
        for _ in range(windows):
            barrier.wait(timeout=300)
            start, timed, steps = time.perf_counter(), 0.0, 0
            while True:
                timed += loop.window(chunk)
                steps += chunk
                if time.perf_counter() - start >= seconds:
                    break
            rates.append(steps * loop.images_per_step / timed)
        queue.put((rank, rates))
    except Exception:  # noqa: BLE001 - the parent reports it
        queue.put((rank, traceback.format_exc()))
        barrier.abort()


def concurrent_rates(model: str, width: int, batch: int, processes: int, sizes: Sizes,
                     device: torch.device) -> list[float]:
    """Images/s of ``processes`` training processes together (the sum of their rates in
    each window they ran at the same time), one entry per window."""
    import multiprocessing
    from queue import Empty

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    windows = sizes.repeats
    seconds = max(sizes.window_s * 8, 0.01)
    procs = [ctx.Process(target=_concurrent_worker, args=(  # daemons: die with this process
        rank, model, width, batch, sizes, str(device), barrier, queue, windows, seconds),
        daemon=True) for rank in range(processes)]
    for proc in procs:
        proc.start()
    results: list = []
    try:
        deadline = time.monotonic() + 300
        while len(results) < len(procs):
            try:
                results.append(queue.get(timeout=5))
            except Empty:  # is a child dead without a word?
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"a training process died (exit codes {dead}) or "
                                       "timed out before reporting") from None
    finally:
        barrier.abort()  # a worker still waiting for one that died stops now, not in 300 s
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    errors = [r for _, r in results if isinstance(r, str)]
    if errors:
        raise RuntimeError(f"a training process failed:\n{errors[0]}")
    return [sum(r[w] for _, r in results) for w in range(windows)]


def _mps_running() -> bool:
    """Whether an NVIDIA MPS control daemon runs here (concurrent processes then share the
    GPU's SMs instead of taking turns)."""
    import subprocess

    try:
        done = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps-control"], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def section_levers(device: torch.device, sizes: Sizes, budget: Budget, cache: dict,
                   progress: Callable[[list[str], dict], None] | None = None
                   ) -> tuple[list[str], dict]:
    """The levers on the CIFAR grid's cost not yet measured (All-CNN-C w96, the grid's batch
    sizes): ``torch.compile`` inside the captured step, and several training processes
    sharing one GPU (``snakemake --resources gpu=K`` on a one-GPU machine). A row that fails
    says so and the others stand; ``progress(lines, raw)`` gets the tables so far after
    every row, so that a run stopped by its time limit keeps what it measured."""
    import torch._dynamo

    model, width = "all_cnn_c", sizes.widths["all_cnn_c"]
    batches = (64, 128, 256) if sizes.full else sizes.batches
    raw: dict = {"compile": {}, "processes": {}}
    rows = []
    # processes first: they compile nothing, so Inductor's cold compiles (counted in the
    # budget) cannot starve them
    counts = (1, 2, 4) if sizes.full else (1, 2)
    proc_rows = []
    proc_batch = 128 if sizes.full else sizes.batches[0]
    for count in counts:
        if budget.left() < 40:
            proc_rows.append(f"| {count} | not measured (time budget) | |")
            continue
        try:  # one failed count must not lose the rows measured before it
            rates = concurrent_rates(model, width, proc_batch, count, sizes, device)
        except Exception as err:  # noqa: BLE001 - report it in the table
            proc_rows.append(f"| {count} | failed: {first_line(err)} | |")
            continue
        raw["processes"][str(count)] = rates
        one = med(raw["processes"].get("1", [float("nan")]))
        proc_rows.append(f"| {count} | {med(rates):,.0f} | {med(rates) / one:.2f}× |")
        if progress is not None:
            progress(_lever_lines(rows, proc_rows, proc_batch), raw)
    s = setup_for(model, width, sizes, device, cache)
    for batch in batches:
        if budget.left() < 30:
            rows.append(f"| {batch} | not measured (time budget) | | |")
            continue
        try:  # a failed compile (or its recompile at an epoch's short batch) loses its row
            default = ProjectLoop(Trainer(s.cfg, s.data, batch, 0, device), device)
            compiled = compiled_trainer(s, batch, device)
            loops = {"graphed (default)": default,
                     "graphed + compile": ProjectLoop(compiled, device)}
            rates = interleaved(loops, sizes)
            captured = _captured(compiled)
        except Exception as err:  # noqa: BLE001 - reported in the table and the json
            if not sizes.full:
                raise  # the smoke run (make test) must fail loudly
            rows.append(f"| {batch} | failed: {type(err).__name__}: "
                        f"{first_line(err)} | | |")
            raw["compile_errors"] = {**raw.get("compile_errors", {}),
                                     f"b{batch}": traceback.format_exc()[-3000:]}
        else:
            m = {k: med(v) for k, v in rates.items()}
            raw["compile"][f"b{batch}"] = {"images_per_s": rates, "captured": captured}
            rows.append(f"| {batch} | {m['graphed (default)']:,.0f} | "
                        f"{m['graphed + compile']:,.0f} "
                        f"({m['graphed + compile'] / m['graphed (default)']:.2f}×) | "
                        f"{captured} |")
        finally:
            loops = default = compiled = None
            torch._dynamo.reset()  # the next batch size compiles afresh, with static shapes
            _free(device)
        if progress is not None:
            progress(_lever_lines(rows, proc_rows, proc_batch), raw)
    lines = _lever_lines(rows, proc_rows, proc_batch)
    try:  # the measurements above stand even where the projection cannot be made
        cost = _lever_cost(raw)
    except ImportError as err:  # the grid's config is YAML
        cost = [f"(grid cost not projected: {err}; the rates above stand)"]
    return lines + cost, raw


def _lever_lines(rows: list[str], proc_rows: list[str], proc_batch: int) -> list[str]:
    """The levers section's two tables (markdown lines)."""
    return [
        "## Levers on the CIFAR grid's cost (All-CNN-C w96)", "",
        "The model compiled by `torch.compile` (Inductor; on the CPU smoke run the `eager` "
        "backend) and captured inside the graphed step, beside the "
        "default graphed step; images/s of one seed, interleaved windows. `captured`: whether "
        "the step still ran from CUDA graphs.",
        "", "| batch | graphed (default) | graphed + compile | captured |", "|---|---|---|---|",
        *rows, "",
        f"Several training processes on one device at batch {proc_batch} (what `snakemake "
        "--resources gpu=K` does on a one-GPU workstation; on SLURM it needs the site's MPS "
        f"or GPU sharding). MPS daemon running: {'yes' if _mps_running() else 'no'}. "
        "Images/s of all processes together, each window started at the same time:", "",
        "| processes | images/s (all) | vs 1 |", "|---|---|---|", *proc_rows, ""]


def _lever_cost(raw: dict) -> list[str]:
    """The grid's GPU-hours from this section's own rates at the grid's batch sizes: the
    default, with compile, and with the best process count's gain (measured at batch 128,
    assumed at the others)."""
    config = cifar_config()
    epochs, batches = plan.epochs_trained(config, True), config["grid"]["batch_sizes"]

    def hours(name: str, gain: float = 1.0) -> float:
        rates = {int(k[1:]): med(v["images_per_s"][name]) for k, v in raw["compile"].items()}
        return grid_hours(config, rates, gain)

    if not raw["compile"]:
        return []
    out = [f"The grid ({epochs:,} epochs at batch sizes {batches}) at these rates: default "
           f"**{hours('graphed (default)'):.1f} GPU-hours**, with compile "
           f"**{hours('graphed + compile'):.1f}**"]
    procs = {int(k): med(v) for k, v in raw["processes"].items()}
    if 1 in procs and len(procs) > 1:
        count = max(procs, key=procs.get)
        gain = procs[count] / procs[1]
        out[0] += (f", with {count} processes per GPU ({gain:.2f}× at batch 128) "
                   f"**{hours('graphed (default)', gain):.1f}**")
    return [out[0] + ".", ""]


def llc_case(model: str, width: int, sizes: Sizes, device: torch.device, cache: dict):
    """A model a few SGD steps from init, in eval mode (as the λ̂ stage loads a checkpoint:
    BatchNorm reads its running statistics and no λ̂ or devinterp pass changes them), and
    its λ̂ data."""
    s = setup_for(model, width, sizes, device, cache)
    trainer = Trainer(s.cfg, s.data, 128 if sizes.full else 8, 0, device)
    trainer.train_epoch(ALWAYS_BLURRED, stop_after(30 if sizes.full else 2))
    net = trainer.model.float().to(memory_format=torch.contiguous_format).eval()
    n = min(sizes.llc_samples, len(s.data.train.labels))
    x = s.data.normalize(s.data.train.sharp[:n]).contiguous()
    y = s.data.train.labels[:n]
    return net, (x, y)


def section_llc(device: torch.device, sizes: Sizes, budget: Budget, cache: dict,
                devinterp: bool) -> tuple[list[str], dict]:
    from critperiods.measure import llc
    from critperiods.measure.llc import sampler
    from critperiods.measure.llc.descent import descent
    from critperiods.measure.llc.stability import TOLERANCE, sharpness
    from critperiods.train import copies

    raw, rows = {}, []
    cases = [("all_cnn_c", sizes.widths["all_cnn_c"]), ("small_cnn", sizes.widths["small_cnn"])]
    for model, width in cases:
        if budget.left() < 40:
            rows.append(f"| {model} | not measured (time budget) ||||||")
            continue
        net, data = llc_case(model, width, sizes, device, cache)
        burn = max(1, sizes.llc_records // 5)
        cfg = llc.LLCConfig(chains=4, draws=sizes.llc_records - burn, burn_in=burn,
                            step_size=1e-5, gamma=1000.0, batch_size=sizes.llc_batch)
        variants: dict[str, Callable[[], float]] = {}
        estimates: dict[str, float] = {}  # λ̂ of the last timed run: bf16 vs float32 passes

        def ours(name: str, chains: int, layout: str, graphs: bool, precision: str = "float32",
                 c=cfg, m=net, d=data, estimates=estimates):
            def timed(warm: bool = False) -> float:
                saved = copies.LAYOUT_OVERRIDE, sampler.SGLD_CUDA_GRAPHS
                copies.LAYOUT_OVERRIDE, sampler.SGLD_CUDA_GRAPHS = layout, graphs
                conf = replace(c, chains=chains, precision=precision,
                               **({"burn_in": 1, "draws": 3} if warm else {}))
                try:
                    sync(device)
                    start = time.perf_counter()
                    result = llc.estimate_llc(m, F.cross_entropy, d, conf, progress=False,
                                              workers=1)
                    sync(device)
                    seconds = time.perf_counter() - start
                    if not warm:
                        estimates[name] = result.llc_mean
                    return seconds
                finally:
                    copies.LAYOUT_OVERRIDE, sampler.SGLD_CUDA_GRAPHS = saved
            return timed

        def add(name: str, *args, variants=variants) -> None:
            variants[name] = ours(name, *args)

        for chains in sizes.chains:
            for layout in ("batch", "channels"):
                add(f"{chains} chains, graphed, {layout} layout", chains, layout, True)
            add(f"{chains} chains, graphed, batch layout, bf16 passes", chains, "batch", True,
                "bfloat16")
        add(f"{sizes.chains[0]} chains, eager (before), channels layout", sizes.chains[0],
            "channels", False)
        if devinterp:
            def theirs(warm: bool = False, c=cfg, m=net, d=data) -> float:
                conf = replace(c, chains=sizes.chains[0],
                               **({"burn_in": 1, "draws": 3} if warm else {}))
                return run_devinterp13(m, d, conf, device)

            variants[f"{sizes.chains[0]} chains, devinterp 1.3.2"] = theirs

        def drift(warm: bool = False, c=cfg, m=net, d=data) -> float:
            """``llc.descent``'s job at one checkpoint: one noise-free path on the full
            batch of the λ̂ data, as many steps as a chain takes."""
            conf = replace(c, chains=1, **({"burn_in": 1, "draws": 3} if warm else {}))
            sync(device)
            start = time.perf_counter()
            descent(m, F.cross_entropy, d, conf, progress=False)
            sync(device)
            return time.perf_counter() - start

        variants["descent: one full-batch path, no noise (llc.descent)"] = drift

        def stability(warm: bool = False, m=net, d=data, c=cfg) -> float:
            """The llc stage's stability check at one checkpoint: the top eigenvalue of
            the loss's Hessian by Lanczos, on the default ``llc.stability_samples``, and the
            curvature's spread along it over the sampler's minibatches."""
            sync(device)
            start = time.perf_counter()
            sharpness(m, F.cross_entropy, d, batch_size=c.batch_size,
                      tolerance=0.5 if warm else TOLERANCE)
            sync(device)
            return time.perf_counter() - start

        check = "stability check: top Hessian eigenvalue and its noise (llc_sharpness, _sd)"
        variants[check] = stability
        errors: dict[str, str] = {}
        for key, run in list(variants.items()):  # warm-up (cuDNN, first shapes, capture)
            if budget.left() < 20:  # per variant: a slow one must not starve the sections after
                errors[key] = "not measured (time budget)"
                del variants[key]
                continue
            try:
                run(warm=True)
            except Exception as err:  # noqa: BLE001 - report it, time the others
                errors[key] = f"{type(err).__name__}: {err}"[:300]
                del variants[key]
        times: dict[str, list[float]] = {k: [] for k in variants}
        for repeat in range(2 if sizes.full else 1):
            for key, run in variants.items():
                if repeat == 0 or budget.left() > 30:  # a second pass only with time left
                    times[key].append(run())
        raw[model] = {"seconds": times, "steps": cfg.burn_in + cfg.draws, "errors": errors,
                      "batch": cfg.batch_size, "samples": data[0].shape[0],
                      "llc": estimates}
        steps = cfg.burn_in + cfg.draws
        for key, values in times.items():
            value = estimates.get(key, float("nan"))
            rows.append(f"| {model} w{width} | {key} | {steps} | {med(values):.2f} "
                        f"| {1000 * med(values) / steps:.1f} | "
                        f"{'-' if math.isnan(value) else f'{value:.4g}'} |")
        rows += [f"| {model} w{width} | {key} | - | "
                 f"{err if err.startswith('not measured') else f'failed: {err}'} | | |"
                 for key, err in errors.items()]
        _free(device)
    lines = ["## λ̂: SGLD chains (batch per chain "
             f"{sizes.llc_batch}, n = {sizes.llc_samples}, float32 chain state; `bf16 passes` = "
             "`llc.precision: bfloat16`). λ̂: the estimate of the last timed run (a chain "
             "draws the same noise whatever the layout, so float32 rows with the same chain "
             "count agree to round-off; bf16 passes show how far bf16 moves λ̂; a run this "
             "short is not converged). The descent row is `llc_descent`'s work at one "
             "checkpoint and seed, a full-batch pass over the n images per step: "
             "`runtime.minutes_per_descent_checkpoint` can be read off it. The stability "
             "check row is what the llc stage adds per checkpoint and seed (its steps "
             "column is not steps).", "",
             "| model | sampler | steps | seconds (median) | ms per step | λ̂ |",
             "|---|---|---|---|---|---|", *rows, ""]
    return lines, raw


def run_devinterp13(model, data, cfg, device: torch.device) -> float:
    """devinterp 1.3.2's ``estimate_learning_coeff_with_summary`` on the same model, data and
    settings; data as whole GPU-resident minibatches (no per-sample collation)."""
    import math
    import warnings

    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    x, y = data
    n = x.shape[0]

    class Batches(torch.utils.data.Dataset):
        """Whole minibatches straight from the device tensors: ``__getitems__`` takes a batch's
        indices at once, so there is no per-sample collation."""

        def __len__(self) -> int:
            return n

        def __getitems__(self, idx: list[int]):
            idx = torch.as_tensor(idx, device=x.device)
            return x[idx], y[idx]

    # A real ``batch_size``: devinterp 1.3.2 evaluates ``default_nbeta(loader)``, i.e.
    # ``loader.batch_size * grad_accum_steps``, even when ``nbeta`` is passed (a TypeError
    # with ``batch_size=None``, which is what the first GPU run hit).
    loader = torch.utils.data.DataLoader(Batches(), batch_size=cfg.batch_size, shuffle=True,
                                         drop_last=True, collate_fn=lambda batch: batch)
    def evaluate(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1])

    from critperiods.measure.llc.sampler import cuda_numerics

    # the numerics ours runs under (float32 without TF32, deterministic cuDNN, no autotuning),
    # not whatever an earlier section left switched on
    with warnings.catch_warnings(), cuda_numerics(device, "float32"):
        warnings.simplefilter("ignore")
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():  # L_n(w*) on all n samples, timed as ours is (estimate_llc)
            init_loss = float(sum(F.cross_entropy(model(x[i:i + 1024]), y[i:i + 1024],
                                                  reduction="sum")
                                  for i in range(0, n, 1024)) / n)
        estimate_learning_coeff_with_summary(
            model, loader=loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs={"lr": cfg.step_size, "nbeta": n / math.log(n),
                              "localization": cfg.gamma},
            num_chains=cfg.chains, num_draws=cfg.draws, num_burnin_steps=cfg.burn_in,
            num_steps_bw_draws=1, init_loss=init_loss, device=device, online=False,
            verbose=False)
        sync(device)
        return time.perf_counter() - start


def section_cost(raw_stacked: dict, raw_training: dict, sizes: Sizes) -> list[str]:
    """The CIFAR-10 grid's GPU-hours from the measured All-CNN rates."""
    config = cifar_config()
    epochs = plan.epochs_trained(config, True)
    images = 50_000
    lines = ["## Cost of the CIFAR-10 grid (`configs/cifar10_achille.yaml`)", "",
             f"{epochs:,} SGD epochs of {images:,} images (trunk sharing on), All-CNN-C w96, "
             "λ̂ and evaluation not included.", ""]
    raw_training = {k: v for k, v in raw_training.items() if "images_per_s" in v}  # not failed
    b128 = raw_training.get("all_cnn_c b128")
    if b128:
        m = {k: med(v) for k, v in b128["images_per_s"].items()}
        for name in ("auto before (bf16+CL eager)", b128["default"]):
            hours = epochs * images / m[name] / 3600
            lines.append(f"* one seed per job, {name}, at batch 128's rate: **{hours:.1f} "
                         "GPU-hours**")
    measured = {int(key.split(" b")[1]): med(v["images_per_s"][v["default"]])
                for key, v in raw_training.items() if key.startswith("all_cnn_c b")}
    if measured:
        batches = config["grid"]["batch_sizes"]
        hours = grid_hours(config, measured)
        lines.append(f"* one seed per job, the default, each of the grid's batch sizes "
                     f"{batches} at its own rate (log-log interpolated between the measured "
                     f"batches {sorted(measured)}, the nearest one beyond them): "
                     f"**{hours:.1f} GPU-hours**")
    stacked = raw_stacked.get("all_cnn_c b128")
    if stacked and "5 seeds" in stacked:
        rate = med(stacked["5 seeds"])
        lines.append(f"* 5 seeds stacked per job (the grid's 5 seeds; `seeds_per_job: auto`), "
                     f"at batch 128's rate: **{epochs * images / rate / 3600:.1f} GPU-hours**")
    elif stacked is None:
        lines.append("* stacked: not measured in this run")
    return lines + [""]


def grid_hours(config: dict, rates: dict[int, float], gain: float = 1.0) -> float:
    """GPU-hours of the grid's epochs of 50,000 images, shared equally by its batch sizes,
    each at its own rate (:func:`rate_at` of ``rates``) times ``gain``."""
    epochs, batches = plan.epochs_trained(config, True), config["grid"]["batch_sizes"]
    return sum(epochs / len(batches) * 50_000 / (gain * rate_at(b, rates)) / 3600
               for b in batches)


def rate_at(batch: int, rates: dict[int, float]) -> float:
    """Images/s at ``batch`` from rates measured at other batch sizes: linear in
    log(batch) vs log(rate) between the two nearest, the nearest one's beyond them."""
    known = sorted(rates)
    if batch <= known[0] or batch >= known[-1]:
        return rates[known[0] if batch <= known[0] else known[-1]]
    hi = next(b for b in known if b >= batch)
    lo = max(b for b in known if b <= batch)
    if hi == lo:
        return rates[lo]
    t = math.log(batch / lo) / math.log(hi / lo)
    return math.exp((1 - t) * math.log(rates[lo]) + t * math.log(rates[hi]))


def cifar_config() -> dict:
    """``config.yaml`` with ``configs/cifar10_achille.yaml`` over it: the grid costed here."""
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    _merge(config, yaml.safe_load((ROOT / "configs/cifar10_achille.yaml").read_text()))
    return config


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def devinterp_available() -> bool:
    try:
        import devinterp.slt.sampler  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure: not measured
        return False
    return True


def main() -> None:
    # before the first cuBLAS call (the matmul rate): the correctness section's
    # deterministic runs need it set in a process whose cuBLAS handles predate them
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU by default)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--budget-s", type=float, default=270.0)
    parser.add_argument("--reserve-s", type=float, default=130.0,
                        help="seconds the training table leaves for the later sections")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated (default {','.join(DEFAULT_SECTIONS)}; "
                             "--smoke: these and levers)")
    parser.add_argument("--batches", default="", help="training batch sizes (default 32,128,512)")
    parser.add_argument("--chains", default="", help="λ̂ chain counts (default 4,8,16)")
    args = parser.parse_args()
    if not args.smoke and args.device is None and not torch.cuda.is_available():
        # the full sizes on a CPU would spend the whole budget on the first rows
        raise SystemExit("bench_gpu: no CUDA device visible to torch "
                         f"{torch.__version__}; the full run is for a GPU (--smoke for the "
                         "CPU, --device cpu to force it)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke
                                          else "cpu"))
    sizes = SMOKE if args.smoke else FULL
    if args.batches:
        sizes = replace(sizes, batches=tuple(int(b) for b in args.batches.split(",")))
    if args.chains:
        sizes = replace(sizes, chains=tuple(int(c) for c in args.chains.split(",")))
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny sizes: threads only contend
    budget = Budget(args.budget_s)
    sections = (args.sections.split(",") if args.sections else
                [*DEFAULT_SECTIONS, *(["levers"] if args.smoke else [])])
    out = Path(args.out)
    # a levers-only run writes beside the main tables, not over them
    stem = "gpu_levers" if set(sections) == {"levers"} else "gpu"
    out.mkdir(parents=True, exist_ok=True)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU ({os.cpu_count()} cores)")
    head = [f"# GPU benchmark ({'smoke, tiny sizes' if args.smoke else 'full'})", "",
            f"{time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, "
            f"{'devinterp 1.3.2 present' if devinterp_available() else 'devinterp not present'}"
            ".", ""]
    parts: dict[str, list[str]] = {}
    raw: dict = {"device": name, "torch": torch.__version__}

    def save() -> None:
        order = [s for s in ("correctness", "training", "stacked", "fmnist", "llc", "cost",
                             "levers")
                 if s in parts]
        text = "\n".join(head + [line for s in order for line in parts[s]]) + "\n"
        (out / f"{stem}.md").write_text(text)
        (out / f"{stem}.json").write_text(json.dumps(raw, indent=1, default=str))

    def run(section: str, fn: Callable[[], tuple[list[str], dict]]) -> None:
        if section not in sections:
            return
        start = time.perf_counter()
        try:
            parts[section], raw[section] = fn()
        except Exception:  # noqa: BLE001 - report it, keep the other sections
            # after what the section saved as it went (levers), if anything
            parts[section] = [*parts.get(section, []), f"## {section}: FAILED", "", "```",
                              traceback.format_exc()[-3000:], "```", ""]
            raw[section] = {**raw.get(section, {}), "error": traceback.format_exc()}
            if args.smoke:
                save()
                raise
        print(f"[{section}: {time.perf_counter() - start:.0f} s]", flush=True)
        save()

    cache: dict = {}
    peak = matmul_rate(device, args.smoke)
    raw["matmul_flops"] = peak
    head.insert(3, f"Measured {'bf16' if device.type == 'cuda' else 'fp32'} matmul rate: "
                   f"{peak / 1e12:.1f} TFLOP/s.\n")
    mid = sizes.batches[len(sizes.batches) // 2]
    first = [("all_cnn_c", mid), ("resnet18", mid)]
    rest = [(m, b) for m in ("all_cnn_c", "resnet18", "small_cnn") for b in sizes.batches
            if (m, b) not in first]
    run("training", lambda: section_training(device, sizes, budget, cache, peak, first + rest,
                                             args.reserve_s))
    run("llc", lambda: section_llc(device, sizes, budget, cache, devinterp_available()))
    run("stacked", lambda: section_stacked(device, sizes, budget, cache))
    run("fmnist", lambda: section_fmnist(device, sizes, budget, cache))
    run("cost", lambda: (section_cost(raw.get("stacked", {}), raw.get("training", {}), sizes),
                         {}))
    def levers_so_far(lines: list[str], measured: dict) -> None:  # kept if the run is cut
        parts["levers"], raw["levers"] = [*lines, "(section still running)", ""], measured
        save()

    run("levers", lambda: section_levers(device, sizes, budget, cache, levers_so_far))
    # last: it switches on deterministic algorithms, and a failure there must not leave
    # the process in a state that spoils the timings
    run("correctness", lambda: section_correctness(device, sizes))
    save()
    print((out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
