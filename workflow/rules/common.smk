# Paths and input functions shared by all rules. The logic behind them lives in
# critperiods.pipeline.plan so that tests and the DAG agree.
import os
import sys

import yaml

from critperiods.pipeline import config_record, layout, plan
from critperiods.pipeline.config_file import exit_on_config_error
from critperiods.train.dataset_files import raw_identity
from critperiods.pipeline.fingerprint import Fingerprints
from critperiods.results.figures import FIGURES

with open(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")) as f:
    SCHEMA = yaml.safe_load(f)
with exit_on_config_error(CONFIG_FILES):  # keys that disagree: one line, naming the file
    plan.check_config(config, SCHEMA)
_ordered = plan.in_schema_order(dict(config), SCHEMA)  # params print the same
config.clear()
config.update(_ordered)

RESULTS = f"{config['results_dir']}/{config['experiment']}"
DATA = f"{RESULTS}/data/{{split}}.pt"  # one file per split: training never reads the test set
TRAIN_DATA = DATA.format(split="train")
TEST_DATA = DATA.format(split="test")
if note := plan.data_download_note(config, {"train": TRAIN_DATA, "test": TEST_DATA}):
    print(note, file=sys.stderr)  # before the run, not as a traceback in a job's log
# Results of a seed group (critperiods.pipeline.layout: the one place that maps paths to
# coordinates): {group} is seed<S> or seeds<S>_<S>_…, one job and one file per group.
TRUNK = os.path.join(RESULTS, layout.TRUNK)
BRANCH = os.path.join(RESULTS, layout.BRANCH)
REFERENCE = os.path.join(RESULTS, layout.REFERENCE)
PIECE = os.path.join(RESULTS, layout.PIECE)
GROUP_METRICS = os.path.join(RESULTS, layout.METRICS)
PIECE_LLC = os.path.join(RESULTS, layout.LLC)
# beside the piece's λ̂ (llc.descent); a name of its own here, not in layout.py, which
# every stage imports
PIECE_DESCENT = f"{PIECE}.descent.nc"
DIVERGENCE = os.path.join(RESULTS, layout.DIVERGENCE)
CUBE = f"{RESULTS}/cube.nc"
SUMMARY = f"{RESULTS}/critical_period_summary.csv"
CONFIG_RECORD = f"{RESULTS}/config.yaml"
LANDING = f"{RESULTS}/report/landing.rst"  # the report's first page, written by plots
PLOTS = f"{RESULTS}/plots"
LOGS = f"{RESULTS}/logs"

GRID = config["grid"]
# seeds_per_job: auto groups the seeds as the machine building the DAG decides, also in a
# cluster job that reads this file again on a node with a GPU the login node lacks
plan.pin_dag_gpu()
GROUPS = [layout.group_label(g) for g in plan.seed_groups(config)]
TRAINING = plan.training_params(config)  # what shapes trajectories; checkpoints carry its hash
THREADS = config["train"]["threads"]
SPEED = {k: config["train"][k] for k in ("fast_path", "compile", "deterministic")}
# GPUs a training, λ̂, divergence or perturbation job asks for: none with device: cpu (on a
# cluster, a CPU-only run would otherwise queue for GPUs it does not use), else one.
GPUS = 0 if config["device"] == "cpu" else 1
# What an llc job's estimates depend on. Which pieces and checkpoints get one (enabled,
# switch_epochs, every, first_epoch, epochs) reaches a job through the DAG and its `epochs`
# param: changing the selection reruns only the pieces whose selection changes.
LLC_SAMPLER = {k: v for k, v in config["llc"].items()
               if k not in ("enabled", "switch_epochs", "every", "first_epoch", "epochs",
                            "descent")}
# What the chains' descent (llc.descent) depends on: the drift of one chain, on the full
# batch and without noise, so neither the number of chains, their minibatch, their seed nor
# the stability check's images
DESCENT_SAMPLER = {k: v for k, v in LLC_SAMPLER.items()
                   if k not in ("chains", "batch_size", "seed", "stability_samples")}


wildcard_constraints:
    batch_size=r"\d+",
    group=layout.GROUP_PATTERN,
    epoch=r"\d+",
    switch_epoch=r"\d+",
    lr_schedule="|".join(plan.LR_SCHEDULES),
    piece=layout.PIECE_PATTERN,
    split=r"train|test",


def get_data_identity(wildcards):
    """What a prepared split is made of, as the params of its job: the dataset, the subset
    size, the blur and the raw files' MD5 sums — never ``dataset.root``, so moving the data
    folder reruns nothing, while other files (or other subsets) rerun the split and what
    reads it. The script finds the files through ``dataset.root`` in the config."""
    ds = config["dataset"]
    split = wildcards.split
    return {"name": ds["name"], "split": split, "subset": ds[f"{split}_subset"],
            "blur_size": ds["blur_size"], "raw": raw_identity(ds["name"], ds["root"], split)}


def group_dirs():
    """(batch size, seed group label) of every training group of the grid."""
    return [(b, g) for b in GRID["batch_sizes"] for g in GROUPS]


def get_seeds(wildcards):
    """The seeds of the wildcards' group, trained together by one job."""
    return list(layout.group_seeds(wildcards.group))


def training_file(batch_size, group, piece):
    """The training file of one of a seed group's pieces (layout.piece_name)."""
    return PIECE.format(batch_size=batch_size, group=group, piece=piece) + ".pt"


def piece_file(wildcards, piece):
    """The training file of one of the wildcards' group's pieces."""
    return training_file(wildcards.batch_size, wildcards.group, piece)


def trunk_file(wildcards, epoch):
    return piece_file(wildcards, layout.piece_name(None, None, epoch))


def get_trunk_start(wildcards):
    """A trunk segment continues the previous one; e0 starts from the initial weights."""
    epoch = int(wildcards.epoch)
    return [] if epoch == 0 else trunk_file(wildcards, epoch - config["trunk_stride"])


def get_branch_start(wildcards):
    """A branch starts from the trunk's state at its switch epoch."""
    return trunk_file(wildcards, wildcards.switch_epoch)


def get_reference_start(wildcards):
    """A segment of the never-blurred run's continuation continues the previous one; the
    first continues the run's branch file."""
    piece, _ = plan.reference_start(config, int(wildcards.epoch))
    return piece_file(wildcards, piece)


def get_segment_end(wildcards):
    """A segment (of the trunk or the never-blurred run's continuation) ends at its epoch."""
    return int(wildcards.epoch)


def get_trunk_checkpoints(wildcards):
    return plan.trunk_segment_checkpoints(config, int(wildcards.epoch))


def get_branch_checkpoints(wildcards):
    return plan.branch_checkpoints(config, int(wildcards.switch_epoch))


def get_reference_checkpoints(wildcards):
    return plan.reference_segment_checkpoints(config, int(wildcards.epoch))


def get_branch_end(wildcards):
    return plan.run_end(config, int(wildcards.switch_epoch))


def trunk_job_epochs(wildcards):
    """Epochs × seeds a trunk segment job trains (for its time limit): a stride, none for
    ``e0``, the initial weights."""
    epochs = config["trunk_stride"] if int(wildcards.epoch) > 0 else 0
    return epochs * len(get_seeds(wildcards))


def branch_job_epochs(wildcards):
    """Epochs × seeds a branch job trains (for its time limit)."""
    return config["epochs_after_switch"] * len(get_seeds(wildcards))


def reference_job_epochs(wildcards):
    """Epochs × seeds a segment of the never-blurred run's continuation trains."""
    _, start = plan.reference_start(config, int(wildcards.epoch))
    return (int(wildcards.epoch) - start) * len(get_seeds(wildcards))


def get_group_pieces(wildcards):
    """Training files of a group's runs: the trunk up to the largest switch, every branch,
    the never-blurred run's continuation."""
    pieces = plan.training_pieces(config, trunk_to=max(GRID["switch_epochs"]))
    return [piece_file(wildcards, p) for p in pieces]


def get_piece_files(wildcards):
    """The training file of a piece."""
    return [piece_file(wildcards, wildcards.piece)]


def get_llc_epochs(wildcards):
    return plan.piece_llc_epochs(config, wildcards.piece)


def llc_job_checkpoints(wildcards):
    """Checkpoints × seeds an llc job estimates at (for its time limit)."""
    return len(get_llc_epochs(wildcards)) * len(get_seeds(wildcards))


def get_divergence_inputs(wildcards):
    """Every training file of every group of one batch size and schedule: trunks (the
    blurred reference), that schedule's branches (the never-blurred one is shared) and the
    never-blurred run's continuation (the sharp reference)."""
    pieces = plan.training_pieces(config, lr_schedule=wildcards.lr_schedule)
    return [training_file(wildcards.batch_size, g, p) for g in GROUPS for p in pieces]


def get_cube_inputs(wildcards):
    metrics = [GROUP_METRICS.format(batch_size=b, group=g) for b, g in group_dirs()]
    pieces = ([(b, g, p) for b, g in group_dirs() for p in plan.llc_pieces(config)]
              if config["llc"]["enabled"] else [])
    llc = [PIECE_LLC.format(batch_size=b, group=g, piece=p) for b, g, p in pieces]
    descent = ([PIECE_DESCENT.format(batch_size=b, group=g, piece=p) for b, g, p in pieces]
               if config["llc"]["descent"] else [])
    divergence = (
        [DIVERGENCE.format(batch_size=b, lr_schedule=r) for b in GRID["batch_sizes"]
         for r in GRID["lr_schedules"]]
        if config["divergence"]["enabled"]
        else []
    )
    return {"metrics": metrics, "llc": llc, "llc_descent": descent, "divergence": divergence,
            "perturbation": get_perturbation_outputs()}


def runtime_minutes(units, per_unit):
    """A resource function: minutes for ``units(wildcards)`` units of work, × attempt.

    Cluster time limits follow the config (epochs per job, checkpoints per job), and a
    retry after a time-limit kill asks for proportionally more.
    """
    rt = config["runtime"]

    def runtime(wildcards, attempt):
        # at least a minute: SLURM reads a limit of 0 as none asked, the partition's default
        return attempt * max(1, int(rt["minutes_base"] + units(wildcards) * rt[per_unit]))

    return runtime


def holding_inputs(least_mb):
    """A resource function: memory (MB) for a job that holds all its input files at once,
    1.5 times their size plus 4 GB, and at least ``least_mb``; × attempt. The divergence
    stage loads every checkpoint of its batch size and schedule: some 15 GB at CIFAR-10
    scale. Snakemake evaluates it when the inputs exist (``<TBD>`` in a dry run)."""

    def resource(wildcards, input, attempt):
        return attempt * max(least_mb, int(1.5 * input.size_mb) + 4000)

    return resource


def per_attempt(amount):
    """A resource function: ``amount`` on the first attempt, twice that on the first retry,
    and so on (memory in MB, minutes)."""

    def resource(wildcards, attempt):
        return amount * attempt

    return resource


def get_final_outputs():
    if config["study"] == "toy_landscapes":
        return TOY_OUTPUTS  # workflow/rules/toy.smk
    return [CUBE, SUMMARY, *PLOT_FILES.values(), LANDING]


def get_toy_pieces(wildcards):
    """The toy study's landscape files (workflow/rules/toy.smk), one per configured
    landscape: a function, so that only a toy run builds the landscapes (with PyTorch).
    The toy section is checked here too, for a toy file asked for by name in another study."""
    with exit_on_config_error(CONFIG_FILES):  # one line naming the key and its file
        toy_plan.check_toy_config(TOY)
    return toy_plan.piece_paths(TOY, TOY_PIECE)


def report_landing_page():
    """The report's first page: the answer page of the last run (the toy study's its own,
    workflow/rules/toy.smk), else the static description (``snakemake --report`` before any
    run)."""
    landing = os.path.abspath(TOY_LANDING if config["study"] == "toy_landscapes" else LANDING)
    return landing if os.path.exists(landing) else "workflow/report/workflow.rst"


def report_config_note():
    """For ``snakemake --report``: where the run's recorded config (``CONFIG_RECORD``, written
    by aggregate) differs from this one in a key that can change a result, a note naming
    those keys. The report shows the run's figures and tables but fills its captions from
    this config (a seed count, an interval level), so they would disagree unsaid."""
    asked = any(arg == "--report" or arg.startswith("--report=") for arg in sys.argv)
    if not asked or not os.path.exists(CONFIG_RECORD):
        return ""
    from critperiods.results.setup import differing_keys

    with open(CONFIG_RECORD) as f:
        recorded = yaml.safe_load(f) or {}
    changed = differing_keys([recorded, yaml.safe_load(config_record.cube_record(config))])
    if not changed:
        return ""
    return (f"critperiods: note: {RESULTS}/ was made with a config that differs from this one "
            f"in {', '.join(changed)}: the report shows that run's figures and tables, but its "
            "captions follow this config; run the workflow with this config first (make run), "
            "or build the report with the configs the run was made with")


def report_description():
    """The workflow's static description (workflow/report/workflow.rst), as text: the plots
    param holds its content, not its path, so a copy or move of the repository reruns
    nothing while an edit of the description reruns plots."""
    with open(os.path.join(workflow.basedir, "workflow/report/workflow.rst")) as f:
        return f.read()


REPORT_FIGURES = FIGURES  # file stem → (category, label), in reading order


PLOT_FILES = {
    "critical_period": f"{PLOTS}/critical_period.png",
    "critical_period_vs_temperature": f"{PLOTS}/critical_period_vs_temperature.png",
    "learning_curves": f"{PLOTS}/learning_curves.png",
}
if config["llc"]["enabled"]:
    PLOT_FILES["llc"] = f"{PLOTS}/llc.png"
    PLOT_FILES["llc_traces"] = f"{PLOTS}/llc_traces.png"
if config["divergence"]["enabled"]:
    PLOT_FILES["divergence"] = f"{PLOTS}/divergence.png"
    PLOT_FILES["divergence_final"] = f"{PLOTS}/divergence_final.png"
if config["perturbation"]["enabled"]:
    PLOT_FILES["perturbation"] = f"{PLOTS}/perturbation.png"
    PLOT_FILES["perturbation_growth"] = f"{PLOTS}/perturbation_growth.png"


# -- Perturbations (perturbation.smk; critperiods.pipeline.perturbations) ---------------------
# One job per seed group, perturbed run and perturbation epoch; one comparison per batch size
# and schedule (critperiods.pipeline.layout).
PERTURBED = os.path.join(RESULTS, layout.PERTURBED)
PERTURBATION_DIVERGENCE = os.path.join(RESULTS, layout.PERTURBATION)
# what a perturbation job does to its copies; the run and epoch are in its path
PERTURBATION = {k: v for k, v in config["perturbation"].items()
                if k not in ("enabled", "switch_epochs", "epochs")}


wildcard_constraints:
    perturb_epoch=r"\d+",


def get_perturbation_start(wildcards):
    """The trunk segment or branch whose complete state the twins replay from."""
    piece, _ = plan.perturbation_start(config, wildcards.lr_schedule,
                                       int(wildcards.switch_epoch), int(wildcards.perturb_epoch))
    run = layout.RUN_GROUP.format(batch_size=wildcards.batch_size, group=wildcards.group)
    return os.path.join(RESULTS, run, f"{piece}.pt")


def get_perturbation_checkpoints(wildcards):
    return plan.perturbation_checkpoints(config, int(wildcards.perturb_epoch))


def perturbation_job_epochs(wildcards):
    """Epochs a perturbation job trains (for its time limit): per seed of the group, the
    replay, then the twin and every copy."""
    per_seed = plan.perturbation_job_epochs(config, wildcards.lr_schedule,
                                            int(wildcards.switch_epoch),
                                            int(wildcards.perturb_epoch))
    return per_seed * len(get_seeds(wildcards))


def get_perturbation_groups(wildcards):
    """Every perturbation group file of one batch size and schedule (the never-blurred run's
    is stored under continue)."""
    return [
        PERTURBED.format(batch_size=wildcards.batch_size, group=g, switch_epoch=k,
                         perturb_epoch=e, lr_schedule=plan.piece_schedule(wildcards.lr_schedule, k))
        for g in GROUPS for k in plan.perturbed_switch_epochs(config)
        for e in plan.perturbation_epochs(config)
    ]


def get_perturbation_outputs():
    if not config["perturbation"]["enabled"]:
        return []
    return [PERTURBATION_DIVERGENCE.format(batch_size=b, lr_schedule=r)
            for b in GRID["batch_sizes"] for r in GRID["lr_schedules"]]


# The architecture model.name picks is imported by name: the fingerprints count it, not the others.
CODE = Fingerprints(workflow.basedir, by_name=plan.modules_chosen_by_config(config))


def add_code_params(all_rules):
    """Give each script-running rule a ``code`` param, the fingerprint of the script and
    of every critperiods module (and file such as max_pool2.c) it can import
    (critperiods.pipeline.fingerprint). The params trigger then reruns a rule when code it runs
    changes, and only then: comments, docstrings and layout do not count (nor, with the
    workflow profile profiles/default, the script's modification time). Called once all
    rules are defined, so that no rule can be left without one."""
    for each in all_rules:
        if each.script:
            script = os.path.normpath(os.path.join(os.path.dirname(each.snakefile), each.script))
            each.set_params(code=CODE.stage(script))
