# One job per seed group and trajectory piece: the job trains every seed of its group
# (one seed, or several stacked: train.seeds_per_job) and writes one file holding them all.
rule train_trunk:
    input:
        data=TRAIN_DATA,
        start=get_trunk_start,
    output:
        TRUNK,
    params:
        training=TRAINING,
        seeds=get_seeds,
        end_epoch=get_segment_end,
        checkpoint_epochs=get_trunk_checkpoints,
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(trunk_job_epochs, "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_{{group}}_trunk_e{{epoch}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/train.py"


rule train_branch:
    input:
        data=TRAIN_DATA,
        start=get_branch_start,
    output:
        BRANCH,
    params:
        training=TRAINING,
        seeds=get_seeds,
        end_epoch=get_branch_end,
        checkpoint_epochs=get_branch_checkpoints,
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(branch_job_epochs, "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_{{group}}_{{lr_schedule}}_switch{{switch_epoch}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/train.py"


# The never-blurred run continued past its end, in segments, as the sharp reference that λ̂
# and the divergences need up to the last epoch any run reaches (plan.reference_epochs).
rule train_reference:
    input:
        data=TRAIN_DATA,
        start=get_reference_start,
    output:
        REFERENCE,
    wildcard_constraints:
        lr_schedule="continue",
        switch_epoch="0",
    params:
        training=TRAINING,
        seeds=get_seeds,
        end_epoch=get_segment_end,
        checkpoint_epochs=get_reference_checkpoints,
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(reference_job_epochs, "minutes_per_epoch"),
    log:
        f"{LOGS}/train/bs{{batch_size}}_{{group}}_{{lr_schedule}}_switch{{switch_epoch}}_e{{epoch}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/train.py"
