rule evaluate:
    input:
        data=TRAIN_DATA,
        test_data=TEST_DATA,
        pieces=get_group_pieces,
    output:
        GROUP_METRICS,
    params:
        training=TRAINING,
        evaluate=config["evaluate"],
        grid={k: GRID[k] for k in ("switch_epochs", "lr_schedules")},
        device=config["device"],
    threads: THREADS
    resources:
        # a GPU job like training: at CIFAR-10 scale a group has hundreds of checkpoints,
        # each evaluated on some 20,000 images, hours on a CPU node
        gpu=GPUS,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(plan.FIXED_MINUTES["evaluate"]),
    log:
        f"{LOGS}/evaluate/bs{{batch_size}}_{{group}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/evaluate.py"
