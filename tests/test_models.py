"""Models build by name, split into features + classifier, and depend only on the seed; a
model added to the registry is offered by the config schema and given its CUDA precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from critperiods.train.models import MODELS, build_model
from critperiods.train.training import BF16_PAYS_ON_CUDA

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_forward_shapes_and_split(name, channels, size):
    model = build_model(name, 4, channels, size, 10, seed=0).eval()
    x = torch.randn(3, channels, size, size)
    logits = model(x)
    assert logits.shape == (3, 10)
    assert torch.equal(logits, model.classifier(model.features(x)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_initial_weights_depend_only_on_seed(name):
    a = build_model(name, 4, 3, 32, 10, seed=7)
    torch.rand(100)
    b = build_model(name, 4, 3, 32, 10, seed=7)
    c = build_model(name, 4, 3, 32, 10, seed=8)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_unknown_model_names_the_key():
    with pytest.raises(ValueError, match="model.name: unknown model 'vgg'"):
        build_model("vgg", 4, 1, 28, 10, 0)


def test_resnet18_has_eighteen_weight_layers():
    model = build_model("resnet18", 64, 3, 32, 10, 0)
    convs = [m for m in model.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 18  # 17 3×3 convs + the linear read-out
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_architecture_has_a_strided_one_by_one_convolution(name):
    """oneDNN (PyTorch 2.14) gets such a convolution's weight gradient wrong on AVX2 CPUs
    with channels-last batches, the CPU's training layout (``blocks.PreActBlock``)."""
    model = build_model(name, 4, 3, 32, 10, seed=0)
    strided = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
               and m.kernel_size == (1, 1) and m.stride != (1, 1)]
    assert not strided


def test_the_resnet_shortcut_is_a_strided_one_by_one_convolution_with_right_gradients():
    """The projecting shortcut (subsample, then a 1×1 convolution) computes what a 1×1
    convolution of stride 2 does, bit for bit; and in float32 channels-last on the CPU its
    gradients are float64's (a strided 1×1 convolution's weight gradient was off by 10–90 %
    on an AVX2 CPU)."""
    import copy

    from torch import nn

    from critperiods.train.memory_format import channels_last_images, to_channels_last
    from critperiods.train.models.blocks import PreActBlock

    torch.manual_seed(0)
    block = PreActBlock(4, 8, 2)
    x = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pre = torch.relu(block.bn1(x))
    strided = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    strided.weight = block.shortcut.weight
    assert torch.equal(block.shortcut(block.subsample(pre)), strided(pre))
    exact = copy.deepcopy(block).double()
    fast = to_channels_last(block)
    grads = []
    for model, batch in ((fast, channels_last_images(x)), (exact, x.double())):
        model(batch).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        reference = grads[1][name]
        assert (grad.double() - reference).norm() <= 1e-5 * reference.norm(), name


def test_small_cnn_pool_then_relu_is_relu_then_pool_bit_for_bit():
    """The pooling/ReLU order is a speed choice only: same outputs, same gradients."""
    import copy

    from torch import nn

    from critperiods.train.models import build_model

    model = build_model("small_cnn", 4, 1, 16, 10, seed=0)
    textbook = copy.deepcopy(model)  # its own parameters, the same values
    f = textbook.features
    textbook.features = nn.Sequential(f[0], f[2], f[1], f[3], f[5], f[4], f[6])
    assert isinstance(textbook.features[1], nn.ReLU)  # the textbook order: ReLU, then pool
    x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for m in (model, textbook):
        torch.nn.functional.cross_entropy(m(x), torch.arange(32) % 10).backward()
    assert torch.equal(model(x), textbook(x))
    for (name, p), q in zip(model.named_parameters(), textbook.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_images_makes_the_convolution_run_channels_last(channels):
    """A one-channel batch gets channels-last strides too (``contiguous`` cannot give them),
    so the convolution's output, and the pooling after it, are channels-last; the values
    are the input's, and ``small_cnn`` computes the same outputs from either layout."""
    from critperiods.train.memory_format import channels_last_images

    x = torch.randn(4, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    cl = channels_last_images(x)
    assert torch.equal(cl, x) and cl.stride(1) == 1 and cl.data_ptr() != x.data_ptr()
    model = build_model("small_cnn", 4, channels, 8, 10, seed=0).eval()
    conv = model.features[0]
    assert conv(cl).is_contiguous(memory_format=torch.channels_last)
    assert not conv(x).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(cl), model(x))
    flat = torch.randn(4, 6)
    assert channels_last_images(flat) is flat


def test_every_registered_model_is_offered_by_the_schema_and_has_a_cuda_precision():
    """Adding a model means three edits that nothing else ties together: the registry, the
    schema's ``model.name`` enum (else the plan refuses it, or a job fails on it) and
    ``BF16_PAYS_ON_CUDA`` (else training would run it in bf16 on CUDA and λ̂ in float32)."""
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    offered = schema["properties"]["model"]["properties"]["name"]["enum"]
    assert sorted(offered) == sorted(MODELS)
    assert sorted(BF16_PAYS_ON_CUDA) == sorted(MODELS)
