"""Feed: batches from xarray to PyTorch and TensorFlow — fast, shuffled, cached, reassembled.

Public names:

* :class:`BatchGenerator` — xbatcher-compatible labeled batches.
* :class:`SampleStream` — the fast path (numpy batches; shuffle, sharding, prefetch, cache).
* :func:`reassemble` — predictions back onto the grid.
* caches: :class:`LRUCache`, :class:`ZarrCache`, :class:`RedisCache`, :func:`cache_key`.
* :class:`Prefetcher`, :class:`Shard`, :func:`to_table` / :func:`from_table` / :func:`iter_table`.
* lazily (need the extras): ``TorchIterableDataset``, ``TorchMapDataset``,
  ``ChunkShuffleSampler``, ``make_dataloader`` (torch) and ``to_tf_dataset`` (tensorflow).
"""

from __future__ import annotations

from typing import Any

from .caches import ArrayCache, LRUCache, RedisCache, ZarrCache, cache_key, dataset_token
from .generator import BatchGenerator
from .indexing import BatchPlan, SampleGrid
from .prefetch import Prefetcher
from .reassemble import reassemble
from .samplers import Shard, current_shard
from .source import ArraySource
from .stream import SampleStream
from .tabular import from_table, iter_table, to_table

_LAZY = {
    "TorchIterableDataset": "torch_loader",
    "TorchMapDataset": "torch_loader",
    "ChunkShuffleSampler": "torch_loader",
    "make_dataloader": "torch_loader",
    "to_tf_dataset": "tf_loader",
}

__all__ = [
    "ArrayCache",
    "ArraySource",
    "BatchGenerator",
    "BatchPlan",
    "LRUCache",
    "Prefetcher",
    "RedisCache",
    "SampleGrid",
    "SampleStream",
    "Shard",
    "ZarrCache",
    "cache_key",
    "current_shard",
    "dataset_token",
    "from_table",
    "iter_table",
    "reassemble",
    "to_table",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the torch / tensorflow adapters on first use (they need the extras)."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported adapters."""
    return sorted(set(globals()) | set(_LAZY))
