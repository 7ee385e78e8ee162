rule prepare_data:
    output:
        DATA,
    params:
        dataset=config["dataset"],
    log:
        f"{LOGS}/prepare_data.log",
    script:
        "../../scripts/prepare_data.py"
