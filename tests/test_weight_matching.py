"""Permutation specs and weight matching: function invariance and recovery of known permutations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from critperiods.measure.divergence import aligned_l2
from critperiods.measure.weight_matching import (
    apply_permutation,
    permutation_spec,
    permute_axis,
    random_permutation,
    weight_matching,
)
from critperiods.train.models import MODELS, Classifier, build_model

ARCHS = tuple(sorted(MODELS))  # a new model needs a permutation rule for l2_aligned and barrier
IN_CHANNELS, SIZE, CLASSES, WIDTH = 3, 8, 5, 4


def _model(name: str, seed: int = 0) -> nn.Module:
    """A tiny model whose BatchNorm parameters and statistics are random, not 1/0."""
    model = build_model(name, WIDTH, IN_CHANNELS, SIZE, CLASSES, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ARCHS)
def test_permutation_keeps_function_and_is_recovered(name: str) -> None:
    model = _model(name)
    spec = permutation_spec(model)
    state = model.state_dict()
    perms = random_permutation(spec, seed=7)
    permuted = apply_permutation(spec, perms, state)
    other = _model(name, seed=1)
    other.load_state_dict(permuted)
    x = torch.randn(6, IN_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), atol=1e-5, rtol=1e-5)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())

    found = weight_matching(spec, state, permuted, max_iterations=20)
    for p, true in perms.items():
        assert torch.equal(found[p], torch.argsort(true)), p
    aligned = apply_permutation(spec, found, permuted)
    assert aligned_l2(state, aligned, spec.parameters) == 0.0
    assert aligned_l2(state, permuted, spec.parameters) > 0.0


def test_resnet_residual_stream_shares_one_permutation_per_stage() -> None:
    spec = permutation_spec(_model("resnet18"))
    axes = spec.axes
    stem = axes["features.0.weight"][0]
    assert axes["features.1.conv2.weight"][0] == stem == axes["features.2.conv2.weight"][0]
    assert axes["features.2.bn1.weight"][0] == stem == axes["features.3.conv1.weight"][1]
    stage2 = axes["features.3.shortcut.weight"][0]
    assert stage2 != stem
    assert axes["features.3.conv2.weight"][0] == stage2 == axes["features.4.conv2.weight"][0]
    assert axes["features.3.conv1.weight"][0] != stage2
    assert axes["classifier.weight"] == (None, axes["features.9.weight"][0])
    assert axes["features.9.weight"][0] == axes["features.8.conv2.weight"][0]
    assert len(spec.sizes) == 1 + 8 + 3  # stem stream, 8 inner, 3 new residual streams


def test_spec_covers_every_entry_with_matching_axes() -> None:
    for name in ARCHS:
        model = _model(name)
        spec = permutation_spec(model)
        state = model.state_dict()
        assert set(spec.axes) == set(state)
        assert set(spec.parameters) == {n for n, _ in model.named_parameters()}
        for entry, axes in spec.axes.items():
            assert len(axes) == state[entry].ndim


def test_permute_axis_blockwise_matches_flatten() -> None:
    fmap = torch.randn(2, 3, 2, 2)
    perm = torch.tensor([2, 0, 1])
    flat = fmap.flatten(1)
    torch.testing.assert_close(permute_axis(flat, 1, perm), fmap[:, perm].flatten(1))
    with pytest.raises(ValueError, match="multiple"):
        permute_axis(torch.randn(2, 7), 1, perm)


def test_unsupported_layer_raises() -> None:
    model = Classifier(nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm(4), nn.Flatten()), 8, 2)
    with pytest.raises(ValueError, match="LayerNorm"):
        permutation_spec(model)


def test_matching_different_seeds_reduces_distance() -> None:
    a, b = _model("all_cnn_c", seed=0), _model("all_cnn_c", seed=1)
    spec = permutation_spec(a)
    sa, sb = a.state_dict(), b.state_dict()
    aligned = apply_permutation(spec, weight_matching(spec, sa, sb), sb)
    assert aligned_l2(sa, aligned, spec.parameters) < aligned_l2(sa, sb, spec.parameters)
