rule plots:
    input:
        CUBE,
    output:
        **{
            name: report(path, caption=f"../report/{name}.rst",
                         category=REPORT_FIGURES[name][0],
                         labels={"figure": REPORT_FIGURES[name][1]})
            for name, path in PLOT_FILES.items()
        },
        landing=LANDING,
    params:
        plots=config["plots"],
        description=report_description(),
    log:
        f"{LOGS}/plots.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/plots.py"
