"""reStructuredText blocks for the report's first pages (Snakemake renders them with
docutils): a table that scrolls sideways in its column, a figure embedded as a data URI, and
a style that widens the column where the window has room. No experiment logic: the pages
themselves are :mod:`critperiods.results.report_page` and :mod:`critperiods.toy.report_page`.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

#: Snakemake sets the first page in a 32rem column beside the workflow graph, too narrow for
#: the critical-period table, which would run under the graph, and centres it vertically in
#: a box of the window's height, so that a page taller than the window overflows upwards,
#: where no scrolling reaches it (its question and answer were cut off). A style in the page
#: itself (so every ``snakemake --report`` has it) centres it only while it fits
#: (``safe center``; ``flex-start`` where a browser lacks ``safe``) and widens the column on
#: windows with room for both; on narrower ones the tables scroll sideways in their column
#: (:func:`list_table`).
PAGE_STYLE = """.. raw:: html

   <style>
   .h-screen.items-center { align-items: flex-start; align-items: safe center; }
   @media (min-width: 1400px) { .prose.max-w-lg { max-width: 48rem; } }
   </style>"""


def list_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """An rst list-table (lines) that scrolls sideways where the page is narrower than it:
    the report's first page is a narrow column beside the workflow graph, and a table that
    spilled out of it would run under the graph."""
    out = [".. raw:: html", "", '   <div style="overflow-x: auto">', "",
           ".. list-table::", "   :header-rows: 1", ""]
    for cells in [header, *rows]:
        out.append("   * - " + cells[0])
        out += [f"     - {c}" for c in cells[1:]]
    return [*out, "", ".. raw:: html", "", "   </div>"]


def figure_rst(png: str | Path, alt: str) -> str:
    """An rst raw-html block that embeds ``png`` as a data URI (``alt``: its text
    alternative)."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    # docutils refuses lines over 10 000 characters; browsers skip whitespace in base64
    lines = "\n".join(f"   {data[i:i + 4000]}" for i in range(0, len(data), 4000))
    return (".. raw:: html\n\n"
            f'   <img style="max-width:100%" alt="{html.escape(alt)}"\n'
            f'   src="data:image/png;base64,\n{lines}"/>')


def rst_text(text: str) -> str:
    """Plain ``text`` (a reason written for the terminal) as rst that shows it as written:
    the inline markup characters escaped (``*``, a backquote, ``|``, and an ``_`` not
    followed by a letter or digit, which would make a reference)."""
    text = re.sub(r"([*`|\\])", r"\\\1", text)
    return re.sub(r"_(?![A-Za-z0-9])", r"\\_", text)  # word_, word__, [1]_: references


__all__ = ["PAGE_STYLE", "figure_rst", "list_table", "rst_text"]
