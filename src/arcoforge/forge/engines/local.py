"""The embedded default engine: a thread pool (or a process pool) on this machine."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from typing import Any

from arcoforge.forge.engines.common import fork_of, retryable, run_forked_task
from arcoforge.forge.engines.progress import task_progress

__all__ = ["run"]

log = logging.getLogger("arcoforge.forge.engines.local")

#: store tasks submitted to the pool at a time, per worker (the rest wait in the plan)
WINDOW_PER_WORKER = 4

# set in each worker process by the pool initializer
_PLAN: Any = None
_FORK: bytes | None = None


def _init_worker(plan: Any, fork: bytes | None) -> None:
    global _PLAN, _FORK
    _PLAN, _FORK = plan, fork


def _run_in_worker(task: Any) -> Any:
    if _FORK is not None:
        return run_forked_task(_PLAN, _FORK, task)
    return _PLAN.run_task(task)


def run(plan: Any, progress: bool = True, workers: int | None = None, processes: bool = False,
        retries: int = 2, retry_delay: float = 1.0) -> list[Any]:
    """Run ``plan`` here.  ``processes=True`` uses a process pool (spawned workers), which
    parallelises decompression of HDF5/netCDF4 sources that a thread pool serialises; a
    single-committer target (Icechunk) then gets its writes back from the workers as forks."""
    from arcoforge.forge.bake import TaskStats

    workers = workers or min(8, (os.cpu_count() or 2))
    plan.prepare()
    todo, done = plan.split_done()
    stats: list[Any] = [TaskStats(t.key, skipped=True) for t in done]
    done_before = len(stats)
    fork = fork_of(plan) if processes and todo else None
    executor: Executor
    submit: Callable[[Any], Future[Any]]
    if processes and todo:
        ctx = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(plan, fork))
        submit = lambda t: executor.submit(_run_in_worker, t)  # noqa: E731
    else:
        executor = ThreadPoolExecutor(workers)
        submit = lambda t: executor.submit(plan.run_task, t)  # noqa: E731
    attempts: dict[str, int] = {}
    queue = iter(todo)
    # a bounded window of submitted tasks: waiting on 100,000 futures at once costs
    # O(pending) per completion, quadratic over the build, and holds every future in memory
    window = max(1, workers) * WINDOW_PER_WORKER
    with executor, task_progress(len(plan.tasks), done_before, enabled=progress) as advance:
        pending: dict[Future[Any], Any] = {}

        def fill() -> None:
            while len(pending) < window:
                task = next(queue, None)
                if task is None:
                    return
                pending[submit(task)] = task

        fill()
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                task = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as err:
                    attempts[task.key] = attempts.get(task.key, 0) + 1
                    if attempts[task.key] > retries or not retryable(err):
                        for f in pending:
                            f.cancel()
                        raise
                    log.warning("task %s failed (%s); retrying (%d/%d)", task.key, err,
                                attempts[task.key], retries)
                    time.sleep(retry_delay * attempts[task.key])
                    pending[submit(task)] = task
                    continue
                if fork is not None:
                    result, task_fork = result
                    plan.target.merge([task_fork], checkpoint=False)
                stats.append(result)
                advance(1)
            fill()
    if fork is not None:
        plan.target.merge([], checkpoint=True)
    plan.finalize(stats)
    return stats
