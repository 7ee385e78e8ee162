# The perturbation experiment (perturbation: section; docs/perturbations.md): one job per seed
# group, perturbed run and epoch trains the twins and their copies; one job per batch size and
# schedule compares every copy with its twin.
rule perturb:
    input:
        data=TRAIN_DATA,
        start=get_perturbation_start,
    output:
        PERTURBED,
    params:
        training=TRAINING,
        perturbation=PERTURBATION,
        seeds=get_seeds,
        end_epoch=plan.perturbation_end(config),
        checkpoint_epochs=get_perturbation_checkpoints,
        device=config["device"],
        speed=SPEED,
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=runtime_minutes(perturbation_job_epochs, "minutes_per_epoch"),
    log:
        f"{LOGS}/perturb/bs{{batch_size}}_{{group}}_{{lr_schedule}}_switch{{switch_epoch}}"
        "_e{perturb_epoch}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/perturb.py"


rule perturbation_divergence:
    input:
        data=TRAIN_DATA,
        test_data=TEST_DATA,
        groups=get_perturbation_groups,
    output:
        PERTURBATION_DIVERGENCE,
    params:
        training=TRAINING,
        divergence={k: v for k, v in config["divergence"].items() if k != "enabled"},
        device=config["device"],
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=per_attempt(16000),
        runtime=per_attempt(plan.FIXED_MINUTES["perturbation_divergence"]),
    log:
        f"{LOGS}/perturbation/bs{{batch_size}}_{{lr_schedule}}.log",
    conda:
        "../envs/critperiods.yaml"
    script:
        "../../scripts/perturbation_divergence.py"
