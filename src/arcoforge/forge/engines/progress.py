"""A progress bar for engines (rich), that engines share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["task_progress"]


@contextlib.contextmanager
def task_progress(total: int, completed: int = 0, enabled: bool = True,
                  description: str = "store tasks") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a rich progress bar when ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        tid = bar.add_task(description, total=total, completed=completed)
        yield lambda n: bar.advance(tid, n)
