"""Several copies of one network run as one, with the copies folded into the BATCH dimension.

:class:`critperiods.train.grouped.GroupedModel` lays ``C`` copies side by side in the channels,
so that a convolution becomes one grouped convolution: the right layout for a CPU. On a GPU,
cuDNN's grouped convolutions are slow, and inside a CUDA graph (``critperiods.train.cuda_graphs``)
extra kernel launches cost next to nothing, so :class:`FoldedModel` uses the other layout:
an image activation of ``C`` copies with ``B`` samples each is one ``(C*B, k, H, W)``
tensor (copy-major, channels-last), and

* ``Conv2d`` and ``BatchNorm2d`` run once per copy on its contiguous slice of the batch,
  as plain (ungrouped) kernels, and the results are concatenated;
* ReLU, pooling and additions run once on the whole tensor;
* ``Flatten`` gives ``(C, B, features)`` and ``Linear`` is a batched matmul, as grouped.

Every copy computes its own function, as in the grouped layout; the graph tracing, the
checks and the fallback to ``vmap`` are ``GroupedModel``'s.
:func:`critperiods.train.copies.copies_layout` says which layout a device, use and model get
(measured: ``bench/bench_gpu.py``): despite the slow grouped kernels, side by side in the
channels won for stacked training on an H200.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from critperiods.train.grouped import PER_CHANNEL, Activation, GroupedModel, Tensors
from critperiods.train.memory_format import channels_last_images


class FoldedModel(GroupedModel):
    """``C`` copies of ``model``'s architecture with the copies folded into the batch.

    Same call as :class:`GroupedModel`: ``params`` and ``buffers`` stacked along a first
    dimension of size ``C``, inputs ``(C, B, *sample_shape)``, outputs ``(C, B, ...)``;
    BatchNorm in training mode updates each copy's running statistics in place.
    """

    def _enter(self, x: Tensor) -> Activation:
        return _fold(x)

    def _leave(self, act: Activation, copies: int) -> Tensor:
        return _unfold(act, copies)

    def _run(self, node: fx.Node, args: tuple, kwargs: dict, params: Tensors,
             buffers: Tensors, copies: int) -> Activation:
        if node.op == "call_function" and node.target is torch.flatten:
            return _flatten(args[0], copies)
        if node.op != "call_module":
            return super()._run(node, args, kwargs, params, buffers, copies)
        module, name = self.modules[node.target], str(node.target)  # type: ignore[index]
        (act,) = args
        if isinstance(module, nn.Conv2d):
            return _conv(module, act, params, name, copies)
        if isinstance(module, nn.BatchNorm2d):
            return _batch_norm(module, act, params, buffers, name, copies)
        if isinstance(module, nn.Flatten):
            return _flatten(act, copies)
        if isinstance(module, PER_CHANNEL):
            return Activation(module(act.t), act.image)
        return super()._run(node, args, kwargs, params, buffers, copies)


def _fold(x: Tensor) -> Activation:
    """``(C, B, k, H, W)`` images → ``(C*B, k, H, W)`` channels-last; features stay."""
    if x.dim() != 5:
        return Activation(x, image=False)
    return Activation(channels_last_images(x.reshape(-1, *x.shape[2:])), image=True)


def _unfold(act: Activation, copies: int) -> Tensor:
    """Back to ``(C, B, ...)``."""
    return act.t.unflatten(0, (copies, -1)) if act.image else act.t


def _slices(x: Tensor, copies: int) -> list[Tensor]:
    """Each copy's part of a folded batch (views)."""
    return list(x.chunk(copies))


def _conv(module: nn.Conv2d, act: Activation, params: Tensors, name: str,
          copies: int) -> Activation:
    """One plain convolution per copy."""
    weight = params[f"{name}.weight"]
    bias = params[f"{name}.bias"] if module.bias is not None else None
    outs = [F.conv2d(part, weight[c], None if bias is None else bias[c], module.stride,
                     module.padding, module.dilation, module.groups)
            for c, part in enumerate(_slices(act.t, copies))]
    return Activation(torch.cat(outs), image=True)


def _batch_norm(module: nn.BatchNorm2d, act: Activation, params: Tensors, buffers: Tensors,
                name: str, copies: int) -> Activation:
    """BatchNorm per copy: its own batch statistics (training) or running statistics."""
    running = module.track_running_stats and f"{name}.running_mean" in buffers
    momentum = module.momentum
    if module.training and running:
        tracked = buffers[f"{name}.num_batches_tracked"]
        tracked.add_(1)
        if momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            momentum = 1.0 / float(tracked.reshape(-1)[0])
    outs = []
    for c, part in enumerate(_slices(act.t, copies)):
        mean = buffers[f"{name}.running_mean"][c] if running else None
        var = buffers[f"{name}.running_var"][c] if running else None
        weight = params[f"{name}.weight"][c] if module.affine else None
        bias = params[f"{name}.bias"][c] if module.affine else None
        outs.append(F.batch_norm(part, mean, var, weight, bias, module.training or not running,
                                 momentum or 0.0, module.eps))
    return Activation(torch.cat(outs), image=True)


def _flatten(act: Activation, copies: int) -> Activation:
    """Each sample's features in NCHW order: ``(C, B, k*H*W)``."""
    if not act.image:
        return Activation(act.t.flatten(2), image=False)
    return Activation(act.t.reshape(copies, act.t.shape[0] // copies, -1), image=False)


__all__ = ["FoldedModel"]
