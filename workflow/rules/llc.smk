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


# llc.descent: the chains' descent at the same checkpoints, with the same settings; a rule
# of its own, so that switching it on reruns no λ̂ (docs/llc.md)
rule llc_descent:
    input:
        data=TRAIN_DATA,
        pieces=get_piece_files,
    output:
        PIECE_DESCENT,
    params:
        training=TRAINING,
        llc=DESCENT_SAMPLER,
        epochs=get_llc_epochs,
        device=config["device"],
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(llc_job_checkpoints, "minutes_per_descent_checkpoint"),
    log:
        f"{LOGS}/llc_descent/bs{{batch_size}}/{{group}}/{{piece}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/llc_descent.py"
