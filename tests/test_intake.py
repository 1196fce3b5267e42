"""Intake 2 catalogs of arcoforge datasets: a built store, the whole STAC catalog, a search
result, and raw satellite granules read through satpy; written as YAML and opened back."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("intake")
pytest.importorskip("pyresample")  # imports pyproj before any netCDF file opens

import intake  # noqa: E402
import xarray as xr  # noqa: E402

import arcoforge as af  # noqa: E402
from arcoforge.catalog import publish, search  # noqa: E402
from arcoforge.catalog.intake import (  # noqa: E402
    catalog_to_intake,
    dataset_to_intake,
    granules_to_intake,
    open_intake_catalog,
    search_to_intake,
    write_intake_catalog,
)
from arcoforge.errors import NotFoundError  # noqa: E402
from arcoforge.forge.patterns import ConcatDim, FilePattern  # noqa: E402
from arcoforge.regrid import Regrid  # noqa: E402

ASCAT = "swath/ascat_20150702_084200_metopa_45145_eps_o_250_2300_ovw.l2.nc"


def _expand(index, ds):
    out = ds.expand_dims(orbit=[45145])
    return out


@pytest.fixture(scope="module")
def published(shared_data, tmp_path_factory):
    """A regridded ASCAT orbit built into a store and published in a STAC catalog."""
    root = tmp_path_factory.mktemp("intake")
    path = str(shared_data / ASCAT)
    pattern = FilePattern(lambda orbit: path, ConcatDim("orbit", keys=[45145], nitems_per_file=1))
    recipe = af.ZarrRecipe(pattern, transforms=[
        af.transforms.KeepVariables(["wind_speed", "lon", "lat"]),
        Regrid({"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 2.0},
               radius_of_influence=30_000),
        af.transforms.Function(_expand)])
    store = str(root / "ascat-winds.zarr")
    af.bake(recipe, store, progress=False)
    catalog = str(root / "catalog")
    publish(catalog, store, dataset_id="ascat-winds",
            meta={"title": "ASCAT winds, 2 degree grid", "license": "Apache-2.0"})
    return root, store, catalog


def test_whole_catalog_round_trips_through_intake_yaml(published):
    root, store, catalog = published
    cat = catalog_to_intake(catalog)
    path = write_intake_catalog(cat, root / "catalog.yaml")
    back = intake.from_yaml_file(path)  # plain intake: the readers are found by name
    assert "ascat-winds" in back
    ds = back["ascat-winds"].read()
    xr.testing.assert_identical(ds, af.open_dataset(store))
    meta = back["ascat-winds"].metadata
    assert meta["title"] == "ASCAT winds, 2 degree grid"
    assert "wind_speed" in meta["variables"] and meta["versions"] == ["1.0"]
    assert open_intake_catalog(path)["ascat-winds"].read().wind_speed.dims == \
        ("orbit", "y", "x")


def test_search_result_becomes_a_catalog(published):
    root, store, catalog = published
    hits = search(catalog, variables=["wind_speed"])
    cat = search_to_intake(hits, catalog)
    assert [s.id for s in hits] == ["ascat-winds"] and "ascat-winds" in cat
    assert len(search_to_intake(search(catalog, variables=["sst"]), catalog).entries) == 0
    with pytest.raises(NotFoundError, match="no datasets \\['nope'\\] .*ascat-winds"):
        catalog_to_intake(catalog, ids=["nope"])


def test_one_built_dataset_with_a_pinned_version(published):
    root, store, catalog = published
    cat = dataset_to_intake(store, "winds", version="1.0", metadata={"source": "ASCAT"})
    path = write_intake_catalog(cat, root / "one.yaml")
    ds = open_intake_catalog(path)["winds"].read()
    xr.testing.assert_identical(ds, af.open_dataset(store, version="1.0"))
    assert int(ds.coverage.sum()) > 100


def test_satellite_granules_through_satpy(shared_data, tmp_path):
    pytest.importorskip("satpy")
    link = tmp_path / "Metop-A-ascat-20150702084200-20150702102359.nc"  # satpy_cf_nc's pattern
    link.symlink_to(shared_data / ASCAT)
    cat = granules_to_intake({"orbit-45145": [str(link)]}, reader="satpy_cf_nc",
                             metadata={"orbit-45145": {"platform": "Metop-A"}})
    path = write_intake_catalog(cat, tmp_path / "granules.yaml")
    entry = open_intake_catalog(path)["orbit-45145"]
    assert entry.metadata["platform"] == "Metop-A"
    ds = entry.read(datasets=["wind_speed"])
    with xr.open_dataset(shared_data / ASCAT) as plain:
        np.testing.assert_array_equal(ds.wind_speed.values, plain.wind_speed.values)
    grid = ds.arcoforge.resample({"crs": "EPSG:4326", "extent": [-180, -90, 180, 90],
                                  "resolution": 2.0}, radius_of_influence=30_000)
    assert grid.wind_speed.dims == ("y", "x")
