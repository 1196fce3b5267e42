"""Virtual references to sources over loopback HTTP (with Range) and S3 (a moto server): the
chunks are read in place through Icechunk's virtual chunk containers, with no extra steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

import arcoforge as af
from arcoforge.forge.verify import verify

pytest.importorskip("virtualizarr")
pytest.importorskip("icechunk")

MONTHS = ["201901", "201902", "201903"]


def local_reference(shared: Path) -> xr.Dataset:
    files = [str(shared / "ersst-v5" / f"ersst.v5.{m}.nc") for m in MONTHS]
    return xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override").load()


def strip(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if not str(k).startswith("arcoforge:")}
    return ds


def test_http_with_range(shared_data: Path, tmp_path: Path, http_server) -> None:  # type: ignore[no-untyped-def]
    server = http_server(shared_data / "ersst-v5", range=True)
    pattern = af.FilePattern(lambda time: f"{server.url}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS, nitems_per_file=1))
    recipe = af.VirtualRecipe(pattern, source_options=af.SourceOptions(
        cache=str(tmp_path / "cache"), backoff=0.01))
    target = f"icechunk://{tmp_path / 'http'}"
    af.bake(recipe, target, progress=False)
    before = server.range_requests
    ds = af.open_dataset(target).load()
    assert server.range_requests > before  # the data chunks came from the server, by Range
    xr.testing.assert_identical(strip(ds), strip(local_reference(shared_data)))
    assert verify(target, recipe).ok


def test_s3_on_moto(shared_data: Path, tmp_path: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    base = s3_server.upload(shared_data / "ersst-v5", pattern="ersst.v5.20190[123].nc")
    pattern = af.FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS, nitems_per_file=1))
    recipe = af.VirtualRecipe(pattern, source_options=af.SourceOptions(
        cache=str(tmp_path / "cache"), storage_options=s3_server.storage_options))
    target = f"icechunk://{tmp_path / 's3'}"
    af.bake(recipe, target, progress=False)
    ds = af.open_dataset(target).load()
    xr.testing.assert_identical(strip(ds), strip(local_reference(shared_data)))
    assert verify(target, recipe).ok
    # the chunks live in the bucket: removing them there breaks reads of the store
    fs = s3_server.fs()
    fs.rm(f"{base[len('s3://'):]}/ersst.v5.201902.nc")
    with pytest.raises(Exception):  # noqa: B017 - the referenced object is gone
        af.open_dataset(target)["sst"].values  # noqa: B018


def test_s3_endpoint_from_environment(shared_data: Path, tmp_path: Path, s3_server,  # type: ignore[no-untyped-def]
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base = s3_server.upload(shared_data / "ersst-v5", pattern="ersst.v5.20190[12].nc")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    pattern = af.FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS[:2], nitems_per_file=1))
    recipe = af.VirtualRecipe(pattern, source_options=af.SourceOptions(
        cache=str(tmp_path / "cache")))  # the endpoint only in AWS_ENDPOINT_URL
    target = f"icechunk://{tmp_path / 's3env'}"
    af.bake(recipe, target, progress=False)
    assert af.open_dataset(target).sizes["time"] == 2



def test_s3_object_changed_after_the_build_is_not_read(shared_data: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       s3_server) -> None:
    base = s3_server.upload(shared_data / "ersst-v5", pattern="ersst.v5.20190[12].nc")
    pattern = af.FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS[:2], nitems_per_file=1))
    recipe = af.VirtualRecipe(pattern, source_options=af.SourceOptions(
        cache=str(tmp_path / "cache"), storage_options=s3_server.storage_options))
    target = f"icechunk://{tmp_path / 'etag'}"
    af.bake(recipe, target, progress=False)
    assert af.open_dataset(target)["sst"].load().sizes["time"] == 2
    # the object is replaced by another month (same layout, other values, a new ETag)
    s3_server.fs().put_file(str(shared_data / "ersst-v5" / "ersst.v5.201905.nc"),
                            f"{base[len('s3://'):]}/ersst.v5.201902.nc")
    with pytest.raises(Exception, match="(?i)etag|checksum|changed|modified|precondition"):
        af.open_dataset(target)["sst"].values  # noqa: B018
