"""From trajectory pieces to runs: the trunk up to a run's switch, then its branch.

A run ``(batch_size, lr_schedule, switch_epoch, seed)`` takes its values at epochs
``e ≤ switch_epoch`` from the trunk of ``(batch_size, seed)`` and later ones from its branch.
One branch can serve several schedules (:func:`critperiods.pipeline.layout.piece_schedule`: the
never-blurred run is the same for all). The evaluate stage lays out the runs of one seed group this
way and the cube its λ̂; both give datasets on the cube's dims.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from critperiods.pipeline.files import read_netcdf
from critperiods.pipeline.layout import PieceKey, parse_piece, piece_schedule

#: The dims of one run of the grid, in the cube's order.
RUN_DIMS = ("batch_size", "lr_schedule", "switch_epoch", "seed")


def load_pieces(files: Iterable[str | Path]) -> dict[PieceKey, xr.Dataset]:
    """Per-piece result files of seed groups (a ``seed`` dim), split into one dataset per
    seed's piece, keyed by its coordinates (read from the path). The files of one piece's
    segments (the trunk's, the never-blurred run's) are joined along ``epoch``
    (:func:`join_segments`)."""
    parts: dict[PieceKey, list[xr.Dataset]] = {}
    for f in files:
        piece = parse_piece(f)
        ds = read_netcdf(f)
        for seed in piece.seeds:
            one = ds.sel(seed=seed, drop=True) if "seed" in ds.dims else ds
            parts.setdefault(piece.key(seed), []).append(one)
    return {key: join_segments(segments) for key, segments in parts.items()}


def join_segments(segments: Sequence[xr.Dataset]) -> xr.Dataset:
    """One piece from its segments' datasets, along ``epoch``. A 0-d variable (a sampler's
    setting) stays 0-d where the segments agree; where they do not (``llc_bf16`` of
    segments sampled on different devices with ``llc.precision: auto``), it is kept per
    epoch, each segment's value at its epochs."""
    if len(segments) == 1:
        return segments[0]
    settings = {v for seg in segments for v in seg.data_vars if not seg[v].dims}
    mixed = {v for v in settings
             if len({seg[v].item() for seg in segments if v in seg}) > 1}
    segments = [seg.assign({v: seg[v].expand_dims(epoch=seg.epoch) for v in mixed if v in seg})
                for seg in segments]
    return xr.concat(segments, dim="epoch", data_vars="minimal", coords="minimal",
                     compat="equals", combine_attrs="drop_conflicts").sortby("epoch")


def assemble_runs(pieces: Mapping[PieceKey, xr.Dataset], lr_schedules: Sequence[str],
                  switch_epochs: Sequence[int]) -> xr.Dataset:
    """One Dataset over ``RUN_DIMS`` + ``epoch`` (and the pieces' other dims) from per-piece
    datasets with an ``epoch`` dim, for the runs of the grid ``lr_schedules × switch_epochs``.

    A run without its branch piece still gets its trunk's values (λ̂ may be estimated on the
    trunk only); a run with neither is absent (NaN once merged into a grid). 0-d variables
    (the sampler's settings) stay 0-d when every piece agrees, else they are laid out per run
    (a run whose trunk and branch disagree takes its branch's); one that a piece holds per
    epoch (:func:`join_segments`) is laid out per epoch.
    """
    # a setting kept per epoch in any piece (join_segments) is per epoch in every one
    per_epoch = {v for p in pieces.values() for v in p.data_vars if "epoch" in p[v].dims}
    pieces = {key: p.assign({v: p[v].expand_dims(epoch=p.epoch) for v in p.data_vars
                             if not p[v].dims and v in per_epoch})
              for key, p in pieces.items()}
    trunks = sorted({(k.batch_size, k.seed) for k in pieces})
    runs, settings = [], []
    for b, s in trunks:
        trunk = pieces.get(PieceKey(b, s, None, None))
        for k in sorted(switch_epochs):
            for r in lr_schedules:
                branch = pieces.get(PieceKey(b, s, piece_schedule(r, k), k))
                parts = [] if branch is None else [branch]
                if trunk is not None:
                    parts.insert(0, trunk.sel(epoch=trunk.epoch[trunk.epoch <= k]))
                if not parts:
                    continue
                flat = [p.drop_vars([v for v in p.data_vars if not p[v].dims]) for p in parts]
                run = xr.concat(flat, dim="epoch", data_vars="all") if len(flat) > 1 else flat[0]
                coords = {"batch_size": [b], "lr_schedule": [r], "switch_epoch": [k], "seed": [s]}
                runs.append(run.expand_dims(coords))
                settings.append(xr.Dataset({v: p[v] for p in parts for v in p.data_vars
                                            if not p[v].dims}).expand_dims(coords))
    if not runs:
        return xr.Dataset()
    out = xr.merge(runs, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")
    per_run = xr.merge(settings, compat="no_conflicts", join="outer",
                       combine_attrs="drop_conflicts")
    for name, var in per_run.data_vars.items():
        values = np.unique(var.values[np.isfinite(var.values)])
        out[name] = ((), values[0]) if values.size == 1 else var
    return out


__all__ = ["RUN_DIMS", "assemble_runs", "join_segments", "load_pieces"]
