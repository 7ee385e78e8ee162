"""Stage toy_cube: the landscapes' results → toy_cube.nc and its summary table."""

from critperiods.pipeline.config_record import toy_record
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.stages import setup
from critperiods.toy.cube import build_toy_cube, summary_csv

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
cube = build_toy_cube(sm.input, toy_record(sm.config), sm.params.max_endpoint_bias,
                      sm.params.max_rhat, sm.params.max_trend_z)  # its digest: the param
write_netcdf(cube, sm.output.cube)
summary_csv(cube, sm.output.summary)
