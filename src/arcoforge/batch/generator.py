"""``BatchGenerator``: xbatcher's API and batches, each storage chunk read once per pass.

Labeled batches (``gen[i]``) are identical to xbatcher 0.4's (dims, coords, order, values,
attrs, ``len``). Patch arithmetic is pure numpy (:class:`~arcoforge.batch.indexing.BatchPlan`).
With ``preload_batch=True`` (the default) batches are grouped into storage-aligned blocks
(:class:`~arcoforge.batch.indexing.BatchBlocks`): iterating, or asking ``gen[i]`` in order,
decodes each block once through the direct Zarr reader the stream uses
(:class:`~arcoforge.batch.source.ArraySource`), keeps it while its batches are handed out, and
cuts every batch from it (a copy: batches never share memory). When every batch lies inside one
storage chunk, a block is held as one array per chunk (*tiles*), each decompressed straight
into place on the decoding pool. ``gen[i]`` out of order reads just its own box. While
iterating, up to two blocks ahead are decoded in the background (at most three blocks, each of
at most ``block_bytes``, are held).

The labeled object is built from a *skeleton* of the data (lazy variables replaced by
zero-strided placeholders, lazy coordinates loaded once): it is ``skeleton.isel(box)`` with the
values filled in, built by :class:`~arcoforge.batch.zarr_direct.LabelBuilder` (which reuses each
sliced coordinate's values and index, and checks its first batch against xarray's own ``isel``).

Batches of lazy data (Zarr, dask, lazily opened files) are independent: each has its own
values (new, writable arrays), its own ``Variable`` objects for sliced variables and its own
attrs dicts, so changing one batch in place leaves every other batch, and later reads of the
same batch, unchanged. Variables already in memory appear as xbatcher shows them, as xarray's
``isel`` returns them: views of the data's own arrays (the very objects when they have no
sliced dim), so in-place changes to those reach the data and overlapping batches, as in
xbatcher. Index coordinate values are read-only.

Beyond xbatcher: ``partial_last_batch``, ``dim_order``, ``block_bytes``, numpy integer indices,
:meth:`BatchGenerator.numpy_batch` (arrays without building xarray objects) and
:meth:`BatchGenerator.stream` (the shuffled, prefetched, shardable fast path).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import xarray as xr

from ..errors import ConfigError
from .indexing import BatchBlocks, BatchPlan, VarExtent, chunk_of_boxes, chunk_pieces
from .source import ArraySource, as_dataset
from .zarr_direct import LabelBuilder, decode_pool

__all__ = ["BatchGenerator"]

XrObj = xr.Dataset | xr.DataArray
SUFFIX = "_input"
DEFAULT_BLOCK_BYTES = 256 << 20
_AHEAD = 2  # blocks decoded ahead while iterating
_ALL = slice(None)
_TILE_MIN_BYTES = 64 << 10  # smaller chunks: copying them costs less than a task per chunk


def _to_input_dims(obj: XrObj, input_dims: Sequence[Hashable]) -> XrObj:
    """Rename each input dim ``d`` to ``d_input``, keeping its coordinate as a plain coord."""
    for d in input_dims:
        new = f"{d}{SUFFIX}"
        if d in obj.coords and obj.coords[d].dims == (d,):
            coord = obj.coords[d]
            obj = obj.drop_vars([d])
            obj = obj.rename_dims({d: new}) if isinstance(obj, xr.Dataset) else \
                obj.rename({d: new})
            obj = obj.assign_coords({d: (new, coord.data, coord.attrs)})
        else:
            obj = obj.rename_dims({d: new}) if isinstance(obj, xr.Dataset) else \
                obj.rename({d: new})
    return obj


def _stack_samples(obj: XrObj, input_dims: Sequence[Hashable]) -> XrObj:
    """Stack all non-input dims into ``sample`` when there are at least two of them."""
    rest = [d for d in obj.sizes if d not in input_dims]
    if len(rest) < 2:
        return obj
    return obj.stack(sample=rest).transpose("sample", *input_dims)


Tile = tuple[list[int], dict[Hashable, np.ndarray]]


class _Block:
    """The decoded values of one block, as tiles: ``tiles[key] = (lo, arrays)``.

    ``arrays[v]`` covers the tile's box from ``lo`` along the sliced dims. An untiled block is
    one tile (key 0) covering the block's box; a tiled block holds one tile per storage chunk
    (key: the chunk's number in C order of the chunk grid), each decoded straight into its
    own array.
    """

    __slots__ = ("index", "tiles")

    def __init__(self, index: int, tiles: dict[int, Tile]) -> None:
        self.index = index
        self.tiles = tiles

    @classmethod
    def whole(cls, index: int, lo: np.ndarray, arrays: dict[Hashable, np.ndarray]) -> _Block:
        """A block held as one array per variable covering its box from ``lo``."""
        return cls(index, {0: ([int(x) for x in lo], arrays)})


class _BlockReader:
    """Reads the lazy variables of a generator's data block by block (module docstring).

    Holds the skeleton, the :class:`ArraySource` over the lazy data variables, the block
    grouping and a small cache of decoded blocks. Not pickled: rebuilt where it is used.
    """

    def __init__(self, gen: BatchGenerator) -> None:
        obj = gen.ds
        dset = as_dataset(obj)
        names = list(dset.data_vars)
        self.is_array = isinstance(obj, xr.DataArray)
        self.names = names
        lazy_probe = ArraySource(dset, names)
        self.lazy = [v for v in names if lazy_probe.backend_kind(v) != "numpy"]
        self.source = ArraySource(dset, self.lazy) if self.lazy else None
        self.dims = {v: tuple(dset[v].dims) for v in names}
        self.sliced = tuple(gen.plan.sliced_dims)
        self.skeleton = self._skeleton(obj, dset)
        self.builder = LabelBuilder(self.skeleton, self.sliced, self.lazy,
                                    array_key=names[0] if self.is_array else None)
        lo, hi = gen.plan.batch_boxes()
        self.batch_lo, self.batch_hi = lo, hi
        chunks = self.source.chunks() if self.source is not None else {}
        extents = []
        for v in self.lazy:
            var = dset[v]
            rest = int(np.prod([var.sizes[d] for d in var.dims if d not in self.sliced],
                               dtype=np.int64))
            extents.append(VarExtent(tuple(d in var.dims for d in self.sliced),
                                     int(var.dtype.itemsize) * rest))
        self.blocks = BatchBlocks.build(
            lo, hi, [int(chunks.get(d, dset.sizes[d])) for d in self.sliced], extents,
            gen.block_bytes)
        biggest = int(self.blocks.nbytes.max()) if len(self.blocks) else 0
        self.keep = 1 if self.blocks.contiguous else \
            int(max(1, min(8, gen.block_bytes // max(1, biggest))))
        self.ahead = _AHEAD if biggest <= gen.block_bytes // 4 else 1
        self.cache: OrderedDict[int, _Block] = OrderedDict()
        self.current: _Block | None = None  # the block used last (read without the lock)
        self.lo_list, self.hi_list = lo.tolist(), hi.tolist()
        self.block_list = self.blocks.block_of.tolist()
        self.axes = {v: [self.sliced.index(d) if d in self.sliced else None
                         for d in self.dims[v]] for v in self.lazy}
        # per lazy variable, how its block key is made from the sliced dims' slices (None:
        # its dims are the sliced dims in order, the key is those slices)
        self.keys: list[tuple[Hashable, list[int | None] | None]] = [
            (v, None if self.axes[v] == list(range(len(self.sliced))) else self.axes[v])
            for v in self.lazy]
        self.first_list = self.blocks.first.tolist()
        # variables without some sliced dim: their boxes recur across blocks, keep them
        self.partial = {v for v in self.lazy if any(d not in self.dims[v] for d in self.sliced)}
        self.tile_strides: list[int] = []
        self.tile_chunks, self.tile_keys = self._tiling(lo, hi)
        self.var_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.var_loading: dict[tuple, threading.Event] = {}  # boxes being read right now
        self.var_bytes = 0
        self.budget = gen.block_bytes
        self.last_block: int | None = None
        self.lock = threading.Lock()
        self.pending: dict[int, Future[_Block]] = {}
        self.pool: ThreadPoolExecutor | None = None

    def _skeleton(self, obj: XrObj, dset: xr.Dataset) -> XrObj:
        """``obj`` with lazy data variables as zero-strided placeholders, coordinates loaded."""
        def dummy(v: Hashable) -> np.ndarray:
            var = dset[v]
            return np.broadcast_to(np.zeros((), dtype=var.dtype), var.shape)

        if isinstance(obj, xr.DataArray):
            skel = obj.copy(deep=False, data=dummy(self.names[0])) if self.lazy else \
                obj.copy(deep=False)
            for name in skel.coords:
                skel.coords[name].variable.load()
            return skel
        data = {v: dummy(v) if v in self.lazy else obj[v].data for v in self.names}
        skel_ds = obj.copy(deep=False, data=data)
        for name in skel_ds.coords:
            skel_ds.variables[name].load()
        return skel_ds

    # -- blocks ----------------------------------------------------------------------------------
    def _box(self, v: Hashable, lo: np.ndarray, hi: np.ndarray) -> dict[Hashable, slice]:
        return {d: slice(int(a), int(b)) for d, a, b in zip(self.sliced, lo, hi, strict=True)
                if d in self.dims[v]}

    def _tiling(self, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[list[int] | None, list[int] | None]:
        """``(chunks, tile key of every batch)`` when blocks are read chunk by chunk, else Nones.

        A block that spans several chunks of a directly read variable along a dim other than
        its first is decoded through a scratch tile and copied into place; read chunk by chunk
        instead, each chunk decompresses straight into its own array. Done when every lazy
        variable has exactly the sliced dims, in order, is read directly with the same chunks
        of at least ``_TILE_MIN_BYTES``, and every batch lies inside one chunk (so a batch is
        cut from one tile).
        """
        src = self.source
        if src is None or self.partial or len(self.blocks) == 0 or any(
                axes is not None for _, axes in self.keys):
            return None, None
        chunks = set()
        for v in self.lazy:
            access = src.access(v)
            if not access.direct or access.reader is None:
                return None, None
            chunks.add(tuple(access.reader.chunks))
            if access.reader.dtype.itemsize * int(np.prod(access.reader.chunks)) \
                    < _TILE_MIN_BYTES:
                return None, None
        if len(chunks) != 1:
            return None, None
        chunk = list(next(iter(chunks)))
        owner = chunk_of_boxes(lo, hi, chunk)
        if owner is None:
            return None, None
        c = np.asarray(chunk, dtype=np.int64)
        spans = (self.blocks.hi - 1) // c - self.blocks.lo // c
        if not np.any(spans[:, 1:] > 0):  # chunks of one block are contiguous in it already
            return None, None
        # a tile's key: its chunk's number in C order of the chunk grid
        assert access.reader is not None  # checked in the loop above (last lazy variable)
        grid = (-(-np.asarray(access.reader.shape, dtype=np.int64) // c)).tolist()
        strides = np.array([math.prod(grid[k + 1:]) for k in range(len(grid))], dtype=np.int64)
        self.tile_strides = strides.tolist()
        return chunk, (owner @ strides).tolist()

    def _read_tile(self, lo: list[int], hi: list[int]) -> dict[Hashable, np.ndarray]:
        assert self.source is not None
        return self.source.read_many({d: slice(a, z) for d, a, z in
                                      zip(self.sliced, lo, hi, strict=True)})

    def _read_block(self, b: int) -> _Block:
        assert self.source is not None
        lo, hi = self.blocks.lo[b], self.blocks.hi[b]
        if self.tile_chunks is not None:
            # one chunk per tile: decoded inline by the pool thread (no nested submission)
            pool = decode_pool()
            strides = self.tile_strides
            pieces = [(sum(j * m for j, m in zip(idx, strides, strict=True)), tlo,
                       pool.submit(self._read_tile, tlo, thi))
                      for idx, tlo, thi in chunk_pieces(lo, hi, self.tile_chunks)]
            return _Block(b, {key: (tlo, fut.result()) for key, tlo, fut in pieces})
        if not self.partial:
            box = {d: slice(int(a), int(z)) for d, a, z in zip(self.sliced, lo, hi, strict=True)}
            return _Block.whole(b, lo, self.source.read_many(box))
        arrays: dict[Hashable, np.ndarray] = {}
        for v in self.lazy:
            if v in self.partial:
                arrays[v] = self._shared_box(v, lo, hi)
            else:
                arrays[v] = self.source.read(v, self._box(v, lo, hi))
        return _Block.whole(b, lo, arrays)

    def _shared_box(self, v: Hashable, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """A box of a variable that lacks some sliced dim: read once even when the background
        reader and the consumer ask for it at the same time (the other waits for the first)."""
        assert self.source is not None
        key = (v, self._box_key(v, lo, hi))
        while True:
            with self.lock:
                hit = self.var_cache.get(key)
                if hit is not None:
                    return hit
                loading = self.var_loading.get(key)
                if loading is None:
                    self.var_loading[key] = threading.Event()
            if loading is None:
                break
            loading.wait()  # then look again (it may have been evicted meanwhile)
        try:
            arr = self.source.read(v, self._box(v, lo, hi))
            self._remember(v, key[1], arr)
            return arr
        finally:
            with self.lock:
                self.var_loading.pop(key).set()

    def _box_key(self, v: Hashable, lo: np.ndarray, hi: np.ndarray) -> tuple:
        return tuple((int(a), int(z)) for d, a, z in zip(self.sliced, lo, hi, strict=True)
                     if d in self.dims[v])

    def _remember(self, v: Hashable, key: tuple, arr: np.ndarray) -> None:
        """Keep a variable's box that later blocks share (it lacks some sliced dims)."""
        with self.lock:
            self.var_cache[(v, key)] = arr
            self.var_bytes += arr.nbytes
            while self.var_bytes > self.budget // 2 and len(self.var_cache) > 1:
                _, old = self.var_cache.popitem(last=False)
                self.var_bytes -= old.nbytes

    def _block(self, i: int, sequential: bool) -> _Block | None:
        """The decoded block of batch ``i`` if it is cached or worth reading whole, else None."""
        b = self.block_list[i]
        current = self.current
        if current is not None and current.index == b:  # the common case, without the lock
            return current
        with self.lock:
            block = self.cache.get(b)
            if block is not None:
                self.cache.move_to_end(b)
                self.last_block = b
                self.current = block
                return block
            last = self.last_block
            self.last_block = b
            fut = self.pending.pop(b, None)
            if fut is None and not (sequential or b == last or (last is not None and b == last + 1)
                                    or int(self.blocks.first[b]) == i):
                return None
        block = fut.result() if fut is not None else self._read_block(b)
        with self.lock:
            self.cache[b] = block
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
            self.current = block
        return block

    def prefetch(self, b: int) -> None:
        """Start decoding block ``b`` in the background (iteration reads one block ahead)."""
        if not 0 <= b < len(self.blocks):
            return
        with self.lock:
            if b in self.cache or b in self.pending:
                return
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arcoforge-gen")
            self.pending[b] = self.pool.submit(self._read_block, b)

    def close(self) -> None:
        """Drop cached blocks and stop the background reader."""
        with self.lock:
            for fut in self.pending.values():
                fut.cancel()
            self.pending.clear()
            self.cache.clear()
            self.current = None
            self.var_cache.clear()
            self.var_bytes = 0
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- values of one batch -----------------------------------------------------------------
    def values(self, i: int, sequential: bool = False) -> dict[Hashable, np.ndarray]:
        """Values of the lazy variables inside batch ``i``'s box (new arrays, var dim order)."""
        if not self.lazy:
            return {}
        block = self.current  # the common case first, without the lock
        if block is None or block.index != self.block_list[i]:
            block = self._block(i, sequential)
        out = {}
        if block is None:
            assert self.source is not None
            for v in self.lazy:
                out[v] = self.source.read(v, self._box(v, self.batch_lo[i], self.batch_hi[i]))
            return out
        tlo, arrays = block.tiles[self.tile_keys[i] if self.tile_keys is not None else 0]
        rel = [slice(a - b, c - b) for a, c, b in zip(self.lo_list[i], self.hi_list[i], tlo)]
        for v, axes in self.keys:
            key = tuple(rel) if axes is None else \
                tuple(_ALL if k is None else rel[k] for k in axes)
            out[v] = np.array(arrays[v][key])  # a copy: batches never share values
        return out

    def labeled(self, i: int, sequential: bool = False) -> XrObj:
        """Batch ``i``'s bounding box as a loaded labeled object (``ds.isel(box).load()``)."""
        return self.builder.build_bounds(self.lo_list[i], self.hi_list[i],
                                         self.values(i, sequential))


class BatchGenerator:
    """Iterate over an xarray Dataset/DataArray in batches (xbatcher-compatible).

    Parameters
    ----------
    ds:
        The data.
    input_dims:
        Window length per dim, e.g. ``{"lat": 32, "lon": 32}``.
    input_overlap:
        Overlap per dim.
    batch_dims:
        Batch length along other dims (always iterated over).
    concat_input_dims:
        Concatenate the patches of a batch along ``input_batch`` (stacked into ``sample``).
    preload_batch:
        Load each batch into memory before reshaping (and read it through the block cache;
        with False batches stay lazy, as in xbatcher).
    partial_last_batch:
        Keep a final, shorter batch along ``batch_dims`` that do not divide the dim length.
    dim_order:
        Transpose each labeled batch to this dim order (dims a batch lacks are ignored).
    block_bytes:
        Most bytes of decoded values one block may hold (module docstring; default 256 MiB).
    """

    def __init__(
        self,
        ds: XrObj,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        *,
        partial_last_batch: bool = False,
        dim_order: Sequence[Hashable] | None = None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        self.ds = ds
        self.input_dims = dict(input_dims)
        self.input_overlap = dict(input_overlap or {})
        self.batch_dims = dict(batch_dims or {})
        self.concat_input_dims = bool(concat_input_dims)
        self.preload_batch = bool(preload_batch)
        self.partial_last_batch = partial_last_batch
        self.dim_order = tuple(dim_order) if dim_order is not None else None
        if block_bytes <= 0:
            raise ConfigError(f"block_bytes must be positive, got {block_bytes}")
        self.block_bytes = int(block_bytes)
        dup = {d: n for d, n in self.batch_dims.items() if d in self.input_dims}
        if dup and not self.concat_input_dims:
            warnings.warn(
                "The following dimensions were included in both ``input_dims`` and "
                "``batch_dims``. Since ``concat_input_dims`` is ``False``, these dimensions "
                f"will not impact batch generation: {dup}", stacklevel=2,
            )
        self.plan = BatchPlan.build(
            ds.sizes, self.input_dims, self.input_overlap, self.batch_dims,
            self.concat_input_dims, partial_last_batch=partial_last_batch,
        )
        self._reader_obj: _BlockReader | None = None
        self._reader_lock = threading.Lock()
        # batches without concatenation keep every dim: stacked only if two are not input dims
        self._stacks = sum(d not in self.input_dims for d in ds.sizes) >= 2

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader_obj"] = None
        del state["_reader_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reader_lock = threading.Lock()

    @property
    def _reader(self) -> _BlockReader:
        if self._reader_obj is None:
            with self._reader_lock:
                if self._reader_obj is None:
                    self._reader_obj = _BlockReader(self)
        return self._reader_obj

    @property
    def blocks(self) -> BatchBlocks:
        """How batches are grouped into blocks that one pass reads once each."""
        return self._reader.blocks

    # -- sequence protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[XrObj]:
        if not self.preload_batch:
            for i in range(len(self)):
                yield self[i]
            return
        reader = self._reader
        block_of, first = reader.block_list, reader.first_list
        contiguous = reader.blocks.contiguous
        # without concatenation, dim_order or stacking a batch is the labeled box itself
        plain = not (self.concat_input_dims or self._stacks or self.dim_order is not None)
        labeled = reader.labeled
        try:
            for i in range(len(self)):
                if contiguous:
                    b = block_of[i]
                    if i == first[b]:
                        for ahead in range(1, reader.ahead + 1):
                            reader.prefetch(b + ahead)
                yield labeled(i, True) if plain else self._fast(i, sequential=True)
        finally:
            reader.close()

    def _index(self, idx: Any) -> int:
        if isinstance(idx, bool) or not isinstance(idx, int | np.integer):
            raise NotImplementedError(
                f"{type(self).__name__}.__getitem__ requires a single integer key"
            )
        i = int(idx)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("list index out of range")
        return i

    def __getitem__(self, idx: int | np.integer) -> XrObj:
        i = self._index(idx)
        if not self.preload_batch:
            return self._labeled(self.ds, i, False)
        return self._fast(i)

    # -- labeled batches -----------------------------------------------------------------------
    def _check_nonempty(self, i: int) -> np.ndarray:
        patches = self.plan.batches[i]
        if patches.size == 0:
            raise IndexError(f"batch {i} contains no patch (as in xbatcher, it cannot be built)")
        return patches

    def _fast(self, i: int, sequential: bool = False) -> XrObj:
        """Batch ``i`` with its values cut from the block cache (``preload_batch=True``)."""
        if self.concat_input_dims:  # without concatenation a batch is one patch, never empty
            self._check_nonempty(i)
        loaded = self._reader.labeled(i, sequential)
        if not self.concat_input_dims:
            out = _stack_samples(loaded, list(self.input_dims)) if self._stacks else loaded
            if self.dim_order is not None:
                out = out.transpose(*self.dim_order, missing_dims="ignore")
            return out
        return self._labeled(loaded, i, False, offset=self._reader.batch_lo[i])

    def _labeled(self, data: XrObj, i: int, preload: bool,
                 offset: np.ndarray | None = None) -> XrObj:
        """Batch ``i`` cut from ``data`` with xarray (``offset``: where ``data`` starts)."""
        patches = self._check_nonempty(i)
        origin = {d: int(offset[k]) if offset is not None else 0
                  for k, d in enumerate(self.plan.sliced_dims)}
        if not self.concat_input_dims:
            sel = {d: slice(s.start - origin[d], s.stop - origin[d])
                   for d, s in self.plan.selector(int(patches[0])).items()}
            batch = data.isel(sel)
            if preload:
                batch = batch.load()
            out = _stack_samples(batch, list(self.input_dims))
        else:
            box = self.plan.box(patches)
            block = data.isel({d: slice(s.start - origin[d], s.stop - origin[d])
                               for d, s in box.items()})
            if preload:
                block = block.load()
            start = {d: box[d].start for d in box}
            pieces: list[Any] = []  # all Datasets or all DataArrays: concat has no union overload
            for p in patches:
                sel = {d: slice(s.start - start[d], s.stop - start[d])
                       for d, s in self.plan.selector(int(p)).items()}
                pieces.append(_to_input_dims(block.isel(sel), list(self.input_dims)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                joined: XrObj = xr.concat(pieces, dim="input_batch")
            out = _stack_samples(joined, [f"{d}{SUFFIX}" for d in self.input_dims])
        if self.dim_order is not None:
            out = out.transpose(*self.dim_order, missing_dims="ignore")
        return out

    def template(self, idx: int | np.integer, variable: Hashable | None = None) -> xr.DataArray:
        """The labeled layout of batch ``idx`` for one variable, with integer grid positions.

        Data are not read: a zero-strided placeholder stands in. Each returned coordinate
        ``__pos_<dim>`` gives the position of every element along ``dim`` of the original grid
        (used by :func:`~arcoforge.batch.reassemble`).
        """
        i = self._index(idx)
        da = self._variable(variable)
        pos = {f"__pos_{d}": (d, np.arange(n)) for d, n in da.sizes.items()}
        dummy = xr.DataArray(np.broadcast_to(np.zeros((), da.dtype), da.shape), dims=da.dims,
                             coords={**{k: v for k, v in da.coords.items()}, **pos},
                             name=da.name)
        return cast(xr.DataArray, self._labeled(dummy, i, preload=False))  # DataArray in, out

    def _variable(self, variable: Hashable | None) -> xr.DataArray:
        if isinstance(self.ds, xr.DataArray):
            return self.ds
        if variable is None:
            if len(self.ds.data_vars) != 1:
                raise ConfigError("name the variable (the dataset has several)")
            variable = next(iter(self.ds.data_vars))
        return self.ds[variable]

    # -- fast arrays ---------------------------------------------------------------------------
    def numpy_batch(self, idx: int | np.integer) -> dict[str, np.ndarray]:
        """``{var: gen[idx][var].values}`` computed without building xarray objects.

        Implemented directly for ``concat_input_dims=False`` (values cut from the block cache);
        with concatenation the labeled batch is built and its values returned.
        """
        i = self._index(idx)
        if self.concat_input_dims or self.dim_order is not None:
            b = self[i]
            if isinstance(b, xr.DataArray):
                return {str(b.name): b.values}
            return {str(k): v.values for k, v in b.data_vars.items()}
        self._check_nonempty(i)
        reader = self._reader
        sel = self.plan.selector(int(self.plan.batches[i][0]))
        lazy = reader.values(i)
        dset = as_dataset(self.ds)
        sizes = {d: (sel[d].stop - sel[d].start) if d in sel else n
                 for d, n in dset.sizes.items()}
        stack = [d for d in self.ds.sizes if d not in self.input_dims]
        out = {}
        for v in reader.names:
            dims = list(reader.dims[v])
            if v in lazy:
                arr = lazy[v]
            else:
                arr = dset[v].values[
                    tuple(sel.get(d, slice(None)) for d in dims)]
            if len(stack) >= 2:
                if any(d in dims for d in stack):
                    add = [d for d in stack if d not in dims]
                    arr = np.broadcast_to(arr[(...,) + (None,) * len(add)],
                                          arr.shape + tuple(sizes[d] for d in add))
                    dims = dims + add
                    keep = [d for d in self.input_dims if d in dims]
                    arr = arr.transpose([dims.index(d) for d in stack + keep])
                    arr = arr.reshape(-1, *arr.shape[len(stack):])
                else:
                    keep = [d for d in self.input_dims if d in dims]
                    arr = arr.transpose([dims.index(d) for d in keep])
            name = str(v) if isinstance(self.ds, xr.Dataset) else str(self.ds.name)
            out[name] = np.ascontiguousarray(arr)
        return out

    def stream(self, **kwargs: Any) -> Any:
        """A :class:`~arcoforge.batch.SampleStream` over the same windows (the fast path)."""
        from .stream import SampleStream

        return SampleStream(self.ds, self.input_dims, self.input_overlap, **kwargs)
