"""Stage train_trunk / train_branch: train one trajectory piece (resumable)."""

import sys

from critperiods.checkpoints import config_hash
from critperiods.data import load_prepared
from critperiods.stage import setup
from critperiods.training import NEVER, Preempted, TrainConfig
from critperiods.trajectories import PieceSpec, run_piece

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the retry resumes from the saved state

sm = snakemake  # noqa: F821 - injected by Snakemake
device = setup(sm)
w = sm.wildcards
switch_epoch = int(w["switch_epoch"]) if "switch_epoch" in w.keys() else NEVER  # noqa: SIM118
spec = PieceSpec(
    batch_size=int(w["batch_size"]), seed=int(w["seed"]), switch_epoch=switch_epoch,
    end_epoch=int(sm.params.get("end_epoch", w.get("epoch", 0))),
    checkpoint_epochs=frozenset(sm.params.checkpoint_epochs),
)
try:
    run_piece(
        spec, TrainConfig.from_params(sm.params.training), config_hash(sm.params.training),
        load_prepared(sm.input.data, device), sm.input.start or None, sm.output[0], device,
    )
except Preempted as stop:
    print(f"preempted: {stop}; state saved, the retry resumes from it", file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
