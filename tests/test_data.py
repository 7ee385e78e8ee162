"""Datasets from their on-disk formats, the blur deficit, prepared tensors."""

from __future__ import annotations

import gzip
import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from critperiods.train import data as D
from tests.conftest import write_idx


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


def test_mnist_is_read_from_its_own_copy_never_from_fashion_mnists(tmp_path, monkeypatch):
    """The two share the IDX files' names and format, so only where they are looked for tells
    them apart: MNIST is found in dataset.root, never in the Debian Fashion-MNIST package,
    and a prepared MNIST split is not a Fashion-MNIST one even from the same bytes."""
    from critperiods.train import dataset_files
    from tests.conftest import write_fake_fashion_mnist, write_fake_mnist

    system = write_fake_fashion_mnist(tmp_path / "debian")
    monkeypatch.setattr(dataset_files, "SYSTEM_FASHION_MNIST", system)
    empty = tmp_path / "empty"
    assert dataset_files.raw_files("fashion_mnist", empty, "train")[0].parent == system
    assert dataset_files.raw_files("mnist", empty, "train") is None  # it would download
    assert dataset_files.raw_identity("mnist", empty, "train") == \
        dataset_files.PUBLISHED_MD5["mnist"]["train"]
    mnist = write_fake_mnist(tmp_path / "mnist")
    identity = dataset_files.raw_identity("mnist", mnist, "train")
    assert identity != dataset_files.raw_identity("fashion_mnist", system, "train")
    assert identity.keys() == dataset_files.PUBLISHED_MD5["mnist"]["train"].keys()
    digits = D.prepare_split("mnist", mnist, "train", 50, blur_size=4)
    assert digits.images.sharp.shape == (50, 1, 28, 28) and digits.num_classes == 10
    same_bytes = D.prepare_split("fashion_mnist", mnist, "train", 50, blur_size=4)
    assert torch.equal(digits.images.sharp, same_bytes.images.sharp)
    assert digits.meta["fingerprint"] != same_bytes.meta["fingerprint"]


def test_a_folder_of_the_other_datasets_published_files_is_refused(tmp_path, monkeypatch):
    """Fashion-MNIST's published files in the folder a config reads MNIST from (the same file
    names): one config error naming both datasets and the keys, before anything runs; a copy
    of MNIST's own, and Fashion-MNIST read as itself, pass."""
    from critperiods.pipeline.plan import ConfigError, check_dataset_files
    from critperiods.train import dataset_files
    from tests.conftest import write_fake_fashion_mnist, write_fake_mnist

    fashion = write_fake_fashion_mnist(tmp_path / "fashion")
    published = {split: dataset_files.raw_identity("fashion_mnist", fashion, split)
                 for split in dataset_files.SPLITS}  # these files as if they were published
    monkeypatch.setitem(dataset_files.PUBLISHED_MD5, "fashion_mnist", published)
    with pytest.raises(ConfigError) as err:
        check_dataset_files({"name": "mnist", "root": str(fashion)})
    said = str(err.value)
    assert said.startswith(f"dataset.name: mnist, but {fashion} holds fashion_mnist's files")
    assert "set dataset.root to the folder of mnist's files, or dataset.name: fashion_mnist" in said
    check_dataset_files({"name": "fashion_mnist", "root": str(fashion)})
    check_dataset_files({"name": "mnist", "root": str(write_fake_mnist(tmp_path / "mnist"))})
    monkeypatch.setattr("critperiods.pipeline.plan.SYSTEM_FASHION_MNIST", fashion)
    with pytest.raises(ConfigError, match=f"dataset.name: mnist, but {fashion} is Debian's "
                                          "Fashion-MNIST package; set dataset.root"):
        check_dataset_files({"name": "mnist", "root": str(fashion)})


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


#: What the five fixed-subset helpers that ``fixed_subset`` replaced drew (seeds 0–4): the
#: indices of a 6-of-50 subset, and a digest of a realistic one. Results depend on them.
OLD_SUBSETS = {
    "dataset": ([6, 7, 17, 29, 39, 44], (60000, 10000, "a47872e4dbb462d4")),
    "train_loss": ([4, 14, 25, 31, 33, 45], (60000, 1000, "f3db3c1314071a45")),
    "probe": ([25, 31, 32, 37, 44, 48], (10000, 1000, "33567f4f9b8da026")),
    "bn_reset": ([3, 4, 27, 32, 35, 36], (60000, 4000, "ffeb52e22b8054ea")),
    "llc": ([5, 9, 21, 30, 35, 46], None),
}


@pytest.mark.parametrize("purpose", list(OLD_SUBSETS))
def test_each_fixed_subset_purpose_draws_what_its_old_helper_drew(purpose):
    import hashlib

    small, big = OLD_SUBSETS[purpose]
    assert D.fixed_subset(50, 6, purpose).tolist() == small
    assert D.fixed_subset(50, None, purpose).tolist() == list(range(50))
    assert D.fixed_subset(50, 80, purpose).tolist() == list(range(50))
    if big is not None:
        n, size, digest = big
        idx = D.fixed_subset(n, size, purpose)
        assert hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16] == digest


def test_an_unknown_subset_purpose_is_refused():
    with pytest.raises(ValueError, match="probes"):
        D.fixed_subset(50, 6, "probes")


def test_blur_removes_high_frequencies_and_keeps_the_mean():
    x = torch.zeros(1, 1, 8, 8)
    x[..., ::2, :] = 1.0  # stripes at the highest frequency
    y = D.blur(x, 4)
    assert y.shape == x.shape
    assert torch.allclose(y, torch.full_like(y, 0.5))
    assert D.blur(x, 8).equal(x)


def test_prepared_splits_roundtrip(tmp_path):
    fake_idx_folder(tmp_path / "src")
    train = D.prepare_split("fashion_mnist", tmp_path / "src", "train", None, 4)
    test = D.prepare_split("fashion_mnist", tmp_path / "src", "test", 7, 4)
    D.save_prepared(train, tmp_path / "train.pt")
    D.save_prepared(test, tmp_path / "test.pt")
    back = D.load_prepared(tmp_path / "train.pt", tmp_path / "test.pt")
    assert torch.equal(back.train.blurred, train.images.blurred)
    assert torch.equal(back.test.sharp, test.images.sharp) and len(back.test.labels) == 7
    assert back.fingerprints == {"train": train.meta["fingerprint"],
                                 "test": test.meta["fingerprint"]}
    alone = D.load_prepared(tmp_path / "train.pt")  # training reads the training split only
    assert alone.test is None and alone.fingerprints == {"train": train.meta["fingerprint"]}
    assert torch.equal(alone.mean, back.mean)
    (tmp_path / "test.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test.pt: cannot read prepared data"):
        D.load_prepared(tmp_path / "train.pt", tmp_path / "test.pt")


def test_prepare_equals_the_two_splits_prepared_alone(tmp_path):
    fake_idx_folder(tmp_path)
    both = D.prepare("fashion_mnist", tmp_path, 30, 10, 4)
    train = D.prepare_split("fashion_mnist", tmp_path, "train", 30, 4)
    assert torch.equal(both.train.blurred, train.images.blurred)
    assert torch.equal(both.mean, train.mean) and both.num_classes == train.num_classes == 10


def test_data_are_identified_by_content_not_location(tmp_path):
    """The same files in another folder: the same identity and fingerprints; another subset
    or blur: another fingerprint; a changed file: another identity."""
    fake_idx_folder(tmp_path / "a")
    fake_idx_folder(tmp_path / "b" / "FashionMNIST" / "raw")  # torchvision's layout
    a = D.raw_identity("fashion_mnist", tmp_path / "a", "train")
    b = D.raw_identity("fashion_mnist", tmp_path / "b", "train")
    assert a == b and set(a) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    assert D.raw_identity("fashion_mnist", tmp_path / "a", "test") != a
    fingerprint = D.prepare_split("fashion_mnist", tmp_path / "a", "train", 30, 4).meta[
        "fingerprint"]
    assert D.prepare_split("fashion_mnist", tmp_path / "b", "train", 30, 4).meta[
        "fingerprint"] == fingerprint
    assert D.prepare_split("fashion_mnist", tmp_path / "a", "train", 29, 4).meta[
        "fingerprint"] != fingerprint
    assert D.prepare_split("fashion_mnist", tmp_path / "a", "train", 30, 7).meta[
        "fingerprint"] != fingerprint
    fake_idx_folder(tmp_path / "a", n_train=41)
    assert D.raw_identity("fashion_mnist", tmp_path / "a", "train") != a


def test_data_still_to_download_are_identified_by_the_published_sums(tmp_path, monkeypatch):
    """torchvision's download checks these sums, so the identity before and after a download
    is the same; they are torchvision's own constants."""
    from torchvision.datasets import CIFAR10, MNIST, FashionMNIST

    from critperiods.train import dataset_files

    monkeypatch.setattr(dataset_files, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    for name, cls in (("fashion_mnist", FashionMNIST), ("mnist", MNIST)):
        published = dict(cls.resources)
        for split in D.SPLITS:
            identity = D.raw_identity(name, tmp_path, split)
            assert identity == {f: published[f] for f in identity} and len(identity) == 2
    assert D.raw_identity("cifar10", tmp_path, "train") == dict(CIFAR10.train_list)
    assert D.raw_identity("cifar10", tmp_path, "test") == dict(CIFAR10.test_list)
    assert (CIFAR10.filename, CIFAR10.tgz_md5) == dataset_files.CIFAR10_ARCHIVE
    assert CIFAR10.url == dataset_files.CIFAR10_URL
    assert CIFAR10.meta["filename"] == dataset_files.CIFAR10_META


def test_files_unlike_the_planned_ones_are_refused(tmp_path):
    fake_idx_folder(tmp_path)
    planned = D.raw_identity("fashion_mnist", tmp_path, "train")
    fake_idx_folder(tmp_path, n_train=41)
    with pytest.raises(ValueError, match="dataset.root: the train files read from .* are not "
                                         "those the workflow planned with"):
        D.prepare_split("fashion_mnist", tmp_path, "train", None, 4, expected_raw=planned)


def offline(monkeypatch, tmp_path):
    """No network: every URL torchvision opens fails as urllib does without DNS; nor is
    Debian's Fashion-MNIST package there."""
    import urllib.error
    import urllib.request

    from critperiods.train import dataset_files

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(dataset_files, "SYSTEM_FASHION_MNIST", tmp_path / "no-debian-package")


@pytest.mark.parametrize(("name", "a_missing_file", "what_to_do"), [
    ("fashion_mnist", "train-images-idx3-ubyte.gz", "`make dataset`"),
    ("mnist", "t10k-labels-idx1-ubyte.gz", "copy the four IDX files into dataset.root"),
    ("cifar10", "data_batch_1", "place the extracted cifar-10-batches-py folder"),
])
def test_a_failed_download_names_the_dataset_the_folder_the_files_and_the_reason(
        tmp_path, monkeypatch, name, a_missing_file, what_to_do):
    """Offline with an empty dataset.root: one line naming the key, the folder, a missing
    file, the network error and what to do; torchvision's own error chained beneath it."""
    from critperiods.pipeline.stages.prepare_data import prepare_data

    offline(monkeypatch, tmp_path)
    root = tmp_path / "data"
    identity = {"name": name, "split": "train", "subset": None, "blur_size": 4,
                "raw": D.raw_identity(name, root, "train")}
    with pytest.raises(D.DatasetUnavailable) as caught:
        prepare_data(str(tmp_path / "train.pt"), identity=identity, root=str(root), code="x")
    message = str(caught.value)
    assert message.startswith(f"dataset.name: {name}: the raw files are not in dataset.root "
                              f"({root})")
    assert "\n" not in message
    assert a_missing_file in message
    assert "urlopen error [Errno -3] Temporary failure in name resolution" in message
    assert what_to_do in message
    assert caught.value.__cause__ is not None  # the download's own error, for debugging
    assert not (tmp_path / "train.pt").exists()


def test_a_download_with_the_wrong_md5_says_which_file_and_both_sums(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    from critperiods.train import dataset_files

    def serve_garbage(url, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"not the file")

    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", serve_garbage)
    with pytest.raises(D.DatasetUnavailable) as caught:
        D.load_raw("mnist", tmp_path, ("train",))
    message = str(caught.value)
    wrong = hashlib.md5(b"not the file").hexdigest()
    expected = dataset_files.PUBLISHED_MD5["mnist"]["train"]["train-images-idx3-ubyte.gz"]
    assert f"dataset.root ({tmp_path})" in message
    assert "File not found or corrupted" in message  # torchvision's reason
    assert (f"{tmp_path / 'MNIST' / 'raw' / 'train-images-idx3-ubyte.gz'} (MD5 {wrong}, "
            f"expected {expected})") in message
    assert "train-labels-idx1-ubyte.gz" in message  # still missing


def test_the_stage_ends_a_failed_download_with_one_clear_line(tmp_path, monkeypatch, capsys):
    """The job's log (stderr) starts and ends with the message (the last line is what
    ``sys.exit`` prints, exit status 1); the traceback of the chained network error lies
    between."""
    from critperiods.pipeline.stages.prepare_data import exit_on_unavailable

    offline(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as caught, exit_on_unavailable():
        D.load_raw("cifar10", tmp_path)
    message = caught.value.code
    assert isinstance(message, str) and message.startswith("critperiods: dataset.name: cifar10:")
    err = capsys.readouterr().err
    assert err.splitlines()[0] == message
    assert "urllib.error.URLError: <urlopen error" in err  # the chained cause's traceback


def test_the_two_splits_download_one_after_the_other(tmp_path, monkeypatch):
    """prepare_data's train and test jobs run at once: on a first run both download into
    dataset.root, and one used to read the other's half-extracted files. The second now
    waits for the first, then finds the files."""
    import threading
    import time

    inside, overlaps, downloads = [], [], []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            there = (tmp_path / "done").exists()
            if download and not there:
                overlaps.append(bool(inside))
                inside.append(1)
                time.sleep(0.3)  # the archive, half extracted
                (tmp_path / "done").write_text("x")
                downloads.append(train)
                inside.pop()
            elif not there:
                raise RuntimeError("Dataset not found or corrupted.")
            self.data = np.zeros((2, 32, 32, 3), dtype=np.uint8)
            self.targets = [0, 1]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    out = {}
    jobs = [threading.Thread(target=lambda s=s: out.update(D.load_raw("cifar10", tmp_path, (s,))))
            for s in ("train", "test")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert sorted(out) == ["test", "train"] and overlaps == [False] and len(downloads) == 1


def test_cifar10_files_in_dataset_root_itself_get_a_hint(tmp_path):
    """dataset.root set to cifar-10-batches-py itself (or a folder holding its files flat):
    the message says to point it at the parent, not only that files are missing."""
    from critperiods.train.dataset_files import download_failed

    folder = write_fake_cifar10(tmp_path)
    message = str(download_failed("cifar10", folder, OSError("no network")))
    assert "dataset.root names the folder that holds the files" in message
    # at the right root, files of other MD5 sums (here: fake) were never said to be downloaded
    message = str(download_failed("cifar10", tmp_path, OSError("no network")))
    assert "present but not the published files" in message
    assert "downloaded but corrupted" not in message and "names the folder" not in message


def test_a_folder_where_no_lock_can_be_taken_still_gets_the_download_error(
        tmp_path, monkeypatch):
    """A read-only dataset.root (a shared copy) lacking the files: the lock cannot be
    created, and the user gets the one-line DatasetUnavailable with its hints, not a
    PermissionError about a lock file."""
    import os

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".critperiods-download.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    class Offline:
        def __init__(self, root, train, download):
            raise (OSError("no network") if download else RuntimeError("not found"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with monkeypatch.context() as patched:
        patched.setattr(D.os, "open", read_only)
        with pytest.raises(D.DatasetUnavailable, match="dataset.name: cifar10: the raw files"):
            D.load_raw("cifar10", tmp_path, ("train",))

    def no_locks(fd, operation):  # NFS without lockd, Lustre mounted noflock
        raise OSError(37, "No locks available")

    monkeypatch.setattr(D.fcntl, "flock", no_locks)
    with pytest.raises(D.DatasetUnavailable, match="dataset.name: cifar10: the raw files"):
        D.load_raw("cifar10", tmp_path, ("train",))
