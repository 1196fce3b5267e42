"""Tests for arcoforge.forge.io.fetch against real loopback servers and real ERSST files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import threading

import pytest
import requests

from arcoforge.forge.io import fetch as sources
from arcoforge.forge.io.fetch import (
    Auth,
    LocalSource,
    SourceError,
    SourceOptions,
    checksum,
    fetch,
    redact,
)

NAMES = ["ersst.v5.201901.nc", "ersst.v5.201902.nc", "ersst.v5.201903.nc"]
FAST = dict(backoff=0.01, max_backoff=0.05, timeout=10.0)


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ersst(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A private copy of a few ERSST files (and a directory with many, for concurrency)."""
    from tests.servers import shared_data_dir

    src = shared_data_dir() / "ersst-v5"
    if not src.is_dir():
        pytest.skip(f"shared test data not found at {src} (set ARCOFORGE_SHARED_DATA)")
    dst = tmp_path_factory.mktemp("ersst")
    for path in sorted(src.glob("ersst.v5.*.nc"))[:8]:
        shutil.copyfile(path, dst / path.name)
    (dst / "empty.nc").write_bytes(b"")
    return dst


def all_text_in(directory: pathlib.Path) -> str:
    """Every file name and every sidecar's content under ``directory``."""
    parts = []
    for path in directory.rglob("*"):
        parts.append(path.name)
        if path.suffix == ".json":
            parts.append(path.read_text())
    return "\n".join(parts)


# -------------------------------------------------------------------------------------------
# local files and helpers


def test_local_path_is_returned_as_is(ersst: pathlib.Path) -> None:
    path = ersst / NAMES[0]
    got = fetch(str(path))
    assert got == LocalSource(url=str(path), path=str(path), size=path.stat().st_size,
                              sha256=sha(path))
    assert fetch(path.as_uri()).path == str(path)


def test_local_missing_file_names_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.nc"
    with pytest.raises(SourceError, match="nope.nc.*does not exist") as err:
        fetch(str(missing))
    assert err.value.reason == "not_found"


def test_checksum_streams_sha256(ersst: pathlib.Path) -> None:
    assert checksum(str(ersst / NAMES[0])) == sha(ersst / NAMES[0])


def test_redact() -> None:
    assert redact("https://u:pw@h.org/a.nc?token=abc&x=1") == (
        "https://h.org/a.nc?token=REDACTED&x=1"
    )
    r = redact("https://h.org/a?X-Amz-Signature=s1&sig=s2&api_key=s3&access_token=s4&day=2")
    assert not any(s in r for s in ("s1", "s2", "s3", "s4")) and "day=2" in r
    assert redact("https://h.org/a?mine=s5", extra_params=["mine"]) == "https://h.org/a?mine=REDACTED"
    assert redact("/data/x.nc") == "/data/x.nc"


# -------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.parametrize("range_support", [True, False])
def test_http_fetch_with_and_without_range(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server, range_support: bool
) -> None:
    server = http_server(ersst, range=range_support)
    for name in NAMES[:2]:
        got = fetch(f"{server.url}/{name}", SourceOptions(**FAST), workdir=str(tmp_path))
        assert got.sha256 == sha(ersst / name)
        assert got.size == (ersst / name).stat().st_size
        assert got.path.startswith(str(tmp_path)) and got.path.endswith(name)
        meta = json.loads(pathlib.Path(got.path + ".json").read_text())
        assert meta["sha256"] == got.sha256 and meta["size"] == got.size
        assert meta["url"] == f"{server.url}/{name}" and meta["etag"] and meta["last_modified"]
    assert server.gets == 2
    # no leftovers from the temporary-name-then-rename protocol
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".part"]


def test_http_range_server_is_correct(ersst: pathlib.Path, http_server) -> None:
    server = http_server(ersst, range=True)
    data = (ersst / NAMES[0]).read_bytes()
    url = f"{server.url}/{NAMES[0]}"
    head = requests.head(url, timeout=5)
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Accept-Ranges"] == "bytes"
    r = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = requests.get(url, headers={"Range": f"bytes={len(data) - 5}-"}, timeout=5)
    assert r.status_code == 206 and r.content == data[-5:]
    r = requests.get(url, headers={"Range": "bytes=-7"}, timeout=5)
    assert r.status_code == 206 and r.content == data[-7:]
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert r.status_code == 416
    no_range = http_server(ersst, range=False)
    r = requests.get(f"{no_range.url}/{NAMES[0]}", headers={"Range": "bytes=0-9"}, timeout=5)
    assert r.status_code == 200 and r.content == data


def test_http_404_message(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst)
    url = f"{server.url}/ersst.v5.209912.nc"
    with pytest.raises(SourceError) as err:
        fetch(url, SourceOptions(**FAST), workdir=str(tmp_path))
    text = str(err.value)
    assert url in text and "not found" in text and "format function" in text
    assert err.value.url == url and err.value.reason == "not_found"
    assert server.gets == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_http_empty_file(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst)
    with pytest.raises(SourceError, match="is empty"):
        fetch(f"{server.url}/empty.nc", SourceOptions(**FAST), workdir=str(tmp_path))


def test_html_instead_of_data(tmp_path: pathlib.Path, http_server) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sst.nc").write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    server = http_server(site)
    with pytest.raises(SourceError, match="HTML page instead of data") as err:
        fetch(f"{server.url}/sst.nc", SourceOptions(**FAST), workdir=str(tmp_path / "w"))
    assert err.value.reason == "content"
    assert not list((tmp_path / "w").iterdir())


def test_basic_auth(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http_server(ersst, basic_auth=("alice", "s3cr3t-pw"))
    url = f"{server.url}/{NAMES[0]}"
    opts = SourceOptions(auth=Auth.basic("ARCO_TEST_USER", "ARCO_TEST_PW"), **FAST)

    monkeypatch.delenv("ARCO_TEST_USER", raising=False)
    monkeypatch.setenv("ARCO_TEST_PW", "s3cr3t-pw")
    with pytest.raises(SourceError) as err:
        fetch(url, opts, workdir=str(tmp_path))
    assert "ARCO_TEST_USER" in str(err.value) and "not set" in str(err.value)
    assert err.value.reason == "missing_credentials"
    assert server.requests == 0  # checked before any request

    monkeypatch.setenv("ARCO_TEST_USER", "alice")
    monkeypatch.setenv("ARCO_TEST_PW", "wrong-pw-value")
    with pytest.raises(SourceError) as err:
        fetch(url, opts, workdir=str(tmp_path))
    text = str(err.value)
    assert "credentials rejected" in text and "ARCO_TEST_USER" in text and "ARCO_TEST_PW" in text
    assert "wrong-pw-value" not in text and err.value.reason == "auth"
    assert server.gets == 1  # not retried

    monkeypatch.setenv("ARCO_TEST_PW", "s3cr3t-pw")
    got = fetch(url, opts, workdir=str(tmp_path))
    assert got.sha256 == sha(ersst / NAMES[0])
    assert "s3cr3t-pw" not in all_text_in(tmp_path)


def test_no_credentials_for_protected_server(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(ersst, bearer_token="tok")
    with pytest.raises(SourceError, match="credentials rejected.*SourceOptions.auth"):
        fetch(f"{server.url}/{NAMES[0]}", SourceOptions(**FAST), workdir=str(tmp_path))


def test_bearer(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http_server(ersst, bearer_token="bearer-secret-123")
    url = f"{server.url}/{NAMES[1]}"
    opts = SourceOptions(auth=Auth.bearer("ARCO_TEST_TOKEN"), **FAST)
    monkeypatch.setenv("ARCO_TEST_TOKEN", "not-the-token")
    with pytest.raises(SourceError) as err:
        fetch(url, opts, workdir=str(tmp_path))
    assert "ARCO_TEST_TOKEN" in str(err.value) and "not-the-token" not in str(err.value)
    monkeypatch.setenv("ARCO_TEST_TOKEN", "bearer-secret-123")
    assert fetch(url, opts, workdir=str(tmp_path)).sha256 == sha(ersst / NAMES[1])
    assert "bearer-secret-123" not in all_text_in(tmp_path)


def test_query_token_never_leaks(
    ersst: pathlib.Path,
    tmp_path: pathlib.Path,
    http_server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "qtok-7f3a9c"
    server = http_server(ersst, query_token=("apitoken", secret))
    opts = SourceOptions(auth=Auth.query("apitoken", "ARCO_TEST_QTOKEN"), **FAST)
    caplog.set_level(logging.DEBUG)

    monkeypatch.setenv("ARCO_TEST_QTOKEN", "qtok-wrong-1")
    with pytest.raises(SourceError) as err:
        fetch(f"{server.url}/{NAMES[2]}", opts, workdir=str(tmp_path))
    assert "qtok-wrong-1" not in str(err.value) and "ARCO_TEST_QTOKEN" in str(err.value)

    monkeypatch.setenv("ARCO_TEST_QTOKEN", secret)
    got = fetch(f"{server.url}/{NAMES[2]}", opts, workdir=str(tmp_path))
    assert got.sha256 == sha(ersst / NAMES[2])
    assert secret not in got.url and secret not in got.path
    assert secret not in all_text_in(tmp_path)

    # a missing file: the exception must not carry the token either (nor its chained cause)
    with pytest.raises(SourceError) as err:
        fetch(f"{server.url}/missing.nc", opts, workdir=str(tmp_path))
    assert secret not in str(err.value) and err.value.__cause__ is None
    # a dead server: the connection error mentions the URL, which carries the token
    dead = SourceOptions(auth=opts.auth, retries=1, backoff=0.01, timeout=2.0)
    port = server.port
    server.stop()
    with pytest.raises(SourceError) as err:
        fetch(f"http://127.0.0.1:{port}/{NAMES[0]}", dead, workdir=str(tmp_path))
    assert "failed after 2 attempt" in str(err.value)
    assert secret not in str(err.value)
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_flaky_server_retries(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst, flaky=0.3, seed=7)
    opts = SourceOptions(retries=10, **FAST)
    for name in NAMES:
        got = fetch(f"{server.url}/{name}", opts, workdir=str(tmp_path))
        assert got.sha256 == sha(ersst / name)
        assert checksum(got.path) == sha(ersst / name)
    assert server.failures_injected > 0


@pytest.mark.parametrize("mode", ["503", "truncate", "drop"])
def test_each_transient_failure_is_retried(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server, mode: str
) -> None:
    server = http_server(ersst, flaky=0.5, seed=3, fail_modes=(mode,))
    opts = SourceOptions(retries=12, **FAST)
    for name in NAMES[:2]:
        got = fetch(f"{server.url}/{name}", opts, workdir=str(tmp_path))
        assert got.sha256 == sha(ersst / name)
    assert server.failures_injected > 0


def test_timeouts_are_retried(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst, flaky=0.5, seed=1, fail_modes=("stall",), stall=1.0)
    opts = SourceOptions(retries=8, backoff=0.01, max_backoff=0.05, timeout=0.2)
    got = fetch(f"{server.url}/{NAMES[0]}", opts, workdir=str(tmp_path))
    assert got.sha256 == sha(ersst / NAMES[0])
    assert server.failures_injected > 0


def test_fetched_file_opens_with_xarray(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    xr = pytest.importorskip("xarray")
    server = http_server(ersst)
    got = fetch(f"{server.url}/{NAMES[0]}", SourceOptions(**FAST), workdir=str(tmp_path))
    with xr.open_dataset(got.path) as ds, xr.open_dataset(ersst / NAMES[0]) as ref:
        assert ds.identical(ref)


def test_range_server_works_with_obstore_and_fsspec(ersst: pathlib.Path, http_server) -> None:
    import fsspec

    server = http_server(ersst, range=True)
    data = (ersst / NAMES[0]).read_bytes()
    with fsspec.open(f"{server.url}/{NAMES[0]}", "rb", block_size=1000) as f:
        f.seek(5000)
        assert f.read(100) == data[5000:5100]
    assert server.range_requests > 0
    obstore = pytest.importorskip("obstore")
    from obstore.store import HTTPStore

    store = HTTPStore.from_url(server.url, client_options={"allow_http": True})
    assert bytes(obstore.get_range(store, NAMES[0], start=10, end=20)) == data[10:20]
    assert obstore.head(store, NAMES[0])["size"] == len(data)


def test_retries_are_bounded(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst, flaky=1.0, seed=1)
    with pytest.raises(SourceError, match="failed after 3 attempt") as err:
        fetch(f"{server.url}/{NAMES[0]}", SourceOptions(retries=2, **FAST), workdir=str(tmp_path))
    assert err.value.reason == "transient"
    assert server.gets == 3
    assert list(tmp_path.iterdir()) == []


def test_cache_reuse_and_corruption(
    ersst: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(ersst)
    url = f"{server.url}/{NAMES[0]}"
    cache = tmp_path / "cache"
    opts = SourceOptions(cache=str(cache), **FAST)
    first = fetch(url, opts, workdir=str(tmp_path / "ignored"))
    assert pathlib.Path(first.path).parent == cache
    assert fetch(url, opts) == first
    assert server.gets == 1  # second fetch: no new GET

    # corrupt the cached bytes (same size): detected and downloaded again
    data = bytearray(pathlib.Path(first.path).read_bytes())
    data[100] ^= 0xFF
    pathlib.Path(first.path).write_bytes(bytes(data))
    again = fetch(url, opts)
    assert again.sha256 == first.sha256 == checksum(again.path)
    assert server.gets == 2

    # truncated cached file: also detected
    with open(again.path, "r+b") as f:
        f.truncate(1000)
    assert fetch(url, opts).sha256 == first.sha256
    assert server.gets == 3


def test_remote_fsspec_cache(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    import fsspec

    server = http_server(ersst)
    url = f"{server.url}/{NAMES[1]}"
    cache = f"memory://arcoforge-test-cache-{os.getpid()}-{id(tmp_path)}"
    opts = SourceOptions(cache=cache, **FAST)
    first = fetch(url, opts, workdir=str(tmp_path / "w1"))
    assert first.path.startswith(str(tmp_path / "w1"))
    fs = fsspec.filesystem("memory")
    assert len(fs.ls(cache.split("://", 1)[1])) == 2  # file + sidecar
    second = fetch(url, opts, workdir=str(tmp_path / "w2"))  # a fresh worker: pulls from cache
    assert second.sha256 == first.sha256 and second.path.startswith(str(tmp_path / "w2"))
    assert server.gets == 1


def test_same_url_downloads_once(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst, delay=0.05)
    url = f"{server.url}/{NAMES[0]}"
    results: list[LocalSource] = []

    def work() -> None:
        results.append(fetch(url, SourceOptions(**FAST), workdir=str(tmp_path)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len({r.sha256 for r in results}) == 1
    assert server.gets == 1


def test_per_host_concurrency(ersst: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(ersst, delay=0.1)
    names = sorted(p.name for p in ersst.glob("ersst.v5.*.nc"))
    assert len(names) == 8
    opts = SourceOptions(max_concurrency_per_host=2, **FAST)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            fetch(f"{server.url}/{name}", opts, workdir=str(tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.gets == 8
    assert 1 <= server.max_concurrent <= 2


# -------------------------------------------------------------------------------------------
# FTP and S3


def test_ftp(
    ersst: pathlib.Path, tmp_path: pathlib.Path, ftp_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ftp_server(ersst, user="ftpuser", password="ftp-pw-9x")
    opts = SourceOptions(auth=Auth.basic("ARCO_FTP_USER", "ARCO_FTP_PW"), **FAST)
    monkeypatch.setenv("ARCO_FTP_USER", "ftpuser")
    monkeypatch.setenv("ARCO_FTP_PW", "ftp-pw-9x")
    got = fetch(f"{server.url}/{NAMES[0]}", opts, workdir=str(tmp_path))
    assert got.sha256 == sha(ersst / NAMES[0]) and got.path.endswith(NAMES[0])
    assert "ftp-pw-9x" not in all_text_in(tmp_path)

    with pytest.raises(SourceError, match="not found"):
        fetch(f"{server.url}/missing.nc", opts, workdir=str(tmp_path))

    # several threads against one FTP server
    names = sorted(p.name for p in ersst.glob("ersst.v5.*.nc"))[1:5]
    results: dict[str, str] = {}

    def work(name: str) -> None:
        results[name] = fetch(f"{server.url}/{name}", opts, workdir=str(tmp_path)).sha256

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: sha(ersst / n) for n in names}

    monkeypatch.setenv("ARCO_FTP_PW", "bad-ftp-pw")
    with pytest.raises(SourceError) as err:
        fetch(f"{server.url}/ersst.v5.201908.nc", opts, workdir=str(tmp_path))  # not cached
    assert err.value.reason == "auth" and "bad-ftp-pw" not in str(err.value)


def test_s3(ersst: pathlib.Path, tmp_path: pathlib.Path, s3_server) -> None:
    base = s3_server.upload(ersst, pattern="ersst.v5.20190[12].nc")
    opts = SourceOptions(storage_options=s3_server.storage_options, **FAST)
    for name in NAMES[:2]:
        got = fetch(f"{base}/{name}", opts, workdir=str(tmp_path))
        assert got.sha256 == sha(ersst / name) and got.url == f"{base}/{name}"
        meta = json.loads(pathlib.Path(got.path + ".json").read_text())
        assert meta["etag"]
    with pytest.raises(SourceError, match="not found"):
        fetch(f"{base}/{NAMES[2]}", opts, workdir=str(tmp_path))


def test_s3_as_remote_cache(ersst: pathlib.Path, tmp_path: pathlib.Path, s3_server,
                            http_server) -> None:
    server = http_server(ersst)
    bucket = s3_server.create_bucket()
    opts = SourceOptions(cache=f"s3://{bucket}/cache", storage_options=s3_server.storage_options,
                         **FAST)
    url = f"{server.url}/{NAMES[0]}"
    first = fetch(url, opts, workdir=str(tmp_path / "a"))
    second = fetch(url, opts, workdir=str(tmp_path / "b"))
    assert first.sha256 == second.sha256 == sha(ersst / NAMES[0])
    assert server.gets == 1
    assert len(s3_server.fs().ls(f"{bucket}/cache")) == 2


def test_shared_data_fixture(shared_data: pathlib.Path) -> None:
    assert (shared_data / "ersst-v5").is_dir()


def test_module_logger_name() -> None:
    assert sources.logger.name == "arcoforge.forge.io.fetch"
