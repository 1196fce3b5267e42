"""Downloads that never lie and always end (issue 10): truncated bodies, killed downloads,
trickling servers, full disks, secrets in unusual places, wrong diagnoses.

Every test talks to a real loopback server (``arcoforge.testing.http``) or a real file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from arcoforge.forge.io import fetch as sources
from arcoforge.forge.io.fetch import (
    SAFE_QUERY_PARAMS,
    Auth,
    SourceError,
    SourceOptions,
    clean_stale_parts,
    fetch,
    redact,
    redact_log_handlers,
)

HDF5_FILE = "ersst.v5.201901.nc"  # NetCDF4 (HDF5)
NC3_FILE = "oisst-v2-avhrr-only-19811231-2deg.nc"  # NetCDF3 classic
BIG_FILE = "oisst-avhrr-v02r01.20220913.nc"  # 1.5 MB
FAST = dict(backoff=0.01, max_backoff=0.05, timeout=10.0)


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A private folder with an HDF5 (NetCDF4) file, a NetCDF3 file and a larger file."""
    from tests.servers import shared_data_dir

    src = shared_data_dir()
    wanted = [src / "ersst-v5" / HDF5_FILE, src / "oisst" / NC3_FILE, src / "oisst" / BIG_FILE]
    if not all(p.is_file() for p in wanted):
        pytest.skip(f"shared test data not found under {src} (set ARCOFORGE_SHARED_DATA)")
    dst = tmp_path_factory.mktemp("fetch-files")
    for path in wanted:
        shutil.copyfile(path, dst / path.name)
    return dst


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -------------------------------------------------------------------------------------------
# 1. truncated downloads never enter the cache


@pytest.mark.parametrize("name", [HDF5_FILE, NC3_FILE])
def test_short_body_without_content_length_is_never_cached(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server, name: str
) -> None:
    server = http_server(files, content_length=False, cut_body=0.5)
    url = f"{server.url}/{name}"
    cache = tmp_path / "cache"
    opts = SourceOptions(cache=str(cache), retries=1, **FAST)
    full = (files / name).stat().st_size
    with pytest.raises(SourceError) as err:
        fetch(url, opts)
    text = str(err.value)
    assert text.startswith(f"{url}: the download is truncated: received {full // 2:,} bytes")
    assert f"says it has {full:,} bytes" in text and "after 2 attempt(s)" in text
    assert "nothing was cached" in text
    assert err.value.reason == "content" and not err.value.transient
    assert server.gets_for(name) == 2  # retried once, then given up
    assert leftovers(cache) == []  # no cache entry, no sidecar, no .part

    # the server is fixed: the next run downloads the whole file (no stale record in the way)
    server.cut_body = None
    got = fetch(url, opts)
    assert got.size == full and got.sha256 == sha(files / name)


def test_short_body_is_retried_until_complete(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, flaky=0.5, seed=4, fail_modes=("short",))
    opts = SourceOptions(retries=12, **FAST)
    for _ in range(3):
        got = fetch(f"{server.url}/{HDF5_FILE}", opts, workdir=str(tmp_path / str(_)))
        assert got.sha256 == sha(files / HDF5_FILE)
    assert server.failures_injected > 0


def test_a_truncated_copy_in_an_old_cache_is_replaced(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    """A cache written before downloads were checked: short file, matching sidecar."""
    server = http_server(files)
    url = f"{server.url}/{NC3_FILE}"
    cache = tmp_path / "cache"
    opts = SourceOptions(cache=str(cache), **FAST)
    got = fetch(url, opts)
    short = (files / NC3_FILE).read_bytes()[:5000]
    pathlib.Path(got.path).write_bytes(short)
    meta = json.loads(pathlib.Path(got.path + ".json").read_text())
    meta.update(size=len(short), sha256=hashlib.sha256(short).hexdigest())
    pathlib.Path(got.path + ".json").write_text(json.dumps(meta))
    again = fetch(url, opts)
    assert again.sha256 == sha(files / NC3_FILE) and server.gets == 2


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_part_files_of_killed_downloads_are_cleaned(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files)
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / sources.cache_name(f"{server.url}/{HDF5_FILE}")
    host, me, other = sources._HOST_TAG, os.getpid(), os.getppid()
    dead = cache / f"{target.name}.{host}-{_dead_pid()}.1.0123abcd.part"
    old = cache / f"{target.name}.{other}.2.0123abce.part"  # an older name, without a host
    live = cache / f"{target.name}.{host}-{other}.3.0123abcf.part"
    mine = cache / f"{target.name}.{host}-{me}.4.0123abd0.part"
    sidecar_tmp = cache / f"{target.name}.json.{host}-{_dead_pid()}.0123abd1.tmp"
    unrelated = cache / "notes.txt"
    for path in (dead, old, live, mine, sidecar_tmp, unrelated):
        path.write_bytes(b"partial")
    stale = time.time() - 2 * sources.STALE_PART_SECONDS
    os.utime(old, (stale, stale))

    got = fetch(f"{server.url}/{HDF5_FILE}", SourceOptions(cache=str(cache), **FAST))
    assert got.sha256 == sha(files / HDF5_FILE)
    assert not dead.exists() and not old.exists() and not sidecar_tmp.exists()
    assert live.exists() and mine.exists() and unrelated.exists()
    # once cleaned, the directory is not scanned again on every fetch; force= does it anyway
    dead2 = cache / f"{target.name}.{host}-{_dead_pid()}.5.0123abd2.part"
    dead2.write_bytes(b"partial")
    assert clean_stale_parts(str(cache)) == []
    assert clean_stale_parts(str(cache), force=True) == [str(dead2)]


# -------------------------------------------------------------------------------------------
# 2. every download ends


def test_trickling_server_fails_the_minimum_rate(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, trickle=50)
    url = f"{server.url}/{HDF5_FILE}"
    opts = SourceOptions(retries=1, min_rate=10_000, rate_window=0.4, **FAST)
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        fetch(url, opts, workdir=str(tmp_path))
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert text.startswith(f"{url}: failed after 2 attempt(s): too slow: ")
    assert "below SourceOptions.min_rate=10000" in text and "bytes so far" in text
    assert "lower SourceOptions.min_rate" in text
    assert err.value.reason == "transient" and server.gets == 2
    assert leftovers(tmp_path) == []


def test_trickling_server_hits_the_deadline(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, trickle=50)
    url = f"{server.url}/{HDF5_FILE}"
    size = (files / HDF5_FILE).stat().st_size
    opts = SourceOptions(deadline=1.0, min_rate=0, **FAST)
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        fetch(url, opts, workdir=str(tmp_path))
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 4
    text = str(err.value)
    assert text.startswith(f"{url}: gave up after ")
    assert "(SourceOptions.deadline=1 s)" in text and f"bytes of {size:,} so far" in text
    assert "raise SourceOptions.deadline" in text
    assert err.value.reason == "transient" and server.gets == 1  # not retried past the deadline
    assert leftovers(tmp_path) == []


def test_deadline_covers_retries_and_silent_servers(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    # a server that keeps failing: retries and back-off stop at the deadline
    failing = http_server(files, flaky=1.0, fail_modes=("503",))
    opts = SourceOptions(retries=100, backoff=0.2, max_backoff=0.2, deadline=1.0)
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"gave up after .*last problem: HTTP 503"):
        fetch(f"{failing.url}/{HDF5_FILE}", opts, workdir=str(tmp_path))
    assert time.monotonic() - start < 3 and 2 <= failing.gets <= 12

    # a server that says nothing: the per-read wait shrinks to what is left of the deadline
    silent = http_server(files, flaky=1.0, fail_modes=("stall",), stall=5.0)
    opts = SourceOptions(retries=3, timeout=60.0, deadline=0.5, **{"backoff": 0.01})
    start = time.monotonic()
    with pytest.raises(SourceError, match="gave up after"):
        fetch(f"{silent.url}/{HDF5_FILE}", opts, workdir=str(tmp_path))
    assert time.monotonic() - start < 2.5


def test_automatic_deadline_scales_with_size() -> None:
    assert sources._auto_deadline(0) == sources._DEADLINE_BASE
    assert sources._auto_deadline(10 * 2**30) > sources._auto_deadline(2**20) > 600
    assert sources._auto_deadline(None) == sources._DEADLINE_UNKNOWN_SIZE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(deadline=0), "SourceOptions.deadline=0 must be a number of seconds > 0"),
        (dict(min_rate=-1), "SourceOptions.min_rate=-1 must be >= 0"),
        (dict(rate_window=0), "SourceOptions.rate_window=0 must be > 0"),
        (dict(max_bytes=0), "SourceOptions.max_bytes=0 must be > 0"),
    ],
)
def test_bad_limits_are_config_errors(
    tmp_path: pathlib.Path, options: dict[str, float], message: str
) -> None:
    with pytest.raises(SourceError, match=message) as err:
        fetch("http://127.0.0.1:9/x.nc", SourceOptions(**options), workdir=str(tmp_path))
    assert err.value.reason == "config"


# -------------------------------------------------------------------------------------------
# 3. the disk is not filled by accident


def test_declared_size_beyond_free_space_is_refused_first(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, declared_length=10**15)
    url = f"{server.url}/{HDF5_FILE}"
    cache = tmp_path / "cache"
    with pytest.raises(SourceError) as err:
        fetch(url, SourceOptions(cache=str(cache), **FAST))
    text = str(err.value)
    assert text.startswith(f"{url}: the source is 909.5 TiB (1,000,000,000,000,000 bytes) but "
                           f"the cache directory {cache} has only ")
    assert "Free space there" in text
    assert err.value.reason == "no_space" and not err.value.transient
    assert server.gets == 1 and leftovers(cache) == []


def test_max_bytes(files: pathlib.Path, tmp_path: pathlib.Path, http_server, ftp_server,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    size = (files / HDF5_FILE).stat().st_size
    opts = SourceOptions(max_bytes=100_000, **FAST)
    declared = http_server(files)
    with pytest.raises(SourceError) as err:
        fetch(f"{declared.url}/{HDF5_FILE}", opts, workdir=str(tmp_path))
    assert (f"the source is 160.5 KiB ({size:,} bytes), more than "
            "SourceOptions.max_bytes=100,000. Check the URL") in str(err.value)
    assert err.value.reason == "too_large" and declared.gets == 1

    undeclared = http_server(files, content_length=False)
    with pytest.raises(SourceError) as err:
        fetch(f"{undeclared.url}/{HDF5_FILE}", opts, workdir=str(tmp_path))
    assert "the download passed SourceOptions.max_bytes=100,000 (received " in str(err.value)
    assert "the server declared no size" in str(err.value)
    assert err.value.reason == "too_large" and undeclared.gets == 1
    assert leftovers(tmp_path) == []

    ftp = ftp_server(files, user="u1", password="ftp-pw-1")
    monkeypatch.setenv("ARCO_FTP_USER", "u1")
    monkeypatch.setenv("ARCO_FTP_PW", "ftp-pw-1")
    ftp_opts = SourceOptions(max_bytes=100_000, auth=Auth.basic("ARCO_FTP_USER", "ARCO_FTP_PW"),
                             **FAST)
    with pytest.raises(SourceError, match="more than SourceOptions.max_bytes=100,000") as err:
        fetch(f"{ftp.url}/{HDF5_FILE}", ftp_opts, workdir=str(tmp_path))
    assert err.value.reason == "too_large"
    got = fetch(f"{ftp.url}/{HDF5_FILE}", SourceOptions(auth=ftp_opts.auth, **FAST),
                workdir=str(tmp_path))
    assert got.sha256 == sha(files / HDF5_FILE)


def test_a_full_disk_names_the_cache_directory(tmp_path: pathlib.Path) -> None:
    """``/dev/full`` fails every write with ENOSPC, as a full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    target = str(tmp_path / "cache" / "abc-sst.nc")
    guard = sources._Guard("https://example.org/sst.nc", target, SourceOptions())
    with pytest.raises(sources._Fatal) as err, sources._PartFile("/dev/full", guard) as out:
        out.write(b"x" * 3_000_000)
    assert err.value.problem == (
        f"no space left in the cache directory {tmp_path / 'cache'} while writing {target} "
        "(0 bytes received so far)"
    )
    assert err.value.reason == "no_space" and "Free space there" in (err.value.hint or "")


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, options: str) -> Iterator[pathlib.Path]:
    path.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small file system needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_and_read_only_cache_end_to_end(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, content_length=False)  # no declared size: found while writing
    url = f"{server.url}/{BIG_FILE}"
    with _tmpfs(tmp_path / "small", "size=512k") as small:
        with pytest.raises(SourceError) as err:
            fetch(url, SourceOptions(cache=str(small), **FAST))
        text = str(err.value)
        assert f"no space left in the cache directory {small} while writing {small}/" in text
        assert err.value.reason == "no_space" and server.gets == 1
        assert leftovers(small) == []  # the partial file is gone: the space is back
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        with pytest.raises(SourceError) as err:
            fetch(url, SourceOptions(cache=str(read_only), **FAST))
        text = str(err.value)
        assert f"cannot write into the cache directory {read_only}" in text
        assert "free space" not in text.lower() and err.value.reason == "config"


# -------------------------------------------------------------------------------------------
# 4. secrets in unusual places


def test_redact_replaces_every_value_not_known_to_be_harmless() -> None:
    r = redact("https://h.org/a.nc?tok=abc123&access_key=AK99&format=nc&time=2020-01-01T00%3A00Z"
               "&bbox=0,0,10,10&k=zz#access_token=t0k")
    assert "abc123" not in r and "AK99" not in r and "zz" not in r and "t0k" not in r
    assert "access_key=REDACTED&" in r and "#access_token=REDACTED" in r
    assert "format=nc&time=2020-01-01T00%3A00Z&bbox=0,0,10,10" in r  # kept byte for byte
    # unknown names get a digest: distinct URLs stay distinct (provenance, append)
    a, b = redact("https://h/x?file_id=1001"), redact("https://h/x?file_id=1002")
    assert a != b and a.startswith("https://h/x?file_id=REDACTED-") and "1001" not in a
    assert redact("https://h/x?file_id=1001") == a == redact(a)  # stable, idempotent
    assert {"format", "time", "bbox", "var", "layers"} <= SAFE_QUERY_PARAMS
    assert len(SAFE_QUERY_PARAMS) < 40
    # object-store credentials in the URL: neither the key id nor the secret (even with "/")
    for url in ("s3://AKIAKEYID123:se/cr+et@bucket/x.nc", "s3://AKIAKEYID123:secret@bucket/x.nc"):
        r = redact(url)
        assert r == "s3://bucket/x.nc", r
    assert redact("https://host:8080/p/@me?var=sst") == "https://host:8080/p/@me?var=sst"
    assert redact("ftp://user:pw@h/x.nc") == "ftp://h/x.nc"


def test_s3_url_with_credentials_is_refused_without_printing_them(
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(SourceError) as err:
        fetch("s3://AKIAKEYID123:se/cr+et@bucket/x.nc", SourceOptions(**FAST),
              workdir=str(tmp_path))
    text = str(err.value)
    assert "AKIAKEYID123" not in text and "se/cr" not in text and "cr+et" not in text
    assert text.startswith("s3://bucket/x.nc: the URL carries credentials")
    assert "Auth.basic" in text and err.value.reason == "config"


def test_unusual_query_secret_never_leaks(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-5e3c7a9b1f"
    server = http_server(files, query_token=("tok", secret))
    caplog.set_level(logging.DEBUG)
    got = fetch(f"{server.url}/{HDF5_FILE}?tok={secret}", SourceOptions(**FAST),
                workdir=str(tmp_path))
    assert got.sha256 == sha(files / HDF5_FILE)
    assert secret not in got.url and "tok=REDACTED-" in got.url
    sidecar = pathlib.Path(got.path + ".json").read_text()
    assert secret not in sidecar and secret not in got.path
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)

    with pytest.raises(SourceError) as err:  # a refused value in an unknown parameter
        fetch(f"{server.url}/{HDF5_FILE}?tok=wrong-value-1", SourceOptions(**FAST),
              workdir=str(tmp_path))
    text = str(err.value)
    assert "wrong-value-1" not in text
    assert "unless the URL's query parameter(s) tok carry them: then they were refused" in text


def test_bake_provenance_has_no_unusual_query_secret(
    tmp_path: pathlib.Path, http_server, shared_data: pathlib.Path
) -> None:
    import arcoforge as af

    secret = "acc-91c3e5d7"
    server = http_server(shared_data / "ersst-v5", query_token=("access_key", secret))
    months = ["201901", "201902"]
    pattern = af.FilePattern(
        lambda time: f"{server.url}/ersst.v5.{time}.nc?access_key={secret}",
        af.ConcatDim("time", months, nitems_per_file=1),
    )
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 2},
                           source_options=af.SourceOptions(cache=str(tmp_path / "c"), **FAST))
    target = tmp_path / "out.zarr"
    af.bake(recipe, str(target), progress=False)
    ds = af.open_dataset(str(target))
    assert len(ds.attrs["arcoforge:sources"]) == 2
    for path in [*target.rglob("*"), *(tmp_path / "c").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_log_handlers_are_scrubbed(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        server = http_server(files, bearer_token="bearer-7d1e9c3a")
        monkeypatch.setenv("ARCO_HARDEN_TOKEN", "bearer-7d1e9c3a")
        fetch(f"{server.url}/{HDF5_FILE}", SourceOptions(auth=Auth.bearer("ARCO_HARDEN_TOKEN"),
                                                          **FAST), workdir=str(tmp_path))
        assert any(handler.filters)  # fetch put the redaction on the handlers it found
        # what other libraries log about URLs and secrets is scrubbed too
        logging.getLogger("fsspec.test").warning(
            "opening https://u:pw-in-url@h.org/x.nc?access_key=AKSECRET42&var=sst")
        logging.getLogger("botocore.test").debug("auth header Bearer bearer-7d1e9c3a")
        try:
            raise RuntimeError("failed https://h.org/x.nc?sig=SIGSECRET77")
        except RuntimeError:
            logging.getLogger("s3fs.test").exception("boom")
        out = stream.getvalue()
        for secret in ("pw-in-url", "AKSECRET42", "bearer-7d1e9c3a", "SIGSECRET77"):
            assert secret not in out, secret
        assert "https://h.org/x.nc?access_key=REDACTED&var=sst" in out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_redact_log_handlers_is_idempotent() -> None:
    handler = logging.NullHandler()
    logger = logging.getLogger("arcoforge.test-redaction")
    logger.addHandler(handler)
    try:
        redact_log_handlers(logger)
        redact_log_handlers(logger)
        assert handler.filters == [sources._LOG_FILTER]
    finally:
        logger.removeHandler(handler)


# -------------------------------------------------------------------------------------------
# 5. right diagnoses


def test_redirect_loop_is_named(files: pathlib.Path, tmp_path: pathlib.Path, http_server) -> None:
    server = http_server(files, redirect_loop=True)
    url = f"{server.url}/{HDF5_FILE}?var=sst"
    with pytest.raises(SourceError) as err:
        fetch(url, SourceOptions(**FAST), workdir=str(tmp_path))
    text = str(err.value)
    assert text.startswith(f"{url}: redirect loop: the server redirected more than 30 times "
                           f"(the last one to {url})")
    assert "free space" not in text.lower() and err.value.reason == "http"
    assert not err.value.transient and leftovers(tmp_path) == []


def test_wrong_password_in_the_url(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    server = http_server(files, basic_auth=("alice", "right-pw-5"))
    base = server.url.replace("http://", "http://alice:wrong-pw-5@")
    with pytest.raises(SourceError) as err:
        fetch(f"{base}/{HDF5_FILE}", SourceOptions(**FAST), workdir=str(tmp_path))
    text = str(err.value)
    assert text.startswith(f"{server.url}/{HDF5_FILE}: credentials rejected (HTTP 401); the "
                           "user name and password written in the URL were refused")
    assert "no credentials were configured" not in text and "wrong-pw-5" not in text
    assert "SourceOptions.auth" in text and err.value.reason == "auth" and server.gets == 1

    good = server.url.replace("http://", "http://alice:right-pw-5@")
    got = fetch(f"{good}/{HDF5_FILE}", SourceOptions(**FAST), workdir=str(tmp_path))
    assert got.url == f"{server.url}/{HDF5_FILE}"
    assert "right-pw-5" not in pathlib.Path(got.path + ".json").read_text()


# -------------------------------------------------------------------------------------------
# a cached copy of a file the server reprocessed in place


def test_a_file_changed_on_its_server_is_downloaded_again(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server, caplog
) -> None:
    """The cache reused its copy by size and sha256 alone: after the server's file was
    reprocessed in place, builds (and verify, with the same cache) kept reading the old bytes.
    A cached copy is now checked with one HEAD (ETag / Last-Modified / size) per build."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copyfile(files / NC3_FILE, served / NC3_FILE)
    server = http_server(served)
    url = f"{server.url}/{NC3_FILE}"
    cache = tmp_path / "cache"
    opts = SourceOptions(cache=str(cache), **FAST)
    first = fetch(url, opts)
    assert fetch(url, opts).sha256 == first.sha256  # same build: not asked again
    data = bytearray((served / NC3_FILE).read_bytes())
    data[-8:] = bytes(8)  # new values, same size
    (served / NC3_FILE).write_bytes(bytes(data))
    os.utime(served / NC3_FILE, (time.time() + 5, time.time() + 5))
    sources.forget_checked_copies()  # what bake, append and verify do as they start
    stale = fetch(url, SourceOptions(cache=str(cache), revalidate=False, **FAST))
    assert stale.sha256 == first.sha256  # revalidate=False: reused unasked
    gets = server.gets
    with caplog.at_level(logging.WARNING, logger="arcoforge"):
        fresh = fetch(url, opts)
    assert fresh.sha256 == hashlib.sha256(bytes(data)).hexdigest() != first.sha256
    assert server.gets == gets + 1
    assert f"{url} changed on its server since it was cached (its ETag changed" in caplog.text
    sources.forget_checked_copies()
    assert fetch(url, opts).sha256 == fresh.sha256 and server.gets == gets + 1  # HEAD only


def test_a_remote_cache_copy_of_a_changed_file_is_replaced(
    files: pathlib.Path, tmp_path: pathlib.Path, http_server
) -> None:
    """With a remote cache (any fsspec URL) the copy pulled into a fresh work directory was used
    without asking the server, and a detected change pulled the same stale copy again."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copyfile(files / NC3_FILE, served / NC3_FILE)
    server = http_server(served)
    url = f"{server.url}/{NC3_FILE}"
    opts = SourceOptions(cache=f"memory://{tmp_path.name}-remote", **FAST)
    first = fetch(url, opts, str(tmp_path / "w1"))
    data = bytearray((served / NC3_FILE).read_bytes())
    data[-8:] = bytes(8)
    (served / NC3_FILE).write_bytes(bytes(data))
    os.utime(served / NC3_FILE, (time.time() + 5, time.time() + 5))
    new = hashlib.sha256(bytes(data)).hexdigest()
    for workdir in ("w1", "w2"):  # the same work directory, then a fresh one
        sources.forget_checked_copies()
        assert fetch(url, opts, str(tmp_path / workdir)).sha256 == new != first.sha256
    sources.forget_checked_copies()  # the remote copy was replaced: a third machine gets it
    gets = server.gets
    assert fetch(url, opts, str(tmp_path / "w3")).sha256 == new and server.gets == gets
