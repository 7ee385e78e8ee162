"""How far apart runs are, in weights and in function, at every checkpoint they share.

Runs of one batch size are keyed by ``(switch_epoch, seed)``; each is ``{epoch: state_dict}``
(weights and buffers, the run's trunk checkpoints included up to its switch). The always-blurred
continuation of the trunk has key ``(ALWAYS_BLURRED, seed)``
(:data:`critperiods.train.training.ALWAYS_BLURRED`). At every epoch :func:`compare_runs` fills
three comparison sets:

* ``div_<metric>`` with ``reference = "blurred"`` — run ``(K, s)`` against
  ``(ALWAYS_BLURRED, s)``:
  identical (exactly 0) up to ``K``, so its growth after ``K`` measures how far removing the
  deficit moves the network;
* ``div_<metric>`` with ``reference = "sharp"`` — run ``(K, s)`` against ``(0, s)``, the
  never-blurred run;
* ``div_<metric>_seeds`` — every ordered pair of seeds ``(seed, seed_b)`` within one switch epoch.

The metrics (:mod:`~critperiods.measure.divergence.metrics`): in weight space ``l2``,
``l2_rel``, ``cosine`` (all pairs of one epoch from one Gram matrix), ``l2_aligned`` (seed
pairs, after weight matching); in function space on a fixed probe set ``disagreement``
(+ ``disagreement_norm``), ``kl``, ``js``, ``acc_gap``, ``loss_gap`` and linear ``cka`` of
the penultimate features (probe outputs computed once per distinct checkpoint and cached);
and the linear-interpolation loss ``barrier`` (+ ``barrier_mean``) at a few epochs
(:mod:`~critperiods.measure.divergence.barrier`). Pairs of bitwise-identical checkpoints
short-circuit to the exact identity values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from critperiods.measure.divergence.barrier import loss_barrier
from critperiods.measure.divergence.metrics import (
    ProbeOutputs,
    State,
    aligned_l2,
    linear_cka,
    prediction_divergence,
    probe_outputs,
    state_digest,
    weight_stats,
)
from critperiods.measure.weight_matching import (
    PermutationSpec,
    apply_permutation,
    permutation_spec,
    weight_matching,
)
from critperiods.train.data import PreparedData, fixed_subset
from critperiods.train.training import ALWAYS_BLURRED

RunKey = tuple[int, int]
Runs = Mapping[RunKey, Mapping[int, State]]

SETS = ("vs_blurred", "vs_sharp", "seeds")
#: The comparison sets against a reference run, as values of the ``reference`` dimension.
REFERENCES = {"vs_blurred": "blurred", "vs_sharp": "sharp"}
METRICS = ("l2", "l2_rel", "cosine", "l2_aligned", "disagreement", "kl", "js", "acc_gap",
           "loss_gap", "cka", "barrier")
#: Requested metric → the variables it produces (default: just itself).
PRODUCES = {"disagreement": ("disagreement", "disagreement_norm"),
            "barrier": ("barrier", "barrier_mean")}
WEIGHT_METRICS = ("l2", "l2_rel", "cosine")
FUNCTION_METRICS = ("disagreement", "kl", "js", "acc_gap", "loss_gap", "cka")
#: Metrics only defined for seed pairs.
SEEDS_ONLY = ("l2_aligned",)

#: Values for a pair of bitwise-identical checkpoints.
IDENTICAL = {"l2": 0.0, "l2_rel": 0.0, "cosine": 1.0, "l2_aligned": 0.0, "disagreement": 0.0,
             "disagreement_norm": 0.0, "kl": 0.0, "js": 0.0, "acc_gap": 0.0, "loss_gap": 0.0,
             "cka": 1.0, "barrier": 0.0, "barrier_mean": 0.0}

@dataclass(frozen=True)
class DivergenceConfig:
    """What :func:`compare_runs` measures and how much it spends on it.

    ``probe_size``: first images of the probe used; ``barrier_epochs``: epochs at which barriers
    are computed (``None``: each run's switch epoch and last epoch); ``barrier_alphas``: grid size
    on ``[0, 1]`` including both endpoints; ``bn_reset_batches``: batches of ``bn_data`` used to
    re-estimate BatchNorm statistics at each alpha; ``batch_size``: forward batch size;
    ``cka_batch_size``: minibatch of the unbiased-HSIC CKA estimator; ``matching_iterations``:
    maximum coordinate-descent sweeps of weight matching.
    """

    probe_size: int = 1000
    metrics: tuple[str, ...] = METRICS
    barrier_epochs: tuple[int, ...] | None = None
    barrier_alphas: int = 11
    matching_iterations: int = 20
    bn_reset_batches: int = 8
    batch_size: int = 500
    cka_batch_size: int = 250

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"divergence.metrics: unknown {unknown}; choose from {METRICS}")
        if self.barrier_alphas < 2:
            raise ValueError("divergence.barrier_alphas: need at least the two endpoints")
        if self.cka_batch_size < 4:
            raise ValueError("divergence.cka_batch_size: the unbiased HSIC needs at least 4")

    def variables(self) -> list[str]:
        """Every variable name (without prefix/suffix) the requested metrics produce."""
        return [v for m in self.metrics for v in PRODUCES.get(m, (m,))]


# ---------------------------------------------------------------------------------------------
# Pairs and storage


@dataclass(frozen=True)
class Pair:
    """One comparison: run ``a`` against run ``b`` in set ``kind`` at array index ``index``."""

    kind: str
    a: RunKey
    b: RunKey
    index: tuple[int, ...]


def _pairs(present: Iterable[RunKey], switches: Sequence[int],
           seeds: Sequence[int]) -> list[Pair]:
    """Every pair of the three comparison sets among the runs ``present`` at one epoch."""
    have = set(present)
    ki = {k: i for i, k in enumerate(switches)}
    si = {s: i for i, s in enumerate(seeds)}
    pairs = []
    for k, s in sorted(key for key in have if key[0] != ALWAYS_BLURRED):
        for kind, ref in (("vs_blurred", (ALWAYS_BLURRED, s)), ("vs_sharp", (0, s))):
            if ref in have:
                pairs.append(Pair(kind, (k, s), ref, (ki[k], si[s])))
        for s_b in seeds:
            if (k, s_b) in have:
                pairs.append(Pair("seeds", (k, s), (k, s_b), (ki[k], si[s], si[s_b])))
    return pairs


@dataclass
class _Store:
    """NaN-initialised arrays of every output variable, indexed like :class:`Pair`:
    ``div_<v>`` (switch_epoch, seed, reference, epoch) and ``div_<v>_seeds``
    (switch_epoch, seed, seed_b, epoch)."""

    switches: list[int]
    seeds: list[int]
    epochs: list[int]
    variables: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nk, ns, ne = len(self.switches), len(self.seeds), len(self.epochs)
        for v in self.variables:
            if v not in SEEDS_ONLY:
                self.arrays[f"div_{v}"] = np.full((nk, ns, len(REFERENCES), ne), np.nan)
            self.arrays[f"div_{v}_seeds"] = np.full((nk, ns, ns, ne), np.nan)

    def put(self, pair: Pair, epoch_index: int, values: Mapping[str, float]) -> None:
        if pair.kind == "seeds":
            names, index = {v: f"div_{v}_seeds" for v in values}, pair.index
        else:
            names = {v: f"div_{v}" for v in values}
            index = (*pair.index, list(REFERENCES).index(pair.kind))
        for v, x in values.items():
            if names[v] in self.arrays:
                self.arrays[names[v]][(*index, epoch_index)] = x

    def dataset(self) -> xr.Dataset:
        coords = {"switch_epoch": np.asarray(self.switches, dtype=np.int64),
                  "seed": np.asarray(self.seeds, dtype=np.int64),
                  "seed_b": np.asarray(self.seeds, dtype=np.int64),
                  "reference": list(REFERENCES.values()),
                  "epoch": np.asarray(self.epochs, dtype=np.int64)}
        data = {}
        for name, arr in self.arrays.items():
            dims = (("switch_epoch", "seed", "seed_b", "epoch") if name.endswith("_seeds")
                    else ("switch_epoch", "seed", "reference", "epoch"))
            data[name] = xr.Variable(dims, arr)
        return xr.Dataset(data, coords=coords)


# ---------------------------------------------------------------------------------------------
# Orchestration


def _barrier_epochs(runs: Runs, config: DivergenceConfig) -> dict[RunKey, set[int]]:
    """Barrier epochs of each run; a pair gets a barrier at the barrier epochs of either run.

    Default: the run's switch epoch and its last epoch (only the last for the always-blurred
    run), so e.g. a branch and the never-blurred run are compared at the branch's switch and at the
    never-blurred run's end, the last epoch they share.
    """
    if config.barrier_epochs is not None:
        return {key: set(config.barrier_epochs) for key in runs}
    return {(k, s): {k, max(ckpts)} if k != ALWAYS_BLURRED else {max(ckpts)}
            for (k, s), ckpts in runs.items() if ckpts}


class PairComparer:
    """Computes every requested metric of the pairs of one epoch, caching probe outputs.

    Used by :func:`compare_runs` and by the perturbation stage (copy vs twin pairs, of a
    ``kind`` of their own: weight matching and aligned barriers are only for ``seeds``).
    """

    def __init__(self, make_model: Callable[[], nn.Module], probe: tuple[Tensor, Tensor],
                 bn_data: Tensor | None, config: DivergenceConfig,
                 barrier_epochs: dict[RunKey, set[int]]) -> None:
        self.model = make_model()
        self.model.eval()
        device = next(self.model.parameters()).device
        images, labels = probe
        self.probe = (images[:config.probe_size].to(device), labels[:config.probe_size].to(device))
        self.bn_data = None if bn_data is None else bn_data.to(device)
        self.config = config
        self.metrics = set(config.metrics)
        self.names = [n for n, _ in self.model.named_parameters()]
        needs_spec = bool(self.metrics & {"l2_aligned", "barrier"})
        self.spec: PermutationSpec | None = permutation_spec(self.model) if needs_spec else None
        self.barrier_epochs = barrier_epochs
        self.forward_passes = 0
        self.barrier_evaluations = 0
        self.matchings = 0

    def epoch(self, epoch: int, states: Mapping[RunKey, State],
              pairs: Sequence[Pair]) -> list[dict[str, float]]:
        """Metric values of every pair, in order (none at epochs only one run reaches)."""
        if not pairs:
            return []
        digests = {key: state_digest(st) for key, st in states.items()}
        values: list[dict[str, float]] = [{} for _ in pairs]
        if self.metrics & set(WEIGHT_METRICS):
            self._weights(states, pairs, values)
        if self.metrics & set(FUNCTION_METRICS):
            self._functions(states, digests, pairs, values)
        self._expensive(epoch, states, digests, pairs, values)
        for pair, vals in zip(pairs, values, strict=True):
            if digests[pair.a] == digests[pair.b]:
                vals.update(self._identity(epoch, pair))
        return values

    def _wants_barrier(self, epoch: int, pair: Pair) -> bool:
        """Barriers only at the barrier epochs of either run of the pair."""
        return "barrier" in self.metrics and (epoch in self.barrier_epochs.get(pair.a, ())
                                              or epoch in self.barrier_epochs.get(pair.b, ()))

    def _identity(self, epoch: int, pair: Pair) -> dict[str, float]:
        """Exact values of a pair of identical checkpoints (barriers only at barrier epochs)."""
        skip = () if self._wants_barrier(epoch, pair) else PRODUCES["barrier"]
        return {v: IDENTICAL[v] for v in self.config.variables() if v not in skip}

    def _weights(self, states: Mapping[RunKey, State], pairs: Sequence[Pair],
                 values: list[dict[str, float]]) -> None:
        keys = sorted({k for p in pairs for k in (p.a, p.b)})
        row = {k: i for i, k in enumerate(keys)}
        stats = weight_stats([states[k] for k in keys], self.names)
        for pair, vals in zip(pairs, values, strict=True):
            i, j = row[pair.a], row[pair.b]
            mean_norm = (stats.norm[i] + stats.norm[j]) / 2
            l2_rel = stats.l2[i, j] / mean_norm if mean_norm > 0 else math.nan
            got = {"l2": stats.l2[i, j], "l2_rel": l2_rel, "cosine": stats.cosine[i, j]}
            vals.update({m: float(x) for m, x in got.items() if m in self.metrics})

    def _functions(self, states: Mapping[RunKey, State], digests: Mapping[RunKey, str],
                   pairs: Sequence[Pair], values: list[dict[str, float]]) -> None:
        cache: dict[str, ProbeOutputs] = {}

        def outputs(key: RunKey) -> ProbeOutputs:
            if digests[key] not in cache:
                self.model.load_state_dict(states[key])
                cache[digests[key]] = probe_outputs(self.model, *self.probe,
                                                    self.config.batch_size)
                self.forward_passes += 1
            return cache[digests[key]]

        wanted = set(self.config.variables())
        for pair, vals in zip(pairs, values, strict=True):
            if digests[pair.a] == digests[pair.b]:
                continue
            a, b = outputs(pair.a), outputs(pair.b)
            got = prediction_divergence(a, b)
            if "cka" in self.metrics:
                got["cka"] = linear_cka(a.features, b.features, self.config.cka_batch_size)
            vals.update({m: x for m, x in got.items() if m in wanted})

    def _expensive(self, epoch: int, states: Mapping[RunKey, State],
                   digests: Mapping[RunKey, str], pairs: Sequence[Pair],
                   values: list[dict[str, float]]) -> None:
        """Weight matching (seed pairs) and barriers; symmetric seed pairs computed once."""
        done: dict[tuple[RunKey, RunKey], dict[str, float]] = {}
        for pair, vals in zip(pairs, values, strict=True):
            if digests[pair.a] == digests[pair.b]:
                continue
            if pair.kind == "seeds" and (pair.b, pair.a) in done:
                vals.update(done[(pair.b, pair.a)])
                continue
            got = self._pair_expensive(epoch, pair, states[pair.a], states[pair.b])
            vals.update(got)
            done[(pair.a, pair.b)] = got

    def _pair_expensive(self, epoch: int, pair: Pair, a: State, b: State) -> dict[str, float]:
        want_barrier = self._wants_barrier(epoch, pair)
        want_aligned = "l2_aligned" in self.metrics and pair.kind == "seeds"
        got: dict[str, float] = {}
        if pair.kind == "seeds" and (want_barrier or want_aligned):
            assert self.spec is not None
            perms = weight_matching(self.spec, a, b, self.config.matching_iterations)
            self.matchings += 1
            b = apply_permutation(self.spec, perms, b)
            if want_aligned:
                got["l2_aligned"] = aligned_l2(a, b, self.names)
        if want_barrier:
            cfg = self.config
            res = loss_barrier(self.model, a, b, self.probe, self.bn_data, cfg.barrier_alphas,
                               cfg.bn_reset_batches, cfg.batch_size)
            self.barrier_evaluations += cfg.barrier_alphas
            got.update(barrier=res.barrier, barrier_mean=res.barrier_mean)
        return got


def _axes(runs: Runs) -> tuple[list[int], list[int], list[int]]:
    """Sorted switch epochs (without ``ALWAYS_BLURRED``), seeds and epochs of ``runs``."""
    switches = sorted({k for k, _ in runs if k != ALWAYS_BLURRED})
    seeds = sorted({s for _, s in runs})
    epochs = sorted({e for ckpts in runs.values() for e in ckpts})
    return switches, seeds, epochs


def compare_runs(runs: Runs, make_model: Callable[[], nn.Module], probe: tuple[Tensor, Tensor],
                 bn_data: Tensor | None, config: DivergenceConfig | None = None,
                 progress: bool = True) -> xr.Dataset:
    """Every comparison of the runs of one batch size, as an ``xarray.Dataset``.

    ``runs``: ``{(switch_epoch, seed): {epoch: state_dict}}`` including the
    ``(ALWAYS_BLURRED, seed)`` references; ``make_model()``: an untrained model of the
    architecture (its device is used);
    ``probe``: normalised sharp test images and labels; ``bn_data``: normalised sharp training
    images for the BatchNorm reset of barriers (may be None for models without BN).

    Variables ``div_<v>`` have dims ``(switch_epoch, seed, reference, epoch)`` (``reference``:
    ``blurred``, the always-blurred run; ``sharp``, the never-blurred run); ``div_<v>_seeds``
    has ``(switch_epoch, seed, seed_b, epoch)``.
    NaN where a pair does not exist at an epoch (or a barrier is not computed there). The
    ``switch_epoch`` coordinate excludes ``ALWAYS_BLURRED``. Attrs record ``forward_passes``
    (probe evaluations of checkpoints, one per distinct checkpoint), ``barrier_evaluations``
    and ``weight_matchings``.
    """
    config = config or DivergenceConfig()
    switches, seeds, epochs = _axes(runs)
    comparer = PairComparer(make_model, probe, bn_data, config, _barrier_epochs(runs, config))
    store = _Store(switches, seeds, epochs, config.variables())
    bar = tqdm(epochs, desc="divergence", disable=not progress)
    for e_index, epoch in enumerate(bar):
        states = {key: ckpts[epoch] for key, ckpts in runs.items() if epoch in ckpts}
        pairs = _pairs(states, switches, seeds)
        for pair, values in zip(pairs, comparer.epoch(epoch, states, pairs), strict=True):
            store.put(pair, e_index, values)
        bar.set_postfix(forward=comparer.forward_passes, barrier=comparer.barrier_evaluations)
    ds = store.dataset()
    ds.attrs.update(
        forward_passes=comparer.forward_passes,
        barrier_evaluations=comparer.barrier_evaluations,
        weight_matchings=comparer.matchings,
        probe_size=int(len(comparer.probe[1])),
        metrics=" ".join(config.metrics),
        barrier_alphas=config.barrier_alphas,
        kl_direction="KL(p_a || p_b): a is the run (seed), b the reference (seed_b)",
        blurred_switch_epoch=ALWAYS_BLURRED,
    )
    return ds


def probe_from_data(data: PreparedData, config: DivergenceConfig) -> tuple[Tensor, Tensor]:
    """The probe: a fixed subset of ``probe_size`` normalised sharp test images and labels."""
    idx = fixed_subset(len(data.test.labels), config.probe_size, "probe")
    idx = idx.to(data.test.labels.device)
    return data.normalize(data.test.sharp[idx]), data.test.labels[idx]


def bn_data_from(data: PreparedData, config: DivergenceConfig) -> Tensor:
    """Normalised sharp training images for the BatchNorm reset (``bn_reset_batches`` batches)."""
    size = config.bn_reset_batches * config.batch_size
    idx = fixed_subset(len(data.train.labels), size, "bn_reset").to(data.train.labels.device)
    return data.normalize(data.train.sharp[idx])


__all__ = ["FUNCTION_METRICS", "IDENTICAL", "METRICS", "PRODUCES", "REFERENCES", "SEEDS_ONLY",
           "SETS", "WEIGHT_METRICS", "DivergenceConfig", "Pair", "RunKey", "Runs",
           "bn_data_from", "compare_runs", "probe_from_data"]
