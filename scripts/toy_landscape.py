"""Stage toy_landscape: SGD ensembles, posterior, noise and λ̂ on one toy landscape."""

from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.stages import setup
from critperiods.toy.landscapes import Landscape
from critperiods.toy.measure import ToyParams, measure_landscape

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
landscape = Landscape.parse(sm.wildcards.landscape)
result = measure_landscape(landscape, ToyParams.from_config(sm.params.toy), progress=True)
write_netcdf(result, sm.output[0])
