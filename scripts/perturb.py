"""Stage perturb: a run's twins and their perturbed copies from one perturbation epoch on."""

from critperiods.pipeline.stages.perturb import run

run(snakemake)  # noqa: F821 - injected by Snakemake
