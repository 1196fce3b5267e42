"""Recipe transforms on real archives: each result compared with what xarray gives.

Data: ../shared/data (ERSST v5 monthly files, an ensemble of two downscaled models, GOES GLM
granules, a MADIS record file, a packed OISST day); derived files (overlapping periods, a
file missing a variable, a record file split in two) are written in tmp_path from them.
"""

from __future__ import annotations

import pathlib
import warnings

import netCDF4
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.transforms import (
    DropDuplicateSteps,
    DropVariables,
    ExpandDimFromKey,
    FillMissingVariable,
    KeepVariables,
    ReexpressTimes,
    Rename,
    Select,
    SetAttrs,
    SetEncoding,
)
from arcoforge.forge.verify import verify
from arcoforge.provenance import RECIPE, VERSION


def _ersst(shared: pathlib.Path, n: int = 3) -> list[str]:
    return sorted(str(p) for p in (shared / "ersst-v5").glob("ersst.v5.*.nc"))[:n]


def _bake(recipe: af.ZarrRecipe, path: pathlib.Path) -> xr.Dataset:
    """Bake, check with ``verify`` (the sources opened by xarray, transformed), open."""
    af.bake(recipe, str(path), progress=False)
    report = verify(str(path), recipe)
    assert report.ok, str(report)
    return af.open_dataset(str(path))


def _open_each(files: list[str], **kw: object) -> list[xr.Dataset]:
    return [xr.open_dataset(f, **kw) for f in files]  # type: ignore[arg-type]


# -- metadata-only: the raw-copy path ---------------------------------------------------------


def test_rename_keep_and_attrs_copy_raw_values(shared_data: pathlib.Path,
                                               tmp_path: pathlib.Path) -> None:
    files = _ersst(shared_data)
    recipe = af.ZarrRecipe(
        af.pattern_from_file_sequence(files, "time"),
        transforms=[KeepVariables(["sst"]), Rename({"sst": "sea_surface_temperature"}),
                    SetAttrs({"sea_surface_temperature": {"comment": "renamed"},
                              None: {"title": "ERSST subset"}})])
    out = _bake(recipe, tmp_path / "s.zarr")
    expected = xr.concat(_open_each(files), "time")[["sst"]].rename(
        {"sst": "sea_surface_temperature"})
    assert set(out.data_vars) == {"sea_surface_temperature"}
    xr.testing.assert_equal(out["sea_surface_temperature"], expected["sea_surface_temperature"])
    assert out["sea_surface_temperature"].attrs["comment"] == "renamed"
    assert out.attrs["title"] == "ERSST subset"
    # the encoding of the source is kept (raw copy): float32 with its fill value
    enc = out["sea_surface_temperature"].encoding
    assert enc["dtype"] == np.float32 and enc["_FillValue"] == np.float32(-999.0)
    # transforms are part of provenance and of the recipe hash
    recorded = out.attrs[RECIPE]["transforms"]
    assert [t["transform"] for t in recorded] == ["KeepVariables", "Rename", "SetAttrs"]
    assert recipe.sha256() != af.ZarrRecipe(recipe.pattern).sha256()


def test_ensemble_members_become_a_dimension(shared_data: pathlib.Path,
                                             tmp_path: pathlib.Path) -> None:
    files = sorted(str(p) for p in (shared_data / "models").glob("*.nc"))
    members = ["CanESM2", "HadGEM2-CC"]
    pattern = af.FilePattern(lambda member: next(f for f in files if member in f),
                             af.ConcatDim("member", members, nitems_per_file=1))
    # the two models use different calendars (365_day, 360_day): the shared time axis is
    # meaningless across them, so they are aligned by day of the year (first 360 days)
    steps = [Select(isel={"time": slice(0, 360)}), DropVariables(["time", "time_vectors"]),
             ExpandDimFromKey("member")]
    out = _bake(af.ZarrRecipe(pattern, transforms=steps), tmp_path / "ens.zarr")
    expected = xr.concat(
        [xr.open_dataset(f).isel(time=slice(0, 360)).drop_vars(["time", "time_vectors"])
         .expand_dims(member=[m]) for f, m in zip(files, members)], "member")
    assert out["tasmax"].dims == ("member", "time", "lat", "lon")
    assert list(out["member"].values) == members
    xr.testing.assert_equal(out["tasmax"], expected["tasmax"])


def test_a_static_variable_that_differs_between_files_is_refused(
        shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    files = sorted(str(p) for p in (shared_data / "models").glob("*.nc"))
    members = ["CanESM2", "HadGEM2-CC"]
    pattern = af.FilePattern(lambda member: next(f for f in files if member in f),
                             af.ConcatDim("member", members, nitems_per_file=1))
    steps = [Select(isel={"time": slice(0, 360)}), ExpandDimFromKey("member")]
    # the store would keep one 'time' (365_day) for both models: lost silently before
    with pytest.raises(SchemaError, match=r"variable 'time' .*calendar='365_day' in .*CanESM2"
                                          r".* but '360_day' in .*HadGEM2"):
        af.bake(af.ZarrRecipe(pattern, transforms=steps), str(tmp_path / "x.zarr"),
                progress=False)
    # values that differ (each file cut to another latitude band) are refused as well
    ersst = _ersst(shared_data, 2)
    shift = af.transforms.Function(
        lambda index, ds: ds.isel(lat=slice(index["time"], index["time"] + 80)),
        metadata_only=True)
    with pytest.raises(SchemaError, match=r"variable 'lat' has no 'time' dimension.*values "
                                          r"differ between .*201901.nc and .*201902.nc"):
        af.bake(af.ZarrRecipe(af.pattern_from_file_sequence(ersst, "time"), transforms=[shift]),
                str(tmp_path / "y.zarr"), progress=False)


# -- value-changing: decode, transform, encode ------------------------------------------------


def to_kelvin(index: af.forge.patterns.Index, ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds["sst"] = ds["sst"] + 273.15
    ds["sst"].attrs["units"] = "K"
    return ds


def test_a_function_sees_decoded_values_and_the_encoding_is_kept(
        shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    files = _ersst(shared_data)
    out = _bake(af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                              transforms=[to_kelvin]), tmp_path / "k.zarr")
    expected = xr.concat([to_kelvin(None, d) for d in _open_each(files)], "time")  # type: ignore[arg-type]
    xr.testing.assert_allclose(out["sst"], expected["sst"])
    assert out["sst"].attrs["units"] == "K"
    assert out["sst"].encoding["dtype"] == np.float32
    assert int(out["sst"].isnull().sum()) == int(expected["sst"].isnull().sum()) > 0
    xr.testing.assert_equal(out["ssta"], expected["ssta"])  # untouched variables stay exact
    xr.testing.assert_equal(out["time"], expected["time"])


def test_a_function_that_assigns_in_place_keeps_the_packing_too(
        shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """NCEP air is int16 packed with scale 0.01.  ``ds["air"] = ds["air"] + 0.25`` (in place, as
    pangeo-forge preprocessors write) kept the packing only when written with ``assign``; in
    place it came out float64 unpacked.  ``SetEncoding`` with None keys stores it unpacked."""
    f = str(shared_data / "ncep-air" / "air.nc")
    files = [_subset(f, tmp_path / f"air{i}.nc", "time", slice(31 * i, 31 * (i + 1)))
             for i in range(2)]
    pattern = af.pattern_from_file_sequence(files, "time")

    def warmer(index: object, ds: xr.Dataset) -> xr.Dataset:
        ds["air"] = ds["air"] + 0.25
        return ds

    out = _bake(af.ZarrRecipe(pattern, transforms=[warmer]), tmp_path / "w.zarr")
    raw = xr.open_zarr(str(tmp_path / "w.zarr"), decode_cf=False)["air"]
    with xr.open_dataset(f) as src:
        assert raw.dtype == src["air"].encoding["dtype"] == np.int16
        assert float(raw.attrs["scale_factor"]) == float(src["air"].encoding["scale_factor"])
        expected = src["air"].isel(time=slice(0, 62)) + 0.25  # on the 0.01 grid: exact
        np.testing.assert_allclose(out["air"].values, expected.values, atol=1e-9)
    unpacked = SetEncoding({"air": {"dtype": "float64", "scale_factor": None,
                                    "add_offset": None}})
    out = _bake(af.ZarrRecipe(pattern, transforms=[warmer, unpacked]), tmp_path / "u.zarr")
    raw = xr.open_zarr(str(tmp_path / "u.zarr"), decode_cf=False)["air"]
    assert raw.dtype == np.float64 and "scale_factor" not in raw.attrs
    np.testing.assert_array_equal(out["air"].values, expected.values)


def test_select_by_label_on_packed_data_keeps_the_packing(shared_data: pathlib.Path,
                                                          tmp_path: pathlib.Path) -> None:
    f = str(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc")
    box = {"lat": slice(-10, 10), "lon": slice(100, 160)}
    out = _bake(af.ZarrRecipe(af.pattern_from_file_sequence([f], "time"),
                              transforms=[Select(sel=box)]), tmp_path / "o.zarr")
    expected = xr.open_dataset(f).sel(box)
    xr.testing.assert_equal(out["sst"], expected["sst"])
    raw = xr.open_zarr(str(tmp_path / "o.zarr"), decode_cf=False)
    src = xr.open_dataset(f, decode_cf=False).sel(
        lat=expected.lat.values, lon=expected.lon.values)
    assert raw["sst"].dtype == np.int16 and raw["sst"].attrs["scale_factor"] == np.float32(0.01)
    np.testing.assert_array_equal(raw["sst"].values, src["sst"].values)  # same packed ints


# -- transforms that see every file -----------------------------------------------------------


def _subset(src: str, dst: pathlib.Path, dim: str, sl: slice,
            drop: tuple[str, ...] = ()) -> str:
    """Copy ``src`` to ``dst`` keeping ``sl`` along ``dim`` (and dropping ``drop``), raw: the
    same dtypes, packing and attributes (netCDF4 directly, so nothing is re-encoded)."""
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w", format=a.data_model) as b:
        a.set_auto_maskandscale(False)
        a.set_auto_chartostring(False)
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        n = len(range(*sl.indices(len(a.dimensions[dim]))))
        for name, d in a.dimensions.items():
            b.createDimension(name, n if name == dim else len(d))
        for name, v in a.variables.items():
            if name in drop:
                continue
            attrs = {k: v.getncattr(k) for k in v.ncattrs()}
            fill = attrs.pop("_FillValue", None)
            w = b.createVariable(name, v.datatype, v.dimensions, fill_value=fill)
            w.set_auto_maskandscale(False)
            w.set_auto_chartostring(False)
            w.setncatts(attrs)
            w[...] = v[tuple(sl if d == dim else slice(None) for d in v.dimensions)]
    return str(dst)


def _overlapping(shared: pathlib.Path, tmp: pathlib.Path) -> tuple[list[str], xr.Dataset]:
    """Two files of 3 daily OISST steps each that share the boundary day (as CMIP files that
    repeat a month do), and the 5 distinct days."""
    src = str(shared / "oisst" / "oisst_2003_2004.nc")
    a = _subset(src, tmp / "a.nc", "time", slice(0, 3))
    b = _subset(src, tmp / "b.nc", "time", slice(2, 5))
    return [a, b], xr.open_dataset(src).isel(time=slice(0, 5))


def test_drop_duplicate_steps(shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    files, expected = _overlapping(shared_data, tmp_path)
    pattern = af.pattern_from_file_sequence(files, "time")
    with pytest.raises(SchemaError, match="time"):
        af.bake(af.ZarrRecipe(pattern), str(tmp_path / "plain.zarr"), progress=False)
    for keep in ("first", "last"):
        out = _bake(af.ZarrRecipe(pattern, transforms=[DropDuplicateSteps(keep=keep)]),
                    tmp_path / f"{keep}.zarr")
        xr.testing.assert_equal(out["sst"], expected["sst"])
    with pytest.raises(ConfigError, match="keep is 'first' or 'last'"):
        DropDuplicateSteps(keep="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="DropDuplicateSteps needs every file's schema and "
                                          "must come after"):
        af.ZarrRecipe(pattern, transforms=[DropDuplicateSteps(), Rename({"sst": "t"})])


def test_append_drops_a_repeated_boundary_step(shared_data: pathlib.Path,
                                              tmp_path: pathlib.Path) -> None:
    """Appending a file that repeats the store's last day: keep="first" drops the new file's
    repeat; keep="last" would replace a published step, which an append cannot do: the error
    says so, with dates (it showed raw float days and no reason)."""
    from arcoforge.errors import AppendError
    from arcoforge.forge.append import append

    files, expected = _overlapping(shared_data, tmp_path)
    for keep in ("first", "last"):
        def recipe(n: int) -> af.ZarrRecipe:
            return af.ZarrRecipe(af.pattern_from_file_sequence(files[:n], "time"),
                                 transforms=[DropDuplicateSteps(keep=keep)])  # noqa: B023

        target = str(tmp_path / f"{keep}.zarr")
        af.bake(recipe(1), target, progress=False)
        if keep == "first":
            append(recipe(2), target, progress=False)
            assert verify(target, recipe(2)).ok
            xr.testing.assert_equal(af.open_dataset(target)["sst"], expected["sst"])
            continue
        with pytest.raises(AppendError) as err:
            append(recipe(2), target, progress=False)
        assert str(err.value) == (
            f"{files[1]} starts at time=2003-01-03 12:00:00 (proleptic_gregorian), not after the "
            f"end of {target} (time=2003-01-03 12:00:00 (proleptic_gregorian)): it repeats the "
            "store's last step. An append only adds "
            "steps after the published ones (DropDuplicateSteps(keep='first') drops the new "
            "file's repeat; keep='last' would replace a published step, which needs a rebuild). "
            "Remove the file from the pattern or rebuild with bake().")


def test_fill_a_variable_missing_from_some_files(shared_data: pathlib.Path,
                                                 tmp_path: pathlib.Path) -> None:
    ersst = _ersst(shared_data, 2)
    files = [ersst[0], _subset(ersst[1], tmp_path / "no_ssta.nc", "time", slice(None),
                               drop=("ssta",))]
    pattern = af.pattern_from_file_sequence(files, "time")
    with pytest.raises(SchemaError, match="'ssta'.* missing from .*no_ssta.nc"):
        af.bake(af.ZarrRecipe(pattern), str(tmp_path / "plain.zarr"), progress=False)
    out = _bake(af.ZarrRecipe(pattern, transforms=[FillMissingVariable("ssta")]),
                tmp_path / "f.zarr")
    first = xr.open_dataset(ersst[0])
    xr.testing.assert_equal(out["ssta"].isel(time=[0]), first["ssta"])
    assert bool(out["ssta"].isel(time=1).isnull().all())
    xr.testing.assert_equal(out["sst"], xr.concat(_open_each(ersst), "time")["sst"])


def test_append_fills_a_variable_no_file_at_the_seam_has(shared_data: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    """An append sees only the new files and those at the store's end: when none of them has
    the variable, FillMissingVariable takes its template from the published store (it said
    "no source file has a variable 'ssta'" although the store holds it)."""
    from arcoforge.forge.append import append

    ersst = _ersst(shared_data, 4)
    files = [ersst[0]] + [  # the store's last file and the new ones lack ssta
        _subset(f, tmp_path / f"no_ssta{i}.nc", "time", slice(None), drop=("ssta",))
        for i, f in enumerate(ersst[1:])]
    steps = [FillMissingVariable("ssta")]

    def recipe(n: int) -> af.ZarrRecipe:
        return af.ZarrRecipe(af.pattern_from_file_sequence(files[:n], "time"), transforms=steps,
                             target_chunks={"time": 2})

    target = tmp_path / "fill.zarr"
    af.bake(recipe(2), str(target), progress=False)
    append(recipe(4), str(target), progress=False)
    assert verify(str(target), recipe(4)).ok
    out = af.open_dataset(str(target))
    expected = xr.concat(_open_each(files), "time", data_vars="all")
    for name in ("sst", "ssta"):
        xr.testing.assert_equal(out[name], expected[name])
    assert int(out["ssta"].isel(time=[1, 2, 3]).notnull().sum()) == 0


GLM_EVENTS = ["event_time_offset", "event_lat", "event_lon", "event_energy"]


def _assert_glm_events(out: xr.Dataset, files: list[str]) -> None:
    """The store's GLM events equal xarray's concatenation of the granules."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = xr.concat([d[GLM_EVENTS] for d in _open_each(files)], "number_of_events")
    for name in GLM_EVENTS:
        xr.testing.assert_equal(out[name].reset_coords(drop=True),
                                expected[name].reset_coords(drop=True))


def test_times_counted_from_each_files_own_origin(shared_data: pathlib.Path,
                                                  tmp_path: pathlib.Path) -> None:
    """GOES GLM granules count ``event_time_offset`` (int16 milliseconds) from their own start:
    in the first granule's units the third's offsets no longer fit int16."""
    files = sorted(str(p) for p in (shared_data / "ragged").glob("OR_GLM*.nc"))
    pattern = af.pattern_from_file_sequence(files, "number_of_events")
    keep = KeepVariables(GLM_EVENTS)
    with pytest.raises(SchemaError, match=r"attribute .units. is .milliseconds since 2018-07-02 04:33:00.000. in .*s20181830433000.* but .milliseconds since 2018-07-02 04:33:20.000. .*ReexpressTimes"):
        af.bake(af.ZarrRecipe(pattern, transforms=[keep]), str(tmp_path / "x.zarr"),
                progress=False)
    out = _bake(af.ZarrRecipe(pattern, transforms=[keep, ReexpressTimes()]),
                tmp_path / "glm.zarr")
    _assert_glm_events(out, files)
    raw = xr.open_zarr(str(tmp_path / "glm.zarr"), decode_cf=False)["event_time_offset"]
    assert raw.dtype == np.int64
    assert raw.attrs["units"] == "milliseconds since 2018-07-02 04:33:00.000"


@pytest.mark.parametrize("chunk", [None, 100])
def test_append_keeps_the_stores_time_origin(shared_data: pathlib.Path, tmp_path: pathlib.Path,
                                             chunk: int | None) -> None:
    """ReexpressTimes binds each variable to the units of the first build's first file; an
    append re-expresses the new granule in the store's units, not in those of the first file
    at the seam (all its events were 20 s early, and with small chunks it rewrote rows of the
    published granule with them)."""
    from arcoforge.forge.append import append

    files = sorted(str(p) for p in (shared_data / "ragged").glob("OR_GLM*.nc"))
    steps = [KeepVariables(GLM_EVENTS), ReexpressTimes()]
    chunks = {"number_of_events": chunk} if chunk else {}

    def recipe(n: int) -> af.ZarrRecipe:
        return af.ZarrRecipe(af.pattern_from_file_sequence(files[:n], "number_of_events"),
                             transforms=steps, target_chunks=chunks)

    target = tmp_path / "glm.zarr"
    af.bake(recipe(2), str(target), progress=False)
    append(recipe(3), str(target), progress=False)
    assert verify(str(target), recipe(3)).ok
    _assert_glm_events(af.open_dataset(str(target)), files)


# -- strings along the concat dimension --------------------------------------------------------


def test_char_arrays_along_the_record_dimension(shared_data: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    src = str(shared_data / "records" / "madishydro.nc")
    parts = [_subset(src, tmp_path / f"part{i}.nc", "recNum", sl)
             for i, sl in enumerate([slice(0, 600), slice(600, None)])]
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(parts, "recNum"))
    af.bake(recipe, str(tmp_path / "rec.zarr"), progress=False)
    out = af.open_dataset(str(tmp_path / "rec.zarr"))
    expected = xr.open_dataset(src)
    # one known difference, reported by verify: xarray cannot read back a byte-string
    # _FillValue from Zarr, so 'staticIds' is stored without one and its unset entries read
    # as b'' where netCDF masks them to NaN
    report = verify(str(tmp_path / "rec.zarr"), recipe)
    assert report.problems and all("'staticIds'" in p for p in report.problems), str(report)
    for name in ("stationId", "stationName", "providerId", "precip5minDD", "rawMessage",
                 "precip1hr"):
        xr.testing.assert_equal(out[name], expected[name])


# -- versions, errors, compat ------------------------------------------------------------------


def test_a_changed_transform_publishes_a_new_version(shared_data: pathlib.Path,
                                                     tmp_path: pathlib.Path) -> None:
    files = _ersst(shared_data, 2)
    pattern = af.pattern_from_file_sequence(files, "time")
    target = str(tmp_path / "v.zarr")
    af.bake(af.ZarrRecipe(pattern, transforms=[SetAttrs({"sst": {"comment": "a"}})]), target,
            progress=False)
    again = af.bake(af.ZarrRecipe(pattern, transforms=[SetAttrs({"sst": {"comment": "a"}})]),
                    target, progress=False)
    assert again.tasks_skipped == again.tasks  # unchanged: nothing to do
    af.bake(af.ZarrRecipe(pattern, transforms=[to_kelvin]), target, progress=False)
    out = af.open_dataset(target)
    assert out.attrs[VERSION] == "1.1" and out["sst"].attrs["units"] == "K"


def test_transform_errors_name_the_file_and_the_step(shared_data: pathlib.Path,
                                                     tmp_path: pathlib.Path) -> None:
    files = _ersst(shared_data, 2)
    pattern = af.pattern_from_file_sequence(files, "time")

    def broken(index: object, ds: xr.Dataset) -> xr.Dataset:
        return ds["no_such_variable"].to_dataset()

    with pytest.raises(SchemaError, match=r"transform .*broken failed on .*201901.nc .*"
                                          r"KeyError"):
        af.bake(af.ZarrRecipe(pattern, transforms=[broken]), str(tmp_path / "a.zarr"),
                progress=False)
    with pytest.raises(ConfigError, match="returned NoneType, not an xarray.Dataset"):
        af.bake(af.ZarrRecipe(pattern, transforms=[lambda index, ds: None]),
                str(tmp_path / "b.zarr"), progress=False)
    with pytest.raises(SchemaError, match=r"Rename: no variable 'tmax' in the source"):
        af.bake(af.ZarrRecipe(pattern, transforms=[Rename({"tmax": "t"})]),
                str(tmp_path / "c.zarr"), progress=False)
    with pytest.raises(ConfigError, match="is neither a function"):
        af.ZarrRecipe(pattern, transforms=["rename"])
    with pytest.raises(ConfigError, match="ExpandDimFromKey\\('member'\\): the pattern has no "
                                          "combine dimension 'member'"):
        af.bake(af.ZarrRecipe(pattern, transforms=[ExpandDimFromKey("member")]),
                str(tmp_path / "d.zarr"), progress=False)


def test_pangeo_forge_process_input_runs_as_a_transform(shared_data: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    from arcoforge.compat.pangeo_forge_recipes.patterns import pattern_from_file_sequence
    from arcoforge.compat.pangeo_forge_recipes.recipes import XarrayZarrRecipe

    files = _ersst(shared_data, 2)
    seen: list[str] = []

    def process_input(ds: xr.Dataset, fname: str) -> xr.Dataset:
        seen.append(fname)
        return ds.drop_vars("ssta")

    recipe = XarrayZarrRecipe(pattern_from_file_sequence(files, "time"),
                              process_input=process_input)
    out = _bake(recipe, tmp_path / "p.zarr")
    assert "ssta" not in out and set(files) <= set(seen)
    xr.testing.assert_equal(out["sst"], xr.concat(_open_each(files), "time")["sst"])


def test_a_dimension_from_date_keys_bakes_and_appends(shared_data: pathlib.Path,
                                                      tmp_path: pathlib.Path) -> None:
    """Keys that are dates become a datetime coordinate, stored encoded as a file would hold
    it, so a later append sees the same dtype."""
    import pandas as pd

    f = str(shared_data / "oisst" / "oisst_2003_2004.nc")
    days = [_subset(f, tmp_path / f"day{i}.nc", "time", slice(i, i + 1)) for i in range(3)]
    keys = list(pd.date_range("2003-01-01", periods=3, freq="D"))

    def pattern(n: int) -> af.FilePattern:
        return af.FilePattern(lambda run: days[keys.index(run)],
                              af.ConcatDim("run", keys[:n], nitems_per_file=1))

    steps = [DropVariables(["time"]), Rename({"time": "step"}), ExpandDimFromKey("run")]
    target = str(tmp_path / "runs.zarr")
    af.bake(af.ZarrRecipe(pattern(2), transforms=steps), target, progress=False)
    from arcoforge.forge.append import append

    append(af.ZarrRecipe(pattern(3), transforms=steps), target, progress=False)
    out = af.open_dataset(target)
    assert list(out["run"].values) == [np.datetime64(k) for k in keys]
    src = xr.open_dataset(f).isel(time=slice(0, 3))
    np.testing.assert_array_equal(out["sst"].values[:, 0], src["sst"].values)


def test_transforms_run_the_same_on_processes_and_beam(shared_data: pathlib.Path,
                                                       tmp_path: pathlib.Path) -> None:
    """Store tasks apply the transforms where they run: worker processes and Beam's runner
    build the same bytes as local threads."""
    from tests.test_engines import assert_same_store

    files = _ersst(shared_data, 4)
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                           target_chunks={"time": 2},
                           transforms=[KeepVariables(["sst"]), to_kelvin,
                                       SetAttrs({None: {"title": "K"}})])
    af.bake(recipe, str(tmp_path / "threads.zarr"), progress=False)
    af.bake(recipe, str(tmp_path / "procs.zarr"), processes=True, workers=2, progress=False)
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "procs.zarr")
    af.bake(recipe, str(tmp_path / "beam.zarr"), engine="beam", progress=False)
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "beam.zarr")


def test_recipe_checks_see_the_published_store(shared_data: pathlib.Path,
                                               tmp_path: pathlib.Path) -> None:
    from arcoforge.errors import CheckError

    files = _ersst(shared_data, 2)
    seen: list[int] = []

    def has_two_months(store: object) -> None:
        ds = xr.open_dataset(store, engine="zarr", consolidated=True)  # type: ignore[arg-type]
        seen.append(ds.sizes["time"])

    def wants_ice(store: object) -> None:
        assert "ice" in xr.open_dataset(store, engine="zarr"), "no ice"  # type: ignore[arg-type]

    pattern = af.pattern_from_file_sequence(files, "time")
    af.bake(af.ZarrRecipe(pattern, checks=[has_two_months]), str(tmp_path / "a.zarr"),
            progress=False)
    assert seen == [2]
    with pytest.raises(CheckError, match=r"recipe check .*wants_ice failed on .*b.zarr: "
                                         r"AssertionError: no ice"):
        af.bake(af.ZarrRecipe(pattern, checks=[wants_ice]), str(tmp_path / "b.zarr"),
                progress=False)


def test_values_a_packing_cannot_hold_are_an_error(shared_data: pathlib.Path,
                                                   tmp_path: pathlib.Path) -> None:
    """OISST packs sst in int16 with scale 0.01 (±327.67 °C): a step that makes millidegrees
    keeps that packing, so its values would wrap around when cast; a named error instead."""
    f = str(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc")

    def milli(index: object, ds: xr.Dataset) -> xr.Dataset:
        return ds.assign(sst=ds.sst * 1000)

    pattern = af.pattern_from_file_sequence([f], "time")
    with pytest.raises(SchemaError) as err:
        af.bake(af.ZarrRecipe(pattern, transforms=[milli]), str(tmp_path / "bad.zarr"),
                progress=False)
    text = str(err.value)
    assert "variable 'sst': a transform made values from" in text
    assert "(int16, scale_factor 0.01, add_offset 0) holds only -327.68 to 327.67: they would " \
        "wrap around" \
        in text and "SetEncoding" in text
    assert not (tmp_path / "bad.zarr").exists()
    # with an encoding that holds them: built, the values of xarray's result of the same step
    # (in int32 steps of 0.01, which xarray decodes to float64)
    af.bake(af.ZarrRecipe(pattern, transforms=[milli, SetEncoding({"sst": {"dtype": "int32"}})]),
            str(tmp_path / "ok.zarr"), progress=False)
    out = af.open_dataset(str(tmp_path / "ok.zarr"))
    assert out["sst"].encoding["dtype"] == np.dtype("int32")
    with xr.open_dataset(f) as src:
        np.testing.assert_allclose(out["sst"].values, src["sst"].values * 1000, rtol=1e-6)


def test_a_fill_value_the_new_dtype_cannot_hold_is_an_error(shared_data: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    """ERSST's sst keeps its _FillValue -999 under SetEncoding(dtype=int8): the cast wrapped it
    to 25, and the 1,157 valid 25 °C points of three months read back as missing."""
    files = _ersst(shared_data, 3)
    pattern = af.pattern_from_file_sequence(files, "time")
    with pytest.raises(SchemaError) as err:
        af.bake(af.ZarrRecipe(pattern, transforms=[SetEncoding({"sst": {"dtype": "int8"}})]),
                str(tmp_path / "bad.zarr"), progress=False)
    assert str(err.value) == (
        "variable 'sst': its _FillValue -999.0 cannot be stored as int8 (it would become another "
        "value, and that value would read back as missing); give one that int8 holds, e.g. "
        "SetEncoding({'sst': {'dtype': 'int8', '_FillValue': -128}})")
    assert not (tmp_path / "bad.zarr").exists()
    # the fix the message names: whole degrees, the same missing points as the sources
    recipe = af.ZarrRecipe(pattern, transforms=[
        SetEncoding({"sst": {"dtype": "int8", "_FillValue": -128}})])
    out = _bake(recipe, tmp_path / "ok.zarr")
    src = xr.concat(_open_each(files), "time")["sst"]
    np.testing.assert_array_equal(out["sst"].isnull(), src.isnull())
    np.testing.assert_array_equal(out["sst"].values, np.round(src.values))


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_verify_compares_a_requested_packing_as_stored(shared_data: pathlib.Path,
                                                       tmp_path: pathlib.Path) -> None:
    """verify applies SetEncoding as a store written with it reads back (values to the packing's
    precision, _FillValue in the new dtype): it called every such build a MISMATCH, so it could
    not tell real damage from the packing asked for.  It still finds a changed value."""
    import zarr

    files = _ersst(shared_data, 3)
    pattern = af.pattern_from_file_sequence(files, "time")
    for i, enc in enumerate([{"dtype": "float64"},
                             {"dtype": "int16", "scale_factor": np.float32(0.01),
                              "_FillValue": np.int16(-32768)}]):
        recipe = af.ZarrRecipe(pattern, transforms=[SetEncoding({"sst": enc})])
        out = _bake(recipe, tmp_path / f"p{i}.zarr")  # verify OK inside
        assert out["sst"].encoding["dtype"] == np.dtype(enc["dtype"])
    arr = zarr.open_group(str(tmp_path / "p1.zarr"), mode="r+")["sst"]
    block = arr[:]
    block[1, 0, 40, 90] += 7
    arr[:] = block
    text = str(verify(str(tmp_path / "p1.zarr"), recipe))
    assert "variable 'sst': 1 of 16020 values differ" in text, text


def test_a_decoded_step_adds_no_fill_value_the_source_lacks(shared_data: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    """After a value-changing step every variable is encoded again; xarray's encoder gives each
    float a NaN _FillValue, which ERSST's coordinates do not have (nor open_mfdataset of them)."""
    files = _ersst(shared_data, 2)

    def identity(index: object, ds: xr.Dataset) -> xr.Dataset:
        return ds

    out = _bake(af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                              transforms=[identity]), tmp_path / "i.zarr")
    with xr.open_mfdataset(files, combine="nested", concat_dim="time") as src:
        for name in ("lat", "lon", "lev", "sst"):
            assert out[name].encoding.get("_FillValue") == src[name].encoding.get("_FillValue") \
                or (np.isnan(out[name].encoding.get("_FillValue", 0.0))
                    and np.isnan(src[name].encoding.get("_FillValue", 0.0))), name
        assert "_FillValue" not in src["lat"].encoding and "_FillValue" not in out["lat"].encoding


def test_flt_max_written_in_decimal_is_a_float32_fill_value(shared_data: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    """3.4028235e38 (FLT_MAX as usually written) is a little above finfo(float32).max as a
    float64, but float32 holds it: the fill check refused it."""
    files = _ersst(shared_data, 2)
    steps = [SetEncoding({"sst": {"dtype": "float32", "_FillValue": 3.4028235e38}})]
    out = _bake(af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"), transforms=steps),
                tmp_path / "m.zarr")
    assert out["sst"].encoding["_FillValue"] == np.float32(3.4028235e38)
    src = xr.concat(_open_each(files), "time")["sst"]
    np.testing.assert_array_equal(out["sst"].isnull(), src.isnull())
