# Copied from xbatcher 0.4.0 (https://github.com/xarray-contrib/xbatcher,
# xbatcher/tests/test_print_versions.py). Copyright (c) xbatcher developers, licensed under the
# Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0).
# Changes: imports point at arcoforge.compat.xbatcher instead of xbatcher (plus lint-only
# noqa comments); tests that also fail against real xbatcher 0.4 in this environment are
# marked xfail with the reason (search "arcoforge:").
from __future__ import annotations

import io

import arcoforge.compat.xbatcher as xbatcher


def test_show_versions() -> None:
    """
    Test xbatcher.show_versions()

    Based on https://github.com/pydata/xarray/blob/main/xarray/tests/test_print_versions.py
    """
    f = io.StringIO()
    xbatcher.show_versions(file=f)
    assert 'xbatcher information' in f.getvalue()
