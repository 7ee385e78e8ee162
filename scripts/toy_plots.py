"""Stage toy_plots: the toy study's figures from its cube."""

from critperiods import open_cube
from critperiods.pipeline.stages import setup
from critperiods.toy.plots import PLOTTERS

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
cube = open_cube(sm.input[0])
for name, path in sm.output.items():
    PLOTTERS[name](cube, path, dpi=sm.params.dpi)
