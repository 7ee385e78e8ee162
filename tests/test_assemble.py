"""Pieces become runs: the trunk up to the switch, then the branch; shared branches serve
every schedule; the cube's helpers line runs up at their switch."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from critperiods.pipeline.layout import (
    PieceFile,
    PieceKey,
    group_label,
    group_seeds,
    parse_divergence,
    parse_piece,
    piece_coordinates,
    piece_name,
)
from critperiods.results.assemble import assemble_runs, join_segments, load_pieces
from critperiods.results.cube import align_at_switch


def piece(epochs: list[int], values: list[float], **settings: float) -> xr.Dataset:
    ds = xr.Dataset({"acc": ("epoch", np.asarray(values, dtype=float))},
                    coords={"epoch": np.asarray(epochs)})
    for name, value in settings.items():
        ds[name] = ((), value)
    return ds


def test_paths_map_to_coordinates_and_back_out():
    assert parse_piece("r/runs/bs32/seed1/trunk/e4.pt") == PieceFile(32, (1,), None, None)
    assert parse_piece("r/runs/bs32/seeds0_1_2/trunk/e4.llc.nc").is_trunk
    # the never-blurred run's continuation is that run's piece, in segments
    assert parse_piece("r/runs/bs32/seed1/continue/switch0/e12.pt") == PieceFile(
        32, (1,), "continue", 0)
    assert parse_piece("r/runs/bs32/seed1/continue/switch0/e12.llc.nc") == PieceFile(
        32, (1,), "continue", 0)
    for coordinates in ((None, None, 8), ("restart", 4, None), ("continue", 0, 12)):
        assert piece_coordinates(piece_name(*coordinates)) == coordinates
    assert parse_piece("r/runs/bs64/seeds0_1/restart/switch8.llc.nc") == PieceFile(
        64, (0, 1), "restart", 8)
    assert parse_piece("r/runs/bs64/seeds0_1/restart/switch8.pt").key(1) == PieceKey(
        64, 1, "restart", 8)
    assert parse_divergence("r/divergence/bs128_continue.nc") == (128, "continue")
    assert group_label([2, 0, 1]) == "seeds0_1_2" and group_label([3]) == "seed3"
    assert group_seeds("seeds0_1_2") == (0, 1, 2) and group_seeds("seed3") == (3,)
    for bad in ("r/runs/bs64/seed0/switch8.pt", "r/runs/bs64/seed0/later/switch8.pt",
                "r/runs/bs64/group0/trunk/e4.pt", "r/runs/bs64/seed0/trunk.llc.nc",
                "r/runs/bs64/seed0/restart/switch4/e8.pt",  # only switch0 is continued
                "r/perturbations/bs64/seed0/continue/switch0/e4.pt"):  # not a training file
        try:
            parse_piece(bad)
        except ValueError as err:
            assert bad in str(err)
        else:
            raise AssertionError(f"{bad} parsed")


def test_runs_take_the_trunk_until_the_switch_and_share_the_never_blurred_branch():
    pieces = {
        PieceKey(32, 0, None, None): piece([0, 1, 2], [0.0, 1.0, 2.0], llc_gamma=100.0),
        PieceKey(32, 0, "continue", 0): piece([1, 2], [10.0, 20.0], llc_gamma=100.0),
        PieceKey(32, 0, "continue", 2): piece([3, 4], [30.0, 40.0], llc_gamma=100.0),
        PieceKey(32, 0, "restart", 2): piece([3, 4], [-3.0, -4.0], llc_gamma=100.0),
    }
    runs = assemble_runs(pieces, ["continue", "restart"], [0, 2])
    acc = runs["acc"].sel(batch_size=32, seed=0)
    np.testing.assert_array_equal(acc.sel(lr_schedule="restart", switch_epoch=0),
                                  acc.sel(lr_schedule="continue", switch_epoch=0))
    np.testing.assert_array_equal(acc.sel(lr_schedule="restart", switch_epoch=2),
                                  [0.0, 1.0, 2.0, -3.0, -4.0])
    assert runs["llc_gamma"].dims == () and float(runs["llc_gamma"]) == 100.0


def test_a_run_without_its_branch_keeps_its_trunk_values():
    """λ̂ may be estimated on the trunk only (llc.switch_epochs): runs still show it."""
    pieces = {PieceKey(32, 0, None, None): piece([0, 2, 4], [0.0, 2.0, 4.0])}
    runs = assemble_runs(pieces, ["continue"], [0, 4])
    acc = runs["acc"].sel(batch_size=32, seed=0, lr_schedule="continue")
    np.testing.assert_array_equal(acc.sel(switch_epoch=4), [0.0, 2.0, 4.0])
    assert np.isnan(acc.sel(switch_epoch=0, epoch=2))


def test_align_at_switch_lines_runs_up_at_their_switch():
    epochs, switches = np.arange(6), np.array([0, 2])
    values = epochs[None, :] - switches[:, None] + 100.0  # 100 + epochs since the switch
    da = xr.DataArray(values, dims=("switch_epoch", "epoch"),
                      coords={"switch_epoch": switches, "epoch": epochs})
    aligned = align_at_switch(da)
    assert aligned.dims == ("switch_epoch", "epochs_since_switch")
    assert list(aligned.epochs_since_switch.values) == list(range(-2, 6))
    np.testing.assert_array_equal(aligned.sel(epochs_since_switch=1), [101.0, 101.0])
    assert np.isnan(aligned.sel(switch_epoch=0, epochs_since_switch=-1))


def _section(text: str, heading: str) -> str:
    """The markdown section under ``heading`` (a ``## `` line), up to the next one."""
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def test_every_cube_variable_is_documented():
    """Each name of the variables table is described where a cube's reader looks: the cube
    section of docs/architecture.md, or the cube section of docs/perturbations.md for the
    perturbation study's. A variable added to the table without a word there would ship
    undocumented. So does every variable the summary writes, wherever its attributes live."""
    import re
    from pathlib import Path

    from critperiods.results.markers import MARKER_STATISTICS, NET_MARKER_STATISTICS
    from critperiods.variables import VARIABLES

    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (_section((docs / "architecture.md").read_text(), "## The cube (`cube.nc`)")
            + _section((docs / "perturbations.md").read_text(), "## In the cube"))
    from tests.test_analysis import llc_cube_with_the_descent

    _, with_descent = llc_cube_with_the_descent()  # every summary variable, the net knees too
    written = [str(v) for v in with_descent.data_vars
               if not str(v).endswith(("_interval", "_loo_range"))]  # "(+ `_interval`)"
    assert set(NET_MARKER_STATISTICS) <= set(written)
    missing = [name for name in [*VARIABLES, *MARKER_STATISTICS, *written]
               if not re.search(rf"`{re.escape(name)}[`(]", text)]
    assert not missing, f"cube variables not described in docs/: {missing}"


def test_every_evaluation_metric_has_a_description():
    """The evaluate stage's metrics (``evaluation.METRICS``) are not imported by the table
    of descriptions (that would rerun evaluate on every description's edit), so this holds
    the two together: a new metric without its row would reach the cube undescribed."""
    from critperiods.measure.evaluation import METRICS
    from critperiods.variables import VARIABLES

    missing = [name for name in METRICS if name not in VARIABLES]
    assert not missing, f"add to critperiods/variables.py VARIABLES: {missing}"
    assert all(VARIABLES[name][0] and VARIABLES[name][1] for name in METRICS)


def test_the_table_describes_the_cube_over_whatever_a_piece_carried():
    """Stages write values only; the assembly takes every description from variables.py, so
    a piece file written before a description changed cannot keep the old one."""
    from critperiods.results.cube import describe
    from critperiods.variables import VARIABLES

    ds = xr.Dataset(
        {"test_accuracy": ("epoch", [0.5, 0.6], {"long_name": "stale", "comment": "kept"}),
         "div_l2_growth_form": ("epoch", np.asarray([0, -1], dtype=np.int8)),
         "perturb_kl": ("epoch", [0.1, 0.2]),
         "mine": ("epoch", [1.0, 2.0], {"long_name": "not in the table"})},
        coords={"epoch": [1, 2]})
    out = describe(ds)
    assert out.test_accuracy.attrs == {"long_name": VARIABLES["test_accuracy"][0],
                                       "units": "1", "comment": "kept"}
    assert out.epoch.attrs == {"long_name": VARIABLES["epoch"][0]}  # an index: no units
    form = out.div_l2_growth_form.attrs
    assert form["flag_meanings"].split()[:2] == ["none", "linear"]
    assert list(form["flag_values"][:2]) == [-1, 0]
    assert out.perturb_kl.attrs["long_name"].endswith("its unperturbed twin)")
    assert out.mine.attrs == {"long_name": "not in the table"}


def test_the_segments_of_a_piece_are_read_as_one(tmp_path):
    """λ̂ files of the trunk's segments (and of the never-blurred run's continuation) join
    along epoch into one piece per seed, with their settings kept 0-d."""
    group = tmp_path / "runs/bs32/seeds0_1"
    files = []
    for name, epochs in (("trunk/e4", [3, 4]), ("trunk/e2", [1, 2]),
                         ("continue/switch0", [1, 2]), ("continue/switch0/e4", [3, 4])):
        path = group / f"{name}.llc.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = np.asarray([[e + 10.0 * s for e in epochs] for s in (0, 1)])
        xr.Dataset({"llc_mean": (("seed", "epoch"), values), "llc_gamma": ((), 100.0)},
                   coords={"seed": [0, 1], "epoch": epochs}).to_netcdf(path)
        files.append(path)
    pieces = load_pieces(files)
    assert set(pieces) == {PieceKey(32, s, r, k) for s in (0, 1)
                           for r, k in ((None, None), ("continue", 0))}
    trunk = pieces[PieceKey(32, 1, None, None)]
    assert list(trunk.epoch.values) == [1, 2, 3, 4]
    np.testing.assert_array_equal(trunk.llc_mean.values, [11.0, 12.0, 13.0, 14.0])
    assert trunk.llc_gamma.dims == () and float(trunk.llc_gamma) == 100.0
    assert list(pieces[PieceKey(32, 0, "continue", 0)].epoch.values) == [1, 2, 3, 4]


def test_a_setting_its_segments_disagree_on_is_kept_per_epoch():
    """λ̂ of the trunk's later segments sampled on a GPU in bf16 (``llc.precision: auto``)
    beside earlier ones sampled in float32 on a CPU: the piece, and then every run, records
    ``llc_bf16`` per epoch; the settings the segments agree on stay 0-d."""
    early = piece([1, 2], [1.0, 2.0], llc_bf16=0, llc_gamma=100.0)
    late = piece([3, 4], [3.0, 4.0], llc_bf16=1, llc_gamma=100.0)
    trunk = join_segments([late, early])
    np.testing.assert_array_equal(trunk.llc_bf16.values, [0, 0, 1, 1])
    assert trunk.llc_gamma.dims == ()
    branch = piece([5, 6], [5.0, 6.0], llc_bf16=1, llc_gamma=100.0)
    runs = assemble_runs({PieceKey(32, 0, None, None): trunk,
                          PieceKey(32, 0, "continue", 4): branch}, ["continue"], [4])
    bf16 = runs.llc_bf16.sel(batch_size=32, lr_schedule="continue", switch_epoch=4, seed=0)
    np.testing.assert_array_equal(bf16.sel(epoch=[1, 2, 3, 4, 5, 6]).values, [0, 0, 1, 1, 1, 1])
    assert runs.llc_gamma.dims == () and float(runs.llc_gamma) == 100.0


def test_a_truncated_result_file_is_named_with_the_command_that_remakes_it(tmp_path):
    """aggregate reading a truncated metrics.nc used to end on the netCDF library's
    "NetCDF: HDF error: '<path>'", with no reason and no next step."""
    import xarray as xr

    from critperiods.pipeline.files import read_netcdf, write_netcdf
    from critperiods.results.cube import merge_files

    path = tmp_path / "metrics.nc"
    write_netcdf(xr.Dataset({"x": ("a", [1.0, 2.0])}), path)
    assert read_netcdf(path)["x"].values.tolist() == [1.0, 2.0]
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"metrics\.nc: cannot be read as netCDF .*truncated or "
                                         r"corrupt .*snakemake --cores all --forcerun .*metrics"):
        merge_files([path])


def test_aggregate_names_every_unreadable_input_at_once(tmp_path):
    """Three truncated inputs took three rounds of fix and rerun, each naming the next one:
    aggregate now names them all, with one command that remakes them."""
    import xarray as xr

    from critperiods.pipeline.files import write_netcdf
    from critperiods.pipeline.stages.aggregate import check_readable

    paths = [tmp_path / f"{name}.nc" for name in ("a", "b", "c")]
    for path in paths:
        write_netcdf(xr.Dataset({"x": ("a", [1.0, 2.0])}), path)
    check_readable(paths)  # all readable: nothing said
    for path in paths[1:]:
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError) as err:
        check_readable(paths)
    said = str(err.value)
    assert said.startswith("2 inputs of the cube cannot be read as netCDF")
    assert said.endswith(f"snakemake --cores all --forcerun {paths[1]} {paths[2]}")
    assert str(paths[0]) not in said


def test_a_statistic_names_the_companions_that_qualify_it():
    """``ancillary_variables`` lists the interval, the flags, the earliest value and the
    tests of a statistic that the cube has (after the table's own qualifiers, once each),
    so that a reader of the cube alone finds them: a knee flagged unstable and within noise
    names both."""
    from critperiods.results.cube import describe

    ds = xr.Dataset({
        "llc_knee_trunk": ("b", [4.0]), "llc_knee_trunk_interval": (("b", "bound"), [[4, 14]]),
        "llc_knee_trunk_unstable": ("b", [1.0]), "llc_knee_trunk_within_noise": ("b", [1.0]),
        "llc_knee_trunk_earliest": ("b", [4.0]), "divergence_drop_epoch": ("b", [3.0]),
        "divergence_drop_epoch_interval": (("b", "bound"), [[2, 6]]), "lonely": ("b", [1.0])})
    out = describe(ds)
    assert out["llc_knee_trunk"].attrs["ancillary_variables"] == (
        "llc_knee_trunk_interval llc_knee_trunk_unstable llc_knee_trunk_within_noise "
        "llc_knee_trunk_earliest")
    assert out["divergence_drop_epoch"].attrs["ancillary_variables"] == \
        "divergence_drop_epoch_interval"
    assert "ancillary_variables" not in out["lonely"].attrs
