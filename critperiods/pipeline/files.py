"""Atomic file writes: a reader never sees a half-written output; and netCDF reads that
name a file they cannot read and the command that remakes it.

Every stage writes to a temporary file in the destination folder, flushes it to the disk
(``fsync``) and renames it into place with ``os.replace`` (atomic on POSIX within one file
system), then flushes the folder, so a job killed mid-write, or a node that loses power
after a job finished, leaves either the old file or the whole new one, never a torso or an
empty file under the final name.  The
file gets the permissions an ordinary ``open`` would give it (``0666`` less the umask), so
colleagues and notebook servers can read the results.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Below this many free bytes, a failed write is reported as a full filesystem: netCDF and
#: torch.save say "Permission denied" or "unexpected pos" when the disk fills.
LOW_SPACE = 16 * 2**20


def said(err: BaseException) -> str:
    """``"<type>: <first line of its message>"``: libraries' messages run over several lines,
    and a failed job's summary keeps one. Of ``torch.load``'s refusal, the reason, not its
    advice to load with ``weights_only=False`` (which runs whatever the file holds)."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:
        text = ("not what torch.load(weights_only=True) accepts: "
                + text.split("WeightsUnpickler error:", 1)[1].strip())
    lines = text.splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``. A write
    that fails on a (nearly) full filesystem raises ``OSError(ENOSPC)`` naming ``path`` and
    the space left, whatever the writer said; one over a disk quota, ``OSError(EDQUOT)``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; outputs are for sharing
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent, folder=True)
    except Exception as err:
        full = _no_space(err)
        if full == errno.EDQUOT:
            raise OSError(errno.EDQUOT, f"cannot write {target}: over your disk quota "
                                        f"({said(err)})") from err
        try:
            free = shutil.disk_usage(target.parent).free
        except OSError:
            free = None
        if full or (free is not None and free < LOW_SPACE):
            left = "" if free is None else f": its filesystem has {free / 2**20:.1f} MiB free"
            raise OSError(errno.ENOSPC, f"cannot write {target}{left} ({said(err)})") from err
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str | os.PathLike, folder: bool = False) -> None:
    """Flush ``path``'s data (a folder: its entries, so a rename into it lasts) to the disk.
    Without it, a file renamed into place can read back empty after a crash on file systems
    that delay allocation. Some file systems cannot flush a folder; that is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:  # a folder one may write but not read, or a system without folder fds
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _sweep(target: Path) -> None:
    """Delete the temporary files an earlier write of ``target`` left: a job killed by a
    signal (SIGKILL, or SIGTERM outside training) skips the cleanup below, and a piece or a
    resume file left half-written weighs hundreds of MB. One job writes a given file at a
    time, so none of these is being written."""
    left = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        if left.fullmatch(stale.name):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _no_space(err: BaseException | None) -> int:
    """ENOSPC or EDQUOT where ``err`` or an error it was raised from is one, else 0."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err.errno
        err = err.__cause__ or err.__context__
    return 0


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    import torch  # here: the netCDF readers of this module need no PyTorch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_netcdf(ds: Any, path: str | os.PathLike) -> None:
    """Write the xarray Dataset ``ds`` atomically as compressed netCDF4.

    A CF flag variable held as float so that it can be NaN where nothing was flagged (it has
    ``flag_values``) is stored as int8 with the fill value -1, the type of its flags.
    """
    encoding = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind not in "fiub":
            continue
        encoding[name] = {"zlib": True, "complevel": 4}
        if "flag_values" in var.attrs and var.dtype.kind == "f":
            encoding[name].update(dtype="int8", _FillValue=-1)
    write_atomic(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding))


def remake(path: str | os.PathLike) -> str:
    """The command that remakes one output of a run, as the errors about a bad file give it
    (with the run's own ``--configfile``): Snakemake does not remake a deleted file whose
    products exist, so "delete it and rerun" would do nothing."""
    return f"snakemake --cores all --forcerun {path}"


def read_netcdf(path: str | os.PathLike, attrs_only: bool = False) -> Any:
    """The xarray Dataset in the netCDF file ``path``, fully loaded (its attributes only,
    with ``attrs_only``), the file closed again. A file that cannot be read (truncated,
    corrupt, not netCDF) or is missing raises a ``ValueError`` that names it (and the
    command that remakes it), instead of the netCDF library's "NetCDF: HDF error"."""
    import xarray as xr

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:  # the engine write_netcdf uses; decoding errors are not the file's fault: raised
        with xr.open_dataset(path, engine="netcdf4") as opened:
            return dict(opened.attrs) if attrs_only else opened.load()
    except (OSError, RuntimeError) as err:
        raise ValueError(
            f"{path}: cannot be read as netCDF ({said(err)}); it is truncated "
            f"or corrupt — regenerate it, with the run's own options: {remake(path)}") from err
