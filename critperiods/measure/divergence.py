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

Metrics: in weight space ``l2``, ``l2_rel``, ``cosine`` (all pairs of one epoch from one Gram
matrix), ``l2_aligned`` (seed pairs, after weight matching); in function space on a fixed probe
set ``disagreement`` (+ ``disagreement_norm``), ``kl``, ``js``, ``acc_gap``, ``loss_gap`` and
linear ``cka`` of the penultimate features (probe outputs computed once per distinct checkpoint
and cached); and the linear-interpolation loss ``barrier`` (+ ``barrier_mean``) at a few epochs.
Pairs of bitwise-identical checkpoints short-circuit to the exact identity values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from critperiods.measure.weight_matching import (
    PermutationSpec,
    apply_permutation,
    permutation_spec,
    weight_matching,
)
from critperiods.train.data import PreparedData, fixed_subset
from critperiods.train.training import ALWAYS_BLURRED
from critperiods.variables import divergence_attrs


RunKey = tuple[int, int]
State = Mapping[str, Tensor]
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
# Weight space


@dataclass(frozen=True)
class WeightStats:
    """Pairwise ``l2`` and ``cosine`` [R, R] and per-run weight ``norm`` [R]."""

    l2: np.ndarray
    norm: np.ndarray
    cosine: np.ndarray


def state_digest(state: State, names: Iterable[str] | None = None) -> str:
    """Hash of the bytes of ``state``'s entries ``names`` (all if None): equal iff bitwise equal."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state) if names is None else names:
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _symmetric(m: np.ndarray) -> np.ndarray:
    return (m + m.T) / 2


def _grams(states: Sequence[State], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw Gram ``W Wᵀ`` and the Gram of mean-centred rows, accumulated parameter by parameter.

    Centring leaves distances unchanged but removes the common part of the vectors, so
    ``d² = G_ii + G_jj − 2 G_ij`` does not cancel catastrophically for nearby runs.
    """
    r = len(states)
    gram, centred = np.zeros((r, r)), np.zeros((r, r))
    for name in names:
        x = torch.stack([s[name].detach().cpu().reshape(-1).double() for s in states])
        gram += (x @ x.T).numpy()
        x -= x.mean(0, keepdim=True)
        centred += (x @ x.T).numpy()
    return _symmetric(gram), _symmetric(centred)


def weight_stats(states: Sequence[State], names: Sequence[str]) -> WeightStats:
    """All pairwise weight distances and cosines of ``states`` over entries ``names``, from Grams.

    Pairs of bitwise-identical weight vectors get exactly 0 distance and cosine 1.
    """
    gram, centred = _grams(states, names)
    sq = np.diag(centred)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * centred, 0.0, None)
    digests = np.array([state_digest(s, names) for s in states])
    same = digests[:, None] == digests[None, :]
    d2[same] = 0.0
    norm = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    denom = np.outer(norm, norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(denom > 0, gram / denom, np.nan)
    cosine[same & (denom > 0)] = 1.0
    return WeightStats(l2=np.sqrt(d2), norm=norm, cosine=cosine)


def aligned_l2(a: State, b_aligned: State, names: Sequence[str]) -> float:
    """Direct L2 distance between ``a`` and the (already permuted) ``b`` over ``names``."""
    total = sum(float(((a[n].detach().cpu().double() - b_aligned[n].detach().cpu().double())
                       ** 2).sum()) for n in names)
    return math.sqrt(total)


# ---------------------------------------------------------------------------------------------
# Function space


@dataclass(frozen=True)
class ProbeOutputs:
    """One checkpoint on the probe set: features [N, F], log-probabilities [N, C], loss, acc."""

    features: Tensor
    log_probs: Tensor
    loss: float
    accuracy: float


@torch.no_grad()
def probe_outputs(model: nn.Module, images: Tensor, labels: Tensor,
                  batch_size: int = 500) -> ProbeOutputs:
    """Penultimate features and predictive log-probabilities of ``model`` (eval mode)."""
    model.eval()
    feats, logps = [], []
    for i in range(0, len(labels), batch_size):
        f = model.features(images[i:i + batch_size])
        feats.append(f.detach().cpu())
        logps.append(F.log_softmax(model.classifier(f).double(), dim=1).cpu())
    features, log_probs = torch.cat(feats), torch.cat(logps)
    y = labels.cpu()
    loss = float(F.nll_loss(log_probs, y))
    accuracy = float((log_probs.argmax(1) == y).double().mean())
    return ProbeOutputs(features, log_probs, loss, accuracy)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-example KL(p || q) in nats, with 0·log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)


def _log_mixture(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``log((p + q) / 2)``, exactly ``log p`` where the two agree (so JS(p, p) is exactly 0)."""
    mixed = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return torch.where(log_p == log_q, log_p, mixed)


def _ratio(num: float, den: float) -> float:
    """``num / den`` with 0 / anything = 0 and nonzero / 0 = NaN."""
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else math.nan


def prediction_divergence(a: ProbeOutputs, b: ProbeOutputs) -> dict[str, float]:
    """Disagreement (raw and error-normalised), KL(p_a‖p_b), JS, accuracy and loss gaps (a − b).

    ``disagreement_norm`` divides by the mean error rate of the two (Fort et al. 2020); it is 0
    when nothing disagrees and NaN when both are perfect yet disagree (impossible in practice).
    """
    disagreement = float((a.log_probs.argmax(1) != b.log_probs.argmax(1)).double().mean())
    error = 1.0 - (a.accuracy + b.accuracy) / 2
    norm = _ratio(disagreement, error)
    log_m = _log_mixture(a.log_probs, b.log_probs)
    js = 0.5 * (_kl(a.log_probs, log_m) + _kl(b.log_probs, log_m))
    return {"disagreement": disagreement, "disagreement_norm": norm,
            "kl": float(_kl(a.log_probs, b.log_probs).mean()), "js": float(js.mean()),
            "acc_gap": a.accuracy - b.accuracy, "loss_gap": a.loss - b.loss}


def unbiased_hsic(k: Tensor, l: Tensor) -> float:  # noqa: E741 (the paper's notation)
    """Unbiased HSIC estimator (Song et al. 2012) of two [n, n] kernel matrices, n ≥ 4."""
    n = k.shape[0]
    k, l = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)  # noqa: E741
    trace = (k * l).sum()
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(0) @ l.sum(0))
    return float((trace + sums - cross) / (n * (n - 3)))


def linear_cka(fa: Tensor, fb: Tensor, batch_size: int = 250) -> float:
    """Minibatch linear CKA (Nguyen et al. 2021): Σ HSIC(K, L) / √(Σ HSIC(K, K) Σ HSIC(L, L)).

    The probe is split into ``⌊N / batch_size⌋`` near-equal contiguous minibatches; each uses
    the unbiased HSIC of the linear kernels ``X Xᵀ``, ``Y Yᵀ`` of its rows.
    """
    n = fa.shape[0]
    if n < 4:
        raise ValueError(f"linear_cka: need at least 4 examples, got {n}")
    chunks = torch.tensor_split(torch.arange(n), max(1, n // batch_size))
    xy = xx = yy = 0.0
    for idx in chunks:
        x, y = fa[idx].double().flatten(1), fb[idx].double().flatten(1)
        k, l = x @ x.T, y @ y.T  # noqa: E741
        xy += unbiased_hsic(k, l)
        xx += unbiased_hsic(k, k)
        yy += unbiased_hsic(l, l)
    return xy / math.sqrt(xx * yy) if xx > 0 and yy > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Loss barrier


@dataclass(frozen=True)
class Barrier:
    """Loss barrier on the segment a → b: both variants plus the loss at every alpha."""

    barrier: float
    barrier_mean: float
    alphas: np.ndarray
    losses: np.ndarray


def interpolate(a: State, b: State, alpha: float) -> dict[str, Tensor]:
    """``(1 − α) a + α b`` for floating entries (exact at α = 0 and 1); others taken from ``a``."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v.clone()
            for k, v in a.items()}


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reset_bn_statistics(model: nn.Module, data: Tensor | None, batches: int,
                        batch_size: int) -> bool:
    """Re-estimate every BatchNorm's running statistics as a cumulative average over batches.

    Interpolated weights do not match either endpoint's statistics (Jordan et al. 2023), so
    they are recomputed from the first ``batches`` batches of ``data`` in train mode with
    ``momentum=None``; the model is left in eval mode. Returns False for models without BN.
    """
    norms = _batch_norms(model)
    if not norms:
        return False
    if data is None or len(data) == 0:
        raise ValueError("the model has BatchNorm: barrier needs bn_data to reset its statistics")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, min(len(data), batches * batch_size), batch_size):
        model(data[i:i + batch_size])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return True


@torch.no_grad()
def probe_loss(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    """Mean cross-entropy (nats) of ``model`` in eval mode on the probe."""
    model.eval()
    total = 0.0
    for i in range(0, len(labels), batch_size):
        logits = model(images[i:i + batch_size])
        total += float(F.cross_entropy(logits.double(), labels[i:i + batch_size],
                                       reduction="sum"))
    return total / len(labels)


def loss_barrier(model: nn.Module, a: State, b: State, probe: tuple[Tensor, Tensor],
                 bn_data: Tensor | None, alphas: int = 11, bn_reset_batches: int = 8,
                 batch_size: int = 500) -> Barrier:
    """Loss barrier between ``a`` and ``b`` on a grid of ``alphas`` points of ``[0, 1]``.

    ``barrier = max_α [L(θ_α) − ((1−α) L(θ_a) + α L(θ_b))]`` and Frankle et al.'s
    ``barrier_mean = max_α L(θ_α) − (L(θ_a) + L(θ_b)) / 2``, with ``L`` the probe loss. BatchNorm
    statistics are re-estimated at every alpha, endpoints included, so all points are alike.
    ``model`` is used as scratch space: its weights are overwritten.
    """
    grid = np.linspace(0.0, 1.0, alphas)
    losses = np.empty(alphas)
    for i, alpha in enumerate(grid):
        model.load_state_dict(interpolate(a, b, float(alpha)))
        reset_bn_statistics(model, bn_data, bn_reset_batches, batch_size)
        losses[i] = probe_loss(model, *probe, batch_size)
    linear = (1 - grid) * losses[0] + grid * losses[-1]
    return Barrier(barrier=float(np.max(losses - linear)),
                   barrier_mean=float(losses.max() - (losses[0] + losses[-1]) / 2),
                   alphas=grid, losses=losses)


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
            seeds = name.endswith("_seeds")
            metric = name[len("div_"):-len("_seeds")] if seeds else name[len("div_"):]
            dims = (("switch_epoch", "seed", "seed_b", "epoch") if seeds
                    else ("switch_epoch", "seed", "reference", "epoch"))
            data[name] = xr.Variable(
                dims, arr, attrs=divergence_attrs(metric, "seeds" if seeds else "reference"))
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


class _Comparer:
    """Computes every requested metric of the pairs of one epoch, caching probe outputs."""

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
    ``(ALWAYS_BLURRED, seed)`` references; ``make_model()``: an untrained model of the architecture (its device is used);
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
    comparer = _Comparer(make_model, probe, bn_data, config, _barrier_epochs(runs, config))
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
