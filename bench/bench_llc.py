"""Benchmark: critperiods.llc.estimate_llc vs devinterp 2.0.1 on the same problems.

Not a test.  Run inside a venv that has devinterp 2.0.1 next to the project's torch, e.g.
``.venv-bench/bin/python bench/bench_llc.py`` (see bench/README_llc.md).  Both samplers get the
same model, data, step size, gamma, nbeta, chains (4), burn-in, draws and batch size; runs are
interleaved ABAB and the median wall-time ratio is reported.  Output: a markdown table on
stdout and in ``bench/out/llc.md``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from critperiods.learning_coefficients import dln_loss, make_dln
from critperiods.llc import LLCConfig, estimate_llc

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Case:
    """One benchmark problem: a model at a checkpoint, its data, loss and sampler settings."""

    name: str
    model: nn.Module
    data: tuple[Tensor, Tensor]
    loss_fn: LossFn
    per_sample: Callable[[Tensor, Tensor], Tensor]  # unreduced loss, for devinterp
    config: LLCConfig


def _train(model: nn.Module, data: tuple[Tensor, Tensor], loss_fn: LossFn, steps: int) -> None:
    """A few Adam steps so the checkpoint sits near a minimum (LLC at a random init is
    meaningless)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = data
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (128,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def mlp_case(draws: int) -> Case:
    """~10k-parameter MLP on a synthetic teacher classification task."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 20, generator=gen)
    y = (x @ torch.randn(20, 10, generator=gen)).argmax(1)
    model = nn.Sequential(
        nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    _train(model, (x, y), F.cross_entropy, 500)
    cfg = LLCConfig(
        chains=4, draws=draws, burn_in=draws // 10, step_size=1e-4, gamma=100.0, batch_size=256
    )
    return Case(
        "MLP (9.2k params)",
        model,
        (x, y),
        F.cross_entropy,
        lambda o, t: F.cross_entropy(o, t, reduction="none"),
        cfg,
    )


def dln_case(draws: int) -> Case:
    """The [10, 6, 6, 10] rank-2 deep linear network (true lambda 26)."""
    prob = make_dln([10, 6, 6, 10], 2, n=5000, seed=0)
    cfg = LLCConfig(
        chains=4, draws=draws, burn_in=draws // 10, step_size=3e-5, gamma=1.0, batch_size=256
    )
    return Case(
        "DLN [10,6,6,10] r=2 (lambda=26)",
        prob.model,
        prob.data,
        dln_loss,
        lambda o, t: 0.5 * (o - t).pow(2).sum(-1),
        cfg,
    )


def cnn_case(draws: int) -> Case:
    """Small CNN on random 28x28 inputs with random labels."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 1, 28, 28, generator=gen)
    y = torch.randint(10, (2000,), generator=gen)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )
    _train(model, (x, y), F.cross_entropy, 100)
    cfg = LLCConfig(
        chains=4, draws=draws, burn_in=draws // 10, step_size=1e-5, gamma=100.0, batch_size=64
    )
    return Case(
        "CNN (21k params)",
        model,
        (x, y),
        F.cross_entropy,
        lambda o, t: F.cross_entropy(o, t, reduction="none"),
        cfg,
    )


class _IndexDataset(torch.utils.data.Dataset):
    """devinterp 2.x wants language-model style rows {"input_ids": (seq,)}; we encode the
    sample index as a length-2 sequence so its per-token loss has exactly one entry."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": torch.tensor([i, 0])}


def run_devinterp(case: Case) -> tuple[float, float, float]:
    """Run devinterp 2.0.1's ``llc`` on the case; return (seconds, mean, std)."""
    from devinterp.slt.llc import llc

    x, y = case.data
    cfg = case.config

    def loss_fn(model: nn.Module, input_ids: Tensor) -> Tensor:
        idx = input_ids[:, 0]
        return case.per_sample(model(x[idx]), y[idx]).unsqueeze(1)

    n = x.shape[0]
    nbeta = n / np.log(n)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = llc(
            case.model,
            _IndexDataset(n),
            {},
            lr=cfg.step_size,
            n_beta=nbeta,
            loss_fn=loss_fn,
            num_chains=cfg.chains,
            num_draws=cfg.draws,
            num_burnin_steps=cfg.burn_in,
            batch_size=cfg.batch_size,
            localization=cfg.gamma,
            output_path=str(Path(tmp) / "s.zarr"),
            device="cpu",
        )
        mean, std = float(out["llc_mean"]), float(out["llc_std"])
        return time.perf_counter() - t0, mean, std


def run_ours(case: Case) -> tuple[float, float, float]:
    """Run critperiods' batched estimator; return (seconds, mean, std)."""
    t0 = time.perf_counter()
    res = estimate_llc(case.model, case.loss_fn, case.data, case.config, progress=False)
    return time.perf_counter() - t0, res.llc_mean, res.llc_std


def bench_case(case: Case, repeats: int) -> dict[str, object]:
    """Interleave ABAB runs of both samplers; summarise times and estimates."""
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(run_ours(case))
        theirs.append(run_devinterp(case))
    ratios = [t[0] / o[0] for o, t in zip(ours, theirs, strict=True)]
    return {"case": case, "ours": ours, "theirs": theirs, "ratio": statistics.median(ratios)}


def table(rows: list[dict[str, object]]) -> str:
    """Markdown table of the benchmark results."""
    lines = [
        "| case | chains x (burn-in + draws) | batch | critperiods s | devinterp 2.0.1 s "
        "| speed-up (median) | critperiods LLC | devinterp LLC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        case: Case = row["case"]  # type: ignore[assignment]
        ours, theirs = row["ours"], row["theirs"]
        cfg = case.config
        lines.append(
            f"| {case.name} | {cfg.chains} x ({cfg.burn_in} + {cfg.draws}) | {cfg.batch_size} "
            f"| {statistics.median(o[0] for o in ours):.2f} "  # type: ignore[union-attr]
            f"| {statistics.median(t[0] for t in theirs):.2f} "  # type: ignore[union-attr]
            f"| {row['ratio']:.1f}x "
            f"| {ours[-1][1]:.2f} ± {ours[-1][2]:.2f} "  # type: ignore[index]
            f"| {theirs[-1][1]:.2f} ± {theirs[-1][2]:.2f} |"  # type: ignore[index]
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the selected cases, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--cnn-draws", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="mlp,dln,cnn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    builders = {
        "mlp": lambda: mlp_case(args.draws),
        "dln": lambda: dln_case(args.draws),
        "cnn": lambda: cnn_case(args.cnn_draws),
    }
    rows = []
    for name in args.cases.split(","):
        rows.append(bench_case(builders[name](), args.repeats))
        print(table(rows[-1:]), flush=True)
    text = table(rows)
    print(text)
    out = Path(__file__).parent / "out" / "llc.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
