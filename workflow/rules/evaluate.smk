rule evaluate:
    input:
        data=DATA,
        pieces=get_piece_files,
    output:
        f"{PIECE}.metrics.nc",
    params:
        training=TRAINING,
        evaluate=config["evaluate"],
        device=config["device"],
    threads: THREADS
    log:
        f"{LOGS}/evaluate/{{run}}/{{piece}}.log",
    script:
        "../../scripts/evaluate.py"
