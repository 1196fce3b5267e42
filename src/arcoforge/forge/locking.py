"""One build at a time per target: a lock file next to the target.

``<target>.arcoforge-lock`` is created atomically (exclusive create: ``O_EXCL`` on a local disk,
``If-None-Match`` on object stores that support it) and holds who took it: pid, host, start time
and a random token.  A second build fails fast with a :class:`BuildLockedError` naming the holder,
or waits (``wait=True``, optional ``timeout``).  A lock whose holder is a dead process on this
host is stale and taken over.  Only the holder's token releases it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec  # type: ignore[import-untyped]

from arcoforge.errors import BuildLockedError
from arcoforge.forge.targets.base import LOCK_SUFFIX, resolve_target

__all__ = ["BuildLock", "BuildLockedError", "lock_url", "build_lock", "LOCK_SUFFIX"]

log = logging.getLogger("arcoforge.forge.locking")


def lock_url(target: Any, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Where the lock of ``target`` (anything :func:`~arcoforge.forge.targets.base.
    resolve_target` takes) lives; None for targets without a location, such as an Icechunk
    ``Repository`` object on an object store."""
    where = resolve_target(target, storage_options).lock_location()
    return where[0] if where else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """An exclusive lock on a target; a context manager.

    Parameters
    ----------
    url:
        The lock file's URL or path (see :func:`lock_url`).
    wait:
        Wait for the holder to finish instead of failing at once.
    timeout:
        With ``wait``, give up after this many seconds (None: wait forever).
    poll:
        Seconds between attempts while waiting.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 wait: bool = False, timeout: float | None = None, poll: float = 0.5,
                 purpose: str = "build") -> None:
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.wait = wait
        self.timeout = timeout
        self.poll = poll
        self.purpose = purpose
        self.token = uuid.uuid4().hex
        self.held = False

    @property
    def _local(self) -> bool:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return "file" in protocol or "local" in protocol

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "purpose": self.purpose, "token": self.token}

    def _try_create(self) -> bool:
        data = json.dumps(self._record()).encode()
        if self._local:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        try:
            with self.fs.open(self.path, "xb") as fh:
                fh.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no exclusive create: best effort
            if self.fs.exists(self.path):
                return False
            with self.fs.open(self.path, "wb") as fh:
                fh.write(data)
            return True

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (None when free)."""
        try:
            with self.fs.open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        try:
            return dict(json.loads(raw or b"{}"))
        except ValueError:
            return {"token": None, "unreadable": raw[:200].decode(errors="replace")}

    def _is_stale(self, holder: Mapping[str, Any]) -> bool:
        pid = holder.get("pid")
        return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                and not _pid_alive(pid))

    def _take_over(self, holder: Mapping[str, Any]) -> None:
        """Remove a stale lock, making sure it is still the same stale lock."""
        log.warning("taking over the stale lock %s of dead process %s on %s (started %s)",
                    self.url, holder.get("pid"), holder.get("host"), holder.get("started"))
        if self._local:
            moved = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.path, moved)
            except FileNotFoundError:
                return
            try:
                with open(moved, "rb") as fh:
                    now = json.loads(fh.read() or b"{}")
            except ValueError:
                now = {}
            if now.get("token") != holder.get("token"):  # raced: someone else's fresh lock
                with contextlib.suppress(OSError):
                    os.link(moved, self.path)
            with contextlib.suppress(OSError):
                os.remove(moved)
        else:
            current = self.holder()
            if current is not None and current.get("token") == holder.get("token"):
                self.fs.rm(self.path)

    @staticmethod
    def describe(holder: Mapping[str, Any]) -> str:
        return (f"pid {holder.get('pid')} on host {holder.get('host')}, "
                f"{holder.get('purpose', 'build')} started {holder.get('started')}")

    def acquire(self) -> BuildLock:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if self._try_create():
                self.held = True
                return self
            holder = self.holder()
            if holder is None:
                continue  # released meanwhile
            if self._is_stale(holder):
                self._take_over(holder)
                continue
            if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                waited = " after waiting" if self.wait else ""
                raise BuildLockedError(
                    f"{self.url} is locked{waited} by another arcoforge build "
                    f"({self.describe(holder)}). Wait for it to finish (wait=True), or, if that "
                    f"process is gone, delete {self.url}."
                )
            time.sleep(self.poll)

    def release(self) -> None:
        if not self.held:
            return
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)
        self.held = False

    def __enter__(self) -> BuildLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def build_lock(target: Any, storage_options: Mapping[str, Any] | None = None, *,
               wait: bool = False, timeout: float | None = None,
               purpose: str = "build") -> Iterator[BuildLock | None]:
    """Hold ``target``'s build lock (at its
    :meth:`~arcoforge.forge.targets.base.Target.lock_location`) for the ``with`` block; a
    no-op for targets without a location."""
    where = resolve_target(target, storage_options).lock_location()
    if where is None:
        yield None
        return
    url, so = where
    with BuildLock(url, so, wait=wait, timeout=timeout, purpose=purpose) as lock:
        yield lock
