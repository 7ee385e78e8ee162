"""Stage llc: λ̂ by SGLD at the selected checkpoints of one piece of a seed group."""

from critperiods.pipeline.stages.llc import run

run(snakemake)  # noqa: F821 - injected by Snakemake
