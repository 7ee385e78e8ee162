"""Step-size calibration of the λ̂ sampler: sweep step sizes (and nβ), draw the running
estimates. The only module of λ̂ that plots (matplotlib, imported when a plot is drawn);
``python -m critperiods calibrate-llc`` runs it (docs/llc.md)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from critperiods.measure.llc.estimate import (
    LLCDivergenceWarning,
    LLCResult,
    default_nbeta,
    estimate_llc,
)
from critperiods.measure.llc.sampler import LLCConfig, LossFn


def calibrate(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor],
    config: LLCConfig,
    step_sizes: Sequence[float],
    nbetas: Sequence[float] | None = None,
    *,
    label: str = "",
    progress: bool = False,
) -> Any:
    """Sweep step sizes (and optionally nbetas) and collect running LLC traces.

    Returns an ``xarray.Dataset`` with dims ``(nbeta, step_size, chain, draw)`` holding
    ``llc_running`` (running mean of the per-chain estimate over post-burn-in draws),
    ``loss_trace``, ``distance_trace`` (the chains' ``‖w − w*‖²``), ``llc_mean``, ``llc_std``,
    ``diverged``, ``distance_growth``, ``tail_khat``, ``rhat`` and ``trend_z``
    (:mod:`critperiods.measure.llc.quality`). Pick the largest step size whose curves flatten
    without diverging or a heavy tail; ``plot_calibration`` draws them. A sweep is meant to
    reach steps whose chains diverge: ``estimate_llc``'s warnings are left out, since
    ``diverged`` records each divergence. A checkpoint whose own loss L_n(w*) is not finite
    has no step to calibrate: ``ValueError``, naming ``label``.
    """
    import xarray as xr

    if nbetas is None:
        n = data[0].shape[0]
        nbetas = [float(config.nbeta) if config.nbeta is not None else default_nbeta(n)]
    results = [[_estimate(model, loss_fn, data, replace(config, step_size=eps, nbeta=nb),
                          label, progress) for eps in step_sizes] for nb in nbetas]
    return _calibration_dataset(xr, results, list(step_sizes), list(nbetas))


def _estimate(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor],
              config: LLCConfig, label: str, progress: bool) -> LLCResult:
    """One setting of the sweep, without ``estimate_llc``'s warnings; a broken checkpoint
    raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCDivergenceWarning)
        result = estimate_llc(model, loss_fn, data, config, label=label, progress=progress)
    if not np.isfinite(result.init_loss):
        raise ValueError(f"{label or 'the checkpoint'}: the loss at the checkpoint itself, "
                         f"L_n(w*), is {result.init_loss}; the checkpoint is broken (e.g. "
                         "training diverged), so there is no step size to calibrate")
    return result


def _calibration_dataset(
    xr: Any, results: list[list[LLCResult]], step_sizes: list[float], nbetas: list[float]
) -> Any:
    """Pack a grid of ``LLCResult`` into an ``xarray.Dataset``."""
    from critperiods.measure.llc.quality import diagnose

    checks = {id(r): diagnose(r.loss_trace, r.burn_in, r.diverged, r.distance_trace)
              for row in results for r in row}

    def stack(fn: Callable[[LLCResult], Any]) -> np.ndarray:
        return np.array([[fn(r) for r in row] for row in results])

    dims = ("nbeta", "step_size")
    return xr.Dataset(
        {
            "llc_running": (dims + ("chain", "draw"), stack(LLCResult.running_llc)),
            "loss_trace": (dims + ("chain", "step"), stack(lambda r: r.loss_trace)),
            "distance_trace": (dims + ("chain", "step"), stack(lambda r: r.distance_trace)),
            "distance_growth": (dims, stack(lambda r: checks[id(r)].distance_growth)),
            "tail_khat": (dims, stack(lambda r: checks[id(r)].tail_khat)),
            "rhat": (dims, stack(lambda r: checks[id(r)].rhat)),
            "trend_z": (dims, stack(lambda r: checks[id(r)].trend_z)),
            "llc_mean": (dims, stack(lambda r: r.llc_mean)),
            "llc_std": (dims, stack(lambda r: r.llc_std)),
            "diverged": (dims + ("chain",), stack(lambda r: r.diverged)),
        },
        coords={"nbeta": nbetas, "step_size": step_sizes},
    )


def plot_calibration(result: Any, path: str | Path) -> Path:
    """Plot the calibration sweep, one column per nbeta: the running LLC (mean over chains)
    per step size, and below it the chains' mean ``‖w − w*‖²`` per step (burn-in included,
    its end dotted): the chains have stopped spreading where it levels off. Saves a PNG at
    ``path`` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nbetas = result["nbeta"].values
    fig, axes = plt.subplots(2, len(nbetas), figsize=(5 * len(nbetas), 6.5), squeeze=False)
    for top, bottom, nb in zip(axes[0], axes[1], nbetas, strict=True):
        _plot_panel(top, result.sel(nbeta=nb), float(nb))
        _plot_distance(bottom, result.sel(nbeta=nb))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _over_chains(sub: Any, name: str, eps: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and s.d. over the chains of ``sub[name]`` at step ``eps``; None where every
    chain diverged (the legend then says so). Records after the last healthy chain
    diverged are NaN, and stay undrawn."""
    if bool(sub["diverged"].sel(step_size=eps).all()):
        return None
    values = sub[name].sel(step_size=eps).values
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Mean of empty slice|Degrees of freedom <= 0",
                                RuntimeWarning)
        return np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def _all_diverged(ax: Any, eps: float) -> None:
    ax.plot([], [], label=f"eps={eps:g} (all chains diverged)")


def _plot_panel(ax: Any, sub: Any, nbeta: float) -> None:
    """Draw running-LLC curves (mean ± std over chains) for each step size."""
    for eps in sub["step_size"].values:
        stats = _over_chains(sub, "llc_running", eps)
        if stats is None:
            _all_diverged(ax, eps)
            continue
        mean, std = stats
        draws = np.arange(1, mean.size + 1)
        ax.plot(draws, mean, label=f"eps={eps:g}")
        ax.fill_between(draws, mean - std, mean + std, alpha=0.2)
    ax.set_yscale("symlog", linthresh=10)  # an unstable step's thousands beside the rest
    ax.set_xlabel("draw")
    ax.set_ylabel("running LLC estimate (symlog)")
    ax.set_title(f"nbeta={nbeta:.3g}")
    ax.legend(fontsize="small")


def _plot_distance(ax: Any, sub: Any) -> None:
    """Draw the chains' mean ``‖w − w*‖²`` against the step for each step size."""
    burn_in = sub.sizes["step"] - sub.sizes["draw"]
    for eps in sub["step_size"].values:
        stats = _over_chains(sub, "distance_trace", eps)
        if stats is None:
            _all_diverged(ax, eps)
            continue
        distance = stats[0]
        ax.plot(np.arange(1, distance.size + 1), distance, label=f"eps={eps:g}")
    if burn_in:
        ax.axvline(burn_in + 0.5, color="0.5", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("SGLD step (burn-in left of the dotted line)")
    ax.set_ylabel("mean ‖w − w*‖² over chains (log)")
    ax.legend(fontsize="small")


#: The step sizes ``calibrate-llc`` sweeps unless told, as multiples of the run's own: from
#: a tenth of it, where λ̂ levels off slowly, to five times, so that the sweep reaches where
#: the chains start to run away (on the default run's checkpoints flagged from 2.5 or 3.5
#: times its step, all chains diverged at 5) and its advice, half the smallest flagged
#: step, needs no second sweep.
SWEEP_FACTORS = (0.1, 0.3, 1.0, 1.5, 2.5, 3.5, 5.0)


def default_step_sizes(own_step: float) -> list[float]:
    """:data:`SWEEP_FACTORS` times ``own_step`` (the others to two significant digits, the
    run's own as it is), in increasing order; ``ValueError`` unless ``own_step`` is a
    positive number."""
    if not (np.isfinite(own_step) and own_step > 0):
        raise ValueError(f"the run's step size must be a positive number, not {own_step!r}")
    return sorted({own_step} | {float(f"{own_step * f:.2g}") for f in SWEEP_FACTORS if f != 1})


def calibration_lines(result: Any, sampler: LLCConfig, own_step: float,
                      analysis: dict, sharpness: float = float("nan"),
                      spread: float = 0.0) -> list[str]:
    """What ``calibrate-llc`` prints of a sweep (:func:`calibrate`'s ``result``, run at
    ``sampler``'s chains and draws): per setting λ̂, its Monte Carlo standard error
    (:func:`critperiods.measure.llc.error.llc_mcse`), the chains' spread, the tail's k̂
    against its limit, how far ``‖w − w*‖²`` still grew beside what a direction the loss
    leaves flat gives there (plain SGLD), and the flags the estimate would get at
    ``analysis``' thresholds (``llc_max_rhat``, ``llc_max_trend_z``; ``negative`` beyond
    the MCSE, as in the cube; the run's own
    ``own_step`` marked), ``unstable_step`` from the checkpoint's ``sharpness`` (the top
    eigenvalue of its loss's Hessian; NaN: not measured) and the ``spread`` of the
    minibatches' curvature along its eigenvector; then how to choose: below the
    stability limit, and about half the smallest step at which the chains run away."""
    from critperiods.measure.llc.error import llc_mcse, upper_bound
    from critperiods.measure.llc.quality import (
        FLAGS,
        RELAXED_GROWTH,
        flat_direction_growth,
        khat_threshold,
        past_stability_limit,
        quality_flags,
        stable_step_size,
    )

    lines, flagged = [], []
    for nbeta in result["nbeta"].values:
        for eps in result["step_size"].values:
            cell = result.sel(nbeta=nbeta, step_size=eps)
            diverged = int(cell["diverged"].sum())
            growth, khat = float(cell["distance_growth"]), float(cell["tail_khat"])
            samples = (sampler.chains - diverged) * sampler.draws
            limit = khat_threshold(samples)
            mean = float(cell["llc_mean"])
            error = float(llc_mcse(cell["loss_trace"].values, sampler.burn_in, nbeta))
            unstable = past_stability_limit(eps, sharpness, nbeta, sampler.gamma, spread)
            bits = int(quality_flags(  # the cube's own flags, at the run's thresholds
                upper_bound([mean], [error]), [diverged], [float(cell["rhat"])],
                [float(cell["trend_z"])],
                analysis["llc_max_rhat"], analysis["llc_max_trend_z"], [khat], [samples],
                [unstable and sampler.sampler == "sgld"])[0])
            flags = [name.replace("_", " ") for name, bit in FLAGS.items() if bits & bit]
            if any(f not in ("negative", "unstable step") for f in flags):
                flagged.append(float(eps))  # the chains run away: the sweep finds where
            flat = ("" if sampler.sampler != "sgld" else "; a flat direction: " + format(round(
                100 * flat_direction_growth(float(eps), sampler.gamma, sampler.burn_in,
                                            sampler.draws)), "+d") + " %")
            lines.append(
                f"nβ {nbeta:.4g}, step size {eps:g}" + (" (the run's)" if eps == own_step else "")
                + f": λ̂ {mean:.4g} (MCSE {error:.2g}, chains' s.d. "
                + f"{float(cell['llc_std']):.3g}"
                + (f", {diverged} chain(s) diverged" if diverged else "")
                + (f"; tail k̂ {khat:.2f}, limit {limit:.2f}" if np.isfinite(khat) else "")
                + (f"; ‖w − w*‖² changed by {round(100 * growth):+d} % over the draws"
                   + (", still spreading" if growth > RELAXED_GROWTH else "") + flat
                   if np.isfinite(growth) else "") + ")"
                + (f": would be flagged {', '.join(flags)}" if flags else ""))
    steps = result["step_size"].values
    stable = float("nan")  # the smallest stability limit over the nβ swept
    if np.isfinite(sharpness) and sampler.sampler == "sgld":
        limits = [stable_step_size(sharpness, nbeta, sampler.gamma, spread)
                  for nbeta in result["nbeta"].values]
        stable = min(limits)
        noise = (f", and the curvature along its eigenvector has s.d. {spread:.3g} over "
                 f"minibatches of {sampler.batch_size}" if sampler.batch_size else "")
        formula = ("4 a / (a² + (nβ s)²) (a = nβ λ_max + γ) =" if sampler.batch_size
                   else "4 / (nβ λ_max + γ) =")
        lines.append(f"the top eigenvalue of the loss's Hessian at this checkpoint is "
                     f"{sharpness:.4g}{noise}: the drift is stable (in mean square) for step "
                     f"sizes below {formula} " + ", ".join(
                         f"{limit:.2g} at nβ {nbeta:.4g}"
                         for limit, nbeta in zip(limits, result["nbeta"].values, strict=True))
                     + "; a step above is flagged unstable step")
    runaway = (f"the smallest step size at which the chains run away here (flagged for more "
               f"than its sign or its stability) is {min(flagged):g}: stay at about half of "
               f"it or below (≤ {min(flagged) / 2:.2g})" if flagged else
               f"no step size up to {max(steps):g} makes the chains run away here")
    if np.isfinite(stable) and not (flagged and min(flagged) / 2 < stable):
        runaway = ""  # the limit is the tighter bound
    lines.append(
        (f"stay below this checkpoint's stability limit ({stable:.2g})"
         + (f"; {runaway}" if runaway else "")
         if np.isfinite(stable) else
         runaway + ("" if flagged else ": add larger ones (--step-sizes) to find where they "
                    "start to, and stay at about half of that"))
        + ". That step differs from checkpoint to checkpoint: sweep a few (early, middle and "
        "late, trunk and branch) and take the smallest. Where ‖w − w*‖² still spreads about "
        "as a flat direction does, the chains need to be longer (--draws, --burn-in; then "
        "llc.draws, llc.burn_in), not the step larger: a larger step also raises λ̂ "
        "(docs/llc.md, \"Is an estimate valid?\"), so compare runs only at one setting")
    return lines


__all__ = ["SWEEP_FACTORS", "calibrate", "calibration_lines", "default_step_sizes",
           "plot_calibration"]
