"""End to end: stores built from real files equal xr.open_mfdataset of the same files."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.forge.verify import reference_dataset, verify
from arcoforge.testing.samples import dated_copies, restamp_time_units, writable_copies


def _strip(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if not str(k).startswith("arcoforge:")}
    return ds


def bake_and_check(recipe: af.ZarrRecipe, target: Path) -> xr.Dataset:
    result = af.bake(recipe, str(target), progress=False)
    assert result.files == len(recipe.pattern)
    report = verify(str(target), recipe)
    assert report.ok, str(report)
    ds = af.open_dataset(str(target))
    with reference_dataset(recipe) as ref:
        xr.testing.assert_identical(_strip(ds).load(), ref.load())
    return ds


def test_ersst_24_monthly_files(shared_data: Path, tmp_path: Path) -> None:
    files = sorted((shared_data / "ersst-v5").glob("ersst.v5.*.nc"))
    assert len(files) == 24
    pattern = af.pattern_from_file_sequence([str(f) for f in files], "time", nitems_per_file=1)
    ds = bake_and_check(af.ZarrRecipe(pattern, target_chunks={"time": 12}), tmp_path / "e.zarr")
    assert ds.sst.dtype == np.float32
    assert ds.sst.encoding["scale_factor"] == np.float32(1.0)
    assert ds.sizes["time"] == 24
    # consolidated metadata; chunks as asked; static variables stored once (not per time)
    group = zarr.open_group(str(tmp_path / "e.zarr"), mode="r")
    assert group["sst"].chunks == (12, 1, 89, 180)
    assert group["lat"].shape == (89,)
    prov = ds.attrs["arcoforge:sources"]
    assert [p["url"] for p in prov] == [str(f) for f in files]
    assert all(len(p["sha256"]) == 64 for p in prov)


def test_godas_chunks_straddle_files(shared_data: Path, tmp_path: Path) -> None:
    files = [str(shared_data / "godas-ssh" / f"sshg.{y}.nc") for y in (2019, 2020)]
    pattern = af.pattern_from_file_sequence(files, "time")  # nitems_per_file discovered: 12
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 5})
    plan = af.compile_plan(recipe, str(tmp_path / "g.zarr"))
    assert [t.region for t in plan.tasks] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 24)]
    straddle = plan.tasks[2].pieces[0][1]
    assert [(p.file, p.src, p.dst) for p in straddle] == [(0, (10, 12), (0, 2)),
                                                         (1, (0, 3), (2, 5))]
    ds = bake_and_check(recipe, tmp_path / "g.zarr")
    assert ds.sshg.encoding["missing_value"] == np.float32(-9.96921e36)


def _oisst_days(shared_data: Path, tmp_path: Path, n: int) -> list[str]:
    """n copies of the real OISST day with consecutive dates (only the time value changes)."""
    return dated_copies(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc", n, tmp_path)


def test_oisst_packed_int16_copied_raw(shared_data: Path, tmp_path: Path) -> None:
    files = _oisst_days(shared_data, tmp_path, 3)
    pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=1)
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 2, "lat": 360})
    ds = bake_and_check(recipe, tmp_path / "o.zarr")
    assert ds.sst.dtype == np.float32  # xr.open_zarr alone would give float64
    assert ds.sst.encoding["dtype"] == np.dtype("int16")
    assert ds.sst.encoding["scale_factor"] == np.float32(0.01)
    assert ds.sst.encoding["_FillValue"] == np.int16(-999)
    raw = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["sst"]
    assert raw.dtype == np.int16  # stored packed, never decoded and re-encoded
    with netCDF4.Dataset(files[1]) as nc:
        nc.set_auto_maskandscale(False)
        np.testing.assert_array_equal(raw[1], nc["sst"][0])


def test_single_large_file_read_by_blocks(shared_data: Path, tmp_path: Path) -> None:
    """A row bigger than max_block_bytes is read and written chunk by chunk."""
    files = _oisst_days(shared_data, tmp_path, 1)
    pattern = af.pattern_from_file_sequence(files, "time")
    recipe = af.ZarrRecipe(pattern, target_chunks={"lat": 180, "lon": 360},
                           max_block_bytes=200_000)
    bake_and_check(recipe, tmp_path / "b.zarr")


def test_nemo_360_day_2d_coords_time_counter(shared_data: Path, tmp_path: Path) -> None:
    files = sorted(str(f) for f in (shared_data / "nemo").glob("nemo_1m_*_grid-T.nc"))
    pattern = af.pattern_from_file_sequence(files, "time_counter")
    ds = bake_and_check(af.ZarrRecipe(pattern), tmp_path / "n.zarr")
    assert ds.nav_lat.dims == ("y", "x")
    assert "nav_lat" in ds.coords
    assert ds.time_centered.dt.calendar == "360_day"


@pytest.mark.parametrize("calendar", ["360", "365", "366"])
def test_cftime_calendars(shared_data: Path, tmp_path: Path, calendar: str) -> None:
    path = shared_data / "calendars" / f"ref_test_{calendar}_day_1900.nc"
    pattern = af.pattern_from_file_sequence([str(path)], "time")
    ds = bake_and_check(af.ZarrRecipe(pattern, target_chunks={"time": 500}),
                        tmp_path / "c.zarr")
    assert ds.sizes["time"] == 2300


def test_merge_dim_variables_in_separate_files(shared_data: Path, tmp_path: Path) -> None:
    months = ["201901", "201902", "201903", "201904"]
    for m in months:
        src = xr.open_dataset(shared_data / "ersst-v5" / f"ersst.v5.{m}.nc", decode_cf=False)
        for var in ("sst", "ssta"):
            src[[var]].to_netcdf(tmp_path / f"{var}.{m}.nc")
        src.close()
    pattern = af.FilePattern(
        lambda variable, time: str(tmp_path / f"{variable}.{time}.nc"),
        af.MergeDim("variable", ["sst", "ssta"]),
        af.ConcatDim("time", months, nitems_per_file=1),
    )
    ds = bake_and_check(af.ZarrRecipe(pattern, target_chunks={"time": 3}), tmp_path / "m.zarr")
    assert set(ds.data_vars) == {"sst", "ssta"}


def test_rerun_skips_finished_build_tasks_and_republishes(shared_data: Path,
                                                         tmp_path: Path) -> None:
    files = [str(shared_data / "godas-ssh" / f"sshg.{y}.nc") for y in (2019, 2020)]
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                           target_chunks={"time": 6})
    target = str(tmp_path / "r.zarr")
    plan = af.compile_plan(recipe, target)
    plan.prepare()
    first = plan.run_task(plan.tasks[0])
    assert not first.skipped and first.bytes_written > 0
    # nothing is visible under the target until finalize
    assert not Path(target).exists()
    with pytest.raises(FileNotFoundError):
        af.open_dataset(target)
    result = af.bake(recipe, target, progress=False)
    assert result.tasks_skipped == 1
    assert verify(target, recipe).ok


def test_time_units_that_differ_between_files(shared_data: Path, tmp_path: Path) -> None:
    """Each file counting time from its own start is re-expressed in the first file's units."""
    files = [str(f) for f in writable_copies(
        [shared_data / "ersst-v5" / f"ersst.v5.2019{m:02d}.nc" for m in range(1, 5)], tmp_path)]
    restamp_time_units(files[2], "days since 2019-03-01 00:00:00")  # same instant, other epoch
    pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=1)
    ds = bake_and_check(af.ZarrRecipe(pattern, target_chunks={"time": 2}), tmp_path / "u.zarr")
    assert ds.time.encoding["units"] == "days since 1854-01-15 00:00"
    assert list(ds.time.dt.month.values) == [1, 2, 3, 4]
