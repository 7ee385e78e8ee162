"""critperiods: critical learning periods through singular learning theory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr


def __getattr__(name: str) -> str:
    """``critperiods.__version__``, read from :mod:`critperiods._version` when asked for: a
    version bump then reruns only the stages that record it (docs/invalidation.md), not
    every stage that imports the package."""
    if name == "__version__":
        from critperiods._version import __version__

        return __version__
    raise AttributeError(f"module 'critperiods' has no attribute {name!r}")


def open_cube(path: str | Path) -> xr.Dataset:
    """Open ``results/<experiment>/cube.nc`` as an xarray Dataset (fully loaded)."""
    from critperiods.results.cube import open_cube as _open

    return _open(path)


__all__ = ["__version__", "open_cube"]
