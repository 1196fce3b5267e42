"""Intake 2 catalogs of arcoforge datasets: export, search results, satellite granules.

>>> cat = catalog_to_intake("catalog/")           # every dataset of the STAC catalog
>>> write_intake_catalog(cat, "catalog.yaml")
>>> import intake; intake.from_yaml_file("catalog.yaml")["ersst-v5"].read()
>>> search_to_intake(search("catalog/", variables=["sst"]), "catalog/")   # a search result
>>> dataset_to_intake("ersst.zarr", "ersst")      # one built store
>>> granules_to_intake({"orbit-45145": ["ascat_...nc"]}, reader="satpy_cf_nc")

Entries of the STAC catalog open *by id* through the catalog (so a reader always gets the
version the catalog calls current, or the ``version=`` it asks for), with the Collection's
title, description, extent, variables and versions as the entry's metadata.  The readers live
in :mod:`arcoforge.catalog.intake_readers`.  Needs ``pip install 'arcoforge[intake]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, NotFoundError
from ..regrid._deps import require

__all__ = [
    "catalog_to_intake",
    "dataset_to_intake",
    "granules_to_intake",
    "open_intake_catalog",
    "search_to_intake",
    "write_intake_catalog",
]


def _intake() -> Any:
    require("intake", "Intake catalogs")
    from . import intake_readers

    return intake_readers


def _root(catalog: Any) -> str:
    text = os.fspath(catalog) if isinstance(catalog, os.PathLike) else str(catalog)
    if "://" not in text:
        text = os.path.abspath(text)
    return text


def _summary_metadata(s: Any) -> dict[str, Any]:
    return {"title": s.title, "description": s.description, "license": s.license,
            "bbox": list(s.bbox), "interval": list(s.interval), "variables": list(s.variables),
            "version": s.version, "versions": list(s.versions), "keywords": list(s.keywords),
            "store": s.store}


def search_to_intake(results: Iterable[Any], catalog: Any, *,
                     storage_options: Mapping[str, Any] | None = None) -> Any:
    """An Intake catalog with one entry per search result (``CollectionSummary`` objects from
    :func:`arcoforge.catalog.search`), each opening its dataset by id through ``catalog``.

    Returns
    -------
    intake.readers.entry.Catalog
    """
    ir = _intake()
    import intake  # type: ignore[import-untyped]

    root = _root(catalog)
    cat = intake.entry.Catalog(metadata={"source": "arcoforge STAC catalog", "catalog": root})
    for s in results:
        data = ir.ArcoforgeCatalogDataset(root, s.id, storage_options=dict(
            storage_options or {}) or None, metadata=_summary_metadata(s))
        reader = ir.ArcoforgeReader(data, metadata=_summary_metadata(s))
        cat.add_entry(reader, name=s.id)
    return cat


def catalog_to_intake(catalog: Any, *, ids: Sequence[str] | None = None,
                      storage_options: Mapping[str, Any] | None = None) -> Any:
    """The whole arcoforge STAC catalog (or datasets ``ids`` of it) as an Intake catalog.

    Raises
    ------
    NotFoundError
        When one of ``ids`` is not in the catalog (the message lists those that are).
    """
    from .search import summaries

    found = summaries(catalog, storage_options)
    if ids is not None:
        known = {s.id for s in found}
        missing = [i for i in ids if i not in known]
        if missing:
            raise NotFoundError(f"catalog {catalog!s} has no datasets {missing} (datasets: "
                                f"{', '.join(sorted(known)) or 'none'})")
        found = [s for s in found if s.id in set(ids)]
    return search_to_intake(found, catalog, storage_options=storage_options)


def dataset_to_intake(target: Any, name: str, *, version: str | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      storage_options: Mapping[str, Any] | None = None) -> Any:
    """A one-entry Intake catalog for a store built by arcoforge (opened with
    :func:`arcoforge.open_dataset`; ``version`` pins a published version).

    Raises
    ------
    ConfigError
        When ``name`` is empty.
    """
    ir = _intake()
    import intake  # type: ignore[import-untyped]

    if not name:
        raise ConfigError("dataset_to_intake: give the entry a name")
    meta = dict(metadata or {})
    url = _root(target)
    data = ir.ArcoforgeStore(url, storage_options=dict(storage_options or {}) or None,
                             version=version, metadata=meta)
    cat = intake.entry.Catalog(metadata={"source": "arcoforge store"})
    cat.add_entry(ir.ArcoforgeReader(data, metadata=meta), name=name)
    return cat


def granules_to_intake(granules: Mapping[str, Sequence[str] | str], reader: str, *,
                       metadata: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """An Intake catalog listing raw instrument granules, each read through satpy's
    ``reader`` into an ``xarray.Dataset`` (satpy is needed only to read an entry).

    Parameters
    ----------
    granules
        Entry name -> the granule's file(s).
    reader
        satpy reader name.
    metadata
        Optional entry name -> metadata.
    """
    ir = _intake()
    import intake  # type: ignore[import-untyped]

    cat = intake.entry.Catalog(metadata={"source": "satellite granules", "reader": reader})
    for name, files in granules.items():
        files_list = [files] if isinstance(files, str) else list(files)
        files_list = [os.path.abspath(f) if "://" not in f else f for f in files_list]
        meta = dict((metadata or {}).get(name, {}))
        data = ir.SatelliteGranule(files_list, reader, metadata=meta)
        cat.add_entry(ir.SatpyReader(data, metadata=meta), name=name)
    return cat


def write_intake_catalog(cat: Any, path: str | os.PathLike[str], **storage_options: Any) -> str:
    """Write an Intake catalog as YAML; returns the path."""
    require("intake", "Intake catalogs")
    out = os.fspath(path)
    cat.to_yaml_file(out, **storage_options)
    return out


def open_intake_catalog(path: str | os.PathLike[str], **storage_options: Any) -> Any:
    """Open an Intake catalog YAML written by :func:`write_intake_catalog` (or anyone)."""
    intake = require("intake", "Intake catalogs")
    _intake()  # the reader classes must be importable by their names
    return intake.from_yaml_file(os.fspath(path), **storage_options)
