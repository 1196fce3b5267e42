"""verify is an independent oracle: it passes honest builds and fails every store that lost,
changed or mixed up data, naming the file, variable and first differing index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.cli import main
from arcoforge.forge.verify import verify
from arcoforge.testing.samples import dated_copies, writable_copies

DEMO = Path(af.__file__).parent / "demo_data"
ERSST = sorted(str(f) for f in (DEMO / "ersst-v5").glob("ersst.v5.*.nc"))
NC3 = "oisst/oisst-v2-avhrr-only-19811231-2deg.nc"


def _build(recipe: af.ZarrRecipe, target: Path) -> str:
    af.bake(recipe, str(target), progress=False)
    return str(target)


def _ersst(n: int, **kwargs: object) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence(ERSST[:n], "time", **kwargs),
                         target_chunks={"time": 2})


@pytest.fixture
def ersst_store(tmp_path: Path) -> str:
    return _build(_ersst(3), tmp_path / "e.zarr")


# -- honest builds ------------------------------------------------------------------------------

def test_honest_ersst_build_is_ok(ersst_store: str) -> None:
    report = verify(ersst_store, _ersst(3))
    assert report.ok, str(report)
    assert (report.checked_files, report.checked_variables) == (3, 6)
    assert str(report).startswith(f"OK: {ersst_store} equals its sources (6 variables, 3 files)")


def test_honest_oisst_packed_build_is_ok(tmp_path: Path) -> None:
    files = dated_copies(DEMO / "oisst" / "oisst-avhrr-v02r01.20220913.nc", 2, tmp_path)
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                           target_chunks={"time": 1, "lat": 360})
    target = _build(recipe, tmp_path / "o.zarr")
    report = verify(target, recipe)
    assert report.ok, str(report)
    assert report.checked_files == 2
    raw = verify(target, recipe, open_kwargs={"decode_cf": False})  # packed int16 as stored
    assert raw.ok, str(raw)


# -- stores that lost or changed data -----------------------------------------------------------

def test_one_changed_value_is_a_mismatch(ersst_store: str) -> None:
    arr = zarr.open_group(ersst_store, mode="r+")["sst"]
    block = arr[1]
    was = block[0, 40, 90]
    block[0, 40, 90] = was + np.float32(1.5)
    arr[1] = block
    report = verify(ersst_store, _ersst(3))
    assert not report.ok
    text = str(report)
    assert text.startswith("MISMATCH")
    assert (f"variable 'sst': 1 of 16020 values differ from {ERSST[1]} (first at store index "
            f"(1, 0, 40, 90): store {str(was + np.float32(1.5))} vs source {str(was)})") in text
    assert len(report.problems) == 1


def test_merge_dim_over_members_with_the_same_variable(shared_data: Path,
                                                       tmp_path: Path) -> None:
    """(a) two members that both hold `tasmax`: a store with only the first is a MISMATCH."""
    can, had = sorted(str(f) for f in (shared_data / "models").glob("tasmax_day_*.nc"))
    target = _build(af.ZarrRecipe(af.pattern_from_file_sequence([can], "time")),
                    tmp_path / "m.zarr")
    members = {"CanESM2": can, "HadGEM2-CC": had}
    merged = af.ZarrRecipe(af.FilePattern(lambda member, time: members[member],
                                          af.MergeDim("member", list(members)),
                                          af.ConcatDim("time", [0])))
    report = verify(target, merged)
    assert not report.ok
    text = str(report)
    assert ("dimension 'time': the store has 365 steps but the 1 file of merge group "
            f"member='HadGEM2-CC' ({had}) have 360") in text
    assert (f"variable 'tasmax' is in merge groups member='CanESM2' and member='HadGEM2-CC' "
            f"with 365 vs 360 steps along 'time': {can} and {had} (the store can hold only "
            "one of them)") in text
    assert f"variable 'tasmax': 465836 of 466560 values differ from {had}" in text
    # dates of two calendars that print alike are told apart
    assert ("variable 'time': 360 of 360 values differ from "
            f"{had} (first at store index (0,): store cftime.DatetimeNoLeap(2095, 1, 1") in text


def test_merged_files_whose_shared_coordinate_differs(tmp_path: Path) -> None:
    """A variable in two merge groups with different values: a clash naming both files."""
    for m in ("201901", "201902"):
        src = xr.open_dataset(DEMO / "ersst-v5" / f"ersst.v5.{m}.nc", decode_cf=False)
        for var in ("sst", "ssta"):
            src[[var]].to_netcdf(tmp_path / f"{var}.{m}.nc")
        src.close()

    def recipe(folder: Path) -> af.ZarrRecipe:
        return af.ZarrRecipe(af.FilePattern(lambda variable, time: str(folder / f"{variable}.{time}.nc"),
                                            af.MergeDim("variable", ["sst", "ssta"]),
                                            af.ConcatDim("time", ["201901", "201902"])))

    target = _build(recipe(tmp_path), tmp_path / "m.zarr")
    assert verify(target, recipe(tmp_path)).ok
    bad = tmp_path / "bad"
    bad.mkdir()
    for m in ("201901", "201902"):
        os.link(tmp_path / f"sst.{m}.nc", bad / f"sst.{m}.nc")
        with xr.open_dataset(tmp_path / f"ssta.{m}.nc", decode_cf=False) as ds:
            ds.load().assign_coords(lat=ds.lat + 0.5).to_netcdf(bad / f"ssta.{m}.nc")
    text = str(verify(target, recipe(bad)))
    assert (f"variable 'lat' is in merge groups variable='sst' and variable='ssta' with "
            f"different values: {bad / 'sst.201901.nc'} and {bad / 'ssta.201901.nc'}") in text
    assert f"variable 'lat': 89 of 89 values differ from {bad / 'ssta.201901.nc'}" in text


def test_truncated_netcdf3_source(shared_data: Path, tmp_path: Path) -> None:
    """(b) a NetCDF3 file cut short after the build fails verification, naming the file."""
    [copy] = writable_copies([shared_data / NC3], tmp_path)
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence([str(copy)], "time"))
    target = _build(recipe, tmp_path / "t.zarr")
    assert verify(target, recipe).ok
    os.truncate(copy, copy.stat().st_size * 2 // 3)
    report = verify(target, recipe)
    assert not report.ok
    assert len(report.problems) == 1, str(report)  # nothing else: the file's names were seen
    assert report.problems[0].startswith(f"{copy} is truncated: ")
    assert report.problems[0].endswith("(its values were not compared)")


# -- undecodable times -------------------------------------------------------------------------

CALENDAR = "calendars/b003_TS_200-299.nc"


def test_undecodable_calendar(shared_data: Path, tmp_path: Path) -> None:
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence([str(shared_data / CALENDAR)], "time"))
    target = _build(recipe, tmp_path / "c.zarr")
    raw = verify(target, recipe, decode_times=False)
    assert raw.ok, str(raw)
    assert raw.checked_variables == 6 and not raw.notes
    auto = verify(target, recipe)  # tries to decode, then compares raw numbers and says so
    assert auto.ok, str(auto)
    assert "note: times could not be decoded (the store: unable to decode time units" in str(auto)
    assert "the raw time numbers were compared (decode_times=False)" in str(auto)
    forced = verify(target, recipe, decode_times=True)
    assert not forced.ok
    assert forced.problems[0].startswith("cannot open the store: unable to decode time units")
    # a changed raw time number is found
    t = zarr.open_group(target, mode="r+")["time"]
    t[5] = t[5] + 1
    report = verify(target, recipe, decode_times=False)
    assert "variable 'time': 1 of 100 values differ" in str(report)


def test_cli_no_decode_times(shared_data: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / CALENDAR
    recipe_py = tmp_path / "recipe.py"
    recipe_py.write_text("import arcoforge as af\n"
                         f"r = af.ZarrRecipe(af.pattern_from_file_sequence([{str(path)!r}], "
                         "'time'))\n")
    target = str(tmp_path / "c.zarr")
    assert main(["bake", str(recipe_py), "--target", target, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["verify", target, "--against", str(recipe_py), "--no-decode-times"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "note" not in out
    ts = zarr.open_group(target, mode="r+")["TS"]
    block = ts[:]
    block[99, 63, 127] = -1.0
    ts[:] = block
    assert main(["verify", target, "--against", str(recipe_py), "--no-decode-times"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "variable 'TS': 1 of 819200 values differ" in out
    assert "(first at store index (99, 63, 127): store -1.0 vs source" in out


# -- what is missing, extra, changed ------------------------------------------------------------

def test_variables_missing_or_extra(tmp_path: Path) -> None:
    recipe = _ersst(2, open_kwargs={"drop_variables": ["ssta"]})
    target = _build(recipe, tmp_path / "d.zarr")
    assert verify(target, recipe).ok
    report = verify(target, recipe, open_kwargs={"drop_variables": []})
    assert report.problems == [f"variables missing from the store: 'ssta' (in {ERSST[0]})"]
    full = _build(_ersst(2), tmp_path / "f.zarr")
    report = verify(full, recipe)
    assert report.problems == ["variables in the store but in no source: ['ssta']"]


def test_store_shorter_than_its_sources(ersst_store: str) -> None:
    text = str(verify(ersst_store, _ersst(4)))
    assert ("dimension 'time': the store has 3 steps but the 4 files of merge group all files "
            f"({ERSST[0]}, ...) have 4") in text
    assert (f"variable 'sst': shape (3, 1, 89, 180) in the store cannot hold (1, 1, 89, 180) of "
            f"{ERSST[3]} (the file is at time[3:4] of the store)") in text


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_attributes_and_encodings(ersst_store: str) -> None:
    group = zarr.open_group(ersst_store, mode="r+")
    group["sst"].attrs["long_name"] = "changed"
    group["time"].attrs["calendar"] = "proleptic_gregorian"  # same dates, other encoding
    zarr.consolidate_metadata(ersst_store)
    text = str(verify(ersst_store, _ersst(3)))
    assert (f"variable 'sst' (vs {ERSST[0]}): attributes differ (only on one side: []; "
            "changed (store, source): [('long_name', 'changed', ") in text
    assert (f"variable 'time': encoding 'calendar' is 'proleptic_gregorian' in the store vs "
            f"'gregorian' in {ERSST[0]}") in text
    assert "values differ" not in text


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_attribute_types_lost_from_the_store(ersst_store: str) -> None:
    """Zarr keeps attributes as JSON; the numpy types of the sources' attributes (float32
    valid_min, int32 thread number) live in arcoforge:attr_types.  A store that lost that record
    reads back the same numbers as float64/int64: verify reports the change of type."""
    group = zarr.open_group(ersst_store, mode="r+")
    types = dict(group.attrs["arcoforge:attr_types"])
    del types[""], types["sst"]
    group.attrs["arcoforge:attr_types"] = types
    zarr.consolidate_metadata(ersst_store)
    report = verify(ersst_store, _ersst(3))
    assert not report.ok
    text = str(report)
    assert (f"variable 'sst' (vs {ERSST[0]}): attributes differ (only on one side: []; "
            "changed (store, source): [('valid_max', 'float64(45.0)', 'float32(45.0)'), "
            "('valid_min', 'float64(-3.0)', 'float32(-3.0)')])"
            ) in text
    assert (f"dataset attributes (vs {ERSST[0]}): attributes differ (only on one side: []; "
            "changed (store, source): [('geospatial_lat_max', 'float64(") in text
    assert "'ssta'" not in text and "values differ" not in text


def test_doctored_sources_dtype_dims_concat_dim(ersst_store: str, tmp_path: Path) -> None:
    files = [str(p) for p in writable_copies(ERSST[:3], tmp_path / "src")]
    with xr.open_dataset(files[1], decode_cf=False) as ds:
        doctored = ds.load()
    doctored["ssta"] = doctored.ssta.astype("float64")
    for packing in ("scale_factor", "add_offset"):  # else float32 packing decodes to float32
        del doctored["ssta"].attrs[packing]
    doctored["sst"] = doctored.sst.isel(time=0, drop=True)
    doctored.to_netcdf(files[1] + ".new")
    os.replace(files[1] + ".new", files[1])
    with xr.open_dataset(files[2], decode_cf=False) as ds:
        doctored = ds.load()
    doctored["ssta"] = doctored.ssta.transpose("time", "lev", "lon", "lat")
    doctored.to_netcdf(files[2] + ".new")
    os.replace(files[2] + ".new", files[2])
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"))
    text = str(verify(ersst_store, recipe))
    assert (f"variable 'sst': has dimension 'time' in {files[0]} but not in {files[1]}") in text
    assert f"variable 'ssta': dtype float32 in the store vs float64 in {files[1]}" in text
    assert ("variable 'ssta': dims ('time', 'lev', 'lat', 'lon') in the store vs "
            f"('time', 'lev', 'lon', 'lat') in {files[2]}") in text


def test_sources_that_cannot_be_read(ersst_store: str, tmp_path: Path) -> None:
    text = tmp_path / "ersst.v5.201903.nc"
    text.write_text("not a netCDF file\n" * 10)
    report = verify(ersst_store, af.ZarrRecipe(af.pattern_from_file_sequence(
        [*ERSST[:2], str(text)], "time")))
    assert any(p.startswith(f"cannot open {text} on its own: ") and
               p.endswith("later files of merge group all files cannot be placed")
               for p in report.problems), str(report)
    gone = tmp_path / "gone.nc"
    report = verify(ersst_store, af.ZarrRecipe(af.pattern_from_file_sequence(
        [ERSST[0], str(gone)], "time")))
    assert any(p.startswith("cannot fetch a source, so later files of merge group all files "
                            f"cannot be placed: {gone}") for p in report.problems), str(report)
    report = verify(ersst_store, af.ZarrRecipe(af.pattern_from_file_sequence(ERSST[:3],
                                                                             "depth")))
    assert f"{ERSST[0]} has no dimension 'depth' to concatenate along" in report.problems


def test_store_that_cannot_be_opened(tmp_path: Path) -> None:
    report = verify(str(tmp_path / "nothing.zarr"), _ersst(1))
    assert not report.ok and report.problems[0].startswith("cannot open the store: ")


def test_values_compared_block_by_block(shared_data: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's variable is read a few rows at a time; indices and counts span the blocks."""
    import arcoforge.forge.verify as verify_module

    monkeypatch.setattr(verify_module, "_BLOCK_BYTES", 100_000)  # 3 of TS's 100 rows at a time
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence([str(shared_data / CALENDAR)], "time"),
                           target_chunks={"time": 10})
    target = _build(recipe, tmp_path / "c.zarr")
    assert verify(target, recipe, decode_times=False).ok
    ts = zarr.open_group(target, mode="r+")["TS"]
    for t in (58, 99):
        row = ts[t]
        row[10, 20] += 1
        ts[t] = row
    report = verify(target, recipe, decode_times=False)
    assert report.problems[0].startswith(
        f"variable 'TS': 2 of 819200 values differ from {shared_data / CALENDAR} (first at "
        "store index (58, 10, 20)")


def test_a_changed_scalar_variable_is_a_mismatch(shared_data: Path, tmp_path: Path) -> None:
    """0-d variables (the sea-ice file's ``projection`` holds its CRS attributes) are compared
    too: a change is reported, not a crash of verify."""
    f = str(shared_data / "seaice" / "seaice_conc_daily_nh_20211231_f17_v04r00.nc")
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence([f], "tdim"))
    store = str(tmp_path / "ice.zarr")
    af.bake(recipe, store, progress=False)
    assert verify(store, recipe).ok
    zarr.open_group(store, mode="r+")["projection"][...] = np.bytes_(b"X")
    report = verify(store, recipe)
    assert not report.ok
    assert (f"variable 'projection': 1 of 1 values differ from {f} (first at store index (): "
            "store b'X' vs source b'')") in str(report)


def test_a_source_changed_under_a_virtual_store_is_reported(tmp_path: Path, http_server) -> None:
    """A store of references reads its sources at every open: a file reprocessed in place on a
    server that ignores If-Match changed the published version, and verify (which compared the
    store with the sources as they are now) said OK.  It now compares each source's sha256 with
    the one recorded at build time."""
    import netCDF4

    served = tmp_path / "www"
    served.mkdir()
    for f in ERSST[:3]:  # uncompressed and contiguous: an in-place rewrite keeps every offset
        with xr.open_dataset(f) as ds:
            ds.to_netcdf(served / Path(f).name,
                         encoding={v: {"zlib": False, "contiguous": True} for v in ds.data_vars})
    server = http_server(served)
    urls = [f"{server.url}/{Path(f).name}" for f in ERSST[:3]]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(urls, "time"))
    target = f"icechunk://{tmp_path / 'refs'}"
    af.bake(recipe, target, progress=False)
    assert verify(target, recipe).ok
    with netCDF4.Dataset(served / Path(ERSST[1]).name, "r+") as nc:
        nc["sst"][:] = nc["sst"][:] + 5.0
    report = verify(target, recipe)
    assert not report.ok
    text = str(report)
    assert f"  - {urls[1]} changed since the store was built (sha256 " in text
    assert ("now): the store's references read the new bytes, so its published version no "
            "longer holds what was built; build it again") in text
    assert len(report.problems) == 1  # its values equal the changed file's: nothing else differs
