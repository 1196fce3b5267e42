"""xbatcher 0.4's ``BatchGenerator`` and ``BatchSchema``, run on :mod:`arcoforge.batch`.

The patch arithmetic is arcoforge's :class:`~arcoforge.batch.BatchPlan` (numpy, no per-patch
Python objects until asked for) and batches come from :class:`arcoforge.batch.BatchGenerator`
(each batch's bounding box read once). What differs from arcoforge's generator is done here the
way xbatcher does it:

* the ``cache`` / ``cache_preprocess`` arguments (batches written to a dict or fsspec mapper
  as Zarr, one group per batch index, and read back from it). They are written in the Zarr v2
  layout of xbatcher's caches, so ``"0/.zgroup" in cache`` holds and caches made by xbatcher
  under zarr-python 2 are reused; caches xbatcher writes under zarr-python 3 (``zarr.json``)
  are read too. (xbatcher itself never hits its cache under zarr-python 3.)
* a DataArray with ``concat_input_dims=True``: xbatcher keeps the renamed input coordinates as
  indexes and outer-joins the patches on them (values padded with NaN); so does this one, also
  for lazy (dask) DataArrays, on which xbatcher 0.4 can fail;
* ``BatchSchema``'s attributes (``selectors`` is a lazy read-only mapping with xbatcher's
  ``{batch: [{dim: slice}, ...]}`` content, computed per batch on access).

Deliberate differences: integer keys may also be numpy integers; with ``preload_batch=True`` a
concatenated batch is loaded (xbatcher leaves those lazy); ``BatchSchema.to_json`` writes the
``concat_input_dims`` flag under that key (xbatcher writes ``input_dims`` there).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.batch import BatchGenerator as _Engine
from arcoforge.batch import BatchPlan
from arcoforge.errors import ConfigError, NotFoundError

__all__ = ["BatchGenerator", "BatchSchema"]

XrObj = xr.Dataset | xr.DataArray
Selector = dict[Hashable, slice]
#: xbatcher's type names: one patch's selectors, a batch's, all batches'
PatchGenerator = Iterator[Selector]
BatchSelector = list[Selector]
BatchSelectorSet = Mapping[int, BatchSelector]
_SUFFIX = "_input"
_DUPLICATE_WARNING = (
    "The following dimensions were included in both ``input_dims`` and ``batch_dims``. "
    "Since ``concat_input_dims`` is ``False``, these dimensions will not impact batch "
    "generation: {}"
)


def _validate(
    sizes: Mapping[Hashable, int],
    sliced: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int],
) -> None:
    """Check every sliced dim as xbatcher does, dim by dim, with its messages."""
    for dim, length in sliced.items():
        if dim not in sizes:
            raise NotFoundError(
                f"dimension {dim!r} is not in the data; its dimensions are {list(sizes)}"
            )
        if length > sizes[dim]:
            raise ConfigError(
                "input sample length must be less than or equal to the dimension length, "
                f"but the sample length of {length} is greater than the dimension length "
                f"of {sizes[dim]} for {dim}"
            )
        overlap = input_overlap.get(dim, 0)
        if overlap >= length:
            raise ConfigError(
                "input overlap must be less than the input sample length, but the input "
                f"sample length is {length} and the overlap is {overlap}"
            )


class _Selectors(Mapping[int, list[Selector]]):
    """xbatcher's ``{batch index: [patch selector, ...]}``, built per batch when read."""

    def __init__(self, plan: BatchPlan) -> None:
        self._plan = plan

    def __getitem__(self, key: int) -> list[Selector]:
        if key not in self:
            raise NotFoundError(f"batch {key!r} does not exist (there are {len(self)})")
        return [self._plan.selector(int(p)) for p in self._plan.batches[int(key)]]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int | np.integer) and 0 <= int(key) < len(self._plan)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._plan)))

    def __len__(self) -> int:
        return len(self._plan)

    def __repr__(self) -> str:
        return f"<{len(self)} batch selectors>"


class BatchSchema:
    """Where each batch's patches lie, as xbatcher's ``BatchSchema`` describes them.

    Parameters
    ----------
    ds:
        The data (only its sizes are used; it is not kept).
    input_dims:
        Patch length per dimension.
    input_overlap:
        Overlap of consecutive patches per dimension.
    batch_dims:
        Batch length per dimension.
    concat_input_bins:
        Whether the patches of a batch are concatenated (xbatcher's spelling of
        ``concat_input_dims`` in this class).
    preload_batch:
        Recorded for the generator that uses the schema.
    """

    def __init__(
        self,
        ds: XrObj,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_bins: bool = True,
        preload_batch: bool = True,
    ) -> None:
        self._setup(input_dims, input_overlap, batch_dims, concat_input_bins, preload_batch)
        _validate(ds.sizes, self._all_sliced_dims, self.input_overlap)
        self._warn_duplicates(stacklevel=2)
        plan = BatchPlan.build(ds.sizes, self.input_dims, self.input_overlap, self.batch_dims,
                               bool(self.concat_input_dims))
        self.selectors: Mapping[int, list[Selector]] = _Selectors(plan)

    @classmethod
    def _from_plan(
        cls,
        plan: BatchPlan,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None,
        batch_dims: Mapping[Hashable, int] | None,
        concat_input_bins: bool,
        preload_batch: bool,
    ) -> BatchSchema:
        """A schema over a plan already computed (and validated) by the generator."""
        self = cls.__new__(cls)
        self._setup(input_dims, input_overlap, batch_dims, concat_input_bins, preload_batch)
        self._warn_duplicates(stacklevel=3)
        self.selectors = _Selectors(plan)
        return self

    def _setup(
        self,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None,
        batch_dims: Mapping[Hashable, int] | None,
        concat_input_bins: bool,
        preload_batch: bool,
    ) -> None:
        self.input_dims: dict[Hashable, int] = dict(input_dims)
        self.input_overlap: dict[Hashable, int] = dict(input_overlap or {})
        self.batch_dims: dict[Hashable, int] = dict(batch_dims or {})
        self.concat_input_dims = concat_input_bins
        self.preload_batch = preload_batch
        self._duplicate_batch_dims = {d: n for d, n in self.batch_dims.items()
                                      if d in self.input_dims}
        self._unique_batch_dims = {d: n for d, n in self.batch_dims.items()
                                   if d not in self.input_dims}
        self._input_stride = {d: n - self.input_overlap.get(d, 0)
                              for d, n in self.input_dims.items()}
        self._all_sliced_dims = {**self._unique_batch_dims, **self.input_dims}

    def _warn_duplicates(self, stacklevel: int) -> None:
        if self._duplicate_batch_dims and not self.concat_input_dims:
            warnings.warn(_DUPLICATE_WARNING.format(self._duplicate_batch_dims), UserWarning,
                          stacklevel=stacklevel + 1)

    def to_json(self) -> str:
        """The schema as JSON: its arguments, and under ``"selector"`` the last patch's
        ``{dim: {"start", "stop", "step"}}`` (the fields xbatcher writes)."""
        last: dict[str, dict[str, int | None]] = {}
        for i in reversed(range(len(self.selectors))):
            patches = self.selectors[i]
            if patches:
                last = {str(d): {"start": s.start, "stop": s.stop, "step": s.step}
                        for d, s in patches[-1].items()}
                break
        return json.dumps({
            "input_dims": self.input_dims,
            "input_overlap": self.input_overlap,
            "batch_dims": self.batch_dims,
            "concat_input_dims": bool(self.concat_input_dims),
            "preload_batch": self.preload_batch,
            "selector": last,
        })

    def to_file(self, out_file_name: str) -> None:
        """Write :meth:`to_json` to the file ``out_file_name``."""
        with open(out_file_name, mode="w") as out:
            out.write(self.to_json())


def _stack_sample_dims(obj: XrObj, kept: list[Hashable]) -> XrObj:
    """Fold every dim not in ``kept`` into ``sample`` when there are two or more of them."""
    others = [d for d in obj.sizes if d not in kept]
    if len(others) < 2:
        return obj
    return obj.stack(sample=others).transpose("sample", *kept)


def _without_encoding(obj: XrObj) -> XrObj:
    """A shallow copy with no variable encodings: the source's (Zarr v3 codecs, packing) need
    not fit the cache's format, and decoded values round-trip exactly without them."""
    out = obj.copy(deep=False)
    if isinstance(out, xr.Dataset):
        for var in out.variables.values():
            var.encoding = {}
    else:
        out.encoding = {}
        for name in out.coords:
            out.coords[name].encoding = {}
    return out


class BatchGenerator:
    """Batches of an xarray Dataset or DataArray, as xbatcher 0.4's ``BatchGenerator``.

    Parameters
    ----------
    ds:
        The data to iterate over.
    input_dims:
        Patch length per dimension, e.g. ``{"lat": 32, "lon": 32}``; other dims are stacked
        into ``sample``.
    input_overlap:
        Overlap of consecutive patches per dimension.
    batch_dims:
        Batch length along further dimensions (always iterated over).
    concat_input_dims:
        Concatenate the patches of a batch along ``input_batch`` (input dims get ``_input``).
    preload_batch:
        Load each batch into memory (dask arrays are computed).
    cache:
        Optional mapping (a dict, or an fsspec mapper such as ``fsspec.get_mapper(path)``)
        that batches are written to as Zarr and read back from, one group per batch index.
    cache_preprocess:
        Applied to each batch before it is cached (and returned).
    """

    def __init__(
        self,
        ds: XrObj,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: MutableMapping[str, Any] | None = None,
        cache_preprocess: Callable[[XrObj], XrObj] | None = None,
    ) -> None:
        self.ds = ds
        self.cache = cache
        self.cache_preprocess = cache_preprocess
        overlap = dict(input_overlap or {})
        batch = dict(batch_dims or {})
        sliced = {**{d: n for d, n in batch.items() if d not in input_dims}, **input_dims}
        _validate(ds.sizes, sliced, overlap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the schema warns, once
            self._engine = _Engine(ds, input_dims, overlap, batch, concat_input_dims,
                                   preload_batch)
        self._batch_selectors = BatchSchema._from_plan(
            self._engine.plan, input_dims, overlap, batch, concat_input_dims, preload_batch
        )

    @property
    def input_dims(self) -> dict[Hashable, int]:
        """Patch length per dimension."""
        return self._batch_selectors.input_dims

    @property
    def input_overlap(self) -> dict[Hashable, int]:
        """Patch overlap per dimension."""
        return self._batch_selectors.input_overlap

    @property
    def batch_dims(self) -> dict[Hashable, int]:
        """Batch length per dimension."""
        return self._batch_selectors.batch_dims

    @property
    def concat_input_dims(self) -> bool:
        """Whether a batch's patches are concatenated along ``input_batch``."""
        return self._batch_selectors.concat_input_dims

    @property
    def preload_batch(self) -> bool:
        """Whether batches are loaded into memory."""
        return self._batch_selectors.preload_batch

    def __len__(self) -> int:
        return len(self._engine)

    def __iter__(self) -> Iterator[XrObj]:
        if self.cache is None and not self._pads():
            yield from self._engine  # arcoforge's sequential path (reads ahead)
            return
        for i in range(len(self)):
            yield self[i]

    def _position(self, idx: Any) -> int:
        """Batch number of ``idx`` (negative counts from the end), with xbatcher's errors."""
        if not isinstance(idx, int | np.integer):
            raise NotImplementedError(
                f"{type(self).__name__}.__getitem__ currently requires a single integer key"
            )
        i = int(idx) + len(self) if idx < 0 else int(idx)
        if not 0 <= i < len(self):
            raise IndexError("list index out of range")
        return i

    def __getitem__(self, idx: int) -> XrObj:
        i = self._position(idx)
        if self.cache and self._batch_in_cache(i):
            return self._get_cached_batch(i)
        batch = self._build(i)
        if self.cache is not None and self.cache_preprocess is not None:
            batch = self.cache_preprocess(batch)
        if self.cache is not None:
            self._cache_batch(i, batch)
        return batch

    # -- building ------------------------------------------------------------------------------
    def _pads(self) -> bool:
        """True where xbatcher outer-joins patches: a DataArray whose input dims are indexed."""
        return (bool(self.concat_input_dims) and isinstance(self.ds, xr.DataArray)
                and any(d in self.ds.indexes for d in self.input_dims))

    def _build(self, i: int) -> XrObj:
        da = self.ds
        if not self._pads() or not isinstance(da, xr.DataArray):
            return self._engine[i]
        plan = self._engine.plan
        patches = plan.batches[i]
        if patches.size == 0:
            return self._engine[i]  # raises its IndexError for an empty batch
        box = plan.box(patches)
        block = da.isel(box)
        if self.preload_batch:
            block = block.load()
        rename = {d: f"{d}{_SUFFIX}" for d in self.input_dims}
        pieces: list[xr.DataArray] = []
        for p in patches:
            local = {d: slice(s.start - box[d].start, s.stop - box[d].start)
                     for d, s in plan.selector(int(p)).items()}
            pieces.append(block.isel(local).rename(rename))
        # xarray's historical concat defaults, which xbatcher 0.4 relies on, pinned so that a
        # later change of xarray's defaults does not change the batches
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            joined = xr.concat(pieces, dim="input_batch", data_vars="all", coords="different",
                               compat="equals", join="outer")
        return _stack_sample_dims(joined, list(rename.values()))

    # -- cache ---------------------------------------------------------------------------------
    def _batch_in_cache(self, idx: int) -> bool:
        return self.cache is not None and (
            f"{idx}/.zgroup" in self.cache or f"{idx}/zarr.json" in self.cache
        )

    def _cache_location(self, idx: int) -> tuple[Any, str | None]:
        """Where batch ``idx`` lives: a group of a dict cache, or the sub-path ``idx`` of an
        fsspec mapper (zarr 3 takes no group inside a mapper; a local one becomes a
        ``LocalStore``, which creates its folders)."""
        fsspec_mapping = sys.modules.get("fsspec.mapping")
        if fsspec_mapping is None or not isinstance(self.cache, fsspec_mapping.FSMap):
            return self.cache, str(idx)
        fs, path = self.cache.fs, f"{self.cache.root.rstrip('/')}/{idx}"
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        if {"file", "local"} & set(protocols):
            import zarr

            return zarr.storage.LocalStore(path), None
        return fs.get_mapper(path), None

    def _cache_batch(self, idx: int, batch: XrObj) -> None:
        store, group = self._cache_location(idx)
        _without_encoding(batch).to_zarr(store, group=group, mode="a", zarr_format=2)

    def _get_cached_batch(self, idx: int) -> xr.Dataset:
        store, group = self._cache_location(idx)
        ds = xr.open_zarr(store, group=group)
        return ds.load() if self.preload_batch else ds

    # -- fast arrays (used by the loaders) -----------------------------------------------------
    def _single_array(self, idx: int | np.integer) -> np.ndarray | None:
        """The values of batch ``idx`` when it holds one variable, read without building
        xarray objects; None where only the labeled batch gives xbatcher's result (a cache,
        concatenated patches, several variables)."""
        if self.cache is not None or self.concat_input_dims:
            return None
        if isinstance(self.ds, xr.Dataset) and len(self.ds.data_vars) != 1:
            return None
        arrays = self._engine.numpy_batch(self._position(idx))
        return next(iter(arrays.values())) if len(arrays) == 1 else None
