"""Background loading: an ordered, bounded, thread-pool map with clean shutdown.

``Prefetcher(fn, items, workers=2, depth=4)`` applies ``fn`` to ``items`` on background threads
and yields the results in input order while at most ``depth`` results are pending or buffered
(memory stays bounded). Reading and decompression run while the consumer trains; codecs and
numpy release the GIL, so ``workers > 1`` decodes on several cores. Exceptions in ``fn`` are
re-raised in the consumer. ``close()`` (or leaving a ``with`` block, or abandoning the
iterator) cancels what has not started and joins the threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from arcoforge.errors import ConfigError

__all__ = ["Prefetcher"]



class Prefetcher[T, R]:
    """Ordered, bounded background map (see module docstring)."""

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2,
                 depth: int | None = None) -> None:
        if workers < 1:
            raise ConfigError("workers must be >= 1")
        self._fn = fn
        self._items = iter(items)
        self.depth = max(1, depth if depth is not None else 2 * workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arcoforge-pf")
        self._pending: deque[Future[R]] = deque()
        self._closed = False
        self._lock = threading.Lock()

    def _fill(self) -> None:
        while not self._closed and len(self._pending) < self.depth:
            try:
                item = next(self._items)
            except StopIteration:
                return
            self._pending.append(self._pool.submit(self._fn, item))

    def __iter__(self) -> Iterator[R]:
        try:
            self._fill()
            while self._pending:
                fut = self._pending.popleft()
                result = fut.result()
                self._fill()
                yield result
        finally:
            self.close()

    def close(self) -> None:
        """Cancel work not yet started, wait for running work, release the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
