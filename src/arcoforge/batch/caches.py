"""Block caches behind one small interface: in-memory LRU, Zarr (any fsspec URL), Redis.

A cache maps a string key to a numpy array. Values are stored as raw array bytes plus
dtype/shape metadata — never pickles — so a cache can be shared between processes and
machines safely. Keys come from :func:`cache_key`, which hashes the dataset identity, the
variable, the selection and the user's preprocessing version: change any of them and the old
entries are simply never looked up again (invalidation by construction).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._optional import require

__all__ = [
    "ArrayCache",
    "LRUCache",
    "RedisCache",
    "ZarrCache",
    "cache_key",
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
    """Identity of a dataset for cache keys: source, schema, coordinates and (lazy) data ids.

    In-memory numpy variables are hashed by content; lazily opened ones by their source path
    and encoding (no data is read), else by their dask graph name (stable within a process).
    A store rewritten in place keeps its path: pass an explicit ``dataset_id`` (e.g. an
    Icechunk snapshot id) for persistent caches over mutable stores.
    """
    h = hashlib.sha256()
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
            h.update(np.ascontiguousarray(data).view(np.uint8).ravel().data)
        elif source:
            h.update(repr(sorted((str(k), str(v)) for k, v in var.encoding.items())).encode())
        elif hasattr(data, "dask") and hasattr(data, "name"):
            h.update(str(data.name).encode())
        else:
            h.update(repr(var.encoding.get("source", enc.get("source", id(data)))).encode())
    for cname, coord in sorted(ds.coords.items(), key=lambda kv: str(kv[0])):
        if coord.ndim <= 1 and coord.size <= 10_000_000:
            h.update(str(cname).encode())
            h.update(np.ascontiguousarray(coord.values).astype(str).tobytes()
                     if coord.dtype == object else np.ascontiguousarray(coord.values).tobytes())
    return h.hexdigest()[:32]


class LRUCache:
    """Thread-safe in-memory LRU bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

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


class ZarrCache:
    """Cache entries as Zarr arrays (one uncompressed-chunk array per key) under any URL.

    ``url`` is a local directory or any fsspec URL (``s3://bucket/prefix``, ``memory://x``).
    Zarr's own metadata carries dtype and shape.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        self.hits = 0
        self.misses = 0

    def _store(self) -> Any:
        import zarr.storage

        if "://" in self.url and not self.url.startswith("file://"):
            return zarr.storage.FsspecStore.from_url(
                self.url, storage_options=self.storage_options or None
            )
        return zarr.storage.LocalStore(self.url.removeprefix("file://"))

    def get(self, key: str) -> np.ndarray | None:
        import zarr

        try:
            arr = zarr.open_array(self._store(), path=key, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError,
                zarr.errors.NodeTypeValidationError):
            self.misses += 1
            return None
        if not arr.attrs.get("complete", False):
            self.misses += 1
            return None
        self.hits += 1
        return np.asarray(arr[...])

    def put(self, key: str, value: np.ndarray) -> None:
        import zarr

        value = np.ascontiguousarray(value)
        arr = zarr.create_array(
            self._store(), name=key, shape=value.shape, dtype=value.dtype,
            chunks=value.shape or (1,), compressors=None, overwrite=True,
        )
        arr[...] = value
        arr.attrs["complete"] = True  # written last: a half-written entry is never served

    def clear(self) -> None:
        import zarr

        group = zarr.open_group(self._store(), mode="a")
        for name in list(group.array_keys()):
            del group[name]


class RedisCache:
    """Cache in a Redis server: one hash per key with fields ``dtype``, ``shape``, ``data``."""

    def __init__(self, url: str = "redis://localhost:6379/0", prefix: str = "arcoforge:batch:",
                 ttl: int | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self._client: Any = None
        self.hits = 0
        self.misses = 0

    @property
    def client(self) -> Any:
        """The redis client (created lazily, also after unpickling in a worker)."""
        if self._client is None:
            redis = require("redis")
            self._client = redis.Redis.from_url(self.url)
        return self._client

    def get(self, key: str) -> np.ndarray | None:
        got = self.client.hmget(self.prefix + key, ["dtype", "shape", "data"])
        if any(v is None for v in got):
            self.misses += 1
            return None
        self.hits += 1
        dtype, shape, data = got
        shp = tuple(json.loads(shape))
        return np.frombuffer(data, dtype=np.dtype(dtype.decode())).reshape(shp)

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be cached (only plain array bytes are stored)")
        name = self.prefix + key
        pipe = self.client.pipeline()
        pipe.hset(name, mapping={"dtype": value.dtype.str, "shape": json.dumps(value.shape),
                                 "data": value.tobytes()})
        if self.ttl:
            pipe.expire(name, self.ttl)
        pipe.execute()

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*"))
        if keys:
            self.client.delete(*keys)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "prefix": self.prefix, "ttl": self.ttl}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
