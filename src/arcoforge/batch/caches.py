"""Block caches behind one small interface: in-memory LRU, Zarr (any fsspec URL), Redis.

A cache maps a string key to a numpy array. Values are stored as raw array bytes plus
dtype/shape metadata — never pickles — so a cache can be shared between processes and
machines safely. Keys come from :func:`cache_key`, which hashes the dataset token, the
variable, the selection and the user's preprocessing version: change any of them and the old
entries are simply never looked up again (invalidation by construction). The dataset token
(:func:`dataset_token`) includes the dataset's published identity
(:func:`~arcoforge.batch.identity.dataset_identity`: Icechunk snapshot id, arcoforge version +
fingerprint, else sizes and mtimes of the files), so a new version published at the same path
gets new keys.

The persistent caches (Zarr, Redis) store a checksum of each entry's dtype, shape and bytes
and verify it on every read: by default xxh3-128 when ``xxhash`` is installed, else zlib's
CRC-32 (both detect accidental damage at several GB/s; ``algorithm="sha256"`` or
``"blake2b"`` on request; the algorithm is recorded with each entry). An entry whose bytes,
dtype or shape changed, or whose chunk file is gone, is never served: it counts as a miss
(and in ``damaged``) and is dropped. Each cache counts ``hits``, ``misses`` and ``damaged``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from arcoforge.errors import ConfigError, MissingDependencyError

from ._optional import require
from .identity import _is_zarr_array, dataset_identity, stored_in_zarr

__all__ = [
    "CHECKSUMS",
    "ArrayCache",
    "LRUCache",
    "RedisCache",
    "ZarrCache",
    "cache_key",
    "checksum",
    "data_description",
    "dataset_identity",
    "dataset_token",
]


@runtime_checkable
class ArrayCache(Protocol):
    """What the batch pipeline needs from a cache."""

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None on a miss."""

    def put(self, key: str, value: np.ndarray) -> None:
        """Store an array under ``key``."""

    def clear(self) -> None:
        """Drop every entry this cache owns."""


def cache_key(token: str, variable: Hashable, selection: Any, version: str = "") -> str:
    """Stable key for one variable's selection of one dataset under a preprocessing version."""
    payload = json.dumps([token, str(variable), _jsonable(selection), str(version)])
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def _jsonable(sel: Any) -> Any:
    if isinstance(sel, slice):
        return [sel.start, sel.stop, sel.step]
    if isinstance(sel, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(sel.items(), key=lambda kv: str(kv[0]))}
    if isinstance(sel, list | tuple):
        return [_jsonable(s) for s in sel]
    if isinstance(sel, np.integer):
        return int(sel)
    return sel


def dataset_token(ds: Any, variables: list[Hashable] | None = None) -> str:
    """Identity of a dataset for cache keys: published identity, source, schema, coordinates
    and what each variable's values are computed from.

    The published identity (:func:`~arcoforge.batch.identity.dataset_identity`) changes with
    every version published at a path, Icechunk snapshot, or rewrite of the files of another
    store. In-memory numpy variables are hashed by content. Lazy ones add their encoding and
    :func:`data_description`: a dask variable its graph's name (a deterministic token of the
    graph, so ``isel`` or arithmetic after opening gives another token, and the same opening
    and selection the same token in every process); a lazily indexed backend variable the
    indexer applied to the stored array (``isel`` along a dim without a coordinate included)
    and its decoding layers. Anything not recognised is named for this process only (a miss
    elsewhere rather than a wrong hit). ``ArraySource(dataset_id=...)`` replaces this token
    by the caller's own.
    """
    h = hashlib.sha256()
    h.update(dataset_identity(ds).encode())
    enc = getattr(ds, "encoding", {}) or {}
    source = enc.get("source")
    h.update(repr(source or "").encode())
    names = variables if variables is not None else (
        list(ds.data_vars) if hasattr(ds, "data_vars") else [ds.name])
    for name in sorted(names, key=str):
        var = ds.variable if not hasattr(ds, "data_vars") else ds[name].variable
        h.update(repr((str(name), var.dims, var.shape, str(var.dtype))).encode())
        h.update(repr(sorted((str(k), str(v)) for k, v in var.attrs.items())).encode())
        data = var._data  # noqa: SLF001 - identity only, never mutated
        if isinstance(data, np.ndarray):
            h.update(_content_hash(data).encode())
            continue
        named = bool(source or var.encoding.get("source")) or stored_in_zarr(var)
        if named:  # the store or file is named by dataset_identity
            h.update(repr(sorted((str(k), str(v)) for k, v in var.encoding.items())).encode())
        h.update(data_description(data, named=named).encode())
    for cname, coord in sorted(ds.coords.items(), key=lambda kv: str(kv[0])):
        if coord.ndim <= 1 and coord.size <= 10_000_000:
            h.update(str(cname).encode())
            h.update(_content_hash(coord.values).encode() if coord.dtype.hasobject
                     else np.ascontiguousarray(coord.values).tobytes())
    return h.hexdigest()[:32]


#: names data that can only be identified within this process (by object id)
_PROCESS_NONCE = uuid.uuid4().hex
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _content_hash(arr: np.ndarray) -> str:
    """sha256 of an in-memory array's dtype, shape and bytes; objects each by their type and
    :func:`_describe` (so ``1``, ``"1"``, ``None`` and ``"None"`` differ; a plain object is
    told apart by its id in this process only)."""
    h = hashlib.sha256(repr((arr.dtype.str, arr.shape)).encode())
    if arr.dtype.hasobject:
        for x in np.asarray(arr).reshape(-1):
            t = type(x)
            text = f"{t.__module__}.{t.__qualname__}:{_describe(x)}"
            h.update(f"{len(text)}:{text}".encode())
    elif arr.size:
        h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
    return h.hexdigest()[:32]


def _describe(value: Any, depth: int = 0) -> str:
    """A deterministic text for an indexer or a decoding parameter (arrays by content,
    callables by module, name and code; never a memory address)."""
    if depth > 8:
        return "..."
    if isinstance(value, np.ndarray):
        return "ndarray:" + _content_hash(value)
    if isinstance(value, slice):
        return f"slice({value.start!r},{value.stop!r},{value.step!r})"
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, list | tuple):
        return "(" + ",".join(_describe(v, depth + 1) for v in value) + ")"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k!s}:{_describe(v, depth + 1)}"
                              for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, functools.partial):
        return (f"partial({_describe(value.func, depth + 1)},{_describe(value.args, depth + 1)},"
                f"{_describe(value.keywords, depth + 1)})")
    if hasattr(value, "tuple") and type(value).__name__.endswith("Indexer"):
        return f"{type(value).__name__}{_describe(value.tuple, depth + 1)}"
    if callable(value) and hasattr(value, "__qualname__"):
        text = f"{getattr(value, '__module__', '')}.{value.__qualname__}"
        code = getattr(value, "__code__", None)
        if code is not None:  # lambdas and closures: the same name may hold other code
            cells = [c.cell_contents for c in (getattr(value, "__closure__", None) or ())
                     if _cell_filled(c)]
            text += ":" + hashlib.sha256(code.co_code + _ADDRESS.sub(
                "", repr(code.co_consts)).encode()).hexdigest()[:16]
            text += _describe(cells, depth + 1) if cells else ""
        return text
    text = repr(value)
    if _ADDRESS.search(text):  # a plain object: its repr tells nothing apart
        return f"{type(value).__qualname__}:id:{id(value)}:{_PROCESS_NONCE}"
    return text


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError on an empty cell
    except ValueError:
        return False
    return True


def data_description(data: Any, *, named: bool = True) -> str:
    """What a variable's (non-numpy) data is computed from, for cache keys.

    Walks xarray's lazy wrappers down to the stored array, recording each layer's type, the
    indexer it applies (``LazilyIndexedArray.key``: the selection of the stored array) and
    its decoding function; stops at a dask array (its ``.name``: a deterministic token of its
    whole graph), a Zarr array (its path; the store is named by
    :func:`~arcoforge.batch.identity.dataset_identity`), a numpy array (its content), or a
    backend array of a file (its variable name; ``named`` says the file or store is named
    elsewhere in the token). Anything else ends the description with its id in this process,
    so it is never matched by another process or another object.
    """
    from xarray.backends import BackendArray

    parts: list[str] = []
    obj = data
    for _ in range(64):
        tname = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if obj is None:
            parts.append("none")
            break
        if isinstance(obj, np.ndarray):
            parts.append("ndarray:" + _content_hash(obj))
            break
        if hasattr(obj, "dask") and hasattr(obj, "name") and hasattr(obj, "chunks"):
            parts.append(f"dask:{obj.name}")
            break
        if _is_zarr_array(obj):
            parts.append(f"zarr:{getattr(obj, 'path', '')}:{getattr(obj, 'shape', '')}")
            break
        layer = [tname, str(getattr(obj, "dtype", ""))]
        key = getattr(obj, "key", None)
        if key is not None:
            layer.append(_describe(key))
        func = getattr(obj, "func", None)
        if func is not None:
            layer.append(_describe(func))
        if isinstance(obj, BackendArray):
            inner = getattr(obj, "_array", None)
            if _is_zarr_array(inner):
                parts.append("|".join(layer))
                obj = inner
                continue
            if named:
                layer.append(str(getattr(obj, "variable_name", "")))
                layer.append(str(getattr(obj, "shape", "")))
                parts.append("|".join(layer))
                break
        inner = getattr(obj, "array", None)
        if inner is None or inner is obj:
            layer.append(f"id:{id(obj)}:{_PROCESS_NONCE}")  # unknown: this process only
            parts.append("|".join(layer))
            break
        parts.append("|".join(layer))
        obj = inner
    else:
        parts.append(f"deep:{id(data)}:{_PROCESS_NONCE}")
    return " > ".join(parts)


class LRUCache:
    """Thread-safe in-memory LRU bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.damaged = 0  # in-process arrays are read-only: never damaged, kept for one API

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            arr = self._data.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return arr

    def put(self, key: str, value: np.ndarray) -> None:
        nbytes = int(value.nbytes)
        if nbytes > self.max_bytes:
            return
        value = np.ascontiguousarray(value)
        value.flags.writeable = False
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = value
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, ev = self._data.popitem(last=False)
                self._bytes -= ev.nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __getstate__(self) -> dict[str, Any]:
        # a copy in another process starts empty (it is a per-process cache)
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]


#: checksum algorithms an entry may be written with (the default is the first available of
#: xxh3_128 and crc32: fast, for accidental damage; sha256 and blake2b on request)
CHECKSUMS = ("xxh3_128", "crc32", "sha256", "blake2b")


class _Crc32:
    """zlib's CRC-32 behind the hashlib interface."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Any) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


@functools.cache
def _xxhash() -> Any | None:
    """The xxhash module, or None (looked up once: a failed import is not cached by Python)."""
    try:
        import xxhash  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return xxhash


def _hasher(algorithm: str | None = None) -> tuple[str, Any] | None:
    """(name, new hash object) for ``algorithm`` (default: xxh3_128 if ``xxhash`` is
    installed, else crc32); None when this process cannot compute ``algorithm``."""
    xxhash = _xxhash()
    if algorithm is None:
        algorithm = "xxh3_128" if xxhash is not None else "crc32"
    if algorithm == "xxh3_128":
        return None if xxhash is None else ("xxh3_128", xxhash.xxh3_128())
    if algorithm == "crc32":
        return "crc32", _Crc32()
    if algorithm == "sha256":
        return "sha256", hashlib.sha256()
    if algorithm == "blake2b":
        return "blake2b", hashlib.blake2b(digest_size=16)
    return None


def check_algorithm(algorithm: str | None) -> str | None:
    """``algorithm`` if entries can be written with it here (None: the default), else a
    :class:`~arcoforge.errors.ConfigError` or :class:`~arcoforge.errors.MissingDependencyError`."""
    if algorithm is None:
        return None
    if algorithm not in CHECKSUMS:
        raise ConfigError(f"unknown checksum algorithm {algorithm!r}; choose one of "
                          f"{', '.join(CHECKSUMS)} (or None for the fastest available)")
    if algorithm == "xxh3_128" and _xxhash() is None:
        raise MissingDependencyError("checksum algorithm 'xxh3_128' needs the xxhash package; "
                                     "install it with `pip install xxhash`, or use 'crc32'")
    return algorithm


def checksum(value: np.ndarray, algorithm: str | None = None) -> str | None:
    """``"<algorithm>:<hex>"`` over the dtype, shape and bytes of ``value`` (C order).

    ``algorithm`` is one of :data:`CHECKSUMS`; the default is ``"xxh3_128"`` when ``xxhash``
    is installed, else ``"crc32"`` (zlib). None when it cannot be computed here (an entry
    checked with it is a miss).
    """
    made = _hasher(algorithm)
    if made is None:
        return None
    name, h = made
    value = np.ascontiguousarray(value)
    h.update(json.dumps([value.dtype.str, list(value.shape)]).encode())
    h.update(value.reshape(-1).view(np.uint8).data if value.size else b"")
    return f"{name}:{h.hexdigest()}"


def _verified(value: np.ndarray, expected: Any) -> bool:
    """Whether ``value`` has the checksum ``expected`` (an entry without one never passes)."""
    if not isinstance(expected, str) or ":" not in expected:
        return False
    return checksum(value, expected.split(":", 1)[0]) == expected


def _refuse_objects(value: np.ndarray) -> None:
    if value.dtype.hasobject:
        raise ConfigError(f"arrays of dtype {value.dtype} hold Python objects and cannot be "
                          "cached (only plain array bytes are stored); convert them to a "
                          "numeric or fixed-width string dtype in preprocess")


class ZarrCache:
    """Cache entries as Zarr arrays (one uncompressed-chunk array per key) under any URL.

    ``url`` is a local directory or any fsspec URL (``s3://bucket/prefix``, ``memory://x``).
    Each array's attributes record the entry's dtype, shape and checksum, written after its
    data (a half-written entry is never served). A read checks the chunk file exists, the
    dtype and shape match and the checksum of the bytes matches; otherwise the entry is a miss
    (counted in ``misses`` and ``damaged``) and is deleted. ``algorithm`` is the checksum
    written with new entries (one of :data:`CHECKSUMS`; default: the fastest available).
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 algorithm: str | None = None) -> None:
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        self.algorithm = check_algorithm(algorithm)
        self.hits = 0
        self.misses = 0
        self.damaged = 0

    def _store(self) -> Any:
        import zarr.storage

        if "://" in self.url and not self.url.startswith("file://"):
            return zarr.storage.FsspecStore.from_url(
                self.url, storage_options=self.storage_options or None
            )
        return zarr.storage.LocalStore(self.url.removeprefix("file://"))

    def get(self, key: str) -> np.ndarray | None:
        import zarr

        store = self._store()
        # zarr >= 3.4 raises on a missing chunk instead of serving the fill value
        strict = zarr.config.get("array.read_missing_chunks", None) is not None
        options: dict[str, Any] = {"config": {"read_missing_chunks": False}} if strict else {}
        try:
            arr = zarr.open_array(store, path=key, mode="r", **options)
        except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError,
                zarr.errors.NodeNotFoundError):
            self.misses += 1
            return None
        except Exception:  # noqa: BLE001 - unreadable metadata: a damaged entry
            return self._damaged(store, key)
        attrs: dict[str, Any] = dict(arr.attrs)
        if not attrs.get("complete", False):  # still being written (or never finished)
            self.misses += 1
            return None
        try:
            dtype = np.dtype(attrs["dtype"])
            shape = tuple(int(n) for n in attrs["shape"])
            if arr.shape != shape or np.dtype(arr.dtype).newbyteorder("=") != \
                    dtype.newbyteorder("="):
                return self._damaged(store, key)
            if not strict and arr.nchunks_initialized < arr.nchunks:
                return self._damaged(store, key)
            value = np.ascontiguousarray(np.asarray(arr[...]), dtype=dtype).reshape(shape)
        except Exception:  # noqa: BLE001 - missing chunk, wrong size, bad attrs: damaged
            return self._damaged(store, key)
        if not _verified(value, attrs.get("checksum")):
            return self._damaged(store, key)
        self.hits += 1
        return value

    def _damaged(self, store: Any, key: str) -> np.ndarray | None:
        """Count a damaged entry as a miss and delete it (best effort)."""
        from zarr.core.sync import sync

        self.misses += 1
        self.damaged += 1
        try:
            sync(store.delete_dir(key))
        except Exception:  # noqa: BLE001 - read-only or gone: it stays a miss either way
            pass
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        import zarr

        value = np.ascontiguousarray(value)
        _refuse_objects(value)
        arr = zarr.create_array(
            self._store(), name=key, shape=value.shape, dtype=value.dtype,
            chunks=tuple(max(1, n) for n in value.shape) or (1,), compressors=None,
            overwrite=True, config={"write_empty_chunks": True},
        )
        arr[...] = value
        # written last: a half-written entry is never served
        arr.attrs.update({"dtype": value.dtype.str, "shape": list(value.shape),
                          "checksum": checksum(value, self.algorithm), "complete": True})

    def clear(self) -> None:
        import zarr

        group = zarr.open_group(self._store(), mode="a")
        for name in list(group.array_keys()):
            del group[name]


class RedisCache:
    """Cache in a Redis server: one hash per key with fields ``dtype``, ``shape``, ``data`` and
    ``checksum``.

    A read checks the fields are all there, the bytes fit the dtype and shape, and the
    checksum matches; otherwise the entry is a miss (counted in ``misses`` and ``damaged``)
    and is deleted. ``algorithm`` is the checksum written with new entries (one of
    :data:`CHECKSUMS`; default: the fastest available).
    """

    FIELDS = ("dtype", "shape", "data", "checksum")

    def __init__(self, url: str = "redis://localhost:6379/0", prefix: str = "arcoforge:batch:",
                 ttl: int | None = None, *, algorithm: str | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.algorithm = check_algorithm(algorithm)
        self._client: Any = None
        self.hits = 0
        self.misses = 0
        self.damaged = 0

    @property
    def client(self) -> Any:
        """The redis client (created lazily, also after unpickling in a worker)."""
        if self._client is None:
            redis = require("redis")
            self._client = redis.Redis.from_url(self.url)
        return self._client

    def get(self, key: str) -> np.ndarray | None:
        name = self.prefix + key
        got = self.client.hmget(name, list(self.FIELDS))
        if all(v is None for v in got):
            self.misses += 1
            return None
        try:
            dtype_s, shape_s, data, expected = got
            dtype = np.dtype(dtype_s.decode())
            shape = tuple(int(n) for n in json.loads(shape_s))
            if dtype.hasobject or len(data) != dtype.itemsize * int(np.prod(shape)):
                raise ValueError("bytes do not fit dtype and shape")
            value = np.frombuffer(data, dtype=dtype).reshape(shape)
            ok = _verified(value, expected.decode())
        except Exception:  # noqa: BLE001 - a field missing or garbled: a damaged entry
            ok = False
        if not ok:
            self.misses += 1
            self.damaged += 1
            self.client.delete(name)
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        _refuse_objects(value)
        name = self.prefix + key
        pipe = self.client.pipeline()
        pipe.hset(name, mapping={"dtype": value.dtype.str, "shape": json.dumps(value.shape),
                                 "data": value.tobytes(),
                                 "checksum": checksum(value, self.algorithm)})
        if self.ttl:
            pipe.expire(name, self.ttl)
        pipe.execute()

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*"))
        if keys:
            self.client.delete(*keys)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "prefix": self.prefix, "ttl": self.ttl,
                "algorithm": self.algorithm}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
