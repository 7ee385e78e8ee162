"""Stage evaluate: losses and accuracies of every checkpoint of one seed group's runs."""

from critperiods.pipeline.stages.evaluate import run

run(snakemake)  # noqa: F821 - injected by Snakemake
