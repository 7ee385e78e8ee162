"""What the commands share: the configs they read (laid over config.yaml and checked
as the Snakefile does), argparse types that refuse a bad number in one line, and the
checks that turn a missing or foreign file into one line naming it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_config(paths: list[str], recorded: tuple[str, dict] | None = None) -> dict:
    """config.yaml overlaid with ``recorded`` (``(cube path, the config it recorded)``), then
    with ``paths`` (as Snakemake does), validated, defaults filled; a bad file or key exits
    with one line that names it (the cube, where no file given sets the key)."""
    from snakemake.utils import update_config, validate

    from critperiods.pipeline.config_file import (
        check_against_schema,
        check_layers,
        exit_on_config_error,
        read_config_file,
    )
    from critperiods.pipeline.plan import check_config, check_moved_keys, in_schema_order
    from critperiods.toy.plan import check_study_chosen, check_toy_config

    files = [ROOT / "config.yaml", *map(Path, paths)]
    blamed = files[1:] if recorded else files  # over a cube's config, config.yaml sets nothing
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    try:
        with exit_on_config_error(blamed):  # the same one line as the Snakefile's
            config = read_config_file(files[0])
            update_config(config, recorded[1] if recorded else {})
            for path in files[1:]:
                update_config(config, read_config_file(path))
            if not recorded:  # over a cube's recorded config the layers are already laid
                check_layers(files)  # an overlay given without the files it is laid over
            check_moved_keys(config)
            check_against_schema(config, schema, blamed)
            validate(config, str(schema))
            check_config(config, yaml.safe_load(schema.read_text()))
            check_study_chosen(config, files[1:])  # as the Snakefile
            if config["study"] == "toy_landscapes":  # as the Snakefile: only the toy study
                check_toy_config(config["toy"])
    except SystemExit as err:
        if recorded and "(set in " not in str(err):
            raise SystemExit(f"{err} (in the config {recorded[0]} records)") from None
        raise
    return in_schema_order(config, yaml.safe_load(schema.read_text()))  # as the Snakefile


def config_file_args(parser: argparse.ArgumentParser) -> None:
    """The configs a command lays over config.yaml: positional, or as snakemake takes them."""
    parser.add_argument("configfile", nargs="*", default=[],
                        help="configs laid over config.yaml (none: the default experiment)")
    parser.add_argument("--configfile", nargs="+", default=[], dest="configfiles",
                        help="the same, spelled as for snakemake")


def config_paths(args: argparse.Namespace) -> list[str]:
    return [*args.configfile, *args.configfiles]


def layers(paths: list[str], *between: str) -> str:
    """How a command names the config it read: config.yaml, ``between`` (e.g. a cube's
    recorded config), then the files laid over them, config.yaml itself not twice."""
    base = ROOT / "config.yaml"
    return " + ".join(["config.yaml", *between,
                       *(p for p in paths if Path(p).resolve() != base.resolve())])


def number(kind: type, least: float = 0, why: str = "", strict: bool = False
           ) -> Callable[[str], float]:
    """An argparse ``type`` that reads a finite ``kind`` and refuses a value below ``least``
    (or equal to it, with ``strict``), saying why: the flag, the value and the bound in one
    line (argparse adds the flag)."""
    def read(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        if value < least or (strict and value == least):
            bound = f"{'above' if strict else 'at least'} {least:g}"
            raise argparse.ArgumentTypeError(f"{text}: must be {bound}"
                                             + (f" ({why})" if why else ""))
        return value
    return read


def positive(kind: type, zero: bool = False) -> Callable[[str], float]:
    """:func:`number` above 0 (0 too with ``zero``)."""
    return number(kind, 0, strict=not zero)


def interval_level(text: str) -> float:
    """An argparse type: an interval level strictly between 0 and 1, else a one-line usage
    error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (e.g. 0.9)")
    return value


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read (a folder, or nothing there), or None."""
    if path.is_file():
        return None
    return "a folder, not a cube file" if path.is_dir() else "no such file"


#: The first bytes of a netCDF file: netCDF-4 (HDF5) or the classic format.
_NETCDF_MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF")


_WHERE_CUBES_ARE = "expected results/<experiment>/cube.nc, or toy_cube.nc for the toy study"


def open_cube_or_exit(path: str) -> object:
    """The cube at ``path``, or a one-line error (no traceback) naming the file and why:
    a file that is no netCDF at all (a config, a CSV) is told so, and only a netCDF file
    the library cannot read is called truncated or corrupt."""
    from critperiods import open_cube

    if why := not_a_file(Path(path)):
        raise SystemExit(f"critperiods: {path}: {why}")
    with open(path, "rb") as file:
        head = file.read(8)
    if head and not head.startswith(_NETCDF_MAGIC):
        raise SystemExit(f"critperiods: {path}: not a netCDF file ({_WHERE_CUBES_ARE})")
    try:
        cube = open_cube(path)
    except ValueError as err:  # unreadable: the file named with the command that remakes it
        raise SystemExit(f"critperiods: {err}") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means: not a cube
        raise SystemExit(f"critperiods: {path}: not a netCDF cube ({type(err).__name__})") from None
    if "final_test_accuracy" not in cube and cube.attrs.get("cube_kind") != "toy_landscapes":
        raise SystemExit(f"critperiods: {path}: not a critperiods cube (no final_test_accuracy; "
                         f"{_WHERE_CUBES_ARE})")
    return cube


#: The file types ``--out`` may name for a figure (a subset of what matplotlib saves).
IMAGE_TYPES = ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "webp", "eps")


def check_out_path(path: str, option: str = "--csv", example: str = "summary.csv",
                    suffixes: Sequence[str] = ()) -> None:
    """Exit with one line, before any work, where ``option``'s file cannot be written: it
    names a folder, a folder on its way is a file, or (with ``suffixes``) its suffix is
    not one of them. A missing parent folder is fine: the writer makes it."""
    target = Path(path)
    if target.is_dir():
        raise SystemExit(f"critperiods: {option} {path}: a folder; give a file name, e.g. "
                         f"{target / example}")
    blocked = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise SystemExit(f"critperiods: {option} {path}: {blocked} is a file, not a folder")
    if suffixes and target.suffix.lower().lstrip(".") not in suffixes:
        raise SystemExit(f"critperiods: {option} {path}: not a file type this can write; "
                         f"give one of {', '.join('.' + s for s in suffixes)} (e.g. "
                         f"{target.with_suffix(Path(example).suffix)})")


def plain(rst: str) -> str:
    """A report sentence (reStructuredText) as the terminal prints it: without its bold
    (double asterisks) and literal (double backquotes) markup."""
    return rst.replace("**", "").replace("``", "")


__all__ = ["IMAGE_TYPES", "ROOT", "check_out_path", "config_file_args", "config_paths",
           "interval_level", "layers", "load_config", "not_a_file", "number", "open_cube_or_exit",
           "plain", "positive"]
