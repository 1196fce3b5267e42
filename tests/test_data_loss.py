"""Regression tests for cases that once lost data without an error (issue: forge core, second
pass): same-named variables across merge keys, and unreadable coordinate values in messages."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import pytest

import arcoforge as af
from arcoforge.errors import ArcoforgeError, SchemaError
from arcoforge.forge.schema import format_coordinate_value

MODELS = ["CanESM2", "HadGEM2-CC"]


def _member_file(shared_data: Path, model: str) -> str:
    return str(shared_data / "models" /
               f"tasmax_day_{model}_rcp85_r1i1p1_na10kgrid_qm-moving-50bins-detrend_2095.nc")


def test_merge_dim_over_files_with_the_same_variable_is_refused(shared_data: Path,
                                                                tmp_path: Path) -> None:
    pattern = af.FilePattern(lambda member: _member_file(shared_data, member),
                             af.MergeDim("member", MODELS))
    target = tmp_path / "ens.zarr"
    with pytest.raises(SchemaError) as info:
        af.bake(af.ZarrRecipe(pattern), str(target), progress=False)
    msg = str(info.value)
    assert "'tasmax'" in msg and "'time_vectors'" in msg
    assert "CanESM2" in msg and "HadGEM2-CC" in msg          # both files named
    assert "member=0" in msg and "member=1" in msg            # and their merge keys
    assert "ConcatDim" in msg and "new dimension" in msg      # the fix
    assert isinstance(info.value, ArcoforgeError)
    assert not target.exists()                                # nothing published


def test_merge_dim_with_shared_coordinates_still_works(shared_data: Path, tmp_path: Path) -> None:
    """Separate files per variable share their coordinates (time, lat, lon): that is no clash."""
    import xarray as xr

    months = ["201901", "201902"]
    for m in months:
        with xr.open_dataset(shared_data / "ersst-v5" / f"ersst.v5.{m}.nc",
                             decode_cf=False) as src:
            for var in ("sst", "ssta"):
                src[[var]].to_netcdf(tmp_path / f"{var}.{m}.nc")
    pattern = af.FilePattern(lambda variable, time: str(tmp_path / f"{variable}.{time}.nc"),
                             af.MergeDim("variable", ["sst", "ssta"]),
                             af.ConcatDim("time", months, nitems_per_file=1))
    af.bake(af.ZarrRecipe(pattern), str(tmp_path / "m.zarr"), progress=False)
    ds = af.open_dataset(str(tmp_path / "m.zarr"))
    assert set(ds.data_vars) == {"sst", "ssta"}


def test_duplicate_time_is_reported_as_a_date_in_the_files_calendar(shared_data: Path,
                                                                    tmp_path: Path) -> None:
    src = shared_data / "calendars" / "ref_test_360_day_1900.nc"

    first = tmp_path / "a.nc"
    second = tmp_path / "b.nc"
    for dst in (first, second):
        dst.write_bytes(src.read_bytes())
    pattern = af.pattern_from_file_sequence([str(first), str(second)], "time")
    with pytest.raises(SchemaError) as info:
        af.compile_plan(af.ZarrRecipe(pattern), str(tmp_path / "x.zarr"))
    msg = str(info.value)
    with netCDF4.Dataset(first) as nc:
        calendar = nc["time"].calendar
    assert f"({calendar})" in msg
    assert "np.float" not in msg and "np.int" not in msg
    assert str(first) in msg and str(second) in msg


def test_format_coordinate_value() -> None:
    import numpy as np

    attrs = {"units": "days since 2000-01-01", "calendar": "360_day"}
    assert format_coordinate_value(np.float64(360 * 99 + 345), attrs) == "2099-12-16 (360_day)"
    assert format_coordinate_value(np.int32(7), {"units": "m"}) == "7"
    # an undecodable calendar falls back to the number, never raises
    assert format_coordinate_value(np.float64(1.5), {"units": "days since 0000-00-00",
                                                     "calendar": "noleap"}) == "1.5"


def test_a_dataset_id_that_looks_like_a_version_is_an_id(tmp_path: Path) -> None:
    """``open_dataset(x, "2020")`` always means dataset id "2020" of a catalog; versions of a
    store are opened with ``version=`` (once, "1.0" silently opened a version)."""
    from arcoforge.catalog import publish
    from arcoforge.errors import TargetError

    demo = Path(af.__file__).parent / "demo_data" / "ersst-v5"
    files = sorted(str(p) for p in demo.glob("*.nc"))[:2]
    store = str(tmp_path / "ersst.zarr")
    af.bake(af.ZarrRecipe(af.pattern_from_file_sequence(files, "time")), store, progress=False)
    with pytest.raises(TargetError, match=r"not a STAC catalog.*version='1.0'"):
        af.open_dataset(store, "1.0")
    assert af.open_dataset(store, version="1.0").sizes["time"] == 2

    catalog = tmp_path / "catalog"
    publish(str(catalog), store, dataset_id="2020", validate=False)
    by_id = af.open_dataset(str(catalog), "2020")
    assert by_id.sizes["time"] == 2
    with pytest.raises(KeyError, match="no dataset '1.0'"):
        af.open_dataset(str(catalog), "1.0")


def test_a_build_and_an_append_print_no_library_chatter(tmp_path: Path, shared_data: Path) -> None:
    """Icechunk's Rust WARN lines and zarr's expected warnings stay off the terminal; with
    ARCOFORGE_DEBUG=1 they are shown."""
    import os
    import subprocess
    import sys
    import textwrap

    files = [str(shared_data / "godas-ssh" / f"sshg.{y}.nc") for y in (2019, 2020)]
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        import arcoforge as af
        from arcoforge.forge.append import append
        if __name__ == "__main__":
            files = {files!r}
            for target in ("icechunk://{tmp_path}/repo", "{tmp_path}/z.zarr"):
                af.bake(af.ZarrRecipe(af.pattern_from_file_sequence(files[:1], "time")), target,
                        progress=False)
                append(af.ZarrRecipe(af.pattern_from_file_sequence(files, "time")), target)
            print("done")
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("ICECHUNK_LOG", "ARCOFORGE_DEBUG")}
    run = subprocess.run([sys.executable, "-W", "default", str(script)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "done"
    assert "WARN" not in run.stderr and "Warning" not in run.stderr, run.stderr
    noisy = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           env={**env, "ARCOFORGE_DEBUG": "1"}, timeout=300, cwd=tmp_path)
    assert noisy.returncode == 0, noisy.stderr
    assert "WARN" in noisy.stderr  # asked for: shown


def test_merged_files_on_different_grids_are_refused(shared_data: Path, tmp_path: Path) -> None:
    """Files of two merge keys that disagree on a shared coordinate (lat) would keep one grid
    and put the other variable on it silently."""
    import xarray as xr

    months = ["201901", "201902"]
    for m in months:
        with xr.open_dataset(shared_data / "ersst-v5" / f"ersst.v5.{m}.nc",
                             decode_cf=False) as src:
            src[["sst"]].to_netcdf(tmp_path / f"sst.{m}.nc")
            shifted = src[["ssta"]].assign_coords(lat=src.lat + 1.0)
            shifted.to_netcdf(tmp_path / f"ssta.{m}.nc")
    pattern = af.FilePattern(lambda variable, time: str(tmp_path / f"{variable}.{time}.nc"),
                             af.MergeDim("variable", ["sst", "ssta"]),
                             af.ConcatDim("time", months, nitems_per_file=1))
    target = tmp_path / "m.zarr"
    with pytest.raises(SchemaError, match=r"coordinate 'lat' differs between .*sst\.201901\.nc "
                                          r"and .*ssta\.201901\.nc"):
        af.bake(af.ZarrRecipe(pattern), str(target), progress=False)
    assert not target.exists()
