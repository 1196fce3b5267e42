"""The same build from local paths, HTTP (Range or not, auth, flaky), FTP and S3 (moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

import arcoforge as af
from arcoforge.forge.verify import verify

MONTHS = ["201901", "201902", "201903", "201904", "201905", "201906"]


@pytest.fixture(scope="module")
def local_reference(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    files = [str(shared_data / "ersst-v5" / f"ersst.v5.{m}.nc") for m in MONTHS]
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"),
                           target_chunks={"time": 4})
    target = str(tmp_path_factory.mktemp("ref") / "local.zarr")
    af.bake(recipe, target, progress=False)
    assert verify(target, recipe).ok
    return af.open_dataset(target).load()


def bake_remote(base: str, tmp_path: Path, **source_options) -> xr.Dataset:  # type: ignore[no-untyped-def]
    pattern = af.FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS, nitems_per_file=1))
    opts = af.SourceOptions(cache=str(tmp_path / "cache"), backoff=0.01, **source_options)
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 4}, source_options=opts)
    target = str(tmp_path / "remote.zarr")
    result = af.bake(recipe, target, progress=False)
    assert result.files == len(MONTHS)
    return af.open_dataset(target).load()


def assert_same_data(a: xr.Dataset, b: xr.Dataset) -> None:
    def strip(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.copy()
        ds.attrs = {k: v for k, v in ds.attrs.items() if not str(k).startswith("arcoforge:")}
        return ds

    xr.testing.assert_identical(strip(a), strip(b))


@pytest.mark.parametrize("range_support", [True, False])
def test_http_with_and_without_range(shared_data: Path, tmp_path: Path, http_server,  # type: ignore[no-untyped-def]
                                     local_reference: xr.Dataset, range_support: bool) -> None:
    server = http_server(shared_data / "ersst-v5", range=range_support)
    ds = bake_remote(server.url, tmp_path)
    assert_same_data(ds, local_reference)
    assert ds.attrs["arcoforge:sources"][0]["url"].startswith(server.url)


def test_http_basic_auth(shared_data: Path, tmp_path: Path, http_server,  # type: ignore[no-untyped-def]
                         local_reference: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    server = http_server(shared_data / "ersst-v5", basic_auth=("ocean", "s3cret-pw"))
    monkeypatch.setenv("ARCO_TEST_USER", "ocean")
    monkeypatch.setenv("ARCO_TEST_PASS", "s3cret-pw")
    ds = bake_remote(server.url, tmp_path, auth=af.Auth.basic("ARCO_TEST_USER", "ARCO_TEST_PASS"))
    assert_same_data(ds, local_reference)
    # the secret is nowhere in the store
    for f in (tmp_path / "remote.zarr").rglob("*.json"):
        assert "s3cret-pw" not in f.read_text()


def test_http_flaky_server_retried(shared_data: Path, tmp_path: Path, http_server,  # type: ignore[no-untyped-def]
                                   local_reference: xr.Dataset) -> None:
    server = http_server(shared_data / "ersst-v5", flaky=0.3, seed=7)
    ds = bake_remote(server.url, tmp_path, retries=8)
    assert server.failures_injected > 0
    assert_same_data(ds, local_reference)


def test_ftp(shared_data: Path, tmp_path: Path, ftp_server,  # type: ignore[no-untyped-def]
             local_reference: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ftp_server(shared_data / "ersst-v5")
    monkeypatch.setenv("ARCO_FTP_USER", server.user)
    monkeypatch.setenv("ARCO_FTP_PASS", server.password)
    ds = bake_remote(server.url, tmp_path, auth=af.Auth.basic("ARCO_FTP_USER", "ARCO_FTP_PASS"))
    assert_same_data(ds, local_reference)


def test_s3_source_and_s3_target(shared_data: Path, tmp_path: Path, s3_server,  # type: ignore[no-untyped-def]
                                 local_reference: xr.Dataset) -> None:
    base = s3_server.upload(shared_data / "ersst-v5", pattern="ersst.v5.2019*.nc")
    pattern = af.FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS, nitems_per_file=1))
    opts = af.SourceOptions(cache=str(tmp_path / "cache"),
                            storage_options=s3_server.storage_options)
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 4}, source_options=opts)
    bucket = s3_server.create_bucket()
    target = f"s3://{bucket}/ersst.zarr"
    so = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    af.bake(recipe, target, storage_options=so, progress=False)
    ds = af.open_dataset(target, storage_options=so).load()
    assert_same_data(ds, local_reference)
    fs = s3_server.fs()
    assert not fs.exists(f"{bucket}/ersst.zarr.arcoforge-staging")
