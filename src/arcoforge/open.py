"""Open what arcoforge built: ``open_dataset(target)``.

Zarr keeps attributes as JSON, so a float32 ``scale_factor`` comes back as a Python float and
xarray would decode packed int16 data to float64.  arcoforge records every attribute's numpy type
(``arcoforge:attr_types``) and :func:`open_dataset` restores them before CF decoding, so the result
equals ``xr.open_mfdataset`` of the sources: same dtypes, values, attributes and encodings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from arcoforge.forge.schema import attrs_from_json

__all__ = ["open_dataset", "restore_attr_types", "ATTR_TYPES_KEY"]

ATTR_TYPES_KEY = "arcoforge:attr_types"


def restore_attr_types(raw: xr.Dataset) -> xr.Dataset:
    """Give a raw dataset's attributes back the numpy types recorded at build time."""
    types = raw.attrs.get(ATTR_TYPES_KEY) or {}
    raw = raw.copy()
    raw.attrs = attrs_from_json({k: v for k, v in raw.attrs.items() if k != ATTR_TYPES_KEY},
                                types.get("", {}))
    for name, var in raw.variables.items():
        if name in types:
            var.attrs = attrs_from_json(var.attrs, types[name])
    return raw


def open_dataset(target: Any, id_or_version: str | None = None, *, version: str | None = None,
                 decode_times: Any = True, chunks: Any = None,
                 storage_options: Mapping[str, Any] | None = None, **kwargs: Any) -> xr.Dataset:
    """Open a store built by arcoforge as a lazily loaded, CF-decoded :class:`xarray.Dataset`.

    * ``open_dataset("ersst.zarr")`` -- a Zarr URL/path (``storage_options`` for fsspec);
    * ``open_dataset("icechunk://path")`` or an Icechunk repository;
    * ``open_dataset(store, "1.2")`` or ``version="1.2"`` -- a published version;
    * ``open_dataset(catalog, "ersst-v5", version=None)`` -- a dataset of a STAC catalog by id.
    """
    if id_or_version is not None and not _looks_like_version(id_or_version):
        from arcoforge.catalog import open_dataset as open_from_catalog

        return open_from_catalog(target, id_or_version, version, decode_times=decode_times,
                                 chunks=chunks, storage_options=storage_options, **kwargs)
    version = version or id_or_version
    from arcoforge.forge.targets.open import open_raw_store

    raw = open_raw_store(target, version=version, chunks=chunks, storage_options=storage_options)
    ds = restore_attr_types(raw)
    return xr.decode_cf(ds, decode_times=decode_times, **kwargs)


def _looks_like_version(value: str) -> bool:
    parts = value.split(".")
    return 1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)
