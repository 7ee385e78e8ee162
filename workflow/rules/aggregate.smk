rule aggregate:
    input:
        unpack(get_cube_inputs),
    output:
        cube=CUBE,
        summary=report(
            SUMMARY, caption="../report/summary.rst", category="1 Critical period",
            labels={"figure": "1c critical-period table (CSV)"},
        ),
        config=report(CONFIG_RECORD, caption="../report/config.rst", category="5 Configuration",
                      labels={"figure": "5 configuration (YAML)"}),
    params:
        grid=GRID,
        epochs_after_switch=config["epochs_after_switch"],
        training=TRAINING,
        analysis=config["analysis"],
        config_sha256=config_record.digest(config_record.cube_record(config)),
    log:
        f"{LOGS}/aggregate.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/aggregate.py"
