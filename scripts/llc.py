"""Stage llc: λ̂ by SGLD at the selected checkpoints of one piece."""

from critperiods.measure.evaluation import model_for
from critperiods.measure.llc import llc_at_checkpoints, llc_config_from_params, llc_data
from critperiods.pipeline.checkpoints import config_hash, load_checkpoints
from critperiods.pipeline.provenance import piece_attrs
from critperiods.pipeline.stage import setup
from critperiods.results.cube import write_netcdf
from critperiods.train.data import load_prepared
from critperiods.train.training import TrainConfig

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
cfg = TrainConfig.from_params(sm.params.training)
data = load_prepared(sm.input.data, device=device)
wanted = set(sm.params.epochs)
checkpoints = [c for c in load_checkpoints(sm.input.pieces, config_hash(sm.params.training))
               if c["epoch"] in wanted]
result = llc_at_checkpoints(
    checkpoints, model_for(cfg, data, device), llc_data(data, sm.params.llc),
    llc_config_from_params(sm.params.llc), label=str(sm.output[0]),
)
result.attrs.update(piece_attrs(sm.rule, sm.params.code, data.fingerprints, sm.input.pieces))
write_netcdf(result, sm.output[0])
