"""Run a :class:`~arcoforge.forge.bake.Plan` on a Dask distributed cluster.

``prepare`` and ``finalize`` run here (the client process); every unfinished store task is one
Dask task that calls ``plan.run_task(task)`` on a worker.  The plan is sent to the cluster once,
as the result of a small task (so a worker's death cannot lose it).  Dask reschedules the tasks
of a worker that dies; a task that raises is resubmitted up to
``retries`` times when its error may be transient (the same policy as the local engine), and a
permanent failure cancels the remaining tasks and is raised with the task's key added, before
anything is published.

Targets with a single committer (``target.single_committer``: Icechunk): each
store task then writes into its own copy of the fork and returns it, and the coordinator merges
the returned forks into its session before ``finalize`` commits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from arcoforge.errors import EngineError
from arcoforge.forge.engines.common import fork_of, retryable, run_forked_task
from arcoforge.forge.engines.progress import task_progress

__all__ = ["run"]

log = logging.getLogger("arcoforge.forge.engines.dask")


def _identity(obj: Any) -> Any:
    return obj


def _run_task(plan: Any, task: Any) -> Any:
    return plan.run_task(task)


@contextlib.contextmanager
def _client(client: Any, scheduler: str | None, workers: int | None, threads_per_worker: int,
            memory_limit: str | int | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler is not None:
        with Client(scheduler) as c:
            yield c
        return
    with LocalCluster(n_workers=workers or 2, processes=True,
                      threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        log.info("started a local Dask cluster: %s", cluster)
        yield c


def run(plan: Any, progress: bool = True, client: Any = None, scheduler: str | None = None,
        workers: int | None = None, threads_per_worker: int = 1,
        memory_limit: str | int | None = "auto", retries: int = 2,
        retry_delay: float = 1.0) -> list[Any]:
    """Run ``plan`` with Dask distributed.

    Uses ``client`` (a ``distributed.Client``) when given, else connects to the ``scheduler``
    address, else starts a ``LocalCluster`` of ``workers`` (default 2) worker processes with
    ``threads_per_worker`` threads and ``memory_limit`` each, and closes it at the end.
    """
    from distributed import as_completed

    from arcoforge.forge.bake import TaskStats

    if client is None and scheduler is None:  # a LocalCluster will re-import __main__
        from arcoforge._guard import dask_start_method, ensure_main_guarded

        # before anything is written: fail fast, clearly, and leave no state behind
        ensure_main_guarded("engine='dask' (a local Dask cluster)", dask_start_method())
    plan.prepare()
    todo, done = plan.split_done()
    stats: list[Any] = [TaskStats(t.key, skipped=True) for t in done]
    if todo:
        with _client(client, scheduler, workers, threads_per_worker, memory_limit) as c, \
                task_progress(len(plan.tasks), len(stats), enabled=progress) as advance:
            stats.extend(_run_all(c, plan, todo, retries, retry_delay, advance, as_completed))
    plan.finalize(stats)
    return stats


def _run_all(c: Any, plan: Any, todo: list[Any], retries: int, retry_delay: float,
             advance: Any, as_completed: Any) -> list[Any]:
    from distributed import KilledWorker

    fork = fork_of(plan)
    # The plan (and fork) travel as the results of small tasks rather than scattered data: a
    # worker that dies with scattered data loses it for good and its dependents wait forever,
    # whereas a task's result is simply computed again elsewhere.
    plan_future = c.submit(_identity, plan, pure=False)
    if fork is None:
        def submit(t: Any, attempt: int) -> Any:
            return c.submit(_run_task, plan_future, t, pure=False, key=_key(t, attempt))
    else:
        fork_future = c.submit(_identity, fork, pure=False)

        def submit(t: Any, attempt: int) -> Any:
            return c.submit(run_forked_task, plan_future, fork_future, t, pure=False,
                            key=_key(t, attempt))
    futures = {submit(t, 0): t for t in todo}
    attempts = {t.key: 0 for t in todo}
    out: list[Any] = []
    ac = as_completed(list(futures))
    try:
        for fut in ac:
            task = futures.pop(fut)
            if fut.status == "finished":
                if fork is None:
                    out.append(fut.result())
                else:
                    task_stats, task_fork = fut.result()
                    plan.target.merge([task_fork], checkpoint=False)
                    out.append(task_stats)
                advance(1)
                continue
            err = fut.exception()
            if isinstance(err, KilledWorker):
                raise EngineError(
                    f"store task {task.key}: the Dask workers running it died repeatedly (out of "
                    "memory?); give the workers more memory or lower the recipe's "
                    "max_block_bytes / target_chunks. Nothing was published."
                ) from err
            attempts[task.key] += 1
            if attempts[task.key] > retries or not retryable(err):
                with contextlib.suppress(Exception):
                    err.add_note(f"(in arcoforge store task {task.key}, after "
                                 f"{attempts[task.key]} attempt(s); nothing was published)")
                fut.result()  # raises err with its remote traceback
            log.warning("task %s failed (%s); retrying (%d/%d)", task.key, err,
                        attempts[task.key], retries)
            time.sleep(retry_delay * attempts[task.key])
            new = submit(task, attempts[task.key])
            futures[new] = task
            ac.add(new)
        if fork is not None:
            plan.target.merge([], checkpoint=True)
    finally:
        if futures:
            c.cancel(list(futures))
        with contextlib.suppress(Exception):
            c.cancel([plan_future])
    return out


def _key(task: Any, attempt: int) -> str:
    import uuid

    return f"arcoforge-store-{task.key}-{attempt}-{uuid.uuid4().hex[:8]}"
