"""Many orbits -> one ``(time, y, x)`` cube through a recipe with :class:`Regrid` (build, then
append tomorrow's orbit), and batches of regridded scenes through the feed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyresample")  # imports pyproj before any netCDF file opens

import xarray as xr  # noqa: E402

import arcoforge as af  # noqa: E402
import arcoforge.accessor  # noqa: E402,F401
from arcoforge.forge.append import append  # noqa: E402
from arcoforge.forge.patterns import ConcatDim, FilePattern  # noqa: E402
from arcoforge.regrid import Regrid  # noqa: E402

ORBITS = {
    np.datetime64("2015-07-02T08:42:00", "ns"):
        "swath/ascat_20150702_084200_metopa_45145_eps_o_250_2300_ovw.l2.nc",
    np.datetime64("2015-07-02T10:24:00", "ns"):
        "swath/ascat_20150702_102400_metopa_45146_eps_o_250_2300_ovw.l2.nc",
}
AREA = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 2.0}
VARIABLES = ["wind_speed", "wind_dir", "wvc_quality_flag", "pixel_time"]


def _recipe(shared_data, keys):
    files = {k: str(shared_data / ORBITS[k]) for k in keys}
    pattern = FilePattern(lambda time: files[time], ConcatDim("time", keys=list(keys),
                                                              nitems_per_file=1))
    return af.ZarrRecipe(pattern, target_chunks={"time": 1}, transforms=[
        # the swath's per-pixel "time" would clash with the cube's time dimension
        af.transforms.Rename({"time": "pixel_time"}),
        Regrid(AREA, method="nearest", radius_of_influence=30_000, variables=VARIABLES),
        af.transforms.Function(_add_time),
    ])


def _add_time(index, ds):
    """Each granule becomes one step of the cube's time axis (its key: the orbit's start)."""
    out = ds.expand_dims(time=[index.key("time")])
    out.time.encoding = {"units": "seconds since 2000-01-01", "dtype": "int64"}
    return out


@pytest.fixture(scope="module")
def cube(shared_data, tmp_path_factory):
    target = str(tmp_path_factory.mktemp("regrid") / "ascat-cube.zarr")
    keys = list(ORBITS)
    af.bake(_recipe(shared_data, keys[:1]), target, progress=False)
    append(_recipe(shared_data, keys), target)  # tomorrow's orbit
    return af.open_dataset(target)


def test_orbits_become_one_cube_with_coverage(shared_data, cube):
    assert dict(cube.sizes) == {"time": 2, "y": 90, "x": 180}
    assert cube.wind_speed.dims == ("time", "y", "x")
    assert list(cube.time.values) == list(ORBITS)
    for i, path in enumerate(ORBITS.values()):
        # the recipe reads each granule lazily (dask), so it runs pyresample's dask resampler
        with xr.open_dataset(shared_data / path, chunks={}) as granule:
            direct = granule.rename({"time": "pixel_time"}).arcoforge.resample(
                AREA, "nearest", radius_of_influence=30_000, variables=VARIABLES).compute()
        step = cube.isel(time=i)
        np.testing.assert_array_equal(step.coverage.values, direct.coverage.values)
        np.testing.assert_allclose(step.wind_speed.values, direct.wind_speed.values,
                                   rtol=0, atol=1e-9)
        np.testing.assert_array_equal(step.pixel_time.values, direct.pixel_time.values)
        assert step.wind_speed.attrs["units"] == "m s-1"
    # the two orbits cover different cells; the packing of the source is kept in the store
    assert (cube.coverage[0] != cube.coverage[1]).any()
    assert cube.wind_speed.encoding["dtype"] == np.int16
    assert cube.crs.attrs["grid_mapping_name"] == "latitude_longitude"


def test_batches_of_regridded_scenes(cube):
    stream = cube.arcoforge.stream({"y": 30, "x": 60}, variables=["wind_speed", "coverage"],
                                   batch_size=4)
    batches = list(stream)
    total = sum(len(b["wind_speed"]) for b in batches)
    assert total == 2 * 3 * 3  # orbits x patches along y x patches along x
    first = batches[0]
    assert first["wind_speed"].shape == (4, 30, 60)
    np.testing.assert_array_equal(first["wind_speed"][0],
                                  cube.wind_speed.isel(time=0, y=slice(0, 30),
                                                       x=slice(0, 60)).values)
    np.testing.assert_array_equal(first["coverage"][0],
                                  cube.coverage.isel(time=0, y=slice(0, 30),
                                                     x=slice(0, 60)).values)
