"""The local download cache: file names (:func:`cache_name`), ``.part`` files and the cleaning of
those that killed downloads left (:func:`clean_stale_parts`), JSON sidecars, and the reuse of a
cached copy only when its size, sha256 and structure still match."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from arcoforge.forge.io.checks import _check_structure, checksum
from arcoforge.forge.io.log import logger
from arcoforge.forge.io.options import LocalSource
from arcoforge.forge.io.outcomes import _Truncated

#: a download's temporary file: ``<target>.<host tag>-<pid>.<thread>.<random>.part`` (older
#: versions wrote ``<target>.<pid>.<thread>.<random>.part`` and ``<target>.<pid>.<random>.part``)
_PART_NAME = re.compile(
    r"\.(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)\.(?:\d+\.)?[0-9a-f]{8}\.(?:part|tmp)$"
)
#: a ``.part`` file that has not grown for this long belongs to a download that was killed
#: (a live one writes every few seconds: ``min_rate`` and ``timeout`` end it otherwise)
STALE_PART_SECONDS = 600.0
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

_lock = threading.Lock()
_cleaned: dict[str, float] = {}  # cache dir -> monotonic time of its last cleaning
_default_workdir: str | None = None


def _fallback_workdir() -> str:
    """The cache directory when neither SourceOptions.cache nor a work directory is given:
    a temporary directory shared by this process."""
    global _default_workdir
    with _lock:
        if _default_workdir is None:
            _default_workdir = tempfile.mkdtemp(prefix="arcoforge-sources-")
        return _default_workdir


def cache_name(url: str) -> str:
    """The cache file name for ``url``: sha256 of the URL plus a sanitized basename."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    base = os.path.basename(unquote(urlsplit(url).path.rstrip("/"))) or "source"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-96:].lstrip(".") or "source"
    return f"{digest}-{base}"


def _part_path(target: str) -> str:
    """A fresh temporary name next to ``target``, unique to this host, process and thread."""
    return (f"{target}.{_HOST_TAG}-{os.getpid()}.{threading.get_ident()}."
            f"{uuid.uuid4().hex[:8]}.part")


def _discard_part(path: str) -> None:
    """Remove a download's temporary file, when it is there (``os.remove`` of a missing file on a
    read-only file system fails with EROFS, not ENOENT: look first)."""
    if os.path.exists(path):
        os.remove(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


def clean_stale_parts(directory: str, *, force: bool = False) -> list[str]:
    """Remove the ``.part`` (and sidecar ``.tmp``) files that killed downloads left in the cache
    ``directory``; return the paths removed.

    A file is stale when the process that wrote it is gone (same host, pid no longer running),
    or when it belongs to another process and has not changed for :data:`STALE_PART_SECONDS`
    (another host sharing the cache, or an old name without a host).  This process's own files
    are never touched.  Runs at most once every few minutes per directory unless ``force``.
    """
    now = time.monotonic()
    key = os.path.abspath(directory)
    with _lock:
        last = _cleaned.get(key)
        if not force and last is not None and now - last < STALE_PART_SECONDS / 4:
            return []
        _cleaned[key] = now
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    wall = time.time()
    for entry in entries:
        match = _PART_NAME.search(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid, host = int(match["pid"]), match["host"]
        if pid == os.getpid() and host in (None, _HOST_TAG):
            continue
        try:
            age = wall - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = host == _HOST_TAG and not _pid_alive(pid)
        if dead or age > STALE_PART_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
                removed.append(entry.path)
                logger.info("removed %s, left by a download that was killed (%s)", entry.path,
                            "its process is gone" if dead else f"unchanged for {age:.0f} s")
    return removed


def _sidecar_path(target: str) -> str:
    """The JSON sidecar of a cached file (its redacted URL, size, sha256, ETag, ...)."""
    return target + ".json"


def _read_sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary name (never half-written)."""
    tmp = f"{path}.{_HOST_TAG}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _reuse_local(target: str, safe_url: str) -> LocalSource | None:
    """The cached copy at ``target`` when its sidecar, size, sha256 and structure agree;
    ``None`` (and a warning when a copy is there but unusable) otherwise."""
    meta = _read_sidecar(_sidecar_path(target))
    if meta is None or not os.path.isfile(target):
        return None
    try:
        size = os.path.getsize(target)
        if size != meta.get("size"):
            logger.warning("cached copy of %s has the wrong size; downloading again", safe_url)
            return None
        digest = checksum(target)
    except OSError:
        return None
    if digest != meta.get("sha256"):
        logger.warning("cached copy of %s is corrupted (sha256 mismatch); downloading again",
                       safe_url)
        return None
    try:  # a copy cached before downloads were checked may be cut short, checksum and all
        _check_structure(target, safe_url, size)
    except _Truncated as short:
        logger.warning("cached copy of %s is unusable (%s); downloading again", safe_url,
                       short.problem)
        for stale in (target, _sidecar_path(target)):
            with contextlib.suppress(OSError):
                os.remove(stale)
        return None
    logger.debug("reusing cached %s -> %s", safe_url, target)
    return LocalSource(url=safe_url, path=target, size=size, sha256=digest)
