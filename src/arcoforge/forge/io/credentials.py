"""Credentials for one fetch: read the :class:`Auth`'s environment variables at call time, find
the secrets a URL carries itself, and say (without them) what was tried when a server refuses.

Every secret found is registered with :mod:`arcoforge.forge.io.redact`, so that no log line
shows it; :meth:`_Credentials.scrub` removes them (and this URL's unknown query values) from
this fetch's error text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from arcoforge.errors import SourceError
from arcoforge.forge.io.options import Auth, _config_error
from arcoforge.forge.io.redact import (
    SAFE_QUERY_PARAMS,
    _is_secret_param,
    _remember_auth_query_param,
    _remember_secrets,
    _scrub_known,
)
from arcoforge.forge.io.urls import _KEY_ID_PROTOCOLS, _protocol, _split_userinfo

_SET_AUTH = ("set SourceOptions.auth (Auth.basic / Auth.bearer / Auth.query) naming "
             "environment variables")


@dataclass
class _Credentials:
    """The credentials of one fetch, and what is known about where secrets came from."""

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
        """``text`` without this fetch's secret values."""
        return _scrub_known(text, self.secrets)

    def describe(self) -> str:
        """Which credentials were used, for an error message (names, never values)."""
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
        """What to do when the server refused these credentials."""
        if self.env_names:
            return "Check that those variables hold valid credentials for this server"
        if self.in_url or self.unknown_query:
            return f"Check them; better, keep secrets out of URLs: {_SET_AUTH}"
        return f"This server needs credentials: {_SET_AUTH}"


def _resolve_credentials(url: str, safe_url: str, auth: Auth | None) -> _Credentials:
    """The credentials for ``url``: from ``auth``'s environment variables and from the URL.

    Raises :class:`SourceError` when ``auth`` is incomplete or names a variable that is unset.
    """
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
            _remember_auth_query_param(auth.query_param or "")
    _remember_secrets(creds.secrets)
    return creds
