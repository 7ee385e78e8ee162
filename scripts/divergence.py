"""Stage divergence: every comparison between the runs of one batch size."""

from critperiods.measure.divergence import divergence_for_pieces
from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stage import setup
from critperiods.results.cube import write_netcdf
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
data = load_prepared(sm.input.data, sm.input.test_data, device)
result = divergence_for_pieces(
    sm.input.pieces, config_hash(sm.params.training), TrainConfig.from_params(sm.params.training),
    data, sm.params.divergence, device,
)
result.attrs.update(piece_attrs(sm.rule, sm.params.code, data.fingerprints, sm.input.pieces))
write_netcdf(result, sm.output[0])
