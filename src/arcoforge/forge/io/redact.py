"""Keeping secrets out of what leaves the fetch modules: URLs, error text and log lines.

:func:`redact` strips a URL's userinfo and every query value whose name is not known to be
harmless (:data:`SAFE_QUERY_PARAMS`); the registry of secret values read in this process
(:func:`_remember_secrets`) lets :func:`_scrub_known` and the log filter that
:func:`redact_log_handlers` installs remove them from any text.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, unquote_plus, urlsplit

from arcoforge.forge.io.urls import _split_userinfo

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

#: secret values read in this process (credentials from the environment, secrets written into
#: source URLs): :func:`redact_log_handlers`' filter removes them from every log line it sees
_KNOWN_SECRETS: set[str] = set()
_secrets_lock = threading.Lock()


def _is_secret_param(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a query parameter's value must be hidden entirely (not only digested)."""
    low = name.lower()
    if low in SECRET_QUERY_PARAMS or low in _AUTH_QUERY_PARAMS:
        return True
    if any(low == e.lower() for e in extra):
        return True
    return bool(_SECRET_PARAM_PATTERN.search(low))


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


def _scrub_known(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
            quoted = quote(secret, safe="")
            if quoted != secret:
                text = text.replace(quoted, "***")
    return text


def _remember_secrets(secrets: Iterable[str]) -> None:
    """Add secret values to the process-wide registry that the log filter scrubs."""
    with _secrets_lock:
        _KNOWN_SECRETS.update(s for s in secrets if s and len(s) >= 4)


def _remember_auth_query_param(name: str) -> None:
    """Treat the values of query parameter ``name`` as secrets from now on (Auth.query)."""
    with _secrets_lock:
        _AUTH_QUERY_PARAMS.add(name.lower())


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
        with _secrets_lock:
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
