"""``power``: what a grid can tell, on simulated runs (``--noise-from``: at a finished
run's own noise)."""

from __future__ import annotations

import argparse
import math
import sys

import yaml

from critperiods.cli.common import config_paths, layers, load_config, open_cube_or_exit

_NOISE_FLAGS = ("llc_noise", "llc_slopes", "accuracy_noise", "deficit_slope", "seed_shift")


def _config_of_cube(cube, path: str) -> dict:
    """The config a cube records (its ``config`` attribute: the keys that shape results)."""
    text = cube.attrs.get("config")
    if not text:
        raise SystemExit(f"critperiods: {path}: the cube records no config (not written by "
                         "the pipeline's aggregate stage)")
    return yaml.safe_load(text)


def power(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from critperiods.results.power import (
        DEFAULT_NOISE,
        exponent_table,
        grid_of,
        power_table,
        switch_spacing,
    )

    paths = config_paths(args)
    cube = open_cube_or_exit(args.noise_from) if args.noise_from else None
    if cube is not None and "final_test_accuracy" not in cube:
        print(f"critperiods: {args.noise_from}: a toy_landscapes cube has no critical period; "
              "--noise-from needs a critical_period cube", file=sys.stderr)
        return 2
    config = load_config(paths, None if cube is None else (
        args.noise_from, _config_of_cube(cube, args.noise_from)))
    if config["study"] == "toy_landscapes":
        print(f"critperiods: {config['experiment']}: the toy_landscapes study has no critical "
              "period to locate; power is for the critical_period study", file=sys.stderr)
        return 2
    grid = grid_of(config)
    if args.offset is None:
        args.offset = switch_spacing(grid)
    seeds = args.seeds or sorted({max(2, grid.seeds), 2 * grid.seeds})  # 1 seed: no interval
    given = {k: tuple(v) if isinstance(v, list) else v
             for k in _NOISE_FLAGS if (v := getattr(args, k)) is not None}
    noise = replace(DEFAULT_NOISE, **given)
    off = [what for what, on in (("λ̂", config["llc"]["enabled"]),
                                 ("divergences", config["divergence"]["enabled"])) if not on]
    recorded = [] if cube is None else [f"{args.noise_from}'s config"]
    print(f"{config['experiment']} ({layers(paths, *recorded)})")
    if len(config["grid"]["switch_epochs"]) < 3:  # no end: nothing can be called
        from critperiods.cli.planning import grid_notes

        print(f"note: {grid_notes(config['grid'])[0]}. Every call below needs a located end, "
              "so its 0 % means nothing can be called on this grid, not that false calls are "
              "rare (3 switch epochs or more)")
    if grid.seeds < 2 and not args.seeds:
        print("note: 1 seed in this config: an interval over seeds needs 2, so it can call "
              "nothing; the rows are for 2 seeds and more")
    if off:
        print(f"note: {' and '.join(off)} off in this config: its runs would have no "
              f"{'knee or drop' if len(off) > 1 else 'knee' if off[0] == 'λ̂' else 'drop'}; "
              "the rows say what turning them on would give")
    batch_sizes = sorted(config["grid"]["batch_sizes"])
    family = {"cells": len(batch_sizes),  # Holm's correction: the run's knees and drops
              "knees_per_cell": 4 if config["llc"].get("descent") else 2}
    if cube is None:
        for line in power_table(grid, seeds, args.trials, args.offset, args.end, noise,
                                **family):
            print(line)
        print()
        print("\n".join(exponent_table(grid, batch_sizes, seeds, args.trials, args.exponent,
                                       args.end, noise)))
        return 0
    return _power_at_observed_noise(cube, args, grid, seeds, noise, given, batch_sizes, family)


def _power_at_observed_noise(cube, args: argparse.Namespace, grid, seeds: list[int],
                             fallback, given: dict, batch_sizes: list[int], family: dict
                             ) -> int:
    """``power --noise-from``: a table per batch size of the cube, at the noise and effect
    sizes that batch size measured (flags given on the command line win); a note names the
    config's ``batch_sizes`` the cube has none of."""
    from dataclasses import replace
    from statistics import geometric_mean

    from critperiods.results.observed_noise import observed_noise, residual_correlation
    from critperiods.results.power import exponent_table, power_table

    print(f"noise and effect sizes read off {args.noise_from} "
          "(critperiods.results.observed_noise; docs/analysis.md)")
    unseen = sorted(set(batch_sizes) - {int(b) for b in cube["batch_size"].values})
    if unseen:
        print(f"note: batch size{'s' * (len(unseen) > 1)} {', '.join(map(str, unseen))} of the "
              f"config {'are' if len(unseen) > 1 else 'is'} not in {args.noise_from}: no noise "
              "measured there, no table (a nearby batch size's table, or a pilot run at it, "
              "stands in)")
    flags = {k: "--" + k.replace("_", "-") for k in given}
    measured, ends = {}, {}  # batch size → the noise its table used, its located end
    for batch_size in cube["batch_size"].values:
        seen = observed_noise(cube, int(batch_size))
        noise, kept = seen.scenario(fallback)
        noise = replace(noise, **given)
        kept = [k for k in kept if k not in given]
        print(f"\n## batch {seen.batch_size} ({seen.seeds} seed{'s' * (seen.seeds != 1)} in "
              "the run)")
        for name, why in seen.missing.items():
            used = (f"{flags[name]} is used" if name in given
                    else "the default's is used" if name in kept
                    else "--end is used" if name == "end" and args.end is not None
                    else "the middle of the switch range is used" if name == "end" else "")
            print(f"note: {name}: {why}" + (f"; {used}" if used else ""))
        for name in (k for k in given if k not in seen.missing):
            print(f"note: {name}: {flags[name]} is used, not the run's")
        if args.end is not None and "end" not in seen.missing:
            print(f"note: end: --end is used, not the run's ({seen.end:.3g})")
        end = args.end if args.end is not None else (
            seen.end if math.isfinite(seen.end) else None)
        source = (f"measured at batch {seen.batch_size}"
                  + (f", the default's for {', '.join(kept)}" if kept else "")
                  + (f", the command line's for {', '.join(given)}" if given else "")
                  + ("" if "seed_shift" in given else "; the seeds' shift is not measured"))
        lines = power_table(grid, seeds, args.trials, args.offset, end, noise, source, **family)
        print("\n".join(lines))
        measured[int(batch_size)], ends[int(batch_size)] = noise, seen.end
    shared = [b for b in batch_sizes if b in measured]
    print()
    if len(shared) < len(batch_sizes) and len(shared) < 3:
        print(f"the exponent: {len(shared)} of the config's {len(batch_sizes)} batch sizes have "
              f"noise measured in {args.noise_from}, and a power law needs 3: not simulated "
              "(without --noise-from, at the default noise, it is)")
        return 0
    if len(shared) < len(batch_sizes):
        print(f"note: the exponent is simulated on the {len(shared)} of the config's "
              f"{len(batch_sizes)} batch sizes with noise measured ({', '.join(map(str, shared))}"
              f"), not on the others ({', '.join(str(b) for b in batch_sizes if b not in shared)})"
              ": the config's own grid, with more batch sizes over a wider range, usually "
              "tells it more often than this says")
    together = residual_correlation(cube)
    if math.isfinite(together.r):
        beyond = abs(together.r) > 2 * together.chance
        print(f"{'note: ' * beyond}a seed's runs at different batch sizes err together by "
              f"r = {together.r:+.2f} (final accuracy's residuals, mean of {together.pairs} "
              f"pair{'s' * (together.pairs > 1)} of batch sizes, ≥ {together.cells} runs each; "
              f"s.d. {together.chance:.2f} if independent); the exponent's simulation draws them "
              + ("independently, so its shares below may be off" if beyond
                 else "independently"))
    located = [ends[b] for b in shared if math.isfinite(ends[b])]
    anchor, said = args.end, "--end"
    if anchor is None and located:  # the run's own ends: their geometric mean, in the middle
        anchor = geometric_mean(located)
        said = (f"the geometric mean of the run's {len(located)} located "
                f"end{'s' * (len(located) > 1)}")
    print("\n".join(exponent_table(grid, shared, seeds, args.trials, args.exponent, anchor,
                                   [measured[b] for b in shared],
                                   "each batch size's noise as above",
                                   said if anchor is not None else "")))
    return 0


__all__ = ["power"]
