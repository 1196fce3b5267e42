"""Run a :class:`~arcoforge.forge.bake.Plan` on a Dask distributed cluster.

``prepare`` and ``finalize`` run here (the client process); the unfinished store tasks run on
the workers as Dask tasks that call ``plan.run_task(task)``.  Up to
:data:`~arcoforge.forge.engines.common.MAX_WORK_UNITS` store tasks, each is one Dask task;
above that they are batched (``batch_size`` store tasks per Dask task, by default so that there
are at most that many), so that a 100,000-task plan does not load the scheduler with 100,000
tasks and their bookkeeping.  The plan is sent to the cluster once, as the result of a small
task (so a worker's death cannot lose it).

A store task that raises is retried on its worker up to ``retries`` times when its error may be
transient (the shared policy of :mod:`.common`); Dask reschedules the tasks of a worker that
dies (finished store tasks of a rescheduled batch are skipped, they are idempotent); a
permanent failure cancels the remaining tasks and is raised with the store task's key added,
before anything is published.

Targets with a single committer (``target.single_committer``: Icechunk): each Dask task then
writes its store tasks into its own copy of the fork and returns it, and the coordinator merges
the returned forks into its session before ``finalize`` commits.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from arcoforge.errors import EngineError
from arcoforge.forge.engines.common import fork_of, run_unit, unit_size, work_units
from arcoforge.forge.engines.progress import task_progress

__all__ = ["run"]

log = logging.getLogger("arcoforge.forge.engines.dask")


def _identity(obj: Any) -> Any:
    return obj


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


@contextlib.contextmanager
def session(client: Any = None, scheduler: str | None = None, workers: int | None = None,
            threads_per_worker: int = 1, memory_limit: str | int | None = "auto",
            **options: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """One cluster for a whole build: yields ``(scan_map, run_options)``.  ``scan_map`` runs
    the scan on the workers -- each fetches its sources into the input cache and reads their
    metadata; this process only combines the schemas and reads no source bytes -- and
    ``run_options`` hand the same client to :func:`run`."""
    if client is None and scheduler is None:
        from arcoforge._guard import dask_start_method, ensure_main_guarded

        ensure_main_guarded("engine='dask' (a local Dask cluster)", dask_start_method())
    with _client(client, scheduler, workers, threads_per_worker, memory_limit) as c:
        yield _scan_map(c, options.get("batch_size")), {**options, "client": c,
                                                        "threads_per_worker":
                                                            threads_per_worker}


def _scan_unit(job: Any, items: tuple[Any, ...]) -> list[Any]:
    return [job(item) for item in items]


def _scan_map(c: Any, batch_size: int | None) -> Any:
    """``scan_map(job, items)``: ``job(item)`` for every item on the cluster, results in
    order (items batched like store tasks, so 100,000 files make at most a few thousand Dask
    tasks)."""

    def scan_map(job: Any, items: Any) -> list[Any]:
        items = list(items)
        if not items:
            return []
        units = work_units(items, unit_size(len(items), batch_size))
        # on every worker: a job held by one worker would pull all the scan tasks to it
        job_future = c.scatter(job, broadcast=True, hash=False)
        futures = [c.submit(_scan_unit, job_future, unit, pure=False,
                            key=f"arcoforge-scan-{i}-{_uuid()}") for i, unit in enumerate(units)]
        try:
            out: list[Any] = []
            for fut in futures:
                out.extend(fut.result())
            return out
        finally:
            c.cancel(futures + [job_future])

    return scan_map


def _uuid() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def run(plan: Any, progress: bool = True, client: Any = None, scheduler: str | None = None,
        workers: int | None = None, threads_per_worker: int = 1,
        memory_limit: str | int | None = "auto", retries: int = 2,
        retry_delay: float = 1.0, batch_size: int | None = None) -> list[Any]:
    """Run ``plan`` with Dask distributed.

    Parameters
    ----------
    plan:
        The compiled plan (:func:`arcoforge.forge.bake.compile_plan`).
    progress:
        Show a progress bar of the store tasks.
    client:
        A ``distributed.Client`` to use (left open).
    scheduler:
        Else the address of a scheduler to connect to.
    workers, threads_per_worker, memory_limit:
        Else a ``LocalCluster`` of ``workers`` (default 2) worker processes with
        ``threads_per_worker`` threads and ``memory_limit`` each, closed at the end.
    retries, retry_delay:
        Transient failures of a store task are retried this many times, waiting
        ``retry_delay * attempt`` seconds.
    batch_size:
        Store tasks per Dask task; by default 1, or more when the plan has more than
        :data:`~arcoforge.forge.engines.common.MAX_WORK_UNITS` tasks.

    Returns
    -------
    list
        One :class:`~arcoforge.forge.bake.TaskStats` per store task.
    """
    from arcoforge.forge.bake import TaskStats

    if client is None and scheduler is None:  # a LocalCluster will re-import __main__
        from arcoforge._guard import dask_start_method, ensure_main_guarded

        # before anything is written: fail fast, clearly, and leave no state behind
        ensure_main_guarded("engine='dask' (a local Dask cluster)", dask_start_method())
    size = unit_size(len(plan.tasks), batch_size)  # a bad batch_size fails before any work
    plan.prepare()
    todo, done = plan.split_done()
    stats: list[Any] = [TaskStats(t.key, skipped=True) for t in done]
    if todo:
        with _client(client, scheduler, workers, threads_per_worker, memory_limit) as c, \
                task_progress(len(plan.tasks), len(stats), enabled=progress) as advance:
            stats.extend(_run_all(c, plan, work_units(todo, size), retries, retry_delay,
                                  advance))
    plan.finalize(stats)
    return stats


def _run_all(c: Any, plan: Any, units: list[tuple[Any, ...]], retries: int,
             retry_delay: float, advance: Any) -> list[Any]:
    from distributed import KilledWorker, as_completed

    fork = fork_of(plan)
    # The plan (and fork) travel as the results of small tasks rather than scattered data: a
    # worker that dies with scattered data loses it for good and its dependents wait forever,
    # whereas a task's result is simply computed again elsewhere.
    with warnings.catch_warnings():  # the plan of 100,000 files is tens of MB, sent once
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        plan_future = c.submit(_identity, plan, pure=False)
    fork_future = c.submit(_identity, fork, pure=False) if fork is not None else None
    futures = {
        c.submit(run_unit, plan_future, unit, retries, retry_delay, fork_future, pure=False,
                 key=_key(unit)): unit
        for unit in units
    }
    out: list[Any] = []
    try:
        for fut in as_completed(list(futures)):
            unit = futures.pop(fut)
            if fut.status == "finished":
                unit_stats, unit_fork = fut.result()
                if unit_fork is not None:
                    plan.target.merge([unit_fork], checkpoint=False)
                out.extend(unit_stats)
                advance(len(unit_stats))
                continue
            err = fut.exception()
            what = (f"store task {unit[0].key}" if len(unit) == 1 else
                    f"a batch of store tasks {unit[0].key} .. {unit[-1].key}")
            if isinstance(err, KilledWorker):
                raise EngineError(
                    f"{what}: the Dask workers running it died repeatedly (out of "
                    "memory?); give the workers more memory or lower the recipe's "
                    "max_block_bytes / target_chunks. Nothing was published."
                ) from err
            with contextlib.suppress(Exception):
                err.add_note(f"(in the Dask task running {what}; nothing was published)")
            fut.result()  # raises err with its remote traceback
        if fork is not None:
            plan.target.merge([], checkpoint=True)
    finally:
        if futures:
            c.cancel(list(futures))
        with contextlib.suppress(Exception):
            c.cancel([plan_future] + ([fork_future] if fork_future is not None else []))
    return out


def _key(unit: tuple[Any, ...]) -> str:
    import uuid

    last = f"-{unit[-1].key}" if len(unit) > 1 else ""
    return f"arcoforge-store-{unit[0].key}{last}-{uuid.uuid4().hex[:8]}"
