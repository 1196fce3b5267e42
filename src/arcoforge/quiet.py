"""Keep libraries' expected chatter off the user's terminal unless asked for.

* Icechunk's Rust core logs ``WARN`` lines to stderr on every local repository ("LocalFileSystem
  storage is not safe for concurrent commits", conditional-PUT notes): arcoforge already commits
  from one process, so these say nothing the user can act on.  They are filtered to errors
  unless ``ICECHUNK_LOG`` is set, or ``ARCOFORGE_DEBUG=1``.
* zarr warns that consolidated metadata is not in the v3 specification (arcoforge writes it on
  purpose) and that the build's ``.arcoforge`` state folder is not part of the hierarchy:
  :func:`expected_warnings` hides exactly those.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

__all__ = ["quiet_icechunk", "expected_warnings", "debug_requested"]

_icechunk_quieted = False

#: (message regex, module regex) of warnings arcoforge causes on purpose
_EXPECTED = (
    ("Consolidated metadata", "zarr"),
    ("Object at .*\\.arcoforge", "zarr"),
)


def debug_requested() -> bool:
    """Whether the user asked to see everything (``ARCOFORGE_DEBUG`` set to a true value)."""
    return os.environ.get("ARCOFORGE_DEBUG", "").lower() not in ("", "0", "false", "no")


def quiet_icechunk() -> None:
    """Filter Icechunk's Rust log lines to errors (once per process), unless ``ICECHUNK_LOG``
    is set or ``ARCOFORGE_DEBUG`` asks for everything."""
    global _icechunk_quieted
    if _icechunk_quieted or os.environ.get("ICECHUNK_LOG") or debug_requested():
        return
    try:
        import icechunk
    except ImportError:
        return
    icechunk.set_logs_filter("error")
    _icechunk_quieted = True


@contextlib.contextmanager
def expected_warnings() -> Iterator[None]:
    """Hide the warnings arcoforge causes on purpose (see the module docstring)."""
    if debug_requested():
        yield
        return
    with warnings.catch_warnings():
        for message, module in _EXPECTED:
            warnings.filterwarnings("ignore", message=message, module=module)
        yield
