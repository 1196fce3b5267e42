"""The fast path: stream batches of samples as dicts of numpy arrays.

:class:`SampleStream` turns a dataset into batches ``{variable: array(batch, *window)}``:
samples are windows over ``input_dims`` at every position of the other dims (which are
squeezed). Per epoch it plans an order (:mod:`.samplers`), loads each storage block once in
background threads (:mod:`.prefetch`), cuts all samples of a block with one strided copy
(sequential order) or one gather (any other order; several blocks are staged into one array
first, Zarr chunks decoding straight into it) (:mod:`.assembly`) and slices batches out of the
result. Data already in memory (numpy-backed, no cache or preprocessing) takes a synchronous
path: no reader threads, and samples are gathered straight from the array (a view), so each
sample's bytes are copied exactly once whatever the order. It is picklable, deterministic per
``(seed, epoch)`` and shardable; the torch and tf.data adapters are thin wrappers around it.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError

from .assembly import cut, cut_grid, grid_plan, output_dims
from .caches import ArrayCache
from .indexing import SampleGrid
from .prefetch import Prefetcher
from .samplers import Balance, EpochPlan, Group, Mode, Shard, current_shard, make_plan
from .source import ArraySource, Preprocess
from .statistics import Statistics, compute_statistics, load_statistics

__all__ = ["SampleStream"]

Batch = dict[str, np.ndarray]
WeightFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _whole(value: Any, what: str, *, positive: bool = False) -> int:
    """``value`` as an int when it is a whole number (>= 1 with ``positive``), else a
    :class:`~arcoforge.errors.ConfigError` naming ``what`` and the value (never truncated)."""
    kind = "a positive integer" if positive else "an integer"
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ConfigError(f"{what} must be {kind}; got {value!r} "
                          f"(of type {type(value).__name__})")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise ConfigError(f"{what} must be {kind}; got {value!r} (not a whole number: it "
                          "would be truncated)")
    n = int(value)
    if positive and n < 1:
        raise ConfigError(f"{what} must be {kind}; got {value!r}")
    return n


class _Synchronous:
    """An iterator usable like :class:`Prefetcher` (``with`` block), without threads."""

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return self._items

    def __enter__(self) -> _Synchronous:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class SampleStream:
    """Batches of samples from an xarray dataset, fast (see module docstring).

    Parameters
    ----------
    data:
        Dataset/DataArray (numpy, dask or lazily opened), or an :class:`ArraySource`.
    input_dims, input_overlap:
        Window length and overlap per dim (xbatcher meaning). Other dims are sample axes.
    variables:
        Variables to stream (default: all data variables).
    batch_size, drop_last:
        Samples per batch; whether to drop a final partial batch.
    sampling, seed, buffer_blocks:
        ``"sequential"``, ``"chunk_shuffle"`` or ``"random"``; the seed; the shuffle buffer
        size in blocks for chunk-aware shuffling.
    dim_order:
        Order of the window dims in the output arrays (default: ``input_dims`` order).
    max_missing, mask_variable:
        Skip samples whose fraction of NaN in ``mask_variable`` exceeds ``max_missing``.
    weight_fn, num_samples:
        Weighted sampling: ``weight_fn({var: (n, *window)})`` returns one weight per sample;
        each epoch draws ``num_samples`` samples with replacement.
    block_chunks, block_bytes:
        Storage chunks per block along each dim; default grows blocks along the outermost dim
        to about ``block_bytes`` (unchunked in-memory data is split the same way).
    prefetch_workers, prefetch_depth:
        Background reader threads and the maximum number of blocks in flight (unused for
        data already in memory, which is cut synchronously).
    shard:
        Fixed shard; default asks torch (DataLoader worker × distributed rank) at iteration.
    cache, preprocess, preprocess_version, opener, dataset_id:
        Passed to :class:`ArraySource`.
    with_ids:
        Add ``"sample_id"`` (int64 per sample) to each batch (needed for reassembly).
    normalize:
        ``True``: hand out ``(x - mean) / std`` using the statistics stored with the dataset
        (:func:`~arcoforge.batch.statistics.load_statistics`), computed now (one pass) if it
        has none; or a :class:`~arcoforge.batch.statistics.Statistics` to use. Per-level
        statistics follow each sample's level. Integers become float32. Undo with
        ``reassemble(..., statistics=stream.statistics)``.
    balance:
        ``"pad"`` or ``"drop"``: every shard (rank × worker) hands out exactly the same number
        of samples, hence of batches, as distributed training needs (see
        :func:`~arcoforge.batch.samplers.make_plan`). Default: shards get whole blocks and may
        differ.

    A stream is checkpointable: :meth:`state_dict` tells the epoch and how many batches of it
    were handed out, :meth:`load_state_dict` makes the next iteration resume right there.
    """

    _fast_sequential = True  # tests switch the direct sequential in-memory path off

    def __init__(
        self,
        data: xr.Dataset | xr.DataArray | ArraySource | None,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        *,
        variables: Sequence[Hashable] | None = None,
        batch_size: int = 32,
        drop_last: bool = False,
        sampling: Mode = "sequential",
        seed: int = 0,
        buffer_blocks: int = 4,
        dim_order: Sequence[Hashable] | None = None,
        max_missing: float | None = None,
        mask_variable: Hashable | None = None,
        weight_fn: WeightFn | None = None,
        num_samples: int | None = None,
        block_chunks: Mapping[Hashable, int] | None = None,
        block_bytes: int = 4 * 2**20,
        prefetch_workers: int = 2,
        prefetch_depth: int | None = None,
        shard: Shard | None = None,
        cache: ArrayCache | None = None,
        preprocess: Preprocess | None = None,
        preprocess_version: str = "",
        opener: Callable[[], xr.Dataset | xr.DataArray] | None = None,
        dataset_id: str | None = None,
        with_ids: bool = False,
        normalize: bool | Statistics = False,
        balance: Balance | None = None,
    ) -> None:
        if isinstance(data, ArraySource):
            self.source = data
        else:
            self.source = ArraySource(
                data, variables, opener=opener, cache=cache, preprocess=preprocess,
                preprocess_version=preprocess_version, dataset_id=dataset_id,
            )
        self.input_dims = {d: _whole(n, f"input_dims[{d!r}] (a window length)", positive=True)
                           for d, n in input_dims.items()}
        self.input_overlap = {d: _whole(n, f"input_overlap[{d!r}]")
                              for d, n in (input_overlap or {}).items()}
        stray = [d for d in self.input_overlap if d not in self.input_dims]
        if stray:
            raise ConfigError(f"input_overlap names {stray}, which input_dims does not: an "
                              f"overlap is for a window dimension ({list(self.input_dims)})")
        wide = {d: n for d, n in self.input_overlap.items() if n >= self.input_dims[d]}
        if wide:  # (a negative overlap is a stride longer than the window: points are skipped)
            raise ConfigError(f"input_overlap {wide} must be less than the window length "
                              f"({ {d: self.input_dims[d] for d in wide} }): windows would not "
                              "move along the dimension")
        self.out_order = tuple(dim_order) if dim_order is not None else tuple(self.input_dims)
        if set(self.out_order) != set(self.input_dims):
            raise ConfigError(f"dim_order {self.out_order} must list exactly the input dims "
                             f"{tuple(self.input_dims)}")
        self.batch_size = _whole(batch_size, "batch_size", positive=True)
        self.drop_last = drop_last
        self.sampling: Mode = sampling
        self.seed = int(seed)
        self.epoch = 0
        self.buffer_blocks = int(buffer_blocks)
        self.max_missing = max_missing
        self.mask_variable = mask_variable
        self.weight_fn = weight_fn
        self.num_samples = num_samples
        self.prefetch_workers = int(prefetch_workers)
        self.prefetch_depth = prefetch_depth
        self.shard = shard
        self.with_ids = with_ids
        if mask_variable is not None and mask_variable not in self.source.variables:
            raise ConfigError(
                f"mask_variable {mask_variable!r} is not one of the streamed variables "
                f"{list(self.source.variables)} (the dataset has data variables "
                f"{list(self.source.ds.data_vars)}); name one of them, or add it to "
                "variables=...")
        sizes = self.source.sizes()
        for v in self.source.variables:
            if not self.source.dims_of(v):
                raise ConfigError(f"variable {v!r} is 0-d; it cannot be cut into samples")
        empty = [d for d, n in sizes.items() if n == 0]
        if empty:
            raise ConfigError(
                f"dimension {empty[0]!r} of the data is empty (length 0), so there are no "
                f"samples to cut (sizes {dict(sizes)}); did a selection such as "
                f".sel({empty[0]}=...) match nothing?")
        self.grid = SampleGrid.build(
            sizes, self.input_dims, self.input_overlap, self._block_len(sizes, block_chunks,
                                                                         block_bytes),
            dims=self.source.all_dims(),
        )
        self._weights: np.ndarray | None = None
        self._scanned = False
        if balance not in (None, "pad", "drop"):
            raise ConfigError(f"unknown balance {balance!r}; use 'pad', 'drop' or None")
        self.balance: Balance | None = balance
        self.statistics: Statistics | None = None
        self._norm: dict[str, tuple[np.ndarray, np.ndarray, list[tuple[int, int | None]]]] = {}
        if normalize is not False:
            self._set_statistics(normalize)
        # checkpointing: epoch and batches handed out by the current (or last) iteration
        self._state: dict[str, Any] = {"epoch": self.epoch, "position": 0, "finished": False}
        self._resume_at = 0

    def _set_statistics(self, normalize: bool | Statistics) -> None:
        """Resolve the statistics and, per variable, how a batch indexes them."""
        # per-level statistics follow the levels this data has (by coordinate value), not
        # their positions in the store they were computed on; only this stream's variables
        # are aligned (another whose levels cannot be matched must not stand in the way)
        given = normalize if isinstance(normalize, Statistics) else None
        stats = given if given is not None else \
            load_statistics(self.source.ds, self.source.variables)  # (aligned)
        if stats is None or not all(v in stats for v in self.source.variables):
            stats = compute_statistics(self.source.ds, self.source.variables)  # its own levels
        elif stats is given:
            stats = stats.aligned_to(self.source.ds, self.source.variables)
        self.statistics = stats
        dims = self.grid.dims
        for v in self.source.variables:
            st = stats[v]
            vdims = self.source.dims_of(v)
            out = output_dims(vdims, self.out_order)
            index = []
            for d in st.dims:
                if d not in vdims:
                    raise ConfigError(f"statistics of {v!r} are per {d!r}, which the variable "
                                      f"lacks (dims {tuple(vdims)})")
                index.append((dims.index(d), 1 + out.index(d) if d in out else None))
            self._norm[str(v)] = (st.offset(), st.scale(), index)

    # -- setup --------------------------------------------------------------------------------
    def _block_len(self, sizes: Mapping[Hashable, int], block_chunks: Mapping | None,
                   block_bytes: int) -> dict[Hashable, int]:
        chunks = self.source.chunks()
        dims = self.source.all_dims()
        blen = {d: int(chunks.get(d, sizes[d])) for d in dims}
        if block_chunks:
            return {d: blen[d] * int(block_chunks.get(d, 1)) for d in dims}
        itemsize = sum(np.dtype(self.source.ds[v].dtype).itemsize for v in self.source.variables)
        # grow (or, for unchunked data, cut) blocks along the outermost dim to ~block_bytes
        outer = dims[0]
        inner = int(np.prod([blen[d] for d in dims[1:]])) * itemsize
        step = blen[outer] if outer in chunks else 1
        want = max(1, block_bytes // max(inner, 1))
        mult = max(1, want // step)
        blen[outer] = min(max(step * mult, self.input_dims.get(outer, 1)), sizes[outer])
        return blen

    def _scan(self) -> None:
        """One pass computing the missing-data mask and/or sample weights."""
        if self._scanned:
            return
        self._scanned = True
        if self.max_missing is None and self.weight_fn is None:
            return
        grid = self.grid
        valid = np.ones(grid.n_samples, dtype=bool)
        weights = np.zeros(grid.n_samples, dtype=np.float64) if self.weight_fn else None
        mask_var = self.mask_variable if self.mask_variable is not None else \
            self.source.variables[0]
        for _, ids in grid.blocks_with_samples():
            arrays = self._cut(ids)
            if self.max_missing is not None:
                a = arrays[str(mask_var)]
                frac = np.isnan(a).reshape(a.shape[0], -1).mean(axis=1) if a.ndim > 1 \
                    else np.isnan(a).astype(float)
                valid[ids] = frac <= self.max_missing
            if weights is not None and self.weight_fn is not None:
                weights[ids] = np.asarray(self.weight_fn(arrays), dtype=np.float64)
        if self.max_missing is not None:
            grid.valid = valid
            if grid.n_samples and not valid.any():
                warnings.warn(
                    f"max_missing={self.max_missing} leaves no sample: every one of the "
                    f"{grid.n_samples} windows has a larger fraction of NaN in "
                    f"{str(mask_var)!r}, so an epoch is empty. Raise max_missing, or choose "
                    "another mask_variable.", UserWarning, stacklevel=3)
        self._weights = weights

    # -- reading and cutting --------------------------------------------------------------------
    def _windows(self) -> dict[Hashable, int]:
        dims = self.grid.dims
        return {d: self.grid.window[dims.index(d)] for d in self.input_dims}

    def _cut(self, ids: np.ndarray, blocks: Sequence[int] | None = None) -> Batch:
        """Arrays of the given samples, in the given order.

        One block: read its bounding box (a view for numpy data) and cut — a single strided
        copy when the samples are all of the block's window positions in order, else one
        gather. Several blocks: read each block into one staging array (zarr decodes into it
        directly) and cut every sample with a single gather in the requested order.
        """
        grid = self.grid
        ids = np.asarray(ids, dtype=np.int64)
        if blocks is None or len(blocks) != 1:
            blk = grid.block_of(ids)
            uniq = np.unique(blk)
            if uniq.size == 1:
                blocks = (int(uniq[0]),)
            elif self.source.in_memory():
                return self._cut_box(ids)  # the bounding box is a view: no staging copy
            else:
                return self._cut_staged(ids, blk, uniq)
        regular = self._regular(int(blocks[0]), ids)
        if regular is not None:
            return self._cut_regular(*regular)
        return self._cut_box(ids)

    def _cut_box(self, ids: np.ndarray) -> Batch:
        """Gather samples from the bounding box of one block."""
        grid = self.grid
        dims = grid.dims
        windows = self._windows()
        box = grid.box(ids)
        arrays = self.source.read_many(dict(zip(dims, box, strict=True)))
        starts = grid.sample_starts(ids)
        local = {d: starts[:, i] - box[i].start for i, d in enumerate(dims)}
        return {str(v): cut(arrays[v], self.source.dims_of(v), local, windows, self.out_order)
                for v in self.source.variables}

    def _regular(self, block: int, ids: np.ndarray) -> tuple | None:
        """If ``ids`` are all window positions of ``block`` in C order: (first, count, step)."""
        grid = self.grid
        first, count, step = {}, {}, {}
        for d, st, (lo, hi) in zip(grid.dims, grid.starts, grid.block_ranges(block), strict=True):
            if hi <= lo:
                return None
            first[d], count[d] = lo, hi - lo
            step[d] = int(st[1] - st[0]) if st.size > 1 else 1
        n = 1
        first_id = 0
        for d, size in zip(grid.dims, grid.shape, strict=True):
            n *= count[d]
            first_id = first_id * size + first[d]
        if ids.size != n or int(ids[0]) != first_id:
            return None
        if n > 1 and not bool((ids[1:] > ids[:-1]).all()):
            return None
        # sorted, distinct and as many as the block has: exactly the block's grid, in order
        return first, count, step

    def _cut_regular(self, first: dict, count: dict, step: dict) -> Batch:
        """All samples of one block in C order: a strided view copied once."""
        grid = self.grid
        dims = grid.dims
        lo = {d: int(grid.starts[i][first[d]]) for i, d in enumerate(dims)}
        hi = {d: int(grid.starts[i][first[d] + count[d] - 1]) + grid.window[i]
              for i, d in enumerate(dims)}
        box = {d: slice(lo[d], hi[d]) for d in dims}
        arrays = self.source.read_many(box)
        windows = self._windows()
        zero = dict.fromkeys(dims, 0)
        return {str(v): cut_grid(arrays[v], self.source.dims_of(v), dims, zero, count, step,
                                 windows, self.out_order)
                for v in self.source.variables}

    def _cut_staged(self, ids: np.ndarray, blk: np.ndarray, uniq: np.ndarray) -> Batch:
        """Samples from several blocks: blocks stacked in one staging array, one gather."""
        grid = self.grid
        dims = grid.dims
        windows = self._windows()
        slot = np.searchsorted(uniq, blk)
        # per block, the bounding box of this group's samples in it
        boxes = [grid.box(ids[blk == b]) for b in uniq]
        starts = grid.sample_starts(ids)
        lo = np.array([[s.start for s in box] for box in boxes])
        local = {d: starts[:, i] - lo[slot, i] for i, d in enumerate(dims)}
        local["__block__"] = slot
        out: Batch = {}
        for v in self.source.variables:
            vdims = self.source.dims_of(v)
            axes = [dims.index(d) for d in vdims]
            shape = [max(box[a].stop - box[a].start for box in boxes) for a in axes]
            staging = np.empty((len(boxes), *shape), dtype=self.source.dtype_of(v))
            for k, box in enumerate(boxes):
                sel: tuple[int | slice, ...] = (
                    k, *[slice(0, box[a].stop - box[a].start) for a in axes])
                sub = staging[sel]
                self.source.read_into(v, dict(zip(dims, box, strict=True)), sub)
            out[str(v)] = cut(staging, ("__block__", *vdims), local, windows, self.out_order)
        return out

    def _load_group(self, group: Group) -> tuple[Batch, np.ndarray, int]:
        return self._cut(group.samples, group.blocks), group.samples, int(group.samples.size)

    # -- epochs ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration uses (like DistributedSampler)."""
        self.epoch = int(epoch)
        self._state = {"epoch": self.epoch, "position": 0, "finished": False}

    def plan(self, epoch: int | None = None, shard: Shard | None = None) -> EpochPlan:
        """The sample order of one epoch for one shard (default: this process's shard)."""
        self._scan()
        return make_plan(
            self.grid, self.sampling, seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shard=shard or self.shard or current_shard(), buffer_blocks=self.buffer_blocks,
            batch_size=self.batch_size, weights=self._weights, num_samples=self.num_samples,
            balance=self.balance,
        )

    def __len__(self) -> int:
        """Number of batches this process yields per epoch."""
        n = self.plan().n_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int | None = None, shard: Shard | None = None,
                start: int | None = None) -> Iterator[Batch]:
        """Yield batches ``{var: (batch, *window)}`` for one epoch, from batch ``start``
        (default: 0, or where :meth:`load_state_dict` says to resume)."""
        if start is None:
            start, self._resume_at = self._resume_at, 0
        epoch = self.epoch if epoch is None else int(epoch)
        state = {"epoch": epoch, "position": int(start), "finished": False}
        self._state = state  # set now: state_dict() is right before the first batch too
        return self._epoch_batches(epoch, shard, int(start), state)

    def _epoch_batches(self, epoch: int, shard: Shard | None, start: int,
                       state: dict[str, Any]) -> Iterator[Batch]:
        self._scan()
        loader: Any
        if (self._fast_sequential and self.source.in_memory() and self.sampling == "sequential"
                and self._weights is None and self.grid.valid is None and not start
                and self.balance is None):
            # whole blocks in storage order: cut without building the epoch plan
            loader = _Synchronous(self._sequential_in_memory(shard or self.shard
                                                             or current_shard()))
        else:
            plan = self.plan(epoch, shard)
            if start:
                plan = plan.skip(start * self.batch_size)
            if self.source.in_memory():
                # in RAM already: nothing to overlap, a thread hand-off would only cost
                loader = _Synchronous(map(self._load_group, plan.groups))
            else:
                loader = Prefetcher(self._load_group, plan.groups,
                                    workers=self.prefetch_workers, depth=self.prefetch_depth)
        with loader:
            for batch in self._batch_up(loader):
                state["position"] += 1
                yield batch
        state["finished"] = True

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the current (or last) iteration is: ``epoch``, ``position`` (batches handed
        out), ``finished``; plus what the order depends on (``seed``, ``sampling``,
        ``batch_size``), checked when loading."""
        return {**self._state, "seed": self.seed, "sampling": self.sampling,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration resume where ``state`` (from :meth:`state_dict`) was: the
        rest of that epoch, batch for batch, or the next epoch if it had finished."""
        for key in ("seed", "sampling", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ConfigError(f"cannot resume: the state was saved by a stream with "
                                  f"{key}={state[key]!r}, this one has {getattr(self, key)!r}")
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"not a stream state (needs epoch and position): {state!r}"
                              ) from None
        if state.get("finished"):
            self.epoch, self._resume_at = epoch + 1, 0
        else:
            self.epoch, self._resume_at = epoch, position
        self._state = {"epoch": self.epoch, "position": self._resume_at, "finished": False}

    def _batch_up(self, items: Any) -> Iterator[Batch]:
        """Slice batches of ``batch_size`` out of ``(arrays, ids or None, n)`` items."""
        bs = self.batch_size
        pending: list[tuple[Batch, np.ndarray | None]] = []
        n_pending = 0
        for arrays, ids, n in items:
            pos = 0
            if n_pending:
                take = min(bs - n_pending, n)
                pending.append(({k: a[:take] for k, a in arrays.items()},
                                None if ids is None else ids[:take]))
                n_pending += take
                pos = take
                if n_pending == bs:
                    yield self._emit(pending)
                    pending, n_pending = [], 0
            while n - pos >= bs:
                yield self._emit([({k: a[pos:pos + bs] for k, a in arrays.items()},
                                   None if ids is None else ids[pos:pos + bs])])
                pos += bs
            if pos < n:
                pending.append(({k: a[pos:] for k, a in arrays.items()},
                                None if ids is None else ids[pos:]))
                n_pending += n - pos
        if n_pending and not self.drop_last:
            yield self._emit(pending)

    def _sequential_in_memory(self, shard: Shard
                              ) -> Iterator[tuple[Batch, np.ndarray | None, int]]:
        """Sequential order over numpy data: ``make_plan``'s blocks, each cut in one copy.

        Every block's samples are all its window positions in C order (no mask, no weights),
        so each block is a strided view of the arrays cut by a compiled plan kept per block
        geometry; it yields exactly what :meth:`_load_group` does for the sequential plan.
        """
        grid = self.grid
        dims = grid.dims
        windows = self._windows()
        step = {d: int(st[1] - st[0]) if st.size > 1 else 1
                for d, st in zip(dims, grid.starts, strict=True)}
        zero = dict.fromkeys(dims, 0)
        grid.block_ranges(0)
        # per dim, the non-empty block indices: (index, count, slice of the bounding box)
        per_dim = []
        for i, table in enumerate(grid.__dict__["_ranges"]):
            st, w = grid.starts[i], grid.window[i]
            per_dim.append([(j, hi - lo, slice(int(st[lo]), int(st[hi - 1]) + w))
                            for j, (lo, hi) in enumerate(table) if hi > lo])
        variables = [(str(v), self.source.dims_of(v), self.source._backend(v)[2],
                      [dims.index(d) for d in self.source.dims_of(v)])
                     for v in self.source.variables]
        geometries: dict[tuple[int, ...], tuple[int, list]] = {}
        block_shape = grid.block_shape
        # C order over the non-empty blocks = make_plan's block order; then this shard's part
        mine = itertools.islice(itertools.product(*per_dim), shard.index, None, shard.count)
        for cells in mine:
            counts = tuple(c[1] for c in cells)
            geo = geometries.get(counts)
            arrays: Batch = {}
            for k, (name, vdims, arr, axes) in enumerate(variables):
                view = arr[tuple(cells[a][2] for a in axes)]
                self.source.bytes_read += view.nbytes
                if geo is None:
                    cnt = dict(zip(dims, counts, strict=True))
                    plan = grid_plan(view, vdims, dims, zero, cnt, step, windows,
                                     self.out_order)
                    geometries.setdefault(counts, (int(np.prod(counts)), []))[1].append(plan)
                else:
                    plan = geo[1][k]
                out = None
                if plan is not None:
                    out = np.empty(plan.out_shape, dtype=view.dtype)
                    if not plan.run(view, out):
                        out = None
                if out is None:
                    out = cut_grid(view, vdims, dims, zero, dict(zip(dims, counts, strict=True)),
                                   step, windows, self.out_order)
                arrays[name] = out
            ids = (grid.block_samples(int(np.ravel_multi_index(tuple(c[0] for c in cells),
                                                               block_shape)))
                   if self.with_ids or self._norm else None)
            yield arrays, ids, geometries[counts][0]

    def _emit(self, pieces: list[tuple[Batch, np.ndarray | None]]) -> Batch:
        if len(pieces) == 1:
            batch = dict(pieces[0][0])
            ids = pieces[0][1]
        else:
            batch = {k: np.concatenate([p[0][k] for p in pieces]) for k in pieces[0][0]}
            ids = (None if pieces[0][1] is None
                   else np.concatenate([p[1] for p in pieces]))  # type: ignore[misc]
        if self._norm:
            self._normalize(batch, ids)
        if self.with_ids:
            batch["sample_id"] = ids  # type: ignore[assignment]
        return batch

    def _normalize(self, batch: Batch, ids: np.ndarray | None) -> None:
        """``(x - mean) / std`` in place of each variable, indexed per sample if per level."""
        starts = None
        for name, (offset, scale, index) in self._norm.items():
            x = batch[name]
            dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
            if index:
                if starts is None:
                    starts = self.grid.sample_starts(np.asarray(ids))
                idx = []
                for gi, axis in index:
                    shape = [x.shape[0]] + [1] * (x.ndim - 1)
                    pos = starts[:, gi].reshape(shape)
                    if axis is not None:
                        ar = [1] * x.ndim
                        ar[axis] = x.shape[axis]
                        pos = pos + np.arange(x.shape[axis]).reshape(ar)
                    idx.append(pos)
                off, sc = offset[tuple(idx)], scale[tuple(idx)]
            else:
                off, sc = offset, scale
            batch[name] = ((x - off) / sc).astype(dt, copy=False)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    # -- describing samples ---------------------------------------------------------------------
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one sample of each variable."""
        windows = {d: self.grid.window[self.grid.dims.index(d)] for d in self.input_dims}
        return {str(v): tuple(windows[d] for d in output_dims(self.source.dims_of(v),
                                                               self.out_order))
                for v in self.source.variables}

    def sample_dtypes(self) -> dict[str, np.dtype]:
        """Dtype of each variable's samples."""
        out = {}
        for v in self.source.variables:
            dt = np.dtype(self.source.dtype_of(v))
            out[str(v)] = dt if not self._norm or dt.kind == "f" else np.dtype(np.float32)
        return out

    def labeled(self, batch: Batch) -> xr.Dataset:
        """A labeled ``xarray.Dataset`` for one batch (needs ``with_ids=True``)."""
        if "sample_id" not in batch:
            raise ConfigError("labeled batches need sample ids: build the stream with_ids=True")
        ids = np.asarray(batch["sample_id"])
        ds = self.source.ds
        starts = self.grid.sample_starts(ids)
        coords: dict[Hashable, Any] = {"sample_id": ("sample", ids)}
        for i, d in enumerate(self.grid.dims):
            if d not in ds.indexes:
                continue
            vals = ds.indexes[d].values
            if d in self.input_dims:
                w = self.input_dims[d]
                coords[d] = (("sample", d), vals[starts[:, i][:, None] + np.arange(w)])
            else:
                coords[d] = ("sample", vals[starts[:, i]])
        data = {}
        for v in self.source.variables:
            vd = output_dims(self.source.dims_of(v), self.out_order)
            data[v] = (("sample", *vd), batch[str(v)], ds[v].attrs)
        return xr.Dataset(data, coords=coords)
