rule llc:
    input:
        data=TRAIN_DATA,
        pieces=get_piece_files,
    output:
        PIECE_LLC,
    params:
        training=TRAINING,
        llc=LLC_SAMPLER,
        epochs=get_llc_epochs,
        device=config["device"],
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(llc_job_checkpoints, "minutes_per_llc_checkpoint"),
    log:
        f"{LOGS}/llc/bs{{batch_size}}/{{group}}/{{piece}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/llc.py"
