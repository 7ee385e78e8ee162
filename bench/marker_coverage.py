"""How often the markers' intervals cover the truth, and how often a marker's offset from
the end is called "after" or "before the end", on simulated runs.

Each trial draws, per seed:

* a permanent-deficit sweep with a known end ``E`` (a hinge: flat, then 0.5 pp per epoch of
  delay, noise 1 pp; the switch grid of the default, 0-16 by 4);
* a λ̂ curve along the trunk with a known knee ``K`` (a broken stick: 8 per epoch, then 2
  per epoch, a level of its own per seed, noise of s.d. ``noise``; λ̂ every 2 epochs from 4
  to 16, as the default);
* the distance to the always-blurred run at the horizon, per switch epoch, with a known
  drop ``D`` (a level of its own per seed, falling linearly from it to 0 between ``D − 4``
  and ``D + 4``, so that the seed mean halves at ``D``; noise 10 % of the level).

In some scenarios a seed shifts its end, knee and drop by the same factor: what pairing is
for. It then asks, of the summary's nominal-90 % intervals (:mod:`critperiods.results.knee`,
as :func:`critperiods.results.summary.critical_period_summary` computes them):

* the knee's and the drop's (jackknife-t, at least ± half their grid's spacing): do they
  hold ``K`` and ``D``?
* knee − end and drop − end, paired (each seed left out of both): do they hold ``K − E``
  and ``D − E``? For the knee, also unpaired (the two jackknife half-widths added in
  quadrature, as if knee and end were independent), for comparison;
* how often each paired interval excludes 0: the power to say "after" or "before the end"
  where the marker is not the end, the rate of a false call where it is.

    python bench/marker_coverage.py [--trials 300] [--seeds 3 5] [--out FILE]

Deterministic (fixed RNG seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from critperiods.results.fits import (
    divergence_drop_epoch,
    hinge_end,
    jackknife_interval,
    kinks_without_each_seed,
    switch_spacing_at,
)
from critperiods.results.knee import (
    SeedJackknife,
    knee_with_interval,
    knees_without_each_seed,
    offset_floor,
    paired_offset,
)

LEVEL = 0.90
SWITCHES = np.arange(0, 17, 4.0)
EPOCHS = np.arange(4, 17, 2.0)


@dataclass(frozen=True)
class Scenario:
    end: float  #: the true end (epochs)
    knee: float  #: the true λ̂ knee (epochs)
    drop: float = 7.0  #: the true divergence drop (switch epoch)
    noise: float = 5.0  #: s.d. of a λ̂ estimate around its seed's curve
    seed_shift: float = 0.0  #: s.d. of a seed's log-shift of its end, knee and drop together


SCENARIOS = {
    "markers at the end (knee = drop = end = 7), λ̂ noise 5": Scenario(7.0, 7.0),
    "knee 4 epochs after the end (7, 11), drop 3 before (4), λ̂ noise 5": Scenario(
        7.0, 11.0, drop=4.0),
    "knee 4 epochs after the end, λ̂ noise 15": Scenario(7.0, 11.0, noise=15.0),
    "markers at the end, seeds shift all three together (s.d. 15 %)": Scenario(
        7.0, 7.0, seed_shift=0.15),
    "knee after the end, drop before, seeds shift all three (s.d. 15 %)": Scenario(
        7.0, 11.0, drop=4.0, seed_shift=0.15),
}


def _draw(sc: Scenario, n_seeds: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(switch, seed) final accuracy (pp), (epoch, seed) λ̂ and (switch, seed) distance at
    the horizon of one simulated run."""
    shift = np.exp(rng.normal(0, sc.seed_shift, n_seeds)) if sc.seed_shift else np.ones(n_seeds)
    ends, knees, drops = sc.end * shift, sc.knee * shift, sc.drop * shift
    acc = (85 - 0.5 * np.maximum(SWITCHES[:, None] - ends[None], 0)
           + rng.normal(0, 1.0, (SWITCHES.size, n_seeds)))
    rel = EPOCHS[:, None] - knees[None]
    llc = (np.where(rel < 0, 8 * rel, 2 * rel) + 100 + rng.normal(0, 10, n_seeds)[None]
           + rng.normal(0, sc.noise, (EPOCHS.size, n_seeds)))
    level = rng.uniform(5, 15, n_seeds)[None]
    ramp = np.clip((drops[None] + 4 - SWITCHES[:, None]) / 8, 0, 1)
    div = level * ramp + rng.normal(0, 0.1, (SWITCHES.size, n_seeds)) * level
    return acc, llc, div


def _drop_with_interval(div: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """The drop of the seed mean, its interval as the summary computes it (every seed has a
    distance here, so the seed mean is the plain mean) and its value without each seed."""
    drop = divergence_drop_epoch(SWITCHES, div.mean(axis=1))
    loo = np.array([divergence_drop_epoch(SWITCHES, np.delete(div, i, axis=1).mean(axis=1))
                    for i in range(div.shape[1])])
    if not np.isfinite(drop):
        return drop, float("nan"), float("nan"), loo
    lower, upper = jackknife_interval(drop, loo, LEVEL)
    half = switch_spacing_at(SWITCHES, drop) / 2
    return (drop, max(min(lower, drop - half), SWITCHES[0]),
            min(max(upper, drop + half), SWITCHES[-1]), loo)


def coverage(sc: Scenario, n_seeds: int, trials: int) -> dict[str, float]:
    """Coverage and median width of each interval, and each paired offset's share
    excluding 0."""
    rng = np.random.default_rng(0)
    keys = ("knee", "paired", "unpaired", "drop", "drop paired")
    hit = {k: [] for k in keys}
    width = {k: [] for k in keys}
    excludes = {"paired": [], "drop paired": []}
    present = np.ones(n_seeds, dtype=bool)
    for _ in range(trials):
        acc, llc, div = _draw(sc, n_seeds, rng)
        end_loo = kinks_without_each_seed(SWITCHES, acc)
        end, *_ = hinge_end(SWITCHES, acc, LEVEL, end_loo)
        end_jk = SeedJackknife(end, end_loo, present)
        end_half = switch_spacing_at(SWITCHES, end) / 2
        knee_loo = knees_without_each_seed(EPOCHS, llc)
        knee, k_lo, k_hi = knee_with_interval(EPOCHS, llc, LEVEL, knee_loo)
        if np.isfinite(knee):
            floor = offset_floor(switch_spacing_at(EPOCHS, knee) / 2, end_half)
            offset, lo, hi = paired_offset(SeedJackknife(knee, knee_loo, present), end_jk,
                                           LEVEL, floor)
            half = max(floor, np.hypot(*(np.diff(jackknife_interval(v, loo, LEVEL))[0] / 2
                                         for v, loo in ((knee, knee_loo), (end, end_loo)))))
            for key, covered, w in (
                    ("knee", k_lo <= sc.knee <= k_hi, k_hi - k_lo),
                    ("paired", lo <= sc.knee - sc.end <= hi, hi - lo),
                    ("unpaired", offset - half <= sc.knee - sc.end <= offset + half, 2 * half)):
                hit[key].append(covered)
                width[key].append(w)
            excludes["paired"].append(lo > 0 or hi < 0)
        drop, d_lo, d_hi, drop_loo = _drop_with_interval(div)
        if np.isfinite(drop):
            floor = offset_floor(switch_spacing_at(SWITCHES, drop) / 2, end_half)
            _, lo, hi = paired_offset(SeedJackknife(drop, drop_loo, present), end_jk, LEVEL,
                                      floor)
            for key, covered, w in (("drop", d_lo <= sc.drop <= d_hi, d_hi - d_lo),
                                    ("drop paired", lo <= sc.drop - sc.end <= hi, hi - lo)):
                hit[key].append(covered)
                width[key].append(w)
            excludes["drop paired"].append(lo > 0 or hi < 0)
    out = {f"{k} cover": float(np.mean(v)) if v else float("nan") for k, v in hit.items()}
    out.update({f"{k} width": float(np.median(v)) if v else float("nan")
                for k, v in width.items()})
    out.update({f"{k} excludes 0": float(np.mean(v)) if v else float("nan")
                for k, v in excludes.items()})
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [f"Nominal {LEVEL:.0%} intervals, {args.trials} simulated runs per row "
             "(`python bench/marker_coverage.py`). Coverage, then median width in epochs in "
             "brackets; \"excl. 0\" is how often the paired interval excludes 0 (says "
             "\"after\" or \"before the end\"):", "",
             "| scenario | seeds | knee | knee − end, paired | knee − end, unpaired | "
             "knee − end excl. 0 | drop | drop − end, paired | drop − end excl. 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, scenario in SCENARIOS.items():
        for n_seeds in args.seeds:
            g = coverage(scenario, n_seeds, args.trials)
            cells = [f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                     for k in ("knee", "paired", "unpaired")]
            cells.append(pct(g["paired excludes 0"]))
            cells += [f"{pct(g[f'{k} cover'])} [{g[f'{k} width']:.2g}]"
                      for k in ("drop", "drop paired")]
            cells.append(pct(g["drop paired excludes 0"]))
            lines.append(f"| {name} | {n_seeds} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
