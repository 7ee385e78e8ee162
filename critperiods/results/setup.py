"""What a run was, in words: the config a cube records, the one sentence that says what was
trained on what (the data, the blur, the network, the optimiser and the grid), which
``summarize`` and the report print beside the answer, so that two runs that differ in a key
that is not a grid axis (the blur, the width, the rate) cannot be mistaken for each other,
and the keys two configs differ in (``compare``, ``check``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr
import yaml

#: Keys that cannot change a result (names, folders, figure and cluster settings): never
#: reported as a difference. A key ending in "." stands for everything under it.
NOT_RESULTS = ("experiment", "results_dir", "laid_over", "dataset.root", "plots.",
               "runtime.")

DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
MODEL_NAMES = {"small_cnn": "small CNN", "all_cnn_c": "All-CNN-C", "resnet18": "ResNet-18"}


def recorded_config(cube: xr.Dataset) -> dict[str, Any]:
    """The config the cube was made with (its ``config`` attribute, schema defaults filled
    in); ``{}`` for a cube without one."""
    return yaml.safe_load(cube.attrs.get("config", "")) or {}


def setup_sentence(cube: xr.Dataset) -> str:
    """One sentence (plain text, no trailing period) saying what the run trained: e.g.
    "small CNN (width 8) on 10,000 Fashion-MNIST training images, blurred by downsampling to
    4×4 pixels (and back) until the switch; SGD at lr 0.05 × 0.85 per epoch, momentum 0.9,
    weight decay 0.0005; batch sizes 64, 128, 256; switch epochs 0, 4, 8, 12, 16, then 6
    sharp epochs; seeds 0, 1, 2". The grid is the cube's coordinates (what ran), the rest its
    recorded config; "" for a cube without a config."""
    config = recorded_config(cube)
    if not config:
        return ""
    data, model, opt = (config.get(k, {}) for k in ("dataset", "model", "optimizer"))
    subset = data.get("train_subset")
    images = f"{subset:,} " if subset else "all "
    blur = data.get("blur_size")
    name = data.get("name", "")
    parts = [f"{MODEL_NAMES.get(model.get('name'), model.get('name', 'a network'))}"
             + (f" (width {model['width']})" if "width" in model else "")
             + f" on {images}{DATASET_NAMES.get(name, name)} training images"
             + (f", blurred by downsampling to {blur}×{blur} pixels (and back) until the switch"
                if blur else "")
             + (", with augmentation" if config.get("augmentation") else "")]
    if "lr" in opt:
        decay = opt.get("lr_decay", 1.0)
        parts.append(f"SGD at lr {opt['lr']:g}" + (f" × {decay:g} per epoch" if decay != 1 else "")
                     + "".join(f", {label} {opt[key]:g}" for key, label in (
                         ("momentum", "momentum"), ("weight_decay", "weight decay"))
                               if opt.get(key)))
    grid = [(dim, label, cube[dim].values) for dim, label in (
        ("batch_size", "batch size"), ("switch_epoch", "switch epoch"), ("seed", "seed"))
            if dim in cube.coords]
    for dim, label, values in grid:
        text = f"{label}{'s' if len(values) != 1 else ''} {listed(values)}"
        if dim == "switch_epoch" and "epochs_after_switch" in config:
            text += f", then {config['epochs_after_switch']} sharp epochs"
        parts.append(text)
    return "; ".join(parts)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dataset.blur_size": 4, …}``: the nested config as dotted keys (lists as values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The dotted config keys whose values are not the same in every config, with each
    config's value (None where it has none), keys that cannot change a result
    (:data:`NOT_RESULTS`) left out."""
    flat = [_flat(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys
            if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in NOT_RESULTS)
            and any(f.get(k) != flat[0].get(k) for f in flat[1:])}


def listed(values: Sequence[Any]) -> str:
    """"64, 128, 256": the values as written in a config."""
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in
                     (x.item() if hasattr(x, "item") else x for x in values))


__all__ = ["DATASET_NAMES", "MODEL_NAMES", "NOT_RESULTS", "differing_keys", "listed",
           "recorded_config", "setup_sentence"]
