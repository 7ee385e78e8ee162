"""Figures drawn from the cube (PNG, registered for ``snakemake --report``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from critperiods.files import write_atomic  # noqa: E402


def _save(fig: plt.Figure, path: str | Path, dpi: int) -> None:
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def critical_period(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Final sharp test accuracy vs switch epoch: one line per batch size, mean ± std over seeds.

    Where the cube holds ``critical_period_end``, its estimate and interval are marked.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    acc = cube.final_test_accuracy * 100
    for i, b in enumerate(cube.batch_size.values):
        color = f"C{i}"
        mean = acc.sel(batch_size=b).mean("seed")
        std = acc.sel(batch_size=b).std("seed")
        ax.errorbar(cube.switch_epoch, mean, yerr=std, marker="o", capsize=3, color=color,
                    label=f"batch {b}")
        end = float(cube.critical_period_end.sel(batch_size=b)) if "critical_period_end" in cube \
            else float("nan")
        if np.isfinite(end):
            ax.axvline(end, color=color, ls="--", lw=1)
            if "critical_period_end_interval" in cube:
                lo, hi = cube.critical_period_end_interval.sel(batch_size=b).values
                ax.axvspan(lo, hi, color=color, alpha=0.12)
    ax.set_xlabel("switch epoch (blur removed)")
    ax.set_ylabel("final sharp test accuracy (%)")
    ax.set_title("Critical period: permanent deficit vs switch epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path, dpi)


def _curves_per_switch(var: xr.DataArray, path: str | Path, dpi: int, ylabel: str,
                       marker: str | None = None, mark_switch: bool = True) -> None:
    """``var`` (mean over seeds) vs epoch: a panel per batch size, a line per switch epoch."""
    fig, axes = _panels(var.sizes["batch_size"])
    colors = plt.cm.viridis(np.linspace(0, 0.9, var.sizes["switch_epoch"]))
    for ax, b in zip(axes, var.batch_size.values, strict=True):
        for color, k in zip(colors, var.switch_epoch.values, strict=True):
            curve = var.sel(batch_size=b, switch_epoch=k).mean("seed").dropna("epoch")
            ax.plot(curve.epoch, curve, marker=marker, color=color, label=f"switch {k}")
            if mark_switch:
                ax.axvline(k, color=color, lw=0.6, ls=":")
        ax.set_title(f"batch {b}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7)
    _save(fig, path, dpi)


def learning_curves(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Sharp test accuracy vs epoch, a panel per batch size, a line per switch epoch."""
    _curves_per_switch(cube.test_accuracy * 100, path, dpi, "sharp test accuracy (%)")


def llc(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """λ̂ vs epoch, a panel per batch size, a line per switch epoch (mean over seeds)."""
    _curves_per_switch(cube.llc_mean, path, dpi, "λ̂ (local learning coefficient)", marker=".")


def llc_traces(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """SGLD chain diagnostics: minibatch loss per draw, every chain, at a few checkpoints.

    One panel per (batch size, switch epoch = largest) at its last λ̂ epoch, seed 0: the
    traces should rise from the checkpoint's loss and then fluctuate around a plateau after
    burn-in; a trend or a run-away chain means the step size is off.
    """
    trace = cube.llc_loss_trace.isel(seed=0)
    picks = []
    for b in cube.batch_size.values:
        for k in (cube.switch_epoch.values[0], cube.switch_epoch.values[-1]):
            t = trace.sel(batch_size=b, switch_epoch=k).dropna("epoch", how="all")
            if t.sizes["epoch"]:
                picks.append((b, k, t.isel(epoch=-1)))
    fig, axes = plt.subplots(1, max(1, len(picks)), figsize=(4.2 * max(1, len(picks)), 3.2),
                             squeeze=False)
    burn_in = int(cube.attrs.get("llc_burn_in", 0))
    for ax, (b, k, t) in zip(axes[0], picks, strict=False):
        for c in t.chain.values:
            ax.plot(t.draw, t.sel(chain=c), lw=0.7, label=f"chain {c}")
        ax.axvline(burn_in, color="k", ls=":", lw=0.8)
        ax.set_title(f"batch {b}, switch {k}, epoch {int(t.epoch)}", fontsize=9)
        ax.set_xlabel("draw")
    axes[0][0].set_ylabel("minibatch loss (nats)")
    axes[0][0].legend(fontsize=7)
    _save(fig, path, dpi)


def divergence(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """L2 distance to the always-blurred run vs epoch: a panel per batch size, a line per switch."""
    _curves_per_switch(cube.div_l2_vs_blurred, path, dpi, "‖θ − θ_blurred‖ (L2)", marker=".",
                       mark_switch=False)


def divergence_final(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """At each run's last epoch, vs switch epoch: disagreement with the always-blurred run,
    and the aligned distance between seeds (mean over seed pairs)."""
    final = cube.sel(epoch=cube.switch_epoch + int(cube.attrs["epochs_after_switch"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, b in enumerate(cube.batch_size.values):
        f = final.sel(batch_size=b)
        if "div_disagreement_vs_blurred" in f:
            ax1.plot(cube.switch_epoch, f.div_disagreement_vs_blurred.mean("seed"), marker="o",
                     color=f"C{i}", label=f"batch {b}")
        if "div_l2_aligned_seeds" in f:
            off = f.div_l2_aligned_seeds.where(f.seed != f.seed_b)
            ax2.plot(cube.switch_epoch, off.mean(["seed", "seed_b"]), marker="o", color=f"C{i}",
                     label=f"batch {b}")
    ax1.set_ylabel("disagreement with always-blurred run")
    ax2.set_ylabel("aligned L2 between seeds")
    for ax in (ax1, ax2):
        ax.set_xlabel("switch epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path, dpi)


def critical_period_vs_temperature(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Critical-period end (90 % bootstrap interval) vs batch size and vs lr / batch size.

    With ≥ 3 batch sizes the fitted power law is drawn and its exponent given in the legend.
    """
    end = cube.critical_period_end
    lo, hi = cube.critical_period_end_interval.transpose("bound", "batch_size").values
    batch = cube.batch_size.values.astype(float)
    lr = float(cube.attrs.get("lr", 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, x, name, exponent in (
        (axes[0], batch, "batch size", "batch_size_exponent"),
        (axes[1], lr / batch, "SGD temperature proxy lr / batch size", "temperature_exponent"),
    ):
        yerr = np.clip(np.vstack([end - lo, hi - end]), 0, None)
        ax.errorbar(x, end, yerr=yerr, marker="o", capsize=4, ls="none", color="C0")
        p = float(cube[exponent]) if exponent in cube else float("nan")
        if np.isfinite(p):
            ok = np.isfinite(end.values) & (end.values > 0)
            c = np.exp(np.mean(np.log(end.values[ok]) - p * np.log(x[ok])))
            grid = np.geomspace(x.min(), x.max(), 50)
            ax.plot(grid, c * grid**p, color="C1", label=f"power law, exponent {p:.2f}")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("end of critical period (epoch)")
    _save(fig, path, dpi)


PLOTTERS: dict[str, Callable[..., None]] = {
    "critical_period_vs_temperature": critical_period_vs_temperature,
    "critical_period": critical_period,
    "learning_curves": learning_curves,
    "llc": llc,
    "llc_traces": llc_traces,
    "divergence": divergence,
    "divergence_final": divergence_final,
}
