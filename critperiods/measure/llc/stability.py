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

The limit is necessary, not sufficient. Minibatch gradients add curvature noise that can
destabilise a step below it (Wu, Ma & E 2018, "How SGD selects the global minima"). So an
unflagged estimate is not proven stable, and a flagged one is past the limit, to within
what the subset's ``λ_max`` is off (below: a few per cent high; Lanczos itself only errs
low).

:func:`top_hessian_eigenvalue` finds ``λ_max`` by Lanczos iteration (SciPy's ``eigsh``, i.e.
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

from typing import TYPE_CHECKING

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


def top_hessian_eigenvalue(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor],
                           *, samples: int | None = STABILITY_SAMPLES, seed: int = 0,
                           tolerance: float = TOLERANCE) -> float:
    """The largest eigenvalue of the Hessian of the mean loss ``loss_fn(model(x), y)`` over
    ``samples`` images of ``data`` (a random subset drawn with ``seed``; all for ``None`` or
    more than there are), at the model's weights, in eval mode (as the sampler runs) and in
    float32, on the model's device; ``model`` is left unchanged, each submodule in its mode.

    Deterministic for one ``seed``, data, model and device (the subset, Lanczos' start
    vector and its arithmetic are; on CUDA with deterministic cuDNN kernels and no TF32,
    as float32 chains run). NaN where the loss at the weights is not finite; where Lanczos
    does not converge, its estimate so far (which errs low), with a warning.
    """
    import torch

    from critperiods.measure.llc.estimate import _check_data, eval_mode
    from critperiods.measure.llc.sampler import cuda_numerics

    device = next(model.parameters()).device
    x, y = data
    if samples is not None and samples < x.shape[0]:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(x.shape[0], generator=generator)[:samples].sort().values
        x, y = x[keep.to(x.device)], y[keep.to(y.device)]
    with eval_mode(model), cuda_numerics(device, "float32"):
        return _top_eigenvalue(model, loss_fn, *_check_data((x, y), device), seed, tolerance)


def _top_eigenvalue(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, seed: int,
                    tolerance: float) -> float:
    """:func:`top_hessian_eigenvalue` on ``(x, y)``, the subset, with the model in eval
    mode."""
    import warnings

    import torch
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
    from torch.func import functional_call, grad, jvp

    from critperiods.measure.llc.estimate import INIT_LOSS_CHUNK

    weights = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    sizes = [w.numel() for w in weights.values()]
    device = next(iter(weights.values())).device
    chunks = [(x[s : s + INIT_LOSS_CHUNK], y[s : s + INIT_LOSS_CHUNK])
              for s in range(0, x.shape[0], INIT_LOSS_CHUNK)]

    def mean_loss(params: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(model, params, (xb,))
        return loss_fn(out.float(), yb) * (xb.shape[0] / x.shape[0])

    with torch.no_grad():
        at_weights = sum(float(mean_loss(weights, xb, yb)) for xb, yb in chunks)
    if not np.isfinite(at_weights):
        return float("nan")

    def product(vector: np.ndarray) -> np.ndarray:  # H v, chunk by chunk, in float64 sums
        flat = torch.as_tensor(np.ravel(vector), dtype=torch.float32, device=device)
        directions = {k: v.view_as(w) for (k, w), v in zip(weights.items(),
                                                            torch.split(flat, sizes),
                                                            strict=True)}
        total = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
        for xb, yb in chunks:
            _, hv = jvp(grad(lambda p, xb=xb, yb=yb: mean_loss(p, xb, yb)), (weights,),
                        (directions,))
            total += torch.cat([hv[k].reshape(-1) for k in weights]).double()
        return total.cpu().numpy()

    size = sum(sizes)

    if size <= DENSE_UP_TO:
        hessian = np.stack([product(e) for e in np.eye(size)])
        return float(np.linalg.eigvalsh(0.5 * (hessian + hessian.T))[-1])
    start = np.random.default_rng(seed).standard_normal(size)
    operator = LinearOperator((size, size), matvec=product, dtype=np.float64)
    try:
        return float(eigsh(operator, k=1, which="LA", tol=tolerance, v0=start,
                           ncv=LANCZOS_VECTORS, maxiter=LANCZOS_RESTARTS)[0][0])
    except ArpackNoConvergence as err:  # its Ritz value errs low: a flag from it still holds
        found = np.asarray(err.eigenvalues, dtype=float)
        warnings.warn(f"Lanczos did not reach {tolerance:g} on the top Hessian eigenvalue in "
                      f"{LANCZOS_RESTARTS} restarts; "
                      + (f"using its estimate so far, {found.max():.4g} (a lower bound, to "
                         "round-off)" if found.size else "none found: NaN (not flagged)"),
                      RuntimeWarning, stacklevel=3)
        return float(found.max()) if found.size else float("nan")


__all__ = ["DENSE_UP_TO", "LANCZOS_RESTARTS", "LANCZOS_VECTORS", "STABILITY_SAMPLES",
           "TOLERANCE", "top_hessian_eigenvalue"]
