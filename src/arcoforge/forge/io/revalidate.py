"""Is a cached copy still what the server holds?  One metadata request (HTTP ``HEAD``, or the
file system's ``info`` for FTP, S3, ...) compared with the validators the cache's sidecar kept
when the copy was downloaded: ``ETag``, ``Last-Modified`` and size.

A server that reprocesses a file in place (a new algorithm version under the same name) changes
these; reusing the old copy would build, and verify, a store of data the archive no longer
serves.  When the server cannot be asked (no answer, ``HEAD`` refused) or gives no validators,
the copy is reused and the reason logged: the cache is also how builds run offline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from arcoforge.forge.io.credentials import _Credentials
from arcoforge.forge.io.log import logger
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.io.urls import _protocol

__all__ = ["server_validators", "changed_since"]


def server_validators(url: str, options: SourceOptions, creds: _Credentials
                      ) -> dict[str, Any] | None:
    """``{"etag", "last_modified", "size"}`` of ``url`` on its server now (values may be None),
    or None when the server cannot be asked."""
    try:
        if _protocol(url) in ("http", "https"):
            return _http_validators(url, options, creds)
        return _fsspec_validators(url, options, creds)
    except Exception as err:  # noqa: BLE001 - any failure means "cannot tell"
        _cannot_ask(url, creds, f"{type(err).__name__}: {creds.scrub(str(err))}")
        return None


#: hosts already warned about (one warning per host and process)
_WARNED: set[str] = set()


def _cannot_ask(url: str, creds: _Credentials, why: str) -> None:
    """Say (once per host as a warning, then in the debug log) that cached copies from this
    server are reused without knowing whether they are current."""
    from urllib.parse import urlsplit

    host = urlsplit(url).netloc.rpartition("@")[2]
    message = ("cannot ask %s whether cached copies are current (%s): they are reused as they "
               "are; SourceOptions(revalidate=False) skips the question")
    if host in _WARNED:
        logger.debug(message, creds.scrub(url), why)
    else:
        _WARNED.add(host)
        logger.warning(message, creds.scrub(url), why)


def changed_since(kept: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """Why the server's copy differs from the one the sidecar ``kept`` describes (None: it does
    not, as far as the validators tell)."""
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        if kept.get(key) and now.get(key) and str(kept[key]) != str(now[key]):
            return f"its {label} changed ({kept[key]} -> {now[key]})"
    size = now.get("size")
    if isinstance(size, int) and isinstance(kept.get("size"), int) and size != kept["size"]:
        return f"its size changed ({kept['size']:,} -> {size:,} bytes)"
    return None


def _http_validators(url: str, options: SourceOptions, creds: _Credentials
                     ) -> dict[str, Any] | None:
    from arcoforge.forge.io.transport_http import _request, _session

    request_url, headers, auth, kwargs = _request(url, options, creds)
    timeout = min(options.timeout, 30.0)
    resp = _session().head(request_url, headers=headers, auth=auth, allow_redirects=True,
                           timeout=(timeout, timeout), **kwargs)
    with contextlib.closing(resp):
        if not 200 <= resp.status_code < 300:
            _cannot_ask(url, creds, f"HEAD answered HTTP {resp.status_code}")
            return None
        length = resp.headers.get("Content-Length")
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        return {
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
            "size": int(length) if length and length.isdigit() and encoding == "identity"
            else None,
        }


def _fsspec_validators(url: str, options: SourceOptions, creds: _Credentials
                       ) -> dict[str, Any] | None:
    import fsspec  # type: ignore[import-untyped]

    from arcoforge.forge.io.transport_fsspec import _fsspec_kwargs, hang_up, validators

    fs, path = fsspec.core.url_to_fs(url, **_fsspec_kwargs(url, options, creds))
    try:
        info = fs.info(path)
    finally:
        hang_up(fs)
    etag, modified = validators(info)
    size = info.get("size")
    return {"etag": etag, "last_modified": modified,
            "size": size if isinstance(size, int) else None}
