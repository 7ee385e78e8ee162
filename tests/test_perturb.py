"""Perturbations on the hypersphere: exact sizes, kept norms, uniform directions, the sphere
init, batch swaps, and the training hash that model.init leaves alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.plan import training_params
from critperiods.train import perturb
from critperiods.train.models import build_model


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def _distance(a: dict, b: dict) -> float:
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a))


def test_the_scopes_and_kinds_the_config_accepts_are_the_ones_the_code_knows() -> None:
    """The schema's ``perturbation.scope`` and ``perturbation.kind`` enums name what
    ``perturb.SCOPES`` and ``perturb.KINDS`` do (docs/architecture.md, "A perturbation scope
    or kind"), each with its default first."""
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1]
                             / "workflow/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["perturbation"]["properties"]
    assert keys["scope"]["enum"] == list(perturb.SCOPES) and keys["scope"]["default"] == "layer"
    assert keys["kind"]["enum"] == list(perturb.KINDS) and keys["kind"]["default"] == "weights"


@pytest.mark.parametrize("scope", perturb.SCOPES)
@pytest.mark.parametrize("epsilon", [1e-3, 0.1, 1.0])
def test_a_perturbation_moves_exactly_epsilon_and_keeps_the_norms(scope, epsilon) -> None:
    model = build_model("small_cnn", 4, 1, 16, 10, seed=0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    after = perturb.perturb_tensors(before, epsilon, seed=7, scope=scope)
    radius = _norm(before.values())
    tol = 1e-6 * radius  # float32 rounding of the moved weights
    assert _distance(after, before) == pytest.approx(epsilon, abs=tol)
    assert _norm(after.values()) == pytest.approx(radius, abs=tol)
    if scope == "layer":  # every layer on its own sphere, moved in proportion to its norm
        for k in before:
            r = _norm([before[k]])
            assert _norm([after[k]]) == pytest.approx(r, abs=1e-6 * r)
            share = epsilon * r / radius
            assert _distance({k: after[k]}, {k: before[k]}) == pytest.approx(share, abs=tol)
    assert all(after[k].dtype == before[k].dtype for k in before)


def test_the_closed_form_is_exact_in_double_precision() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, dtype=torch.float64, generator=g)
    u = perturb.orthogonal_direction(w, g)
    assert float(u @ w) == pytest.approx(0.0, abs=1e-12) and float(u.norm()) == pytest.approx(1)
    for eps in (1e-6, 0.5, float(w.norm())):
        moved = perturb.sphere_step(w, eps, u)
        assert float(moved.norm()) == pytest.approx(float(w.norm()), rel=1e-14)
        assert float((moved - w).norm()) == pytest.approx(eps, rel=1e-10)
    with pytest.raises(ValueError, match="diameter"):
        perturb.sphere_step(w, 2.01 * float(w.norm()), u)


def test_epsilon_zero_returns_the_weights_bit_for_bit() -> None:
    model = build_model("small_cnn", 4, 1, 16, 10, seed=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    perturb.perturb_model_(model, 0.0, seed=3)
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k


def test_the_same_seed_gives_the_same_direction_for_every_epsilon() -> None:
    w = {"w": torch.randn(30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)}
    small = perturb.perturb_tensors(w, 1e-3, seed=5)["w"] - w["w"]
    large = perturb.perturb_tensors(w, 1e-1, seed=5)["w"] - w["w"]
    other = perturb.perturb_tensors(w, 1e-1, seed=6)["w"] - w["w"]
    cos = float(small @ large / (small.norm() * large.norm()))
    assert cos == pytest.approx(1.0, abs=1e-3)  # both nearly along the same tangent u
    assert abs(float(other @ large / (other.norm() * large.norm()))) < 0.9


def test_the_direction_is_uniform_on_the_circle_orthogonal_to_w() -> None:
    """In 3-D the directions orthogonal to w form a circle: their angle must be uniform."""
    w = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    e1 = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    e1 /= e1.norm()
    e2 = torch.linalg.cross(w / w.norm(), e1)
    g = torch.Generator().manual_seed(11)
    angles = []
    for _ in range(2000):
        u = perturb.orthogonal_direction(w, g)
        angles.append(math.atan2(float(u @ e2), float(u @ e1)))
    assert stats.kstest(np.array(angles), stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3


def _tiny_layer(seed: int, init: str) -> nn.Linear:
    """A linear layer with 3 weights and no bias, initialised like build_model does."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(3, 1, bias=False)
        if init == "kaiming_sphere":
            perturb.sphere_init_(layer)
    return layer


def test_perturbed_sphere_inits_are_distributed_like_sphere_inits() -> None:
    """Norms: exactly the Kaiming radius before and after. Direction: uniform on S², where
    each coordinate of a uniform point is uniform on [-1, 1] (Archimedes)."""
    radius = perturb.kaiming_radius(3, 3)
    coords = []
    for seed in range(1500):
        layer = _tiny_layer(seed, "kaiming_sphere")
        w = layer.weight.detach().double().reshape(-1)
        assert float(w.norm()) == pytest.approx(radius, rel=1e-6)
        moved = perturb.perturb_tensors({"w": w}, 0.3 * radius, seed=seed)["w"]
        assert float(moved.norm()) == pytest.approx(float(w.norm()), rel=1e-12)
        coords.append((moved / radius).numpy())
    coords = np.array(coords)
    for axis in range(3):
        assert stats.kstest(coords[:, axis], stats.uniform(-1, 2).cdf).pvalue > 1e-3, axis


def test_kaiming_sphere_init_sits_on_the_shell_of_the_default_init() -> None:
    default = build_model("small_cnn", 8, 1, 28, 10, seed=0)
    sphere = build_model("small_cnn", 8, 1, 28, 10, seed=0, init="kaiming_sphere")
    again = build_model("small_cnn", 8, 1, 28, 10, seed=0, init="kaiming_sphere")
    for (name, s), (_, a) in zip(sphere.state_dict().items(), again.state_dict().items(),
                                 strict=True):
        assert torch.equal(s, a), f"{name}: not a function of the seed"
    layers = [(d, s) for d, s in zip(default.modules(), sphere.modules(), strict=True)
              if isinstance(d, nn.Conv2d | nn.Linear)]
    assert len(layers) == 3
    for d, s in layers:
        fan_in = d.weight.shape[1] * math.prod(d.weight.shape[2:])
        for p_default, p_sphere in ((d.weight, s.weight), (d.bias, s.bias)):
            radius = perturb.kaiming_radius(p_default.numel(), fan_in)
            assert float(p_sphere.detach().norm()) == pytest.approx(radius, rel=1e-6)
            if p_default.numel() > 1000:  # a thin shell: the default draw lies near it
                assert float(p_default.detach().norm()) == pytest.approx(radius, rel=0.05)
    with pytest.raises(ValueError, match="model.init"):
        build_model("small_cnn", 8, 1, 28, 10, seed=0, init="xavier")


def test_model_init_at_its_default_leaves_the_training_hash_unchanged() -> None:
    config = {"dataset": {"name": "fashion_mnist", "train_subset": 512, "blur_size": 4},
              "model": {"name": "small_cnn", "width": 4},
              "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "lr_decay": 0.85},
              "augmentation": False}
    before = config_hash(training_params(config))
    config["model"]["init"] = "kaiming"
    assert config_hash(training_params(config)) == before
    config["model"]["init"] = "kaiming_sphere"
    assert config_hash(training_params(config)) != before


def test_batch_swaps_exchange_disjoint_pairs() -> None:
    assert perturb.swapped_batch_order(10, 0, seed=1) == list(range(10))
    order = perturb.swapped_batch_order(10, 2, seed=1)
    moved = [i for i, j in enumerate(order) if i != j]
    assert sorted(order) == list(range(10)) and len(moved) == 4
    assert all(order[order[i]] == i for i in moved)  # pairs, not cycles
    assert perturb.swapped_batch_order(10, 2, seed=1) == order
    with pytest.raises(ValueError, match="disjoint pairs"):
        perturb.swapped_batch_order(3, 2, seed=0)
    positions = perturb.batch_swap_positions(10, 3, 1, seed=4)  # batches 0-2, 3-5, 6-8, 9
    assert sorted(positions.tolist()) == list(range(10)) and int(positions[9]) == 9
    blocks = positions[:9].reshape(3, 3)
    assert all(int(b[0]) % 3 == 0 and b.tolist() == list(range(b[0], b[0] + 3)) for b in blocks)
    assert sum(int(b[0]) != 3 * i for i, b in enumerate(blocks)) == 2  # one pair exchanged
