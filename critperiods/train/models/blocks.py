"""Building blocks that an architecture uses and that weight matching
(:mod:`critperiods.measure.weight_matching`) has a permutation rule for. A module of its own so
that the divergence stage, which needs the rule, does not import any architecture."""

from __future__ import annotations

import torch
from torch import nn


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv-BN-ReLU-conv plus a shortcut.

    Where the block changes the resolution or the width, the shortcut is a 1×1 convolution
    of the input subsampled by ``stride`` (``subsample``, a 1×1 average pool: every
    ``stride``-th pixel, exactly). That is the usual strided 1×1 convolution, computed
    differently: PyTorch 2.14's oneDNN gets the weight gradient of a 1×1 convolution with
    stride 2 on a channels-last CPU batch wrong where it runs its AVX2 kernels (an AMD
    EPYC, many laptops: relative error 0.1–0.9, and corrupted memory in a longer run), and
    the CPU path trains channels-last. ``tests/test_models.py`` holds every architecture to
    no strided 1×1 convolution, and checks this block's gradients against float64.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        projects = stride != 1 or cin != cout
        self.subsample = nn.AvgPool2d(1, stride) if stride != 1 else None
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if projects else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut(self.subsample(out) if self.subsample is not None else out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip
