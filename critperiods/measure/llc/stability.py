"""Whether the SGLD drift is stable at a checkpoint: the top eigenvalue of the loss's
Hessian there, and the step size below which the drift stays stable.

The chains move by ``w ← w − (ε/2) [nβ ∇L(w) + γ (w − w*)] + √ε ξ``. Near the checkpoint
``w*`` the drift is the linear map ``I − (ε/2) (nβ H + γ)``, with ``H`` the Hessian of the
mean loss ``L`` at ``w*``. Along ``H``'s top eigenvector (eigenvalue ``λ_max``) it multiplies
the distance from ``w*`` by ``1 − (ε/2) (nβ λ_max + γ)``, which exceeds 1 in size once

    ε > 4 / (nβ λ_max + γ)        (:func:`~critperiods.measure.llc.quality.stable_step_size`).

Past that limit the chains do not sample the localised posterior along the sharpest
direction. They swing across the valley, held only by the loss's curvature changing, and
λ̂, their mean excess loss, includes the swing's. The chains agree and are stationary, so
R-hat, the trend and the tail's k̂ pass them. The descent (``llc_descent``) can show it as
a drift that raises the loss, but only where the swing is large.

**Minibatches.** The chains see a minibatch's gradient, so the map's stiffness along
``v`` (the top eigenvector) is ``a_B = nβ vᵀ H_B v + γ``, a new draw at every step, with
mean ``a = nβ λ_max + γ`` and standard deviation ``nβ s``. λ̂ is a mean loss, a second
moment of ``w − w*``, and the second moment stays bounded while ``E[(1 − ε a_B / 2)²] <
1`` (mean-square stability; Wu, Ma & E 2018, "How SGD selects the global minima"), so

    ε < 4 a / (a² + (nβ s)²),

below the full-batch limit by the factor ``1 / (1 + (nβ s / a)²)``. :func:`sharpness`
measures ``s`` as the spread of ``vᵀ H_B v`` over :data:`CURVATURE_BATCHES` minibatches of
the sampler's batch size. On the default experiment's checkpoints (batch 32) it lowered
the limit by 2–17 % (median 8 %), most on the sharp images (docs/llc.md).

The limit is still necessary, not sufficient: it looks along one direction, and a
minibatch's Hessian also turns that direction (its own top eigenvalue was up to 2.2× the
mean's, docs/llc.md). So an unflagged estimate is not proven stable, and a flagged one is
past the limit, to within what the subset's ``λ_max`` is off (below: a few per cent high;
Lanczos itself only errs low). Past it, λ̂ need not show a break: on the default
experiment's checkpoints swept across their limits it kept its trend in the step
(docs/llc.md, "Crossing the limit shows as no break").

:func:`sharpness` finds ``λ_max`` by Lanczos iteration (SciPy's ``eigsh``, i.e.
ARPACK) on Hessian-vector products, forward-over-reverse (``torch.func.jvp`` of
``torch.func.grad``, as the torch.func docs recommend for them). It uses the mean loss over
a seeded random subset of the estimate's data (``llc.stability_samples``). On the default
experiment's checkpoints, 1,024 images gave ``λ_max`` 2–4 % above the full 10,000's, with
6–9 products (docs/llc.md).

The limit and the flag's test (``stable_step_size``, ``past_stability_limit``) are in
:mod:`critperiods.measure.llc.quality`, which the aggregation reads without torch or the
sampler; this module finds ``λ_max`` (torch and SciPy, imported when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn

    from critperiods.measure.llc.sampler import LossFn

#: Default of ``llc.stability_samples``: the images the Hessian's top eigenvalue is taken on.
STABILITY_SAMPLES = 1024
#: Lanczos' relative tolerance on ``λ_max``: the flag compares it with a limit, so 1 % does.
TOLERANCE = 1e-2
#: Up to this many weights the Hessian is formed whole (one product per weight) and
#: diagonalised; ARPACK needs more weights than Lanczos vectors.
DENSE_UP_TO = 64
#: Lanczos vectors, and restarts before giving up (the default's checkpoints converged
#: within the first: 6-9 products).
LANCZOS_VECTORS, LANCZOS_RESTARTS = 6, 30
#: Minibatches over which the curvature's spread along the top eigenvector is taken: its
#: standard deviation is then known to ~9 % (1 / √(2 · 63)), the limit to ~2 % where the
#: spread is a third of ``λ_max``.
CURVATURE_BATCHES = 64


class Sharpness(NamedTuple):
    """The loss's curvature at a checkpoint, as the drift's stability limit needs it."""

    #: ``λ_max``, the top eigenvalue of the Hessian of the mean loss (``llc_sharpness``).
    top: float
    #: The standard deviation, over the sampler's minibatches, of the curvature along the
    #: top eigenvector ``v``: of ``vᵀ H_B v``, with ``H_B`` a minibatch's Hessian
    #: (``llc_sharpness_sd``); 0 for full-batch chains.
    spread: float


def sharpness(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], *,
              samples: int | None = STABILITY_SAMPLES, batch_size: int | None = None,
              batches: int = CURVATURE_BATCHES, seed: int = 0,
              tolerance: float = TOLERANCE) -> Sharpness:
    """``λ_max`` of the Hessian of the mean loss ``loss_fn(model(x), y)`` over ``samples``
    images of ``data`` (a random subset drawn with ``seed``; all for ``None`` or more than
    there are), and the spread of the curvature along its eigenvector over ``batches``
    minibatches of ``batch_size`` images of ``data``, drawn with replacement as the sampler
    draws them (``None``: full-batch chains, spread 0). At the model's weights, in eval
    mode (as the sampler runs) and in float32, on the model's device; ``model`` is left
    unchanged, each submodule in its mode.

    Deterministic for one ``seed``, data, model and device (the subset, the minibatches,
    Lanczos' start vector and its arithmetic are; on CUDA with deterministic cuDNN kernels
    and no TF32, as float32 chains run). NaN where the loss at the weights is not finite;
    where Lanczos does not converge, its estimate so far (which errs low), with a warning.
    """
    import torch

    from critperiods.measure.llc.estimate import _check_data, eval_mode
    from critperiods.measure.llc.sampler import cuda_numerics

    device = next(model.parameters()).device
    x, y = _check_data(data, device)
    generator = torch.Generator().manual_seed(seed)
    checked = (x, y)
    if samples is not None and samples < x.shape[0]:
        keep = torch.randperm(x.shape[0], generator=generator)[:samples].sort().values
        checked = x[keep.to(device)], y[keep.to(device)]
    with eval_mode(model), cuda_numerics(device, "float32"):
        hessian = _HessianProducts(model, loss_fn)
        top, direction = hessian.top_eigenpair(*checked, seed, tolerance)
        if batch_size is None or not np.isfinite(top):
            return Sharpness(top, 0.0 if np.isfinite(top) else float("nan"))
        curvatures = []
        for _ in range(batches):
            rows = torch.randint(x.shape[0], (batch_size,), generator=generator).to(device)
            curvatures.append(float(direction @ hessian.product(x[rows], y[rows], direction)))
    return Sharpness(top, float(np.std(curvatures, ddof=1)) if batches > 1 else float("nan"))


def top_hessian_eigenvalue(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor],
                           *, samples: int | None = STABILITY_SAMPLES, seed: int = 0,
                           tolerance: float = TOLERANCE) -> float:
    """``λ_max`` alone: :func:`sharpness` without the minibatches."""
    return sharpness(model, loss_fn, data, samples=samples, seed=seed, tolerance=tolerance).top


class _HessianProducts:
    """Hessian-vector products of the mean loss over given images, at the model's weights
    (the model already in eval mode), chunk by chunk, summed in float64."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.weights = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        self.sizes = [w.numel() for w in self.weights.values()]
        self.size = sum(self.sizes)
        self.device = next(iter(self.weights.values())).device

    def _mean_loss(self, params: dict[str, Tensor], xb: Tensor, yb: Tensor, n: int) -> Tensor:
        from torch.func import functional_call

        out = functional_call(self.model, params, (xb,))
        return self.loss_fn(out.float(), yb) * (xb.shape[0] / n)

    def _chunks(self, x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        from critperiods.measure.llc.estimate import INIT_LOSS_CHUNK

        return [(x[s : s + INIT_LOSS_CHUNK], y[s : s + INIT_LOSS_CHUNK])
                for s in range(0, x.shape[0], INIT_LOSS_CHUNK)]

    def loss(self, x: Tensor, y: Tensor) -> float:
        import torch

        with torch.no_grad():
            return sum(float(self._mean_loss(self.weights, xb, yb, x.shape[0]))
                       for xb, yb in self._chunks(x, y))

    def product(self, x: Tensor, y: Tensor, vector: np.ndarray) -> np.ndarray:
        """``H v`` for the mean loss over ``(x, y)``."""
        import torch
        from torch.func import grad, jvp

        flat = torch.as_tensor(np.ravel(vector), dtype=torch.float32, device=self.device)
        directions = {k: v.view_as(w) for (k, w), v in zip(self.weights.items(),
                                                            torch.split(flat, self.sizes),
                                                            strict=True)}
        total = torch.zeros(self.size, dtype=torch.float64, device=self.device)
        for xb, yb in self._chunks(x, y):
            _, hv = jvp(grad(lambda p, xb=xb, yb=yb: self._mean_loss(p, xb, yb, x.shape[0])),
                        (self.weights,), (directions,))
            total += torch.cat([hv[k].reshape(-1) for k in self.weights]).double()
        return total.cpu().numpy()

    def top_eigenpair(self, x: Tensor, y: Tensor, seed: int,
                      tolerance: float) -> tuple[float, np.ndarray]:
        """The top eigenvalue of the Hessian over ``(x, y)`` and its unit eigenvector (NaN
        and zeros where the loss there is not finite)."""
        import warnings

        from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

        if not np.isfinite(self.loss(x, y)):
            return float("nan"), np.zeros(self.size)
        if self.size <= DENSE_UP_TO:
            hessian = np.stack([self.product(x, y, e) for e in np.eye(self.size)])
            values, vectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
            return float(values[-1]), vectors[:, -1]
        start = np.random.default_rng(seed).standard_normal(self.size)
        operator = LinearOperator((self.size, self.size), dtype=np.float64,
                                  matvec=lambda v: self.product(x, y, v))
        try:
            values, vectors = eigsh(operator, k=1, which="LA", tol=tolerance, v0=start,
                                    ncv=LANCZOS_VECTORS, maxiter=LANCZOS_RESTARTS)
            return float(values[0]), vectors[:, 0]
        except ArpackNoConvergence as err:  # its Ritz value errs low: a flag from it holds
            found = np.asarray(err.eigenvalues, dtype=float)
            warnings.warn(f"Lanczos did not reach {tolerance:g} on the top Hessian eigenvalue "
                          f"in {LANCZOS_RESTARTS} restarts; "
                          + (f"using its estimate so far, {found.max():.4g} (a lower bound, "
                             "to round-off)" if found.size else "none found: NaN (not flagged)"),
                          RuntimeWarning, stacklevel=4)
            if not found.size:
                return float("nan"), np.zeros(self.size)
            best = int(np.argmax(found))
            return float(found[best]), np.asarray(err.eigenvectors)[:, best]


__all__ = ["CURVATURE_BATCHES", "DENSE_UP_TO", "LANCZOS_RESTARTS", "LANCZOS_VECTORS",
           "STABILITY_SAMPLES", "TOLERANCE", "Sharpness", "sharpness", "top_hessian_eigenvalue"]
