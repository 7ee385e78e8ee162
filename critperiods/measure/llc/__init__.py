"""The local learning coefficient λ̂ (LLC) of a checkpoint, by localised, tempered SGLD.

* :mod:`~critperiods.measure.llc.sampler` — the SGLD chains (``LLCConfig``), run as one
  grouped network, with a diagnostics hook: callbacks that receive every recorded
  :class:`~critperiods.measure.llc.sampler.Draw`;
* :mod:`~critperiods.measure.llc.estimate` — λ̂ from the draws (``estimate_llc``), with
  diverged chains left out;
* :mod:`~critperiods.measure.llc.quality` — convergence diagnostics (R-hat, ESS, trend),
  the step's stability limit, and the quality flag (numpy and ArviZ only: the aggregation
  reads it without the sampler);
* :mod:`~critperiods.measure.llc.calibration` — step-size sweeps (``calibrate``) and their
  plot (the only module here that plots);
* :mod:`~critperiods.measure.llc.descent` — how much of λ̂ the chains' descent from a
  checkpoint off its minimum takes (``descent``, the probe of ``calibrate-llc --descent``);
* :mod:`~critperiods.measure.llc.stability` — the top eigenvalue of the loss's Hessian at a
  checkpoint and the minibatches' curvature noise along it (``sharpness``), against which
  the flag holds the step.

The public names of the first four sub-modules are re-exported here, so ``from
critperiods.measure.llc import estimate_llc, LLCConfig`` works (``descent``'s and
``stability``'s are imported from their modules: adding them here would change the code of
every λ̂ stage). They are imported on first use, so that importing one sub-module does not
import the others;
pipeline stages import from the sub-modules (a stage's code fingerprint then counts only
those, see ``critperiods.pipeline.fingerprint``).
"""

from __future__ import annotations

from typing import Any

_SAMPLER = {"PRECISIONS", "SAMPLERS", "SGLD_CUDA_GRAPHS", "Draw", "DrawCallback", "LLCConfig",
            "LossFn", "chain_seed", "cuda_numerics", "forward_precision"}
_ESTIMATE = {"INIT_LOSS_CHUNK", "LLCDivergenceWarning", "LLCResult", "default_nbeta",
             "divergence_threshold", "estimate_llc", "eval_mode"}
_QUALITY = {"FLAGS", "MAX_RHAT", "MAX_TREND_Z", "MIN_TAIL_DRAWS", "RELAXED_GROWTH",
            "Diagnostics", "count_flags", "diagnose", "flat_direction_growth", "khat_threshold",
            "past_stability_limit", "quality_flags", "stable_step_size"}
_CALIBRATION = {"SWEEP_FACTORS", "calibrate", "calibration_lines", "default_step_sizes",
                "plot_calibration"}


def __getattr__(name: str) -> Any:
    """A re-exported name, from its sub-module (imported on first use)."""
    if name in _SAMPLER:
        from critperiods.measure.llc import sampler as module
    elif name in _ESTIMATE:
        from critperiods.measure.llc import estimate as module
    elif name in _QUALITY:
        from critperiods.measure.llc import quality as module
    elif name in _CALIBRATION:
        from critperiods.measure.llc import calibration as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


__all__ = ["Diagnostics", "Draw", "DrawCallback", "FLAGS", "INIT_LOSS_CHUNK", "LLCConfig",
           "LLCDivergenceWarning", "LLCResult", "LossFn", "MAX_RHAT", "MAX_TREND_Z",
           "MIN_TAIL_DRAWS", "PRECISIONS", "RELAXED_GROWTH", "SAMPLERS",
           "SGLD_CUDA_GRAPHS", "SWEEP_FACTORS", "calibrate", "calibration_lines",
           "chain_seed", "count_flags", "cuda_numerics", "default_nbeta",
           "default_step_sizes", "diagnose", "divergence_threshold", "estimate_llc", "eval_mode",
           "flat_direction_growth", "forward_precision", "khat_threshold",
           "past_stability_limit", "plot_calibration", "quality_flags", "stable_step_size"]
