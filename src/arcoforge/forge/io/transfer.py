"""Download one URL into the cache: attempts by the right transport, retries with back-off and
jitter within the guard's deadline, checks before the file is renamed into place, its sidecar.

The one place where an attempt's outcome (:mod:`arcoforge.forge.io.outcomes`) becomes a
:class:`arcoforge.errors.SourceError`, scrubbed of this fetch's secrets.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable

from arcoforge.errors import SourceError
from arcoforge.forge.io.cache import _discard_part, _part_path, _sidecar_path, _write_json_atomic
from arcoforge.forge.io.checks import _check_content, _check_structure
from arcoforge.forge.io.credentials import _Credentials
from arcoforge.forge.io.limits import _Guard
from arcoforge.forge.io.locks import host_semaphore
from arcoforge.forge.io.log import logger
from arcoforge.forge.io.options import LocalSource, SourceOptions
from arcoforge.forge.io.outcomes import _Downloaded, _Fatal, _Transient, _Truncated
from arcoforge.forge.io.redact import redact_log_handlers
from arcoforge.forge.io.transport_fsspec import _classify_fsspec_error, _fsspec_attempt
from arcoforge.forge.io.transport_http import _classify_http_error, _http_attempt
from arcoforge.forge.io.urls import _protocol


def _download(
    url: str, safe_url: str, target: str, options: SourceOptions, creds: _Credentials
) -> LocalSource:
    """Download ``url`` to the cache file ``target`` (and its sidecar), or raise SourceError."""
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
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    failure = guard.write_error(exc, tmp)  # a library wrote the file itself
                    break
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
        if failure is not None:
            _discard_part(tmp)
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
        _discard_part(tmp)
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
