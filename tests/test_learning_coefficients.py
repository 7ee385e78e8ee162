"""Exact learning-coefficient oracles and the toy-model builders used to validate the LLC."""

from __future__ import annotations

import pytest
import torch

from critperiods.measure.learning_coefficients import (
    NormalCrossingPotential,
    QuadraticPotential,
    dln_learning_coefficient,
    dln_loss,
    make_dln,
    normal_crossing_lc,
    normal_crossing_multiplicity,
    potential_data,
    potential_loss,
    regular_lc,
)


@pytest.mark.parametrize(
    ("widths", "rank", "expected"),
    [
        ([10, 6, 6, 10], 2, 26.0),
        ([10, 6, 6, 10], 1, 22.0),
        ([10, 6, 6, 10], 0, 17.5),
        ([4, 4, 4, 4], 4, 8.0),
        ([5, 3, 5], 0, 6.5),
    ],
)
def test_dln_oracle_vectors(widths: list[int], rank: int, expected: float) -> None:
    """Aoyagi's formula reproduces the published test vectors exactly."""
    assert dln_learning_coefficient(widths, rank) == expected


@pytest.mark.parametrize(("h_in", "h_out", "rank"), [(3, 4, 0), (3, 4, 2), (5, 2, 2)])
def test_dln_single_layer_is_regular(h_in: int, h_out: int, rank: int) -> None:
    """A one-layer linear network is a regular model: lambda = number of weights / 2."""
    assert dln_learning_coefficient([h_in, h_out], rank) == h_in * h_out / 2


def test_dln_rejects_impossible_rank() -> None:
    """The rank cannot exceed the narrowest layer."""
    with pytest.raises(ValueError):
        dln_learning_coefficient([4, 2, 4], 3)


@pytest.mark.parametrize(
    ("powers", "expected", "mult"),
    [((1, 1), 0.5, 2), ((1, 2), 0.25, 1), ((2, 2), 0.25, 2), ((1, 3), 1 / 6, 1), ((0, 2), 0.25, 1)],
)
def test_normal_crossing(powers: tuple[int, ...], expected: float, mult: int) -> None:
    """lambda = min 1/(2k) over positive k; multiplicity counts the minimisers."""
    assert normal_crossing_lc(powers) == pytest.approx(expected)
    assert normal_crossing_multiplicity(powers) == mult


def test_regular() -> None:
    """A regular model has lambda = d/2."""
    assert regular_lc(7) == 3.5


def test_normal_crossing_potential_value() -> None:
    """The module evaluates prod w_i^(2k_i), broadcast over the dummy data rows."""
    pot = NormalCrossingPotential((1, 2))
    with torch.no_grad():
        pot.w.copy_(torch.tensor([2.0, -3.0]))
    x, y = potential_data(5)
    out = pot(x)
    assert out.shape == (5,)
    assert potential_loss(out, y).item() == pytest.approx(4.0 * 81.0)


def test_quadratic_potential_minimum() -> None:
    """The quadratic potential starts at its minimum and is positive definite."""
    pot = QuadraticPotential(4, seed=1)
    x, _ = potential_data(3)
    assert pot(x).abs().max().item() == 0.0
    assert torch.linalg.eigvalsh(pot.hessian).min().item() > 0.9


@pytest.mark.parametrize(
    ("widths", "rank"),
    [([10, 6, 6, 10], 2), ([10, 6, 6, 10], 1), ([10, 6, 6, 10], 0), ([5, 3, 5], 0),
     ([4, 4, 4, 4], 4)],
)
def test_make_dln_is_realisation(widths: list[int], rank: int) -> None:
    """w* multiplies out to the well-conditioned true matrix of the requested rank and the
    data are exactly realisable (L_n(w*) = 0)."""
    prob = make_dln(widths, rank, n=50, seed=3)
    product = torch.eye(widths[0])
    for layer in prob.model:
        product = layer.weight.detach() @ product
    torch.testing.assert_close(product, prob.true_matrix, atol=1e-5, rtol=1e-5)
    sv = torch.linalg.svdvals(prob.true_matrix)
    assert int((sv > 1e-4).sum()) == rank
    if rank:
        assert sv[:rank].min().item() >= 1.0 - 1e-5 and sv[0].item() <= 2.0 + 1e-5
    x, y = prob.data
    assert x.shape == (50, widths[0]) and y.shape == (50, widths[-1])
    assert dln_loss(prob.model(x), y).item() == 0.0
    assert prob.learning_coefficient == dln_learning_coefficient(widths, rank)
