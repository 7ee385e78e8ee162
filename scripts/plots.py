"""Stage plots: figures from the cube."""

from critperiods import open_cube
from critperiods.plots import PLOTTERS
from critperiods.stage import setup

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
cube = open_cube(sm.input[0])
for name, path in sm.output.items():
    PLOTTERS[name](cube, path, dpi=sm.params.plots["dpi"])
