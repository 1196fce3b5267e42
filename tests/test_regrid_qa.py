"""Regressions from the regrid QA round: grids in 0..360 longitudes, undecoded geolocation,
integer fills, bad parameters and empty results, and the documented accessor example's exit
status."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyresample")  # imports pyproj before any netCDF file opens

import xarray as xr  # noqa: E402

import arcoforge.accessor  # noqa: E402,F401  (registers ds.arcoforge)
from arcoforge.errors import ConfigError, SchemaError  # noqa: E402
from arcoforge.regrid import area_from_dataset, resolve_area  # noqa: E402
from arcoforge.regrid.accessor import EmptyRegridWarning  # noqa: E402
from arcoforge.regrid.areas import longitude_pieces  # noqa: E402

ASCAT1 = "swath/ascat_20150702_084200_metopa_45145_eps_o_250_2300_ovw.l2.nc"
OISST = "oisst/oisst-avhrr-v02r01.20220913.nc"
OISST_2DEG = "oisst/oisst-v2-avhrr-only-19811231-2deg.nc"
DOC = Path(__file__).resolve().parents[1] / "docs" / "regrid.md"
GLOBAL_2DEG = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 2.0}
FULL_1DEG = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 1.0}
METHODS4 = ("nearest", "bilinear", "ewa", "bucket_avg")
METHODS_ROLLED = ("nearest", "bilinear", "bucket_avg")  # EWA: see test_ewa_on_a_0360_grid


@pytest.fixture(scope="module")
def ascat(shared_data):
    with xr.open_dataset(shared_data / ASCAT1) as ds:
        yield ds.load()


def _ref_0360(step: float = 1.0) -> xr.Dataset:
    """An OISST/GODAS-style reference grid: cell centres 0.5..359.5 (ascending lat)."""
    return xr.Dataset(coords={
        "lon": ("lon", np.arange(step / 2, 360, step), {"units": "degrees_east"}),
        "lat": ("lat", np.arange(-90 + step / 2, 90, step), {"units": "degrees_north"})})


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Cell for cell equality (NaN equals NaN, NaT equals NaT)."""
    if a.dtype.kind in "Mm":
        a, b = a.view("int64"), b.view("int64")
    return np.array_equal(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)


def _swath(lon0: float, lon1: float, ny: int = 60, nx: int = 40) -> xr.Dataset:
    """A small synthetic swath whose value is its longitude in the 0..360 convention."""
    lon, lat = np.meshgrid(np.linspace(lon0, lon1, nx), np.linspace(-10, 10, ny))
    return xr.Dataset({"v": (("row", "col"), lon.copy())},
                      coords={"lon": (("row", "col"), lon), "lat": (("row", "col"), lat)})


# -- 1. grids in 0..360 ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("method", METHODS_ROLLED)
def test_0360_reference_equals_rolled_global_grid(ascat, method, backend):
    if backend == "dask" and method == "bilinear":
        pytest.skip("XArrayBilinearResampler on a global grid is slow; numpy covers bilinear")
    src = ascat.chunk({"NUMROWS": 400}) if backend == "dask" else ascat
    kw = {"radius_of_influence": 50_000, "cache": False}
    out = src.arcoforge.resample(_ref_0360(), method, **kw).compute()
    ref = src.arcoforge.resample(FULL_1DEG, method, **kw).compute().roll(x=180,
                                                                          roll_coords=False)
    np.testing.assert_array_equal(out.x.values, np.arange(0.5, 360, 1.0))
    for name in ("wind_speed", "wvc_quality_flag", "time", "coverage"):
        assert _same(out[name].values, ref[name].values), name
    east = out.wind_speed.where(out.x > 180)
    assert int(np.isfinite(east).sum()) > 300  # the half east of 180 is no longer dropped


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_ewa_on_a_0360_grid(backend):
    """EWA maps longitudes to columns linearly: it gets the longitudes recentred on the grid
    (a 0..360 grid is cut at 0/360, its own edge, not at 180).  A swath away from both cuts
    gives the rolled -180..180 result (up to the rounding of the shifted columns); one across
    180 is not torn on a grid across 180."""
    far = _swath(200.3, 219.7)
    if backend == "dask":
        far = far.chunk({"row": 30})
    out = far.arcoforge.resample(_ref_0360(), "ewa", rows_per_scan=2, cache=False).compute()
    ref = far.arcoforge.resample(FULL_1DEG, "ewa", rows_per_scan=2, cache=False).compute()
    ref = ref.roll(x=180, roll_coords=False)
    np.testing.assert_array_equal(out.coverage.values, ref.coverage.values)
    np.testing.assert_allclose(out.v.values, ref.v.values, rtol=1e-6, equal_nan=True)
    assert int(out.coverage.sum()) > 300
    across = _swath(170.1, 190.1)
    spec = {"crs": "EPSG:4326", "extent": [160, -10, 200, 10], "resolution": 1.0}
    out = across.arcoforge.resample(spec, "ewa", rows_per_scan=2)
    v = out.v.values
    assert np.isfinite(v[:, out.x.values > 185]).sum() > 0
    assert np.nanmax(np.abs(v - out.x.values)) <= 1.0  # each value in its own column


def test_oisst_reference_keeps_the_orbit_east_of_180(shared_data, ascat):
    """The QA repro t13: the real OISST v2.1 grid (0.125..359.875) as reference."""
    with xr.open_dataset(shared_data / OISST) as oi:
        out = ascat.arcoforge.resample(oi, "nearest", radius_of_influence=30_000)
        lon = oi.lon.values
    full = ascat.arcoforge.resample({"crs": "EPSG:4326", "extent": [-180, -90, 180, 90],
                                     "resolution": 0.25}, "nearest", radius_of_influence=30_000)
    np.testing.assert_allclose(out.x.values, lon, rtol=0, atol=1e-4)
    ws, fw = out.wind_speed, full.wind_speed
    assert int(np.isfinite(ws.where(ws.x > 180)).sum()) == int(np.isfinite(fw.where(fw.x < 0)).sum())
    assert int(np.isfinite(ws.where(ws.x > 180)).sum()) > 20_000
    assert _same(ws.values, fw.roll(x=720, roll_coords=False).values)


def test_oisst_2deg_reference_whose_edges_straddle_180(shared_data, ascat):
    """OISST 2° has cell centres 0, 2, ... 358 (a cell from 179 to 181)."""
    with xr.open_dataset(shared_data / OISST_2DEG) as oi:
        area = area_from_dataset(oi)
        out = ascat.arcoforge.resample(oi, "nearest", radius_of_influence=60_000)
        np.testing.assert_array_equal(out.x.values, oi.lon.values)
    pieces = longitude_pieces(area)
    assert pieces is not None and [cols for _, cols in pieces] == [slice(90, 180), slice(0, 90)]
    assert list(pieces[0][0].area_extent)[::2] == [-181.0, 179.0]
    ws = out.wind_speed
    assert int(np.isfinite(ws.where(ws.x > 180)).sum()) > 300


@pytest.mark.parametrize("method", METHODS_ROLLED)
def test_spec_extent_across_the_antimeridian(method):
    """The QA repro t1: extent 160..200 (bilinear used to crash reshaping, the others dropped
    everything east of 180); equals the same columns of the -180..180 grid."""
    ds = _swath(170.1, 190.1)
    spec = {"crs": "EPSG:4326", "extent": [160, -10, 200, 10], "resolution": 1.0}
    full = {"crs": "EPSG:4326", "extent": [-180, -10, 180, 10], "resolution": 1.0}
    out = ds.arcoforge.resample(spec, method, radius_of_influence=200_000, cache=False)
    ref = ds.arcoforge.resample(full, method, radius_of_influence=200_000, cache=False)
    np.testing.assert_array_equal(out.x.values, np.arange(160.5, 200, 1.0))
    expected = np.concatenate([ref.v.values[:, 340:], ref.v.values[:, :20]], axis=1)
    assert _same(out.v.values, expected)
    assert _same(out.coverage.values,
                 np.concatenate([ref.coverage.values[:, 340:], ref.coverage.values[:, :20]], 1))
    v = out.v.values
    assert np.isfinite(v[:, out.x.values > 185]).sum() > 0
    # the value is the swath's 0..360 longitude: it landed in the right column
    xs = np.broadcast_to(out.x.values, v.shape)
    assert np.nanmedian(np.abs(v - xs)) <= 0.6


def test_swath_east_of_180_on_a_0360_grid():
    """The QA repro t2: a swath at 200..220E on an OISST-like 1° grid."""
    ds = _swath(200, 220)
    for method in ("nearest", "bucket_avg", "ewa"):
        out = ds.arcoforge.resample(_ref_0360(), method, radius_of_influence=100_000)
        good = out.v.where(np.isfinite(out.v), drop=True)
        assert good.size and 199 <= float(good.x.min()) and float(good.x.max()) <= 221, method
        assert float(abs(good - good.x).max()) <= 0.5, method


def test_extent_wider_than_360_is_a_config_error():
    ds = _swath(-20, -5)
    with pytest.raises(ConfigError, match=r"spans 400 degrees, more than 360"):
        ds.arcoforge.resample({"crs": "EPSG:4326", "extent": [-200, -90, 200, 90],
                               "resolution": 1})
    assert longitude_pieces(resolve_area(FULL_1DEG)) is None
    assert longitude_pieces(resolve_area({"crs": "EPSG:3413", "extent": [-1e6, -1e6, 1e6, 1e6],
                                          "resolution": 1e5})) is None


# -- 2. undecoded / out-of-range geolocation -----------------------------------------------------
def test_packed_geolocation_is_a_schema_error(shared_data):
    """The QA repro t4: ASCAT opened with mask_and_scale=False (int32 lat/lon, scale 1e-5)."""
    with xr.open_dataset(shared_data / ASCAT1, mask_and_scale=False, decode_times=False) as ds:
        with pytest.raises(SchemaError) as err:
            ds.arcoforge.resample(GLOBAL_2DEG, "bilinear", radius_of_influence=50_000)
    msg = str(err.value)
    for part in ("'lat'", "int32", "scale_factor", "-8936809..8924324", "packed",
                 "mask_and_scale", "decode_cf"):
        assert part in msg, part


def test_latitudes_out_of_range_are_errors_unless_declared_fill():
    ds = _swath(-20, -5)
    bad = ds.assign_coords(lat=ds.lat.where(ds.row != 3, 95.0))
    with pytest.raises(SchemaError, match=r"latitude 'lat' has values in \[-10, 95\], outside "
                                          r"\[-90, 90\].*_FillValue"):
        bad.arcoforge.resample(GLOBAL_2DEG)
    lon_bad = ds.assign_coords(lon=ds.lon + 500)
    with pytest.raises(SchemaError, match=r"longitude 'lon' has values in \[480, 495\]"):
        lon_bad.arcoforge.resample(GLOBAL_2DEG)
    # a declared (undecoded) fill is missing, not data; rounding past 90 is clipped
    filled = ds.assign_coords(lat=ds.lat.where(ds.row != 3, -999.0))
    filled.lat.attrs["_FillValue"] = -999.0
    near_pole = ds.assign_coords(lat=ds.lat.where(ds.row != 3, 90.000001))
    for ok in (filled, near_pole):
        out = ok.arcoforge.resample(GLOBAL_2DEG, radius_of_influence=300_000)
        assert int(out.coverage.sum()) > 0


def test_all_nan_geolocation_is_a_schema_error():
    ds = _swath(-20, -5)
    with pytest.raises(SchemaError, match=r"geolocation 'lon'/'lat' has no valid pixel"):
        ds.assign_coords(lat=ds.lat * np.nan).arcoforge.resample(GLOBAL_2DEG)


# -- 3. integer fill -----------------------------------------------------------------------------
def test_integer_without_fill_value_records_the_fill(tmp_path):
    """The QA repro t10 (i): uncovered cells got 32767 with no _FillValue recorded."""
    ds = _swath(-20, -5)
    cls = (np.arange(ds.v.size).reshape(ds.v.shape) % 3).astype("int16")
    own = xr.DataArray(cls.copy(), dims=("row", "col"), attrs={"_FillValue": np.int16(-1)})
    ds = ds.assign(cls=(("row", "col"), cls), own=own)
    spec = {"crs": "EPSG:4326", "extent": [-30, -20, 0, 20], "resolution": 0.5}
    out = ds.arcoforge.resample(spec, radius_of_influence=40_000)
    assert out.cls.encoding["_FillValue"] == 32767
    assert "_FillValue" not in out.own.encoding and out.own.attrs["_FillValue"] == -1
    uncovered = out.coverage.values == 0
    assert (out.cls.values[uncovered] == 32767).all() and (out.own.values[uncovered] == -1).all()
    out.to_netcdf(tmp_path / "g.nc")
    with xr.open_dataset(tmp_path / "g.nc") as back:
        np.testing.assert_array_equal(np.isnan(back.cls.values), uncovered)
        np.testing.assert_array_equal(np.isnan(back.own.values), uncovered)


# -- 4. bad parameters and empty results --------------------------------------------------------
@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), "30km", True])
def test_bad_radius_of_influence_is_a_config_error(value):
    ds = _swath(-20, -5)
    with pytest.raises(ConfigError, match=rf"radius_of_influence={re.escape(repr(value))} must "
                                          r"be a finite number > 0 \(metres\)"):
        ds.arcoforge.resample(GLOBAL_2DEG, radius_of_influence=value)


def test_bad_neighbours_and_epsilon_are_config_errors():
    ds = _swath(-20, -5)
    with pytest.raises(ConfigError, match=r"neighbours=0 must be a whole number > 0"):
        ds.arcoforge.resample(GLOBAL_2DEG, "bilinear", neighbours=0)
    with pytest.raises(ConfigError, match=r"epsilon=-1 must be a finite number >= 0"):
        ds.arcoforge.resample(GLOBAL_2DEG, epsilon=-1)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("method", [*METHODS4, "bucket_count"])
def test_swath_outside_the_area_warns_and_is_empty(method, backend):
    """The QA repro t9: nearest was silently empty, ewa leaked fornav's RuntimeError."""
    if backend == "dask" and method == "bilinear":
        pytest.skip("numpy covers bilinear")
    ds = _swath(-20, -5)
    src = ds.chunk({"row": 7}) if backend == "dask" else ds
    far = {"crs": "EPSG:4326", "extent": [100, 20, 130, 50], "resolution": 1, "name": "pacific"}
    with pytest.warns(EmptyRegridWarning, match=r"no swath pixel reached area 'pacific' .*"
                                                r"longitudes \[-20\.000, -5\.000\] and latitudes "
                                                r"\[-10\.000, 10\.000\]"):
        out = src.arcoforge.resample(far, method, radius_of_influence=30_000, cache=False)
    out = out.compute()
    assert int(out.coverage.sum()) == 0
    if method != "bucket_count":
        assert not np.isfinite(out.v.values).any()


def test_covered_result_does_not_warn():
    ds = _swath(-20, -5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyRegridWarning)
        ds.arcoforge.resample(GLOBAL_2DEG, radius_of_influence=300_000)


# -- 5. the documented accessor example exits cleanly -------------------------------------------
def test_doc_accessor_example_exits_0(shared_data):
    """The first example of docs/regrid.md, run as written (only the file's directory added) in
    a fresh interpreter: importing pyproj after xarray loaded ecCodes aborted at exit."""
    text = DOC.read_text()
    block = re.search(r"## The accessor\s+```python\n(.*?)```", text, re.S)
    assert block is not None
    code = block.group(1).replace('open_dataset("', f'open_dataset("{shared_data}/swath/')
    code += "\nprint('COVERED', int(grid.coverage.sum()))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "double free" not in proc.stderr
    assert int(proc.stdout.split("COVERED")[1]) > 100_000


# -- 7. orientation relative to a reference grid ------------------------------------------------
def test_reference_orientation_is_north_up_as_documented():
    """The QA repro t8: rows run north to south whatever the reference's order; the doc's
    sortby/rename/assign_coords recipe gives the reference's order, names and labels."""
    lon, lat = np.meshgrid(np.linspace(-20, -5, 151), np.linspace(30, 40, 101))
    ds = xr.Dataset({"v": (("r", "c"), lat * 100 + lon)},
                    coords={"lon": (("r", "c"), lon), "lat": (("r", "c"), lat)})
    ref = xr.Dataset(coords={"lat": np.arange(31, 39.01, 0.5), "lon": np.arange(-18, -7.9, 0.5)})
    grid = ds.arcoforge.resample(ref, "bilinear", radius_of_influence=60_000)
    assert (np.diff(grid.y.values) < 0).all() and (np.diff(grid.x.values) > 0).all()
    assert grid.v.dims == ("y", "x")
    grid = grid.sortby("y").rename(y="lat", x="lon")
    grid = grid.assign_coords(lat=ref.lat.values, lon=ref.lon.values)
    xx, yy = np.meshgrid(grid.lon.values, grid.lat.values)
    np.testing.assert_allclose(grid.v.values, yy * 100 + xx, atol=1e-6)
    assert json.loads(grid.attrs["arcoforge:regrid"])["method"] == "bilinear"


# -- 6. review: bucket cells across 180, lazy dask resample -------------------------------------
def _seam_swath(nx: int = 2000, ny: int = 40) -> xr.Dataset:
    """A swath from 150E to 150W (longitudes in -180..180) whose value varies per pixel."""
    lon, lat = np.meshgrid(np.linspace(150, 210, nx), np.linspace(-4.93, 4.87, ny))
    lon = (lon + 180) % 360 - 180
    v = np.cos(np.radians(lon)) * 10 + lat
    return xr.Dataset({"v": (("row", "col"), v)},
                      coords={"lon": (("row", "col"), lon, {"units": "degrees_east"}),
                              "lat": (("row", "col"), lat, {"units": "degrees_north"})})


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("x0, x1", [(-0.5, 359.5), (160.5, 200.5), (160.25, 200.25), (0, 360)])
def test_bucket_cells_across_180_count_every_pixel(x0, x1, backend):
    """Review d4b: a 0..360 grid whose cell edges are not on 180 got only the pixels west of
    180 in the cell across it (1650 of 3300).  Counts and averages equal an independent numpy
    histogram of the swath's longitudes wrapped into the grid's range."""
    ds = _seam_swath()
    src = ds.chunk({"row": 10}) if backend == "dask" else ds
    spec = {"crs": "EPSG:4326", "extent": [x0, -8, x1, 8], "resolution": 1.0}
    out = src.arcoforge.resample(spec, "bucket_avg", cache=False).compute()
    count = src.arcoforge.resample(spec, "bucket_count", cache=False)["count"].values
    lon, lat, v = ds.lon.values.ravel(), ds.lat.values.ravel(), ds.v.values.ravel()
    shifted = (lon - x0) % 360 + x0
    edges = (np.linspace(-8, 8, out.sizes["y"] + 1), np.linspace(x0, x1, out.sizes["x"] + 1))
    want_n = np.histogram2d(lat, shifted, bins=edges)[0][::-1]  # rows north to south
    want_s = np.histogram2d(lat, shifted, bins=edges, weights=v)[0][::-1]
    np.testing.assert_array_equal(count, want_n)
    np.testing.assert_array_equal(out["count"].values, want_n)
    has = want_n > 0
    np.testing.assert_allclose(out.v.values[has], want_s[has] / want_n[has], rtol=1e-9)
    assert not np.isfinite(out.v.values[~has]).any()
    np.testing.assert_array_equal(out.coverage.values, has.astype(np.uint8))


class _Computes:
    """Counts dask computations (scheduler runs) while active."""

    def __init__(self) -> None:
        from dask.callbacks import Callback

        counter = self

        class _CB(Callback):
            def _start(self, dsk):  # noqa: ARG002
                counter.n += 1

        self.n = 0
        self.cb = _CB()

    def __enter__(self) -> _Computes:
        self.cb.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cb.__exit__(*exc)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bucket_avg"])
def test_dask_resample_does_not_compute_the_data(method, monkeypatch):
    """Review d2: the empty-result check computed a full resampling of dask input inside
    resample().  Now resample() computes only what the geolocation needs (the same as with
    the check switched off), never the data, and still warns for an empty result."""
    da = pytest.importorskip("dask.array")
    import arcoforge.regrid.accessor as acc

    calls = []

    def block(x):
        calls.append(x.shape)
        return x

    ds = _swath(10, 20)
    lazy = da.from_array(ds.v.values, chunks=20)
    ds["v"] = (("row", "col"), lazy.map_blocks(block, dtype=float, meta=np.array((), float)))
    area = {"crs": "EPSG:4326", "extent": [10, -10, 20, 10], "resolution": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyRegridWarning)
        with _Computes() as seen:
            out = ds.arcoforge.resample(area, method, coverage=False, cache=False)
    assert out.v.chunks is not None
    assert calls == []
    monkeypatch.setattr(acc, "_warn_if_empty", lambda *a, **k: None)
    with _Computes() as without_check:
        ds.arcoforge.resample(area, method, coverage=False, cache=False)
    assert seen.n == without_check.n
    far = {"crs": "EPSG:4326", "extent": [100, 20, 130, 50], "resolution": 1, "name": "far"}
    monkeypatch.undo()
    with pytest.warns(EmptyRegridWarning, match="no swath pixel reached area 'far'"):
        ds.arcoforge.resample(far, method, coverage=False, cache=False,
                              radius_of_influence=30_000)
    assert calls == []


@pytest.mark.parametrize("method", ["nearest", "bucket_avg"])
def test_dask_empty_check_east_of_180_and_projected(method):
    """The lazy empty check sees a swath east of 180 on a 0..360 grid and projects the swath
    into a projected area's CRS."""
    east = _swath(200, 220).chunk({"row": 20})
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyRegridWarning)
        out = east.arcoforge.resample(_ref_0360(2.0), method, radius_of_influence=100_000,
                                      cache=False)
    assert int(out.coverage.sum()) > 0
    polar = {"crs": "EPSG:3413", "extent": [-2e6, -2e6, 2e6, 2e6], "resolution": 1e5,
             "name": "arctic"}
    with pytest.warns(EmptyRegridWarning, match="'arctic'"):
        out = east.arcoforge.resample(polar, method, radius_of_influence=100_000, cache=False)
    assert int(out.coverage.sum()) == 0
    lon, lat = np.meshgrid(np.linspace(-60, -30, 40), np.linspace(70, 80, 30))
    north = xr.Dataset({"v": (("row", "col"), lat.copy())},
                       coords={"lon": (("row", "col"), lon), "lat": (("row", "col"), lat)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyRegridWarning)
        out = north.chunk({"row": 10}).arcoforge.resample(polar, method,
                                                          radius_of_influence=100_000,
                                                          cache=False)
    assert int(out.coverage.sum()) > 0
