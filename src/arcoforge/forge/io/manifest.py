"""Read HDF5/NetCDF-4 sources from their chunk manifest: byte ranges decoded outside HDF5's lock.

The HDF5 library is not thread-safe, so every read that goes through it (netCDF4, h5py) holds
one process-wide lock (:data:`~arcoforge.forge.io.formats._OPEN_LOCK`), and the threads of a
build take turns decompressing.  :class:`ManifestFile` asks HDF5 only *where* each chunk is
(the chunk index: byte offset, length and skipped-filter mask per chunk, through h5py's
low-level API; metadata only, under the lock) and then reads the bytes itself (``os.pread``) and
undoes the filter pipeline with codecs that release the GIL (zlib-ng when the ``fast-inflate``
extra is installed, else zlib; numcodecs for shuffle, Fletcher-32, zstd, blosc), so the threads
of a build decode in parallel.  (h5py's index costs ~1.3 ms of CPU per OISST file for its four
variables; VirtualiZarr's parser, which :mod:`arcoforge.forge.virtual.refs` uses, ~12 ms.)

It gives exactly what :class:`~arcoforge.forge.io.readers.RawFile` gives (same values, same
dtype, unallocated chunks as the dataset's fill value) and hands every read it cannot do
faithfully to a ``RawFile`` of the same source:

* variables that are not chunked (contiguous, compact), of types other than numbers and
  fixed-length bytes, or with a filter outside :data:`DECODABLE_FILTERS` (szip, scale-offset,
  lz4, bitshuffle, ...);
* slices that reach past the HDF5 dataset's extent (a NetCDF-4 variable shorter than its
  unlimited dimension reads as fill values there) or whose extent the request leaves open;
* regions with unallocated chunks when the dataset has no fill value that HDF5 would write.

:func:`open_reader` chooses the reader for a local source; ``ARCOFORGE_MANIFEST_READS=0`` in the
environment turns the fast path off (every read through ``RawFile``).
"""

from __future__ import annotations

import bz2
import importlib
import itertools
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arcoforge.errors import SourceReadError
from arcoforge.forge.io.formats import _OPEN_LOCK, _hdf5_superblock_offset, _reader_for_filters
from arcoforge.forge.io.readers import RawFile, _explain, reader_kwargs

__all__ = ["ManifestFile", "open_reader", "manifest_reads_enabled", "DECODABLE_FILTERS",
           "MANIFEST_READS_ENV", "INFLATE_LIBRARY"]

#: environment variable: ``0`` (or ``false``, ``no``, ``off``) turns the manifest reads off
MANIFEST_READS_ENV = "ARCOFORGE_MANIFEST_READS"

_DEFLATE, _SHUFFLE, _FLETCHER32, _BZIP2, _BLOSC, _ZSTD = 1, 2, 3, 307, 32001, 32015
#: the filters built into every HDF5 library (netCDF4's included)
_BUILTIN = (_DEFLATE, _SHUFFLE, _FLETCHER32)

#: HDF5 filter id -> name, for the filters :class:`ManifestFile` decodes itself
DECODABLE_FILTERS = {_DEFLATE: "deflate", _SHUFFLE: "shuffle", _FLETCHER32: "fletcher32",
                     _BZIP2: "bzip2", _BLOSC: "blosc", _ZSTD: "zstd"}

#: the engines whose raw view of an HDF5 dataset is the dataset's own values
_ENGINES = ("netcdf4", "h5netcdf")

#: what netCDF-C calls a variable whose name is a dimension's without being its coordinate
_NON_COORD_PREFIX = "_nc4_non_coord_"

# HDF5 fill-value status and fill time (H5Pget_fill_value / H5Pget_fill_time)
_FILL_UNDEFINED = 0
_FILL_TIME_NEVER = 1

#: at most this many per-chunk index look-ups per read; more, and the whole index is listed once
_LOOKUP_LIMIT = 64


def manifest_reads_enabled() -> bool:
    """Whether :func:`open_reader` may use :class:`ManifestFile` (``ARCOFORGE_MANIFEST_READS``
    is not ``0``/``false``/``no``/``off``)."""
    value = os.environ.get(MANIFEST_READS_ENV, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _accepts(path: str, engine: str, open_kwargs: Mapping[str, Any] | None) -> bool:
    """Whether ``path`` can be read from its chunk manifest: an HDF5 file (superblock at byte
    0, so chunk addresses are file offsets) opened by a netCDF4/h5netcdf engine with no
    keyword other than ``group``."""
    if engine not in _ENGINES or "://" in path or not os.path.isfile(path):
        return False
    kwargs = reader_kwargs(open_kwargs)
    kwargs.pop("group", None)
    return not kwargs and _hdf5_superblock_offset(path) == 0


def open_reader(path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
                url: str | None = None, cache_dir: str | None = None) -> RawFile | ManifestFile:
    """The reader of raw slices for the local source ``path``: a :class:`ManifestFile` for
    HDF5/NetCDF-4 files (when :func:`manifest_reads_enabled`), a
    :class:`~arcoforge.forge.io.readers.RawFile` for everything else.

    Parameters
    ----------
    path
        The local (fetched) file.
    engine
        The engine :func:`~arcoforge.forge.io.formats.detect_engine` chose for it.
    open_kwargs
        The pattern's ``open_kwargs`` (only ``group`` keeps the fast path).
    url
        The source's URL, for messages.
    cache_dir
        Where readers keep side files (passed on to ``RawFile``).

    Returns
    -------
    RawFile or ManifestFile
        An object with ``read(name, key)`` and ``close()``.
    """
    if manifest_reads_enabled() and _accepts(path, engine, open_kwargs):
        return ManifestFile(path, engine, open_kwargs, url, cache_dir)
    return RawFile(path, engine, open_kwargs, url, cache_dir)


# -- decoding ----------------------------------------------------------------------------------


def _find_inflate() -> tuple[str, Callable[..., bytes]]:
    """The fastest zlib-compatible ``decompress`` installed: zlib-ng (extra ``fast-inflate``,
    2-2.5x the standard library's on HDF5 deflate chunks), ISA-L, else :mod:`zlib`.  All give
    the same bytes and release the GIL while they inflate."""
    try:
        from zlib_ng import zlib_ng  # type: ignore[import-not-found, unused-ignore]

        return "zlib-ng", zlib_ng.decompress  # type: ignore[no-any-return, unused-ignore]
    except ImportError:
        pass
    try:
        from isal import isal_zlib  # type: ignore[import-not-found, unused-ignore]

        return "isal", isal_zlib.decompress  # type: ignore[no-any-return, unused-ignore]
    except ImportError:
        return "zlib", zlib.decompress


#: which library inflates deflate chunks, and its ``decompress(data, wbits, bufsize)``
INFLATE_LIBRARY, _inflate = _find_inflate()


def _unshuffle(buf: bytes | np.ndarray, elementsize: int) -> bytes | np.ndarray:
    """Undo HDF5's shuffle filter (bytes regrouped by significance; a tail shorter than one
    element stays as it is)."""
    if elementsize <= 1:
        return buf
    import numcodecs

    raw = np.frombuffer(buf, dtype=np.uint8)
    whole = raw.size - raw.size % elementsize
    if whole == raw.size:
        return numcodecs.Shuffle(elementsize).decode(raw)
    out = np.empty(raw.size, dtype=np.uint8)
    out[:whole] = np.frombuffer(numcodecs.Shuffle(elementsize).decode(raw[:whole]), np.uint8)
    out[whole:] = raw[whole:]
    return out


def _strip_fletcher32(buf: bytes | np.ndarray) -> bytes | np.ndarray:
    """Check and remove HDF5's Fletcher-32 checksum (the last four bytes)."""
    import numcodecs

    try:
        return numcodecs.Fletcher32().decode(np.frombuffer(buf, dtype=np.uint8))
    except RuntimeError as err:
        raise ValueError(f"Fletcher-32 checksum mismatch ({err})") from None


def _decoder(fid: int, values: tuple[int, ...], itemsize: int,
             expected: int) -> Callable[[Any], Any]:
    """The function that undoes filter ``fid`` (``values``: its client data)."""
    if fid == _DEFLATE:
        return lambda b: _inflate(b, 15, max(expected, 1))
    if fid == _SHUFFLE:
        size = int(values[0]) if values else itemsize
        return lambda b: _unshuffle(b, size)
    if fid == _FLETCHER32:
        return _strip_fletcher32
    if fid == _BZIP2:
        return bz2.decompress
    import numcodecs

    codec: Any = numcodecs.Zstd() if fid == _ZSTD else numcodecs.Blosc()
    return codec.decode  # type: ignore[no-any-return]


# -- the manifest of one variable --------------------------------------------------------------


@dataclass
class _VarManifest:
    """Where the chunks of one chunked HDF5 dataset are, and how to decode them."""

    name: str
    shape: tuple[int, ...]
    maxshape: tuple[int | None, ...]
    chunks: tuple[int, ...]
    #: dtype of the stored bytes, and of what this reader returns
    stored: np.dtype[Any]
    returned: np.dtype[Any]
    #: (filter id, client data) in the order HDF5 applies them when writing
    filters: tuple[tuple[int, tuple[int, ...]], ...]
    #: the value of unallocated chunks, or None where HDF5 would leave them unwritten
    fill: Any
    dsid: Any
    #: chunk grid position -> (byte offset, length, filter mask), or None: not allocated
    index: dict[tuple[int, ...], tuple[int, int, int] | None] = field(default_factory=dict)
    #: whether ``index`` lists every chunk (else it holds the positions looked up so far)
    listed: bool = False

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunks) * self.stored.itemsize


def _describe(dset: Any, name: str, engine: str) -> _VarManifest | None:
    """The manifest of h5py dataset ``dset``, or None when it cannot be read from one."""
    import h5py  # type: ignore[import-untyped]

    dcpl = dset.id.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CHUNKED or dset.chunks is None or dset.ndim == 0:
        return None
    dtype = dset.dtype
    if dtype.kind not in "biufS" or dtype.hasobject or dtype.fields is not None:
        return None
    if h5py.check_enum_dtype(dtype) is not None or h5py.check_vlen_dtype(dtype) is not None:
        return None
    if dtype.kind == "S" and (engine != "netcdf4" or dtype.itemsize != 1):
        return None  # NetCDF characters only; h5netcdf's raw view of strings differs
    filters = []
    for i in range(dcpl.get_nfilters()):
        fid, _flags, values, _label = dcpl.get_filter(i)
        if int(fid) not in DECODABLE_FILTERS:
            return None
        filters.append((int(fid), tuple(int(v) for v in values)))
    fill: Any = None
    if dcpl.fill_value_defined() != _FILL_UNDEFINED and dcpl.get_fill_time() != _FILL_TIME_NEVER:
        fill = dset.fillvalue
    returned = dtype if engine == "netcdf4" else dtype.newbyteorder("=")
    return _VarManifest(name=name, shape=tuple(int(n) for n in dset.shape),
                        maxshape=tuple(dset.maxshape), chunks=tuple(int(c) for c in dset.chunks),
                        stored=dtype, returned=returned, filters=tuple(filters), fill=fill,
                        dsid=dset.id)


def _region(key: Sequence[Any], man: _VarManifest) -> tuple[tuple[int, int], ...] | None:
    """``key`` as (start, stop) per dimension within the dataset's extent, or None when the
    manifest cannot answer it (steps, integers, negative or open ends on an unlimited
    dimension, or a stop past the stored extent)."""
    if len(key) > len(man.shape):
        return None
    out = []
    for dim, n in enumerate(man.shape):
        k = key[dim] if dim < len(key) else slice(None)
        if not isinstance(k, slice) or k.step not in (None, 1):
            return None
        start = 0 if k.start is None else k.start
        if k.stop is None:
            if man.maxshape[dim] is None:
                return None  # the variable may be shorter than its unlimited dimension
            stop = n
        else:
            stop = k.stop
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))):
            return None
        start, stop = int(start), int(stop)
        if start < 0 or stop < 0 or stop > n:
            return None
        out.append((start, max(start, stop)))
    return tuple(out)


class ManifestFile:
    """A local HDF5/NetCDF-4 source read chunk by chunk from its byte ranges; the interface of
    :class:`~arcoforge.forge.io.readers.RawFile` (``read(name, key)``, ``close()``).

    Parameters
    ----------
    path
        The local file (an HDF5 file whose superblock is at byte 0).
    engine
        ``"netcdf4"`` or ``"h5netcdf"``: whose raw view to give (they differ only in the byte
        order of the arrays they return).
    open_kwargs
        The pattern's ``open_kwargs``; ``group`` selects the group.
    url
        The source's URL, for messages.
    cache_dir
        Passed on to the ``RawFile`` that reads what the manifest cannot.

    Notes
    -----
    Only the chunk index is read through HDF5 (under the library's lock); chunk bytes are read
    with ``os.pread`` and decoded with zlib/numcodecs, which release the GIL.  Reads that the
    manifest cannot answer faithfully go to a ``RawFile`` opened on first need (see the module
    docstring); ``fallbacks`` counts them.
    """

    def __init__(self, path: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
                 url: str | None = None, cache_dir: str | None = None) -> None:
        self.url = url or path
        self._path = path
        self._engine = engine
        self._open_kwargs = dict(open_kwargs or {})
        self._cache_dir = cache_dir
        self._group_name = reader_kwargs(open_kwargs).get("group")
        self._vars: dict[str, _VarManifest | None] = {}
        self._raw: RawFile | None = None
        self._h5: Any = None
        self._group: Any = None
        self._fd: int | None = None
        #: reads handed to the RawFile (variables or slices the manifest cannot answer)
        self.fallbacks = 0
        importlib.import_module("netCDF4")  # first, so h5py sees the same filter plugins
        import h5py

        try:
            self._fd = os.open(path, os.O_RDONLY)
            with _OPEN_LOCK:
                self._h5 = h5py.File(path, "r")
                self._group = self._h5[self._group_name] if self._group_name else self._h5
        except Exception:  # noqa: BLE001 - h5py cannot: the RawFile reads it or says why
            self._close_h5()

    # -- the fast path ---------------------------------------------------------------------
    def _manifest(self, name: str) -> _VarManifest | None:
        if name in self._vars:
            return self._vars[name]
        man = None
        if self._group is not None:
            import h5py

            with _OPEN_LOCK:
                for candidate in (name, _NON_COORD_PREFIX + name):
                    try:
                        obj = self._group.get(candidate)
                    except Exception:  # noqa: BLE001 - a broken link: the RawFile reads it
                        obj = None
                    if isinstance(obj, h5py.Dataset):
                        man = _describe(obj, name, self._engine)
                        break
        if man is not None and self._engine == "netcdf4" and any(
                fid not in _BUILTIN for fid, _ in man.filters) and self._via_h5py():
            man.returned = man.stored.newbyteorder("=")
        self._vars[name] = man
        return man

    def _via_h5py(self) -> bool:
        """Whether a RawFile would read this file through h5netcdf (a filter plugin that only
        h5py has), and so return native byte order."""
        try:
            engine = _reader_for_filters(self._path, self._engine, self.url, self._group_name)
        except SourceReadError:
            return False  # no library here has the plugin: a RawFile would refuse the file
        return engine == "h5netcdf"

    def _chunk_info(self, man: _VarManifest,
                    grid: list[tuple[int, ...]]) -> list[tuple[int, int, int] | None]:
        """(byte offset, length, filter mask) of each chunk at ``grid`` positions (None:
        not allocated): a look-up each for a few, the whole index listed once for many."""
        missing = [] if man.listed else [pos for pos in grid if pos not in man.index]
        if len(missing) > _LOOKUP_LIMIT:
            index: dict[tuple[int, ...], tuple[int, int, int] | None] = {}

            def visit(info: Any) -> None:
                pos = tuple(o // c for o, c in zip(info.chunk_offset, man.chunks))
                index[pos] = (int(info.byte_offset), int(info.size), int(info.filter_mask))

            with _OPEN_LOCK:
                man.dsid.chunk_iter(visit)
            man.index, man.listed = index, True
        elif missing:
            with _OPEN_LOCK:
                for pos in missing:
                    info = man.dsid.get_chunk_info_by_coord(
                        tuple(p * c for p, c in zip(pos, man.chunks)))
                    man.index[pos] = (None if info.byte_offset is None or info.size == 0 else
                                      (int(info.byte_offset), int(info.size),
                                       int(info.filter_mask)))
        return [man.index.get(pos) for pos in grid]

    def _decode(self, man: _VarManifest, offset: int, length: int, mask: int) -> np.ndarray:
        """One chunk's values, decoded (chunk-shaped, stored dtype)."""
        assert self._fd is not None
        buf: Any = os.pread(self._fd, length, offset)
        if len(buf) != length:
            raise EOFError(f"chunk of {length} bytes at byte {offset} lies beyond the end of "
                           f"the file ({os.fstat(self._fd).st_size} bytes)")
        expected = man.chunk_nbytes
        for i in range(len(man.filters) - 1, -1, -1):
            if mask >> i & 1:
                continue  # HDF5 skipped this (optional) filter for this chunk
            fid, values = man.filters[i]
            buf = _decoder(fid, values, man.stored.itemsize, expected)(buf)
        data = np.frombuffer(buf, dtype=np.uint8)
        if data.size != expected:
            raise ValueError(f"a chunk decodes to {data.size} bytes, not {expected}")
        return data.view(man.stored).reshape(man.chunks)

    def _read_manifest(self, man: _VarManifest,
                       region: tuple[tuple[int, int], ...]) -> np.ndarray | None:
        """``region`` of ``man``'s variable assembled from its chunks, or None when the
        library must answer (unallocated chunks without an HDF5 fill value, an index h5py
        cannot list)."""
        shape = tuple(b - a for a, b in region)
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=man.returned)
        grid = list(itertools.product(*(range(a // c, (b - 1) // c + 1)
                                        for (a, b), c in zip(region, man.chunks))))
        try:
            infos = self._chunk_info(man, grid)
        except Exception:  # noqa: BLE001 - an index HDF5 will not list: the library reads it
            return None
        if man.fill is None and any(info is None for info in infos):
            return None  # HDF5 would not write a fill value there: let the library say
        first = infos[0]
        if len(grid) == 1 and first is not None and shape == man.chunks:
            whole = self._decode(man, *first)  # exactly one chunk: no assembly
            if whole.dtype == man.returned and whole.flags.writeable:
                return whole
            return whole.astype(man.returned)
        out = np.empty(shape, dtype=man.returned)
        for pos, info in zip(grid, infos):
            src, dst = [], []
            for p, c, (a, b) in zip(pos, man.chunks, region):
                lo, hi = max(a, p * c), min(b, (p + 1) * c)
                src.append(slice(lo - p * c, hi - p * c))
                dst.append(slice(lo - a, hi - a))
            if info is None:
                out[tuple(dst)] = man.fill
            else:
                out[tuple(dst)] = self._decode(man, *info)[tuple(src)]
        return out

    # -- the interface ---------------------------------------------------------------------
    def read(self, name: str, key: tuple[slice, ...]) -> np.ndarray:
        """The raw values of ``name[key]`` (on-disk dtype), as ``RawFile.read`` gives them."""
        man = self._manifest(name)
        region = _region(key, man) if man is not None else None
        if man is not None and region is not None:
            try:
                data = self._read_manifest(man, region)
            except Exception as err:  # noqa: BLE001 - re-raised with the cause and the fix
                raise _explain(err, self._path, self._engine, self.url,
                               f"read variable {name!r} from {self.url}") from err
            if data is not None:
                return data
        return self._fallback().read(name, key)

    def _fallback(self) -> RawFile:
        self.fallbacks += 1
        if self._raw is None:
            self._raw = RawFile(self._path, self._engine, self._open_kwargs, self.url,
                                cache_dir=self._cache_dir)
        return self._raw

    def _close_h5(self) -> None:
        if self._h5 is not None:
            with _OPEN_LOCK:
                self._h5.close()
            self._h5 = None
        self._group = None

    def close(self) -> None:
        """Close the file (and the ``RawFile`` of the fallback reads, if one was opened)."""
        self._vars.clear()
        self._close_h5()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

