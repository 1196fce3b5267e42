"""Open the raw (undecoded) dataset of any target kind."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import xarray as xr

__all__ = ["open_raw_store"]


def open_raw_store(target: Any, version: str | None = None, chunks: Any = None,
                   storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """``xr.open_zarr(..., decode_cf=False)`` for a Zarr URL, a versioned Zarr or Icechunk."""
    url = str(target)
    if (url.startswith("icechunk://") or type(target).__name__ == "Repository"
            or getattr(target, "kind", None) == "icechunk"):
        from arcoforge.forge.targets.icechunk import open_raw

        return open_raw(target, version=version, chunks=chunks)  # type: ignore[no-any-return]
    if version is not None:
        from arcoforge.forge.versions import version_url

        url = version_url(url, version, storage_options)
    with warnings.catch_warnings():
        # arcoforge writes consolidated metadata on purpose (one read opens the whole store);
        # zarr warns on every open that it is not (yet) part of the v3 specification
        warnings.filterwarnings("ignore", message="Consolidated metadata", module="zarr")
        return xr.open_zarr(url, decode_cf=False, consolidated=True, chunks=chunks,
                            storage_options=dict(storage_options) if storage_options else None,
                            zarr_format=3)
