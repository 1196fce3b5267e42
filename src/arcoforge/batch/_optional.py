"""Lazy imports of optional extras (torch, tensorflow, redis) with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRA = {"torch": "torch", "tensorflow": "tensorflow", "redis": "redis", "numba": "numba"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the arcoforge extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        extra = _EXTRA.get(module.split(".")[0], module)
        raise ImportError(
            f"{module!r} is needed for this feature but is not installed; "
            f"install it with `pip install 'arcoforge[{extra}]'`"
        ) from err
