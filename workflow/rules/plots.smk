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
        description=os.path.join(workflow.basedir, "workflow/report/workflow.rst"),
    log:
        f"{LOGS}/plots.log",
    script:
        "../../scripts/plots.py"
