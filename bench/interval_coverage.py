"""How often the end's and the exponent's intervals cover the truth, on simulated sweeps.

Each trial draws a permanent-deficit sweep with a known end per batch size (a hinge:
flat, then ``slope`` per epoch) and a known power law of the ends, adds a per-seed offset
and per-run noise, and asks whether each method's nominal-90 % interval holds the true
value. Side by side, on the same draws:

* the end: the percentile **seed bootstrap** the project used until 2026-12 against the
  leave-one-seed-out **jackknife-t** it uses now (:func:`critperiods.results.fits.hinge_end`);
* the exponent: the percentile bootstrap over **batch sizes** used until then against the
  jackknife over seeds left out at every batch size
  (:func:`critperiods.results.fits.fit_power_law`); an unbounded jackknife interval counts
  as covering.

    python bench/interval_coverage.py [--trials 300] [--out bench/out/interval_coverage.md]

Deterministic (fixed RNG seeds); about half a minute at 300 trials.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from critperiods.results.fits import (
    _hinge_core,
    _prepare_hinge,
    fit_hinge,
    fit_power_law,
    hinge_end,
    kinks_without_each_seed,
)

LEVEL = 0.90
#: name: (switch epochs, batch sizes, true ends, decline per epoch, seed offset s.d., noise
#: s.d., heavy-tailed noise)
SCENARIOS = {
    "default grid (0-16 by 4, batch 64-256), noise 1 pp": (
        np.arange(0, 17, 4.0), [64, 128, 256], 6.6 * np.array([1, 2, 4]) ** -0.5, 0.5, 1, 1, 0),
    "default grid, t(3) noise 0.5 pp": (
        np.arange(0, 17, 4.0), [64, 128, 256], 6.6 * np.array([1, 2, 4]) ** -0.5, 0.5, .5, .5,
        1),
    "study grid (0-20 by 2, batch 32-256), noise 0.5 pp": (
        np.arange(0, 21, 2.0), [32, 64, 128, 256], 8 * np.array([1, 2, 4, 8]) ** -0.7, 0.5,
        .5, .5, 0),
    "study grid, an end near the first switch": (
        np.arange(0, 21, 2.0), [32, 64, 128, 256], np.array([6, 4, 2.5, 1.2]), 0.5, .5, .5, 0),
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


def coverage(scenario: tuple, n_seeds: int, trials: int) -> dict[str, float]:
    """Coverage of the four intervals in ``trials`` simulated sweeps of one scenario."""
    switches, batches, ends, slope, seed_sd, noise_sd, heavy = scenario
    batches = np.asarray(batches, dtype=float)
    true_p = np.polyfit(np.log(batches), np.log(ends), 1)[0]
    rng = np.random.default_rng(0)
    hits = {"end, seed bootstrap": 0, "end, jackknife-t": 0, "exponent, batch bootstrap": 0,
            "exponent, seed jackknife": 0}
    n_ends = n_exponents = 0
    for _ in range(trials):
        shape = (switches.size, n_seeds)
        fitted, without = [], []
        for end in ends:
            noise = (rng.standard_t(3, shape) / np.sqrt(3) if heavy else rng.normal(0, 1, shape))
            acc = (85 - slope * np.maximum(switches - end, 0)[:, None]
                   + rng.normal(0, seed_sd, n_seeds)[None] + noise_sd * noise)
            lower, upper = _bootstrap_kink_interval(switches, acc, rng)
            hits["end, seed bootstrap"] += lower <= end <= upper
            _, lower, upper, _ = hinge_end(switches, acc, LEVEL)
            hits["end, jackknife-t"] += lower <= end <= upper
            n_ends += 1
            fitted.append(fit_hinge(switches, acc).kink)
            without.append(kinks_without_each_seed(switches, acc))
        fitted = np.array(fitted)
        if not (fitted > 0).all():
            continue  # the retired method cannot fit it either
        n_exponents += 1
        lower, upper = _batch_bootstrap_exponent_interval(batches, fitted, rng)
        hits["exponent, batch bootstrap"] += lower <= true_p <= upper
        _, _, lower, upper = fit_power_law(batches, fitted, np.array(without).T, LEVEL)
        hits["exponent, seed jackknife"] += lower <= true_p <= upper
    return {k: v / (n_ends if k.startswith("end") else max(n_exponents, 1))
            for k, v in hits.items()}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    methods = ["end, seed bootstrap", "end, jackknife-t", "exponent, batch bootstrap",
               "exponent, seed jackknife"]
    lines = [f"Coverage of nominal {LEVEL:.0%} intervals, {args.trials} simulated sweeps each "
             "(`python bench/interval_coverage.py`):", "",
             "| scenario | seeds | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            got = coverage(scenario, n_seeds, args.trials)
            lines.append(f"| {name} | {n_seeds} | "
                         + " | ".join(f"{100 * got[m]:.0f} %" for m in methods) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
