"""Open the raw (undecoded) dataset of any target kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from arcoforge.errors import ArcoforgeError, NotPublishedError
from arcoforge.forge.targets.base import resolve_target

__all__ = ["open_raw_store"]


def open_raw_store(target: Any, version: str | None = None, chunks: Any = None,
                   storage_options: Mapping[str, Any] | None = None,
                   group: str | None = None) -> xr.Dataset:
    """The raw (``decode_cf=False``) dataset of the latest version of ``target`` (a Zarr URL,
    an ``icechunk://`` URL, a repository or a target object), or of ``version``; of its Zarr
    group ``group`` when given."""
    tgt = resolve_target(target, storage_options)
    try:
        if group:
            return tgt.open(version=version, chunks=chunks, group=group)
        return tgt.open(version=version, chunks=chunks)
    except ArcoforgeError:
        raise
    except Exception as err:
        if _published(tgt):
            raise
        unfinished = _unfinished(tgt)
        raise NotPublishedError(
            f"nothing is published at {tgt.url}"
            + (f": a build was started (its state is at {unfinished}) but has not published "
               "a version yet; run the same bake again to resume it" if unfinished else
               ": build it with arcoforge.bake() first (or check the path)")
        ) from err


def _published(tgt: Any) -> bool:
    try:
        return tgt.exists()
    except Exception:  # noqa: BLE001 - the open's own error is the one to show then
        return True


def _unfinished(tgt: Any) -> str | None:
    try:
        return tgt.unfinished_location()
    except Exception:  # noqa: BLE001 - only for the message
        return None
