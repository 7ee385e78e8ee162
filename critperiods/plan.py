"""The experiment plan: which trunk segments, branches and checkpoints a config implies.

The Snakefile's input functions and tests both use these, so the DAG and the
documented layout can never disagree. Cross-field checks that a JSON schema
cannot express live here too (:func:`check_config`).
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A config value that is well-typed but inconsistent; the message names the key."""


def check_config(config: dict) -> None:
    """Checks across keys, run after schema validation and before any job is planned."""
    grid = config["grid"]
    for key in ("batch_sizes", "switch_epochs", "seeds"):
        if not grid.get(key):
            raise ConfigError(f"grid.{key}: the grid is empty (got {grid.get(key)!r})")
        repeated = sorted({v for v in grid[key] if grid[key].count(v) > 1})
        if repeated:
            raise ConfigError(f"grid.{key}: {repeated} listed more than once")
    for b in grid["batch_sizes"]:
        if not isinstance(b, int) or b <= 0:
            raise ConfigError(f"grid.batch_sizes: batch size must be a positive integer, got {b!r}")
    stride = config["trunk_stride"]
    bad = [s for s in grid["switch_epochs"] if s % stride]
    if bad:
        raise ConfigError(
            f"grid.switch_epochs: {bad} not a multiple of trunk_stride={stride} "
            "(branches start from trunk states saved every trunk_stride epochs)"
        )
    train_subset = config["dataset"].get("train_subset")
    too_big = [b for b in grid["batch_sizes"] if train_subset and b > train_subset]
    if too_big:
        raise ConfigError(
            f"grid.batch_sizes: {too_big} larger than dataset.train_subset={train_subset}"
        )


def seed_group(config: dict, seed: int) -> list[int]:
    """The seeds trained in one job with ``seed`` (``train.seeds_per_job`` = S): the seeds
    of ``grid.seeds`` in the same block of S seed values (``seed // S``), sorted; the
    first of them is the job that trains the group.

    Blocks of values, not positions in the list, so reordering ``grid.seeds`` or adding
    a seed regroups nothing except the block the new seed joins. A seed outside the grid
    (a target named on the command line) trains alone.
    """
    size = config.get("train", {}).get("seeds_per_job", 1)
    seeds = config["grid"]["seeds"]
    if seed not in seeds:
        return [seed]
    return sorted(s for s in seeds if s // size == seed // size)


def run_end(config: dict, switch_epoch: int) -> int:
    """Last epoch of the run with this switch epoch."""
    return switch_epoch + config["epochs_after_switch"]


def last_epoch(config: dict) -> int:
    """The last epoch any run reaches."""
    return run_end(config, max(config["grid"]["switch_epochs"]))


def trunk_end(config: dict) -> int:
    """Last epoch the blurred trunk is trained to (a multiple of ``trunk_stride``).

    Branches need it up to the largest switch epoch; the divergence stage also
    needs the always-blurred reference up to the last epoch any run reaches.
    """
    end = max(config["grid"]["switch_epochs"])
    if config.get("divergence", {}).get("enabled", False):
        stride = config["trunk_stride"]
        end = -(-last_epoch(config) // stride) * stride
    return end


def trunk_epochs(config: dict) -> list[int]:
    """Epochs at which the trunk saves its full state: 0, stride, …, trunk_end."""
    stride = config["trunk_stride"]
    return list(range(0, trunk_end(config) + 1, stride))


def checkpoint_epochs(config: dict) -> list[int]:
    """Every epoch that keeps weights: configured ones, switch epochs and run ends."""
    ck = config["checkpoints"]
    horizon = max(last_epoch(config), trunk_end(config))
    chosen = ck.get("epochs")
    base = set(chosen) if chosen is not None else set(range(0, horizon + 1, ck["every"]))
    runs = {e for s in config["grid"]["switch_epochs"] for e in (s, run_end(config, s))}
    return sorted(e for e in base | runs if e <= horizon)


def _within(epochs: Iterable[int], lo: int, hi: int) -> list[int]:
    """Epochs in the half-open interval (lo, hi] (lo = -1 includes 0)."""
    return [e for e in epochs if lo < e <= hi]


def trunk_segment_checkpoints(config: dict, end_epoch: int) -> list[int]:
    """Checkpoint epochs stored in trunk segment ``e{end_epoch}``."""
    lo = end_epoch - config["trunk_stride"] if end_epoch > 0 else -1
    return _within(checkpoint_epochs(config), lo, end_epoch)


def branch_checkpoints(config: dict, switch_epoch: int) -> list[int]:
    """Checkpoint epochs stored in branch ``switch{K}``: those in (K, K + epochs_after_switch]."""
    return _within(checkpoint_epochs(config), switch_epoch, run_end(config, switch_epoch))


def llc_epochs(config: dict, epochs: Iterable[int], trunk: bool = False) -> list[int]:
    """The subset of ``epochs`` (a piece's checkpoints) at which λ̂ is estimated.

    The trunk's extension past the largest switch epoch (kept for divergences)
    belongs to no run, so λ̂ is not estimated there. With ``llc.every``, epoch 0 is
    skipped: a randomly initialised network is not near a minimum, so SGLD just
    descends and λ̂ is meaningless (large and negative); list it in ``llc.epochs``
    to have it anyway.
    """
    llc = config["llc"]
    if trunk:
        epochs = [e for e in epochs if e <= max(config["grid"]["switch_epochs"])]
    if llc.get("epochs") is not None:
        return [e for e in epochs if e in set(llc["epochs"])]
    return [e for e in epochs if e > 0 and e % llc["every"] == 0]


def epochs_trained(config: dict, shared: bool = True) -> int:
    """Epochs of SGD the grid costs, with trunk sharing or with every run from scratch."""
    grid = config["grid"]
    cells = len(grid["batch_sizes"]) * len(grid["seeds"])
    branches = len(grid["switch_epochs"]) * config["epochs_after_switch"]
    if shared:
        return cells * (trunk_end(config) + branches)
    return cells * sum(run_end(config, s) for s in grid["switch_epochs"])


def training_params(config: dict) -> dict:
    """The config slice that shapes trajectories (and so their hash)."""
    ds = config["dataset"]
    return {
        "dataset": {k: ds[k] for k in ("name", "train_subset", "blur_size")},
        "model": dict(config["model"]),
        "optimizer": dict(config["optimizer"]),
        "augmentation": config["augmentation"],
    }


