# One job per split. The params carry the data's identity (raw files' MD5 sums, subset,
# blur), not its location: the script reads dataset.root from the config, so pointing it at
# another folder with the same files reruns nothing (get_data_identity in common.smk).
rule prepare_data:
    output:
        DATA,
    params:
        data=get_data_identity,
    log:
        f"{LOGS}/prepare_data_{{split}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/prepare_data.py"
