"""Raw instrument files through satpy into the same path: ``satpy.Scene`` -> ``xarray`` ->
``ds.arcoforge.resample`` / recipes.

satpy is GPL-3 licensed: it is an optional extra (``pip install 'arcoforge[satpy]'``), imported
only when one of these functions runs, and nothing else in arcoforge needs it.

>>> ds = open_satpy(["granule.nc"], reader="satpy_cf_nc", datasets=["wind_speed"])
>>> grid = ds.arcoforge.resample(area, method="nearest", radius_of_influence=30_000)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, SourceReadError
from ._deps import require

__all__ = ["open_satpy", "scene_to_dataset"]

_SATPY_ONLY_ATTRS = {"area", "_satpy_id", "ancillary_variables", "modifiers", "prerequisites",
                     "optional_prerequisites", "_last_resampler"}


def _clean_attr(value: Any) -> Any:
    """A netCDF/Zarr-writable version of a satpy attribute (None to drop it)."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, np.number, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iufb" and value.ndim <= 1:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return list(value)
    return None


def _clean_attrs(attrs: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    out = {}
    for k, v in attrs.items():
        if k in _SATPY_ONLY_ATTRS:
            continue
        c = _clean_attr(v)
        if c is not None:
            out[k] = c
    return out


def _with_geolocation(arr: xr.DataArray) -> xr.DataArray:
    """The variable with ``lon``/``lat`` coordinates from its satpy ``area`` (a swath's
    longitudes/latitudes, or a grid's cell centres)."""
    area = arr.attrs.get("area")
    if area is None:
        return arr
    if arr.ndim < 2 or tuple(area.shape) != tuple(arr.shape[-2:]):
        raise ConfigError(f"satpy dataset {arr.name!r}: its area has shape {area.shape}, its "
                          f"last two dims {arr.dims[-2:]} have {arr.shape[-2:]}")
    lons, lats = area.get_lonlats(chunks=arr.data.chunks[-2:] if arr.chunks else None)
    dims = arr.dims[-2:]
    return arr.assign_coords(
        lon=(dims, lons, {"standard_name": "longitude", "units": "degrees_east"}),
        lat=(dims, lats, {"standard_name": "latitude", "units": "degrees_north"}))


def scene_to_dataset(scene: Any, datasets: Sequence[str] | None = None) -> xr.Dataset:
    """A loaded ``satpy.Scene`` as one CF-style dataset the regrid accessor understands.

    Each dataset keeps its dims, dask arrays and attributes (satpy-only objects such as
    ``area`` and ``_satpy_id`` are dropped, times become ISO strings); the geolocation of its
    ``area`` becomes ``lon``/``lat`` coordinates (swaths already carrying them keep theirs).

    Parameters
    ----------
    scene
        A ``satpy.Scene`` with datasets loaded.
    datasets
        Names to include (default: every loaded dataset).
    """
    keys = list(scene.keys())
    by_name = {k["name"]: k for k in keys}
    names = list(datasets) if datasets is not None else list(by_name)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"satpy scene: datasets {missing} are not loaded (loaded: "
                          f"{sorted(by_name)}); call scene.load({missing}) first")
    coord_names = {str(c) for n in names for c in scene[by_name[n]].coords}
    if datasets is None:  # geolocation loaded as datasets is already a coordinate of the others
        names = [n for n in names if n not in coord_names]
    arrays = {}
    attrs: dict[Hashable, Any] = {}
    for name in names:
        arr = _with_geolocation(scene[by_name[name]])
        for key in ("platform_name", "sensor", "start_time", "end_time", "reader"):
            if key in arr.attrs and key not in attrs:
                c = _clean_attr(arr.attrs[key] if not isinstance(arr.attrs[key], set)
                                else sorted(arr.attrs[key]))
                if c is not None:
                    attrs[key] = c
        arr = arr.copy()
        arr.attrs = _clean_attrs(arr.attrs)
        for c in list(arr.coords):
            arr.coords[c].attrs = _clean_attrs(arr.coords[c].attrs)
        arr = arr.drop_vars([c for c in arr.coords if c == "crs"], errors="ignore")
        arrays[name] = arr
    ds = xr.Dataset(arrays)
    ds.attrs = attrs
    return ds


def open_satpy(filenames: Sequence[str], reader: str, datasets: Sequence[str] | None = None,
               *, reader_kwargs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Read instrument files with a satpy reader and return :func:`scene_to_dataset`.

    Parameters
    ----------
    filenames
        The granule's files (satpy matches them against the reader's file patterns).
    reader
        satpy reader name (``"satpy_cf_nc"``, ``"viirs_sdr"``, ``"avhrr_l1b_aapp"`` ...).
    datasets
        Datasets to load (default: every available one).
    reader_kwargs
        Passed to the satpy reader.

    Raises
    ------
    MissingDependencyError
        satpy is not installed (``pip install 'arcoforge[satpy]'``).
    SourceReadError
        satpy found no file its reader accepts, or could not load the datasets.
    """
    satpy = require("satpy", "open_satpy")
    files = [str(f) for f in filenames]
    try:
        scene = satpy.Scene(filenames=files, reader=reader, reader_kwargs=dict(reader_kwargs or {}))
    except ValueError as exc:
        raise SourceReadError(
            f"satpy reader {reader!r} accepts none of {files} ({exc}). Check that the file "
            "names match the reader's file patterns (satpy selects files by name) and the "
            "reader name (satpy.available_readers())") from exc
    available = list(scene.available_dataset_names())
    wanted = list(datasets) if datasets is not None else available
    absent = [d for d in wanted if d not in available]
    if absent:
        raise SourceReadError(f"{files}: satpy reader {reader!r} offers no datasets {absent} "
                              f"(available: {sorted(available)})")
    scene.load(wanted)
    return scene_to_dataset(scene, [d for d in wanted if d in {k["name"] for k in scene.keys()}])
