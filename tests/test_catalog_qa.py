"""Catalog fixes from QA: versions removed by retention, projected-grid bboxes, time
coordinates along another dimension, CLI errors, id reuse, site snippet, variable lists."""

from __future__ import annotations

import html
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.catalog import open_dataset as open_by_id
from arcoforge.catalog import publish, search
from arcoforge.catalog.search import summaries
from arcoforge.catalog.site import write_site
from arcoforge.catalog.stac import (
    UNKNOWN_EXTENT,
    cube_dimensions,
    cube_variables,
    spatial_bbox,
    temporal_interval,
    validate_collection,
)
from arcoforge.cli import main as cli_main
from arcoforge.errors import ConfigError, NotFoundError
from tests.servers import shared_data_dir

pyproj = pytest.importorskip("pyproj")

DATA = shared_data_dir()
ERSST = DATA / "ersst-v5"
SEAICE = DATA / "seaice" / "seaice_conc_monthly_nh_202112_f17_v04r00.nc"
needs_ersst = pytest.mark.skipif(not (ERSST / "ersst.v5.201901.nc").exists(),
                                 reason="ERSST v5 files not found (ARCOFORGE_SHARED_DATA)")
needs_seaice = pytest.mark.skipif(not SEAICE.exists(),
                                  reason="sea-ice CDR file not found (ARCOFORGE_SHARED_DATA)")


def _collection(catalog: Path, cid: str) -> dict[str, Any]:
    return dict(json.loads((catalog / cid / "collection.json").read_text()))


# -- 1. a version removed by retention -----------------------------------------------------------


def _ersst_recipe(n: int) -> Any:
    dates = pd.date_range("2019-01", periods=n, freq="MS")
    pattern = af.FilePattern(lambda time: str(ERSST / f"ersst.v5.{time:%Y%m}.nc"),
                             af.ConcatDim("time", keys=dates, nitems_per_file=1))
    return af.ZarrRecipe(pattern, target_chunks={"time": 6})


@pytest.fixture(scope="module")
def appended(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ERSST bake of 6 months published as 1.0, appended to 12 months (1.1, retention removes
    1.0 from the store) and published again."""
    d = tmp_path_factory.mktemp("appended")
    store, cat = d / "ersst.zarr", d / "catalog"
    af.bake(_ersst_recipe(6), str(store), progress=False)
    publish(cat, store, dataset_id="ersst")
    af.append(_ersst_recipe(12), str(store))
    publish(cat, store, dataset_id="ersst")
    return {"dir": d, "store": store, "catalog": cat}


@needs_ersst
def test_version_removed_by_retention_is_history_not_openable(appended: dict[str, Path]
                                                              ) -> None:
    store, cat = appended["store"], appended["catalog"]
    from arcoforge.forge.versions import list_versions

    assert [v.version for v in list_versions(str(store))] == ["1.1"]
    col = _collection(cat, "ersst")
    by_version = {v["version"]: v for v in col["arcoforge:versions"]}
    assert by_version["1.0"].get("in_store") is not True
    assert by_version["1.0"]["removed"] is True
    assert by_version["1.1"]["in_store"] is True and "removed" not in by_version["1.1"]
    assert validate_collection(col) == []
    with pytest.raises(NotFoundError, match=r"version 1\.0 of dataset 'ersst' was removed "
                       r"from its store .*ersst\.zarr by retention.*versions that open: 1\.1"):
        open_by_id(cat, "ersst", version="1.0")
    assert open_by_id(cat, "ersst", version="1.1").sizes["time"] == 12
    assert open_by_id(cat, "ersst").sizes["time"] == 12
    [s] = summaries(cat)
    assert s.versions == ["1.1"] and s.removed_versions == ["1.0"]
    [hit] = search(cat, time="2019-10")
    assert hit.versions == ["1.1"]


@needs_ersst
def test_site_marks_a_removed_version(appended: dict[str, Path], tmp_path: Path) -> None:
    report = write_site(appended["catalog"], tmp_path / "site", plots=False)
    page = (tmp_path / "site" / report.pages["ersst"]).read_text()
    table = page.split("<h2>Versions</h2>")[1].split("</table>")[0]
    rows = {r.split("</td>")[0].split(">")[-1]: r for r in table.split("<tr>")[1:]
            if "<td" in r}
    assert "removed from the store by retention" in rows["1.0"]
    assert "removed" not in rows["1.1"] and "opens" in rows["1.1"]


@needs_ersst
def test_stale_catalog_names_retention_when_opening(appended: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """A catalog written before the fix (1.0 still ``in_store``) gives a clear error too."""
    import shutil

    cat = tmp_path / "old"
    shutil.copytree(appended["catalog"], cat)
    path = cat / "ersst" / "collection.json"
    col = json.loads(path.read_text())
    for v in col["arcoforge:versions"]:
        if v["version"] == "1.0":
            v.pop("removed")
            v["in_store"] = True
    path.write_text(json.dumps(col))
    with pytest.raises(NotFoundError, match=r"version 1\.0 of dataset 'ersst' is listed by "
                       r"catalog .* but no longer in its store .*removed by retention"):
        open_by_id(cat, "ersst", version="1.0")


# -- 2. projected grids ----------------------------------------------------------------------


def _polar_grid(x0: float, x1: float, y0: float, y1: float, step: float = 25_000.0,
                *, with_crs: bool = True, latlon: bool = False) -> xr.Dataset:
    """A field on an EPSG:3413 grid whose cell edges are x0..x1, y0..y1 (metres)."""
    crs = pyproj.CRS.from_epsg(3413)
    x = np.arange(x0 + step / 2, x1, step)
    y = np.arange(y1 - step / 2, y0, -step)
    ds = xr.Dataset({"v": (("y", "x"), np.ones((y.size, x.size), "float32"))},
                    coords={"x": ("x", x, {"standard_name": "projection_x_coordinate",
                                           "units": "m"}),
                            "y": ("y", y, {"standard_name": "projection_y_coordinate",
                                           "units": "m"})})
    if with_crs:
        ds["crs"] = xr.DataArray(np.int32(0), attrs=crs.to_cf())
        ds["v"].attrs["grid_mapping"] = "crs"
    if latlon:
        X, Y = np.meshgrid(x, y)
        lon, lat = pyproj.Transformer.from_crs(crs, 4326, always_xy=True).transform(X, Y)
        ds = ds.assign_coords(lon=(("y", "x"), lon, {"standard_name": "longitude",
                                                     "units": "degrees_east"}),
                              lat=(("y", "x"), lat, {"standard_name": "latitude",
                                                     "units": "degrees_north"}))
    return ds


def _true_box(x0: float, x1: float, y0: float, y1: float) -> tuple[float, ...]:
    """lon/lat range of a dense sampling of the whole grid (edges included)."""
    X, Y = np.meshgrid(np.linspace(x0, x1, 801), np.linspace(y0, y1, 801))
    lon, lat = pyproj.Transformer.from_crs(3413, 4326, always_xy=True).transform(X, Y)
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


def test_projected_grid_bbox_from_its_grid_mapping(tmp_path: Path) -> None:
    # south of Greenland, away from the pole: lon -75..-15-ish, lat ~55..70
    x0, x1, y0, y1 = -1_000_000.0, 500_000.0, -3_500_000.0, -2_000_000.0
    ds = _polar_grid(x0, x1, y0, y1)
    w, s, e, n = spatial_bbox(ds)
    tw, ts, te, tn = _true_box(x0, x1, y0, y1)
    assert w == pytest.approx(tw, abs=0.05) and e == pytest.approx(te, abs=0.05)
    assert s == pytest.approx(ts, abs=0.05) and n == pytest.approx(tn, abs=0.05)
    dims = cube_dimensions(ds)
    assert dims["x"]["reference_system"] == 3413 and dims["y"]["reference_system"] == 3413
    ds.to_zarr(tmp_path / "g.zarr", zarr_format=3)
    cat = tmp_path / "cat"
    col = publish(cat, tmp_path / "g.zarr", dataset_id="grid3413")
    assert validate_collection(col) == []
    assert col["extent"]["spatial"]["bbox"][0] == [w, s, e, n]
    assert col[UNKNOWN_EXTENT] == ["temporal"]  # no time coordinate; the place is known
    assert [h.id for h in search(cat, bbox=[-50, 60, -40, 65])] == ["grid3413"]
    assert search(cat, bbox=[0, -80, 10, -70]) == []  # metres as degrees matched this
    assert search(cat, bbox=[100, 60, 120, 65]) == []


def test_projected_grid_around_the_pole_spans_every_longitude() -> None:
    ds = _polar_grid(-1_000_000.0, 1_000_000.0, -1_000_000.0, 1_000_000.0)
    w, s, e, n = spatial_bbox(ds)
    assert (w, e, n) == (-180.0, 180.0, 90.0)
    assert s == pytest.approx(_true_box(-1e6, 1e6, -1e6, 1e6)[1], abs=0.05)


def _lcc_grid(crs_text: str, scale: float, units: str) -> xr.Dataset:
    """A Lambert conformal grid over the US, 1000 x 800 km, x/y in ``units`` (``scale``
    metres each), with its grid mapping as ``crs_wkt``."""
    crs = pyproj.CRS(crs_text)
    xs = np.arange(-500_000.0, 500_001.0, 50_000.0) / scale
    ys = np.arange(-400_000.0, 400_001.0, 50_000.0) / scale
    return xr.Dataset(
        {"t": (("y", "x"), np.zeros((ys.size, xs.size)), {"grid_mapping": "crs"}),
         "crs": ((), 0, {"crs_wkt": crs.to_wkt()})},
        coords={"x": ("x", xs, {"standard_name": "projection_x_coordinate", "units": units}),
                "y": ("y", ys, {"standard_name": "projection_y_coordinate", "units": units})})


_LCC = "+proj=lcc +lat_1=33 +lat_2=45 +lat_0=39 +lon_0=-96 +ellps=WGS84"
_LCC_KM_WKT = pyproj.CRS(_LCC + " +units=km").to_wkt()


@pytest.mark.parametrize(("crs_text", "scale", "units"), [
    (_LCC + " +units=km", 1000.0, "km"),        # a km CRS, x/y in km
    (_LCC + " +units=km", 1.0, "m"),            # a km CRS, x/y in metres
    (_LCC_KM_WKT, 1000.0, "kilometre"),         # WKT LENGTHUNIT["kilometre",1000]
    (_LCC + " +units=m", 1000.0, "km"),         # a metre CRS, x/y in km
])
def test_projected_bbox_in_the_units_of_the_crs(crs_text: str, scale: float,
                                                 units: str) -> None:
    """x/y go into the CRS in its own axis unit: a km grid mapping made the box 1000x too
    large (the whole globe)."""
    assert 'LENGTHUNIT["kilometre",1000' in _LCC_KM_WKT
    ref = spatial_bbox(_lcc_grid(_LCC + " +units=m", 1.0, "m"))
    assert ref == pytest.approx([-102.43, 35.0, -89.57, 42.85], abs=0.05)
    assert spatial_bbox(_lcc_grid(crs_text, scale, units)) == pytest.approx(ref, abs=1e-6)


def test_two_d_lat_lon_win_over_projected_metres() -> None:
    """x/y in metres with 2-D lat/lon and no grid mapping: the lat/lon give the box."""
    x0, x1, y0, y1 = -1_000_000.0, 500_000.0, -3_500_000.0, -2_000_000.0
    ds = _polar_grid(x0, x1, y0, y1, with_crs=False, latlon=True)
    w, s, e, n = spatial_bbox(ds)
    tw, ts, te, tn = _true_box(x0, x1, y0, y1)
    assert -90 <= s < n <= 90 and w == pytest.approx(tw, abs=1.0) and \
        e == pytest.approx(te, abs=1.0) and s == pytest.approx(ts, abs=0.5)


@needs_seaice
def test_sea_ice_cdr_extents_from_the_real_file() -> None:
    """Polar stereographic x/y on dims without coordinates, ``time`` on dim ``tdim``."""
    ds = xr.open_dataset(SEAICE)
    crs = pyproj.CRS.from_user_input(ds["projection"].attrs["spatial_ref"])
    w, s, e, n = spatial_bbox(ds)
    X, Y = np.meshgrid(np.linspace(-3_850_000, 3_750_000, 600),
                       np.linspace(-5_350_000, 5_850_000, 900))
    lat = pyproj.Transformer.from_crs(crs, 4326, always_xy=True).transform(X, Y)[1]
    assert (w, e, n) == (-180.0, 180.0, 90.0)  # the north pole is inside the grid
    assert s == pytest.approx(float(lat.min()), abs=0.05)
    assert 30 < s < 32
    assert temporal_interval(ds) == ["2021-12-01T00:00:00Z", "2021-12-01T00:00:00Z"]
    dims = cube_dimensions(ds)
    assert dims["tdim"]["type"] == "temporal"
    assert dims["x"]["type"] == "spatial" and dims["x"]["axis"] == "x"
    assert dims["x"]["extent"] == [-3_837_500.0, 3_737_500.0]
    rs = dims["x"]["reference_system"]
    assert pyproj.CRS.from_user_input(rs if isinstance(rs, int) else json.dumps(rs)) == crs
    variables = cube_variables(ds)
    assert variables["projection"]["type"] == "auxiliary"
    assert variables["cdr_seaice_conc_monthly"]["type"] == "data"


@needs_seaice
def test_sea_ice_cdr_search_by_time_and_place(tmp_path: Path) -> None:
    src = xr.open_dataset(SEAICE)
    pat = af.FilePattern(lambda **k: str(SEAICE),
                         af.ConcatDim("tdim", keys=[0], nitems_per_file=src.sizes["tdim"]))
    store = tmp_path / "seaice.zarr"
    af.bake(af.ZarrRecipe(pat), str(store), progress=False)
    cat = tmp_path / "cat"
    col = publish(cat, store, dataset_id="seaice")
    assert validate_collection(col) == []
    assert col["extent"]["temporal"]["interval"] == [["2021-12-01T00:00:00Z",
                                                      "2021-12-01T00:00:00Z"]]
    assert search(cat, time="1950") == []
    assert [h.id for h in search(cat, time="2021-12")] == ["seaice"]
    assert search(cat, bbox=[0, -90, 10, -80]) == []
    assert [h.id for h in search(cat, bbox=[0, 80, 10, 85])] == ["seaice"]
    [s] = summaries(cat)
    assert "projection" not in s.variables and "cdr_seaice_conc_monthly" in s.variables


def test_unknown_extent_is_flagged_not_matched(tmp_path: Path) -> None:
    ds = xr.Dataset({"v": (("row", "col"), np.zeros((3, 4), "float32"))})
    ds.to_zarr(tmp_path / "u.zarr", zarr_format=3)
    cat = tmp_path / "cat"
    with pytest.warns(UserWarning, match=r"dataset 'u': the data does not tell where it is "
                      r"\(no longitude/latitude in degrees, no projected x/y with a CF "
                      r"grid_mapping\): its bbox is written as the whole globe"):
        col = publish(cat, tmp_path / "u.zarr", dataset_id="u")
    assert col[UNKNOWN_EXTENT] == ["spatial", "temporal"]
    assert validate_collection(col) == []
    [s] = summaries(cat)
    assert s.unknown_extent == ["spatial", "temporal"]
    assert "bbox unknown (global)" in str(s) and "time unknown" in str(s)
    assert search(cat, bbox=[0, 0, 10, 10]) == []
    assert search(cat, time="2020") == []
    assert [h.id for h in search(cat)] == ["u"]


# -- 3. a time coordinate that is not a dimension ------------------------------------------------


def test_time_coordinate_along_another_dimension(tmp_path: Path) -> None:
    t = pd.date_range("2020-01-01", periods=3, freq="D")
    ds = xr.Dataset({"v": (("tdim", "lat", "lon"), np.zeros((3, 2, 2), "float32"))},
                    coords={"time": ("tdim", t), "lat": [10.0, 11.0], "lon": [20.0, 21.0]})
    assert temporal_interval(ds) == ["2020-01-01T00:00:00Z", "2020-01-03T00:00:00Z"]
    dims = cube_dimensions(ds)
    assert dims["tdim"]["type"] == "temporal" and dims["tdim"]["step"] == "P1D"
    ds.to_zarr(tmp_path / "t.zarr", zarr_format=3)
    cat = tmp_path / "cat"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # extents are known: no warning
        col = publish(cat, tmp_path / "t.zarr", dataset_id="t")
    assert validate_collection(col) == []
    assert search(cat, time="1950") == []
    assert [h.id for h in search(cat, time="2020-01-02")] == ["t"]


def test_time_from_a_variable_along_the_time_dimension() -> None:
    """NEMO: ``time_counter`` holds no dates, ``time_centered(time_counter)`` does; numbers
    with CF time units (a file opened with decode_times=False) are decoded."""
    ds = xr.Dataset({"tos": (("time_counter", "y"), np.zeros((2, 3), "float32"))},
                    coords={"time_counter": ("time_counter", [0.0, 1.0], {"axis": "T"})})
    ds["time_centered"] = ("time_counter", pd.to_datetime(["2015-01-16", "2015-02-15"]),
                           {"standard_name": "time"})
    assert temporal_interval(ds) == ["2015-01-16T00:00:00Z", "2015-02-15T00:00:00Z"]
    assert cube_dimensions(ds)["time_counter"]["type"] == "temporal"
    raw = xr.Dataset(coords={"t": ("t", [0.0, 31.0], {"units": "days since 2000-01-01",
                                                       "standard_name": "time"})})
    assert temporal_interval(raw) == ["2000-01-01T00:00:00Z", "2000-02-01T00:00:00Z"]


# -- 4. CLI errors -------------------------------------------------------------------------------


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    ds = xr.Dataset({"v": (("time", "lat", "lon"), np.zeros((2, 2, 2), "float32"))},
                    coords={"time": pd.date_range("2005-01-01", periods=2), "lat": [0.0, 1.0],
                            "lon": [0.0, 1.0]})
    ds.to_zarr(tmp_path / "s.zarr", zarr_format=3)
    publish(tmp_path / "cat", tmp_path / "s.zarr", dataset_id="s")
    return tmp_path / "cat"


@pytest.mark.parametrize(("query", "message"), [
    ("2005-13", r"error: time '2005-13' is not a date or interval: month must be in 1\.\.12"),
    ("2005-02-30", r"error: time '2005-02-30' is not a date or interval: day is out of range"),
    ("2006/2005", r"error: time '2006/2005': the start is after the end"),
])
def test_cli_search_bad_time_is_one_error_line(small_catalog: Path, query: str, message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["catalog", "search", str(small_catalog), "--time", query])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert re.match(message, err), err
    with pytest.raises(ConfigError):
        search(small_catalog, time=query)


def test_cli_good_time_still_works(small_catalog: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["catalog", "search", str(small_catalog), "--time", "2005/2006"]) == 0
    assert cli_main(["catalog", "search", str(small_catalog), "--time", "2004"]) == 1
    assert "0 dataset(s)" in capsys.readouterr().err


@pytest.mark.parametrize("action", [["list"], ["search"], ["show", "x"]])
def test_cli_missing_catalog_names_the_path(action: list[str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_catalog"
    rc = cli_main(["catalog", action[0], str(missing), *action[1:]])
    out, err = capsys.readouterr()
    assert rc == 1 and "(no datasets)" not in out and "Traceback" not in err
    assert err.strip() == (f"error: no catalog at {missing} (there is no catalog.json; "
                           "publish a store there first, or check the path)")


def test_api_missing_catalog_raises(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no catalog at .*nope"):
        search(tmp_path / "nope")
    with pytest.raises(NotFoundError, match="no catalog at .*nope"):
        summaries(tmp_path / "nope")


# -- 5. id reuse, site snippet, variable lists ---------------------------------------------------


def _tiny(path: Path, value: float) -> Path:
    xr.Dataset({"v": (("lat", "lon"), np.full((2, 2), value, "float32"))},
               coords={"lat": [0.0, 1.0], "lon": [0.0, 1.0]}).to_zarr(path, zarr_format=3)
    return path


def test_republishing_a_version_from_another_store_warns(tmp_path: Path) -> None:
    a, b = _tiny(tmp_path / "a.zarr", 1.0), _tiny(tmp_path / "b.zarr", 2.0)
    cat = tmp_path / "cat"
    publish(cat, a, dataset_id="ssh", version="1.0")
    with pytest.warns(UserWarning, match=rf"dataset 'ssh' version 1\.0 was published from "
                      rf"store {a}; it now points to store {b} instead"):
        publish(cat, b, dataset_id="ssh", version="1.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        publish(cat, b, dataset_id="ssh", version="1.0")  # the same store again: no warning
        publish(cat, a, dataset_id="ssh", version="2.0")  # a new version: no warning


def test_site_snippet_uses_an_absolute_catalog_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny(tmp_path / "a.zarr", 1.0)
    monkeypatch.chdir(tmp_path)
    publish("cat", "a.zarr", dataset_id="a")
    report = write_site("cat", "site", plots=False)
    page = (tmp_path / "site" / report.pages["a"]).read_text()
    absolute = os.path.join(os.path.realpath(tmp_path), "cat")
    snippet = html.unescape(page.split("<pre id='snippet'><code>")[1].split("</code>")[0])
    assert f"af.open_dataset({json.dumps(absolute)}, \"a\")" in snippet


def test_grid_mapping_and_bounds_are_auxiliary(tmp_path: Path) -> None:
    ds = _polar_grid(-1_000_000.0, 500_000.0, -3_500_000.0, -2_000_000.0)
    ds["x_bnds"] = (("x", "nv"), np.stack([ds.x.values - 12_500, ds.x.values + 12_500], -1))
    ds["x"].attrs["bounds"] = "x_bnds"
    variables = cube_variables(ds)
    assert variables["crs"]["type"] == "auxiliary"
    assert variables["x_bnds"]["type"] == "auxiliary"
    assert variables["v"]["type"] == "data"
    ds.to_zarr(tmp_path / "g.zarr", zarr_format=3)
    publish(tmp_path / "cat", tmp_path / "g.zarr", dataset_id="g")
    [s] = summaries(tmp_path / "cat")
    assert s.variables == ["v"]


def test_plain_degrees_units_still_count_as_longitudes_latitudes() -> None:
    """Compatibility: ``units: degrees`` on lon/lat (or axis-tagged) coordinates."""
    ds = xr.Dataset(coords={"lon": ("lon", np.arange(0.5, 10), {"units": "degrees"}),
                            "lat": ("lat", np.arange(40.5, 45), {"units": "degrees"})})
    assert spatial_bbox(ds) == [0.0, 40.0, 10.0, 45.0]
    assert cube_dimensions(ds)["lon"]["reference_system"] == 4326
