"""Training benchmarks (not a test): throughput, trunk sharing, seeds per job.

1. images/s of the project's loop (device-resident uint8 tensors, whole-batch
   augmentation and blur, channels-last) vs a plain torchvision ``Dataset`` +
   ``DataLoader(num_workers=…)`` + transforms loop: same model, data, batch size and
   step count, interleaved (ABAB…), median ratio; at 1 intra-op thread (what a
   pipeline job uses by default) and at all cores.
2. Trunk sharing: SGD epochs a grid costs with and without sharing (from the plan),
   checked against the jobs the DAG actually plans (``snakemake -n``), for
   ``config.yaml`` and the CIFAR-10 replication config; wall time of one
   ``(batch_size, seed)`` trunk and its branches of the default trained both ways.
3. Seeds per job: S seeds trained as one stacked model vs S single-seed trainers one
   after another, for S = 1, 2, 4 (interleaved, median), at each batch size of the
   default grid (32 and 128).

Usage: ``python bench/bench_training.py [--repeats 3] [--steps 150]``; writes
``bench/out/training.md``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
sys.path.insert(0, str(ROOT))

from critperiods.pipeline import layout, plan  # noqa: E402
from critperiods.train.data import PreparedData, blur, prepare  # noqa: E402
from critperiods.train.stacked import StackedTrainer  # noqa: E402
from critperiods.train.training import ALWAYS_BLURRED, TrainConfig, Trainer  # noqa: E402


def run_steps(trainer, steps: int) -> None:
    """Take ``steps`` SGD steps on blurred data (wrapping around epochs)."""
    per_epoch = -(-len(trainer.data.train.labels) // trainer.batch_size)
    done = 0
    while done < steps:
        stop_at = min(steps - done, per_epoch - trainer.batch_in_epoch)
        count = {"n": 0}

        def should_stop(count=count, stop_at=stop_at) -> bool:
            count["n"] += 1
            return count["n"] >= stop_at

        trainer.train_epoch(ALWAYS_BLURRED, should_stop)
        done += stop_at


WARMUP_STEPS = 10  # excluded from every timing (worker start-up, first-batch caches)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def project_loop(data: PreparedData, cfg: TrainConfig, batch_size: int, steps: int,
                 device: torch.device = CPU) -> float:
    """images/s of :class:`Trainer` on blurred data for ``steps`` steps (after warm-up)."""
    trainer = Trainer(cfg, data.to(device), batch_size, seed=0, device=device)
    run_steps(trainer, WARMUP_STEPS)
    _sync(device)
    start = time.perf_counter()
    run_steps(trainer, steps)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


class BlurredImages(torch.utils.data.Dataset):
    """The usual per-sample pipeline: uint8 image → float → normalise → blur."""

    def __init__(self, data: PreparedData, blur_size: int) -> None:
        self.images, self.labels = data.train.sharp, data.train.labels
        self.mean, self.std, self.blur_size = data.mean, data.std, blur_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = (self.images[i].float() / 255 - self.mean[:, None, None]) / self.std[:, None, None]
        return blur(x[None], self.blur_size)[0], self.labels[i]


def dataloader_loop(data: PreparedData, cfg: TrainConfig, batch_size: int, steps: int,
                    workers: int, device: torch.device = CPU) -> float:
    """images/s of a textbook DataLoader loop with the same model and optimizer."""
    from critperiods.train.models import build_model

    model = build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, 0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(BlurredImages(data, cfg.blur_size), batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    done, start = 0, 0.0
    while done < WARMUP_STEPS + steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == WARMUP_STEPS:
                _sync(device)
                start = time.perf_counter()
            if done == WARMUP_STEPS + steps:
                break
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def step_flops(data: PreparedData, cfg: TrainConfig, batch_size: int) -> int:
    """FLOPs of one forward + backward of the model on a batch (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from critperiods.train.models import build_model

    model = build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, 0)
    x = torch.randn(batch_size, data.in_channels, data.image_size, data.image_size)
    y = torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Measured FLOP/s of a square matmul: the device's practical limit for this dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def hardware_limit(setup: tuple, batch_size: int, images_per_s: float,
                   device: torch.device) -> str:
    """One sentence: achieved FLOP/s of the training step vs the matmul rate."""
    _, data, cfg = setup
    flops = step_flops(data, cfg, batch_size)
    achieved = flops * images_per_s / batch_size
    dtype, size = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 1024)
    peak = matmul_rate(device, dtype, size)
    return (f"On {device.type} ({torch.get_num_threads()} threads): the model's forward + "
            f"backward is {flops / 1e6:.0f} MFLOP per batch of {batch_size}, so "
            f"{images_per_s:.0f} images/s is {achieved / 1e9:.1f} GFLOP/s against a measured "
            f"{str(dtype).removeprefix('torch.')} {size}² matmul rate of {peak / 1e9:.0f} "
            f"GFLOP/s ({100 * achieved / peak:.0f}%).")


def default_setup() -> tuple[dict, PreparedData, TrainConfig]:
    """The default experiment's config, prepared data and training config."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ds = config["dataset"]
    data = prepare(ds["name"], ds["root"], ds["train_subset"], 1000, ds["blur_size"])
    opt = config["optimizer"]
    cfg = TrainConfig(config["model"]["name"], config["model"]["width"], ds["blur_size"],
                      opt["lr"], opt["momentum"], opt["weight_decay"], opt["lr_decay"])
    return config, data, cfg


def throughput(setup: tuple, repeats: int, steps: int, batch_size: int, workers: int,
               threads: list[int]) -> list[str]:
    """Project loop vs DataLoader loop, interleaved, at each CPU thread count (and on CUDA
    when present), with the achieved FLOP/s against the matmul rate."""
    config, data, cfg = setup
    lines = [
        f"### Training throughput ({config['model']['name']} width "
        f"{config['model']['width']}, batch {batch_size}, {steps} steps after "
        f"{WARMUP_STEPS} warm-up, {repeats} interleaved repeats)", "",
        "| device, intra-op threads | critperiods images/s | DataLoader(num_workers="
        f"{workers}) images/s | ratio (median of pairs) |",
        "|---|---|---|---|",
    ]
    runs = [(CPU, n) for n in threads]
    if torch.cuda.is_available():
        runs.append((torch.device("cuda"), threads[-1]))
    notes, best = [], {}
    for device, n in runs:
        torch.set_num_threads(n)
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            ours.append(project_loop(data, cfg, batch_size, steps, device))
            theirs.append(dataloader_loop(data, cfg, batch_size, steps, workers, device))
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        lines.append(f"| {device.type}, {n} | {statistics.median(ours):.0f} "
                     f"| {statistics.median(theirs):.0f} "
                     f"| **{statistics.median(ratios):.2f}×** |")
        notes.append(hardware_limit(setup, batch_size, statistics.median(ours), device))
        if device == CPU:
            best[n] = (statistics.median(ours), statistics.median(theirs))
    ours_best = max(best.items(), key=lambda kv: kv[1][0])
    theirs_best = max(best.items(), key=lambda kv: kv[1][1])
    notes.insert(0, f"Best CPU setting of each loop: critperiods {ours_best[1][0]:.0f} images/s "
                    f"({ours_best[0]} threads) vs DataLoader {theirs_best[1][1]:.0f} images/s "
                    f"({theirs_best[0]} threads): **{ours_best[1][0] / theirs_best[1][1]:.2f}×**.")
    return lines + [""] + notes + [""]


def sharing_wall_time(setup: tuple, batch_size: int) -> list[str]:
    """Train the runs of one (batch_size, seed) of the default grid with and without trunk
    sharing."""
    config, data, cfg = setup
    switches = config["grid"]["switch_epochs"]

    def train(trainer: Trainer, end: int, switch: int) -> None:
        while trainer.epoch < end:
            trainer.train_epoch(switch)

    start = time.perf_counter()
    trunk, states = Trainer(cfg, data, batch_size, 0), {}
    for epoch in range(plan.trunk_end(config) + 1):
        train(trunk, epoch, ALWAYS_BLURRED)
        if epoch in switches:
            states[epoch] = trunk.state()
    for k in switches:
        branch = Trainer(cfg, data, batch_size, 0)
        branch.load_state(states[k])
        train(branch, plan.run_end(config, k), k)
    shared = time.perf_counter() - start
    start = time.perf_counter()
    for k in switches:
        train(Trainer(cfg, data, batch_size, 0), plan.run_end(config, k), k)
    scratch = time.perf_counter() - start
    trunks = len(config["grid"]["batch_sizes"]) * len(config["grid"]["seeds"])
    return [
        f"Wall time of the runs of one trunk of `config.yaml` (batch {batch_size}, seed 0, "
        f"{torch.get_num_threads()} thread; in-process training only, no job start-up): "
        f"{shared:.0f} s with sharing ({plan.epochs_trained(config, True) // trunks} epochs) "
        f"vs {scratch:.0f} s from scratch ({plan.epochs_trained(config, False) // trunks} "
        f"epochs): **{scratch / shared:.2f}×**.", "",
    ]


def seeds_per_job(setup: tuple, repeats: int, steps: int, batch_size: int,
                  sizes: list[int]) -> list[str]:
    """S seeds as one stacked model vs S single-seed trainers in turn, interleaved."""
    _, data, cfg = setup
    lines = [
        f"### Seeds per job (CPU, {torch.get_num_threads()} thread, batch {batch_size}, "
        f"{steps} steps per seed, {repeats} interleaved repeats)", "",
        "| seeds | stacked s | one after another s | speed-up (median of pairs) |",
        "|---|---|---|---|",
    ]
    for size in sizes:
        stacked, sequential = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            run_steps(StackedTrainer(cfg, data, batch_size, list(range(size))), steps)
            stacked.append(time.perf_counter() - start)
            start = time.perf_counter()
            for seed in range(size):
                run_steps(Trainer(cfg, data, batch_size, seed), steps)
            sequential.append(time.perf_counter() - start)
        ratios = [b / a for a, b in zip(stacked, sequential, strict=True)]
        lines.append(f"| {size} | {statistics.median(stacked):.2f} "
                     f"| {statistics.median(sequential):.2f} "
                     f"| {statistics.median(ratios):.2f}× |")
    return lines + [""]


def planned_training_jobs(configfile: Path | None) -> list[tuple[str, dict[str, str]]]:
    """``(rule, wildcards)`` of every training job of a dry run from scratch (in a throw-away
    results folder)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--config", "results_dir=/tmp/cp-bench-none"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    jobs = []
    rules = r"train_trunk|train_branch|train_reference"
    for rule, body in re.findall(rf"^rule ({rules}):\n((?:    .*\n)+)", out, re.M):
        found = re.search(r"^    wildcards: (.*)$", body, re.M)
        jobs.append((rule, dict(w.split("=", 1) for w in found.group(1).split(", "))))
    return jobs


def dag_epochs(config: dict, jobs: list[tuple[str, dict[str, str]]]) -> int:
    """Epochs of SGD, per seed, that the planned training jobs run: a trunk segment
    ``trunk_stride`` epochs (the first, e0, none), a branch from its switch to its run's end,
    a segment of the never-blurred run's continuation from its start
    (``plan.reference_start``), each times the seeds of its group."""
    total = 0
    for rule, w in jobs:
        seeds = len(layout.group_seeds(w["group"]))
        if rule == "train_trunk":
            total += (config["trunk_stride"] if int(w["epoch"]) > 0 else 0) * seeds
        elif rule == "train_reference":
            total += (int(w["epoch"]) - plan.reference_start(config, int(w["epoch"]))[1]) * seeds
        else:
            total += config["epochs_after_switch"] * seeds
    return total


def sharing(configfile: Path | None) -> list[str]:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if configfile:
        from snakemake.utils import update_config

        update_config(config, yaml.safe_load(configfile.read_text()))
    from snakemake.utils import validate

    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    shared, scratch = plan.epochs_trained(config, True), plan.epochs_trained(config, False)
    planned = planned_training_jobs(configfile)
    from_dag = dag_epochs(config, planned)
    rules = ("train_trunk", "train_branch", "train_reference")
    jobs = [str(sum(r == rule for r, _ in planned)) for rule in rules]
    return [f"| {config['experiment']} | {shared} | {from_dag} | {scratch} | "
            f"{scratch / shared:.2f}× | {' + '.join(jobs)} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts to compare")
    parser.add_argument("--seeds", default="1,2,4", help="seeds per job to compare")
    parser.add_argument("--seeds-batch-sizes", default="32,128",
                        help="batch sizes for the seeds-per-job table (config.yaml's grid)")
    parser.add_argument("--skip-wall-time", action="store_true",
                        help="skip the (2-minute) trunk-sharing wall-time measurement")
    args = parser.parse_args()
    setup = default_setup()
    lines = throughput(setup, args.repeats, args.steps, args.batch_size, args.workers,
                       [int(n) for n in args.threads.split(",")])
    torch.set_num_threads(1)  # what a pipeline job uses by default (train.threads)
    for batch_size in (int(b) for b in args.seeds_batch_sizes.split(",")):
        lines += seeds_per_job(setup, args.repeats, args.steps, batch_size,
                               [int(n) for n in args.seeds.split(",")])
    lines += [
        "### Trunk sharing (SGD epochs for the whole grid)", "",
        "| config | with sharing (plan) | with sharing (counted from the DAG's jobs) "
        "| every run from scratch | saving | trunk + branch + reference jobs |",
        "|---|---|---|---|---|---|",
    ]
    lines += sharing(None)
    lines += sharing(ROOT / "configs/cifar10_achille.yaml")
    lines += [""]
    if not args.skip_wall_time:
        lines += sharing_wall_time(setup, args.batch_size)
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench/out/training.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
