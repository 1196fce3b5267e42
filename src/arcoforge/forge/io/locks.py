"""Concurrency limits of this process: one semaphore per server (:func:`host_semaphore`) bounds
the requests sent to it at a time, one lock per cache file makes two threads that want the
same URL download it once."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from arcoforge.forge.io.log import logger

_lock = threading.Lock()
_host_semaphores: dict[tuple[str, str, int | None], tuple[int, threading.BoundedSemaphore]] = {}
_url_locks: dict[str, threading.Lock] = {}


def host_semaphore(url: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore that bounds concurrent requests to ``url``'s host."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    key = (parts.scheme.lower(), (parts.hostname or "").lower(), port)
    limit = max(1, int(limit))
    with _lock:
        entry = _host_semaphores.get(key)
        if entry is None or entry[0] != limit:
            if entry is not None:
                logger.debug("per-host limit for %s changed from %d to %d", key, entry[0], limit)
            entry = (limit, threading.BoundedSemaphore(limit))
            _host_semaphores[key] = entry
        return entry[1]


def _url_lock(key: str) -> threading.Lock:
    """The process-wide lock of one cache file (``key``: its absolute path)."""
    with _lock:
        lock = _url_locks.get(key)
        if lock is None:
            lock = _url_locks[key] = threading.Lock()
        return lock
