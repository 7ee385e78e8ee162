"""The experiment plan: which trunk segments, branches and checkpoints a config implies.

The Snakefile's input functions and tests both use these, so the DAG and the
documented layout can never disagree. Validation has one path: the JSON schema checks
every key on its own (type, range, allowed values, non-empty and repeat-free lists);
:func:`check_config` then checks only what the schema cannot express: rules across keys,
and integers written as floats.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# The schedules and where a run's branch is stored belong to the results' layout, which every
# stage imports; they live there so that editing this module (config checks, the plan)
# reruns no stage. Re-exported: the Snakefile and the cost model use them as plan.*.
from critperiods.pipeline.layout import (  # noqa: F401
    LR_SCHEDULES,
    piece_coordinates,
    piece_name,
    piece_schedule,
)
from critperiods.train.dataset_files import (
    CIFAR10_FOLDER,
    IDX_FILES,
    PUBLISHED_MD5,
    SPLITS,
    SYSTEM_FASHION_MNIST,
    idx_candidates,
    raw_files,
    raw_identity,
)


class ConfigError(ValueError):
    """A config value that is well-typed but inconsistent; the message names the key.
    ``located`` is true once the message says which config file sets the key."""

    located = False



#: Keys that moved or went, with the message that says what to write instead (checked
#: before the schema, whose "unknown key" error would not say it). Each message starts with
#: ``<key>: `` so that the config-error line adds the file that sets it.
MOVED_KEYS = {
    ("optimizer", "lr_after_switch"): (
        "optimizer.lr_after_switch: replaced by the sweep axis grid.lr_schedules; write "
        "grid: {lr_schedules: [continue]} (Achille et al.'s protocol), [restart], or "
        "[continue, restart] (both, sharing the blurred trunks)"),
    ("analysis", "bootstrap_samples"): (
        "analysis.bootstrap_samples: removed; the intervals of the end and of the "
        "exponents are now a jackknife over seeds, which has no resample count; delete the "
        "line (see CHANGELOG.md)"),
}


#: Side length (pixels) of each dataset's images.
IMAGE_SIZE = {"fashion_mnist": 28, "mnist": 28, "cifar10": 32}
TRAIN_IMAGES = {"fashion_mnist": 60000, "mnist": 60000, "cifar10": 50000}
TEST_IMAGES = {"fashion_mnist": 10000, "mnist": 10000, "cifar10": 10000}


def train_images(config: dict) -> int:
    """Images in the training split a run sees: ``dataset.train_subset``, at most the
    dataset's size."""
    total = TRAIN_IMAGES[config["dataset"]["name"]]
    subset = config["dataset"].get("train_subset")
    return min(subset, total) if subset else total


def check_moved_keys(config: dict) -> None:
    """Refuse keys that moved elsewhere, naming the new key (run before schema validation)."""
    for (section, key), message in MOVED_KEYS.items():
        if isinstance(config.get(section), dict) and key in config[section]:
            raise ConfigError(message)


def check_config(config: dict, schema: dict) -> None:
    """Checks that the JSON schema (already validated against, which checks each key on its
    own) cannot express, run before any job is planned: whole numbers, and consistency across
    keys. Each error names the key."""
    check_whole_numbers(config, schema)
    grid = config["grid"]
    stride = config["trunk_stride"]
    bad = [s for s in grid["switch_epochs"] if s % stride]
    if bad:
        raise ConfigError(
            f"grid.switch_epochs: {bad} not a multiple of trunk_stride={stride} "
            "(branches start from trunk states saved every trunk_stride epochs)"
        )
    dataset = config["dataset"]
    size = IMAGE_SIZE.get(dataset["name"])
    if size is not None and dataset["blur_size"] >= size:
        raise ConfigError(
            f"dataset.blur_size: {dataset['blur_size']} is not smaller than the "
            f"{size}×{size} images of {dataset['name']}, so the blur would do nothing and no "
            "run would have a deficit; use a blur_size below the image size (e.g. 4 or 8)")
    for key, images in (("train_subset", TRAIN_IMAGES), ("test_subset", TEST_IMAGES)):
        asked, has = dataset.get(key), images.get(dataset["name"])
        if asked and has and asked > has:  # it would be clamped, and recorded as asked
            raise ConfigError(
                f"dataset.{key}: {asked} is more than the {has} images of {dataset['name']}'s "
                f"{key.split('_')[0]} split; use at most {has}, or null for all of them")
    check_dataset_files(dataset)
    train_subset = dataset.get("train_subset")
    too_big = [b for b in grid["batch_sizes"] if train_subset and b > train_subset]
    if too_big:
        raise ConfigError(
            f"grid.batch_sizes: {too_big} larger than dataset.train_subset={train_subset}"
        )
    asked = set(config.get("llc", {}).get("switch_epochs") or ())
    extra = sorted(asked - set(grid["switch_epochs"]))
    if extra:
        raise ConfigError(f"llc.switch_epochs: {extra} are not in grid.switch_epochs="
                          f"{grid['switch_epochs']}, so there is no such branch to estimate on")
    llc = config.get("llc", {})
    if llc.get("descent") and llc.get("sampler", "sgld") != "sgld":
        raise ConfigError(f"llc.descent: the descent is that of plain SGLD, and llc.sampler is "
                          f"{llc['sampler']!r}, which preconditions its drift by the gradients "
                          "its noise led to; set llc.sampler: sgld or llc.descent: false")
    check_perturbation(config)
    horizon = max(last_epoch(config), trunk_end(config))
    late = sorted(e for e in config["checkpoints"].get("epochs") or () if e > horizon)
    if late:
        raise ConfigError(f"checkpoints.epochs: {late} after epoch {horizon}, the last any run "
                          "(or reference) is trained to, so no checkpoint would be kept there")
    kept = set(checkpoint_epochs(config))
    llc = config.get("llc", {})
    if llc.get("enabled") and llc.get("epochs") is None and not llc_epochs(config, kept):
        raise ConfigError(
            f"llc.first_epoch: {llc.get('first_epoch')} with llc.every={llc['every']} selects no "
            f"checkpoint (they are kept at {sorted(kept)}), so no λ̂ would be estimated; lower "
            "it, or set llc.enabled: false")
    for section, field in (("llc", "epochs"), ("divergence", "barrier_epochs")):
        missing = sorted(set(config.get(section, {}).get(field) or ()) - kept)
        if missing:
            raise ConfigError(
                f"{section}.{field}: {missing} are not checkpoint epochs, so nothing could be "
                "computed "
                f"there; checkpoints are kept at {sorted(kept)} (see checkpoints.every and "
                "checkpoints.epochs)"
            )


def in_schema_order(value: object, schema: dict) -> object:
    """``value`` with every mapping's keys in the order the schema lists them, and every
    whole number where the schema asks for a (real) number as a float.

    Snakemake compares a rule's params as text, so the same settings must always print the
    same: a default stated in a config file (which lands where the file puts it) must not
    look like a change from the default the schema filled in (which lands last), nor
    ``gamma: 100`` like a change from ``gamma: 100.0``.
    """
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        known = [k for k in props if k in value]
        return {k: in_schema_order(value[k], props.get(k, {}))
                for k in known + [k for k in value if k not in props]}
    if isinstance(value, list) and _real(schema.get("items", {})):
        return [in_schema_order(v, schema["items"]) for v in value]
    if _real(schema) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _real(schema: dict) -> bool:
    """Whether ``schema`` asks for a number that need not be whole."""
    types = schema.get("type", ())
    types = [types] if isinstance(types, str) else types
    return "number" in types and "integer" not in types


def check_whole_numbers(value: object, schema: dict, key: str = "") -> None:
    """Refuse a float where ``schema`` asks for an integer.

    JSON Schema counts ``4.0`` as an integer, but epochs, seeds and sizes end up in file
    names and ``range``: ``switch4.0.pt`` would never be found.
    """
    types = schema.get("type", ())
    types = [types] if isinstance(types, str) else types
    if "integer" in types and "number" not in types and isinstance(value, float):
        raise ConfigError(f"{key}: must be a whole number written without a decimal point, "
                          f"got {value!r}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check_whole_numbers(value[name], sub, f"{key}.{name}" if key else name)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            check_whole_numbers(item, schema["items"], key)


#: ``seeds_per_job: auto`` on CUDA, per model: blocks of this many seed values. Measured on
#: an H200 (docs/performance.md): 16 stacked small_cnn w8 train 2.18× as many images/s as
#: one; All-CNN-C w96 fills the GPU alone (5 stacked: 0.81× at batch 128, 1.20× at batch 32),
#: so it and ResNet-18 train one seed per job.
AUTO_SEEDS_PER_JOB = {"small_cnn": 16}


def cuda_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to CUDA, without importing torch: a GPU in
    ``/proc/driver/nvidia/gpus`` and ``CUDA_VISIBLE_DEVICES`` not set to hide every GPU."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


#: The time limits (minutes, first attempt; each retry asks for that many more) of the rules
#: whose work grows with nothing a config sets per job; the others' grow with their epochs
#: or checkpoints (``runtime.*``). The rules and ``cost`` read them from here.
FIXED_MINUTES = {"evaluate": 60, "divergence": 120, "perturbation_divergence": 120}


#: Where the DAG is built, the workflow records here whether that machine shows a GPU
#: (``"1"`` or ``"0"``, :func:`pin_dag_gpu`). A cluster job reads the workflow again on its
#: own node, whose GPU a login node may lack, and must group the seeds as the DAG did: with
#: the variable set (the SLURM executor exports the environment to its jobs),
#: ``seeds_per_job: auto`` reads it instead of probing the node.
DAG_GPU_ENV = "CRITPERIODS_DAG_GPU"


def pin_dag_gpu() -> None:
    """Record, once per process tree, whether the machine building the DAG shows a GPU
    (:data:`DAG_GPU_ENV`); a value already set (a job of that DAG) is kept."""
    os.environ.setdefault(DAG_GPU_ENV, "1" if cuda_visible() else "0")


def seeds_per_job(config: dict) -> int:
    """``train.seeds_per_job`` as a number, resolved when the DAG is built: ``auto`` is
    ``AUTO_SEEDS_PER_JOB`` of the model when training runs on CUDA (``device: cuda``, or
    ``device: auto`` where the DAG is built on a machine that shows a GPU:
    :data:`DAG_GPU_ENV`, else :func:`cuda_visible`), else 1. On a cluster whose login node
    has no GPU, write ``device: cuda`` to stack the seeds."""
    size = config.get("train", {}).get("seeds_per_job", 1)
    if size != "auto":
        return int(size)
    device = config.get("device", "auto")
    pinned = os.environ.get(DAG_GPU_ENV)
    gpu = pinned == "1" if pinned in ("0", "1") else cuda_visible()
    on_cuda = device == "cuda" or (device == "auto" and gpu)
    return AUTO_SEEDS_PER_JOB.get(config["model"]["name"], 1) if on_cuda else 1


def seed_group(config: dict, seed: int) -> list[int]:
    """The seeds trained in one job with ``seed`` (``train.seeds_per_job`` = S, see
    :func:`seeds_per_job`): the seeds of ``grid.seeds`` in the same block of S seed values
    (``seed // S``), sorted; the first of them is the job that trains the group.

    Blocks of values, not positions in the list, so reordering ``grid.seeds`` or adding
    a seed regroups nothing except the block the new seed joins. A seed outside the grid
    (a target named on the command line) trains alone.
    """
    size = seeds_per_job(config)
    seeds = config["grid"]["seeds"]
    if seed not in seeds:
        return [seed]
    return sorted(s for s in seeds if s // size == seed // size)


def branches(config: dict) -> list[tuple[str, int]]:
    """The distinct branches ``(stored schedule, switch epoch)`` the grid trains."""
    grid = config["grid"]
    return sorted({(piece_schedule(r, k), k) for r in grid["lr_schedules"]
                   for k in grid["switch_epochs"]}, key=lambda b: (b[1], b[0]))


def llc_branches(config: dict) -> list[tuple[str, int]]:
    """The branches λ̂ is estimated on: those of ``llc.switch_epochs`` (default: all)."""
    wanted = config["llc"].get("switch_epochs")
    return [(r, k) for r, k in branches(config) if wanted is None or k in wanted]


def seed_groups(config: dict) -> list[list[int]]:
    """The seed groups of the grid, each trained by one job per piece: the seeds of
    ``grid.seeds`` in blocks of :func:`seeds_per_job` seed values (``seed // S``), sorted."""
    size = seeds_per_job(config)
    blocks: dict[int, list[int]] = {}
    for s in sorted(config["grid"]["seeds"]):
        blocks.setdefault(s // size, []).append(s)
    return [blocks[k] for k in sorted(blocks)]


def run_end(config: dict, switch_epoch: int) -> int:
    """Last epoch of the run with this switch epoch."""
    return switch_epoch + config["epochs_after_switch"]


def reference_end(config: dict) -> int:
    """Last epoch the never-blurred run, the sharp reference, is trained to: the last epoch
    any run reaches when λ̂ or divergences are computed (as the always-blurred trunk is), so
    that its λ̂ and the distance of every run to it cover all epochs; else its run's end. Its
    final accuracy is still read at its run's end."""
    end = run_end(config, 0)
    if config.get("llc", {}).get("enabled", False) or config.get("divergence", {}).get(
            "enabled", False):
        end = max(end, last_epoch(config))
    return end


def reference_epochs(config: dict) -> list[int]:
    """Ends of the segments that continue the never-blurred run past its run's end, up to
    :func:`reference_end` (none when the grid has no switch epoch 0): the multiples of
    ``trunk_stride`` in between, then the reference's end.

    The run itself is its branch file, which ends at its run's end like every branch; the
    segments are chained after it as the trunk's are, so a later last switch epoch adds
    segments (and retrains at most the last one, when it ended off the stride) instead of
    retraining the run from epoch 0.
    """
    if 0 not in config["grid"]["switch_epochs"]:
        return []
    start, end, stride = run_end(config, 0), reference_end(config), config["trunk_stride"]
    ends = [e for e in range(stride, end, stride) if e > start]
    return ends + [end] if end > start else []


def last_epoch(config: dict) -> int:
    """The last epoch any run reaches."""
    return run_end(config, max(config["grid"]["switch_epochs"]))


def trunk_end(config: dict) -> int:
    """Last epoch the blurred trunk is trained to (a multiple of ``trunk_stride``).

    Branches need it up to the largest switch epoch; the divergence stage also
    needs the always-blurred reference up to the last epoch any run reaches.
    """
    end = max(config["grid"]["switch_epochs"])
    if config.get("divergence", {}).get("enabled", False):
        stride = config["trunk_stride"]
        end = -(-last_epoch(config) // stride) * stride
    return end


def trunk_epochs(config: dict) -> list[int]:
    """Epochs at which the trunk saves its full state: 0, stride, …, trunk_end."""
    stride = config["trunk_stride"]
    return list(range(0, trunk_end(config) + 1, stride))


def checkpoint_epochs(config: dict) -> list[int]:
    """Every epoch that keeps weights: configured ones, switch epochs and run ends."""
    ck = config["checkpoints"]
    horizon = max(last_epoch(config), trunk_end(config))
    chosen = ck.get("epochs")
    base = set(chosen) if chosen is not None else set(range(0, horizon + 1, ck["every"]))
    runs = {e for s in config["grid"]["switch_epochs"] for e in (s, run_end(config, s))}
    return sorted(e for e in base | runs if e <= horizon)


def _within(epochs: Iterable[int], lo: int, hi: int) -> list[int]:
    """Epochs in the half-open interval (lo, hi] (lo = -1 includes 0)."""
    return [e for e in epochs if lo < e <= hi]


def trunk_segment_checkpoints(config: dict, end_epoch: int) -> list[int]:
    """Checkpoint epochs stored in trunk segment ``e{end_epoch}``."""
    lo = end_epoch - config["trunk_stride"] if end_epoch > 0 else -1
    return _within(checkpoint_epochs(config), lo, end_epoch)


def branch_checkpoints(config: dict, switch_epoch: int) -> list[int]:
    """Checkpoint epochs stored in branch ``switch{K}``: those in (K, its run's end]."""
    return _within(checkpoint_epochs(config), switch_epoch, run_end(config, switch_epoch))


def reference_segment_checkpoints(config: dict, end_epoch: int) -> list[int]:
    """Checkpoint epochs stored in the never-blurred run's segment ``e{end_epoch}``: those
    after the previous segment's end (or the run's end) up to ``end_epoch``."""
    return _within(checkpoint_epochs(config), reference_start(config, end_epoch)[1], end_epoch)


def reference_start(config: dict, end_epoch: int) -> tuple[str, int]:
    """The piece the never-blurred run's segment ``e{end_epoch}`` continues, and its end
    epoch: the previous segment, or the run's branch file for the first one."""
    before = [e for e in reference_epochs(config) if e < end_epoch]
    if before:
        return piece_name("continue", 0, before[-1]), before[-1]
    return piece_name("continue", 0), run_end(config, 0)


def training_pieces(config: dict, trunk_to: int | None = None,
                    lr_schedule: str | None = None) -> list[str]:
    """A seed group's training files, as pieces (:func:`~critperiods.pipeline.layout.piece_name`):
    the trunk's segments (those ending at or before ``trunk_to``, if given), every branch (or
    those of ``lr_schedule``'s runs, if given), and the never-blurred run's continuation."""
    trunk = [e for e in trunk_epochs(config) if trunk_to is None or e <= trunk_to]
    runs = branches(config) if lr_schedule is None else [
        (piece_schedule(lr_schedule, k), k) for k in config["grid"]["switch_epochs"]]
    return ([piece_name(None, None, e) for e in trunk]
            + [piece_name(r, k) for r, k in runs]
            + [piece_name("continue", 0, e) for e in reference_epochs(config)])


def piece_checkpoints(config: dict, piece: str) -> list[int]:
    """The checkpoint epochs a training file holds."""
    schedule, switch, epoch = piece_coordinates(piece)
    if switch is None:
        return trunk_segment_checkpoints(config, epoch)
    if epoch is None:
        return branch_checkpoints(config, switch)
    return reference_segment_checkpoints(config, epoch)


def piece_llc_epochs(config: dict, piece: str) -> list[int]:
    """The epochs at which λ̂ is estimated on a training file (:func:`llc_epochs`)."""
    return llc_epochs(config, piece_checkpoints(config, piece),
                      trunk=piece_coordinates(piece)[1] is None)


def llc_pieces(config: dict) -> list[str]:
    """The training files of a seed group that get a λ̂ file: every one that holds an epoch
    λ̂ is asked for, of the trunk and of the branches of ``llc.switch_epochs`` (the
    never-blurred run's continuation with its branch). One file each, so a new training
    file adds its estimates and leaves every other file's alone."""
    wanted = set(llc_branches(config))

    def asked(piece: str) -> bool:
        schedule, switch, _ = piece_coordinates(piece)
        return switch is None or (schedule, switch) in wanted

    return [p for p in training_pieces(config) if asked(p) and piece_llc_epochs(config, p)]


def llc_epochs(config: dict, epochs: Iterable[int], trunk: bool = False) -> list[int]:
    """The subset of ``epochs`` (a piece's checkpoints) at which λ̂ is estimated.

    The trunk's extension past the largest switch epoch (kept for divergences)
    belongs to no run, so λ̂ is not estimated there. With ``llc.every``, epochs before
    ``llc.first_epoch`` (and always epoch 0) are skipped: a network early in training is
    not near a minimum, so SGLD just descends and λ̂ is meaningless (negative); list
    them in ``llc.epochs`` to have them anyway.
    """
    llc = config["llc"]
    if trunk:
        epochs = [e for e in epochs if e <= max(config["grid"]["switch_epochs"])]
    if llc.get("epochs") is not None:
        return [e for e in epochs if e in set(llc["epochs"])]
    first = max(1, llc.get("first_epoch", 1))
    return [e for e in epochs if e >= first and e % llc["every"] == 0]


def epochs_trained(config: dict, shared: bool = True) -> int:
    """Epochs of SGD the grid costs, with trunk sharing or with every run from scratch."""
    grid = config["grid"]
    trunks = len(grid["batch_sizes"]) * len(grid["seeds"])  # one per (batch size, seed)
    if shared:
        extra = reference_end(config) - run_end(config, 0) if 0 in grid["switch_epochs"] else 0
        return trunks * (trunk_end(config) + extra
                         + len(branches(config)) * config["epochs_after_switch"])
    return trunks * len(grid["lr_schedules"]) * sum(run_end(config, s)
                                                    for s in grid["switch_epochs"])


def training_params(config: dict) -> dict:
    """The config slice that shapes trajectories (and so their hash). The learning-rate
    schedule after the switch is not in it: it is a grid axis, in a branch's path."""
    ds = config["dataset"]
    # model.init at its default is left out, so configs from before the key keep their hash
    model = {k: v for k, v in config["model"].items() if (k, v) != ("init", "kaiming")}
    return {
        "dataset": {k: ds[k] for k in ("name", "train_subset", "blur_size")},
        "model": model,
        "optimizer": dict(config["optimizer"]),
        "augmentation": config["augmentation"],
    }


#: The package of the architectures; :func:`critperiods.train.models.build_model` imports
#: ``<package>.<model.name>`` by that computed name (a test holds the two together).
MODELS_PACKAGE = "critperiods.train.models"


def modules_chosen_by_config(config: dict) -> dict[str, list[str]]:
    """The modules the stages import by a name the config computes, for the code
    fingerprints (:class:`critperiods.pipeline.fingerprint.Fingerprints` ``by_name``): the
    architecture ``model.name`` names, so that editing another one reruns nothing here."""
    return {MODELS_PACKAGE: [f"{MODELS_PACKAGE}.{config['model']['name']}"]}


# ---------------------------------------------------------------------------------------------
# Perturbations (perturbation: section; critperiods.train.perturbation)


def perturbation_end(config: dict) -> int:
    """The epoch every perturbed copy (and its twin) trains to: the last epoch any run
    reaches, so that perturbations of different runs at the same epoch are followed equally
    long (the never-blurred run is continued past its own end)."""
    return last_epoch(config)


def perturbed_switch_epochs(config: dict) -> list[int]:
    """The switch epochs of the runs perturbed (every schedule of the grid): those of
    ``perturbation.switch_epochs``, default the smallest and the largest of the grid."""
    asked = config["perturbation"].get("switch_epochs")
    grid = config["grid"]["switch_epochs"]
    return sorted(set(asked) if asked is not None else {min(grid), max(grid)})


def perturbation_epochs(config: dict) -> list[int]:
    """The perturbation epochs: ``perturbation.epochs``, default the grid's switch epochs."""
    asked = config["perturbation"].get("epochs")
    return sorted(asked if asked is not None else config["grid"]["switch_epochs"])


def perturbation_start(config: dict, lr_schedule: str, switch_epoch: int,
                       epoch: int) -> tuple[str, int]:
    """The piece whose complete training state the twin of run ``(lr_schedule, switch_epoch)``
    replays from to reach ``epoch`` (a path below the cell's run folder, without ``.pt``:
    :func:`~critperiods.pipeline.layout.piece_name`), and that state's epoch.

    Full states exist at trunk segment ends (multiples of ``trunk_stride``), at a branch's
    start (its switch epoch) and at its end, and at the ends of the never-blurred run's
    continuation (:func:`reference_epochs`); the latest one at or before ``epoch`` on the
    run's path is used, and the replay to ``epoch`` is exact by the determinism contract.
    """
    if epoch <= switch_epoch:
        start = epoch // config["trunk_stride"] * config["trunk_stride"]
        return piece_name(None, None, start), start
    states = [(switch_epoch, piece_name(None, None, switch_epoch)),
              (run_end(config, switch_epoch), piece_name(lr_schedule, switch_epoch))]
    if switch_epoch == 0:
        states += [(e, piece_name(lr_schedule, 0, e)) for e in reference_epochs(config)]
    start, piece = max(s for s in states if s[0] <= epoch)
    return piece, start


def perturbation_jobs(config: dict) -> list[tuple[str, int, int]]:
    """The perturbation jobs of one seed group: ``(stored schedule, switch epoch,
    perturbation epoch)`` for every perturbed run of every schedule and every perturbation
    epoch; the never-blurred run is perturbed once, under ``continue`` (:func:`piece_schedule`)."""
    return sorted({(piece_schedule(r, k), k, e) for r in config["grid"]["lr_schedules"]
                   for k in perturbed_switch_epochs(config) for e in perturbation_epochs(config)},
                  key=lambda job: (job[1], job[0], job[2]))


def perturbation_job_epochs(config: dict, lr_schedule: str, switch_epoch: int,
                            epoch: int) -> int:
    """Epochs of SGD one seed of a perturbation job trains: the replay from its start state
    (:func:`perturbation_start`) to ``epoch``, then the twin and each of its
    ``epsilons × replicates`` copies from ``epoch`` to :func:`perturbation_end`."""
    _, start = perturbation_start(config, lr_schedule, switch_epoch, epoch)
    pert = config["perturbation"]
    copies = len(pert["epsilons"]) * pert["replicates"]
    return epoch - start + (1 + copies) * (perturbation_end(config) - epoch)


def perturbation_checkpoints(config: dict, epoch: int) -> list[int]:
    """Epochs at which a copy perturbed at ``epoch`` and its twin are compared: the
    checkpoint epochs after it, and the end."""
    end = perturbation_end(config)
    return sorted({e for e in checkpoint_epochs(config) if epoch < e <= end} | {end})


def check_perturbation(config: dict) -> None:
    """Cross-key checks of the ``perturbation:`` section (when enabled)."""
    pert = config.get("perturbation", {})
    if not pert.get("enabled"):
        return
    asked = pert.get("switch_epochs")
    extra = sorted(set(asked or ()) - set(config["grid"]["switch_epochs"]))
    if extra:
        raise ConfigError(f"perturbation.switch_epochs: {extra} are not in grid.switch_epochs="
                          f"{config['grid']['switch_epochs']}, so there is no such run to perturb")
    for key in ("epochs", "epsilons", "switch_epochs"):
        if pert.get(key) == []:
            raise ConfigError(f"perturbation.{key}: empty; list at least one value"
                              + (" (or null: the smallest and the largest of "
                                 "grid.switch_epochs)" if key == "switch_epochs" else ""))
    end = perturbation_end(config)
    late = sorted(e for e in perturbation_epochs(config) if e >= end)
    if late:
        raise ConfigError(f"perturbation.epochs: {late} are not before epoch {end}, the last "
                          "epoch any run reaches, so a perturbed copy would not train at all")
    if pert.get("kind") == "batch_order":
        fractional = [x for x in pert["epsilons"] if float(x) != int(x)]
        if fractional:
            raise ConfigError(f"perturbation.epsilons: {fractional} with kind batch_order; "
                              "there an epsilon counts the pairs of batches swapped, a whole "
                              "number")
        largest = max(config["grid"]["batch_sizes"])
        full = train_images(config) // largest  # full batches of an epoch at that size
        too_many = [int(x) for x in pert["epsilons"] if 2 * int(x) > full]
        if too_many:
            raise ConfigError(f"perturbation.epsilons: {too_many} with kind batch_order; an "
                              f"epoch at batch size {largest} (grid.batch_sizes="
                              f"{config['grid']['batch_sizes']}) has {full} full batches, so at "
                              f"most {full // 2} disjoint pairs can be swapped")


def check_dataset_files(dataset: dict) -> None:
    """Refuse raw files found for ``dataset.name`` that are another dataset's: MNIST's and
    Fashion-MNIST's four files have the same names, so a folder of one would otherwise be read
    as the other. Known are the published files (their MD5 sums) and Debian's Fashion-MNIST
    package (its folder; it recompresses the files). Files known as no other dataset's (a
    copy of one's own) pass."""
    name, root = dataset["name"], dataset["root"]
    for split in SPLITS:
        files = raw_files(name, root, split)
        if files is None:
            continue
        folder = files[0].parent
        if name != "fashion_mnist" and folder.resolve() == SYSTEM_FASHION_MNIST.resolve():
            raise ConfigError(
                f"dataset.name: {name}, but {folder} is Debian's Fashion-MNIST package; set "
                f"dataset.root to the folder of {name}'s files, or dataset.name: fashion_mnist")
        sums = raw_identity(name, root, split)
        for other, published in PUBLISHED_MD5.items():
            theirs = {md5 for by_file in published.values() for md5 in by_file.values()}
            same = [f for f, md5 in sums.items() if md5 in theirs]
            if other != name and same:
                raise ConfigError(
                    f"dataset.name: {name}, but {folder} holds {other}'s files "
                    f"({', '.join(same)} have the published {other} files' MD5 sums); set "
                    f"dataset.root to the folder of {name}'s files, or dataset.name: {other}")


def data_download_note(config: dict, prepared: dict[str, str]) -> str | None:
    """One line for the user where a split's raw files are not on disk and its prepared file
    (``prepared[split]``) is not made yet, so ``prepare_data`` will download them with
    torchvision: which key to set and which folders were searched. None otherwise."""
    ds = config["dataset"]
    missing = [split for split, path in prepared.items()
               if not Path(path).exists() and raw_files(ds["name"], ds["root"], split) is None]
    if not missing:
        return None
    root = Path(ds["root"])
    searched = ([root / CIFAR10_FOLDER] if ds["name"] == "cifar10"
                else idx_candidates(ds["name"], root))
    unzipped = [folder / name.removesuffix(".gz") for folder in searched
                for name in IDX_FILES.values()
                if ds["name"] != "cifar10" and (folder / name.removesuffix(".gz")).is_file()]
    return (f"dataset.root: {ds['name']} ({', '.join(missing)}) is not in "
            f"{', '.join(map(str, searched))}; prepare_data will download it with torchvision, "
            "which needs the network. If the files are elsewhere, set dataset.root to their "
            "folder." + (f" {unzipped[0].parent} holds them uncompressed, which is not read: "
                         "gzip them (`gzip -k *-ubyte`)." if unzipped else ""))
