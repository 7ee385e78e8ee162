"""Stage prepare_data: read the dataset once, cache sharp + blurred tensors."""

from critperiods.data import prepare, save_prepared
from critperiods.stage import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
ds = snakemake.params.dataset  # noqa: F821
data = prepare(ds["name"], ds["root"], ds["train_subset"], ds["test_subset"], ds["blur_size"])
save_prepared(data, snakemake.output[0])  # noqa: F821
