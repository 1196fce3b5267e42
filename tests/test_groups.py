"""Several NetCDF4 groups of each source into one store, as Zarr groups.

Data: ../shared/data/groups, two consecutive Sentinel-6A altimeter passes (NetCDF4 with a root
holding 64 global attributes, ``/data_01`` with ``time`` (600 steps) and 84 variables, and
``/data_01/ku`` whose 27 variables use its parent's ``time``).  Every result is compared with
what xarray gives for the same group (``xr.open_mfdataset(..., group=...)``) and with
``verify``; a file with two groups that disagree on ``time`` is written in tmp_path.
"""

from __future__ import annotations

import pathlib

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.errors import (
    AppendError,
    ConfigError,
    NotFoundError,
    SchemaError,
    SourceReadError,
)
from arcoforge.forge.append import append
from arcoforge.forge.verify import verify
from arcoforge.open import store_groups
from arcoforge.provenance import strip_provenance
from arcoforge.transforms import (
    DropVariables,
    KeepVariables,
    OnGroup,
    Rename,
    Select,
    SetAttrs,
    SetEncoding,
)

GROUPS = ["data_01", "data_01/ku"]


def _files(shared: pathlib.Path) -> list[str]:
    return sorted(str(p) for p in (shared / "groups").glob("S6A_*.nc"))


def _recipe(files: list[str], **kw: object) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"), **kw)  # type: ignore[arg-type]


def _expected(files: list[str], group: str) -> xr.Dataset:
    return xr.open_mfdataset(files, group=group, combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()


def _assert_group_equals_xarray(store: str, files: list[str], group: str) -> None:
    ours = af.open_dataset(store, group=group).load()
    expected = _expected(files, group)
    xr.testing.assert_identical(ours, expected)
    for name, var in expected.variables.items():  # packing, fill values, on-disk dtypes
        for key in ("dtype", "scale_factor", "add_offset", "_FillValue", "units", "calendar"):
            assert ours[name].encoding.get(key) == var.encoding.get(key) or key == "dtype" and \
                np.dtype(ours[name].encoding[key]) == np.dtype(var.encoding[key]), (name, key)


def test_groups_become_zarr_groups_equal_to_xarray(shared_data: pathlib.Path,
                                                   tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)
    store = str(tmp_path / "s6.zarr")
    # 500-step chunks: chunk rows straddle the two files
    recipe = _recipe(files, groups=GROUPS, target_chunks={"time": 500})
    result = af.bake(recipe, store, progress=False)
    assert result.tasks == 3
    for group in GROUPS:
        _assert_group_equals_xarray(store, files, group)
    # the tree mirrors the files'; ku takes its time coordinate from data_01, as in the file
    tree = af.open_datatree(store)
    source_tree = xr.open_datatree(files[0])
    assert tree.groups == source_tree.groups == ("/", "/data_01", "/data_01/ku")
    assert set(tree["data_01/ku"].data_vars) == set(source_tree["data_01/ku"].data_vars)
    assert tree["data_01/ku"].sizes["time"] == 1200
    assert "time" in tree["data_01/ku"].coords
    # the dataset's attributes are the (first) file's global attributes
    with xr.open_dataset(files[0]) as root:
        assert strip_provenance(tree.attrs) == root.attrs
        assert len(root.attrs) == 64 and not root.variables
    assert store_groups(store) == GROUPS
    report = verify(store, recipe)
    assert report.ok, str(report)
    assert report.checked_variables == 84 + 27
    # the Zarr layout other tools read: nested groups with their own metadata
    root_group = zarr.open_group(store, mode="r")
    assert sorted(root_group["data_01"].group_keys()) == ["ku"]  # type: ignore[union-attr]
    assert "ssha" in root_group["data_01/ku"]  # type: ignore[operator]


def test_all_groups_into_icechunk_and_from_workers(shared_data: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)
    recipe = _recipe(files, groups="*")
    repo = f"icechunk://{tmp_path / 'repo'}"
    af.bake(recipe, repo, progress=False)
    assert store_groups(repo) == GROUPS
    for group in GROUPS:
        _assert_group_equals_xarray(repo, files, group)
    report = verify(repo, recipe)
    assert report.ok, str(report)
    # the same bytes from worker processes (each opens the groups it reads on its own)
    from tests.test_engines import assert_same_store

    af.bake(recipe, str(tmp_path / "threads.zarr"), progress=False)
    af.bake(recipe, str(tmp_path / "procs.zarr"), processes=True, workers=2, progress=False)
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "procs.zarr")
    # and from a Dask cluster, whose workers also scan the groups
    af.bake(recipe, str(tmp_path / "dask.zarr"), engine="dask", workers=2,
            threads_per_worker=1, progress=False)
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "dask.zarr")


def test_verify_names_the_group_of_a_changed_value(shared_data: pathlib.Path,
                                                    tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)
    store = str(tmp_path / "s6.zarr")
    recipe = _recipe(files, groups=GROUPS)
    af.bake(recipe, store, progress=False)
    group = zarr.open_group(store, mode="r+")
    arr = group["data_01/ku/swh_ocean"]
    values = arr[:]
    fill = arr.attrs["_FillValue"]
    i = 600 + int(np.flatnonzero(values[600:] != fill)[0])  # a value of the second file
    values[i] += 5  # five raw steps
    arr[:] = values
    group["data_01"].attrs["invented"] = "yes"
    zarr.consolidate_metadata(store)  # what readers see of the attributes
    report = verify(store, recipe)
    assert not report.ok
    text = str(report)
    assert f"group 'data_01/ku': variable 'swh_ocean': 1 of 600 values differ from {files[1]}" in text
    assert "group 'data_01': dataset attributes" in text and "['invented']" in text
    # a group the store holds but its arcoforge:groups does not list: found in the tree
    zarr.open_group(store, mode="r+").require_group("data_01/intruder")
    assert "groups in the store but not in the recipe: ['data_01/intruder']" in \
        str(verify(store, recipe))


def test_append_a_pass_to_a_grouped_store(shared_data: pathlib.Path,
                                          tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)
    store = str(tmp_path / "s6.zarr")
    af.bake(_recipe(files[:1], groups=GROUPS, target_chunks={"time": 400}), store,
            progress=False)
    recipe = _recipe(files, groups=GROUPS, target_chunks={"time": 400})
    with pytest.raises(AppendError, match="built with groups"):
        append(_recipe(files), store)
    result = append(recipe, store)
    assert (result.files, result.rows_added, result.version) == (1, 600, "1.1")
    for group in GROUPS:
        _assert_group_equals_xarray(store, files, group)
    report = verify(store, recipe)
    assert report.ok, str(report)


def test_transforms_run_on_each_group(shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)

    def double_swh(index: object, ds: xr.Dataset) -> xr.Dataset:
        assert ds.encoding["group"] == "data_01/ku"  # OnGroup passed only this group
        return ds.assign(swh_ocean=ds.swh_ocean * 2)

    steps = [KeepVariables(["ssha", "swh_ocean"]), double_swh]
    recipe = _recipe(files, groups=GROUPS, transforms=[
        # recipe-wide steps run on every listed group (the root is not one: it has no time)
        Select(isel={"time": slice(0, 500)}),
        SetAttrs({None: {"comment": "first 500 steps of each pass"}}),
        OnGroup("data_01/ku", [*steps, SetEncoding({"swh_ocean": {"dtype": "int32"}})]),
        OnGroup("", [SetAttrs({None: {"project": "arcoforge tests"}})])])  # the root's
    store = str(tmp_path / "t.zarr")
    af.bake(recipe, store, progress=False)
    tree = af.open_datatree(store)
    ku = xr.concat([xr.open_dataset(f, group="data_01/ku").isel(time=slice(0, 500))
                    for f in files], dim="time")
    assert set(tree["data_01/ku"].data_vars) == {"ssha", "swh_ocean"}
    np.testing.assert_allclose(tree["data_01/ku"].swh_ocean.values, 2 * ku.swh_ocean.values)
    assert tree["data_01/ku"].swh_ocean.encoding["dtype"] == np.dtype("int32")
    assert tree["data_01"].sizes["time"] == 1000
    assert tree["data_01"].attrs["comment"] == tree["data_01/ku"].attrs["comment"]
    assert "comment" not in tree.attrs and tree.attrs["project"] == "arcoforge tests"
    assert len(tree["data_01"].data_vars) == 81  # untouched by the ku-only steps
    report = verify(store, recipe)
    assert report.ok, str(report)

    # doubled wave heights no longer fit the int16 packing: an error, not wrapped values
    bad = _recipe(files, groups=GROUPS, transforms=[OnGroup("data_01/ku", steps)])
    with pytest.raises(SchemaError) as err:
        af.bake(bad, str(tmp_path / "bad.zarr"), progress=False)
    assert "variable 'swh_ocean': a transform made values from" in str(err.value)
    assert "(int16, scale_factor 0.001) holds only -32.768 to 32.767: they would wrap " \
        "around" in str(err.value)
    assert not pathlib.Path(tmp_path / "bad.zarr").exists()


# -- errors -------------------------------------------------------------------------------------


def test_group_errors_name_the_groups(shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    files = _files(shared_data)
    with pytest.raises(ConfigError, match="its groups are: data_01, data_01/ku"):
        af.bake(_recipe(files, groups=["data_01", "data_02"]), str(tmp_path / "x.zarr"),
                progress=False)
    with pytest.raises(ConfigError, match="name one group in open_kwargs, or several"):
        af.ZarrRecipe(af.pattern_from_file_sequence(files, "time",
                                                    open_kwargs={"group": "data_01"}),
                      groups=GROUPS)
    with pytest.raises(ConfigError, match="cannot be combined with named groups"):
        _recipe(files, groups=["*", "data_01"])
    with pytest.raises(ConfigError, match="VirtualRecipe does not build several groups"):
        af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"), groups=GROUPS)
    with pytest.raises(ConfigError, match="needs every file and every group"):
        from arcoforge.transforms import DropDuplicateSteps

        OnGroup("data_01", [DropDuplicateSteps()])

    # a recipe-wide step that names a variable of one group only: the error names the group
    with pytest.raises(SchemaError) as err:
        af.bake(_recipe(files, groups=GROUPS, transforms=[Rename({"ssha": "sla"})]),
                str(tmp_path / "r.zarr"), progress=False)
    assert "Rename: no variable 'ssha' in group 'data_01' of the source at" in str(err.value)
    assert "OnGroup(<group>, [...])" in str(err.value)

    store = str(tmp_path / "s6.zarr")
    af.bake(_recipe(files[:1], groups=["data_01"]), store, progress=False)
    with pytest.raises(NotFoundError, match=r"has no group 'data_01/ku'; its groups are "
                                            r"\['data_01'\]"):
        af.open_dataset(store, group="data_01/ku")
    # a Zarr store as the input is read where it is, one group through open_kwargs
    with pytest.raises(ConfigError, match="needs NetCDF4/HDF5 files, but .* is read where it "
                                          "is as zarr; name one group with open_kwargs"):
        af.bake(_recipe([store], groups=["data_01"]), str(tmp_path / "z.zarr"), progress=False)
    plain = str(tmp_path / "plain.zarr")
    ersst = sorted((shared_data / "ersst-v5").glob("ersst.v5.*.nc"))[:1]
    af.bake(_recipe([str(ersst[0])]), plain, progress=False)
    with pytest.raises(NotFoundError, match="built without groups"):
        af.open_dataset(plain, group="data_01")


def test_groups_that_disagree_on_a_dimension(tmp_path: pathlib.Path) -> None:
    """1 Hz and 20 Hz groups both call their dimension ``time``: one store cannot hold both."""
    path = tmp_path / "two_rates.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for name, n in (("data_01", 3), ("data_20", 60)):
            g = nc.createGroup(name)
            g.createDimension("time", n)
            t = g.createVariable("time", "f8", ("time",))
            t.units = "seconds since 2021-01-01"
            t[:] = np.arange(n) / (1 if n == 3 else 20)
            g.createVariable("height", "f4", ("time",))[:] = np.arange(n)
    with pytest.raises(SchemaError) as err:
        af.bake(_recipe([str(path)], groups=["data_01", "data_20"]),
                str(tmp_path / "x.zarr"), progress=False)
    assert (f"dimension 'time' has length 60 in group 'data_20' of {path} but 3 in group "
            "'data_01'") in str(err.value)
    assert "with a recipe of their own" in str(err.value)
    # each rate on its own builds, and equals xarray's view of that group
    af.bake(_recipe([str(path)], groups=["data_20"]), str(tmp_path / "hz20.zarr"),
            progress=False)
    with xr.open_dataset(path, group="data_20") as expected:
        xr.testing.assert_identical(
            af.open_dataset(str(tmp_path / "hz20.zarr"), group="data_20").load(),
            expected.load())


def test_catalog_describes_every_group(shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from arcoforge.catalog.stac import publish, validate_collection

    files = _files(shared_data)
    store = str(tmp_path / "s6.zarr")
    af.bake(_recipe(files, groups=GROUPS), store, progress=False)
    col = publish(str(tmp_path / "catalog"), store, dataset_id="s6a-passes")
    assert validate_collection(col) == []
    variables = col["cube:variables"]
    assert "data_01/ku/swh_ocean" in variables and "data_01/altitude" in variables
    assert len([v for v in variables if v.startswith("data_01/ku/")]) == 27
    assert col["cube:dimensions"]["time"]["type"] == "temporal"
    assert col["extent"]["temporal"]["interval"] == [["2021-04-03T00:40:57Z",
                                                      "2021-04-03T01:00:56Z"]]
    # the passes run eastward across 0 (longitudes 321.5 .. 360, 0 .. 69.2): the box is that
    # arc, from the first point to the last, not the whole globe
    track = _expected(files, "data_01")
    lon = ((track.longitude.values + 180) % 360) - 180
    assert col["extent"]["spatial"]["bbox"] == [[
        round(float(lon[0]), 6), round(float(track.latitude.min()), 6),
        round(float(lon[-1]), 6), round(float(track.latitude.max()), 6)]]
    assert lon[0] < 0 < lon[-1]
    # a group of a catalog dataset opens by id, and so does the whole tree
    ku = af.open_dataset(str(tmp_path / "catalog"), "s6a-passes", group="data_01/ku")
    xr.testing.assert_identical(ku.load(), _expected(files, "data_01/ku"))
    tree = af.open_datatree(str(tmp_path / "catalog"), "s6a-passes")
    assert tree.groups == ("/", "/data_01", "/data_01/ku")


def test_cli_bakes_verifies_and_shows_the_tree(shared_data: pathlib.Path, tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from arcoforge.cli import main

    files = _files(shared_data)
    recipe_py = tmp_path / "recipe.py"
    recipe_py.write_text(
        "import arcoforge as af\n"
        f"recipe = af.ZarrRecipe(af.pattern_from_file_sequence({files!r}, 'time'),\n"
        "                        groups=['data_01', 'data_01/ku'])\n")
    store = str(tmp_path / "s6.zarr")
    assert main(["bake", str(recipe_py), "--target", store]) == 0
    assert main(["verify", store, "--against", str(recipe_py)]) == 0
    assert "OK:" in capsys.readouterr().out
    assert main(["inspect", store]) == 0
    out = capsys.readouterr().out
    assert "Group: /data_01/ku" in out and "swh_ocean" in out and "Group: /data_01\n" in out


def test_root_variables_and_group_attributes(tmp_path: pathlib.Path) -> None:
    """A station file: the root holds static variables and packed attributes, a group its
    observations along ``time`` (two files); ``groups=["/", "obs"]`` keeps both places."""
    paths = []
    for k in range(2):
        path = tmp_path / f"station_{k}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.title = "station"
            nc.createDimension("level", 3)
            lv = nc.createVariable("level", "f4", ("level",))
            lv[:] = [10, 20, 30]
            obs = nc.createGroup("obs")
            obs.platform = "buoy 7"
            obs.calibration = np.float32(0.5)
            obs.createDimension("time", None)
            t = obs.createVariable("time", "i4", ("time",))
            t.units = f"hours since 2021-01-0{k + 1}"
            t[:] = np.arange(4)
            v = obs.createVariable("temp", "i2", ("time", "level"), fill_value=-999)
            v.scale_factor = np.float32(0.01)
            v[:] = np.arange(12).reshape(4, 3) + 100 * k
        paths.append(str(path))
    recipe = _recipe(paths, groups=["/", "obs"])
    store = str(tmp_path / "station.zarr")
    af.bake(recipe, store, progress=False)
    report = verify(store, recipe)
    assert report.ok, str(report)
    root = af.open_dataset(store)
    assert list(root.data_vars) == [] and list(root.coords) == ["level"]
    obs = af.open_dataset(store, group="obs")
    expected = _expected(paths, "obs")
    xr.testing.assert_identical(obs.load(), expected)
    assert obs.attrs["calibration"].dtype == np.float32  # the group attribute's own type
    assert obs["temp"].dtype == np.float32  # float32 scale_factor: float32 values, as netCDF
    assert obs["time"].values[4] == np.datetime64("2021-01-02T00:00")  # second file's origin


def test_a_type_zarr_cannot_hold_names_its_group_and_the_fix(tmp_path: pathlib.Path) -> None:
    paths = []
    for k in range(2):
        path = tmp_path / f"f{k}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            g = nc.createGroup("a")
            g.createDimension("time", 2)
            g.createVariable("time", "f8", ("time",))[:] = [2 * k, 2 * k + 1]
            g.createVariable("v", "f4", ("time",))[:] = [1, 2]
            ragged = g.createVariable("ragged", g.createVLType(np.int32, "ints"), ("time",))
            ragged[0], ragged[1] = np.arange(3, dtype=np.int32), np.arange(1, dtype=np.int32)
        paths.append(str(path))
    with pytest.raises(SourceReadError) as err:
        af.bake(_recipe(paths, groups=["a"]), str(tmp_path / "x.zarr"), progress=False)
    fix = "transforms=[arcoforge.transforms.OnGroup('a', [arcoforge.transforms." \
        "DropVariables(['ragged'])])]"
    assert f"variable 'a/ragged' in {paths[0]} has the NetCDF-4 variable-length (vlen) " \
        "type" in str(err.value) and fix in str(err.value)
    recipe = _recipe(paths, groups=["a"], transforms=[OnGroup("a", [DropVariables(["ragged"])])])
    af.bake(recipe, str(tmp_path / "ok.zarr"), progress=False)  # the fix it names works
    assert verify(str(tmp_path / "ok.zarr"), recipe).ok


def test_a_child_listed_without_its_parent_warns(shared_data: pathlib.Path,
                                                 tmp_path: pathlib.Path) -> None:
    """``data_01/ku`` alone is built as xarray shows that group (no time values): said."""
    files = _files(shared_data)
    with pytest.warns(UserWarning, match="group 'data_01/ku' takes its 'time' coordinate from "
                                         "group 'data_01', which groups= does not list"):
        af.bake(_recipe(files, groups=["data_01/ku"]), str(tmp_path / "ku.zarr"),
                progress=False)
    _assert_group_equals_xarray(str(tmp_path / "ku.zarr"), files, "data_01/ku")


def test_names_zarr_keeps_for_itself_and_arcoforge_attributes_of_sources(
        tmp_path: pathlib.Path) -> None:
    """A NetCDF variable may be called ``zarr.json``; a store cannot hold it under that name
    (it crashed the build). A source's own ``arcoforge:*`` attributes (an arcoforge store used
    as an input) are not copied: this build records its own."""
    path = tmp_path / "names.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.setncattr("arcoforge:version", "7.0")
        nc.title = "names"
        nc.createDimension("time", None)
        nc.createVariable("time", "f8", ("time",))[:] = [0, 1]
        nc.createVariable("zarr.json", "f4", ("time",))[:] = [1, 2]
        g = nc.createGroup("g")
        g.setncattr("arcoforge:groups", "not these")
        g.createVariable("zarr.json", "f4", ("time",))[:] = [3, 4]
    for groups, fix in ((None, "transforms=[T.Rename({'zarr.json': 'zarr_json'})]"),
                        (["g"], "transforms=[T.OnGroup('g', [T.Rename({'zarr.json': "
                                     "'zarr_json'})])]")):
        with pytest.raises(SchemaError) as err:
            af.bake(_recipe([str(path)], groups=groups), str(tmp_path / "x.zarr"),
                    progress=False)
        assert "has a name that Zarr keeps for its own metadata" in str(err.value)
        assert fix in str(err.value)
    recipe = _recipe([str(path)], groups=["/", "g"], transforms=[
        Rename({"zarr.json": "zarr_json"})])  # the name is in both groups
    store = str(tmp_path / "ok.zarr")
    af.bake(recipe, store, progress=False)
    assert verify(store, recipe).ok
    tree = af.open_datatree(store)
    assert tree.attrs["arcoforge:version"] == "1.0" and tree.attrs["title"] == "names"
    assert store_groups(store) == ["g"] and "arcoforge:groups" not in tree["g"].attrs
    np.testing.assert_array_equal(tree["g"].zarr_json.values, [3, 4])


def test_verify_of_a_grouped_store_downloads_each_source_once(
        shared_data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Sources over HTTP, three groups to compare (root, data_01, data_01/ku): every pass is
    downloaded once for the whole verify, not once per group."""
    from arcoforge.forge.io.fetch import COUNTERS
    from arcoforge.testing.http import start_http_server

    server = start_http_server(shared_data / "groups")
    try:
        names = [pathlib.Path(f).name for f in _files(shared_data)]
        recipe = _recipe([f"{server.url}/{n}" for n in names], groups=GROUPS)
        store = str(tmp_path / "s6.zarr")
        af.bake(recipe, store, progress=False)
        before = COUNTERS["downloads"]
        report = verify(store, recipe)
        assert report.ok, str(report)
        assert COUNTERS["downloads"] - before == len(names)
    finally:
        server.stop()


def test_a_pass_cut_short_is_named_and_nothing_is_published(shared_data: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    """Every way a grouped scan opens a file first checks it is whole: with transforms (the
    root's attributes read on their own) and with groups="*" (the file's groups listed)."""
    from arcoforge.errors import TruncatedFileError
    from arcoforge.testing.samples import writable_copies

    files = [str(p) for p in writable_copies(_files(shared_data), tmp_path / "src")]
    with open(files[1], "r+b") as fh:
        fh.truncate(300_000)
    for kw in ({"groups": GROUPS, "transforms": [OnGroup("data_01/ku", [KeepVariables(["ssha"])])]},
               {"groups": "*"}):
        with pytest.raises(TruncatedFileError, match=f"{files[1]} is truncated"):
            af.bake(_recipe(files, **kw), str(tmp_path / "cut.zarr"), progress=False)
        assert not (tmp_path / "cut.zarr").exists()
