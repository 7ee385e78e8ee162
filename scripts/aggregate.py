"""Stage aggregate: every per-piece result → one netCDF cube, its summary table, the config."""

from critperiods.pipeline.stages.aggregate import run

run(snakemake)  # noqa: F821 - injected by Snakemake
