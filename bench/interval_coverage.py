"""How often the end's and the exponent's intervals cover the truth, on simulated sweeps.

Each trial draws a permanent-deficit sweep with a known end per batch size (a hinge: flat,
then ``slope`` per epoch) whose ends follow a known power law, with per-run noise and, in
some scenarios, a per-seed shift of the end shared by every batch size (seed ``s`` gives
every batch size the same initialisation and data order) and runs missing at random. It
asks whether each method's nominal-90 % interval holds the true value, on the same draws:

* the end: the percentile **seed bootstrap** the project used until 2026-12, the
  leave-one-seed-out **jackknife-t** alone, at least ± half the switch spacing, used until
  2026-12-05, and that jackknife **joined with the kink's profile interval**, which it uses
  now (:func:`critperiods.results.fits.hinge_end`);
* the exponent: the percentile bootstrap over **batch sizes** used until then against the
  jackknife over seeds left out at every batch size
  (:func:`critperiods.results.fits.fit_power_law`), counted over the sweeps whose fitted
  ends all lie after the first switch. The jackknife interval is unbounded where leaving a
  seed out puts an end at the first switch: the table gives that share, and the coverage
  and median width of the bounded ones.

    python bench/interval_coverage.py [--trials 300] [--out bench/out/interval_coverage.md]

Deterministic (fixed RNG seeds); about a minute at 300 trials.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from markdown_table import emit

from critperiods.results.fits import (
    _hinge_core,
    _prepare_hinge,
    at_least_and_within,
    fit_power_law,
    hinge_end,
    jackknife_interval,
    kinks_without_each_seed,
    permanent_deficit,
    switch_spacing_at,
)

LEVEL = 0.90


@dataclass(frozen=True)
class Scenario:
    switches: np.ndarray
    batches: tuple[int, ...]
    ends: np.ndarray  #: the true end per batch size (epochs)
    slope: float = 0.5  #: accuracy lost per epoch after the end (pp)
    noise: float = 1.0  #: s.d. of a run's final accuracy (pp)
    heavy_tails: bool = False  #: t(3) noise instead of Gaussian
    seed_shift: float = 0.0  #: s.d. of a seed's log-end shift, shared by every batch size
    missing: float = 0.0  #: share of runs missing at random


DEFAULT_GRID = np.arange(0, 17, 4.0)
STUDY_GRID = np.arange(0, 21, 4.0)
DEFAULT_ENDS = 6.6 * np.array([1, 2, 4]) ** -0.5
STUDY_ENDS = 8 * np.array([1, 2, 4, 8]) ** -0.7
SCENARIOS = {
    "default grid (switch 0-16 by 4, batch 64-256), noise 1 pp": Scenario(
        DEFAULT_GRID, (64, 128, 256), DEFAULT_ENDS),
    "default grid, t(3) noise 0.5 pp": Scenario(
        DEFAULT_GRID, (64, 128, 256), DEFAULT_ENDS, noise=0.5, heavy_tails=True),
    "study grid (switch 0-20 by 4, batch 32-256), noise 0.5 pp": Scenario(
        STUDY_GRID, (32, 64, 128, 256), STUDY_ENDS, noise=0.5),
    "study grid, seeds shift the end (s.d. 15 %), 10 % of runs missing": Scenario(
        STUDY_GRID, (32, 64, 128, 256), STUDY_ENDS, noise=0.5, seed_shift=0.15, missing=0.1),
    "study grid, an end near the first switch": Scenario(
        STUDY_GRID, (32, 64, 128, 256), np.array([6, 4, 2.5, 1.2]), noise=0.5),
    "default grid, a weak deficit (0.25 pp per epoch, noise 1 pp)": Scenario(
        DEFAULT_GRID, (64, 128, 256), DEFAULT_ENDS, slope=0.25),
}


def _bootstrap_kink_interval(switches: np.ndarray, acc: np.ndarray, rng: np.random.Generator,
                             n_boot: int = 400) -> tuple[float, float]:
    """The retired method: percentile interval of kinks refitted on seed resamples."""
    s, n, y1, y2, s0, _ = _prepare_hinge(switches, acc)
    picks = rng.integers(0, n.shape[1], size=(n_boot, n.shape[1]))
    weights = np.zeros((n_boot, n.shape[1]))
    np.add.at(weights, (np.arange(n_boot)[:, None], picks), 1.0)
    kinks, *_ = _hinge_core(s, weights @ n.T, weights @ y1.T, weights @ y2.T)
    tail = 50 * (1 - LEVEL)
    lower, upper = np.nanpercentile(kinks + s0, [tail, 100 - tail])
    return float(lower), float(upper)


def _batch_bootstrap_exponent_interval(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                                       n_boot: int = 400) -> tuple[float, float]:
    """The retired method: percentile interval of log-log slopes on resampled points."""
    lx, ly = np.log(x), np.log(y)
    slopes = []
    for idx in rng.integers(0, lx.size, size=(n_boot, lx.size)):
        if np.ptp(lx[idx]) > 0:
            slopes.append(np.polyfit(lx[idx], ly[idx], 1)[0])
    tail = 50 * (1 - LEVEL)
    return tuple(float(v) for v in np.percentile(slopes, [tail, 100 - tail]))


def coverage(scenario: Scenario, n_seeds: int, trials: int) -> dict[str, float]:
    """Coverage (and median widths) of the intervals in ``trials`` simulated sweeps."""
    sc = scenario
    switches, batches = sc.switches, np.asarray(sc.batches, dtype=float)
    true_p = np.polyfit(np.log(batches), np.log(sc.ends), 1)[0]
    rng = np.random.default_rng(0)
    hit = {k: [] for k in ("boot", "jack alone", "jack", "pboot", "pjack")}
    width = {k: [] for k in hit}
    unbounded = 0
    for _ in range(trials):
        shifts = np.exp(rng.normal(0, sc.seed_shift, n_seeds)) if sc.seed_shift else 1.0
        shape = (switches.size, n_seeds)
        fitted, without, located = [], [], []
        for end in sc.ends:
            noise = (rng.standard_t(3, shape) / np.sqrt(3) if sc.heavy_tails
                     else rng.normal(0, 1, shape))
            seed_ends = end * shifts * np.ones(n_seeds)
            acc = 85 - sc.slope * np.maximum(switches[:, None] - seed_ends[None], 0) \
                + sc.noise * noise
            acc[rng.random(shape) < sc.missing] = np.nan
            kink, *jack = hinge_end(switches, acc, LEVEL)
            loo = kinks_without_each_seed(switches, acc)
            alone = at_least_and_within(  # the jackknife as hinge_end had it until 2026-12-05
                kink, *jackknife_interval(kink, loo[np.isfinite(loo)], LEVEL),
                switch_spacing_at(switches, kink) / 2, (float(switches[0]), float(switches[-1])))
            for key, (lower, upper) in (("boot", _bootstrap_kink_interval(switches, acc, rng)),
                                        ("jack alone", alone), ("jack", jack[:2])):
                hit[key].append(lower <= end <= upper)
                width[key].append(upper - lower)
            fitted.append(kink)
            without.append(kinks_without_each_seed(switches, acc))
            located.append(permanent_deficit(switches, acc, LEVEL)[1] > 0)
        fitted = np.array(fitted)
        if not (fitted > switches[0]).all():
            continue  # an end censored at the first switch: neither method fits all points
        if not all(located):
            continue  # as the summary: an exponent only over ends whose deficit is above 0
        lower, upper = _batch_bootstrap_exponent_interval(batches, fitted, rng)
        hit["pboot"].append(lower <= true_p <= upper)
        width["pboot"].append(upper - lower)
        _, _, lower, upper = fit_power_law(batches, fitted, np.array(without).T, LEVEL,
                                           censored_at=switches[0])
        if np.isinf(lower):
            unbounded += 1
            continue
        hit["pjack"].append(lower <= true_p <= upper)
        width["pjack"].append(upper - lower)
    sweeps = len(hit["pboot"])
    out = {f"{k} cover": float(np.mean(v)) if v else float("nan") for k, v in hit.items()}
    out.update({f"{k} width": float(np.median(v)) if v else float("nan")
                for k, v in width.items()})
    out["pjack unbounded"] = unbounded / sweeps if sweeps else float("nan")
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [f"Nominal {LEVEL:.0%} intervals, {args.trials} simulated sweeps per row "
             "(`python bench/interval_coverage.py`). Coverage, then median width in "
             "brackets (epochs for the end, exponent units for the exponent):", "",
             "| scenario | seeds | end: seed bootstrap | end: jackknife-t alone | end: "
             "jackknife-t + profile | exponent: batch bootstrap | exponent: seed jackknife, "
             "bounded | exponent: jackknife unbounded |",
             "|---|---|---|---|---|---|---|---|"]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            g = coverage(scenario, n_seeds, args.trials)
            lines.append(
                f"| {name} | {n_seeds} | "
                + " | ".join(f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                             for k in ("boot", "jack alone", "jack", "pboot", "pjack"))
                + f" | {pct(g['pjack unbounded'])} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
