"""Stage evaluate: losses and accuracies of every checkpoint of one piece."""

from critperiods.checkpoints import config_hash, load_checkpoints
from critperiods.cube import write_netcdf
from critperiods.data import load_prepared
from critperiods.evaluation import evaluate_piece
from critperiods.stage import setup
from critperiods.training import TrainConfig

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
checkpoints = load_checkpoints(sm.input.pieces, config_hash(sm.params.training))
metrics = evaluate_piece(
    checkpoints, TrainConfig.from_params(sm.params.training),
    load_prepared(sm.input.data, device), sm.params.evaluate["train_samples"],
    sm.params.evaluate["batch_size"], device,
)
write_netcdf(metrics, sm.output[0])
