"""Put per-patch predictions back onto the original, labeled grid (overlaps averaged).

``reassemble(predictions, generator)`` accepts

* a :class:`~arcoforge.batch.BatchGenerator` and one prediction per batch (a labeled
  ``DataArray`` shaped like ``generator[i][var]``, or a plain array/tensor of that shape), or
* a :class:`~arcoforge.batch.SampleStream` and per-sample predictions ``(n, *window)`` with the
  matching ``sample_ids`` (streams built with ``with_ids=True`` put them in every batch).

Each prediction element is added to a sum grid and a count grid; the result is sum / count
(NaN where no patch landed) as a ``DataArray`` with the original dims, coords and attributes.
It carries the name and attributes of the variable predicted (for a stream: ``variable=``, else
its only variable, or the one ``name`` names); ``name`` renames it.

``statistics`` undoes normalization (``x * std + mean``, per level where the statistics are):
pass the :class:`~arcoforge.batch.statistics.Statistics` the loader used, or ``True`` for those
of the normalizing ``SampleStream`` (``stream.statistics``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError

from .generator import BatchGenerator
from .statistics import Statistics
from .stream import SampleStream

__all__ = ["reassemble"]


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    elif hasattr(x, "numpy") and not isinstance(x, np.ndarray | xr.DataArray):  # tf tensor
        x = x.numpy()
    return np.asarray(x)


class _Accumulator:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        size = int(np.prod(shape))
        self.total = np.zeros(size, dtype=np.float64)
        self.count = np.zeros(size, dtype=np.float64)

    def add(self, flat_index: np.ndarray, values: np.ndarray) -> None:
        n = self.total.size
        flat_index = flat_index.ravel()
        self.total += np.bincount(flat_index, weights=values.ravel().astype(np.float64),
                                  minlength=n)
        self.count += np.bincount(flat_index, minlength=n)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.total / self.count).reshape(self.shape)


def reassemble(
    predictions: Iterable[Any] | np.ndarray,
    generator: BatchGenerator | SampleStream,
    *,
    variable: Hashable | None = None,
    sample_ids: Sequence[np.ndarray] | np.ndarray | None = None,
    name: Hashable | None = None,
    dtype: Any = None,
    statistics: Statistics | bool | None = None,
) -> xr.DataArray:
    """Average per-patch predictions back onto the original grid (see module docstring)."""
    if isinstance(generator, SampleStream):
        if statistics is None or statistics is False:
            return _from_stream(predictions, generator, sample_ids, name, dtype, variable)
        if statistics is True:
            if generator.statistics is None:
                raise ConfigError("statistics=True needs a stream built with normalize=...")
            statistics = generator.statistics
        if variable is None:
            if len(generator.source.variables) != 1 and name is None:
                raise ConfigError("name the variable whose statistics undo the normalization "
                                  f"(variable=...; the stream has {generator.source.variables})")
            variable = name if name is not None else generator.source.variables[0]
        out = _from_stream(predictions, generator, sample_ids, name, dtype, variable)
        return _denormalize(out, statistics, variable)
    if not isinstance(generator, BatchGenerator):
        raise ConfigError("generator must be a BatchGenerator or a SampleStream")
    if statistics is True:
        raise ConfigError("statistics=True needs a SampleStream; pass the Statistics object")
    da = generator._variable(variable)  # noqa: SLF001 - same package
    acc = _Accumulator(da.shape)
    strides = np.cumprod((1, *da.shape[::-1]))[:-1][::-1]
    n = 0
    for i, pred in enumerate(predictions):
        n += 1
        tpl = generator.template(i, da.name)
        if isinstance(pred, xr.DataArray):
            values = pred.transpose(*tpl.dims).values
        else:
            values = _as_numpy(pred)
        if values.shape != tpl.shape:
            raise ConfigError(f"prediction {i} has shape {values.shape}; batch {i} of the "
                             f"generator has shape {tpl.shape} (dims {tpl.dims})")
        flat = np.zeros(tpl.shape, dtype=np.int64)
        for d, stride in zip(da.dims, strides, strict=True):
            pos = tpl.coords[f"__pos_{d}"].broadcast_like(tpl).transpose(*tpl.dims).values
            flat += pos.astype(np.int64) * int(stride)
        acc.add(flat, values)
    if n != len(generator):
        raise ConfigError(f"got {n} predictions for {len(generator)} batches")
    grid = acc.mean()
    result = xr.DataArray(grid.astype(dtype or np.result_type(da.dtype, np.float32)),
                          dims=da.dims, coords=da.coords, attrs=da.attrs,
                          name=name if name is not None else da.name)
    if statistics:
        return _denormalize(result, statistics, da.name)  # type: ignore[arg-type]
    return result


def _denormalize(out: xr.DataArray, statistics: Statistics, variable: Hashable) -> xr.DataArray:
    """``out * std + mean`` with the statistics of ``variable``, keeping dtype and attrs."""
    back = statistics.denormalize(out, variable)
    assert isinstance(back, xr.DataArray)
    return back.astype(out.dtype)


def _from_stream(predictions: Any, stream: SampleStream, sample_ids: Any, name: Hashable | None,
                 dtype: Any, variable: Hashable | None = None) -> xr.DataArray:
    """Sum / count of per-sample predictions on the stream's grid, named and with the
    attributes of ``variable`` (default: the stream's only variable, or the one ``name``
    names); ``name`` renames the result."""
    if sample_ids is None:
        raise ConfigError("pass sample_ids (build the stream with with_ids=True)")
    if isinstance(predictions, np.ndarray) or hasattr(predictions, "detach"):
        preds = _as_numpy(predictions)
    else:
        preds = np.concatenate([_as_numpy(p) for p in predictions])
    ids = np.asarray(sample_ids if isinstance(sample_ids, np.ndarray)
                     else np.concatenate([np.asarray(s) for s in sample_ids]))
    grid = stream.grid
    if ids.size and ids.dtype.kind not in "iu":
        raise ConfigError(f"sample ids must be integers (the stream's sample_id); got dtype "
                          f"{ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    bad = (ids < 0) | (ids >= grid.n_samples)
    if bad.any():
        raise ConfigError(f"sample ids outside the stream's samples "
                          f"0..{grid.n_samples - 1} ({int(bad.sum())} of {ids.size}): "
                          f"{ids[bad][:8].tolist()}; pass the "
                          "sample_id of the batches of this stream")
    if preds.shape[0] != ids.size:
        raise ConfigError(f"{preds.shape[0]} predictions for {ids.size} sample ids")
    windows = [stream.input_dims[d] for d in stream.out_order]
    if tuple(preds.shape[1:]) != tuple(windows):
        raise ConfigError(f"predictions must be (n, {', '.join(map(str, windows))}) in dim order "
                         f"{stream.out_order}; got {preds.shape}")
    shape = grid.sizes
    strides = np.cumprod((1, *shape[::-1]))[:-1][::-1]
    starts = grid.sample_starts(ids)
    flat = np.zeros((ids.size, *windows), dtype=np.int64)
    nd = len(windows)
    for i, d in enumerate(grid.dims):
        off = starts[:, i].reshape((-1,) + (1,) * nd)
        if d in stream.input_dims:
            k = stream.out_order.index(d)
            ar = np.arange(stream.input_dims[d]).reshape(
                (1,) + tuple(-1 if j == k else 1 for j in range(nd)))
            off = off + ar
        flat += off * int(strides[i])
    acc = _Accumulator(shape)
    acc.add(flat, preds)
    ds = stream.source.ds
    coords = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(grid.dims)}
    variables = list(stream.source.variables)
    if variable is None:
        variable = (variables[0] if len(variables) == 1 else
                    name if name is not None and name in variables else None)
    attrs = dict(ds[variable].attrs) if variable is not None and variable in ds.variables \
        else {}
    return xr.DataArray(acc.mean().astype(dtype or np.result_type(preds.dtype, np.float32)),
                        dims=grid.dims, coords=coords, attrs=attrs,
                        name=name if name is not None else variable)
