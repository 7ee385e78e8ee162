"""Stage evaluate: losses and accuracies of every checkpoint of one (batch size, seed) cell."""

from critperiods.measure.evaluation import evaluate_cell
from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stage import setup
from critperiods.results.cube import write_netcdf
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
data = load_prepared(sm.input.data, sm.input.test_data, device)
metrics = evaluate_cell(
    sm.input.pieces, config_hash(sm.params.training), TrainConfig.from_params(sm.params.training),
    data, sm.params.grid,
    sm.params.evaluate["train_samples"], sm.params.evaluate["batch_size"], device,
)
metrics.attrs.update(piece_attrs(sm.rule, sm.params.code, data.fingerprints, sm.input.pieces))
write_netcdf(metrics, sm.output[0])
