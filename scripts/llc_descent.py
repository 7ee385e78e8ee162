"""Stage llc_descent: the chains' descent at the λ̂ checkpoints of one piece of a seed group."""

from critperiods.pipeline.stages.llc_descent import run

run(snakemake)  # noqa: F821 - injected by Snakemake
