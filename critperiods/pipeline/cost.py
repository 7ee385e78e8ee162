"""What a grid costs: epochs of SGD, images, and the time it takes on reference hardware.

Trunk sharing (``plan.epochs_trained``) gives the epochs; images are epochs × training set
size; time divides images by measured training throughputs (:data:`RATES`, one job's
images per second, all seeds of a stacked job together, at the job's number of seeds) and
adds a per-job start-up cost (:data:`JOB_OVERHEAD_S`). A model, width or image size without
measured rates is reported as not measured instead of guessed; a batch size between two
measured ones is interpolated, one beyond them priced at the nearest (:func:`rate_at`), and
the estimate says which. λ̂ is priced
as forward + backward passes over ``chains × batch_size`` images per SGLD step, and the
perturbation experiment (``perturbation:``) as the epochs its jobs train
(:func:`plan.perturbation_job_epochs`: each seed's replay, twin and copies, one seed at a
time), both at the rate of a one-seed job (on CUDA, where small_cnn was measured stacked,
at that rate, which a lone small_cnn seed nearly matches at batch 128; docs/performance.md).
Evaluation, divergence and the perturbation comparison are charged their jobs' start-up
only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from critperiods.measure.llc.stability import CURVATURE_BATCHES, STABILITY_SAMPLES
from critperiods.pipeline import plan

#: Training images per second of one job, all seeds of a stacked job together, measured
#: with ``python bench/bench_cost.py`` (docs/performance.md): (device, model, width, image
#: size, seeds stacked) → {batch size: images/s}. A job of ``k`` seeds is priced at the
#: largest measured group of at most ``k`` seeds (the smallest measured, if none is).
#: "cpu": one job at one thread on a 2-core AMD EPYC VM (a job per core);
#: "cuda": one job on one NVIDIA H200 (torch 2.11), the graphed default path.
RATES: dict[tuple[str, str, int, int, int], dict[int, float]] = {
    # a 2-core AMD EPYC VM, one job at one thread (CPU time), 2026-12-06
    ("cpu", "small_cnn", 8, 28, 1): {32: 13163, 64: 15320, 128: 16690, 256: 17387},
    ("cpu", "small_cnn", 8, 28, 3): {32: 15417, 64: 17931, 128: 17982, 256: 18190},
    ("cpu", "small_cnn", 8, 28, 5): {32: 19589, 64: 18314, 128: 18006, 256: 16431},
    ("cpu", "small_cnn", 16, 28, 1): {32: 8164, 64: 8636, 128: 8331, 256: 8207},
    ("cpu", "small_cnn", 16, 28, 3): {32: 7778, 64: 7357, 128: 7821, 256: 5512},
    ("cpu", "small_cnn", 16, 28, 5): {32: 8498, 64: 8422, 128: 7888, 256: 6109},
    # H200, torch 2.11, 2026-12-04, 2 seeds stacked (folded layout; the channels layout now
    # used was 1.37x faster at batch 128 with 5 seeds, so these are conservative)
    ("cuda", "small_cnn", 8, 28, 2): {32: 126714, 64: 343799, 128: 578411, 256: 870500},
    ("cuda", "small_cnn", 16, 28, 2): {32: 169193, 64: 296899, 128: 405924, 256: 678619},
    # H200, one seed per job (seeds_per_job: auto for All-CNN-C), graphed bf16, augmentation
    ("cuda", "all_cnn_c", 96, 32, 1): {32: 34139, 128: 73888},
}

#: Seconds of a core each job costs beyond its training and sampling, per device: on the
#: CPU Python's, PyTorch's and the stage's start (about 5 s of a core measured for one job)
#: and what runs beside the timed loop; 6 s is the value that brings the default run, the
#: CPU study and its long recovery within 6 % of their measured wall times on the
#: development VM (docs/performance.md). On a GPU box with spare cores (``--cores`` ≥ 4,
#: ``--resources gpu=4``) jobs import while another holds the GPU, which is then held only
#: for CUDA's context and the data.
JOB_OVERHEAD_S = {"cpu": 6.0, "cuda": 2.0}
#: Parallel jobs on the reference machine: the 2-core VM runs one job per core.
PARALLEL_JOBS = {"cpu": 2, "cuda": 1}
#: Image passes of one Hessian-vector product: about 3 gradients' work (forward-over-reverse;
#: :mod:`critperiods.measure.llc.stability`).
HESSIAN_PRODUCT_PASSES = 3
#: Image passes of λ̂'s stability check per image its ``λ_max`` looks at: Lanczos takes 6-9
#: products at the default's checkpoints. The curvature's noise then takes one product on
#: each of ``CURVATURE_BATCHES`` of the sampler's minibatches.
STABILITY_PASSES = 8 * HESSIAN_PRODUCT_PASSES


@dataclass(frozen=True)
class Cost:
    """The cost of a config's grid on one device (``seconds`` None when not measured);
    ``rules`` maps each rule to the jobs of it a fresh run plans (``jobs`` is their sum)."""

    epochs: int
    images: float
    llc_images: float
    jobs: int
    seconds: float | None
    missing: tuple[str, ...]
    perturbation_epochs: int = 0
    perturbation_images: float = 0.0
    rules: dict[str, int] = field(default_factory=dict)
    #: the batch sizes priced at a rate read off the measured ones (:func:`rate_at`), said so
    projected: tuple[str, ...] = ()


def _train_size(config: dict) -> tuple[int, int]:
    return plan.train_images(config), plan.IMAGE_SIZE[config["dataset"]["name"]]


def _seed_groups(config: dict, device: str) -> list[list[int]]:
    """The seed groups of a batch size when the grid runs on ``device``: ``seeds_per_job:
    auto`` resolves as it would there (:data:`plan.AUTO_SEEDS_PER_JOB` on CUDA, 1 on a CPU)."""
    size = config.get("train", {}).get("seeds_per_job", 1)
    device_config = {**config, "device": device}
    if size == "auto" and device == "cpu":
        device_config["train"] = {**config.get("train", {}), "seeds_per_job": 1}
    return plan.seed_groups(device_config)


def rates_for(key: tuple[str, str, int, int], seeds: int) -> dict[int, float]:
    """The :data:`RATES` of (device, model, width, image size) for a job of ``seeds`` seeds:
    the largest measured group of at most ``seeds``, else the smallest measured; {} if the
    model was not measured on that device."""
    measured = sorted(k[-1] for k in RATES if k[:-1] == key)
    if not measured:
        return {}
    fits = [k for k in measured if k <= seeds]
    return RATES[(*key, fits[-1] if fits else measured[0])]


def rate_at(rates: dict[int, float], batch: int) -> tuple[float | None, str]:
    """Images/s at ``batch`` from the rates measured at other batch sizes, and how it was
    had: "" where measured; between two measured batch sizes, interpolated in log rate
    against log batch; beyond them, the nearest measured one's (larger batches run faster,
    so a larger batch is priced at the rate of the largest measured: no more than it costs).
    None with no rates."""
    if batch in rates:
        return rates[batch], ""
    if not rates:
        return None, ""
    below = [b for b in rates if b < batch]
    above = [b for b in rates if b > batch]
    if below and above:
        lo, hi = max(below), min(above)
        t = np.log(batch / lo) / np.log(hi / lo)
        rate = float(np.exp((1 - t) * np.log(rates[lo]) + t * np.log(rates[hi])))
        return rate, f"batch {batch} interpolated between {lo} and {hi}"
    nearest = max(below) if below else min(above)
    return rates[nearest], f"batch {batch} at batch {nearest}'s rate"


#: The Snakefile's ``localrules``: they run beside Snakemake (on a cluster's login node),
#: never as cluster jobs (a test holds this to the Snakefile).
LOCAL_RULES = ("prepare_data", "aggregate", "plots")


def jobs_per_rule(config: dict, device: str) -> dict[str, int]:
    """Jobs per rule a fresh run of ``config`` plans on ``device`` (as the job table of
    ``snakemake -n`` counts them, less ``all``): training, evaluation, λ̂ and perturbation
    jobs one per seed group and piece (``train.seeds_per_job``), divergence and perturbation
    comparisons one per batch size and schedule, and the per-experiment jobs."""
    grid = config["grid"]
    groups = len(grid["batch_sizes"]) * len(_seed_groups(config, device))  # (batch, group)
    per_schedule = len(grid["batch_sizes"]) * len(grid["lr_schedules"])
    jobs = {"prepare_data": 2,  # the train and test splits
            "train_trunk": groups * len(plan.trunk_epochs(config)),
            "train_branch": groups * len(plan.branches(config))}
    if plan.reference_epochs(config):  # the never-blurred run's continuation
        jobs["train_reference"] = groups * len(plan.reference_epochs(config))
    jobs["evaluate"] = groups
    if config["llc"]["enabled"]:
        jobs["llc"] = groups * len(plan.llc_pieces(config))  # one per training file
        if config["llc"].get("descent", False):
            jobs["llc_descent"] = jobs["llc"]
    if config["divergence"]["enabled"]:
        jobs["divergence"] = per_schedule
    if _perturbing(config):
        jobs["perturb"] = groups * len(plan.perturbation_jobs(config))
        jobs["perturbation_divergence"] = per_schedule
    return {**jobs, "aggregate": 1, "plots": 1}


def requested_minutes(config: dict, device: str) -> dict[str, float]:
    """Minutes of time limit the cluster jobs of each rule ask for in all, at their first
    attempt, as the rules compute them: ``runtime.minutes_base`` per job plus
    ``minutes_per_epoch`` per seed-epoch trained (``minutes_per_llc_checkpoint``,
    ``minutes_per_descent_checkpoint`` per seed-checkpoint of λ̂), or the rule's fixed
    limit (:data:`plan.FIXED_MINUTES`) per job; local rules ask for none. The rules round
    each job's limit down to whole minutes (at least 1): with fractional ``runtime.*`` values
    this sum is a few per cent above theirs."""
    rt, jobs = config["runtime"], jobs_per_rule(config, device)
    grid = config["grid"]
    estimates = _llc_estimates(config) * len(grid["seeds"]) * len(grid["batch_sizes"])
    work = {"train_trunk": plan.trunk_end(config) * len(grid["seeds"])
            * len(grid["batch_sizes"]) * rt["minutes_per_epoch"],
            "train_branch": len(plan.branches(config)) * config["epochs_after_switch"]
            * len(grid["seeds"]) * len(grid["batch_sizes"]) * rt["minutes_per_epoch"],
            "llc": estimates * rt["minutes_per_llc_checkpoint"],
            "llc_descent": estimates * rt["minutes_per_descent_checkpoint"],
            "perturb": perturbation_epochs(config) * rt["minutes_per_epoch"]}
    if plan.reference_epochs(config):  # the never-blurred run's continuation
        work["train_reference"] = ((plan.reference_end(config) - plan.run_end(config, 0))
                                   * len(grid["seeds"]) * len(grid["batch_sizes"])
                                   * rt["minutes_per_epoch"])
    return {rule: n * plan.FIXED_MINUTES[rule] if rule in plan.FIXED_MINUTES
            else n * rt["minutes_base"] + work[rule]
            for rule, n in jobs.items() if rule not in LOCAL_RULES}


def _perturbing(config: dict) -> bool:
    return bool(config.get("perturbation", {}).get("enabled", False))


def perturbation_epochs(config: dict) -> int:
    """Epochs of SGD the perturbation experiment trains, all seeds together: per seed and
    perturbation job, the replay to the perturbation epoch, the twin and its copies (0 when
    ``perturbation.enabled`` is off)."""
    if not _perturbing(config):
        return 0
    per_seed = sum(plan.perturbation_job_epochs(config, r, k, e)
                   for r, k, e in plan.perturbation_jobs(config))
    return per_seed * len(config["grid"]["batch_sizes"]) * len(config["grid"]["seeds"])


def _llc_estimates(config: dict) -> int:
    """λ̂ estimates per (batch size, seed): trunk checkpoints and those of the branches λ̂ is
    asked for."""
    if not config["llc"]["enabled"]:
        return 0
    return sum(len(plan.piece_llc_epochs(config, p)) for p in plan.llc_pieces(config))


def grid_cost(config: dict, device: str) -> Cost:
    """The cost of ``config``'s grid on the reference ``device`` ("cpu" or "cuda")."""
    grid, model = config["grid"], config["model"]
    n, size = _train_size(config)
    cell_epochs = plan.epochs_trained(config, True) // (len(grid["batch_sizes"])
                                                        * len(grid["seeds"]))
    pert_epochs = perturbation_epochs(config) // (len(grid["batch_sizes"]) * len(grid["seeds"]))
    llc = config["llc"]
    steps = (llc["burn_in"] + llc["draws"]) * llc.get("loss_every", 1)
    key = (device, model["name"], model["width"], size)
    groups = [len(g) for g in _seed_groups(config, device)]
    group_rates = [rates_for(key, k) for k in groups]
    one_seed = rates_for(key, 1)  # λ̂ and the perturbation replays: one seed at a time
    # per batch size (the same for each: epochs and estimates do not depend on it)
    cell_images = cell_epochs * n * len(grid["seeds"])
    perturbed = pert_epochs * n * len(grid["seeds"])
    llc_n = min(llc.get("samples") or n, n)  # the images λ̂'s sampler sees
    sgld = (_llc_estimates(config) * len(grid["seeds"]) * llc["chains"] * steps
            * min(llc["batch_size"], llc_n))
    if llc.get("descent", False):  # the same steps, each a full-batch pass over λ̂'s data
        sgld += _llc_estimates(config) * len(grid["seeds"]) * steps * llc_n
    if llc.get("sampler", "sgld") == "sgld":  # the stability check (llc_sharpness)
        checked = min(llc.get("stability_samples", STABILITY_SAMPLES) or llc_n, llc_n)
        noise = (CURVATURE_BATCHES * min(llc.get("batch_size") or 0, llc_n)
                 * HESSIAN_PRODUCT_PASSES)  # none for full-batch chains
        sgld += _llc_estimates(config) * len(grid["seeds"]) * (STABILITY_PASSES * checked
                                                               + noise)
    seconds, images, llc_images, pert_images, missing = 0.0, 0.0, 0.0, 0.0, []
    projected: dict[str, None] = {}  # how each unmeasured rate was had, once each, in order
    for b in grid["batch_sizes"]:
        images += cell_images
        llc_images += sgld
        pert_images += perturbed
        one, how = rate_at(one_seed, b)
        read = [rate_at(rates, b) for rates in group_rates]
        trained = [rate for rate, _ in read]
        projected.update(dict.fromkeys(h for h in (how, *(h for _, h in read)) if h))
        if one and all(trained):
            seconds += sum(cell_epochs * n * k / r for k, r in zip(groups, trained, strict=True))
            seconds += (sgld + perturbed) / one
        else:
            missing.append(f"{model['name']} w{model['width']} {size}px batch {b}")
    rules = jobs_per_rule(config, device)
    jobs = sum(rules.values())
    total = None
    if not missing:
        total = (seconds + jobs * JOB_OVERHEAD_S[device]) / PARALLEL_JOBS[device]
    return Cost(plan.epochs_trained(config, True), images, llc_images, jobs, total,
                tuple(missing), perturbation_epochs(config), pert_images, rules,
                tuple(projected))


def describe(cost: Cost, device: str) -> str:
    """One line: the time on the reference device, or what was not measured."""
    where = {"cpu": "a 2-core AMD EPYC VM (a job per core)",
             "cuda": "one NVIDIA H200 (seeds stacked, graphed)"}[device]
    if cost.seconds is None:
        return f"{device}: not measured for {', '.join(cost.missing)}"
    minutes = cost.seconds / 60
    when = f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    read = f"; projected: {', '.join(cost.projected)}" if cost.projected else ""
    cores = PARALLEL_JOBS[device]
    hours = cost.seconds * cores / 3600
    core_time = (f"; {hours:.2g} core-hours" if hours < 10 else f"; {hours:.0f} core-hours")
    core_time = (f"{core_time}, shared by as many cores as jobs can run at once"
                 if device == "cpu" else "")
    return f"{device}: ~{when} on {where} ({cost.jobs} jobs{read}{core_time})"


__all__ = ["RATES", "Cost", "describe", "grid_cost", "jobs_per_rule", "perturbation_epochs",
           "rate_at", "requested_minutes"]
