"""Figures drawn from the cube (PNG, registered for ``snakemake --report``)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from critperiods.measure.llc.quality import FLAGS as LLC_FLAGS  # noqa: E402
from critperiods.pipeline.files import write_atomic  # noqa: E402
from critperiods.results.markers import KNEE_FLAGS  # noqa: E402
from critperiods.results.perturbation_summary import valid_copies  # noqa: E402
from critperiods.results.selection import (  # noqa: E402
    distinct_diverged,
    diverged_branches,
    llc_counted,
    llc_sharp,
    llc_trunk,
    lr_schedules,
    read_in_flags,
    run_diverged,
    seed_mean,
    shared_by_schedules,
    trunk_by_seed,
    valid_final_accuracy,
)
from critperiods.results.summary import located_end  # noqa: E402

#: How the figures draw what they leave out of a mean: hollow grey markers.
_LEFT_OUT = {"ls": "none", "marker": "o", "mfc": "none", "color": "0.55"}
#: How they draw flagged values a mean takes in all the same (``analysis.llc_read_flagged``):
#: half-filled grey markers.
_READ_IN = {"ls": "none", "marker": "o", "fillstyle": "left", "color": "0.55"}


def _save(fig: plt.Figure, path: str | Path, dpi: int,
          rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> None:
    """Lay the panels out within ``rect`` (figure fractions: left, bottom, right, top; the
    rest holds a legend of the figure's) and write the PNG atomically."""
    fig.tight_layout(rect=rect)
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def _caption(fig: plt.Figure, text: str, fontsize: float = 10) -> None:
    """``text`` as the figure's title, wrapped to the figure's width."""
    width = max(30, int(fig.get_figwidth() * 130 / fontsize))  # ~13 characters/inch at 10 pt
    fig.suptitle(textwrap.fill(text, width), fontsize=fontsize)


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def _sel(da: xr.DataArray, **where) -> xr.DataArray:
    """``da.sel(**where)`` for the dims ``da`` has (a cube without a schedule dim is one)."""
    return da.sel(**{k: v for k, v in where.items() if k in da.dims})


def _located_ends(cube: xr.Dataset) -> xr.DataArray | None:
    """The critical-period end per cell, NaN where there is no deficit to locate
    (:func:`~critperiods.results.summary.located_end`); None for a cube without ends."""
    return located_end(cube) if "critical_period_end" in cube else None


def _end_of(ends: xr.DataArray | None, batch_size, lr_schedule) -> float:
    return float("nan") if ends is None else float(
        _sel(ends, batch_size=batch_size, lr_schedule=lr_schedule))


def _marker_at_top(ax: plt.Axes, value: float, interval, height: float, color,
                   hollow: bool = False, shape: str = "v") -> None:
    """A marker's value as a triangle (or another ``shape``) along the top of ``ax`` (at
    ``height`` in axes coordinates; hollow where it is unstable) and its ``interval``
    (lower, upper; None: none) as a bar at the same height: the λ̂ knees in figure 3a, the
    divergence drop in 4b."""
    top = ax.get_xaxis_transform()
    if np.isfinite(value):
        ax.plot([value], [height], marker=shape, ms=7, color=color, transform=top,
                mfc="none" if hollow else color)
    if interval is not None:
        lo, hi = interval
        ax.plot([lo, hi], [height, height], color=color, lw=2, alpha=0.5,
                solid_capstyle="butt", transform=top)


def _seeds_note(cube: xr.Dataset) -> str:
    n = int(cube.sizes.get("seed", 1))
    return f"{n} seed{'s' if n != 1 else ''}"


def _diverged_note(cube: xr.Dataset) -> str:
    """"; N diverged run(s) left out" for a caption, empty without any."""
    n = int(distinct_diverged(cube).sum()) if "final_test_accuracy" in cube else 0
    return f"; {n} run{'s' if n != 1 else ''} diverged to chance, left out" if n else ""


def critical_period(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Final sharp test accuracy vs switch epoch: a panel per lr schedule, a line per batch size,
    mean ± std over seeds, with the estimated end of the critical period and its interval.
    Runs that diverged to chance are left out of the mean and marked by an x at the foot of
    the panel at their switch epoch (their ~10 % would squash the curves)."""
    schedules = lr_schedules(cube)
    fig, axes = _panels(len(schedules), width=5.2, height=4.2)
    acc = valid_final_accuracy(cube) * 100
    diverged = run_diverged(cube)
    ends = _located_ends(cube)
    for ax, r in zip(axes, schedules, strict=True):
        foot = ax.get_xaxis_transform()  # x in data, y in axes fraction
        for i, b in enumerate(cube.batch_size.values):
            color = f"C{i}"
            cell = _sel(acc, batch_size=b, lr_schedule=r)
            ax.errorbar(cube.switch_epoch, seed_mean(cell), yerr=cell.std("seed", ddof=1),
                        marker="o",
                        capsize=3, color=color, label=f"batch {b}")
            bad = _sel(diverged, batch_size=b, lr_schedule=r).any("seed")
            if bool(bad.any()):
                ax.plot(cube.switch_epoch[bad.values], np.full(int(bad.sum()), 0.03), ls="none",
                        marker="x", ms=8, mew=2, color=color, transform=foot, clip_on=False,
                        label=f"batch {b}: run diverged to chance (left out)")
            end = _end_of(ends, b, r)
            if np.isfinite(end):  # the end, and its interval as a bar along the top
                ax.axvline(end, color=color, ls="--", lw=1)
                lo, hi = _sel(cube.critical_period_end_interval, batch_size=b,
                              lr_schedule=r).values
                height = 0.97 - 0.035 * i
                ax.plot([lo, hi], [height, height], color=color, lw=3, alpha=0.6,
                        solid_capstyle="butt", transform=foot)
                ax.plot([end], [height], marker="|", ms=9, mew=2, color=color, transform=foot)
        ax.set_title(f"learning rate after the switch: {r}")
        ax.set_xlabel("switch epoch (blur removed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    if ends is not None and np.isfinite(ends.values).any():  # room for the bars on top
        bottom, top = axes[0].get_ylim()  # the panels share y
        axes[0].set_ylim(bottom, top + 0.035 * (cube.sizes["batch_size"] + 1) * (top - bottom))
    axes[0].set_ylabel("final sharp test accuracy (%)")
    _caption(fig, f"Final sharp test accuracy vs switch epoch, whose drop is the permanent "
                  f"deficit (mean ± std over {_seeds_note(cube)}"
                  f"{_diverged_note(cube)}; dashed: estimated end where the deficit's "
                  "interval is above 0, bar along the top: the end's interval)")
    _save(fig, path, dpi)


def _curves_per_switch(var: xr.DataArray, path: str | Path, dpi: int, ylabel: str,
                       marker: str | None = None, mark_switch: bool = True,
                       flagged: xr.DataArray | None = None, spread: xr.DataArray | None = None,
                       flagged_label: str = "flagged estimate (left out)", caption: str = "",
                       overlay: Callable[[plt.Axes, object, str], list] | None = None,
                       read_in: xr.DataArray | None = None, read_in_label: str = "",
                       ) -> None:
    """``var`` (mean over seeds, :func:`seed_mean`, so that a value left out does not dent
    the curve) vs epoch: a row per lr schedule, a panel per batch size, a line per switch
    epoch that has a value (one row when the schedules hold the same values, as λ̂ of the
    shared trunk and never-blurred run does). ``flagged`` (same dims, bool) marks values
    left out of the mean, drawn as hollow grey markers named ``flagged_label`` in the
    legend; ``read_in`` (same dims, bool) marks flagged values the mean takes in all the
    same, drawn as half-filled grey markers named ``read_in_label``; ``spread`` draws error
    bars (mean over the seeds kept); ``overlay(ax,
    batch_size, lr_schedule)`` draws more on a panel and returns legend handles;
    ``caption`` is the figure's title, if any."""
    schedules = [str(r) for r in var.lr_schedule.values] if "lr_schedule" in var.dims \
        else ["continue"]
    shared = len(schedules) > 1 and all(
        np.array_equal(var.sel(lr_schedule=r).values, var.sel(lr_schedule=schedules[0]).values,
                       equal_nan=True) for r in schedules)
    rows = schedules[:1] if shared else schedules
    nb = var.sizes["batch_size"]
    fig, grid = plt.subplots(len(rows), nb, figsize=(4.2 * nb, 3.3 * len(rows)),
                             squeeze=False, sharey=True)
    colors = dict(zip(var.switch_epoch.values,
                      plt.cm.viridis(np.linspace(0, 0.9, var.sizes["switch_epoch"])), strict=True))
    present = var.notnull().any([d for d in var.dims if d != "switch_epoch"])
    switches = var.switch_epoch.values[present.values]
    kept = var if flagged is None else var.where(~flagged)
    extra: list = []
    hidden_in: dict = {}  # panel title → {switch: the switch whose curve it lies under}
    drawn: dict = {}  # switch → its legend handle, from a panel where it can be seen
    for row, r in zip(grid, rows, strict=True):
        for ax, b in zip(row, var.batch_size.values, strict=True):
            means = _run_means(_sel(kept, batch_size=b, lr_schedule=r), switches)
            hidden = _under_later_curves(means, switches)
            title = (f"batch {b}" if len(schedules) == 1 else
                     f"batch {b} (both lr schedules)" if shared else f"batch {b}, lr {r}")
            hidden_in[title] = hidden
            for k in switches:
                color = colors[k]
                curve = means[k]
                ok = np.isfinite(curve.values)
                label = f"switch {k}" if k not in hidden else "_hidden"
                if spread is not None:
                    err = _sel(spread.where(np.isfinite(kept)), batch_size=b, lr_schedule=r,
                               switch_epoch=k).mean("seed")
                    line = ax.errorbar(curve.epoch[ok], curve[ok], yerr=err[ok], marker=marker,
                                       color=color, capsize=2, lw=1.2, label=label)
                else:
                    (line,) = ax.plot(curve.epoch[ok], curve[ok], marker=marker, color=color,
                                      label=label)
                if k not in hidden and ok.any():
                    drawn.setdefault(k, line)
                for marks, style in ((flagged, _LEFT_OUT), (read_in, _READ_IN)):
                    if marks is None:
                        continue
                    bad = _sel(var.where(marks), batch_size=b, lr_schedule=r, switch_epoch=k)
                    for s in bad.seed.values:
                        v = bad.sel(seed=s)
                        v = v[np.isfinite(v.values)]
                        ax.plot(v.epoch, v, ms=6, **style)
                if mark_switch:
                    ax.axvline(k, color=color, lw=0.6, ls=":")
            if overlay is not None:
                extra = overlay(ax, b, r)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row[0].set_ylabel(ylabel)
    handles = [drawn[k] for k in switches if k in drawn]  # seen in some panel
    labels = [f"switch {k}" for k in switches if k in drawn]
    handles_hidden, labels_hidden = _hidden_entries(hidden_in)
    handles += handles_hidden
    labels += labels_hidden
    handles += extra
    labels += [handle.get_label() for handle in extra]
    for marks, style, text in ((flagged, _LEFT_OUT, flagged_label),
                               (read_in, _READ_IN, read_in_label)):
        if marks is not None and bool(marks.any()):
            handles.append(plt.Line2D([], [], **style))
            labels.append(text)
    if overlay is not None:  # the overlay's marks sit along the top: headroom, legend outside
        bottom, top = grid[0][0].get_ylim()  # the panels share y
        grid[0][0].set_ylim(bottom, top + 0.15 * (top - bottom))
        grid[0][-1].legend(handles, labels, fontsize=7, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0))
    else:
        grid[0][-1].legend(handles, labels, fontsize=7)
    if caption:
        _caption(fig, caption)
    _save(fig, path, dpi)


def _hidden_entries(hidden_in: dict) -> tuple[list, list[str]]:
    """Legend entries for the curves that lie under later ones (:func:`_under_later_curves`,
    per panel title): a dotted line per later curve they lie under, naming the panels
    where they do when that is not every panel."""
    where: dict = {}  # (switch, under) → the panels where it lies so
    for title, hidden in hidden_in.items():
        for k, under in hidden.items():
            where.setdefault((k, under), []).append(title)
    groups: dict = {}  # (under, panels) → the switches under it there
    for (k, under), titles in where.items():
        panels = "" if len(titles) == len(hidden_in) else f" ({'; '.join(titles)})"
        groups.setdefault((under, panels), []).append(k)
    handles, labels = [], []
    for (under, panels), over in sorted(groups.items()):
        handles.append(plt.Line2D([], [], color="0.4", lw=0.6, ls=":"))
        labels.append(f"switch {', '.join(f'{k:g}' for k in sorted(over))} (dotted): "
                      f"under switch {under:g}'s curve{panels}")
    return handles, labels


def _under_later_curves(means: dict, switches: np.ndarray) -> dict:
    """The switch epochs whose curve has no value of its own, each with the latest switch
    whose curve it lies under: every point it has, that curve has too, equal, and either
    goes on past its last or the curve ends by its switch, on the trunk (λ̂ measured on the
    trunk only: a run's values up to its switch are the trunk's, under the latest switch's
    curve, which also ends there where the trunk's later estimates are left out). Their
    legend entries would name curves no one can see."""
    hidden = {}
    for i, k in enumerate(switches):
        mine = np.isfinite(means[k].values)
        if not mine.any():
            continue
        last = np.flatnonzero(mine)[-1]
        trunk_only = means[k].epoch.values[last] <= k
        under = [later for later in switches[i + 1:]
                 if np.array_equal(means[k].values[mine], means[later].values[mine])
                 and (trunk_only or np.isfinite(means[later].values[last + 1:]).any())]
        if under:
            hidden[k] = under[-1]
    return hidden


def _run_means(panel: xr.DataArray, switches: np.ndarray) -> dict:
    """Each run's seed-mean curve (``switch_epoch`` → DataArray over ``epoch``) from one
    panel's ``(switch_epoch, seed, epoch)`` values, taken as the markers take them
    (:func:`~critperiods.results.selection.seed_mean`, adjusted for a seed missing at some
    epochs): up to its switch a run is the blurred trunk, whose mean comes from the run with
    the largest switch, a seed without that run keeping its trunk from its earlier
    switches' runs (:func:`~critperiods.results.selection.trunk_by_seed`; so a trunk epoch
    has one mean whichever run draws it); after its switch, and all of the never-blurred
    run, from the run's own values."""
    branched = [k for k in switches if k > 0]
    trunk = None
    if branched:
        trunk = seed_mean(trunk_by_seed(panel, max(branched)))
    out = {}
    for k in switches:
        run = panel.sel(switch_epoch=k)
        if k <= 0 or trunk is None:
            out[k] = seed_mean(run)
            continue
        own = seed_mean(run.where(run["epoch"] > k))
        before = trunk.where(trunk["epoch"] <= k).fillna(
            seed_mean(run.where(run["epoch"] <= k)))
        out[k] = own.fillna(before)
    return out


def learning_curves(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Sharp test accuracy vs epoch: a row per schedule, a panel per batch size, a line per
    switch epoch (mean over seeds); the sharp epochs of runs that diverged to chance are left
    out of the mean and drawn hollow grey."""
    _curves_per_switch(cube.test_accuracy * 100, path, dpi, "sharp test accuracy (%)",
                       flagged=diverged_branches(cube),
                       flagged_label="run diverged to chance (left out of the mean)",
                       caption=f"Sharp test accuracy (mean over {_seeds_note(cube)}"
                             f"{_diverged_note(cube)})")


#: What each figure needs in the cube, and the config key that makes it.
NEEDS = {"llc": ("llc_mean", "llc.enabled"), "llc_traces": ("llc_loss_trace", "llc.enabled"),
         "divergence": ("div_l2", "divergence.enabled"),
         "divergence_final": ("div_l2", "divergence.enabled"),
         "perturbation": ("perturb_lasting_l2", "perturbation.enabled"),
         "perturbation_growth": ("epsilon", "perturbation.enabled")}


def _needs(cube: xr.Dataset, figure: str) -> None:
    """Raise ValueError, naming the variable and the config key, where the cube lacks what
    ``figure`` draws (the workflow asks for a figure only where its stage ran)."""
    name, key = NEEDS[figure]
    if name not in cube:
        raise ValueError(f"figure {figure}: the cube has no {name} (its stage did not run: "
                         f"{key} is off in the run's config)")


def _spans_its_range(cube: xr.Dataset, name: str, batch_size: float,
                     interval: np.ndarray | None) -> bool:
    """Whether the knee ``name``'s interval at ``batch_size`` reaches over every epoch a knee
    can take there, the second to the second-to-last epoch with valid λ̂ on its curve: such
    an interval places no knee, whatever its point value."""
    if interval is None or not np.all(np.isfinite(interval)):
        return False
    curve = (llc_sharp if "sharp" in name else llc_trunk)(cube, batch_size,
                                                          net_of_descent="_net_" in name)
    epochs = np.sort(curve["epoch"].values[np.isfinite(curve.values)])
    if epochs.size < 4:
        return False
    return bool(interval[0] <= epochs[1] + 1e-9 and interval[1] >= epochs[-2] - 1e-9)


def llc(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Valid λ̂ vs epoch (mean over seeds, bars: std over chains); flagged estimates and the
    branches of runs that diverged to chance are left out and drawn hollow (the legend
    names the flags raised), except the estimates whose flags the cube reads in
    (``analysis.llc_read_flagged``): those count and are drawn half-filled. Beside the
    curves, to ask whether λ̂ marks the end: the continue schedule's located end (dashed,
    its interval shaded) and the λ̂ knees (triangles along the top, each with its interval
    as a bar). Where the run measured the chains' descent (``llc.descent``), λ̂ net of it
    along the trunk and the never-blurred run (dash-dotted) and its knees (diamonds). The
    caption says that λ̂ far from a minimum carries the chains' descent (docs/llc.md)."""
    _needs(cube, "llc")
    from critperiods.results.tables import llc_flag_counts

    diverged = diverged_branches(cube)
    flagged = read_in = xr.zeros_like(cube.llc_mean, dtype=bool)
    why = ""
    if "llc_quality" in cube:
        counted = llc_counted(cube)
        flagged = cube.llc_quality.notnull() & ~counted
        read_in = (cube.llc_quality > 0) & counted & ~diverged
        left_out = cube.assign(llc_quality=cube.llc_quality.where(flagged))
        why = ", ".join(name.replace("_", " ") for name, n in llc_flag_counts(left_out).items()
                        if name not in ("estimates", "ok") and n)  # the flags raised
    label = (f"flagged estimate{f' ({why})' if why else ''}"
             + (" or diverged run" if bool(diverged.any()) else "") + ", left out")
    names = [name.replace("_", " ") for name in read_in_flags(cube)]
    read = (f"flagged {names[0]} only" if len(names) == 1 else
            f"flagged, every flag among {', '.join(names)}")
    read_in_label = f"{read}: counted (analysis.llc_read_flagged)"
    ends = _located_ends(cube)
    if ends is not None and "lr_schedule" in ends.dims:  # the end to compare with: continue's
        ends = ends.sel(lr_schedule="continue") if "continue" in ends.lr_schedule else None
    has_ends = ends is not None and bool(np.isfinite(ends).any())
    sharp_color, trunk_color = plt.cm.viridis(0.0), plt.cm.viridis(0.9)
    markers = [(name, color, shape, text) for name, color, shape, text in (
        ("llc_knee_sharp", sharp_color, "v", "λ̂ knee, never-blurred run"),
        ("llc_knee_trunk", trunk_color, "v", "λ̂ knee, blurred trunk"),
        ("llc_net_knee_sharp", sharp_color, "d", "knee of λ̂ net of descent, never-blurred"),
        ("llc_net_knee_trunk", trunk_color, "d", "knee of λ̂ net of descent, blurred trunk"))
        if name in cube and bool(np.isfinite(cube[name]).any())]
    net = "llc_descent" in cube
    # the knees whose interval spans every epoch a knee can take: drawn hollow
    placeless = {(name, b) for name, *_ in markers if f"{name}_interval" in cube
                 for b in cube.batch_size.values if _spans_its_range(
                     cube, name, b, shared_by_schedules(
                         cube[f"{name}_interval"].sel(batch_size=b)).values)}

    def overlay(ax: plt.Axes, b, _r: str) -> list:
        """The continue schedule's located end (line, interval shaded), λ̂ net of the
        descent where the run measured it (dash-dotted) and the λ̂ knees (triangles and
        diamonds along the top, their interval as a bar): does λ̂ mark the end?"""
        if net:  # the curves the net knees are fitted to
            for curve, color in ((llc_sharp(cube, b, net_of_descent=True), sharp_color),
                                 (llc_trunk(cube, b, net_of_descent=True), trunk_color)):
                ok = np.isfinite(curve.values)
                ax.plot(curve["epoch"].values[ok], curve.values[ok], color=color, ls="-.",
                        lw=1.2)
        end = _end_of(ends, b, "continue")
        if np.isfinite(end):
            if "critical_period_end_interval" in cube:
                lo, hi = _sel(cube.critical_period_end_interval, batch_size=b,
                              lr_schedule="continue").values
                ax.axvspan(lo, hi, color="0.6", alpha=0.15, lw=0)
            ax.axvline(end, color="k", ls="--", lw=1)
        for j, (name, color, shape, _) in enumerate(markers):
            value = float(shared_by_schedules(cube[name].sel(batch_size=b)))
            height = 0.95 - 0.06 * j
            flagged = any(f"{name}_{flag}" in cube and bool(
                shared_by_schedules(cube[f"{name}_{flag}"].sel(batch_size=b)))
                for flag, _ in KNEE_FLAGS)
            spread = f"{name}_interval"
            interval = (shared_by_schedules(cube[spread].sel(batch_size=b)).values
                        if spread in cube else None)
            flagged = flagged or (name, b) in placeless
            _marker_at_top(ax, value, interval, height, color, hollow=flagged, shape=shape)
        handles = [plt.Line2D([], [], ls="none", marker=shape, ms=7, color=color, label=text)
                   for _, color, shape, text in markers]
        if net:
            handles.append(plt.Line2D([], [], color="0.3", ls="-.", lw=1.2,
                                      label="λ̂ net of the chains' descent (llc.descent)"))
        hollow = [shape for name, _, shape, _ in markers for flag, _ in KNEE_FLAGS
                  if f"{name}_{flag}" in cube and bool(cube[f"{name}_{flag}"].any())]
        hollow += [shape for name, _, shape, _ in markers
                   if any(knee == name for knee, _ in placeless)]
        if hollow:  # drawn as the flagged knees are: triangles, or diamonds where only those
            handles.append(plt.Line2D([], [], ls="none", marker=hollow[0], ms=7, color="0.3",
                                      mfc="none",
                                      label="hollow: unstable knee, λ̂ bending within noise,\n"
                                            "or an interval over every epoch it can take"))
        if has_ends:
            handles.append(plt.Line2D([], [], color="k", ls="--", lw=1,
                                      label="critical-period end (continue), interval shaded"))
        return handles

    caption = ("λ̂ of the valid estimates"
               + (f" and of those {read} (half-filled: counted, "
                  "analysis.llc_read_flagged)" if bool(read_in.any()) else "")
               + f" (mean over {_seeds_note(cube)}; bars: s.d. over "
               "chains; up to a run's switch epoch it is the blurred trunk's; where a checkpoint "
               "is far from a minimum, as early in training, λ̂ is lowered by the chains' "
               "descent from it, so an early rise may be the sampler's: calibrate-llc "
               "--descent measures it)")
    if has_ends:
        caption += "; dashed: the critical period's end with the rate continued, its " \
                   "interval shaded"
    if markers:
        caption += ("; triangles: where a broken stick fitted to λ̂ bends (its knee), the bar "
                    "its interval (the seeds' jackknife joined with the curve's profile "
                    "interval); hollow: with some seed left out the knee sits at an edge of its "
                    "range or is gone, or λ̂ bends no more than its noise, or its interval "
                    "spans every epoch a knee can take there (it places no knee)")
    if net:
        caption += ("; dash-dotted: λ̂ net of the chains' descent from each checkpoint (λ̂ − "
                    "llc_descent, llc.descent) along the longest trunk and the never-blurred "
                    "run, to first order and with the minibatch noise's heating still in"
                    + ("; diamonds: its knees" if any(m[0].startswith("llc_net_")
                                                       for m in markers) else ""))
    _curves_per_switch(cube.llc_mean, path, dpi, "λ̂ (local learning coefficient)", marker=".",
                       flagged=flagged | diverged, spread=cube.llc_std, flagged_label=label,
                       read_in=read_in, read_in_label=read_in_label,
                       overlay=overlay if has_ends or markers or net else None,
                       caption=caption)


def llc_traces(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """SGLD chain diagnostics: minibatch loss per draw, every chain, at a few checkpoints.

    One panel per (batch size, switch epoch = smallest and largest) at its last λ̂ epoch,
    seed 0, first schedule, a row per batch size: the traces should rise from the
    checkpoint's loss and then fluctuate around a plateau after burn-in (dotted line); a
    trend or a run-away chain means the step size is off. The panel title gives R-hat and
    the quality flag.
    """
    _needs(cube, "llc_traces")
    trace = _sel(cube.llc_loss_trace.isel(seed=0), lr_schedule=lr_schedules(cube)[0])
    switches = sorted({cube.switch_epoch.values[0], cube.switch_epoch.values[-1]})
    picks = {}  # (row, column) → (batch size, switch epoch, traces)
    for row, b in enumerate(cube.batch_size.values):
        for col, k in enumerate(switches):
            t = trace.sel(batch_size=b, switch_epoch=k).dropna("epoch", how="all")
            if t.sizes["epoch"]:
                picks[(row, col)] = (b, k, t.isel(epoch=-1))
    rows = cube.sizes["batch_size"]
    fig, axes = plt.subplots(rows, len(switches), figsize=(4.5 * len(switches), 2.9 * rows),
                             squeeze=False)
    for row, col in np.ndindex(axes.shape):
        if (row, col) not in picks:
            axes[row][col].set_axis_off()
    burn_in = int(cube["llc_burn_in"]) if "llc_burn_in" in cube else 0
    for (row, col), (b, k, t) in picks.items():
        ax = axes[row][col]
        for c in t.chain.values:
            ax.plot(t.draw, t.sel(chain=c), lw=0.7, label=f"chain {c}")
        ax.axvline(burn_in, color="k", ls=":", lw=0.8)
        where = {"batch_size": b, "switch_epoch": k, "seed": t.seed, "epoch": t.epoch,
                 "lr_schedule": lr_schedules(cube)[0]}
        note = ""
        if "llc_rhat" in cube:
            rhat = float(_sel(cube.llc_rhat, **where))
            quality = float(_sel(cube.llc_quality, **where)) if "llc_quality" in cube else 0
            counted = quality == 0 or bool(_sel(llc_counted(cube), **where))
            flags = "+".join(name for name, bit in LLC_FLAGS.items() if int(quality) & bit)
            note = f"\nR-hat {rhat:.2f}, " + ("ok" if quality == 0 else
                                               f"flagged {flags}, counted" if counted
                                               else f"flagged {flags}")
        ax.set_title(f"batch {b}, switch {k}, epoch {int(t.epoch)}{note}", fontsize=9)
        if row == rows - 1:
            ax.set_xlabel("draw (left of dotted line: burn-in)")
        if col == 0:
            ax.set_ylabel("minibatch loss (nats)")
    if picks:
        row, col = next(iter(picks))  # the first panel drawn (the grid may skip some)
        axes[row][col].legend(fontsize=7)
    _save(fig, path, dpi)


def divergence(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """L2 distance to the always-blurred run vs epoch: a row per schedule, a panel per batch
    size, a line per switch; runs that diverged to chance are left out (the caption counts
    them)."""
    _needs(cube, "divergence")
    div = cube.div_l2.sel(reference="blurred")
    _curves_per_switch(div.where(~diverged_branches(cube)), path, dpi, "‖θ − θ_blurred‖ (L2)",
                       marker=".", mark_switch=False,
                       caption=f"Distance to the always-blurred run (mean over "
                             f"{_seeds_note(cube)}{_diverged_note(cube)})")


def divergence_final(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """At each run's last epoch, vs switch epoch: disagreement with the always-blurred run,
    and the aligned distance between seeds (mean over seed pairs); a line per batch size and
    schedule (restart dashed, hollow), one legend beside the last panel. Runs that diverged
    to chance are left out (a pair with one).
    Where the cube has the divergence drop, a third panel asks whether it marks the end:
    the distance to the always-blurred run at the summary's horizon relative to the earliest
    switch's, the continue schedule's drop where it falls below half (triangles, their
    interval as a bar) and its critical period's end (dotted), with the restart schedule
    dashed beside it."""
    _needs(cube, "divergence_final")
    kept = ~run_diverged(cube)
    final = cube.sel(epoch=cube.switch_epoch + int(cube.attrs["epochs_after_switch"]))
    horizon = float(cube.attrs.get("summary_horizon", np.nan))
    drop = "divergence_drop_epoch" in cube and np.isfinite(horizon)
    fig, axes = plt.subplots(1, 3 if drop else 2, figsize=(15.5 if drop else 11, 3.6))
    ax1, ax2 = axes[:2]
    for i, b in enumerate(cube.batch_size.values):
        for r in lr_schedules(cube):
            f = final.sel(batch_size=b)
            f = f.sel(lr_schedule=r) if "lr_schedule" in f.dims else f
            style = {"color": f"C{i}", "label": f"batch {b}, {r}", **_schedule_style(r)}
            ok = _sel(kept, batch_size=b, lr_schedule=r)
            if "div_disagreement" in f:
                ax1.plot(cube.switch_epoch, f.div_disagreement.sel(reference="blurred")
                         .where(ok).mean("seed"), **style)
            if "div_l2_aligned_seeds" in f:
                pair_ok = ok & ok.rename(seed="seed_b").sel(seed_b=f.seed_b)
                off = f.div_l2_aligned_seeds.where((f.seed != f.seed_b) & pair_ok)
                ax2.plot(cube.switch_epoch, off.mean(["seed", "seed_b"]), **style)
    ax1.set_ylabel("disagreement with always-blurred run")
    ax2.set_ylabel("aligned L2 between seeds")
    if drop:
        _drop_panel(cube, axes[2], horizon)
    for ax in axes:
        ax.set_xlabel("switch epoch")
        ax.grid(alpha=0.3)
    # one legend for the three panels (they share styles), beside them, off the data
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda h: len(h[0]))
    if handles:
        axes[-1].legend(handles, labels, fontsize=7, handlelength=3, loc="upper left",
                        bbox_to_anchor=(1.02, 1.0))
    if _diverged_note(cube):
        _caption(fig, f"At the end of training{_diverged_note(cube)}")
    _save(fig, path, dpi)


def _schedule_style(lr_schedule: str) -> dict:
    """How figure 4b draws a schedule's lines: continue solid, restart dashed and hollow."""
    return ({"ls": "--", "marker": "o", "mfc": "white"} if lr_schedule == "restart" else
            {"ls": "-", "marker": "o"})


def _drop_panel(cube: xr.Dataset, ax: plt.Axes, horizon: float) -> None:
    """Does the divergence mark the end? The distance to the always-blurred run ``horizon``
    epochs after each switch, over that of the earliest switch (the drop is where it falls
    below 0.5), per batch size: the continue schedule solid, with its drop as a triangle along
    the top (its interval as a bar) and the located end as a dotted line of the same colour;
    the restart schedule, where the cube has it, dashed with hollow markers, so that a drop
    the learning rate alone makes (halving with continue, never with restart) shows."""
    from critperiods.results.selection import divergence_at_horizon

    schedules = lr_schedules(cube)
    schedule = "continue" if "continue" in schedules else schedules[0]
    ends = _located_ends(cube)
    switches = cube.switch_epoch.values.astype(float)
    for i, b in enumerate(cube.batch_size.values):
        for r in [schedule] + [s for s in schedules if s == "restart" and s != schedule]:
            at = divergence_at_horizon(cube, b, horizon, r)
            finite = np.flatnonzero(np.isfinite(at))
            if finite.size < 2 or not at[finite[0]] > 0:
                continue
            ax.plot(switches, at / at[finite[0]], color=f"C{i}", label=f"batch {b}, {r}",
                    **_schedule_style(r))
            if r != schedule:
                continue
            value = float(_sel(cube.divergence_drop_epoch, batch_size=b, lr_schedule=r))
            interval = (_sel(cube.divergence_drop_epoch_interval, batch_size=b,
                             lr_schedule=r).values
                        if "divergence_drop_epoch_interval" in cube else None)
            _marker_at_top(ax, value, interval, 0.95 - 0.06 * i, f"C{i}")
            end = _end_of(ends, b, r)
            if np.isfinite(end):
                ax.axvline(end, color=f"C{i}", ls=":", lw=1.3)
    ax.axhline(0.5, color="0.5", ls=(0, (1, 3)), lw=1)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"L2 to always-blurred, {horizon:g} epochs after\nthe switch (/ earliest "
                  "switch's)")
    title = f"the drop (▼, interval bar) vs the end (dotted), {schedule}"
    if schedule != "restart" and "restart" in schedules:
        title += "; restart dashed"
    ax.set_title(title, fontsize=9)


def critical_period_vs_temperature(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Critical-period end (with its interval) vs batch size and vs lr / batch size, a colour
    per schedule, for the cells whose end is located (a deficit whose interval is above 0).
    Where the exponent is finite (≥ 3 located ends) the fitted power law is drawn, exponent
    and its interval in the legend; dashed where that interval includes 0 or is unbounded
    (no direction told)."""
    batch = cube.batch_size.values.astype(float)
    lr = float(cube.attrs.get("lr", 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for j, r in enumerate(lr_schedules(cube)):
        end = _sel(located_end(cube), lr_schedule=r)  # NaN: no deficit to locate an end for
        lo, hi = _sel(cube.critical_period_end_interval, lr_schedule=r).transpose(
            "bound", "batch_size").values
        for ax, x, exponent in ((axes[0], batch, "batch_size_exponent"),
                                (axes[1], lr / batch, "temperature_exponent")):
            yerr = np.clip(np.vstack([end - lo, hi - end]), 0, None)
            ax.errorbar(x * (1 + 0.03 * j), end, yerr=yerr, marker="os"[j % 2], capsize=4,
                        ls="none", color=f"C{j}",
                        label=r if bool(end.notnull().any()) else f"{r}: no end located")
            p = float(_sel(cube[exponent], lr_schedule=r)) if exponent in cube else float("nan")
            if np.isfinite(p):
                ok = np.isfinite(end.values) & (end.values > 0)
                c = np.exp(np.mean(np.log(end.values[ok]) - p * np.log(x[ok])))
                grid = np.geomspace(x.min(), x.max(), 50)
                bounds = _sel(cube[f"{exponent}_interval"], lr_schedule=r).values \
                    if f"{exponent}_interval" in cube else [np.nan, np.nan]
                unbounded = bool(np.isinf(bounds).any())
                told = ("" if np.isnan(bounds).all()
                        else ", interval unbounded" if unbounded
                        else f" [{bounds[0]:.2f}, {bounds[1]:.2f}]"
                        + (", includes 0" if bounds[0] <= 0 <= bounds[1] else ""))
                ax.plot(grid, c * grid**p, color=f"C{j}", lw=1,
                        ls="--" if unbounded or told.endswith("includes 0") else "-",
                        label=f"{r}: power law, exponent {p:.2f}{told}")
    for ax, name, x, label in ((axes[0], "batch size", batch, "{:g}"),
                               (axes[1], "SGD temperature proxy lr / batch size", lr / batch,
                                "{:.2g}")):
        ax.set_xscale("log")
        _ticks_at(ax, x, label)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, which="both")
        bottom, top = ax.get_ylim()  # room above the interval bars for the legend
        ax.set_ylim(bottom, top + 0.35 * (top - bottom))
        ax.legend(fontsize=7, loc="upper center")
    axes[0].set_ylabel("end of critical period (epoch)")
    _caption(fig, f"End of the critical period ({_seeds_note(cube)}; bars: jackknife-t "
                  "interval over seeds joined with the kink's profile interval), drawn only "
                  "where the deficit's interval is above 0",
             fontsize=9)
    _save(fig, path, dpi)


def _ticks_at(ax: plt.Axes, values: np.ndarray, label: str) -> None:
    """Ticks of a log x axis at the grid's own values (``label`` formats each), no minor
    ticks, and room on both sides: with two or three batch sizes, the decades' ticks would
    leave the points unlabelled at the panel's edges."""
    values = np.unique(values[np.isfinite(values)])
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([label.format(v) for v in values])
    ax.set_xlim(values.min() / 1.3, values.max() * 1.3)


# -- Perturbations (critperiods.train.perturbation) -------------------------------------------


#: Line styles of the blurred runs in the growth figure, where colour is the perturbation
#: epoch: a name (for the panel's title) and a dash pattern each, in switch order.
_BLURRED_STYLES = (("dashed", (0, (5, 2))), ("dotted", (0, (1, 1.5))),
                   ("dash-dotted", (0, (5, 2, 1, 2))), ("long-dashed", (0, (10, 3))))


def _run_styles(runs: np.ndarray) -> dict[int, tuple[str, object]]:
    """``{switch epoch: (name, line style)}`` of the perturbed runs: solid for the
    never-blurred run (switch 0), a dash pattern per blurred run in switch order."""
    styles: dict[int, tuple[str, object]] = {0: ("solid", "-")} if 0 in runs else {}
    for i, k in enumerate(sorted(int(k) for k in runs if k != 0)):
        styles[k] = _BLURRED_STYLES[i % len(_BLURRED_STYLES)]
    return styles


def _run_styles_note(styles: dict[int, tuple[str, object]]) -> str:
    """What each line style stands for, as a title says it."""
    return ", ".join(f"{name}: never blurred" if k == 0 else f"{name}: blurred until {k}"
                     for k, (name, _) in sorted(styles.items()))


def perturbation(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Lasting divergence vs perturbation epoch: a panel per batch size (a row per schedule),
    a line per perturbed run and epsilon (mean over seeds and replicates, bars: the range of
    the seeds' means); dashed grey: the critical-period end (band: its interval); dash-dotted
    grey: the half-deficit epoch; dotted: the switch of the blurred run."""
    _needs(cube, "perturbation")
    lasting = cube.perturb_lasting_l2
    span = cube.perturb_lasting_l2_seed_range
    schedules = lr_schedules(cube)
    runs = lasting.switch_epoch.values[lasting.notnull().any(
        [d for d in lasting.dims if d != "switch_epoch"]).values]
    ends = _located_ends(cube)
    nb = cube.sizes["batch_size"]
    fig, grid = plt.subplots(len(schedules), nb, figsize=(4.6 * nb, 3.6 * len(schedules)),
                             squeeze=False, sharey=True)
    for row, r in zip(grid, schedules, strict=True):
        for ax, b in zip(row, cube.batch_size.values, strict=True):
            for j, k in enumerate(runs):
                for m, eps in enumerate(lasting.epsilon.values):
                    if eps == 0:
                        continue
                    at = {"batch_size": b, "lr_schedule": r, "switch_epoch": k, "epsilon": eps}
                    y = _sel(lasting, **at)
                    lo, hi = _sel(span, **at).transpose("bound", ...).values
                    ok = np.isfinite(y.values)
                    label = ("never blurred" if k == 0 else f"blurred until {k}") + \
                        (f", ε={eps:g}" if lasting.sizes["epsilon"] > 1 else "")
                    ax.errorbar(y.perturb_epoch[ok], y[ok], yerr=np.clip(
                        [y.values[ok] - lo[ok], hi[ok] - y.values[ok]], 0, None),
                        marker="os^v"[m % 4], capsize=3, color=f"C{j}", label=label,
                        ls="-" if k == 0 else "--")
                if k > 0:
                    ax.axvline(k, color=f"C{j}", ls=":", lw=1)
            end = _end_of(ends, b, r)
            if np.isfinite(end):
                ax.axvline(end, color="0.3", ls="--", lw=1.2, label="critical-period end")
                lo, hi = _sel(cube.critical_period_end_interval, batch_size=b,
                              lr_schedule=r).values
                ax.axvspan(lo, hi, color="0.5", alpha=0.12)
            half = (float(_sel(cube.half_deficit_epoch, batch_size=b, lr_schedule=r))
                    if "half_deficit_epoch" in cube else np.nan)
            if np.isfinite(half):
                ax.axvline(half, color="0.3", ls="-.", lw=1, label="half-deficit epoch")
            ax.set_yscale("log")
            ax.set_title(f"batch {b}" + ("" if len(schedules) == 1 else f", lr {r}"), fontsize=9)
            ax.set_xlabel("perturbation epoch")
            ax.grid(alpha=0.3, which="both")
        only = (f" (ε = {float(lasting.epsilon.values[lasting.epsilon.values > 0][0]):g})"
                if int((lasting.epsilon.values > 0).sum()) == 1 else "")
        row[0].set_ylabel(f"‖θ_copy − θ_twin‖ at epoch {int(cube.epoch.max())}{only}")
    # one legend below the panels, so that it covers no curve; the band and the switch
    # lines have no artist of their own to name them
    handles, labels = {}, {}
    for ax in grid.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = list(handles)
    if ends is not None and bool(np.isfinite(ends.values).any()):
        labels.append("its interval")
        handles["its interval"] = Patch(color="0.5", alpha=0.12)
    if any(k > 0 for k in runs):
        labels.append("switch of the blurred run (dotted, in its colour)")
        handles[labels[-1]] = Line2D([], [], color="0.3", ls=":", lw=1)
    if labels:  # none: only ε = 0 copies, no blurred run and no located end
        fig.legend([handles[label] for label in labels], labels, loc="lower center",
                   ncol=min(len(labels), 4), fontsize=8, frameon=False)
    legend_height = (0.1 + 0.22 * (1 + (len(labels) - 1) // 4)) / fig.get_figheight()
    n = cube.sizes["replicate"]
    title = (f"How far a nudge carries (mean over {_seeds_note(cube)} and {n} "
             f"replicate{'s' if n != 1 else ''}; bars: range of the seeds)")
    fig.suptitle("\n".join(textwrap.wrap(title, 60 * nb)), fontsize=10)
    _save(fig, path, dpi, rect=(0, legend_height, 1, 1))


def perturbation_growth(cube: xr.Dataset, path: str | Path, dpi: int = 110) -> None:
    """Distance between copy and twin relative to epsilon (geometric mean over seeds and
    replicates, largest epsilon, first schedule; runs that diverged to chance left out):
    over the first steps (top) and over the
    epochs since the perturbation (bottom); a colour per perturbation epoch, a line style per
    run (:func:`_run_styles`: solid for the never-blurred run), named in each panel's title."""
    _needs(cube, "perturbation_growth")
    eps = float(cube.epsilon.max())
    r = lr_schedules(cube)[0]
    # the copies of a run that diverged to chance follow its blown-up branch, and those of
    # a twin that ended at chance have a broken reference: left out
    per = eps if eps > 0 else np.nan  # only epsilon 0: nothing to draw (said in the panels)
    steps, epochs = (_sel(valid_copies(cube, name).sel(epsilon=eps),
                          lr_schedule=r) / per for name in ("perturb_step_l2", "perturb_l2"))
    runs = steps.switch_epoch.values[steps.notnull().any(
        [d for d in steps.dims if d != "switch_epoch"]).values]
    styles = _run_styles(runs)
    nb = cube.sizes["batch_size"]
    fig, grid = plt.subplots(2, nb, figsize=(4.6 * nb, 6.4), squeeze=False)
    # viridis short of its palest yellow, which vanishes on white
    colors = plt.cm.viridis(np.linspace(0, 0.78, cube.sizes["perturb_epoch"]))
    for col, b in enumerate(cube.batch_size.values):
        for k in runs:
            for color, e in zip(colors, cube.perturb_epoch.values, strict=True):
                where = {"batch_size": b, "switch_epoch": k, "perturb_epoch": e}
                label = f"e={e}" if k == runs.min() else None
                s = np.exp(np.log(steps.sel(where)).mean(["seed", "replicate"]))
                ok = np.isfinite(s.values)
                grid[0][col].plot(s.step[ok], s[ok], color=color, label=label, lw=1,
                                  ls=styles[int(k)][1])
                t = np.exp(np.log(epochs.sel(where)).mean(["seed", "replicate"]))
                ok = np.isfinite(t.values)
                grid[1][col].plot(t.epoch[ok] - e, t[ok], color=color, marker=".", lw=1,
                                  ls=styles[int(k)][1])
        grid[0][col].set_title("\n".join(textwrap.wrap(
            f"batch {b} ({_run_styles_note(styles)})", 60)), fontsize=8)
        grid[0][col].set_xlabel("optimizer steps since the perturbation")
        grid[1][col].set_xlabel("epochs since the perturbation")
        grid[1][col].xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 10]))
        for ax in grid[:, col]:
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
    grid[0][0].set_ylabel(f"‖θ_copy − θ_twin‖ / ε (ε={eps:g})")
    grid[1][0].set_ylabel(f"‖θ_copy − θ_twin‖ / ε (ε={eps:g})")
    if eps > 0:
        grid[0][-1].legend(fontsize=7, title="perturbed at", title_fontsize=7)
    else:  # nothing to divide by, and nothing grows: say so, not an empty panel
        for ax in grid.ravel():
            ax.text(0.5, 0.5, "only ε = 0 here: each copy is its twin,\nso no distance grows",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8)
    _save(fig, path, dpi)


PLOTTERS: dict[str, Callable[..., None]] = {
    "critical_period_vs_temperature": critical_period_vs_temperature,
    "critical_period": critical_period,
    "learning_curves": learning_curves,
    "llc": llc,
    "llc_traces": llc_traces,
    "divergence": divergence,
    "divergence_final": divergence_final,
    "perturbation": perturbation,
    "perturbation_growth": perturbation_growth,
}
