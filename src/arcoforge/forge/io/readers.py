"""Open a fetched (local) source file *raw* and describe or slice it.

Raw means ``decode_cf=False``: values as stored on disk (packed integers, fill values, numeric
times) with every attribute kept, so they can be copied into the target unchanged.

Before a file is opened its format is told from its first bytes (:mod:`.formats`) and it is
checked to be complete (:mod:`.integrity`), so that every failure names its real cause and the
fix: a file cut short, a GRIB file without cfgrib, an HDF5 filter plugin that is not installed,
an HDF4 file, a bad ``open_kwargs`` keyword, a NetCDF-4 type that cannot be stored faithfully.
This module explains failures and opens, scans and slices files.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr

from arcoforge.errors import (
    ArcoforgeError,
    ConfigError,
    SourceReadError,
    TruncatedFileError,
)
from arcoforge.forge.io.formats import (
    _OPEN_LOCK,
    _REFETCH,
    REMOTE_ENGINES,
    _check_netcdf4_type,
    _check_xarray_type,
    _hdf5_superblock_offset,
    _reader_for_filters,
    _require_cfgrib,
    detect_engine,
    grib_build_error,
    grib_open_kwargs,
    is_grib_build_error,
    require_hdf4,
    xarray_engine,
)
from arcoforge.forge.io.hdf4 import HDF4_ENGINE
from arcoforge.forge.io.integrity import check_complete
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import (
    FileSchema,
    VariableSchema,
    value_digest,
    wants_digest,
)

__all__ = ["SourceReadError", "RawFile", "check_complete", "detect_engine", "open_raw",
           "scan_file", "read_slice"]

# -- explaining failures -----------------------------------------------------------------------

_UNEXPECTED_KW = re.compile(r"unexpected keyword argument '([^']+)'")
#: keywords arcoforge sets itself: sources are always opened raw
#: xarray decoding options: they decide how values are *decoded*, not which bytes are stored, so
#: the raw reader leaves them out; ``verify`` and ``open_dataset`` apply them when decoding
DECODING_KEYWORDS = ("decode_cf", "mask_and_scale", "decode_times", "decode_timedelta",
                     "use_cftime", "decode_coords", "concat_characters")


def reader_kwargs(open_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``open_kwargs`` without the decoding options (what the raw reader passes on)."""
    return {k: v for k, v in (open_kwargs or {}).items() if k not in DECODING_KEYWORDS}


def _valid_open_kwargs(engine: str) -> list[str]:
    """Keywords ``xr.open_dataset(..., engine=engine)`` accepts (best effort)."""
    names = {p for p in inspect.signature(xr.open_dataset).parameters
             if p not in ("filename_or_obj", "engine", "kwargs")}
    try:
        backend = xr.backends.list_engines()[engine]
        names.update(p for p in (backend.open_dataset_parameters or ())
                     if p != "filename_or_obj")
    except Exception:  # noqa: BLE001 - an engine that is not installed: xarray's keywords only
        pass
    return sorted(names)


def _bad_keyword(err: BaseException, engine: str, url: str) -> ConfigError | None:
    if not isinstance(err, TypeError):
        return None
    match = _UNEXPECTED_KW.search(str(err))
    if match is None:
        return None
    return ConfigError(
        f"open_kwargs keyword {match.group(1)!r} is not accepted when opening {url} with the "
        f"{engine} engine; valid keywords: {', '.join(_valid_open_kwargs(engine))}"
    )


def _filter_failure(err: BaseException) -> bool:
    text = str(err).lower()
    if "can't find plugin" in text:
        return True
    return "filter" in text and any(w in text for w in ("undefined", "plugin", "not available"))


def _group_error(path: str, url: str, group: str) -> ConfigError:
    """``group`` is not in the file: name the groups it has."""
    from arcoforge.forge.groups import file_groups

    try:
        names = file_groups(path, url)[1:]  # without the root
    except Exception:  # noqa: BLE001 - listing is a courtesy
        names = []
    has = f"its groups are: {', '.join(names)}" if names else "it has no groups"
    return ConfigError(f"group {group!r} is not in {url}; {has}")


def _select_group(root: Any, group: str | None, path: str, url: str) -> Any:
    if not group:
        return root
    try:
        return root[group]
    except (IndexError, KeyError):
        raise _group_error(path, url, group) from None


def _explain(err: BaseException, path: str, engine: str, url: str, action: str,
             group: str | None = None,
             open_kwargs: Mapping[str, Any] | None = None) -> ArcoforgeError:
    """The error to raise for ``err`` (raised by ``action``, e.g. ``"open ... as netcdf4"``):
    the real cause when it can be found, "may be corrupt" only when none is."""
    if isinstance(err, ArcoforgeError):
        return err
    bad = _bad_keyword(err, engine, url)
    if bad is not None:
        return bad
    if engine == "cfgrib" and is_grib_build_error(err):
        return grib_build_error(err, path, url, open_kwargs or {})
    if group and "group not found" in str(err):
        return _group_error(path, url, group)
    other = _other_format(path, engine)
    if other is not None:
        return SourceReadError(
            f"cannot {action}: {url} is a {other} file, not what the {engine} engine reads. "
            f"Check the recipe's file_type (or open_kwargs engine): leave it unset to detect "
            f"the format, or name the file's own ({_FILE_TYPE_OF[other]!r})")
    try:
        check_complete(path, url)
    except TruncatedFileError as short:
        return short
    except OSError:
        pass
    if _filter_failure(err):
        try:
            _reader_for_filters(path, "h5netcdf" if engine == "h5netcdf" else "netcdf4", url,
                                group)
        except SourceReadError as missing:
            return missing
    if _size_is_checkable(path):
        return SourceReadError(
            f"cannot {action}: {err}. The file is as long as its header says, so it is not cut "
            f"short, but it may be corrupt: {_REFETCH}."
        )
    return SourceReadError(f"cannot {action}: {err}. The file may be truncated or corrupt: "
                           f"{_REFETCH}.")


#: file_type values of the formats :func:`_other_format` recognizes
_FILE_TYPE_OF = {"NetCDF3": "netcdf3", "NetCDF4/HDF5": "netcdf4", "GRIB": "grib"}


def _other_format(path: str, engine: str) -> str | None:
    """The format of ``path`` from its first bytes when it is not one ``engine`` reads (a
    NetCDF file declared as GRIB, a GRIB file opened as NetCDF); None otherwise."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head[:3] == b"CDF":
        found = "NetCDF3"
    elif head[:4] == b"GRIB":
        found = "GRIB"
    elif _hdf5_superblock_offset(path) is not None:
        found = "NetCDF4/HDF5"
    else:
        return None
    readers = {"cfgrib": {"GRIB"}, "netcdf4": {"NetCDF3", "NetCDF4/HDF5"},
               "h5netcdf": {"NetCDF4/HDF5"}, "scipy": {"NetCDF3"}}
    return found if engine in readers and found not in readers[engine] else None


def _size_is_checkable(path: str) -> bool:
    """Whether :func:`check_complete` knows this file's expected size (NetCDF3, HDF5)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head[:3] == b"CDF" or _hdf5_superblock_offset(path) is not None



# -- opening and scanning ----------------------------------------------------------------------


def open_raw(path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
             url: str | None = None, cache_dir: str | None = None) -> xr.Dataset:
    """Open ``path`` without CF decoding; errors name the source, the cause and the fix.

    ``cache_dir`` is where readers may keep side files (cfgrib's ``.idx`` indexes); by default
    a temporary folder, never the source's own folder.  GRIB is opened with cfgrib's
    ``errors="raise"`` (:func:`~arcoforge.forge.io.formats.grib_open_kwargs`): messages that do
    not fit one dataset are an error that names the keys to filter by, never dropped.  A
    remote input (``engine`` ``"opendap"`` or ``"zarr"``, ``path`` its URL) is opened where it
    is (:func:`~arcoforge.forge.io.remote.open_remote`), so :class:`RawFile` reads it slice by
    slice.
    """
    if engine in REMOTE_ENGINES:
        from arcoforge.forge.io.remote import open_remote

        return open_remote(path, engine, open_kwargs)
    name = url or path
    kwargs = reader_kwargs(open_kwargs)
    kwargs.setdefault("cache", False)
    if engine == "cfgrib":
        _require_cfgrib(name)
        kwargs = grib_open_kwargs(kwargs, path, cache_dir)
    elif engine == HDF4_ENGINE:
        require_hdf4(name)
    try:
        with _OPEN_LOCK:
            return xr.open_dataset(path, engine=xarray_engine(engine), decode_cf=False,
                                   mask_and_scale=False, decode_times=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise _explain(err, path, engine, name, f"open {name} as {engine}",
                       kwargs.get("group"), kwargs) from err


def _chunks_of(var: xr.Variable) -> tuple[int, ...] | None:
    chunks = var.encoding.get("chunksizes") or var.encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        chunks = tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape))
    if not chunks or len(chunks) != var.ndim:  # none, or stale (a transform added a dim)
        return None
    return tuple(int(c) for c in chunks)


def _concat_values(read: Any, concat_dim: str, url: str, path: str, engine: str) -> np.ndarray:
    try:
        return np.asarray(read())
    except Exception as err:  # noqa: BLE001
        raise _explain(err, path, engine, url,
                       f"read coordinate {concat_dim!r} from {url}") from err


def _scan_netcdf4(path: str, groups: Sequence[str | None], url: str,
                  concat_dim: str | None, root_attrs: bool = False,
                  ) -> tuple[list[tuple[dict[str, int], dict[str, VariableSchema],
                                        dict[str, Any], np.ndarray | None, dict[str, str]]],
                             dict[str, Any] | None]:
    """Metadata straight from the netCDF4 library: what xarray's raw view shows, ~5x faster;
    one result per group of ``groups`` (None: the root), from one open of the file; with
    ``root_attrs`` also the root's attributes (else None)."""
    import netCDF4

    try:
        root = netCDF4.Dataset(path, "r")
    except Exception as err:  # noqa: BLE001
        raise _explain(err, path, "netcdf4", url, f"open {url} as netcdf4",
                       next((g for g in groups if g), None)) from err
    try:
        parts = [_scan_netcdf4_group(_select_group(root, group, path, url), url, path,
                                     concat_dim) for group in groups]
        attrs = {str(k): root.getncattr(k) for k in root.ncattrs()} if root_attrs else None
        return parts, attrs
    finally:
        root.close()


def _scan_netcdf4_group(nc: Any, url: str, path: str, concat_dim: str | None,
                        ) -> tuple[dict[str, int], dict[str, VariableSchema], dict[str, Any],
                                   np.ndarray | None, dict[str, str]]:
    nc.set_auto_maskandscale(False)
    nc.set_always_mask(False)
    nc.set_auto_chartostring(False)
    dims = {str(k): len(v) for k, v in nc.dimensions.items()}
    variables = {}
    digests: dict[str, str] = {}
    group = str(nc.path).strip("/")
    for name, var in nc.variables.items():
        _check_netcdf4_type(var, f"{group}/{name}" if group else str(name), url)
        dtype = np.dtype(object) if var.dtype is str else np.dtype(var.dtype)
        vdims = tuple(str(d) for d in var.dimensions)
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
        if wants_digest(vdims, var.shape, dtype.itemsize, concat_dim):
            digests[str(name)] = value_digest(var[...])
    attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
    values = None
    if concat_dim is not None and concat_dim in nc.variables \
            and nc.variables[concat_dim].ndim == 1:
        values = _concat_values(lambda: nc.variables[concat_dim][:], concat_dim, url, path,
                                "netcdf4")
    return dims, variables, attrs, values, digests


def variable_schema(name: str, var: xr.Variable, url: str) -> VariableSchema:
    """The :class:`VariableSchema` of a raw xarray variable (its type checked first)."""
    _check_xarray_type(var, name, url)
    return VariableSchema(name=name, dims=tuple(str(d) for d in var.dims),
                          shape=tuple(int(n) for n in var.shape), dtype=var.dtype.str,
                          attrs=dict(var.attrs), source_chunks=_chunks_of(var))


def dataset_schema(ds: xr.Dataset, url: str, concat_dim: str | None,
                   read: Callable[[xr.Variable], np.ndarray],
                   read_coord: Callable[[xr.Variable], np.ndarray] | None = None,
                   ) -> tuple[dict[str, int], dict[str, VariableSchema], dict[str, Any],
                              np.ndarray | None, dict[str, str]]:
    """``(dims, variables, attrs, concat values, static digests)`` of a raw xarray dataset:
    ``read`` gives a variable's values (for the digests of variables without the concat
    dimension), ``read_coord`` those of the concat coordinate (default: ``read``)."""
    variables = {}
    digests: dict[str, str] = {}
    for name, var in ds.variables.items():
        variables[str(name)] = variable_schema(str(name), var, url)
        if wants_digest(cast("tuple[str, ...]", var.dims), var.shape, var.dtype.itemsize,
                        concat_dim):
            digests[str(name)] = value_digest(read(var))
    values = None
    if concat_dim is not None and concat_dim in ds.variables and ds[concat_dim].ndim == 1:
        values = (read_coord or read)(ds.variables[concat_dim])
    dims = {str(k): int(v) for k, v in ds.sizes.items()}
    return dims, variables, dict(ds.attrs), values, digests


def _scan_xarray(path: str, engine: str, open_kwargs: Mapping[str, Any] | None, url: str,
                 concat_dim: str | None, cache_dir: str | None = None,
                 ) -> tuple[dict[str, int], dict[str, VariableSchema], dict[str, Any],
                            np.ndarray | None, dict[str, str]]:
    ds = open_raw(path, engine, open_kwargs, url, cache_dir)
    with ds:
        return dataset_schema(
            ds, url, concat_dim, read=lambda var: np.asarray(var.values),
            read_coord=lambda var: _concat_values(lambda: var.values, str(concat_dim), url,
                                                  path, engine))


def scan_file(index: Index, url: str, path: str, size: int, sha256: str, concat_dim: str | None,
              file_type: str = "auto", open_kwargs: Mapping[str, Any] | None = None,
              cache_dir: str | None = None) -> FileSchema:
    """Read one file's metadata (and its concat coordinate values) into a :class:`FileSchema`.

    The file is first checked to be complete (:func:`check_complete`) and, for HDF5, to use
    only compression filters that can be decoded here; ``cache_dir`` is where readers may keep
    side files (cfgrib's indexes), by default a temporary folder.
    """
    engine = detect_engine(path, file_type, url)
    check_complete(path, url)
    kwargs = reader_kwargs(open_kwargs)
    group = kwargs.pop("group", None)
    engine = _reader_for_filters(path, engine, url, group)
    with _OPEN_LOCK:
        if engine == "netcdf4" and not kwargs:
            dims, variables, attrs, values, digests = _scan_netcdf4(path, [group], url,
                                                                    concat_dim)[0][0]
        else:
            dims, variables, attrs, values, digests = _scan_xarray(path, engine, open_kwargs,
                                                                   url, concat_dim, cache_dir)
    return FileSchema(index=index, url=url, path=path, size=size, sha256=sha256, dims=dims,
                      variables=variables, attrs=attrs, concat_values=values,
                      static_digests=digests)


def scan_file_groups(index: Index, url: str, path: str, size: int, sha256: str,
                     concat_dim: str | None, file_type: str, open_kwargs: Mapping[str, Any],
                     groups: Sequence[str], root_attrs: bool = False,
                     cache_dir: str | None = None,
                     ) -> tuple[list[FileSchema], dict[str, Any] | None]:
    """:func:`scan_file` of each group of ``groups`` (``""``: the root), in that order, and
    with ``root_attrs`` the root group's attributes (else None); the netCDF4 library reads
    them all from one open of the file (opening a NetCDF4 file with a hundred variables costs
    ~20 ms)."""
    engine = detect_engine(path, file_type, url)
    kwargs = reader_kwargs(open_kwargs)
    kwargs.pop("group", None)
    if kwargs or any(_reader_for_filters(path, engine, url, g or None) != "netcdf4"
                     for g in groups):
        from arcoforge.forge.groups import read_root_attrs

        return [scan_file(index, url, path, size, sha256, concat_dim, file_type,
                          {**open_kwargs, "group": g} if g else open_kwargs, cache_dir)
                for g in groups], read_root_attrs(path, url) if root_attrs else None
    check_complete(path, url)
    with _OPEN_LOCK:
        parts, root = _scan_netcdf4(path, [g or None for g in groups], url, concat_dim,
                                    root_attrs)
    return [FileSchema(index=index, url=url, path=path, size=size, sha256=sha256, dims=dims,
                       variables=variables, attrs=attrs, concat_values=values,
                       static_digests=digests)
            for dims, variables, attrs, values, digests in parts], root


def read_slice(ds: xr.Dataset, name: str, key: tuple[slice, ...], url: str) -> np.ndarray:
    """Read ``ds[name][key]`` as a numpy array of the on-disk dtype."""
    try:
        with _OPEN_LOCK:
            return np.asarray(ds.variables[name][key].values)
    except Exception as err:  # noqa: BLE001
        raise SourceReadError(
            f"cannot read variable {name!r} from {url}: {err}. The file may be truncated or "
            f"corrupt: {_REFETCH}."
        ) from err


class RawFile:
    """A source opened for reading raw slices, as fast as the format allows.

    NetCDF (3 and 4) files are read with the netCDF4 library directly (no CF decoding, no
    masking: the bytes on disk); other engines go through xarray's raw view.  Both give the same
    values and dtypes as :func:`open_raw`.  An HDF5 file whose compression filter only h5py can
    decode (hdf5plugin imported after netCDF4) is read through h5netcdf instead.
    """

    def __init__(self, path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
                 url: str | None = None, cache_dir: str | None = None) -> None:
        self.url = url or path
        self._path = path
        kwargs = reader_kwargs(open_kwargs)
        group = kwargs.pop("group", None)
        self._nc: Any = None
        self._root: Any = None
        self._ds: xr.Dataset | None = None
        engine = _reader_for_filters(path, engine, self.url, group)
        self._engine = engine
        if engine == "netcdf4" and not kwargs:
            import netCDF4

            try:
                with _OPEN_LOCK:
                    nc = netCDF4.Dataset(path, "r")
                    nc.set_auto_maskandscale(False)
                    nc.set_always_mask(False)
                    nc.set_auto_chartostring(False)
                    self._root = nc
                    self._nc = _select_group(nc, group, path, self.url)
            except Exception as err:  # noqa: BLE001
                if self._root is not None:
                    self._root.close()
                raise _explain(err, path, engine, self.url, f"open {self.url} as netCDF",
                               group) from err
        else:
            if group:
                kwargs["group"] = group
            self._ds = open_raw(path, engine, kwargs, url, cache_dir)

    def read(self, name: str, key: tuple[slice, ...]) -> np.ndarray:
        """The raw values of ``name[key]`` (on-disk dtype)."""
        try:
            with _OPEN_LOCK:
                if self._ds is not None:
                    return np.asarray(self._ds.variables[name][key].values)
                return np.asarray(self._nc.variables[name][key])
        except Exception as err:  # noqa: BLE001
            raise _explain(err, self._path, self._engine, self.url,
                           f"read variable {name!r} from {self.url}") from err

    def close(self) -> None:
        with _OPEN_LOCK:
            if self._ds is not None:
                self._ds.close()
            if self._root is not None:
                self._root.close()
