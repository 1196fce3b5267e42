"""The embedded default engine: a thread pool (or a process pool) on this machine."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from arcoforge.engines.progress import task_progress

__all__ = ["run"]

log = logging.getLogger("arcoforge.engines.local")

_PLAN: Any = None


def _init_worker(plan: Any) -> None:
    global _PLAN
    _PLAN = plan


def _run_in_worker(task: Any) -> Any:
    return _PLAN.run_task(task)


def run(plan: Any, progress: bool = True, workers: int | None = None, processes: bool = False,
        retries: int = 2, retry_delay: float = 1.0) -> list[Any]:
    """Run ``plan`` here.  ``processes=True`` uses a process pool (spawned workers), which
    parallelises decompression of HDF5/netCDF4 sources that a thread pool serialises."""
    workers = workers or min(8, (os.cpu_count() or 2))
    plan.prepare()
    from arcoforge.build import TaskStats

    todo: list[Any] = []
    stats: list[Any] = []
    for t in plan.tasks:
        if plan.is_done(t):
            stats.append(TaskStats(t.key, skipped=True))
        else:
            todo.append(t)
    done_before = len(stats)
    executor: Executor
    if processes and todo:
        ctx = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(plan,))
        submit = lambda t: executor.submit(_run_in_worker, t)  # noqa: E731
    else:
        executor = ThreadPoolExecutor(workers)
        submit = lambda t: executor.submit(plan.run_task, t)  # noqa: E731
    attempts = {t.key: 0 for t in todo}
    with executor, task_progress(len(plan.tasks), done_before, enabled=progress) as advance:
        pending: dict[Future[Any], Any] = {submit(t): t for t in todo}
        while pending:
            fut = next(iter(_wait_first(pending)))
            task = pending.pop(fut)
            try:
                stats.append(fut.result())
                advance(1)
            except Exception as err:
                attempts[task.key] += 1
                if attempts[task.key] > retries or not _retryable(err):
                    for f in pending:
                        f.cancel()
                    raise
                log.warning("task %s failed (%s); retrying (%d/%d)", task.key, err,
                            attempts[task.key], retries)
                time.sleep(retry_delay * attempts[task.key])
                pending[submit(task)] = task
    plan.finalize(stats)
    return stats


def _wait_first(pending: dict[Future[Any], Any]) -> set[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return done


def _retryable(err: BaseException) -> bool:
    from arcoforge.readers import SourceReadError
    from arcoforge.schema import SchemaError

    return not isinstance(err, (SchemaError, SourceReadError, ValueError, KeyError, TypeError))
