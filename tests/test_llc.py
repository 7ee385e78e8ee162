"""Validation of the batched SGLD LLC estimator against exact learning coefficients.

Measured on the 2-core CPU box (deterministic for a fixed seed on that box).  Potentials:
nbeta = 1e4, gamma = 1, 16 chains x (2000 + 8000) steps, full batch; the test uses seed 1,
seed 0 is shown to make the run-to-run spread visible.  Every chain has its own random stream
(``critperiods.measure.llc.chain_seed``) since 2026-11-29; the numbers in brackets are those of the
earlier sampler, whose chains shared one stream (same seeds), to show the spread.

=====================  =====  ===================  =====================  =====================
case                   true   finite-nbeta target  estimate seed 1        estimate seed 0
=====================  =====  ===================  =====================  =====================
K=w1^2 w2^2 (k=1,1)    0.5    0.4123               0.418 -16.4% [+0.7%]   0.414 -17.1% [-13.8%]
K=w1^2 w2^4 (k=1,2)    0.25   0.2358               0.219 -12.6% [+5.0%]   0.222 -11.1% [-6.8%]
K=w1^4 w2^4 (k=2,2)    0.25   0.1785               0.165 -34.0% [-18.6%]  0.168 -32.8% [-26.6%]
K=w1^2 w2^6 (k=1,3)    1/6    0.1579               0.138 -17.0% [+2.6%]   0.147 -12.0% [-8.9%]
quadratic d=6          3.0    2.999                3.055 +1.8% [s0]       -
DLN [10,6,6,10] r=2    26     -                    25.95 -0.2% [s0]       26.06 +0.2% [s1]
DLN [10,6,6,10] r=1    22     -                    20.72 -5.8% [s0]       20.91 -5.0% [s1]
DLN [10,6,6,10] r=0    17.5   -                    16.45 -6.0% [s0]       16.42 -6.2% [s1]
DLN [4,4,4,4] r=4      8      -                    8.13 +1.7% [s0]        8.06 +0.7% [s1]
DLN [5,3,5] r=0        6.5    -                    6.19 -4.7% [s0]        6.26 -3.7% [s1]
rmsprop_sgld quad d=6  3.0    -                    3.076 +2.5% [s0]       -
=====================  =====  ===================  =====================  =====================

The potentials mix slowly (curvature grows like nbeta along the arms, so the step size must be
tiny while the arms need O(1/gamma) time to explore): one seed's estimate moves by 10-20% with
the random stream (compare the brackets), so the spec's 0.05 absolute tolerance is what they
meet; the deep-linear and regular cases are the precise checks.  For multiplicity-2 potentials
((1,1), (2,2)) the estimator's exact target, E[nbeta K] under the tempered localised
posterior, is itself below lambda by about (m-1)/log t (0.088 and 0.072 here; still
0.049/0.043 at t = 1e8, where SGLD is too stiff to mix), so their comparison with the true
lambda is marked xfail (strict: it fails by the bias, so passing would mean the sampler
changed) instead of loosening it; (1,1) against its finite-nbeta target passes at the test's
seed (+1.4%; it swung from +22% with the shared stream).

The regular quadratic: 16 chains x (600 + 6000) steps at eps = 2e-5, nbeta = 1000 (seeds
0-2: 3.055, 3.047, 3.054; 32 x (2000 + 20000): 3.04-3.05, the small excess being SGLD's
step-size bias; 8 x (300 + 3000) scattered 2.86-3.04).

Deep linear networks (``test_deep_linear_network``, [s0] = the test's seed 0, [s1] = seed 1
for the spread): full batch, n = 100, nbeta = 1000, gamma = 1; 8 chains x (2000 + 8000)
steps at eps = 3e-5 for r=2, 16 chains x (2000 + 6000) at eps = 3e-5 / 5e-5 / 1e-4 for
[10,6,6,10] r=1 / [10,6,6,10] r=0 / [5,3,5] r=0 and 16 x (1000 + 4000) at eps = 5e-6 for the
full-rank [4,4,4,4] (larger steps overestimate it: +2.8% at 1e-5, +5% at 3e-5).  The tolerance
is 5%, except 10% for the rank-deficient [10,6,6,10] r=1 and r=0, which sit 5-6% low at this
budget with every seed tried: r=1 -5.8 / -5.0 / -5.1 / -5.1% (seeds 0-3; -3.2 / -4.3 / -5.4 /
-5.0% with the shared stream), r=0 -6.0 / -6.2 / -6.1 / -6.3%.  Caveat, measured: these are
plateau values of runs of this length.  The chains keep drifting slowly along the
flat (gauge / zero-set) directions, where O(1/(eps gamma)) ~ 2e4-3e4 steps are needed to
equilibrate, towards regions where the finite-temperature local coefficient is larger: mean
nbeta (L_B - L_n) over steps 27.5k-30k is 23.8 (+8%) for r=1 (eps 3e-5) and 20.1 (+15%)
over steps 33k-36k for r=0, and 24-25 (+40%) for r=0 at eps 1e-4 after 15k steps, so for the
rank-deficient [10,6,6,10] cases the agreement within 5-10% holds for this budget, not in
the infinite-run limit at nbeta = 1000 (the [5,3,5] r=0 long run stays at 6.3-6.5).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from critperiods.measure.learning_coefficients import (
    NormalCrossingPotential,
    QuadraticPotential,
    dln_learning_coefficient,
    dln_loss,
    make_dln,
    normal_crossing_lc,
    normal_crossing_multiplicity,
    normal_crossing_tempered_mean,
    potential_data,
    potential_loss,
    regular_lc,
)
from critperiods.measure.llc import (
    LLCConfig,
    LLCDivergenceWarning,
    LLCResult,
    calibrate,
    default_nbeta,
    estimate_llc,
    plot_calibration,
)
from critperiods.measure.workers import WorkerError, can_fork
from critperiods.train.models import build_model

POT_NBETA, POT_GAMMA = 1e4, 1.0
POTENTIALS = {(1, 1): 1e-4, (1, 2): 3e-4, (2, 2): 3e-4, (1, 3): 3e-4}  # powers -> step size


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """Pin the thread count so timings and floating point reductions are stable; restore it
    afterwards, so tests in other files run at the thread count they would alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _potential_run(powers: tuple[int, int]) -> LLCResult:
    """Estimate the LLC of a normal-crossing potential (cached: two tests read it)."""
    cfg = LLCConfig(
        chains=16,
        draws=8000,
        burn_in=2000,
        step_size=POTENTIALS[powers],
        gamma=POT_GAMMA,
        nbeta=POT_NBETA,
        batch_size=None,
        seed=1,
    )
    return estimate_llc(
        NormalCrossingPotential(powers), potential_loss, potential_data(1000), cfg, progress=False
    )


@pytest.mark.parametrize("powers", POTENTIALS)
def test_potential_matches_finite_temperature_target(powers: tuple[int, int]) -> None:
    """The sampler reproduces the exact tempered posterior mean E[nbeta K] within the spec's
    potential tolerance (10% or 0.05 absolute). (1,1) mixes slowly: its error depends on the
    random stream (with ``seed`` 0-3 in ``_potential_run``: +0.5%, +1.4%, +7.0%, +33%); the test's
    seed 1 is deterministic, so this checks that the sampler has not changed, not that every
    seed would pass."""
    res = _potential_run(powers)
    target = normal_crossing_tempered_mean(powers, POT_NBETA, POT_GAMMA)
    assert abs(res.llc_mean - target) <= max(0.1 * target, 0.05), (res.llc_mean, target)


@pytest.mark.parametrize(
    "powers",
    [
        pytest.param(
            p,
            marks=pytest.mark.xfail(
                reason="multiplicity 2: finite-nbeta target is (m-1)/log t below lambda",
                strict=True, raises=AssertionError,  # a crash or a changed bias must show
            ),
        )
        if normal_crossing_multiplicity(p) > 1
        else p
        for p in POTENTIALS
    ],
)
def test_potential_matches_true_lambda(powers: tuple[int, int]) -> None:
    """Spec tolerance against the true lambda: within 10% or 0.05 absolute."""
    res = _potential_run(powers)
    lam = normal_crossing_lc(powers)
    assert abs(res.llc_mean - lam) <= max(0.1 * lam, 0.05), (res.llc_mean, lam)
    assert not res.diverged.all()


def test_quadratic_regular_model() -> None:
    """A full-rank quadratic in d = 6 dimensions has lambda = d/2 = 3."""
    cfg = LLCConfig(
        chains=16, draws=6000, burn_in=600, step_size=2e-5, gamma=1.0, nbeta=1e3, batch_size=None
    )
    res = estimate_llc(
        QuadraticPotential(6), potential_loss, potential_data(100), cfg, progress=False
    )
    assert abs(res.llc_mean - regular_lc(6)) <= 0.05 * regular_lc(6), res.llc_mean
    assert res.llc_per_chain.shape == (16,) and not res.diverged.any()


# (widths, rank, chains, burn_in, draws, step size, tolerance): full batch, n = 100, nbeta = 1000,
# gamma = 1, seed 0.  Tolerance 5% except [10,6,6,10] r=1 and r=0 (10%: they sit 5-6% low at
# this budget with every seed tried, see the module docstring).
DLN_CASES = [
    ([10, 6, 6, 10], 2, 8, 2000, 8000, 3e-5, 0.05),
    ([10, 6, 6, 10], 1, 16, 2000, 6000, 3e-5, 0.10),
    ([10, 6, 6, 10], 0, 16, 2000, 6000, 5e-5, 0.10),
    ([4, 4, 4, 4], 4, 16, 1000, 4000, 5e-6, 0.05),
    ([5, 3, 5], 0, 16, 2000, 6000, 1e-4, 0.05),
]


# Two of them again with the forward and backward in bf16 autocast and float32 chains
# (precision="bfloat16", the CUDA default for the large CNNs), at the same tolerance: the
# exact-rank case and the full-rank one.
DLN_RUNS = [(*c, "float32") for c in DLN_CASES] + [
    (*DLN_CASES[i], "bfloat16") for i in (0, 3)]


@pytest.mark.parametrize(
    ("widths", "rank", "chains", "burn_in", "draws", "step_size", "tol", "precision"),
    DLN_RUNS,
    ids=[f"{'-'.join(map(str, c[0]))}-r{c[1]}-{c[7]}" for c in DLN_RUNS],
)
def test_deep_linear_network(
    widths: list[int], rank: int, chains: int, burn_in: int, draws: int, step_size: float,
    tol: float, precision: str,
) -> None:
    """Deep linear networks against Aoyagi's exact lambda (the oracle's test vectors).

    Full-batch gradients on n = 100 Gaussian inputs (the noise-free loss only depends on the
    empirical covariance, which is full rank), nbeta = 1000 (fixed, so the cost does not grow
    with n), gamma = 1; rank 0 means the true matrix (and w*) is zero."""
    prob = make_dln(widths, rank, n=100, seed=0)
    cfg = LLCConfig(
        chains=chains, draws=draws, burn_in=burn_in, step_size=step_size, gamma=1.0,
        nbeta=1000, batch_size=None, precision=precision,
    )
    res = estimate_llc(prob.model, dln_loss, prob.data, cfg, progress=False)
    lam = prob.learning_coefficient
    assert lam == dln_learning_coefficient(widths, rank)
    assert abs(res.llc_mean - lam) <= tol * lam, (res.llc_mean, lam)
    assert not res.diverged.any()
    if precision == "float32":
        assert res.init_loss == 0.0
    else:  # bf16 really ran: the passes round, so the trace is not float32's
        short = replace(cfg, draws=10, burn_in=0)
        exact = estimate_llc(prob.model, dln_loss, prob.data,
                             replace(short, precision="float32"), progress=False)
        rough = estimate_llc(prob.model, dln_loss, prob.data, short, progress=False)
        assert not np.array_equal(rough.loss_trace, exact.loss_trace)


def test_bf16_lambda_of_a_cnn_stays_near_float32() -> None:
    """On a small CNN checkpoint, bf16 forward and backward move λ̂ little: the losses (and
    L_n(w*)) are float32 either way, only the passes round."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, 1, 28, 10, seed=0)
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):  # a few steps down, so that λ̂ is positive
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    cfg = LLCConfig(chains=4, draws=80, burn_in=20, step_size=1e-4, gamma=100.0,
                    batch_size=64)
    fp32 = estimate_llc(model, F.cross_entropy, (x, y), cfg, progress=False)
    bf16 = estimate_llc(model, F.cross_entropy, (x, y), replace(cfg, precision="bfloat16"),
                        progress=False)
    assert abs(bf16.init_loss - fp32.init_loss) <= 0.01 * fp32.init_loss
    # 0.1 % here; another seed of the chains moves λ̂ by 3 %
    assert abs(bf16.llc_mean - fp32.llc_mean) <= 0.02 * abs(fp32.llc_mean), (
        bf16.llc_mean, fp32.llc_mean)
    assert fp32.llc_mean > 0


def test_precision_auto_is_bf16_only_for_the_large_cnns_on_cuda() -> None:
    from critperiods.pipeline.llc_inputs import resolve_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_precision("auto", cuda, "all_cnn_c") == "bfloat16"
    assert resolve_precision("auto", cuda, "resnet18") == "bfloat16"
    assert resolve_precision("auto", cuda, "small_cnn") == "float32"
    assert resolve_precision("auto", cpu, "all_cnn_c") == "float32"
    assert resolve_precision("bfloat16", cpu, "small_cnn") == "bfloat16"


def test_rmsprop_sgld_quadratic() -> None:
    """The RMSProp-preconditioned sampler gives a sane estimate on the regular oracle."""
    cfg = LLCConfig(
        chains=8,
        draws=3000,
        burn_in=500,
        step_size=3e-6,
        gamma=1.0,
        nbeta=1e3,
        batch_size=None,
        sampler="rmsprop_sgld",
    )
    res = estimate_llc(
        QuadraticPotential(6), potential_loss, potential_data(100), cfg, progress=False
    )
    assert abs(res.llc_mean - 3.0) <= 0.1 * 3.0, res.llc_mean


def _noisy_regression(n: int = 10_000, d: int = 10) -> tuple[nn.Module, tuple, float]:
    """A linear model y = x w + N(0, 1) at its least-squares fit (regular: λ = d/2), and the
    exact target of the localised tempered posterior at the default nβ = n / log n and
    γ = 100: E[nβ (L_n(w) − L_n(w*))] = ½ tr(nβ H (nβ H + γ I)⁻¹), H = XᵀX / n."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + torch.randn(n, 1, generator=g)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    h, nbeta = (x.T @ x / n).double(), default_nbeta(n)
    target = 0.5 * float(torch.trace(nbeta * h @ torch.linalg.inv(
        nbeta * h + 100.0 * torch.eye(d, dtype=torch.float64))))
    return model, (x, y), target


def test_minibatch_sgld_matches_a_regular_model_and_small_batches_run_hot() -> None:
    """The minibatch path the pipeline runs, against an exact answer (the oracles above run
    full batch). With large minibatches and a small step (gradient noise ε nβ² F / 4B ≈
    0.01 of the injected noise) λ̂ meets the localised target (4.58 for λ = 5) within 10 %
    (seeds 0-2: 4.84, 4.43, 4.59; full batch 4.55). At ε = 1e-4 (the default experiment's
    until 2026-12-07), nβ = n / log n and SGLD batch 32 the gradient noise is about as large
    as the injected noise, so the chains sample a hotter posterior and λ̂ comes out more
    than twice the target (11.2 here; batch 256: 4.9, 2048: 5.0; at 2e-4, config.yaml's
    default, the noise is twice as large, 16.1; docs/llc.md, "What λ̂ means in the default
    experiment"). A bug that scales the minibatch gradient (×2 halves λ̂) fails the first
    check."""
    model, data, target = _noisy_regression()
    cfg = LLCConfig(chains=8, draws=6000, burn_in=1000, step_size=3e-5, gamma=100.0,
                    batch_size=1024, seed=0)
    large = estimate_llc(model, dln_loss, data, cfg, progress=False)
    assert abs(large.llc_mean - target) <= 0.1 * target, (large.llc_mean, target)
    hot = replace(cfg, step_size=1e-4, batch_size=32, draws=3000, burn_in=600)
    small = estimate_llc(model, dln_loss, data, hot, progress=False)
    assert small.llc_mean > 1.8 * target, (small.llc_mean, target)


def _small_dln() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A tiny DLN problem for the mechanical tests."""
    prob = make_dln([4, 3, 4], 2, n=200, seed=1)
    return prob.model, prob.data


def test_minibatch_shapes_and_default_nbeta() -> None:
    """Minibatch sampling works; trace shape is (chains, burn_in + draws) with loss_every."""
    model, data = _small_dln()
    cfg = LLCConfig(
        chains=3, draws=40, burn_in=10, step_size=1e-4, gamma=10.0, batch_size=32, loss_every=2
    )
    res = estimate_llc(model, dln_loss, data, cfg, progress=False)
    assert res.loss_trace.shape == (3, 50)
    assert res.nbeta == pytest.approx(default_nbeta(200)) == pytest.approx(200 / math.log(200))
    assert np.isfinite(res.llc_mean) and res.diverged.dtype == bool


def test_deterministic_for_fixed_seed() -> None:
    """Two runs with the same seed are bitwise identical; another seed differs."""
    model, data = _small_dln()
    cfg = LLCConfig(chains=4, draws=100, burn_in=20, step_size=1e-4, gamma=10.0, batch_size=16)
    a = estimate_llc(model, dln_loss, data, cfg, progress=False)
    b = estimate_llc(model, dln_loss, data, cfg, progress=False)
    c = estimate_llc(
        model, dln_loss, data, LLCConfig(**{**cfg.__dict__, "seed": 1}), progress=False
    )
    assert np.array_equal(a.loss_trace, b.loss_trace)
    assert np.array_equal(a.llc_per_chain, b.llc_per_chain)
    assert not np.array_equal(a.loss_trace, c.loss_trace)


@pytest.mark.skipif(not can_fork(), reason="worker processes need Linux (fork)")
@pytest.mark.parametrize("model_name", ["dln", "small_cnn"])
def test_worker_processes_do_not_change_the_estimate(model_name: str) -> None:
    """Chains split over worker processes give the same estimate as in one process (each
    chain has its own random stream; the grouped network computes each chain alone).  Bit
    for bit on the development CPU; the test allows float round-off, which another CPU's
    kernels may add when they sum a group of 2 chains differently from a group of 6."""
    if model_name == "dln":
        model, data = _small_dln()
        loss = dln_loss
    else:
        model = build_model("small_cnn", 4, 1, 28, 10, seed=0)
        gen = torch.Generator().manual_seed(0)
        data = (torch.randn(200, 1, 28, 28, generator=gen),
                torch.randint(10, (200,), generator=gen))
        loss = nn.functional.cross_entropy
    cfg = LLCConfig(chains=6, draws=30, burn_in=5, step_size=1e-4, gamma=10.0, batch_size=16)
    one = estimate_llc(model, loss, data, cfg, progress=False, workers=1)
    for workers in (2, 3, 6):  # blocks of 3 + 3, 2 + 2 + 2, and 6 capped to 3 blocks of 2
        split = estimate_llc(model, loss, data, cfg, progress=False, workers=workers)
        np.testing.assert_allclose(split.loss_trace, one.loss_trace, rtol=1e-6, atol=0)
        np.testing.assert_allclose(split.llc_per_chain, one.llc_per_chain, rtol=1e-5)


def test_thread_count_does_not_change_the_estimate() -> None:
    """In one process the chains run at one thread whatever torch's setting: at two threads
    oneDNN's bias gradient of a grouped convolution of 3 or 5 copies sums in another order."""
    model = build_model("small_cnn", 4, 1, 16, 10, seed=0)
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(300, 1, 16, 16, generator=gen), torch.randint(10, (300,), generator=gen))
    cfg = LLCConfig(chains=5, draws=20, burn_in=5, step_size=1e-4, gamma=10.0, batch_size=32)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(estimate_llc(model, nn.functional.cross_entropy, data, cfg,
                                     progress=False, workers=1))
            assert torch.get_num_threads() == n  # restored
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(runs[0].loss_trace, runs[1].loss_trace)


def test_more_chains_keep_the_first_chains() -> None:
    """A chain's trajectory depends only on (seed, chain): raising ``chains`` adds chains and
    leaves the existing ones as they were."""
    model, data = _small_dln()
    cfg = LLCConfig(chains=2, draws=40, burn_in=5, step_size=1e-4, gamma=10.0, batch_size=16)
    two = estimate_llc(model, dln_loss, data, cfg, progress=False, workers=1)
    five = estimate_llc(model, dln_loss, data, replace(cfg, chains=5), progress=False, workers=1)
    np.testing.assert_allclose(five.loss_trace[:2], two.loss_trace, rtol=1e-6, atol=0)
    assert not np.allclose(five.loss_trace[2], five.loss_trace[3])


@pytest.mark.skipif(not can_fork(), reason="worker processes need Linux (fork)")
def test_an_error_in_a_worker_is_raised_with_its_traceback() -> None:
    """A loss that fails while sampling in a worker fails the estimate, naming the error."""
    model, data = _small_dln()
    parent = os.getpid()

    def fragile(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if os.getpid() != parent:
            raise FloatingPointError("loss blew up in a worker")
        return dln_loss(out, target)

    cfg = LLCConfig(chains=4, draws=5, burn_in=0, step_size=1e-4, gamma=10.0, batch_size=16)
    with pytest.raises(WorkerError, match="FloatingPointError: loss blew up in a worker"):
        estimate_llc(model, fragile, data, cfg, progress=False, workers=2)


def test_checkpoint_and_batchnorm_stats_untouched() -> None:
    """Sampling never changes the model: parameters, BatchNorm running statistics and the
    train/eval flag are as before (BN runs with frozen eval statistics)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=gen), torch.randint(3, (300,), generator=gen)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model(x)  # give the running stats non-default values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LLCConfig(chains=2, draws=50, burn_in=5, step_size=1e-5, batch_size=32)
    res = estimate_llc(model, nn.functional.cross_entropy, (x, y), cfg, progress=False)
    assert np.isfinite(res.llc_mean)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_every_submodule_keeps_its_mode_and_unused_parameters_are_allowed() -> None:
    """A frozen (eval-mode) sub-module of a training model stays frozen afterwards; a
    parameter the loss never uses (an unused head) just has gradient zero."""

    class WithSpareHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                      nn.Linear(8, 3))
            self.spare = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 5, generator=gen), torch.randint(3, (100,), generator=gen)
    model = WithSpareHead().train()
    model.body[1].eval()
    modes = [m.training for m in model.modules()]
    cfg = LLCConfig(chains=2, draws=10, burn_in=2, step_size=1e-5, batch_size=16)
    res = estimate_llc(model, nn.functional.cross_entropy, (x, y), cfg, progress=False)
    assert np.isfinite(res.llc_mean)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("batch_size", -4), ("batch_size", 32.5), ("nbeta", 0.0),
     ("nbeta", -5.0), ("divergence_factor", 0.0), ("rmsprop_alpha", 1.5),
     ("rmsprop_eps", 0.0), ("step_size", float("nan")), ("gamma", float("inf")),
     ("chains", 0), ("draws", 2.0), ("precision", "float16")],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"LLCConfig\.{field} must be"):
        LLCConfig(**{field: value})


def test_full_batch_init_loss_runs_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """L_n(w*) never runs more than INIT_LOSS_CHUNK samples per forward, also when the
    sampler uses the full batch (and gives the same value as one big forward)."""
    import critperiods.measure.llc.estimate as llc_module

    model, (x, y) = _small_dln()
    with torch.no_grad():
        whole = float(dln_loss(model(x), y))
    sizes: list[int] = []
    model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    monkeypatch.setattr(llc_module, "INIT_LOSS_CHUNK", 64)
    tasks = llc_module._init_loss_tasks(model, dln_loss, (x, y), x.shape[0])
    chunked, std = llc_module._init_loss([task() for task in tasks], x.shape[0])
    assert max(sizes) == 64 and sum(sizes) == x.shape[0]
    assert chunked == pytest.approx(whole, rel=1e-6) and std == 0.0


def test_init_loss_with_a_batch_size_that_does_not_divide_the_chunk() -> None:
    """Minibatches of 100 (1024 is not a multiple): L_n(w*) over all 2500 samples and the
    std of the 25 minibatch means.  (Each forward once overran its chunk here, and the
    loss of the last 24 outputs met no targets.)"""
    import critperiods.measure.llc.estimate as llc_module

    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(2500, 5), torch.randint(3, (2500,))
    tasks = llc_module._init_loss_tasks(model, F.cross_entropy, (x, y), 100)
    loss, std = llc_module._init_loss([task() for task in tasks], 100)
    with torch.no_grad():
        means = [float(F.cross_entropy(model(x[s : s + 100]), y[s : s + 100]))
                 for s in range(0, 2500, 100)]
        assert loss == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)
    assert std == pytest.approx(float(np.std(means, ddof=1)), rel=1e-6)


def test_a_chain_over_the_ceiling_is_cut_where_it_crossed() -> None:
    """The divergence ceiling is applied once L_n(w*) is known, after sampling: a chain is
    flagged at the first step above it, its trace blanked from there, exactly as if it had
    been stopped there; the other chains are untouched."""
    import critperiods.measure.llc.estimate as llc_module

    model, data = _small_dln()
    cfg = LLCConfig(chains=4, draws=60, burn_in=0, step_size=3e-4, gamma=10.0, batch_size=16,
                    divergence_factor=1e9)
    free = estimate_llc(model, dln_loss, data, cfg, progress=False)
    assert not free.diverged.any()
    peaks = np.sort(free.loss_trace.max(axis=1))
    ceiling = (peaks[1] + peaks[2]) / 2  # two chains cross it
    tasks = llc_module._init_loss_tasks(model, dln_loss, data, 16)
    _, batch_std = llc_module._init_loss([task() for task in tasks], 16)
    n_params = sum(p.numel() for p in model.parameters())
    factor = (ceiling - free.init_loss) / (n_params / (2 * free.nbeta) + batch_std)
    cut = estimate_llc(model, dln_loss, data, replace(cfg, divergence_factor=factor),
                       progress=False)
    crossed = free.loss_trace.max(axis=1) > ceiling
    assert crossed.sum() == 2 and np.array_equal(cut.diverged, crossed)
    for c in range(4):
        first = int(np.argmax(free.loss_trace[c] > ceiling)) if crossed[c] else 60
        assert np.array_equal(cut.loss_trace[c, :first], free.loss_trace[c, :first])
        assert np.isnan(cut.loss_trace[c, first:]).all()
    assert cut.llc_mean == pytest.approx(np.mean(free.llc_per_chain[~crossed]))


def test_the_cut_uses_the_peak_between_records() -> None:
    """With ``loss_every`` > 1 a chain is cut at the record whose steps crossed the ceiling,
    also when the recorded (last) loss of that record is below it; NaN counts as over. The
    distance from w* is cut where the loss is."""
    import critperiods.measure.llc.estimate as llc_module

    loss = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, np.nan, np.nan]])
    peak = np.array([[1.0, 5.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, np.nan, np.nan, 1.0]])
    distance = np.arange(12.0).reshape(3, 4)
    out = llc_module._cut_at_ceiling(
        llc_module._Trace(loss, peak, np.array([True, True, False]), distance), ceiling=2.0)
    assert out.healthy.tolist() == [False, True, False]
    assert np.isnan(out.loss[0, 1:]).all() and out.loss[0, 0] == 1.0
    assert np.array_equal(out.loss[1], loss[1])
    assert np.isnan(out.loss[2, 1:]).all() and out.loss[2, 0] == 1.0
    np.testing.assert_array_equal(np.isnan(out.distance), np.isnan(out.loss))
    assert np.array_equal(out.distance[1], distance[1])


def test_each_quality_flag_is_raised_by_its_own_cause_and_only_by_it() -> None:
    """The flag bits one at a time (the workflow test sees only what a tiny run happens to
    produce): λ̂ < 0 → negative; R-hat above its threshold, or a trend above its own, →
    not_converged (each alone); a diverged chain → diverged_chains, and all of them with no
    mean and no diagnostics; no estimate at all → NaN; the thresholds are the arguments."""
    from critperiods.measure.llc.quality import FLAGS, count_flags, quality_flags

    nan = np.nan
    mean = [1.0, -1.0, 1.0, 1.0, 1.0, nan, nan]
    chains_diverged = [0, 0, 0, 0, 1, 4, nan]
    rhat = [1.0, 1.0, 1.2, 1.0, 1.0, nan, nan]
    trend = [0.0, 0.0, 0.0, 5.0, 0.0, nan, nan]
    bits = quality_flags(mean, chains_diverged, rhat, trend)
    np.testing.assert_array_equal(bits, [0, FLAGS["negative"], FLAGS["not_converged"],
                                         FLAGS["not_converged"], FLAGS["diverged_chains"],
                                         FLAGS["diverged_chains"], nan])
    looser = quality_flags(mean, chains_diverged, rhat, trend, max_rhat=1.3, max_trend_z=6)
    assert looser[2] == looser[3] == 0
    assert count_flags(bits) == {"estimates": 6, "ok": 1, "negative": 1, "not_converged": 2,
                                 "diverged_chains": 2, "heavy_tailed": 0, "unstable_step": 0}
    unstable = [True, False, False, False, False, True, False]
    np.testing.assert_array_equal(  # an estimate whose chains all diverged keeps it too
        quality_flags(mean, chains_diverged, rhat, trend, unstable=unstable)[[0, 1, 5]],
        [FLAGS["unstable_step"], FLAGS["negative"],
         FLAGS["diverged_chains"] | FLAGS["unstable_step"]])
    # a tail k̂ above the limit for its number of draws (0.58 at 240, 0.5 at 100, 0.7 below
    # 100); a NaN k̂ (too few draws to fit a tail) raises nothing
    khat = [0.55, 0.0, 0.0, 0.0, 0.0, nan, nan]
    assert quality_flags(mean, chains_diverged, rhat, trend, tail_khat=khat,
                         samples=[240] * 7)[0] == 0
    assert quality_flags(mean, chains_diverged, rhat, trend, tail_khat=khat,
                         samples=[100] * 7)[0] == FLAGS["heavy_tailed"]
    assert quality_flags(mean, chains_diverged, rhat, trend, tail_khat=khat,
                         samples=[40] * 7)[0] == 0
    assert quality_flags([1.0], [0], [1.0], [0.0], tail_khat=[nan], samples=[40])[0] == 0


def test_the_cube_holds_each_tail_k_to_the_limit_of_its_own_healthy_draws() -> None:
    """The cube's heavy_tailed bit compares an estimate's k̂ with the limit for the draws its
    mean is over: the healthy chains' draws after burn-in, (chains − diverged) × (draws −
    burn-in). Four estimates of 4 chains × (30 + 60) draws: k̂ 0.59 over 240 draws (limit
    0.583) is flagged, and would not be if the burn-in were counted; k̂ 0.55 with 2 chains
    diverged (120 draws, limit 0.519) is flagged, and would not be if they were counted; 0.55
    over 240 is not; 0.65 over 60 draws (too few for the rule: 0.7) is not."""
    import xarray as xr

    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results.cube import ANALYSIS_DEFAULTS, _llc_quality

    epoch = ("epoch", [1, 2, 3, 4])
    cube = xr.Dataset({
        "llc_mean": (epoch[0], [5.0, 5.0, 5.0, 5.0]),
        "llc_diverged_chains": (epoch[0], [0, 2, 0, 3]),
        "llc_rhat": (epoch[0], [1.0] * 4), "llc_trend_z": (epoch[0], [0.0] * 4),
        "llc_tail_khat": (epoch[0], [0.59, 0.55, 0.55, 0.65]),
        "llc_burn_in": ((), 30), "llc_loss_trace": (("epoch", "chain", "draw"),
                                                    np.zeros((4, 4, 90)))},
        coords={"epoch": epoch[1]})
    bits = _llc_quality(cube, ANALYSIS_DEFAULTS).values.astype(int)
    heavy = FLAGS["heavy_tailed"]
    np.testing.assert_array_equal(bits, [heavy, heavy | FLAGS["diverged_chains"], 0,
                                         FLAGS["diverged_chains"]])
    assert _llc_quality(cube.drop_vars("llc_tail_khat"), ANALYSIS_DEFAULTS).values[0] == 0


def test_the_tail_khat_tells_excursions_from_a_light_tailed_trace() -> None:
    """Draws of a healthy chain (a loss with light, chi-square-like fluctuations) have a tail
    k̂ well under the limit for their number; the same chains with a few excursions hundreds
    of times their bulk, as a step size near SGLD's stability limit gives, one far above it
    (while R-hat, which ranks the draws, stays near 1). The limit is ArviZ's
    min(1 − 1/log10 S, 0.7), held from 100 draws on."""
    from critperiods.measure.llc.quality import diagnose, khat_threshold

    rng = np.random.default_rng(0)
    trace = 2.0 + rng.chisquare(20, size=(4, 90)) / 100  # 4 chains × (30 burn-in + 60 draws)
    calm = diagnose(trace, 30, np.zeros(4, bool))
    assert calm.tail_khat < khat_threshold(240) == pytest.approx(1 - 1 / np.log10(240))
    spiky = trace.copy()
    excursions = rng.random((4, 60)) < 0.05
    spiky[:, 30:][excursions] *= rng.uniform(50, 500, excursions.sum())
    wild = diagnose(spiky, 30, np.zeros(4, bool))
    assert wild.tail_khat > 0.7 and wild.rhat < 1.1
    assert np.isnan(diagnose(trace[:, :35], 30, np.zeros(4, bool)).tail_khat)  # 20 draws
    assert khat_threshold(100) == pytest.approx(0.5) and khat_threshold(1e5) == 0.7
    assert khat_threshold(40) == 0.7  # k̂ of 40 draws is too noisy for the rule's 0.38
    assert np.isnan(khat_threshold(1))


def test_one_healthy_chain_has_no_rhat_and_logs_nothing(caplog) -> None:
    """With every chain but one diverged, R-hat (a comparison of chains) is NaN, so the
    estimate is flagged not converged, while ESS and the trend z-score still read the one
    chain; ArviZ's shape-check log line (noise in a job's log) is not reached."""
    import logging

    from critperiods.measure.llc.quality import FLAGS, diagnose, quality_flags

    trace = 2.0 + np.random.default_rng(1).chisquare(20, size=(4, 90)) / 100
    with caplog.at_level(logging.INFO):
        one = diagnose(trace, 30, np.array([True, True, False, True]))
    assert np.isnan(one.rhat) and np.isfinite(one.ess) and np.isfinite(one.trend_z)
    bits = int(quality_flags([5.0], [3], [one.rhat], [one.trend_z])[0])
    assert bits & FLAGS["not_converged"]
    assert "Shape validation" not in caplog.text
    assert np.isfinite(diagnose(trace, 30, np.zeros(4, bool)).rhat)


def test_the_tail_check_bench_runs_and_finds_the_rule_too_strict_for_40_draws(capsys) -> None:
    """bench/tail_khat_false_flags.py, in a few trials, so that it cannot rot: light-tailed
    traces of 40 draws read above ArviZ's rule far more often than above 0.7, and those of
    240 draws almost never above it (why quality.MIN_TAIL_DRAWS is 100)."""
    from tests.conftest import bench_module

    bench = bench_module("tail_khat_false_flags")
    rows = [line.split(" | ") for line in bench.main(["--trials", "60"]).splitlines()[2:]]
    rate = {(row[0].lstrip("| ").split()[0], row[1]): (float(row[2].split("%")[0]),
                                                      float(row[3].rstrip("% |")))
            for row in rows}
    rule_40, cap_40 = rate[("40", "chi-square 5")]
    assert rule_40 > 15 and cap_40 < rule_40 / 3
    assert rate[("240", "Gaussian")][0] <= 2


def test_diverged_chains_flagged_and_excluded() -> None:
    """Chains that escape along the stiff arms of K = w1^2 w2^2 at nbeta = 1e6 blow up; they
    are flagged, NaN per chain, frozen, and the mean uses the healthy chains only."""
    cfg = LLCConfig(
        chains=8,
        draws=3000,
        burn_in=500,
        step_size=1e-4,
        gamma=1.0,
        nbeta=1e6,
        batch_size=None,
        seed=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCDivergenceWarning)
        res = estimate_llc(
            NormalCrossingPotential((1, 1)), potential_loss, potential_data(10), cfg, progress=False
        )
    assert res.diverged.any() and not res.diverged.all(), res.diverged
    assert np.isnan(res.llc_per_chain[res.diverged]).all()
    healthy = res.llc_per_chain[~res.diverged]
    assert res.llc_mean == pytest.approx(healthy.mean())
    assert res.llc_std == pytest.approx(healthy.std())
    assert not np.isinf(res.loss_trace).any()


def test_all_diverged_gives_nan_and_named_warning() -> None:
    """A step size far beyond the stability limit diverges every chain: NaN + warning."""
    cfg = LLCConfig(
        chains=3, draws=200, burn_in=0, step_size=0.1, gamma=1.0, nbeta=1e3, batch_size=None
    )
    with pytest.warns(LLCDivergenceWarning, match="ckpt-epoch-7.*smaller step size"):
        res = estimate_llc(
            QuadraticPotential(2),
            potential_loss,
            potential_data(10),
            cfg,
            label="ckpt-epoch-7",
            progress=False,
        )
    assert math.isnan(res.llc_mean) and math.isnan(res.llc_std)
    assert res.diverged.all() and np.isnan(res.llc_per_chain).all()
    assert not np.isinf(res.loss_trace).any()


def test_a_broken_checkpoint_is_named_as_such() -> None:
    """A checkpoint whose own loss is not finite (training diverged) gives NaN, with a
    warning that says so instead of suggesting a smaller step size."""
    model, data = _small_dln()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    cfg = LLCConfig(chains=2, draws=5, burn_in=0, step_size=1e-4, gamma=10.0, batch_size=16)
    with pytest.warns(LLCDivergenceWarning, match=r"ckpt-3.*L_n\(w\*\), is nan"):
        res = estimate_llc(model, dln_loss, data, cfg, label="ckpt-3", progress=False)
    assert math.isnan(res.llc_mean) and res.diverged.all()


def test_calibrate_and_plot(tmp_path) -> None:  # noqa: ANN001
    """The calibration sweep returns running-LLC and distance traces per setting, and how
    much the distance grew over the draws, and plots them; a larger step spreads faster."""
    model, data = _small_dln()
    cfg = LLCConfig(chains=2, draws=30, burn_in=5, step_size=1e-4, gamma=10.0, batch_size=None)
    ds = calibrate(model, dln_loss, data, cfg, step_sizes=[1e-5, 1e-4], nbetas=[50.0, 100.0])
    assert ds["llc_running"].shape == (2, 2, 2, 30)
    assert ds["distance_trace"].shape == (2, 2, 2, 35)
    assert ds["llc_mean"].shape == (2, 2) == ds["distance_growth"].shape == ds["tail_khat"].shape
    last = ds["distance_trace"].isel(step=-1).mean("chain")
    assert (last.sel(step_size=1e-4) > 5 * last.sel(step_size=1e-5)).all()
    assert (ds["distance_growth"] > 0.1).all()  # 35 steps of a 1,000-step time constant
    out = plot_calibration(ds, tmp_path / "cal.png")
    assert out.exists() and out.stat().st_size > 0
    # the lines give each λ̂ with its Monte Carlo error, as the cube's llc_mcse has it
    from critperiods.measure.llc.calibration import calibration_lines
    from critperiods.measure.llc.error import llc_mcse
    from critperiods.results.cube import ANALYSIS_DEFAULTS

    lines = calibration_lines(ds, cfg, 1e-4, ANALYSIS_DEFAULTS)
    cell = ds.sel(nbeta=100.0, step_size=1e-4)
    error = float(llc_mcse(cell["loss_trace"].values, cfg.burn_in, 100.0))
    assert f"nβ 100, step size 0.0001 (the run's): λ̂ {float(cell['llc_mean']):.4g} (MCSE " \
           f"{error:.2g}, chains' s.d." in "\n".join(lines)


def test_a_sweep_into_divergence_warns_of_nothing_and_says_so_in_its_plot(
        tmp_path, monkeypatch) -> None:
    """A sweep is meant to reach steps whose chains diverge: neither the sampler's warning
    nor numpy's empty-slice warnings (draws after the last chain diverged) reach the user;
    the dataset counts the diverged chains and both panels' legends name the step. A broken
    checkpoint (its own loss not finite) is an error, not a sweep of diverged steps."""
    from matplotlib.figure import Figure

    model, data = _small_dln()
    cfg = LLCConfig(chains=2, draws=10, burn_in=2, step_size=1e-4, gamma=10.0, batch_size=None)
    drawn: list[Figure] = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig),
                                                                 save(fig, *a, **k)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = calibrate(model, dln_loss, data, cfg, step_sizes=[1e-4, 1e3], nbetas=[50.0])
        assert int(ds["diverged"].sel(step_size=1e3).sum()) == 2
        late = ds.copy(deep=True)  # both chains of the small step gone after draw 6
        late["llc_running"].loc[{"step_size": 1e-4}] = late["llc_running"].sel(
            step_size=1e-4).where(late["draw"] < 6)
        late["distance_trace"].loc[{"step_size": 1e-4}] = late["distance_trace"].sel(
            step_size=1e-4).where(late["step"] < 8)
        plot_calibration(late, tmp_path / "cal.png")
    for ax in drawn[0].axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "eps=0.0001", "eps=1000 (all chains diverged)"]
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match=r"ckpt: the loss at the checkpoint itself.*broken"):
        calibrate(broken, dln_loss, data, cfg, step_sizes=[1e-4], label="ckpt")


def test_a_diagnostics_callback_receives_every_recorded_draw() -> None:
    """The sampler's hook (in the spirit of devinterp 1.x callbacks): a custom callback sees
    each recorded draw once, in order, with the losses the trace records and the chains'
    weights moving away from w*; watching changes no bit of the estimate."""
    from critperiods.measure.llc import Draw

    model, data = _small_dln()
    w_star = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    cfg = LLCConfig(chains=4, draws=12, burn_in=3, step_size=1e-4, gamma=10.0, batch_size=16)
    seen: list[tuple[int, bool, range, np.ndarray, float]] = []

    def watch(draw: Draw) -> None:
        moved = float((draw.weights - w_star).norm(dim=1).min())
        seen.append((draw.index, draw.burn_in, draw.chains, draw.loss.numpy().copy(), moved))

    watched = estimate_llc(model, dln_loss, data, cfg, progress=False, workers=2,
                           callbacks=[watch])
    plain = estimate_llc(model, dln_loss, data, cfg, progress=False, workers=1)
    assert [s[0] for s in seen] == list(range(cfg.burn_in + cfg.draws))
    assert [s[1] for s in seen] == [i < cfg.burn_in for i in range(cfg.burn_in + cfg.draws)]
    assert all(s[2] == range(cfg.chains) for s in seen)
    assert not watched.diverged.any()
    np.testing.assert_array_equal(np.stack([s[3] for s in seen], axis=1), watched.loss_trace)
    assert all(s[4] > 0 for s in seen)  # every chain has left w* at every recorded draw
    np.testing.assert_array_equal(watched.loss_trace, plain.loss_trace)
    assert watched.llc_mean == plain.llc_mean


def test_the_distance_trace_is_each_chains_squared_distance_from_w_star() -> None:
    """``distance_trace`` holds ‖w − w*‖² of every chain at every record (what a callback
    reading the weights computes), the same however the chains are split over workers."""
    model, data = _small_dln()
    w_star = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    cfg = LLCConfig(chains=4, draws=12, burn_in=3, step_size=1e-4, gamma=10.0, batch_size=16,
                    loss_every=2)
    seen: list[np.ndarray] = []
    watched = estimate_llc(model, dln_loss, data, cfg, progress=False, callbacks=[
        lambda draw: seen.append(((draw.weights - w_star) ** 2).sum(dim=1).numpy().copy())])
    split = estimate_llc(model, dln_loss, data, cfg, progress=False, workers=2)
    assert watched.distance_trace.shape == watched.loss_trace.shape == (4, 15)
    np.testing.assert_allclose(watched.distance_trace, np.stack(seen, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(split.distance_trace, watched.distance_trace)
    assert np.all(np.diff(watched.distance_trace[:, :3], axis=1) > 0)  # leaving w* at first


def test_distance_growth_sees_chains_that_have_not_relaxed() -> None:
    """The localisation pulls a chain back in the loss's flat directions only at rate ε γ / 2
    per step, so the expectation of its ‖w − w*‖² relaxes over ~1 / (ε γ) steps (here 100):
    chains sampled well within that still spread out over their draws (R-hat cannot see it:
    they all do), chains burnt in for several relaxation times do not."""
    from critperiods.measure.llc.quality import RELAXED_GROWTH, diagnose, flat_direction_growth

    prob = make_dln([20, 20, 20], 2, n=200, seed=1)  # 800 weights: relaxed, ±0.05 by seed
    model, data = prob.model, prob.data
    growth = {}
    for burn_in, draws in ((10, 60), (600, 400)):
        cfg = LLCConfig(chains=4, draws=draws, burn_in=burn_in, step_size=1e-3, gamma=10.0,
                        batch_size=None)
        res = estimate_llc(model, dln_loss, data, cfg, progress=False)
        growth[burn_in] = diagnose(res.loss_trace, burn_in, res.diverged,
                                   res.distance_trace).distance_growth
    assert growth[10] > 0.5, growth  # 0.61–0.67 over seeds 0–3
    assert abs(growth[600]) < RELAXED_GROWTH, growth  # within ±0.05 over seeds 0–3
    # a direction the loss leaves flat spreads as 1 − (1 − εγ/2)^(2t): 0.91 here, 0 at length
    assert flat_direction_growth(1e-3, 10.0, 10, 60) == pytest.approx(0.9068, abs=1e-4)
    assert flat_direction_growth(1e-4, 100.0, 30, 60) == pytest.approx(0.4541, abs=1e-4)
    assert abs(flat_direction_growth(1e-3, 10.0, 600, 400)) < 0.01
    assert np.isnan(diagnose(res.loss_trace, 600, res.diverged).distance_growth)


def test_the_package_re_exports_every_public_name_of_its_sub_modules() -> None:
    """``critperiods.measure.llc`` names what its sub-modules export, each from its own
    module, so a name added to a sub-module's ``__all__`` and not here fails."""
    import critperiods.measure.llc as package
    from critperiods.measure.llc import calibration, estimate, quality, sampler

    for module in (sampler, estimate, quality, calibration):
        for name in module.__all__:
            assert name in package.__all__, (module.__name__, name)
            assert getattr(package, name) is getattr(module, name)
    assert len(package.__all__) == sum(len(m.__all__) for m in (sampler, estimate, quality,
                                                                 calibration))


def test_calibrate_llc_sweeps_by_default_from_a_tenth_of_the_runs_step_to_five_times() -> None:
    """The default sweep brackets where the chains start to run away (on the default run's
    checkpoints 2.5-3.5 times its step), so that the advice, half the smallest flagged step,
    comes from one sweep; the run's own step is kept as it is, so that it is marked."""
    from critperiods.measure.llc.calibration import default_step_sizes

    assert default_step_sizes(2e-4) == [2e-5, 6e-5, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3]
    odd = default_step_sizes(1.25e-4)
    assert 1.25e-4 in odd and len(odd) == 7 and odd == sorted(odd)
    for bad in (0.0, -1e-4, float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            default_step_sizes(bad)


def test_calibrate_llc_help_names_the_sweep_it_runs(capsys) -> None:
    """The ``--step-sizes`` help spells out :data:`SWEEP_FACTORS` (written by hand, since
    building the parser must not import torch): a change to one without the other fails."""
    from critperiods.__main__ import main
    from critperiods.measure.llc.calibration import SWEEP_FACTORS

    with pytest.raises(SystemExit):
        main(["calibrate-llc", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    *most, last = (f"{f:g}" for f in SWEEP_FACTORS)
    assert f"times {', '.join(most)} and {last}," in said


def _off_minimum(dim: int, offset: float) -> QuadraticPotential:
    """The regular quadratic of ``test_quadratic_regular_model`` with its weights moved
    ``offset`` (in every coordinate) off the minimum: a checkpoint that is not a minimum."""
    model = QuadraticPotential(dim)
    with torch.no_grad():
        model.w.add_(offset)
    return model


def test_descent_follows_the_noise_free_full_batch_drift_of_sgld() -> None:
    """On ``½ δᵀAδ`` the path is the recursion δ ← δ − (ε/2)(nβ A δ + γ (δ − δ*)), computed
    here in float64: the excess is ``nβ (L(w_t) − L(w*))`` where each draw reads its loss
    (draw 0 at the checkpoint); a minimum has none."""
    from critperiods.measure.llc.descent import descent

    cfg = LLCConfig(draws=40, burn_in=10, step_size=2e-5, gamma=1.0, nbeta=1e3,
                    batch_size=None, loss_every=2)
    model = _off_minimum(4, 0.05)
    found = descent(model, potential_loss, potential_data(100), cfg, progress=False)
    a = model.hessian.double().numpy()
    start = delta = (model.w - model.centre).detach().double().numpy()
    expected = []
    for step in range(100):
        if step % 2 == 0:
            expected.append(1e3 * 0.5 * (delta @ a @ delta - start @ a @ start))
        delta = delta - 1e-5 * (1e3 * a @ delta + (delta - start))
    assert found.excess.shape == (50,) and found.excess[0] == 0
    np.testing.assert_allclose(found.excess, expected, rtol=1e-4, atol=1e-4)
    assert found.over_draws == pytest.approx(np.mean(expected[10:]), rel=1e-4)
    assert found.at_end == pytest.approx(expected[-1], rel=1e-4) and found.at_end < -1
    assert torch.equal(model.w, model.centre + 0.05)  # the checkpoint is left as it was
    at_minimum = descent(QuadraticPotential(4), potential_loss, potential_data(100), cfg,
                         progress=False)
    assert np.all(at_minimum.excess == 0)


def test_lambda_hat_off_a_minimum_is_lambda_hat_at_it_plus_the_descent() -> None:
    """Where the loss is quadratic the chains' mean follows the noise-free drift, so λ̂ from a
    checkpoint off the minimum is λ̂ from the minimum (the same chains' noise) plus the
    descent's ``over_draws``, but for the noise's cross term; the descent module's docstring
    rests on this."""
    from critperiods.measure.llc.descent import descent

    cfg = LLCConfig(chains=16, draws=2000, burn_in=200, step_size=2e-5, gamma=1.0, nbeta=1e3,
                    batch_size=None)
    off, data = _off_minimum(6, 0.04), potential_data(100)
    found = descent(off, potential_loss, data, cfg, progress=False)
    at_min = estimate_llc(QuadraticPotential(6), potential_loss, data, cfg, progress=False)
    from_off = estimate_llc(off, potential_loss, data, cfg, progress=False)
    assert found.over_draws < -3  # larger than λ = 3 itself (-8.8)
    assert from_off.llc_mean - at_min.llc_mean == pytest.approx(found.over_draws, abs=0.02)


def test_descent_refuses_a_preconditioned_sampler_and_a_broken_checkpoint() -> None:
    from critperiods.measure.llc.descent import descent

    cfg = LLCConfig(draws=5, burn_in=0, step_size=1e-5, nbeta=10.0, batch_size=None)
    with pytest.raises(ValueError, match="rmsprop_sgld"):
        descent(QuadraticPotential(2), potential_loss, potential_data(10),
                replace(cfg, sampler="rmsprop_sgld"), progress=False)
    broken = QuadraticPotential(2)
    with torch.no_grad():
        broken.w.fill_(float("nan"))
    with pytest.raises(ValueError, match="loss at the checkpoint is nan"):
        descent(broken, potential_loss, potential_data(10), cfg, progress=False)


def test_the_top_hessian_eigenvalue_is_that_of_a_known_hessian(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On ``½ δᵀAδ`` (eigenvalues 1 … 3) the top eigenvalue is 3, formed whole for a few
    weights and by Lanczos for many; on a softmax classifier it is the top eigenvalue of
    its exact Hessian (autograd's, over all its images), in eval mode (its dropout off),
    and the same summed over chunks of the images. The call is deterministic, leaves the
    model's weights and each submodule's mode as they were, and is NaN where the loss is
    not finite."""
    from critperiods.measure.llc import estimate
    from critperiods.measure.llc.stability import DENSE_UP_TO, top_hessian_eigenvalue

    small, large = QuadraticPotential(6), QuadraticPotential(3 * DENSE_UP_TO)
    assert top_hessian_eigenvalue(small, potential_loss, potential_data(10)) == \
        pytest.approx(3.0, rel=1e-5)
    assert top_hessian_eigenvalue(large, potential_loss, potential_data(10)) == \
        pytest.approx(3.0, rel=1e-2)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 20, generator=g), torch.randint(0, 5, (500,), generator=g)
    model = nn.Sequential(nn.Linear(20, 5), nn.Dropout(0.5)).train()
    model[0].eval()  # a submodule in a mode of its own
    before = copy.deepcopy(model.state_dict())
    weights = [p.detach().clone() for p in model.parameters()]

    def loss_of(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(x @ w.T + b, y)

    blocks = torch.autograd.functional.hessian(loss_of, tuple(weights))
    sizes = [w.numel() for w in weights]
    exact = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(2)],
                                 dim=1) for i in range(2)]).double()
    top = float(torch.linalg.eigvalsh(exact)[-1])
    found = top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y), samples=None)
    assert found == pytest.approx(top, rel=1e-2)
    assert top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y), samples=500) \
        == found  # as many as there are: all of them
    monkeypatch.setattr(estimate, "INIT_LOSS_CHUNK", 128)  # 4 chunks, each its share
    assert top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y), samples=None) \
        == pytest.approx(found, rel=1e-5)
    monkeypatch.undo()
    subset = top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y), samples=200)
    assert subset != found and 0 < subset < 2 * top  # another Hessian, of 200 images
    assert subset == top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y),
                                            samples=200)
    assert model.training and model[1].training and not model[0].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model[0].bias.fill_(float("nan"))
    assert np.isnan(top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y)))


def test_the_drift_is_stable_below_the_limit_and_runs_away_above_it() -> None:
    """The flag's limit, ``4 / (nβ λ_max + γ)``, against the noise-free drift it is about: on
    ``½ δᵀAδ`` (λ_max 3) a checkpoint just off the minimum, at 0.95 times the limit the
    drift's loss falls, at 1.05 times it rises without end; ``past_stability_limit`` says
    which, and NaN (not measured) is never past it."""
    from critperiods.measure.llc.descent import descent
    from critperiods.measure.llc.quality import past_stability_limit, stable_step_size

    nbeta, gamma = 1e3, 1.0
    limit = stable_step_size(3.0, nbeta, gamma)
    assert limit == pytest.approx(4 / 3001)
    cfg = LLCConfig(draws=200, burn_in=0, step_size=0.95 * limit, gamma=gamma, nbeta=nbeta,
                    batch_size=None)
    stable = descent(_off_minimum(4, 0.01), potential_loss, potential_data(10), cfg,
                     progress=False)
    unstable = descent(_off_minimum(4, 0.01), potential_loss, potential_data(10),
                       replace(cfg, step_size=1.05 * limit), progress=False)
    assert stable.at_end < 0 < unstable.at_end
    assert unstable.excess[-1] > 10 * unstable.excess[len(unstable.excess) // 2] > 0
    np.testing.assert_array_equal(
        past_stability_limit([0.95 * limit, 1.05 * limit, 1.0, 1.0], [3.0, 3.0, np.nan, -1.0],
                             nbeta, gamma), [False, True, False, False])
    assert stable_step_size(-1.0, nbeta, gamma) == np.inf  # nothing the drift pushes out of


class _RandomCurvature(nn.Module):
    """``½ c w²`` per image, ``c`` its one input: each minibatch has its own curvature."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x[:, 0] * self.w.pow(2).sum()


def test_the_curvature_spread_is_that_of_the_minibatches_hessians() -> None:
    """``sharpness``' spread is the standard deviation of ``vᵀ H_B v`` over minibatches
    ``B`` of the sampler's size: on a softmax classifier it matches the exact one (autograd
    Hessians of 400 minibatches, along the exact top eigenvector) to within what 64
    minibatches can tell, falls as 1/√(batch size), and is 0 for full-batch chains; the
    top eigenvalue is the one ``top_hessian_eigenvalue`` gives, and the call is
    deterministic. The cube's description names the number of minibatches."""
    from critperiods.measure.llc.stability import sharpness, top_hessian_eigenvalue

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(600, 8, generator=g), torch.randint(0, 3, (600,), generator=g)
    model = nn.Linear(8, 3)
    weights = [p.detach().clone() for p in model.parameters()]

    def hessian(rows: torch.Tensor) -> torch.Tensor:
        blocks = torch.autograd.functional.hessian(
            lambda w, b: nn.functional.cross_entropy(x[rows] @ w.T + b, y[rows]),
            tuple(weights))
        sizes = [w.numel() for w in weights]
        return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                     for j in range(2)], dim=1) for i in range(2)]).double()

    values, vectors = torch.linalg.eigh(hessian(torch.arange(600)))
    top = vectors[:, -1]
    exact = np.std([float(top @ hessian(torch.randint(600, (32,), generator=g)) @ top)
                    for _ in range(400)])
    found = sharpness(model, nn.functional.cross_entropy, (x, y), batch_size=32, samples=None)
    assert found.top == pytest.approx(float(values[-1]), rel=1e-2)
    assert found.top == top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y),
                                               samples=None)
    assert found.spread == pytest.approx(exact, rel=0.25) and exact > 0.05 * found.top
    assert found == sharpness(model, nn.functional.cross_entropy, (x, y), batch_size=32,
                              samples=None)
    larger = sharpness(model, nn.functional.cross_entropy, (x, y), batch_size=128).spread
    assert larger == pytest.approx(found.spread / 2, rel=0.3)
    assert sharpness(model, nn.functional.cross_entropy, (x, y)).spread == 0.0
    from critperiods.measure.llc.stability import CURVATURE_BATCHES
    from critperiods.variables import VARIABLES

    assert f"over {CURVATURE_BATCHES} of" in VARIABLES["llc_sharpness_sd"][0]  # as described


def test_minibatch_curvature_noise_lowers_the_stability_limit_as_the_chains_find() -> None:
    """On ``½ c w²`` with ``c`` 0 or 2 (mean 1, spread 1 per image) and minibatches of one,
    the mean-square limit ``4 a / (a² + (nβ s)²)`` is about half the full-batch one. SGLD's
    chains stay bounded at half of it and run away at 1.5 times it, a step the
    full-batch limit calls stable; ``past_stability_limit`` with the measured spread says
    which, without it it would not."""
    from critperiods.measure.llc.quality import past_stability_limit, stable_step_size
    from critperiods.measure.llc.stability import sharpness

    data = torch.tensor([[0.0], [2.0]]).repeat(500, 1), torch.zeros(1000)
    nbeta, gamma = 1000.0, 1.0
    model = _RandomCurvature()
    found = sharpness(model, potential_loss, data, batch_size=1)
    assert found.top == pytest.approx(1.0, rel=1e-5)
    assert found.spread == pytest.approx(1.0, rel=0.2)
    limit = stable_step_size(found.top, nbeta, gamma, found.spread)
    full_batch = stable_step_size(found.top, nbeta, gamma)
    assert limit == pytest.approx(full_batch / (1 + found.spread ** 2), rel=1e-2)
    cfg = LLCConfig(chains=4, draws=300, burn_in=0, step_size=0.5 * limit, gamma=gamma,
                    nbeta=nbeta, batch_size=1)
    stable = estimate_llc(model, potential_loss, data, cfg, progress=False)
    with pytest.warns(LLCDivergenceWarning):
        unstable = estimate_llc(model, potential_loss, data,
                                replace(cfg, step_size=1.5 * limit), progress=False)
    assert not stable.diverged.any() and np.isfinite(stable.llc_mean)
    assert unstable.diverged.all()
    assert 1.5 * limit < full_batch  # stable by the full-batch limit
    np.testing.assert_array_equal(
        past_stability_limit([0.5 * limit, 1.5 * limit], found.top, nbeta, gamma,
                             found.spread), [False, True])
    assert not past_stability_limit(1.5 * limit, found.top, nbeta, gamma)


def test_the_cube_flags_an_estimate_whose_step_is_past_its_stability_limit() -> None:
    """``unstable_step`` where ``llc_step_size > 4 / (llc_nbeta · llc_sharpness +
    llc_gamma)``, on top of the other flags, and lower with ``llc_sharpness_sd``, the
    minibatches' curvature noise (absent: none); never where the sharpness is NaN or absent
    (pieces made before it was measured)."""
    import xarray as xr

    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results.cube import ANALYSIS_DEFAULTS, _llc_quality

    epoch = ("epoch", [1, 2, 3, 4])
    nbeta, gamma = 1000.0, 100.0
    limit_at_20 = 4 / (nbeta * 20 + gamma)
    cube = xr.Dataset({
        "llc_mean": (epoch[0], [5.0, 5.0, -1.0, 5.0]),
        "llc_diverged_chains": (epoch[0], [0, 0, 0, 0]),
        "llc_rhat": (epoch[0], [1.0] * 4), "llc_trend_z": (epoch[0], [0.0] * 4),
        "llc_sharpness": (epoch[0], [19.0, 21.0, 21.0, np.nan]),
        "llc_step_size": ((), limit_at_20), "llc_nbeta": ((), nbeta), "llc_gamma": ((), gamma),
        "llc_burn_in": ((), 30), "llc_loss_trace": (("epoch", "chain", "draw"),
                                                    np.zeros((4, 4, 90)))},
        coords={"epoch": epoch[1]})
    bits = _llc_quality(cube, ANALYSIS_DEFAULTS)
    unstable = FLAGS["unstable_step"]
    np.testing.assert_array_equal(bits.values.astype(int),
                                  [0, unstable, unstable | FLAGS["negative"], 0])
    assert "unstable_step" in bits.attrs["flag_meanings"].split()
    assert "llc_sharpness" in bits.attrs["comment"]
    np.testing.assert_array_equal(  # only the negative flag stays
        _llc_quality(cube.drop_vars("llc_sharpness"), ANALYSIS_DEFAULTS).values,
        [0, 0, FLAGS["negative"], 0])
    # the minibatches' curvature noise lowers the limit: (nβ s / a)² = 0.1 takes epoch 1's
    # 4 / (nβ 19 + γ) below the step
    noisy = cube.assign(llc_sharpness_sd=(epoch[0], [np.sqrt(0.1) * 19.1, 0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(_llc_quality(noisy, ANALYSIS_DEFAULTS).values.astype(int),
                                  [unstable, unstable, unstable | FLAGS["negative"], 0])
    assert "llc_sharpness_sd" in bits.attrs["comment"]
    # analysis.llc_read_flagged names the flags the statistics count all the same; the bits
    # stay
    read = _llc_quality(noisy, {**ANALYSIS_DEFAULTS, "llc_read_flagged": ["unstable_step"]})
    np.testing.assert_array_equal(read.values, _llc_quality(noisy, ANALYSIS_DEFAULTS).values)
    assert read.attrs["read_in_flags"] == "unstable_step"
    assert "read_in_flags" not in bits.attrs


def test_the_cube_holds_the_monte_carlo_error_of_each_estimate_and_flags_negative_beyond_it(
) -> None:
    """``llc_mcse`` is nβ times ArviZ's MCSE of the mean of the healthy chains' draws after
    burn-in (a chain with a NaN draw diverged and is left out; NaN where no estimate was
    made); ``negative`` is raised only where λ̂ lies below 0 by more than
    ``NEGATIVE_MCSE`` of it, and on the sign alone where the MCSE is missing."""
    import xarray as xr
    from arviz_stats.base import array_stats

    from critperiods.measure.llc.error import NEGATIVE_MCSE
    from critperiods.measure.llc.quality import FLAGS
    from critperiods.results.cube import ANALYSIS_DEFAULTS, _llc_mcse, _llc_quality
    from critperiods.results.selection import llc_counted

    rng = np.random.default_rng(0)
    nbeta, burn_in = 50.0, 10
    trace = rng.normal(1.0, 0.3, size=(4, 4, 60))
    trace[1, 2, 30:] = np.nan  # chain 2 of epoch 2 diverged after burn-in
    trace[3] = np.nan  # no estimate at epoch 4
    cube = xr.Dataset({
        "llc_loss_trace": (("epoch", "chain", "draw"), trace.astype(np.float32)),
        "llc_nbeta": ((), nbeta), "llc_burn_in": ((), burn_in)},
        coords={"epoch": [1, 2, 3, 4]})
    mcse = _llc_mcse(cube)
    assert mcse.dims == ("epoch",)
    post = trace.astype(np.float32).astype(float)[:, :, burn_in:]
    np.testing.assert_allclose(mcse.values[[0, 2]], nbeta * array_stats.mcse(
        post[[0, 2]], chain_axis=-2, draw_axis=-1))
    np.testing.assert_allclose(mcse.values[1], nbeta * array_stats.mcse(
        post[1, [0, 1, 3]], chain_axis=-2, draw_axis=-1))
    assert np.isnan(mcse.values[3])
    assert 0 < mcse.values[0] < nbeta * 0.3 / np.sqrt(40)  # below one chain's error
    # at epoch 1 λ̂ sits 1 MCSE below 0 (noise: counted), at 2 three below (negative), at 3
    # one above; epoch 4's made-up estimate has no trace: its sign alone decides
    error = mcse.values
    means = [-1.0 * error[0], -3.0 * error[1], 1.0 * error[2], -0.01]
    estimates = cube.assign(
        llc_mean=("epoch", means), llc_diverged_chains=("epoch", [0, 1, 0, 0]),
        llc_rhat=("epoch", [1.0] * 4), llc_trend_z=("epoch", [0.0] * 4), llc_mcse=mcse)
    bits = _llc_quality(estimates, ANALYSIS_DEFAULTS).values.astype(int)
    negative, diverged = FLAGS["negative"], FLAGS["diverged_chains"]
    np.testing.assert_array_equal(bits, [0, negative | diverged, 0, negative])
    assert f"lambda + {NEGATIVE_MCSE:g} llc_mcse < 0" in _llc_quality(
        estimates, ANALYSIS_DEFAULTS).attrs["comment"]
    # λ̂ net of the descent is judged against the same error
    net = estimates.assign(llc_quality=("epoch", np.zeros(4)),
                           llc_descent=("epoch", [0.0, 0.0, 4.0 * error[2], 0.0]))
    np.testing.assert_array_equal(llc_counted(net, net_of_descent=True).values,
                                  [True, False, False, False])
