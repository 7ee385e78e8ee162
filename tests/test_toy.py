"""The toy landscapes study: models, SGD, grid posterior, noise, λ̂ against exact values."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

from critperiods.measure.llc import LLCConfig
from critperiods.pipeline.plan import ConfigError
from critperiods.toy import noise, posterior
from critperiods.toy.cube import flag_names
from critperiods.toy.landscapes import (
    Landscape,
    ToyModel,
    empirical_loss,
    excess_loss,
    make_data,
    squared_error,
)
from critperiods.toy.llc_check import FLAGS, excess_above_minimum, llc_quality
from critperiods.toy.measure import (
    ToyParams,
    ToyRunError,
    cell_seed,
    convergence_exponent,
    escape_shares,
    hitting_quartiles,
    initial_points,
    llc_at,
    measure_landscape,
)
from critperiods.toy.plan import check_toy_config, job_params, landscapes
from critperiods.toy.sgd import minibatch_gradient, run_sgd

ROOT = Path(__file__).resolve().parents[1]
SOME = ["line_k1", "line_k3", "sum_k1-1", "sum_k2-3", "product_k1-1", "product_k1-2",
        "product_k3-2"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOME)
def test_landscape_names_round_trip(name):
    assert Landscape.parse(name).name == name


@pytest.mark.parametrize("bad", ["line_k1-2", "sum_k2", "cube_k1", "product_k0-1", "line_k0"])
def test_a_malformed_landscape_name_is_refused_with_the_name(bad):
    with pytest.raises(ValueError, match=bad.split("_")[0]):
        Landscape.parse(bad)


@pytest.mark.parametrize("name", SOME)
def test_jacobian_and_hessian_of_the_loss_match_autograd(name):
    land = Landscape.parse(name)
    data = make_data(land, 50, 0.5, 3)
    w = torch.randn(4, land.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for i in range(len(w)):
        jac = torch.autograd.functional.jacobian(land.features, w[i])
        assert torch.allclose(land.jacobian(w[i : i + 1])[0], jac)
        hess = torch.autograd.functional.hessian(
            lambda v: empirical_loss(land, data, v), w[i])
        assert torch.allclose(noise.loss_hessian(land, data, w[i : i + 1])[0], hess)


def test_population_loss_has_the_stated_form_near_w_star():
    """With S = I the excess loss is ½ w^(2k), ½ (w1^(2k1) + w2^(2k2)), ½ w1^(2k1) w2^(2k2)."""
    w = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    for name, expected in (("line_k3", 0.5 * 0.7**6), ("sum_k1-2", 0.5 * (0.7**2 + 0.4**4)),
                           ("product_k2-1", 0.5 * 0.7**4 * 0.4**2)):
        land = Landscape.parse(name)
        data = make_data(land, 10, 1.0, 0)
        data = type(data)(torch.eye(land.n_features, dtype=torch.float64).repeat(5, 1)
                          * math.sqrt(land.n_features),
                          torch.zeros(5 * land.n_features, dtype=torch.float64), 1.0)
        assert float(excess_loss(land, data, w[:, : land.dim])) == pytest.approx(expected)


def test_finite_temperature_target_of_the_estimator():
    """Without localisation a monomial's E[nβ ½ w^(2k)] is 1/(2k) at any nβ; products stay
    below λ (multiplicity 2: far below) at the pipeline's nβ = n / ln n."""
    for name in ("line_k1", "line_k3", "sum_k1-2"):
        land = Landscape.parse(name)
        assert land.tempered_target(50.0, 0.0) == pytest.approx(land.learning_coefficient,
                                                                 rel=1e-6)
        assert land.tempered_target(50.0, 1.0) < land.learning_coefficient
    nbeta = 1000 / math.log(1000)
    assert Landscape.parse("product_k1-2").tempered_target(nbeta, 1.0) == pytest.approx(
        0.202, abs=0.002)
    assert Landscape.parse("product_k1-1").tempered_target(nbeta, 1.0) < 0.75 * 0.5
    assert math.isnan(Landscape.parse("product_k1-1").tempered_target(nbeta, 0.0))


def test_exact_learning_coefficients():
    assert Landscape.parse("line_k3").learning_coefficient == pytest.approx(1 / 6)
    assert Landscape.parse("sum_k1-2").learning_coefficient == pytest.approx(0.75)
    assert Landscape.parse("product_k1-3").learning_coefficient == pytest.approx(1 / 6)
    assert Landscape.parse("product_k2-2").learning_coefficient == pytest.approx(0.25)
    assert Landscape.parse("product_k2-2").multiplicity == 2
    assert Landscape.parse("product_k1-2").multiplicity == 1
    assert Landscape.parse("sum_k2-2").multiplicity == 1


def test_orthogonal_noise_puts_the_empirical_minimum_at_w_star():
    land = Landscape.parse("sum_k1-1")
    data = make_data(land, 300, 0.7, 5)
    assert torch.allclose(data.cross_moment, torch.zeros(2, dtype=torch.float64), atol=1e-14)
    assert data.mean_square_target == pytest.approx(0.49)
    raw = make_data(land, 300, 0.7, 5, orthogonal_noise=False)
    assert float(raw.cross_moment.abs().max()) > 1e-3


# -- SGD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOME)
def test_minibatch_gradient_is_the_gradient_of_the_minibatch_loss(name):
    land = Landscape.parse(name)
    data = make_data(land, 40, 1.0, 2)
    w = torch.randn(6, land.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batches = torch.randint(40, (6, 5), generator=torch.Generator().manual_seed(1))
    moments = data.per_sample_moments()[batches].mean(1)
    def batch_loss(v, xb, yb):
        return squared_error(xb @ land.features(v), yb)

    for i in range(6):
        grad = torch.func.grad(batch_loss)(w[i], data.x[batches[i]], data.y[batches[i]])
        assert torch.allclose(minibatch_gradient(land, w[i : i + 1], moments[i : i + 1])[0],
                              grad)


def test_sgd_is_deterministic_given_the_seed():
    land = Landscape.parse("product_k1-2")
    data = make_data(land, 100, 1.0, 0)
    start = torch.full((64, 2), 0.5, dtype=torch.float64)
    a = run_sgd(land, data, start, 0.05, 8, 50, seed=3, thresholds=[1e-2])
    b = run_sgd(land, data, start, 0.05, 8, 50, seed=3, thresholds=[1e-2])
    c = run_sgd(land, data, start, 0.05, 8, 50, seed=4, thresholds=[1e-2])
    assert torch.equal(a.endpoints, b.endpoints) and torch.equal(a.hitting_steps, b.hitting_steps)
    assert not torch.equal(a.endpoints, c.endpoints)
    assert len(torch.unique(a.endpoints[:, 0])) == 64, "every run draws its own minibatches"


def test_regular_case_converges_geometrically_at_the_rate_of_curvature_and_learning_rate():
    """E[w_t] = (I − lr S)^t w_0 exactly for a regular quadratic: the mean over 4096 runs
    falls at that rate (1-D: factor 1 − lr S per step), to within 1 %."""
    lr, steps = 0.1, [0, 5, 10, 15, 20]
    land = Landscape.parse("line_k1")
    data = make_data(land, 500, 1.0, 0)
    start = torch.ones(4096, 1, dtype=torch.float64)
    means = [float(run_sgd(land, data, start, lr, 8, t, seed=0).endpoints.mean()) for t in steps]
    rate = math.exp(np.polyfit(steps, np.log(means), 1)[0])
    expected = 1 - lr * float(data.second_moment)
    assert rate == pytest.approx(expected, rel=0.01)

    land2 = Landscape.parse("sum_k1-1")
    data2 = make_data(land2, 500, 1.0, 1)
    start2 = torch.tensor([[1.0, -0.5]], dtype=torch.float64).repeat(4096, 1)
    mean = run_sgd(land2, data2, start2, lr, 8, 15, seed=1).endpoints.mean(0)
    exact = torch.linalg.matrix_power(torch.eye(2, dtype=torch.float64)
                                      - lr * data2.second_moment, 15) @ start2[0]
    assert torch.allclose(mean, exact, atol=0.01), (mean, exact)


def test_degenerate_landscapes_converge_by_a_power_law():
    """From the far start, the median steps to reach a threshold grow like threshold^−p with
    p near gradient flow's 1 − 1/k (0.5 for k = 2; measured here within 0.1)."""
    land = Landscape.parse("line_k2")
    data = make_data(land, 500, 1.0, 0)
    thresholds = np.array([3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4])
    res = run_sgd(land, data, torch.full((256, 1), 0.8, dtype=torch.float64), 0.05, 32, 1500,
                  seed=0, thresholds=thresholds)
    median = np.median(res.hitting_steps.numpy(), 0).astype(float)
    assert convergence_exponent(thresholds, median) == pytest.approx(0.5, abs=0.1)
    assert land.gradient_flow_exponent == 0.5


def test_convergence_exponent_recovers_a_power_law_and_refuses_too_few_points():
    thresholds = np.geomspace(1e-1, 1e-4, 6)
    assert convergence_exponent(thresholds, 3.0 * thresholds**-0.7) == pytest.approx(0.7)
    steps = 3.0 * thresholds**-0.7
    steps[2:] = np.nan
    assert math.isnan(convergence_exponent(thresholds, steps))


def test_escape_shares_classify_the_moved_coordinates():
    ends = np.array([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.0, 0.0]])
    assert escape_shares(ends, np.zeros(2), 0.05).tolist() == [0.25, 0.25, 0.25, 0.25]
    assert escape_shares(ends[:, :1], np.zeros(1), 0.05).tolist() == [0.5, 0.0, 0.0, 0.5]
    assert np.isnan(escape_shares(ends[:0], np.zeros(2), 0.05)).all()  # every run diverged
    quartiles, reached = hitting_quartiles(np.zeros((0, 3), dtype=int))
    assert quartiles.shape == (3, 3) and np.isnan(quartiles).all() and np.isnan(reached).all()


def _tiny_params(**sgd) -> ToyParams:
    """The tiny test config's toy section with the schema's defaults filled in."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(yaml.safe_load((ROOT / "tests/configs/toy_tiny.yaml").read_text()))
    config["toy"]["sgd"].update(sgd)
    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    return ToyParams.from_config(job_params(config["toy"]))


def test_diverged_runs_are_neither_stuck_nor_measured():
    """At lr 1.2 on line_k2 runs of every ensemble blow up: they count in
    diverged_fraction, not as "stuck" near the start, and no λ̂ is estimated at a diverged
    endpoint."""
    land = Landscape.parse("line_k2")
    params = _tiny_params(lrs=[1.2], batch_sizes=[4], trajectories=32, steps=100)
    params.llc.update(chains=2, draws=20, burn_in=5, endpoints=8)
    cell = measure_landscape(land, params).isel(lr=0, batch_size=0)
    diverged = cell.diverged_fraction.to_series()
    assert (diverged > 0).all(), diverged
    assert float(cell.escape_fraction.sum()) == pytest.approx(1.0)  # shares of the rest
    near = cell.endpoint.sel(start="near", weight="w1").values
    kept = np.isfinite(near) & (np.abs(near) <= 1e6)
    stuck = np.mean(np.abs(near[kept]) <= params.escape["radius"])  # centre w* = 0
    assert float(cell.escape_fraction.sel(escape="none")) == pytest.approx(stuck)
    # the same runs again: convergence counts only the far-start runs that did not diverge
    data = make_data(land, params.data["n"], params.data["noise_std"],
                     cell_seed(params.data["seed"], land.name), params.data["orthogonal_noise"])
    seed = cell_seed(params.sgd["seed"], land.name, 1.2, 4)
    thresholds = np.asarray(params.convergence["thresholds"], float)
    again = run_sgd(land, data, initial_points(land, params, seed), 1.2, 4, 100, seed,
                    thresholds=thresholds, track=32)
    kept = ~again.diverged.numpy()[:32]
    np.testing.assert_allclose(cell.converged_fraction,
                               (again.hitting_steps.numpy()[kept] >= 0).mean(0))
    far = cell.endpoint.sel(start="far", weight="w1").values[:8]
    gone = ~np.isfinite(far) | (np.abs(far) > 1e6)
    assert gone.any() and not gone.all()
    assert np.isnan(cell.llc_mean.values[gone]).all()
    assert np.isfinite(cell.llc_mean.values[~gone]).all()


def test_a_learning_rate_that_leaves_no_run_fails_naming_the_key():
    land = Landscape.parse("line_k2")
    params = _tiny_params(lrs=[3.0], batch_sizes=[4], trajectories=16, steps=100)
    with pytest.raises(ToyRunError, match=r"line_k2, lr 3, batch 4: all 16 prior-start.*"
                                          r"toy\.sgd\.lrs"):
        measure_landscape(land, params)


# -- grid posterior ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["line_k1", "line_k3", "sum_k1-2", "product_k1-1"])
def test_grid_posterior_normalises(name):
    land = Landscape.parse(name)
    data = make_data(land, 200, 1.0, 0)
    grid = posterior.make_grid(1.0, 200, 4.0)
    post = posterior.grid_posterior(land, data, 500.0, grid)
    assert post.mass.sum() == pytest.approx(1.0, abs=1e-12)
    assert (post.mass >= 0).all()
    density = np.exp(posterior.log_density(
        post, land, data, np.stack(np.meshgrid(*[grid.centres] * land.dim, indexing="ij"), -1)))
    area = np.prod(np.meshgrid(*[grid.widths] * land.dim, indexing="ij"), axis=0)
    assert float((density * area).sum()) == pytest.approx(1.0, abs=1e-9)


def test_grid_posterior_of_a_regular_landscape_is_the_gaussian():
    land = Landscape.parse("line_k1")
    data = make_data(land, 500, 1.0, 2)
    nbeta = 400.0
    post = posterior.grid_posterior(land, data, nbeta, posterior.make_grid(1.0, 400, 4.0))
    expected = 1.0 / math.sqrt(nbeta * float(data.second_moment))
    assert post.std()[0] == pytest.approx(expected, rel=1e-3)


def test_distances_are_at_the_sampling_level_for_a_posterior_sample_and_large_otherwise():
    land = Landscape.parse("sum_k1-2")
    data = make_data(land, 500, 1.0, 0)
    post = posterior.grid_posterior(land, data, 200.0, posterior.make_grid(1.0, 200, 4.0))
    exact = posterior.posterior_sample(post, 4000, seed=0)
    collapsed = exact * np.array([1.0, 0.2])  # w2 pulled towards 0, as SGD does
    w1_exact = posterior.wasserstein_per_coordinate(exact, post)
    w1_collapsed = posterior.wasserstein_per_coordinate(collapsed, post)
    assert (w1_exact < 0.01).all()
    assert w1_collapsed[1] > 10 * w1_exact[1]
    assert posterior.kl_divergence(exact, post, 20) < 0.05
    assert posterior.kl_divergence(collapsed, post, 20) > 0.5


def test_matched_temperature_makes_sgd_sample_a_regular_posterior():
    """nβ = 2B / (lr σ²): SGD's stationary spread on w² equals the posterior's (within 5 %)."""
    land = Landscape.parse("line_k1")
    data = make_data(land, 1000, 1.0, 0)
    lr, batch = 0.02, 8
    ends = run_sgd(land, data, torch.zeros(4096, 1, dtype=torch.float64), lr, batch, 800,
                   seed=0).endpoints.numpy()
    post = posterior.grid_posterior(land, data, posterior.matched_nbeta(lr, batch, 1.0),
                                    posterior.make_grid(1.0, 400, 4.0))
    assert ends.std() == pytest.approx(post.std()[0], rel=0.05)


# -- noise --------------------------------------------------------------------------------------


def test_noise_covariance_of_a_regular_quadratic_matches_its_closed_form():
    """Linear regression (sum_k1-1): C(w) = mean r² x xᵀ − (mean r x)(mean r x)ᵀ with
    r = x·w − y; at w* it is mean ε² x xᵀ ≈ σ² S = σ² H; a minibatch of B (with replacement)
    has C / B, checked on 20000 one-step SGD runs."""
    land = Landscape.parse("sum_k1-1")
    data = make_data(land, 4000, 0.8, 0)
    w = torch.tensor([[0.3, -0.2], [0.0, 0.0]], dtype=torch.float64)
    cov = noise.noise_covariance(land, data, w)
    x, y = data.x.numpy(), data.y.numpy()
    for i, point in enumerate(w.numpy()):
        r = x @ point - y
        m = (r[:, None] * x).mean(0)
        closed = (r[:, None, None] ** 2 * x[:, :, None] * x[:, None, :]).mean(0) - np.outer(m, m)
        assert np.allclose(cov[i].numpy(), closed, atol=1e-12)
    hess = noise.loss_hessian(land, data, w)
    assert torch.allclose(hess[0], data.second_moment) and torch.allclose(hess[1], hess[0])
    fit = noise.fit_proportionality(cov[1:], hess[1:])
    assert fit.ratio == pytest.approx(0.64, rel=0.05)
    assert fit.relative_error < 0.1

    lr, batch = 0.1, 16
    start = w[:1].repeat(20000, 1)
    step = (start - run_sgd(land, data, start, lr, batch, 1, seed=0).endpoints) / lr
    empirical = torch.cov(step.T)
    assert torch.allclose(empirical, cov[0] / batch, rtol=0.05, atol=0.05 * float(cov[0].max()))


def test_noise_is_proportional_to_the_hessian_along_a_degenerate_direction():
    """Along w^k (k = 2) both vanish like w^(2k−2); C = σ² k/(2k−1) H = σ² J^T S J."""
    land = Landscape.parse("line_k2")
    data = make_data(land, 4000, 1.0, 0)
    w = torch.linspace(-0.2, 0.2, 41, dtype=torch.float64)[:, None]
    cov = noise.noise_covariance(land, data, w)
    fit = noise.fit_proportionality(cov, noise.loss_hessian(land, data, w))
    assert fit.ratio == pytest.approx(2 / 3, rel=0.05)
    assert fit.r2 > 0.999
    gn = noise.fit_proportionality(cov, noise.gauss_newton(land, data, w))
    assert gn.ratio == pytest.approx(1.0, rel=0.05)


def test_fit_proportionality_is_exact_for_proportional_matrices():
    h = torch.randn(10, 2, 2, dtype=torch.float64)
    fit = noise.fit_proportionality(3.0 * h, h)
    assert fit.ratio == pytest.approx(3.0) and fit.relative_error == pytest.approx(0, abs=1e-12)
    assert math.isnan(noise.fit_proportionality(h, torch.zeros_like(h)).ratio)


# -- λ̂ against the exact coefficient ----------------------------------------------------------

LLC_TOLERANCE = 0.15  # relative: ~5 % chain noise, ≤ 7 % discretisation and localisation


@pytest.mark.parametrize("name", ["line_k1", "line_k2", "sum_k1-1", "sum_k1-2"])
def test_exact_learning_coefficient_matches_the_estimator(name):
    """λ̂ at w* by critperiods.measure.llc.estimate_llc (nβ = n / ln n, 4 chains × 1500 draws, the
    study's defaults) is within 15 % of the exact λ.  For these separable, multiplicity-1
    landscapes the finite-nβ target equals λ up to the localisation (−1 to −4 %), and the
    SGLD step adds about step·nβ/4 = +7 % on a regular coordinate."""
    land = Landscape.parse(name)
    data = make_data(land, 1000, 1.0, 0)
    llc = dict(chains=4, draws=1500, burn_in=300, step_size=2e-3, gamma=1.0, nbeta=None,
               batch_size=None, seed=0)
    got = llc_at(land, data, np.zeros(land.dim), llc, name)
    assert got["mean"] == pytest.approx(land.learning_coefficient, rel=LLC_TOLERANCE), got
    quality = llc_quality(got["mean"], got["diverged_chains"], got["rhat"], got["trend_z"],
                          got["bias"])
    assert got["bias"] == 0 and quality == 0, got  # w* is the minimum: nothing to flag


def test_lambda_hat_off_the_minimum_comes_off_by_its_recorded_bias_and_is_flagged():
    """The toy study's hot endpoints: a sum's regular coordinate left a temperature's spread
    from w*. λ̂ there plus nβ ΔL (``bias``) is λ̂ at w*, to the chains' noise, and the
    estimate is flagged not_at_minimum; at w* nothing is flagged."""
    land = Landscape.parse("sum_k1-2")
    data = make_data(land, 1000, 1.0, 0)
    llc = dict(chains=4, draws=1500, burn_in=300, step_size=2e-3, gamma=1.0, nbeta=None,
               batch_size=None, seed=0)
    star = llc_at(land, data, np.zeros(2), llc, "w*")
    off = llc_at(land, data, np.array([0.08, 0.0]), llc, "off")
    assert off["bias"] > 0.3  # nβ · ½ S₁₁ 0.08² ≈ 145 · 0.0032
    assert off["mean"] + off["bias"] == pytest.approx(star["mean"], abs=0.05), (off, star)
    flags = llc_quality(np.array([star["mean"], off["mean"]]),
                        np.array([star["diverged_chains"], off["diverged_chains"]]),
                        np.array([star["rhat"], off["rhat"]]),
                        np.array([star["trend_z"], off["trend_z"]]),
                        np.array([star["bias"], off["bias"]]))
    assert flags[0] == 0 and int(flags[1]) & FLAGS["not_at_minimum"]


def test_excess_above_minimum_is_the_descent_to_the_basin_minimum():
    """0 at w* and on a product's line of minima; the closed-form excess where the minimum
    is w* (orthogonal noise); NaN for a diverged point."""
    sum_ = Landscape.parse("sum_k1-1")
    data = make_data(sum_, 1000, 1.0, 0)
    point = np.array([0.3, -0.2])
    assert excess_above_minimum(sum_, data, np.zeros(2)) == 0
    assert excess_above_minimum(sum_, data, point) == pytest.approx(
        float(excess_loss(sum_, data, torch.from_numpy(point))), rel=1e-6)
    product = Landscape.parse("product_k1-2")
    pdata = make_data(product, 1000, 1.0, 0)
    assert excess_above_minimum(product, pdata, np.array([0.0, 0.8])) == pytest.approx(0, abs=1e-12)
    assert excess_above_minimum(product, pdata, np.array([0.2, 0.8])) > 0
    assert np.isnan(excess_above_minimum(sum_, data, np.array([np.nan, 0.0])))


def test_llc_quality_adds_not_at_minimum_to_the_stage_flags():
    mean = np.array([0.5, 0.5, -0.1, np.nan, 0.5])
    bias = np.array([0.01, 0.2, 0.0, np.nan, 0.05])
    diverged = np.array([0, 0, 0, np.nan, 0])
    rhat, trend = np.array([1.0, 1.0, 1.0, np.nan, 1.3]), np.zeros(5)
    got = llc_quality(mean, diverged, rhat, trend, bias, max_endpoint_bias=0.1)
    assert got[0] == 0  # 0.01 of 0.51: within 10 %
    assert got[1] == FLAGS["not_at_minimum"]  # 0.2 of 0.7
    assert int(got[2]) & FLAGS["negative"]
    assert np.isnan(got[3])  # no estimate made (the SGD run diverged)
    assert got[4] == FLAGS["not_converged"]  # 0.05 of 0.55 is within 10 %
    assert flag_names(got[1]) == "not_at_minimum" and flag_names(0.0) == "ok"
    unmeasured = llc_quality(np.array([0.5]), np.zeros(1), np.ones(1), np.zeros(1),
                             np.array([np.nan]))
    assert unmeasured[0] == FLAGS["not_at_minimum"]  # a bias that could not be measured
    assert llc_quality(np.array([0.5]), np.zeros(1), np.array([1.07]), np.zeros(1),
                       np.zeros(1), max_rhat=1.05)[0] == FLAGS["not_converged"]
    assert flag_names(float("nan")) == "n/a"


def test_the_toy_model_is_an_ordinary_module_for_the_estimator():
    land = Landscape.parse("product_k1-2")
    model = ToyModel(land, torch.tensor([0.5, -0.3]))
    data = make_data(land, 20, 1.0, 0)
    loss = squared_error(model(data.x), data.y).detach()
    assert float(loss) == pytest.approx(float(empirical_loss(land, data, model.w.detach())))
    assert [n for n, _ in model.named_parameters()] == ["w"]
    assert LLCConfig(batch_size=None).batch_size is None


# -- config ---------------------------------------------------------------------------------------


def _toy(**changes) -> dict:
    toy = {
        "landscapes": {"line": [1, 2], "sum": [[1, 2]], "product": [[2, 1]]},
        "data": {}, "sgd": {"trajectories": 8}, "convergence": {},
        "starts": {"far": 0.8, "near_radius": 0.002, "manifold_point": 0.8,
                   "prior_half_width": 1.0},
        "escape": {"radius": 0.005}, "posterior": {"cells": 40, "kl_bins": 10},
        "llc": {"endpoints": 1},
    }
    for key, value in changes.items():
        section, name = key.split("__")
        toy[section][name] = value
    return toy


def test_every_report_figure_has_a_plotter_and_a_caption():
    from pathlib import Path

    from critperiods.toy.figures import FIGURE_LABELS
    from critperiods.toy.plots import PLOTTERS

    assert set(PLOTTERS) == set(FIGURE_LABELS)
    report = Path(__file__).resolve().parents[1] / "workflow/report"
    for name in FIGURE_LABELS:
        assert (report / f"{name}.rst").read_text().strip(), name


def test_landscape_labels_overlap_neither_each_other_nor_other_markers():
    """Five landscapes share λ = 1/4 in the shipped study; their names used to print on top
    of each other. Placed by _label_apart, no two labels overlap, nor a label another
    point's marker."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    from critperiods.toy.plots import _label_apart

    points = [(0.25, 0.24 - 0.01 * i, f"product_k{i}") for i in range(5)]
    points += [(1 / 6, 0.16, "line_k3"), (1 / 8, 0.12, "line_k4"), (1.0, 1.0, "sum_k1-1")]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.set_xlim(0, 1.2), ax.set_ylim(0, 1.2)
    _label_apart(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    plt.close(fig)
    assert sorted(boxes) == sorted(name for *_, name in points)
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not boxes[a].overlaps(boxes[b]), (a, b)
    centres = ax.transData.transform([(x, y) for x, y, _ in points])
    for (cx, cy), (*_, owner) in zip(centres, points, strict=True):
        marker = Bbox.from_bounds(cx - 5, cy - 5, 10, 10)
        assert not any(box.overlaps(marker) for name, box in boxes.items() if name != owner)


def test_config_lists_landscapes_in_kind_order_and_jobs_see_no_landscape_list():
    assert [x.name for x in landscapes(_toy())] == ["line_k1", "line_k2", "sum_k1-2",
                                                     "product_k2-1"]
    assert "landscapes" not in job_params(_toy())
    check_toy_config(_toy())


@pytest.mark.parametrize(("change", "key"), [
    ({"posterior__kl_bins": 7}, "toy.posterior.kl_bins"),
    ({"starts__far": 2.0}, "toy.starts.far"),
    ({"escape__radius": 0.001}, "toy.escape.radius"),
    ({"llc__endpoints": 9}, "toy.llc.endpoints"),
    ({"landscapes__line": [1, 1]}, "toy.landscapes.line"),
])
def test_inconsistent_toy_config_fails_naming_the_key(change, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_toy_config(_toy(**change))


def _summary_rows():
    """Three landscapes' summary rows (the columns of toy.cube.summary_table)."""
    import pandas as pd

    return pd.DataFrame({
        "lambda": [0.5, 0.25, 0.5], "m": [1, 1, 2], "target": [0.5, 0.24, 0.35],
        "llc_at_w*": [0.52, 0.24, 0.28], "w*_flags": ["ok", "ok", "not_converged"],
        "llc_at_end": [0.51, 0.216, float("nan")], "llc_end_err_%": [2.0, -13.6, float("nan")],
        "end_n": [4, 3, 0], "end_flagged": [0, 1, 4],
        "exponent": [0.12, 0.52, 0.70], "exponent_gf": [0.0, 0.5, 0.5],
        "escape_w1": [0.9, 0.0, 0.5], "escape_w2": [0.0, 0.0, 0.2], "escape_both": [0, 0, 0.2],
        "stuck": [0.1, 0.98, 0.1], "W1": [0.001, 0.04, 0.03], "W1_null": [0.001, 0.004, 0.01],
        "KL": [0.0, 1.0, 0.5], "KL_null": [0.0, 0.01, 0.2], "noise/H": [0.93, 0.58, 0.8],
        "R2": [1.0, 1.0, 0.95], "R2_min": [1.0, 1.0, 0.90], "H<=0_hot": [0.0, 0.03, 0.4],
        "exponent_cells": [4, 4, 4],
        "noise/GN": [0.93, 0.88, 1.02], "diverged": [0.0, 0.0, 0.25],
    }, index=pd.Index(["line_k1", "line_k2", "product_k1-1"], name="landscape"))


def test_the_toy_report_page_answers_each_finding_from_the_summary(tmp_path):
    """The toy report opens on this run's answer: the exponents off gradient flow's by more
    than the tolerance named, stuck and escaping landscapes, the span of noise / Hessian,
    which endpoints sit at the posterior's sampling level, λ̂ against the finite-nβ target
    with its flags, and the runs that diverged. Rendered by docutils, as Snakemake does."""
    from docutils.core import publish_parts

    from critperiods.toy.report_page import answer_lines, table_rst

    table = _summary_rows()
    table.loc["line_k2", "exponent_cells"] = 3
    lines = answer_lines(table, n_cells=4, hot=(0.05, 4))
    assert "within 0.1 of gradient flow's on 1 of 3 landscapes; off by more: line_k1 0.12 " \
           "against 0.00, product_k1-1 0.70 against 0.50; fitted in only some cells, and " \
           "averaged over those, on line_k2 (3 of 4)." in lines[0]
    assert "≥ 90 % on line_k2; ≤ 20 % on line_k1, product_k1-1." in lines[1]
    # R² of the worst cell, not the mean; the 3 % of line_k2 is under the 5 % named
    assert "c 0.58–0.93 (R² 0.900–1.000 in the worst cell), and 0.88–1.02 times the " \
           "Gauss–Newton" in lines[2]
    assert "in the cell with the most noise (lr 0.05, B 4) at 40 % of product_k1-1's " \
           "endpoints (along one coordinate" in lines[2]
    # its worst cell's R² is 0.90: the line does not call it high (it always did)
    assert "stays high" not in lines[2]
    high = table.copy()
    high.loc["product_k1-1", "R2_min"] = 0.99
    assert "(along one coordinate; R², a fit over all entries, stays high)." in answer_lines(
        high, n_cells=4, hot=(0.05, 4))[2]
    assert "line_k2" not in lines[2]
    assert "differ on 2 of 3 landscapes: W1 is 3.0–10.0× an exact posterior sample's level " \
           "on line_k2, product_k1-1; at that level (≤ 2×) on line_k1." in lines[3]
    # against λ: at w* 0.52/0.5 = +4 %, 0.24/0.25 = −4 %, 0.28/0.5 = −44 %; ends +2, −14 %;
    # the target 0, −4, −30 %; against the target: at w* 4, 0, 20 %; ends 2, 10 %
    assert "λ̂ against the exact λ** — at w* −44 to +4 %, at far-start SGD endpoints (means " \
           "of the estimates not flagged) −14 to +2 %" in lines[4]
    assert "is itself −30 to 0 % off λ" in lines[4]
    assert "off by 0–20 % at w* (flagged: product_k1-1 not_converged)" in lines[4]
    assert "by 2–10 % at the endpoints (7 endpoint estimates are not flagged and 5 flagged " \
           "and left out; none unflagged on product_k1-1)." in lines[4]
    assert lines[5].startswith("* Runs that diverged: up to 25% of a cell's (product_k1-1)")
    html = publish_parts(table_rst(table), writer="html")["body"]
    assert html.count("<tr") == 4 and "0.280 (not_converged)" in html and "n/a (0 / 4)" in html
    assert "10.0×" in html


def test_the_toy_report_page_says_how_its_numbers_were_made_with_the_runs_settings():
    """The page closes on the protocol with the settings the cube recorded, not on the
    blur-switch study's description."""
    from critperiods.toy.report_page import protocol

    toy = {"data": {"n": 200, "orthogonal_noise": True},
           "sgd": {"trajectories": 64, "steps": 300}, "posterior": {"nbeta": None},
           "llc": {"chains": 2, "burn_in": 20, "draws": 60}}
    said = protocol(toy)
    assert f"{toy['sgd']['trajectories']} runs take {toy['sgd']['steps']} steps" in said
    assert "nβ = 2B / (lr σ²)" in said and "blurred" not in said
    assert "n = 200 samples with the noise projected off" in said
    assert "(2 chains × 20 + 60 steps)" in said
    toy["posterior"]["nbeta"] = 500.0
    assert "at nβ = 500," in protocol(toy)


def test_the_toy_report_page_survives_what_a_small_run_can_give():
    """An exponent that could not be fitted is not counted as agreeing, a sampling level of
    0 is not divided by, and no unflagged λ̂ at all is said in words, not "nan %"."""
    from critperiods.toy.report_page import answer_lines, table_rst

    table = _summary_rows()
    table.loc["line_k2", "exponent"] = np.nan
    table.loc["line_k1", "W1_null"] = 0.0
    table["llc_at_end"], table["end_n"] = np.nan, 0
    lines = answer_lines(table)
    assert "on 0 of 2 landscapes" in lines[0] and "not fitted (fewer than 3 thresholds " \
        "reached) on line_k2." in lines[0]
    assert "not compared on line_k1 (a sampling level of 0)" in lines[3]
    assert "differ on 2 of 2 landscapes: W1 is 3.0–10.0× an exact posterior sample's level " \
        "on line_k2, product_k1-1; not compared" in lines[3]  # "that level" never dangles
    assert lines[4].endswith("0 endpoint estimates are not flagged and 5 flagged and left out: no "
                             "unflagged estimate to compare.")
    assert "nan" not in " ".join(lines)
    rst = table_rst(table)
    assert "n/a (0.50)" in rst and "     - n/a\n" in rst


def test_the_toy_report_page_says_what_it_could_not_measure_instead_of_failing():
    """λ̂ at w* missing on a landscape (every chain diverged), or everywhere; no prior-start
    endpoint on a landscape; nothing compared: the page names each, never "nan" and never a
    crash."""
    from critperiods.toy.report_page import answer_lines, table_rst

    table = _summary_rows()
    table.loc["line_k2", "llc_at_w*"] = np.nan
    table.loc["product_k1-1", "W1"] = np.nan
    lines = answer_lines(table)
    assert "at w* −44 to +4 %" in lines[4] and "(no estimate at w* on line_k2)" in lines[4]
    assert "not measured on product_k1-1 (no prior-start endpoint)" in lines[3]
    assert "a sampling level of 0" not in lines[3]
    table["llc_at_w*"], table["W1"] = np.nan, np.nan
    lines = answer_lines(table)
    assert "at w* n/a" in lines[4] and "off by n/a at w*" in lines[4]
    assert "— not compared: W1 is not measured on line_k1, line_k2, product_k1-1" in lines[3]
    text = " ".join(lines) + table_rst(table)
    assert "nan" not in text and "inf" not in text


def test_the_toy_report_page_names_no_divergence_where_none_diverged():
    from critperiods.toy.report_page import answer_lines

    table = _summary_rows()
    table["diverged"] = 0.0
    assert not any("diverged" in line for line in answer_lines(table))
