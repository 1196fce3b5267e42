"""Sources seen through a recipe's transforms: their schema (scan) and raw slices (store tasks).

Without transforms the forge reads files directly (:mod:`arcoforge.forge.io.readers`).  With
transforms, each source is opened lazily (dask-backed, nothing read yet), transformed
(:func:`~arcoforge.forge.transforms.apply_transforms`), and then read exactly like a file:
:func:`scan_transformed` gives its :class:`~arcoforge.forge.schema.FileSchema`,
:class:`TransformedFile` its raw values slice by slice.  Only the slices a task needs are read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.forge.io.formats import (
    _OPEN_LOCK,
    _reader_for_filters,
    detect_engine,
)
from arcoforge.forge.io.integrity import check_complete
from arcoforge.forge.io.readers import _explain, dataset_schema, open_raw, reader_kwargs
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import FileSchema
from arcoforge.forge.transforms import Transform, apply_transforms

__all__ = ["open_transformed", "scan_transformed", "schema_of", "TransformedFile"]


def _values(var: xr.Variable) -> np.ndarray:
    """Compute ``var`` in this thread (no dask pool inside an engine's worker)."""
    import dask

    with _OPEN_LOCK, dask.config.set(scheduler="synchronous"):
        return np.asarray(var.values)


def open_transformed(path: str, engine: str, open_kwargs: Mapping[str, Any] | None,
                     url: str, transforms: Sequence[Transform], index: Index,
                     cache_dir: str | None = None) -> xr.Dataset:
    """The raw dataset of ``path`` after ``transforms`` (lazy: dask-backed)."""
    kwargs = reader_kwargs(open_kwargs)
    group = kwargs.pop("group", None)
    engine = _reader_for_filters(path, engine, url, group)
    if group:
        kwargs["group"] = group
    kwargs.setdefault("chunks", {})
    raw = open_raw(path, engine, kwargs, url, cache_dir)
    raw.encoding["group"] = str(group or "")  # which group transforms see (OnGroup)
    try:
        import dask

        # decoding reads a little (a time variable's last value): in this thread and under
        # the one lock every netCDF/HDF5 call of arcoforge takes -- two threads inside the
        # netCDF library at once crash the process
        with _OPEN_LOCK, dask.config.set(scheduler="synchronous"):
            return apply_transforms(transforms, index, raw, url)
    except BaseException:
        raw.close()
        raise


def schema_of(ds: xr.Dataset, index: Index, url: str, path: str, size: int, sha256: str,
              concat_dim: str | None) -> FileSchema:
    """The :class:`FileSchema` of a raw (transformed) dataset."""
    dims, variables, attrs, values, digests = dataset_schema(ds, url, concat_dim, _values)
    return FileSchema(index=index, url=url, path=path, size=size, sha256=sha256, dims=dims,
                      variables=variables, attrs=attrs, concat_values=values,
                      static_digests=digests)


def scan_transformed(index: Index, url: str, path: str, size: int, sha256: str,
                     concat_dim: str | None, file_type: str, open_kwargs: Mapping[str, Any],
                     transforms: Sequence[Transform], cache_dir: str | None = None,
                     ) -> FileSchema:
    """Like :func:`~arcoforge.forge.io.readers.scan_file`, through ``transforms``."""
    engine = detect_engine(path, file_type, url)
    check_complete(path, url)
    ds = open_transformed(path, engine, open_kwargs, url, transforms, index, cache_dir)
    with ds:
        return schema_of(ds, index, url, path, size, sha256, concat_dim)


class TransformedFile:
    """A source read through the recipe's transforms; the interface of
    :class:`~arcoforge.forge.io.readers.RawFile` (``read(name, key)``, ``close()``)."""

    def __init__(self, path: str, engine: str, open_kwargs: Mapping[str, Any] | None,
                 url: str, transforms: Sequence[Transform], index: Index,
                 cache_dir: str | None = None) -> None:
        self.url = url
        self._path = path
        self._engine = engine
        self._ds = open_transformed(path, engine, open_kwargs, url, transforms, index,
                                    cache_dir)

    def read(self, name: str, key: tuple[slice, ...]) -> np.ndarray:
        """The raw values of ``name[key]`` after the transforms."""
        try:
            var = self._ds.variables[name]
            return _values(var[key] if key else var)
        except Exception as err:  # noqa: BLE001
            raise _explain(err, self._path, self._engine, self.url,
                           f"read variable {name!r} from {self.url}") from err

    def close(self) -> None:
        with _OPEN_LOCK:
            self._ds.close()
