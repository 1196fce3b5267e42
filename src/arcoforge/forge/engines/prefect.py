"""Run a :class:`~arcoforge.forge.bake.Plan` as a Prefect 3 flow.

The flow is::

    prepare ──▶ store <unit 1>, store <unit 2>, ... (concurrently, on the task runner) ──▶ finalize

Every step is a Prefect task run, so the build, its progress, its retries and its failure are
visible in Prefect's UI and API like any other flow run.  A work unit is one store task, or a
batch of consecutive store tasks when the plan has more than ``max_units`` (so a 100,000-task
plan does not make 100,000 task runs; ``batch_size`` sets the batch explicitly).

Retries are Prefect's own (a failed task run goes through ``AwaitingRetry``), under the shared
policy of :mod:`.common`: only errors that say they are transient are retried, ``retries``
times, waiting ``retry_delay * attempt`` seconds; a permanent failure fails the flow run and is
raised here, before anything is published.  A retried batch skips the store tasks it had
already finished (they are idempotent); they count as "already done" in the build's summary.

The flow talks to whichever Prefect API is configured (``PREFECT_API_URL``); without one Prefect
starts a temporary local server for the run.  The default task runner is Prefect's
``ThreadPoolTaskRunner`` with ``workers`` threads; any other task runner (e.g. prefect-dask's
``DaskTaskRunner``) may be given.  Targets with a single committer (Icechunk) get their writes
back as forks, merged by the flow before ``finalize`` commits, whichever runner runs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import prefect  # noqa: F401 - here, so that get_engine("prefect") names the missing extra

from arcoforge.forge.engines.common import fork_of, retryable, run_unit, unit_size, work_units
from arcoforge.forge.engines.progress import task_progress

__all__ = ["run", "MAX_PREFECT_UNITS"]

log = logging.getLogger("arcoforge.forge.engines.prefect")

#: the default largest number of store task runs of one flow run (each costs a few API calls)
MAX_PREFECT_UNITS = 500


def _retry_delays(retries: int, retry_delay: float) -> list[float]:
    """The shared policy's waits (``retry_delay * attempt``) as Prefect's delay list."""
    return [retry_delay * (attempt + 1) for attempt in range(retries)] or [0.0]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry only what :func:`.common.retryable` allows."""
    err = state.result(raise_on_failure=False)
    return isinstance(err, BaseException) and retryable(err)


def _label(unit: Sequence[Any]) -> str:
    return unit[0].key if len(unit) == 1 else f"{unit[0].key}..{unit[-1].key}"


def run(plan: Any, progress: bool = True, workers: int | None = None,
        retries: int = 2, retry_delay: float = 1.0, batch_size: int | None = None,
        max_units: int = MAX_PREFECT_UNITS, task_runner: Any = None,
        flow_name: str = "arcoforge-build", flow_run_name: str | None = None) -> list[Any]:
    """Run ``plan`` as a Prefect flow and wait for it.

    Parameters
    ----------
    plan:
        The compiled plan (:func:`arcoforge.forge.bake.compile_plan`).
    progress:
        Show a progress bar of the store tasks here (Prefect's UI shows the task runs too).
    workers:
        Threads of the default ``ThreadPoolTaskRunner`` (default ``min(8, cpu count)``).
    retries, retry_delay:
        Transient failures of a work unit are retried this many times, waiting
        ``retry_delay * attempt`` seconds.
    batch_size:
        Store tasks per Prefect task run; by default 1, or more when the plan has more than
        ``max_units`` store tasks.
    max_units:
        The most store task runs a flow run makes when ``batch_size`` is not given.
    task_runner:
        A Prefect task runner to use instead of the thread pool.
    flow_name, flow_run_name:
        Names of the flow and of this flow run (default: ``bake <target url>``), as shown in
        Prefect's UI and API.

    Returns
    -------
    list
        One :class:`~arcoforge.forge.bake.TaskStats` per store task.
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import as_completed
    from prefect.task_runners import ThreadPoolTaskRunner

    from arcoforge.forge.bake import TaskStats

    size = unit_size(len(plan.tasks), batch_size, max_units)  # a bad batch_size fails first
    workers = workers or min(8, os.cpu_count() or 2)
    # Inputs are never cached or hashed (the plan is large and every run must write), results
    # stay in memory, and the plan reaches the task runs through this closure, not as a
    # parameter that Prefect would walk and record.
    options: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
    state: dict[str, Any] = {}

    @task(name="prepare", **options)
    def prepare() -> bool:
        return bool(plan.prepare())

    @task(name="store", task_run_name="store {label}", retries=retries,
          retry_delay_seconds=_retry_delays(retries, retry_delay),
          retry_condition_fn=_transient, **options)
    def store(index: int, label: str) -> tuple[list[Any], Any]:
        # retries are Prefect's (visible as AwaitingRetry); none inside the unit
        return run_unit(plan, state["units"][index], 0, 0.0, state["fork"])

    @task(name="finalize", **options)
    def finalize() -> None:
        plan.finalize(state["stats"])

    runner: Any = task_runner or ThreadPoolTaskRunner(max_workers=workers)

    @flow(name=flow_name, flow_run_name=flow_run_name or f"bake {plan.target.url}",
          task_runner=runner,
          validate_parameters=False, persist_result=False)
    def build() -> list[Any]:
        prepare()
        todo, done = plan.split_done()
        stats: list[Any] = [TaskStats(t.key, skipped=True) for t in done]
        state["units"] = work_units(todo, size)
        state["fork"] = fork_of(plan) if todo else None
        futures = [store.submit(i, _label(u)) for i, u in enumerate(state["units"])]
        with task_progress(len(plan.tasks), len(stats), enabled=progress) as advance:
            try:
                for fut in as_completed(futures):
                    unit_stats, unit_fork = fut.result()
                    if unit_fork is not None:
                        plan.target.merge([unit_fork], checkpoint=False)
                    stats.extend(unit_stats)
                    advance(len(unit_stats))
            except Exception as err:
                with contextlib.suppress(Exception):
                    err.add_note("(in a store task run of the arcoforge Prefect flow; nothing "
                                 "was published)")
                raise  # the task runner cancels the task runs not yet started
        if state["fork"] is not None:
            plan.target.merge([], checkpoint=True)
        state["stats"] = stats
        finalize()
        return stats

    stats: list[Any] = build()
    return stats
