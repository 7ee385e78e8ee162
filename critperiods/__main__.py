"""``python -m critperiods <command>``: the command line, in :mod:`critperiods.cli`."""

import sys

from critperiods.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
