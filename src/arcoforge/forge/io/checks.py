"""Whether a downloaded (or cached) file is the data it claims to be, before it is trusted:
not empty, not an HTML login page, not shorter than its own NetCDF3/HDF5 header says, and its
sha256 (:func:`checksum`)."""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import urlsplit

from arcoforge.errors import SourceError, TruncatedFileError
from arcoforge.forge.io.outcomes import _Truncated


def checksum(path: str) -> str:
    """Return the sha256 hex digest of a local file, read in a streaming way."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_structure(tmp: str, safe_url: str, size: int) -> None:
    """Raise :class:`_Truncated` when ``tmp`` is shorter than its own header says."""
    from arcoforge.forge.io.integrity import check_complete

    try:
        check_complete(tmp, safe_url)
    except TruncatedFileError as short:
        text = str(short)
        expected = getattr(short, "expected", None)
        if not isinstance(expected, int):
            m = re.search(r"should hold ([\d,]+) bytes", text)
            expected = int(m.group(1).replace(",", "")) if m else None
        detail = "" if expected is not None else " (it ends inside its own header)"
        raise _Truncated(size, expected, detail) from None


def _check_content(tmp: str, url: str, safe_url: str, size: int) -> None:
    """Raise :class:`SourceError` when a complete download is empty or an HTML page."""
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
