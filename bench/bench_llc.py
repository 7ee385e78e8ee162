"""Benchmark: critperiods.measure.llc.estimate_llc vs devinterp 2.0.1 (and 1.3.2), same problems.

Not a test.  Run inside a venv that has devinterp 2.0.1 next to the project's torch, e.g.
``flock /tmp/cpu_bench.lock .venv-bench/bin/python bench/bench_llc.py`` (see
bench/README_llc.md).  All samplers get the same model, data, step size, gamma,
nbeta = n / ln n, chains (4, or ``--chains``), burn-in, draws and batch size.

Fairness: every sampler runs once on a short warm-up (excluded), then the timed runs are
interleaved (ours, devinterp 2, [devinterp 1.3], ours, devinterp 2, ...) and the median
wall-time ratio is reported; all get the same number of torch threads and use the machine as
they can: critperiods by default splits its chains over that many forked worker processes
of one thread each (``estimate_llc(workers=)``; ``--threads 1`` keeps it in one process),
devinterp 2.0.1 has no multi-process option, and devinterp 1.3.2's ``cores=2`` (a spawned
interpreter per process) took 66 s against 14 s with ``cores=1`` on the MLP case here, so
it runs with its default ``cores=1``.  devinterp 2.0.1 gets
``num_init_loss_batches = n // batch_size`` so its init loss sees (nearly) all the data as
ours does, and besides its own estimate (which averages the burn-in steps in) the table
shows the estimate recomputed from its ``loss_trace`` with the burn-in discarded
(like-for-like with ours).  The "floor" column is one plain forward + backward of the model
(the ``nn.Module`` as is, one chain, one minibatch), timed in a loop (median), times
chains x steps: the bare compute of a sampler that runs its chains one after another.
Running the chains as ONE grouped network (``critperiods.train.grouped``, what ours does for
these models) can go below it.  Output: a markdown table on stdout and in
``bench/out/llc.md``.

devinterp 1.3.2 cannot live in the same venv (it pins other packages), so when
``--devinterp13`` names a python with it (default ``.venv-bench13/bin/python`` if present),
its runs happen in a subprocess of this script (``--worker13``) that loads the same case
from a temporary file and reports its own in-process wall time.  1.3.2 discards burn-in
itself; it is given ``init_loss`` = L_n(w*) over all n samples (its default uses ``chains``
minibatches), computed outside the timed region.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from critperiods.measure.learning_coefficients import dln_loss, make_dln
from critperiods.measure.llc import LLCConfig, estimate_llc
from critperiods.train.models import build_model

LossFn = Callable[[Tensor, Tensor], Tensor]
ROOT = Path(__file__).resolve().parent.parent
FMNIST = Path("/usr/share/datasets/fashion-mnist")
CNN_SAMPLES = 4096


@dataclass
class Case:
    """One benchmark problem: a model at a checkpoint, its data, loss and sampler settings."""

    key: str
    name: str
    model: nn.Module
    data: tuple[Tensor, Tensor]
    loss: str  # "ce" or "dln"
    config: LLCConfig

    @property
    def loss_fn(self) -> LossFn:
        return F.cross_entropy if self.loss == "ce" else dln_loss

    def per_sample(self, out: Tensor, target: Tensor) -> Tensor:
        """Unreduced loss, for devinterp."""
        if self.loss == "ce":
            return F.cross_entropy(out, target, reduction="none")
        return 0.5 * (out - target).pow(2).sum(-1)


def _train(model: nn.Module, data: tuple[Tensor, Tensor], loss_fn: LossFn, steps: int,
           opt: torch.optim.Optimizer | None = None, batch: int = 128) -> None:
    """A few optimiser steps so the checkpoint sits near a minimum (LLC at a random init
    is meaningless)."""
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = data
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (batch,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def mlp_case(draws: int) -> Case:
    """~10k-parameter MLP on a synthetic teacher classification task."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 20, generator=gen)
    y = (x @ torch.randn(20, 10, generator=gen)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    _train(model, (x, y), F.cross_entropy, 500)
    cfg = LLCConfig(
        chains=4, draws=draws, burn_in=draws // 10, step_size=1e-4, gamma=100.0, batch_size=256
    )
    return Case("mlp", "MLP (9.2k params)", model, (x, y), "ce", cfg)


def dln_case(draws: int) -> Case:
    """The [10, 6, 6, 10] rank-2 deep linear network (true lambda 26)."""
    prob = make_dln([10, 6, 6, 10], 2, n=5000, seed=0)
    cfg = LLCConfig(
        chains=4, draws=draws, burn_in=draws // 10, step_size=3e-5, gamma=1.0, batch_size=256
    )
    return Case("dln", "DLN [10,6,6,10] r=2 (λ=26)", prob.model, prob.data, "dln", cfg)


def _fmnist_or_synthetic(n: int) -> tuple[Tensor, Tensor, str]:
    """``n`` standardised Fashion-MNIST training images (system copy) or, if absent,
    class-template synthetic 28x28 images; returns (x, y, description)."""
    gen = torch.Generator().manual_seed(3)
    if FMNIST.exists():
        from critperiods.train.data import load_raw

        images, labels = load_raw("fashion_mnist", FMNIST)["train"]
        idx = torch.randperm(len(labels), generator=gen)[:n]
        x = torch.from_numpy(images)[idx].float().div_(255.0)
        x = (x - x.mean()) / x.std()
        return x, torch.from_numpy(labels)[idx], "Fashion-MNIST"
    y = torch.randint(10, (n,), generator=gen)
    templates = torch.randn(10, 1, 28, 28, generator=gen)
    x = templates[y] + 0.5 * torch.randn(n, 1, 28, 28, generator=gen)
    return x, y, "synthetic images"


def cnn_case(draws: int) -> Case:
    """The default experiment's CNN (config.yaml: model name/width, llc batch size, step
    size, gamma) on n = 4096 Fashion-MNIST images, trained 3 epochs with the config's SGD."""
    conf = yaml.safe_load((ROOT / "config.yaml").read_text())
    llc, mconf, oconf = conf["llc"], conf["model"], conf["optimizer"]
    x, y, source = _fmnist_or_synthetic(CNN_SAMPLES)
    model = build_model(mconf["name"], int(mconf["width"]), 1, 28, 10, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=float(oconf["lr"]),
                          momentum=float(oconf["momentum"]))
    _train(model, (x, y), F.cross_entropy, 3 * CNN_SAMPLES // 32, opt, batch=32)
    cfg = LLCConfig(
        chains=int(llc["chains"]), draws=draws, burn_in=draws // 10,
        step_size=float(llc["step_size"]), gamma=float(llc["gamma"]),
        batch_size=int(llc["batch_size"]),
    )
    params = sum(p.numel() for p in model.parameters())
    name = f"default CNN ({mconf['name']} w={mconf['width']}, {params / 1e3:.1f}k params, {source})"
    return Case("cnn", name, model, (x, y), "ce", cfg)


# --------------------------------------------------------------------------- samplers


@dataclass
class Run:
    """Wall time and estimates of one run: mean/std over chains, and for devinterp the
    burn-in-discarded recomputation (``alt``)."""

    seconds: float
    mean: float
    std: float
    alt_mean: float = math.nan
    alt_std: float = math.nan


class _IndexDataset(torch.utils.data.Dataset):
    """devinterp 2.x wants language-model style rows {"input_ids": (seq,)}; we encode the
    sample index as a length-2 sequence so its per-token loss has exactly one entry."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": torch.tensor([i, 0])}


def run_devinterp(case: Case, cfg: LLCConfig) -> Run:
    """devinterp 2.0.1's ``llc`` (init loss over n // batch_size batches)."""
    from devinterp.slt.llc import llc

    x, y = case.data
    n = x.shape[0]
    nbeta = n / math.log(n)
    bs = int(cfg.batch_size)  # type: ignore[arg-type]

    def loss_fn(model: nn.Module, input_ids: Tensor) -> Tensor:
        idx = input_ids[:, 0]
        return case.per_sample(model(x[idx]), y[idx]).unsqueeze(1)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = llc(
            case.model, _IndexDataset(n), {}, lr=cfg.step_size, n_beta=nbeta, loss_fn=loss_fn,
            num_chains=cfg.chains, num_draws=cfg.draws, num_burnin_steps=cfg.burn_in,
            batch_size=bs, localization=cfg.gamma, num_init_loss_batches=n // bs,
            output_path=str(Path(tmp) / "s.zarr"), device="cpu",
        )
        seconds = time.perf_counter() - t0
    trace = np.asarray(out["loss_trace"].values, dtype=np.float64)  # (chain, burn_in + draws)
    assert trace.shape == (cfg.chains, cfg.burn_in + cfg.draws), trace.shape
    per_chain = nbeta * (trace[:, cfg.burn_in :].mean(1) - float(out["init_loss"]))
    return Run(seconds, float(out["llc_mean"]), float(out["llc_std"]),
               float(per_chain.mean()), float(per_chain.std()))


def run_ours(case: Case, cfg: LLCConfig) -> Run:
    """critperiods' batched estimator."""
    t0 = time.perf_counter()
    res = estimate_llc(case.model, case.loss_fn, case.data, cfg, progress=False)
    return Run(time.perf_counter() - t0, res.llc_mean, res.llc_std)


def run_devinterp13(case: Case, cfg: LLCConfig, python: str, tmp: Path) -> Run:
    """devinterp 1.3.2 in its own venv (``--worker13`` subprocess on a saved case)."""
    path = tmp / f"{case.key}.pt"
    torch.save({"model": case.model, "data": case.data, "loss": case.loss,
                "config": cfg.__dict__, "threads": torch.get_num_threads()}, path)
    out = subprocess.run([python, __file__, "--worker13", str(path)], check=True,
                         capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return Run(res["seconds"], res["mean"], res["std"])


def worker13(path: str) -> None:
    """Run devinterp 1.3.2's ``estimate_learning_coeff_with_summary`` on a saved case."""
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    blob = torch.load(path, weights_only=False)
    torch.set_num_threads(blob["threads"])
    cfg = LLCConfig(**blob["config"])
    x, y = blob["data"]
    n = x.shape[0]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True
    )
    loss = F.cross_entropy if blob["loss"] == "ce" else dln_loss

    def evaluate(model: nn.Module, data: tuple[Tensor, Tensor]) -> Tensor:
        return loss(model(data[0]), data[1])

    model = blob["model"]
    with torch.no_grad():  # L_n(w*) on all n samples, as ours (1.3.2 would use `chains` batches)
        init_loss = float(sum(loss(model(x[i : i + 1024]), y[i : i + 1024]) * len(y[i : i + 1024])
                              for i in range(0, n, 1024)) / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = estimate_learning_coeff_with_summary(
            model, loader=loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs={"lr": cfg.step_size, "nbeta": n / math.log(n),
                              "localization": cfg.gamma},
            num_chains=cfg.chains, num_draws=cfg.draws, num_burnin_steps=cfg.burn_in,
            num_steps_bw_draws=1, init_loss=init_loss, device="cpu", online=False,
            verbose=False,
        )
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "mean": float(out["llc/mean"]),
                      "std": float(out["llc/std"])}))


def floor_seconds(case: Case, cfg: LLCConfig, reps: int = 200) -> float:
    """Bare compute: median time of one forward + backward at the minibatch size, times
    chains x steps (no sampler, no noise, no bookkeeping)."""
    x, y = case.data
    bs = int(cfg.batch_size)  # type: ignore[arg-type]
    xb, yb = x[:bs], y[:bs]
    model = case.model
    times = []
    for i in range(reps + 10):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        case.loss_fn(model(xb), yb).backward()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return statistics.median(times) * cfg.chains * (cfg.burn_in + cfg.draws)


def bench_case(case: Case, repeats: int, python13: str | None) -> dict[str, object]:
    """Warm up every sampler, then interleave timed runs; summarise."""
    cfg = case.config
    warm = replace(cfg, draws=10, burn_in=2)
    samplers: dict[str, Callable[[LLCConfig], Run]] = {
        "ours": lambda c: run_ours(case, c),
        "devinterp": lambda c: run_devinterp(case, c),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if python13:
            samplers["devinterp13"] = lambda c: run_devinterp13(case, c, python13, Path(tmp))
        for run in samplers.values():
            run(warm)
        runs: dict[str, list[Run]] = {k: [] for k in samplers}
        for _ in range(repeats):
            for key, run in samplers.items():
                runs[key].append(run(cfg))
    ratios = {
        k: [t.seconds / o.seconds for o, t in zip(runs["ours"], v, strict=True)]
        for k, v in runs.items() if k != "ours"
    }
    return {"case": case, "runs": runs, "ratios": ratios, "floor": floor_seconds(case, cfg)}


def _speedup(ratios: list[float]) -> str:
    """Median of the per-repeat speed-ups (two decimals, so that a median just under a
    target does not round up to it), with their range (this machine is noisy)."""
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.1f}-{max(ratios):.1f})"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def _agree(a: Run, m: float, s: float) -> str:
    """Agreement within error bars: the mean ± std (over chains) intervals overlap."""
    return "yes" if abs(a.mean - m) <= a.std + s else "no"


def table(rows: list[dict[str, object]]) -> str:
    """Markdown table of the benchmark results (times: median over repeats; speed-ups: median
    of the per-repeat ratios and their range; estimates: the last repeat, mean ± std over
    chains)."""
    has13 = any("devinterp13" in r["runs"] for r in rows)  # type: ignore[operator]
    head = ("| case | chains x (burn-in + draws) | batch | floor s | critperiods s "
            "| devinterp 2.0.1 s | speed-up vs 2.0.1 ")
    sep = "|---|---|---|---|---|---|---"
    if has13:
        head += "| devinterp 1.3.2 s | speed-up vs 1.3.2 "
        sep += "|---|---"
    head += ("| critperiods λ̂ | devinterp 2.0.1 λ̂ (own, burn-in averaged in) "
             "| devinterp 2.0.1 λ̂ (burn-in discarded) | agree? ")
    sep += "|---|---|---|---"
    if has13:
        head += "| devinterp 1.3.2 λ̂ "
        sep += "|---"
    lines = [head + "|", sep + "|"]
    for row in rows:
        case: Case = row["case"]  # type: ignore[assignment]
        runs: dict[str, list[Run]] = row["runs"]  # type: ignore[assignment]
        ratios: dict[str, list[float]] = row["ratios"]  # type: ignore[assignment]
        cfg = case.config

        def med(key: str) -> float:
            return statistics.median(r.seconds for r in runs[key])  # noqa: B023

        ours, di = runs["ours"][-1], runs["devinterp"][-1]
        line = (f"| {case.name} | {cfg.chains} x ({cfg.burn_in} + {cfg.draws}) "
                f"| {cfg.batch_size} | {row['floor']:.2f} | {med('ours'):.2f} "
                f"| {med('devinterp'):.2f} | {_speedup(ratios['devinterp'])} ")
        if has13:
            line += (f"| {med('devinterp13'):.2f} | {_speedup(ratios['devinterp13'])} "
                     if "devinterp13" in runs else "| - | - ")
        line += (f"| {_pm(ours.mean, ours.std)} | {_pm(di.mean, di.std)} "
                 f"| {_pm(di.alt_mean, di.alt_std)} "
                 f"| {_agree(ours, di.alt_mean, di.alt_std)} ")
        if has13:
            d13 = runs.get("devinterp13")
            line += f"| {_pm(d13[-1].mean, d13[-1].std)} " if d13 else "| - "
        lines.append(line + "|")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the selected cases, print and save the table."""
    if len(sys.argv) == 3 and sys.argv[1] == "--worker13":
        worker13(sys.argv[2])
        return
    default13 = ROOT / ".venv-bench13" / "bin" / "python"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--cnn-draws", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chains", type=int, default=4, help="chains for every case")
    parser.add_argument("--cases", default="mlp,dln,cnn")
    parser.add_argument("--devinterp13", default=str(default13) if default13.exists() else "",
                        help="python of a venv with devinterp 1.3.2 ('' to skip)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "llc.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    builders = {
        "mlp": lambda: mlp_case(args.draws),
        "dln": lambda: dln_case(args.draws),
        "cnn": lambda: cnn_case(args.cnn_draws),
    }
    rows = []
    for name in args.cases.split(","):
        case = builders[name]()
        case.config = replace(case.config, chains=args.chains)
        rows.append(bench_case(case, args.repeats, args.devinterp13 or None))
        print(table(rows[-1:]), flush=True)
    text = table(rows)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
