"""A loopback HTTP file server with real Range support, optional auth and injected faults.

Used by ``arcoforge demo`` (which serves the bundled NOAA files to itself) and by the test suite.
Python's ``http.server`` answers ``Range`` requests with the whole file; this one answers them
with 206 and ``Content-Range``, so range-reading clients (fsspec, obstore) work against it.
It can also misbehave on purpose, as real servers do: no ``Content-Length`` (``content_length=
False``), bodies cut short (``cut_body``, fail mode ``"short"``), one byte at a time
(``trickle``), a redirect loop (``redirect_loop``), a false size (``declared_length``).

>>> server = start_http_server("/some/dir")       # doctest: +SKIP
>>> server.url + "/file.nc"                       # doctest: +SKIP
>>> server.stop()                                 # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import logging
import os
import pathlib
import random
import re
import threading
import time
from base64 import b64decode
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HTTPTestServer", "start_http_server"]

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
    # misbehaving servers (each off by default; attributes may be changed while it runs)
    content_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    cut_body: float | None = None  # send only this fraction of each file's body, then hang up
    trickle: float = 0.0  # > 0: send bodies one byte at a time at this many bytes per second
    redirect_loop: bool = False  # answer every request with a redirect to itself
    declared_length: int | None = None  # a Content-Length to announce instead of the real one
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
        if mode == "short" and (path is None or self.command == "HEAD"):
            mode = "503"
        if mode == "short":  # no Content-Length, half the body, hang up: a clean-looking EOF
            assert path is not None
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self._record(-200)
        elif mode == "503":
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
            if s.redirect_loop:
                self._plain(302, "see elsewhere", {"Location": self.path})
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
        send = length if s.cut_body is None else int(length * s.cut_body)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if s.content_length:
            declared = length if s.declared_length is None else s.declared_length
            self.send_header("Content-Length", str(declared))
        else:  # the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{size:x}-{stat.st_mtime_ns:x}"')
        self.send_header("Accept-Ranges", "bytes" if s.range else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command != "HEAD" and send:
            with open(path, "rb") as f:
                f.seek(start)
                remaining = send
                piece = 1 if s.trickle > 0 else 1 << 16
                while remaining:
                    chunk = f.read(min(piece, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                    if s.trickle > 0:
                        self.wfile.flush()
                        time.sleep(1.0 / s.trickle)
        if send != length or s.declared_length not in (None, length):
            self.wfile.flush()
            self.close_connection = True  # a short body: hang up so that the client sees it
            self._record(-status)
            return
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
