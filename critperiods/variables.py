"""The cube's variables: one table of their metadata (``long_name``, ``units``, flags).

Only the cube's assembly reads this module. The stages that measure (evaluate, llc,
divergence, perturbation_divergence) write values without descriptions, and
:func:`critperiods.results.cube.describe` gives every variable of the cube its attributes
from here when ``aggregate`` builds it (:func:`variable_attrs`). So editing a description
reruns ``aggregate`` and what reads the cube, never training, λ̂ or a divergence
(docs/invalidation.md; a test checks). What a stage computes by name stays with the code
that computes it, and this module imports it from there: the bits of ``llc_quality``
(:data:`critperiods.measure.llc.quality.FLAGS`) and the codes of the growth laws
(:mod:`critperiods.measure.growth_laws`). The evaluation metrics
(:data:`critperiods.measure.evaluation.METRICS`) are not imported, since that would put the
evaluate stage's code under every description; each has its row in :data:`VARIABLES`
(``tests/test_assemble.py`` checks).

Conventions: every unit parses in UDUNITS ("1" for dimensionless; losses and divergences of
distributions are in nats, which UDUNITS lacks, so they are "1" with the unit named in the
long_name); index coordinates carry a long_name and no units (``None`` here). Families of
variables named after a metric (``div_<metric>``, ``div_<metric>_growth_*``,
``perturb_<metric>``, ``<statistic>_interval``) get their attributes from the functions
below, built from the tables here.
"""

from __future__ import annotations

import re

import numpy as np

from critperiods.measure.growth_laws import FORMS as GROWTH_FORMS
from critperiods.measure.growth_laws import NO_FIT, RATE_MEANING
from critperiods.measure.llc.quality import FLAGS as LLC_QUALITY_FLAGS

#: name → (long_name, units) of every variable and coordinate with a fixed name.
VARIABLES: dict[str, tuple[str, str | None]] = {
    # coordinates (dims: no units)
    "batch_size": ("SGD batch size", None),
    "lr_schedule": ("learning-rate schedule after the switch: continue = the per-epoch decay "
                    "goes on, restart = the rate is reset to its initial value at the switch",
                    None),
    "switch_epoch": ("epoch at which the blur deficit is removed (0: never blurred)", None),
    "seed": ("seed of initial weights and data order", None),
    "epoch": ("training epochs completed at the checkpoint", None),
    "chain": ("SGLD chain", None),
    "draw": ("SGLD draw, burn-in included (the first llc_burn_in draws)", None),
    "seed_b": ("the other seed of a pair of runs", None),
    "bound": ("lower and upper bound of an interval", None),
    "reference": ("run compared with: blurred = the always-blurred run, sharp = the "
                  "never-blurred run (switch epoch 0), both of the same seed", None),
    "perturb_epoch": ("epochs trained when the copy was perturbed", None),
    "epsilon": ("size of the perturbation: L2 distance moved in weight space (kind weights) or "
                "pairs of batches swapped (kind batch_order)", None),
    "replicate": ("replicate of the perturbation (its own random direction or swap)", None),
    "step": ("optimizer steps since the perturbation", None),
    "epochs_since_switch": ("epochs since the run's switch epoch (negative before it)", "1"),
    # evaluate: per checkpoint
    "test_loss": ("cross-entropy on the sharp test set, in nats", "1"),
    "test_accuracy": ("accuracy on the sharp test set", "1"),
    "blurred_test_loss": ("cross-entropy on the blurred test set, in nats", "1"),
    "blurred_test_accuracy": ("accuracy on the blurred test set", "1"),
    "train_loss": ("cross-entropy on the training data of the checkpoint's phase, in nats", "1"),
    "train_accuracy": ("accuracy on the training data of the checkpoint's phase", "1"),
    # aggregate: from the evaluations
    "phase_sharp": ("true where the epoch's checkpoint was last trained on sharp data", "1"),
    "final_test_accuracy": ("sharp test accuracy at epoch switch_epoch + epochs_after_switch "
                            "(a global attribute), where the run ends; the never-blurred run "
                            "(switch epoch 0) trains on as the others' reference, so its last "
                            "test_accuracy is later", "1"),
    "run_diverged": ("run ended at chance accuracy: diverged, or never learned (left out of "
                     "means and fits)", "1"),
    # llc: per checkpoint, and the sampler's settings
    "llc_mean": ("local learning coefficient, mean over healthy SGLD chains", "1"),
    "llc_std": ("local learning coefficient, std over healthy SGLD chains (ddof 0; its "
                "standard error is llc_mcse)", "1"),
    "llc_chain": ("local learning coefficient per SGLD chain (NaN if diverged)", "1"),
    "llc_diverged_chains": ("SGLD chains that diverged (excluded from the mean)", "1"),
    "llc_init_loss": ("loss of the checkpoint on the LLC samples, L_n(w*), in nats", "1"),
    "llc_loss_trace": ("SGLD minibatch loss per recorded draw, in nats (burn-in included; NaN "
                       "after a chain diverged)", "1"),
    "llc_rhat": ("rank-normalised split R-hat of the post-burn-in SGLD draws (ArviZ)", "1"),
    "llc_ess": ("bulk effective sample size of the post-burn-in SGLD draws (ArviZ)", "1"),
    "llc_trend_z": ("mean of the first 20% minus the last 50% of the post-burn-in draws, in "
                    "Monte Carlo standard errors", "1"),
    "llc_mcse": ("Monte Carlo standard error of llc_mean: n beta times ArviZ's MCSE of the mean "
                 "of the healthy chains' post-burn-in draws (aggregate, from llc_loss_trace)",
                 "1"),
    "llc_distance_growth": ("growth of the SGLD chains' squared distance from the "
                            "checkpoint, |w - w*|^2, from the first to the second half of the "
                            "post-burn-in draws (ratio of means minus 1; near 0 once the "
                            "chains have relaxed)", "1"),
    "llc_tail_khat": ("Pareto k-hat of the right tail of the post-burn-in SGLD draws (ArviZ); "
                      "above min(1 - 1/log10(draws), 0.7) (0.7 below 100 draws) their mean is not "
                      "reliable", "1"),
    "llc_sharpness": ("top eigenvalue of the Hessian of the mean loss the SGLD chains sample, "
                      "at the checkpoint (on llc_stability_samples of its images); the drift "
                      "is stable for step sizes below 4 a / (a^2 + (n beta * llc_sharpness_sd)^2)"
                      ", a = n beta * it + gamma", "1"),
    "llc_sharpness_sd": ("standard deviation, over 64 of the SGLD chains' minibatches, of the "
                         "loss's curvature along the Hessian's top eigenvector (0 for "
                         "full-batch chains)", "1"),
    "llc_quality": ("quality of the local learning coefficient estimate (0 = ok)", "1"),
    "llc_descent": ("the chains' descent (llc.descent): n beta times the change of the full-batch "
                    "loss along the noise-free SGLD drift from the checkpoint, averaged over the "
                    "draws; lambda-hat minus it is lambda-hat without the descent, to first "
                    "order", "1"),
    "llc_descent_at_end": ("llc_descent at the last draw instead of averaged over the draws",
                           "1"),
    "llc_nbeta": ("inverse temperature times sample size of the SGLD posterior (n beta)", "1"),
    "llc_burn_in": ("SGLD draws per chain discarded as burn-in", "1"),
    "llc_step_size": ("SGLD step size epsilon", "1"),
    "llc_gamma": ("SGLD localisation strength gamma", "1"),
    "llc_bf16": ("whether the SGLD forward and backward passes ran in bf16 autocast (1) or "
                 "float32 (0); the chains' state is float32 either way", "1"),
    "llc_stability_samples": ("images llc_sharpness was measured on (0 = all the sampler's)",
                              "1"),
    # aggregate: the critical-period summary, per (batch_size, lr_schedule)
    "critical_period_end": ("kink of the hinge fitted to final accuracy against switch "
                            "epoch, in epochs: the end of the critical period where "
                            "critical_period_end_located is 1, else no end", "1"),
    "critical_period_end_located": ("whether the critical period's end is located: 1 where "
                                    "the permanent deficit's interval lies above 0, 0 where "
                                    "it does not (critical_period_end and "
                                    "half_deficit_epoch then mark no end)", "1"),
    "critical_period_slope": ("change of final accuracy per epoch of delay after the kink "
                              "(negative: accuracy lost)", "1"),
    "permanent_deficit": ("final sharp test accuracy of the earliest switch minus that of the "
                          "latest, paired by seed, mean over seeds", "1"),
    "half_deficit_epoch": ("switch epoch at half the final permanent deficit (a deficit "
                           "only where critical_period_end_located is 1)", "1"),
    "llc_change_epoch_trunk": ("epoch of largest slope change of valid lambda-hat along the "
                               "blurred trunk", "1"),
    "llc_change_epoch_sharp": ("epoch of largest slope change of valid lambda-hat, "
                               "never-blurred run", "1"),
    "divergence_drop_epoch": ("switch epoch at which div_l2 (reference=blurred) at epoch = "
                              "switch_epoch + summary_horizon (a global attribute), mean over "
                              "seeds, has fallen to half its value at the earliest switch", "1"),
    "diverged_runs": ("runs that diverged to chance accuracy, left out of the statistics", "1"),
    "permanent_deficit_seeds": ("seeds with both the earliest and the latest switch run, on "
                                "which the permanent deficit and its interval rest", "1"),
    # aggregate: the learning-rate control, per batch_size (with both schedules)
    "restart_deficit_reduction": ("permanent_deficit with the rate continued minus that with "
                                  "it restarted, paired by seed, mean over seeds: how much of "
                                  "the deficit restarting the rate at the switch removes", "1"),
    "restart_deficit_reduction_seeds": ("seeds with both ends of the deficit under both "
                                        "schedules, on which restart_deficit_reduction and "
                                        "its interval rest", "1"),
}

#: The summary's statistics per (batch_size, lr_schedule) (names in :data:`VARIABLES`).
SUMMARY_STATISTICS = ("critical_period_end", "critical_period_slope", "permanent_deficit",
                      "half_deficit_epoch", "llc_change_epoch_trunk", "llc_change_epoch_sharp",
                      "divergence_drop_epoch")

#: divergence metric → (long_name, units) of ``div_<metric>`` and ``div_<metric>_seeds``, whose
#: long_name adds the pair's roles (:data:`DIVERGENCE_ROLES`). "a" is the run, "b" the
#: reference (or ``seed_b``).
DIVERGENCE_METRICS: dict[str, tuple[str, str]] = {
    "l2": ("L2 distance between trainable weights", "1"),
    "l2_rel": ("L2 distance relative to the mean weight norm of the pair", "1"),
    "cosine": ("cosine similarity of trainable weights", "1"),
    "l2_aligned": ("L2 distance after permuting b's hidden units to match a (weight matching)",
                   "1"),
    "disagreement": ("fraction of probe images with different predicted classes", "1"),
    "disagreement_norm": ("disagreement divided by the pair's mean probe error rate", "1"),
    "kl": ("mean KL(p_a || p_b) of predictive distributions on the probe set, in nats", "1"),
    "js": ("mean Jensen-Shannon divergence of predictive distributions on the probe set, "
           "in nats", "1"),
    "acc_gap": ("probe accuracy of a minus that of b", "1"),
    "loss_gap": ("probe cross-entropy of a minus that of b, in nats", "1"),
    "cka": ("linear CKA of penultimate features on the probe set (minibatch unbiased HSIC)", "1"),
    "barrier": ("max over alpha of probe loss on the a-b line above the linear interpolation "
                "of the endpoint losses, in nats", "1"),
    "barrier_mean": ("max over alpha of probe loss on the a-b line minus the mean endpoint loss, "
                     "in nats", "1"),
}
#: comparison set → who "a" and "b" are (``reference``: dim ``reference``; ``seeds``: ``seed_b``).
DIVERGENCE_ROLES = {"reference": "a is the run, b its reference run of the same seed: the "
                                 "always-blurred run (reference=blurred) or the never-blurred run "
                                 "(reference=sharp)",
                    "seeds": "a is seed, b is seed_b, both with the same switch epoch"}

#: Who "a" and "b" are in ``perturb_<metric>`` (the perturbation comparisons).
PERTURBATION_ROLE = "a is the perturbed copy, b its unperturbed twin"
#: Variables of the perturbation comparisons with a fixed name → (long_name, units).
PERTURBATION_VARIABLES: dict[str, tuple[str, str]] = {
    "perturb_step_l2": (f"L2 distance between trainable weights after each step "
                        f"({PERTURBATION_ROLE})", "1"),
    "perturb_accuracy_change": ("sharp test accuracy of the copy minus that of its twin at "
                                "the end epoch", "1"),
    "perturb_twin_accuracy": ("sharp test accuracy of the twin (the unperturbed copy, "
                              "retrained alone) at the end epoch", "1"),
}


#: variable → the variables that qualify its values (CF ``ancillary_variables``): the flags
#: and intervals to read before averaging or plotting it.
ANCILLARY: dict[str, tuple[str, ...]] = {
    "final_test_accuracy": ("run_diverged",),
    "llc_mean": ("llc_quality", "llc_mcse", "llc_distance_growth", "llc_descent"),
    "llc_std": ("llc_quality",),
    "llc_chain": ("llc_quality",),
    "critical_period_end": ("critical_period_end_located", "critical_period_end_interval"),
    "half_deficit_epoch": ("critical_period_end_located",),
    "permanent_deficit": ("permanent_deficit_interval", "permanent_deficit_seeds"),
    "restart_deficit_reduction": ("restart_deficit_reduction_interval",
                                  "restart_deficit_reduction_seeds"),
}


def _yes_no_flag_attrs(name: str, no: str, yes: str) -> dict:
    """CF attributes of the 0/1 flag ``name``: its long_name and units, and what 0 and 1
    mean."""
    return {**attrs(name), "flag_values": np.asarray([0, 1], dtype=np.int8),
            "flag_meanings": f"{no} {yes}"}


def located_flag_attrs() -> dict:
    """CF attributes of the ``critical_period_end_located`` flag."""
    return _yes_no_flag_attrs("critical_period_end_located", "not_located", "located")


def attrs(name: str) -> dict:
    """``long_name`` and (unless it is an index coordinate) ``units`` of ``name``."""
    long_name, units = VARIABLES[name]
    return {"long_name": long_name} if units is None else {"long_name": long_name, "units": units}


def llc_quality_flag_attrs(flags: dict[str, int] = LLC_QUALITY_FLAGS) -> dict:
    """CF attributes of an ``llc_quality`` bit field (0 = ok) of ``flags`` (name → bit):
    the λ̂ stage's by default; the flags in the order of their bits."""
    flags = dict(sorted(flags.items(), key=lambda flag: flag[1]))
    masks = [sum(flags.values()), *flags.values()]
    return {"flag_masks": np.asarray(masks, dtype=np.int8),
            "flag_values": np.asarray([0, *flags.values()], dtype=np.int8),
            "flag_meanings": " ".join(["ok", *flags])}


def run_diverged_flag_attrs() -> dict:
    """CF attributes of the ``run_diverged`` flag (0 = learned, 1 = diverged to chance)."""
    return _yes_no_flag_attrs("run_diverged", "learned", "diverged_to_chance")


def divergence_attrs(metric: str, comparison: str) -> dict:
    """Attributes of ``div_<metric>`` (``comparison="reference"``) or ``div_<metric>_seeds``
    (``comparison="seeds"``)."""
    long_name, units = DIVERGENCE_METRICS[metric]
    return {"long_name": f"{long_name} ({DIVERGENCE_ROLES[comparison]})", "units": units}


def growth_attrs(metric: str) -> dict[str, dict]:
    """Attributes of ``div_<metric>_growth_form``, ``_growth_rate`` and ``_growth_r2``, by
    suffix (``form``, ``rate``, ``r2``)."""
    return {
        "form": {"long_name": f"growth law of {metric} vs the always-blurred run (lowest AIC)",
                 "units": "1",
                 "flag_values": np.arange(NO_FIT, len(GROWTH_FORMS), dtype=np.int8),
                 "flag_meanings": " ".join(("none", *GROWTH_FORMS))},
        "rate": {"long_name": f"rate or exponent of the chosen growth law of {metric}",
                 "units": "1",
                 "comment": "; ".join(f"{f}: {RATE_MEANING[f]}" for f in GROWTH_FORMS)},
        "r2": {"long_name": f"R^2 of the chosen growth law of {metric}", "units": "1",
               "comment": "each law has 2 parameters: fitted to 3 points (a run with 6 epochs "
                          "after its switch and a checkpoint every 2), any rising series "
                          "gives R^2 near 1, so it tells neither the law nor its rate "
                          "(docs/divergence.md)"},
    }


_GROWTH = re.compile(r"div_(\w+)_growth_(form|rate|r2)")


def variable_attrs(name: str, index: bool = False) -> dict:
    """The attributes of the cube's variable or coordinate ``name`` from the tables here
    ({} for a name they do not describe); ``index``: ``name`` is a dimension, which gets a
    ``long_name`` and no ``units``. Covers the fixed names (:data:`VARIABLES`,
    :data:`PERTURBATION_VARIABLES`) and the families ``div_<metric>``,
    ``div_<metric>_seeds``, ``div_<metric>_growth_<form|rate|r2>`` and
    ``perturb_<metric>``."""
    if name in VARIABLES:
        out = attrs(name)
    elif name in PERTURBATION_VARIABLES:
        long_name, units = PERTURBATION_VARIABLES[name]
        out = {"long_name": long_name, "units": units}
    elif (growth := _GROWTH.fullmatch(name)) and growth.group(1) in DIVERGENCE_METRICS:
        out = growth_attrs(growth.group(1))[growth.group(2)]
    elif name.startswith("div_") and name.removeprefix("div_").removesuffix("_seeds") in \
            DIVERGENCE_METRICS:
        metric = name.removeprefix("div_").removesuffix("_seeds")
        out = divergence_attrs(metric, "seeds" if name.endswith("_seeds") else "reference")
    elif name.removeprefix("perturb_") in DIVERGENCE_METRICS:
        long_name, units = DIVERGENCE_METRICS[name.removeprefix("perturb_")]
        out = {"long_name": f"{long_name} ({PERTURBATION_ROLE})", "units": units}
    else:
        return {}
    return {k: v for k, v in out.items() if not (index and k == "units")}


def exponent_attrs(what: str) -> dict:
    """Attributes of a scaling exponent of the critical period's end vs ``what`` (its
    interval's: :func:`interval_attrs`)."""
    return {"long_name": f"power-law exponent of critical period end vs {what}", "units": "1"}


def interval_attrs(name: str, kind: str) -> dict:
    """Attributes of ``<name>_interval``: a ``kind`` (e.g. "90% Student-t interval over
    seeds") of the summary statistic ``name``: a short ``long_name`` ("90% interval of
    name", what a plot label holds) and the whole kind, how it is made, in ``comment``."""
    level = kind.split(" ")[0] if kind[:1].isdigit() else ""
    return {"long_name": f"{level} interval of {name}".strip(), "units": "1", "comment": kind}


__all__ = ["ANCILLARY", "DIVERGENCE_METRICS", "DIVERGENCE_ROLES", "PERTURBATION_ROLE",
           "PERTURBATION_VARIABLES", "SUMMARY_STATISTICS", "VARIABLES", "attrs",
           "divergence_attrs", "exponent_attrs", "growth_attrs",
           "interval_attrs", "llc_quality_flag_attrs", "located_flag_attrs",
           "run_diverged_flag_attrs",
           "variable_attrs"]
