"""λ̂'s Monte Carlo error, and the ``negative`` flag read against it.

λ̂ is ``nβ`` times the mean of the healthy chains' recorded minibatch losses after burn-in,
minus ``L_n(w*)``, so its Monte Carlo standard error is ``nβ`` times ArviZ's MCSE of that
mean (:func:`llc_mcse`): it counts the draws' autocorrelation and the chains' disagreement.
The cube computes it from ``llc_loss_trace`` when it is assembled (``llc_mcse``), so the λ̂
stage's own output does not change with it.

An estimate is flagged ``negative`` only where it lies below 0 by more than
:data:`NEGATIVE_MCSE` of these errors: one within its noise of 0 is as likely a small
positive λ̂ read low, and leaving those out, but not the ones read as high, would raise
the seed means (docs/llc.md).
"""

from __future__ import annotations

import warnings

import numpy as np

#: λ̂ is ``negative`` where ``λ̂ + NEGATIVE_MCSE · MCSE < 0`` (one-sided, about 2 % of the
#: estimates of a λ̂ whose true value is 0).
NEGATIVE_MCSE = 2.0
MIN_DRAWS = 4  #: fewer draws after burn-in give no MCSE (NaN), as they give no R-hat


def llc_mcse(trace: np.ndarray, burn_in: int, nbeta: float | np.ndarray) -> np.ndarray:
    """λ̂'s MCSE for each estimate of ``trace`` (shape ``(..., chain, draw)``, burn-in
    included; one value per leading index, broadcast with ``nbeta``). A chain with a
    non-finite draw after ``burn_in`` diverged and is left out; NaN where no chain is left
    (or none was run) and with fewer than :data:`MIN_DRAWS` draws after burn-in."""
    from arviz_stats.base import array_stats

    trace = np.asarray(trace, dtype=float)
    post = trace.reshape(-1, *trace.shape[-2:])[..., burn_in:]  # (estimate, chain, draw)
    out = np.full(post.shape[0], np.nan)
    if post.shape[-1] >= MIN_DRAWS and post.shape[-2] > 0:
        healthy = np.isfinite(post).all(axis=-1)
        every = healthy.all(axis=-1)
        with warnings.catch_warnings():  # ArviZ's notes on the entries without an estimate
            warnings.simplefilter("ignore")
            if every.any():
                out[every] = array_stats.mcse(post[every], chain_axis=-2, draw_axis=-1)
            for index in np.flatnonzero(healthy.any(axis=-1) & ~every):
                out[index] = array_stats.mcse(post[index][healthy[index]], chain_axis=-2,
                                              draw_axis=-1)
    return np.asarray(nbeta) * out.reshape(trace.shape[:-2])


def upper_bound(llc: np.ndarray, mcse: np.ndarray | None) -> np.ndarray:
    """``λ̂ + NEGATIVE_MCSE · MCSE``, the value whose sign decides ``negative``: ``llc``
    itself where the MCSE is NaN or not given (an estimate from before it was stored)."""
    llc = np.asarray(llc, dtype=float)
    return llc if mcse is None else llc + NEGATIVE_MCSE * np.nan_to_num(np.asarray(mcse, float))


__all__ = ["MIN_DRAWS", "NEGATIVE_MCSE", "llc_mcse", "upper_bound"]
