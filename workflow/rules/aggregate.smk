rule aggregate:
    input:
        unpack(lambda w: get_cube_inputs()),
    output:
        cube=CUBE,
        summary=report(
            SUMMARY, caption="../report/summary.rst", category="Critical period"
        ),
        config=report(CONFIG_RECORD, caption="../report/config.rst", category="Configuration"),
    params:
        grid=GRID,
        epochs_after_switch=config["epochs_after_switch"],
        training=TRAINING,
        analysis=config["analysis"],
        config_yaml=config_yaml(),
    log:
        f"{LOGS}/aggregate.log",
    script:
        "../../scripts/aggregate.py"
