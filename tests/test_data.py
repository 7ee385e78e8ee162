"""Datasets from their on-disk formats, the blur deficit, prepared tensors."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
import torchvision

from critperiods import data as D


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def fake_idx_folder(folder, n_train=40, n_test=20, size=28):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        write_idx(folder / D.IDX_FILES[(split, "images")], rng.integers(0, 256, (n, size, size)))
        write_idx(folder / D.IDX_FILES[(split, "labels")], rng.integers(0, 10, n))


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(D.read_idx(tmp_path / "x.gz"), arr)


def test_read_idx_refuses_truncated(tmp_path):
    arr = np.zeros((5, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", arr)
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "y.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(tmp_path / "y.gz")


def test_fashion_mnist_prefers_dataset_root(tmp_path):
    fake_idx_folder(tmp_path)
    data = D.prepare("fashion_mnist", tmp_path, train_subset=30, test_subset=None, blur_size=4)
    assert data.train.sharp.shape == (30, 1, 28, 28) and data.train.sharp.dtype == torch.uint8
    assert data.test.sharp.shape == (20, 1, 28, 28)
    assert data.num_classes == 10
    assert data.mean.shape == (1,) and 0 < float(data.std) < 1


def test_torchvision_folder_layout_is_found(tmp_path):
    fake_idx_folder(tmp_path / "MNIST" / "raw")
    data = D.prepare("mnist", tmp_path, train_subset=None, test_subset=5, blur_size=7)
    assert len(data.train.labels) == 40 and len(data.test.labels) == 5


@pytest.mark.skipif(not D.SYSTEM_FASHION_MNIST.exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    raw = D.load_raw("fashion_mnist", tmp_path)  # empty root → falls back to the package
    assert raw["train"][0].shape == (60000, 1, 28, 28)
    assert raw["test"][0].shape == (10000, 1, 28, 28)
    assert set(np.unique(raw["train"][1])) == set(range(10))


def write_fake_cifar10(root, n_per_batch=6):
    """A few random images in torchvision's on-disk CIFAR-10 format (cifar-10-batches-py)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)
    return folder


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    folder = write_fake_cifar10(tmp_path)
    # the archive's md5 sums cannot match fake files; everything else is torchvision's real path
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    data = D.prepare("cifar10", tmp_path, train_subset=None, test_subset=None, blur_size=8)
    assert data.train.sharp.shape == (30, 3, 32, 32)
    assert data.test.sharp.shape == (6, 3, 32, 32)
    with open(folder / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)["data"][0].reshape(3, 32, 32)
    assert torch.equal(data.train.sharp[0], torch.from_numpy(first))  # NCHW, not NHWC
    assert data.mean.shape == (3,)


def test_unknown_dataset_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="dataset.name: unknown dataset 'svhn'"):
        D.load_raw("svhn", tmp_path)


def test_blur_removes_high_frequencies_and_keeps_the_mean():
    x = torch.zeros(1, 1, 8, 8)
    x[..., ::2, :] = 1.0  # stripes at the highest frequency
    y = D.blur(x, 4)
    assert y.shape == x.shape
    assert torch.allclose(y, torch.full_like(y, 0.5))
    assert D.blur(x, 8).equal(x)


def test_prepared_data_roundtrip(tmp_path):
    fake_idx_folder(tmp_path / "src")
    data = D.prepare("fashion_mnist", tmp_path / "src", None, None, 4)
    D.save_prepared(data, tmp_path / "prepared.pt")
    back = D.load_prepared(tmp_path / "prepared.pt")
    assert torch.equal(back.train.blurred, data.train.blurred)
    assert back.meta == data.meta
    (tmp_path / "prepared.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="prepared.pt: cannot read prepared data"):
        D.load_prepared(tmp_path / "prepared.pt")
