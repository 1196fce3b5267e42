"""Open a fetched (local) source file *raw* and describe or slice it.

Raw means ``decode_cf=False``: values as stored on disk (packed integers, fill values, numeric
times) with every attribute kept, so they can be copied into the target unchanged.

Before a file is opened its format is told from its first bytes and it is checked to be complete
(:func:`check_complete`), so that every failure names its real cause and the fix: a file cut short,
a GRIB file without cfgrib, an HDF5 filter plugin that is not installed, an HDF4 file, a bad
``open_kwargs`` keyword, a NetCDF-4 type that cannot be stored faithfully.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import struct
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import (
    ArcoforgeError,
    ConfigError,
    MissingDependencyError,
    SourceReadError,
    TruncatedFileError,
)
from arcoforge.forge.patterns import Index
from arcoforge.forge.schema import FileSchema, SchemaError, VariableSchema

__all__ = ["SourceReadError", "RawFile", "check_complete", "detect_engine", "open_raw",
           "scan_file", "read_slice"]

_MAGIC = {
    b"CDF\x01": "netcdf4",
    b"CDF\x02": "netcdf4",
    b"CDF\x05": "netcdf4",
    b"\x89HDF": "netcdf4",
    b"GRIB": "cfgrib",
}
_HDF4_MAGIC = b"\x0e\x03\x13\x01"

_FILE_TYPE_ENGINE = {"netcdf4": "netcdf4", "netcdf3": "netcdf4", "hdf5": "h5netcdf", "grib": "cfgrib"}

# HDF5 (and so netCDF4) is not thread-safe: every open, metadata read, slice read and close that
# arcoforge makes goes through this one lock.  Threads still overlap reads with compression and
# writes; processes (``processes=True``) read in parallel.
_OPEN_LOCK = threading.RLock()

_REFETCH = "delete the cached copy and download it again, or remove it from the pattern"


# -- HDF5 filter plugins -----------------------------------------------------------------------

#: HDF5 filters built into every HDF5 library: deflate, shuffle, fletcher32, szip, nbit,
#: scaleoffset (szip only where the library was built with it: checked like a plugin)
_BUILTIN_FILTERS = {1, 2, 3, 5, 6}
_FILTER_NAMES = {
    1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
    307: "bzip2", 32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle",
    32013: "zfp", 32015: "zstd", 32017: "sz", 32018: "fcidecomp", 32024: "sz3",
    32026: "blosc2",
}


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(list(spec.submodule_search_locations)[0])


def _use_hdf5plugin() -> bool:
    """Import hdf5plugin when it is installed, so HDF5 files compressed with its filters (lz4,
    bitshuffle, blosc2, zfp, ...) just work; True when netCDF4's HDF5 library sees them too.

    h5py gets the filters by the import.  netCDF4's own HDF5 library reads ``HDF5_PLUGIN_PATH``
    once, when netCDF4 is imported: so the path is set here, before arcoforge imports netCDF4
    (keeping netCDF4's own plugin folder on it).
    """
    plugin_pkg = _package_dir("hdf5plugin")
    if plugin_pkg is None:
        return False
    plugins = os.path.join(plugin_pkg, "plugins")
    path = os.environ.get("HDF5_PLUGIN_PATH")
    if "netCDF4" not in sys.modules:
        parts = [p for p in (path or "").split(os.pathsep) if p]
        if path is None:  # netCDF4 would have pointed it at its own plugins: keep them
            nc_pkg = _package_dir("netCDF4")
            if nc_pkg and os.path.isdir(os.path.join(nc_pkg, "plugins")):
                parts.append(os.path.join(nc_pkg, "plugins"))
        if plugins not in parts:
            parts.insert(0, plugins)
        os.environ["HDF5_PLUGIN_PATH"] = os.pathsep.join(parts)
        seen_by_netcdf4 = True
    else:
        seen_by_netcdf4 = plugins in (path or "").split(os.pathsep)
    try:
        importlib.import_module("hdf5plugin")
    except Exception:  # noqa: BLE001 - a broken optional install: files needing it are refused
        return False
    return seen_by_netcdf4


_HDF5PLUGIN_IN_NETCDF4 = _use_hdf5plugin()


def _netcdf4_filters() -> set[int]:
    """HDF5 filter ids that the netCDF4 library can decode here."""
    import netCDF4

    ids = set(_BUILTIN_FILTERS)
    for flag, fid in (("__has_szip_support__", 4), ("__has_zstandard_support__", 32015),
                      ("__has_bzip2_support__", 307), ("__has_blosc_support__", 32001)):
        if getattr(netCDF4, flag, False):
            ids.add(fid)
    return ids


def _filter_label(fid: int, stored: bytes | str) -> str:
    if fid in _FILTER_NAMES:
        return _FILTER_NAMES[fid]
    text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else str(stored)
    word = re.split(r"[\s;:,(]", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return word or f"id {fid}"


_FILTER_CACHE: dict[tuple[str, int, int], list[tuple[str, int, str]]] = {}


def _hdf5_plugin_filters(path: str, group: str | None = None) -> list[tuple[str, int, str]]:
    """(variable, filter id, filter name) for every dataset of an HDF5 file (under ``group``)
    that uses a filter outside the built-in set; read from metadata only, cached per file."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILTER_CACHE:
        importlib.import_module("netCDF4")  # first: h5py then sees netCDF4's plugin path
        import h5py  # type: ignore[import-untyped]

        found: list[tuple[str, int, str]] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                plist = obj.id.get_create_plist()
                for i in range(plist.get_nfilters()):
                    fid, _flags, _values, stored = plist.get_filter(i)
                    if fid not in _BUILTIN_FILTERS:
                        found.append((name, int(fid), _filter_label(int(fid), stored)))

        with _OPEN_LOCK, h5py.File(path, "r") as h5:
            h5.visititems(visit)
        _FILTER_CACHE[key] = found
    found = _FILTER_CACHE[key]
    if group:
        prefix = group.strip("/") + "/"
        found = [f for f in found if f[0].startswith(prefix)]
    return found


def _reader_for_filters(path: str, engine: str, url: str, group: str | None) -> str:
    """The engine that can decode every filter of ``path``: ``engine``, or h5netcdf when only
    h5py has a filter's plugin; raises :class:`SourceReadError` naming the variable, the filter
    and the fix when no reader has it."""
    if engine not in ("netcdf4", "h5netcdf") or _hdf5_superblock_offset(path) is None:
        return engine
    try:
        filters = _hdf5_plugin_filters(path, group)
    except ArcoforgeError:
        raise
    except Exception:  # noqa: BLE001 - h5py cannot read it: opening it will say why
        return engine
    if not filters:
        return engine
    import h5py  # type: ignore[import-untyped]

    nc_ids = _netcdf4_filters()
    switch = False
    for name, fid, label in filters:
        in_h5py = bool(h5py.h5z.filter_avail(fid))
        in_nc = fid in nc_ids or (_HDF5PLUGIN_IN_NETCDF4 and in_h5py)
        if not (in_h5py if engine == "h5netcdf" else in_nc or in_h5py):
            raise SourceReadError(_missing_filter_message(url, name, label, fid))
        if engine == "netcdf4" and not in_nc:
            switch = True  # only h5py has this filter: read the file through h5netcdf
    return "h5netcdf" if switch else engine


def _missing_filter_message(url: str, variable: str, label: str, fid: int) -> str:
    return (
        f"cannot read {url}: variable {variable!r} is compressed with the HDF5 {label} filter "
        f"(filter id {fid}), whose plugin is not installed. Install the filter plugins: pip install hdf5plugin "
        "(arcoforge imports it by itself; in your own code, `import hdf5plugin` before opening "
        "the file)."
    )


# -- GRIB --------------------------------------------------------------------------------------

_GRIB_HINT = "reading GRIB needs cfgrib and eccodes: pip install 'arcoforge[grib]'"


def _require_cfgrib(url: str) -> None:
    """Raise :class:`MissingDependencyError` when cfgrib (or the ecCodes library) is missing."""
    if importlib.util.find_spec("cfgrib") is None:
        raise MissingDependencyError(f"{url} is a GRIB file; {_GRIB_HINT}")
    try:
        importlib.import_module("cfgrib")
    except Exception as err:  # noqa: BLE001 - cfgrib raises RuntimeError without ecCodes
        raise MissingDependencyError(
            f"{url} is a GRIB file, and cfgrib cannot load the ecCodes library ({err}); "
            f"{_GRIB_HINT}"
        ) from err


def _grib_index_path(path: str, cache_dir: str | None) -> str:
    """Where cfgrib keeps its ``.idx`` index for ``path``: in ``cache_dir`` (or a temporary
    folder), never beside the source, which may be read-only or shared."""
    folder = os.path.join(cache_dir or tempfile.gettempdir(), "arcoforge-grib-index")
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(path))[-64:]
    return os.path.join(folder, f"{digest}-{base}.{{short_hash}}.idx")


# -- format detection --------------------------------------------------------------------------


def _hdf5_superblock_offset(path: str) -> int | None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head[:3] == b"CDF" or head == b"GRIB":
        return None
    return _hdf5_superblock_at(path, size)


def detect_engine(path: str, file_type: str = "auto", url: str | None = None) -> str:
    """The xarray engine for ``path``: from ``file_type``, or from the file's first bytes."""
    if file_type != "auto":
        try:
            return _FILE_TYPE_ENGINE[file_type]
        except KeyError:
            raise ConfigError(
                f"unknown file_type {file_type!r}; use one of {sorted(_FILE_TYPE_ENGINE)} or 'auto'"
            ) from None
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magic, engine in _MAGIC.items():
        if head.startswith(magic):
            return engine
    name = url or path
    if head.startswith(_HDF4_MAGIC):
        raise SourceReadError(
            f"{name} is an HDF4 file; arcoforge reads NetCDF3/4, HDF5 and GRIB. Convert it "
            "first, e.g. with the HDF Group's h4toh5 (h4toh5 in.hdf out.h5) or with GDAL "
            "(gdal_translate -of netCDF in.hdf out.nc, one subdataset at a time), and build "
            "from the converted files; a netCDF-C library built with HDF4 support (nccopy -k "
            "nc4 in.hdf out.nc) converts it too."
        )
    if _hdf5_superblock_offset(path) is not None:  # HDF5 behind a user block
        return "netcdf4"
    if not head:
        raise TruncatedFileError(
            f"{name} is empty (0 bytes): the download or copy did not finish. Fetch it again: "
            f"{_REFETCH}."
        )
    if len(head) < 8 and any(m.startswith(head[:len(m)]) for m in (*_MAGIC, _HDF4_MAGIC)):
        raise TruncatedFileError(
            f"{name} is truncated: it has only {len(head)} bytes, the start of a format "
            f"signature ({head!r}). The file is cut short (an interrupted download or copy): "
            f"fetch it again: {_REFETCH}."
        )
    raise SourceReadError(
        f"{name} is not a NetCDF, HDF5 or GRIB file (it starts with {head[:8]!r}); it may be "
        "an error page saved in its place, or another format. Check the URL (and credentials), "
        "or delete the cached copy so it is downloaded again."
    )


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
    names: list[str] = []
    try:
        import netCDF4

        with _OPEN_LOCK, netCDF4.Dataset(path, "r") as root:
            todo = list(root.groups.values())
            while todo:
                g = todo.pop(0)
                names.append(g.path.lstrip("/"))
                todo.extend(g.groups.values())
    except Exception:  # noqa: BLE001 - listing is a courtesy
        pass
    has = f"its groups are: {', '.join(names)}" if names else "it has no groups"
    return ConfigError(f"open_kwargs group {group!r} is not in {url}; {has}")


def _select_group(root: Any, group: str | None, path: str, url: str) -> Any:
    if not group:
        return root
    try:
        return root[group]
    except (IndexError, KeyError):
        raise _group_error(path, url, group) from None


def _explain(err: BaseException, path: str, engine: str, url: str, action: str,
             group: str | None = None) -> ArcoforgeError:
    """The error to raise for ``err`` (raised by ``action``, e.g. ``"open ... as netcdf4"``):
    the real cause when it can be found, "may be corrupt" only when none is."""
    if isinstance(err, ArcoforgeError):
        return err
    bad = _bad_keyword(err, engine, url)
    if bad is not None:
        return bad
    if group and "group not found" in str(err):
        return _group_error(path, url, group)
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


def _size_is_checkable(path: str) -> bool:
    """Whether :func:`check_complete` knows this file's expected size (NetCDF3, HDF5)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head[:3] == b"CDF" or _hdf5_superblock_offset(path) is not None


# -- NetCDF-4 user-defined types ---------------------------------------------------------------


def _user_type_error(url: str, name: str, kind: str, type_name: str | None) -> SourceReadError:
    label = f"{kind} type {type_name!r}" if type_name else f"{kind} type"
    if kind == "enum":
        why = ("its labels would be lost (Zarr has no enum type); convert it to its integer "
               "base type with CF flag_values/flag_meanings attributes, or")
    else:
        why = "Zarr cannot store it faithfully;"
    return SourceReadError(
        f"variable {name!r} in {url} has the NetCDF-4 {label}: {why} drop it with "
        f"open_kwargs={{'drop_variables': [{name!r}]}}."
    )


def _check_netcdf4_type(var: Any, name: str, url: str) -> None:
    import netCDF4

    dt = var.datatype
    if isinstance(dt, netCDF4.CompoundType):
        raise _user_type_error(url, name, "compound", dt.name)
    if isinstance(dt, netCDF4.EnumType):
        raise _user_type_error(url, name, "enum", dt.name)
    if isinstance(dt, netCDF4.VLType):
        raise _user_type_error(url, name, "variable-length (vlen)", dt.name)


def _check_xarray_type(var: xr.Variable, name: str, url: str) -> None:
    declared = var.encoding.get("dtype")
    for dt in (var.dtype, declared):
        if not isinstance(dt, np.dtype):
            continue
        meta: Mapping[str, Any] = dt.metadata or {}
        if "enum" in meta:
            raise _user_type_error(url, name, "enum", meta.get("enum_name"))
        if dt.kind == "V":
            raise _user_type_error(url, name, "compound", None)
        vlen = meta.get("vlen")
        if vlen is not None and vlen not in (str, bytes):
            raise _user_type_error(url, name, "variable-length (vlen)", None)


# -- is the file complete? ---------------------------------------------------------------------

#: bytes per value of each NetCDF3 external type (NC_BYTE ... NC_UINT64)
_NC3_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_NC3_DIMENSION, _NC3_VARIABLE, _NC3_ATTRIBUTE = 0x0A, 0x0B, 0x0C
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class _ShortHeader(Exception):
    """The header asks for bytes past the end of the file."""


class _Header:
    """Big-endian reads of a NetCDF3 header, buffered; values are skipped, not read."""

    def __init__(self, fh: Any, size: int, wide: bool) -> None:
        self._fh = fh
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self.pos = 0
        self.size = size
        self._count = ">Q" if wide else ">I"  # counts, dimension lengths, vsize (CDF-5: 64 bit)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise _ShortHeader
        if end > self._start + len(self._buf):
            self._fh.seek(self.pos)
            self._buf = self._fh.read(max(1 << 16, n))
            self._start = self.pos
            if len(self._buf) < n:
                raise _ShortHeader
        off = self.pos - self._start
        self.pos = end
        return self._buf[off:off + n]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _ShortHeader
        self.pos += n

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def count(self) -> int:
        return int(struct.unpack(self._count, self.take(struct.calcsize(self._count)))[0])

    def items(self, min_bytes: int) -> int:
        """A list length, refused at once when the file cannot hold that many items."""
        n = self.count()
        if n * min_bytes > self.size - self.pos:
            raise _ShortHeader
        return n

    def name(self) -> str:
        n = self.items(1)
        raw = self.take(n)
        self.skip(-n % 4)
        return raw.decode("utf-8", "replace")

    def skip_attributes(self) -> None:
        tag, n = self.u32(), self.count()
        if tag == 0 and n == 0:
            return
        if tag != _NC3_ATTRIBUTE:
            raise ValueError(f"bad attribute list tag {tag:#x}")
        for _ in range(n):
            self.name()
            xsz = _NC3_TYPE_SIZE.get(self.u32())
            if xsz is None:
                raise ValueError("unknown attribute type")
            nbytes = self.items(xsz) * xsz
            self.skip(nbytes + (-nbytes % 4))


def _round4(n: int) -> int:
    return n + (-n % 4)


def _netcdf3_expected_size(fh: Any, size: int, version: int) -> tuple[int, int] | None:
    """(bytes the header says the file holds, the fewest bytes that still hold every value) of
    a NetCDF3 file, or None when its header cannot be understood (not a truncation)."""
    h = _Header(fh, size, wide=version == 5)
    h.take(4)
    numrecs = h.u64() if version == 5 else h.u32()
    streaming = numrecs == (0xFFFFFFFFFFFFFFFF if version == 5 else 0xFFFFFFFF)
    tag, ndims = h.u32(), h.count()
    dims: list[int] = []
    if not (tag == 0 and ndims == 0):
        if tag != _NC3_DIMENSION:
            return None
        if ndims * 8 > size - h.pos:
            raise _ShortHeader
        for _ in range(ndims):
            h.name()
            dims.append(h.count())
    try:
        h.skip_attributes()
    except ValueError:
        return None
    tag, nvars = h.u32(), h.count()
    if tag == 0 and nvars == 0:
        return h.pos, h.pos
    if tag != _NC3_VARIABLE:
        return None
    if nvars * 16 > size - h.pos:
        raise _ShortHeader
    fixed: list[tuple[int, int]] = []  # (begin, unpadded bytes)
    records: list[tuple[int, int]] = []
    for _ in range(nvars):
        h.name()
        dimids = [h.count() for _ in range(h.items(4))]
        try:
            h.skip_attributes()
        except ValueError:
            return None
        xsz = _NC3_TYPE_SIZE.get(h.u32())
        h.count()  # vsize: redundant, and clipped for variables over 4 GiB; computed below
        begin = h.u32() if version == 1 else h.u64()
        if xsz is None or any(d >= len(dims) for d in dimids):
            return None
        is_record = bool(dimids) and dims[dimids[0]] == 0
        nbytes = xsz
        for d in dimids[1:] if is_record else dimids:
            nbytes *= dims[d]
        (records if is_record else fixed).append((begin, nbytes))
    header_end = h.pos
    strict = lenient = header_end
    for begin, nbytes in fixed:
        strict = max(strict, begin + _round4(nbytes))
        lenient = max(lenient, begin + nbytes)
    if records and not streaming and numrecs > 0:
        # one record variable alone is not padded, not even after the last record (the
        # NetCDF3 spec; netCDF-C writes it so); several are, each to 4 bytes
        single = len(records) == 1
        recsize = records[0][1] if single else sum(_round4(n) for _, n in records)
        last_begin, last_bytes = max(records)
        strict = max(strict, last_begin + (numrecs - 1) * recsize
                     + (last_bytes if single else _round4(last_bytes)))
        lenient = max(lenient, last_begin + (numrecs - 1) * recsize + last_bytes)
    return strict, lenient


def _hdf5_superblock_at(path: str, size: int) -> int | None:
    """Where the HDF5 superblock starts (0, or 512, 1024, ... after a user block), or None."""
    offset = 0
    with open(path, "rb") as fh:
        while offset + 8 <= size:
            fh.seek(offset)
            if fh.read(8) == _HDF5_SIGNATURE:
                return offset
            offset = 512 if offset == 0 else offset * 2
    return None


def _hdf5_expected_size(fh: Any, offset: int, size: int) -> int | None:
    """The size an HDF5 file's superblock records (its end-of-file address, base included), or
    None when the superblock is a version this check does not know or the address is unset.
    Raises _ShortHeader when the file ends inside the superblock."""
    fh.seek(offset)
    head = fh.read(96)
    if len(head) < 12:
        raise _ShortHeader
    version = head[8]
    if version in (0, 1):
        width, start = head[13], 24 + (4 if version == 1 else 0)
        fields = 4  # base, free-space info, end of file, driver info
        eof_field = 2
    elif version in (2, 3):
        width, start = head[9], 12
        fields = 4  # base, superblock extension, end of file, root object header
        eof_field = 2
    else:
        return None
    if width not in (2, 4, 8):
        return None
    if len(head) < start + fields * width:
        raise _ShortHeader
    values = [int.from_bytes(head[start + i * width:start + (i + 1) * width], "little")
              for i in range(fields)]
    eof = values[eof_field]
    if eof == (1 << (8 * width)) - 1:
        return None
    # The field holds the end of the file's address space *plus* the base address (the HDF5
    # library writes ``relative eof + base``, and refuses to open a file shorter than it):
    # with a user block the base address is the superblock's offset, already counted in it.
    return eof


def _truncated(url: str, expected: int, actual: int, where: str) -> TruncatedFileError:
    return TruncatedFileError(
        f"{url} is truncated: {where} it should hold {expected:,} bytes, but it has only "
        f"{actual:,} ({expected - actual:,} missing). The file is cut short (an interrupted "
        "download or copy): fetch it again (delete the cached or local copy and rerun)."
    )


def check_complete(path: str, url: str | None = None) -> None:
    """Raise :class:`TruncatedFileError` when ``path`` is shorter than its own header says.

    Cheap: it reads only header bytes.  NetCDF3 (classic, 64-bit offset, CDF-5): the size is
    computed from the header's dimensions and variables (the end of the last fixed-size
    variable; ``begin`` of the record variables + ``numrecs`` records).  HDF5 and NetCDF4: the
    superblock's end-of-file address (which, as the HDF5 library writes it, already includes the
    base address), with the superblock found at 0 or after a user block (512, 1024, 2048, ...
    bytes), superblock versions 0 to 3.  Other formats, and headers this check
    cannot understand, pass: opening the file reports those.
    """
    name = url or path
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
        try:
            if magic[:3] == b"CDF" and len(magic) == 4 and magic[3] in (1, 2, 5):
                fh.seek(0)
                sizes = _netcdf3_expected_size(fh, size, magic[3])
                if sizes is not None and size < sizes[1]:
                    raise _truncated(name, sizes[0], size, "its NetCDF3 header says")
                return
            if magic in (b"GRIB", _HDF4_MAGIC):
                return
            offset = _hdf5_superblock_at(path, size)
            if offset is None:
                return
            expected = _hdf5_expected_size(fh, offset, size)
        except _ShortHeader:
            raise TruncatedFileError(
                f"{name} is truncated: the file ends inside its own header (it has only "
                f"{size:,} bytes). The file is cut short (an interrupted download or copy): "
                "fetch it again (delete the cached or local copy and rerun)."
            ) from None
    if expected is not None and size < expected:
        raise _truncated(name, expected, size, "its HDF5 superblock says")


# -- opening and scanning ----------------------------------------------------------------------


def open_raw(path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
             url: str | None = None, cache_dir: str | None = None) -> xr.Dataset:
    """Open ``path`` without CF decoding; errors name the source, the cause and the fix.

    ``cache_dir`` is where readers may keep side files (cfgrib's ``.idx`` indexes); by default
    a temporary folder, never the source's own folder.
    """
    name = url or path
    kwargs = reader_kwargs(open_kwargs)
    kwargs.setdefault("cache", False)
    if engine == "cfgrib":
        _require_cfgrib(name)
        backend_kwargs = dict(kwargs.get("backend_kwargs") or {})
        backend_kwargs.setdefault("indexpath", _grib_index_path(path, cache_dir))
        kwargs["backend_kwargs"] = backend_kwargs
    try:
        with _OPEN_LOCK:
            return xr.open_dataset(path, engine=engine, decode_cf=False, mask_and_scale=False,
                                   decode_times=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise _explain(err, path, engine, name, f"open {name} as {engine}",
                       kwargs.get("group")) from err


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


def _concat_values(read: Any, concat_dim: str, url: str, path: str, engine: str) -> np.ndarray:
    try:
        return np.asarray(read())
    except Exception as err:  # noqa: BLE001
        raise _explain(err, path, engine, url,
                       f"read coordinate {concat_dim!r} from {url}") from err


def _scan_netcdf4(path: str, group: str | None, url: str,
                  concat_dim: str | None) -> tuple[dict[str, int], dict[str, VariableSchema],
                                                   dict[str, Any], np.ndarray | None]:
    """Metadata straight from the netCDF4 library: what xarray's raw view shows, ~5x faster."""
    import netCDF4

    try:
        root = netCDF4.Dataset(path, "r")
    except Exception as err:  # noqa: BLE001
        raise _explain(err, path, "netcdf4", url, f"open {url} as netcdf4", group) from err
    try:
        nc = _select_group(root, group, path, url)
        nc.set_auto_maskandscale(False)
        nc.set_always_mask(False)
        nc.set_auto_chartostring(False)
        dims = {str(k): len(v) for k, v in nc.dimensions.items()}
        variables = {}
        for name, var in nc.variables.items():
            _check_netcdf4_type(var, str(name), url)
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
            values = _concat_values(lambda: nc.variables[concat_dim][:], concat_dim, url, path,
                                    "netcdf4")
        return dims, variables, attrs, values
    finally:
        root.close()


def _scan_xarray(path: str, engine: str, open_kwargs: Mapping[str, Any] | None, url: str,
                 concat_dim: str | None, cache_dir: str | None = None,
                 ) -> tuple[dict[str, int], dict[str, VariableSchema], dict[str, Any],
                            np.ndarray | None]:
    ds = open_raw(path, engine, open_kwargs, url, cache_dir)
    with ds:
        variables = {}
        for name, var in ds.variables.items():
            _check_xarray_type(var, str(name), url)
            vdims = tuple(str(d) for d in var.dims)
            _string_check(str(name), var.dtype, vdims, concat_dim, url)
            variables[str(name)] = VariableSchema(
                name=str(name), dims=vdims, shape=tuple(int(n) for n in var.shape),
                dtype=var.dtype.str, attrs=dict(var.attrs), source_chunks=_chunks_of(var),
            )
        values = None
        if concat_dim is not None and concat_dim in ds.variables and ds[concat_dim].ndim == 1:
            values = _concat_values(lambda: ds[concat_dim].values, concat_dim, url, path,
                                    engine)
        dims = {str(k): int(v) for k, v in ds.sizes.items()}
        return dims, variables, dict(ds.attrs), values


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
            dims, variables, attrs, values = _scan_netcdf4(path, group, url, concat_dim)
        else:
            dims, variables, attrs, values = _scan_xarray(path, engine, open_kwargs, url,
                                                          concat_dim, cache_dir)
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
