"""Swath -> grid with ``ds.arcoforge.resample`` on real granules (ASCAT, MODIS L2P, Jason-1),
checked against pyresample's own numpy API on the same inputs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pyresample = pytest.importorskip("pyresample")  # imports pyproj before any netCDF file opens

import dask.array as da  # noqa: E402
import xarray as xr  # noqa: E402
from pyresample import bilinear, geometry, kd_tree  # noqa: E402

import arcoforge.accessor  # noqa: E402,F401  (registers ds.arcoforge)
from arcoforge.errors import ConfigError, MissingDependencyError, SchemaError  # noqa: E402
from arcoforge.regrid import NeighbourCache, area_from_spec, resample, resolve_area  # noqa: E402
from arcoforge.regrid._deps import require  # noqa: E402
from arcoforge.regrid.accessor import REGRID_ATTR  # noqa: E402

ASCAT1 = "swath/ascat_20150702_084200_metopa_45145_eps_o_250_2300_ovw.l2.nc"
ASCAT2 = "swath/ascat_20150702_102400_metopa_45146_eps_o_250_2300_ovw.l2.nc"
MODIS = "swath/SS_MODIS_A-JPL-L2P-v2014.0.nc"
JASON = "altimetry/JA1_GPN_2PeP001_002_20020115_060706_20020115_070316.nc"
GLOBAL = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 1.0}
ROI = 30_000.0


@pytest.fixture(scope="module")
def ascat(shared_data):
    with xr.open_dataset(shared_data / ASCAT1) as ds:
        yield ds.load()


@pytest.fixture(scope="module")
def modis(shared_data):
    with xr.open_dataset(shared_data / MODIS) as ds:
        yield ds.load()


def _swath(ds: xr.Dataset) -> geometry.SwathDefinition:
    lon = np.asarray(ds.lon.values, dtype=np.float64)
    return geometry.SwathDefinition(((lon + 180) % 360) - 180,
                                    np.asarray(ds.lat.values, dtype=np.float64))


def test_nearest_equals_pyresample(ascat):
    area = resolve_area(GLOBAL)
    out = ascat.arcoforge.resample(GLOBAL, "nearest", radius_of_influence=ROI, cache=False)
    for name in ("wind_speed", "model_speed", "ice_prob", "wvc_quality_flag"):
        ref = kd_tree.resample_nearest(_swath(ascat), ascat[name].values, area,
                                       radius_of_influence=ROI, fill_value=None)
        ref = np.ma.filled(ref.astype(np.float64), np.nan)
        np.testing.assert_array_equal(out[name].values, ref)
    # dask in, dask graph out: pyresample's own dask resampler (XArrayResamplerNN) over the
    # target's chunks; it equals that resampler called directly on the same chunks
    lazy = ascat.chunk({"NUMROWS": 400}).arcoforge.resample(GLOBAL, "nearest",
                                                             radius_of_influence=ROI)
    assert isinstance(lazy.wind_speed.data, da.Array)
    swath = _swath(ascat)
    lons, lats = (xr.DataArray(da.from_array(a, chunks=400), dims=("y", "x"))
                  for a in (swath.lons, swath.lats))
    direct = kd_tree.XArrayResamplerNN(geometry.SwathDefinition(lons, lats), area, ROI)
    direct.get_neighbour_info()
    ref = direct.get_sample_from_neighbour_info(xr.DataArray(
        da.from_array(ascat.wind_speed.values, chunks=400), dims=("y", "x"))).values
    np.testing.assert_array_equal(lazy.wind_speed.values, ref)
    # pyresample's numpy and dask k-d tree searches disagree on a few cells at the radius edge
    differ = np.isnan(lazy.wind_speed.values) != np.isnan(out.wind_speed.values)
    assert differ.sum() <= 5
    same = ~np.isnan(lazy.wind_speed.values) & ~np.isnan(out.wind_speed.values)
    np.testing.assert_array_equal(lazy.wind_speed.values[same], out.wind_speed.values[same])
    # datetimes go through the same neighbours, exactly (as int64, NaT outside)
    ref = kd_tree.resample_nearest(_swath(ascat), ascat.time.values.view("i8"), area,
                                   radius_of_influence=ROI, fill_value=np.iinfo(np.int64).min)
    np.testing.assert_array_equal(out.time.values.view("i8"), ref)
    assert out.time.dtype == ascat.time.dtype
    np.testing.assert_array_equal(out.coverage.values, np.isfinite(out.model_speed.values))


@pytest.mark.filterwarnings("ignore:Usage of resample_bilinear:FutureWarning",
                            "ignore:You will likely lose:UserWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_bilinear_equals_pyresample(ascat):
    area = resolve_area(GLOBAL)
    out = ascat.arcoforge.resample(GLOBAL, "bilinear", radius_of_influence=50_000)
    ref = bilinear.resample_bilinear(ascat.wind_speed.values, _swath(ascat), area,
                                     radius=50_000, neighbours=32, fill_value=np.nan)
    np.testing.assert_array_equal(out.wind_speed.values, ref)
    lazy = ascat[["wind_speed", "lon", "lat"]].chunk({"NUMROWS": 816}).arcoforge.resample(
        GLOBAL, "bilinear", radius_of_influence=50_000).compute()
    np.testing.assert_allclose(lazy.wind_speed.values, ref, rtol=1e-12, equal_nan=True)
    # flags are never interpolated: nearest neighbour, recorded per variable
    used = json.loads(out.attrs[REGRID_ATTR])["variables"]
    assert used["wind_speed"] == "bilinear" and used["wvc_quality_flag"] == "nearest"
    flags = out.wvc_quality_flag.values[np.isfinite(out.wvc_quality_flag.values)]
    assert np.isin(flags, ascat.wvc_quality_flag.values).all()


def test_metadata_fill_values_and_cf_grid_mapping(ascat, tmp_path):
    out = ascat.arcoforge.resample(GLOBAL, "nearest", radius_of_influence=ROI)
    for name in ("wind_speed", "wvc_quality_flag", "time"):
        src, res = ascat[name], out[name]
        assert {k: v for k, v in res.attrs.items() if k != "grid_mapping"}.keys() == \
            src.attrs.keys()
        for key, value in src.attrs.items():
            np.testing.assert_array_equal(res.attrs[key], value)
        assert res.attrs["grid_mapping"] == "crs"
        for key in ("_FillValue", "scale_factor", "add_offset", "dtype"):
            if key in src.encoding:
                assert res.encoding[key] == src.encoding[key]
    assert out.attrs["title"] == ascat.attrs["title"]
    assert out.crs.attrs["grid_mapping_name"] == "latitude_longitude"
    assert out.x.attrs["standard_name"] == "longitude" and out.y.attrs["units"] == "degrees_north"
    assert out.wind_speed.dims == ("y", "x") and out.sizes == {"y": 180, "x": 360}
    # written to netCDF, the result is packed as the source was and reads back equal
    path = tmp_path / "grid.nc"
    out.to_netcdf(path)
    with xr.open_dataset(path, mask_and_scale=False) as raw:
        assert raw.wind_speed.dtype == np.int16 and raw.wind_speed.attrs["scale_factor"] == 0.01
    with xr.open_dataset(path) as back:
        xr.testing.assert_allclose(back.wind_speed, out.wind_speed)
        assert back.wind_speed.attrs["grid_mapping"] == "crs"
        assert resolve_area(back).crs == resolve_area(GLOBAL).crs


def test_ewa_on_modis_scans_numpy_and_dask_chunks(modis):
    area = {"crs": "EPSG:4326", "extent": [72, 40, 87, 51], "resolution": 0.04}
    with pytest.raises(ConfigError, match="rows_per_scan >= 2 dividing the swath's 1233 rows"):
        modis.arcoforge.resample(area, "ewa", rows_per_scan=10)
    modis = modis.isel(nj=slice(0, 1230))  # this subset was cut mid-scan: keep whole scans
    out = modis.arcoforge.resample(area, "ewa", rows_per_scan=10)
    sst = out.sea_surface_temperature
    assert sst.dims == ("time", "y", "x") and out.time.reset_coords(drop=True).identical(modis.time)
    valid = sst.values[np.isfinite(sst.values)]
    src = modis.sea_surface_temperature.values
    assert valid.size > 1000
    assert np.nanmin(src) - 1e-3 <= valid.min() and valid.max() <= np.nanmax(src) + 1e-3
    # dask: ll2cr and fornav run per input chunk of whole scans (several chunks here)
    cache = NeighbourCache()
    lazy = modis.chunk({"nj": 400}).arcoforge.resample(
        area, "ewa", rows_per_scan=10, ewa_options={"scans_per_chunk": 40}, cache=cache)
    engine = next(e for e in cache.values() if e.method == "ewa")
    assert engine.resampler.cache["ll2cr_result"].numblocks[0] == 4  # 4 chunks of 40 scans
    assert isinstance(lazy.sea_surface_temperature.data, da.Array)
    np.testing.assert_allclose(lazy.sea_surface_temperature.values, sst.values, rtol=1e-5,
                               atol=1e-4, equal_nan=True)
    assert sst.encoding["dtype"] == np.int16


def test_bucket_avg_conserves_mass_and_counts(ascat):
    out = ascat.arcoforge.resample(GLOBAL, "bucket_avg", variables=["model_speed"])
    src = ascat.model_speed.values  # no missing values in this variable
    assert np.isfinite(src).all()
    count = out["count"].values
    assert count.sum() == src.size  # every pixel falls in exactly one cell of a global grid
    avg = out.model_speed.values
    total = np.nansum(avg * count)
    np.testing.assert_allclose(total, src.sum(), rtol=1e-9)
    np.testing.assert_array_equal(out.coverage.values, count > 0)
    counts_only = ascat.arcoforge.resample(GLOBAL, "bucket_count")
    assert set(counts_only.data_vars) == {"count", "coverage"}
    np.testing.assert_array_equal(counts_only["count"].values, count)
    lazy = ascat.chunk({"NUMROWS": 500}).arcoforge.resample(GLOBAL, "bucket_avg",
                                                             variables=["model_speed"])
    np.testing.assert_allclose(lazy.model_speed.values, avg, equal_nan=True)


def test_modis_packed_sst_nearest_and_extra_dim(modis):
    area_spec = {"crs": "EPSG:4326", "extent": [72, 40, 87, 51], "resolution": 0.05}
    out = modis.arcoforge.resample(area_spec, "nearest", radius_of_influence=5_000)
    ref = kd_tree.resample_nearest(_swath(modis), modis.sea_surface_temperature.values[0],
                                   resolve_area(area_spec), radius_of_influence=5_000,
                                   fill_value=np.nan)
    np.testing.assert_array_equal(out.sea_surface_temperature.values[0], ref)
    assert out.sea_surface_temperature.encoding["scale_factor"] == \
        modis.sea_surface_temperature.encoding["scale_factor"]


def test_nadir_track_1d(shared_data):
    with xr.open_dataset(shared_data / JASON) as ds:
        track = ds[["ssha", "lon", "lat"]].load()
    out = track.arcoforge.resample(GLOBAL, "nearest", lon="lon", lat="lat",
                                   radius_of_influence=60_000)
    ref = kd_tree.resample_nearest(_swath(track), track.ssha.values, resolve_area(GLOBAL),
                                   radius_of_influence=60_000, fill_value=np.nan)
    np.testing.assert_array_equal(out.ssha.values, ref)
    assert np.isfinite(out.ssha.values).sum() > 50
    with pytest.raises(ConfigError, match="'bilinear' needs 2-D .* 'lon' has dims \\('time',\\)"):
        track.arcoforge.resample(GLOBAL, "bilinear", lon="lon", lat="lat")


def test_neighbour_cache_reuse_keys_and_bounds(shared_data, ascat):
    cache = NeighbourCache(max_entries=2)
    first = resample(ascat, GLOBAL, "nearest", radius_of_influence=ROI, cache=cache)
    assert cache.info().misses == 1 and cache.info().hits == 0
    again = resample(ascat, GLOBAL, "nearest", radius_of_influence=ROI, cache=cache)
    assert cache.info().hits == 1  # same geometry: neighbour info reused
    xr.testing.assert_identical(first, again)
    with xr.open_dataset(shared_data / ASCAT2) as other:
        resample(other.load(), GLOBAL, "nearest", radius_of_influence=ROI, cache=cache)
    assert cache.info().misses == 2  # another orbit is another key
    resample(ascat, GLOBAL, "nearest", radius_of_influence=ROI + 1, cache=cache)
    info = cache.info()
    assert info.misses == 3 and info.entries == 2 and 0 < info.nbytes <= info.max_bytes
    shifted = ascat.assign_coords(lat=ascat.lat + 1e-6)  # a one-micro-degree change: no reuse
    resample(shifted, GLOBAL, "nearest", radius_of_influence=ROI, cache=cache)
    assert cache.info().misses == 4
    with pytest.raises(ConfigError, match="max_entries=-1"):
        NeighbourCache(max_entries=-1)


def test_area_forms_and_projected_grid(ascat):
    spec = {"crs": "EPSG:3413", "extent": [-3_000_000, -3_000_000, 3_000_000, 3_000_000],
            "resolution": 50_000}
    adef = area_from_spec("EPSG:3413", spec["extent"], 50_000)
    a = ascat.arcoforge.resample(spec, radius_of_influence=ROI)
    b = ascat.arcoforge.resample(adef, radius_of_influence=ROI)
    c = ascat.arcoforge.resample(a, radius_of_influence=ROI)  # the grid of a reference dataset
    for other in (b, c):
        np.testing.assert_array_equal(a.wind_speed.values, other.wind_speed.values)
    assert a.crs.attrs["grid_mapping_name"] == "polar_stereographic"
    assert a.x.attrs["standard_name"] == "projection_x_coordinate" and a.x.attrs["units"] == "m"
    assert a.coverage.values.sum() > 100
    # a plain lon/lat grid without grid mapping is taken as EPSG:4326
    plain = xr.Dataset(coords={"lat": np.arange(-89.5, 90, 1.0), "lon": np.arange(-179.5, 180)})
    assert resolve_area(plain).crs.to_epsg() == 4326
    assert resolve_area(plain).area_extent == resolve_area(GLOBAL).area_extent
    with pytest.raises(ConfigError, match="x coordinate is not regularly spaced"):
        resolve_area(plain.isel(lon=[0, 1, 3]))
    with pytest.raises(ConfigError, match=r"no 1-D x/y \(or lon/lat\) coordinates"):
        resolve_area(xr.Dataset({"v": ("t", [1.0])}))
    single = ascat.wind_speed.arcoforge.resample(GLOBAL, radius_of_influence=ROI)
    assert isinstance(single, xr.DataArray) and single.name == "wind_speed"


@pytest.mark.parametrize(("area", "message"), [
    ({"crs": "EPSG:999999", "extent": [0, 0, 1, 1], "resolution": 1}, "not a CRS pyproj"),
    ({"crs": "EPSG:4326", "extent": [10, 0, 0, 1], "resolution": 1}, "xmin < xmax"),
    ({"crs": "EPSG:4326", "extent": [0, 0, 1, 1], "resolution": 0.3}, "whole number of cells"),
    ({"crs": "EPSG:4326", "extent": [0, 0, 1, 1]}, "exactly one of 'resolution'"),
    ({"crs": "EPSG:4326", "extent": [0, 0, 1, 1], "res": 1}, "unknown keys: \\['res'\\]"),
    ("EPSG:4326", "is not an area"),
])
def test_bad_areas_are_named(ascat, area, message):
    with pytest.raises(ConfigError, match=message):
        ascat.arcoforge.resample(area)


def test_bad_calls_are_named(ascat):
    with pytest.raises(ConfigError, match="method 'cubic' is not one of nearest, bilinear"):
        ascat.arcoforge.resample(GLOBAL, "cubic")
    with pytest.raises(SchemaError, match="no longitude variable found .* pass lon='name'"):
        ascat.drop_vars(["lon"]).arcoforge.resample(GLOBAL)
    with pytest.raises(SchemaError, match="variables \\['nope'\\] are not in the dataset"):
        ascat.arcoforge.resample(GLOBAL, variables=["nope"])
    with pytest.raises(MissingDependencyError, match="pip install 'arcoforge\\[satpy\\]'"):
        require("satpy.no_such_module_here", "a test")


def test_regrid_transform_contract(ascat):
    from arcoforge.forge.patterns import Index
    from arcoforge.forge.transforms import Transform
    from arcoforge.regrid import Regrid

    step = Regrid(GLOBAL, method="nearest", radius_of_influence=ROI)
    assert isinstance(step, Transform) and step.metadata_only is False
    desc = step.describe()
    assert json.loads(json.dumps(desc)) == desc and desc["area"]["shape"] == [180, 360]
    assert Regrid(resolve_area(GLOBAL), radius_of_influence=ROI).describe()["area"] == \
        desc["area"]
    assert Regrid(GLOBAL, radius_of_influence=ROI + 1).describe() != desc
    clone = pickle.loads(pickle.dumps(step))
    index = Index(positions=(("time", 0),))
    xr.testing.assert_identical(clone.apply(index, ascat), ascat.arcoforge.resample(
        GLOBAL, radius_of_influence=ROI))
    with pytest.raises(ConfigError, match="Regrid: method 'linear'"):
        Regrid(GLOBAL, method="linear")
