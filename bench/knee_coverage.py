"""How often the λ̂ knee's interval and the knee-minus-end interval cover the truth, and how
often the latter answers "after" or "before the end", on simulated runs.

Each trial draws, per seed, a permanent-deficit sweep (a hinge: flat, then 0.5 pp per epoch
of delay, noise 1 pp; the switch grid of the default, 0-16 by 4) with a known end ``E``, and
a λ̂ curve along the trunk (a broken stick: 8 per epoch, then 2 per epoch, a level of its
own per seed, noise of s.d. ``noise``; λ̂ every 2 epochs from 4 to 16, as the default) with a
known knee ``K``. In some scenarios a seed shifts its end and its knee by the same factor:
what pairing is for. It then asks, of the summary's nominal-90 % intervals
(:mod:`critperiods.results.knee`, as :func:`critperiods.results.summary.critical_period_summary`
computes them):

* the knee's (jackknife-t, at least ± half the λ̂ spacing): does it hold ``K``?
* knee − end, paired (each seed left out of both): does it hold ``K − E``?
* knee − end, unpaired (the two jackknife half-widths added in quadrature, as if the
  knee and the end were independent), for comparison;
* how often the paired interval excludes 0: the power to say "after the end" where
  ``K > E``, the rate of a false "after" or "before" where ``K = E``.

    python bench/knee_coverage.py [--trials 300] [--out bench/out/knee_coverage.md]

Deterministic (fixed RNG seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from critperiods.results.fits import (
    hinge_end,
    jackknife_interval,
    kinks_without_each_seed,
    switch_spacing_at,
)
from critperiods.results.knee import (
    SeedJackknife,
    knee_with_interval,
    knees_without_each_seed,
    paired_offset,
)

LEVEL = 0.90
SWITCHES = np.arange(0, 17, 4.0)
EPOCHS = np.arange(4, 17, 2.0)


@dataclass(frozen=True)
class Scenario:
    end: float  #: the true end (epochs)
    knee: float  #: the true λ̂ knee (epochs)
    noise: float = 5.0  #: s.d. of a λ̂ estimate around its seed's curve
    seed_shift: float = 0.0  #: s.d. of a seed's log-shift of its end and knee together


SCENARIOS = {
    "λ̂ marks the end (knee = end = 7), λ̂ noise 5": Scenario(7.0, 7.0),
    "knee 4 epochs after the end (7, 11), λ̂ noise 5": Scenario(7.0, 11.0),
    "knee 4 epochs after the end, λ̂ noise 15": Scenario(7.0, 11.0, noise=15.0),
    "λ̂ marks the end, seeds shift end and knee together (s.d. 15 %)": Scenario(
        7.0, 7.0, seed_shift=0.15),
    "knee after the end, seeds shift both (s.d. 15 %)": Scenario(7.0, 11.0, seed_shift=0.15),
}


def _draw(sc: Scenario, n_seeds: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """(switch, seed) final accuracy (pp) and (epoch, seed) λ̂ of one simulated run."""
    shift = np.exp(rng.normal(0, sc.seed_shift, n_seeds)) if sc.seed_shift else np.ones(n_seeds)
    ends, knees = sc.end * shift, sc.knee * shift
    acc = (85 - 0.5 * np.maximum(SWITCHES[:, None] - ends[None], 0)
           + rng.normal(0, 1.0, (SWITCHES.size, n_seeds)))
    rel = EPOCHS[:, None] - knees[None]
    llc = (np.where(rel < 0, 8 * rel, 2 * rel) + 100 + rng.normal(0, 10, n_seeds)[None]
           + rng.normal(0, sc.noise, (EPOCHS.size, n_seeds)))
    return acc, llc


def coverage(sc: Scenario, n_seeds: int, trials: int) -> dict[str, float]:
    """Coverage and median width of each interval, and the paired one's share excluding 0."""
    rng = np.random.default_rng(0)
    hit = {k: [] for k in ("knee", "paired", "unpaired")}
    width = {k: [] for k in hit}
    excludes = []
    truth = sc.knee - sc.end
    for _ in range(trials):
        acc, llc = _draw(sc, n_seeds, rng)
        end_loo = kinks_without_each_seed(SWITCHES, acc)
        end, *_ = hinge_end(SWITCHES, acc, LEVEL, end_loo)
        knee_loo = knees_without_each_seed(EPOCHS, llc)
        knee, k_lo, k_hi = knee_with_interval(EPOCHS, llc, LEVEL, knee_loo)
        if not np.isfinite(knee):
            continue
        hit["knee"].append(k_lo <= sc.knee <= k_hi)
        width["knee"].append(k_hi - k_lo)
        floor = switch_spacing_at(SWITCHES, end) / 2 + switch_spacing_at(EPOCHS, knee) / 2
        present = np.ones(n_seeds, dtype=bool)
        offset, lo, hi = paired_offset(SeedJackknife(knee, knee_loo, present),
                                       SeedJackknife(end, end_loo, present), LEVEL, floor)
        hit["paired"].append(lo <= truth <= hi)
        width["paired"].append(hi - lo)
        excludes.append(lo > 0 or hi < 0)
        half = np.hypot(*(np.diff(jackknife_interval(v, loo, LEVEL))[0] / 2
                          for v, loo in ((knee, knee_loo), (end, end_loo))))
        half = max(half, floor)
        hit["unpaired"].append(offset - half <= truth <= offset + half)
        width["unpaired"].append(2 * half)
    out = {f"{k} cover": float(np.mean(v)) for k, v in hit.items()}
    out.update({f"{k} width": float(np.median(v)) for k, v in width.items()})
    out["excludes 0"] = float(np.mean(excludes))
    out["fitted"] = len(excludes) / trials
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [f"Nominal {LEVEL:.0%} intervals, {args.trials} simulated runs per row "
             "(`python bench/knee_coverage.py`). Coverage, then median width in epochs in "
             "brackets; the last column is how often the paired interval excludes 0 (says "
             "\"after\" or \"before the end\"):", "",
             "| scenario | seeds | knee | knee − end, paired | knee − end, unpaired | "
             "paired excludes 0 |",
             "|---|---|---|---|---|---|"]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            g = coverage(scenario, n_seeds, args.trials)
            lines.append(f"| {name} | {n_seeds} | "
                         + " | ".join(f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                                      for k in ("knee", "paired", "unpaired"))
                         + f" | {pct(g['excludes 0'])} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
