"""Whether a toy λ̂ can be trusted: the λ̂ stage's flags, and whether it started at a minimum.

The estimator assumes that the point it starts from is a local minimum. From a point ``ΔL``
above the minimum of its basin the SGLD chains descend, and the estimate comes off by about
``nβ ΔL`` (on the toy study's hot sum landscapes to two digits: sum_k1-3's λ̂ of 0.030 at a
hot endpoint plus its ``nβ ΔL`` of 0.658 is its λ̂ at ``w*``, 0.689).
:func:`excess_above_minimum` measures ``ΔL`` by descending from the point (L-BFGS on the
closed-form ``L_n``), the landscape job records ``nβ ΔL`` beside each estimate, and the cube
flags an estimate ``not_at_minimum`` (:data:`FLAGS`) when that bias is more than
``toy.llc.max_endpoint_bias`` of ``λ̂ + nβ ΔL``, the value at the minimum. The other flags
are the λ̂ stage's (:mod:`critperiods.measure.llc.quality`: ``negative``,
``not_converged`` at ``analysis.llc_max_rhat`` and ``analysis.llc_max_trend_z``,
``diverged_chains``, ``heavy_tailed``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

from critperiods.measure.llc.quality import FLAGS as LLC_FLAGS
from critperiods.measure.llc.quality import MAX_RHAT, MAX_TREND_Z, quality_flags
from critperiods.toy.landscapes import Landscape, RegressionData, excess_loss

#: flag → bit of the toy cube's ``llc_quality`` (a CF bit field); 0 means ok. The λ̂
#: stage's ``unstable_step`` is not among them: the toy study does not measure the Hessian.
FLAGS = {**{k: v for k, v in LLC_FLAGS.items() if k != "unstable_step"}, "not_at_minimum": 8}
MAX_ENDPOINT_BIAS = 0.1  #: the schema default of ``toy.llc.max_endpoint_bias``


def excess_above_minimum(landscape: Landscape, data: RegressionData, point: np.ndarray) -> float:
    """``L_n(point) − L_n(w_min) ≥ 0``, with ``w_min`` where L-BFGS descends to from
    ``point`` (the minimum of its basin, or a point on a product's line of minima). NaN for
    a non-finite point."""
    point = np.asarray(point, dtype=float)
    if not np.all(np.isfinite(point)):
        return float("nan")

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        value = excess_loss(landscape, data, wt)
        value.backward()
        return float(value.detach()), wt.grad.numpy()

    start = loss_and_grad(point)[0]
    found = minimize(loss_and_grad, point, jac=True, method="L-BFGS-B",
                     options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
    if not np.isfinite(found.fun):  # a failed descent says nothing: not "at a minimum"
        return float("nan")
    return max(0.0, start - float(found.fun))


def llc_quality(llc_mean: np.ndarray, diverged_chains: np.ndarray, rhat: np.ndarray,
                trend_z: np.ndarray, bias: np.ndarray,
                max_endpoint_bias: float = MAX_ENDPOINT_BIAS, max_rhat: float = MAX_RHAT,
                max_trend_z: float = MAX_TREND_Z, tail_khat: np.ndarray | None = None,
                samples: np.ndarray | None = None) -> np.ndarray:
    """The flag bits of every estimate (arrays of one shape; NaN where none was made): the
    λ̂ stage's flags at its thresholds (``analysis.llc_max_rhat``, ``llc_max_trend_z``), and
    ``not_at_minimum`` where ``bias`` (``nβ ΔL``) exceeds ``max_endpoint_bias · (λ̂ + bias)``
    or could not be measured (NaN). The bias is systematic: it does not average out over
    chains or cells, so it is flagged even where it is within the chains' own noise."""
    bits = quality_flags(llc_mean, diverged_chains, rhat, trend_z, max_rhat, max_trend_z,
                         tail_khat, samples)
    mean, bias = np.asarray(llc_mean, dtype=float), np.asarray(bias, dtype=float)
    with np.errstate(invalid="ignore"):
        off = (bias > max_endpoint_bias * (mean + bias)) | (np.isnan(bias) & np.isfinite(mean))
    return np.where(np.isnan(bits), np.nan,
                    np.nan_to_num(bits).astype(int) | np.where(off, FLAGS["not_at_minimum"], 0))


__all__ = ["FLAGS", "MAX_ENDPOINT_BIAS", "excess_above_minimum", "llc_quality"]
