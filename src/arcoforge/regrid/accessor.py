"""``ds.arcoforge.resample(area, method=...)``: a swath dataset onto a grid, with its metadata.

The swath's geolocation (2-D longitude/latitude along/across track, or 1-D for nadir tracks)
is found by CF attributes or common names.  Every data variable that spans the swath's
dimensions is resampled with pyresample; other variables and coordinates are kept as they are
(1-D time, scalars), and variables spanning only part of the swath (per-row scan times) are
dropped and listed in the ``arcoforge:regrid`` attribute.

What is kept: each variable's attributes (``units``, ``flag_*``, ``standard_name`` ...), its
encoding (``_FillValue``, ``scale_factor``/``add_offset``, on-disk ``dtype``, so writing the
result packs it as the source was packed), the dataset's attributes.  What is added: ``y``/``x``
CF coordinates, a ``crs`` grid-mapping coordinate that every variable points at
(``grid_mapping``), a ``coverage`` flag (uint8 1: the cell was reached by a valid source pixel)
and, for the bucket methods, ``count`` (source pixels per cell).

Flag and other categorical variables (``flag_values``/``flag_masks``/``flag_meanings``
attributes, integer, boolean and datetime dtypes) are always resampled by nearest neighbour:
averaging flags or times would invent values.  The methods used are recorded per variable.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, SchemaError
from ._deps import require
from .areas import (
    GRID_MAPPING_NAME,
    area_grid,
    area_key,
    bucket_frame,
    describe_area,
    longitude_pieces,
    resolve_area,
    shift_longitudes,
)
from .cache import NeighbourCache, default_cache, geometry_key
from .engines import METHODS, TWO_D_ONLY, Engine, SplitEngine, build_engine, default_radius

__all__ = ["REGRID_ATTR", "EmptyRegridWarning", "find_geolocation", "resample"]

REGRID_ATTR = "arcoforge:regrid"
_KEEP_ENCODING = ("_FillValue", "missing_value", "scale_factor", "add_offset", "dtype",
                  "units", "calendar")
_LON_NAMES = ("lon", "longitude", "lons", "nav_lon")
_LAT_NAMES = ("lat", "latitude", "lats", "nav_lat")


def _is_geo(var: xr.DataArray, name: Hashable, axis: str) -> bool:
    names = _LON_NAMES if axis == "lon" else _LAT_NAMES
    std = "longitude" if axis == "lon" else "latitude"
    units = ("degrees_east", "degree_east", "degrees_e") if axis == "lon" else (
        "degrees_north", "degree_north", "degrees_n")
    return (var.attrs.get("standard_name") == std or str(var.attrs.get("units", "")).lower()
            in units or str(name).lower() in names)


def find_geolocation(ds: xr.Dataset, lon: Hashable | None = None,
                     lat: Hashable | None = None) -> tuple[Hashable, Hashable]:
    """The names of the swath's longitude and latitude variables.

    Raises
    ------
    SchemaError
        When none (or an ambiguous set) is found, or they do not share 1 or 2 dimensions.
    """
    def pick(axis: str, given: Hashable | None) -> Hashable:
        if given is not None:
            if given not in ds.variables:
                raise SchemaError(f"{axis} variable {given!r} is not in the dataset "
                                  f"(variables: {sorted(map(str, ds.variables))})")
            return given
        found = [n for n, v in ds.variables.items() if v.ndim in (1, 2)
                 and _is_geo(ds[n], n, axis) and n not in ds.dims]
        if not found:
            raise SchemaError(f"no {axis}gitude variable found (looked for standard_name "
                              f"{'longitude' if axis == 'lon' else 'latitude'!r}, degrees units or "
                              f"the names {_LON_NAMES if axis == 'lon' else _LAT_NAMES}); pass "
                              f"{axis}='name' to resample()")
        two_d = [n for n in found if ds[n].ndim == 2]
        return (two_d or found)[0]

    lon_name, lat_name = pick("lon", lon), pick("lat", lat)
    lo, la = ds[lon_name], ds[lat_name]
    if lo.dims != la.dims or lo.ndim not in (1, 2):
        raise SchemaError(f"longitude {lon_name!r} {lo.dims} and latitude {lat_name!r} "
                          f"{la.dims} must share the same 1 or 2 swath dimensions")
    return lon_name, lat_name


def _kind(var: xr.DataArray) -> str:
    if var.dtype.kind in "Mm":
        return "datetime"
    if var.dtype.kind in "iub" or any(k in var.attrs for k in
                                      ("flag_values", "flag_masks", "flag_meanings")):
        return "categorical"
    if var.dtype.kind == "f":
        return "continuous"
    raise SchemaError(f"variable {var.name!r} has dtype {var.dtype}, which cannot be resampled; "
                      "drop it or pass variables=[...] without it")


_LAT_TOL = 1e-5  # degrees: latitudes this far beyond +-90 are rounding, clipped to +-90


class EmptyRegridWarning(UserWarning):
    """A resampling in which no swath pixel reached the target area (an all-fill grid)."""


def _positive(name: str, value: Any, unit: str, *, integer: bool = False,
              allow_zero: bool = False) -> Any:
    """``value`` as a finite number > 0 (>= 0 with ``allow_zero``), else a ConfigError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    if ok:
        ok = bool(np.isfinite(value)) and (value >= 0 if allow_zero else value > 0) and (
            not integer or float(value).is_integer())
    if not ok:
        need = "a whole number" if integer else "a finite number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"resample: {name}={value!r} must be {need} {bound} ({unit}), "
                          f"e.g. {name}={'32' if integer else '30_000'}")
    return int(value) if integer else float(value)


def _geolocation(ds: xr.Dataset, lon_name: Hashable,
                 lat_name: Hashable) -> tuple[np.ndarray, np.ndarray]:
    """The swath's longitudes (wrapped to [-180, 180)) and latitudes as float64, NaN where
    missing, after checking they are decoded degrees.

    Raises
    ------
    SchemaError
        For integer geolocation that still carries ``scale_factor``/``add_offset`` (opened
        without decoding), latitudes outside [-90, 90] or longitudes outside [-360, 360] that
        are not declared fill values, and geolocation without a single valid pixel.
    """
    out = {}
    for axis, name, bound in (("latitude", lat_name, 90.0), ("longitude", lon_name, 360.0)):
        var = ds[name]
        raw = np.asarray(var.values)
        packed = [k for k in ("scale_factor", "add_offset") if k in var.attrs]
        hint = ("it looks packed and not decoded: open the file with mask_and_scale=True (the "
                "default) or apply xarray.decode_cf before resampling")
        if raw.dtype.kind not in "fiu":
            raise SchemaError(f"{axis} {name!r} has dtype {raw.dtype}; it must be numeric "
                              "degrees")
        if raw.dtype.kind in "iu" and packed:
            raise SchemaError(f"{axis} {name!r} is {raw.dtype} with {', '.join(packed)} "
                              f"attributes (raw range {raw.min()}..{raw.max()}): {hint}")
        vals = raw.astype(np.float64)
        for key in ("_FillValue", "missing_value"):  # undecoded fills are missing, not data
            for fv in np.atleast_1d(np.asarray(var.attrs.get(key, []), dtype=np.float64)):
                vals[vals == fv] = np.nan
        finite = vals[np.isfinite(vals)]
        if finite.size and np.abs(finite).max() > bound + (_LAT_TOL if bound == 90 else 0):
            lo, hi = float(finite.min()), float(finite.max())
            why = hint if raw.dtype.kind in "iu" or packed else (
                "if those are fill values, declare them as _FillValue (or set them to NaN) "
                "before resampling")
            raise SchemaError(f"{axis} {name!r} has values in [{lo:g}, {hi:g}], outside "
                              f"[-{bound:g}, {bound:g}] degrees: {why}")
        if bound == 90:
            vals = np.clip(vals, -90.0, 90.0)
        else:
            vals = shift_longitudes(vals, 0.0)  # into [-180, 180)
        out[axis] = vals
    lons, lats = out["longitude"], out["latitude"]
    if lons.shape != lats.shape:
        lons, lats = np.broadcast_arrays(lons, lats)
    if not np.any(np.isfinite(lons) & np.isfinite(lats)):
        raise SchemaError(f"geolocation {lon_name!r}/{lat_name!r} has no valid pixel (all NaN "
                          "or fill): nothing to resample; drop this granule or check how its "
                          "longitude/latitude were read")
    return lons, lats


def _reaches_area(area: Any, lons: np.ndarray, lats: np.ndarray, margin: float) -> bool:
    """Whether a valid swath pixel lies inside the area's extent widened by ``margin`` metres
    (numpy on the geolocation only: the lazy stand-in for "some cell is covered").

    Geographic areas compare the longitudes shifted into the 360° centred on the area (a
    0..360 grid sees the pixels east of 180); projected ones the pixels transformed into the
    area's CRS (pixels it cannot project are outside)."""
    ok = np.isfinite(lons) & np.isfinite(lats)
    x0, y0, x1, y1 = (float(v) for v in area.area_extent)
    lo, la = lons[ok], lats[ok]
    if area.crs.is_geographic:
        centre = (x0 + x1) / 2.0
        x = shift_longitudes(lo, centre) + centre  # into the 360 degrees centred on the area
        y = la
        my = margin / 111_000.0
        mx = my / np.maximum(np.cos(np.radians(np.minimum(np.abs(la) + my, 90.0))), 1e-3)
    else:
        pyproj = require("pyproj", "regridding")
        transformer = pyproj.Transformer.from_crs("EPSG:4326", area.crs, always_xy=True)
        with np.errstate(all="ignore"):
            x, y = transformer.transform(lo, la, errcheck=False)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        unit = area.crs.axis_info[0].unit_name if area.crs.axis_info else "metre"
        mx = my = margin if unit in ("metre", "meter") else 0.0
    with np.errstate(invalid="ignore"):
        inside = (x >= x0 - mx) & (x <= x1 + mx) & (y >= y0 - my) & (y <= y1 + my)
    return bool(np.any(inside))


def _warn_if_empty(engine: Engine, method: str, area: Any, lons: np.ndarray,
                   lats: np.ndarray, backend: str = "numpy", margin: float = 0.0) -> None:
    """Warn (:class:`EmptyRegridWarning`) when no cell of the area got a source pixel.

    numpy: the engine's coverage (exact).  dask: nothing is computed; warn when no valid swath
    pixel lies within ``margin`` metres (the radius of influence) of the area's extent."""
    if backend == "dask":
        if _reaches_area(area, lons, lats, margin):
            return
    elif bool(np.any(np.asarray(engine.coverage()))):
        return
    ok = np.isfinite(lons) & np.isfinite(lats)
    warnings.warn(
        f"resample({method!r}): no swath pixel reached area {area.area_id!r} (extent "
        f"{[round(float(v), 6) for v in area.area_extent]} in {area.crs.name}); the swath spans "
        f"longitudes [{lons[ok].min():.3f}, {lons[ok].max():.3f}] and latitudes "
        f"[{lats[ok].min():.3f}, {lats[ok].max():.3f}]: the result is all fill (check the "
        "area, or the radius_of_influence)", EmptyRegridWarning, stacklevel=3)


def _is_dask(var: xr.DataArray) -> bool:
    return var.chunks is not None


def _declared_fill(var: xr.DataArray) -> Any:
    """The variable's own ``_FillValue`` (else ``missing_value``) in its dtype, or ``None``."""
    for key in ("_FillValue", "missing_value"):
        for src in (var.encoding, var.attrs):
            fv = src.get(key)
            if fv is not None:
                try:
                    return np.asarray(fv).ravel()[0].astype(var.dtype).item()
                except (ValueError, OverflowError, IndexError):
                    pass
    return None


def _int_fill(var: xr.DataArray) -> Any:
    declared = _declared_fill(var)
    if declared is not None:
        return declared
    if var.dtype.kind == "b":
        return False
    return np.iinfo(var.dtype).max


class _Plan:
    """The engines one call needs, taken from (or put into) the neighbour cache."""

    def __init__(self, lons: np.ndarray, lats: np.ndarray, area: Any, method: str,
                 params: dict[str, Any], backend: str, cache: NeighbourCache | None) -> None:
        self.lons, self.lats, self.area = lons, lats, area
        self.method, self.params, self.backend, self.cache = method, params, backend, cache
        self.pieces = longitude_pieces(area)
        self._engines: dict[str, Engine] = {}

    def engine(self, kind: str) -> Engine:
        if kind not in self._engines:
            keys = {"nearest": ("radius_of_influence", "epsilon"),
                    "bilinear": ("radius_of_influence", "neighbours", "epsilon"),
                    "ewa": ("rows_per_scan", "scans_per_chunk", "weight_count", "weight_min",
                            "weight_distance_max", "weight_delta_max", "weight_sum_min",
                            "maximum_weight_mode"),
                    "bucket": ()}[kind]
            params = {k: self.params[k] for k in keys if self.params.get(k) is not None}
            params["chunks"] = self.params.get("chunks", "auto")

            frame = bucket_frame(self.area) if kind == "bucket" else None
            if frame is not None:  # a cell across 180: bin the whole grid in a shifted frame
                self._engines[kind] = self._build(kind, frame[0], params,
                                                  shift_longitudes(self.lons, frame[1]))
            elif self.pieces is None or kind == "ewa":  # EWA takes recentred longitudes
                self._engines[kind] = self._build(kind, self.area, params)
            else:  # longitudes outside [-180, 180]: one engine per piece inside it
                built: dict[int, Engine] = {}
                for a, _ in self.pieces:
                    if id(a) not in built:
                        built[id(a)] = self._build(kind, a, params)
                self._engines[kind] = SplitEngine(
                    self.area, [(built[id(a)], cols) for a, cols in self.pieces], self.backend)
        return self._engines[kind]

    def _build(self, kind: str, area: Any, params: dict[str, Any],
               lons: np.ndarray | None = None) -> Engine:
        lons = self.lons if lons is None else lons

        def build() -> Engine:
            return build_engine(kind, lons, self.lats, area, params, self.backend)

        if self.cache is None:
            return build()
        key = geometry_key(lons, self.lats, area_key(area), kind, params, self.backend)
        return self.cache.get_or_build(key, build)


def _resample_array(plan: _Plan, kind: str, var: xr.DataArray, swath_dims: tuple[Hashable, ...],
                    fill_value: Any) -> tuple[Any, tuple[Hashable, ...]]:
    """Resample one variable slice by slice over its non-swath dimensions."""
    engine = plan.engine(kind)
    other = tuple(d for d in var.dims if d not in swath_dims)
    v = var.transpose(*other, *swath_dims)
    data = v.data
    if plan.backend == "numpy":
        data = np.asarray(v.values)
    lead = data.shape[:len(other)]
    outs = [engine.apply(data[idx], fill_value) for idx in np.ndindex(*lead)] if lead else [
        engine.apply(data, fill_value)]
    if plan.backend == "numpy":
        res = np.stack([np.asarray(o) for o in outs]).reshape(lead + plan.area.shape)
    else:
        import dask.array as da

        res = da.stack(outs).reshape(lead + plan.area.shape) if lead else outs[0]
    return res, (*other, "y", "x")


def _resample_var(plan: _Plan, var: xr.DataArray, swath_dims: tuple[Hashable, ...],
                  method_kind: str) -> tuple[Any, tuple[Hashable, ...], str, Any]:
    """Resample one variable: (data, dims, method used, fill to record or ``None``).

    The fill to record is the value an integer variable without its own ``_FillValue`` /
    ``missing_value`` got in uncovered cells (its dtype's maximum)."""
    kind = _kind(var)
    if kind == "datetime":
        nat = np.iinfo(np.int64).min
        ints = var.copy(data=var.data.view("int64")) if plan.backend == "dask" else var.copy(
            data=np.asarray(var.values).view("int64"))
        res, dims = _resample_array(plan, "nearest", ints, swath_dims, nat)
        return res.view(var.dtype), dims, "nearest", None
    if kind == "categorical":
        fill: Any = _int_fill(var) if var.dtype.kind in "iub" else np.nan
        src = var
        if var.dtype.kind == "b":
            src = var.astype(np.uint8)
            fill = 0
        res, dims = _resample_array(plan, "nearest", src, swath_dims, fill)
        if var.dtype.kind == "b":
            res = res.astype(bool)
        record = fill if var.dtype.kind in "iu" and _declared_fill(var) is None else None
        return res, dims, "nearest", record
    res, dims = _resample_array(plan, method_kind, var, swath_dims, np.nan)
    return res, dims, plan.method, None


def _out_attrs(var: xr.DataArray) -> dict[str, Any]:
    attrs = {k: v for k, v in var.attrs.items() if k != "coordinates"}
    attrs["grid_mapping"] = GRID_MAPPING_NAME
    return attrs


def _out_encoding(var: xr.DataArray) -> dict[str, Any]:
    return {k: v for k, v in var.encoding.items() if k in _KEEP_ENCODING}


def resample(obj: xr.Dataset | xr.DataArray, area: Any, method: str = "nearest", *,
             radius_of_influence: float | None = None, neighbours: int = 32,
             epsilon: float = 0, rows_per_scan: int | None = None,
             lon: Hashable | None = None, lat: Hashable | None = None,
             variables: Sequence[Hashable] | None = None, coverage: bool = True,
             cache: NeighbourCache | None | bool = True, chunks: Any = "auto",
             ewa_options: Mapping[str, Any] | None = None) -> xr.Dataset | xr.DataArray:
    """Resample a swath dataset (or variable) onto a grid with pyresample.

    Parameters
    ----------
    obj
        A dataset or variable with 2-D (along-track, across-track) longitude/latitude
        (``nearest`` and the bucket methods also take 1-D nadir tracks).  numpy- and
        dask-backed arrays are both accepted; dask input gives dask output built by
        pyresample's dask resamplers (nothing is computed but the geolocation).
    area
        The target grid: a spec ``{"crs": "EPSG:4326", "extent": [...], "resolution": r}``, a
        pyresample ``AreaDefinition`` or a gridded reference dataset.
    method
        ``"nearest"``, ``"bilinear"``, ``"ewa"``, ``"bucket_avg"`` or ``"bucket_count"``.
    radius_of_influence
        Search radius in metres (nearest, bilinear, and the nearest used for flags); default:
        the coarser of the source's and the target's resolution, as pyresample estimates it.
    neighbours
        Neighbours searched by bilinear interpolation.
    epsilon
        Allowed distance uncertainty of the k-d tree search (metres).
    rows_per_scan
        EWA: rows per instrument scan (default: ``rows_per_scan`` attribute of the
        longitude, else the whole swath is one scan).
    lon, lat
        Names of the geolocation variables when they cannot be found by CF attributes.
    variables
        Data variables to resample (default: all that span the swath's dimensions).
    coverage
        Add the ``coverage`` flag variable (uint8, 0/1; uint8 rather than bool so it
        encodes the same way in every store and on append).
    cache
        Neighbour-information cache: ``True`` (the process-wide
        :data:`arcoforge.regrid.cache.default_cache`), a :class:`NeighbourCache`, or
        ``False``/``None`` (compute every time).
    chunks
        Dask chunks of the geolocation for the dask resamplers (``"auto"``).
    ewa_options
        Extra weights for ``pyresample.ewa.fornav`` (``weight_count``, ``weight_min``,
        ``weight_distance_max``, ``weight_delta_max``, ``weight_sum_min``,
        ``maximum_weight_mode``).

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        On dimensions ``(..., "y", "x")`` with CF coordinates, the ``crs`` grid mapping and
        the variables' attributes and encodings.

    Raises
    ------
    ConfigError
        For an unknown method, a bad area, or a 2-D-only method on a 1-D track.
    SchemaError
        When the geolocation cannot be found or a variable cannot be resampled.
    MissingDependencyError
        When pyresample is not installed (``pip install 'arcoforge[regrid]'``).
    """
    if method not in METHODS:
        raise ConfigError(f"resample: method {method!r} is not one of {', '.join(METHODS)}")
    area_def = resolve_area(area)
    was_array = isinstance(obj, xr.DataArray)
    if isinstance(obj, xr.DataArray):
        ds = obj.to_dataset(name=obj.name if obj.name is not None else "data")
    else:
        ds = obj
    lon_name, lat_name = find_geolocation(ds, lon, lat)
    swath_dims = ds[lon_name].dims
    if method in TWO_D_ONLY and len(swath_dims) != 2:
        raise ConfigError(f"resample: method {method!r} needs 2-D (along, across track) "
                          f"longitude/latitude; {lon_name!r} has dims {swath_dims}. Use "
                          "'nearest' or 'bucket_avg' for 1-D nadir tracks")
    lons, lats = _geolocation(ds, lon_name, lat_name)
    if variables is None:
        names = [n for n, v in ds.data_vars.items() if set(swath_dims) <= set(v.dims)
                 and n not in (lon_name, lat_name)]
    else:
        missing = [n for n in variables if n not in ds.data_vars]
        if missing:
            raise SchemaError(f"resample: variables {missing} are not in the dataset (data "
                              f"variables: {sorted(map(str, ds.data_vars))})")
        names = list(variables)
        bad = [n for n in names if not set(swath_dims) <= set(ds[n].dims)]
        if bad:
            raise SchemaError(f"resample: variables {bad} do not span the swath dimensions "
                              f"{swath_dims} of {lon_name!r}")
    backend = "dask" if any(_is_dask(ds[n]) for n in names) else "numpy"
    needs_radius = method in ("nearest", "bilinear") or (method != "bucket_count" and any(
        _kind(ds[n]) != "continuous" for n in names))
    added = (["count"] if method.startswith("bucket") else []) + (["coverage"] if coverage
                                                                  else [])
    clash = [n for n in added if n in ds.variables]
    if clash:
        raise SchemaError(f"resample: the dataset already has variables {clash}, which "
                          f"resample({method!r}) adds; rename them first (or coverage=False)")
    if radius_of_influence is not None:
        radius_of_influence = _positive("radius_of_influence", radius_of_influence, "metres")
    if method == "bilinear":
        neighbours = int(_positive("neighbours", neighbours, "source pixels", integer=True))
    epsilon = _positive("epsilon", epsilon, "metres", allow_zero=True)
    roi = float(radius_of_influence) if radius_of_influence is not None else (
        default_radius(lons, lats, area_def) if needs_radius else None)
    params: dict[str, Any] = {"radius_of_influence": roi, "neighbours": int(neighbours),
                              "epsilon": float(epsilon), "chunks": chunks}
    if method == "ewa":
        rps = rows_per_scan if rows_per_scan is not None else ds[lon_name].attrs.get(
            "rows_per_scan", 0)
        params["rows_per_scan"] = int(rps)
        n_rows = ds[lon_name].shape[0]
        if int(rps) < 0 or int(rps) == 1 or (int(rps) and n_rows % int(rps)):
            raise ConfigError(
                f"resample: ewa needs rows_per_scan >= 2 dividing the swath's {n_rows} rows "
                f"(got {rps}); a granule cut mid-scan can use rows_per_scan=0 (one scan) or be "
                "trimmed to whole scans")
        unknown = set(ewa_options or {}) - {"weight_count", "weight_min", "weight_distance_max",
                                            "weight_delta_max", "weight_sum_min",
                                            "maximum_weight_mode", "scans_per_chunk"}
        if unknown:
            raise ConfigError(f"resample: unknown ewa_options {sorted(unknown)}")
        params.update(ewa_options or {})
    if isinstance(cache, NeighbourCache):
        cache_obj: NeighbourCache | None = cache
    else:
        cache_obj = default_cache if cache is True else None
    plan = _Plan(lons, lats, area_def, method, params, backend, cache_obj)
    method_kind = {"bucket_avg": "bucket", "bucket_count": "bucket"}.get(method, method)

    coords, gm = area_grid(area_def)
    swath_set = set(swath_dims)
    keep_coords = {n: c for n, c in ds.coords.items() if not (set(c.dims) & swath_set)}
    out_vars: dict[Hashable, xr.DataArray] = {}
    used: dict[str, str] = {}
    if method != "bucket_count":
        for n in names:
            var = ds[n]
            res, dims, how, new_fill = _resample_var(plan, var, swath_dims, method_kind)
            other_coords = {d: var[d] for d in dims if d in var.coords and d not in ("y", "x")}
            out = xr.DataArray(res, dims=dims, coords=other_coords, attrs=_out_attrs(var))
            out.encoding = _out_encoding(var)
            if new_fill is not None:  # uncovered cells hold it: record it so it reads as missing
                out.encoding["_FillValue"] = new_fill
            out_vars[n] = out
            used[str(n)] = how
    engine = plan.engine(method_kind)
    _warn_if_empty(engine, method, area_def, lons, lats, backend,
                   roi if roi is not None and method_kind in ("nearest", "bilinear") else 0.0)
    if engine.has_counts:
        out_vars["count"] = xr.DataArray(
            engine.counts().astype(np.int32), dims=("y", "x"),
            attrs={"long_name": "number of source pixels in the cell",
                   "units": "1", "grid_mapping": GRID_MAPPING_NAME})
    if coverage:
        out_vars["coverage"] = xr.DataArray(
            engine.coverage().astype(np.uint8), dims=("y", "x"),
            attrs={"long_name": f"cell reached by a valid source pixel ({method})",
                   "flag_values": np.array([0, 1], dtype=np.uint8),
                   "flag_meanings": "not_covered covered", "grid_mapping": GRID_MAPPING_NAME})
    for n, v in ds.data_vars.items():  # variables without swath dims travel unchanged
        if n not in names and n not in (lon_name, lat_name) and not (set(v.dims) & swath_set):
            out_vars[n] = v
    dropped = sorted(str(n) for n, v in ds.variables.items()
                     if n not in out_vars and n not in keep_coords and n not in names)
    result = xr.Dataset(out_vars, coords={**keep_coords, **coords, GRID_MAPPING_NAME: gm})
    result.attrs = dict(ds.attrs)
    params_doc = {k: v for k, v in params.items() if k != "chunks" and v is not None}
    result.attrs[REGRID_ATTR] = json.dumps(
        {"method": method, "area": describe_area(area_def), "params": params_doc,
         "variables": used, "dropped": dropped, "geolocation": [str(lon_name), str(lat_name)]},
        sort_keys=True)
    if was_array:
        name = obj.name if obj.name is not None else "data"
        return result[name] if name in result else result["count"]
    return result
