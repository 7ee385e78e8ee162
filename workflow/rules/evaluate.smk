rule evaluate:
    input:
        data=TRAIN_DATA,
        test_data=TEST_DATA,
        pieces=get_cell_pieces,
    output:
        CELL_METRICS,
    params:
        training=TRAINING,
        evaluate=config["evaluate"],
        grid={k: GRID[k] for k in ("switch_epochs", "lr_schedules")},
        device=config["device"],
    threads: THREADS
    log:
        f"{LOGS}/evaluate/bs{{batch_size}}_seed{{seed}}.log",
    script:
        "../../scripts/evaluate.py"
