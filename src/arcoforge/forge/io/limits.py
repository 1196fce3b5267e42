"""Every download ends and fits: :class:`_Guard` bounds one URL's fetch (overall deadline,
minimum rate, size cap, free space of the cache directory) and :class:`_PartFile` is the
``.part`` file a download streams into, turning each local write error into a precise one."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import time
from typing import Any

from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.io.outcomes import _Fatal, _Transient

#: the automatic deadline: a base plus the declared size at a slow but honest rate
_DEADLINE_BASE = 600.0
_DEADLINE_RATE = 128 * 1024.0
_DEADLINE_UNKNOWN_SIZE = 7200.0

_RAISE_MAX_BYTES = "Check the URL; if the file really is that large, raise SourceOptions.max_bytes"
_LARGER_DISK = ("Free space there, or point SourceOptions.cache (or the work directory) at a "
                "larger disk")


def _fmt_bytes(n: float) -> str:
    """``n`` bytes for people: ``"512 bytes"``, ``"1.5 MiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PiB"  # pragma: no cover - the loop returns


def _auto_deadline(size: int | None) -> float:
    """The deadline (s) for a source of ``size`` bytes when SourceOptions.deadline is None."""
    if size is None:
        return _DEADLINE_UNKNOWN_SIZE
    return _DEADLINE_BASE + size / _DEADLINE_RATE


class _Guard:
    """Bounds one URL's download, all attempts together: the deadline, the minimum rate, the
    size cap and the free space of the cache directory.  ``update`` is called as bytes arrive."""

    def __init__(self, safe_url: str, target: str, options: SourceOptions):
        self.safe_url, self.target, self.options = safe_url, target, options
        self.cache_dir = os.path.dirname(os.path.abspath(target))
        self.started: float | None = None
        self.limit = math.inf
        self.expected: int | None = None
        self.received = 0
        self._window_start = 0.0
        self._window_bytes = 0

    # -- time

    def _deadline_value(self) -> float:
        d = self.options.deadline
        return _auto_deadline(self.expected) if d is None else float(d)

    def start_attempt(self) -> None:
        """Start (the clock on the first call and) a new attempt: counters back to zero."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
            self.limit = now + self._deadline_value()
        self.check_deadline()
        self.received, self.expected = 0, None
        self._window_start, self._window_bytes = now, 0

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.limit - time.monotonic()

    def read_timeout(self) -> float:
        """The socket timeout for this attempt: ``timeout``, or less when the deadline is near."""
        return max(0.05, min(self.options.timeout, self.remaining()))

    def deadline_error(self, last_problem: str = "") -> _Fatal:
        """The error for a fetch that ran out of time (naming the last problem seen)."""
        elapsed = time.monotonic() - (self.started or time.monotonic())
        size = f"of {self.expected:,} " if self.expected is not None else ""
        d = self.options.deadline
        which = (f"SourceOptions.deadline={d:g} s" if d is not None
                 else f"the automatic deadline of {self._deadline_value():.0f} s")
        problem = (f"gave up after {elapsed:.1f} s ({which}): received {self.received:,} "
                   f"bytes {size}so far")
        if last_problem:
            problem += f"; last problem: {last_problem}"
        return _Fatal(problem, "The server is too slow or keeps failing; try again later, or "
                      "raise SourceOptions.deadline (math.inf: no deadline)", reason="transient")

    def check_deadline(self) -> None:
        """Raise :meth:`deadline_error` when the deadline has passed."""
        if time.monotonic() > self.limit:
            raise self.deadline_error()

    # -- sizes

    def expect(self, size: int | None) -> None:
        """The size the server declared (``None``: not declared); checked before any byte."""
        self.expected = size
        if self.started is not None and self.options.deadline is None:
            self.limit = self.started + self._deadline_value()
        if size is None:
            return
        cap = self.options.max_bytes
        if cap is not None and size > cap:
            raise _Fatal(
                f"the source is {_fmt_bytes(size)} ({size:,} bytes), more than "
                f"SourceOptions.max_bytes={cap:,}",
                _RAISE_MAX_BYTES,
                reason="too_large",
            )
        try:
            free = shutil.disk_usage(self.cache_dir).free
        except OSError:
            return
        if size > free:
            raise _Fatal(
                f"the source is {_fmt_bytes(size)} ({size:,} bytes) but the cache directory "
                f"{self.cache_dir} has only {_fmt_bytes(free)} free",
                f"{_LARGER_DISK}; if the size is wrong, check the URL",
                reason="no_space",
            )

    def update(self, n: int) -> None:
        """Count ``n`` more bytes received; raise when a limit is passed."""
        self.received += n
        cap = self.options.max_bytes
        if cap is not None and self.received > cap:
            declared = ("the server declared no size" if self.expected is None
                        else f"the server declared {self.expected:,}")
            so_far = " so far" if self.expected is None else ""
            raise _Fatal(
                f"the download passed SourceOptions.max_bytes={cap:,} (received "
                f"{self.received:,} bytes{so_far}, {declared})",
                _RAISE_MAX_BYTES,
                reason="too_large",
            )
        now = time.monotonic()
        if now > self.limit:
            raise self.deadline_error()
        window = now - self._window_start
        if self.options.min_rate > 0 and window >= self.options.rate_window:
            rate = (self.received - self._window_bytes) / window
            if rate < self.options.min_rate:
                raise _Transient(
                    f"too slow: {rate:,.0f} bytes/s over the last {window:.1f} s, below "
                    f"SourceOptions.min_rate={self.options.min_rate:g} (received "
                    f"{self.received:,} bytes so far)",
                    hint="The server trickles; try again later, or lower SourceOptions.min_rate "
                    "(0: no minimum) or lengthen SourceOptions.rate_window",
                )
            self._window_start, self._window_bytes = now, self.received

    # -- local writes

    def write_error(self, exc: OSError, path: str) -> _Fatal:
        """A precise error for a failed local write (a full disk names the cache directory)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
            return _Fatal(
                f"{what} in the cache directory {self.cache_dir} while writing {self.target} "
                f"({self.received:,} bytes received so far)",
                _LARGER_DISK,
                reason="no_space",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _Fatal(
                f"cannot write into the cache directory {self.cache_dir} "
                f"({exc.strerror or type(exc).__name__})",
                "Check its permissions, or point SourceOptions.cache (or the work directory) "
                "at a writable directory",
                reason="config",
            )
        return _Fatal(f"could not write {path} ({type(exc).__name__}: {exc.strerror or exc})",
                      reason="io")


class _PartFile:
    """The ``.part`` file a download streams into: every local write error becomes a precise
    :class:`_Fatal`, and every write is counted by the guard (deadline, rate, size cap)."""

    def __init__(self, path: str, guard: _Guard, count: bool = True):
        self.path, self.guard, self.count = path, guard, count
        try:
            self._f = open(path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        except OSError as exc:
            raise guard.write_error(exc, path) from None

    def write(self, data: bytes) -> int:
        """Write ``data``, count it against the guard's limits; return its length."""
        try:
            self._f.write(data)
        except OSError as exc:
            raise self.guard.write_error(exc, self.path) from None
        if self.count:
            self.guard.update(len(data))
        return len(data)

    # fsspec's get_file takes any object with read/tell/close as its local file
    def read(self, *_: Any) -> bytes:  # pragma: no cover - never read
        """Refused: a part file is write-only (fsspec only checks that it exists)."""
        raise OSError(errno.EBADF, "a download's part file is write-only")

    def tell(self) -> int:
        """The number of bytes written so far."""
        return self._f.tell()

    def close(self) -> None:
        """Close the file; a failed flush (a full disk) becomes a precise error."""
        if self._f.closed:
            return
        try:
            self._f.close()  # flushing may be where the disk turns out to be full
        except OSError as exc:
            raise self.guard.write_error(exc, self.path) from None

    def __enter__(self) -> _PartFile:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self._f.close()
