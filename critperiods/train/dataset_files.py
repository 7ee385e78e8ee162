"""The raw dataset files: where they are found, and what identifies them.

Kept free of torch and numpy, so that the workflow can compute the data's identity
(:func:`raw_identity`) each time it plans without importing them.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

DATASETS = ("fashion_mnist", "mnist", "cifar10")
#: Debian's ``dataset-fashion-mnist`` package puts the four IDX files here.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
SPLITS = ("train", "test")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_META = "batches.meta"
#: The archive torchvision downloads CIFAR-10 as (into ``dataset.root``), and its MD5 sum.
CIFAR10_ARCHIVE = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: MD5 sums of the raw files as torchvision 0.29 downloads them (its download checks them):
#: the identity of data that are not on disk yet.
PUBLISHED_MD5 = {
    "fashion_mnist": {
        "train": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe"},
        "test": {"t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                 "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    },
    "mnist": {
        "train": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                  "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432"},
        "test": {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                 "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    },
    "cifar10": {
        "train": {"data_batch_1": "c99cafc152244af753f735de768cd75f",
                  "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                  "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                  "data_batch_4": "634d18415352ddfa80567beed471001a",
                  "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
        "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
    },
}


TORCHVISION_FOLDER = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}


def find_idx_folder(candidates: list[Path]) -> Path | None:
    """The first folder of ``candidates`` that holds all four IDX files."""
    for folder in candidates:
        if all((folder / name).exists() for name in IDX_FILES.values()):
            return folder
    return None


def idx_candidates(name: str, root: Path) -> list[Path]:
    """Folders searched for (Fashion-)MNIST's IDX files, in order."""
    candidates = [root, root / TORCHVISION_FOLDER[name] / "raw"]
    if name == "fashion_mnist":
        candidates.append(SYSTEM_FASHION_MNIST)
    return candidates


def check_name(name: str) -> None:
    """Refuse an unknown ``dataset.name``, naming the key."""
    if name not in DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of {DATASETS}")


def raw_files(name: str, root: str | Path, split: str) -> list[Path] | None:
    """The files ``critperiods.train.data.load_raw`` reads for ``split``, or None where they are
    not on disk (it would download them)."""
    check_name(name)
    root = Path(root)
    if name == "cifar10":
        files = [root / CIFAR10_FOLDER / f for f in CIFAR10_FILES[split]]
        return files if all(f.is_file() for f in files) else None
    folder = find_idx_folder(idx_candidates(name, root))
    if folder is None:
        return None
    return [folder / IDX_FILES[(split, kind)] for kind in ("images", "labels")]


@functools.lru_cache(maxsize=64)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    """MD5 of a file (cached per path, size and modification time within a process)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _md5_now(path: Path) -> str:
    """The MD5 sum of ``path`` (cached by its size and modification time)."""
    st = path.stat()
    return _md5(path, st.st_size, st.st_mtime_ns)


def raw_identity(name: str, root: str | Path, split: str) -> dict[str, str]:
    """``{file name: MD5}`` of the raw files of ``split``: what is on disk, or, where nothing
    is, what torchvision's download will write (it verifies these sums). Where the files
    are found does not enter: moving them changes nothing."""
    files = raw_files(name, root, split)
    if files is None:
        return dict(PUBLISHED_MD5[name][split])
    return {f.name: _md5_now(f) for f in files}


class DatasetUnavailable(ValueError):
    """Raw files that are neither on disk nor downloadable. The message (one line) names
    ``dataset.name``, the folder looked in, the files missing, why the download failed and
    what to do; the download's own error is chained (``__cause__``)."""


#: What to do, per dataset, when its files cannot be downloaded (README, docs/slurm.md).
OFFLINE_HINTS = {
    "fashion_mnist": (
        "to get Fashion-MNIST without network, run `make dataset` as root (it installs "
        f"Debian's dataset-fashion-mnist into {SYSTEM_FASHION_MNIST}) or copy the four IDX "
        "files into dataset.root"),
    "mnist": "to get MNIST without network, copy the four IDX files into dataset.root",
    "cifar10": (
        f"to get CIFAR-10 without network, place the extracted {CIFAR10_FOLDER} folder (from "
        f"{CIFAR10_URL}) under dataset.root"),
}


def _reason(err: BaseException, limit: int = 400) -> str:
    """``err`` on one line: its type and its message (lines joined into sentences, blanks
    collapsed), cut at ``limit`` characters."""
    text = ""
    for line in str(err).splitlines():
        if line := " ".join(line.split()).rstrip("."):
            text += line if not text else (" " if text.endswith(":") else ". ") + line
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _corrupted(name: str, root: Path) -> list[tuple[Path, str, str]]:
    """Files a download left in ``root`` whose MD5 is not the published one: (path, MD5,
    published MD5)."""
    published = {f: m for split in SPLITS for f, m in PUBLISHED_MD5[name][split].items()}
    if name == "cifar10":
        archive, md5 = CIFAR10_ARCHIVE
        expected = {root / archive: md5}
        expected.update({root / CIFAR10_FOLDER / f: m for f, m in published.items()})
    else:
        folder = root / TORCHVISION_FOLDER[name] / "raw"
        expected = {folder / f: m for f, m in published.items()}
    out = []
    for path, md5 in expected.items():
        if path.is_file() and (got := _md5_now(path)) != md5:
            out.append((path, got, md5))
    return out


def _missing(name: str, root: Path, corrupted: set[Path]) -> tuple[Path, list[str]]:
    """The folder closest to holding the raw files :func:`raw_files` looks for (``root`` on a
    tie) and the names of those it lacks (or holds ``corrupted``)."""
    def lacks(folder: Path, needed: list[str]) -> list[str]:
        return [f for f in needed if not (folder / f).is_file() or folder / f in corrupted]

    if name == "cifar10":
        folder = root / CIFAR10_FOLDER
        return folder, lacks(folder, [f for s in SPLITS for f in CIFAR10_FILES[s]] + [CIFAR10_META])
    needed = list(IDX_FILES.values())
    lacking = [(folder, lacks(folder, needed)) for folder in idx_candidates(name, root)]
    return min(lacking, key=lambda entry: len(entry[1]))  # min keeps the first on a tie


def download_failed(name: str, root: str | Path, err: BaseException) -> DatasetUnavailable:
    """The error to raise (``from err``) when downloading ``name`` into ``root`` failed with
    ``err``: one line naming the key, the folders, the files missing and the reason."""
    root = Path(root)
    where = str(root) if root.is_absolute() else f"{root}, i.e. {root.resolve()}"
    parts = [f"dataset.name: {name}: the raw files are not in dataset.root ({where}) and "
             f"downloading them failed: {_reason(err)}"]
    corrupted = _corrupted(name, root)
    folder, missing = _missing(name, root, {path for path, _, _ in corrupted})
    if missing:
        parts.append(f"missing from {folder}: {', '.join(missing)}")
    if name != "cifar10":
        others = [str(f) for f in idx_candidates(name, root) if f != folder]
        parts.append(f"also looked in {', '.join(others)}")
    if corrupted:
        parts.append("present but not the published files (a broken download, or another "
                     "copy): " + ", ".join(
                         f"{path} (MD5 {got}, expected {md5})" for path, got, md5 in corrupted))
    if name == "cifar10" and (root.name == CIFAR10_FOLDER or (root / "data_batch_1").exists()):
        parts.append(f"dataset.root names the folder that holds the files; point it at the "
                     f"folder that holds {CIFAR10_FOLDER}/")
    parts.append(OFFLINE_HINTS[name] + ", or run once where there is network (on a cluster: "
                 "the login node, docs/slurm.md)")
    return DatasetUnavailable("; ".join(parts))


__all__ = ["DATASETS", "IDX_FILES", "PUBLISHED_MD5", "SPLITS", "SYSTEM_FASHION_MNIST",
           "DatasetUnavailable", "download_failed", "find_idx_folder", "idx_candidates",
           "raw_files", "raw_identity"]
