"""HDF4 (the HDF Group's "HDF4" SD interface) read through pyhdf, as an xarray backend.

HDF4 files (``\\x0e\\x03\\x13\\x01`` magic) are still common in older satellite archives
(MODIS, AVHRR-era and PO.DAAC products).  :class:`HDF4BackendEntrypoint` exposes every
scientific data set (SDS) of a file as an :class:`xarray.Variable`:

* dimensions keep their HDF4 names (``fakeDim0`` ... when the producer gave none; an SDS that
  is a dimension scale becomes that dimension's coordinate);
* values keep the on-disk dtype (int16 stays int16) and are read lazily, slice by slice, under
  :data:`arcoforge.forge.io.formats._OPEN_LOCK` (the HDF4 library is not thread-safe);
* attributes keep their HDF4 number types (``scale_factor`` stored as float64 is a
  ``numpy.float64``, ``_FillValue`` of an int16 SDS an ``numpy.int16``), so xarray's CF
  decoding treats them as it would the same attributes in a NetCDF file; text attributes lose
  the trailing NUL bytes some HDF4 writers store (C string terminators, not text).

Caveat: the HDF4 calibration convention is ``value = scale_factor * (stored - add_offset)``,
CF's (which xarray applies when decoding) is ``stored * scale_factor + add_offset``.  They agree
when ``add_offset`` is 0 (both files of ``shared/data/hdf4``); otherwise decode the raw values
(``decode_cf=False``) by the HDF4 rule.  The HDF-EOS structure metadata is kept as the text
attribute it is; Vdata/Vgroup tables are not exposed.  ``pyhdf`` is an
optional dependency: ``pip install 'arcoforge[hdf4]'``.

>>> import xarray as xr                                                   # doctest: +SKIP
>>> xr.open_dataset("A803sn1d.hdf", engine=HDF4BackendEntrypoint)        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import AbstractDataStore, BackendArray, BackendEntrypoint
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing

from arcoforge.errors import MissingDependencyError

__all__ = ["HDF4_ENGINE", "HDF4BackendEntrypoint", "open_hdf4", "require_pyhdf"]

#: the engine name arcoforge uses for HDF4 (``formats.xarray_engine`` maps it to the backend)
HDF4_ENGINE = "arcoforge_hdf4"

_HDF4_MAGIC = b"\x0e\x03\x13\x01"
_HINT = "reading HDF4 needs pyhdf: pip install 'arcoforge[hdf4]'"

#: HDF4 number types (hntdefs.h) -> numpy dtypes, for attributes
_HDF4_TYPES = {
    3: "u1",  # DFNT_UCHAR8
    4: "S1",  # DFNT_CHAR8
    5: "<f4",  # DFNT_FLOAT32
    6: "<f8",  # DFNT_FLOAT64
    20: "i1",  # DFNT_INT8
    21: "u1",  # DFNT_UINT8
    22: "<i2",  # DFNT_INT16
    23: "<u2",  # DFNT_UINT16
    24: "<i4",  # DFNT_INT32
    25: "<u4",  # DFNT_UINT32
}


def require_pyhdf(url: str) -> Any:
    """``pyhdf.SD``, or :class:`MissingDependencyError` naming ``url`` and the fix."""
    try:
        return importlib.import_module("pyhdf.SD")
    except ImportError as err:
        raise MissingDependencyError(f"{url} is an HDF4 file; {_HINT}") from err


def _lock() -> Any:
    from arcoforge.forge.io.formats import _OPEN_LOCK

    return _OPEN_LOCK


def _attr_value(value: Any, type_code: int) -> Any:
    """An HDF4 attribute as a numpy scalar/array of its declared type (text as ``str``)."""
    if isinstance(value, (bytes, str)) or type_code in (4,):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return text.rstrip("\x00")
    dtype = _HDF4_TYPES.get(type_code)
    arr = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
    return arr[()] if arr.ndim == 0 else arr


def _attributes(obj: Any) -> dict[str, Any]:
    """``{name: value}`` of an SD or SDS object, typed by each attribute's HDF4 number type."""
    out: dict[str, Any] = {}
    for name, (value, _index, type_code, _count) in obj.attributes(full=1).items():
        out[str(name)] = _attr_value(value, int(type_code))
    return out


class HDF4Array(BackendArray):
    """One SDS, read lazily: basic (slice/integer) indexing, on-disk dtype."""

    def __init__(self, store: HDF4DataStore, name: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.store = store
        self.name = name
        self.shape = shape
        self.dtype = dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                  self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        if not self.shape:
            return np.asarray(self.store.read(self.name, ()), dtype=self.dtype)
        full = tuple(slice(0, n) if k == slice(None) else k for k, n in zip(key, self.shape))
        if any(isinstance(k, slice) and k.start is not None and k.stop is not None
               and k.start >= k.stop for k in full):
            shape = [len(range(*k.indices(n))) for k, n in zip(full, self.shape)
                     if isinstance(k, slice)]
            return np.empty(shape, dtype=self.dtype)  # pyhdf refuses empty selections
        return np.asarray(self.store.read(self.name, full), dtype=self.dtype)


class HDF4DataStore(AbstractDataStore):
    """An HDF4 file opened read-only with pyhdf's SD interface."""

    def __init__(self, path: str, url: str | None = None) -> None:
        sd_mod = require_pyhdf(url or path)
        self.path = path
        self.url = url or path
        with _lock():
            self._sd = sd_mod.SD(path, sd_mod.SDC.READ)

    def read(self, name: str, key: tuple[Any, ...]) -> np.ndarray:
        """``name[key]`` as stored (an SDS is selected, read and released under the lock)."""
        with _lock():
            sds = self._sd.select(name)
            try:
                return np.asarray(sds[key] if key else sds.get())
            finally:
                sds.endaccess()

    def load(self) -> tuple[dict[str, xr.Variable], dict[str, Any]]:  # type: ignore[override]
        variables: dict[str, xr.Variable] = {}
        with _lock():
            attrs = _attributes(self._sd)
            for name in self._sd.datasets():
                sds = self._sd.select(name)
                try:
                    sds_name, rank, dims, _type, _nattrs = sds.info()
                    shape = tuple(int(n) for n in (dims if rank > 1 else [dims]))
                    dim_names = tuple(str(sds.dim(i).info()[0]) for i in range(rank))
                    dtype = np.dtype(_HDF4_TYPES.get(int(_type), "f8")).newbyteorder("=")
                    if int(_type) == 4:
                        dtype = np.dtype("S1")
                    var_attrs = _attributes(sds)
                    if "_FillValue" not in var_attrs:
                        try:
                            fill = sds.getfillvalue()
                        except Exception:  # noqa: BLE001 - pyhdf raises HDF4Error: none set
                            fill = None
                        if fill is not None:
                            var_attrs["_FillValue"] = np.asarray(fill, dtype=dtype)[()]
                    chunking: tuple[int, ...] | None = None
                    try:
                        info = sds.getchunkinfo() if hasattr(sds, "getchunkinfo") else None
                        if info:
                            chunking = tuple(int(c) for c in info)
                    except Exception:  # noqa: BLE001 - not chunked
                        chunking = None
                finally:
                    sds.endaccess()
                data = indexing.LazilyIndexedArray(HDF4Array(self, str(sds_name), shape, dtype))
                encoding: dict[str, Any] = {"dtype": dtype, "source": self.path}
                if chunking:
                    encoding["chunksizes"] = chunking
                variables[str(sds_name)] = xr.Variable(dim_names, data, var_attrs, encoding)
        return variables, attrs

    def get_dimensions(self) -> dict[str, int]:  # type: ignore[override]
        variables, _ = self.load()
        return {str(d): n for v in variables.values() for d, n in zip(v.dims, v.shape)}

    def close(self) -> None:
        sd = getattr(self, "_sd", None)
        if sd is not None:
            with _lock():
                sd.end()
            self._sd = None


class HDF4BackendEntrypoint(BackendEntrypoint):
    """xarray backend for HDF4 files (SD interface), read through pyhdf.

    Use it as ``xr.open_dataset(path, engine=HDF4BackendEntrypoint)``; arcoforge picks it by
    itself for files that start with the HDF4 signature (or ``file_type="hdf4"``).
    """

    description = "HDF4 scientific data sets (SD interface) through pyhdf (arcoforge)"
    url = "https://fhs.github.io/pyhdf/"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "mask_and_scale",
                               "decode_times", "concat_characters", "decode_coords",
                               "use_cftime", "decode_timedelta")

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            path = os.fspath(filename_or_obj)
            with open(path, "rb") as fh:
                return fh.read(4) == _HDF4_MAGIC
        except (OSError, TypeError):
            return False

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str],
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
    ) -> xr.Dataset:
        store = HDF4DataStore(os.fspath(filename_or_obj))
        try:
            ds = StoreBackendEntrypoint().open_dataset(
                store, mask_and_scale=mask_and_scale, decode_times=decode_times,
                concat_characters=concat_characters, decode_coords=decode_coords,
                drop_variables=drop_variables, use_cftime=use_cftime,
                decode_timedelta=decode_timedelta)
        except Exception:
            store.close()
            raise
        return ds


def open_hdf4(path: str | os.PathLike[str], **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset(path, engine=HDF4BackendEntrypoint, **kwargs)``."""
    return xr.open_dataset(path, engine=HDF4BackendEntrypoint, **kwargs)
