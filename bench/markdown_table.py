"""What the coverage-style benchmarks do with the table they built: print it and, given a
path, write it there too (folders made as needed). A module beside the scripts, which
``python bench/<script>.py`` finds on its path."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: Path | None) -> str:
    """Join ``lines`` into the table, print it, write it to ``out`` where given; return it."""
    table = "\n".join(lines)
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
    return table
