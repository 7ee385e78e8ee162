rule divergence:
    input:
        data=TRAIN_DATA,
        test_data=TEST_DATA,
        pieces=get_divergence_inputs,
    output:
        DIVERGENCE,
    params:
        training=TRAINING,
        divergence=config["divergence"],
        switch_epochs=GRID["switch_epochs"],
        seeds=GRID["seeds"],
        device=config["device"],
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=holding_inputs(16000),
        runtime=per_attempt(plan.FIXED_MINUTES["divergence"]),
    log:
        f"{LOGS}/divergence/bs{{batch_size}}_{{lr_schedule}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/divergence.py"
