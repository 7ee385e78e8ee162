"""Stage aggregate: every per-piece result → one netCDF cube, its summary table, the config."""

from pathlib import Path

from critperiods.pipeline.files import write_atomic
from critperiods.pipeline.provenance import cube_attrs
from critperiods.pipeline.stage import setup
from critperiods.results.analysis import to_csv
from critperiods.results.cube import build_cube, write_netcdf

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
cube = build_cube(
    metrics_files=sm.input.metrics, llc_files=sm.input.get("llc", []),
    grid=sm.params.grid, epochs_after_switch=sm.params.epochs_after_switch,
    training=sm.params.training, config_yaml=sm.params.config_yaml,
    divergence_files=sm.input.get("divergence", []), analysis=sm.params.analysis,
)
cube.attrs.update(cube_attrs([*sm.input.metrics, *sm.input.get("llc", []),
                              *sm.input.get("divergence", [])], sm.params.code))
write_netcdf(cube, sm.output.cube)
write_atomic(sm.output.summary, lambda tmp: to_csv(cube, tmp))
write_atomic(sm.output.config, lambda tmp: Path(tmp).write_text(sm.params.config_yaml))
