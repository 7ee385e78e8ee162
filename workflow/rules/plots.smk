rule plots:
    input:
        CUBE,
    output:
        **{
            name: report(path, caption=f"../report/{name}.rst", category="Figures")
            for name, path in PLOT_FILES.items()
        },
    params:
        plots=config["plots"],
    log:
        f"{LOGS}/plots.log",
    script:
        "../../scripts/plots.py"
