"""Channels-last layout for models and image batches, including the one-channel cases that
PyTorch's own ``memory_format`` conversion leaves in NCHW (grayscale images and the stem
convolution that reads them). Used by training, λ̂ and evaluation alike; a module of its own so
that code which only lays out tensors does not import the architectures."""

from __future__ import annotations

import torch
from torch import nn


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model.to(memory_format=torch.channels_last)``, including convolutions with ONE input
    channel (the stem on grayscale images).

    PyTorch cannot tell the two layouts of an ``(out, 1, k, k)`` weight apart (the channel
    dimension has size 1), keeps its NCHW strides, and so runs such a convolution NCHW: its
    output comes back NCHW through a oneDNN reorder, the gradient goes through another, and
    the pooling after it runs NCHW — together about a fifth of a ``small_cnn`` training step
    on a CPU. Giving the weight channels-last strides (the same storage, the same values)
    makes the output channels-last.
    """
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.weight.shape[1] == 1:
                w = module.weight
                kh, kw = w.shape[2:]
                w.set_(w.untyped_storage(), w.storage_offset(), w.shape, (kh * kw, 1, kw, 1))
    return model


def channels_last_images(x: torch.Tensor) -> torch.Tensor:
    """A copy of a batch of images ``(N, C, H, W)`` in channels-last layout (other tensors
    are returned as they are).

    Made with explicit strides because ``x.contiguous(memory_format=torch.channels_last)``
    is a no-op on a one-channel batch (both layouts look alike), and a convolution whose
    input and weight both have NCHW strides runs NCHW, with the slow NCHW max-pool after it
    (the default ``small_cnn`` then takes ~3x longer per forward pass on a CPU).
    """
    if x.dim() != 4:
        return x
    n, c, h, w = x.shape
    out = torch.empty_strided(x.shape, (h * w * c, 1, w * c, c), dtype=x.dtype, device=x.device)
    return out.copy_(x)


__all__ = ["channels_last_images", "to_channels_last"]
