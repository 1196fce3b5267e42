"""Intake 2 data types and readers for arcoforge datasets and for satellite files via satpy.

Catalogs written by :mod:`arcoforge.catalog.intake` name these classes
(``arcoforge.catalog.intake_readers:ArcoforgeReader`` ...), so anyone with arcoforge installed
can open them with plain ``intake.from_yaml_file(path)["name"].read()``:

* :class:`ArcoforgeStore` + :class:`ArcoforgeReader`: a store built by arcoforge (Zarr or
  Icechunk), opened with :func:`arcoforge.open_dataset` (attribute types restored, optional
  ``version=``);
* :class:`ArcoforgeCatalogDataset` + :class:`ArcoforgeReader`: dataset ``dataset_id`` of an
  arcoforge STAC catalog, opened by id (the catalog decides which version is current);
* :class:`SatelliteGranule` + :class:`SatpyReader`: raw instrument files read by a satpy reader
  into an ``xarray.Dataset`` (:func:`arcoforge.regrid.satpy_io.open_satpy`); satpy (GPL) is
  imported only when such an entry is read.

This module imports intake (``pip install 'arcoforge[intake]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from intake.readers import datatypes  # type: ignore[import-untyped]
from intake.readers.readers import BaseReader  # type: ignore[import-untyped]

__all__ = ["ArcoforgeCatalogDataset", "ArcoforgeReader", "ArcoforgeStore", "SatelliteGranule",
           "SatpyReader"]


class ArcoforgeStore(datatypes.FileData):  # type: ignore[misc]
    """A store built by arcoforge (a Zarr path/URL or ``icechunk://...``)."""

    structure = {"array"}

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None,
                 version: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(url, storage_options=storage_options, metadata=metadata)
        self.version = version


class ArcoforgeCatalogDataset(datatypes.BaseData):  # type: ignore[misc]
    """Dataset ``dataset_id`` of an arcoforge STAC catalog at ``catalog``."""

    structure = {"array"}

    def __init__(self, catalog: str, dataset_id: str, version: str | None = None,
                 storage_options: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(metadata=metadata)
        self.catalog = catalog
        self.dataset_id = dataset_id
        self.version = version
        self.storage_options = storage_options


class ArcoforgeReader(BaseReader):  # type: ignore[misc]
    """Open an arcoforge store or catalog dataset as a lazily loaded ``xarray.Dataset``."""

    implements = {ArcoforgeStore, ArcoforgeCatalogDataset}
    imports = {"arcoforge", "xarray"}
    output_instance = "xarray:Dataset"
    func = "arcoforge.open:open_dataset"

    def _read(self, data: Any, **kw: Any) -> Any:
        if isinstance(data, ArcoforgeCatalogDataset):
            from arcoforge.catalog.search import open_dataset as open_by_id

            version = kw.pop("version", None) or data.version
            return open_by_id(data.catalog, data.dataset_id, version,
                              catalog_storage_options=data.storage_options, **kw)
        from arcoforge.open import open_dataset

        version = kw.pop("version", None) or data.version
        return open_dataset(data.url, version=version, storage_options=data.storage_options,
                            **kw)


class SatelliteGranule(datatypes.FileData):  # type: ignore[misc]
    """Raw instrument files of one granule, read by satpy reader ``reader``."""

    structure = {"array"}

    def __init__(self, url: str | Sequence[str], reader: str,
                 storage_options: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__([url] if isinstance(url, str) else list(url),
                         storage_options=storage_options, metadata=metadata)
        self.reader = reader


class SatpyReader(BaseReader):  # type: ignore[misc]
    """Read a :class:`SatelliteGranule` through ``satpy.Scene`` into an ``xarray.Dataset``
    (geolocation as ``lon``/``lat``), ready for ``ds.arcoforge.resample``."""

    implements = {SatelliteGranule}
    imports = {"satpy", "arcoforge"}
    output_instance = "xarray:Dataset"
    func = "arcoforge.regrid.satpy_io:open_satpy"

    def _read(self, data: Any, datasets: Sequence[str] | None = None,
              reader_kwargs: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        from arcoforge.regrid.satpy_io import open_satpy

        return open_satpy(data.url, data.reader, datasets, reader_kwargs=reader_kwargs)
