"""Open a fetched (local) source file *raw* and describe or slice it.

Raw means ``decode_cf=False``: values as stored on disk (packed integers, fill values, numeric
times) with every attribute kept, so they can be copied into the target unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import SourceReadError
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import FileSchema, SchemaError, VariableSchema

__all__ = ["SourceReadError", "RawFile", "detect_engine", "open_raw", "scan_file", "read_slice"]

_MAGIC = {
    b"CDF\x01": "netcdf4",
    b"CDF\x02": "netcdf4",
    b"CDF\x05": "netcdf4",
    b"\x89HDF": "netcdf4",
    b"GRIB": "cfgrib",
}

_FILE_TYPE_ENGINE = {"netcdf4": "netcdf4", "netcdf3": "netcdf4", "hdf5": "h5netcdf", "grib": "cfgrib"}

# HDF5 (and so netCDF4) is not thread-safe: every open, metadata read, slice read and close that
# arcoforge makes goes through this one lock.  Threads still overlap reads with compression and
# writes; processes (``processes=True``) read in parallel.
_OPEN_LOCK = threading.RLock()


def detect_engine(path: str, file_type: str = "auto", url: str | None = None) -> str:
    """The xarray engine for ``path``: from ``file_type``, or from the file's first bytes."""
    if file_type != "auto":
        try:
            return _FILE_TYPE_ENGINE[file_type]
        except KeyError:
            raise ValueError(
                f"unknown file_type {file_type!r}; use one of {sorted(_FILE_TYPE_ENGINE)} or 'auto'"
            ) from None
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magic, engine in _MAGIC.items():
        if head.startswith(magic):
            return engine
    raise SourceReadError(
        f"{url or path} is not a NetCDF, HDF5 or GRIB file (it starts with {head[:8]!r}); "
        "it may be an HTML error page, truncated or corrupt. Check the URL, or delete the cached "
        "copy so it is downloaded again."
    )


def open_raw(path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
             url: str | None = None) -> xr.Dataset:
    """Open ``path`` without CF decoding; errors name the source and suggest a fix."""
    kwargs = dict(open_kwargs or {})
    kwargs.setdefault("cache", False)
    try:
        with _OPEN_LOCK:
            return xr.open_dataset(path, engine=engine, decode_cf=False, mask_and_scale=False,
                                   decode_times=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise SourceReadError(
            f"cannot open {url or path} as {engine}: {err}. The file may be truncated or corrupt: "
            "delete the cached copy and download it again, or remove it from the pattern."
        ) from err


def _chunks_of(var: xr.Variable) -> tuple[int, ...] | None:
    chunks = var.encoding.get("chunksizes") or var.encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        chunks = tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape))
    return tuple(int(c) for c in chunks) if chunks else None


def _string_check(name: str, dtype: np.dtype, dims: tuple[str, ...], concat_dim: str | None,
                  url: str) -> None:
    if dtype.kind in "OSU" and dims and concat_dim in dims:
        raise SchemaError(
            f"variable {name!r} in {url} holds strings along {concat_dim!r}; "
            "string variables along the concat dimension are not supported yet."
        )


def _concat_values(read: Any, concat_dim: str, url: str) -> np.ndarray:
    try:
        return np.asarray(read())
    except Exception as err:  # noqa: BLE001
        raise SourceReadError(
            f"cannot read coordinate {concat_dim!r} from {url}: {err}. The file may be "
            "truncated or corrupt."
        ) from err


def _scan_netcdf4(path: str, group: str | None, url: str,
                  concat_dim: str | None) -> tuple[dict[str, int], dict[str, VariableSchema],
                                                   dict[str, Any], np.ndarray | None]:
    """Metadata straight from the netCDF4 library: what xarray's raw view shows, ~5x faster."""
    import netCDF4

    try:
        root = netCDF4.Dataset(path, "r")
    except Exception as err:  # noqa: BLE001
        raise SourceReadError(
            f"cannot open {url} as netcdf4: {err}. The file may be truncated or corrupt: "
            "delete the cached copy and download it again, or remove it from the pattern."
        ) from err
    try:
        nc = root[group] if group else root
        nc.set_auto_maskandscale(False)
        nc.set_always_mask(False)
        nc.set_auto_chartostring(False)
        dims = {str(k): len(v) for k, v in nc.dimensions.items()}
        variables = {}
        for name, var in nc.variables.items():
            dtype = np.dtype(object) if var.dtype is str else np.dtype(var.dtype)
            vdims = tuple(str(d) for d in var.dimensions)
            _string_check(name, dtype, vdims, concat_dim, url)
            attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            attrs.pop("least_significant_digit", None)  # xarray keeps it as encoding
            chunking = var.chunking()
            variables[str(name)] = VariableSchema(
                name=str(name), dims=vdims, shape=tuple(int(n) for n in var.shape),
                dtype=dtype.str, attrs=attrs,
                source_chunks=tuple(int(c) for c in chunking)
                if isinstance(chunking, list) else None,
            )
            for d, n in zip(vdims, var.shape):
                dims.setdefault(d, int(n))  # dimensions of parent groups
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        values = None
        if concat_dim is not None and concat_dim in nc.variables \
                and nc.variables[concat_dim].ndim == 1:
            values = _concat_values(lambda: nc.variables[concat_dim][:], concat_dim, url)
        return dims, variables, attrs, values
    finally:
        root.close()


def _scan_xarray(path: str, engine: str, open_kwargs: Mapping[str, Any] | None, url: str,
                 concat_dim: str | None) -> tuple[dict[str, int], dict[str, VariableSchema],
                                                  dict[str, Any], np.ndarray | None]:
    ds = open_raw(path, engine, open_kwargs, url)
    with ds:
        variables = {}
        for name, var in ds.variables.items():
            vdims = tuple(str(d) for d in var.dims)
            _string_check(str(name), var.dtype, vdims, concat_dim, url)
            variables[str(name)] = VariableSchema(
                name=str(name), dims=vdims, shape=tuple(int(n) for n in var.shape),
                dtype=var.dtype.str, attrs=dict(var.attrs), source_chunks=_chunks_of(var),
            )
        values = None
        if concat_dim is not None and concat_dim in ds.variables and ds[concat_dim].ndim == 1:
            values = _concat_values(lambda: ds[concat_dim].values, concat_dim, url)
        dims = {str(k): int(v) for k, v in ds.sizes.items()}
        return dims, variables, dict(ds.attrs), values


def scan_file(index: Index, url: str, path: str, size: int, sha256: str, concat_dim: str | None,
              file_type: str = "auto", open_kwargs: Mapping[str, Any] | None = None) -> FileSchema:
    """Read one file's metadata (and its concat coordinate values) into a :class:`FileSchema`."""
    engine = detect_engine(path, file_type, url)
    kwargs = dict(open_kwargs or {})
    group = kwargs.pop("group", None)
    with _OPEN_LOCK:
        if engine == "netcdf4" and not kwargs:
            dims, variables, attrs, values = _scan_netcdf4(path, group, url, concat_dim)
        else:
            dims, variables, attrs, values = _scan_xarray(path, engine, open_kwargs, url,
                                                          concat_dim)
    return FileSchema(index=index, url=url, path=path, size=size, sha256=sha256, dims=dims,
                      variables=variables, attrs=attrs, concat_values=values)


def read_slice(ds: xr.Dataset, name: str, key: tuple[slice, ...], url: str) -> np.ndarray:
    """Read ``ds[name][key]`` as a numpy array of the on-disk dtype."""
    try:
        with _OPEN_LOCK:
            return np.asarray(ds.variables[name][key].values)
    except Exception as err:  # noqa: BLE001
        raise SourceReadError(
            f"cannot read variable {name!r} from {url}: {err}. The file may be truncated or "
            "corrupt: delete the cached copy and download it again."
        ) from err


class RawFile:
    """A source opened for reading raw slices, as fast as the format allows.

    NetCDF (3 and 4) files are read with the netCDF4 library directly (no CF decoding, no
    masking: the bytes on disk); other engines go through xarray's raw view.  Both give the same
    values and dtypes as :func:`open_raw`.
    """

    def __init__(self, path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
                 url: str | None = None) -> None:
        self.url = url or path
        kwargs = dict(open_kwargs or {})
        group = kwargs.pop("group", None)
        self._nc: Any = None
        self._ds: xr.Dataset | None = None
        if engine == "netcdf4" and not kwargs:
            import netCDF4

            try:
                with _OPEN_LOCK:
                    nc = netCDF4.Dataset(path, "r")
                    nc.set_auto_maskandscale(False)
                    nc.set_always_mask(False)
                    nc.set_auto_chartostring(False)
                    self._nc = nc[group] if group else nc
                    self._root = nc
            except Exception as err:  # noqa: BLE001
                raise SourceReadError(
                    f"cannot open {self.url} as netCDF: {err}. The file may be truncated or "
                    "corrupt: delete the cached copy and download it again."
                ) from err
        else:
            if group:
                kwargs["group"] = group
            self._ds = open_raw(path, engine, kwargs, url)

    def read(self, name: str, key: tuple[slice, ...]) -> np.ndarray:
        """The raw values of ``name[key]`` (on-disk dtype)."""
        if self._ds is not None:
            return read_slice(self._ds, name, key, self.url)
        try:
            with _OPEN_LOCK:
                return np.asarray(self._nc.variables[name][key])
        except Exception as err:  # noqa: BLE001
            raise SourceReadError(
                f"cannot read variable {name!r} from {self.url}: {err}. The file may be "
                "truncated or corrupt: delete the cached copy and download it again."
            ) from err

    def close(self) -> None:
        with _OPEN_LOCK:
            if self._ds is not None:
                self._ds.close()
            if self._nc is not None:
                self._root.close()
