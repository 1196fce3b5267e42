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

This module keeps :func:`fetch` and re-exports the public names; the work is done by (in the
order they depend on each other): ``urls`` (protocols, userinfo), ``redact`` (URLs, secrets in
log lines), ``options`` (:class:`SourceOptions`, :class:`Auth`, :class:`LocalSource`),
``credentials``, ``outcomes`` (how one attempt ends), ``checks`` (sha256, structure, HTML),
``guard`` (deadline, rate, size, free space, ``.part`` writes), ``cache`` (names, sidecars,
reuse, stale ``.part`` files), ``remote_cache``, ``locks`` (per-host, per-URL),
``transport_http`` and ``transport_fsspec`` (one attempt each), ``transfer`` (retries, into the
cache); all of them log to :data:`logger` (``log``).  The internals that tests reach through
this module (``_Guard``, ``_PartFile``, ``_auto_deadline``, ...) are re-exported as ``X as X``.
"""

from __future__ import annotations

import dataclasses
import os
import time

from arcoforge.errors import SourceError
from arcoforge.forge.io.cache import _HOST_TAG as _HOST_TAG
from arcoforge.forge.io.cache import STALE_PART_SECONDS as STALE_PART_SECONDS
from arcoforge.forge.io.cache import (
    _fallback_workdir,
    _read_sidecar,
    _reuse_local,
    _sidecar_path,
    cache_name,
    clean_stale_parts,
)
from arcoforge.forge.io.checks import checksum
from arcoforge.forge.io.credentials import _Credentials, _resolve_credentials
from arcoforge.forge.io.limits import _DEADLINE_BASE as _DEADLINE_BASE
from arcoforge.forge.io.limits import _DEADLINE_UNKNOWN_SIZE as _DEADLINE_UNKNOWN_SIZE
from arcoforge.forge.io.limits import _auto_deadline as _auto_deadline
from arcoforge.forge.io.limits import _Guard as _Guard
from arcoforge.forge.io.limits import _PartFile as _PartFile
from arcoforge.forge.io.locks import _url_lock
from arcoforge.forge.io.locks import host_semaphore as host_semaphore
from arcoforge.forge.io.log import logger as logger
from arcoforge.forge.io.options import Auth, LocalSource, SourceOptions, _check_limits
from arcoforge.forge.io.outcomes import _Fatal as _Fatal
from arcoforge.forge.io.redact import _LOG_FILTER as _LOG_FILTER
from arcoforge.forge.io.redact import (
    SAFE_QUERY_PARAMS,
    SECRET_QUERY_PARAMS,
    redact,
    redact_log_handlers,
)
from arcoforge.forge.io.remote_cache import _pull_remote_cache, _push_remote_cache
from arcoforge.forge.io.revalidate import changed_since, server_validators
from arcoforge.forge.io.transfer import _download
from arcoforge.forge.io.urls import (
    _KEY_ID_PROTOCOLS,
    _LOCAL_PROTOCOLS,
    URL_MAP_ENV,
    _local_path,
    _protocol,
    _split_userinfo,
    map_url,
)

__all__ = [
    "COUNTERS",
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

#: what this process downloaded (from sources or a remote input cache): ``downloads`` and
#: ``bytes``; engines that scan on their workers leave the coordinator's at zero
COUNTERS: dict[str, int] = {"downloads": 0, "bytes": 0}


def fetch(url: str, options: SourceOptions | None = None, workdir: str | None = None) -> LocalSource:
    """Return a local, complete, checksummed copy of ``url`` (or ``url`` itself when local).

    ``options.cache`` (a local directory or any fsspec URL) says where downloads are kept;
    otherwise ``workdir``; otherwise a temporary directory shared by this process.
    A URL with a mirror in ``$ARCOFORGE_URL_MAP`` (:func:`~arcoforge.forge.io.urls.map_url`) is
    read from the mirror; the result's ``url`` stays the recipe's URL.
    Raises :class:`SourceError` with a message that names the URL (redacted), the problem and
    what to do.
    """
    mirror = map_url(url)
    if mirror == url:
        return _fetch(url, options, workdir)
    extra = [options.auth.query_param] if options and options.auth and options.auth.query_param \
        else []
    try:
        local = _fetch(mirror, options, workdir)
    except SourceError as err:
        problem = str(err).removeprefix(f"{err.url}: ")
        raise SourceError(f"{redact(url, extra)} (read from the mirror {err.url}, "
                          f"{URL_MAP_ENV})", problem, reason=err.reason) from err
    return dataclasses.replace(local, url=redact(url, extra))


def _fetch(url: str, options: SourceOptions | None, workdir: str | None) -> LocalSource:
    """:func:`fetch` of ``url`` itself (no mirror)."""
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
        stale = cached is not None and _out_of_date(target, url, safe_url, options, creds)
        if cached is not None and not stale:
            return cached
        if remote_cache is not None and not stale:  # a changed file's remote copy is stale too
            pulled = _pull_remote_cache(remote_cache, name, target, safe_url, options, creds)
            if pulled is not None:
                COUNTERS["downloads"] += 1
                COUNTERS["bytes"] += pulled.size
                if not _out_of_date(target, url, safe_url, options, creds):
                    return pulled
        result = _download(url, safe_url, target, options, creds)  # (then pushed: replaces it)
        _CURRENT[(os.path.abspath(target), result.sha256)] = time.monotonic()
        COUNTERS["downloads"] += 1
        COUNTERS["bytes"] += result.size
        if remote_cache is not None:
            _push_remote_cache(remote_cache, name, target, safe_url, options, creds)
        return result


def _out_of_date(target: str, url: str, safe_url: str, options: SourceOptions,
                 creds: _Credentials) -> bool:
    """Whether the server now holds another file than the cached copy at ``target`` (one
    metadata request; see :mod:`arcoforge.forge.io.revalidate`).  ``SourceOptions(revalidate=
    False)`` skips the question."""
    if not options.revalidate:
        return False
    kept = _read_sidecar(_sidecar_path(target)) or {}
    if not (kept.get("etag") or kept.get("last_modified")):
        return False  # nothing to compare with: a size alone says little
    key = (os.path.abspath(target), str(kept.get("sha256")))
    seen = _CURRENT.get(key)
    if seen is not None and time.monotonic() - seen < CURRENT_FOR:
        return False  # asked (or downloaded) for this build: its scan and tasks read one copy
    now = server_validators(url, options, creds)
    why = changed_since(kept, now) if now is not None else None
    if why is not None:
        logger.warning("%s changed on its server since it was cached (%s): downloading it again",
                       safe_url, why)
        return True
    _CURRENT[key] = time.monotonic()
    return False


#: cached copies known to be current: (cache path, sha256) -> when; ``bake``, ``append`` and
#: ``verify`` forget them when they start (:func:`forget_checked_copies`), worker processes
#: after :data:`CURRENT_FOR` seconds
_CURRENT: dict[tuple[str, str], float] = {}
CURRENT_FOR = 600.0


def forget_checked_copies() -> None:
    """Ask the servers again before reusing cached copies (called as a build starts)."""
    _CURRENT.clear()


def _fetch_local(url: str, safe_url: str) -> LocalSource:
    """``url`` itself, when it names a local, non-empty file (checksummed, not copied)."""
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
