rule train_trunk:
    input:
        data=DATA,
        start=get_trunk_start,
    output:
        TRUNK,
    params:
        training=TRAINING,
        checkpoint_epochs=lambda w: plan.trunk_segment_checkpoints(config, int(w.epoch)),
        device=config["device"],
        speed={k: config["train"][k] for k in ("fast_path", "compile", "deterministic")},
    threads: THREADS
    resources:
        gpu=1,
        runtime=runtime_minutes(lambda w: config["trunk_stride"], "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_seed{{seed}}_trunk_e{{epoch}}.log",
    script:
        "../../scripts/train.py"


rule train_branch:
    input:
        data=DATA,
        start=TRUNK.replace("{epoch}", "{switch_epoch}"),
    output:
        BRANCH,
    params:
        training=TRAINING,
        checkpoint_epochs=lambda w: plan.branch_checkpoints(config, int(w.switch_epoch)),
        end_epoch=lambda w: plan.run_end(config, int(w.switch_epoch)),
        device=config["device"],
        speed={k: config["train"][k] for k in ("fast_path", "compile", "deterministic")},
    threads: THREADS
    resources:
        gpu=1,
        runtime=runtime_minutes(lambda w: config["epochs_after_switch"], "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_seed{{seed}}_switch{{switch_epoch}}.log",
    script:
        "../../scripts/train.py"
