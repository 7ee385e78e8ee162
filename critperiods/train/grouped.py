"""Several copies of one network, each with its own weights and inputs, run as ONE network.

SGLD chains (``critperiods.measure.llc``) and stacked seeds (``critperiods.train.stacked``) evaluate
``C`` copies of the same architecture at once.  ``vmap(functional_call)`` does that for any
model, but on a CPU it is slow for small CNNs: each convolution becomes a grouped
convolution on an NCHW tensor whose copy dimension sits inside the batch, so the next
max-pool copies it out, and every convolution has only 8-16 channels per copy, too few
for the vector units.

:class:`GroupedModel` lays the copies side by side in the CHANNEL dimension instead, in
channels-last memory format: an image activation of ``C`` copies with ``k`` channels each
is one ``(batch, C*k, H, W)`` tensor, copy-major in the channels.  Then

* ``Conv2d`` is one grouped convolution with ``C * groups`` groups;
* ``BatchNorm2d``, ``ReLU`` and pooling act per channel, so they run unchanged (BatchNorm
  on ``C*k`` channels keeps per-copy statistics; running buffers are updated in place);
* ``Flatten`` turns images into ``(C, batch, features)`` and ``Linear`` is a batched matmul.

Every copy computes exactly its own function (copies never mix); only the summation order
inside the wide kernels differs from separate runs, so results agree to float round-off.
On the 2-core CPU of the benchmarks, 4 copies of the default ``small_cnn`` run forward +
backward about 2.4x faster than 4 separate passes (``bench/``).

The model is traced once with ``torch.fx``; a model with any other layer, or one whose
``forward`` reads parameters directly (e.g. a toy potential), raises :class:`NotGroupable`
at construction, and a layout no rule covers (e.g. a linear layer on an image, dropout in
training mode) makes :meth:`GroupedModel.supports` false before anything runs;
:func:`critperiods.train.copies.copies_forward` then falls back to ``vmap``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules import module as module_hooks

from critperiods.train.native import max_pool2

Tensors = dict[str, Tensor]
CopiesForward = Callable[[Tensors, Tensors, Tensor], Tensor]

# Modules that act on each element, so a grouped activation of either layout passes through
# them unchanged; and those that act on each channel of an image (likewise unchanged).
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
               nn.Dropout)
PER_CHANNEL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
IMAGE_ONLY = (nn.Conv2d, nn.BatchNorm2d, *PER_CHANNEL)
ELEMENTWISE_FUNCTIONS = {operator.add, operator.mul, torch.add, torch.mul, torch.relu, F.relu}


class NotGroupable(ValueError):
    """The model uses something :class:`GroupedModel` cannot run as grouped copies."""


@dataclass
class Activation:
    """The copies' activation between two layers, and whether it is an image tensor. Here
    (copies in the channels) ``image`` = ``(B, C*k, H, W)``, else ``(C, B, ...)``;
    :mod:`critperiods.train.folded` (copies in the batch) uses ``(C*B, k, H, W)``."""

    t: Tensor
    image: bool


class GroupedModel:
    """``C`` copies of ``model``'s architecture evaluated together (see the module docstring).

    Call with ``params`` and ``buffers`` stacked along a new first dimension of size ``C``
    (as ``torch.func.stack_module_state`` makes them) and inputs ``x`` of shape
    ``(C, B, *sample_shape)``; returns ``(C, B, *output_shape)``, the same as
    ``vmap(functional_call)``.  The module's ``training`` flags decide BatchNorm's mode, as
    in ``functional_call``; running statistics are updated in place in ``buffers``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self._graphs: dict[tuple[bool, ...], fx.Graph] = {}
        self._verdicts: dict[tuple, bool] = {}
        self._dropouts = [m for m in self.modules.values() if isinstance(m, nn.Dropout)]
        self._buffer_names = {name for name, _ in model.named_buffers()}
        self.graph  # noqa: B018 - trace now: an unsupported model fails at construction

    @property
    def graph(self) -> fx.Graph:
        """The traced graph for the modules' current train/eval modes (tracing bakes in
        any branch of ``forward`` on ``self.training``, so each mode gets its own)."""
        mode = tuple(m.training for m in self.modules.values())
        if mode not in self._graphs:
            self._graphs[mode] = self._trace()
        return self._graphs[mode]

    def _trace(self) -> fx.Graph:
        """Trace the model and check every node; raise NotGroupable if anything is unknown."""
        try:
            graph = fx.symbolic_trace(self.model).graph
        except Exception as err:  # noqa: BLE001 - any tracing failure means "use vmap"
            raise NotGroupable(f"torch.fx cannot trace {type(self.model).__name__}: {err}"
                               ) from err
        if sum(node.op == "placeholder" for node in graph.nodes) != 1:
            raise NotGroupable("forward takes more than one input")
        for node in graph.nodes:
            self._check(node)
        return graph

    def _check(self, node: fx.Node) -> None:
        """Raise NotGroupable for a node this class has no grouped rule for."""
        if node.op == "call_module":
            module = self.modules[node.target]  # type: ignore[index]
            if not isinstance(module, (nn.Linear, nn.Flatten, *ELEMENTWISE, *IMAGE_ONLY)):
                raise NotGroupable(f"{node.target}: {type(module).__name__} is not supported")
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise NotGroupable(f"{node.target}: padding_mode={module.padding_mode!r}")
            if getattr(module, "return_indices", False):
                raise NotGroupable(f"{node.target}: return_indices=True")
        elif node.op == "call_function" and node.target not in ELEMENTWISE_FUNCTIONS | {
            torch.flatten
        }:
            raise NotGroupable(f"function {getattr(node.target, '__name__', node.target)}")
        elif node.op in ("call_method", "get_attr"):
            raise NotGroupable(f"{node.op} {node.target} (forward reads tensors directly)")

    def supports(self, params: Tensors, buffers: Tensors, x: Tensor) -> bool:
        """Whether the grouped rules cover this call; decided before anything real runs,
        so a refusal has no side effects.

        Refused: a mode whose graph has an unknown node, forward hooks (``functional_call``
        would run them), dropout in training mode, buffers missing from ``buffers``, a
        layout no rule accepts (e.g. a linear layer on an image), and anything that fails a
        dry run on meta tensors (a missing parameter such as a frozen bias, broadcasting
        across channels or between activations of different ranks, a tuple output).
        Verdicts are cached per mode, input shape and parameter names."""
        return self._graph_for(params, buffers, x) is not None

    def _graph_for(self, params: Tensors, buffers: Tensors, x: Tensor) -> fx.Graph | None:
        """The graph to run for this call, or None if it is not supported (``supports``)."""
        if _has_hooks(self.modules.values()) or any(
            m.training and m.p > 0 for m in self._dropouts
        ) or not self._buffer_names <= set(buffers):
            # a buffer left out would make functional_call use the module's own, and the
            # grouped BatchNorm fall back to batch statistics: leave such calls to vmap
            return None
        try:
            graph = self.graph
        except NotGroupable:
            return None
        key = (id(graph), tuple(x.shape[2:]), x.dim(), tuple(params), tuple(buffers))
        if key not in self._verdicts:
            self._verdicts[key] = self._layouts_fit(graph, x.dim() == 5) and self._dry_run(
                graph, params, buffers, x)
        return graph if self._verdicts[key] else None

    def _dry_run(self, graph: fx.Graph, params: Tensors, buffers: Tensors, x: Tensor) -> bool:
        """Run the grouped graph on meta tensors (shapes only, no data, no side effects)."""
        def meta(tensors: Tensors) -> Tensors:
            return {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                    for k, v in tensors.items()}

        try:
            self._execute(graph, meta(params), meta(buffers), x.to("meta"))
        except Exception:  # noqa: BLE001 - whatever fails here is left to vmap
            return False
        return True

    def _layouts_fit(self, graph: fx.Graph, image_input: bool) -> bool:
        """Propagate layouts (image or features) through the graph without running it."""
        kinds: dict[fx.Node, bool] = {}
        for node in graph.nodes:
            if node.op == "placeholder":
                kinds[node] = image_input
            elif node.op == "output":
                return isinstance(node.args[0], fx.Node)
            else:
                kind = self._kind(node, kinds)
                if kind is None:
                    return False
                kinds[node] = kind
        return False

    def _kind(self, node: fx.Node, kinds: dict[fx.Node, bool]) -> bool | None:
        """Layout of ``node``'s output (True = image), or None if no grouped rule fits."""
        inputs = [kinds[a] for a in node.args if isinstance(a, fx.Node)]
        if not inputs or len(set(inputs)) > 1 or any(
            isinstance(v, fx.Node) for v in node.kwargs.values()
        ):
            return None
        kind = inputs[0]
        if node.op == "call_function":
            if node.target is torch.flatten:
                dims = (*node.args[1:], *node.kwargs.values())
                return False if tuple(dims) in ((1,), (1, -1)) else None
            return kind
        module = self.modules[node.target]  # type: ignore[index]
        if len(node.args) != 1:
            return None
        if isinstance(module, nn.Linear):
            return None if kind else False
        if isinstance(module, nn.Flatten):
            return False if (module.start_dim, module.end_dim) == (1, -1) else None
        if isinstance(module, IMAGE_ONLY):
            return True if kind else None
        return kind

    def __call__(self, params: Tensors, buffers: Tensors, x: Tensor) -> Tensor:
        graph = self._graph_for(params, buffers, x)
        if graph is None:
            raise NotGroupable(f"{type(self.model).__name__}: no grouped rule for inputs of "
                               f"shape {tuple(x.shape)} in this mode")
        return self._execute(graph, params, buffers, x)

    def _execute(self, graph: fx.Graph, params: Tensors, buffers: Tensors, x: Tensor
                 ) -> Tensor:
        """Evaluate the graph node by node on this layout's activations: the input laid
        out by :meth:`_enter`, each node by :meth:`_run`, the output by :meth:`_leave`."""
        copies = x.shape[0]
        env: dict[fx.Node, object] = {}
        for node in graph.nodes:
            if node.op == "placeholder":
                env[node] = self._enter(x)
            elif node.op == "output":
                return self._leave(env[node.args[0]], copies)  # type: ignore[arg-type]
            else:
                args = fx.node.map_arg(node.args, env.__getitem__)
                env[node] = self._run(node, args, node.kwargs, params, buffers, copies)
        raise AssertionError("fx graph without output")  # pragma: no cover

    def _enter(self, x: Tensor) -> Activation:
        """``(C, B, ...)`` inputs as this layout's activation: side by side in the channels."""
        return _group_input(x)

    def _leave(self, act: Activation, copies: int) -> Tensor:
        """This layout's output activation as ``(C, B, ...)``."""
        return _ungroup(act, copies)

    def _run(self, node: fx.Node, args: tuple, kwargs: dict, params: Tensors,
             buffers: Tensors, copies: int) -> Activation:
        """Evaluate one node on grouped activations (layouts already checked)."""
        if node.op == "call_function":
            if node.target is torch.flatten:
                return _flatten(args[0], copies)
            acts = [a for a in args if isinstance(a, Activation)]
            if len({a.t.dim() for a in acts}) > 1:
                # per copy (B,T,F) + (B,F) broadcasts B against T; grouped it would broadcast
                # the copies against the batch, mixing copies: refused (the dry run fails)
                raise NotGroupable(f"{node.name}: activations of different ranks")
            plain = [a.t if isinstance(a, Activation) else a for a in args]
            return Activation(node.target(*plain, **kwargs), acts[0].image)  # type: ignore[operator]
        module = self.modules[node.target]  # type: ignore[index]
        (act,) = args
        name = str(node.target)
        if isinstance(module, nn.Conv2d):
            return _conv(module, act, params, name, copies)
        if isinstance(module, nn.Linear):
            return _linear(module, act, params, name)
        if isinstance(module, nn.BatchNorm2d):
            return _batch_norm(module, act, params, buffers, name)
        if isinstance(module, nn.Flatten):
            return _flatten(act, copies)
        if isinstance(module, nn.MaxPool2d) and (out := max_pool2(module, act.t)) is not None:
            return Activation(out, act.image)  # the native kernel, bit for bit the module's
        return Activation(module(act.t), act.image)


def _group_input(x: Tensor) -> Activation:
    """``(C, B, k, H, W)`` images → ``(B, C*k, H, W)`` channels-last (one copy); features
    stay."""
    if x.dim() != 5:
        return Activation(x, image=False)
    c, b, k, h, w = x.shape
    grouped = x.permute(1, 3, 4, 0, 2).contiguous().view(b, h, w, c * k)  # (B, H, W, C*k)
    return Activation(grouped.permute(0, 3, 1, 2), image=True)


def _ungroup(act: Activation, copies: int) -> Tensor:
    """Back to ``(C, B, ...)``."""
    if not act.image:
        return act.t
    b, ck, h, w = act.t.shape
    return act.t.reshape(b, copies, ck // copies, h, w).transpose(0, 1)


def _stacked(tensors: Tensors, name: str) -> Tensor:
    """``(C, *shape)`` → ``(C * shape[0], *shape[1:])`` (the copies' channels side by side)."""
    t = tensors[name]
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _conv(module: nn.Conv2d, act: Activation, params: Tensors, name: str,
          copies: int) -> Activation:
    """One grouped convolution for all copies."""
    bias = _stacked(params, f"{name}.bias") if module.bias is not None else None
    out = F.conv2d(act.t, _stacked(params, f"{name}.weight"), bias, module.stride,
                   module.padding, module.dilation, module.groups * copies)
    return Activation(out, image=True)


def _linear(module: nn.Linear, act: Activation, params: Tensors, name: str) -> Activation:
    """A batched matmul: ``(C, B, ..., in)`` @ ``(C, in, out)`` (+ bias)."""
    x, weight = act.t, params[f"{name}.weight"]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = (torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), flat, weight.transpose(1, 2))
           if module.bias is not None else torch.bmm(flat, weight.transpose(1, 2)))
    return Activation(out.reshape(*x.shape[:-1], weight.shape[1]), image=False)


def _batch_norm(module: nn.BatchNorm2d, act: Activation, params: Tensors, buffers: Tensors,
                name: str) -> Activation:
    """BatchNorm over ``C*k`` channels: per-copy statistics, as separate runs have them."""
    running = module.track_running_stats and f"{name}.running_mean" in buffers
    batch_stats = module.training or not running
    momentum = module.momentum
    if module.training and running:
        tracked = buffers[f"{name}.num_batches_tracked"]
        tracked.add_(1)
        if momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            momentum = 1.0 / float(tracked.reshape(-1)[0])
    mean = var = None
    if running:
        mean, var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
        # in-place updates must reach the caller's buffers: views, not copies
        mean, var = (mean.view(-1), var.view(-1)) if module.training else (
            mean.reshape(-1), var.reshape(-1))
    weight = params[f"{name}.weight"].reshape(-1) if module.affine else None
    bias = params[f"{name}.bias"].reshape(-1) if module.affine else None
    out = F.batch_norm(act.t, mean, var, weight, bias, batch_stats, momentum or 0.0,
                       module.eps)
    return Activation(out, image=True)


def _flatten(act: Activation, copies: int) -> Activation:
    """Flatten each sample into features (``flatten(start_dim=1)`` of one copy's batch)."""
    x = act.t
    if not act.image:
        return Activation(x.flatten(2), image=False)
    if x.is_contiguous():  # NCHW (or a 1x1 image): a view, whose gradient has x's layout
        return Activation(x.reshape(x.shape[0], copies, -1).transpose(0, 1), image=False)
    return Activation(_FlattenImages.apply(x, copies), image=False)


class _FlattenImages(torch.autograd.Function):
    """Channels-last grouped images ``(B, C*k, H, W)`` → features ``(C, B, k*H*W)``, each
    copy's in NCHW order (as ``flatten(start_dim=1)`` of one copy gives them).

    The forward is ``x.reshape(B, C, -1).transpose(0, 1)`` (a copy); the backward returns the
    gradient channels-last, in ``x``'s layout.  Autograd's own reshape backward returns it
    NCHW, and the elementwise backward before it (a ReLU's) then mixes layouts and runs several
    times slower: ~3 % of a ``small_cnn`` SGLD step.  The values are the same, bit for bit.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, copies: int) -> Tensor:
        ctx.shape, ctx.copies = x.shape, copies
        return x.reshape(x.shape[0], copies, -1).transpose(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        b, ck, h, w = ctx.shape
        per_copy = grad.reshape(ctx.copies, b, ck // ctx.copies, h, w)
        return _group_input(per_copy).t, None  # the same layout change as the input's


def _has_hooks(modules: Iterable[nn.Module]) -> bool:
    """Whether any forward (pre-)hook is registered, on these modules or globally."""
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
