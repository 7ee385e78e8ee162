"""GroupedModel: copies of a network run as one grouped network equal vmap(functional_call)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from critperiods.measure.learning_coefficients import make_dln
from critperiods.train.copies import copies_forward, stack_like
from critperiods.train.grouped import GroupedModel, NotGroupable
from critperiods.train.models import build_model

COPIES = 3


def _reference(template: nn.Module, params: dict, buffers: dict, x: torch.Tensor):
    return vmap(lambda p, b, xx: functional_call(template, (p, b), (xx,)))(params, buffers, x)


def _clone(tensors: dict) -> dict:
    return {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in tensors.items()}


def _float64_gradients(template: nn.Module, params: dict, buffers: dict, x: torch.Tensor
                       ) -> tuple[torch.Tensor, ...]:
    """Gradients of ``sum(output**2)`` by vmap in float64: the exact values, to float32."""
    p64 = {k: v.detach().double().requires_grad_() for k, v in params.items()}
    b64 = {k: v.double() if v.is_floating_point() else v.clone() for k, v in buffers.items()}
    out = _reference(template, p64, b64, x.double())
    return torch.autograd.grad(out.square().sum(), list(p64.values()))


def _relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.detach().double() - exact).norm() / exact.norm())


def _stacks(models: list[nn.Module]) -> tuple[dict, dict, dict, dict]:
    params, buffers = stack_module_state(models)
    return params, buffers, _clone(params), _clone(buffers)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ["small_cnn", "all_cnn_c", "resnet18"])
def test_cnn_copies_match_vmap(name: str, train: bool) -> None:
    """Outputs, gradients and (train mode) BatchNorm running statistics of every copy equal
    those of vmap(functional_call) to float round-off."""
    channels, side = (1, 28) if name == "small_cnn" else (3, 32)
    models = [build_model(name, 4, channels, side, 10, seed=s).train(train)
              for s in range(COPIES)]
    params, buffers, params2, buffers2 = _stacks(models)
    template = copy.deepcopy(models[0]).to("meta").train(train)
    x = torch.randn(COPIES, 5, channels, side, side, generator=torch.Generator().manual_seed(0))

    ref = _reference(template, params, buffers, x)
    out = GroupedModel(template)(params2, buffers2, x)
    assert out.shape == ref.shape == (COPIES, 5, 10)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)

    # Gradients against the exact (float64) ones: train-mode BatchNorm on a batch of 5 makes
    # all_cnn_c's gradient so ill-conditioned that float32 vmap itself is ~1e-2 off, and how
    # far each float32 path lands depends on the thread count; so the grouped gradient must
    # be as accurate as vmap's (to 2x), or within 1e-4 of the exact one (relative norm).
    exact = _float64_gradients(template, params, buffers, x)
    grads = torch.autograd.grad(ref.square().sum(), list(params.values()))
    grads2 = torch.autograd.grad(out.square().sum(), list(params2.values()))
    for name_, g, g2, g64 in zip(params, grads, grads2, exact, strict=True):
        assert _relative_error(g2, g64) <= max(2 * _relative_error(g, g64), 1e-4), name_
    for k in buffers:
        torch.testing.assert_close(buffers2[k], buffers[k], atol=1e-6, rtol=1e-5)
    if train and buffers:  # the running statistics really moved, once per call
        assert not torch.equal(buffers2[next(iter(buffers))], stack_module_state(models)[1][
            next(iter(buffers))])
        tracked = [v for k, v in buffers2.items() if k.endswith("num_batches_tracked")]
        assert all(bool((t == 1).all()) for t in tracked)


def test_copies_are_independent() -> None:
    """Each copy computes its own network: copy 1 of a stack equals that model alone."""
    models = [build_model("small_cnn", 4, 1, 28, 10, seed=s) for s in range(COPIES)]
    params, buffers = stack_module_state(models)
    x = torch.randn(COPIES, 7, 1, 28, 28)
    out = GroupedModel(models[0])(params, buffers, x)
    torch.testing.assert_close(out[1], models[1](x[1]), atol=1e-5, rtol=1e-4)


def test_linear_networks_match_vmap() -> None:
    """MLPs (with bias) and deep linear networks (without) run as batched matmuls."""
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    dln = make_dln([4, 3, 4], 1, n=10, seed=0).model
    for model in (mlp, dln):
        models = [copy.deepcopy(model) for _ in range(COPIES)]
        for i, m in enumerate(models):
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.1 * i)
        params, buffers, params2, buffers2 = _stacks(models)
        x = torch.randn(COPIES, 5, models[0][0].in_features)
        ref = _reference(models[0], params, buffers, x)
        torch.testing.assert_close(GroupedModel(models[0])(params2, buffers2, x), ref)


class _Potential(nn.Module):
    """A toy potential: forward reads its parameter directly (not groupable)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[0] ** 2 * self.w[1] ** 4).expand(x.shape[0])


def test_unsupported_models_raise_and_fall_back_to_vmap() -> None:
    """A forward that reads parameters, or an unknown layer, is refused with the node's
    name; copies_forward then uses vmap and gives the same values."""
    with pytest.raises(NotGroupable, match="get_attr w"):
        GroupedModel(_Potential())
    with pytest.raises(NotGroupable, match="0: Conv1d is not supported"):
        GroupedModel(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()))

    potential = _Potential()
    params = {"w": torch.stack([potential.w.detach(), potential.w.detach() * 2])}
    out = copies_forward(potential)(params, {}, torch.zeros(2, 4, 1))
    expected = torch.stack([(w[0] ** 2 * w[1] ** 4).expand(4) for w in params["w"]])
    torch.testing.assert_close(out, expected)


def test_dropout_in_training_mode_is_refused() -> None:
    """Dropout would need per-copy random masks: refused in train mode, identity in eval."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    params, buffers = stack_module_state([model, copy.deepcopy(model)])
    x = torch.randn(2, 4, 3)
    with pytest.raises(NotGroupable, match="in this mode"):
        GroupedModel(model.train())(params, buffers, x)
    torch.testing.assert_close(GroupedModel(model.eval())(params, buffers, x),
                               _reference(model, params, buffers, x))


def test_stack_like_makes_views() -> None:
    """Shared buffers are expanded, not copied."""
    shared = {"running_mean": torch.arange(3.0)}
    stacked = stack_like(shared, 4)["running_mean"]
    assert stacked.shape == (4, 3)
    assert stacked.data_ptr() == shared["running_mean"].data_ptr()


class _LinearOnImage(nn.Module):
    """Legal PyTorch that the grouped rules do not cover: a linear layer on the last
    (width) dimension of an image, and torch.flatten with its default start_dim=0."""

    def __init__(self, flatten_all: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.width = nn.Linear(6, 3)
        self.flatten_all = flatten_all

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten_all:
            return torch.flatten(self.conv(x))
        return self.width(self.conv(x))


@pytest.mark.parametrize("flatten_all", [False, True])
def test_layouts_without_a_grouped_rule_use_vmap(flatten_all: bool) -> None:
    """The layout check runs before anything executes: such models are refused by
    GroupedModel and computed by vmap in copies_forward, with the same values."""
    model = _LinearOnImage(flatten_all)
    params, buffers = stack_module_state([model, copy.deepcopy(model)])
    x = torch.randn(2, 4, 1, 8, 8)
    grouped = GroupedModel(model)
    assert not grouped.supports(params, buffers, x)
    with pytest.raises(NotGroupable, match="no grouped rule"):
        grouped(params, buffers, x)
    torch.testing.assert_close(copies_forward(model)(params, buffers, x),
                               _reference(model, params, buffers, x))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = self.fc(x)
        return out * scale if scale is not None else out


class _ModeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 0.5 if self.training else self.fc(x)


class _ChannelMask(nn.Module):
    """Broadcasting across channels (a 1-channel mask) does not survive side-by-side
    channels; a tuple output has no grouped rule either."""

    def __init__(self, tuple_output: bool) -> None:
        super().__init__()
        self.conv, self.mask = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
        self.tuple_output = tuple_output

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        out = self.conv(x) * self.mask(x)
        return (out, out) if self.tuple_output else out


def _same_as_vmap(model: nn.Module, x: torch.Tensor, params: dict | None = None) -> None:
    stacked, buffers = stack_module_state([model, copy.deepcopy(model)])
    params = stacked if params is None else params
    torch.testing.assert_close(copies_forward(model)(params, buffers, x),
                               _reference(model, params, buffers, x))


def test_frozen_parameters_hooks_and_modes_are_honoured() -> None:
    """Cases where a grouped run would silently differ from functional_call fall back:
    a frozen bias missing from params (llc passes trainable parameters only), forward
    hooks, and a forward that branches on self.training (each mode is traced anew)."""
    frozen = nn.Linear(4, 3)
    with torch.no_grad():
        frozen.bias.fill_(5.0)
    frozen.bias.requires_grad_(False)
    params = {"weight": torch.stack([frozen.weight.detach()] * 2)}
    _same_as_vmap(frozen, torch.randn(2, 5, 4), params)

    hooked = nn.Sequential(nn.Linear(4, 3))
    handle = hooked.register_forward_hook(lambda mod, inp, out: out * 2)
    _same_as_vmap(hooked, torch.randn(2, 5, 4))
    handle.remove()

    branch = _ModeBranch().train()
    grouped = GroupedModel(branch)
    branch.eval()
    params, buffers = stack_module_state([branch, copy.deepcopy(branch)])
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(grouped(params, buffers, x), _reference(branch, params,
                                                                         buffers, x))


def test_more_inputs_broadcast_channels_and_tuple_outputs_fall_back() -> None:
    """A second forward input is refused at construction; channel broadcasting and tuple
    outputs fail the dry run on meta tensors, so nothing real runs before the fallback."""
    with pytest.raises(NotGroupable, match="more than one input"):
        GroupedModel(_TwoInputs())
    x = torch.randn(2, 4, 1, 6, 6)
    for tuple_output in (False, True):
        model = _ChannelMask(tuple_output)
        params, buffers = stack_module_state([model, copy.deepcopy(model)])
        assert not GroupedModel(model).supports(params, buffers, x)
        if not tuple_output:
            _same_as_vmap(model, x)


class _RankMix(nn.Module):
    """Per copy ``(B,T,F) + (B,F)`` broadcasts B against T (needs B == T); grouped, the
    copy dimension would meet the batch instead."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(torch.flatten(x, 1))


def test_activations_of_different_ranks_and_missing_buffers_fall_back() -> None:
    """Two cases where a grouped run would mix copies or use other statistics than
    functional_call are refused, and copies_forward gives vmap's values."""
    mix = _RankMix()
    x = torch.randn(3, 3, 3, 3)  # copies = batch = T = 3
    params, buffers = stack_module_state([mix, copy.deepcopy(mix), copy.deepcopy(mix)])
    assert not GroupedModel(mix).supports(params, buffers, x)
    torch.testing.assert_close(copies_forward(mix)(params, buffers, x),
                               _reference(mix, params, buffers, x))

    bn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)).eval()
    with torch.no_grad():
        bn[1].running_mean.fill_(3.0)
    params, _ = stack_module_state([bn, copy.deepcopy(bn)])
    x = torch.randn(2, 4, 1, 6, 6)
    assert not GroupedModel(bn).supports(params, {}, x)
    torch.testing.assert_close(copies_forward(bn)(params, {}, x),
                               _reference(bn, params, {}, x))


@pytest.mark.parametrize("channels", [1, 3])
def test_grouped_input_is_channels_last(channels: int) -> None:
    """The copies' images become one channels-last tensor, copy-major in the channels: the
    layout oneDNN's grouped convolutions are fast on (a strided view runs ~2x slower)."""
    from critperiods.train.grouped import _group_input

    x = torch.randn(COPIES, 5, channels, 28, 28)
    act = _group_input(x)
    assert act.image and act.t.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(act.t, x.transpose(0, 1).reshape(5, COPIES * channels, 28, 28))


def test_flattened_images_pass_their_gradient_back_channels_last() -> None:
    """Flattening grouped channels-last images gives each copy's NCHW-ordered features, and
    the gradient comes back channels-last (so the backward before it runs on one layout),
    with the same values as the plain reshape's."""
    from critperiods.train.grouped import Activation, _flatten

    k, side = 4, 3
    x = torch.randn(5, COPIES * k, side, side).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = _flatten(Activation(x, image=True), COPIES).t
    per_copy = x.detach().reshape(5, COPIES, k, side, side).transpose(0, 1)
    assert torch.equal(out, per_copy.flatten(2))
    weights = torch.randn(out.shape)
    (grad,) = torch.autograd.grad((out * weights).sum(), [x])
    assert grad.is_contiguous(memory_format=torch.channels_last)
    expected = weights.transpose(0, 1).reshape(x.shape)  # d(sum out*weights)/dx
    assert torch.equal(grad, expected)
