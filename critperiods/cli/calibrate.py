"""``calibrate-llc``: sweep the SGLD step size at one checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from critperiods.cli.common import IMAGE_TYPES, check_out_path, load_config


def calibrate_llc(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np
    import torch

    from critperiods.measure.llc.calibration import (
        calibrate,
        calibration_lines,
        default_step_sizes,
        plot_calibration,
    )
    from critperiods.pipeline.checkpoints import (
        CheckpointError,
        checkpoint_map,
        config_hash,
        load_piece,
        member,
    )
    from critperiods.pipeline.layout import parse_piece
    from critperiods.pipeline.llc_inputs import llc_config_from_params, llc_data
    from critperiods.pipeline.plan import training_params
    from critperiods.train.data import load_prepared
    from critperiods.train.training import TrainConfig, model_for

    check_out_path(args.out, "--out", "llc_calibration.png", IMAGE_TYPES)
    if Path(args.piece).suffix != ".pt":  # e.g. the piece's λ̂ file beside it
        raise SystemExit(f"critperiods: {args.piece}: not a checkpoint file (.pt, e.g. "
                         "results/<experiment>/runs/bs64/seeds0_1_2/trunk/e4.pt)")
    recorded = None if args.configfile else _recorded_config_of(args.piece)
    if recorded is not None:
        print(f"the config of {args.piece}'s experiment: {recorded} (as recorded by its run; "
              "--configfile to give another)")
    config = load_config([str(recorded)] if recorded is not None else args.configfile)
    # the piece's own run folder, wherever it was run from (snakemake -d puts it anywhere)
    results = (recorded.parent if recorded is not None
               else Path(config["results_dir"]) / config["experiment"])
    params = training_params(config)
    try:
        seeds = parse_piece(args.piece).seeds
        seed = seeds[0] if args.seed is None else args.seed
        ckpts = checkpoint_map(member(load_piece(args.piece, config_hash(params)), seed,
                                      args.piece))
    except (CheckpointError, ValueError) as err:
        hint = ("" if "belongs to training config" not in str(err) else
                " (give the configs of the piece's experiment: --configfile configs/<x>.yaml)")
        raise SystemExit(f"critperiods: {err}{hint}") from None
    if args.epoch not in ckpts:
        raise SystemExit(f"critperiods: {args.piece}: no checkpoint at epoch {args.epoch}; "
                         f"has {sorted(ckpts)}")
    torch.set_num_threads(args.threads)
    try:
        data = load_prepared(results / "data" / "train.pt")
    except ValueError as err:  # not there: a run not yet aggregated, read from another folder
        hint = "" if recorded is not None else " (run this from the run's folder)"
        raise SystemExit(f"critperiods: {err}{hint}") from None
    model = model_for(TrainConfig.from_params(params), data, "cpu")
    model.load_state_dict(ckpts[args.epoch]["model"])
    llc_params = config["llc"]
    chains = {k: v for k, v in (("draws", args.draws), ("burn_in", args.burn_in),
                                ("batch_size", args.batch_size)) if v is not None}
    own = float(llc_params["step_size"])
    step_sizes = args.step_sizes or default_step_sizes(own)
    sampler = replace(llc_config_from_params(llc_params), **chains)
    sampled = llc_data(data, llc_params)(ckpts[args.epoch]["phase"])  # the sampler's images
    try:
        result = calibrate(model, torch.nn.functional.cross_entropy, sampled, sampler,
                           step_sizes, args.nbetas, label=f"{args.piece} epoch {args.epoch}")
    except ValueError as err:  # a broken checkpoint: nothing to calibrate
        raise SystemExit(f"critperiods: {err}") from None
    from critperiods.measure.llc.stability import STABILITY_SAMPLES, sharpness

    curvature = sharpness(
        model, torch.nn.functional.cross_entropy, sampled, batch_size=sampler.batch_size,
        samples=llc_params.get("stability_samples", STABILITY_SAMPLES), seed=sampler.seed)
    print("\n".join(calibration_lines(result, sampler, own, config["analysis"], *curvature)))
    plot_calibration(result, args.out)
    print(f"wrote {args.out}")
    if args.descent:
        from critperiods.measure.llc.descent import descent, descent_line

        found = descent(model, torch.nn.functional.cross_entropy, sampled, sampler)
        nbetas = [v for v in result["nbeta"].values if np.isclose(v, found.nbeta)]
        own_llc = (float(result["llc_mean"].sel(step_size=own, nbeta=nbetas[0]))
                   if nbetas and own in result["step_size"].values else None)  # the path's λ̂
        print(descent_line(found, own_llc, sampler))
    return 0


def _recorded_config_of(piece: str) -> Path | None:
    """``results/<experiment>/config.yaml``, the config a run records beside its ``runs/``
    folder, for a piece file inside it; None where there is none."""
    for folder in Path(piece).resolve().parents:
        if folder.name == "runs":
            recorded = folder.parent / "config.yaml"
            return recorded if recorded.is_file() else None
    return None


__all__ = ["calibrate_llc"]
