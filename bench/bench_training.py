"""Training throughput and trunk-sharing benchmarks (not a test).

1. images/s of the project's loop (device-resident uint8 tensors, whole-batch
   augmentation and blur, channels-last) vs a plain torchvision ``Dataset`` +
   ``DataLoader(num_workers=…)`` + transforms loop: same model, data, batch size and
   step count, interleaved (ABAB…), median ratio.
2. Trunk sharing: SGD epochs a grid costs with and without sharing (from the plan),
   checked against the jobs the DAG actually plans (``snakemake -n``), for
   ``config.yaml`` and the CIFAR-10 replication config.

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
sys.path.insert(0, str(ROOT))

from critperiods import plan  # noqa: E402
from critperiods.data import PreparedData, blur, prepare  # noqa: E402
from critperiods.training import TrainConfig, Trainer  # noqa: E402


def project_loop(data: PreparedData, cfg: TrainConfig, batch_size: int, steps: int) -> float:
    """images/s of :class:`Trainer` on blurred data for ``steps`` steps (one partial epoch)."""
    trainer = Trainer(cfg, data, batch_size, seed=0)
    n = steps * batch_size
    start = time.perf_counter()
    done = 0
    while done < steps:
        stop_at = done + min(steps - done, len(data.train.labels) // batch_size)
        count = {"n": done}

        def should_stop(count=count, stop_at=stop_at) -> bool:
            count["n"] += 1
            return count["n"] >= stop_at

        trainer.train_epoch(10**9, should_stop)
        done = stop_at
        trainer.batch_in_epoch = 0
    return n / (time.perf_counter() - start)


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
                    workers: int) -> float:
    """images/s of a textbook DataLoader loop with the same model and optimizer."""
    from critperiods.models import build_model

    model = build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, 0)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(BlurredImages(data, cfg.blur_size), batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    start = time.perf_counter()
    done = 0
    while done < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def throughput(repeats: int, steps: int, batch_size: int, workers: int) -> list[str]:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ds = config["dataset"]
    data = prepare(ds["name"], ds["root"], ds["train_subset"], 1000, ds["blur_size"])
    cfg = TrainConfig(config["model"]["name"], config["model"]["width"], ds["blur_size"],
                      0.05, 0.9, 5e-4, 0.85)
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        ours.append(project_loop(data, cfg, batch_size, steps))
        theirs.append(dataloader_loop(data, cfg, batch_size, steps, workers))
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return [
        f"### Training throughput (CPU, {torch.get_num_threads()} threads, "
        f"{config['model']['name']} width {config['model']['width']}, batch {batch_size}, "
        f"{steps} steps, {repeats} interleaved repeats)",
        "",
        "| loop | images/s (median) |",
        "|---|---|",
        f"| critperiods (device-resident tensors, batched blur, channels-last) "
        f"| {statistics.median(ours):.0f} |",
        f"| torchvision Dataset + DataLoader(num_workers={workers}) "
        f"| {statistics.median(theirs):.0f} |",
        f"| **ratio (median of per-pair ratios)** | **{statistics.median(ratios):.2f}×** |",
        "",
    ]


def planned_training_jobs(configfile: Path | None) -> dict[str, int]:
    """Job counts of a dry run from scratch (in a throw-away results folder)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--config", "results_dir=/tmp/cp-bench-none"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


def sharing(configfile: Path | None) -> list[str]:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if configfile:
        from snakemake.utils import update_config

        update_config(config, yaml.safe_load(configfile.read_text()))
    from snakemake.utils import validate

    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    shared, scratch = plan.epochs_trained(config, True), plan.epochs_trained(config, False)
    jobs = planned_training_jobs(configfile)
    cells = len(config["grid"]["batch_sizes"]) * len(config["grid"]["seeds"])
    stride = config["trunk_stride"]
    # every trunk job but e0 trains `stride` epochs; every branch `epochs_after_switch`
    from_dag = ((jobs.get("train_trunk", 0) - cells) * stride
                + jobs.get("train_branch", 0) * config["epochs_after_switch"])
    return [f"| {config['experiment']} | {shared} | {from_dag} | {scratch} | "
            f"{scratch / shared:.2f}× | {jobs.get('train_trunk', 0)} + "
            f"{jobs.get('train_branch', 0)} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = throughput(args.repeats, args.steps, args.batch_size, args.workers)
    lines += [
        "### Trunk sharing (SGD epochs for the whole grid)", "",
        "| config | with sharing (plan) | with sharing (counted from the DAG's jobs) "
        "| every run from scratch | saving | trunk + branch jobs |",
        "|---|---|---|---|---|---|",
    ]
    lines += sharing(None)
    lines += sharing(ROOT / "configs/cifar10_achille.yaml")
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench/out/training.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
