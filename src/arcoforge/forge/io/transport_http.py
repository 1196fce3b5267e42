"""One download attempt over HTTP(S) with :mod:`requests` (streaming, credentials, status
codes), and the classification of what it raises into retry-worthy or final."""

from __future__ import annotations

import hashlib
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from arcoforge.forge.io.credentials import _Credentials
from arcoforge.forge.io.limits import _Guard, _PartFile
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.io.outcomes import _Downloaded, _Fatal, _Transient
from arcoforge.forge.io.redact import redact

_CHUNK = 1 << 20  # bytes per streamed read

_thread_local = threading.local()


def _session() -> requests.Session:
    """This thread's :class:`requests.Session` (connections are reused within a thread)."""
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


def _request(url: str, options: SourceOptions, creds: _Credentials
             ) -> tuple[str, dict[str, str], tuple[str, str] | None, dict[str, Any]]:
    """``(url, headers, auth, requests keywords)`` of a request for ``url`` with the
    credentials and ``SourceOptions.storage_options`` (``headers``, ``verify``)."""
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
    kwargs: dict[str, Any] = {"verify": so["verify"]} if "verify" in so else {}
    return request_url, headers, auth, kwargs


def _http_attempt(
    url: str, tmp: str, options: SourceOptions, creds: _Credentials, guard: _Guard
) -> _Downloaded:
    """GET ``url`` into ``tmp``; raise :class:`_Fatal` / :class:`_Transient` for bad answers."""
    request_url, headers, auth, kwargs = _request(url, options, creds)
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
    """What an exception out of :func:`_http_attempt` means: final, or worth a retry."""
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
