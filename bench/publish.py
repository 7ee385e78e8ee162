"""Copy the benchmark tables of ``bench/out/`` into ``docs/performance.md``.

``make bench`` and ``make bench-gpu`` end with this script, so the generated section of
the performance page always shows the last measured tables, each under one line naming the
date and the machine. A table goes between the markers ``<!-- bench/out/NAME.md -->`` and
``<!-- end bench/out/NAME.md -->``; the markers of a table that was never measured are left
as they are. The prose above the markers (dated, hand-written) is not touched.

    python bench/publish.py [--out bench/out] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("training.md", "llc.md", "rates.md", "gpu.md", "gpu_levers.md")


def machine() -> str:
    """This machine in one phrase: CPU model, core count, and the GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if names:
            cpu = f"{names[0].strip()}, {len(names)} cores"
    try:
        import torch

        if torch.cuda.is_available():
            cpu += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return cpu


def stamp(table: Path, where: str) -> str:
    """The line above a table: the file, the day it was written and the machine."""
    day = dt.datetime.fromtimestamp(table.stat().st_mtime, dt.UTC).date().isoformat()
    return f"*`bench/out/{table.name}`, measured {day} on {where}.*"


def publish(out: Path, doc: Path, where: str | None = None) -> list[str]:
    """Replace the marked section of ``doc`` for every table in ``out``; returns the names
    of the tables published. ``where`` names the machine (default: :func:`machine`)."""
    text = doc.read_text()
    done = []
    for name in TABLES:
        table = out / name
        begin, end = f"<!-- bench/out/{name} -->", f"<!-- end bench/out/{name} -->"
        if not table.exists() or begin not in text:
            continue
        if end not in text:
            raise SystemExit(f"{doc}: '{begin}' has no closing '{end}'")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        body = f"\n{stamp(table, where or machine())}\n\n{table.read_text().strip()}\n"
        text = f"{head}{begin}{body}{end}{tail}"
        done.append(name)
    doc.write_text(text)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out",
                        help="folder of the benchmark tables (default: bench/out)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs/performance.md",
                        help="the page to update (default: docs/performance.md)")
    args = parser.parse_args()
    done = publish(args.out, args.doc)
    what = ", ".join(done) or f"nothing (no tables in {args.out})"
    print(f"{args.doc}: published {what}")


if __name__ == "__main__":
    main()
