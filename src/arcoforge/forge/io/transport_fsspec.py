"""One download attempt through :mod:`fsspec` (FTP, S3 and every other remote protocol), with
the credentials mapped to the file system's keywords, and the classification of what it
raises into retry-worthy or final.

S3-compatible stores: the endpoint comes from ``storage_options`` (``endpoint_url`` or
``client_kwargs``) or, when neither names one, from the ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` environment variables (botocore reads them); ``anon=True`` sends
unsigned requests (public buckets) and cannot be combined with ``SourceOptions.auth``."""

from __future__ import annotations

import contextlib
import ftplib
import os
from collections.abc import Mapping
from typing import Any

from arcoforge.forge.io.checks import checksum
from arcoforge.forge.io.credentials import _Credentials
from arcoforge.forge.io.limits import _Guard, _PartFile
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.io.outcomes import _Downloaded, _Fatal, _Transient
from arcoforge.forge.io.urls import _protocol


def _fsspec_kwargs(url: str, options: SourceOptions, creds: _Credentials) -> dict[str, Any]:
    """The file system's keywords: SourceOptions.storage_options plus the credentials."""
    kwargs = dict(options.storage_options)
    protocol = _protocol(url)
    if creds.username is not None:
        if protocol in ("ftp", "sftp", "ssh", "smb", "webdav"):
            kwargs["username"], kwargs["password"] = creds.username, creds.password
        elif protocol in ("s3", "s3a"):
            if kwargs.get("anon"):
                raise _Fatal("storage_options anon=True (anonymous access) contradicts "
                             "SourceOptions.auth", "Drop one of them: anon=True for a public "
                             "bucket, Auth.basic for a private one", reason="config")
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
    """Copy ``url`` into ``tmp`` (``fresh``: without a cached file system instance)."""
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
        hang_up(fs)
    size = os.path.getsize(tmp)
    if isinstance(expected, int) and size != expected:
        raise _Transient(f"truncated transfer: received {size:,} of {expected:,} bytes")
    etag, modified = validators(info)
    return _Downloaded(size=size, sha256=checksum(tmp), etag=etag, last_modified=modified)


def validators(info: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(ETag, last modified)`` of a file system's ``info`` (what the cache's sidecar keeps
    and :mod:`arcoforge.forge.io.revalidate` compares)."""
    etag = info.get("ETag") or info.get("etag")
    modified = info.get("LastModified") or info.get("mtime") or info.get("modify")
    return (str(etag) if etag else None), (str(modified) if modified else None)


def hang_up(fs: Any) -> None:
    """Close an FTP file system's connection (they are not cached: a new one per use)."""
    connection = getattr(fs, "ftp", None)
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


def _classify_fsspec_error(exc: Exception) -> _Fatal | _Transient:
    """What an exception out of :func:`_fsspec_attempt` means: final, or worth a retry."""
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
