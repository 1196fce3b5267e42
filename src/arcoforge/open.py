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

from arcoforge.errors import ConfigError, NotFoundError, TargetError
from arcoforge.forge.schema import attrs_from_json, group_path
from arcoforge.provenance import ATTR_TYPES, GROUPS

__all__ = ["open_dataset", "open_datatree", "store_groups", "restore_attr_types",
           "ATTR_TYPES_KEY"]

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
                 storage_options: Mapping[str, Any] | None = None, group: str | None = None,
                 **kwargs: Any) -> xr.Dataset:
    """Open a store built by arcoforge as a lazily loaded, CF-decoded :class:`xarray.Dataset`.

    * ``open_dataset("ersst.zarr")`` -- a Zarr URL/path (``storage_options`` for fsspec);
    * ``open_dataset("icechunk://path")`` or an Icechunk repository;
    * ``open_dataset(store, version="1.2")`` -- a published version of a store;
    * ``open_dataset(catalog, "ersst-v5")`` -- dataset ``"ersst-v5"`` of a STAC catalog
      (its latest version, or ``version=``).

    The second positional argument is always a catalog dataset id, never a version: an id such
    as ``"2020"`` or ``"1.0"`` is looked up in the catalog, and naming a version of a store
    needs ``version=``.  ``decode_times=False`` keeps times as numbers (for calendars that
    cannot be decoded); other ``kwargs`` go to :func:`xarray.decode_cf`.  ``group`` opens one
    Zarr group of a store built with ``ZarrRecipe(groups=...)`` (e.g. ``"data_01/ku"``);
    :func:`open_datatree` opens them all.
    """
    if dataset_id is not None:
        if group:
            kwargs["group"] = group
        if not _is_catalog(target, kwargs.get("catalog_storage_options", storage_options)):
            raise TargetError(
                f"{target!s} is not a STAC catalog (it has no catalog.json), so {dataset_id!r} "
                "cannot be a dataset id of it. To open a published version of a store, name it: "
                f"open_dataset({str(target)!r}, version={dataset_id!r})."
            )
        from arcoforge.catalog import open_dataset as open_from_catalog

        return open_from_catalog(target, dataset_id, version, decode_times=decode_times,
                                 chunks=chunks, storage_options=storage_options, **kwargs)
    group = group_path(group or "")
    if group:
        groups = store_groups(target, version=version, storage_options=storage_options)
        if group not in groups:
            raise NotFoundError(
                f"{target!s} has no group {group!r}; "
                + (f"its groups are {groups}" if groups else
                   "it was built without groups (its variables are at the root)"))
    return _open_decoded(target, version, chunks, storage_options, group or None,
                         decode_times, kwargs)


def _open_decoded(target: Any, version: str | None, chunks: Any,
                  storage_options: Mapping[str, Any] | None, group: str | None,
                  decode_times: Any, kwargs: Mapping[str, Any]) -> xr.Dataset:
    """The raw dataset (of ``group``), its attribute types restored, CF-decoded."""
    from arcoforge.forge.targets.open import open_raw_store

    if isinstance(target, str | os.PathLike) and os.fspath(target).endswith(".json"):
        from arcoforge.forge.virtual.kerchunk import is_kerchunk_file, open_kerchunk

        if is_kerchunk_file(target):  # VirtualRecipe(output="kerchunk"): one JSON, no history
            if version is not None or group:
                raise ConfigError(f"{target!s} is a kerchunk reference file: it has no "
                                  f"{'versions' if version is not None else 'groups'}")
            return open_kerchunk(target, decode_times=decode_times, chunks=chunks, **kwargs)

    raw = open_raw_store(target, version=version, chunks=chunks, storage_options=storage_options,
                         group=group)
    return xr.decode_cf(restore_attr_types(raw), decode_times=decode_times, **kwargs)


def store_groups(target: Any, *, version: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The Zarr groups of a store built with ``ZarrRecipe(groups=...)``, parents first (empty
    for a store without groups)."""
    from arcoforge.forge.targets.open import open_raw_store

    with open_raw_store(target, version=version, storage_options=storage_options) as root:
        return [str(g) for g in root.attrs.get(GROUPS) or []]


def open_datatree(target: Any, dataset_id: str | None = None, *, version: str | None = None,
                  decode_times: Any = True, chunks: Any = None,
                  storage_options: Mapping[str, Any] | None = None,
                  catalog_storage_options: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> xr.DataTree:
    """Open every group of a store built by arcoforge as an :class:`xarray.DataTree` (the
    root holds the dataset's attributes; each Zarr group of a ``ZarrRecipe(groups=...)``
    build is a node, decoded as :func:`open_dataset` decodes it).  A store without groups
    gives a tree of one node.  ``open_datatree(catalog, "s6a-passes")`` opens dataset
    ``"s6a-passes"`` of a STAC catalog (its latest version, or ``version=``)."""
    if dataset_id is not None:
        if not _is_catalog(target, catalog_storage_options or storage_options):
            raise TargetError(f"{target!s} is not a STAC catalog (it has no catalog.json), so "
                              f"{dataset_id!r} cannot be a dataset id of it")
        from arcoforge.catalog.search import store_of

        target, version = store_of(target, dataset_id, version, catalog_storage_options)
    root = _open_decoded(target, version, chunks, storage_options, None, decode_times, kwargs)
    nodes = {"/": root}
    for g in root.attrs.get(GROUPS) or []:  # the groups the root lists: no check per group
        nodes["/" + str(g)] = _open_decoded(target, version, chunks, storage_options, str(g),
                                            decode_times, kwargs)
    return xr.DataTree.from_dict(nodes)


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
