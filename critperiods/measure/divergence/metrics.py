"""Distances between two networks: in weight space, and in function space on a probe set.

Weight space: ``l2``, ``l2_rel`` and ``cosine`` of the trainable weights (all pairs of one
epoch from one Gram matrix, :func:`weight_stats`), and ``l2_aligned`` after weight matching
(:func:`aligned_l2`). Function space, on a fixed probe set (:func:`probe_outputs`, computed
once per distinct checkpoint): ``disagreement`` (+ ``disagreement_norm``), ``kl``, ``js``,
``acc_gap``, ``loss_gap`` (:func:`prediction_divergence`) and linear ``cka`` of the
penultimate features (:func:`linear_cka`). Pure functions of states and tensors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: A network's weights and buffers (a state dict).
State = Mapping[str, Tensor]


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


__all__ = ["ProbeOutputs", "State", "WeightStats", "aligned_l2", "linear_cka",
           "prediction_divergence", "probe_outputs", "state_digest", "unbiased_hsic",
           "weight_stats"]
