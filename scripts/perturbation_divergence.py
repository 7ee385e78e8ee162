"""Stage perturbation_divergence: every perturbed copy of one batch size and schedule vs its
twin, with early rates and growth-law fits."""

from critperiods.pipeline.stages.perturbation_divergence import run

run(snakemake)  # noqa: F821 - injected by Snakemake
