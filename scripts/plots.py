"""Stage plots: figures from the cube, and the report's first page (the answer first)."""

from critperiods.pipeline.stages.plots import run

run(snakemake)  # noqa: F821 - injected by Snakemake
