"""Permutation symmetry of hidden units and weight matching (Ainsworth et al. 2023, Git Re-Basin).

Permuting the hidden units of a layer — the output channels of a conv together with its bias,
the BatchNorm that follows and the input channels of the next layer — leaves the network function
unchanged. Two networks trained from different seeds can therefore sit far apart in weight space
while being "the same" up to such relabelling; ``l2_aligned`` and the seed-pair loss barrier
of :mod:`critperiods.measure.divergence` first undo that by *weight matching*: coordinate
descent over the permutation groups, each step a linear assignment problem maximising
``Σ ⟨W_a, P W_b⟩``.

A :class:`PermutationSpec` says, for every state-dict entry, which permutation acts on each of its
axes (``None``: that axis is never permuted). :func:`permutation_spec` builds it by walking the
module tree of the three architectures of :mod:`critperiods.train.models`, one rule per layer type:

* ``Conv2d``: a new permutation on its output axis, the incoming one on its input axis;
* ``BatchNorm2d``: the incoming permutation on weight, bias, running mean and variance;
* ``PreActBlock``: bn1 and the shortcut input take the residual stream's permutation, conv1/bn2/
  conv2-input share a new inner one, and the block output is the residual stream — the same
  permutation through every identity block of a stage, a new one where a 1×1 shortcut conv starts
  the stage (shared by that shortcut and conv2's output);
* ``classifier`` (``nn.Linear``): the last permutation on its input axis. After ``Flatten`` that
  axis holds ``C·H·W`` entries, channel-major, so a permutation of the ``C`` channels acts on it
  in blocks of ``H·W`` (:func:`permute_axis` handles a size that is a multiple of the group).

``small_cnn`` and ``all_cnn_c`` are chains of the first two rules; ``resnet18`` adds the block rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from critperiods.train.models.blocks import PreActBlock

Axes = tuple[str | None, ...]
Permutations = dict[str, torch.Tensor]
State = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on each axis of each state-dict entry.

    ``axes[name][i]`` names the permutation acting on axis ``i`` of entry ``name`` (or ``None``);
    ``sizes[perm]`` is its number of units; ``parameters`` are the trainable entries, the only
    ones that drive the matching (buffers are permuted along but carry no signal).
    """

    axes: dict[str, Axes]
    sizes: dict[str, int]
    parameters: tuple[str, ...]

    def perm_axes(self, perm: str) -> list[tuple[str, int]]:
        """Every ``(entry, axis)`` that permutation ``perm`` acts on."""
        return [(name, i) for name, axes in self.axes.items()
                for i, p in enumerate(axes) if p == perm]


class _SpecBuilder:
    """Accumulates axes and permutation sizes while walking a model."""

    def __init__(self) -> None:
        self.axes: dict[str, Axes] = {}
        self.sizes: dict[str, int] = {}

    def new_perm(self, name: str, size: int) -> str:
        self.sizes[name] = size
        return name

    def conv(self, prefix: str, conv: nn.Conv2d, p_out: str, p_in: str | None) -> None:
        """A conv's weight [out, in, kh, kw] and optional bias [out]."""
        self.axes[f"{prefix}.weight"] = (p_out, p_in, None, None)
        if conv.bias is not None:
            self.axes[f"{prefix}.bias"] = (p_out,)

    def batch_norm(self, prefix: str, p: str | None) -> None:
        """Affine parameters and running statistics of a BatchNorm over permuted channels."""
        for entry in ("weight", "bias", "running_mean", "running_var"):
            self.axes[f"{prefix}.{entry}"] = (p,)
        self.axes[f"{prefix}.num_batches_tracked"] = ()

    def linear(self, prefix: str, p_in: str | None) -> None:
        """The read-out: classes are never permuted, its input axis takes ``p_in``."""
        self.axes[f"{prefix}.weight"] = (None, p_in)
        self.axes[f"{prefix}.bias"] = (None,)


def _walk_conv(b: _SpecBuilder, prefix: str, conv: nn.Conv2d, p_in: str | None) -> str:
    p_out = b.new_perm(prefix, conv.out_channels)
    b.conv(prefix, conv, p_out, p_in)
    return p_out


def _walk_block(b: _SpecBuilder, prefix: str, block: PreActBlock, p_in: str | None) -> str:
    """Pre-activation block: the residual stream keeps ``p_in`` unless a shortcut conv exists."""
    b.batch_norm(f"{prefix}.bn1", p_in)
    inner = _walk_conv(b, f"{prefix}.conv1", block.conv1, p_in)
    b.batch_norm(f"{prefix}.bn2", inner)
    if block.shortcut is None:
        p_out = p_in
        if p_out is None:
            raise ValueError(f"{prefix}: identity shortcut on the unpermuted input")
    else:
        p_out = b.new_perm(f"{prefix}.residual", block.shortcut.out_channels)
        b.conv(f"{prefix}.shortcut", block.shortcut, p_out, p_in)
    b.conv(f"{prefix}.conv2", block.conv2, p_out, inner)
    return p_out


def _walk(b: _SpecBuilder, prefix: str, module: nn.Module, p_in: str | None) -> str | None:
    """Dispatch one child of ``features`` to its rule; returns the permutation it outputs."""
    if isinstance(module, nn.Conv2d):
        return _walk_conv(b, prefix, module, p_in)
    if isinstance(module, nn.BatchNorm2d):
        b.batch_norm(prefix, p_in)
        return p_in
    if isinstance(module, PreActBlock):
        return _walk_block(b, prefix, module, p_in)
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            p_in = _walk(b, f"{prefix}.{name}", child, p_in)
        return p_in
    if next(iter(module.state_dict()), None) is None:  # ReLU, pooling, Flatten
        return p_in
    raise ValueError(f"{prefix}: no permutation rule for {type(module).__name__}")


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The :class:`PermutationSpec` of a ``Classifier``: small_cnn, all_cnn_c or resnet18.

    Raises ``ValueError`` if the model holds a layer type without a rule, or if any state-dict
    entry is left uncovered, so a new architecture fails loudly rather than matching silently.
    """
    b = _SpecBuilder()
    p_last = _walk(b, "features", model.features, None)
    b.linear("classifier", p_last)
    state = model.state_dict()
    missing = sorted(set(state) - set(b.axes))
    extra = sorted(set(b.axes) - set(state))
    if missing or extra:
        raise ValueError(f"permutation spec mismatch: uncovered {missing}, unknown {extra}")
    for name, axes in b.axes.items():
        if len(axes) != state[name].ndim:
            raise ValueError(f"{name}: spec has {len(axes)} axes, tensor has {state[name].ndim}")
    params = tuple(name for name, _ in model.named_parameters())
    return PermutationSpec(axes=b.axes, sizes=b.sizes, parameters=params)


def permute_axis(w: torch.Tensor, axis: int, perm: torch.Tensor) -> torch.Tensor:
    """``w`` with axis ``axis`` reindexed by ``perm`` (new[i] = old[perm[i]]).

    An axis ``k`` times longer than ``perm`` is a flattened ``(units, k)`` block (channel-major
    ``Flatten`` of a feature map) and is permuted block-wise.
    """
    n, size = perm.numel(), w.shape[axis]
    if size == n:
        return w.index_select(axis, perm.to(w.device))
    if size % n:
        raise ValueError(f"axis of size {size} is not a multiple of the permutation size {n}")
    blocks = w.reshape(*w.shape[:axis], n, size // n, *w.shape[axis + 1:])
    return blocks.index_select(axis, perm.to(w.device)).reshape(w.shape)


def _permute_entry(spec: PermutationSpec, perms: Permutations, name: str, w: torch.Tensor,
                   except_axis: int | None = None) -> torch.Tensor:
    for axis, p in enumerate(spec.axes[name]):
        if p is not None and axis != except_axis:
            w = permute_axis(w, axis, perms[p])
    return w


def apply_permutation(spec: PermutationSpec, perms: Permutations, state: State) -> dict:
    """A new state dict: ``state`` with every entry permuted as ``perms`` and ``spec`` say."""
    return {name: _permute_entry(spec, perms, name, w) for name, w in state.items()}


def identity_permutation(spec: PermutationSpec) -> Permutations:
    """Every permutation group as the identity."""
    return {p: torch.arange(n) for p, n in spec.sizes.items()}


def random_permutation(spec: PermutationSpec, seed: int = 0) -> Permutations:
    """A uniformly random permutation of every group (for tests and null models)."""
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(n, generator=g) for p, n in spec.sizes.items()}


def _rows(w: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    """``w`` as an ``[n, -1]`` matrix with one row per unit of the permuted axis."""
    return w.movedim(axis, 0).reshape(n, -1)


def _matching_cost(spec: PermutationSpec, perm: str, perms: Permutations,
                   a: State, b: State) -> np.ndarray:
    """``C[i, j] = Σ ⟨a unit i, b unit j⟩`` over every parameter that ``perm`` touches.

    Every other axis of ``b`` is first permuted by the current guess of its permutation.
    """
    n = spec.sizes[perm]
    cost = torch.zeros(n, n, dtype=torch.float64)
    for name, axis in spec.perm_axes(perm):
        if name not in a:
            continue
        wb = _permute_entry(spec, perms, name, b[name], except_axis=axis)
        cost += _rows(a[name], axis, n) @ _rows(wb, axis, n).T
    return cost.numpy()


def _update(cost: np.ndarray, current: torch.Tensor) -> torch.Tensor | None:
    """The assignment maximising ``cost``, or ``None`` unless it strictly beats ``current``."""
    _, cols = linear_sum_assignment(cost, maximize=True)
    rows = np.arange(len(cols))
    old, new = cost[rows, current.numpy()].sum(), cost[rows, cols].sum()
    if new <= old + 1e-12 * max(1.0, abs(old)):
        return None
    return torch.from_numpy(cols.astype(np.int64))


def weight_matching(spec: PermutationSpec, state_a: State, state_b: State,
                    max_iterations: int = 20, seed: int = 0) -> Permutations:
    """Permutations of ``b``'s hidden units that best align them with ``a``'s (Git Re-Basin).

    Coordinate descent: visit the permutation groups in a random order (fixed by ``seed``), solve
    each one's linear assignment with the others held fixed, and stop after a sweep in which no
    permutation changed (a change must strictly improve the objective, so ties cannot cycle) or
    after ``max_iterations`` sweeps. Apply the result with
    ``apply_permutation(spec, perms, state_b)``.
    """
    a = {k: state_a[k].detach().double().cpu() for k in spec.parameters}
    b = {k: state_b[k].detach().double().cpu() for k in spec.parameters}
    perms = identity_permutation(spec)
    rng = np.random.default_rng(seed)
    names = list(spec.sizes)
    for _ in range(max_iterations):
        changed = False
        for i in rng.permutation(len(names)):
            p = names[i]
            new = _update(_matching_cost(spec, p, perms, a, b), perms[p])
            if new is not None:
                perms[p], changed = new, True
        if not changed:
            break
    return perms
