"""Stage prepare_data: read one split of the dataset once, cache sharp + blurred tensors."""

from critperiods.pipeline.stages.prepare_data import run

run(snakemake)  # noqa: F821 - injected by Snakemake
