"""``show_versions()``: what this compat layer runs on, for bug reports."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

__all__ = ["show_versions"]

_DEPENDENCIES = ("arcoforge", "xarray", "numpy", "pandas", "dask", "zarr", "torch",
                 "tensorflow", "keras", "xbatcher")
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu")}


def _version_of(name: str) -> str | None:
    """The version of a loaded module, else of its installed distribution, else None."""
    module = sys.modules.get(name)
    if module is not None:
        return str(getattr(module, "__version__", "installed"))
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def show_versions(file: TextIO = sys.stdout) -> None:
    """Print the xbatcher API level served, the Python and platform, and dependency versions."""
    from .. import __version__

    lines = [
        "",
        "xbatcher information:",
        f"  xbatcher API: {__version__} (arcoforge.compat.xbatcher)",
        "",
        "System information:",
        f"  python: {sys.version.split()[0]}",
        f"  executable: {sys.executable}",
        f"  machine: {platform.platform()}",
        "",
        "Dependency information:",
    ]
    for name in _DEPENDENCIES:
        lines.append(f"  {name}: {_version_of(name)}")
    print("\n".join(lines), file=file)
