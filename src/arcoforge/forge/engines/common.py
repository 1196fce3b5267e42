"""What every engine shares: the retry policy, single-committer forks and work units.

Targets with a single committer (``target.single_committer``, e.g. Icechunk): workers write each
store task into their own copy of a fork (``target.fork_for_workers()``) and return it; the
coordinator merges the returned forks (``target.merge(forks)``) before ``finalize`` commits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from arcoforge.errors import ConfigError, is_transient

__all__ = ["retryable", "fork_of", "run_forked_task", "MAX_WORK_UNITS", "unit_size",
           "work_units", "run_with_retries", "run_unit"]

log = logging.getLogger("arcoforge.forge.engines")


def retryable(err: BaseException) -> bool:
    """Whether a failed task may succeed when run again: the one retry policy of every engine.

    Only errors that say they are transient (:func:`arcoforge.errors.is_transient`: a dropped
    connection, a timeout, a download whose retries ran out) are retried; a 404, bad
    credentials, a schema clash or a bug fail the build at once.
    """
    return is_transient(err)


def run_forked_task(plan: Any, fork: bytes, task: Any) -> tuple[Any, Any]:
    """Run ``task`` writing into a fresh copy of the pickled fork ``fork`` (its own change set);
    returns the task's stats and the fork, for the coordinator to merge."""
    import dataclasses
    import pickle

    target = pickle.loads(fork)
    stats = dataclasses.replace(plan, target=target).run_task(task)
    return stats, target


def fork_of(plan: Any) -> bytes | None:
    """The pickled worker fork of ``plan``'s target, if it is a single-committer target."""
    import pickle

    if not plan.target.single_committer:
        return None
    return pickle.dumps(plan.target.fork_for_workers())


# -- work units: store tasks batched for engines with a per-task overhead -----------------------

#: a plan with more store tasks than this is batched into at most this many engine work units
#: (Dask tasks, Prefect task runs): a scheduler that tracks 100,000 tasks spends more time (and
#: memory) on bookkeeping than on the work, while a few thousand units still balance the load
MAX_WORK_UNITS = 2000


def unit_size(ntasks: int, batch_size: int | None = None, max_units: int | None = None) -> int:
    """How many store tasks one engine work unit runs: ``batch_size`` when given, else 1 up to
    ``max_units`` (default :data:`MAX_WORK_UNITS`) tasks and ``ceil(ntasks / max_units)``
    above, so that there are at most ``max_units`` units.  Raises ConfigError for a
    ``batch_size`` below 1."""
    max_units = max(1, max_units or MAX_WORK_UNITS)
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1 (store tasks per engine task), got "
                              f"{batch_size}")
        return int(batch_size)
    return 1 if ntasks <= max_units else -(-ntasks // max_units)


def work_units(tasks: Sequence[Any], size: int) -> list[tuple[Any, ...]]:
    """``tasks`` cut into consecutive work units of ``size`` (the last may be shorter)."""
    return [tuple(tasks[i:i + size]) for i in range(0, len(tasks), size)]


def run_with_retries(run: Callable[[Any], Any], task: Any, retries: int, retry_delay: float,
                     on_retry: Callable[[Any, BaseException, int], None] | None = None) -> Any:
    """``run(task)``, run again after a transient failure (:func:`retryable`) at most
    ``retries`` times, waiting ``retry_delay * attempt`` seconds; the engines that retry inside
    a worker (Beam, batched Dask and Prefect units) share it.  A permanent failure, or the
    last one, is raised with a note naming the task and the attempts."""
    attempt = 0
    while True:
        try:
            return run(task)
        except Exception as err:
            attempt += 1
            if attempt > retries or not retryable(err):
                with contextlib.suppress(Exception):
                    err.add_note(f"(in arcoforge store task {getattr(task, 'key', task)}, "
                                 f"after {attempt} attempt(s))")
                raise
            log.warning("task %s failed (%s); retrying (%d/%d)", getattr(task, "key", task),
                        err, attempt, retries)
            if on_retry is not None:
                on_retry(task, err, attempt)
            time.sleep(retry_delay * attempt)


def run_unit(plan: Any, unit: Sequence[Any], retries: int, retry_delay: float,
             fork: bytes | None = None) -> tuple[list[Any], Any]:
    """Run a work unit's store tasks in order, each with :func:`run_with_retries`.

    Returns ``(stats, fork)``: the tasks' stats, and for a single-committer target the one
    fresh copy of the pickled ``fork`` that all of them wrote into (for the coordinator to
    merge), else None.
    """
    if fork is None:
        return [run_with_retries(plan.run_task, t, retries, retry_delay) for t in unit], None
    import dataclasses
    import pickle

    target = pickle.loads(fork)
    forked = dataclasses.replace(plan, target=target)
    return [run_with_retries(forked.run_task, t, retries, retry_delay) for t in unit], target
