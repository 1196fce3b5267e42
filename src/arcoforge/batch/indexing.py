"""Pure patch-index arithmetic: where every patch and every batch starts, with numpy only.

Two views of the same windows are computed here, neither touches data:

* :class:`BatchPlan` — the xbatcher-compatible grouping of patches into batches (used by
  :class:`~arcoforge.batch.BatchGenerator` for labeled batches), and :class:`BatchBlocks`, the
  grouping of those batches into storage-aligned blocks that one pass reads once each.
* :class:`SampleGrid` — a flat, integer-addressable grid of *samples* (a window over the
  ``input_dims`` at one position along every other dimension), partitioned into storage-aligned
  *blocks* so each chunk is read once per pass (used by the fast streaming path and loaders).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

__all__ = ["BatchBlocks", "BatchPlan", "SampleGrid", "chunk_of_boxes", "chunk_pieces",
           "window_starts"]


def window_starts(size: int, window: int, stride: int, partial: bool = False) -> np.ndarray:
    """Start offsets of windows of length ``window`` moved by ``stride`` over ``size`` items.

    Only windows that fit entirely are kept (xbatcher semantics). With ``partial=True`` one more,
    shorter window covering the remainder is added (its length is ``size - start``).
    """
    if window <= 0 or stride <= 0:
        raise ConfigError(f"window ({window}) and stride ({stride}) must be positive")
    if window > size:
        raise ConfigError(
            f"input sample length must be less than or equal to the dimension length, "
            f"but the sample length of {window} is greater than the dimension length of {size}"
        )
    starts = np.arange(0, size, stride, dtype=np.int64)
    full = starts[starts + window <= size]
    if partial and full.size and full[-1] + window < size:
        return np.append(full, full[-1] + stride)
    return full


@dataclass(frozen=True)
class BatchPlan:
    """xbatcher-compatible batches: each batch is a list of patches, each patch a box.

    ``starts[i]``/``stops[i]`` hold the patch boxes (one column per dim of ``sliced_dims``) and
    ``batches`` lists, per batch, the patch numbers it contains; ``one_patch_each`` says that
    batch ``i`` is patch ``i`` (``concat_input_dims=False``).
    """

    sliced_dims: tuple[Hashable, ...]
    starts: np.ndarray  # (n_patches, n_sliced_dims)
    stops: np.ndarray  # (n_patches, n_sliced_dims)
    batches: tuple[np.ndarray, ...]
    one_patch_each: bool = False  # batch i is patch i (no concatenation)

    @classmethod
    def build(
        cls,
        sizes: Mapping[Hashable, int],
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int],
        batch_dims: Mapping[Hashable, int],
        concat_input_dims: bool,
        partial_last_batch: bool = False,
    ) -> BatchPlan:
        """Compute patches and their grouping exactly as xbatcher 0.4 does."""
        for dim in [*input_dims, *batch_dims]:
            if dim not in sizes:
                raise ConfigError(f"dimension {dim!r} is not in the data (dims: {list(sizes)})")
        for dim, ov in input_overlap.items():
            if dim in input_dims and ov >= input_dims[dim]:
                raise ConfigError(
                    "input overlap must be less than the input sample length, but the input "
                    f"sample length is {input_dims[dim]} and the overlap is {ov}"
                )
        unique_batch = {d: n for d, n in batch_dims.items() if d not in input_dims}
        sliced: dict[Hashable, int] = {**unique_batch, **input_dims}
        per_dim_starts = []
        per_dim_len = []
        for dim, win in sliced.items():
            ov = int(input_overlap.get(dim, 0))
            if ov >= win:
                raise ConfigError(
                    "input overlap must be less than the input sample length, but the input "
                    f"sample length is {win} and the overlap is {ov}"
                )
            part = partial_last_batch and dim in unique_batch
            st = window_starts(int(sizes[dim]), int(win), int(win) - ov, partial=part)
            per_dim_starts.append(st)
            per_dim_len.append(np.minimum(st + win, sizes[dim]) - st)
        shape = tuple(len(s) for s in per_dim_starts)
        grid = np.indices(shape).reshape(len(shape), -1) if shape else np.zeros((0, 1), int)
        starts = np.stack([s[g] for s, g in zip(per_dim_starts, grid, strict=True)], axis=1)
        stops = starts + np.stack(
            [ln[g] for ln, g in zip(per_dim_len, grid, strict=True)], axis=1
        )
        n = starts.shape[0]
        dims = tuple(sliced)
        if not concat_input_dims:
            batches: tuple[np.ndarray, ...] = tuple(np.array([i]) for i in range(n))
        elif not batch_dims:
            batches = (np.arange(n),)
        elif len(unique_batch) == len(batch_dims):
            # consecutive patches sharing the same batch-dim slices form one batch
            cols = [dims.index(d) for d in batch_dims]
            key = starts[:, cols]
            change = np.any(key[1:] != key[:-1], axis=1)
            bounds = np.flatnonzero(change) + 1
            batches = tuple(np.split(np.arange(n), bounds)) if n else ()
        else:
            batches = cls._group_duplicated(sizes, sliced, input_dims, input_overlap, batch_dims,
                                            shape)
        return cls(dims, starts, stops, batches, one_patch_each=not concat_input_dims)

    @staticmethod
    def _group_duplicated(
        sizes: Mapping[Hashable, int],
        sliced: Mapping[Hashable, int],
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int],
        batch_dims: Mapping[Hashable, int],
        shape: tuple[int, ...],
    ) -> tuple[np.ndarray, ...]:
        """Grouping when a dim is in both input_dims and batch_dims (xbatcher's arithmetic)."""
        stride = {d: n - input_overlap.get(d, 0) for d, n in input_dims.items()}
        per_batch = {d: math.ceil(n / stride.get(d, n)) for d, n in batch_dims.items()}
        n_batches = [int(sizes[d] // batch_dims.get(d, sizes[d])) for d in sliced]
        grid = np.indices(shape).reshape(len(shape), -1)
        ids = np.stack(
            [g // per_batch[d] if d in per_batch else np.zeros_like(g)
             for d, g in zip(sliced, grid, strict=True)]
        )
        in_range = np.all(ids < np.array(n_batches)[:, None], axis=0)
        flat = np.ravel_multi_index(tuple(ids), tuple(n_batches), mode="clip")
        total = int(np.prod(n_batches))
        order = np.flatnonzero(in_range)
        return tuple(order[flat[order] == b] for b in range(total))

    def __len__(self) -> int:
        return len(self.batches)

    def box(self, patches: np.ndarray) -> dict[Hashable, slice]:
        """Bounding box (dim → slice) of a set of patches."""
        lo = self.starts[patches].min(axis=0)
        hi = self.stops[patches].max(axis=0)
        return {d: slice(int(a), int(b)) for d, a, b in zip(self.sliced_dims, lo, hi, strict=True)}

    def selector(self, patch: int) -> dict[Hashable, slice]:
        """``isel`` selector of one patch."""
        return {
            d: slice(int(a), int(b))
            for d, a, b in zip(self.sliced_dims, self.starts[patch], self.stops[patch], strict=True)
        }

    def batch_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``, each ``(n_batches, n_sliced_dims)``: every batch's bounding box.

        A batch without patches gets an empty box (``lo == hi == 0``).
        """
        n, k = len(self.batches), len(self.sliced_dims)
        if self.one_patch_each:
            return self.starts.reshape(n, k).copy(), self.stops.reshape(n, k).copy()
        if all(b.size == 1 for b in self.batches):
            idx = np.fromiter((int(b[0]) for b in self.batches), dtype=np.int64, count=n)
            return self.starts[idx].reshape(n, k), self.stops[idx].reshape(n, k)
        lo = np.zeros((n, k), dtype=np.int64)
        hi = np.zeros((n, k), dtype=np.int64)
        for i, b in enumerate(self.batches):
            if b.size:
                lo[i] = self.starts[b].min(axis=0)
                hi[i] = self.stops[b].max(axis=0)
        return lo, hi


def chunk_of_boxes(lo: np.ndarray, hi: np.ndarray, chunks: Sequence[int]) -> np.ndarray | None:
    """The storage chunk that holds each box whole, or None if some box spans two chunks.

    ``lo``/``hi`` are ``(n, k)`` box bounds, ``chunks`` the chunk length of each of the ``k``
    dims; the answer is ``(n, k)`` chunk indices (``lo // chunks``). Empty boxes count as
    lying in the chunk of their start.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    c = np.maximum(np.asarray(chunks, dtype=np.int64).reshape(-1), 1)
    if lo.ndim != 2 or lo.shape[1] != c.size:
        raise ConfigError(f"boxes of {lo.shape[-1]} dims, chunks of {c.size}")
    first = lo // c
    last = (np.maximum(hi, lo + 1) - 1) // c
    return first if np.array_equal(first, last) else None


def chunk_pieces(lo: Sequence[int], hi: Sequence[int], chunks: Sequence[int]
                 ) -> list[tuple[tuple[int, ...], list[int], list[int]]]:
    """Box ``lo``..``hi`` cut at chunk boundaries: ``(chunk index, piece lo, piece hi)`` each.

    Pieces come in C order of their chunk indices; each lies inside one chunk.
    """
    ranges = []
    for a, z, c in zip(lo, hi, chunks, strict=True):
        c = max(int(c), 1)
        a, z = int(a), int(z)
        ranges.append([(j, max(a, j * c), min(z, (j + 1) * c))
                       for j in range(a // c, max(a, z - 1) // c + 1)])
    out = []
    for combo in itertools.product(*ranges):
        out.append((tuple(j for j, _, _ in combo), [a for _, a, _ in combo],
                    [z for _, _, z in combo]))
    return out


@dataclass(frozen=True)
class VarExtent:
    """How many bytes one variable takes in a box: ``factor * prod(extent[d] for d in mask)``.

    ``mask`` marks which sliced dims the variable has; ``factor`` is its itemsize times the
    sizes of its dims that are not sliced (read whole).
    """

    mask: tuple[bool, ...]
    factor: int


def _row_ids(key: np.ndarray) -> np.ndarray:
    """One integer per row of non-negative ``key`` (equal rows, equal ids): a 1-d ``unique``
    is much faster than ``unique(axis=0)``, which it falls back to for huge index ranges."""
    n, k = key.shape
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    try:
        return np.ravel_multi_index(key.T, tuple(int(m) + 1 for m in key.max(axis=0)))
    except ValueError:  # the index ranges' product does not fit an int64
        return np.unique(key, axis=0, return_inverse=True)[1].reshape(-1)


@dataclass(frozen=True)
class BatchBlocks:
    """Batches grouped into blocks: the bounding box of a block is read once, then cut.

    ``block_of[i]`` is batch ``i``'s block; ``lo``/``hi`` (``(n_blocks, n_sliced_dims)``) are
    the blocks' boxes; ``first[b]`` is block ``b``'s first batch. ``depth`` is how many leading
    sliced dims the grouping keys on (-1: one block per batch); ``contiguous`` says that every
    block is one run of consecutive batches, so a sequential pass reads each block once.
    """

    block_of: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    first: np.ndarray
    depth: int
    contiguous: bool
    nbytes: np.ndarray  # per block

    @classmethod
    def build(
        cls,
        lo: np.ndarray,
        hi: np.ndarray,
        chunks: Sequence[int],
        extents: Sequence[VarExtent],
        budget: int,
    ) -> BatchBlocks:
        """Group batches (boxes ``lo``/``hi``) by the storage chunk their box starts in.

        Batches sharing the chunk index of their start along the first ``depth`` sliced dims
        form a block. The deepest ``depth`` whose blocks are runs of consecutive batches and
        fit ``budget`` bytes is chosen (so sequential reading decodes each chunk once and holds
        one block); failing that, the deepest whose blocks fit; failing that, one block per
        batch.
        """
        n, k = lo.shape
        chunk = np.maximum(np.asarray(chunks, dtype=np.int64).reshape(k), 1)
        # batches without patches (never read) take their predecessor's key
        keyed = lo.copy()
        empty = np.all(lo == hi, axis=1) if k else np.zeros(n, bool)
        if n and empty.any():
            src = np.where(~empty, np.arange(n), 0)
            np.maximum.accumulate(src, out=src)
            keyed = lo[src]
        fallback = None
        for depth in range(k, -1, -1):
            key = keyed[:, :depth] // chunk[:depth]
            if n == 0:
                return cls._make(np.zeros(0, np.int64), lo, hi, extents, depth, True)
            _, first_idx, inverse = np.unique(_row_ids(key), return_index=True,
                                              return_inverse=True)
            # number blocks by first appearance (the order a sequential pass meets them)
            order = np.argsort(first_idx, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            block_of = rank[inverse.reshape(-1)]
            changes = int(np.count_nonzero(block_of[1:] != block_of[:-1]))
            contiguous = changes == order.size - 1
            made = cls._make(block_of, lo, hi, extents, depth, contiguous)
            fits = made.nbytes.size == 0 or int(made.nbytes.max()) <= budget
            if fits and contiguous:
                return made
            if fits and fallback is None:
                fallback = made
        if fallback is not None:
            return fallback
        return cls._make(np.arange(n, dtype=np.int64), lo, hi, extents, -1, True)

    @classmethod
    def _make(cls, block_of: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              extents: Sequence[VarExtent], depth: int, contiguous: bool) -> BatchBlocks:
        nb = int(block_of.max()) + 1 if block_of.size else 0
        k = lo.shape[1]
        big = np.iinfo(np.int64).max
        blo = np.full((nb, k), big, dtype=np.int64)
        bhi = np.zeros((nb, k), dtype=np.int64)
        empty = np.all(lo == hi, axis=1) if k else np.zeros(lo.shape[0], bool)
        keep = ~empty
        np.minimum.at(blo, block_of[keep], lo[keep])
        np.maximum.at(bhi, block_of[keep], hi[keep])
        blo[blo == big] = 0
        first = np.full(nb, -1, dtype=np.int64)
        if block_of.size:
            rev = np.arange(block_of.size)[::-1]
            first[block_of[rev]] = rev
        ext = bhi - blo
        nbytes = np.zeros(nb, dtype=np.int64)
        for v in extents:
            m = np.asarray(v.mask, dtype=bool)
            nbytes += int(v.factor) * np.prod(ext[:, m], axis=1, dtype=np.int64)
        return cls(block_of, blo, bhi, first, depth, contiguous, nbytes)

    def __len__(self) -> int:
        return int(self.lo.shape[0])


@dataclass
class SampleGrid:
    """All samples of a dataset as one integer range, grouped into storage-aligned blocks.

    A *sample* is a window of ``window[d]`` along every dim ``d`` of ``dims`` (1 for dims that are
    not input dims, which are then squeezed away). Sample ``i`` is the C-order flat index into the
    grid of window starts. Blocks partition the samples by which storage chunk(s) their start
    falls in, so that reading one block's bounding box reads each chunk once.
    """

    dims: tuple[Hashable, ...]
    sizes: tuple[int, ...]
    window: tuple[int, ...]
    starts: tuple[np.ndarray, ...]
    block_len: tuple[int, ...]  # block extent along each dim, in elements of the dim
    valid: np.ndarray | None = None  # boolean per sample, None = all valid
    _block_index: tuple[np.ndarray, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._block_index = tuple(
            st // bl for st, bl in zip(self.starts, self.block_len, strict=True)
        )

    @classmethod
    def build(
        cls,
        sizes: Mapping[Hashable, int],
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        chunks: Mapping[Hashable, int] | None = None,
        block_chunks: Mapping[Hashable, int] | None = None,
        dims: Sequence[Hashable] | None = None,
    ) -> SampleGrid:
        """Grid over ``dims`` (default: all of ``sizes``) with blocks of chunk multiples."""
        input_overlap = input_overlap or {}
        chunks = chunks or {}
        block_chunks = block_chunks or {}
        dims = tuple(dims if dims is not None else sizes)
        for d in input_dims:
            if d not in dims:
                raise ConfigError(f"input dim {d!r} is not a dimension of the data ({dims})")
        window, starts, block_len = [], [], []
        for d in dims:
            w = int(input_dims.get(d, 1))
            ov = int(input_overlap.get(d, 0))
            if ov >= w and d in input_dims:
                raise ConfigError(f"overlap {ov} along {d!r} must be smaller than the window {w}")
            window.append(w)
            starts.append(window_starts(int(sizes[d]), w, w - ov if d in input_dims else 1))
            block_len.append(max(1, int(chunks.get(d, sizes[d])) * int(block_chunks.get(d, 1))))
        return cls(dims, tuple(int(sizes[d]) for d in dims), tuple(window), tuple(starts),
                   tuple(block_len))

    # -- geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Number of window positions along each dim."""
        return tuple(len(s) for s in self.starts)

    @property
    def n_samples(self) -> int:
        """Total number of samples (valid or not)."""
        return int(np.prod(self.shape))

    def valid_ids(self) -> np.ndarray:
        """Ids of samples that pass the mask, in C order."""
        if self.valid is None:
            return np.arange(self.n_samples)
        return np.flatnonzero(self.valid)

    def sample_starts(self, ids: np.ndarray) -> np.ndarray:
        """(n, ndim) start offsets of samples."""
        multi = np.unravel_index(np.asarray(ids, dtype=np.int64), self.shape)
        return np.stack([s[m] for s, m in zip(self.starts, multi, strict=True)], axis=1)

    def block_of(self, ids: np.ndarray) -> np.ndarray:
        """Flat block number of each sample."""
        multi = np.unravel_index(np.asarray(ids, dtype=np.int64), self.shape)
        bidx = tuple(bi[m] for bi, m in zip(self._block_index, multi, strict=True))
        return np.ravel_multi_index(bidx, self.block_shape)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Number of blocks along each dim."""
        return tuple(int(bi[-1]) + 1 if len(bi) else 0 for bi in self._block_index)

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return int(np.prod(self.block_shape))

    def block_ranges(self, block: int) -> list[tuple[int, int]]:
        """Per dim, the half-open range of window positions that fall in ``block``."""
        table = self.__dict__.get("_ranges")
        if table is None:
            # block indices are non-decreasing along each dim: a block's positions are one
            # range; per dim, (lo, hi) of every block index, as Python ints (looked up per block)
            table = []
            for bi in self._block_index:
                nb = int(bi[-1]) + 1 if len(bi) else 0
                idx = np.arange(nb)
                table.append(list(zip(np.searchsorted(bi, idx, "left").tolist(),
                                      np.searchsorted(bi, idx, "right").tolist(), strict=True)))
            self.__dict__["_ranges"] = table
        out = []
        block = int(block)
        for dim_table in reversed(table):
            block, b = divmod(block, len(dim_table)) if dim_table else (block, 0)
            out.append(dim_table[b] if dim_table else (0, 0))
        return out[::-1]

    def block_samples(self, block: int) -> np.ndarray:
        """Sample ids of one block (C order; masked samples removed)."""
        ids = np.zeros(1, dtype=np.int64)
        for (lo, hi), n in zip(self.block_ranges(block), self.shape, strict=True):
            ids = (ids[:, None] * n + np.arange(lo, hi, dtype=np.int64)).ravel()
        if self.valid is not None:
            ids = ids[self.valid[ids]]
        return ids

    def blocks_with_samples(self) -> list[tuple[int, np.ndarray]]:
        """Every block with its (non-empty) sample ids, in block order."""
        out = []
        for b in range(self.n_blocks):
            ids = self.block_samples(b)
            if ids.size:
                out.append((b, ids))
        return out

    def box(self, ids: np.ndarray) -> tuple[slice, ...]:
        """Bounding box (one slice per dim) covering the given samples."""
        st = self.sample_starts(ids)
        lo = st.min(axis=0)
        hi = st.max(axis=0) + np.array(self.window)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
