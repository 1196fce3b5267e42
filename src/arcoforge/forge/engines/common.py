"""What every engine shares: the retry policy and single-committer forks.

Targets with a single committer (``target.single_committer``, e.g. Icechunk): workers write each
store task into their own copy of a fork (``target.fork_for_workers()``) and return it; the
coordinator merges the returned forks (``target.merge(forks)``) before ``finalize`` commits.
"""

from __future__ import annotations

from typing import Any

from arcoforge.errors import is_transient

__all__ = ["retryable", "fork_of", "run_forked_task"]


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
