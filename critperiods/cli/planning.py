"""``check`` and ``cost``: a config checked as the Snakefile checks it, and what its grid
costs."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from critperiods.cli.common import ROOT, config_paths, layers, load_config


def _times(scratch: int, shared: int, config: dict) -> str:
    """How much more (or less) training from scratch costs than sharing trunks.

    Sharing can cost more: it also trains the references, the never-blurred run continued
    past its end (for λ̂ or the divergences) and the always-blurred trunk extended to the last
    epoch any run reaches (for the divergences)."""
    if scratch >= shared:
        return f"{scratch / shared:.2f}× more"
    divergence = config["divergence"]["enabled"]
    extended = ("the trunk and the never-blurred run are extended as the divergences' "
                "references" if divergence else
                "the never-blurred run is continued as λ̂'s sharp reference")
    return f"{shared / scratch:.2f}× less: {extended}"


def check(args: argparse.Namespace) -> int:
    paths = config_paths(args)
    config = load_config(paths)  # exits with the one line on a bad file or key
    print(f"{config['experiment']} ({layers(paths)}): ok, study {config['study']}")
    print(_unnamed_note(paths, config), end="")
    if config["study"] == "critical_period":
        for note in grid_notes(config["grid"]):
            print(textwrap.fill(f"note: {note}", 96, subsequent_indent="  "))
        # as `snakemake -n` says it, before a run
        from critperiods.pipeline.plan import data_download_note

        data = Path(config["results_dir"]) / config["experiment"] / "data"
        if note := data_download_note(config, {s: str(data / f"{s}.pt") for s in ("train",
                                                                                   "test")}):
            print(f"note: {note}")
    return 0


def grid_notes(grid: dict) -> list[str]:
    """What a valid grid cannot answer, said before it runs (the summary says it after, as
    the reason its values are NaN)."""
    notes = []
    if len(grid["switch_epochs"]) < 2:
        notes.append("grid.switch_epochs has 1: no deficit can be measured (it needs 2 switch "
                     "epochs, the earliest against the latest) and no end placed (3)")
    elif len(grid["switch_epochs"]) < 3:
        notes.append(f"grid.switch_epochs has {len(grid['switch_epochs'])}: the deficit is "
                     "measured, but the critical period's end (a hinge's kink) needs 3 switch "
                     "epochs (through two, every kink between them fits), and the λ̂ knees and "
                     "the divergence drop then have no end to be compared with")
    if len(grid["seeds"]) < 2:
        notes.append("grid.seeds has one seed: no interval on the deficit, the end or the "
                     "markers (they come from the spread over seeds), so these runs cannot "
                     "tell a deficit from seed noise; the default runs 3")
    if len(grid["batch_sizes"]) < 3:
        notes.append(f"grid.batch_sizes has {len(grid['batch_sizes'])}: the end's power law "
                     "in the batch size (temperature_exponent, batch_size_exponent) needs 3 "
                     "batch sizes with a located end")
    return notes


def _unnamed_note(paths: list[str], config: dict) -> str:
    """A note (a line, or "") where files laid over config.yaml change a key that can change
    a result but leave the results in the default run's folder: they would replace the
    default run's results there."""
    from critperiods.results.setup import differing_keys

    base = (ROOT / "config.yaml").resolve()
    if not [p for p in paths if Path(p).resolve() != base]:
        return ""
    default = load_config([])
    folder = Path(config["results_dir"]) / config["experiment"]
    if folder != Path(default["results_dir"]) / default["experiment"]:
        return ""
    changed = list(differing_keys([default, config]))
    if not changed:
        return ""
    return (f"note: this run writes to {folder}/, the default run's folder, but differs from "
            f"it in {', '.join(changed)}: its results would replace the default's there; give "
            "it its own name (`experiment: <name>`: a folder of its own, where its whole grid "
            f"trains anew), or copy {folder}/cube.nc aside to keep the default's numbers and "
            "rerun only what the change touches\n")


def cost(args: argparse.Namespace) -> int:
    from critperiods.pipeline.cost import LOCAL_RULES, describe, grid_cost, requested_minutes
    from critperiods.pipeline.plan import epochs_trained

    paths = config_paths(args)
    config = load_config(paths)
    layered = layers(paths)
    if config["study"] == "toy_landscapes":  # the cost model is the critical_period study's
        from critperiods.toy.plan import landscapes

        print(f"{config['experiment']} ({layered}): the toy_landscapes study, "
              f"{len(landscapes(config['toy']))} toy_landscape jobs, then toy_cube and "
              "toy_plots; this cost model covers the critical_period study only "
              "(docs/toy_landscapes.md gives a measured time)")
        return 0
    shared, scratch = epochs_trained(config, True), epochs_trained(config, False)
    print(f"{config['experiment']} ({layered}): {shared} epochs "
          f"with trunk sharing, {scratch} training every run from scratch "
          f"({_times(scratch, shared, config)})")
    found = {device: grid_cost(config, device) for device in ("cpu", "cuda")}
    cpu = found["cpu"]
    if cpu.perturbation_epochs:
        print(f"  perturbations: {cpu.perturbation_epochs} more epochs (each seed's replay to "
              "the perturbation epoch, its twin and its copies)")
    print(f"  {cpu.images / 1e6:,.1f} M training images"
          + (f", {cpu.llc_images / 1e6:,.1f} M images through SGLD steps" if cpu.llc_images
             else " (λ̂ off: no SGLD steps)")
          + (f", {cpu.perturbation_images / 1e6:,.1f} M through perturbed copies and twins"
             if cpu.perturbation_epochs else ""))
    for device, cost_on in found.items():
        print(f"  {describe(cost_on, device)}")
    print(f"  {'jobs per rule':<25} {'cpu':>5} {'cuda':>5}")
    for rule in cpu.rules:
        local = "  (local: beside Snakemake, never a cluster job)" if rule in LOCAL_RULES else ""
        print(f"    {rule:<23} {cpu.rules[rule]:>5} {found['cuda'].rules[rule]:>5}{local}")
    asked = sum(requested_minutes(config, "cuda").values()) / 60
    print(textwrap.fill(
        f"time limits: about {asked:,.0f} hours in all over a cluster run's jobs (first "
        "attempt, the cuda column's jobs; runtime.* in the config)"
        + (f", for ~{found['cuda'].seconds / 60:,.1f} min of work on the GPU above: lower "
           "runtime.* to a few times what a job needs (docs/slurm.md)"
           if found["cuda"].seconds and asked * 60 > 20 * found["cuda"].seconds / 60 else ""),
        96, initial_indent="  ", subsequent_indent="  "))
    if config["train"].get("seeds_per_job") == "auto" and cpu.rules != found["cuda"].rules:
        print(textwrap.fill(
            "the cuda column stacks seeds as `seeds_per_job: auto` does with `device: cuda`; "
            "with `device: auto` it does so only where the machine that runs Snakemake shows a "
            "GPU (on a cluster, write `device: cuda`)", 96, initial_indent="  ",
            subsequent_indent="  "))
    return 0


__all__ = ["check", "cost", "grid_notes"]
