"""Reading a source URL: its protocol, its local path, its userinfo (``user:password@``), and
the mirror it is read from (:func:`map_url`, ``ARCOFORGE_URL_MAP``).

Pure string work, no I/O: the other fetch modules decide with these what is local, which
transport to use, where a secret may hide and where the bytes come from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import urlsplit
from urllib.request import url2pathname

from arcoforge.errors import ConfigError

#: protocols whose URLs name a file on this machine
_LOCAL_PROTOCOLS = {"", "file", "local"}
#: object stores whose URL user name is an access key id: never printed either
_KEY_ID_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


def _protocol(url: str) -> str:
    """The URL's protocol, lower-case: ``""`` for a local path (or a Windows drive), the first
    protocol of an fsspec chained URL (``simplecache::s3://...``)."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if len(scheme) == 1:  # Windows drive letter
        return ""
    # fsspec chained URLs ("simplecache::s3://...") are remote
    if "::" in url and not scheme:
        return url.split("::", 1)[0]
    return scheme


def _local_path(url: str) -> str:
    """The file system path of a local URL (``file://``, ``local://``, a path, ``~/...``)."""
    if _protocol(url) in ("file", "local"):
        parts = urlsplit(url)
        return url2pathname(parts.path)
    return os.path.expanduser(url)


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


# -- mirrors: ARCOFORGE_URL_MAP ----------------------------------------------------------------

#: the environment variable that maps URL prefixes to mirrors (see :func:`map_url`)
URL_MAP_ENV = "ARCOFORGE_URL_MAP"


def parse_url_map(text: str, where: str = URL_MAP_ENV) -> dict[str, str]:
    """Read a URL map: a JSON object ``{"PREFIX": "REPLACEMENT", ...}``.

    Parameters
    ----------
    text:
        The JSON text, e.g. ``'{"https://www.ncei.noaa.gov/": "http://mirror.local:8080/"}'``.
        An empty or blank text is an empty map.
    where:
        What the text came from, for error messages (default: the environment variable).

    Returns
    -------
    dict
        Prefix -> replacement.

    Raises
    ------
    ConfigError
        When the text is not a JSON object of non-empty strings, naming ``where`` and showing
        the expected form.
    """
    if not text.strip():
        return {}
    example = '\'{"https://www.ncei.noaa.gov/": "http://127.0.0.1:8080/"}\''
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON ({err.msg} at character {err.pos}); "
                          f"give a JSON object of URL prefix -> mirror, e.g. "
                          f"{where}={example}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object of URL prefix -> mirror, not a "
                          f"{type(value).__name__}; e.g. {where}={example}")
    out: dict[str, str] = {}
    for prefix, target in value.items():
        if not prefix or not isinstance(target, str) or not target:
            raise ConfigError(f"{where}: the entry {prefix!r}: {target!r} is not a non-empty "
                              f"URL prefix mapped to a non-empty URL or path; e.g. "
                              f"{where}={example}")
        out[prefix] = target
    return out


def url_map_from_env() -> dict[str, str]:
    """The URL map in ``$ARCOFORGE_URL_MAP`` (empty when the variable is unset); see
    :func:`map_url`.  Read at each call, so a change of the environment takes effect at once."""
    return parse_url_map(os.environ.get(URL_MAP_ENV, ""))


def map_url(url: str, url_map: Mapping[str, str] | None = None) -> str:
    """Where to read ``url`` from: the URL with its prefix replaced by a mirror.

    A URL map lets recipes that name their sources by absolute URLs
    (``https://www.ncei.noaa.gov/...``) run unchanged against a mirror -- an institutional
    copy of an archive, a local directory, an S3 bucket, or a loopback server in tests.  The
    longest prefix of ``url`` found in the map is replaced; a URL that matches no prefix is
    returned as it is.  The recipe, its pattern hashes and the provenance of the built store
    keep the recipe's URL; only the bytes come from the mirror.

    Parameters
    ----------
    url:
        A source URL, as the recipe's format function built it.
    url_map:
        Prefix -> replacement; default: the JSON object in the environment variable
        ``ARCOFORGE_URL_MAP``, e.g.
        ``ARCOFORGE_URL_MAP='{"https://www.ncei.noaa.gov/data/": "/mnt/mirror/ncei/"}'``.

    Returns
    -------
    str
        The URL to fetch.

    Raises
    ------
    ConfigError
        When ``ARCOFORGE_URL_MAP`` is malformed (see :func:`parse_url_map`).

    Examples
    --------
    >>> map_url("https://www.ncei.noaa.gov/data/oisst/a.nc",
    ...         {"https://www.ncei.noaa.gov/": "http://127.0.0.1:8080/"})
    'http://127.0.0.1:8080/data/oisst/a.nc'
    """
    mapping = url_map_from_env() if url_map is None else url_map
    best = ""
    for prefix in mapping:
        if url.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return url
    return mapping[best] + url[len(best):]
