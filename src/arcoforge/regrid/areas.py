"""Target grids for regridding: pyresample ``AreaDefinition`` objects from a short spec, an
existing ``AreaDefinition`` or a reference dataset's grid, and their CF description.

A short spec is a mapping ``{"crs": "EPSG:4326", "extent": [xmin, ymin, xmax, ymax],
"resolution": 0.25}`` (``resolution`` a number or ``[dx, dy]``, in the CRS's units; ``"shape":
[rows, cols]`` may replace it; ``"name"`` is optional).  The output grid's dimensions are always
``("y", "x")``; its coordinate variables carry the CF names of the CRS (``longitude`` /
``latitude`` for geographic CRSs, ``projection_x_coordinate`` / ``projection_y_coordinate``
otherwise) and every resampled variable points at a CF ``grid_mapping`` variable (``crs``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError
from ._deps import require

__all__ = [
    "GRID_MAPPING_NAME",
    "area_from_dataset",
    "area_from_spec",
    "area_grid",
    "area_key",
    "bucket_frame",
    "describe_area",
    "longitude_pieces",
    "recentre_longitudes",
    "resolve_area",
    "shift_longitudes",
]

GRID_MAPPING_NAME = "crs"
_SPEC_KEYS = {"crs", "extent", "resolution", "shape", "name"}


def area_from_spec(crs: Any, extent: Any, resolution: Any = None, *, shape: Any = None,
                   name: str = "arcoforge_area") -> Any:
    """An ``AreaDefinition`` from a CRS, an extent and a resolution (or a shape).

    Parameters
    ----------
    crs
        Anything ``pyproj.CRS`` accepts: ``"EPSG:4326"``, a PROJ string, WKT, an EPSG number.
    extent
        ``[xmin, ymin, xmax, ymax]`` of the outer cell edges, in the CRS's units.
    resolution
        Cell size: one number, or ``[dx, dy]``.
    shape
        ``[rows, cols]`` instead of ``resolution``.
    name
        The area's name (pyresample's ``area_id``).

    Returns
    -------
    pyresample.geometry.AreaDefinition

    Raises
    ------
    ConfigError
        For a CRS pyproj cannot read, an extent that is not four increasing numbers, or no (or
        both) of ``resolution`` and ``shape``.
    """
    pyresample = require("pyresample", "an area from a spec")
    pyproj = require("pyproj", "an area from a spec")
    try:
        crs_obj = pyproj.CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError, a subclass of a private class
        raise ConfigError(f"area spec: crs {crs!r} is not a CRS pyproj can read ({exc}). "
                          "Give e.g. 'EPSG:4326', 'EPSG:3413' or a PROJ string") from exc
    try:
        ext = [float(v) for v in extent]
    except (TypeError, ValueError):
        ext = []
    if len(ext) != 4 or not (ext[0] < ext[2] and ext[1] < ext[3]):
        raise ConfigError(f"area spec: extent {extent!r} must be [xmin, ymin, xmax, ymax] with "
                          "xmin < xmax and ymin < ymax (cell edges, in the CRS's units)")
    if (resolution is None) == (shape is None):
        raise ConfigError("area spec: give exactly one of 'resolution' (cell size) and 'shape' "
                          "([rows, cols])")
    if resolution is not None:
        res = np.atleast_1d(np.asarray(resolution, dtype=float))
        if res.size not in (1, 2) or not np.all(res > 0):
            raise ConfigError(f"area spec: resolution {resolution!r} must be a positive number "
                              "or [dx, dy]")
        dx, dy = (float(res[0]), float(res[-1]))
        cols = round((ext[2] - ext[0]) / dx)
        rows = round((ext[3] - ext[1]) / dy)
        if cols < 1 or rows < 1 or not np.isclose(cols * dx, ext[2] - ext[0]) \
                or not np.isclose(rows * dy, ext[3] - ext[1]):
            raise ConfigError(f"area spec: extent {ext} is not a whole number of cells of "
                              f"resolution {resolution!r}; adjust the extent or the resolution")
    else:
        rows, cols = (int(v) for v in shape)
        if rows < 1 or cols < 1:
            raise ConfigError(f"area spec: shape {shape!r} must be two positive integers")
    return pyresample.geometry.AreaDefinition(name, name, name, crs_obj, cols, rows, ext)


def _coord_1d(ds: xr.Dataset | xr.DataArray, names: tuple[str, ...],
              standard: tuple[str, ...]) -> xr.DataArray | None:
    for name, var in ds.coords.items():
        if var.ndim == 1 and (str(name) in names or var.attrs.get("standard_name") in standard):
            return var
    return None


def area_from_dataset(ref: xr.Dataset | xr.DataArray, name: str = "reference_grid") -> Any:
    """The ``AreaDefinition`` of a gridded dataset (a previous regrid output, or any regular
    grid with 1-D ``x``/``y`` or ``lon``/``lat`` coordinates).

    The CRS is read from the CF ``grid_mapping`` variable when there is one, else the grid is
    taken as geographic (EPSG:4326) when its coordinates are longitude/latitude.

    Raises
    ------
    ConfigError
        When the dataset has no 1-D x/y (or lon/lat) coordinates, or their spacing is not
        regular.
    """
    pyresample = require("pyresample", "an area from a reference dataset")
    pyproj = require("pyproj", "an area from a reference dataset")
    crs = None
    gm_names = {str(v.attrs["grid_mapping"]) for v in ds_vars(ref) if "grid_mapping" in v.attrs}
    for gm in sorted(gm_names) + [GRID_MAPPING_NAME, "spatial_ref"]:
        if gm in ref.coords or (isinstance(ref, xr.Dataset) and gm in ref.variables):
            attrs = ref[gm].attrs
            try:
                crs = pyproj.CRS.from_wkt(attrs["crs_wkt"]) if "crs_wkt" in attrs \
                    else pyproj.CRS.from_cf(dict(attrs))
            except Exception as exc:
                raise ConfigError(f"reference grid: grid_mapping variable {gm!r} does not "
                                  f"describe a CRS pyproj can read ({exc})") from exc
            break
    x = _coord_1d(ref, ("x", "projection_x_coordinate"), ("projection_x_coordinate",))
    y = _coord_1d(ref, ("y", "projection_y_coordinate"), ("projection_y_coordinate",))
    if x is None or y is None:
        x = _coord_1d(ref, ("lon", "longitude"), ("longitude",))
        y = _coord_1d(ref, ("lat", "latitude"), ("latitude",))
    if crs is None and x is not None and (
            x.attrs.get("standard_name") == "longitude"
            or x.attrs.get("units") in ("degrees_east", "degree_east")
            or str(x.name) in ("lon", "longitude")):
        crs = pyproj.CRS.from_epsg(4326)
    if x is None or y is None:
        raise ConfigError("reference grid: no 1-D x/y (or lon/lat) coordinates found; give an "
                          "area spec {'crs', 'extent', 'resolution'} or an AreaDefinition instead")
    if crs is None:
        raise ConfigError(f"reference grid: coordinates {x.name!r}/{y.name!r} have no CF "
                          "grid_mapping variable naming their CRS; add one or give an area spec")
    xs, ys = np.asarray(x.values, dtype=float), np.asarray(y.values, dtype=float)
    for axis, vals in (("x", xs), ("y", ys)):
        steps = np.diff(vals)
        if vals.size < 2 or not np.allclose(steps, steps[0], rtol=1e-6, atol=0):
            raise ConfigError(f"reference grid: {axis} coordinate is not regularly spaced "
                              "(or has fewer than 2 points); regridding needs a regular grid")
    dx, dy = abs(xs[1] - xs[0]), abs(ys[1] - ys[0])
    ext = (xs.min() - dx / 2, ys.min() - dy / 2, xs.max() + dx / 2, ys.max() + dy / 2)
    area = pyresample.geometry.AreaDefinition(name, name, name, crs, xs.size, ys.size, ext)
    return area


def ds_vars(obj: xr.Dataset | xr.DataArray) -> list[xr.DataArray]:
    """The data variables of a Dataset, or the DataArray itself."""
    return list(obj.data_vars.values()) if isinstance(obj, xr.Dataset) else [obj]


def resolve_area(area: Any) -> Any:
    """Any accepted area form -> ``AreaDefinition``.

    Accepts an ``AreaDefinition`` (returned as is), a spec mapping (see the module docstring),
    or an ``xarray`` object whose grid is the target.

    Raises
    ------
    ConfigError
        For anything else, or a spec with unknown keys.
    """
    geometry = require("pyresample.geometry", "regridding")
    if isinstance(area, geometry.AreaDefinition):
        return area
    if isinstance(area, (xr.Dataset, xr.DataArray)):
        return area_from_dataset(area)
    if isinstance(area, Mapping):
        unknown = set(area) - _SPEC_KEYS
        if unknown or "crs" not in area or "extent" not in area:
            raise ConfigError(f"area spec {dict(area)!r}: needs 'crs' and 'extent' plus "
                              f"'resolution' or 'shape' (unknown keys: {sorted(unknown)})")
        return area_from_spec(area["crs"], area["extent"], area.get("resolution"),
                              shape=area.get("shape"), name=area.get("name", "arcoforge_area"))
    raise ConfigError(f"area {area!r} ({type(area).__name__}) is not an area: give a spec "
                      "{'crs': 'EPSG:4326', 'extent': [xmin, ymin, xmax, ymax], 'resolution': r}"
                      ", a pyresample AreaDefinition or a gridded reference dataset")


def describe_area(area: Any) -> dict[str, Any]:
    """A JSON-able description of an ``AreaDefinition`` that rebuilds it (CRS as WKT)."""
    return {"name": str(area.area_id), "crs": area.crs.to_wkt(),
            "extent": [float(v) for v in area.area_extent],
            "shape": [int(area.height), int(area.width)]}


def area_key(area: Any) -> str:
    """A short stable hash of an area (CRS, extent, shape) for cache keys."""
    text = json.dumps({k: v for k, v in describe_area(area).items() if k != "name"},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def area_grid(area: Any) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """The CF coordinates ``y``/``x`` and the ``grid_mapping`` variable of an area.

    Returns
    -------
    coords, grid_mapping
        ``{"y": ..., "x": ...}`` (cell centres) and a scalar variable whose attributes are
        ``pyproj.CRS.to_cf()`` (with ``crs_wkt``).
    """
    x, y = area.get_proj_vectors()
    crs = area.crs
    if crs.is_geographic:
        xattrs = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                  "axis": "X"}
        yattrs = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                  "axis": "Y"}
    else:
        unit = crs.axis_info[0].unit_name if crs.axis_info else "m"
        units = {"metre": "m", "meter": "m"}.get(unit, unit)
        xattrs = {"standard_name": "projection_x_coordinate", "units": units, "axis": "X"}
        yattrs = {"standard_name": "projection_y_coordinate", "units": units, "axis": "Y"}
    coords = {"y": xr.DataArray(np.asarray(y, dtype="float64"), dims="y", attrs=yattrs),
              "x": xr.DataArray(np.asarray(x, dtype="float64"), dims="x", attrs=xattrs)}
    gm_attrs = {k: v for k, v in crs.to_cf().items() if v is not None}
    gm_attrs.setdefault("crs_wkt", crs.to_wkt())
    gm = xr.DataArray(np.int32(0), attrs=gm_attrs)
    return coords, gm


#: longitudes within this many degrees of the [-180, 180] bounds count as inside them
_LON_TOL = 1e-9


def longitude_pieces(area: Any) -> list[tuple[Any, slice]] | None:
    """Resample a geographic area whose longitudes leave [-180, 180] on areas inside it.

    pyresample normalises longitudes to [-180, 180): on a target grid in 0..360 (OISST, GODAS,
    or a spec such as ``extent=[160, -10, 200, 10]``) every swath pixel east of 180° would be
    lost.  The grid is shifted by a multiple of 360° and

    * a grid 360° wide becomes the same grid in [-180, 180] (same resolution and cell edges),
      whose columns are then rolled into the target's order: cell for cell what the
      equivalent -180..180 grid gives;
    * a narrower grid that straddles the antimeridian is cut into its columns west of it and
      those east of it (shifted by -360°), two ordinary areas joined column-wise;
    * a grid entirely beyond 180° (or below -180°) is just shifted.

    Parameters
    ----------
    area
        A pyresample ``AreaDefinition``.

    Returns
    -------
    list of (AreaDefinition, slice) or None
        The output is the column-wise join of ``result_on(piece)[..., cols]`` over the pieces,
        in order (the same area can appear twice); ``None`` when nothing needs doing (a
        projected CRS, or longitudes already in [-180, 180]).

    Raises
    ------
    ConfigError
        When the grid spans more than 360° of longitude (cells would repeat).
    """
    if not _beyond_180(area):
        return None
    x0, y0, x1, y1 = (float(v) for v in area.area_extent)
    width = int(area.width)
    dx = (x1 - x0) / width
    if x1 - x0 > 360 + max(_LON_TOL, 1e-6 * dx):
        raise ConfigError(f"area {area.area_id!r}: longitude extent [{x0:g}, {x1:g}] spans "
                          f"{x1 - x0:g} degrees, more than 360 (cells would repeat); give an "
                          "extent at most 360 degrees wide, e.g. [-180, 180] or [0, 360]")
    pyresample = require("pyresample", "regridding")

    def piece(name: str, left: float, right: float, cols: int) -> Any:
        return pyresample.geometry.AreaDefinition(
            f"{area.area_id}_{name}", f"{area.description} ({name})", f"{area.proj_id}_{name}",
            area.crs, cols, int(area.height), (left, y0, right, y1))

    shift = 360.0 * np.floor((x0 + 180.0) / 360.0)
    left, right = x0 - shift, x1 - shift
    everything = slice(None)
    if right <= 180 + _LON_TOL:
        return [(piece("shifted", left, right, width), everything)]
    # columns whose centre lies west of 180 keep their longitudes, the rest move by -360
    n_west = int(np.clip(np.ceil((180.0 - left) / dx - 0.5), 0, width))
    n_east = width - n_west
    if n_west == 0:
        return [(piece("shifted", left - 360.0, right - 360.0, width), everything)]
    edge = left + n_west * dx
    if np.isclose(right - left, 360.0, rtol=0, atol=1e-6 * dx):
        start = -180.0 if np.isclose(edge, 180.0, rtol=0, atol=1e-9) else edge - 360.0
        host = piece("rolled", start, start + 360.0, width)
        return [(host, slice(n_east, width)), (host, slice(0, n_east))]
    return [(piece("west", left, edge, n_west), everything),
            (piece("east", edge - 360.0, right - 360.0, n_east), everything)]


def recentre_longitudes(lons: np.ndarray, area: Any) -> np.ndarray:
    """Longitudes shifted by multiples of 360° into the 360° centred on a geographic area
    whose extent leaves [-180, 180] (unchanged otherwise).

    For EWA, whose ``ll2cr`` maps longitudes to columns linearly: a swath crossing 180° stays
    continuous on a 0..360 grid (its elliptical footprints are not torn across the grid), and
    the cut moves to the grid's own edge.
    """
    if not _beyond_180(area):
        return lons
    x0, _, x1, _ = (float(v) for v in area.area_extent)
    centre = (x0 + x1) / 2.0
    return shift_longitudes(lons, centre) + centre


def _beyond_180(area: Any) -> bool:
    """Whether ``area`` is geographic with longitudes outside [-180, 180] (a 0..360 grid)."""
    if not area.crs.is_geographic:
        return False
    x0, _, x1, _ = (float(v) for v in area.area_extent)
    return not (x0 >= -180 - _LON_TOL and x1 <= 180 + _LON_TOL)


def bucket_frame(area: Any) -> tuple[Any, float] | None:
    """For the bucket methods: the target's cells shifted by ``-shift`` degrees into
    [-180, 180], and ``shift``, when :func:`longitude_pieces` would cut a cell in two.

    pyresample's ``BucketResampler`` bins the swath's longitudes wrapped to [-180, 180) by the
    area's extent.  Where a cut at 180° (mod 360) falls inside a target cell (a grid whose
    edges are not on 180°: extent ``[-0.5, 359.5]``, ``[160.5, 200.5]``), the pieces would lose
    that cell's pixels on one side of the cut.  Instead the whole grid is shifted by its
    centre, and the swath's longitudes by the same amount (:func:`shift_longitudes`): one
    ordinary area, cell for cell the target's, nothing cut.

    Returns
    -------
    (AreaDefinition, float) or None
        ``None`` when nothing needs doing (a projected CRS, longitudes already in [-180, 180])
        or when every cut falls on a cell edge (then the pieces are exact).
    """
    if longitude_pieces(area) is None:  # also raises for an extent wider than 360
        return None
    x0, y0, x1, y1 = (float(v) for v in area.area_extent)
    width = int(area.width)
    dx = (x1 - x0) / width
    first = 180.0 + 360.0 * np.ceil((x0 - 180.0) / 360.0)
    cuts = [c for c in np.arange(first, x1, 360.0) if x0 + _LON_TOL < c < x1 - _LON_TOL]
    if all(np.isclose((c - x0) / dx, round((c - x0) / dx), rtol=0, atol=1e-6) for c in cuts):
        return None
    pyresample = require("pyresample", "regridding")
    shift = (x0 + x1) / 2.0
    frame = pyresample.geometry.AreaDefinition(
        f"{area.area_id}_frame", f"{area.description} (frame)", f"{area.proj_id}_frame",
        area.crs, width, int(area.height), (x0 - shift, y0, x1 - shift, y1))
    return frame, shift


def shift_longitudes(lons: np.ndarray, shift: float) -> np.ndarray:
    """Longitudes minus ``shift`` wrapped into [-180, 180) (NaN stays NaN): the swath in the
    frame of :func:`bucket_frame`."""
    return np.where(np.isfinite(lons), (lons - shift + 180.0) % 360.0 - 180.0, np.nan)
