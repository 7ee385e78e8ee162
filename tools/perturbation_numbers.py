"""The numbers of docs/perturbations.md ("What configs/perturbation.yaml shows") that
``python -m critperiods summarize`` does not print, from a finished run of the experiment.

    python tools/perturbation_numbers.py [results/perturbation]

Reads the cube (``cube.nc``) and, for the weights' norm, the stored runs and perturbation
groups. Copies with epsilon 0 are left out everywhere, as in the summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from critperiods import open_cube
from critperiods.measure.growth_laws import ALL_FORMS

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def windowed_slope(step_l2: np.ndarray, a: int, b: int) -> np.ndarray:
    """Least-squares slope of ln distance per step over steps ``a..b`` (inclusive), per copy
    (the last axis is the step)."""
    steps = np.arange(a, b + 1)
    y = np.log(step_l2[..., a:b + 1]).reshape(-1, len(steps))
    return np.polyfit(steps, y.T, 1)[0].reshape(step_l2.shape[:-1])


def _spread(values: np.ndarray, fmt: str) -> str:
    """``median [min, max]`` of the finite ``values``."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "n/a (no finite value)"
    return f"{np.median(v):{fmt}} [{v.min():{fmt}}, {v.max():{fmt}}]"


def weight_norms(results: Path) -> dict[tuple[int, int, int, int], float]:
    """``(batch size, run's switch epoch, seed, epoch) → norm of the trainable weights`` over
    every checkpoint of the twins in the perturbation groups and of the stored runs they
    perturb (schedule continue)."""
    norms = {}

    def add(b: int, k: int, seed: int, checkpoints: list[dict]) -> None:
        for c in checkpoints:
            weights = [v.double() for n, v in c["model"].items() if not n.endswith(BUFFERS)]
            norms[(b, k, seed, c["epoch"])] = float(torch.cat([w.flatten() for w in weights])
                                                   .norm())

    groups = sorted((results / "perturbations").rglob("e*.pt"))
    runs = set()
    for path in groups:
        group = torch.load(path, map_location="cpu", weights_only=True)
        who = group["identity"]
        runs.add((who["batch_size"], who["switch_epoch"]))
        for m in group["members"]:
            add(who["batch_size"], who["switch_epoch"], m["seed"], m["twin"])
    for b, k in sorted(runs):  # the stored run: its trunk up to its switch, then its branch
        for path in sorted((results / f"runs/bs{b}").glob("*/trunk/e*.pt")):
            for m in torch.load(path, map_location="cpu", weights_only=True)["members"]:
                add(b, k, m["seed"], [c for c in m["checkpoints"] if c["epoch"] <= k])
        for path in sorted((results / f"runs/bs{b}").glob(f"*/continue/switch{k}.pt")):
            for m in torch.load(path, map_location="cpu", weights_only=True)["members"]:
                add(b, k, m["seed"], m["checkpoints"])
    return norms


def main(results: Path) -> None:
    if not (results / "cube.nc").is_file():
        sys.exit(f"{results / 'cube.nc'}: no such file; run the experiment first "
                 "(snakemake --cores all --configfile configs/perturbation.yaml) or pass its "
                 "results folder")
    cube = open_cube(results / "cube.nc")
    eps = cube.epsilon.values[cube.epsilon.values > 0]
    cube = cube.sel(epsilon=eps, lr_schedule="continue")
    end = int(cube.perturb_l2.dropna("epoch", how="all").epoch.max())
    print(f"end epoch {end}; copies with epsilon > 0: {int(cube.perturb_early_rate.count())}")

    change = 100 * cube.perturb_accuracy_change.mean("replicate")
    print(f"accuracy change per seed (pp): {float(change.min()):+.2f} to "
          f"{float(change.max()):+.2f}, median {float(change.median()):+.2f}")
    print(f"largest disagreement with the twin at the end: "
          f"{100 * float(cube.perturb_disagreement.sel(epoch=end).max()):.1f} % of the probe")

    step = cube.perturb_step_l2.values  # (..., perturb_epoch, epsilon, replicate, step)
    axis = list(cube.perturb_step_l2.dims).index("perturb_epoch")
    last = int(cube.step.max())
    for e in cube.perturb_epoch.values:
        at = np.take(step, [list(cube.perturb_epoch.values).index(e)], axis=axis)
        # the windows that fit the steps recorded (perturbation.steps may be short)
        edges = [edge for edge in (0, 10, 50, 100) if edge < last] + [last]
        windows = list(zip(edges[:-1], edges[1:], strict=True))
        slopes = "; ".join(f"steps {a}-{b} {_spread(windowed_slope(at, a, b), '.3f')}"
                           for a, b in windows)
        print(f"nudge at epoch {e}, slope of ln L2 per step, median [min, max] over copies: "
              f"{slopes}; growth over {last} steps "
              f"{_spread(at[..., last] / at[..., 0], '.3g')}x")

    for name, what in (("perturb_step_growth", "steps"), ("perturb_l2_growth", "epochs")):
        form, rate = cube[f"{name}_form"].values, cube[f"{name}_rate"].values
        power = rate[form == ALL_FORMS.index("power")]
        print(f"power-law exponents over the {what} ({power.size} copies): "
              + (f"median {np.median(power):.2g}, {power.min():.2g} to {power.max():.2g}"
                 if power.size else "none"))

    lasting = cube.perturb_l2.sel(epoch=end).mean(["seed", "replicate", "epsilon"])
    first, latest = cube.perturb_epoch.values.min(), cube.perturb_epoch.values.max()
    for b in cube.batch_size.values:
        for k in cube.perturb_l2.dropna("switch_epoch", how="all").switch_epoch.values:
            ratio = float(lasting.sel(batch_size=b, switch_epoch=k, perturb_epoch=first)
                          / lasting.sel(batch_size=b, switch_epoch=k, perturb_epoch=latest))
            print(f"batch {b}, run {k}: lasting L2 falls {ratio:.3g}x from perturbation epoch "
                  f"{first} to {latest}")

    norms = weight_norms(results)
    runs = cube.perturb_l2.dropna("switch_epoch", how="all").switch_epoch.values
    init = [v for (_, _, _, epoch), v in norms.items() if epoch == 0]
    at_nudges = [norms[(int(b), int(k), int(s), int(e))] for b in cube.batch_size.values
                 for k in runs for s in cube.seed.values for e in cube.perturb_epoch.values
                 if (int(b), int(k), int(s), int(e)) in norms]
    print(f"norm of the trainable weights: at initialisation {min(init, default=np.nan):.3g}"
          f"..{max(init, default=np.nan):.3g}; at the perturbation epochs "
          f"{min(at_nudges, default=np.nan):.3g}..{max(at_nudges, default=np.nan):.3g} "
          f"({len(at_nudges)} of "
          f"{len(cube.batch_size) * len(runs) * len(cube.seed) * len(cube.perturb_epoch)} "
          "found among the twins' checkpoints)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/perturbation"))
