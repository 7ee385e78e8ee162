"""Whether a λ̂ estimate can be trusted: convergence diagnostics and a quality flag.

Every estimate gets, from its post-burn-in SGLD trace (healthy chains only):

* ``rhat`` — rank-normalised split R-hat over chains (Vehtari et al. 2021, computed by
  ArviZ's ``arviz_stats``): near 1 when the chains sample the same distribution and none of
  them drifts within itself;
* ``ess`` — bulk effective sample size of the pooled draws (ArviZ);
* ``trend_z`` — how far the mean over the first 20 % of the draws lies from the mean over
  the last 50 %, in Monte Carlo standard errors (ArviZ's ``mcse`` of each segment): the
  running λ̂ is still moving when this is large (a Geweke-style check);
* ``tail_khat`` — the Pareto k̂ of the draws' right tail (ArviZ's ``pareto_khat``; Vehtari
  et al. 2024): how heavy the tail of the draws is whose mean λ̂ is. Above
  :func:`khat_threshold` of the number of draws the mean is ruled by a few excursions and
  not to be trusted: a step size near SGLD's stability limit sends the chains on loss
  excursions hundreds of times their bulk (R-hat, rank-based, does not see their size);
* ``distance_growth`` — how much the chains' squared distance from the checkpoint,
  ``‖w − w*‖²``, grew from the first to the second half of the draws (their means' ratio
  minus 1): near 0 once the chains have relaxed. In the directions the loss leaves flat
  only the localisation pulls a chain back, so the distance relaxes over ~``1 / (ε γ)``
  steps; all chains drift alike there, which R-hat cannot see, and the loss moves too
  little for the trend test. Reported, not flagged (docs/llc.md);

and, from these, a CF bit-field flag (:data:`FLAGS`, :func:`quality_flags`): ``ok`` (0), or
any of ``negative`` (λ̂ < 0: the checkpoint is not a local minimum at this localisation, so
SGLD descends and λ̂ is meaningless), ``not_converged`` (R-hat above ``max_rhat`` or
``|trend_z|`` above ``max_trend_z``), ``diverged_chains`` (a chain blew up and was left
out; all of them: λ̂ is NaN), ``heavy_tailed`` (``tail_khat`` above
:func:`khat_threshold`) and ``unstable_step`` (the step size is past the drift's stability
limit at the checkpoint, ``4 / (nβ λ_max + γ)`` lowered for the minibatches' curvature
noise: :mod:`critperiods.measure.llc.stability`, whose ``λ_max`` and noise the llc stage
stores as ``llc_sharpness`` and ``llc_sharpness_sd``). The llc stage writes the
diagnostics; the cube applies the
thresholds (``analysis.llc_max_rhat``, ``analysis.llc_max_trend_z``), so changing them reruns
only the aggregation. A flagged estimate is never used for a marker and is drawn hollow,
unless its every flag is one the config reads in (``analysis.llc_read_flagged``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: flag → bit of ``llc_quality`` (a CF bit field); 0 means ok.
FLAGS = {"negative": 1, "not_converged": 2, "diverged_chains": 4, "heavy_tailed": 16,
         "unstable_step": 32}
MAX_RHAT = 1.1
MAX_TREND_Z = 4.0
#: Above this ``distance_growth`` the chains are said to be still spreading. Chains sampled
#: for several relaxation times scatter about 0 by a few per cent for a network of thousands
#: of weights, more for a few hundred (docs/llc.md). Said, not flagged.
RELAXED_GROWTH = 0.1


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of one estimate (NaN where they cannot be computed)."""

    rhat: float
    ess: float
    trend_z: float
    distance_growth: float = float("nan")
    tail_khat: float = float("nan")


def _trend_z(post: np.ndarray) -> float:
    """(mean of the first 20 % − mean of the last 50 %) / combined MCSE, over all chains."""
    from arviz_stats.base import array_stats

    n = post.shape[1]
    head, tail = post[:, : max(2, n // 5)], post[:, n - max(2, n // 2):]
    se = math.hypot(*(float(array_stats.mcse(part, chain_axis=0, draw_axis=1))
                      for part in (head, tail)))
    diff = float(head.mean() - tail.mean())
    if not se > 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def diagnose(loss_trace: np.ndarray, burn_in: int, diverged: np.ndarray,
             distance_trace: np.ndarray | None = None) -> Diagnostics:
    """Diagnose one estimate from its ``(chains, burn_in + draws)`` loss trace (and, where
    given, the chains' ``‖w − w*‖²`` at the same records).

    The trace of λ̂ per draw is an affine function of the loss (``nβ (L_B − L_n(w*))``), so
    R-hat, ESS, the trend z-score and the tail's k̂ are the same computed on either.
    Diverged chains are left out; with no healthy chain or fewer than 4 post-burn-in draws
    all are NaN, R-hat with one healthy chain, ``distance_growth`` without a distance
    trace, and ``tail_khat`` with fewer draws than a tail fit needs (25).
    """
    from arviz_stats.base import array_stats

    healthy = ~np.asarray(diverged, dtype=bool)
    post = np.asarray(loss_trace, dtype=float)[healthy, burn_in:]
    if post.shape[0] == 0 or post.shape[1] < 4 or not np.all(np.isfinite(post)):
        return Diagnostics(float("nan"), float("nan"), float("nan"))
    growth = (float("nan") if distance_trace is None else
              _growth(np.asarray(distance_trace, dtype=float)[healthy, burn_in:]))
    # R-hat compares chains: with one left it is undefined (ArviZ would log its shape check)
    rhat = (float(array_stats.rhat(post, chain_axis=0, draw_axis=1)) if post.shape[0] > 1
            else float("nan"))
    return Diagnostics(rhat, float(array_stats.ess(post, chain_axis=0, draw_axis=1)),
                       _trend_z(post), growth, _tail_khat(post))


def _tail_khat(post: np.ndarray) -> float:
    """ArviZ's Pareto k̂ of the right tail of the pooled draws (NaN for fewer than 25, or a
    trace without spread, where no tail can be fitted)."""
    import warnings

    from arviz_stats.base import array_stats

    if post.size < 25 or np.ptp(post) == 0:
        return float("nan")
    with warnings.catch_warnings():  # a short tail's refit notes; the k̂ says enough
        warnings.simplefilter("ignore")
        try:
            return float(array_stats.pareto_khat(post, chain_axis=0, draw_axis=1, tail="right"))
        except ValueError:  # too few draws in the tail for this sample's efficiency
            return float("nan")


#: Fewer draws than this, and k̂ is too noisy for the sample-size rule: light-tailed traces
#: of 40 draws read above its 0.38 a fifth to a third of the time, above 0.7 3-4 % of the
#: time; of 100 draws above its 0.5 1-2 %; of 240, never (bench/tail_khat_false_flags.py).
MIN_TAIL_DRAWS = 100


def khat_threshold(samples: float | np.ndarray) -> float | np.ndarray:
    """The largest Pareto k̂ at which a mean of ``samples`` draws is reliable: from
    :data:`MIN_TAIL_DRAWS` on ``min(1 − 1 / log10(S), 0.7)`` (Vehtari et al. 2024; ArviZ's
    rule for PSIS-LOO), 0.5 at 100 draws, 0.62 at the default config's 4 × 100, 0.7 from
    about 2,150 on; with fewer draws 0.7, the rule's cap, since k̂ itself is then too noisy
    to hold to the rule; NaN below 2 draws."""
    s = np.asarray(samples, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rule = np.where(s >= MIN_TAIL_DRAWS, np.minimum(1 - 1 / np.log10(s), 0.7), 0.7)
        limit = np.where(s >= 2, rule, np.nan)
    return float(limit) if limit.ndim == 0 else limit


def _growth(post: np.ndarray) -> float:
    """Mean of the second half of the draws over the mean of the first half, minus 1."""
    half = post.shape[1] // 2
    early, late = post[:, :half].mean(), post[:, post.shape[1] - half:].mean()
    return float(late / early - 1.0) if early > 0 else float("nan")


def flat_direction_growth(step_size: float, gamma: float, burn_in: int, draws: int) -> float:
    """The ``distance_growth`` of plain SGLD chains (one step per draw) in directions the
    loss leaves flat, where only the localisation acts: there ``w − w*`` is an
    Ornstein–Uhlenbeck walk from 0, whose expected square after ``t`` steps is its plateau
    times ``1 − (1 − ε γ / 2)^(2t)``. Measured growth near this value says the chains'
    spread is that of flat directions still filling in."""
    q = (1.0 - 0.5 * step_size * gamma) ** 2
    steps = np.arange(burn_in + 1, burn_in + draws + 1, dtype=float)
    return _growth((1.0 - q ** steps)[None, :])


def quality_flags(llc_mean: np.ndarray, diverged_chains: np.ndarray, rhat: np.ndarray,
                  trend_z: np.ndarray, max_rhat: float = MAX_RHAT,
                  max_trend_z: float = MAX_TREND_Z, tail_khat: np.ndarray | None = None,
                  samples: np.ndarray | None = None,
                  unstable: np.ndarray | None = None) -> np.ndarray:
    """The flag bits of every estimate (arrays of one shape); NaN where ``llc_mean`` and
    ``diverged_chains`` are both NaN (no estimate was made there).

    A NaN R-hat or trend of an estimate that exists counts as not converged, and an estimate
    whose chains all diverged (NaN mean) as ``diverged_chains``. ``heavy_tailed`` where
    ``tail_khat`` exceeds :func:`khat_threshold` of ``samples`` (the healthy chains' draws
    after burn-in); a NaN k̂ (too few draws to fit a tail) raises nothing, and without
    ``tail_khat`` (estimates made before it was recorded) the flag is never raised.
    ``unstable_step`` where ``unstable`` (booleans: the step past its stability limit,
    :func:`past_stability_limit`) is true.
    """
    mean, div = np.asarray(llc_mean, dtype=float), np.asarray(diverged_chains, dtype=float)
    rhat, trend = np.asarray(rhat, dtype=float), np.asarray(trend_z, dtype=float)
    khat = np.full(mean.shape, np.nan) if tail_khat is None else np.asarray(tail_khat, float)
    limit = khat_threshold(np.full(mean.shape, np.nan) if samples is None else samples)
    with np.errstate(invalid="ignore"):
        bits = (np.where(mean < 0, FLAGS["negative"], 0)
                | np.where(~(rhat <= max_rhat) | ~(np.abs(trend) <= max_trend_z),
                           FLAGS["not_converged"], 0)
                | np.where((div > 0) | (np.isnan(mean) & np.isfinite(div)),
                           FLAGS["diverged_chains"], 0)
                | np.where(khat > limit, FLAGS["heavy_tailed"], 0)
                | np.where(np.zeros(mean.shape, bool) if unstable is None
                           else np.asarray(unstable, bool), FLAGS["unstable_step"], 0))
    # an estimate whose chains all diverged has no diagnostics: it is not "not converged";
    # its checkpoint's stability limit still holds (a step past it is the likeliest cause)
    bits = np.where(np.isnan(mean) & (div > 0),
                    FLAGS["diverged_chains"] | (bits & FLAGS["unstable_step"]), bits)
    return np.where(np.isnan(mean) & np.isnan(div), np.nan, bits.astype(float))


def stable_step_size(top_eigenvalue: float | np.ndarray, nbeta: float | np.ndarray,
                     gamma: float | np.ndarray,
                     spread: float | np.ndarray = 0.0) -> float | np.ndarray:
    """The largest SGLD step at which the drift is stable, in mean square, along the
    Hessian's top eigenvector: ``4 a / (a² + (nβ s)²)`` with ``a = nβ λ_max + γ`` and ``s``
    the ``spread`` of the minibatches' curvature along it (0, full batch: ``4 / a``);
    ``inf`` where ``a ≤ 0`` (no direction the drift pushes out of), NaN where ``λ_max`` is
    NaN. A NaN ``spread`` (not measured) counts as 0."""
    nbeta = np.asarray(nbeta, dtype=float)
    stiffness = nbeta * np.asarray(top_eigenvalue, dtype=float) + np.asarray(gamma, dtype=float)
    noise = nbeta * np.nan_to_num(np.asarray(spread, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(stiffness > 0, 4.0 * stiffness / (stiffness ** 2 + noise ** 2),
                         np.where(np.isnan(stiffness), np.nan, np.inf))
    return float(limit) if limit.ndim == 0 else limit


def past_stability_limit(step_size: float | np.ndarray, top_eigenvalue: float | np.ndarray,
                         nbeta: float | np.ndarray, gamma: float | np.ndarray,
                         spread: float | np.ndarray = 0.0) -> np.ndarray:
    """Where ``step_size`` exceeds :func:`stable_step_size` (False where ``λ_max`` is NaN:
    not measured, nothing to say)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(step_size, dtype=float) > stable_step_size(top_eigenvalue, nbeta,
                                                                     gamma, spread)


def count_flags(quality: np.ndarray) -> dict[str, int]:
    """How many estimates (finite entries of ``quality``) are ok and how many carry each flag."""
    q = np.asarray(quality, dtype=float)
    q = q[np.isfinite(q)].astype(int)
    return {"estimates": int(q.size), "ok": int(np.sum(q == 0)),
            **{name: int(np.sum((q & bit) > 0)) for name, bit in FLAGS.items()}}


__all__ = ["FLAGS", "MAX_RHAT", "MAX_TREND_Z", "MIN_TAIL_DRAWS", "RELAXED_GROWTH", "Diagnostics",
           "count_flags", "diagnose", "flat_direction_growth", "khat_threshold",
           "past_stability_limit", "quality_flags", "stable_step_size"]
