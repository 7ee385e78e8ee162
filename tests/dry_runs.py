"""Many dry runs of the workflow in one Python process, for tests/test_invalidation.py.

A dry run of the tiny config costs ~1.5 s of CPU from the command line, two thirds of it
importing Snakemake; here Snakemake is imported once and each dry run costs the planning
only. Usage (prints JSON ``{config file: output of the dry run}``)::

    python tests/dry_runs.py SNAKEFILE WORKDIR CONFIG... -- EXTRA_CONFIG...

Each EXTRA_CONFIG is laid over the CONFIGs for one dry run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def dry_run(snakefile: str, workdir: str, configs: list[str]) -> str:
    """Output of ``snakemake -n`` (a failure's traceback included, and marked)."""
    from snakemake.cli import args_to_api, parse_args

    argv = ["-s", snakefile, "-d", workdir, "--configfile", *configs, "-n", "--nolock"]
    out = io.StringIO()
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            parser, args = parse_args(argv)
            ok = args_to_api(args, parser)
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails on it
        ok = False
        out.write(f"\n{type(err).__name__}: {err}")
    finally:
        os.chdir(cwd)
    return out.getvalue() + ("" if ok else "\nDRY RUN FAILED")


def main(argv: list[str]) -> None:
    split = argv.index("--")
    snakefile, workdir, *configs = argv[:split]
    results = {extra: dry_run(snakefile, workdir, [*configs, extra]) for extra in argv[split + 1:]}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
