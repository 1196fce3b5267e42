"""PyTorch adapters: iterable and map-style datasets yielding dicts of tensors.

* :class:`TorchIterableDataset` wraps a :class:`~arcoforge.batch.SampleStream`; it yields whole
  batches (use ``DataLoader(batch_size=None)``), sharded by DataLoader worker × distributed rank
  so that every sample is seen once per epoch overall.
* :class:`TorchMapDataset` serves single samples by index (block-cached reads per process);
  pair it with :class:`ChunkShuffleSampler` for chunk-aware shuffled order.
* :func:`make_dataloader` builds a ``DataLoader`` with a fork-free worker start method
  (``forkserver``): forking after dask threads or Icechunk's runtime started can deadlock.
  Such workers run the main script again; a dataset sent to them from the script's top level,
  outside ``if __name__ == "__main__":``, raises a clear
  :class:`~arcoforge.errors.ConfigError` at once instead of crashing the workers
  (see :mod:`arcoforge._guard`).

``inputs``/``targets`` select variables and stack them on a channel axis (axis 1 of a batch,
axis 0 of a sample) under the keys ``"input"`` and ``"target"``. Import requires torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from multiprocessing.context import get_spawning_popen
from typing import TYPE_CHECKING, Any

import numpy as np

from arcoforge._guard import ensure_main_guarded

from ._optional import require
from .assembly import cut
from .caches import LRUCache
from .samplers import Shard, current_shard, make_plan
from .stream import SampleStream

if TYPE_CHECKING:
    import torch
    import torch.utils.data as tud
else:
    torch = require("torch")
    tud = torch.utils.data

__all__ = ["ChunkShuffleSampler", "TorchIterableDataset", "TorchMapDataset", "make_dataloader"]


def _tensor(a: np.ndarray) -> Any:
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, copy=True, order="C")
    return torch.from_numpy(a)


def _group(arrays: dict[str, np.ndarray], inputs: Sequence[Hashable] | None,
           targets: Sequence[Hashable] | None, axis: int) -> dict[str, Any]:
    if inputs is None and targets is None:
        return {k: _tensor(np.asarray(v)) for k, v in arrays.items()}
    out: dict[str, Any] = {}
    for key, names in (("input", inputs), ("target", targets)):
        if names:
            out[key] = _tensor(np.stack([arrays[str(n)] for n in names], axis=axis))
    if "sample_id" in arrays:
        out["sample_id"] = _tensor(np.asarray(arrays["sample_id"]))
    return out


class _MainGuard:
    """Refuses to be pickled for a spawn/forkserver worker from unguarded top-level code."""

    def __getstate__(self) -> Any:
        popen = get_spawning_popen()  # set while multiprocessing pickles a new process
        if popen is not None:
            ensure_main_guarded("a torch DataLoader with num_workers > 0",
                                getattr(popen, "method", "spawn"))
        return super().__getstate__()


class TorchIterableDataset(_MainGuard, tud.IterableDataset):
    """Batches from a :class:`SampleStream` as dicts of tensors (see module docstring)."""

    def __init__(self, stream: SampleStream, inputs: Sequence[Hashable] | None = None,
                 targets: Sequence[Hashable] | None = None, *, world_size: int | None = None,
                 rank: int | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.inputs = list(inputs) if inputs is not None else None
        self.targets = list(targets) if targets is not None else None
        self.world_size = world_size
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        """Order of the next epoch (call before iterating a DataLoader each epoch)."""
        self.stream.set_epoch(epoch)

    def shard(self) -> Shard:
        """This worker's shard."""
        return current_shard(self.world_size, self.rank)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.stream.batches(shard=self.shard()):
            yield _group(batch, self.inputs, self.targets, axis=1)


class TorchMapDataset(_MainGuard, tud.Dataset):
    """Single samples by index; blocks are read once and kept in a per-process LRU."""

    def __init__(self, stream: SampleStream, inputs: Sequence[Hashable] | None = None,
                 targets: Sequence[Hashable] | None = None, *,
                 block_cache_bytes: int = 256 * 2**20) -> None:
        self.stream = stream
        self.inputs = list(inputs) if inputs is not None else None
        self.targets = list(targets) if targets is not None else None
        self.blocks = LRUCache(block_cache_bytes)
        stream._scan()  # noqa: SLF001 - masks must be known for len()
        self.ids = stream.grid.valid_ids()

    def __len__(self) -> int:
        return int(self.ids.size)

    def _block(self, block: int) -> tuple[dict[Hashable, np.ndarray], tuple[slice, ...]]:
        grid = self.stream.grid
        ids = grid.block_samples(block)
        box = grid.box(ids)
        src = self.stream.source
        arrays = {}
        for v in src.variables:
            key = f"{block}:{v}"
            arr = self.blocks.get(key)
            if arr is None:
                arr = src.read(v, dict(zip(grid.dims, box, strict=True)))
                self.blocks.put(key, arr)
            arrays[v] = arr
        return arrays, box

    def __getitem__(self, index: int) -> dict[str, Any]:
        sid = np.asarray([self.ids[int(index)]])
        grid = self.stream.grid
        arrays, box = self._block(int(grid.block_of(sid)[0]))
        starts = grid.sample_starts(sid)
        local = {d: starts[:, i] - box[i].start for i, d in enumerate(grid.dims)}
        windows = {d: grid.window[grid.dims.index(d)] for d in self.stream.input_dims}
        out = {str(v): cut(arrays[v], self.stream.source.dims_of(v), local, windows,
                           self.stream.out_order)[0] for v in self.stream.source.variables}
        out["sample_id"] = sid[:1].copy()[0:1].reshape(())  # scalar id
        return _group(out, self.inputs, self.targets, axis=0)


class ChunkShuffleSampler(tud.Sampler):
    """Chunk-aware shuffled indices into a :class:`TorchMapDataset`, sharded by rank."""

    def __init__(self, dataset: TorchMapDataset, *, seed: int = 0, buffer_blocks: int = 4,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        self.dataset = dataset
        self.seed = seed
        self.buffer_blocks = buffer_blocks
        shard = current_shard(num_replicas, rank)
        self.shard = Shard(rank or 0, num_replicas or 1) if num_replicas else shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Order of the next epoch."""
        self.epoch = int(epoch)

    def _ids(self) -> np.ndarray:
        plan = make_plan(self.dataset.stream.grid, "chunk_shuffle", seed=self.seed,
                         epoch=self.epoch, shard=self.shard, buffer_blocks=self.buffer_blocks)
        return np.searchsorted(self.dataset.ids, plan.sample_ids())

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids().tolist())

    def __len__(self) -> int:
        return int(self._ids().size)


def make_dataloader(dataset: Any, *, num_workers: int = 0, pin_memory: bool = False,
                    multiprocessing_context: str | None = "forkserver",
                    **kwargs: Any) -> Any:
    """A ``DataLoader`` for our datasets (iterable → ``batch_size=None``), fork-free workers."""
    if isinstance(dataset, SampleStream):
        dataset = TorchIterableDataset(dataset)
    if isinstance(dataset, TorchIterableDataset):
        kwargs.setdefault("batch_size", None)
    if num_workers > 0:
        kwargs.setdefault("multiprocessing_context", multiprocessing_context)
        kwargs.setdefault("persistent_workers", False)
    return tud.DataLoader(dataset, num_workers=num_workers, pin_memory=pin_memory, **kwargs)
