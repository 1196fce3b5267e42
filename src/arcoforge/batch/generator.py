"""``BatchGenerator``: xbatcher's API and batches, each storage chunk read once per batch.

Labeled batches (``gen[i]``) are identical to xbatcher 0.4's (dims, coords, order, values,
``len``). Patch arithmetic is pure numpy (:class:`~arcoforge.batch.indexing.BatchPlan`); a
batch's bounding box is selected and loaded once and its patches are cut from that in-memory
block. Beyond xbatcher: ``partial_last_batch``, ``dim_order``, numpy integer indices,
:meth:`BatchGenerator.numpy_batch` (arrays without building xarray objects) and
:meth:`BatchGenerator.stream` (the shuffled, prefetched, shardable fast path).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .indexing import BatchPlan
from .source import ArraySource

__all__ = ["BatchGenerator"]

XrObj = xr.Dataset | xr.DataArray
SUFFIX = "_input"


def _to_input_dims(obj: XrObj, input_dims: Sequence[Hashable]) -> XrObj:
    """Rename each input dim ``d`` to ``d_input``, keeping its coordinate as a plain coord."""
    for d in input_dims:
        new = f"{d}{SUFFIX}"
        if d in obj.coords and obj.coords[d].dims == (d,):
            coord = obj.coords[d]
            obj = obj.drop_vars(d)
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
        Load each batch into memory before reshaping.
    partial_last_batch:
        Keep a final, shorter batch along ``batch_dims`` that do not divide the dim length.
    dim_order:
        Transpose each labeled batch to this dim order (dims a batch lacks are ignored).
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
    ) -> None:
        self.ds = ds
        self.input_dims = dict(input_dims)
        self.input_overlap = dict(input_overlap or {})
        self.batch_dims = dict(batch_dims or {})
        self.concat_input_dims = bool(concat_input_dims)
        self.preload_batch = bool(preload_batch)
        self.partial_last_batch = partial_last_batch
        self.dim_order = tuple(dim_order) if dim_order is not None else None
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

    # -- sequence protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[XrObj]:
        for i in range(len(self)):
            yield self[i]

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
        return self._labeled(self.ds, self._index(idx), self.preload_batch)

    # -- labeled batches -----------------------------------------------------------------------
    def _labeled(self, data: XrObj, i: int, preload: bool) -> XrObj:
        patches = self.plan.batches[i]
        if patches.size == 0:
            raise IndexError(f"batch {i} contains no patch (as in xbatcher, it cannot be built)")
        if not self.concat_input_dims:
            batch = data.isel(self.plan.selector(int(patches[0])))
            if preload:
                batch = batch.load()
            out = _stack_samples(batch, list(self.input_dims))
        else:
            box = self.plan.box(patches)
            block = data.isel(box)
            if preload:
                block = block.load()
            offset = {d: box[d].start for d in box}
            pieces = []
            for p in patches:
                sel = {d: slice(s.start - offset[d], s.stop - offset[d])
                       for d, s in self.plan.selector(int(p)).items()}
                pieces.append(_to_input_dims(block.isel(sel), list(self.input_dims)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                joined = xr.concat(pieces, dim="input_batch")
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
        return self._labeled(dummy, i, preload=False)

    def _variable(self, variable: Hashable | None) -> xr.DataArray:
        if isinstance(self.ds, xr.DataArray):
            return self.ds
        if variable is None:
            if len(self.ds.data_vars) != 1:
                raise ValueError("name the variable (the dataset has several)")
            variable = next(iter(self.ds.data_vars))
        return self.ds[variable]

    # -- fast arrays ---------------------------------------------------------------------------
    def numpy_batch(self, idx: int | np.integer) -> dict[str, np.ndarray]:
        """``{var: gen[idx][var].values}`` computed without building xarray objects.

        Implemented directly for ``concat_input_dims=False`` (reads the batch box once); with
        concatenation the labeled batch is built and its values returned.
        """
        i = self._index(idx)
        if self.concat_input_dims or self.dim_order is not None:
            b = self[i]
            if isinstance(b, xr.DataArray):
                return {str(b.name): b.values}
            return {str(k): v.values for k, v in b.data_vars.items()}
        sel = self.plan.selector(int(self.plan.batches[i][0]))
        src = ArraySource(self.ds)
        sizes = {d: (sel[d].stop - sel[d].start) if d in sel else n
                 for d, n in src.ds.sizes.items()}
        stack = [d for d in self.ds.sizes if d not in self.input_dims]
        out = {}
        for v in src.variables:
            arr = src.read(v, sel)
            dims = list(src.dims_of(v))
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
