rule llc:
    input:
        data=TRAIN_DATA,
        pieces=get_piece_files,
    output:
        f"{PIECE}.llc.nc",
    params:
        training=TRAINING,
        llc=LLC_SAMPLER,
        epochs=get_llc_epochs,
        device=config["device"],
    threads: THREADS
    resources:
        gpu=1,
        runtime=runtime_minutes(lambda w: len(get_llc_epochs(w)), "minutes_per_llc_checkpoint"),
    log:
        f"{LOGS}/llc/{{run}}/{{piece}}.log",
    script:
        "../../scripts/llc.py"
