"""Divergence metrics: identity on self-comparison, Gram = naive loop, structure of compare_runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from critperiods.measure import divergence as dv
from critperiods.results.cube import describe
from critperiods.train.data import PreparedData, Split
from critperiods.train.models import build_model
from critperiods.train.training import ALWAYS_BLURRED

ROOT = Path(__file__).resolve().parents[1]
IN_CHANNELS, SIZE, CLASSES, WIDTH = 1, 8, 4, 3
PROBE_N = 40
SWITCHES, SEEDS, AFTER = (0, 2), (0, 1), 3
FAST = dv.DivergenceConfig(probe_size=PROBE_N, batch_size=20, cka_batch_size=20,
                           barrier_alphas=5, bn_reset_batches=2)


def _gen(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash(key) % 2**31)


def _model(name: str = "small_cnn", seed: int = 0) -> nn.Module:
    return build_model(name, WIDTH, IN_CHANNELS, SIZE, CLASSES, seed=seed).eval()


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(99)
    return (torch.randn(PROBE_N, IN_CHANNELS, SIZE, SIZE, generator=g),
            torch.randint(0, CLASSES, (PROBE_N,), generator=g))


def _bn_data() -> torch.Tensor:
    return torch.randn(40, IN_CHANNELS, SIZE, SIZE, generator=_gen(98))


def _step(state: dict, *key: int) -> dict:
    """A fake training step: Gaussian noise on floating entries (buffers kept positive)."""
    g = _gen(*key)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = v * (1 + 0.1 * torch.rand(v.shape, generator=g))
        else:
            out[k] = v + 0.3 * torch.randn(v.shape, generator=g)
    return out


def _runs(name: str = "small_cnn", switches=SWITCHES, seeds=SEEDS, after=AFTER) -> dict:
    """Synthetic runs: branch K shares the blurred trunk's state dicts up to epoch K."""
    last = max(switches) + after
    runs: dict = {}
    for s in seeds:
        trunk = {0: _model(name, s).state_dict()}
        for e in range(1, last + 1):
            trunk[e] = _step(trunk[e - 1], s, -1, e)
        runs[(ALWAYS_BLURRED, s)] = trunk
        for k in switches:
            run = {e: trunk[e] for e in range(k + 1)}
            for e in range(k + 1, k + after + 1):
                run[e] = _step(run[e - 1], s, k, e)
            runs[(k, s)] = run
    return runs


# --- self-comparison --------------------------------------------------------------------------


def test_self_comparison_gives_identity_values() -> None:
    model = _model("all_cnn_c")
    state = model.state_dict()
    copy = {k: v.clone() for k, v in state.items()}
    stats = dv.weight_stats([state, copy], [n for n, _ in model.named_parameters()])
    assert stats.l2[0, 1] == 0.0 and stats.cosine[0, 1] == 1.0

    out = dv.probe_outputs(model, *_probe(), batch_size=16)
    pred = dv.prediction_divergence(out, out)
    assert all(v == 0.0 for v in pred.values()), pred
    assert dv.linear_cka(out.features, out.features, 20) == pytest.approx(1.0, abs=1e-12)

    res = dv.loss_barrier(model, state, copy, _probe(), _bn_data(), alphas=5,
                          bn_reset_batches=2, batch_size=20)
    assert abs(res.barrier) < 1e-6 and abs(res.barrier_mean) < 1e-6


def test_weight_stats_match_naive_loop() -> None:
    g = _gen(5)
    names = ["w", "b"]
    base = {"w": torch.randn(30, 7, generator=g), "b": torch.randn(5, generator=g)}
    states = [base, {k: v.clone() for k, v in base.items()}]
    states += [{k: v * 3 + torch.randn(v.shape, generator=g) for k, v in base.items()}]
    states += [{k: v + 1e-4 * torch.randn(v.shape, generator=g) for k, v in base.items()}]
    stats = dv.weight_stats(states, names)
    flat = [torch.cat([s[n].double().reshape(-1) for n in names]) for s in states]
    for i, a in enumerate(flat):
        assert stats.norm[i] == pytest.approx(float(a.norm()), rel=1e-12)
        for j, b in enumerate(flat):
            assert stats.l2[i, j] == pytest.approx(float((a - b).norm()), rel=1e-7, abs=0)
            cos = float(a @ b / (a.norm() * b.norm()))
            assert stats.cosine[i, j] == pytest.approx(cos, rel=1e-12)
    assert stats.l2[0, 1] == 0.0 and np.all(np.diag(stats.l2) == 0.0)
    np.testing.assert_array_equal(stats.l2, stats.l2.T)


# --- function-space metrics -------------------------------------------------------------------


def _outputs(log_probs: list[list[float]], labels: list[int]) -> dv.ProbeOutputs:
    lp = torch.tensor(log_probs, dtype=torch.float64)
    y = torch.tensor(labels)
    return dv.ProbeOutputs(torch.zeros(len(labels), 1), lp, float(-lp[torch.arange(len(y)), y]
                           .mean()), float((lp.argmax(1) == y).double().mean()))


def test_prediction_divergence_known_values() -> None:
    p, q = [0.9, 0.1], [0.5, 0.5]
    a = _outputs([np.log(p).tolist(), np.log(p).tolist()], [0, 1])
    b = _outputs([np.log(q[::-1]).tolist(), np.log([0.2, 0.8]).tolist()], [0, 1])
    got = dv.prediction_divergence(a, b)
    kl = [sum(x * math.log(x / y) for x, y in zip(p, qq, strict=True))
          for qq in ([0.5, 0.5], [0.2, 0.8])]
    assert got["kl"] == pytest.approx(np.mean(kl))
    m = [[(x + y) / 2 for x, y in zip(p, qq, strict=True)] for qq in ([0.5, 0.5], [0.2, 0.8])]
    js = [0.5 * sum(x * math.log(x / y) for x, y in zip(p, mm, strict=True))
          + 0.5 * sum(x * math.log(x / y) for x, y in zip(qq, mm, strict=True))
          for qq, mm in zip(([0.5, 0.5], [0.2, 0.8]), m, strict=True)]
    assert got["js"] == pytest.approx(np.mean(js))
    # a predicts 0, 0 (acc 0.5); b predicts 0 (tie → first), 1 (acc 1.0)
    assert got["disagreement"] == pytest.approx(0.5)
    assert got["disagreement_norm"] == pytest.approx(0.5 / 0.25)
    assert got["acc_gap"] == pytest.approx(-0.5)
    assert got["loss_gap"] == pytest.approx(a.loss - b.loss)


def test_cka_is_invariant_to_rotation_and_scale_and_below_one() -> None:
    g = _gen(3)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    rot, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert dv.linear_cka(x, 3.0 * x @ rot, 20) == pytest.approx(1.0, abs=1e-10)
    y = torch.randn(60, 4, generator=g, dtype=torch.float64)
    assert dv.linear_cka(x, y, 20) < 0.5


# --- barrier ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn", "all_cnn_c"])
def test_barrier_between_different_networks_is_finite(name: str) -> None:
    a, b = _model(name, 0).state_dict(), _model(name, 1).state_dict()
    res = dv.loss_barrier(_model(name), a, b, _probe(), _bn_data(), alphas=5,
                          bn_reset_batches=2, batch_size=20)
    assert math.isfinite(res.barrier) and math.isfinite(res.barrier_mean)
    assert res.barrier_mean >= res.barrier - 1e-12 or res.barrier >= 0.0
    assert res.losses.shape == (5,) and res.alphas[0] == 0.0 and res.alphas[-1] == 1.0


def test_bn_reset_runs_only_with_batch_norm() -> None:
    bn_model = _model("all_cnn_c")
    assert dv.reset_bn_statistics(bn_model, _bn_data(), batches=2, batch_size=20)
    assert not bn_model.training
    bn = next(m for m in bn_model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.momentum == 0.1 and not torch.all(bn.running_mean == 0)
    assert not dv.reset_bn_statistics(_model("small_cnn"), None, batches=2, batch_size=20)
    with pytest.raises(ValueError, match="bn_data"):
        dv.reset_bn_statistics(bn_model, None, batches=2, batch_size=20)


# --- compare_runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ds():
    runs = _runs()
    ds = dv.compare_runs(runs, _model, _probe(), None, FAST, progress=False)
    return runs, ds


def test_branch_matches_blurred_reference_exactly_until_switch(small_ds) -> None:
    _, ds = small_ds
    for var in [v for v in ds.data_vars if "reference" in ds[v].dims]:
        identity = dv.IDENTICAL[var[len("div_"):]]
        epochs = [2] if "barrier" in var else [0, 1, 2]  # barriers only at barrier epochs
        up_to = ds[var].sel(reference="blurred", switch_epoch=2, epoch=epochs).values
        np.testing.assert_array_equal(up_to, np.full(up_to.shape, identity), err_msg=var)
    after = ds["div_l2"].sel(reference="blurred", switch_epoch=2, epoch=[3, 4, 5]).values
    assert np.all(after > 0)
    assert np.all(ds["div_js"].sel(reference="blurred", switch_epoch=2, epoch=5).values > 0)
    assert np.all(ds["div_cka"].sel(reference="blurred", switch_epoch=2, epoch=5).values < 1)


def test_compare_runs_layout_and_nans(small_ds) -> None:
    _, ds = small_ds
    assert list(ds["switch_epoch"].values) == list(SWITCHES)
    assert ds["div_l2"].dims == ("switch_epoch", "seed", "reference", "epoch")
    assert list(ds["reference"].values) == ["blurred", "sharp"]
    assert ds["div_l2_seeds"].dims == ("switch_epoch", "seed", "seed_b", "epoch")
    assert "div_l2_aligned_seeds" in ds and "div_l2_aligned" not in ds
    # the stage writes values only; the cube's assembly describes them (variables.py)
    assert all(not var.attrs for var in ds.data_vars.values())
    described = describe(ds.copy())
    for var in described.data_vars.values():
        assert var.attrs["long_name"] and var.attrs["units"] == "1"
    assert "in nats" in described["div_kl_seeds"].attrs["long_name"]
    assert "seed_b" in described["div_kl_seeds"].attrs["long_name"]
    assert "reference run" in described["div_kl"].attrs["long_name"]
    # run (0, s) stops at epoch 3: later vs_sharp and its seed pairs are missing
    sharp = ds["div_l2"].sel(reference="sharp", switch_epoch=2)
    assert np.all(np.isnan(sharp.sel(epoch=[4, 5]).values))
    assert np.all(np.isnan(ds["div_l2_seeds"].sel(switch_epoch=0, epoch=[4, 5]).values))
    assert np.all(np.isfinite(sharp.sel(epoch=3).values))
    # every run of a seed starts from that seed's initial weights: its never-blurred run,
    # the reference=sharp of that very seed, is at distance 0 at epoch 0
    np.testing.assert_array_equal(ds["div_l2"].sel(reference="sharp", epoch=0).values, 0.0)


def test_every_metric_the_config_accepts_is_computed_described_and_has_an_identity(
        small_ds) -> None:
    """A metric lives in several places (docs/architecture.md, "A divergence metric"): the
    schema's ``divergence.metrics`` (enum and default: all), ``METRICS``, the identity
    values, the cube's descriptions, and the method that computes it. A name left out of
    one of them fails here, including a metric that no method fills in (it would come out
    NaN everywhere without an error)."""
    import yaml

    from critperiods.variables import DIVERGENCE_METRICS

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    metrics = schema["properties"]["divergence"]["properties"]["metrics"]
    assert metrics["items"]["enum"] == list(dv.METRICS) == metrics["default"]
    assert set(dv.WEIGHT_METRICS + dv.FUNCTION_METRICS) <= set(dv.METRICS)
    produced = dv.DivergenceConfig().variables()
    assert [v for v in produced if v not in DIVERGENCE_METRICS] == []
    assert [v for v in produced if v not in dv.IDENTICAL] == []
    _, ds = small_ds  # identical checkpoints get IDENTICAL without any method: look past them
    late = {"switch_epoch": 2, "epoch": 5}
    blurred = {**late, "reference": "blurred"}
    for variable in produced:
        seeds = ds[f"div_{variable}_seeds"].sel(late).values
        assert np.isfinite(seeds[~np.eye(len(SEEDS), dtype=bool)]).all(), variable
        if variable not in dv.SEEDS_ONLY:
            assert np.isfinite(ds[f"div_{variable}"].sel(blurred)).all(), \
                variable


def test_seed_matrices_are_symmetric_with_identity_diagonal(small_ds) -> None:
    _, ds = small_ds
    for metric in ("l2", "l2_aligned", "cosine", "js", "cka", "disagreement"):
        da = ds[f"div_{metric}_seeds"].sel(switch_epoch=2, epoch=5).values
        np.testing.assert_allclose(da, da.T, rtol=1e-12, err_msg=metric)
        np.testing.assert_array_equal(np.diag(da), dv.IDENTICAL[metric])
    gap = ds["div_acc_gap_seeds"].sel(switch_epoch=2, epoch=5).values
    np.testing.assert_allclose(gap, -gap.T)
    l2 = ds["div_l2_seeds"].sel(switch_epoch=2, epoch=5).values
    aligned = ds["div_l2_aligned_seeds"].sel(switch_epoch=2, epoch=5).values
    assert aligned[0, 1] <= l2[0, 1]
    # both seeds share their trunk's first epochs with nothing: seed pairs differ at epoch 0
    assert ds["div_l2_seeds"].sel(switch_epoch=0, epoch=0).values[0, 1] > 0


def test_barriers_only_at_switch_and_last_epoch(small_ds) -> None:
    _, ds = small_ds
    # branch 2 ends at 5, the never-blurred run (switch 0) at 3, the blurred one at 5
    bar = ds["div_barrier"].sel(reference="sharp", switch_epoch=2)
    np.testing.assert_array_equal(bar.sel(epoch=0).values, 0.0)  # identical trunk checkpoints
    assert np.all(np.isfinite(bar.sel(epoch=[2, 3]).values))
    mean = ds["div_barrier_mean"].sel(reference="sharp", switch_epoch=2, epoch=[2, 3])
    assert np.all(mean.values > 0)
    assert np.all(np.isnan(bar.sel(epoch=[1, 4, 5]).values))
    bar = ds["div_barrier"].sel(reference="blurred", switch_epoch=2)
    np.testing.assert_array_equal(bar.sel(epoch=2).values, 0.0)
    assert np.all(np.isnan(bar.sel(epoch=[0, 1, 3, 4]).values))
    assert np.all(np.isfinite(bar.sel(epoch=5).values))
    seeds = ds["div_barrier_seeds"].sel(switch_epoch=2, epoch=5).values
    assert np.all(np.isfinite(seeds)) and seeds[0, 1] == seeds[1, 0]


def test_forward_passes_once_per_distinct_checkpoint(small_ds) -> None:
    runs, ds = small_ds
    distinct = {dv.state_digest(st) for ckpts in runs.values() for st in ckpts.values()}
    checkpoints = sum(len(c) for c in runs.values())
    assert ds.attrs["forward_passes"] == len(distinct) < checkpoints
    assert ds.attrs["barrier_evaluations"] > 0 and ds.attrs["weight_matchings"] > 0


def test_compare_runs_with_batch_norm_model() -> None:
    runs = _runs("all_cnn_c", switches=(0, 1), seeds=(0, 1), after=1)
    config = dv.DivergenceConfig(probe_size=PROBE_N, batch_size=20, cka_batch_size=20,
                                 barrier_alphas=3, bn_reset_batches=2,
                                 metrics=("l2", "l2_aligned", "cka", "barrier"))

    def make() -> nn.Module:
        return _model("all_cnn_c")

    ds = dv.compare_runs(runs, make, _probe(), _bn_data(), config, progress=False)
    assert set(ds.data_vars) >= {"div_barrier_mean_seeds", "div_cka"}
    assert "div_js_seeds" not in ds
    barrier = ds["div_barrier"].sel(reference="sharp", switch_epoch=1, epoch=1)
    assert np.isfinite(barrier.values).all()
    assert np.isfinite(ds["div_barrier_seeds"].sel(switch_epoch=1, epoch=2).values).all()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        dv.DivergenceConfig(metrics=("l2", "wasserstein"))
    with pytest.raises(ValueError, match="endpoints"):
        dv.DivergenceConfig(barrier_alphas=1)


def test_probe_and_bn_data_from_prepared_data() -> None:
    g = _gen(1)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=g)
        return Split(images, images // 2, torch.randint(0, CLASSES, (n,), generator=g))

    data = PreparedData(split(30), split(20), torch.tensor([0.5]), torch.tensor([0.25]),
                        CLASSES, {})
    config = dv.DivergenceConfig(probe_size=8, batch_size=4, bn_reset_batches=2)
    images, labels = dv.probe_from_data(data, config)
    assert images.shape == (8, 1, SIZE, SIZE) and images.dtype == torch.float32
    assert labels.shape == (8,)
    torch.testing.assert_close(images, dv.probe_from_data(data, config)[0])
    assert dv.bn_data_from(data, config).shape == (8, 1, SIZE, SIZE)


def test_reference_longer_than_every_run() -> None:
    """The trunk is extended to a multiple of trunk_stride, past every run's last epoch:
    epochs only the reference reaches have no pairs and stay NaN (no crash)."""
    runs = _runs(switches=(0, 2), seeds=(0, 1), after=1)
    trunk = runs[(ALWAYS_BLURRED, 0)]
    for s in (0, 1):
        ref = runs[(ALWAYS_BLURRED, s)]
        ref[4] = _step(ref[3], s, -1, 4)
    ds = dv.compare_runs(runs, _model, _probe(), None, FAST, progress=False)
    assert 4 in trunk and ds["div_l2"].sel(reference="blurred", epoch=4).isnull().all()
    assert ds["div_l2"].sel(reference="blurred", switch_epoch=2, epoch=3).notnull().all()
