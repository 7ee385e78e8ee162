"""Shared fixtures: small synthetic data and the tiny training config."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from critperiods.train.data import PreparedData, Split, blur_uint8
from critperiods.train.training import TrainConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"

#: ``{session fixture: xdist group}``. Under pytest-xdist (``make test``: ``-n auto --dist
#: loadgroup``) the tests that use one of the finished tiny runs (below) go to one worker, which
#: makes them once, and so do those of the live SLURM (tests/cluster/conftest.py: one cluster,
#: one apt-get at a time).
SHARED_FIXTURES = {"tiny_run": "finished_runs", "toy_tiny_run": "finished_runs",
                   "slurm_cluster": "slurm"}


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, torch gets its share of the cores, not all of them: the
    workers' thread pools would otherwise fight over every core."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that use one of :data:`SHARED_FIXTURES` share its ``xdist_group`` (ignored
    without ``--dist loadgroup``)."""
    for item in items:
        used = [group for name, group in SHARED_FIXTURES.items()
                if name in getattr(item, "fixturenames", ())]
        if used:
            item.add_marker(pytest.mark.xdist_group(used[0]))


def bench_module(name: str) -> ModuleType:
    """The script ``bench/<name>.py`` as a module (benchmarks are scripts, not a package),
    registered in ``sys.modules`` so that its dataclasses can find their module."""
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:  # as ``python bench/<name>.py`` has it: its helpers import
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_data(n_train: int = 192, n_test: int = 64, channels: int = 1, size: int = 16,
                   blur_size: int = 4, seed: int = 0) -> PreparedData:
    """Class-dependent random images: learnable, tiny, and reproducible."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, channels, size, size, generator=g)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        base = templates[labels]
        noise = torch.rand(n, channels, size, size, generator=g)
        images = ((0.7 * base + 0.3 * noise) * 255).round().to(torch.uint8)
        return Split(images, blur_uint8(images, blur_size), labels)

    train = split(n_train)
    scaled = train.sharp.float() / 255
    return PreparedData(train, split(n_test), scaled.mean((0, 2, 3)), scaled.std((0, 2, 3)), 10,
                        {"dataset": "synthetic"})


FAKE_FASHION_MNIST_SIZES = {"train": 10_000, "test": 2_000}  # above every test's subset


def write_idx(path: Path, array: np.ndarray) -> None:
    """One gzipped IDX file of unsigned bytes, the same bytes for the same array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def write_fake_fashion_mnist(folder: Path) -> Path:
    """A learnable stand-in for Fashion-MNIST's four IDX files in ``folder``: 28×28 images of
    10 classes, each a class template plus noise, the same bytes every time."""
    return _write_fake_idx_dataset(folder, seed=0)


def write_fake_mnist(folder: Path) -> Path:
    """The same stand-in for MNIST's four IDX files (the same names and format as
    Fashion-MNIST's), drawn from other templates, so its files' MD5 sums, the data's
    identity, are not the fake Fashion-MNIST's: a folder to point ``dataset.root`` at, as
    at a local copy of the real MNIST."""
    return _write_fake_idx_dataset(folder, seed=1)


def _write_fake_idx_dataset(folder: Path, seed: int) -> Path:
    from critperiods.train.dataset_files import IDX_FILES

    rng = np.random.default_rng(seed)
    templates = rng.random((10, 28, 28))
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in FAKE_FASHION_MNIST_SIZES.items():
        labels = rng.integers(0, 10, n)
        images = np.round((0.6 * templates[labels] + 0.4 * rng.random((n, 28, 28))) * 255)
        write_idx(folder / IDX_FILES[(split, "images")], images)
        write_idx(folder / IDX_FILES[(split, "labels")], labels)
    return folder


_fake_folder: list[Path] = []  # made once per session, where it is needed


def fake_fashion_mnist_if_needed() -> Path | None:
    """None where Debian's ``dataset-fashion-mnist`` is installed (the workflows the tests
    run find it), else a folder of fake files (:func:`write_fake_fashion_mnist`, made once
    per session), so that no test downloads the real data: no test needs the network."""
    from critperiods.train.dataset_files import SYSTEM_FASHION_MNIST, find_idx_folder

    if find_idx_folder([SYSTEM_FASHION_MNIST]) is not None:
        return None
    if not _fake_folder:
        _fake_folder.append(write_fake_fashion_mnist(
            Path(tempfile.mkdtemp(prefix="critperiods-fake-fashion-mnist-"))))
    return _fake_folder[0]


def provide_fashion_mnist(root: Path) -> None:
    """Copy the fake files into ``root`` (a test's own folder: never the repository's
    ``data/``, where a real run would read them) where :func:`fake_fashion_mnist_if_needed`
    makes them."""
    from critperiods.train.dataset_files import IDX_FILES, find_idx_folder

    fake = fake_fashion_mnist_if_needed()
    if fake is None or find_idx_folder([root]) is not None:
        return
    root.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES.values():
        shutil.copyfile(fake / name, root / name)


@pytest.fixture(scope="session", autouse=True)
def native_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compiled kernels (``critperiods.train.native``) go to a temporary folder, also in the
    workflow tests' subprocesses, never to the user's cache."""
    import os

    os.environ["CRITPERIODS_CACHE_DIR"] = str(tmp_path_factory.mktemp("native-cache"))


@pytest.fixture(scope="session")
def data() -> PreparedData:
    return synthetic_data()


@pytest.fixture
def cfg() -> TrainConfig:
    return TrainConfig(model="small_cnn", width=4, blur_size=4, lr=0.05, momentum=0.9,
                       weight_decay=5e-4, lr_decay=0.9, augmentation=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished run of the real Snakefile on tests/configs/tiny.yaml (every stage for
    real), made once per session; tests only read it or dry-run against it."""
    from tests.test_workflow import snakemake

    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def toy_tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished run of the toy_landscapes study on tests/configs/toy_tiny.yaml, made once
    per session; tests only read it or dry-run against it."""
    from tests.test_toy_workflow import snakemake

    workdir = tmp_path_factory.mktemp("toy")
    snakemake(workdir, "--cores", "2")
    return workdir
