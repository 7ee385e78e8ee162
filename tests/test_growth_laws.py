"""Growth-law fits: the right form on noisy synthetic curves, NaN when too short."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from critperiods.measure.growth_laws import FORMS, NO_FIT, fit_growth_law, growth_law_dataset
from critperiods.results.cube import describe

T = np.arange(1, 31, dtype=float)
CURVES = {
    "linear": (0.5 * T + 1.0, 0.5),
    "exponential": (0.2 * np.exp(0.15 * T), 0.15),
    "power": (2.0 * T**0.5, 0.5),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_picks_the_generating_form(form: str, seed: int) -> None:
    clean, rate = CURVES[form]
    y = clean * (1 + 0.03 * np.random.default_rng(seed).standard_normal(T.size))
    fit = fit_growth_law(T, y)
    assert fit.form == form
    assert fit.rate == pytest.approx(rate, rel=0.1)
    assert fit.r2 > 0.95
    assert min(fit.aic_by_form, key=fit.aic_by_form.get) == form


def test_fit_ignores_t_not_after_switch_and_needs_three_points() -> None:
    t = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    y = np.array([0.0, 0.0, 0.0, 3.0, 5.0])
    fit = fit_growth_law(t, y)
    assert fit.form is None and fit.code == NO_FIT
    assert math.isnan(fit.rate) and math.isnan(fit.r2)
    fit = fit_growth_law(np.append(t, [3.0, np.nan]), np.append(y, [7.0, 99.0]))
    assert fit.form == "linear" and fit.rate == pytest.approx(2.0)


def test_growth_law_dataset_fits_every_run() -> None:
    switches, seeds, epochs = np.array([0, 10]), np.array([0, 1]), np.arange(0, 41)
    l2 = np.full((2, 2, epochs.size), np.nan)
    for i, k in enumerate(switches):
        t = epochs - k
        l2[i, :, :] = np.where(t > 0, 0.2 * np.exp(0.1 * t), 0.0)
    l2[1, 1, :] = np.nan  # a missing run
    both = np.stack([l2, np.zeros_like(l2)], axis=2)  # vs the always-blurred run, vs sharp
    ds = xr.Dataset({"div_l2": (("switch_epoch", "seed", "reference", "epoch"), both)},
                    coords={"switch_epoch": switches, "seed": seeds,
                            "reference": ["blurred", "sharp"], "epoch": epochs})
    out = growth_law_dataset(ds)
    assert set(out.data_vars) == {"div_l2_growth_form", "div_l2_growth_rate", "div_l2_growth_r2"}
    assert all(not v.attrs for v in out.data_vars.values())  # described at assembly
    out = describe(out)
    form = out["div_l2_growth_form"]
    assert form.dims == ("switch_epoch", "seed")
    meanings = form.attrs["flag_meanings"].split()
    codes = dict(zip(meanings, form.attrs["flag_values"].tolist(), strict=True))
    assert form.values[0, 0] == codes["exponential"] and form.values[1, 1] == codes["none"]
    np.testing.assert_allclose(out["div_l2_growth_rate"].values[0], 0.1, rtol=1e-6)
    assert np.isnan(out["div_l2_growth_rate"].values[1, 1])
    for v in out.data_vars.values():
        assert "long_name" in v.attrs and "units" in v.attrs
