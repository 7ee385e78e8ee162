"""Stage plots: figures from the cube, and the report's first page (the answer first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from critperiods.pipeline.files import write_atomic
from critperiods.pipeline.stages import setup
from critperiods.results.cube import open_cube
from critperiods.results.plots import PLOTTERS
from critperiods.results.report_page import landing_page


def plots(cube_path: str, figures: dict[str, str], landing: str, *, dpi: int,
          description: str) -> None:
    """Draw ``figures`` (name → PNG path; names of ``PLOTTERS``) from the cube and write the
    report's first page, which embeds the critical-period figure (and, in a perturbation
    run, the perturbation figure it opens on)."""
    cube = open_cube(cube_path)
    for name, path in figures.items():
        PLOTTERS[name](cube, path, dpi=dpi)
    page = landing_page(cube, figures["critical_period"], description, drawn=figures,
                        perturbation_figure=figures.get("perturbation"))
    write_atomic(landing, lambda tmp: Path(tmp).write_text(page))


def run(sm: Any) -> None:
    setup(sm)
    plots(sm.input[0], {name: path for name, path in sm.output.items() if name in PLOTTERS},
          sm.output.landing, dpi=sm.params.plots["dpi"], description=sm.params.description)
