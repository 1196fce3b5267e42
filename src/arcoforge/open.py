"""Open what arcoforge built: ``open_dataset(target)``.

Zarr keeps attributes as JSON, so a float32 ``scale_factor`` comes back as a Python float and
xarray would decode packed int16 data to float64.  arcoforge records every attribute's numpy type
(``arcoforge:attr_types``) and :func:`open_dataset` restores them before CF decoding, so the result
equals ``xr.open_mfdataset`` of the sources: same dtypes, values, attributes and encodings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import xarray as xr

from arcoforge.errors import TargetError
from arcoforge.forge.schema import attrs_from_json
from arcoforge.provenance import ATTR_TYPES

__all__ = ["open_dataset", "restore_attr_types", "ATTR_TYPES_KEY"]

ATTR_TYPES_KEY = ATTR_TYPES


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


def open_dataset(target: Any, dataset_id: str | None = None, *, version: str | None = None,
                 decode_times: Any = True, chunks: Any = None,
                 storage_options: Mapping[str, Any] | None = None, **kwargs: Any) -> xr.Dataset:
    """Open a store built by arcoforge as a lazily loaded, CF-decoded :class:`xarray.Dataset`.

    * ``open_dataset("ersst.zarr")`` -- a Zarr URL/path (``storage_options`` for fsspec);
    * ``open_dataset("icechunk://path")`` or an Icechunk repository;
    * ``open_dataset(store, version="1.2")`` -- a published version of a store;
    * ``open_dataset(catalog, "ersst-v5")`` -- dataset ``"ersst-v5"`` of a STAC catalog
      (its latest version, or ``version=``).

    The second positional argument is always a catalog dataset id, never a version: an id such
    as ``"2020"`` or ``"1.0"`` is looked up in the catalog, and naming a version of a store
    needs ``version=``.  ``decode_times=False`` keeps times as numbers (for calendars that
    cannot be decoded); other ``kwargs`` go to :func:`xarray.decode_cf`.
    """
    if dataset_id is not None:
        if not _is_catalog(target, kwargs.get("catalog_storage_options", storage_options)):
            raise TargetError(
                f"{target!s} is not a STAC catalog (it has no catalog.json), so {dataset_id!r} "
                "cannot be a dataset id of it. To open a published version of a store, name it: "
                f"open_dataset({str(target)!r}, version={dataset_id!r})."
            )
        from arcoforge.catalog import open_dataset as open_from_catalog

        return open_from_catalog(target, dataset_id, version, decode_times=decode_times,
                                 chunks=chunks, storage_options=storage_options, **kwargs)
    from arcoforge.forge.targets.open import open_raw_store

    raw = open_raw_store(target, version=version, chunks=chunks, storage_options=storage_options)
    ds = restore_attr_types(raw)
    return xr.decode_cf(ds, decode_times=decode_times, **kwargs)


def _is_catalog(target: Any, storage_options: Mapping[str, Any] | None) -> bool:
    """Whether ``target`` is a STAC catalog: a folder/URL with a ``catalog.json``, or the
    ``catalog.json`` itself."""
    if not isinstance(target, (str, os.PathLike)):
        return False
    url = os.fspath(target)
    if url.endswith(".json"):
        return True
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return bool(fs.exists(path.rstrip("/") + "/catalog.json"))
