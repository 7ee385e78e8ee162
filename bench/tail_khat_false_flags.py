"""How often the λ̂ tail check flags draws that have no heavy tail, on simulated traces.

Light-tailed traces (Gaussian, chi-square with 5 and 20 degrees of freedom) of the shapes a
λ̂ estimate has (chains × draws after burn-in) go through the same Pareto k̂ as the llc
stage (:func:`critperiods.measure.llc.quality.diagnose`) and are held to ArviZ's
sample-size rule, min(1 − 1/log10 S, 0.7), and to the cap 0.7 alone. Their share above
each limit is the flag's false rate: it set ``quality.MIN_TAIL_DRAWS`` (below it only
k̂ > 0.7 flags).

    python bench/tail_khat_false_flags.py [--trials 400] [--out bench/out/tail_khat.md]

Deterministic (fixed RNG seed); a few seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from markdown_table import emit

from critperiods.measure.llc.quality import _tail_khat

SHAPES = ((2, 20), (4, 20), (4, 25), (4, 60))  # chains × draws: 40 (tiny), 80, 100, 240
TRACES = {"Gaussian": lambda rng, shape: rng.normal(size=shape),
          "chi-square 5": lambda rng, shape: rng.chisquare(5, size=shape),
          "chi-square 20": lambda rng, shape: rng.chisquare(20, size=shape)}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = ["| draws (chains × draws) | trace | above the rule (its limit) | above 0.7 |",
             "|---|---|---|---|"]
    for chains, draws in SHAPES:
        samples = chains * draws
        rule = min(1 - 1 / np.log10(samples), 0.7)
        for name, draw in TRACES.items():
            khat = np.array([_tail_khat(draw(rng, (chains, draws)))
                             for _ in range(args.trials)])
            lines.append(f"| {samples} ({chains} × {draws}) | {name} | "
                         f"{np.mean(khat > rule):.1%} ({rule:.2f}) | {np.mean(khat > 0.7):.1%} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
