"""Datasets, the blur deficit, and the prepared tensors every stage trains on.

``prepare_split`` reads one split of a dataset (train or test) and caches its sharp and
blurred images as uint8 tensors with the labels, in one file per split; the training split
also holds the normalisation statistics of its sharp images. Training reads only the
training split, so a change to the test split never retrains. Training keeps these tensors
resident on its device and builds batches by indexing, never through a per-sample DataLoader.

Data are identified by content, not location:
:func:`~critperiods.train.dataset_files.raw_identity` names the raw files of a split with their MD5
sums (those torchvision publishes when the files are still to be downloaded, which its
download verifies), and a prepared split records a fingerprint of the raw files, the subset
indices and the blur (:func:`data_fingerprint`). Moving the data folder changes neither.

The blur deficit follows Achille et al. (2019): downsample to
``blur_size × blur_size`` by area averaging and upsample back bilinearly.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from critperiods.train.dataset_files import (  # noqa: F401 - DATASETS, SYSTEM_…: re-exported
    DATASETS,
    IDX_FILES,
    SPLITS,
    SYSTEM_FASHION_MNIST,
    TORCHVISION_FOLDER,
    DatasetUnavailable,
    check_name,
    download_failed,
    find_idx_folder,
    idx_candidates,
    raw_identity,
)

log = logging.getLogger(__name__)

FORMAT = "critperiods-data/2"
#: What a failed download raises: no network (URLError is an OSError), a wrong MD5 sum
#: (torchvision's RuntimeError), a full disk, a truncated archive.
DOWNLOAD_ERRORS = (OSError, RuntimeError, EOFError, tarfile.TarError)


@dataclass
class Split:
    """uint8 images [N, C, H, W] (sharp and blurred) and int64 labels [N]."""

    sharp: torch.Tensor
    blurred: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(self.sharp.to(device), self.blurred.to(device), self.labels.to(device))

    def images(self, phase: str) -> torch.Tensor:
        """The images of ``phase`` (``"sharp"`` or ``"blurred"``)."""
        return self.sharp if phase == "sharp" else self.blurred


@dataclass
class PreparedData:
    """Everything training and evaluation need: the training split with its normalisation
    statistics, and the test split where a stage reads it (None where it does not)."""

    train: Split
    test: Split | None
    mean: torch.Tensor  # [C], of sharp training images scaled to [0, 1]
    std: torch.Tensor  # [C]
    num_classes: int
    meta: dict

    @property
    def fingerprints(self) -> dict[str, str]:
        """``{split: fingerprint}`` of the prepared splits this holds (see
        :func:`data_fingerprint`); empty for data not prepared from files."""
        return dict(self.meta.get("fingerprints", {}))

    @property
    def in_channels(self) -> int:
        return self.train.sharp.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.sharp.shape[-1]

    def to(self, device: torch.device | str) -> PreparedData:
        return PreparedData(
            self.train.to(device), None if self.test is None else self.test.to(device),
            self.mean.to(device), self.std.to(device), self.num_classes, self.meta,
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 255]) images → float32, per-channel standardised."""
        x = images.float().div_(255.0)
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


def blur(images: torch.Tensor, blur_size: int) -> torch.Tensor:
    """Achille et al.'s deficit: area-downsample to ``blur_size`` and bilinear-upsample back.

    Works on float batches [N, C, H, W]; linear in the pixels, so it commutes
    with per-channel standardisation.
    """
    size = images.shape[-2:]
    small = F.interpolate(images, size=(blur_size, blur_size), mode="area")
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def blur_uint8(images: torch.Tensor, blur_size: int, chunk: int = 4096) -> torch.Tensor:
    """Blur uint8 images and round back to uint8 (as resizing a PIL image would)."""
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        part = blur(images[start : start + chunk].float(), blur_size)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """Read one (gzipped) IDX file of unsigned bytes, as used by (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} bytes for shape {shape})")
    return data.reshape(shape).copy()  # writable, detached from the file buffer


@contextlib.contextmanager
def _downloading(root: Path):
    """Hold ``<root>/.critperiods-download.lock``: the train and test splits are two jobs,
    which would otherwise download into ``root`` at once and read each other's half-extracted
    files. The second job waits, then finds the files there. Where the lock cannot be taken
    (a read-only folder, a filesystem without locks) the download goes ahead without it, and
    fails or not on its own account."""
    path, fd = root / ".critperiods-download.lock", None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as err:
        log.warning("%s: cannot take the download lock (%s); downloading without it", path, err)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _load_idx_dataset(name: str, root: Path,
                      splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(Fashion-)MNIST from IDX files: ``root``, torchvision's folder, the Debian package.

    Downloads through torchvision only when no local copy exists; a failed download raises
    :class:`DatasetUnavailable`.
    """
    candidates = idx_candidates(name, root)
    folder = find_idx_folder(candidates)
    if folder is None:
        import torchvision

        log.info("%s not found in %s; downloading with torchvision", name, candidates)
        cls = {"fashion_mnist": torchvision.datasets.FashionMNIST,
               "mnist": torchvision.datasets.MNIST}[name]
        with _downloading(root):  # torchvision skips files another job has downloaded
            try:
                cls(str(root), train=True, download=True)
                cls(str(root), train=False, download=True)
            except DOWNLOAD_ERRORS as err:
                raise download_failed(name, root, err) from err
        folder = root / TORCHVISION_FOLDER[name] / "raw"
    log.info("reading %s from %s", name, folder)
    return {
        split: (
            read_idx(folder / IDX_FILES[(split, "images")])[:, None],
            read_idx(folder / IDX_FILES[(split, "labels")]).astype(np.int64),
        )
        for split in splits
    }


def _load_cifar10(root: Path, splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 through torchvision (downloaded into ``root`` if absent; a failed download
    raises :class:`DatasetUnavailable`)."""
    import torchvision

    out = {}
    for split in splits:
        train = split == "train"
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        except RuntimeError:  # not there, or not intact
            ds = None
        if ds is None:
            log.info("cifar10 not found in %s; downloading with torchvision", root)
            with _downloading(root):  # torchvision checks what another job has downloaded
                try:
                    ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
                except DOWNLOAD_ERRORS as err:
                    raise download_failed("cifar10", root, err) from err
        images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # NHWC → NCHW
        out[split] = (images, np.asarray(ds.targets, dtype=np.int64))
    return out


def load_raw(name: str, root: str | Path,
             splits: tuple[str, ...] = SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{"train": (images uint8 [N,C,H,W], labels), "test": (...)}`` (the ``splits``
    asked for)."""
    check_name(name)
    root = Path(root)
    if name == "cifar10":
        return _load_cifar10(root, splits)
    return _load_idx_dataset(name, root, splits)


def data_fingerprint(name: str, split: str, raw: dict[str, str], indices: torch.Tensor,
                     blur_size: int) -> str:
    """Fingerprint of a prepared split (12 hex digits): the raw files' sums, the indices of
    the subset taken and the blur, so equal fingerprints mean equal tensors."""
    head = json.dumps({"format": FORMAT, "dataset": name, "split": split, "raw": raw,
                       "blur_size": blur_size}, sort_keys=True)
    digest = hashlib.sha256(head.encode())
    digest.update(indices.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------- prepare


#: The purposes of :func:`fixed_subset` and their seeds. Each is a constant, independent of
#: the run seeds, so every run, stage and job draws the same images; the seeds differ so the
#: subsets are unrelated. Changing one changes results (the dataset subset: every stage).
SUBSET_SEEDS = {
    "dataset": 0,  # dataset.train_subset / dataset.test_subset: the images prepare_data keeps
    "train_loss": 1,  # evaluate.train_samples: the training images train loss is measured on
    "probe": 2,  # divergence.probe_size: the sharp test images predictions are compared on
    "bn_reset": 3,  # divergence.bn_reset_batches: training images that re-estimate BatchNorm
    "llc": 4,  # llc.samples: the training images the SGLD sampler sees
}


def fixed_subset(n: int, size: int | None, purpose: str) -> torch.Tensor:
    """Sorted indices (int64, on the CPU) of a fixed random subset of ``range(n)``: ``size``
    of them, or all when ``size`` is None or at least ``n``.

    ``purpose`` (a key of :data:`SUBSET_SEEDS`) names what the subset is for and picks its
    seed; the same ``(n, size, purpose)`` gives the same indices on every machine.
    """
    if purpose not in SUBSET_SEEDS:
        raise ValueError(f"fixed_subset: unknown purpose {purpose!r}; one of {list(SUBSET_SEEDS)}")
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(SUBSET_SEEDS[purpose])
    return torch.randperm(n, generator=g)[:size].sort().values


def _make_split(images: np.ndarray, labels: np.ndarray, idx: torch.Tensor,
                blur_size: int) -> Split:
    sharp = torch.from_numpy(images)[idx].contiguous()
    return Split(sharp, blur_uint8(sharp, blur_size), torch.from_numpy(labels)[idx].contiguous())


@dataclass
class PreparedSplit:
    """One split as the ``prepare_data`` stage writes it: images, the number of classes, the
    normalisation statistics (training split only) and ``meta``: dataset, split, subset,
    blur_size, raw (file → MD5) and fingerprint."""

    images: Split
    num_classes: int
    meta: dict
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


def prepare_split(name: str, root: str | Path, split: str, subset: int | None,
                  blur_size: int, expected_raw: dict[str, str] | None = None) -> PreparedSplit:
    """Load ``split`` of ``name`` and build its sharp/blurred tensors (and, for the training
    split, the normalisation statistics).

    ``expected_raw``: the raw identity the workflow planned with (:func:`raw_identity`); a
    mismatch with the files read is an error, naming both.
    """
    images, labels = load_raw(name, root, (split,))[split]
    raw = raw_identity(name, root, split)
    if expected_raw is not None and raw != expected_raw:
        raise ValueError(
            f"dataset.root: the {split} files read from {root!r} ({raw}) are not those the "
            f"workflow planned with ({expected_raw}); they changed meanwhile — run again")
    idx = fixed_subset(len(images), subset, "dataset")
    part = _make_split(images, labels, idx, blur_size)
    meta = {"dataset": name, "split": split, "subset": subset, "blur_size": blur_size,
            "raw": raw, "fingerprint": data_fingerprint(name, split, raw, idx, blur_size)}
    prepared = PreparedSplit(part, int(labels.max()) + 1, meta)
    if split == "train":
        scaled = part.sharp.float().div(255.0)
        prepared.mean, prepared.std = scaled.mean(dim=(0, 2, 3)), scaled.std(dim=(0, 2, 3))
    return prepared


def combine(train: PreparedSplit, test: PreparedSplit | None = None) -> PreparedData:
    """The data a stage works on, from the training split and (if it reads it) the test
    split; refuses splits of different datasets or blurs."""
    if train.meta.get("split") != "train" or train.mean is None:
        raise ValueError("combine: the first split must be the training split")
    if test is not None:
        for key in ("dataset", "blur_size"):
            if test.meta.get(key) != train.meta.get(key):
                raise ValueError(f"the prepared splits disagree on dataset.{key}: "
                                 f"{train.meta.get(key)!r} (train) vs {test.meta.get(key)!r} "
                                 "(test); delete results/<experiment>/data and rerun")
    meta = {"dataset": train.meta["dataset"], "blur_size": train.meta["blur_size"],
            "train_subset": train.meta["subset"],
            "test_subset": None if test is None else test.meta["subset"],
            "fingerprints": {"train": train.meta["fingerprint"],
                             **({} if test is None else {"test": test.meta["fingerprint"]})}}
    return PreparedData(train.images, None if test is None else test.images,
                        train.mean, train.std, train.num_classes, meta)


def prepare(
    name: str, root: str | Path, train_subset: int | None, test_subset: int | None,
    blur_size: int,
) -> PreparedData:
    """Both splits of ``name`` prepared as the pipeline does (one :func:`prepare_split` each)."""
    return combine(prepare_split(name, root, "train", train_subset, blur_size),
                   prepare_split(name, root, "test", test_subset, blur_size))


def save_prepared(part: PreparedSplit, path: str | Path) -> None:
    """Write a prepared split atomically (one file, loadable with ``weights_only``)."""
    from critperiods.pipeline.files import torch_save_atomic

    payload = {"format": FORMAT, "meta": part.meta, "num_classes": part.num_classes,
               "sharp": part.images.sharp, "blurred": part.images.blurred,
               "labels": part.images.labels}
    if part.mean is not None:
        payload.update(mean=part.mean, std=part.std)
    torch_save_atomic(payload, path)


def load_split(path: str | Path) -> PreparedSplit:
    """Read what :func:`save_prepared` wrote."""
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        from critperiods.pipeline.files import said

        raise ValueError(f"{path}: cannot read prepared data ({said(err)}); regenerate it, "
                         f"with the run's own options: snakemake --cores all --forcerun {path}"
                         ) from err
    if not isinstance(p, dict) or p.get("format") != FORMAT:
        raise ValueError(f"{path}: not a critperiods prepared-data file of format {FORMAT!r}; "
                         f"regenerate it: snakemake --cores all --forcerun {path}")
    return PreparedSplit(Split(p["sharp"], p["blurred"], p["labels"]), p["num_classes"],
                         p["meta"], p.get("mean"), p.get("std"))


def load_prepared(train: str | Path, test: str | Path | None = None,
                  device: torch.device | str = "cpu") -> PreparedData:
    """The prepared training split (and test split, when given), onto ``device``."""
    return combine(load_split(train), None if test is None else load_split(test)).to(device)
