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
* a per-URL lock makes two threads that want the same URL download it once;
* a per-host semaphore (module-level, keyed by scheme, host and port) bounds how many requests
  this process sends to one server at a time.

Secrets: credentials are *named* by :class:`Auth` (environment variable names) and read at call
time.  Their values never appear in exceptions, log messages, sidecars, ``LocalSource.url`` or
file names; :func:`redact` strips userinfo and secret-looking query values from URLs.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit
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
    "checksum",
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
    }
)
_SECRET_PARAM_PATTERN = re.compile(r"(token|secret|passw|signature|api[-_]?key)", re.IGNORECASE)
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
    """How to fetch sources: retries, timeouts, concurrency, credentials, cache."""

    retries: int = 5  # attempts after the first, for transient failures
    backoff: float = 0.5  # first delay in s, doubling, with jitter
    max_backoff: float = 20.0
    timeout: float = 60.0  # per request
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


def redact(url: str, extra_params: Iterable[str] = ()) -> str:
    """Return ``url`` without userinfo and with secret-looking query values replaced.

    Secret-looking query parameters are the usual names (``token``, ``key``, ``sig``,
    ``signature``, ``password``, ``access_token``, ``X-Amz-Signature``, ...), any name containing
    token/secret/password/signature/apikey, any parameter an :class:`Auth` of kind ``"query"``
    has used in this process, and ``extra_params``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive)
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        extra = list(extra_params)
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_param(k, extra) for k, _ in pairs):
            query = urlencode(
                [(k, _REDACTED if _is_secret_param(k, extra) else v) for k, v in pairs],
                safe="/:,",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# --------------------------------------------------------------------------------------------
# secrets: resolution from the environment and scrubbing of any text that leaves this module


@dataclass
class _Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None
    query_param: str | None = None
    env_names: tuple[str, ...] = ()
    secrets: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
                quoted = quote(secret, safe="")
                if quoted != secret:
                    text = text.replace(quoted, "***")
        return text

    def describe(self) -> str:
        if not self.env_names:
            return "no credentials were configured"
        names = ", ".join(f"${n}" for n in self.env_names)
        return f"credentials were read from the environment variable(s) {names}"


def _resolve_credentials(url: str, safe_url: str, auth: Auth | None) -> _Credentials:
    creds = _Credentials()
    parts = urlsplit(url)
    # secrets embedded in the URL itself: userinfo password, secret-looking query values
    if parts.password:
        creds.secrets += [parts.password, unquote(parts.password)]
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if v and _is_secret_param(k):
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
    else:
        creds.token = os.environ[auth.token_env or ""]
        creds.secrets.append(creds.token)
        if auth.kind == "query":
            creds.query_param = auth.query_param
            _AUTH_QUERY_PARAMS.add((auth.query_param or "").lower())
    return creds


def _config_error(safe_url: str, problem: str) -> NoReturn:
    raise SourceError(safe_url, problem, "Fix the recipe's SourceOptions", reason="config")


class _UrlRedactingFilter(logging.Filter):
    """Redacts secret query values from URLs that urllib3 logs at DEBUG level."""

    _url = re.compile(r"(?:https?://[^\s\"']+|/[^\s\"']*\?[^\s\"']*)")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken record is not ours to fix
            return True
        if "?" in message:
            redacted = self._url.sub(lambda m: _redact_fragment(m.group(0)), message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


def _redact_fragment(text: str) -> str:
    if text.startswith("/"):
        path, _, query = text.partition("?")
        return redact("http://x" + path + "?" + query)[len("http://x") :]
    return redact(text)


logging.getLogger("urllib3.connectionpool").addFilter(_UrlRedactingFilter())


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

    creds = _resolve_credentials(url, safe_url, options.auth)
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
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
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
    logger.debug("reusing cached %s -> %s", safe_url, target)
    return LocalSource(url=safe_url, path=target, size=size, sha256=digest)


class _Fatal(Exception):
    def __init__(self, problem: str, hint: str | None = None, reason: str = "io"):
        super().__init__(problem)
        self.problem, self.hint, self.reason = problem, hint, reason


class _Transient(Exception):
    def __init__(self, problem: str, retry_after: float | None = None):
        super().__init__(problem)
        self.problem, self.retry_after = problem, retry_after


@dataclass
class _Downloaded:
    size: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None


def _download(
    url: str, safe_url: str, target: str, options: SourceOptions, creds: _Credentials
) -> LocalSource:
    protocol = _protocol(url)
    if protocol in ("http", "https"):
        attempt: Callable[[str, int], _Downloaded] = lambda tmp, i: _http_attempt(  # noqa: E731
            url, tmp, options, creds
        )
        classify = _classify_http_error
    else:
        attempt = lambda tmp, i: _fsspec_attempt(url, tmp, options, creds, fresh=i > 0)  # noqa: E731
        classify = _classify_fsspec_error

    semaphore = host_semaphore(url, options.max_concurrency_per_host)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.part"
    attempts = max(0, options.retries) + 1
    failure: _Fatal | None = None
    last_problem = ""
    started = time.monotonic()
    logger.info("downloading %s", safe_url)
    try:
        for i in range(attempts):
            retry_after: float | None = None
            try:
                with semaphore:
                    got = attempt(tmp, i)
                failure = None
                break
            except _Fatal as exc:
                failure = exc
                break
            except _Transient as exc:
                last_problem, retry_after = exc.problem, exc.retry_after
            except Exception as exc:
                classified = classify(exc)
                if isinstance(classified, _Fatal):
                    failure = classified
                    break
                last_problem = classified.problem
            last_problem = creds.scrub(last_problem)
            if i + 1 >= attempts:
                failure = _Fatal(
                    f"failed after {attempts} attempt(s): {last_problem}",
                    "The server or network looks unreliable; try again later or raise "
                    "SourceOptions.retries / timeout",
                    reason="transient",
                )
                break
            delay = min(options.max_backoff, options.backoff * (2**i))
            delay *= random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = max(delay, min(retry_after, options.max_backoff))
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
        time.monotonic() - started, target,
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
    url: str, tmp: str, options: SourceOptions, creds: _Credentials
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
    with _session().get(
        request_url,
        headers=headers,
        auth=auth,
        stream=True,
        timeout=(options.timeout, options.timeout),
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
                "Check that those variables hold valid credentials for this server"
                if creds.env_names
                else "This server needs credentials: set SourceOptions.auth "
                "(Auth.basic / Auth.bearer / Auth.query) naming environment variables",
                reason="auth",
            )
        if status == 429 or status >= 500:
            raise _Transient(
                f"HTTP {status} {resp.reason or ''}".strip(),
                _retry_after(resp.headers.get("Retry-After")),
            )
        if status >= 400 or status == 206:
            raise _Fatal(f"unexpected HTTP {status} {resp.reason or ''}".strip(), reason="http")
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() and encoding == "identity" else None
        digest = hashlib.sha256()
        received = 0
        with open(tmp, "wb") as out:
            for chunk in resp.iter_content(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if expected is not None and received != expected:
            raise _Transient(f"truncated body: received {received} of {expected} bytes")
        return _Downloaded(
            size=received,
            sha256=digest.hexdigest(),
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
        )


def _classify_http_error(exc: Exception) -> _Fatal | _Transient:
    name = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError):
        return _Fatal(
            f"TLS error ({name}: {exc})",
            "Check the server certificate, or storage_options={'verify': <CA bundle>}",
            reason="http",
        )
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return _Fatal(f"invalid URL ({name})", "Check the recipe's format function",
                      reason="config")
    if isinstance(exc, requests.exceptions.Timeout):
        return _Transient(f"timed out ({name})")
    if isinstance(exc, (requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError,
                        ConnectionError, TimeoutError)):
        return _Transient(f"connection failed ({name}: {exc})")
    if isinstance(exc, OSError):
        return _Fatal(f"could not write the download ({name}: {exc})",
                      "Check free space and permissions of the cache directory", reason="io")
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
    url: str, tmp: str, options: SourceOptions, creds: _Credentials, fresh: bool
) -> _Downloaded:
    import fsspec  # type: ignore[import-untyped]

    kwargs = _fsspec_kwargs(url, options, creds)
    if _protocol(url) == "ftp":
        kwargs.setdefault("timeout", options.timeout)
    if fresh:  # after a failure, do not reuse a possibly broken cached connection
        kwargs["skip_instance_cache"] = True
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise _Fatal("is a directory, not a file", "Check the URL", reason="not_found")
        fs.get_file(path, tmp)
    finally:
        connection = getattr(fs, "ftp", None)  # FTP file systems are not cached: hang up now
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
    size = os.path.getsize(tmp)
    expected = info.get("size")
    if isinstance(expected, int) and size != expected:
        raise _Transient(f"truncated transfer: received {size} of {expected} bytes")
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
        tmp = f"{target}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
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
