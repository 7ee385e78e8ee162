"""What a grid can tell: how often the summary's intervals cover the truth, and how often a
marker's offset from the end is called "after" or "before the end", on simulated runs.

Each simulated run draws, per seed, on the grid's switch epochs and λ̂ epochs (:class:`Grid`):

* a permanent-deficit sweep with a known end ``E``: final accuracy flat, then falling
  ``deficit_slope`` pp per epoch of delay, with noise ``accuracy_noise`` pp;
* a λ̂ curve along the trunk with a known knee ``K``: a broken stick rising ``llc_slopes``
  per epoch before and after it (8, then 2), a level of its own per seed (s.d.
  ``llc_seed_spread``, 10), and noise ``llc_noise`` per estimate;
* the distance to the always-blurred run at the horizon, per switch epoch, with a known
  drop ``D``: a level of its own per seed, falling linearly from it to 0 between ``D − 4``
  and ``D + 4``, so that the seed mean halves at ``D``; noise ``divergence_noise`` of the
  distance itself (10 %), so that, as in a run, distances near 0 vary little.

With ``seed_shift`` a seed moves its end, knee and drop by the same factor: what pairing is
for. :class:`Scenario`'s defaults are the designed scenarios of ``bench/marker_coverage.py``
(a clear bend, λ̂ noise 5). :data:`DEFAULT_NOISE`, what ``power`` assumes unless told, is
what the default run measured (noisier λ̂) with the designed bend; a run of another dataset or model
should say its own, or have it read off its cube (:mod:`critperiods.results.observed_noise`,
``power --noise-from``). :func:`coverage` then measures each simulated run with the
summary's own code (:func:`critperiods.results.end_fit.fit_end`,
:func:`critperiods.results.markers.knee_fit` and :func:`~critperiods.results.markers.drop_fit`,
which :func:`critperiods.results.summary.critical_period_summary` calls on a cube): the
knee's and the drop's intervals, and knee − end and drop − end, paired (each seed left out of
both) and reported only where the end is located; for the knee also unpaired (the two
jackknife half-widths added in quadrature, with the same floor and range), for
comparison. ``bench/marker_coverage.py`` prints its table for the default grid
(docs/analysis.md), ``python -m critperiods power`` for a config's.

Deterministic (fixed RNG seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from critperiods.results.end_fit import EndFit, fit_end
from critperiods.results.fits import (
    POWER_LAW_POINTS,
    at_least_and_within,
    divergence_drop_epoch,
    fit_power_law,
    jackknife_interval,
)
from critperiods.results.knee import offset_floor
from critperiods.results.markers import (
    MARKER_OFFSETS,
    NET_LLC_KNEES,
    KneeFit,
    drop_fit,
    knee_fit,
)
from critperiods.results.multiple_testing import holm_adjusted


@dataclass(frozen=True)
class Grid:
    """What a simulated run is measured on: the switch epochs, the λ̂ epochs along the trunk,
    the number of seeds and the intervals' level."""

    switches: tuple[float, ...]
    llc_epochs: tuple[float, ...]
    seeds: int
    level: float = 0.9


#: The default experiment's grid (config.yaml): switch epochs 0–16 by 4, λ̂ every 2 epochs
#: from 2 to 16, 3 seeds.
DEFAULT_GRID = Grid(tuple(np.arange(0, 17, 4.0)), tuple(np.arange(2, 17, 2.0)), 3)


@dataclass(frozen=True)
class Scenario:
    """The truth of a simulated run, and how noisy it is measured."""

    end: float  #: the true end (epochs)
    knee: float  #: the true λ̂ knee (epochs)
    drop: float = 7.0  #: the true divergence drop (switch epoch)
    llc_noise: float = 5.0  #: s.d. of a λ̂ estimate around its seed's curve
    seed_shift: float = 0.0  #: s.d. of a seed's log-shift of its end, knee and drop together
    accuracy_noise: float = 1.0  #: s.d. of a run's final accuracy (pp)
    deficit_slope: float = 0.5  #: final accuracy lost per epoch of delay past the end (pp)
    llc_slopes: tuple[float, float] = (8.0, 2.0)  #: λ̂ per epoch before and after the knee
    llc_seed_spread: float = 10.0  #: s.d. of a seed's λ̂ level
    divergence_noise: float = 0.1  #: s.d. of a distance, relative to its value


def simulate(sc: Scenario, grid: Grid, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(switch, seed) final accuracy (pp), (λ̂ epoch, seed) λ̂ and (switch, seed) distance at
    the horizon of one simulated run."""
    switches, epochs, n = np.asarray(grid.switches), np.asarray(grid.llc_epochs), grid.seeds
    shift = np.exp(rng.normal(0, sc.seed_shift, n)) if sc.seed_shift else np.ones(n)
    ends, knees, drops = sc.end * shift, sc.knee * shift, sc.drop * shift
    acc = (85 - sc.deficit_slope * np.maximum(switches[:, None] - ends[None], 0)
           + rng.normal(0, sc.accuracy_noise, (switches.size, n)))
    rel = epochs[:, None] - knees[None]
    before, after = sc.llc_slopes
    llc = (np.where(rel < 0, before * rel, after * rel) + 100
           + rng.normal(0, sc.llc_seed_spread, n)[None]
           + rng.normal(0, sc.llc_noise, (epochs.size, n)))
    level = rng.uniform(5, 15, n)[None]
    ramp = np.clip((drops[None] + 4 - switches[:, None]) / 8, 0, 1)
    div = level * ramp * (1 + rng.normal(0, sc.divergence_noise, (switches.size, n)))
    return acc, llc, div


def _drop(switches: np.ndarray, div: np.ndarray) -> tuple[float, np.ndarray]:
    """The drop of the seed mean (every seed has a distance here, so the plain mean) and its
    value without each seed, as :func:`~critperiods.results.markers.drop_values` computes
    them on a cube."""
    loo = np.array([divergence_drop_epoch(switches, np.delete(div, i, axis=1).mean(axis=1))
                    for i in range(div.shape[1])])
    return divergence_drop_epoch(switches, div.mean(axis=1)), loo


def _unpaired(knee: KneeFit, end: EndFit, level: float) -> tuple[float, float]:
    """knee − end's interval if the two were independent: their jackknife-t half-widths
    added in quadrature, with the paired interval's floor and within the same range (what
    the knee and the end can give), so that the two differ only by the pairing."""
    halves = (np.diff(jackknife_interval(jk.value, jk.without_each_seed[jk.present], level))[0]
              / 2 for jk in (knee.jackknife, end.jackknife))
    half = max(offset_floor(knee.resolution, end.resolution), float(np.hypot(*halves)))
    (k_lo, k_hi), (e_lo, e_hi) = knee.jackknife.bounds, end.jackknife.bounds
    offset = knee.offset[0]
    return at_least_and_within(offset, offset - half, offset + half, 0.0,
                               (k_lo - e_hi, k_hi - e_lo))


@dataclass(frozen=True)
class Offsets:
    """The offsets' p-values of each simulated run (:meth:`KneeFit.offset_p`,
    :meth:`DropFit.offset_p`; NaN where the run reports none) and whether its knee is one the
    short answer counts as weak (flagged, or unable to come before the end)."""

    knee: np.ndarray
    drop: np.ndarray
    weak: np.ndarray


def coverage(sc: Scenario, grid: Grid, trials: int) -> dict[str, float]:
    """Over ``trials`` simulated runs, each measured as the summary measures a cell
    (:func:`~critperiods.results.end_fit.fit_end`,
    :func:`~critperiods.results.markers.knee_fit`,
    :func:`~critperiods.results.markers.drop_fit`): each interval's coverage
    (``<key> cover``) and median width (``<key> width``), over the runs that report it, for
    the keys ``knee``, ``paired`` (knee − end), ``unpaired``, ``drop`` and ``drop paired``
    (drop − end); the share of all runs whose paired offset excludes 0 (``paired
    excludes 0``, ``drop paired excludes 0``): the runs that call the marker after or
    before the end. A run without a knee, a drop or a located end reports no offset, and so
    calls nothing. ``paired excludes 0, unflagged``: the share whose knee call the short
    answer would count before Holm's correction over a run's offsets, on a knee neither
    unstable, within noise, nor unable to come before the end
    (:attr:`~critperiods.results.tables.MarkerCall.weak`). ``bends``: the share of
    all runs whose λ̂ curve has a knee that bends beyond its noise (not flagged within
    noise, :func:`~critperiods.results.knee.bends_beyond_noise`)."""
    return simulated_offsets(sc, grid, trials)[0]


def simulated_offsets(sc: Scenario, grid: Grid, trials: int, p_values: bool = False
                      ) -> tuple[dict[str, float], Offsets | None]:
    """:func:`coverage`'s shares, and (``p_values``) each simulated run's offsets
    (:class:`Offsets`) for :func:`held_after_holm`; None without."""
    rng = np.random.default_rng(0)
    switches, epochs, level = np.asarray(grid.switches), np.asarray(grid.llc_epochs), grid.level
    keys = ("knee", "paired", "unpaired", "drop", "drop paired")
    hit: dict[str, list] = {k: [] for k in keys}
    width: dict[str, list] = {k: [] for k in keys}
    excludes: dict[str, list] = {"paired": [], "drop paired": []}
    strong: list[bool] = []  # called on a knee the answer does not flag as weak
    bends: list[bool] = []
    p_knee, p_drop, weak = [], [], []
    present = np.ones(grid.seeds, dtype=bool)

    def record(key: str, truth: float, interval: tuple[float, float]) -> None:
        lo, hi = interval
        if np.isfinite(lo) and np.isfinite(hi):
            hit[key].append(lo <= truth <= hi)
            width[key].append(hi - lo)

    def called(key: str, offset: tuple[float, float, float]) -> None:
        excludes[key].append(bool(offset[1] > 0 or offset[2] < 0))  # NaN: not called

    for _ in range(trials):
        acc, llc, div = simulate(sc, grid, rng)
        end = fit_end(switches, acc, level)
        if epochs.size:  # else no λ̂ along the trunk: no knee, so none is called
            knee = knee_fit(epochs, llc, level, end)
            bends.append(bool(np.isfinite(knee.knee[0]) and not knee.within_noise))
            record("knee", sc.knee, knee.knee[1:])
            record("paired", sc.knee - sc.end, knee.offset[1:])
            called("paired", knee.offset)
            weak.append(bool(knee.unstable or knee.within_noise
                             or (np.isfinite(knee.earliest) and knee.earliest >= end.end)))
            strong.append(excludes["paired"][-1] and not weak[-1])
            if p_values:
                p_knee.append(knee.offset_p())
            if np.isfinite(knee.offset[0]):
                record("unpaired", sc.knee - sc.end, _unpaired(knee, end, level))
        drop, drop_loo = _drop(switches, div)
        fit = drop_fit(switches, switches, drop, drop_loo, present, level, end)
        record("drop", sc.drop, fit.interval)
        record("drop paired", sc.drop - sc.end, fit.offset[1:])
        called("drop paired", fit.offset)
        if p_values:
            p_drop.append(fit.offset_p())
    out = {f"{k} cover": float(np.mean(v)) if v else float("nan") for k, v in hit.items()}
    out.update({f"{k} width": float(np.median(v)) if v else float("nan")
                for k, v in width.items()})
    out.update({f"{k} excludes 0": float(np.mean(v)) if v else float("nan")
                for k, v in excludes.items()})
    out["bends"] = float(np.mean(bends)) if bends else float("nan")
    out["paired excludes 0, unflagged"] = float(np.mean(strong)) if strong else float("nan")
    if not p_values:
        return out, None
    if not epochs.size:
        p_knee, weak = [float("nan")] * trials, [False] * trials
    return out, Offsets(np.array(p_knee, dtype=float), np.array(p_drop, dtype=float),
                        np.array(weak, dtype=bool))


#: How many families :func:`held_after_holm` draws around each simulated run.
FAMILIES_PER_RUN = 20


def held_after_holm(offsets: Offsets, cells: int, knees_per_cell: int, level: float,
                    weak_knees: bool = True) -> dict[str, float]:
    """What Holm's correction over a whole run's offsets, as the report applies it
    (:func:`~critperiods.results.multiple_testing.holm_adjusted`), leaves of simulated runs'
    calls. Each simulated run is one cell (batch size) of :data:`FAMILIES_PER_RUN` runs of
    ``cells`` cells, the others drawn from the other simulated runs: each cell offers its
    trunk knee, ``knees_per_cell − 1`` more knees (the never-blurred run's, and with
    ``llc.descent`` both again net of the descent), each another simulated run's trunk knee,
    and its drop; the cells' noise and truth are the simulation's. An offset is called where
    it holds at ``1 − level`` on a knee the answer does not count as weak (or on a drop):
    where the short answer names it. Returns the share of runs with some such call (``some
    held``: a false call where every marker is at the end) and the share of trunk knees
    called (``knee held``), over all the simulated runs (one without an offset calls
    nothing). The simulated runs a family draws are distinct where there are enough of them.
    The knees of one cell are drawn independently, where a run's share the end and often
    their shape: the correction is the same whatever their dependence, but a run's calls
    then come together more often than here, so ``some held`` may be off by a few points
    (``bench/familywise_false_calls.py`` prints both; ``weak_knees=False`` counts flagged
    knees too, as it does)."""
    rng = np.random.default_rng(1)
    alpha, n = 1 - level, offsets.knee.size
    some, knee = [], []
    others_per_family = cells - 1 + cells * (knees_per_cell - 1)

    def others(i: int) -> np.ndarray:  # simulated runs other than i (i itself: none)
        if n == 1:
            return np.zeros(others_per_family, dtype=int)
        drawn = rng.choice(n - 1, others_per_family, replace=n - 1 < others_per_family)
        return drawn + (drawn >= i)

    for i in range(n):
        for _ in range(FAMILIES_PER_RUN):
            drawn = others(i)
            cell_runs = np.concatenate([[i], drawn[:cells - 1]])
            more_knees = drawn[cells - 1:]
            family = np.concatenate([offsets.knee[cell_runs], offsets.knee[more_knees],
                                     offsets.drop[cell_runs]])
            held = holm_adjusted(family) < alpha  # NaN: not told
            weak = np.concatenate([offsets.weak[cell_runs], offsets.weak[more_knees],
                                   np.zeros(cells, dtype=bool)])  # a drop is never weak
            weak &= weak_knees
            named = held & ~weak  # what the short answer names
            some.append(bool(named.any()))
            knee.append(bool(named[0]))
    return {"some held": float(np.mean(some)) if some else float("nan"),
            "knee held": float(np.mean(knee)) if knee else float("nan")}


def exponent_coverage(grid: Grid, batch_sizes: Sequence[float], ends: Sequence[float],
                      exponent: float, trials: int,
                      noise: Scenario | Sequence[Scenario] | None = None) -> dict[str, float]:
    """Over ``trials`` simulated grids, one cell per batch size with its true end (``ends``,
    on the power law of ``exponent``) at ``noise`` (one for all, or one per batch size),
    each end measured as the summary
    measures it (:func:`~critperiods.results.end_fit.fit_end`; NaN where not located) and
    the exponent fitted as the summary fits it
    (:func:`~critperiods.results.fits.fit_power_law`, censored at the first switch): the
    shares of runs with an exponent (``fitted``), whose interval is unbounded (a censored
    end, ``unbounded``), holds the true exponent (``cover``, of the bounded ones) and
    excludes 0 (``excludes 0``, of all runs), and the median width of the bounded
    intervals. A seed's runs at different batch sizes are drawn independently here (in a
    real grid they share the seed's initialisation and data order;
    :func:`~critperiods.results.observed_noise.residual_correlation` measures how far a run's
    err together)."""
    noise = noise or DEFAULT_NOISE
    rng = np.random.default_rng(1)
    switches, level = np.asarray(grid.switches), grid.level
    x = np.asarray(batch_sizes, dtype=float)
    noises = list(noise) if isinstance(noise, Sequence) else [noise] * len(ends)
    fitted, unbounded, cover, excludes, width = [], [], [], [], []
    for _ in range(trials):
        found, refits = [], []
        for end, at in zip(ends, noises, strict=True):
            acc, _, _ = simulate(replace(at, end=end, knee=end, drop=end), grid, rng)
            fit = fit_end(switches, acc, level)
            found.append(fit.end if fit.located else np.nan)
            refits.append(fit.jackknife.without_each_seed)
        p, _, lower, upper = fit_power_law(x, np.array(found), np.array(refits).T, level,
                                           censored_at=float(switches[0]))
        fitted.append(bool(np.isfinite(p)))
        unbounded.append(bool(np.isinf(lower) or np.isinf(upper)))
        excludes.append(bool(lower > 0 or upper < 0))
        if np.isfinite(lower) and np.isfinite(upper):
            cover.append(lower <= exponent <= upper)
            width.append(upper - lower)
    return {"fitted": float(np.mean(fitted)), "unbounded": float(np.mean(unbounded)),
            "cover": float(np.mean(cover)) if cover else float("nan"),
            "excludes 0": float(np.mean(excludes)),
            "width": float(np.median(width)) if width else float("nan")}


def exponent_table(grid: Grid, batch_sizes: Sequence[float], seeds: list[int], trials: int,
                   exponent: float, end: float | None = None,
                   noise: Scenario | Sequence[Scenario] | None = None,
                   noise_source: str = "the same noise as above",
                   end_source: str = "") -> list[str]:
    """Lines saying what ``grid`` can tell of the exponent of end ∝ batch size^p with each
    number of ``seeds``, where the true ends lie on that power law through ``end`` (default
    the middle of the switch range; ``end_source`` says where another came from, "--end"
    where unsaid) at the geometric middle of ``batch_sizes`` (in increasing order;
    ``noise`` one per batch size, or one for all): :func:`exponent_coverage`."""
    x = np.asarray(batch_sizes, dtype=float)
    if x.size < POWER_LAW_POINTS:
        return [f"the exponent: a power law needs {POWER_LAW_POINTS} batch sizes, this grid has "
                f"{x.size}: not simulated"]
    first, last = grid.switches[0], grid.switches[-1]
    middle = (first + last) / 2 if end is None else float(end)
    source = end_source or ("--end" if end is not None else "the middle of the switch range")
    ends = middle * (x / np.exp(np.mean(np.log(x)))) ** exponent
    lines = [f"the exponent (end ∝ batch size^p, p = {exponent:g}, --exponent): true ends "
             + ", ".join(f"{e:.3g} at batch {b:g}" for b, e in zip(x, ends, strict=True))
             + f" (the end at the middle batch size: {source}"
             + ("; --end sets it" if source != "--end" else "")
             + f"); {noise_source}, {trials} simulated grids per row"]
    if ends.min() <= first + 1e-9 or ends.max() >= last - 1e-9:
        lines.append("note: an end at or outside the switch range is censored or cannot be "
                     "placed: set --end or the switch epochs so that every end lies inside")
    lines += ["", "| seeds | exponent fitted (of all grids) | interval unbounded (an end, or "
                  "one refitted without a seed, at or before the first switch; of all) | "
                  "interval holds p (of the bounded) | their median width | excludes 0: "
                  "p ≠ 0 called (of all) |",
              "|---|---|---|---|---|---|"]
    for n in seeds:
        got = exponent_coverage(replace(grid, seeds=n), x, ends, exponent, trials, noise)
        width = f"{got['width']:.2g}" if np.isfinite(got["width"]) else "n/a"
        lines.append(f"| {n} | {_pct(got['fitted'])} | {_pct(got['unbounded'])} | "
                     f"{_pct(got['cover'])} | {width} | {_pct(got['excludes 0'])} |")
    return lines


def switch_spacing(grid: Grid) -> float:
    """The median gap between the grid's switch epochs (4 in config.yaml, 20 in the CIFAR-10
    replication): how far from the end a marker must sit for the grid to resolve it; 4 with
    a single switch epoch."""
    gaps = np.diff(grid.switches)
    return float(np.median(gaps)) if gaps.size else 4.0


def grid_of(config: dict) -> Grid:
    """The grid a config's runs are measured on: its switch epochs, the λ̂ epochs along the
    trunk (:func:`critperiods.pipeline.plan.llc_epochs`), its seeds and its interval level."""
    from critperiods.pipeline.plan import checkpoint_epochs, llc_epochs

    llc = llc_epochs(config, checkpoint_epochs(config), trunk=True)
    level = config.get("analysis", {}).get("interval_level", 0.9)
    return Grid(tuple(float(s) for s in sorted(config["grid"]["switch_epochs"])),
                tuple(float(e) for e in llc), len(config["grid"]["seeds"]), float(level))


def _epochs(values: tuple[float, ...]) -> str:
    if not values:
        return "none"
    shown = [f"{v:g}" for v in values]
    return ", ".join(shown) if len(shown) <= 6 else f"{shown[0]}, {shown[1]}, …, {shown[-1]}"


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.0f} %"


#: The noise and effect sizes ``power`` assumes unless told: the noise of the default run's
#: batch 128 (the middle of its three) as ``power --noise-from`` reads it off its cube
#: (:mod:`critperiods.results.observed_noise`), rounded, at 99f26cd (before the
#: ``unstable_step`` flag, which leaves out some of its estimates and reads λ̂ ± 16, levels
#: ± 32: docs/analysis.md), and the designed scenarios' bend of λ̂ (8, then 2 per epoch).
#: No trunk of that run bends beyond its noise in a way to plan with (batch 128's bend at
#: 99f26cd, 22 then 7, was the rise from epoch 2 to 4, where the chains' descent bias is
#: largest: docs/llc.md). Its markers are placeholders.
DEFAULT_NOISE = Scenario(0.0, 0.0, llc_noise=14.0, accuracy_noise=1.0, deficit_slope=0.5,
                         llc_slopes=(8.0, 2.0), llc_seed_spread=25.0, divergence_noise=0.1)
DEFAULT_NOISE_SOURCE = ("the default run's noise at batch 128 and a designed bend of λ̂: set "
                        "them to your run's, or read them off its cube with --noise-from")


#: How far below its nominal level a simulated coverage may fall before ``power`` says the
#: interval is too narrow there (200 runs put ± 2 points of noise on a coverage near 90 %).
LOW_COVERAGE = 0.1


def noise_line(noise: Scenario) -> str:
    """One line that states the noise and effect sizes of ``noise`` (not its markers)."""
    before, after = noise.llc_slopes
    return (f"final accuracy ± {noise.accuracy_noise:.2g} pp per run, deficit "
            f"{noise.deficit_slope:.2g} pp per epoch of delay; λ̂ ± {noise.llc_noise:.2g} per "
            f"estimate, rising {before:.2g} then {after:.2g} per epoch, seeds' levels "
            f"± {noise.llc_seed_spread:.2g}; distances ± {100 * noise.divergence_noise:.2g} % "
            f"of their value; seeds shifting the end, knee and drop "
            f"± {100 * noise.seed_shift:.2g} %")


def power_table(grid: Grid, seeds: list[int], trials: int, offset: float,
                end: float | None = None, noise: Scenario | None = None,
                noise_source: str = DEFAULT_NOISE_SOURCE, cells: int = 3,
                knees_per_cell: int = 2) -> list[str]:
    """Lines saying what ``grid`` can tell with each number of ``seeds``: where the markers
    are the end (``end``, default the middle of the switch range), how often an offset is
    called anyway (false calls, nominally at most 1 − level); with a knee ``offset`` epochs
    after the end and a drop ``offset`` before it, how often each is called, how often that
    knee's curve bends beyond its noise (is not flagged within noise: how often the run
    could see the bend at all), and how often the paired intervals hold the truth. Those
    calls are each offset's own; two more columns give them after Holm's correction over a
    run of ``cells`` batch sizes with ``knees_per_cell`` knees and a drop each, as the
    report calls them (:func:`held_after_holm`): the runs with some false call, and the knees
    called.
    ``noise`` carries the noise settings of :class:`Scenario` (its ``end``, ``knee`` and
    ``drop`` are ignored); ``noise_source`` says where they come from."""
    noise = noise or DEFAULT_NOISE
    end = (grid.switches[0] + grid.switches[-1]) / 2 if end is None else float(end)
    null = replace(noise, end=end, knee=end, drop=end)
    moved = replace(noise, end=end, knee=end + offset, drop=end - offset)
    lines = [
        f"switch epochs {_epochs(grid.switches)}; λ̂ along the trunk at {_epochs(grid.llc_epochs)}; "
        f"{grid.level:.0%} intervals; {trials} simulated runs per row (a share near 50 % has a "
        f"standard error of {100 * math.sqrt(0.25 / trials):.1f} points), the end at epoch "
        f"{end:.3g}, the "
        f"markers away from it {offset:g} epochs (--offset)",
        f"noise: {noise_line(noise)} ({noise_source})",
    ]
    knee_range = grid.llc_epochs[1:-1]

    def placeable(knee: float) -> bool:
        return bool(knee_range) and knee_range[0] <= knee <= knee_range[-1]

    # a marker the grid cannot place is neither called nor missed: its cell says n/a
    shown = {"knee at": placeable(end), "knee away": placeable(end + offset),
             "drop at": grid.switches[0] <= end <= grid.switches[-1],
             "drop away": grid.switches[0] <= end - offset <= grid.switches[-1]}
    if not grid.llc_epochs:
        lines.append("note: no λ̂ epoch along the trunk in this grid (llc.enabled, "
                     "llc.first_epoch, llc.every against the switch epochs): no knee, n/a")
    for knee in sorted({end, end + offset} if grid.llc_epochs else ()):
        if not placeable(knee):
            lines.append(f"note: a knee at epoch {knee:.3g} is outside what these λ̂ epochs can "
                         "place (the second to the second-to-last): n/a")
    for drop in sorted({end, end - offset}):
        if not grid.switches[0] <= drop <= grid.switches[-1]:
            lines.append(f"note: a drop at switch epoch {drop:.3g} is outside the switch "
                         "epochs: n/a")
    tests = cells * (knees_per_cell + 1)
    lines += ["", f"| seeds | false calls, markers at the end (knee, drop) | knee {offset:g} "
                  f"after the end: called (on a knee the answer does not flag) | its bend "
                  f"beyond λ̂'s noise | drop {offset:g} before: called | coverage of knee − "
                  f"end, drop − end | after Holm over {tests} offsets (one schedule's): runs "
                  f"with a false call | after Holm: knee {offset:g} after called |",
              "|---|---|---|---|---|---|---|---|"]
    short = []
    for n in seeds:
        sized = replace(grid, seeds=n)
        (at, at_p), (away, away_p) = (simulated_offsets(null, sized, trials, p_values=True),
                                      simulated_offsets(moved, sized, trials, p_values=True))
        at_holm = held_after_holm(at_p, cells, knees_per_cell, grid.level)
        away_holm = held_after_holm(away_p, cells, knees_per_cell, grid.level)
        false_runs = (_pct(at_holm["some held"]) if shown["knee at"] or shown["drop at"]
                      else "n/a")  # neither marker at the end placeable: nothing to call
        short += [f"with {n} seeds the {what} interval held the true offset in "
                  f"{_pct(away[key])} of simulated runs"
                  for what, key, where in (("knee − end", "paired cover", "knee away"),
                                           ("drop − end", "drop paired cover", "drop away"))
                  if shown[where] and away[key] < grid.level - LOW_COVERAGE]

        def cell(stats: dict, key: str, where: str) -> str:
            return _pct(stats[key]) if shown[where] else "n/a"

        lines.append(f"| {n} | {cell(at, 'paired excludes 0', 'knee at')}, "
                     f"{cell(at, 'drop paired excludes 0', 'drop at')} | "
                     f"{cell(away, 'paired excludes 0', 'knee away')} "
                     f"({cell(away, 'paired excludes 0, unflagged', 'knee away')}) | "
                     f"{cell(away, 'bends', 'knee away')} | "
                     f"{cell(away, 'drop paired excludes 0', 'drop away')} | "
                     f"{cell(away, 'paired cover', 'knee away')}, "
                     f"{cell(away, 'drop paired cover', 'drop away')} | "
                     f"{false_runs} | "
                     f"{cell(away_holm, 'knee held', 'knee away')} |")
    if short:
        lines.append(f"note: {'; '.join(short)}, against a nominal {grid.level:.0%}: at this "
                     "grid and end that interval is too narrow, and an offset it calls is not "
                     "to be trusted (one known cause: a drop within about a switch spacing of "
                     "the first switch, whose early value is read where the distance already "
                     "falls, so the drop is read late; docs/analysis.md)")
    lines.append("note: the first calls are each offset's own interval's; the report tells a "
                 "marker from the end only where the offset also holds after Holm's correction "
                 f"over all of a run's offsets ({len(MARKER_OFFSETS) - len(NET_LLC_KNEES)} per "
                 f"batch size and schedule with a located end, {len(MARKER_OFFSETS)} with "
                 f"llc.descent). The last two columns are those calls: a run of {cells} batch "
                 f"size{'s' * (cells != 1)} at this noise and truth, each with "
                 f"{knees_per_cell + 1} offsets, drawn from the simulated runs, its knees "
                 "drawn independently; a second schedule that locates ends adds offsets, and "
                 "calls less (docs/analysis.md)")
    return lines


__all__ = ["DEFAULT_GRID", "DEFAULT_NOISE", "Grid", "Scenario", "coverage", "exponent_coverage",
           "exponent_table", "grid_of", "noise_line",
           "power_table", "simulate", "switch_spacing"]
