"""Resampling engines: pyresample's kernels with their neighbour information precomputed once.

Each engine is built for one (geolocation, area, parameters) combination, holds what
pyresample computed about the geometry, and applies it to any number of 2-D (or 1-D for
nadir tracks) arrays.  Nothing here re-implements a kernel: numpy arrays go through
pyresample's numpy API (``kd_tree.get_neighbour_info``/``get_sample_from_neighbour_info``,
``NumpyBilinearResampler``, ``ewa.ll2cr``/``ewa.fornav``), dask arrays through its dask
resamplers (``XArrayResamplerNN``, ``XArrayBilinearResampler``, ``DaskEWAResampler``, and
``BucketResampler`` for both), which build graphs over output chunks (nearest, bilinear) or
over input chunks (EWA, bucket).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._deps import require

__all__ = ["METHODS", "TWO_D_ONLY", "SplitEngine", "build_engine", "default_radius"]

METHODS = ("nearest", "bilinear", "ewa", "bucket_avg", "bucket_count")
TWO_D_ONLY = ("bilinear", "ewa")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the warnings pyresample's internals raise on every call (a CRS turned into a PROJ
    string; 0/0 in bilinear's fractional distances, which it then masks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You will likely lose important projection",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered",
                                category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="divide by zero encountered",
                                category=RuntimeWarning)
        yield


def _pr(name: str) -> Any:
    return require(f"pyresample.{name}", "regridding")


def default_radius(lons: np.ndarray, lats: np.ndarray, area: Any) -> float:
    """pyresample's own default radius of influence (metres): the coarser of the source's and
    the target's geocentric resolution."""
    geometry = _pr("geometry")
    res = []
    for geo in (geometry.SwathDefinition(lons, lats), area):
        try:
            res.append(float(geo.geocentric_resolution()))
        except (RuntimeError, ValueError):
            res.append(np.nan)
    value = float(np.nanmax(res)) if not np.all(np.isnan(res)) else 10_000.0
    return value


def _dask_geo(lons: np.ndarray, lats: np.ndarray, chunks: Any) -> tuple[Any, Any]:
    import dask.array as da
    import xarray as xr

    dims = ("y", "x")[-lons.ndim:]
    lx = xr.DataArray(da.from_array(lons, chunks=chunks), dims=dims)
    ly = xr.DataArray(da.from_array(lats, chunks=chunks), dims=dims)
    return lx, ly


def _materialise(arr: Any) -> Any:
    """A dask array whose chunks are already in memory (computed once, reused per variable)."""
    import dask.array as da

    if isinstance(arr, da.Array):
        return da.from_array(np.asarray(arr.compute()), chunks=arr.chunks)
    return arr


def _nbytes_of(*arrays: Any) -> int:
    total = 0
    for a in arrays:
        if isinstance(a, np.ndarray):
            total += a.nbytes
        elif hasattr(a, "nbytes") and hasattr(a, "dask"):
            total += int(a.nbytes)
    return total


class Engine:
    """One geometry's precomputed resampling; ``apply`` maps a source array to the grid."""

    method: str
    backend: str
    nbytes: int = 0
    has_counts = False

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, params: dict[str, Any],
                 backend: str) -> None:
        self.area = area
        self.shape = tuple(area.shape)
        self.params = params
        self.backend = backend
        self.geo_valid = np.isfinite(lons) & np.isfinite(lats)
        self._coverage: Any = None

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def coverage(self) -> Any:
        """Boolean (y, x): cells that received at least one valid source pixel."""
        if self._coverage is None:
            ones = np.where(self.geo_valid, 1.0, np.nan)
            if self.backend == "dask":
                import dask.array as da

                ones = da.from_array(ones, chunks=self.params.get("chunks", "auto"))
            out = self.apply(ones)
            cov = np.isfinite(out) if self.backend == "numpy" else out.map_blocks(
                np.isfinite, dtype=bool)
            self._coverage = _materialise(cov) if self.backend == "dask" else cov
        return self._coverage

    def counts(self) -> Any:
        """Source pixels per cell (only engines with ``has_counts``)."""
        raise NotImplementedError(f"{self.method} has no per-cell counts")


class NearestEngine(Engine):
    """Nearest neighbour (``pyresample.kd_tree``)."""

    method = "nearest"

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, params: dict[str, Any],
                 backend: str) -> None:
        super().__init__(lons, lats, area, params, backend)
        kd_tree, geometry = _pr("kd_tree"), _pr("geometry")
        radius, eps = params["radius_of_influence"], params.get("epsilon", 0)
        if backend == "numpy":
            swath = geometry.SwathDefinition(lons, lats)
            self.vii, self.voi, self.ia, _ = kd_tree.get_neighbour_info(
                swath, area, radius, neighbours=1, epsilon=eps)
            self.nbytes = _nbytes_of(self.vii, self.voi, self.ia)
        else:
            lx, ly = _dask_geo(lons, lats, params.get("chunks", "auto"))
            self.dims = lx.dims
            r = kd_tree.XArrayResamplerNN(geometry.SwathDefinition(lx, ly), area, radius,
                                          neighbours=1, epsilon=eps)
            r.get_neighbour_info()
            r.valid_input_index = _materialise(r.valid_input_index)
            r.index_array = _materialise(r.index_array)
            r.delayed_kdtree = None
            self.resampler = r
            self.nbytes = _nbytes_of(r.valid_input_index, r.index_array)

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:
        if self.backend == "numpy":
            kd_tree = _pr("kd_tree")
            return kd_tree.get_sample_from_neighbour_info(
                "nn", self.shape, np.asarray(data), self.vii, self.voi, self.ia,
                fill_value=fill_value)
        import xarray as xr

        out = self.resampler.get_sample_from_neighbour_info(
            xr.DataArray(data, dims=self.dims), fill_value=fill_value)
        return out.data


class BilinearEngine(Engine):
    """Bilinear interpolation (``pyresample.bilinear``)."""

    method = "bilinear"

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, params: dict[str, Any],
                 backend: str) -> None:
        super().__init__(lons, lats, area, params, backend)
        bilinear, geometry = _pr("bilinear"), _pr("geometry")
        kwargs = dict(radius_of_influence=params["radius_of_influence"],
                      neighbours=params.get("neighbours", 32), epsilon=params.get("epsilon", 0))
        with _quiet():
            if backend == "numpy":
                self.resampler = bilinear.NumpyBilinearResampler(
                    geometry.SwathDefinition(lons, lats), area, **kwargs)
            else:
                lx, ly = _dask_geo(lons, lats, params.get("chunks", "auto"))
                self.resampler = bilinear.XArrayBilinearResampler(
                    geometry.SwathDefinition(lx, ly), area, **kwargs)
            self.resampler.get_bil_info()
        self.resampler._resample_kdtree = None  # the tree is not needed once the info exists
        if backend == "dask":
            _lazy_limits(self.resampler)
        self.nbytes = _nbytes_of(*vars(self.resampler).values())

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:
        with _quiet():
            if self.backend == "numpy":
                return self.resampler.get_sample_from_bil_info(np.asarray(data),
                                                               fill_value=fill_value)
            import xarray as xr

            out = self.resampler.get_sample_from_bil_info(xr.DataArray(data, dims=("y", "x")),
                                                          fill_value=fill_value)
        return out.data


def _lazy_limits(resampler: Any) -> None:
    """Keep ``XArrayBilinearResampler`` lazy: its ``_limit_output_values_to_input`` takes
    ``da.nanmin``/``da.nanmax`` of the input DataArray, which converts it to numpy (computing
    the whole input while the graph is built).  Give it the dask array inside instead."""
    limit = getattr(resampler, "_limit_output_values_to_input", None)
    if limit is None:
        return

    def lazy_limit(data: Any, res: Any, fill_value: Any) -> Any:
        return limit(getattr(data, "data", data), res, fill_value)

    resampler._limit_output_values_to_input = lazy_limit


_EWA_WEIGHTS = ("weight_count", "weight_min", "weight_distance_max", "weight_delta_max",
                "weight_sum_min", "maximum_weight_mode")


class EWAEngine(Engine):
    """Elliptical weighted averaging (``pyresample.ewa``); rows are grouped by
    ``rows_per_scan`` (0: the whole swath is one scan)."""

    method = "ewa"

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, params: dict[str, Any],
                 backend: str) -> None:
        super().__init__(lons, lats, area, params, backend)
        from .areas import recentre_longitudes

        ewa, geometry = _pr("ewa"), _pr("geometry")
        lons = recentre_longitudes(lons, area)  # ll2cr maps longitude to column linearly
        rps = int(params.get("rows_per_scan") or 0)
        self.rows_per_scan = rps if rps > 0 else lons.shape[0]
        self.weights = {k: params[k] for k in _EWA_WEIGHTS if params.get(k) is not None}
        # ll2cr overwrites its inputs with columns/rows: give it copies
        swath = geometry.SwathDefinition(np.array(lons, dtype=np.float64),
                                         np.array(lats, dtype=np.float64))
        n_in, cols, rows = ewa.ll2cr(swath, area)
        # a swath entirely off the grid: fornav raises and the dask resampler's graph breaks,
        # so the result is all fill without calling them
        self.empty = int(n_in) == 0
        if backend == "numpy":
            self.cols, self.rows = cols, rows
            self.nbytes = _nbytes_of(self.cols, self.rows)
        elif not self.empty:
            import dask.array as da
            import xarray as xr

            chunks = (max(self.rows_per_scan, 1) * max(
                1, int(params.get("scans_per_chunk") or 1)), lons.shape[1])
            lx = xr.DataArray(da.from_array(lons, chunks=chunks), dims=("y", "x"),
                              attrs={"rows_per_scan": self.rows_per_scan})
            ly = xr.DataArray(da.from_array(lats, chunks=chunks), dims=("y", "x"))
            self.chunks = chunks
            self.resampler = ewa.DaskEWAResampler(geometry.SwathDefinition(lx, ly), area)
            self.resampler.precompute(rows_per_scan=self.rows_per_scan, persist=True)

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:
        if self.backend == "numpy":
            ewa = _pr("ewa")
            arr = np.asarray(data)
            if not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float64)
            if self.empty:
                return np.full(self.shape, fill_value, dtype=arr.dtype)
            _, out = ewa.fornav(self.cols, self.rows, self.area, arr,
                                rows_per_scan=self.rows_per_scan, fill=fill_value,
                                **self.weights)
            return out
        import xarray as xr

        if self.empty:
            import dask.array as da

            dtype = data.dtype if np.issubdtype(data.dtype, np.floating) else np.float64
            return da.full(self.shape, fill_value, dtype=dtype)
        arr = data.rechunk(self.chunks)
        out = self.resampler.compute(xr.DataArray(arr, dims=("y", "x")),
                                     rows_per_scan=self.rows_per_scan, fill_value=fill_value,
                                     **self.weights)
        return out.data if isinstance(out, xr.DataArray) else out


class BucketEngine(Engine):
    """Drop-in-a-bucket statistics (``pyresample.bucket.BucketResampler``, dask-based)."""

    method = "bucket"
    has_counts = True

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, params: dict[str, Any],
                 backend: str) -> None:
        super().__init__(lons, lats, area, params, backend)
        import dask.array as da

        bucket = _pr("bucket")
        chunks = params.get("chunks", "auto")
        with _quiet():
            self.resampler = bucket.BucketResampler(area, da.from_array(lons, chunks=chunks),
                                                    da.from_array(lats, chunks=chunks))
            self.resampler.idxs = _materialise(self.resampler.idxs)
        self._counts = _materialise(self.resampler.get_count())
        self.nbytes = _nbytes_of(self.resampler.idxs, self._counts)

    def _out(self, arr: Any) -> Any:
        return np.asarray(arr.compute()) if self.backend == "numpy" else arr

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:
        import dask.array as da

        arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        flat = arr.ravel().rechunk(self.resampler.idxs.chunks)  # never re-chunk the cached idxs
        avg = self.resampler.get_average(flat, fill_value=np.nan)
        if not (isinstance(fill_value, float) and np.isnan(fill_value)):
            avg = da.where(da.isnan(avg), fill_value, avg)
        return self._out(avg)

    def coverage(self) -> Any:
        return self._out(self._counts > 0)

    def counts(self) -> Any:
        return self._out(self._counts)


class SplitEngine(Engine):
    """A target grid resampled on other areas (see
    :func:`arcoforge.regrid.areas.longitude_pieces`): the result is the column-wise join of
    each piece engine's result cut to its columns."""

    def __init__(self, area: Any, pieces: list[tuple[Engine, slice]], backend: str) -> None:
        self.area = area
        self.shape = tuple(area.shape)
        self.backend = backend
        self.pieces = pieces
        first = pieces[0][0]
        self.method, self.has_counts, self.params = first.method, first.has_counts, first.params
        self.nbytes = sum({id(e): e.nbytes for e, _ in pieces}.values())
        self._coverage: Any = None

    def _join(self, results: dict[int, Any]) -> Any:
        parts = [results[id(e)][..., cols] for e, cols in self.pieces]
        if len(parts) == 1:
            return parts[0]
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.concatenate(parts, axis=-1)
        import dask.array as da

        return da.concatenate([da.asarray(p) for p in parts], axis=-1)

    def _each(self, fn: Any) -> dict[int, Any]:
        results: dict[int, Any] = {}
        for e, _ in self.pieces:
            if id(e) not in results:
                out = fn(e)
                if isinstance(out, np.ndarray):
                    out = out.reshape(e.shape)
                results[id(e)] = out
        return results

    def apply(self, data: Any, fill_value: Any = np.nan) -> Any:
        return self._join(self._each(lambda e: e.apply(data, fill_value)))

    def coverage(self) -> Any:
        if self._coverage is None:
            self._coverage = self._join(self._each(lambda e: e.coverage()))
        return self._coverage

    def counts(self) -> Any:
        return self._join(self._each(lambda e: e.counts()))


_ENGINES: dict[str, type[Engine]] = {"nearest": NearestEngine, "bilinear": BilinearEngine,
                                     "ewa": EWAEngine, "bucket": BucketEngine}


def build_engine(kind: str, lons: np.ndarray, lats: np.ndarray, area: Any,
                 params: dict[str, Any], backend: str) -> Engine:
    """Build the engine of ``kind`` (``nearest``, ``bilinear``, ``ewa``, ``bucket``)."""
    return _ENGINES[kind](lons, lats, area, params, backend)
