"""A bounded cache of neighbour information, reused across granules with the same geometry.

Computing where each swath pixel lands on the target grid (a k-d tree query, bilinear
fractional distances, EWA row/column positions, bucket indices) costs far more than applying
it to a variable.  Repeat orbits, and the many variables of one granule, share that work.

The key is a SHA-256 of the geolocation's bytes (dtype, shape and values of longitude and
latitude), the area (CRS, extent, shape), the method and its parameters and the backend
(numpy or dask): two granules share an entry only when all of them are equal, so a cached
entry can never be applied to a geometry it was not computed for.  The cache is bounded by
entry count and by the approximate bytes its entries hold (least recently used first out).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["CacheInfo", "NeighbourCache", "default_cache", "geometry_key"]


def geometry_key(lons: np.ndarray, lats: np.ndarray, area_key: str, method: str,
                 params: Mapping[str, Any], backend: str) -> str:
    """The cache key of one (geolocation, area, method, parameters, backend) combination."""
    from arcoforge.forge.schema import value_digest

    h = hashlib.sha256()
    for arr in (lons, lats):
        h.update(value_digest(arr).encode())
    h.update(json.dumps({"area": area_key, "method": method, "backend": backend,
                         "params": {k: params[k] for k in sorted(params)}},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """Counters of a :class:`NeighbourCache`."""

    hits: int
    misses: int
    entries: int
    nbytes: int
    max_entries: int
    max_bytes: int


def _nbytes(value: Any) -> int:
    """Bytes an entry holds: its ``nbytes`` attribute, else the numpy arrays among its
    attributes."""
    size = getattr(value, "nbytes", None)
    if isinstance(size, (int, np.integer)):
        return int(size)
    items = value.__dict__.values() if hasattr(value, "__dict__") else ()
    return sum(v.nbytes for v in items if isinstance(v, np.ndarray))


class NeighbourCache:
    """A thread-safe LRU cache of resampling engines with precomputed neighbour information.

    Parameters
    ----------
    max_entries
        Most entries kept (0 disables caching).
    max_bytes
        Most bytes of numpy arrays the entries may hold together (an entry larger than this
        is used but not kept).
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ConfigError(f"NeighbourCache(max_entries={max_entries}, max_bytes={max_bytes})"
                              ": both must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get_or_build(self, key: str, build: Callable[[], Any]) -> Any:
        """The entry under ``key``, built by ``build()`` (and kept, within bounds) on a miss."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._entries[key][0]
            self._misses += 1
        value = build()
        size = _nbytes(value)
        with self._lock:
            if self.max_entries and size <= self.max_bytes:
                self._entries[key] = (value, size)
                self._entries.move_to_end(key)
                self._evict()
        return value

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries
                                 or sum(s for _, s in self._entries.values()) > self.max_bytes):
            self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def values(self) -> list[Any]:
        """The cached engines, least recently used first."""
        with self._lock:
            return [v for v, _ in self._entries.values()]

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0

    def info(self) -> CacheInfo:
        """Hits, misses, entries and bytes held."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries),
                             sum(s for _, s in self._entries.values()), self.max_entries,
                             self.max_bytes)


default_cache = NeighbourCache()
"""The process-wide cache used when ``resample(cache=None)``."""
