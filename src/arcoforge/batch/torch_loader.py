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

  Its forkserver preloads torch, xarray, zarr and arcoforge.batch once and is started as soon as
  the loader is built (:mod:`._forkserver`), so workers are forks of a warm process: nothing is
  imported again per worker. Datasets opened with ``open_zarr`` travel without their dask
  arrays (workers never import dask), and a worker cuts its first batch with numpy while it
  loads the compiled kernel on a thread (``benchmarks/first_batch.py``).
* :class:`StatefulDataLoader` (what :func:`make_dataloader` returns for iterable datasets) is
  checkpointable: ``state_dict()`` after ``k`` batches, ``load_state_dict()`` into a new loader
  (same ``num_workers``) gives exactly the remaining batches of that epoch, in the same order,
  as torchdata's ``StatefulDataLoader`` does.
* :func:`to_device` moves batches to an accelerator one batch ahead on a side CUDA stream
  (pinned memory + ``non_blocking`` copies overlap the copy with compute); on a machine without
  one it moves them to the CPU device, unchanged.

``inputs``/``targets`` select variables and stack them on a channel axis (axis 1 of a batch,
axis 0 of a sample) under the keys ``"input"`` and ``"target"``. Import requires torch.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from multiprocessing.context import get_spawning_popen
from typing import TYPE_CHECKING, Any

import numpy as np

from arcoforge._guard import ensure_main_guarded
from arcoforge.errors import ConfigError

from . import _forkserver
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

__all__ = ["ChunkShuffleSampler", "StatefulDataLoader", "TorchIterableDataset",
           "TorchMapDataset", "make_dataloader", "to_device"]



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
        # (batches the loader had handed out, its num_workers): where the next iteration resumes
        self._resume: tuple[int, int] | None = None
        self._state = {"epoch": stream.epoch, "position": 0, "finished": False}

    def set_epoch(self, epoch: int) -> None:
        """Order of the next epoch (call before iterating a DataLoader each epoch)."""
        self.stream.set_epoch(epoch)

    def shard(self) -> Shard:
        """This worker's shard."""
        return current_shard(self.world_size, self.rank)

    def n_batches(self, shard: Shard) -> int:
        """Batches one shard yields this epoch."""
        n = self.stream.plan(shard=shard).n_samples
        bs = self.stream.batch_size
        return n // bs if self.stream.drop_last else -(-n // bs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard = self.shard()
        info = tud.get_worker_info()
        workers, worker = (int(info.num_workers), int(info.id)) if info is not None else (1, 0)
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None and resume[0] > 0:
            consumed, saved_workers = resume
            if saved_workers != workers:
                raise ConfigError(f"cannot resume: the state was saved by a loader with "
                                  f"{saved_workers} worker(s), this one has {workers}; build "
                                  "the new loader with the same num_workers")
            base = shard.index - worker
            counts = [self.n_batches(Shard(base + w, shard.count)) for w in range(workers)]
            taken, first = _round_robin(counts, consumed)
            # DataLoader asks its workers in turn starting with worker 0: worker 0 plays the
            # role of the worker whose turn came next, and so on round the cycle
            role = (first + worker) % workers
            shard, start = Shard(base + role, shard.count), taken[role]
        state = {"epoch": self.stream.epoch, "position": start, "finished": False}
        self._state = state
        deferred = info is not None and _defer_kernel()
        try:
            for batch in self.stream.batches(shard=shard, start=start):
                state["position"] += 1
                yield _group(batch, self.inputs, self.targets, axis=1)
                if deferred:  # the first batch is out: load the kernel meanwhile
                    deferred = _load_kernel_in_background()
        finally:
            if deferred:
                _load_kernel_in_background()
        state["finished"] = True

    def state_dict(self) -> dict[str, Any]:
        """Where iteration in this process is (``num_workers=0``); with workers use the
        loader's :meth:`StatefulDataLoader.state_dict`."""
        return {**self.stream.state_dict(), **self._state, "num_workers": 0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the next iteration where ``state`` was (see :class:`StatefulDataLoader`)."""
        self.stream.load_state_dict(state)  # checks seed / sampling / batch size
        finished = bool(state.get("finished"))
        consumed = 0 if finished else int(state["position"])
        self.stream._resume_at = 0  # noqa: SLF001 - resumed per worker here instead
        self._resume = (consumed, max(1, int(state.get("num_workers", 0))))


#: the compiled kernel in this worker: None (not deferred), "deferred" or "loading"
_KERNEL_LOAD: dict[str, str | None] = {"state": None}


def _defer_kernel() -> bool:
    """In a worker whose compiled kernel is not loaded yet (its forkserver does not load it,
    see :mod:`._warm`): cut with numpy until :func:`_load_kernel_in_background` is called, so
    that the first batch does not wait for numba (about 0.6 s). True when deferred."""
    from . import _warm, assembly

    if (_warm.kernel_loaded() or _KERNEL_LOAD["state"] is not None
            or not assembly.KERNEL["enabled"]):
        return False
    assembly.KERNEL["enabled"] = False
    _KERNEL_LOAD["state"] = "deferred"
    return True


def _load_kernel_in_background() -> bool:
    """Load the deferred kernel on a daemon thread, then switch it on (False: returns at once)."""
    from . import _warm, assembly

    if _KERNEL_LOAD["state"] != "deferred":
        return False
    _KERNEL_LOAD["state"] = "loading"

    def load() -> None:
        try:
            _warm.load_kernel()
        finally:
            assembly.KERNEL["enabled"] = True

    threading.Thread(target=load, daemon=True, name="arcoforge-kernel-load").start()
    return False


def _load_kernel_soon() -> None:
    """In a worker without the kernel: numpy until it is loaded on a thread started now."""
    if _defer_kernel():
        _load_kernel_in_background()


def _round_robin(counts: Sequence[int], consumed: int) -> tuple[list[int], int]:
    """Batches taken from each worker after ``consumed`` batches of a DataLoader that asks
    its workers in turn (skipping exhausted ones), and the worker whose turn is next."""
    taken = [0] * len(counts)
    w = 0
    for _ in range(min(consumed, sum(counts))):
        while taken[w] >= counts[w]:
            w = (w + 1) % len(counts)
        taken[w] += 1
        w = (w + 1) % len(counts)
    return taken, w


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
        if _KERNEL_LOAD["state"] is None and tud.get_worker_info() is not None:
            _load_kernel_soon()
        sid = np.asarray([self.ids[int(index)]])
        grid = self.stream.grid
        arrays, box = self._block(int(grid.block_of(sid)[0]))
        starts = grid.sample_starts(sid)
        local = {d: starts[:, i] - box[i].start for i, d in enumerate(grid.dims)}
        windows = {d: grid.window[grid.dims.index(d)] for d in self.stream.input_dims}
        one = {str(v): cut(arrays[v], self.stream.source.dims_of(v), local, windows,
                           self.stream.out_order) for v in self.stream.source.variables}
        if self.stream._norm:  # noqa: SLF001 - normalize=... applies to single samples too
            self.stream._normalize(one, sid)  # noqa: SLF001
        out = {k: a[0] for k, a in one.items()}
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


class StatefulDataLoader(tud.DataLoader):
    """A ``DataLoader`` over a :class:`TorchIterableDataset` that can be checkpointed.

    ``state_dict()`` records the epoch, the batches handed out so far and ``num_workers``;
    ``load_state_dict()`` on a new loader (same dataset settings and ``num_workers``) makes its
    next iteration yield exactly the remaining batches of that epoch, in the same order (each
    worker skips what it had produced; the order depends only on seed, epoch and shard).
    """

    dataset: TorchIterableDataset

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        dataset = self.dataset
        state = {"epoch": dataset.stream.epoch, "position": 0, "finished": False}
        if dataset._resume is not None:  # noqa: SLF001
            state["position"] = dataset._resume[0]  # noqa: SLF001
        self._state = state
        it = super().__iter__()  # workers start now and get the dataset and its resume point
        dataset._resume = None  # noqa: SLF001 - only the next iteration resumes
        return _counted(it, state)

    def state_dict(self) -> dict[str, Any]:
        """``epoch``, ``position`` (batches handed out), ``finished``, ``num_workers`` and
        what the order depends on (``seed``, ``sampling``, ``batch_size``)."""
        stream = self.dataset.stream
        state = getattr(self, "_state", {"epoch": stream.epoch, "position": 0,
                                         "finished": False})
        return {"seed": stream.seed, "sampling": stream.sampling,
                "batch_size": stream.batch_size, **state, "num_workers": self.num_workers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the next iteration where ``state`` (from :meth:`state_dict`) was."""
        saved = int(state.get("num_workers", 0))
        if saved != self.num_workers:
            raise ConfigError(f"cannot resume: the state was saved by a loader with {saved} "
                              f"worker(s), this one has {self.num_workers}; build the new "
                              "loader with the same num_workers")
        self.dataset.load_state_dict(state)
        self._state = {"epoch": self.dataset.stream.epoch,
                       "position": 0 if state.get("finished") else int(state["position"]),
                       "finished": False}


def _counted(it: Iterable[Any], state: dict[str, Any]) -> Iterator[Any]:
    """``it``, counting in ``state`` the batches handed out and whether it finished."""
    for batch in it:
        state["position"] += 1
        yield batch
    state["finished"] = True


def _accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        return bool(acc.is_available())
    return bool(torch.cuda.is_available())


def make_dataloader(dataset: Any, *, num_workers: int = 0, pin_memory: bool = False,
                    multiprocessing_context: str | None = "forkserver",
                    **kwargs: Any) -> Any:
    """A ``DataLoader`` for our datasets (iterable → ``batch_size=None``), fork-free workers.

    Iterable datasets get a :class:`StatefulDataLoader`. With workers and the ``forkserver``
    context, the server is started at once, preloading what workers need (see module
    docstring). ``pin_memory`` is used where an accelerator is present and ignored otherwise
    (torch would only warn).
    """
    if isinstance(dataset, SampleStream):
        dataset = TorchIterableDataset(dataset)
    cls = tud.DataLoader
    if isinstance(dataset, TorchIterableDataset):
        kwargs.setdefault("batch_size", None)
        cls = StatefulDataLoader
    if num_workers > 0:
        ctx = kwargs.pop("multiprocessing_context", multiprocessing_context)
        if ctx == "forkserver":
            ctx = _forkserver.start()
        kwargs["multiprocessing_context"] = ctx
        kwargs.setdefault("persistent_workers", False)
    return cls(dataset, num_workers=num_workers, pin_memory=pin_memory and _accelerator(),
               **kwargs)


def to_device(batches: Iterable[Mapping[str, Any]], device: Any = None, *,
              non_blocking: bool = True) -> Iterator[dict[str, Any]]:
    """Batches (dicts of tensors) moved to ``device`` (default: the accelerator if any, else
    the CPU), one batch ahead: on CUDA the next batch's host-to-device copy runs on a side
    stream while the current one is used (use ``pin_memory=True`` so it is asynchronous)."""
    dev = torch.device(device if device is not None else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type != "cuda":
        for batch in batches:
            yield {k: v.to(dev) for k, v in batch.items()}
        return
    side = torch.cuda.Stream(dev)

    def send(batch: Mapping[str, Any]) -> dict[str, Any]:
        with torch.cuda.stream(side):
            return {k: v.to(dev, non_blocking=non_blocking) for k, v in batch.items()}

    it = iter(batches)
    nxt = next(it, None)
    ahead = send(nxt) if nxt is not None else None
    while ahead is not None:
        main = torch.cuda.current_stream(dev)
        main.wait_stream(side)
        current = ahead
        for v in current.values():
            v.record_stream(main)  # the side stream may not reuse the memory too early
        nxt = next(it, None)
        ahead = send(nxt) if nxt is not None else None
        yield current
