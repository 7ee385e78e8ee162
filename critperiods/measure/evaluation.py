"""Losses and accuracies of every checkpoint of a trajectory piece.

For each checkpoint: sharp and blurred test loss/accuracy, and train
loss/accuracy on the data of the phase that checkpoint was last trained on
(a fixed subset of the training set, to keep evaluation cheap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from critperiods.train.data import PreparedData, fixed_subset

#: The per-checkpoint metrics (their descriptions: :data:`critperiods.variables.VARIABLES`,
#: given to them when the cube is assembled).
METRICS = ("test_loss", "test_accuracy", "blurred_test_loss", "blurred_test_accuracy",
           "train_loss", "train_accuracy")


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
    return fixed_subset(len(data.train.labels), size, "train_loss").to(data.train.labels.device)


def evaluate_piece(
    checkpoints: list[dict], model: nn.Module, data: PreparedData, train_samples: int | None,
    batch_size: int = 1000,
) -> xr.Dataset:
    """Evaluate every checkpoint (loaded into ``model``, an untrained model of their
    architecture); a Dataset with dim ``epoch`` and the :data:`METRICS`."""
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
    return xr.Dataset(
        {name: ("epoch", np.asarray(values, dtype=np.float64)) for name, values in rows.items()},
        coords={"epoch": np.asarray(epochs, dtype=np.int64)},
    )
