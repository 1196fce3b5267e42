"""satpy (optional, GPL) into the regrid path: ``satpy.Scene`` -> xarray -> accessor.

No raw instrument file in the shared data matches one of satpy's instrument readers by name
and format (the ASCAT and MODIS granules are PO.DAAC NetCDF subsets), so this tests the
integration through satpy's generic CF/NetCDF reader (``satpy_cf_nc``) on the real granules,
linked under the file names that reader's patterns expect.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyresample")
satpy = pytest.importorskip("satpy")

import xarray as xr  # noqa: E402

import arcoforge.accessor  # noqa: E402,F401
from arcoforge.errors import ConfigError, SourceReadError  # noqa: E402
from arcoforge.regrid.satpy_io import open_satpy, scene_to_dataset  # noqa: E402

ASCAT = "swath/ascat_20150702_084200_metopa_45145_eps_o_250_2300_ovw.l2.nc"
MODIS = "swath/SS_MODIS_A-JPL-L2P-v2014.0.nc"
AREA = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 1.0}


@pytest.fixture
def linked(shared_data, tmp_path):
    """The granules under names matching ``satpy_cf_nc``'s file patterns."""
    names = {ASCAT: "Metop-A-ascat-20150702084200-20150702102359.nc",
             MODIS: "Aqua-modis-20190805065501-20190805070000.nc"}
    out = {}
    for src, name in names.items():
        (tmp_path / name).symlink_to(shared_data / src)
        out[src] = str(tmp_path / name)
    return out


def test_satpy_scene_to_grid_equals_the_xarray_path(shared_data, linked):
    ds = open_satpy([linked[ASCAT]], "satpy_cf_nc", ["wind_speed", "wvc_quality_flag"])
    assert set(ds.data_vars) == {"wind_speed", "wvc_quality_flag"}
    assert ds.attrs["start_time"] == "2015-07-02T08:42:00"
    via_satpy = ds.arcoforge.resample(AREA, radius_of_influence=30_000)
    with xr.open_dataset(shared_data / ASCAT, chunks={}) as plain:
        direct = plain[["wind_speed", "wvc_quality_flag"]].arcoforge.resample(
            AREA, radius_of_influence=30_000)
        for name in ("wind_speed", "wvc_quality_flag"):
            np.testing.assert_array_equal(via_satpy[name].values, direct[name].values)
    assert via_satpy.wind_speed.attrs["units"] == "m s-1"
    assert via_satpy.wind_speed.attrs["grid_mapping"] == "crs"


def test_satpy_area_becomes_lon_lat(linked):
    """MODIS: satpy gives a SwathDefinition ``area``; it becomes lon/lat coordinates."""
    scene = satpy.Scene(filenames=[linked[MODIS]], reader="satpy_cf_nc")
    scene.load(["sea_surface_temperature"])
    assert scene["sea_surface_temperature"].attrs["area"] is not None
    ds = scene_to_dataset(scene)
    sst = ds.sea_surface_temperature
    assert sst.lon.dims == sst.dims[-2:] and "area" not in sst.attrs
    out = ds.arcoforge.resample({"crs": "EPSG:4326", "extent": [72, 40, 87, 51],
                                 "resolution": 0.1}, radius_of_influence=5_000)
    assert out.sea_surface_temperature.dims == ("time", "y", "x")
    assert np.isfinite(out.sea_surface_temperature.values).sum() > 100
    with pytest.raises(ConfigError, match="datasets \\['nope'\\] are not loaded"):
        scene_to_dataset(scene, ["nope"])


def test_satpy_errors_name_the_files(linked, shared_data):
    with pytest.raises(SourceReadError, match="accepts none of .*file patterns"):
        open_satpy([str(shared_data / ASCAT)], "satpy_cf_nc")  # the original name
    with pytest.raises(SourceReadError, match="offers no datasets \\['sst'\\]"):
        open_satpy([linked[ASCAT]], "satpy_cf_nc", ["sst"])
