"""Stage train_trunk / train_branch: train one trajectory piece (resumable).

With ``train.seeds_per_job > 1`` the job trains its whole seed group stacked (or
finds its piece already trained by the group's first job); see
``critperiods.pipeline.trajectories.run_group``.
"""

import sys

from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.stage import setup
from critperiods.pipeline.trajectories import PieceSpec, run_group
from critperiods.train.data import load_prepared
from critperiods.train.training import NEVER, FastPath, Preempted, TrainConfig

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the retry resumes from the saved state

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
w = sm.wildcards
branch = "switch_epoch" in w.keys()  # noqa: SIM118 - Wildcards has no __contains__
switch_epoch = int(w["switch_epoch"]) if branch else NEVER
lr_schedule = w["lr_schedule"] if branch else None
group = [int(s) for s in sm.params.group]
specs = [
    PieceSpec(
        batch_size=int(w["batch_size"]), seed=seed, switch_epoch=switch_epoch,
        end_epoch=int(sm.params.get("end_epoch", w.get("epoch", 0))),
        checkpoint_epochs=frozenset(sm.params.checkpoint_epochs), lr_schedule=lr_schedule,
    )
    for seed in group
]
start = sm.input.start
starts = ([start] if isinstance(start, str) else list(start)) or [None] * len(group)
cfg = TrainConfig.from_params(sm.params.training, lr_schedule or "continue")
data = load_prepared(sm.input.data, device=device)
try:
    run_group(
        specs, cfg, config_hash(sm.params.training), data, starts, sm.params.group_outputs,
        own=group.index(int(w["seed"])), device=device,
        fast=FastPath.from_params(sm.params.speed, device, cfg.model),
        provenance={"code": sm.params.code, "data": data.fingerprints},
    )
except Preempted as stop:
    print(f"preempted: {stop}; state saved, the retry resumes from it", file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
