"""``provenance``: which code and data versions a cube's pieces came from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from critperiods.cli.common import not_a_file


def provenance(args: argparse.Namespace) -> int:
    import json

    from critperiods.pipeline.provenance_report import report

    path = Path(args.cube)
    if why := not_a_file(path):
        print(f"critperiods: {path}: {why}", file=sys.stderr)
        return 2
    try:
        import netCDF4

        with netCDF4.Dataset(path) as nc:
            text = nc.getncattr("provenance") if "provenance" in nc.ncattrs() else None
        if text is None:
            raise ValueError("no provenance attribute (a cube written before it was recorded, "
                             "or not a cube: expected results/<experiment>/cube.nc)")
        prov = json.loads(text)
    except (OSError, ValueError) as err:
        print(f"critperiods: {path}: not a critperiods cube with provenance: {err}",
              file=sys.stderr)
        return 2
    lines, problems = report(prov)
    print(f"{path}")
    print("\n".join(lines))
    if problems:
        print("\n" + "\n".join(problems))
        return 1
    print("\nconsistent: every stage's results come from one code version and one data version")
    return 0


__all__ = ["provenance"]
