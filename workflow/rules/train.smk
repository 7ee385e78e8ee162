# One job per trajectory piece and seed. With train.seeds_per_job > 1 the first seed
# of a group trains the whole group stacked and hands its siblings their results
# (their jobs wait for it: see get_group_first and critperiods.pipeline.trajectories).
rule train_trunk:
    input:
        data=TRAIN_DATA,
        start=get_trunk_starts,
        first=get_group_first(TRUNK),
    output:
        TRUNK,
    params:
        training=TRAINING,
        checkpoint_epochs=lambda w: plan.trunk_segment_checkpoints(config, int(w.epoch)),
        group=lambda w: plan.seed_group(config, int(w.seed)),
        group_outputs=group_paths(TRUNK),
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=1,
        runtime=runtime_minutes(lambda w: config["trunk_stride"] * group_size(w),
                                "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_seed{{seed}}_trunk_e{{epoch}}.log",
    script:
        "../../scripts/train.py"


rule train_branch:
    input:
        data=TRAIN_DATA,
        start=group_paths(TRUNK.replace("{epoch}", "{switch_epoch}")),
        first=get_group_first(BRANCH),
    output:
        BRANCH,
    params:
        training=TRAINING,
        checkpoint_epochs=lambda w: plan.branch_checkpoints(config, int(w.switch_epoch)),
        end_epoch=lambda w: plan.branch_end(config, int(w.switch_epoch)),
        group=lambda w: plan.seed_group(config, int(w.seed)),
        group_outputs=group_paths(BRANCH),
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=1,
        runtime=runtime_minutes(lambda w: group_size(w) * (
            plan.branch_end(config, int(w.switch_epoch)) - int(w.switch_epoch)),
                                "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_seed{{seed}}_{{lr_schedule}}_switch{{switch_epoch}}.log",
    script:
        "../../scripts/train.py"
