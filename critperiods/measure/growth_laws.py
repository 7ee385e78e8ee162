"""How a branch's divergence from its always-blurred reference grows after the switch.

For each run, ``div_<metric>`` against the always-blurred run is exactly 0 up to its switch
epoch ``K`` and then grows. Against ``t = epoch − K`` (``t > 0`` only) three forms are fitted with
``scipy.optimize.curve_fit`` and the one with the lowest AIC (``n·ln(RSS/n) + 2k``) is kept:

* ``linear``      ``a·t + c``   — rate ``a`` (metric units per epoch): steady drift;
* ``exponential`` ``c·exp(r·t)`` — rate ``r`` (per epoch): runaway separation, as in chaos;
* ``power``       ``a·t^p``     — exponent ``p`` (dimensionless): diffusive-like spreading;
* ``sqrt``        ``a·√t + c``  — prefactor ``a`` (metric units per √epoch): diffusion itself.
  Not among the default :data:`FORMS`; the perturbation stage asks for it (``forms=``) to tell
  linear from √t growth.

All of them have two parameters, so AIC ranks them by residual sum of squares; it is kept in the
general form so a form with another parameter count can be added without changing the rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.optimize import OptimizeWarning, curve_fit

#: The forms fitted by default, and the code of "no fit" (fewer than ``MIN_POINTS`` points
#: after the switch).
FORMS, NO_FIT = ("linear", "exponential", "power"), -1
#: Every form that can be asked for; a fit's integer code indexes this (the default FORMS first).
ALL_FORMS = (*FORMS, "sqrt")
MIN_POINTS = 3
#: What the rate of each form means.
RATE_MEANING = {"linear": "slope a of a*t + c (metric units per epoch)",
                "exponential": "rate r of c*exp(r*t) (per epoch)",
                "power": "exponent p of a*t**p (dimensionless)",
                "sqrt": "prefactor a of a*sqrt(t) + c (metric units per sqrt(epoch))"}


@dataclass(frozen=True)
class GrowthFit:
    """The chosen form (``None`` if no fit), its rate or exponent, R², and every form's AIC."""

    form: str | None
    rate: float
    r2: float
    aic_by_form: dict[str, float]

    @property
    def code(self) -> int:
        """``form`` as an integer: index into :data:`ALL_FORMS`, or :data:`NO_FIT`."""
        return NO_FIT if self.form is None else ALL_FORMS.index(self.form)


def _linear(t: np.ndarray, a: float, c: float) -> np.ndarray:
    return a * t + c


def _exponential(t: np.ndarray, c: float, r: float) -> np.ndarray:
    return c * np.exp(r * t)


def _power(t: np.ndarray, a: float, p: float) -> np.ndarray:
    return a * np.power(t, p)


def _sqrt(t: np.ndarray, a: float, c: float) -> np.ndarray:
    return a * np.sqrt(t) + c


def _initial_guesses(t: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """Starting points from straight-line fits in linear, semi-log and log-log coordinates."""
    a, c = np.polyfit(t, y, 1)
    guesses = {"linear": [a, c], "exponential": [float(np.mean(y)), 0.0],
               "power": [float(np.mean(y)), 1.0], "sqrt": list(np.polyfit(np.sqrt(t), y, 1))}
    if np.all(y > 0):
        r, log_c = np.polyfit(t, np.log(y), 1)
        p, log_a = np.polyfit(np.log(t), np.log(y), 1)
        guesses["exponential"] = [math.exp(log_c), r]
        guesses["power"] = [math.exp(log_a), p]
    return guesses


#: form → (model function, index of its rate/exponent among the fitted parameters).
MODELS: dict[str, tuple[Callable[..., np.ndarray], int]] = {
    "linear": (_linear, 0), "exponential": (_exponential, 1), "power": (_power, 1),
    "sqrt": (_sqrt, 0)}


def _fit_one(form: str, t: np.ndarray, y: np.ndarray,
             p0: list[float]) -> tuple[float, np.ndarray] | None:
    """``(rate, prediction)`` of one form, or None if the fit fails or is not finite."""
    func, rate_index = MODELS[form]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(func, t, y, p0=p0, maxfev=20000)
            pred = func(t, *params)
    except (RuntimeError, ValueError):
        return None
    if not np.all(np.isfinite(pred)) or not np.all(np.isfinite(params)):
        return None
    return float(params[rate_index]), pred


def aic(rss: float, n: int, k: int) -> float:
    """Akaike information criterion of a least-squares fit: ``n·ln(RSS/n) + 2k``."""
    return n * math.log(max(rss / n, np.finfo(float).tiny)) + 2 * k


def fit_growth_law(t: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                   forms: Sequence[str] = FORMS) -> GrowthFit:
    """Fit ``forms`` (default :data:`FORMS`) to ``y(t)`` on the finite points with ``t > 0``;
    keep the best AIC (``aic_by_form`` has an entry per form asked for).

    Fewer than :data:`MIN_POINTS` such points (or no successful fit) give ``form=None`` and NaN.
    """
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    keep = (t > 0) & np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    none = GrowthFit(None, math.nan, math.nan, {f: math.nan for f in forms})
    if t.size < MIN_POINTS:
        return none
    guesses = _initial_guesses(t, y)
    fits, aics = {}, {}
    for form in forms:
        fit = _fit_one(form, t, y, guesses[form])
        aics[form] = math.inf if fit is None else aic(float(np.sum((y - fit[1]) ** 2)), t.size, 2)
        if fit is not None:
            fits[form] = fit
    if not fits:
        return GrowthFit(None, math.nan, math.nan, aics)
    best = min(fits, key=lambda f: aics[f])
    rate, pred = fits[best]
    tss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / tss if tss > 0 else math.nan
    return GrowthFit(best, rate, r2, aics)


def _fit_grid(div: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Form codes, rates and R² over (switch_epoch, seed) of a ``(…, epoch)`` divergence."""
    div = div.transpose("switch_epoch", "seed", "epoch")
    switches = div["switch_epoch"].values
    epochs = div["epoch"].values.astype(float)
    shape = div.shape[:2]
    codes = np.full(shape, NO_FIT, dtype=np.int8)
    rates, r2s = np.full(shape, np.nan), np.full(shape, np.nan)
    for i, k in enumerate(switches):
        for j in range(shape[1]):
            fit = fit_growth_law(epochs - float(k), div.values[i, j])
            codes[i, j], rates[i, j], r2s[i, j] = fit.code, fit.rate, fit.r2
    return codes, rates, r2s


def growth_law_dataset(div_ds: xr.Dataset,
                       metrics: Sequence[str] = ("l2", "disagreement")) -> xr.Dataset:
    """Growth-law fits of ``div_<metric>`` against the always-blurred run (``reference =
    "blurred"``) for every run, dims (switch_epoch, seed).

    Variables ``div_<metric>_growth_form`` (int8: an index into :data:`ALL_FORMS`, or
    :data:`NO_FIT`), ``div_<metric>_growth_rate`` (what it means depends on the form:
    :data:`RATE_MEANING`) and ``div_<metric>_growth_r2``. Metrics absent from ``div_ds`` are
    skipped. Their attributes are given when the cube is assembled
    (:func:`critperiods.variables.growth_attrs`).
    """
    out = xr.Dataset(coords={"switch_epoch": div_ds["switch_epoch"], "seed": div_ds["seed"]})
    dims = ("switch_epoch", "seed")
    for metric in metrics:
        name = f"div_{metric}"
        if name not in div_ds:
            continue
        codes, rates, r2s = _fit_grid(div_ds[name].sel(reference="blurred", drop=True))
        out[f"div_{metric}_growth_form"] = xr.Variable(dims, codes)
        out[f"div_{metric}_growth_rate"] = xr.Variable(dims, rates)
        out[f"div_{metric}_growth_r2"] = xr.Variable(dims, r2s)
    return out
