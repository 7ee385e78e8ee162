"""Perturbations on the hypersphere, the spherical initialisation, and batch-order swaps.

A network's weights ``w`` (norm ``r``) are moved to ``w'`` on the same sphere, exactly ``ε``
away, along a direction ``u`` drawn uniformly among the unit vectors orthogonal to ``w``:

    w' = (1 − ε²/(2r²))·w + ε·√(1 − ε²/(4r²))·u,   so ‖w'‖ = r and ‖w' − w‖ = ε.

(This is the Householder construction in closed form: the point at chord length ``ε`` from
``w`` on the great circle through ``w`` and ``u``.) ``u`` is a standard Gaussian vector with its
component along ``w`` removed, normalised: uniform on the unit sphere of the orthogonal
complement. Kaiming's initialisation is, to good approximation, a draw from a thin spherical
shell; i.i.d. Gaussian noise would thicken it, this perturbation does not.

Two scopes (``scope``):

* ``layer`` — every trainable tensor stays on its own sphere, moved by
  ``ε_l = ε · r_l / r`` (the same relative move ``ε / r`` everywhere; Σ ε_l² = ε², so the
  whole network still moves exactly ``ε``);
* ``network`` — all trainable tensors as one vector on one sphere.

The ``kaiming_sphere`` initialisation, which draws on the same spheres, is in
:mod:`critperiods.train.sphere_init` (re-exported here).

The ``batch_order`` perturbation exchanges ``k`` disjoint pairs of full batches of one epoch.

Everything here is a pure function of its inputs and its own seed: no global random state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from critperiods.train.sphere_init import kaiming_radius, sphere_init_

SCOPES = ("layer", "network")
KINDS = ("weights", "batch_order")


def perturbation_seed(*key: object) -> int:
    """A 63-bit seed from ``key`` (e.g. run seed, epoch, replicate): one stream per copy."""
    digest = hashlib.sha256(("critperiods-perturb:" + ":".join(map(str, key))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def orthogonal_direction(w: Tensor, generator: torch.Generator) -> Tensor:
    """A unit vector (float64, ``w``'s shape) uniform among those orthogonal to ``w``.

    A zero ``w`` has every direction orthogonal to it: the result is then uniform on the
    whole unit sphere.
    """
    flat = w.detach().reshape(-1).double().cpu()
    g = torch.randn(flat.shape, generator=generator, dtype=torch.float64)
    norm = flat.norm()
    if norm > 0:
        unit = flat / norm
        g = g - (g @ unit) * unit
    return (g / g.norm()).reshape(w.shape)


def sphere_step(w: Tensor, epsilon: float, u: Tensor) -> Tensor:
    """The closed form: ``w`` moved exactly ``epsilon`` along the unit ``u`` ⟂ ``w`` on the
    sphere of radius ``‖w‖`` (float64; ``w`` itself when ``epsilon`` is 0).

    Raises ValueError when ``epsilon`` exceeds the sphere's diameter ``2‖w‖``.
    """
    w64 = w.detach().double().cpu()
    if epsilon == 0:
        return w64
    r2 = float((w64 * w64).sum())
    if epsilon < 0 or epsilon**2 > 4 * r2:
        raise ValueError(f"perturbation of size {epsilon} does not fit on a sphere of radius "
                         f"{math.sqrt(r2):.4g} (at most its diameter)")
    return (1 - epsilon**2 / (2 * r2)) * w64 + epsilon * math.sqrt(1 - epsilon**2 / (4 * r2)) * u


def perturb_tensors(tensors: Mapping[str, Tensor], epsilon: float, seed: int,
                    scope: str = "layer") -> dict[str, Tensor]:
    """``tensors`` moved exactly ``epsilon`` in total on their sphere(s) (see the module
    docstring for the scopes); new tensors of the inputs' dtypes and devices, in the same order.

    ``epsilon == 0`` returns clones, bit for bit. Tensors of zero norm stay where they are in
    the ``layer`` scope (their share of ``epsilon`` is 0).
    """
    if scope not in SCOPES:
        raise ValueError(f"perturbation.scope: unknown {scope!r}; choose one of {SCOPES}")
    if epsilon == 0:
        return {k: v.detach().clone() for k, v in tensors.items()}
    generator = torch.Generator().manual_seed(seed)
    names = list(tensors)
    flat = [tensors[k].detach().double().cpu().reshape(-1) for k in names]
    if scope == "network":
        w = torch.cat(flat)
        moved = sphere_step(w, epsilon, orthogonal_direction(w, generator))
        parts = torch.split(moved, [t.numel() for t in flat])
    else:
        total = math.sqrt(sum(float(t @ t) for t in flat))
        if epsilon > 2 * total:
            raise ValueError(f"perturbation of size {epsilon} exceeds the diameter of the "
                             f"weights' sphere (radius {total:.4g})")
        parts = []
        for t in flat:
            share = epsilon * float(t.norm()) / total if total > 0 else 0.0
            parts.append(sphere_step(t, share, orthogonal_direction(t, generator))
                         if share > 0 else t)
    return {k: p.reshape(tensors[k].shape).to(tensors[k].dtype).to(tensors[k].device)
            for k, p in zip(names, parts, strict=True)}


@torch.no_grad()
def perturb_model_(model: nn.Module, epsilon: float, seed: int, scope: str = "layer") -> None:
    """Move ``model``'s trainable parameters in place by :func:`perturb_tensors` (buffers,
    e.g. BatchNorm statistics, are left alone)."""
    params = dict(model.named_parameters())
    moved = perturb_tensors(params, epsilon, seed, scope)
    for name, p in params.items():
        p.copy_(moved[name])


# ---------------------------------------------------------------------------------------------
# Batch order


def swapped_batch_order(n_batches: int, swaps: int, seed: int) -> list[int]:
    """The order of an epoch's ``n_batches`` batches with ``swaps`` disjoint pairs, drawn
    uniformly by ``seed``, exchanged (``swaps == 0``: the identity)."""
    if swaps < 0 or 2 * swaps > n_batches:
        raise ValueError(f"cannot swap {swaps} disjoint pairs among {n_batches} batches")
    order = list(range(n_batches))
    if swaps == 0:
        return order
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(n_batches, generator=g)[: 2 * swaps].tolist()
    for a, b in zip(picked[::2], picked[1::2], strict=True):
        order[a], order[b] = order[b], order[a]
    return order


def batch_swap_positions(n: int, batch_size: int, swaps: int, seed: int) -> Tensor:
    """A permutation of an epoch's ``n`` sample positions that exchanges ``swaps`` disjoint
    pairs of its full batches (:func:`swapped_batch_order`; a smaller last batch stays last):
    position ``p`` of the perturbed epoch takes the sample of position ``result[p]``."""
    full = n // batch_size
    order = swapped_batch_order(full, swaps, seed)
    idx = torch.arange(n)
    moved = idx[: full * batch_size].reshape(full, batch_size)[order].reshape(-1)
    return torch.cat([moved, idx[full * batch_size:]])


__all__ = ["KINDS", "SCOPES", "batch_swap_positions", "kaiming_radius", "orthogonal_direction",
           "perturb_model_", "perturb_tensors", "perturbation_seed", "sphere_init_", "sphere_step",
           "swapped_batch_order"]
