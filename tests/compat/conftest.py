"""Import the real xbatcher (when installed) before the compat package, whatever the test order.

Both register ``batch``/``torch``/``tf`` accessors; the package imported last owns them, and
these tests need the compat ones.
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):
    import xbatcher  # noqa: F401

import arcoforge.compat.xbatcher  # noqa: F401,E402
