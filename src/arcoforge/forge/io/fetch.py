"""Open one source: turn a URL into a local file that xarray / netCDF4 can open, robustly.

:func:`fetch` is the whole job.  Local paths (and ``file://`` URLs) are returned as they are.
Everything else -- ``http(s)://`` through :mod:`requests`, ``ftp://``, ``s3://`` and any other
protocol through :mod:`fsspec` -- is downloaded *streaming* into a cache directory, under a name
derived from the sha256 of the URL (the original basename is kept as a suffix, so that file-type
detection by extension still works).  Downloads are written to a temporary name and renamed into
place only when complete and checked; a JSON sidecar records the (redacted) URL, size, sha256 and
the server's ETag / Last-Modified.  A later run reuses a cached file only when its size and sha256
still match the sidecar.

Robustness:

* transient failures (HTTP 5xx and 429, connection resets, timeouts, truncated bodies) are
  retried with exponential backoff and jitter, at most ``SourceOptions.retries`` times;
* 404/410 and 401/403 are not retried, and become a :class:`SourceError` that says what to do;
* nothing unchecked enters the cache: a download shorter than its ``Content-Length``, or shorter
  than its own NetCDF3/HDF5 header says (:func:`arcoforge.forge.io.readers.check_complete`,
  which catches bodies without ``Content-Length`` that end early), is retried and never cached;
  ``.part`` files left by killed downloads are removed when the cache is next used;
* every download ends: ``SourceOptions.deadline`` bounds one URL's whole fetch (all attempts),
  ``min_rate`` / ``rate_window`` fail a server that trickles, ``timeout`` bounds each read;
* the disk is not filled by accident: a declared size is checked against the cache's free space
  and ``SourceOptions.max_bytes`` before the body is read, and while it streams;
* a per-URL lock makes two threads that want the same URL download it once;
* a per-host semaphore (module-level, keyed by scheme, host and port) bounds how many requests
  this process sends to one server at a time.

Secrets: credentials are *named* by :class:`Auth` (environment variable names) and read at call
time.  Their values never appear in exceptions, log messages, sidecars, ``LocalSource.url`` or
file names; :func:`redact` strips userinfo and every query value whose name is not known to be
harmless (:data:`SAFE_QUERY_PARAMS`); :func:`redact_log_handlers` puts the same redaction on
log handlers.
"""

from __future__ import annotations

import contextlib
import errno
import ftplib
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit
from urllib.request import url2pathname

import requests

from arcoforge.errors import SourceError

__all__ = [
    "Auth",
    "SourceOptions",
    "LocalSource",
    "SourceError",
    "fetch",
    "redact",
    "redact_log_handlers",
    "clean_stale_parts",
    "checksum",
    "SAFE_QUERY_PARAMS",
    "SECRET_QUERY_PARAMS",
]

logger = logging.getLogger("arcoforge.forge.io.fetch")

_CHUNK = 1 << 20  # bytes per streamed read
_LOCAL_PROTOCOLS = {"", "file", "local"}

#: query parameter names whose values are always treated as secrets (compared lower-case)
SECRET_QUERY_PARAMS = frozenset(
    {
        "token",
        "key",
        "apikey",
        "api_key",
        "api-key",
        "sig",
        "signature",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "authorization",
        "session_token",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "googleaccessid",
        "awsaccesskeyid",
        "credential",
        "pw",
        "pass",
        "pin",
        "otp",
        "jwt",
    }
)
_SECRET_PARAM_PATTERN = re.compile(
    r"(token|secret|passw|signature|api[-_]?key|access[-_]?key|credential|session|auth)",
    re.IGNORECASE,
)

#: query parameter names (compared lower-case) whose values :func:`redact` keeps: the few that
#: name *what* is asked for in data services (WMS/WCS, THREDDS, OPeNDAP, ERDDAP-style APIs) and
#: never carry a secret.  Every other value is replaced: a secret hides under any name
#: (``?tok=``, ``?access_key=``, ``?k=``).  Keep this list short.
SAFE_QUERY_PARAMS = frozenset(
    {
        "format", "version", "service", "request", "layers", "styles", "crs", "bbox",
        "width", "height", "x", "y", "date", "time", "day", "month", "year", "start", "end",
        "north", "south", "east", "west", "variable", "var", "dataset", "file",
    }
)
# query parameter names (lower-case) that an Auth of kind "query" has used in this process
_AUTH_QUERY_PARAMS: set[str] = set()
_REDACTED = "REDACTED"


# --------------------------------------------------------------------------------------------
# public types


@dataclass(frozen=True)
class Auth:
    """Credentials are *named* (environment variable names), never given as values."""

    kind: Literal["basic", "bearer", "query"]
    username_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    query_param: str | None = None  # for kind="query": e.g. "token" -> ?token=<value>

    @classmethod
    def basic(cls, username_env: str, password_env: str) -> Auth:
        """HTTP basic auth (and FTP user/password) from two environment variables."""
        return cls("basic", username_env=username_env, password_env=password_env)

    @classmethod
    def bearer(cls, token_env: str) -> Auth:
        """``Authorization: Bearer <token>`` from an environment variable."""
        return cls("bearer", token_env=token_env)

    @classmethod
    def query(cls, param: str, token_env: str) -> Auth:
        """A query parameter ``?<param>=<token>`` from an environment variable."""
        return cls("query", token_env=token_env, query_param=param)

    def env_names(self) -> list[str]:
        """The environment variable names this auth reads (never their values)."""
        names = [self.username_env, self.password_env, self.token_env]
        return [n for n in names if n]


@dataclass(frozen=True)
class SourceOptions:
    """How to fetch sources: retries, time limits, size limits, concurrency, credentials, cache.

    Time limits: ``timeout`` bounds each wait for the server (connecting, each read);
    ``deadline`` bounds the whole fetch of one URL, all attempts and back-off included
    (``None``: 10 minutes plus the declared size at 128 KiB/s, or 2 hours when the server does
    not declare a size; ``math.inf``: no deadline); ``min_rate`` fails an attempt whose rate
    over the last ``rate_window`` seconds is below it (bytes/s; 0 turns it off), so that a server
    that trickles is retried and then given up.  ``max_bytes`` caps one source's size (``None``:
    no cap besides the cache directory's free space, checked against the declared size first).
    """

    retries: int = 5  # attempts after the first, for transient failures
    backoff: float = 0.5  # first delay in s, doubling, with jitter
    max_backoff: float = 20.0
    timeout: float = 60.0  # per wait for the server: connect, each read
    deadline: float | None = None  # s for one URL, all attempts; None = scaled from the size
    min_rate: float = 1024.0  # bytes/s, averaged over rate_window; 0 = no minimum
    rate_window: float = 60.0  # s
    max_bytes: int | None = None  # the largest source accepted; None = only the free space
    max_concurrency_per_host: int = 4  # per process, across threads
    auth: Auth | None = None
    cache: str | None = None  # local dir or any fsspec URL; None = a per-build work dir
    # passed to fsspec (e.g. {"endpoint_url": ...} for S3); secrets come from env only.
    # For http(s) the keys "headers" (dict) and "verify" (bool | CA path) are used by requests.
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalSource:
    """A source that can be opened from the local file system."""

    url: str  # the original URL (redacted of secrets)
    path: str  # local filesystem path to open
    size: int
    sha256: str


# --------------------------------------------------------------------------------------------
# small public helpers


def checksum(path: str) -> str:
    """Return the sha256 hex digest of a local file, read in a streaming way."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_secret_param(name: str, extra: Iterable[str] = ()) -> bool:
    low = name.lower()
    if low in SECRET_QUERY_PARAMS or low in _AUTH_QUERY_PARAMS:
        return True
    if any(low == e.lower() for e in extra):
        return True
    return bool(_SECRET_PARAM_PATTERN.search(low))


def _split_userinfo(url: str) -> tuple[str | None, str]:
    """``(userinfo, url without it)``; userinfo is ``None`` when the URL has none.

    Unlike :func:`urllib.parse.urlsplit` this also finds a password that contains ``/`` (as
    object-store secret keys do: ``s3://KEYID:abc/def@bucket/key``), which would otherwise be
    read as the start of the path and printed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None, url
    end = len(rest)
    for ch in "?#":
        pos = rest.find(ch)
        if pos >= 0:
            end = min(end, pos)
    head = rest[:end]
    authority = head.split("/", 1)[0]
    if "@" in authority:
        at = authority.rfind("@")
    elif ":" in authority and "@" in head and not authority.rsplit(":", 1)[1].isdigit():
        at = head.find("@")  # "user:pass/with/slashes@host/...": not a host and port
    else:
        return None, url
    return rest[:at], f"{scheme}://{rest[at + 1:]}"


def _redact_pairs(text: str, extra: list[str]) -> str:
    pieces = []
    for piece in text.split("&"):
        raw_name, eq, value = piece.partition("=")
        name = unquote_plus(raw_name).strip()
        if not eq or not value or value.startswith(_REDACTED) or (
            name.lower() in SAFE_QUERY_PARAMS and not _is_secret_param(name, extra)
        ):  # (a value redacted already stays as it is: redacting twice changes nothing)
            pieces.append(piece)
        elif _is_secret_param(name, extra):
            pieces.append(f"{raw_name}={_REDACTED}")
        else:  # an unknown name: hide the value, but keep distinct URLs distinct
            digest = hashlib.sha256(unquote_plus(value).encode()).hexdigest()[:8]
            pieces.append(f"{raw_name}={_REDACTED}-{digest}")
    return "&".join(pieces)


def redact(url: str, extra_params: Iterable[str] = ()) -> str:
    """Return ``url`` without userinfo and with every query value that may be a secret replaced.

    Kept as they are: local paths, and the values of the harmless parameters listed in
    :data:`SAFE_QUERY_PARAMS` (``format``, ``time``, ``bbox``, ``var``, ...).  Replaced by
    ``REDACTED``: the usual secret names (``token``, ``key``, ``sig``, ``password``,
    ``X-Amz-Signature``, ...), names containing token/secret/password/signature/apikey/
    access_key/credential/session/auth, any parameter an :class:`Auth` of kind ``"query"`` has
    used in this process, and ``extra_params``.  Replaced by ``REDACTED-<8 hex digits>`` (a digest,
    so that URLs that differ only there stay distinct in provenance): every other value.  The
    userinfo (``user:password@``, ``KEYID:SECRET@``) is dropped entirely.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return "<unparseable URL>"
    if not scheme or len(scheme) == 1:  # a local path (or a Windows drive)
        return url
    _, url = _split_userinfo(url)
    rest, hashmark, fragment = url.partition("#")
    base, qmark, query = rest.partition("?")
    extra = list(extra_params)
    if query:
        query = _redact_pairs(query, extra)
    if "=" in fragment:  # e.g. "#access_token=..." of OAuth redirects
        fragment = _redact_pairs(fragment, extra)
    return base + qmark + query + hashmark + fragment


# --------------------------------------------------------------------------------------------
# secrets: resolution from the environment and scrubbing of any text that leaves this module


#: secret values read in this process (credentials from the environment, secrets written into
#: source URLs): :func:`redact_log_handlers`' filter removes them from every log line it sees
_KNOWN_SECRETS: set[str] = set()
#: object stores whose URL user name is an access key id: never printed either
_KEY_ID_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


def _scrub_known(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
            quoted = quote(secret, safe="")
            if quoted != secret:
                text = text.replace(quoted, "***")
    return text


@dataclass
class _Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None
    query_param: str | None = None
    env_names: tuple[str, ...] = ()
    secrets: list[str] = field(default_factory=list)
    #: what the URL itself carries: "userinfo" (user:password@) and secret-looking query names
    in_url: list[str] = field(default_factory=list)
    #: other query parameters that are not known to be harmless (they may carry a secret)
    unknown_query: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        return _scrub_known(text, self.secrets)

    def describe(self) -> str:
        if self.env_names:
            names = ", ".join(f"${n}" for n in self.env_names)
            return f"credentials were read from the environment variable(s) {names}"
        if "userinfo" in self.in_url:
            return "the user name and password written in the URL were refused"
        if self.in_url:
            return f"the {', '.join(self.in_url)} given in the URL's query were refused"
        if self.unknown_query:
            return ("no credentials were configured (unless the URL's query parameter(s) "
                    f"{', '.join(self.unknown_query)} carry them: then they were refused)")
        return "no credentials were configured"

    def rejected_hint(self) -> str:
        if self.env_names:
            return "Check that those variables hold valid credentials for this server"
        if self.in_url or self.unknown_query:
            return ("Check them; better, keep secrets out of URLs: set SourceOptions.auth "
                    "(Auth.basic / Auth.bearer / Auth.query) naming environment variables")
        return ("This server needs credentials: set SourceOptions.auth "
                "(Auth.basic / Auth.bearer / Auth.query) naming environment variables")


def _remember_secrets(secrets: Iterable[str]) -> None:
    with _registry_lock:
        _KNOWN_SECRETS.update(s for s in secrets if s and len(s) >= 4)


def _resolve_credentials(url: str, safe_url: str, auth: Auth | None) -> _Credentials:
    creds = _Credentials()
    # secrets embedded in the URL itself: userinfo, secret-looking query values
    userinfo, bare = _split_userinfo(url)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if colon:
            creds.secrets += [password, unquote(password)]
            creds.in_url.append("userinfo")
        if user and _protocol(bare) in _KEY_ID_PROTOCOLS:  # an access key id
            creds.secrets += [user, unquote(user)]
    for k, v in parse_qsl(urlsplit(bare).query, keep_blank_values=True):
        if not v:
            continue
        if _is_secret_param(k):
            creds.secrets.append(v)
            creds.in_url.append(k)
        elif k.lower() not in SAFE_QUERY_PARAMS:
            creds.unknown_query.append(k)
    # values of unknown names are scrubbed from this fetch's errors, not from every log line
    # (``?dataset_name=temperature`` would mangle them all)
    _remember_secrets(creds.secrets)
    for k, v in parse_qsl(urlsplit(bare).query, keep_blank_values=True):
        if k in creds.unknown_query and len(v) >= 6:
            creds.secrets.append(v)
    if auth is None:
        return creds
    names = auth.env_names()
    if auth.kind == "basic" and not (auth.username_env and auth.password_env):
        _config_error(safe_url, "Auth.basic needs username_env and password_env")
    if auth.kind in ("bearer", "query") and not auth.token_env:
        _config_error(safe_url, f"Auth.{auth.kind} needs token_env")
    if auth.kind == "query" and not auth.query_param:
        _config_error(safe_url, "Auth.query needs query_param (the parameter name)")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        which = ", ".join(f"${n}" for n in missing)
        raise SourceError(
            safe_url,
            f"credentials missing: environment variable {which} is not set",
            f"Set {which} (export {missing[0]}=...) before running, or change the recipe's "
            "Auth to name the variables that hold the credentials",
            reason="missing_credentials",
        )
    creds.env_names = tuple(names)
    if auth.kind == "basic":
        creds.username = os.environ[auth.username_env or ""]
        creds.password = os.environ[auth.password_env or ""]
        creds.secrets.append(creds.password)
        if _protocol(url) in _KEY_ID_PROTOCOLS:  # Auth.basic for S3 is (key id, secret key)
            creds.secrets.append(creds.username)
    else:
        creds.token = os.environ[auth.token_env or ""]
        creds.secrets.append(creds.token)
        if auth.kind == "query":
            creds.query_param = auth.query_param
            _AUTH_QUERY_PARAMS.add((auth.query_param or "").lower())
    _remember_secrets(creds.secrets)
    return creds


def _config_error(safe_url: str, problem: str) -> NoReturn:
    raise SourceError(safe_url, problem, "Fix the recipe's SourceOptions", reason="config")


class _UrlRedactingFilter(logging.Filter):
    """Redacts URLs (userinfo, query values) and known secret values in every record it sees."""

    _url = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+|/[^\s\"'<>]*\?[^\s\"'<>]*)")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken record is not ours to fix
            return True
        redacted = message
        if "://" in message or "?" in message:
            redacted = self._url.sub(lambda m: _redact_fragment(m.group(0)), redacted)
        with _registry_lock:
            secrets = list(_KNOWN_SECRETS)
        redacted = _scrub_known(redacted, secrets)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:  # tracebacks may quote URLs too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = self._url.sub(lambda m: _redact_fragment(m.group(0)), record.exc_text)
            record.exc_text = _scrub_known(text, secrets)
        return True


def _redact_fragment(text: str) -> str:
    if text.startswith("/"):
        path, _, query = text.partition("?")
        return redact("http://x" + path + "?" + query)[len("http://x") :]
    return redact(text)


_LOG_FILTER = _UrlRedactingFilter()


def redact_log_handlers(logger: logging.Logger | None = None) -> None:
    """Put arcoforge's URL and secret redaction on the handlers of ``logger`` (default: the root
    logger) and of the ``arcoforge`` logger, so that what other libraries log (urllib3, fsspec,
    botocore quote URLs) is redacted too.  Idempotent; :func:`fetch` calls it before downloading,
    so handlers that the command line or an application installed are covered."""
    loggers = [logger or logging.getLogger(), logging.getLogger("arcoforge")]
    for each in loggers:
        for handler in each.handlers:
            if _LOG_FILTER not in handler.filters:
                handler.addFilter(_LOG_FILTER)


logging.getLogger("urllib3.connectionpool").addFilter(_LOG_FILTER)


# --------------------------------------------------------------------------------------------
# concurrency: per-host semaphores and per-URL locks

_registry_lock = threading.Lock()
_host_semaphores: dict[tuple[str, str, int | None], tuple[int, threading.BoundedSemaphore]] = {}
_url_locks: dict[str, threading.Lock] = {}


def host_semaphore(url: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore that bounds concurrent requests to ``url``'s host."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    key = (parts.scheme.lower(), (parts.hostname or "").lower(), port)
    limit = max(1, int(limit))
    with _registry_lock:
        entry = _host_semaphores.get(key)
        if entry is None or entry[0] != limit:
            if entry is not None:
                logger.debug("per-host limit for %s changed from %d to %d", key, entry[0], limit)
            entry = (limit, threading.BoundedSemaphore(limit))
            _host_semaphores[key] = entry
        return entry[1]


def _url_lock(key: str) -> threading.Lock:
    with _registry_lock:
        lock = _url_locks.get(key)
        if lock is None:
            lock = _url_locks[key] = threading.Lock()
        return lock


# --------------------------------------------------------------------------------------------
# cache layout

_default_workdir: str | None = None


def _fallback_workdir() -> str:
    global _default_workdir
    with _registry_lock:
        if _default_workdir is None:
            _default_workdir = tempfile.mkdtemp(prefix="arcoforge-sources-")
        return _default_workdir


def _protocol(url: str) -> str:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if len(scheme) == 1:  # Windows drive letter
        return ""
    # fsspec chained URLs ("simplecache::s3://...") are remote
    if "::" in url and not scheme:
        return url.split("::", 1)[0]
    return scheme


def _local_path(url: str) -> str:
    if _protocol(url) in ("file", "local"):
        parts = urlsplit(url)
        return url2pathname(parts.path)
    return os.path.expanduser(url)


def cache_name(url: str) -> str:
    """The cache file name for ``url``: sha256 of the URL plus a sanitized basename."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    base = os.path.basename(unquote(urlsplit(url).path.rstrip("/"))) or "source"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-96:].lstrip(".") or "source"
    return f"{digest}-{base}"


#: a download's temporary file: ``<target>.<host tag>-<pid>.<thread>.<random>.part`` (older
#: versions wrote ``<target>.<pid>.<thread>.<random>.part`` and ``<target>.<pid>.<random>.part``)
_PART_NAME = re.compile(
    r"\.(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)\.(?:\d+\.)?[0-9a-f]{8}\.(?:part|tmp)$"
)
#: a ``.part`` file that has not grown for this long belongs to a download that was killed
#: (a live one writes every few seconds: ``min_rate`` and ``timeout`` end it otherwise)
STALE_PART_SECONDS = 600.0
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_cleaned: dict[str, float] = {}  # cache dir -> monotonic time of its last cleaning


def _part_path(target: str) -> str:
    return (f"{target}.{_HOST_TAG}-{os.getpid()}.{threading.get_ident()}."
            f"{uuid.uuid4().hex[:8]}.part")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


def clean_stale_parts(directory: str, *, force: bool = False) -> list[str]:
    """Remove the ``.part`` (and sidecar ``.tmp``) files that killed downloads left in the cache
    ``directory``; return the paths removed.

    A file is stale when the process that wrote it is gone (same host, pid no longer running),
    or when it belongs to another process and has not changed for :data:`STALE_PART_SECONDS`
    (another host sharing the cache, or an old name without a host).  This process's own files
    are never touched.  Runs at most once every few minutes per directory unless ``force``.
    """
    now = time.monotonic()
    key = os.path.abspath(directory)
    with _registry_lock:
        last = _cleaned.get(key)
        if not force and last is not None and now - last < STALE_PART_SECONDS / 4:
            return []
        _cleaned[key] = now
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    wall = time.time()
    for entry in entries:
        match = _PART_NAME.search(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid, host = int(match["pid"]), match["host"]
        if pid == os.getpid() and host in (None, _HOST_TAG):
            continue
        try:
            age = wall - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = host == _HOST_TAG and not _pid_alive(pid)
        if dead or age > STALE_PART_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
                removed.append(entry.path)
                logger.info("removed %s, left by a download that was killed (%s)", entry.path,
                            "its process is gone" if dead else f"unchanged for {age:.0f} s")
    return removed


# --------------------------------------------------------------------------------------------
# fetch


def fetch(url: str, options: SourceOptions | None = None, workdir: str | None = None) -> LocalSource:
    """Return a local, complete, checksummed copy of ``url`` (or ``url`` itself when local).

    ``options.cache`` (a local directory or any fsspec URL) says where downloads are kept;
    otherwise ``workdir``; otherwise a temporary directory shared by this process.
    Raises :class:`SourceError` with a message that names the URL (redacted), the problem and
    what to do.
    """
    options = options or SourceOptions()
    extra = [options.auth.query_param] if options.auth and options.auth.query_param else []
    safe_url = redact(url, extra)
    protocol = _protocol(url)
    if protocol in _LOCAL_PROTOCOLS:
        return _fetch_local(url, safe_url)

    _check_limits(options, safe_url)
    creds = _resolve_credentials(url, safe_url, options.auth)
    if protocol in _KEY_ID_PROTOCOLS and _split_userinfo(url)[0] is not None:
        raise SourceError(
            safe_url,
            f"the URL carries credentials (KEYID:SECRET@), which {protocol}:// cannot use",
            "Remove them from the URL: put them in environment variables and name those with "
            "SourceOptions.auth=Auth.basic(KEY_ID_VAR, SECRET_VAR), or use the protocol's own "
            "variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3://)",
            reason="config",
        )
    cache = options.cache
    remote_cache: str | None = None
    if cache is not None and _protocol(cache) not in _LOCAL_PROTOCOLS:
        remote_cache = cache.rstrip("/")
        local_dir = workdir or _fallback_workdir()
    elif cache is not None:
        local_dir = _local_path(cache)
    else:
        local_dir = workdir or _fallback_workdir()
    os.makedirs(local_dir, exist_ok=True)
    clean_stale_parts(local_dir)

    name = cache_name(url)
    target = os.path.join(local_dir, name)
    with _url_lock(os.path.abspath(target)):
        cached = _reuse_local(target, safe_url)
        if cached is not None:
            return cached
        if remote_cache is not None:
            pulled = _pull_remote_cache(remote_cache, name, target, safe_url, options, creds)
            if pulled is not None:
                return pulled
        result = _download(url, safe_url, target, options, creds)
        if remote_cache is not None:
            _push_remote_cache(remote_cache, name, target, safe_url, options, creds)
        return result


def _check_limits(options: SourceOptions, safe_url: str) -> None:
    if options.deadline is not None and not options.deadline > 0:
        _config_error(safe_url, f"SourceOptions.deadline={options.deadline!r} must be a number "
                      "of seconds > 0 (None: automatic, math.inf: no deadline)")
    if not options.min_rate >= 0:
        _config_error(safe_url, f"SourceOptions.min_rate={options.min_rate!r} must be >= 0 "
                      "bytes/s (0: no minimum)")
    if not options.rate_window > 0:
        _config_error(safe_url, f"SourceOptions.rate_window={options.rate_window!r} must be > 0 "
                      "seconds")
    if options.max_bytes is not None and not options.max_bytes > 0:
        _config_error(safe_url, f"SourceOptions.max_bytes={options.max_bytes!r} must be > 0 "
                      "(None: no cap)")


def _fetch_local(url: str, safe_url: str) -> LocalSource:
    path = _local_path(url)
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise SourceError(
            safe_url,
            f"local file {path} {what}",
            "Check the path and the recipe's format function",
            reason="not_found",
        )
    size = os.path.getsize(path)
    if size == 0:
        raise SourceError(safe_url, f"local file {path} is empty", reason="empty")
    return LocalSource(url=safe_url, path=path, size=size, sha256=checksum(path))


def _sidecar_path(target: str) -> str:
    return target + ".json"


def _read_sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{_HOST_TAG}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _reuse_local(target: str, safe_url: str) -> LocalSource | None:
    meta = _read_sidecar(_sidecar_path(target))
    if meta is None or not os.path.isfile(target):
        return None
    try:
        size = os.path.getsize(target)
        if size != meta.get("size"):
            logger.warning("cached copy of %s has the wrong size; downloading again", safe_url)
            return None
        digest = checksum(target)
    except OSError:
        return None
    if digest != meta.get("sha256"):
        logger.warning("cached copy of %s is corrupted (sha256 mismatch); downloading again",
                       safe_url)
        return None
    try:  # a copy cached before downloads were checked may be cut short, checksum and all
        _check_structure(target, safe_url, size)
    except _Truncated as short:
        logger.warning("cached copy of %s is unusable (%s); downloading again", safe_url,
                       short.problem)
        for stale in (target, _sidecar_path(target)):
            with contextlib.suppress(OSError):
                os.remove(stale)
        return None
    logger.debug("reusing cached %s -> %s", safe_url, target)
    return LocalSource(url=safe_url, path=target, size=size, sha256=digest)


class _Fatal(Exception):
    def __init__(self, problem: str, hint: str | None = None, reason: str = "io"):
        super().__init__(problem)
        self.problem, self.hint, self.reason = problem, hint, reason


class _Transient(Exception):
    def __init__(self, problem: str, retry_after: float | None = None, hint: str | None = None):
        super().__init__(problem)
        self.problem, self.retry_after, self.hint = problem, retry_after, hint


class _Truncated(_Transient):
    """The body ended before the file's own header says it should (checked before caching)."""

    def __init__(self, received: int, expected: int | None, detail: str):
        what = f"{expected:,} bytes" if expected is not None else "more"
        super().__init__(
            f"the download is truncated: received {received:,} bytes, but the file's header "
            f"says it has {what}{detail}",
            hint="The server sends an incomplete file (its own copy may be cut short, or "
            "the connection ends early without a Content-Length); nothing was cached. Try "
            "again later, or tell the data provider",
        )
        self.received, self.expected = received, expected


@dataclass
class _Downloaded:
    size: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PiB"  # pragma: no cover - the loop returns


#: the automatic deadline: a base plus the declared size at a slow but honest rate
_DEADLINE_BASE = 600.0
_DEADLINE_RATE = 128 * 1024.0
_DEADLINE_UNKNOWN_SIZE = 7200.0


def _auto_deadline(size: int | None) -> float:
    if size is None:
        return _DEADLINE_UNKNOWN_SIZE
    return _DEADLINE_BASE + size / _DEADLINE_RATE


class _Guard:
    """Bounds one URL's download, all attempts together: the deadline, the minimum rate, the
    size cap and the free space of the cache directory.  ``update`` is called as bytes arrive."""

    def __init__(self, safe_url: str, target: str, options: SourceOptions):
        self.safe_url, self.target, self.options = safe_url, target, options
        self.cache_dir = os.path.dirname(os.path.abspath(target))
        self.started: float | None = None
        self.limit = math.inf
        self.expected: int | None = None
        self.received = 0
        self._window_start = 0.0
        self._window_bytes = 0

    # -- time

    def _deadline_value(self) -> float:
        d = self.options.deadline
        return _auto_deadline(self.expected) if d is None else float(d)

    def start_attempt(self) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
            self.limit = now + self._deadline_value()
        self.check_deadline()
        self.received, self.expected = 0, None
        self._window_start, self._window_bytes = now, 0

    def remaining(self) -> float:
        return self.limit - time.monotonic()

    def read_timeout(self) -> float:
        """The socket timeout for this attempt: ``timeout``, or less when the deadline is near."""
        return max(0.05, min(self.options.timeout, self.remaining()))

    def deadline_error(self, last_problem: str = "") -> _Fatal:
        elapsed = time.monotonic() - (self.started or time.monotonic())
        size = f"of {self.expected:,} " if self.expected is not None else ""
        d = self.options.deadline
        which = (f"SourceOptions.deadline={d:g} s" if d is not None
                 else f"the automatic deadline of {self._deadline_value():.0f} s")
        problem = (f"gave up after {elapsed:.1f} s ({which}): received {self.received:,} "
                   f"bytes {size}so far")
        if last_problem:
            problem += f"; last problem: {last_problem}"
        return _Fatal(problem, "The server is too slow or keeps failing; try again later, or "
                      "raise SourceOptions.deadline (math.inf: no deadline)", reason="transient")

    def check_deadline(self) -> None:
        if time.monotonic() > self.limit:
            raise self.deadline_error()

    # -- sizes

    def expect(self, size: int | None) -> None:
        """The size the server declared (``None``: not declared); checked before any byte."""
        self.expected = size
        if self.started is not None and self.options.deadline is None:
            self.limit = self.started + self._deadline_value()
        if size is None:
            return
        cap = self.options.max_bytes
        if cap is not None and size > cap:
            raise _Fatal(
                f"the source is {_fmt_bytes(size)} ({size:,} bytes), more than "
                f"SourceOptions.max_bytes={cap:,}",
                "Check the URL; if the file really is that large, raise SourceOptions.max_bytes",
                reason="too_large",
            )
        try:
            free = shutil.disk_usage(self.cache_dir).free
        except OSError:
            return
        if size > free:
            raise _Fatal(
                f"the source is {_fmt_bytes(size)} ({size:,} bytes) but the cache directory "
                f"{self.cache_dir} has only {_fmt_bytes(free)} free",
                "Free space there, or point SourceOptions.cache (or the work directory) at a "
                "larger disk; if the size is wrong, check the URL",
                reason="no_space",
            )

    def update(self, n: int) -> None:
        """Count ``n`` more bytes received; raise when a limit is passed."""
        self.received += n
        cap = self.options.max_bytes
        if cap is not None and self.received > cap:
            raise _Fatal(
                f"the download passed SourceOptions.max_bytes={cap:,} (received "
                f"{self.received:,} bytes so far, the server declared no size)"
                if self.expected is None else
                f"the download passed SourceOptions.max_bytes={cap:,} (received "
                f"{self.received:,} bytes, the server declared {self.expected:,})",
                "Check the URL; if the file really is that large, raise SourceOptions.max_bytes",
                reason="too_large",
            )
        now = time.monotonic()
        if now > self.limit:
            raise self.deadline_error()
        window = now - self._window_start
        if self.options.min_rate > 0 and window >= self.options.rate_window:
            rate = (self.received - self._window_bytes) / window
            if rate < self.options.min_rate:
                raise _Transient(
                    f"too slow: {rate:,.0f} bytes/s over the last {window:.1f} s, below "
                    f"SourceOptions.min_rate={self.options.min_rate:g} (received "
                    f"{self.received:,} bytes so far)",
                    hint="The server trickles; try again later, or lower SourceOptions.min_rate "
                    "(0: no minimum) or lengthen SourceOptions.rate_window",
                )
            self._window_start, self._window_bytes = now, self.received

    # -- local writes

    def write_error(self, exc: OSError, path: str) -> _Fatal:
        """A precise error for a failed local write (a full disk names the cache directory)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
            return _Fatal(
                f"{what} in the cache directory {self.cache_dir} while writing {self.target} "
                f"({self.received:,} bytes received so far)",
                "Free space there, or point SourceOptions.cache (or the work directory) at a "
                "larger disk",
                reason="no_space",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _Fatal(
                f"cannot write into the cache directory {self.cache_dir} "
                f"({exc.strerror or type(exc).__name__})",
                "Check its permissions, or point SourceOptions.cache (or the work directory) "
                "at a writable directory",
                reason="config",
            )
        return _Fatal(f"could not write {path} ({type(exc).__name__}: {exc.strerror or exc})",
                      reason="io")


class _PartFile:
    """The ``.part`` file a download streams into: every local write error becomes a precise
    :class:`_Fatal`, and every write is counted by the guard (deadline, rate, size cap)."""

    def __init__(self, path: str, guard: _Guard, count: bool = True):
        self.path, self.guard, self.count = path, guard, count
        try:
            self._f = open(path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        except OSError as exc:
            raise guard.write_error(exc, path) from None

    def write(self, data: bytes) -> int:
        try:
            self._f.write(data)
        except OSError as exc:
            raise self.guard.write_error(exc, self.path) from None
        if self.count:
            self.guard.update(len(data))
        return len(data)

    # fsspec's get_file takes any object with read/tell/close as its local file
    def read(self, *_: Any) -> bytes:  # pragma: no cover - never read
        raise OSError(errno.EBADF, "a download's part file is write-only")

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self._f.close()  # flushing may be where the disk turns out to be full
        except OSError as exc:
            raise self.guard.write_error(exc, self.path) from None

    def __enter__(self) -> _PartFile:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self._f.close()


def _check_structure(tmp: str, safe_url: str, size: int) -> None:
    """Raise :class:`_Truncated` when ``tmp`` is shorter than its own header says."""
    from arcoforge.errors import TruncatedFileError
    from arcoforge.forge.io.readers import check_complete

    try:
        check_complete(tmp, safe_url)
    except TruncatedFileError as short:
        text = str(short)
        expected = getattr(short, "expected", None)
        if not isinstance(expected, int):
            m = re.search(r"should hold ([\d,]+) bytes", text)
            expected = int(m.group(1).replace(",", "")) if m else None
        detail = "" if expected is not None else " (it ends inside its own header)"
        raise _Truncated(size, expected, detail) from None


def _download(
    url: str, safe_url: str, target: str, options: SourceOptions, creds: _Credentials
) -> LocalSource:
    redact_log_handlers()
    protocol = _protocol(url)
    guard = _Guard(safe_url, target, options)
    if protocol in ("http", "https"):
        attempt: Callable[[str, int], _Downloaded] = lambda tmp, i: _http_attempt(  # noqa: E731
            url, tmp, options, creds, guard
        )
        classify: Callable[[Exception], _Fatal | _Transient] = _classify_http_error
    else:
        attempt = lambda tmp, i: _fsspec_attempt(  # noqa: E731
            url, tmp, options, creds, guard, fresh=i > 0
        )
        classify = _classify_fsspec_error

    semaphore = host_semaphore(url, options.max_concurrency_per_host)
    tmp = _part_path(target)
    attempts = max(0, options.retries) + 1
    failure: _Fatal | None = None
    last: _Transient | None = None
    logger.info("downloading %s", safe_url)
    try:
        for i in range(attempts):
            retry_after: float | None = None
            try:
                with semaphore:
                    guard.start_attempt()
                    got = attempt(tmp, i)
                    _check_structure(tmp, safe_url, got.size)
                failure = None
                break
            except _Fatal as exc:
                failure = exc
                break
            except _Transient as exc:
                last, retry_after = exc, exc.retry_after
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a library wrote the file itself
                    failure = guard.write_error(exc, tmp)
                    break
                classified = classify(exc)
                if isinstance(classified, _Fatal):
                    failure = classified
                    break
                last = classified
            except Exception as exc:
                classified = classify(exc)
                if isinstance(classified, _Fatal):
                    failure = classified
                    break
                last = classified
            assert last is not None
            last_problem = creds.scrub(last.problem)
            if i + 1 >= attempts:
                if isinstance(last, _Truncated):
                    failure = _Fatal(f"{last_problem} (after {attempts} attempt(s))", last.hint,
                                     reason="content")
                else:
                    failure = _Fatal(
                        f"failed after {attempts} attempt(s): {last_problem}",
                        last.hint or "The server or network looks unreliable; try again later "
                        "or raise SourceOptions.retries / timeout",
                        reason="transient",
                    )
                break
            delay = min(options.max_backoff, options.backoff * (2**i))
            delay *= random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = max(delay, min(retry_after, options.max_backoff))
            if delay >= guard.remaining():
                failure = guard.deadline_error(last_problem)
                break
            logger.warning(
                "%s: %s; retrying in %.2f s (attempt %d of %d)",
                safe_url, last_problem, delay, i + 2, attempts,
            )
            time.sleep(delay)
    finally:
        if failure is not None and os.path.exists(tmp):
            os.remove(tmp)
    if failure is not None:
        # raised outside any ``except`` block: no chained exception can carry a secret along
        raise SourceError(
            safe_url, creds.scrub(failure.problem), failure.hint and creds.scrub(failure.hint),
            reason=failure.reason,
        )

    try:
        _check_content(tmp, url, safe_url, got.size)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    meta = {
        "url": safe_url,
        "size": got.size,
        "sha256": got.sha256,
        "etag": got.etag,
        "last_modified": got.last_modified,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json_atomic(_sidecar_path(target), meta)
    logger.info(
        "downloaded %s (%d bytes, %.2f s) -> %s", safe_url, got.size,
        time.monotonic() - (guard.started or time.monotonic()), target,
    )
    return LocalSource(url=safe_url, path=target, size=got.size, sha256=got.sha256)


def _check_content(tmp: str, url: str, safe_url: str, size: int) -> None:
    if size == 0:
        raise SourceError(
            safe_url,
            "the downloaded file is empty",
            "Check the URL (and the recipe's format function); the server sent no data",
            reason="empty",
        )
    ext = os.path.splitext(urlsplit(url).path)[1].lower()
    if ext in (".html", ".htm", ".txt", ".xml", ".json", ""):
        return
    with open(tmp, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise SourceError(
            safe_url,
            "the server returned an HTML page instead of data (a login or error page?)",
            "Check the URL and the credentials (SourceOptions.auth)",
            reason="content",
        )


# ---- http(s) via requests

_thread_local = threading.local()


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_thread_local, "session", None)
    if session is None:
        session = requests.Session()
        _thread_local.session = session
    return session


def _with_query(url: str, param: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    pairs.append((param, value))
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _http_attempt(
    url: str, tmp: str, options: SourceOptions, creds: _Credentials, guard: _Guard
) -> _Downloaded:
    so = options.storage_options
    headers = {"Accept-Encoding": "identity", **dict(so.get("headers") or {})}
    auth: tuple[str, str] | None = None
    request_url = url
    if creds.username is not None:
        auth = (creds.username, creds.password or "")
    elif creds.query_param is not None:
        request_url = _with_query(url, creds.query_param, creds.token or "")
    elif creds.token is not None:
        headers["Authorization"] = f"Bearer {creds.token}"
    kwargs: dict[str, Any] = {}
    if "verify" in so:
        kwargs["verify"] = so["verify"]
    timeout = guard.read_timeout()
    with _session().get(
        request_url,
        headers=headers,
        auth=auth,
        stream=True,
        timeout=(timeout, timeout),
        **kwargs,
    ) as resp:
        status = resp.status_code
        if status in (404, 410):
            raise _Fatal(
                f"not found (HTTP {status})",
                "Check the URL and the recipe's format function (dates, file names)",
                reason="not_found",
            )
        if status in (401, 403):
            raise _Fatal(
                f"credentials rejected (HTTP {status}); {creds.describe()}",
                creds.rejected_hint(),
                reason="auth",
            )
        if status == 429 or status >= 500:
            raise _Transient(
                f"HTTP {status} {resp.reason or ''}".strip(),
                _retry_after(resp.headers.get("Retry-After")),
            )
        if status >= 400 or status == 206 or 300 <= status < 400:
            raise _Fatal(f"unexpected HTTP {status} {resp.reason or ''}".strip(), reason="http")
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() and encoding == "identity" else None
        guard.expect(expected)
        digest = hashlib.sha256()
        with _PartFile(tmp, guard) as out:
            while True:
                # read1: whatever has arrived (up to _CHUNK), so that the limits are checked
                # as bytes trickle in, not once per megabyte
                chunk = resp.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
        received = guard.received
        if expected is not None and received != expected:
            raise _Transient(f"truncated body: received {received:,} of {expected:,} bytes")
        return _Downloaded(
            size=received,
            sha256=digest.hexdigest(),
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
        )


def _classify_http_error(exc: Exception) -> _Fatal | _Transient:
    import urllib3.exceptions

    name = type(exc).__name__
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        where = getattr(getattr(exc, "response", None), "url", None)
        last = f" (the last one to {redact(where)})" if where else ""
        return _Fatal(
            f"redirect loop: the server redirected more than 30 times{last}",
            "Check the URL; a server that redirects to a login page or back to itself may "
            "need credentials (SourceOptions.auth) or a different URL",
            reason="http",
        )
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        return _Fatal(
            f"TLS error ({name}: {exc})",
            "Check the server certificate, or storage_options={'verify': <CA bundle>}",
            reason="http",
        )
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return _Fatal(f"invalid URL ({name})", "Check the recipe's format function",
                      reason="config")
    if isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError,
                        TimeoutError)):
        return _Transient(f"timed out ({name}: no data for SourceOptions.timeout)")
    if isinstance(exc, (requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError,
                        urllib3.exceptions.HTTPError,
                        ConnectionError)):
        return _Transient(f"connection failed ({name}: {exc})")
    if isinstance(exc, requests.exceptions.RequestException):
        return _Fatal(f"HTTP request failed ({name}: {exc})", reason="http")
    if isinstance(exc, OSError):  # local file errors are mapped by _PartFile: this is the network
        return _Transient(f"I/O error ({name}: {exc})")
    return _Fatal(f"unexpected error ({name}: {exc})", reason="io")


# ---- everything else via fsspec


def _fsspec_kwargs(url: str, options: SourceOptions, creds: _Credentials) -> dict[str, Any]:
    kwargs = dict(options.storage_options)
    protocol = _protocol(url)
    if creds.username is not None:
        if protocol in ("ftp", "sftp", "ssh", "smb", "webdav"):
            kwargs["username"], kwargs["password"] = creds.username, creds.password
        elif protocol in ("s3", "s3a"):
            kwargs["key"], kwargs["secret"] = creds.username, creds.password
        else:
            raise _Fatal(f"Auth.basic is not supported for {protocol}://",
                         "Use the protocol's own credential environment variables",
                         reason="config")
    elif creds.token is not None:
        raise _Fatal(f"Auth.{'query' if creds.query_param else 'bearer'} is only supported "
                     f"for http(s), not {protocol}://", reason="config")
    return kwargs


def _fsspec_attempt(
    url: str, tmp: str, options: SourceOptions, creds: _Credentials, guard: _Guard, fresh: bool
) -> _Downloaded:
    import fsspec  # type: ignore[import-untyped]
    from fsspec.asyn import AsyncFileSystem  # type: ignore[import-untyped]
    from fsspec.callbacks import Callback  # type: ignore[import-untyped]

    kwargs = _fsspec_kwargs(url, options, creds)
    if _protocol(url) == "ftp":
        kwargs.setdefault("timeout", guard.read_timeout())
    if fresh:  # after a failure, do not reuse a possibly broken cached connection
        kwargs["skip_instance_cache"] = True
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise _Fatal("is a directory, not a file", "Check the URL", reason="not_found")
        expected = info.get("size")
        guard.expect(expected if isinstance(expected, int) else None)
        if isinstance(fs, AsyncFileSystem):
            # the implementation writes the local file itself: it reports progress to the guard
            class _Progress(Callback):  # type: ignore[misc]
                def relative_update(self, inc: int = 1) -> None:
                    guard.update(inc)

            fs.get_file(path, tmp, callback=_Progress())
        else:  # FTP and other blocking file systems write into a file object we give them
            with _PartFile(tmp, guard) as out:
                fs.get_file(path, out)
    finally:
        connection = getattr(fs, "ftp", None)  # FTP file systems are not cached: hang up now
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
    size = os.path.getsize(tmp)
    if isinstance(expected, int) and size != expected:
        raise _Transient(f"truncated transfer: received {size:,} of {expected:,} bytes")
    etag = info.get("ETag") or info.get("etag")
    modified = info.get("LastModified") or info.get("mtime") or info.get("modify")
    return _Downloaded(
        size=size,
        sha256=checksum(tmp),
        etag=str(etag) if etag else None,
        last_modified=str(modified) if modified else None,
    )


def _classify_fsspec_error(exc: Exception) -> _Fatal | _Transient:
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return _Fatal("not found", "Check the URL and the recipe's format function",
                      reason="not_found")
    if isinstance(exc, PermissionError):
        return _Fatal(f"credentials rejected or access denied ({name})",
                      "Check the credentials (SourceOptions.auth or the protocol's own "
                      "environment variables) and the access rights", reason="auth")
    if isinstance(exc, ftplib.error_perm):
        text = str(exc)
        if text.startswith("530"):
            return _Fatal(f"credentials rejected (FTP {text[:3]})",
                          "Check the user name and password (SourceOptions.auth)", reason="auth")
        if text.startswith(("550", "450")):
            return _Fatal(f"not found (FTP {text[:3]})",
                          "Check the URL and the recipe's format function", reason="not_found")
        return _Fatal(f"FTP error {text}", reason="io")
    if isinstance(exc, (ftplib.error_temp, ftplib.error_reply, EOFError, ConnectionError,
                        TimeoutError)):
        return _Transient(f"connection failed ({name}: {exc})")
    if isinstance(exc, OSError):
        return _Transient(f"I/O error ({name}: {exc})")
    if isinstance(exc, (ImportError, ValueError, TypeError)):
        return _Fatal(f"cannot open this protocol ({name}: {exc})",
                      "Install the fsspec implementation for it (e.g. s3fs) and check "
                      "SourceOptions.storage_options", reason="config")
    return _Transient(f"unexpected error ({name}: {exc})")


# ---- remote (fsspec URL) cache


def _cache_fs(cache: str, options: SourceOptions) -> tuple[Any, str]:
    import fsspec  # type: ignore[import-untyped]

    return fsspec.core.url_to_fs(cache, **options.storage_options)  # type: ignore[no-any-return]


def _pull_remote_cache(
    cache: str, name: str, target: str, safe_url: str, options: SourceOptions,
    creds: _Credentials,
) -> LocalSource | None:
    try:
        fs, root = _cache_fs(cache, options)
        side = f"{root}/{name}.json"
        if not fs.exists(side):
            return None
        meta = json.loads(fs.cat_file(side))
        tmp = _part_path(target)
        fs.get_file(f"{root}/{name}", tmp)
    except Exception as exc:  # the cache is an optimisation: fall back to the source
        logger.warning("cannot read remote cache %s for %s (%s); downloading from the source",
                       redact(cache), safe_url, creds.scrub(type(exc).__name__))
        return None
    try:
        size, digest = os.path.getsize(tmp), checksum(tmp)
        if size != meta.get("size") or digest != meta.get("sha256"):
            logger.warning("remote cache copy of %s does not match its sidecar; "
                           "downloading from the source", safe_url)
            return None
        try:
            _check_structure(tmp, safe_url, size)
        except _Truncated as short:
            logger.warning("remote cache copy of %s is unusable (%s); downloading from the "
                           "source", safe_url, short.problem)
            return None
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _write_json_atomic(_sidecar_path(target), meta)
    logger.debug("pulled %s from remote cache %s", safe_url, redact(cache))
    return LocalSource(url=safe_url, path=target, size=size, sha256=digest)


def _push_remote_cache(
    cache: str, name: str, target: str, safe_url: str, options: SourceOptions,
    creds: _Credentials,
) -> None:
    try:
        fs, root = _cache_fs(cache, options)
        fs.makedirs(root, exist_ok=True)
        fs.put_file(target, f"{root}/{name}")
        # the sidecar goes last: its presence marks a complete cache entry
        with open(_sidecar_path(target), "rb") as f:
            fs.pipe_file(f"{root}/{name}.json", f.read())
    except Exception as exc:
        logger.warning("cannot write %s to remote cache %s (%s)", safe_url, redact(cache),
                       creds.scrub(type(exc).__name__))
