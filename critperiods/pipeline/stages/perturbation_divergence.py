"""Stage perturbation_divergence: every perturbed copy of one batch size and schedule vs its
twin, with early rates and growth-law fits (:mod:`critperiods.measure.perturbation_divergence`).
"""

from __future__ import annotations

from typing import Any

import xarray as xr
from tqdm import tqdm

from critperiods.measure.divergence import PairComparer, bn_data_from, probe_from_data
from critperiods.measure.perturbation_divergence import compare_group, growth_dataset
from critperiods.pipeline.checkpoints import config_hash
from critperiods.pipeline.files import write_netcdf
from critperiods.pipeline.layout import parse_perturbed
from critperiods.pipeline.perturbations import load_group
from critperiods.pipeline.provenance import piece_attrs, recorded
from critperiods.pipeline.stages import setup
from critperiods.pipeline.stages.divergence import divergence_config
from critperiods.train.data import PreparedData, load_prepared
from critperiods.train.training import TrainConfig, model_for


def compare_groups(paths: list[str], expected_hash: str, cfg: TrainConfig, data: PreparedData,
                   params: dict, device: Any = "cpu", progress: bool = True) -> xr.Dataset:
    """Every copy in the group files ``paths`` vs its twin, on dims ``(switch_epoch, seed,
    perturb_epoch, epsilon, replicate, …)``, with early rates and growth-law fits; barriers at
    each run's end epoch unless ``divergence.barrier_epochs`` is set."""
    config = divergence_config(params)
    needs_bn = "barrier" in config.metrics
    comparer = PairComparer(lambda: model_for(cfg, data, device), probe_from_data(data, config),
                            bn_data_from(data, config) if needs_bn else None, config, {})
    parts, identity = [], {}
    for path in tqdm(sorted(paths), desc="perturbation", disable=not progress):
        key = parse_perturbed(path)
        payload = load_group(path, expected_hash)
        identity = payload["identity"]
        for run in payload["members"]:
            end = max(int(c["epoch"]) for c in run["twin"])
            barriers = set(config.barrier_epochs) if config.barrier_epochs is not None else {end}
            ds = compare_group(run, comparer, data, barriers, config.matching_iterations)
            parts.append(ds.expand_dims(switch_epoch=[key.switch_epoch], seed=[int(run["seed"])],
                                        perturb_epoch=[key.perturb_epoch]))
    out = xr.merge(parts, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")
    out = out.transpose("switch_epoch", "seed", "perturb_epoch", "epsilon", "replicate", ...)
    out = out.merge(growth_dataset(out))
    out.attrs.update(perturbation_kind=identity.get("kind", ""),
                     perturbation_scope=identity.get("scope", ""),
                     perturbation_seed=int(identity.get("seed_of_perturbation", 0)),
                     perturbation_forward_passes=comparer.forward_passes)
    return out


def perturbation_divergence(output: str, groups: list[str], train_data: str, test_data: str, *,
                            training: dict, params: dict, code: str,
                            stage: str = "perturbation_divergence", device: Any = "cpu",
                            progress: bool = True) -> None:
    """Compare the copies of every group file with their twins and write the result, with the
    provenance of the comparison and of the groups it read."""
    data = load_prepared(train_data, test_data, device)
    result = compare_groups(groups, config_hash(training), TrainConfig.from_params(training),
                            data, params, device, progress)
    perturbed = recorded(groups)
    result.attrs.update(piece_attrs(stage, code, data.fingerprints, device=device),
                        provenance_perturb_code=" ".join(perturbed["code"]),
                        provenance_perturb_device="; ".join(perturbed["device"]))
    write_netcdf(result, output)


def run(sm: Any) -> None:
    device = setup(sm, threads=sm.config["train"]["threads"])
    perturbation_divergence(sm.output[0], list(sm.input.groups), sm.input.data,
                            sm.input.test_data, training=sm.params.training,
                            params=sm.params.divergence, code=sm.params.code, stage=sm.rule,
                            device=device)
