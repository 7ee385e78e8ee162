"""Losses and accuracies of every checkpoint of a trajectory piece, and of a whole cell.

For each checkpoint: sharp and blurred test loss/accuracy, and train
loss/accuracy on the data of the phase that checkpoint was last trained on
(a fixed subset of the training set, to keep evaluation cheap). The evaluate stage
does one (batch size, seed) cell per job: its trunk and every branch, laid out as runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from critperiods.train.data import PreparedData
from critperiods.train.models import build_model, to_channels_last
from critperiods.train.training import TrainConfig

#: name → (long_name, units) of every per-checkpoint metric.
METRICS = {
    "test_loss": ("cross-entropy on the sharp test set, in nats", "1"),
    "test_accuracy": ("accuracy on the sharp test set", "1"),
    "blurred_test_loss": ("cross-entropy on the blurred test set, in nats", "1"),
    "blurred_test_accuracy": ("accuracy on the blurred test set", "1"),
    "train_loss": ("cross-entropy on the training data of the checkpoint's phase, in nats", "1"),
    "train_accuracy": ("accuracy on the training data of the checkpoint's phase", "1"),
}
SUBSET_SEED = 1


def model_for(cfg: TrainConfig, data: PreparedData, device: torch.device | str) -> nn.Module:
    """An untrained model of the configured architecture, to load checkpoints into.

    Channels-last, like training (faster on both CPU and GPU; ``load_state_dict``
    keeps the layout).
    """
    model = build_model(cfg.model, cfg.width, data.in_channels, data.image_size,
                        data.num_classes, seed=0).to(device)
    return to_channels_last(model)


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module, data: PreparedData, images: torch.Tensor, labels: torch.Tensor,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on uint8 ``images``."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for i in range(0, len(labels), batch_size):
        x = data.normalize(images[i : i + batch_size])
        logits = model(x.contiguous(memory_format=torch.channels_last))
        y = labels[i : i + batch_size]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    return float(loss_sum) / len(labels), float(correct) / len(labels)


def train_subset(data: PreparedData, size: int | None) -> torch.Tensor:
    """Fixed indices of the training images used to measure train loss."""
    n = len(data.train.labels)
    if size is None or size >= n:
        return torch.arange(n, device=data.train.labels.device)
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=g)[:size].sort().values.to(data.train.labels.device)


def evaluate_piece(
    checkpoints: list[dict], cfg: TrainConfig, data: PreparedData, train_samples: int | None,
    batch_size: int = 1000, device: torch.device | str = "cpu",
) -> xr.Dataset:
    """Evaluate every checkpoint; a Dataset with dim ``epoch`` and the :data:`METRICS`."""
    model = model_for(cfg, data, device)
    idx = train_subset(data, train_samples)
    rows: dict[str, list[float]] = {name: [] for name in METRICS}
    epochs = []
    for c in sorted(checkpoints, key=lambda c: c["epoch"]):
        model.load_state_dict(c["model"])
        epochs.append(int(c["epoch"]))
        results = {
            "test": loss_and_accuracy(model, data, data.test.sharp, data.test.labels, batch_size),
            "blurred_test": loss_and_accuracy(
                model, data, data.test.blurred, data.test.labels, batch_size),
            "train": loss_and_accuracy(
                model, data, data.train.images(c["phase"])[idx], data.train.labels[idx],
                batch_size),
        }
        for prefix, (loss, acc) in results.items():
            rows[f"{prefix}_loss"].append(loss)
            rows[f"{prefix}_accuracy"].append(acc)
    ds = xr.Dataset(
        {name: ("epoch", np.asarray(values, dtype=np.float64)) for name, values in rows.items()},
        coords={"epoch": np.asarray(epochs, dtype=np.int64)},
    )
    for name, (long_name, units) in METRICS.items():
        ds[name].attrs.update(long_name=long_name, units=units)
    return ds


def evaluate_cell(
    piece_files: Iterable[str | Path], expected_hash: str, cfg: TrainConfig, data: PreparedData,
    grid: dict, train_samples: int | None, batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> xr.Dataset:
    """Evaluate every checkpoint of a cell's pieces (trunk segments and branch files) and lay
    the results out as its runs (dims ``batch_size, lr_schedule, switch_epoch, seed, epoch``)
    of the grid (``grid``: the config's ``grid:`` section).
    """
    from critperiods.pipeline.checkpoints import load_checkpoints
    from critperiods.pipeline.layout import parse_piece
    from critperiods.results.assemble import assemble_runs

    files = defaultdict(list)
    for f in piece_files:
        files[parse_piece(f)].append(f)
    pieces = {key: evaluate_piece(load_checkpoints(paths, expected_hash), cfg, data,
                                  train_samples, batch_size, device)
              for key, paths in files.items()}
    return assemble_runs(pieces, grid["lr_schedules"], grid["switch_epochs"])
