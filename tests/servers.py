"""Real loopback servers for tests: HTTP (with or without Range, auth, flaky), FTP, S3 (moto).

Fixtures (importable by every test through ``tests/conftest.py``):

* ``http_server(directory, *, range=True, basic_auth=None, bearer_token=None, query_token=None,
  flaky=0.0, seed=0, delay=0.0, fail_modes=...) -> HTTPTestServer`` -- a factory; servers stop
  after the test.  ``start_http_server(...)`` does the same outside pytest (call ``.stop()``).
* ``ftp_server(directory, *, user="arco", password="forge-ftp-pw") -> FTPTestServer`` -- a
  factory; servers stop after the test.
* ``s3_server -> S3TestServer`` -- one moto server per session; ``upload(directory)`` puts files
  into a fresh bucket and returns its ``s3://`` URL.
* ``shared_data -> pathlib.Path`` -- the shared real data (``../shared/data`` or
  ``$ARCOFORGE_SHARED_DATA``); tests that use it are skipped when it is absent.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import pathlib
import random
import re
import threading
import time
import uuid
from base64 import b64decode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

__all__ = [
    "HTTPTestServer",
    "FTPTestServer",
    "S3TestServer",
    "http_server",
    "ftp_server",
    "s3_server",
    "shared_data",
    "shared_data_dir",
]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass
class HTTPTestServer:
    """A running HTTP server; ``url`` has no trailing slash (``url + "/file.nc"``)."""

    directory: pathlib.Path
    range: bool = True
    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    query_token: tuple[str, str] | None = None
    flaky: float = 0.0
    seed: int = 0
    delay: float = 0.0
    fail_modes: tuple[str, ...] = ("503", "truncate", "drop")
    stall: float = 2.0  # seconds a "stall" failure waits before answering
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    # counters (guarded by ``lock``)
    requests: int = 0  # every request, including failed ones
    gets: int = 0
    heads: int = 0
    range_requests: int = 0
    failures_injected: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    paths: dict[str, int] = field(default_factory=dict)  # path -> GET count
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(default_factory=random.Random)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def reset_counters(self) -> None:
        with self.lock:
            self.requests = self.gets = self.heads = self.range_requests = 0
            self.failures_injected = self.max_concurrent = 0
            self.paths.clear()
            self.log.clear()

    def gets_for(self, name: str) -> int:
        """How many GETs asked for ``/name``."""
        with self.lock:
            return self.paths.get("/" + name.lstrip("/"), 0)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arcoforge-test"
    timeout = 10  # idle keep-alive connections are closed after this
    state: HTTPTestServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # query strings may carry test tokens: keep them out of the logs
        message = re.sub(r"\?[^\s\"]*", "?...", format % args)
        logging.getLogger("tests.servers.http").debug("%s", message)

    # -- helpers

    def _record(self, status: int) -> None:
        with self.state.lock:
            self.state.log.append((self.command, urlsplit(self.path).path, status))

    def _plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status)

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        s = self.state
        header = self.headers.get("Authorization", "")
        if s.basic_auth is not None:
            if not header.startswith("Basic "):
                self._plain(401, "authentication required",
                            {"WWW-Authenticate": 'Basic realm="arcoforge"'})
                return False
            try:
                user, _, password = b64decode(header[6:]).decode().partition(":")
            except Exception:
                user, password = "", ""
            if (user, password) != s.basic_auth:
                self._plain(401, "bad credentials", {"WWW-Authenticate": 'Basic realm="arcoforge"'})
                return False
        if s.bearer_token is not None:
            if not header.startswith("Bearer "):
                self._plain(401, "token required", {"WWW-Authenticate": "Bearer"})
                return False
            if header[7:] != s.bearer_token:
                self._plain(403, "bad token")
                return False
        if s.query_token is not None:
            param, value = s.query_token
            got = query.get(param)
            if not got:
                self._plain(401, f"query parameter {param} required")
                return False
            if got[0] != value:
                self._plain(403, "bad token")
                return False
        return True

    def _inject_failure(self, path: pathlib.Path | None) -> bool:
        s = self.state
        with s.lock:
            fail = s.flaky > 0 and s._rng.random() < s.flaky
            mode = s._rng.choice(s.fail_modes) if fail else ""
            if fail:
                s.failures_injected += 1
        if not fail:
            return False
        if mode == "truncate" and (path is None or self.command == "HEAD"):
            mode = "503"
        if mode == "stall":  # answer too late: the client should have timed out
            time.sleep(s.stall)
            mode = "503"
        if mode == "503":
            self._plain(503, "try again later (injected)")
        elif mode == "drop":
            self.close_connection = True
            self._record(0)
        else:  # truncated body: promise the full length, send half, hang up
            assert path is not None
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self._record(-200)
        return True

    def _resolve(self, url_path: str) -> pathlib.Path | None:
        root = self.state.directory.resolve()
        candidate = (root / unquote(url_path).lstrip("/")).resolve()
        if root != candidate and root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None

    # -- verbs

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        s = self.state
        parts = urlsplit(self.path)
        with s.lock:
            s.requests += 1
            if self.command == "GET":
                s.gets += 1
                s.paths[parts.path] = s.paths.get(parts.path, 0) + 1
            else:
                s.heads += 1
            s.concurrent += 1
            s.max_concurrent = max(s.max_concurrent, s.concurrent)
        try:
            if s.delay:
                time.sleep(s.delay)
            if not self._authorized(parse_qs(parts.query)):
                return
            path = self._resolve(parts.path)
            if self._inject_failure(path):
                return
            if path is None:
                self._plain(404, "not found")
                return
            self._send_file(path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with s.lock:
                s.concurrent -= 1

    def _send_file(self, path: pathlib.Path) -> None:
        s = self.state
        stat = path.stat()
        size = stat.st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range") if s.range else None
        if header:
            m = _RANGE.match(header.strip().replace(" ", ""))
            if m and (m.group(1) or m.group(2)):  # a single range; anything else -> full body
                first, last = m.group(1), m.group(2)
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:  # suffix range: the last n bytes
                    start, end = max(0, size - int(last)), size - 1
                if start >= size or (first and last and int(last) < start) or (
                    not first and int(last) == 0
                ):
                    self._plain(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                with s.lock:
                    s.range_requests += 1
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{size:x}-{stat.st_mtime_ns:x}"')
        self.send_header("Accept-Ranges", "bytes" if s.range else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command != "HEAD" and length:
            with open(path, "rb") as f:
                f.seek(start)
                remaining = length
                while remaining:
                    chunk = f.read(min(1 << 16, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        self._record(status)


class _QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logging.getLogger("tests.servers.http").debug("connection error", exc_info=True)


def start_http_server(directory: str | os.PathLike[str], **options: Any) -> HTTPTestServer:
    """Start an :class:`HTTPTestServer` on a free loopback port (see ``http_server``)."""
    state = HTTPTestServer(directory=pathlib.Path(directory), **options)
    state._rng = random.Random(state.seed)
    handler = type("BoundHandler", (_Handler,), {"state": state})
    httpd = _QuietThreadingHTTPServer(("127.0.0.1", 0), handler)
    state._httpd = httpd
    state.port = httpd.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}"
    state._thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
        name=f"http-test-server-{state.port}",
    )
    state._thread.start()
    return state


@pytest.fixture
def http_server() -> Iterator[Callable[..., HTTPTestServer]]:
    """Factory: ``http_server(directory, range=True, basic_auth=None, bearer_token=None,
    query_token=None, flaky=0.0, seed=0, delay=0.0, fail_modes=("503", "truncate", "drop"))
    -> HTTPTestServer``.

    ``range=False`` ignores Range headers (always 200, ``Accept-Ranges: none``);
    ``basic_auth=(user, password)``; ``bearer_token="..."``; ``query_token=(param, value)``;
    ``flaky=p`` fails that fraction of requests (seeded by ``seed``) with one of ``fail_modes``:
    ``"503"``, ``"truncate"`` (full Content-Length, half the body, then hang up), ``"drop"``
    (close the connection without a response) or -- only when asked for -- ``"stall"`` (wait
    ``stall`` seconds, default 2, then answer 503); ``delay`` seconds are slept before each
    response.  Counters: ``requests``, ``gets``, ``heads``, ``range_requests``,
    ``failures_injected``, ``max_concurrent``, ``paths`` (GETs per path), ``log``.
    """
    servers: list[HTTPTestServer] = []

    def make(directory: str | os.PathLike[str], **options: Any) -> HTTPTestServer:
        server = start_http_server(directory, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------------------------
# FTP


@dataclass
class FTPTestServer:
    """A running pyftpdlib server; ``url`` is ``ftp://127.0.0.1:<port>`` (no credentials)."""

    directory: pathlib.Path
    user: str
    password: str
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    _server: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options for ``FTPFileSystem`` (includes the password: tests only)."""
        return {"host": self.host, "port": self.port, "username": self.user,
                "password": self.password}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def start_ftp_server(
    directory: str | os.PathLike[str], user: str = "arco", password: str = "forge-ftp-pw"
) -> FTPTestServer:
    """Start an :class:`FTPTestServer` on a free loopback port (see ``ftp_server``)."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    root = pathlib.Path(directory).resolve()
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmwMT")
    handler = type(
        "BoundFTPHandler",
        (FTPHandler,),
        {"authorizer": authorizer, "auth_failed_timeout": 0.05, "banner": "arcoforge test ftpd"},
    )
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    state = FTPTestServer(directory=root, user=user, password=password)
    state._server = server
    state.port = server.socket.getsockname()[1]
    state.url = f"ftp://127.0.0.1:{state.port}"

    def loop() -> None:
        try:
            while not state._stop.is_set():
                server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        finally:
            server.close_all()

    state._thread = threading.Thread(target=loop, daemon=True, name=f"ftp-test-{state.port}")
    state._thread.start()
    return state


@pytest.fixture
def ftp_server() -> Iterator[Callable[..., FTPTestServer]]:
    """Factory: ``ftp_server(directory, user="arco", password="forge-ftp-pw") -> FTPTestServer``."""
    servers: list[FTPTestServer] = []

    def make(directory: str | os.PathLike[str], **options: Any) -> FTPTestServer:
        server = start_ftp_server(directory, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------------------------
# S3 (moto)

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "arcoforge-test-key",
    "AWS_SECRET_ACCESS_KEY": "arcoforge-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3TestServer:
    """A moto S3 server; credentials are in the environment while the session runs."""

    endpoint_url: str
    host: str
    port: int
    _server: Any = None

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options: ``{"endpoint_url": ...}`` (keys come from the environment)."""
        return {"endpoint_url": self.endpoint_url}

    def fs(self) -> Any:
        """A fresh ``s3fs.S3FileSystem`` talking to this server."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint_url, skip_instance_cache=True)

    def create_bucket(self, bucket: str | None = None) -> str:
        """Create ``bucket`` (default: a fresh unique name) and return its name."""
        bucket = bucket or f"arco-{uuid.uuid4().hex[:12]}"
        fs = self.fs()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        return bucket

    def upload(
        self, directory: str | os.PathLike[str], bucket: str | None = None, prefix: str = "",
        pattern: str = "*",
    ) -> str:
        """Upload the files of ``directory`` matching ``pattern`` (not recursive) into
        ``bucket`` (default: a fresh one) under ``prefix``; return ``s3://bucket[/prefix]``."""
        bucket = self.create_bucket(bucket)
        fs = self.fs()
        base = f"{bucket}/{prefix.strip('/')}".rstrip("/")
        for path in sorted(pathlib.Path(directory).glob(pattern)):
            if path.is_file():
                fs.put_file(str(path), f"{base}/{path.name}")
        return f"s3://{base}"

    def reset(self) -> None:
        """Forget all buckets (moto's reset API)."""
        import requests

        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    """A moto S3 server for the whole session, with test credentials in the environment."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for key, value in S3_TEST_ENV.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        state = S3TestServer(endpoint_url=f"http://{host}:{port}", host=host, port=port,
                             _server=server)
        try:
            yield state
        finally:
            with contextlib.suppress(Exception):
                server.stop()


# --------------------------------------------------------------------------------------------
# shared data


def shared_data_dir() -> pathlib.Path:
    """``$ARCOFORGE_SHARED_DATA`` or ``<repo>/../shared/data`` (may not exist)."""
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The shared real test data; skips the test when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set ARCOFORGE_SHARED_DATA)")
    return path
