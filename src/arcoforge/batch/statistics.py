"""Normalization statistics: count, mean, std, min and max per variable (and per level).

:func:`compute_statistics` makes one streaming pass over a dataset, a storage-chunk-aligned
block of the outermost dim at a time (so a lazily opened Zarr/Icechunk store is read once and
never held in memory whole). Each block gives, per kept index (e.g. per level), its count of
non-NaN values, mean, sum of squared deviations, min and max in float64; blocks are merged with
the parallel update of Chan, Golub & LeVeque (numerically stable, unlike sum / sum of squares).
``std`` is the population standard deviation (``ddof=0``, as ``numpy.nanstd``); NaN values are
not counted; a level with no valid value has count 0 and NaN statistics.

The result, :class:`Statistics`, converts to and from a JSON-able dict (NaN as ``null``).
:func:`store_statistics` writes it into the root attributes of a built Zarr store or Icechunk
repository under :data:`arcoforge.provenance.STATISTICS`; :func:`build_statistics` is the build
step (open the built store, compute, store); :func:`load_statistics` reads them back from an
opened dataset. The loaders normalize with it (``normalize=True``: ``(x - mean) / std``,
a zero or undefined std counting as 1) and :func:`~arcoforge.batch.reassemble` undoes it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError
from arcoforge.provenance import STATISTICS
from arcoforge.quiet import expected_warnings

__all__ = [
    "LEVEL_DIMS",
    "Statistics",
    "VariableStatistics",
    "build_statistics",
    "compute_statistics",
    "load_statistics",
    "store_statistics",
]

#: dims that hold vertical levels: statistics are kept per index of these by default
LEVEL_DIMS = ("level", "lev", "plev", "zlev", "isobaricInhPa", "depth", "height")
_FORMAT = 1
_FIELDS = ("count", "mean", "std", "minimum", "maximum")


@dataclass(frozen=True)
class VariableStatistics:
    """Statistics of one variable, one value per index of ``dims`` (scalars if ``dims`` is
    empty): ``count`` (int64, non-NaN values), ``mean``, ``std``, ``minimum``, ``maximum``."""

    dims: tuple[str, ...]
    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    #: per dim of :attr:`dims`, the coordinate values the statistics were computed at (when
    #: the data had a 1-D coordinate for it); used to match levels after a subset or reorder
    coords: Mapping[str, tuple[Any, ...]] | None = field(default=None, compare=False)

    def scale(self) -> np.ndarray:
        """The divisor used to normalize: ``std``, or 1 where it is 0 or undefined."""
        std = np.asarray(self.std, dtype=np.float64)
        return np.where(np.isfinite(std) & (std > 0), std, 1.0)

    def offset(self) -> np.ndarray:
        """The value subtracted to normalize: ``mean``, or 0 where it is undefined."""
        mean = np.asarray(self.mean, dtype=np.float64)
        return np.where(np.isfinite(mean), mean, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN as ``None``)."""
        out: dict[str, Any] = {"dims": list(self.dims),
                               "shape": list(np.shape(self.count))}
        for f in _FIELDS:
            a = np.asarray(getattr(self, f))
            out[f] = (a.astype(np.int64).ravel().tolist() if f == "count" else
                      [None if not math.isfinite(x) else float(x) for x in a.ravel().tolist()])
        if self.coords:
            out["coords"] = {str(d): list(v) for d, v in self.coords.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VariableStatistics:
        """Inverse of :meth:`to_dict`."""
        shape = tuple(int(n) for n in d["shape"])
        arrays: dict[str, np.ndarray] = {}
        for f in _FIELDS:
            if f == "count":
                arrays[f] = np.asarray(d[f], dtype=np.int64).reshape(shape)
            else:
                arrays[f] = np.asarray([np.nan if x is None else x for x in d[f]],
                                       dtype=np.float64).reshape(shape)
        coords = d.get("coords")
        return cls(tuple(str(x) for x in d["dims"]), **arrays,
                   coords={str(k): tuple(v) for k, v in coords.items()} if coords else None)

    def aligned_to(self, obj: xr.Dataset | xr.DataArray,
                   name: Hashable = "") -> VariableStatistics:
        """These statistics for the levels ``obj`` has, in its order.

        Per dim of :attr:`dims` that ``obj`` has: when ``obj`` has a 1-D coordinate for it and
        the statistics recorded their coordinate values (:attr:`coords`), the statistics are
        selected by value (so ``isel``/``sel`` subsets and reorders of the levels work);
        otherwise they apply by position and the sizes must match. A dim ``obj`` lacks is left
        as it is. Raises :class:`~arcoforge.errors.ConfigError` naming the variable, the dim
        and the sizes or values when they cannot be matched.
        """
        if not self.dims:
            return self
        picks: list[tuple[int, np.ndarray]] = []
        coords = dict(self.coords or {})
        for axis, d in enumerate(self.dims):
            if d not in obj.dims:
                continue
            n, size = int(np.shape(self.count)[axis]), int(obj.sizes[d])
            stored = coords.get(d)
            coord = obj.coords[d] if d in obj.coords and obj.coords[d].ndim == 1 else None
            if coord is not None and stored is not None:
                pos = _positions(stored, coord.values, d, name)
                if not (pos.size == n and bool((pos == np.arange(n)).all())):
                    picks.append((axis, pos))
                    coords[d] = tuple(stored[int(i)] for i in pos)
            elif size != n:
                why = (f"the data has no coordinate for {d!r}" if coord is None else
                       f"the statistics record no {d!r} values (stored by an older arcoforge)")
                raise ConfigError(
                    f"statistics of {name!r} have {n} values along {d!r} but the data has "
                    f"{size}, and {why}, so they cannot be matched level by level; give "
                    f"{d!r} a coordinate, or recompute them for this data "
                    "(compute_statistics, or ds.arcoforge.statistics(recompute=True))")
        if not picks:
            return self
        arrays = {f: np.asarray(getattr(self, f)) for f in _FIELDS}
        for axis, pos in picks:
            arrays = {f: np.take(a, pos, axis=axis) for f, a in arrays.items()}
        return VariableStatistics(self.dims, **arrays, coords=coords or None)

    def broadcast(self) -> tuple[xr.DataArray, xr.DataArray]:
        """``(offset, scale)`` as DataArrays over :attr:`dims`."""
        return (xr.DataArray(self.offset(), dims=self.dims),
                xr.DataArray(self.scale(), dims=self.dims))


def _coord_values(values: Any) -> tuple[Any, ...] | None:
    """JSON-able coordinate values (numbers, strings), or None for other kinds (dates)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        return None
    if arr.dtype.kind in "iub":
        return tuple(int(x) for x in arr.tolist())
    if arr.dtype.kind == "f":
        return tuple(float(x) for x in arr.tolist())
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O"
                                  and all(isinstance(x, str) for x in arr.tolist())):
        return tuple(str(x) for x in arr.tolist())
    return None


def _positions(stored: Sequence[Any], wanted: Any, dim: Hashable,
               name: Hashable) -> np.ndarray:
    """Index into ``stored`` of every value of ``wanted``, or a ConfigError naming them."""
    want = _coord_values(wanted)
    if want is None:
        raise ConfigError(f"statistics of {name!r} are per {dim!r}, whose coordinate values "
                          f"(dtype {np.asarray(wanted).dtype}) cannot be matched to the "
                          f"statistics' {dim!r} values {_short(stored)}")
    where: dict[Any, int] = {}
    for i, v in enumerate(stored):
        where.setdefault(_match_key(v), i)
    missing = [v for v in want if _match_key(v) not in where]
    if missing:
        raise ConfigError(f"statistics of {name!r} have no values for {dim!r} = "
                          f"{_short(missing)} (they cover {dim!r} = {_short(stored)}); "
                          "recompute them for this data (compute_statistics, or "
                          "ds.arcoforge.statistics(recompute=True))")
    return np.array([where[_match_key(v)] for v in want], dtype=np.int64)


def _match_key(value: Any) -> Any:
    """Numbers compare as float64 (1 == 1.0; float32 levels match their stored float64)."""
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    return str(value)


def _short(values: Sequence[Any], limit: int = 12) -> str:
    values = list(values)
    text = ", ".join(repr(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}] ({len(values)} values)"


@dataclass(frozen=True)
class Statistics:
    """Normalization statistics of several variables (see module docstring)."""

    variables: Mapping[str, VariableStatistics]

    def __getitem__(self, name: Hashable) -> VariableStatistics:
        try:
            return self.variables[str(name)]
        except KeyError:
            raise ConfigError(f"no statistics for variable {name!r} (have "
                              f"{sorted(self.variables)}); compute them with "
                              "arcoforge.batch.statistics.compute_statistics") from None

    def __contains__(self, name: object) -> bool:
        return str(name) in self.variables

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in the dataset's attributes."""
        return {"format": _FORMAT,
                "variables": {k: v.to_dict() for k, v in self.variables.items()}}

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str) -> Statistics:
        """Inverse of :meth:`to_dict` (a JSON string is accepted too)."""
        if isinstance(d, str):
            d = json.loads(d)
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            raise ConfigError(f"{STATISTICS!r} does not hold arcoforge statistics of format "
                              f"{_FORMAT}: {str(d)[:80]!r}")
        return cls({str(k): VariableStatistics.from_dict(v)
                    for k, v in d["variables"].items()})

    def aligned_to(self, obj: xr.Dataset | xr.DataArray,
                   variables: Sequence[Hashable] | None = None) -> Statistics:
        """The statistics of the variables of ``obj`` selected for the levels it has
        (:meth:`VariableStatistics.aligned_to`): of ``variables`` only when given (so a
        variable not asked for, whose levels may not match, does not stand in the way), else
        of every data variable; the others, and variables ``obj`` lacks, are kept as they are.
        A DataArray is matched to the statistics of its name."""
        out = dict(self.variables)
        if isinstance(obj, xr.DataArray):
            if obj.name is not None and str(obj.name) in out and (
                    variables is None or str(obj.name) in {str(v) for v in variables}):
                out[str(obj.name)] = out[str(obj.name)].aligned_to(obj, obj.name)
        else:
            names = list(obj.data_vars) if variables is None else list(variables)
            for name in names:
                if str(name) in out and name in obj.variables:
                    out[str(name)] = out[str(name)].aligned_to(obj[name], name)
        return Statistics(out)

    def normalize(self, obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
        """``(x - mean) / std`` of every variable that has statistics (others unchanged)."""
        return self._apply(obj, forward=True)

    def denormalize(self, obj: xr.Dataset | xr.DataArray,
                    variable: Hashable | None = None) -> xr.Dataset | xr.DataArray:
        """Undo :meth:`normalize` (``variable`` names the statistics of a DataArray)."""
        return self._apply(obj, forward=False, variable=variable)

    def _apply(self, obj: Any, forward: bool, variable: Hashable | None = None) -> Any:
        if isinstance(obj, xr.DataArray):
            name = variable if variable is not None else obj.name
            st = self[name].aligned_to(obj, name)
            off, sc = st.broadcast()
            missing = [d for d in st.dims if d not in obj.dims]
            if missing:
                raise ConfigError(f"statistics of {name!r} are per {missing}, which "
                                  f"{obj.dims} lacks")
            out = (obj - off) / sc if forward else obj * sc + off
            return out.assign_attrs(obj.attrs).rename(obj.name)
        out = obj.copy()
        for name in obj.data_vars:
            if str(name) in self.variables:
                out[name] = self._apply(obj[name], forward)
        return out


def _block_starts(da: xr.DataArray, dim: Hashable, block_bytes: int) -> list[int]:
    """Block boundaries along ``dim``: whole storage chunks, about ``block_bytes`` each."""
    size = da.sizes[dim]
    axis = da.dims.index(dim)
    step = 1
    if da.chunks is not None:
        step = int(da.chunks[axis][0])
    else:
        enc = da.encoding.get("preferred_chunks", {}).get(dim) or \
            (da.encoding.get("chunks") or [None] * da.ndim)[axis]
        if enc:
            step = int(enc)
    row = max(1, da.size // max(size, 1)) * max(da.dtype.itemsize, 8)
    mult = max(1, block_bytes // max(row * step, 1))
    stride = step * mult
    return list(range(0, size, stride)) + [size]


class _Accumulator:
    """Per-index count, mean, M2 (sum of squared deviations), min, max in float64."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n = np.zeros(shape, dtype=np.int64)
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)
        self.lo = np.full(shape, np.inf)
        self.hi = np.full(shape, -np.inf)

    def add(self, x: np.ndarray) -> None:
        """Merge a block ``x`` of shape ``(*shape, m)`` (Chan et al.'s parallel update)."""
        valid = ~np.isnan(x)
        nb = valid.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = np.where(nb > 0, np.nansum(x, axis=-1) / np.maximum(nb, 1), 0.0)
            dev = np.where(valid, x - mb[..., None], 0.0)
        m2b = np.einsum("...i,...i->...", dev, dev)
        na = self.n
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - self.mean
            frac = np.where(n > 0, nb / np.maximum(n, 1), 0.0)
            self.mean = self.mean + delta * frac
            self.m2 = self.m2 + m2b + delta * delta * na * frac
        self.n = n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            self.lo = np.fmin(self.lo, np.nanmin(x, axis=-1, initial=np.inf))
            self.hi = np.fmax(self.hi, np.nanmax(x, axis=-1, initial=-np.inf))

    def result(self, dims: tuple[str, ...]) -> VariableStatistics:
        empty = self.n == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2 / self.n)
        nan = np.float64(np.nan)
        return VariableStatistics(dims, self.n.copy(), np.where(empty, nan, self.mean),
                                  np.where(empty, nan, std), np.where(empty, nan, self.lo),
                                  np.where(empty, nan, self.hi))


def _blocks(da: xr.DataArray, per: tuple[Hashable, ...],
            block_bytes: int) -> Iterator[np.ndarray]:
    """Blocks of ``da`` as float64 arrays ``(*per sizes, values)``."""
    other = [d for d in da.dims if d not in per]
    order = (*per, *other)
    if not other:
        yield np.asarray(da.transpose(*order).values, dtype=np.float64)[..., None]
        return
    outer = other[0]
    bounds = _block_starts(da, outer, block_bytes)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        block = np.asarray(da.isel({outer: slice(a, b)}).transpose(*order).values)
        if block.dtype.kind not in "fiub":
            raise ConfigError(f"variable {da.name!r} has dtype {block.dtype}; statistics "
                              "need numbers")
        x = block.astype(np.float64, copy=False)
        yield x.reshape(*x.shape[:len(per)], -1)


def compute_statistics(
    ds: xr.Dataset | xr.DataArray,
    variables: Sequence[Hashable] | None = None,
    *,
    per: Sequence[Hashable] = LEVEL_DIMS,
    block_bytes: int = 64 * 2**20,
) -> Statistics:
    """Count, mean, std, min and max of each variable in one streaming pass.

    ``variables`` default to all numeric data variables. ``per`` lists the dims whose every
    index gets its own statistics (default: the level dims :data:`LEVEL_DIMS`); statistics
    reduce over all other dims. Blocks of whole storage chunks along the outermost reduced dim
    (about ``block_bytes`` of float64) are read one at a time.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name if ds.name is not None else "data")
    if variables is None:
        names = [v for v in ds.data_vars if ds[v].dtype.kind in "fiub" and ds[v].ndim > 0]
    else:
        names = list(variables)
        missing = [v for v in names if v not in ds.data_vars]
        if missing:
            raise ConfigError(f"variables {missing} not in the dataset (have "
                              f"{list(ds.data_vars)})")
    out = {}
    for name in names:
        da = ds[name]
        keep = tuple(d for d in per if d in da.dims)
        acc = _Accumulator(tuple(da.sizes[d] for d in keep))
        for x in _blocks(da, keep, block_bytes):
            acc.add(x)
        result = acc.result(tuple(str(d) for d in keep))
        found = {str(d): _coord_values(da[d].values) for d in keep
                 if d in da.coords and da[d].ndim == 1}
        levels = {d: v for d, v in found.items() if v is not None}
        if levels:
            result = replace(result, coords=levels)
        out[str(name)] = result
    return Statistics(out)


def load_statistics(ds: xr.Dataset | xr.DataArray | Mapping[str, Any],
                    variables: Sequence[Hashable] | None = None) -> Statistics | None:
    """Statistics stored with a dataset (its attributes, or an attribute mapping), or None.

    From a Dataset or DataArray they come selected for the levels it has
    (:meth:`Statistics.aligned_to`): a subset or reorder of the levels of the store they were
    computed on (``ds.isel(lev=slice(2, 4))``, whose attributes still hold the statistics of
    every level) gets the statistics of its own levels, matched by coordinate value; a
    :class:`~arcoforge.errors.ConfigError` says which dim and values cannot be matched.
    Given ``variables``, only those are aligned (and can fail); the statistics of the
    others are returned as stored, and :meth:`Statistics.normalize` aligns each variable
    it works on anyway.
    """
    attrs = ds.attrs if isinstance(ds, xr.Dataset | xr.DataArray) else ds
    raw = attrs.get(STATISTICS)
    if raw is None:
        return None
    stats = Statistics.from_dict(raw)
    if isinstance(ds, xr.Dataset | xr.DataArray):
        return stats.aligned_to(ds, variables)
    return stats


def store_statistics(target: Any, stats: Statistics, *,
                     storage_options: Mapping[str, Any] | None = None,
                     message: str = "arcoforge: normalization statistics") -> None:
    """Write ``stats`` into the root attributes of a built store, under
    :data:`~arcoforge.provenance.STATISTICS`.

    ``target`` is what a build wrote to: a Zarr path/URL (attributes updated in place, metadata
    re-consolidated), an ``icechunk://`` URL or an ``icechunk.Repository`` (one commit on the
    target's branch with ``message``).
    """
    import zarr

    from arcoforge.errors import TargetError
    from arcoforge.forge.targets.base import resolve_target

    resolved: Any = resolve_target(target, storage_options)
    if not resolved.exists():
        raise TargetError(f"{resolved.url}: no built store to add statistics to")
    value = stats.to_dict()
    if resolved.transactional:
        session = resolved.repo.writable_session(resolved.branch)
        group = zarr.open_group(session.store, mode="r+")
        group.attrs.update({STATISTICS: value})
        session.commit(message)
        return
    opts = dict(resolved.storage_options) or None
    group = zarr.open_group(resolved.url, mode="r+", storage_options=opts, zarr_format=3,
                            use_consolidated=False)
    group.attrs.update({STATISTICS: value})
    with expected_warnings():  # consolidated metadata, written on purpose
        zarr.consolidate_metadata(group.store, zarr_format=3)


def build_statistics(target: Any, variables: Sequence[Hashable] | None = None, *,
                     per: Sequence[Hashable] = LEVEL_DIMS,
                     storage_options: Mapping[str, Any] | None = None) -> Statistics:
    """The build step: open the store built at ``target`` (CF-decoded, lazily), compute its
    statistics in one streaming pass and store them with it; returns them."""
    from arcoforge.open import open_dataset

    ds = open_dataset(target, storage_options=storage_options)
    stats = compute_statistics(ds, variables, per=per)
    store_statistics(target, stats, storage_options=storage_options)
    return stats
