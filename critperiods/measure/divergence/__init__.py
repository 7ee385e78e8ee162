"""How far apart runs are, in weights and in function, at every checkpoint they share.

* :mod:`~critperiods.measure.divergence.metrics` — distances between two networks: weight
  space (L2, cosine, after weight matching) and function space on a probe set
  (disagreement, KL, JS, accuracy and loss gaps, CKA);
* :mod:`~critperiods.measure.divergence.barrier` — the loss barrier on the line between two
  networks, with BatchNorm statistics re-estimated along it;
* :mod:`~critperiods.measure.divergence.compare` — which runs are compared with which
  (against the always-blurred and the never-blurred run, and between seeds) at every
  epoch, and the Dataset of all comparisons (``compare_runs``).

The public names are re-exported here: ``from critperiods.measure.divergence import
compare_runs, DivergenceConfig`` works.
"""

from __future__ import annotations

from critperiods.measure.divergence.barrier import (
    Barrier,
    interpolate,
    loss_barrier,
    probe_loss,
    reset_bn_statistics,
)
from critperiods.measure.divergence.compare import (
    FUNCTION_METRICS,
    IDENTICAL,
    METRICS,
    PRODUCES,
    REFERENCES,
    SEEDS_ONLY,
    SETS,
    WEIGHT_METRICS,
    DivergenceConfig,
    Pair,
    PairComparer,
    RunKey,
    Runs,
    bn_data_from,
    compare_runs,
    probe_from_data,
)
from critperiods.measure.divergence.metrics import (
    ProbeOutputs,
    State,
    WeightStats,
    aligned_l2,
    linear_cka,
    prediction_divergence,
    probe_outputs,
    state_digest,
    unbiased_hsic,
    weight_stats,
)

__all__ = ["FUNCTION_METRICS", "IDENTICAL", "METRICS", "PRODUCES", "REFERENCES", "SEEDS_ONLY",
           "SETS", "WEIGHT_METRICS", "Barrier", "DivergenceConfig", "Pair", "PairComparer",
           "ProbeOutputs",
           "RunKey", "Runs", "State", "WeightStats", "aligned_l2", "bn_data_from",
           "compare_runs", "interpolate", "linear_cka", "loss_barrier", "prediction_divergence",
           "probe_from_data", "probe_loss", "probe_outputs", "reset_bn_statistics",
           "state_digest", "unbiased_hsic", "weight_stats"]
