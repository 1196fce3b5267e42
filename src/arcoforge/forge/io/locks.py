"""Concurrency limits of this process: one semaphore per server (:func:`host_semaphore`) bounds
the requests sent to it at a time, one lock per cache file makes two threads that want the
same URL download it once."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from arcoforge.forge.io.log import logger

_lock = threading.Lock()
_host_semaphores: dict[tuple[str, str, int | None], tuple[int, threading.BoundedSemaphore]] = {}
_url_locks: dict[str, threading.Lock] = {}


def host_semaphore(url: str, limit: int) -> Any:
    """The semaphore that bounds concurrent requests to ``url``'s host: process-wide, or, in a
    Dask worker, cluster-wide (a ``distributed.Semaphore`` named after the host, shared by
    every worker of the cluster), so ``max_concurrency_per_host`` holds for a whole build."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    key = (parts.scheme.lower(), (parts.hostname or "").lower(), port)
    limit = max(1, int(limit))
    shared = _cluster_semaphore(key, limit)
    if shared is not None:
        return shared
    with _lock:
        entry = _host_semaphores.get(key)
        if entry is None or entry[0] != limit:
            if entry is not None:
                logger.debug("per-host limit for %s changed from %d to %d", key, entry[0], limit)
            entry = (limit, threading.BoundedSemaphore(limit))
            _host_semaphores[key] = entry
        return entry[1]


_cluster_semaphores: dict[tuple[Any, ...], Any] = {}


def _cluster_semaphore(key: tuple[str, str, int | None], limit: int) -> Any:
    """The cluster's semaphore of this host when this code runs in a Dask worker, else None."""
    import sys

    if "distributed" not in sys.modules:  # never imports Dask for a plain build
        return None
    try:
        from distributed import Semaphore, get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not in a worker
        return None
    ident = (worker.scheduler.address, *key, limit)
    with _lock:
        sem = _cluster_semaphores.get(ident)
        if sem is None:
            scheme, host, port = key
            sem = Semaphore(max_leases=limit, name=f"arcoforge-host-{scheme}://{host}:{port}"
                                                   f"-{limit}")
            _cluster_semaphores[ident] = sem
        return sem


def _url_lock(key: str) -> threading.Lock:
    """The process-wide lock of one cache file (``key``: its absolute path)."""
    with _lock:
        lock = _url_locks.get(key)
        if lock is None:
            lock = _url_locks[key] = threading.Lock()
        return lock
