"""Stage toy_plots: the toy study's figures from its cube, and the report's first page."""

from pathlib import Path

from critperiods import open_cube
from critperiods.pipeline.files import write_atomic
from critperiods.pipeline.stages import setup
from critperiods.toy.plots import PLOTTERS
from critperiods.toy.report_page import landing_page

sm = snakemake  # noqa: F821 - injected by Snakemake
setup(sm)
cube = open_cube(sm.input[0])
figures = {name: path for name, path in sm.output.items() if name in PLOTTERS}
for name, path in figures.items():
    PLOTTERS[name](cube, path, dpi=sm.params.dpi)
page = landing_page(cube, figures["toy_llc"])
write_atomic(sm.output.landing, lambda tmp: Path(tmp).write_text(page))
