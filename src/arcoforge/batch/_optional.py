"""Lazy imports of optional extras (torch, tensorflow, redis, numba) with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

from arcoforge.errors import MissingDependencyError

_EXTRA = {"torch": "torch", "tensorflow": "tensorflow", "redis": "redis", "numba": "numba"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`~arcoforge.errors.MissingDependencyError` (an
    ``ImportError``) naming the arcoforge extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRA.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f"{module!r} is needed for this feature but is not installed; "
            f"install it with `pip install 'arcoforge[{extra}]'`"
        ) from err
