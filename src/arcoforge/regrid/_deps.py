"""Lazy imports of the optional Pytroll stack (pyresample, satpy): one place, one error."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = ["require"]

_EXTRA = {"pyresample": "regrid", "satpy": "satpy", "intake": "intake"}


def require(module: str, why: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Parameters
    ----------
    module
        Dotted module name (``"pyresample.kd_tree"``, ``"satpy"``).
    why
        What needs it, for the message (``"ds.arcoforge.resample"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA.get(top, top)
        raise MissingDependencyError(
            f"{why} needs {top!r}, which is not installed ({exc}). "
            f"Install it with: pip install 'arcoforge[{extra}]'") from exc
