"""Many offsets, one question: Holm's correction for the markers' tests of "marks the end".

A run tests every marker (λ̂'s knees and the divergence drop) at every batch size and
schedule with a located end: nine offsets in the default. Each interval is at the
``analysis.interval_level`` (90 %), so with nine markers that all mark the end, about one
offset in ten would still exclude 0. The report says "told apart from the end" only where
Holm's step-down correction (Holm 1979) keeps the offset at the family-wise level
``1 − interval_level``, whatever the dependence between the tests.

scipy has the false-discovery-rate adjustments (``scipy.stats.false_discovery_control``)
but not Holm's family-wise one, and statsmodels is not in the stack for one function.
"""

from __future__ import annotations

import numpy as np

__all__ = ["holm_adjusted"]


def holm_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values, in the shape of ``p_values``: the ``i``-th smallest of the
    ``m`` finite ones becomes ``max over j ≤ i of min(1, (m − j + 1) p₍ⱼ₎)``. A test is
    rejected at family-wise level α exactly where its adjusted p-value is below α. NaN
    (no test) stays NaN and does not count in ``m``."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p.ravel()))
    if finite.size == 0:
        return out
    values = p.ravel()[finite]
    order = np.argsort(values, kind="stable")
    m = values.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    out.flat[finite] = adjusted
    return out
