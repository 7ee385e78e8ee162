"""Shared fixtures: small synthetic data and the tiny training config."""

from __future__ import annotations

import pytest
import torch

from critperiods.train.data import PreparedData, Split, blur_uint8
from critperiods.train.training import TrainConfig


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
