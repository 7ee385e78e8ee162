# critperiods: critical learning periods through singular learning theory.
# This file is the table of contents; each stage lives in workflow/rules/.
import os
import sys

from snakemake.utils import min_version, validate

from critperiods.pipeline.config_file import (
    check_against_schema,
    check_layers,
    exit_on_config_error,
    read_config_file,
)
from critperiods.pipeline.failures import say_why
from critperiods.pipeline.plan import check_moved_keys

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


# A bad config ends the run here with one line naming the key, the reason and its file.
CONFIG_FILES = [os.path.join(workflow.basedir, "config.yaml"), *workflow.overwrite_configfiles]
with exit_on_config_error(CONFIG_FILES):
    for _file in CONFIG_FILES:  # each file on its own: a key given twice, a binary file
        read_config_file(_file)
    check_layers(CONFIG_FILES)  # an overlay given without the files it is laid over
    check_moved_keys(config)  # a key that moved: say where (the schema would say "unknown")
    check_against_schema(  # the key and its file, not the whole schema
        config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"),
        CONFIG_FILES)
validate(config, "workflow/schemas/config.schema.yaml")  # fills in the defaults


# Cheap steps run where snakemake runs, never as cluster jobs.
localrules:
    all,
    prepare_data,
    aggregate,
    plots,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/llc.smk"
include: "workflow/rules/divergence.smk"
include: "workflow/rules/perturbation.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/toy.smk"


report: report_landing_page()  # the answer page of the last run (plots writes it)


if note := report_config_note():  # captions read this config, figures the run's
    print(note, file=sys.stderr)


rule all:
    input:
        get_final_outputs(),
    default_target: True


# Every rule that runs a script gets its code fingerprint as a param (common.smk).
add_code_params(workflow.rules)


# A failed run ends with each failed job's reason, read from its log, not only the log's path.
onerror:
    if why := say_why(log):
        print(why, file=sys.stderr)
