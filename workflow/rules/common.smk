# Paths and input functions shared by all rules. The logic behind them lives in
# critperiods.pipeline.plan so that tests and the DAG agree.
import os

import yaml

from critperiods.pipeline import plan
from critperiods.train.dataset_files import raw_identity
from critperiods.pipeline.fingerprint import Fingerprints
from critperiods.results.report_page import FIGURES

with open(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")) as f:
    SCHEMA = yaml.safe_load(f)
plan.check_config(config, SCHEMA)
_ordered = plan.in_schema_order(dict(config), SCHEMA)  # params print the same
config.clear()
config.update(_ordered)

RESULTS = f"{config['results_dir']}/{config['experiment']}"
DATA = f"{RESULTS}/data/{{split}}.pt"  # one file per split: training never reads the test set
TRAIN_DATA = DATA.format(split="train")
TEST_DATA = DATA.format(split="test")
RUN = os.path.join(RESULTS, "runs", "bs{batch_size}", "seed{seed}")
TRUNK = os.path.join(RUN, "trunk", "e{epoch}.pt")
BRANCH = os.path.join(RUN, "{lr_schedule}", "switch{switch_epoch}.pt")
PIECE = os.path.join(RESULTS, "runs", "{run}", "{piece}")  # a piece's files: PIECE.<kind>.nc
CELL_METRICS = os.path.join(RUN, "metrics.nc")  # evaluation of every run of a cell
DIVERGENCE = os.path.join(RESULTS, "divergence", "bs{batch_size}_{lr_schedule}.nc")
CUBE = f"{RESULTS}/cube.nc"
SUMMARY = f"{RESULTS}/critical_period_summary.csv"
CONFIG_RECORD = f"{RESULTS}/config.yaml"
LANDING = f"{RESULTS}/report/landing.rst"  # the report's first page, written by plots
PLOTS = f"{RESULTS}/plots"
LOGS = f"{RESULTS}/logs"

GRID = config["grid"]
TRAINING = plan.training_params(config)  # what shapes trajectories; checkpoints carry its hash
THREADS = config["train"]["threads"]
SPEED = {k: config["train"][k] for k in ("fast_path", "compile", "deterministic")}
# What an llc job's estimates depend on. Which pieces and checkpoints get one (enabled,
# switch_epochs, every, first_epoch, epochs) reaches a job through the DAG and its `epochs`
# param: changing the selection reruns only the pieces whose selection changes.
LLC_SAMPLER = {k: v for k, v in config["llc"].items()
               if k not in ("enabled", "switch_epochs", "every", "first_epoch", "epochs")}


wildcard_constraints:
    batch_size=r"\d+",
    seed=r"\d+",
    epoch=r"\d+",
    switch_epoch=r"\d+",
    lr_schedule="|".join(plan.LR_SCHEDULES),
    run=r"bs\d+/seed\d+",
    piece=rf"trunk|({'|'.join(plan.LR_SCHEDULES)})/switch\d+",
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


def runs():
    """(batch_size, seed) cells: each has one trunk."""
    return [(b, s) for b in GRID["batch_sizes"] for s in GRID["seeds"]]


def llc_pieces():
    """Units of λ̂ estimation: the whole trunk of a cell, and each branch λ̂ is asked for
    (``llc.switch_epochs``)."""
    return [f"{RESULTS}/runs/bs{b}/seed{s}/{piece}" for b, s in runs()
            for piece in ["trunk"] + [f"{r}/switch{k}" for r, k in plan.llc_branches(config)]]


def get_cell_pieces(wildcards):
    """Checkpoint files of a cell's runs: the trunk up to the largest switch, every branch."""
    base = RUN.format(**wildcards)
    last = max(GRID["switch_epochs"])
    return ([f"{base}/trunk/e{e}.pt" for e in plan.trunk_epochs(config) if e <= last]
            + [f"{base}/{r}/switch{k}.pt" for r, k in plan.branches(config)])


def get_piece_files(wildcards):
    """Checkpoint files behind a piece: every trunk segment, or the one branch file."""
    base = f"{RESULTS}/runs/{wildcards.run}"
    if wildcards.piece == "trunk":
        return [f"{base}/trunk/e{e}.pt" for e in plan.trunk_epochs(config)]
    return [f"{base}/{wildcards.piece}.pt"]


def group_size(wildcards):
    """How many seeds the job of ``wildcards.seed`` trains (train.seeds_per_job)."""
    return len(plan.seed_group(config, int(wildcards.seed)))


def group_paths(pattern):
    """An input function: ``pattern`` for every seed of the wildcards' seed group."""

    def paths(wildcards):
        fields = {**wildcards, "seed": "{seed}"}
        return [pattern.format(**fields).format(seed=s)
                for s in plan.seed_group(config, int(wildcards.seed))]

    return paths


def get_group_first(pattern):
    """An input function: the group's first seed's output, for the group's other jobs
    (that job trains all of them); nothing for the first seed itself."""

    def first(wildcards):
        leader = plan.seed_group(config, int(wildcards.seed))[0]
        if leader == int(wildcards.seed):
            return []
        return pattern.format(**{**wildcards, "seed": leader})

    return first


def get_trunk_starts(wildcards):
    """A trunk segment continues the previous one of every seed in its group; e0 starts
    from the initial state."""
    epoch = int(wildcards.epoch)
    if epoch == 0:
        return []
    previous = TRUNK.replace("{epoch}", str(epoch - config["trunk_stride"]))
    return group_paths(previous)(wildcards)


def get_piece_epochs(wildcards):
    """The checkpoint epochs a piece holds."""
    if wildcards.piece == "trunk":
        return [e for e in plan.checkpoint_epochs(config) if e <= plan.trunk_end(config)]
    return plan.branch_checkpoints(config, int(wildcards.piece.rsplit("switch", 1)[1]))


def get_llc_epochs(wildcards):
    return plan.llc_epochs(config, get_piece_epochs(wildcards), wildcards.piece == "trunk")


def get_divergence_inputs(wildcards):
    """Every piece of every seed of one batch size and schedule: trunks (the blurred
    reference) and that schedule's branches (the never-blurred one is shared)."""
    return [
        f"{RESULTS}/runs/bs{wildcards.batch_size}/seed{s}/{piece}.pt"
        for s in GRID["seeds"]
        for piece in [f"trunk/e{e}" for e in plan.trunk_epochs(config)]
        + [f"{plan.piece_schedule(wildcards.lr_schedule, k)}/switch{k}"
           for k in GRID["switch_epochs"]]
    ]


def get_cube_inputs():
    metrics = [CELL_METRICS.format(batch_size=b, seed=s) for b, s in runs()]
    llc = [f"{p}.llc.nc" for p in llc_pieces()] if config["llc"]["enabled"] else []
    divergence = (
        [DIVERGENCE.format(batch_size=b, lr_schedule=r) for b in GRID["batch_sizes"]
         for r in GRID["lr_schedules"]]
        if config["divergence"]["enabled"]
        else []
    )
    return {"metrics": metrics, "llc": llc, "divergence": divergence}


def config_yaml():
    """The config recorded in the cube: everything but plot options (plots rerun alone),
    cluster time limits (which never change a result), the toy study's keys, and where the
    data are read from (the data's fingerprints are in the cube's provenance instead: moving
    the data folder reruns nothing)."""
    recorded = {k: v for k, v in config.items() if k not in ("plots", "runtime", "study", "toy")}
    recorded["dataset"] = {k: v for k, v in config["dataset"].items() if k != "root"}
    return yaml.safe_dump(recorded, sort_keys=False)


def runtime_minutes(units, per_unit):
    """A resource function: minutes for ``units(wildcards)`` units of work, × attempt.

    Cluster time limits follow the config (epochs per job, checkpoints per job), and a
    retry after a time-limit kill asks for proportionally more.
    """
    rt = config["runtime"]

    def runtime(wildcards, attempt):
        return attempt * int(rt["minutes_base"] + units(wildcards) * rt[per_unit])

    return runtime


def get_final_outputs():
    if config["study"] == "toy_landscapes":
        return TOY_OUTPUTS  # workflow/rules/toy.smk
    return [CUBE, SUMMARY, *PLOT_FILES.values(), LANDING]


def report_landing_page():
    """The report's first page: the answer page of the last run, else the static description
    (``snakemake --report`` before any run)."""
    landing = os.path.abspath(LANDING)
    return landing if os.path.exists(landing) else "workflow/report/workflow.rst"


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


CODE = Fingerprints(workflow.basedir)


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
