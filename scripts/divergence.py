"""Stage divergence: every comparison between the runs of one batch size and schedule."""

from critperiods.pipeline.stages.divergence import run

run(snakemake)  # noqa: F821 - injected by Snakemake
