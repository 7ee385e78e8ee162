# The toy_landscapes study (study: toy_landscapes): SGD on landscapes of known degeneracy.
# One job per landscape, then the cube, then the figures; logic in critperiods.toy.
from critperiods.toy import plan as toy_plan
from critperiods.toy.figures import FIGURE_LABELS

TOY = config["toy"]
with exit_on_config_error(CONFIG_FILES):  # one line naming the key and its file
    toy_plan.check_study_chosen(config, CONFIG_FILES)  # toy: set, but another study chosen
    if config["study"] == "toy_landscapes":  # the other studies never read the toy section
        toy_plan.check_toy_config(TOY)
TOY_PIECE = os.path.join(RESULTS, "landscapes", "{landscape}.nc")
TOY_CUBE = f"{RESULTS}/toy_cube.nc"
TOY_SUMMARY = f"{RESULTS}/toy_summary.csv"
TOY_PLOTS = {name: f"{PLOTS}/{name}.png" for name in FIGURE_LABELS}
TOY_LANDING = f"{RESULTS}/report/toy_landing.rst"  # the report's first page
TOY_OUTPUTS = [TOY_CUBE, TOY_SUMMARY, *TOY_PLOTS.values(), TOY_LANDING]  # the study's targets


localrules:
    toy_cube,
    toy_plots,


wildcard_constraints:
    landscape=r"line_k\d+|(sum|product)_k\d+-\d+",


rule toy_landscape:
    output:
        TOY_PIECE,
    params:
        toy=toy_plan.job_params(TOY),
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    log:
        f"{LOGS}/toy/{{landscape}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/toy_landscape.py"


rule toy_cube:
    input:
        get_toy_pieces,
    output:
        cube=TOY_CUBE,
        summary=report(TOY_SUMMARY, caption="../report/toy_summary.rst",
                       category="Toy landscapes", labels={"figure": "T0 summary table (CSV)"}),
    params:
        config_sha256=config_record.digest(config_record.toy_record(config)),
        max_endpoint_bias=TOY["llc"]["max_endpoint_bias"],
        max_rhat=config["analysis"]["llc_max_rhat"],
        max_trend_z=config["analysis"]["llc_max_trend_z"],
    log:
        f"{LOGS}/toy/cube.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/toy_cube.py"


rule toy_plots:
    input:
        TOY_CUBE,
    output:
        **{
            name: report(path, caption=f"../report/{name}.rst", category="Toy landscapes",
                         labels={"figure": FIGURE_LABELS[name]})
            for name, path in TOY_PLOTS.items()
        },
        landing=TOY_LANDING,
    params:
        dpi=config["plots"]["dpi"],
    log:
        f"{LOGS}/toy/plots.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/toy_plots.py"
