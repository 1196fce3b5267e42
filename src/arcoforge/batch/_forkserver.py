"""The warm forkserver of DataLoader workers (standard library only: no torch import here).

torch DataLoader workers start with ``forkserver`` (forking a process that already runs dask,
zarr or Icechunk threads can deadlock). By default every worker then imports torch, xarray
and zarr again: seconds per worker before its first batch. :func:`start` sets the server to
preload :data:`PRELOAD` (``arcoforge.batch._warm`` imports them, and only what a worker needs
for its first batch: no dask, no numba) and starts it at once, so it imports them while this
process goes on (e.g. while it imports torch itself); workers are then forks of a warm process.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

__all__ = ["PRELOAD", "start"]

#: modules the forkserver imports once, so that the workers (its forks) need not
PRELOAD = ("__main__", "arcoforge.batch._warm")


def start() -> BaseContext:
    """The forkserver context, set to preload :data:`PRELOAD`, its server started now.

    The server is not started here when that would re-run unguarded top-level code of the main
    script (the server imports ``__main__``) or from a worker re-running it; the DataLoader then
    starts it as usual on iteration, under the guard, or :mod:`arcoforge._guard` explains.
    A server already running is left as it is.
    """
    from multiprocessing import forkserver

    from arcoforge._guard import in_main_reimport, unguarded_main_statement

    ctx = multiprocessing.get_context("forkserver")
    server = forkserver._forkserver  # noqa: SLF001 - no public "is it running" query
    if getattr(server, "_forkserver_pid", None) is None:
        ctx.set_forkserver_preload(list(PRELOAD))  # type: ignore[attr-defined]
        if not in_main_reimport() and unguarded_main_statement() is None:
            forkserver.ensure_running()
    return ctx
