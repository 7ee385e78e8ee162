"""The rules' conda environment (`--sdm conda`) and the profiles agree with the package.

Static checks of files, no Snakemake run: `make lint` runs `snakemake --lint`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
# what runs in the process that starts Snakemake, never inside a job (jsonschema: the
# Snakefile's config check, critperiods.pipeline.config_file, which no stage imports)
NOT_IN_JOBS = {"snakemake", "snakemake-executor-plugin-slurm", "jsonschema"}
CONDA_NAMES = {"matplotlib-base": "matplotlib"}  # conda-forge's headless matplotlib


def rules() -> dict[str, tuple[Path, str]]:
    """``{rule: (its file, its body)}`` of every rule that runs a script."""
    found = {}
    for smk in RULE_FILES:
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(),
                                     re.M):
            if "script:" in body:
                found[name] = (smk, body)
    return found


def requirement_name(spec: str) -> str:
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower()
    return CONDA_NAMES.get(name, name)


def normalised(spec: str) -> str:
    """A requirement without spaces, its name in pyproject's spelling."""
    spec = spec.replace(" ", "")
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)
    return requirement_name(name) + spec[len(name):]


def env_files() -> set[Path]:
    envs = set()
    for name, (smk, body) in rules().items():
        m = re.search(r"conda:\s*\"([^\"]+)\"", body)
        assert m, f"rule {name} ({smk.name}) has no conda env"
        envs.add((smk.parent / m.group(1)).resolve())
    return envs


def test_every_script_rule_names_a_conda_env_that_exists():
    assert len(rules()) >= 10
    for env in env_files():
        assert env.is_file(), env
        assert env.parent == ROOT / "workflow/envs", env


def test_the_conda_env_pins_every_runtime_dependency_as_pyproject_does():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(d): normalised(d) for d in project["dependencies"]
              if requirement_name(d) not in NOT_IN_JOBS}
    for path in env_files():
        deps = yaml.safe_load(path.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict))
        # conda's single "=" pins a version prefix, like pip's "=="
        listed = [d.replace("=", "==") if re.fullmatch(r"[\w\-]+=[\d.]+", d) else d
                  for d in deps if isinstance(d, str)] + pip
        got = {requirement_name(d): normalised(d) for d in listed}
        python = got.pop("python")
        got.pop("pip")
        assert got == wanted, path
        minimum = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"].replace(" ", ""))
        version = re.fullmatch(r"python==(\d+)\.(\d+)", python)
        assert minimum and version, (project["requires-python"], python)
        assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups())), python


def test_site_profile_leaves_job_needs_to_the_rules_and_the_workflow_profile_sets_no_resources():
    """Snakemake merges profiles key by key with the workflow profile winning, so resource
    keys there would drop a site profile's; the site profile names only where jobs go."""
    workflow_profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert not {"set-resources", "default-resources", "resources"} & set(workflow_profile)
    site = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert site["slurm-requeue"] is True
    assert set(site["default-resources"]) == {"slurm_account", "slurm_partition"}
    gpu_rules = {name for name, (_, body) in rules().items() if re.search(r"\bgpu=GPUS\b", body)}
    assert gpu_rules == {"train_trunk", "train_branch", "train_reference", "evaluate", "llc",
                         "llc_descent", "divergence", "perturb", "perturbation_divergence"}
    assert set(site["set-resources"]) == gpu_rules
    assert all(set(r) == {"slurm_partition"} for r in site["set-resources"].values())
