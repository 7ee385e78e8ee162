"""Datasets, the blur deficit, and the prepared tensors every stage trains on.

``prepare`` reads a dataset once and caches sharp and blurred train/test images
as uint8 tensors (plus labels and the normalisation statistics of the sharp
training images) in one file. Training keeps these tensors resident on its
device and builds batches by indexing, never through a per-sample DataLoader.

The blur deficit follows Achille et al. (2019): downsample to
``blur_size × blur_size`` by area averaging and upsample back bilinearly.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DATASETS = ("fashion_mnist", "mnist", "cifar10")
#: Debian's ``dataset-fashion-mnist`` package puts the four IDX files here.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
#: Seed of the fixed training subset; independent of run seeds so all runs share data.
SUBSET_SEED = 0
FORMAT = "critperiods-data/1"


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
    """Everything training and evaluation need, as produced by :func:`prepare`."""

    train: Split
    test: Split
    mean: torch.Tensor  # [C], of sharp training images scaled to [0, 1]
    std: torch.Tensor  # [C]
    num_classes: int
    meta: dict

    @property
    def in_channels(self) -> int:
        return self.train.sharp.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.sharp.shape[-1]

    def to(self, device: torch.device | str) -> PreparedData:
        return PreparedData(
            self.train.to(device), self.test.to(device),
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


def _find_idx_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if all((folder / name).exists() for name in IDX_FILES.values()):
            return folder
    return None


def _load_idx_dataset(name: str, root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(Fashion-)MNIST from IDX files: ``root``, torchvision's folder, the Debian package.

    Downloads through torchvision only when no local copy exists.
    """
    tv_folder = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}[name]
    candidates = [root, root / tv_folder / "raw"]
    if name == "fashion_mnist":
        candidates.append(SYSTEM_FASHION_MNIST)
    folder = _find_idx_folder(candidates)
    if folder is None:
        import torchvision

        log.info("%s not found in %s; downloading with torchvision", name, candidates)
        cls = {"fashion_mnist": torchvision.datasets.FashionMNIST,
               "mnist": torchvision.datasets.MNIST}[name]
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        folder = root / tv_folder / "raw"
    log.info("reading %s from %s", name, folder)
    return {
        split: (
            read_idx(folder / IDX_FILES[(split, "images")])[:, None],
            read_idx(folder / IDX_FILES[(split, "labels")]).astype(np.int64),
        )
        for split in ("train", "test")
    }


def _load_cifar10(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 through torchvision (downloaded into ``root`` if absent)."""
    import torchvision

    out = {}
    for split in ("train", "test"):
        train = split == "train"
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        except RuntimeError:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
        images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # NHWC → NCHW
        out[split] = (images, np.asarray(ds.targets, dtype=np.int64))
    return out


def load_raw(name: str, root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{"train": (images uint8 [N,C,H,W], labels), "test": (...)}``."""
    if name not in DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of {DATASETS}")
    root = Path(root)
    if name == "cifar10":
        return _load_cifar10(root)
    return _load_idx_dataset(name, root)


# --------------------------------------------------------------------------- prepare


def _subset(n: int, size: int | None) -> torch.Tensor:
    """A fixed random subset of ``size`` indices (all of them when ``size`` is None)."""
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=g)[:size].sort().values


def _make_split(images: np.ndarray, labels: np.ndarray, size: int | None, blur_size: int) -> Split:
    idx = _subset(len(images), size)
    sharp = torch.from_numpy(images)[idx].contiguous()
    return Split(sharp, blur_uint8(sharp, blur_size), torch.from_numpy(labels)[idx].contiguous())


def prepare(
    name: str, root: str | Path, train_subset: int | None, test_subset: int | None,
    blur_size: int,
) -> PreparedData:
    """Load ``name`` and build the sharp/blurred tensors and normalisation statistics."""
    raw = load_raw(name, root)
    train = _make_split(*raw["train"], train_subset, blur_size)
    test = _make_split(*raw["test"], test_subset, blur_size)
    scaled = train.sharp.float().div(255.0)
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3))
    meta = {"dataset": name, "train_subset": train_subset, "test_subset": test_subset,
            "blur_size": blur_size}
    num_classes = int(max(raw["train"][1].max(), raw["test"][1].max())) + 1
    return PreparedData(train, test, mean, std, num_classes, meta)


def save_prepared(data: PreparedData, path: str | Path) -> None:
    """Write prepared tensors atomically (one file, loadable with ``weights_only``)."""
    from critperiods.files import torch_save_atomic

    payload = {
        "format": FORMAT, "meta": data.meta, "num_classes": data.num_classes,
        "mean": data.mean, "std": data.std,
        **{f"{s}_{k}": getattr(getattr(data, s), k)
           for s in ("train", "test") for k in ("sharp", "blurred", "labels")},
    }
    torch_save_atomic(payload, path)


def load_prepared(path: str | Path, device: torch.device | str = "cpu") -> PreparedData:
    """Load what :func:`save_prepared` wrote, onto ``device``."""
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: cannot read prepared data ({err}); delete it and rerun") from err
    if not isinstance(p, dict) or p.get("format") != FORMAT:
        raise ValueError(f"{path}: not a critperiods prepared-data file")
    split = {s: Split(p[f"{s}_sharp"], p[f"{s}_blurred"], p[f"{s}_labels"])
             for s in ("train", "test")}
    data = PreparedData(split["train"], split["test"], p["mean"], p["std"],
                        p["num_classes"], p["meta"])
    return data.to(device)
