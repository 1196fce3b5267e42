"""The one adapter over zarr's and xarray's private internals that the feed's fast path uses.

Everything the fast path needs from outside the public APIs of zarr and xarray lives here, so a
library upgrade that changes those internals is noticed in one place (and by
``tests/batch/test_fast_path_taken.py``, which fails naming the versions) instead of silently
halving throughput:

* :func:`direct_access` — *whether and how* a variable can be read directly. It finds the
  ``zarr.Array`` whose stored values an xarray variable holds unchanged (through xarray's lazy
  indexing wrappers, or the dask graph ``open_zarr`` builds) and says which route reads it:
  ``"numpy"`` (in memory), ``"direct"`` (:class:`ZarrBoxReader`), ``"zarr"`` (the array's
  general ``get_basic_selection``) or ``"xarray"``, with the reason when it is not direct.
* :class:`ZarrBoxReader` — reads boxes of a zarr array by decoding whole chunks on a shared
  thread pool. Stores with synchronous IO are read chunk by chunk with ``get_sync`` inside the
  decoding tasks; stores with only the async API (Icechunk) have all the chunks of a box
  fetched concurrently in one event-loop round trip, then decoded on the pool. Each chunk is
  decoded with zarr's synchronous codec chain (``ChunkTransform``); the codecs release the GIL,
  so several chunks decode on several cores. When a whole chunk lands in a contiguous part of
  the output and the chain is plain (native-endian ``bytes`` plus at most one zstd/blosc/gzip
  compressor), the compressor decompresses straight into the output: no intermediate tile.
* :class:`LabelBuilder` — builds ``skeleton.isel(box)`` with new values by filling the
  ``__slots__`` of xarray's ``Variable`` and ``Dataset`` directly (what ``fastpath=True`` and
  ``Dataset._construct_direct`` do, without their per-attribute ``__setattr__``), reusing the
  sliced coordinates and indexes of each (dim, slice) it has seen: what xarray's ``isel``
  would return, in a tenth of the time. The slots are checked when this module is imported
  (another layout disables the shortcut, with the reason); its first result is checked
  against the public ``isel`` path; any difference switches it off (with the reason) for good.
* :data:`COUNTERS` — how many boxes and chunks were read directly, how many boxes fell back
  to a general path, and how many labeled batches were built directly or through xarray, so
  tests can assert that the fast path was taken (not timed).

Arrays the reader cannot handle (sharded, irregular chunk grids, codecs without a synchronous
implementation) make :func:`box_reader` return None; callers then read through
``zarr.Array.get_basic_selection``.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, SourceReadError

__all__ = ["COUNTERS", "DirectAccess", "LabelBuilder", "ZarrBoxReader", "box_reader",
           "decode_pool", "direct_access", "library_versions", "zarr_backing"]


class FastPathCounters:
    """How boxes were read in this process (thread-safe; :meth:`snapshot` / :meth:`reset`).

    ``direct_boxes``/``direct_chunks``: boxes and chunks decoded by :class:`ZarrBoxReader`;
    ``raw_chunks``: of those, chunks decompressed straight into the output;
    ``zarr_boxes``: boxes of a zarr-backed variable read through zarr's general API;
    ``xarray_boxes``: boxes read through xarray (dask or lazy indexing);
    ``direct_labels``/``xarray_labels``: labeled batches built by :class:`LabelBuilder` or
    through xarray's public ``isel``.
    """

    FIELDS = ("direct_boxes", "direct_chunks", "raw_chunks", "zarr_boxes", "xarray_boxes",
              "direct_labels", "xarray_labels")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)

    def add(self, **counts: int) -> None:
        """Add to the named counters."""
        with self._lock:
            for k, n in counts.items():
                self._values[k] += n

    def add_one(self, field: str) -> None:
        """Add one to counter ``field`` (the per-batch call: cheaper than :meth:`add`)."""
        with self._lock:
            self._values[field] += 1

    def snapshot(self) -> dict[str, int]:
        """The counters now."""
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        """Set every counter to zero."""
        with self._lock:
            self._values = dict.fromkeys(self.FIELDS, 0)


COUNTERS = FastPathCounters()


def library_versions() -> str:
    """The versions the fast path depends on, for messages (e.g. ``zarr 3.1.0, xarray ...``)."""
    import importlib.metadata as md

    out = []
    for name in ("zarr", "xarray", "numcodecs", "dask", "icechunk"):
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(out)

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process-wide chunk-decoding pool (rebuilt after a fork; never shut down)."""
    global _POOL
    pid = os.getpid()
    pool = _POOL
    if pool is not None and pool[0] == pid:
        return pool[1]
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid:
            n = max(2, min(8, os.cpu_count() or 2))
            _POOL = (pid, ThreadPoolExecutor(max_workers=n,
                                             thread_name_prefix="arcoforge-decode"))
        return _POOL[1]


RawDecoder = Callable[[np.ndarray, np.ndarray], Any]
_LOCAL = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread reusable array of ``shape`` (no page faults of a fresh large allocation)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        _LOCAL.buf = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def raw_decoder(codecs: tuple[Any, ...], dtype: np.dtype) -> RawDecoder | None:
    """``decode(encoded_uint8, out_uint8)`` writing a chunk's C-order bytes into ``out``.

    Only for zarr v3 chains of a native-endian ``BytesCodec`` and at most one zstd, blosc or
    gzip codec (their numcodecs implementations decompress into ``out``); else None.
    """
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    if not codecs or type(codecs[0]) is not BytesCodec or len(codecs) > 2:
        return None
    endian = codecs[0].endian
    if dtype.itemsize > 1 and endian is not None and str(getattr(endian, "value", endian)) \
            != sys.byteorder:
        return None
    if dtype.hasobject or not dtype.isnative:
        return None
    if len(codecs) == 1:
        def copy(buf: np.ndarray, out: np.ndarray) -> None:
            if buf.size != out.size:
                raise SourceReadError(f"a stored chunk holds {buf.size} bytes, its shape needs {out.size}")
            np.copyto(out, buf)
        return copy
    bb = codecs[1]
    if type(bb) is ZstdCodec:
        codec = bb._zstd_codec
    elif type(bb) is BloscCodec:
        codec = bb._blosc_codec
    elif type(bb) is GzipCodec:
        codec = bb._gzip_codec
    else:
        return None
    return codec.decode


class ZarrBoxReader:
    """Decodes the chunks of one (unsharded, regularly chunked) zarr array (module docstring).

    Raises ``TypeError`` (with the reason) for arrays it cannot read.
    """

    def __init__(self, za: Any) -> None:
        from zarr.abc.store import _store_supports_sync_io
        from zarr.core.array_spec import ArraySpec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.chunk_utils import ChunkTransform

        meta = za.metadata
        codecs = getattr(meta, "codecs", None)
        if codecs is None:  # zarr v2: filters + compressor in one codec
            from zarr.codecs._v2 import V2Codec

            codecs = (V2Codec(filters=meta.filters, compressor=meta.compressor),)
        if any(type(c).__name__ == "ShardingCodec" for c in codecs):
            raise ConfigError("sharded arrays are read through zarr")
        store = za.store_path.store
        self.sync_io = bool(_store_supports_sync_io(store))
        if not self.sync_io and not hasattr(store, "get"):
            raise ConfigError(f"store {type(store).__name__} has neither sync nor async get")
        grid = getattr(meta, "chunk_grid", None)
        if grid is not None and "Regular" not in type(grid).__name__:
            raise ConfigError(f"chunk grid {type(grid).__name__} is not regular")
        self.transform = ChunkTransform(codecs=tuple(codecs))
        try:
            self.raw_decode = raw_decoder(tuple(codecs), np.dtype(za.dtype)) \
                if getattr(meta, "zarr_format", 3) == 3 else None
        except Exception:  # another zarr version: decode through the chain
            self.raw_decode = None
        self.store = store
        self.path = za.store_path.path
        self.encode = meta.encode_chunk_key
        self.shape = tuple(int(s) for s in za.shape)
        self.chunks = tuple(int(c) for c in za.chunks)
        self.dtype = np.dtype(za.dtype)
        self.fill_value = za.fill_value
        self.proto = default_buffer_prototype()
        zdtype = getattr(meta, "data_type", None) or meta.dtype
        self.spec = ArraySpec(shape=self.chunks, dtype=zdtype, fill_value=meta.fill_value,
                              config=za.config, prototype=self.proto)

    def _key(self, coords: tuple[int, ...]) -> str:
        key = self.encode(coords)
        return f"{self.path}/{key}" if self.path else key

    def _fetch_all(self, keys: list[str]) -> list[Any]:
        """The encoded chunks of ``keys`` (None where absent), fetched concurrently (async API)."""
        import asyncio

        from zarr.core.sync import sync

        async def fetch() -> list[Any]:
            return list(await asyncio.gather(*[self.store.get(k, prototype=self.proto)
                                               for k in keys]))

        return sync(fetch())

    def _one(self, coords: tuple[int, ...], csel: tuple[slice, ...], osel: tuple[slice, ...],
             out: np.ndarray, buf: Any = None, fetched: bool = False) -> int:
        """Decode one chunk into ``out[osel]``; 1 if it was decompressed in place, else 0."""
        if not fetched:
            buf = self.store.get_sync(self._key(coords), prototype=self.proto)
        if buf is None:  # absent chunk: all fill value (zarr semantics)
            out[osel] = self.fill_value
            return 0
        if self.raw_decode is not None:
            dest = out[osel]
            raw = buf.as_numpy_array().view(np.uint8).reshape(-1)
            if dest.flags.c_contiguous and dest.dtype == self.dtype and all(
                    s.start == 0 and s.stop == c for s, c in zip(csel, self.chunks, strict=True)):
                self.raw_decode(raw, dest.reshape(-1).view(np.uint8))
                return 1
            # decompress into this thread's reusable tile, then copy the part that is wanted
            tile = _scratch(self.chunks, self.dtype)
            self.raw_decode(raw, tile.reshape(-1).view(np.uint8))
            dest[...] = tile[csel]
            return 1
        tile = self.transform.decode_chunk(buf, self.spec).as_numpy_array()
        out[osel] = tile.reshape(self.chunks)[csel]
        return 0

    def read_into(self, sel: tuple[slice, ...], out: np.ndarray) -> None:
        """Write ``array[sel]`` (unit-step slices within bounds) into ``out``."""
        ranges = []
        for s, n, c in zip(sel, self.shape, self.chunks, strict=True):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ConfigError(f"only unit-step slices can be read directly, got {s}")
            if stop <= start:
                return
            ranges.append((start, stop, range(start // c, (stop - 1) // c + 1), c))
        tasks = []
        for coords in itertools.product(*[r[2] for r in ranges]):
            csel, osel = [], []
            for k, (start, stop, _, c) in zip(coords, ranges, strict=True):
                lo, hi = max(start, k * c), min(stop, (k + 1) * c)
                csel.append(slice(lo - k * c, hi - k * c))
                osel.append(slice(lo - start, hi - start))
            tasks.append((tuple(coords), tuple(csel), tuple(osel)))
        if self.sync_io:
            if len(tasks) == 1:
                raw = self._one(*tasks[0], out)
            else:
                futures = [decode_pool().submit(self._one, *t, out) for t in tasks]
                raw = sum(f.result() for f in futures)
        else:
            bufs = self._fetch_all([self._key(t[0]) for t in tasks])
            if len(tasks) == 1:
                raw = self._one(*tasks[0], out, bufs[0], True)
            else:
                futures = [decode_pool().submit(self._one, *t, out, b, True)
                           for t, b in zip(tasks, bufs, strict=True)]
                raw = sum(f.result() for f in futures)
        COUNTERS.add(direct_boxes=1, direct_chunks=len(tasks), raw_chunks=raw)


def _reader_or_reason(za: Any) -> tuple[ZarrBoxReader | None, str]:
    try:
        return ZarrBoxReader(za), ""
    except Exception as exc:  # unsupported layout / codec / store, or another zarr version
        return None, f"{type(exc).__name__}: {exc}"


def box_reader(za: Any) -> ZarrBoxReader | None:
    """A :class:`ZarrBoxReader` for ``za``, or None if it needs zarr's general path."""
    return _reader_or_reason(za)[0]


# -- xarray side: which zarr array holds a variable's values -----------------------------------
def _unwrap_lazy(data: Any, shape: tuple[int, ...]) -> tuple[Any | None, str]:
    """The zarr array behind xarray's lazy indexing wrappers if they add nothing, else a reason."""
    from xarray.core import indexing

    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(data, indexing.LazilyIndexedArray):
            key = data.key.tuple
            if not all(isinstance(k, slice) and k == slice(None) for k in key):
                return None, "the variable is a lazily indexed subset of the stored array"
            data = data.array
        elif isinstance(data, indexing.MemoryCachedArray | indexing.CopyOnWriteArray
                        | indexing.ImplicitToExplicitIndexingAdapter):
            data = data.array
        else:
            break
    if type(data).__name__ != "ZarrArrayWrapper":
        return None, (f"xarray wraps the stored array in {type(data).__name__} "
                      "(CF decoding, another backend, or changed xarray internals)")
    za = getattr(data, "_array", None)
    if za is None or not hasattr(za, "get_basic_selection"):
        return None, "xarray's ZarrArrayWrapper no longer holds the zarr array as ``_array``"
    if tuple(getattr(za, "shape", ())) != tuple(shape):
        return None, "the stored array's shape differs from the variable's"
    return za, ""


def _find_zarr(var: Any) -> tuple[Any | None, str]:
    data = getattr(var, "_data", None)
    if data is None:
        return None, "the variable has no data"
    if var.chunks is None:
        za, reason = _unwrap_lazy(data, var.shape)
    else:
        layers = getattr(getattr(data, "dask", None), "layers", None)
        if layers is None or len(layers) != 2:
            return None, ("a dask array with a graph other than what open_zarr builds "
                          "(isel, arithmetic or rechunking after opening)")
        originals = [lay for name, lay in layers.items() if str(name).startswith("original-")]
        if len(originals) != 1:
            return None, "the dask graph has no single 'original-' layer (dask/xarray changed?)"
        values = list(dict(originals[0]).values())
        if len(values) != 1:
            return None, "the dask 'original-' layer does not hold one backend array"
        za, reason = _unwrap_lazy(values[0], var.shape)
    if za is None:
        return None, reason
    if np.dtype(za.dtype) != np.dtype(var.dtype) or za.ndim != var.ndim:
        return None, "the stored dtype or rank differs from the variable's (decoding)"
    return za, ""


def zarr_backing(var: Any) -> Any | None:
    """The ``zarr.Array`` whose stored values ``var`` (an ``xarray.Variable``) holds unchanged.

    Found through xarray's backend wrappers: a lazily indexed variable, or a dask array whose
    graph is exactly what ``open_zarr`` built (the backend array plus one getter layer; any
    later ``isel``, arithmetic or rechunking adds layers and disables this). Variables with CF
    decoding (masking, scaling, time decoding) carry extra wrappers and are not matched.
    """
    if isinstance(getattr(var, "_data", None), np.ndarray):
        return None
    return _find_zarr(var)[0]


AccessKind = Literal["numpy", "direct", "zarr", "xarray"]


@dataclass(frozen=True)
class DirectAccess:
    """How one variable is read (see :func:`direct_access`).

    ``kind``: ``"numpy"`` (in memory, read as a view), ``"direct"`` (chunks decoded by
    ``reader``), ``"zarr"`` (``array.get_basic_selection``) or ``"xarray"``; ``reason`` says why
    it is not ``"direct"`` (empty when it is, or when in memory).
    """

    kind: AccessKind
    array: Any = None
    reader: ZarrBoxReader | None = None
    reason: str = ""

    @property
    def direct(self) -> bool:
        """True when chunks are decoded by :class:`ZarrBoxReader`."""
        return self.kind == "direct"


def direct_access(var: Any) -> DirectAccess:
    """Whether and how ``var`` (an ``xarray.Variable``) can be read directly (module docstring)."""
    data = getattr(var, "_data", None)
    if isinstance(data, np.ndarray):
        return DirectAccess("numpy")
    za, reason = _find_zarr(var)
    if za is None:
        return DirectAccess("xarray", reason=reason)
    reader, why = _reader_or_reason(za)
    if reader is None:
        return DirectAccess("zarr", array=za, reason=f"zarr array not read directly: {why}")
    return DirectAccess("direct", array=za, reader=reader)


# -- xarray side: labeled batches without xarray's per-call indexing cost ----------------------
_KEEP, _FILL, _ALONG, _SLICE = range(4)
_VARIABLE_SLOTS = ("_dims", "_data", "_attrs", "_encoding")


def _clone_variable(var: Any, data: Any = None) -> Any:
    """A new ``Variable`` (or ``IndexVariable``) like ``var``: own attrs/encoding dicts.

    ``data`` replaces the values when given, else they are shared (coordinate values, which
    xarray's ``isel`` shares too). Sets xarray's ``Variable`` slots directly: a third of the
    cost of its ``fastpath`` constructor. Only for ``Variable`` and ``IndexVariable`` (their
    slots are checked on import). :meth:`LabelBuilder._first` compares the result with
    xarray's public path, and ``tests/batch/test_generator_fast.py`` fails naming the versions
    if these slots change.
    """
    new = object.__new__(type(var))
    set_dims, set_data, set_attrs, set_encoding = _SLOT_SETTERS
    set_dims(new, var._dims)
    set_data(new, var._data if data is None else data)
    attrs, encoding = var._attrs, var._encoding
    set_attrs(new, None if attrs is None else dict(attrs))
    set_encoding(new, None if encoding is None else dict(encoding))
    return new


def _slot_setters() -> tuple[Any, ...]:
    from xarray import IndexVariable, Variable

    if tuple(sorted(Variable.__slots__)) != tuple(sorted(_VARIABLE_SLOTS)) or \
            IndexVariable.__slots__ != ():
        raise TypeError(f"xarray.Variable's slots changed: {Variable.__slots__}, "
                        f"IndexVariable: {IndexVariable.__slots__}")
    return tuple(getattr(Variable, name).__set__ for name in _VARIABLE_SLOTS)


try:
    _SLOT_SETTERS: tuple[Any, ...] = _slot_setters()
    _SLOTS_REASON = ""
except Exception as exc:  # another xarray: LabelBuilder falls back to xarray's public isel
    _SLOT_SETTERS = ()
    _SLOTS_REASON = f"{type(exc).__name__}: {exc}"

# what ``Dataset._construct_direct`` sets (xarray 2024-2026); ``_cache`` is filled lazily
_DATASET_SLOTS = ("_variables", "_coord_names", "_dims", "_indexes", "_attrs", "_close",
                  "_encoding")


def _dataset_setters() -> tuple[type, tuple[Any, ...]] | None:
    """``(Dataset, its slot setters)`` if its slots are the known ones, else None."""
    from xarray import Dataset

    known = set(_DATASET_SLOTS) | {"_cache", "__weakref__"}
    if set(Dataset.__slots__) != known:
        return None
    return Dataset, tuple(getattr(Dataset, name).__set__ for name in _DATASET_SLOTS)


try:
    _DATASET_SETTERS = _dataset_setters()
except Exception:  # noqa: BLE001 - another xarray: Dataset._construct_direct is used
    _DATASET_SETTERS = None


def _new_dataset(cls: Any, variables: dict, coord_names: set, dims: dict, attrs: dict | None,
                 indexes: dict, encoding: dict | None) -> Any:
    """``cls._construct_direct(...)`` without its per-attribute ``__setattr__`` calls."""
    known = _DATASET_SETTERS
    if known is None or cls is not known[0]:  # subclasses may add slots
        return cls._construct_direct(variables, coord_names, dims, attrs, indexes, encoding)
    setters = known[1]
    obj: Any = object.__new__(cls)
    for setter, value in zip(setters, (variables, coord_names, dims, indexes, attrs, None,
                                        encoding), strict=True):
        setter(obj, value)
    return obj


class LabelBuilder:
    """``skeleton.isel(box)`` with the values of some variables replaced (module docstring).

    Parameters
    ----------
    skeleton:
        A Dataset or DataArray whose coordinates are in memory.
    sliced_dims:
        The dims every ``box`` slices.
    filled:
        Names of the data variables whose values :meth:`build` is given (for a DataArray: its
        ``values`` key). ``reason`` is set (and :meth:`build` falls back to the public path)
        when the skeleton has an index this cannot reuse, or the first result differs.

    Notes
    -----
    Every built object has its own ``Variable`` objects, attrs and encoding dicts and
    containers, so changing one batch's attributes, encodings or variables in place leaves the
    others unchanged. Values are shared where xarray's ``isel`` shares them: those of
    variables without a sliced dim and of variables that are not filled (views of the
    skeleton's), and the read-only values and the indexes of index coordinates. The filled
    values are used as given (not copied).
    """

    _CACHE_LIMIT = 4096

    def __init__(self, skeleton: Any, sliced_dims: tuple[Any, ...], filled: list[Any],
                 array_key: Any = None) -> None:
        import xarray as xr

        self.skeleton = skeleton
        self.is_array = isinstance(skeleton, xr.DataArray)
        self.array_key = array_key
        self.sliced = tuple(sliced_dims)
        self.filled = list(filled)
        self.reason = _SLOTS_REASON
        self.checked = False
        self._cache: dict[tuple[int, int, int], dict[Any, tuple[Any, Any]]] = {}
        if self.reason:
            return
        try:
            self._prepare()
        except Exception as exc:  # an index or layout this does not reuse, or new internals
            self.reason = f"{type(exc).__name__}: {exc}"

    def _prepare(self) -> None:
        import xarray as xr

        skel = self.skeleton
        sliced = set(self.sliced)
        pos = {d: k for k, d in enumerate(self.sliced)}
        if self.is_array:
            self.var = skel.variable
            items = list(skel.coords.variables.items())
        else:
            items = list(skel.variables.items())
        coord_names = set(skel.coords)
        self.coord_names = coord_names
        cloneable = (xr.Variable, xr.IndexVariable)
        for name, var in items + ([(skel.name, self.var)] if self.is_array else []):
            if type(var) not in cloneable:
                raise ConfigError(f"variable {name!r} is a {type(var).__name__}")
        # (name, kind, payload): payload is the variable (keep, fill), the sliced-dim position
        # (along: a 1-d coordinate of a sliced dim) or the variable and its sliced dims (slice)
        self.plan: list[tuple[Any, int, Any]] = []
        along: dict[Any, list[Any]] = {}
        for name, var in items:
            dims = set(var.dims)
            if not self.is_array and name in self.filled:
                self.plan.append((name, _FILL, var))
            elif not dims & sliced:
                self.plan.append((name, _KEEP, var))
            elif name in coord_names and len(var.dims) == 1:
                self.plan.append((name, _ALONG, pos[var.dims[0]]))
                along.setdefault(var.dims[0], []).append(name)
            else:
                self.plan.append((name, _SLICE, (var, [(d, pos[d]) for d in var.dims
                                                      if d in pos])))
        self.indexes_keep = {}
        for name, index in skel.xindexes.items():
            idims = set(skel.xindexes.get_all_dims(name))
            if not idims & sliced:
                self.indexes_keep[name] = index
            elif len(idims) != 1 or any(n not in along.get(next(iter(idims)), [])
                                        for n in skel.xindexes.get_all_coords(name)):
                raise ConfigError(f"index of {name!r} spans {sorted(map(str, idims))}")
        self.along = along
        coords_only = skel.coords.to_dataset()
        self.per_dim = {d: coords_only[names] for d, names in along.items()}
        # the dataset's dims in the order ``isel`` lists them (first use by a variable):
        # (dim, position among the sliced dims or None, size when not sliced)
        order: dict[Any, tuple[Any, int | None, int]] = {}
        for _, var in items if not self.is_array else []:
            for d, n in zip(var.dims, var.shape, strict=True):
                order.setdefault(d, (d, pos.get(d), int(n)))
        self.dim_plan = list(order.values())
        if self.is_array:
            self.array_dims = [(d, pos.get(d)) for d in self.var.dims]

    def _along(self, k: int, start: int, stop: int) -> dict[Any, tuple[Any, Any]]:
        """``{name: (variable, index or None)}``: the coordinates along sliced dim ``k``."""
        key = (k, start, stop)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            d = self.sliced[k]
            sub = self.per_dim[d].isel({d: slice(start, stop)})
            hit = {n: (sub.variables[n], sub.xindexes.get(n)) for n in self.along[d]}
            self._cache[key] = hit
        return hit

    def public(self, box: dict[Any, slice], values: dict[Any, np.ndarray]) -> Any:
        """The same result through xarray's public API (the reference and the fallback)."""
        out = self.skeleton.isel(box)
        if self.is_array:
            return out.copy(deep=False, data=values[self.array_key]) if values else out
        if not values:
            return out
        data = {v: values[v] if v in values else out.variables[v].data for v in out.data_vars}
        return out.copy(deep=False, data=data)

    def _direct(self, lo: list[int], hi: list[int], values: dict[Any, np.ndarray]) -> Any:
        import xarray as xr

        variables: dict[Any, Any] = {}
        indexes = dict(self.indexes_keep)
        cache = self._cache
        for name, kind, what in self.plan:
            if kind == _ALONG:
                start, stop = lo[what], hi[what]
                got = cache.get((what, start, stop))
                if got is None:
                    got = self._along(what, start, stop)
                var, index = got[name]
                variables[name] = _clone_variable(var)
                if index is not None:
                    indexes[name] = index
            elif kind == _FILL:
                variables[name] = _clone_variable(what, values[name])
            elif kind == _KEEP:
                variables[name] = _clone_variable(what)
            else:
                var, dims = what
                variables[name] = var.isel({d: slice(lo[k], hi[k]) for d, k in dims})
        skel = self.skeleton
        if self.is_array:
            v = self.var
            if self.array_key in values:
                var = _clone_variable(v, values[self.array_key])
            else:
                var = v.isel({d: slice(lo[k], hi[k]) for d, k in self.array_dims
                              if k is not None})
            return xr.DataArray(var, coords=variables, name=skel.name, indexes=indexes,
                                fastpath=True)
        dims = {d: n if k is None else hi[k] - lo[k] for d, k, n in self.dim_plan}
        attrs, encoding = skel._attrs, skel._encoding
        return _new_dataset(type(skel), variables, set(self.coord_names), dims,
                            None if attrs is None else dict(attrs), indexes,
                            None if encoding is None else dict(encoding))

    def build(self, box: dict[Any, slice], values: dict[Any, np.ndarray]) -> Any:
        """``skeleton.isel(box)`` with ``values`` in place of the filled variables' data."""
        lo = [box[d].start for d in self.sliced]
        hi = [box[d].stop for d in self.sliced]
        return self.build_bounds(lo, hi, values)

    def build_bounds(self, lo: list[int], hi: list[int], values: dict[Any, np.ndarray]) -> Any:
        """:meth:`build` for the box ``lo[k]:hi[k]`` along each of ``sliced_dims``."""
        if self.checked:
            COUNTERS.add_one("direct_labels")
            return self._direct(lo, hi, values)
        box = {d: slice(a, b) for d, a, b in zip(self.sliced, lo, hi, strict=True)}
        if self.reason:
            COUNTERS.add_one("xarray_labels")
            return self.public(box, values)
        return self._first(box, lo, hi, values)

    def _first(self, box: dict[Any, slice], lo: list[int], hi: list[int],
               values: dict[Any, np.ndarray]) -> Any:
        """Build directly and through xarray once; keep the direct path only if they agree."""
        import xarray as xr

        expected = self.public(box, values)
        try:
            got = self._direct(lo, hi, values)
            xr.testing.assert_identical(got, expected)
            pairs = [(got, expected)] if self.is_array else []
            if not self.is_array:
                assert list(got.variables) == list(expected.variables), "variable order"
                assert list(got.sizes) == list(expected.sizes), "dimension order"
                assert got.encoding == expected.encoding, "dataset encoding"
                pairs = [(got[k], expected[k]) for k in expected.variables]
            for a, b in pairs:
                assert a.encoding == b.encoding, f"encoding of {a.name!r}"
                assert list(a.coords) == list(b.coords), f"coordinate order of {a.name!r}"
            assert {k: type(v) for k, v in got.xindexes.items()} == \
                {k: type(v) for k, v in expected.xindexes.items()}, "index types"
            kinds = [(got.coords.variables, expected.coords.variables)]
            kinds += [(got.variables, expected.variables)] if not self.is_array else \
                [({None: got.variable}, {None: expected.variable})]
            for mine, theirs in kinds:
                assert {k: type(v) for k, v in mine.items()} == \
                    {k: type(v) for k, v in theirs.items()}, "variable types"
        except Exception as exc:  # noqa: BLE001 - any difference disables the direct path
            self.reason = f"direct labeled batch differs from xarray's isel: {exc}"
            COUNTERS.add_one("xarray_labels")
            return expected
        self.checked = True
        COUNTERS.add_one("direct_labels")
        return got
