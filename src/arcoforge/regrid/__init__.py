"""Satellite swaths onto grids with pyresample: the ``ds.arcoforge.resample`` accessor and the
:class:`Regrid` recipe transform.

>>> area = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": 0.25}
>>> grid = swath.arcoforge.resample(area, method="bilinear", radius_of_influence=50_000)
>>> recipe = af.ZarrRecipe(pattern, transforms=[Regrid(area), ...])

pyresample is an optional dependency (``pip install 'arcoforge[regrid]'``), imported only when
a resampling runs; satpy (GPL, ``arcoforge[satpy]``) only by :mod:`arcoforge.regrid.satpy`.
"""

from __future__ import annotations

from typing import Any

try:
    # pyproj's bundled libcurl and the netCDF4 wheel's clash when pyproj is first imported after
    # a netCDF file was opened: the process aborts at exit ("double free").  Importing it with
    # this package (before any granule is opened) avoids that; it is cheap and optional.
    import pyproj  # noqa: F401
except ImportError:  # pragma: no cover - pyresample (and pyproj) absent
    pass

__all__ = [
    "EmptyRegridWarning",
    "NeighbourCache",
    "Regrid",
    "area_from_dataset",
    "area_from_spec",
    "default_cache",
    "resample",
    "resolve_area",
]

_LAZY = {
    "EmptyRegridWarning": "accessor",
    "NeighbourCache": "cache",
    "default_cache": "cache",
    "Regrid": "transform",
    "area_from_dataset": "areas",
    "area_from_spec": "areas",
    "resolve_area": "areas",
    "resample": "accessor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
