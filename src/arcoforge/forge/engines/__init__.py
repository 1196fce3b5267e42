"""Engines run a :class:`~arcoforge.forge.bake.Plan`; they hold no domain logic.

Engines: ``local`` (threads or processes), ``dask`` (distributed), ``beam`` (any Beam runner),
``prefect`` (a Prefect 3 flow); docs/engines.md says which to use when.  An engine is a
callable ``run(plan, progress=True, **options) -> list[TaskStats]`` that calls
``plan.prepare()`` once, ``plan.run_task(task)`` for every task (any order, retried on failure),
and ``plan.finalize(stats)`` once all tasks succeeded.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from arcoforge.errors import ConfigError, MissingDependencyError

__all__ = ["get_engine", "engine_session", "ENGINES", "EXTRAS"]

#: engine name -> "module:function"
ENGINES = {
    "local": "arcoforge.forge.engines.local:run",
    "dask": "arcoforge.forge.engines.dask:run",
    "beam": "arcoforge.forge.engines.beam:run",
    "prefect": "arcoforge.forge.engines.prefect:run",
}

#: engine name -> the arcoforge extra that installs what it needs
EXTRAS = {"dask": "distributed", "beam": "beam", "prefect": "prefect"}


def get_engine(name: str) -> Callable[..., Any]:
    """The run function of engine ``name``; a clear error if unknown or not installed."""
    try:
        spec = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, func = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise MissingDependencyError(
            f"engine {name!r} needs an optional dependency that is not installed ({err.name}); "
            f"install it with: pip install 'arcoforge[{EXTRAS.get(name, name)}]'"
        ) from err
    return getattr(module, func)  # type: ignore[no-any-return]


@contextlib.contextmanager
def engine_session(name: str, options: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(scan_map, run_options)`` for one build on engine ``name``: engines that can scan on
    their workers (``session`` in the engine's module, e.g. Dask) open their cluster once, run
    the scan there (``scan_map``) and hand the same cluster to ``run`` (``run_options``);
    the others scan here (``scan_map`` None) and run with ``options`` unchanged."""
    run = get_engine(name)
    module = importlib.import_module(run.__module__)
    session = getattr(module, "session", None)
    if session is None:
        yield None, dict(options)
        return
    with session(**options) as opened:
        yield opened
