"""Inputs read where they are: OPeNDAP endpoints and Zarr stores, against real servers on
loopback.

* OPeNDAP: pydap's server (its WSGI ``BaseHandler``) serves the variables of a real NetCDF file
  of ``shared/data`` (NCEP air temperature); arcoforge reads it through the netCDF library's DAP2
  client, one constrained request per slice, and the store equals what xarray reads from the
  endpoint and from the file itself.  (pydap's own file handler, ``pydap.wsgi.app.DapServer``,
  cannot answer constrained requests in pydap 3.5.11: its ``LazyVariable`` reshapes every slice
  to the variable's full shape, so the test serves the file's arrays through pydap's data
  model instead; see the module's ``dap_server`` fixture.)
* Zarr: a store written by xarray from the same file, read from a local path, ``file://`` and
  ``http://`` (arcoforge's loopback server with Range; the store is sharded, so a slice is a
  ranged read of a shard).

Neither is downloaded into the cache; the provenance records the sha256 of the input's
metadata instead of a file checksum.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import netCDF4
import numpy as np
import pytest
import requests
import xarray as xr

import arcoforge as af
from arcoforge.errors import SourceError
from arcoforge.forge.io.formats import dap_source, detect_engine, remote_engine
from arcoforge.forge.io.readers import RawFile, check_complete
from arcoforge.forge.io.remote import input_identity, scan_remote

AIR = "ncep-air/air.nc"


def build(url: str, tmp_path: Path, **pattern_kwargs: Any) -> xr.Dataset:
    target = str(tmp_path / "t.zarr")
    pattern = af.pattern_from_file_sequence([url], "time", **pattern_kwargs)
    af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 40}), target, progress=False,
            workdir=str(tmp_path / "work"))
    return af.open_dataset(target)


def assert_same(got: xr.Dataset, expected: xr.Dataset) -> None:
    for name, var in expected.variables.items():
        assert got[name].dims == var.dims, name
        assert got[name].dtype == var.dtype, name
        np.testing.assert_array_equal(got[name].values, var.values, err_msg=str(name))


def cached_files(tmp_path: Path) -> list[Path]:
    work = tmp_path / "work"
    return [p for p in work.rglob("*") if p.is_file()] if work.exists() else []


# -- OPeNDAP ------------------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        self.server.log.append(str(args[0]))  # type: ignore[attr-defined]


@pytest.fixture
def dap_server(shared_data: Path) -> Iterator[Any]:
    """pydap's DAP2 server on loopback, serving the variables and attributes of ``air.nc``
    (raw, as stored: int16 with scale_factor)."""
    model = pytest.importorskip("pydap.model", reason="needs pydap[server]")
    lib = pytest.importorskip("pydap.handlers.lib", reason="needs pydap[server]")
    with netCDF4.Dataset(shared_data / AIR) as nc:
        nc.set_auto_maskandscale(False)
        dataset = model.DatasetType("air", attributes={
            "NC_GLOBAL": {k: nc.getncattr(k) for k in nc.ncattrs()}})
        for name, var in nc.variables.items():
            dataset[name] = model.BaseType(
                name, data=np.asarray(var[:]), dims=var.dimensions,
                attributes={k: var.getncattr(k) for k in var.ncattrs()})
    server = make_server("127.0.0.1", 0, lib.BaseHandler(dataset), handler_class=_Quiet)
    server.log = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}/air.nc"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def test_opendap_endpoint_builds_like_xarray(dap_server: Any, shared_data: Path,
                                             tmp_path: Path) -> None:
    url = dap_server.url
    got = build(url, tmp_path, file_type="opendap")
    # read slice by slice (one constrained request per task), never downloaded whole
    slices = [line for line in dap_server.log if ".dods?air" in line]
    assert len(slices) == 4 and all("%5b" in s.lower() for s in slices), slices
    assert cached_files(tmp_path) == []
    with xr.open_dataset(url, engine="netcdf4") as exp:
        assert_same(got, exp)
    with xr.open_dataset(shared_data / AIR) as original:  # and the file behind the endpoint
        np.testing.assert_array_equal(got["air"].values, original["air"].values)


def test_opendap_provenance_records_the_dds_and_das(dap_server: Any, tmp_path: Path) -> None:
    url = dap_server.url
    got = build(url, tmp_path, file_type="opendap")
    body = requests.get(url + ".dds", timeout=10).content + \
        requests.get(url + ".das", timeout=10).content
    expected = "opendap-dds-das:" + hashlib.sha256(body).hexdigest()
    assert got.attrs["arcoforge:sources"] == [{"url": url, "sha256": expected, "size": 0}]
    assert input_identity(url, "opendap") == expected


def test_opendap_schema_and_raw_slices(dap_server: Any, shared_data: Path) -> None:
    """The same interfaces as a file: scan_remote gives the FileSchema of the raw view,
    RawFile reads raw slices (int16 as stored)."""
    url = dap_server.url
    schema = scan_remote((), url, "time", "opendap")
    assert schema.dims == {"time": 124, "lat": 11, "lon": 21}
    assert schema.variables["air"].dtype == "<i2"
    assert schema.concat_values is not None and len(schema.concat_values) == 124
    raw = RawFile(url, "opendap", url=url)
    try:
        with netCDF4.Dataset(shared_data / AIR) as nc:
            nc.set_auto_maskandscale(False)
            np.testing.assert_array_equal(raw.read("air", (slice(3, 5), slice(2, 4))),
                                          nc["air"][3:5, 2:4])
    finally:
        raw.close()


def test_opendap_unknown_endpoint(http_server: Any, tmp_path: Path) -> None:
    """A URL that is no OPeNDAP endpoint (a plain web server without it): a named error,
    not retried."""
    (tmp_path / "empty").mkdir()
    url = http_server(tmp_path / "empty").url + "/nothing.nc"
    with pytest.raises(SourceError) as info:
        build(url, tmp_path, file_type="opendap")
    assert str(info.value).startswith(f"{url}: the OPeNDAP server answered 404 to .dds")
    assert info.value.reason == "not_found" and not info.value.transient


def test_dap_urls() -> None:
    """``dap2://`` and ``dap4://`` URLs are OPeNDAP endpoints whatever the file_type says
    (``auto``); ``dap2://`` means HTTPS, as in pydap; DAP4 is read through pydap."""
    assert remote_engine("dap2://example.org/data/sst.nc") == "opendap"
    assert remote_engine("dap4://example.org/data/sst.nc") == "opendap"
    assert remote_engine("https://example.org/data/sst.nc") is None
    assert remote_engine("https://example.org/data/sst.nc", "opendap") == "opendap"
    assert dap_source("dap2://example.org/sst.nc") == ("netcdf4", "https://example.org/sst.nc")
    assert dap_source("http://127.0.0.1:8/sst.nc") == ("netcdf4", "http://127.0.0.1:8/sst.nc")
    assert dap_source("dap4://example.org/sst.nc") == ("pydap", "dap4://example.org/sst.nc")


# -- Zarr ---------------------------------------------------------------------------------------


def write_store(shared_data: Path, store: Path, consolidated: bool) -> Path:
    """``air.nc`` written as a sharded Zarr v3 store by xarray (31-step chunks in one shard)."""
    with xr.open_dataset(shared_data / AIR) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes on the packed int16 and consolidated metadata
        encoding = {"air": {"chunks": (31, 11, 21), "shards": (124, 11, 21)}}
        ds.to_zarr(store, zarr_format=3, consolidated=consolidated, encoding=encoding)
    return store


@pytest.fixture
def zarr_store(shared_data: Path, tmp_path: Path) -> Path:
    """A store without consolidated metadata (a local reader lists its folders)."""
    return write_store(shared_data, tmp_path / "served" / "air.zarr", consolidated=False)


@pytest.fixture
def consolidated_store(shared_data: Path, tmp_path: Path) -> Path:
    """A store with consolidated metadata (what a reader over HTTP needs)."""
    return write_store(shared_data, tmp_path / "served" / "air.zarr", consolidated=True)


def zarr_truth(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(path)


@pytest.mark.parametrize("form", ["path", "file_url", "auto"])
def test_local_zarr_store_builds_like_xarray(zarr_store: Path, tmp_path: Path,
                                             form: str) -> None:
    url = {"path": str(zarr_store), "file_url": zarr_store.as_uri(),
           "auto": str(zarr_store)}[form]
    kwargs = {} if form == "auto" else {"file_type": "zarr"}
    got = build(url, tmp_path, **kwargs)
    with zarr_truth(zarr_store) as exp:
        assert_same(got, exp)
    assert cached_files(tmp_path) == []


def test_zarr_store_over_http_with_range(consolidated_store: Path, tmp_path: Path,
                                         http_server: Any) -> None:
    server = http_server(consolidated_store.parent)
    url = server.url + "/air.zarr"
    got = build(url, tmp_path, file_type="zarr")
    with zarr_truth(consolidated_store) as exp:
        assert_same(got, exp)
    shard = "/air.zarr/air/c/0/0/0"
    assert server.paths.get(shard, 0) >= 1 and server.range_requests >= 4  # chunk by chunk
    assert cached_files(tmp_path) == []


def test_zarr_over_http_needs_consolidated_metadata(zarr_store: Path, tmp_path: Path,
                                                    http_server: Any) -> None:
    url = http_server(zarr_store.parent).url + "/air.zarr"
    with pytest.raises(SourceError) as info:
        build(url, tmp_path, file_type="zarr")
    text = str(info.value)
    assert text.startswith(f"{url}: the Zarr store shows no variables over HTTP")
    assert "zarr.consolidate_metadata" in text


def test_zarr_provenance_records_the_metadata_hash(zarr_store: Path, tmp_path: Path) -> None:
    got = build(str(zarr_store), tmp_path, file_type="zarr")
    (record,) = got.attrs["arcoforge:sources"]
    assert record["url"] == str(zarr_store) and record["size"] == 0
    assert record["sha256"].startswith("zarr-metadata:")
    assert record["sha256"] == input_identity(str(zarr_store), "zarr")
    # new metadata is a new input: the identity changes with an attribute
    import zarr

    zarr.open_group(str(zarr_store), mode="r+").attrs["note"] = "edited"
    assert input_identity(str(zarr_store), "zarr") != record["sha256"]


def test_zarr_inputs_skip_file_checks(zarr_store: Path) -> None:
    """check_complete and first-byte detection do not apply to a store (a folder or a URL)."""
    check_complete(str(zarr_store))
    check_complete("https://example.org/air.zarr")
    assert detect_engine(str(zarr_store)) == "zarr"
    assert remote_engine(str(zarr_store.parent)) is None
    assert remote_engine("s3://bucket/era5.zarr/") == "zarr"


def test_missing_zarr_store(tmp_path: Path) -> None:
    url = str(tmp_path / "nothing.zarr")
    with pytest.raises(SourceError) as info:
        build(url, tmp_path, file_type="zarr")
    assert str(info.value).startswith(f"{url}: ")
