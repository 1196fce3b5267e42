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
import logging
import os
import pathlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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

from arcoforge.testing.http import HTTPTestServer, start_http_server  # noqa: E402


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
    ``stall`` seconds, default 2, then answer 503) or ``"short"`` (no Content-Length, half the
    body, then hang up); ``delay`` seconds are slept before each response.  Misbehaviour on
    every request (attributes that may also be changed while the server runs):
    ``content_length=False`` (the body ends when the connection closes), ``cut_body=0.5`` (send
    that fraction of each body), ``trickle=50`` (bytes per second, one at a time),
    ``redirect_loop=True`` (302 to itself), ``declared_length=N`` (announce N bytes).
    Counters: ``requests``, ``gets``, ``heads``, ``range_requests``,
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
