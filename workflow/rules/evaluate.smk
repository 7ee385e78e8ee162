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
        # asks for no GPU (a CPU job on a cluster): a GPU only where one is visible, so that
        # `device: cuda`, meant for the GPU rules, never fails it on a CPU node
        device="cpu" if config["device"] == "cpu" else "auto",
    threads: THREADS
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(60),
    log:
        f"{LOGS}/evaluate/bs{{batch_size}}_{{group}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/evaluate.py"
