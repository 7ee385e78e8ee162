"""`compare`: several runs side by side, for a key the grid does not sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from critperiods.results.comparison import accuracy_differences
from critperiods.results.setup import differing_keys
from critperiods.results.summary import critical_period_summary
from tests.test_analysis import synthetic_cube

CONFIG = ("experiment: {name}\nresults_dir: results\ndataset:\n  name: fashion_mnist\n"
          "  root: {root}\n  blur_size: {blur}\nplots:\n  dpi: {dpi}\n"
          "optimizer:\n  lr: 0.05\n  lr_decay: 0.85\n")


def run(name: str, blur: int, root: str = "data", dpi: int = 100,
        shift: float = 0.0) -> xr.Dataset:
    """A small synthetic run whose accuracy after switch 20 is ``shift`` higher, per seed
    by a different amount (so the paired interval has a width)."""
    cube = synthetic_cube(with_llc=False, with_div=False)
    late = (cube.switch_epoch > 20) * shift * (1 + 0.5 * cube.seed)
    cube = cube.assign(final_test_accuracy=cube.final_test_accuracy + late)
    cube = cube.merge(critical_period_summary(cube))
    return cube.assign_attrs(config=CONFIG.format(name=name, root=root, blur=blur, dpi=dpi),
                             git_commit="abc1234def")


def test_differing_keys_names_only_keys_that_can_change_a_result() -> None:
    """The experiment's name, its folders and the figure settings never count; a nested key
    is named with dots, with each run's value (None where a run has none)."""
    configs = [{"experiment": "a", "results_dir": "r", "dataset": {"root": "x", "blur_size": 4},
                "plots": {"dpi": 100}, "grid": {"seeds": [0, 1]}},
               {"experiment": "b", "results_dir": "s", "dataset": {"root": "y", "blur_size": 8},
                "plots": {"dpi": 60}, "grid": {"seeds": [0, 1]}, "augmentation": True}]
    assert differing_keys(configs) == {"augmentation": [None, True],
                                       "dataset.blur_size": [4, 8]}
    assert differing_keys(configs[:1] * 2) == {}


def test_accuracy_differences_pair_by_seed_over_the_common_grid() -> None:
    """Each run minus the first, per seed, then the mean and its Student-t interval: exactly
    0 with a zero-width interval where the runs are the same (the never-blurred runs of two
    blurs), the shift where one differs; grid values a run lacks are left out and named;
    a run that diverged to chance is left out of its pair."""
    base, other = run("blur4", 4), run("blur8", 8, shift=0.02)
    other = other.isel(batch_size=[0, 1])  # one batch size fewer
    other["final_test_accuracy"][0, -1, 2] = 0.05  # diverged to chance
    got = accuracy_differences([base, other], level=0.9).sel(lr_schedule="continue")
    assert list(got["batch_size"].values) == list(other["batch_size"].values)
    assert got.attrs["left_out"] == f"batch_size {base.batch_size.values[2]:g}"
    early = got.sel(run=1, switch_epoch=0)
    assert (early["difference"] == 0).all() and (early["difference_interval"] == 0).all()
    assert (early["difference_seeds"] == 3).all()
    assert float(got["accuracy"].sel(run=1, switch_epoch=got.switch_epoch.max(),
                                     batch_size=base.batch_size.values[0])) == pytest.approx(
        float(other["final_test_accuracy"][0, -1, :2].mean()))  # the valid seeds' mean
    late = got.sel(run=1, switch_epoch=30, batch_size=base.batch_size.values[1])
    per_seed = 0.02 * (1 + 0.5 * np.arange(3))
    assert float(late["difference"]) == pytest.approx(per_seed.mean())
    half = 2.919986 * per_seed.std(ddof=1) / np.sqrt(3)  # t(0.95; 2)
    assert late["difference_interval"].values == pytest.approx(
        [per_seed.mean() - half, per_seed.mean() + half], rel=1e-5)
    last = got.sel(run=1, switch_epoch=got.switch_epoch.max(),
                   batch_size=base.batch_size.values[0])
    assert int(last["difference_seeds"]) == 2  # the diverged seed is out
    assert np.isnan(got.sel(run=0)["difference"]).all()  # the baseline against itself
    deficit = got["deficit_difference"].sel(run=1, batch_size=base.batch_size.values[1])
    assert float(deficit) == pytest.approx(-per_seed.mean())  # a smaller loss by the shift


def test_a_key_that_moves_every_switch_alike_moves_no_deficit() -> None:
    """Where the key changes the never-blurred run too (a wider network: every switch 2
    points higher), every accuracy differs but the deficit does not: its paired difference
    is 0."""
    base = run("w8", 4)
    wide = base.assign(final_test_accuracy=base.final_test_accuracy + 0.02)
    got = accuracy_differences([base, wide]).sel(run=1, lr_schedule="continue")
    assert got["difference"].values == pytest.approx(0.02)
    assert got["deficit_difference"].values == pytest.approx(0.0, abs=1e-12)


def test_compare_prints_what_differs_each_end_and_the_paired_accuracies(tmp_path,
                                                                         capsys) -> None:
    """The command line: the runs by name, the key they differ in (not the folder or the
    figure size), each run's end and deficit, the accuracies with paired differences, and
    a CSV with a row per run and cell; a toy cube and runs with nothing in common are
    refused in one line."""
    from critperiods.__main__ import main

    paths = [tmp_path / "a.nc", tmp_path / "b.nc"]
    run("blur4", 4, root="data").to_netcdf(paths[0])
    run("blur8", 8, root="/elsewhere", dpi=60, shift=0.02).to_netcdf(paths[1])
    csv = tmp_path / "cmp.csv"
    assert main(["compare", *map(str, paths), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"blur4: {paths[0]}\nblur8: {paths[1]}\n")
    assert "  dataset.blur_size: 4 | 8\n" in out
    assert "dataset.root" not in out and "dpi" not in out and "git_commit" not in out
    assert "each run's critical period, as its own cube gives it" in out
    assert ("the deficit (switch 0 minus switch 60, the earliest and latest every run has): "
            "each later run minus blur4, paired by seed, in points [90% Student-t interval] "
            "(seeds)\nbatch") in out  # every run's own deficit spans these: no note
    assert "-3.0 [" in out  # blur8 loses 3 points less at the latest switch
    assert ("final sharp test accuracy (%), each run's mean over its own valid seeds (of "
            "those every run has); each later run's difference from blur4, paired by seed "
            "(where both are valid), in points [90% Student-t interval] (seeds)") in out
    assert "+0.0 [+0.0, +0.0] (3)" in out and "+3.0 [" in out
    table = pd.read_csv(csv)
    assert list(table.columns) == [
        "run", "batch_size", "lr_schedule", "switch_epoch", "accuracy", "difference",
        "difference_lower", "difference_upper", "difference_seeds", "deficit_difference",
        "deficit_difference_lower", "deficit_difference_upper", "deficit_difference_seeds",
        "level"]
    assert (table["level"] == 0.9).all()  # and fractions, as the cube: 3 points is 0.03
    assert set(table["run"]) == {"blur4", "blur8"} and len(table) == 2 * 3 * 13
    later = table[table["run"] == "blur8"]
    assert later["deficit_difference"].to_numpy() == pytest.approx(-0.03)
    toy = tmp_path / "toy.nc"
    xr.Dataset(attrs={"cube_kind": "toy_landscapes"}).to_netcdf(toy)
    with pytest.raises(SystemExit, match="a toy cube; compare reads the critical period's"):
        main(["compare", str(paths[0]), str(toy)])
    apart = run("x", 4).assign_coords(batch_size=[1, 2, 3])
    apart.to_netcdf(tmp_path / "apart.nc")
    with pytest.raises(SystemExit, match="share no batch_size: nothing to pair"):
        main(["compare", str(paths[0]), str(tmp_path / "apart.nc")])
    other_seeds = run("y", 4).assign_coords(seed=[3, 4, 5])  # independent seeds: no pairs
    other_seeds.to_netcdf(tmp_path / "seeds.nc")
    with pytest.raises(SystemExit, match="share no seed: nothing to pair"):
        main(["compare", str(paths[0]), str(tmp_path / "seeds.nc")])
    with pytest.raises(SystemExit, match="needs at least two cubes"):
        main(["compare", str(paths[0])])


def test_compare_names_runs_of_one_experiment_by_path_and_leaves_perturbations_to_summarize(
        tmp_path, capsys) -> None:
    """Two cubes of the same experiment (copied aside between runs) are named by their
    paths, once; where a cube holds the perturbation study, compare says it does not compare
    it."""
    from critperiods.__main__ import main

    paths = [tmp_path / "layer.nc", tmp_path / "network.nc"]
    run("same", 4).to_netcdf(paths[0])
    nudged = run("same", 4, shift=0.01)
    nudged["perturb_l2"] = xr.zeros_like(nudged["final_test_accuracy"])
    nudged.to_netcdf(paths[1])
    assert main(["compare", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"comparing 2 runs, the first ({paths[0]}) as the baseline:")
    assert ("  the perturbation study's results are not compared here: `summarize` each cube "
            "for them\n") in out
    assert "on different data" not in out


def test_compare_says_what_pairing_by_seed_means_across_datasets(tmp_path, capsys) -> None:
    from critperiods.__main__ import main

    paths = [tmp_path / "fashion.nc", tmp_path / "mnist.nc"]
    run("fashion", 4).to_netcdf(paths[0])
    digits = run("mnist", 4, shift=0.01)
    digits.attrs["config"] = digits.attrs["config"].replace("fashion_mnist", "mnist")
    digits.to_netcdf(paths[1])
    assert main(["compare", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "  dataset.name: fashion_mnist | mnist\n" in out
    assert "  on different data, a seed's runs share only their initial weights and batch " \
           "order" in out


def test_compare_names_code_devices_and_torch_that_differ_and_what_it_cannot_see(
        tmp_path, capsys) -> None:
    """Besides the config, the runs' provenance: each stage whose code fingerprints or
    devices differ (a difference the key did not make), torch's version; commits that
    differ while every stage's code agrees make no difference; a cube without provenance
    hides its code, and one without a config what the runs differ in. A run whose own
    switches reach beyond those every run has is told its deficit above is not the
    paired one's."""
    import json

    from critperiods.__main__ import main

    def provenance(code: str, device: str) -> str:
        return json.dumps({"aggregate": {"code": "agg1"}, "pieces": [
            {"file": "results/x/runs/bs64/seeds0_1_2/metrics.nc", "stage": "evaluate",
             "code": "ev1", "data": {}, "device": "cpu", "training_code": [code],
             "training_device": [device]}]})

    base = run("a", 4).assign_attrs(provenance=provenance("tr1", "cpu"), torch_version="2.14",
                                    numpy_version="2.3.1")
    paths = {name: tmp_path / f"{name}.nc" for name in ("a", "b", "c", "d", "e")}
    base.to_netcdf(paths["a"])
    base.assign_attrs(config=base.attrs["config"].replace("experiment: a", "experiment: b"),
                      provenance=provenance("tr2", "cuda NVIDIA H100"),
                      torch_version="2.11", numpy_version="2.4.0").to_netcdf(paths["b"])
    main(["compare", str(paths["a"]), str(paths["b"])])
    out = capsys.readouterr().out
    assert "  (their configs agree on every key that can change a result)\n" in out
    assert "  code of train: tr1 | tr2: differences may also be the code's\n" in out
    assert ("  device of train: cpu | cuda NVIDIA H100: results repeat bit for bit only on "
            "one device; differences may also be the hardware's\n") in out
    assert "  torch: 2.14 | 2.11: differences may also be the library's\n" in out
    assert "  numpy: 2.3.1 | 2.4.0: differences may also be the library's\n" in out
    assert "code of evaluate" not in out and "git_commit" not in out
    base.assign_attrs(config=base.attrs["config"].replace("experiment: a", "experiment: c"),
                      git_commit="fff0000").to_netcdf(paths["c"])
    main(["compare", str(paths["a"]), str(paths["c"])])
    out = capsys.readouterr().out
    assert ("  code (git_commit): abc1234 | fff0000, but every stage ran the same code on the "
            "same data (provenance): the commits differ in nothing these results depend "
            "on\n") in out
    other_data = provenance("tr1", "cpu").replace('"data": {}', '"data": {"train": "d2"}')
    changed_data = base.assign_attrs(
        config=base.attrs["config"].replace("experiment: a", "experiment: c"),
        git_commit="fff0000", provenance=other_data)
    changed_data.to_netcdf(paths["c"])
    main(["compare", str(paths["a"]), str(paths["c"])])
    out = capsys.readouterr().out
    assert "  data of train: - | d2: the prepared images differ" in out
    assert "differ in nothing" not in out
    bare = base.copy()
    del bare.attrs["provenance"], bare.attrs["config"]
    bare.to_netcdf(paths["d"])
    main(["compare", str(paths["a"]), str(paths["d"])])
    out = capsys.readouterr().out
    assert (f"  {paths['d']}: no recorded config (the cube's config attribute): cannot tell "
            "what the runs differ in\n") in out
    assert "run 2 records no provenance" not in out and (
        "records no provenance (a cube from before it was kept): cannot tell whether the "
        "code differs") in out
    assert "their configs agree" not in out
    shorter = run("e", 4).sel(switch_epoch=slice(None, 40))
    shorter.to_netcdf(paths["e"])
    main(["compare", str(paths["a"]), str(paths["e"])])
    out = capsys.readouterr().out
    assert "the deficit (switch 0 minus switch 40, the earliest and latest every run has)" in out
    assert "  (the deficit of a above spans its own earliest and latest switches, not these)" \
        in out
