"""Stage aggregate: every per-piece result → one netCDF cube, its summary table, the config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from critperiods.pipeline.config_record import cube_record
from critperiods.pipeline.files import read_netcdf, remake, write_atomic, write_netcdf
from critperiods.pipeline.provenance import cube_attrs
from critperiods.pipeline.stages import setup
from critperiods.results.cube import build_cube
from critperiods.results.tables import to_csv


def aggregate(cube_path: str, summary_path: str, config_path: str, *, metrics: list[str],
              llc: list[str], divergence: list[str], grid: dict, epochs_after_switch: int,
              training: dict, analysis: dict, config_yaml: str, code: str,
              perturbation: Sequence[str] = (), descent: Sequence[str] = ()) -> None:
    """Assemble the cube from the groups' metrics, the pieces' λ̂ (and its descent), the
    divergences and the perturbation comparisons; write it, the critical-period table (CSV)
    and the config that made it."""
    inputs = [*metrics, *llc, *descent, *divergence, *perturbation]
    check_readable(inputs)
    cube = build_cube(metrics_files=metrics, llc_files=llc, grid=grid,
                      epochs_after_switch=epochs_after_switch, training=training,
                      config_yaml=config_yaml, divergence_files=divergence, analysis=analysis,
                      perturbation_files=perturbation, descent_files=descent)
    cube.attrs.update(cube_attrs(inputs, code))
    write_netcdf(cube, cube_path)
    write_atomic(summary_path, lambda tmp: to_csv(cube, tmp))
    write_atomic(config_path, lambda tmp: Path(tmp).write_text(config_yaml))


def check_readable(paths: Sequence[str]) -> None:
    """Raise one error naming every input that cannot be opened as netCDF, with one command
    that remakes them all: reading them one by one took a fix and a rerun per bad file."""
    bad = []
    for path in paths:
        try:
            read_netcdf(path, attrs_only=True)
        except ValueError:
            bad.append(str(path))
    if bad:
        raise ValueError(f"{len(bad)} input{'s' * (len(bad) > 1)} of the cube cannot be read "
                         f"as netCDF (truncated or corrupt): {', '.join(bad)}; regenerate "
                         f"{'them' if len(bad) > 1 else 'it'}, with the run's own options: "
                         f"{remake(' '.join(bad))}")


def run(sm: Any) -> None:
    setup(sm)
    aggregate(sm.output.cube, sm.output.summary, sm.output.config,
              metrics=list(sm.input.metrics), llc=list(sm.input.get("llc", [])),
              divergence=list(sm.input.get("divergence", [])),
              descent=list(sm.input.get("llc_descent", [])),
              perturbation=list(sm.input.get("perturbation", [])), grid=sm.params.grid,
              epochs_after_switch=sm.params.epochs_after_switch, training=sm.params.training,
              analysis=sm.params.analysis,
              config_yaml=cube_record(sm.config),  # its digest is the rule's param
              code=sm.params.code)
