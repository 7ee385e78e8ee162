"""critperiods: critical learning periods through singular learning theory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr

__version__ = "0.2.0"


def open_cube(path: str | Path) -> xr.Dataset:
    """Open ``results/<experiment>/cube.nc`` as an xarray Dataset (fully loaded)."""
    from critperiods.results.cube import open_cube as _open

    return _open(path)


__all__ = ["__version__", "open_cube"]
