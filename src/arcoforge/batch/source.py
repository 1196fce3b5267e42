"""Read boxes of variables from an xarray Dataset as numpy, once, optionally cached.

:class:`ArraySource` is the only place that touches data. It knows the storage chunking, reads
a bounding box of each variable in one call (Zarr-backed data through the direct chunk reader of
:mod:`.zarr_direct`, the one adapter over zarr/xarray internals; other dask-backed data is
computed with dask's threaded scheduler), applies the user's preprocessing, and consults a
cache. It pickles cheaply: if built with ``opener`` only the opener travels to DataLoader
workers, and the dataset is reopened lazily there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, NotFoundError
from .caches import ArrayCache, cache_key, dataset_token
from .zarr_direct import COUNTERS, DirectAccess, direct_access, zarr_backing

__all__ = ["ArraySource", "as_dataset", "storage_chunks", "without_dask", "zarr_backing"]

Preprocess = Callable[[Hashable, np.ndarray], np.ndarray]


def as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    """A Dataset view of a DataArray (named ``__xarray_dataarray_variable__`` if unnamed)."""
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "__data__")
    return obj


def storage_chunks(ds: xr.Dataset, variables: Sequence[Hashable]) -> dict[Hashable, int]:
    """Chunk length per dim: dask chunks, else the on-disk (``preferred_chunks``) encoding."""
    out: dict[Hashable, int] = {}
    for name in variables:
        var = ds[name].variable
        chunks = var.chunks
        if chunks is not None:
            for d, c in zip(var.dims, chunks, strict=True):
                out[d] = max(out.get(d, 0), int(c[0]))
            continue
        pref = var.encoding.get("preferred_chunks") or {}
        enc = var.encoding.get("chunks") or var.encoding.get("chunksizes")
        for i, d in enumerate(var.dims):
            n = pref.get(d) or (enc[i] if enc is not None and i < len(enc) else None)
            if n:
                out[d] = max(out.get(d, 0), int(n))
    return out


def _lazy_backend(var: xr.Variable) -> xr.Variable | None:
    """``var`` (dask, as ``open_zarr`` builds it) over its lazily indexed backend array, or
    None when its dask graph is anything else (see :func:`.zarr_direct.zarr_backing`)."""
    from xarray.core import indexing

    layers = getattr(getattr(var._data, "dask", None), "layers", None)  # noqa: SLF001
    if layers is None or len(layers) != 2:
        return None
    originals = [lay for name, lay in layers.items() if str(name).startswith("original-")]
    if len(originals) != 1:
        return None
    values = list(dict(originals[0]).values())
    if len(values) != 1:
        return None
    data = values[0]
    if isinstance(data, indexing.ImplicitToExplicitIndexingAdapter):
        data = data.array
    if not isinstance(data, indexing.ExplicitlyIndexed):
        return None
    lazy = xr.Variable(var.dims, data, var.attrs, var.encoding, fastpath=True)
    if lazy.shape != var.shape or lazy.dtype != var.dtype or lazy.chunks is not None:
        return None
    return lazy


def without_dask(ds: xr.Dataset, variables: Sequence[Hashable]) -> xr.Dataset:
    """``ds`` with its dask variables (as ``open_zarr`` builds them) over their lazily indexed
    backend arrays: the same values and storage chunks, but unpickling it (in a DataLoader
    worker) needs no dask, which costs about half a second to import.

    ``ds`` itself is returned when it holds no dask variable, when one has any other graph
    (``isel``, arithmetic or rechunking after opening: dask then computes it) or when the dask
    chunks are not the storage chunks (a worker would see other chunks).
    """
    dask_vars = {k: v for k, v in ds.variables.items() if v.chunks is not None}
    if not dask_vars:
        return ds
    lazy = {}
    for name, var in dask_vars.items():
        new = _lazy_backend(var)
        if new is None:
            return ds
        lazy[name] = new
    out = ds.copy(deep=False)
    for name, new in lazy.items():
        if name in out.coords and name not in out.indexes:
            out = out.assign_coords({name: new})
        elif name in out.data_vars:
            out[name] = new
    if any(out.variables[k].chunks is not None for k in dask_vars):
        return ds
    if storage_chunks(out, variables) != storage_chunks(ds, variables):
        return ds
    return out


class ArraySource:
    """Reads bounding boxes of named variables of a dataset.

    Parameters
    ----------
    ds:
        The data (numpy, dask or lazily opened). Ignored when ``opener`` is given.
    variables:
        Variables to read (default: all data variables).
    opener:
        Picklable zero-argument callable that returns the dataset; used instead of pickling
        ``ds`` when the source travels to another process.
    cache, preprocess, preprocess_version:
        Optional block cache, an elementwise ``preprocess(name, array)`` applied to each read
        block, and the version string that names it in cache keys.
    dataset_id:
        Identity used in cache keys (default: :func:`dataset_token`).
    """

    def __init__(
        self,
        ds: xr.Dataset | xr.DataArray | None = None,
        variables: Sequence[Hashable] | None = None,
        *,
        opener: Callable[[], xr.Dataset | xr.DataArray] | None = None,
        cache: ArrayCache | None = None,
        preprocess: Preprocess | None = None,
        preprocess_version: str = "",
        dataset_id: str | None = None,
    ) -> None:
        if ds is None and opener is None:
            raise ConfigError("give a dataset or an opener")
        self.opener = opener
        self._ds = as_dataset(ds) if ds is not None else None
        self.variables = list(variables) if variables is not None else list(self.ds.data_vars)
        missing = [v for v in self.variables if v not in self.ds.variables]
        if missing:
            raise NotFoundError(f"variables {missing} not in dataset (have {list(self.ds.data_vars)})")
        self.cache = cache
        self.preprocess = preprocess
        self.preprocess_version = str(preprocess_version)
        self._token = dataset_id
        self.bytes_read = 0
        self._meta: dict[Hashable, tuple[tuple[Hashable, ...], str, Any]] | None = None
        self._access: dict[Hashable, DirectAccess] = {}

    # -- dataset, lazily reopened after unpickling ---------------------------------------------
    @property
    def ds(self) -> xr.Dataset:
        """The dataset (opened on first use in this process when built from an opener)."""
        if self._ds is None:
            assert self.opener is not None
            self._ds = as_dataset(self.opener())
        return self._ds

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_meta"] = None
        state["_access"] = {}
        if self.opener is not None:
            state["_ds"] = None
        elif self._ds is not None:
            if self.cache is not None and self._token is None:
                state["_token"] = self.token  # the same cache keys in every process
            state["_ds"] = without_dask(self._ds, self.variables)
        return state

    def _backend(self, name: Hashable) -> tuple[tuple[Hashable, ...], str, Any]:
        """(dims, kind, handle) of a variable; kind is "numpy", "zarr" or "xarray"."""
        if self._meta is None:
            meta: dict[Hashable, tuple[tuple[Hashable, ...], str, Any]] = {}
            self._access = {}
            for v in self.variables:
                var = self.ds[v].variable
                acc = direct_access(var)
                self._access[v] = acc
                if acc.kind == "numpy":
                    meta[v] = (tuple(var.dims), "numpy", var._data)
                elif acc.kind == "xarray":
                    meta[v] = (tuple(var.dims), "xarray", None)
                else:
                    meta[v] = (tuple(var.dims), "zarr", (acc.array, acc.reader))
            self._meta = meta
        return self._meta[name]

    def backend_kind(self, name: Hashable) -> str:
        """How ``name`` is read: ``"numpy"`` (view), ``"zarr"`` (zarr array) or ``"xarray"``."""
        return self._backend(name)[1]

    def access(self, name: Hashable) -> DirectAccess:
        """Whether and how ``name`` is read directly (:func:`~.zarr_direct.direct_access`)."""
        self._backend(name)
        return self._access[name]

    def in_memory(self) -> bool:
        """True when every variable is a numpy array read as a view (no cache, no preprocess)."""
        return (self.cache is None and self.preprocess is None
                and all(self.backend_kind(v) == "numpy" for v in self.variables))

    @property
    def token(self) -> str:
        """Dataset identity for cache keys."""
        if self._token is None:
            self._token = dataset_token(self.ds, self.variables)
        return self._token

    # -- metadata ------------------------------------------------------------------------------
    def dims_of(self, name: Hashable) -> tuple[Hashable, ...]:
        """Dimension names of one variable."""
        if self._meta is not None and name in self._meta:
            return self._meta[name][0]
        return tuple(self.ds[name].dims)

    def dtype_of(self, name: Hashable) -> np.dtype:
        """Dtype of one variable after preprocessing (probed on a 1-element read if needed)."""
        dt = self.ds[name].dtype
        if self.preprocess is None:
            return np.dtype(dt)
        probe = self.preprocess(name, np.zeros((1,) * self.ds[name].ndim, dtype=dt))
        return np.asarray(probe).dtype

    def all_dims(self) -> tuple[Hashable, ...]:
        """Union of the variables' dims, in order of first appearance."""
        out: list[Hashable] = []
        for v in self.variables:
            for d in self.dims_of(v):
                if d not in out:
                    out.append(d)
        return tuple(out)

    def sizes(self) -> dict[Hashable, int]:
        """Size of each dim."""
        return {d: int(self.ds.sizes[d]) for d in self.all_dims()}

    def chunks(self) -> dict[Hashable, int]:
        """Storage chunk length per dim."""
        return storage_chunks(self.ds, self.variables)

    # -- reading -------------------------------------------------------------------------------
    def read(self, name: Hashable, box: Mapping[Hashable, slice]) -> np.ndarray:
        """Values of ``name`` inside ``box`` (dims not in box are read whole), var dim order."""
        dims = self.dims_of(name)
        key_sel = tuple(box.get(d, slice(None)) for d in dims)
        key = None
        if self.cache is not None:
            norm = {d: (s.start, s.stop) for d, s in zip(dims, key_sel, strict=True)
                    if s != slice(None)}
            key = cache_key(self.token, name, norm, self.preprocess_version)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        arr = self._read_raw(name, key_sel)
        self.bytes_read += arr.nbytes
        if self.preprocess is not None:
            if self._may_be_users_memory(name, arr):
                # preprocess may work in place (``arr *= 2``): never hand it the dataset's own
                # memory, which it would change, compounding every epoch
                arr = arr.copy()
            arr = np.asarray(self.preprocess(name, arr))
        if self.cache is not None and key is not None:
            self.cache.put(key, arr)
        return arr

    def _may_be_users_memory(self, name: Hashable, arr: np.ndarray) -> bool:
        """Whether a block read of ``name`` may be a view of the dataset's own memory: always
        for numpy data (a view by design); for other in-memory (non-dask) data when the block
        does not own its bytes. Zarr reads and dask results are new arrays."""
        kind = self._backend(name)[1]
        if kind == "numpy":
            return True
        return (kind == "xarray" and arr.base is not None
                and self.ds[name].variable.chunks is None)

    def _read_raw(self, name: Hashable, key_sel: tuple[slice, ...],
                  out: np.ndarray | None = None) -> np.ndarray:
        """Stored values of a box, by the fastest route for the variable's backing."""
        _, kind, handle = self._backend(name)
        if kind == "numpy":
            arr = handle[key_sel]
        elif kind == "zarr":
            za, direct = handle
            if direct is not None:
                if out is None:
                    shape = [len(range(*k.indices(n))) for k, n in zip(key_sel, za.shape,
                                                                          strict=True)]
                    out = np.empty(shape, dtype=direct.dtype)
                direct.read_into(key_sel, out)
                return out
            COUNTERS.add(zarr_boxes=1)
            arr = np.asarray(za.get_basic_selection(key_sel))
        else:
            COUNTERS.add(xarray_boxes=1)
            arr = np.asarray(self.ds[name].variable[key_sel].values)
        if out is not None:
            np.copyto(out, arr)
            return out
        return arr

    def read_into(self, name: Hashable, box: Mapping[Hashable, slice], out: np.ndarray) -> None:
        """:meth:`read` written into ``out`` (zarr decodes straight into it when it can)."""
        if self.cache is not None or self.preprocess is not None:
            np.copyto(out, self.read(name, box))
            return
        key_sel = tuple(box.get(d, slice(None)) for d in self.dims_of(name))
        self._read_raw(name, key_sel, out)
        self.bytes_read += out.nbytes

    def read_many(self, box: Mapping[Hashable, slice]) -> dict[Hashable, np.ndarray]:
        """:meth:`read` for every variable; dask variables are computed together in one go."""
        ds = self.ds
        lazy = [v for v in self.variables
                if self.cache is None and self.preprocess is None
                and self._backend(v)[1] == "xarray" and ds[v].chunks is not None]
        out: dict[Hashable, np.ndarray] = {}
        if len(lazy) > 1:
            import dask

            keys = [tuple(box.get(d, slice(None)) for d in self.dims_of(v)) for v in lazy]
            vals = dask.compute(*[ds[v].variable[k].data for v, k in zip(lazy, keys, strict=True)])
            COUNTERS.add(xarray_boxes=len(lazy))
            for v, a in zip(lazy, vals, strict=True):
                out[v] = np.asarray(a)
                self.bytes_read += out[v].nbytes
        for v in self.variables:
            if v not in out:
                out[v] = self.read(v, box)
        return out
