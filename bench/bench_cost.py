"""Training throughput for the cost model (``python -m critperiods cost``), not a test.

Measures one training job's images per second (all seeds of a stacked job together), as the
pipeline runs it, for the models, batch sizes and seed groups of the shipped configs: on the
CPU at one thread (what a pipeline job uses) with 1, 3 and 5 seeds stacked, on CUDA with
the default (graphed, stacked) path and 5 seeds stacked. Prints the rows of
``critperiods.pipeline.cost.RATES`` and writes ``bench/out/rates.md``.

Usage: ``python bench/bench_cost.py [--device cpu|cuda] [--steps 120] [--batch-sizes ...]
[--seeds 1 3 5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critperiods.train.data import PreparedData, Split, blur_uint8  # noqa: E402
from critperiods.train.training import ALWAYS_BLURRED, FastPath, TrainConfig, Trainer  # noqa: E402


def synthetic(n: int, size: int, channels: int, device: torch.device) -> PreparedData:
    """Random uint8 images of the right shape: throughput does not depend on the pixels."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    split = Split(images, blur_uint8(images, 4), labels)
    return PreparedData(split, split, torch.full((channels,), 0.5),
                        torch.full((channels,), 0.25), 10, {}).to(device)


def rate(model: str, width: int, size: int, batch: int, device: torch.device, steps: int,
         seeds: int) -> float:
    """Images per second (all seeds) of ``steps`` SGD steps after a warm-up epoch part."""
    from critperiods.train.stacked import StackedTrainer

    data = synthetic(batch * (steps + 10), size, 1 if size == 28 else 3, device)
    cfg = TrainConfig(model=model, width=width, blur_size=4, lr=0.01, momentum=0.9,
                      weight_decay=5e-4, lr_decay=0.9)
    fast = FastPath.for_device(device)
    trainer = (Trainer(cfg, data, batch, 0, device, fast) if seeds == 1
               else StackedTrainer(cfg, data, batch, list(range(seeds)), device, fast))
    count = {"n": 0}

    def stop_after(k: int):
        count["n"] = 0

        def should_stop() -> bool:
            count["n"] += 1
            return count["n"] >= k
        return should_stop

    trainer.train_epoch(ALWAYS_BLURRED, stop_after(10))  # warm-up: caches, graphs, cudnn autotune
    # one thread on the CPU: its CPU time is what the job costs a core, even on a busy machine
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    trainer.train_epoch(ALWAYS_BLURRED, stop_after(steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch * seeds / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=120, help="timed SGD steps per point")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--models", nargs="+", default=["small_cnn:8:28", "small_cnn:16:28"],
                        help="model:width:image size")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds stacked in one job (default: 1 3 5 on the CPU, 5 on CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    groups = args.seeds or ([1, 3, 5] if device.type == "cpu" else [5])
    lines = ["| device | model | width | image | seeds | " + " | ".join(
        f"batch {b}" for b in args.batch_sizes) + " |",
        "|---|---|---|---|---|" + "---|" * len(args.batch_sizes)]
    for spec in args.models:
        model, width, size = spec.split(":")
        for seeds in groups:
            rates = {b: rate(model, int(width), int(size), b, device, args.steps, seeds)
                     for b in args.batch_sizes}
            print(f'("{device.type}", "{model}", {width}, {size}, {seeds}): '
                  + "{" + ", ".join(f"{b}: {r:.0f}" for b, r in rates.items()) + "},")
            lines.append(f"| {device.type} | {model} | {width} | {size} | {seeds} | "
                         + " | ".join(f"{r:,.0f}" for r in rates.values()) + " |")
    out = ROOT / "bench/out/rates.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("Training images/s of one job (all seeds of a stacked job)\n\n"
                   + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
