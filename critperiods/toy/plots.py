"""Figures of the toy cube, one per finding (PNG, registered for ``snakemake --report``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from critperiods.pipeline.files import write_atomic  # noqa: E402
from critperiods.toy.cube import ROUNDING_CURVATURE, cells, configured, hottest  # noqa: E402
from critperiods.toy.landscapes import Landscape  # noqa: E402

KIND_COLOURS = {"line": "C0", "sum": "C1", "product": "C2"}


def _save(fig: plt.Figure, path: str | Path, dpi: int) -> None:
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def _label_apart(ax: plt.Axes, points: list[tuple[float, float, str]]) -> None:
    """Names each ``(x, y, name)`` point beside it, lowest first: to its right, else to its
    left, rising until the label overlaps neither a label already placed nor another
    point's marker; a label that had to rise hangs on a thin leader line. Call it once the
    axes' limits and size are final: the layout is in display space."""
    renderer = ax.figure.canvas.get_renderer()
    centres = ax.transData.transform([(x, y) for x, y, _ in points])
    markers = [Bbox.from_bounds(cx - 5, cy - 5, 10, 10) for cx, cy in centres]
    spots = list(itertools.product(np.arange(0.0, 60.0, 2.0), ((6, "left"), (-6, "right"))))
    placed: list[Bbox] = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0])):
        x, y, name = points[i]
        obstacles = placed + markers[:i] + markers[i + 1:]
        for n, (rise, (side, align)) in enumerate(spots, 1):  # the first free spot, or the last
            label = ax.annotate(name, (x, y), xytext=(side, rise), fontsize=6,
                                textcoords="offset points", ha=align, va="center", zorder=5)
            box = label.get_window_extent(renderer)
            if n == len(spots) or not any(box.overlaps(other) for other in obstacles):
                break
            label.remove()
        if rise > 4:  # redraw it hanging on a leader line back to its point
            label.remove()
            label = ax.annotate(name, (x, y), xytext=(side, rise), fontsize=6,
                                textcoords="offset points", ha=align, va="center", zorder=5,
                                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4",
                                            "shrinkA": 0, "shrinkB": 4})
        placed.append(box)


def _landscapes(cube: xr.Dataset) -> list[tuple[Landscape, xr.Dataset]]:
    return [(Landscape(kind, k1, k2), cube.sel(landscape=kind, k1=k1, k2=k2))
            for kind, k1, k2 in configured(cube)]


def convergence(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Median SGD steps from the far start until the excess loss falls below each threshold
    (quartile band), per kind, in the coldest-noise cell; and the fitted exponents of all
    cells against gradient flow's."""
    kinds = [str(k) for k in cube.landscape.values]
    lr, batch = min(cells(cube), key=lambda c: c[0] / c[1])
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(4.0 * (len(kinds) + 1), 3.6),
                             squeeze=False)
    axes = axes[0]
    by_kind = {k: [x for x in _landscapes(cube) if x[0].kind == k] for k in kinds}
    for ax, kind in zip(axes, kinds, strict=False):
        for i, (land, c) in enumerate(by_kind[kind]):
            steps = c.convergence_steps.sel(lr=lr, batch_size=batch)
            colour = f"C{i}"
            ax.plot(c.threshold, steps.sel(quartile=0.5), marker="o", ms=3, color=colour,
                    label=land.name)
            ax.fill_between(c.threshold, steps.sel(quartile=0.25), steps.sel(quartile=0.75),
                            color=colour, alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("threshold on L_n(w) − L_n(w*)")
        ax.set_title(f"{kind} (lr {lr:g}, batch {batch})", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("SGD steps to reach it (median, quartiles)")
    ax = axes[-1]
    for land, c in _landscapes(cube):
        measured = c.convergence_exponent.values.ravel()
        predicted = float(c.convergence_exponent_gradient_flow)
        ax.scatter(np.full_like(measured, predicted) + 0.01 * np.arange(len(measured)),
                   measured, s=14, color=KIND_COLOURS[land.kind])
    for kind, colour in KIND_COLOURS.items():
        if kind in kinds:
            ax.scatter([], [], color=colour, label=kind)
    top = max(1.0, float(np.nanmax(cube.convergence_exponent.values, initial=0.0)) + 0.05)
    ax.plot([0, top], [0, top], color="k", lw=0.8, ls="--", label="equal")
    ax.set_xlabel("gradient-flow exponent 1 − 1/k")
    ax.set_ylabel("fitted exponent p (steps ∝ threshold^−p)")
    ax.set_title("every (lr, batch) cell", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path, dpi)


def escape(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Share of near-start runs by the coordinates that moved more than ``escape.radius``:
    one panel per (learning rate, batch size), one bar per landscape."""
    grid, lands = cells(cube), _landscapes(cube)
    fig, axes = plt.subplots(1, len(grid), figsize=(3.6 * len(grid), 0.35 * len(lands) + 1.6),
                             squeeze=False, sharey=True)
    colours = {"w1": "C0", "w2": "C1", "both": "C2", "none": "0.6"}
    for ax, (lr, batch) in zip(axes[0], grid, strict=True):
        left = np.zeros(len(lands))
        for cls in cube.escape.values:
            share = np.array([float(c.escape_fraction.sel(lr=lr, batch_size=batch, escape=cls))
                              for _, c in lands])
            ax.barh(range(len(lands)), share, left=left, color=colours[str(cls)],
                    label="stuck" if cls == "none" else f"escaped along {cls}"
                    if cls != "both" else "escaped along both")
            left += share
        ax.set_yticks(range(len(lands)), [land.name for land, _ in lands], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of runs")
        ax.set_title(f"lr {lr:g}, batch {batch}", fontsize=9)
    axes[0][0].invert_yaxis()  # the table's order, top down (the panels share this axis)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def endpoints_over_posterior(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Prior-start SGD endpoints over the tempered posterior, in the cell with the most SGD
    noise: a density map and up to 500 endpoints for 2-D landscapes, marginal density and
    endpoint histogram for 1-D ones."""
    lr, batch = hottest(cube)
    lands = _landscapes(cube)
    cols = min(4, len(lands))
    rows = -(-len(lands) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), squeeze=False)
    for ax, (land, c) in zip(axes.ravel(), lands, strict=False):
        cell = c.sel(lr=lr, batch_size=batch)
        ends = cell.endpoint.sel(start="prior").values
        w1d = ", ".join(
            f"{float(v):.3f}"
            for v in cell.posterior_w1_distance.sel(sample="sgd").values[: land.dim])
        if land.dim == 2:
            density = cell.posterior_density.values.T
            relative = np.log10(np.maximum(density / np.nanmax(density), 1e-12))
            ax.pcolormesh(c.w1_grid, c.w2_grid, relative, cmap="Greys", shading="auto",
                          vmin=-4, vmax=0)
            pts = ends[:500]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, color="C3", alpha=0.6)
            ax.set_xlim(c.w_grid.values[0], c.w_grid.values[-1])
            ax.set_ylim(c.w_grid.values[0], c.w_grid.values[-1])
            ax.set_aspect("equal")
            ax.set_ylabel("w2", fontsize=8)
        else:
            ax.plot(c.w_grid, cell.posterior_marginal.sel(weight="w1"), color="k",
                    label="posterior")
            ax.hist(ends[:, 0], bins=60, range=(float(c.w_grid[0]), float(c.w_grid[-1])),
                    density=True, color="C3", alpha=0.5, label="SGD endpoints")
            ax.legend(fontsize=6)
        ax.set_xlabel("w1", fontsize=8)
        ax.set_title(f"{land.name}: W1 {w1d}", fontsize=8)
    for ax in axes.ravel()[len(lands):]:
        ax.axis("off")
    fig.suptitle(f"SGD endpoints (red) over the tempered posterior, lr {lr:g}, batch {batch}, "
                 f"nβ = {float(cube.posterior_nbeta.sel(lr=lr, batch_size=batch).max()):g}",
                 fontsize=10)
    _save(fig, path, dpi)


#: The top of the noise figure's ratio axis: C / H above it is counted, not drawn.
RATIO_TOP = 1.6


def noise_vs_hessian(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """The ratio ``C / H`` of per-sample noise covariance to Hessian entries against the
    Hessian entry, at the prior-start endpoints (cell with most noise), one panel per kind,
    with ``σ²`` dashed: the diagonal entries, whose ratio is ``σ² k/(2k − 1)`` along a
    coordinate of degree ``k``, and a product's off-diagonal one, whose Hessian is twice its
    Gauss–Newton entry (ratio ``σ²/2``). A ratio, not ``C`` against ``H`` on log axes, where
    these factors of 2 vanish among the decades. Entries with ``H ≤ 0`` or ``C ≤ 0`` (no
    ratio to draw on a log x axis), ratios above :data:`RATIO_TOP` and Hessian entries 0 to
    rounding (:data:`~critperiods.toy.cube.ROUNDING_CURVATURE`, as the summary's
    ``H<=0_hot`` reads them) are counted in each panel, never dropped silently."""
    lr, batch = hottest(cube)
    kinds = [str(k) for k in cube.landscape.values]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False)
    sigma2 = float(cube.noise_variance.mean())
    for ax, kind in zip(axes[0], kinds, strict=True):
        dropped, above, at_zero, entries = 0, 0, 0, 0
        for i, (land, c) in enumerate(x for x in _landscapes(cube) if x[0].kind == kind):
            cell = c.sel(lr=lr, batch_size=batch)
            coords = cube.weight.values[: land.dim]
            pairs = [(a, a) for a in coords] + (  # a product's mixed entry
                [(coords[0], coords[1])] if land.kind == "product" else [])
            for j, (coord, other) in enumerate(pairs):
                cov = cell.noise_covariance.sel(weight=coord, weight_b=other).values
                hess = cell.loss_hessian.sel(weight=coord, weight_b=other).values
                if coord != other:  # C and H share the mixed entry's sign: their sizes
                    cov, hess = np.abs(cov), np.abs(hess)
                measured = np.isfinite(cov) & np.isfinite(hess)
                rounding = measured & (np.abs(hess) <= ROUNDING_CURVATURE)  # as H<=0_hot
                ok = measured & ~rounding & (cov > 0) & (hess > 0)
                ratio = np.divide(cov, hess, out=np.full_like(cov, np.nan), where=ok)
                shown = ok & (ratio <= RATIO_TOP)
                at_zero += int(rounding.sum())
                dropped += int((measured & ~ok & ~rounding).sum())
                above += int((ok & ~shown).sum())
                entries += int(measured.sum())
                if not shown.any():
                    continue
                fit = cell.sel(curvature="hessian")
                label = (f"{land.name}: c={float(fit.noise_ratio):.2f}, "
                         f"R²={float(fit.noise_r2):.3f}") if j == 0 else None
                if j == 0:  # every entry drawn: w1 filled dots, w2 hollow rings,
                    ax.scatter(hess[shown], ratio[shown], s=3, color=f"C{i}", label=label)
                elif coord == other:
                    ax.scatter(hess[shown], ratio[shown], s=9, facecolors="none",
                               edgecolors=f"C{i}", linewidths=0.5)
                else:  # a product's off-diagonal: crosses
                    ax.scatter(hess[shown], ratio[shown], s=9, marker="x", color=f"C{i}",
                               linewidths=0.5)
        ax.axhline(sigma2, color="k", lw=0.8, ls="--", label="C / H = σ²")
        ax.set_xscale("log")
        ax.set_ylim(0, RATIO_TOP)
        ax.set_xlabel("Hessian entry (dots: w1, rings: w2"
                      + (", crosses: |w1w2|)" if kind == "product" else ")"))
        ax.set_title(f"{kind} (lr {lr:g}, batch {batch})", fontsize=9)
        left = [f"{dropped} with H ≤ 0 or C ≤ 0"] * bool(dropped) + [
            f"{above} above {RATIO_TOP:g}"] * bool(above) + [
            f"{at_zero} with H 0 to rounding"] * bool(at_zero)
        if left:  # say how many, never drop them silently
            ax.text(0.98, 0.02, f"of {entries} entries, not drawn: {', '.join(left)}",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="C3",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="upper left")
    axes[0][0].set_ylabel("noise covariance / Hessian entry")
    _save(fig, path, dpi)


def llc_vs_exact(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """λ̂ at ``w*`` and at far-start SGD endpoints (every cell) against the exact λ, with
    the value the estimator converges to at its finite nβ (black bars); flagged estimates
    (``llc_quality``) hollow."""
    fig, ax = plt.subplots(figsize=(6.0, 6.0))
    names = []  # (x, y, landscape) of each w* estimate, labelled once the axes are final
    for land, c in _landscapes(cube):
        exact = float(c.learning_coefficient)
        colour = KIND_COLOURS[land.kind]
        ends, ok = c.llc_mean.values.ravel(), (c.llc_quality == 0).values.ravel()
        ax.scatter(np.full(ok.sum(), exact), ends[ok], s=12, color=colour, alpha=0.6)
        ax.scatter(np.full((~ok).sum(), exact), ends[~ok], s=12, facecolors="none",
                   edgecolors=colour, alpha=0.8)
        ax.scatter([exact], [float(c.llc_finite_nbeta_target)], marker="_", s=200,
                   color="k", zorder=3)
        star_ok = float(c.llc_at_critical_point_quality) == 0
        ax.errorbar(exact, float(c.llc_at_critical_point),
                    yerr=float(c.llc_at_critical_point_std), marker="s", color=colour,
                    mec="k", mfc=colour if star_ok else "none", capsize=2)
        names.append((exact, float(c.llc_at_critical_point), land.name))
    top = float(np.nanmax(cube.learning_coefficient.values)) * 1.15
    ax.plot([0, top], [0, top], color="k", lw=0.8, ls="--")
    for kind, colour in KIND_COLOURS.items():
        if kind in cube.landscape.values:
            ax.scatter([], [], color=colour, label=kind)
    ax.scatter([], [], marker="s", color="w", edgecolor="k", label="at w* (± std over chains)")
    ax.scatter([], [], color="0.5", s=12, label="at SGD endpoints")
    ax.scatter([], [], facecolors="none", edgecolors="0.5", s=12,
               label="flagged (hollow): not at a minimum, negative,\nnot converged, "
                     "diverged chains or heavy-tailed")
    ax.scatter([], [], marker="_", s=200, color="k", label="finite-nβ target")
    ax.set_xlabel("exact learning coefficient λ")
    ax.set_ylabel("λ̂ (critperiods.measure.llc.estimate_llc)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2,
              frameon=False)  # below the axes: inside, it hides estimates wherever it sits
    fig.tight_layout()
    _label_apart(ax, names)
    _save(fig, path, dpi)


PLOTTERS: dict[str, Callable[..., None]] = {
    "toy_convergence": convergence,
    "toy_escape": escape,
    "toy_posterior": endpoints_over_posterior,
    "toy_noise_hessian": noise_vs_hessian,
    "toy_llc": llc_vs_exact,
}


__all__ = ["PLOTTERS", "convergence", "endpoints_over_posterior", "escape",
           "llc_vs_exact", "noise_vs_hessian"]
