"""Open the raw (undecoded) dataset of any target kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from arcoforge.forge.targets.base import resolve_target

__all__ = ["open_raw_store"]


def open_raw_store(target: Any, version: str | None = None, chunks: Any = None,
                   storage_options: Mapping[str, Any] | None = None,
                   group: str | None = None) -> xr.Dataset:
    """The raw (``decode_cf=False``) dataset of the latest version of ``target`` (a Zarr URL,
    an ``icechunk://`` URL, a repository or a target object), or of ``version``; of its Zarr
    group ``group`` when given."""
    tgt = resolve_target(target, storage_options)
    if group:
        return tgt.open(version=version, chunks=chunks, group=group)
    return tgt.open(version=version, chunks=chunks)
