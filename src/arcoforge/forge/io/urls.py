"""Reading a source URL: its protocol, its local path, and its userinfo (``user:password@``).

Pure string work, no I/O: the other fetch modules decide with these what is local, which
transport to use and where a secret may hide.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit
from urllib.request import url2pathname

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
