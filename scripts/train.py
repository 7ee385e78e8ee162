"""Stage train_trunk / train_branch / train_reference: train one trajectory piece of a seed group
(resumable)."""

from critperiods.pipeline.stages.train import run

run(snakemake)  # noqa: F821 - injected by Snakemake
