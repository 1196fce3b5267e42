"""Publish built stores as STAC Collections in a static catalog (a folder or any fsspec URL).

Layout::

    <catalog>/catalog.json                 root Catalog, one ``child`` link per dataset
    <catalog>/<id>/collection.json         STAC Collection with the datacube extension
    <catalog>/<id>/provenance-<version>.json  recipe hash, sources (url, sha256, size), packages
    <catalog>/catalog.arcoforge-lock       present while a publish updates the catalog

A Collection's ``cube:dimensions`` / ``cube:variables``, spatial and temporal extents come from
the dataset itself; title, description, license, providers and keywords from the feedstock's
``meta.yaml``; the ``zarr`` asset points at the store with the Zarr v3 (or Icechunk) media type.
Every published version is listed in ``arcoforge:versions``.

Publishing is safe: dataset ids are checked (:data:`ID_PATTERN`), so nothing is written outside
the catalog; one publish at a time holds the catalog's lock (an exclusive create, on a local disk
or an object store, see :mod:`arcoforge.forge.locking`), so concurrent publishes lose no update;
every file is written whole (a temporary file renamed over it on a local disk, one PUT on an
object store), and in an order where the ``collection.json`` rename is the commit point: a
publish killed at any moment leaves the previous, consistent catalog (or the new one), and a
re-run completes it.

Validation works offline: STAC core against pystac's bundled JSON schemas (no download), and the
datacube fields by :func:`datacube_problems`, written from the extension's specification.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import posixpath
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
import numpy as np
import xarray as xr

from arcoforge.errors import BuildLockedError, ConfigError
from arcoforge.forge.targets.base import ICECHUNK_MEDIA_TYPE, ZARR_MEDIA_TYPE
from arcoforge.provenance import (
    CREATED,
    GROUPS,
    HREF,
    MAINTAINERS,
    PACKAGE_VERSIONS,
    RECIPE,
    RECIPE_HASH,
    SOURCES,
    STANDARD_NAME,
    VERSION,
    VERSIONS,
)

__all__ = [
    "ID_PATTERN",
    "MAX_ID_LENGTH",
    "check_dataset_id",
    "REMOVED",
    "UNKNOWN_EXTENT",
    "grid_crs",
    "projected_bbox",
    "spatial_bbox",
    "spatial_extent_known",
    "temporal_interval",
    "catalog_lock",
    "provenance_file",
    "DATACUBE_EXTENSION",
    "ZARR_MEDIA_TYPE",
    "ICECHUNK_MEDIA_TYPE",
    "publish",
    "collection_from_dataset",
    "read_catalog",
    "read_collections",
    "core_problems",
    "datacube_problems",
    "validate_collection",
]

REMOVED = "removed"
"""Key of an ``arcoforge:versions`` entry set to true when its store no longer has that
version (removed by retention): listed as history, never opened."""
UNKNOWN_EXTENT = "arcoforge:unknown_extent"
"""Collection field listing the extents (``"spatial"``, ``"temporal"``) the dataset does not
tell: its bbox is then the whole globe (STAC requires one) and its interval open; a search by
bbox or time does not match it."""

DATACUBE_EXTENSION = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
CATALOG_FILE = "catalog.json"
COLLECTION_FILE = "collection.json"
PROVENANCE_FILE = "provenance.json"  # catalogs written before provenance was versioned
LOCK_FILE = "catalog.arcoforge-lock"
_TMP_SUFFIX = ".arcoforge-tmp"

ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]*"
"""What a dataset id may be: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or digit (so never a path, ``..`` or a hidden file), at most :data:`MAX_ID_LENGTH`."""
MAX_ID_LENGTH = 100
_ID_RE = re.compile(ID_PATTERN)


def check_dataset_id(dataset_id: str, *, what: str = "dataset id", hint: str = "") -> str:
    """``dataset_id`` if it is a safe id (it names a folder of the catalog and a page of the
    site); :class:`~arcoforge.errors.ConfigError` naming it and the allowed pattern otherwise."""
    if not isinstance(dataset_id, str):
        raise ConfigError(f"{what} {dataset_id!r} must be a string matching {ID_PATTERN}")
    shown = dataset_id if len(dataset_id) <= 60 else dataset_id[:57] + "..."
    if len(dataset_id) > MAX_ID_LENGTH:
        raise ConfigError(f"{what} {shown!r} is not allowed: it has {len(dataset_id)} "
                          f"characters, at most {MAX_ID_LENGTH} characters matching "
                          f"{ID_PATTERN} are.{hint}")
    if not _ID_RE.fullmatch(dataset_id):
        raise ConfigError(f"{what} {shown!r} is not allowed: use 1 to {MAX_ID_LENGTH} ASCII "
                          f"letters, digits, '.', '_' or '-', starting with a letter or digit "
                          f"(the pattern {ID_PATTERN}).{hint}")
    return dataset_id


def _version_key(version: Any) -> tuple[int, ...]:
    return tuple(int(p) for p in str(version).split(".") if p.isdigit())


# -- catalog I/O (fsspec, so any URL works) --------------------------------------------------


def _root(catalog: Any) -> str:
    url = os.fspath(catalog) if not isinstance(catalog, str) else catalog
    url = url.rstrip("/")
    if url.endswith("/" + CATALOG_FILE) or url == CATALOG_FILE:
        url = posixpath.dirname(url) or "."
    if "://" not in url:
        url = os.path.abspath(url)
    return url


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def _read_json(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    with fsspec.open(url, "r", encoding="utf-8", **dict(storage_options or {})) as f:
        return json.load(f)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def _write_json(url: str, data: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` as JSON so that a reader (or a kill -9) never sees half a file: on a local
    disk into a temporary file of the same folder, flushed to disk, then renamed over ``url``;
    on an object store as one PUT, which is atomic."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    if not _is_local(fs):
        fs.pipe_file(path, text.encode("utf-8"))
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_leftovers(folder_url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Delete the temporary files that a killed publish left in ``folder_url`` (local disks
    only; object stores never get any).  Called while holding the catalog lock."""
    fs, path = fsspec.core.url_to_fs(folder_url, **dict(storage_options or {}))
    if not _is_local(fs) or not os.path.isdir(path):
        return
    for name in os.listdir(path):
        if name.startswith(".") and name.endswith(_TMP_SUFFIX):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(path, name))


@contextlib.contextmanager
def catalog_lock(catalog: Any, storage_options: Mapping[str, Any] | None = None, *,
                 timeout: float | None = 300.0) -> Iterator[None]:
    """Hold the catalog's lock (``<catalog>/catalog.arcoforge-lock``) for the ``with`` block:
    the build lock's exclusive create, on a local disk or an object store.  Waits up to
    ``timeout`` seconds (None: forever) for another publish, then raises
    :class:`~arcoforge.errors.BuildLockedError`; the lock of a dead process on this host is
    taken over."""
    from arcoforge.forge.locking import BuildLock

    root = _root(catalog)
    lock = BuildLock(_join(root, LOCK_FILE), storage_options, wait=True, timeout=timeout,
                     poll=0.05, purpose="catalog publish")
    try:
        lock.acquire()
    except BuildLockedError as err:
        holder = lock.holder() or {}
        raise BuildLockedError(
            f"catalog {root} is being updated by another publish ({BuildLock.describe(holder)}) "
            f"and was not free after {timeout} s. Try again, or give a longer lock_timeout; if "
            f"that process is gone, delete {lock.url}.", transient=True) from err
    try:
        yield
    finally:
        lock.release()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return bool(fs.exists(path))


def read_catalog(catalog: Any, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The root catalog.json as a dict (a fresh empty one if the catalog does not exist)."""
    url = _join(_root(catalog), CATALOG_FILE)
    if _exists(url, storage_options):
        return dict(_read_json(url, storage_options))
    return _new_catalog()


def _new_catalog() -> dict[str, Any]:
    import pystac

    cat = pystac.Catalog(id="arcoforge", title="arcoforge datasets",
                         description="Analysis-ready, cloud-optimized datasets built by arcoforge.")
    d = cat.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    return d


def _child_url(root: str, href: str) -> str:
    return href if "://" in href or href.startswith("/") else _join(root, href.removeprefix("./"))


def read_collections(catalog: Any, storage_options: Mapping[str, Any] | None = None, *,
                     problems: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every Collection of a catalog (following its ``child`` links), each with the key
    ``"arcoforge:href"`` set to the collection's absolute URL.

    With a ``problems`` dict, a Collection that cannot be read is left out and recorded there
    (``{name: what went wrong}``, the name being the link's folder) instead of raising."""
    root = _root(catalog)
    cat = read_catalog(root, storage_options)
    out = []
    for link in cat.get("links", []):
        if link.get("rel") != "child":
            continue
        url = _child_url(root, str(link["href"]))
        try:
            col = dict(_read_json(url, storage_options))
        except (OSError, ValueError, TypeError) as err:
            if problems is None:
                raise
            name = posixpath.basename(posixpath.dirname(url)) or url
            problems[name] = f"cannot read its Collection {url}: {err}"
            continue
        col[HREF] = url
        out.append(col)
    return out


# -- from dataset to STAC fields -------------------------------------------------------------

_DATA_TYPES = {
    "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64",
    "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
    "f2": "float16", "f4": "float32", "f8": "float64",
    "c8": "cfloat32", "c16": "cfloat64",
}


def _data_type(dtype: np.dtype) -> str:
    return _DATA_TYPES.get(f"{dtype.kind}{dtype.itemsize}", "other")


def _num(x: Any) -> float | int:
    return np.asarray(x).item()  # type: ignore[no-any-return]


def _iso(value: Any) -> str:
    """ISO 8601 UTC string of a datetime64 / cftime value."""
    if isinstance(value, np.datetime64):
        ts = np.datetime_as_string(value.astype("datetime64[s]"), unit="s")
        return f"{ts}Z"
    if hasattr(value, "isoformat"):  # cftime or datetime
        text = value.isoformat()
        return text if text.endswith("Z") or "+" in text else f"{text}Z"
    return str(value)


def _to_datetime(value: Any) -> dt.datetime | None:
    text = _iso(value).removesuffix("Z")
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _regular_step(values: np.ndarray) -> float | None:
    if values.size < 2:
        return None
    d = np.diff(values.astype("float64"))
    if np.allclose(d, d[0], rtol=1e-6, atol=0):
        return float(d[0])
    return None


def _time_step(values: np.ndarray) -> str | None:
    """ISO 8601 duration between regular time values (``P1M``, ``P1D``, ``PT6H``) or None."""
    if values.size < 2:
        return None
    if values.dtype.kind == "M":
        secs = np.diff(values.astype("datetime64[s]").astype("int64"))
        if np.all(secs == secs[0]) and secs[0] > 0:
            s = int(secs[0])
            if s % 86400 == 0:
                return f"P{s // 86400}D"
            if s % 3600 == 0:
                return f"PT{s // 3600}H"
            return f"PT{s}S"
        stamps = [_to_datetime(v) for v in values]
    else:
        stamps = [_to_datetime(v) for v in values]
    if any(s is None for s in stamps):
        return None
    months = [s.year * 12 + s.month for s in stamps if s is not None]
    dm = np.diff(months)
    days = {s.day for s in stamps if s is not None}
    if len(set(dm.tolist())) == 1 and dm[0] > 0 and len(days) == 1:
        n = int(dm[0])
        return f"P{n // 12}Y" if n % 12 == 0 else f"P{n}M"
    return None


_LENGTH_UNITS = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
                 "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0,
                 "kilometre": 1000.0, "kilometres": 1000.0}
_GEO_NAMES = {"X": ("lon", "longitude", "nav_lon", "glon"),
              "Y": ("lat", "latitude", "nav_lat", "glat")}
_GEO_STANDARD = {"X": "longitude", "Y": "latitude"}
_GEO_UNITS = {"X": ("degrees_east", "degree_east", "degree_e", "degrees_e", "degreee",
                    "degreese"),
              "Y": ("degrees_north", "degree_north", "degree_n", "degrees_n", "degreen",
                    "degreesn")}


def _is_time(var: xr.DataArray | xr.Variable) -> bool:
    """Whether a variable holds times: datetime64 / cftime values (decoded), or CF time
    attributes (``axis: T``, ``standard_name: time``) on a 1-D variable."""
    if var.ndim != 1:
        return False
    if var.dtype.kind == "M":
        return True
    if var.dtype == object and var.size and hasattr(var.values[0], "isoformat"):
        return True
    return str(var.attrs.get("axis", "")).upper() == "T" or var.attrs.get("standard_name") == "time"


def _axes(ds: xr.Dataset) -> dict[str, str]:
    """``{dimension name: 'X'|'Y'|'Z'|'T'}`` from cf-xarray (and common names as a fallback).

    A dimension without a coordinate of its own gets the axis of a 1-D coordinate along it (the
    sea-ice CDR's ``time`` on dimension ``tdim``, its ``xgrid`` on ``x``)."""
    out: dict[str, str] = {}
    try:
        import cf_xarray  # noqa: F401

        for ax, names in ds.cf.axes.items():
            for n in names:
                if n in ds.dims:
                    out[n] = ax
                elif n in ds.coords and ds[n].ndim == 1 and str(ds[n].dims[0]) not in ds.coords:
                    out.setdefault(str(ds[n].dims[0]), ax)
    except ImportError:  # pragma: no cover - cf-xarray is part of the catalog extra
        pass
    guesses = {"lon": "X", "longitude": "X", "x": "X", "lat": "Y", "latitude": "Y", "y": "Y",
               "time": "T", "lev": "Z", "depth": "Z", "level": "Z", "z": "Z"}
    for d in ds.dims:
        if d not in out and str(d).lower() in guesses:
            out[str(d)] = guesses[str(d).lower()]
    for name, var in ds.coords.items():  # a CF time coordinate along another dimension
        if name not in ds.dims and var.ndim == 1 and _is_time(var):
            dim = str(var.dims[0])
            if out.get(dim) is None and dim not in ds.coords:
                out[dim] = "T"
    return out


def _dim_coord(ds: xr.Dataset, dim: str, ax: str | None = None) -> xr.DataArray | None:
    """The coordinate that gives dimension ``dim`` its values: its own, else the 1-D
    coordinate along it with the same axis (``time`` on ``tdim``, ``xgrid`` on ``x``)."""
    if dim in ds.coords:
        return ds[dim]
    along = [ds[n] for n, v in ds.coords.items() if v.ndim == 1 and v.dims[0] == dim]
    if ax == "T":
        along = [v for v in along if _is_time(v)]
    elif ax in ("X", "Y", "Z"):
        std = {"X": "projection_x_coordinate", "Y": "projection_y_coordinate"}.get(ax)
        along = [v for v in along if str(v.attrs.get("axis", "")).upper() == ax
                 or (std is not None and v.attrs.get("standard_name") == std)]
    else:
        return None
    return along[0] if len(along) == 1 else None


def _decoded_time(var: xr.DataArray) -> xr.DataArray | None:
    """``var`` as datetimes: already decoded (datetime64 / cftime), or numbers with CF time
    units (``days since ...``) decoded here; None when it holds no times."""
    if var.ndim != 1:
        return None
    if var.dtype.kind == "M" or (var.dtype == object and var.size
                                 and hasattr(var.values[0], "isoformat")):
        return var
    units = str(var.attrs.get("units", ""))
    if var.dtype.kind in "iuf" and " since " in units:
        try:
            decoded = xr.decode_cf(xr.Dataset({"t": var.variable}), use_cftime=None)["t"]
        except (ValueError, TypeError, OverflowError):
            return None
        return decoded if decoded.dtype.kind == "M" or decoded.dtype == object else None
    return None


def _time_coord(ds: xr.Dataset, dim: str | None = None) -> xr.DataArray | None:
    """The dataset's time coordinate (along ``dim`` when given), as datetimes: the T axis's
    dimension coordinate, else a 1-D CF time variable along that dimension (the sea-ice CDR's
    ``time(tdim)``, NEMO's ``time_centered(time_counter)`` when ``time_counter`` holds no
    dates)."""
    for name, ax in _axes(ds).items():
        if ax != "T" or (dim is not None and name != dim):
            continue
        own = _dim_coord(ds, name, "T")
        cands = [own] if own is not None else []
        cands += [ds[n] for n in [*ds.coords, *ds.data_vars] if ds[n].ndim == 1
                  and ds[n].dims[0] == name and _is_time(ds[n])]
        for c in cands:
            decoded = _decoded_time(c)
            if decoded is not None:
                return decoded
    return None


def _length_scale(var: xr.DataArray) -> float | None:
    """Metres per unit of a projected coordinate, or None when its units are not a length."""
    return _LENGTH_UNITS.get(str(var.attrs.get("units", "")).strip().lower())


def _is_projected(var: xr.DataArray) -> bool:
    return (str(var.attrs.get("standard_name", "")).startswith("projection_")
            or _length_scale(var) is not None)


def _is_geographic(var: xr.DataArray, ax: str) -> bool:
    """Whether ``var`` holds longitudes (``ax='X'``) or latitudes (``'Y'``) in degrees."""
    if _is_projected(var):
        return False
    if var.attrs.get("standard_name") == _GEO_STANDARD[ax]:
        return True
    units = str(var.attrs.get("units", "")).strip().lower()
    if units in _GEO_UNITS[ax]:
        return True
    named = str(var.name).lower() in _GEO_NAMES[ax] \
        or str(var.attrs.get("axis", "")).upper() == ax
    # plain "degrees" (or no units) on a lon/lat-named or axis-tagged coordinate
    return named and (not units or units in ("degree", "degrees", "deg"))


def _grid_mapping(ds: xr.Dataset) -> xr.DataArray | None:
    """The CF grid-mapping variable the data variables refer to (``grid_mapping`` attribute,
    ``"crs"`` or ``"crs: x y"`` form), or the one variable with ``grid_mapping_name``."""
    for var in ds.data_vars.values():
        ref = str(var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping") or "")
        name = ref.split(":")[0].split()[0] if ref.strip() else ""
        if name and name in ds.variables:
            return ds[name]
    found = [ds[n] for n, v in ds.variables.items() if "grid_mapping_name" in v.attrs
             or "crs_wkt" in v.attrs]
    return found[0] if len(found) == 1 else None


def _grid_mapping_names(ds: xr.Dataset) -> set[str]:
    names = set()
    for var in ds.variables.values():
        ref = str(var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping") or "")
        for token in ref.replace(":", " ").split():
            if token in ds.variables:
                names.add(token)
    return names


def grid_crs(ds: xr.Dataset) -> Any | None:
    """The ``pyproj.CRS`` of the dataset's grid from its CF grid mapping (``crs_wkt``, GDAL's
    ``spatial_ref``, ``proj4text``, then the CF parameters), or None when it has none."""
    gm = _grid_mapping(ds)
    if gm is None:
        return None
    try:
        from pyproj import CRS
        from pyproj.exceptions import CRSError
    except ImportError:  # pragma: no cover - pyproj comes with the regrid/catalog extras
        return None
    attrs = dict(gm.attrs)
    # WKT first: the CF parameters of some products contradict it (the sea-ice CDR's
    # straight_vertical_longitude_from_pole 135 against its EPSG:3411 WKT's -45)
    for key in ("crs_wkt", "spatial_ref", "proj4text", "proj4", "proj4_params"):
        text = attrs.get(key)
        if isinstance(text, str) and text.strip():
            try:
                return CRS.from_user_input(text)
            except CRSError:
                continue
    try:
        return CRS.from_cf(attrs)
    except (CRSError, KeyError, ValueError, TypeError):
        return None


def _reference_system(crs: Any) -> int | dict[str, Any]:
    """``reference_system`` of the datacube extension: the EPSG code, else PROJJSON."""
    code = crs.to_epsg()
    return int(code) if code is not None else dict(crs.to_json_dict())


def _geo_coord(ds: xr.Dataset, ax: str) -> xr.DataArray | None:
    """The longitudes (``ax='X'``) or latitudes (``'Y'``) in degrees of the dataset's cells:
    a 1-D axis coordinate or a 2-D (curvilinear, swath) variable; never a projected x/y in
    metres (see :func:`_projected_xy`)."""
    for name, a in _axes(ds).items():
        if a == ax and name in ds.coords and _is_geographic(ds[name], ax):
            return ds[name]
    try:
        names = ds.cf.coordinates.get(_GEO_STANDARD[ax], [])
    except (AttributeError, KeyError):
        names = []
    for name in names:
        if name in ds.variables and _is_geographic(ds[name], ax):
            return ds[name]
    for key, var in ds.variables.items():  # lat/lon stored as data variables
        if var.ndim >= 1 and var.dtype.kind in "iuf" and _is_geographic(ds[key], ax):
            return ds[key]
    return None


def _crs_axis_scale(crs: Any) -> float:
    """Metres per unit of the projected CRS's own x/y axes (1000 for a WKT with
    ``LENGTHUNIT["kilometre",1000]`` or a proj4 string with ``+units=km``); 1 when unknown."""
    try:
        factor = float(crs.axis_info[0].unit_conversion_factor)
    except (AttributeError, IndexError, TypeError, ValueError):
        return 1.0
    return factor if np.isfinite(factor) and factor > 0 else 1.0


def _projected_xy(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """``(x, y, crs)`` of a projected grid: 1-D x/y coordinates in the unit of the CRS's own
    axes (converted from their ``units`` attribute: km coordinates of a metre CRS, or metre
    coordinates of a km CRS; taken as they are when they have no length unit) and the CRS
    of its grid mapping, or None."""
    crs = grid_crs(ds)
    if crs is None or crs.is_geographic:
        return None
    crs_scale = _crs_axis_scale(crs)
    axes = _axes(ds)
    found: dict[str, np.ndarray] = {}
    for ax, std in (("X", "projection_x_coordinate"), ("Y", "projection_y_coordinate")):
        cands = [ds[n] for n in ds.coords if ds[n].ndim == 1
                 and ds[n].attrs.get("standard_name") == std]
        cands += [c for d, a in axes.items() if a == ax
                  for c in [_dim_coord(ds, d, ax)] if c is not None and c.ndim == 1]
        for c in cands:
            if c.dtype.kind in "iuf" and c.size:
                scale = _length_scale(c)
                values = np.asarray(c.values, dtype="float64")
                found[ax] = values if scale is None else values * (scale / crs_scale)
                break
    if "X" not in found or "Y" not in found:
        return None
    return found["X"], found["Y"], crs


def _edges(values: np.ndarray) -> tuple[float, float]:
    """The outer cell edges of 1-D cell centres."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if values.size >= 2:
        h = abs(float(np.nanmedian(np.diff(values)))) / 2
        lo, hi = lo - h, hi + h
    return lo, hi


def projected_bbox(x: np.ndarray, y: np.ndarray, crs: Any, samples: int = 256) -> list[float]:
    """WGS84 ``[west, south, east, north]`` of a projected grid with cell centres ``x``, ``y``
    in ``crs`` (in the unit of its axes: metres, or km for a km CRS): its outer cell edges
    sampled densely and transformed; a pole inside the grid makes the box reach that pole and
    span every longitude."""
    from pyproj import CRS, Transformer

    x0, x1 = _edges(x)
    y0, y1 = _edges(y)
    t = np.linspace(0.0, 1.0, samples)
    bx = np.concatenate([x0 + (x1 - x0) * t, np.full(samples, x1), x1 - (x1 - x0) * t,
                         np.full(samples, x0)])
    by = np.concatenate([np.full(samples, y0), y0 + (y1 - y0) * t, np.full(samples, y1),
                         y1 - (y1 - y0) * t])
    to_geo = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_geo.transform(bx, by)
    lon, lat = np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64")
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return [-180.0, -90.0, 180.0, 90.0]
    lon, lat = lon[ok], lat[ok]
    south, north = float(lat.min()), float(lat.max())
    west, east = _lon_arc(lon)
    to_proj = Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True)
    for pole in (90.0, -90.0):
        with np.errstate(all="ignore"):
            px, py = to_proj.transform(0.0, pole)
        if not (np.isfinite(px) and np.isfinite(py)):
            continue
        if x0 <= px <= x1 and y0 <= py <= y1:  # the pole is a point of the grid
            north, south = (90.0, south) if pole > 0 else (north, -90.0)
            tol = 1e-9 * max(x1 - x0, y1 - y0)
            if x0 + tol < px < x1 - tol and y0 + tol < py < y1 - tol:
                west, east = -180.0, 180.0  # inside: every longitude
    return [round(west, 6), round(max(-90.0, south), 6), round(east, 6),
            round(min(90.0, north), 6)]


def spatial_extent_known(ds: xr.Dataset) -> bool:
    """Whether the dataset says where it is: longitudes and latitudes in degrees, or a
    projected grid with a CF grid mapping."""
    return (_geo_coord(ds, "X") is not None and _geo_coord(ds, "Y") is not None) \
        or _projected_xy(ds) is not None


def _half_step(values: np.ndarray) -> float:
    step = _regular_step(values)
    return abs(step) / 2 if step else 0.0


def _lon_arc(lon: np.ndarray) -> tuple[float, float]:
    """``(west, east)`` in -180..180 of the shortest arc holding every longitude: its ends are
    either side of the widest gap between neighbouring points (west > east: it crosses 180)."""
    x = np.asarray(lon, dtype="float64").ravel()
    x = np.unique(((x[np.isfinite(x)] + 180.0) % 360.0) - 180.0)
    if x.size == 0:
        return -180.0, 180.0
    gaps = np.diff(x)
    wrap = x[0] + 360.0 - x[-1]
    if gaps.size == 0 or wrap >= gaps.max():
        return float(x[0]), float(x[-1])
    i = int(np.argmax(gaps))
    return float(x[i + 1]), float(x[i])


def spatial_bbox(ds: xr.Dataset) -> list[float]:
    """WGS84 bounding box ``[west, south, east, north]`` of a dataset's cells.

    From longitudes/latitudes in degrees (1-D axes, or 2-D variables of a curvilinear grid or
    swath); else from a projected grid's x/y and its CF ``grid_mapping`` (the grid's edges
    transformed, see :func:`projected_bbox`); else the whole globe -- check
    :func:`spatial_extent_known` (:func:`publish` warns and marks the Collection)."""
    lon, lat = _geo_coord(ds, "X"), _geo_coord(ds, "Y")
    if lon is None or lat is None:
        proj = _projected_xy(ds)
        if proj is not None:
            return projected_bbox(*proj)
        return [-180.0, -90.0, 180.0, 90.0]
    lonv = np.asarray(lon.values, dtype="float64")
    latv = np.asarray(lat.values, dtype="float64")
    hx = _half_step(lonv) if lonv.ndim == 1 else 0.0
    hy = _half_step(latv) if latv.ndim == 1 else 0.0
    south = max(-90.0, float(np.nanmin(latv)) - hy)
    north = min(90.0, float(np.nanmax(latv)) + hy)
    if not (lonv.ndim == 1 and _regular_step(lonv)):
        # tracks and swaths: the shortest arc that holds every point (a pass across 0 in
        # 0..360 longitudes, or across 180 in -180..180, is narrow, not the whole globe)
        west, east = _lon_arc(lonv)
        return [round(west, 6), round(south, 6), round(east, 6), round(north, 6)]
    west, east = float(np.nanmin(lonv)) - hx, float(np.nanmax(lonv)) + hx
    if east - west >= 360.0 - 1e-9:
        west, east = -180.0, 180.0
    elif east > 180.0:
        # 0..360 longitudes: wrap to -180..180 (a box across the antimeridian has west > east)
        west = ((west + 180.0) % 360.0) - 180.0
        east = ((east + 180.0) % 360.0) - 180.0
        if west == east:
            west, east = -180.0, 180.0
    return [round(west, 6), round(south, 6), round(east, 6), round(north, 6)]


def temporal_interval(ds: xr.Dataset) -> list[str | None]:
    """``[first, last]`` ISO 8601 times of the dataset's time coordinate (a dimension
    coordinate, or a CF time coordinate along another dimension such as the sea-ice CDR's
    ``time(tdim)``); ``[None, None]`` when it has none (its time extent is unknown)."""
    coord = _time_coord(ds)
    if coord is not None:
        v = coord.values
        if v.dtype.kind == "M":
            v = v[~np.isnat(v)]
        if v.size and (v.dtype.kind == "M" or v.dtype == object):
            return [_iso(v.min() if v.dtype.kind == "M" else v[0]),
                    _iso(v.max() if v.dtype.kind == "M" else v[-1])]
    return [None, None]


def cube_dimensions(ds: xr.Dataset) -> dict[str, Any]:
    """``cube:dimensions`` for every dimension of ``ds``.

    A dimension without a coordinate of its own takes the values of the 1-D coordinate along
    it (``time(tdim)``, ``xgrid(x)``).  Horizontal spatial dimensions carry their real
    ``reference_system``: 4326 for longitudes/latitudes, the EPSG code (or PROJJSON) of the
    grid mapping for a projected x/y."""
    axes = _axes(ds)
    crs = None
    out: dict[str, Any] = {}
    for name in ds.dims:
        name = str(name)
        ax = axes.get(name)
        coord = _dim_coord(ds, name, ax)
        if ax == "T":
            as_time = _time_coord(ds, name)
            coord = as_time if as_time is not None else coord
        attrs = coord.attrs if coord is not None else {}
        obj: dict[str, Any] = {}
        desc = attrs.get("long_name") or attrs.get("standard_name")
        if desc:
            obj["description"] = str(desc)
        values = np.asarray(coord.values) if coord is not None else None
        if ax == "T" and values is not None and (values.dtype.kind == "M" or values.dtype == object):
            obj["type"] = "temporal"
            obj["extent"] = temporal_interval(ds)
            obj["step"] = _time_step(values)
        elif ax in ("X", "Y", "Z") and values is not None and values.dtype.kind in "iuf":
            obj["type"] = "spatial"
            obj["axis"] = ax.lower()
            obj["extent"] = [_num(np.nanmin(values)), _num(np.nanmax(values))]
            if ax == "Z" and values.size <= 100:
                obj["values"] = [_num(v) for v in values]
            step = _regular_step(values)
            obj["step"] = _num(step) if step is not None else None
            if attrs.get("units"):
                obj["unit"] = str(attrs["units"])
            if ax in ("X", "Y") and coord is not None:
                if _is_projected(coord):
                    crs = crs if crs is not None else (grid_crs(ds) or False)
                    if crs:
                        obj["reference_system"] = _reference_system(crs)
                    # else: unknown projection; no reference_system (it would mean 4326)
                else:
                    obj["reference_system"] = 4326
        else:
            obj["type"] = "other"
            if values is None:
                obj["extent"] = [0, int(ds.sizes[name]) - 1]
                obj["step"] = 1
            elif values.dtype.kind in "iuf":
                obj["extent"] = [_num(np.nanmin(values)), _num(np.nanmax(values))]
                step = _regular_step(values)
                obj["step"] = _num(step) if step is not None else None
            else:
                obj["values"] = [str(v) for v in values.tolist()[:1000]]
            if attrs.get("units"):
                obj["unit"] = str(attrs["units"])
        out[name] = obj
    return out


def _non_data_names(ds: xr.Dataset) -> set[str]:
    """Variables that describe the grid rather than hold data: CF grid mappings (named by a
    ``grid_mapping`` attribute, or carrying ``grid_mapping_name``/``crs_wkt``) and cell bounds
    (named by a ``bounds`` attribute)."""
    names = _grid_mapping_names(ds)
    for name, var in ds.variables.items():
        if "grid_mapping_name" in var.attrs or "crs_wkt" in var.attrs:
            names.add(str(name))
        for key in ("bounds", "climatology"):
            ref = var.attrs.get(key) or var.encoding.get(key)
            if isinstance(ref, str) and ref in ds.variables:
                names.add(ref)
    return names


def cube_variables(ds: xr.Dataset) -> dict[str, Any]:
    """``cube:variables``: data variables (``data``) and, as ``auxiliary``, non-dimension
    coordinates and the variables that describe the grid (grid mappings such as
    ``projection``/``crs``, cell bounds), with dimensions, unit, data type, description and
    nodata."""
    out: dict[str, Any] = {}
    grid = _non_data_names(ds)
    items = [(n, v, "auxiliary" if n in grid else "data") for n, v in ds.data_vars.items()]
    items += [(n, v, "auxiliary") for n, v in ds.coords.items() if n not in ds.dims]
    for name, var, kind in items:
        obj: dict[str, Any] = {"dimensions": [str(d) for d in var.dims], "type": kind}
        desc = var.attrs.get("long_name") or var.attrs.get("standard_name")
        if desc:
            obj["description"] = str(desc)
        units = var.attrs.get("units") or var.encoding.get("units")
        if units:
            obj["unit"] = str(units)
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        obj["data_type"] = _data_type(dtype)
        fill = var.encoding.get("_FillValue", var.attrs.get("_FillValue"))
        if fill is not None:
            f = np.asarray(fill).item()
            if isinstance(f, float) and not math.isfinite(f):
                obj["nodata"] = "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
            elif isinstance(f, int | float):
                obj["nodata"] = f
        if var.attrs.get("standard_name"):
            obj[STANDARD_NAME] = str(var.attrs["standard_name"])
        out[str(name)] = obj
    return out


# -- the Collection --------------------------------------------------------------------------


def _meta_dict(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if hasattr(meta, "model_dump"):
        return dict(meta.model_dump(exclude_none=True))
    return dict(meta)


def _media_type(store_url: str) -> str:
    from arcoforge.forge.targets.base import resolve_target

    return resolve_target(store_url).media_type


def _store_versions(store_url: str, storage_options: Mapping[str, Any] | None
                    ) -> list[tuple[str, str | None, bool]]:
    """``(version, created, latest)`` of the versions the store itself keeps
    (:mod:`arcoforge.forge.versions`: Icechunk tags, ``<url>.versions/``), or ``[]``."""
    try:
        from arcoforge.forge.versions import list_versions
    except ImportError:
        return []
    try:
        found = list_versions(store_url, storage_options)
    except Exception:  # noqa: BLE001 - a store without versions
        return []
    return [(str(getattr(v, "version", v)), getattr(v, "created", None),
             bool(getattr(v, "latest", False))) for v in found or []]


def collection_from_dataset(ds: xr.Dataset, dataset_id: str, store_url: str, *,
                            meta: Any = None, version: str | None = None,
                            feedstock: str | None = None,
                            previous: Mapping[str, Any] | None = None,
                            store_versions: list[tuple[str, str | None, bool]] | None = None
                            ) -> dict[str, Any]:
    """A STAC Collection (dict) describing ``ds`` stored at ``store_url``."""
    import pystac

    m = _meta_dict(meta)
    attrs = ds.attrs
    title = m.get("title") or attrs.get("title") or dataset_id
    description = (m.get("description") or attrs.get("summary") or attrs.get("description")
                   or attrs.get("title") or f"Dataset {dataset_id} built by arcoforge.")
    version = version or attrs.get(VERSION) or m.get("version") or "1.0"
    bbox = spatial_bbox(ds)
    interval = temporal_interval(ds)
    start, end = (_to_datetime(t) if t else None for t in interval)
    providers = [pystac.Provider(name=p["name"], roles=list(p.get("roles", [])),
                                 url=p.get("url"), description=p.get("description"))
                 for p in m.get("providers", [])]
    keywords = list(m.get("keywords", []))
    col = pystac.Collection(
        id=dataset_id,
        title=str(title),
        description=str(description).strip(),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]),
                             pystac.TemporalExtent([[start, end]])),
        license=m.get("license") or "other",
        providers=providers or None,
        keywords=keywords or None,
        stac_extensions=[DATACUBE_EXTENSION],
    )
    d = col.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
    ]
    d["cube:dimensions"] = cube_dimensions(ds)
    d["cube:variables"] = cube_variables(ds)

    # provenance
    sources = list(attrs.get(SOURCES) or [])
    recipe_hash = attrs.get(RECIPE_HASH)
    created = attrs.get(CREATED)
    entry = {"version": version, "href": store_url, "created": created,
             "recipe_hash": recipe_hash, "sources": len(sources)}
    # a version the store itself keeps is opened through it (af.open_dataset(url, version=))
    kept = {v: (created, latest) for v, created, latest in store_versions or []}
    if kept.get(version, (None, False))[1]:
        entry["in_store"] = True
    prov_href = f"./{provenance_file(version)}"
    entry["provenance"] = prov_href
    versions = [dict(v) for v in (previous or {}).get(VERSIONS, [])
                if v.get("version") != version]
    if kept:  # what the store keeps is known: a listed version it no longer has is history
        for v in versions:
            if v.get("href") == store_url and str(v.get("version")) not in kept:
                v.pop("in_store", None)
                v[REMOVED] = True
    versions.append(entry)
    for sv, (screated, latest) in kept.items():  # older versions archived by the store
        if not latest:
            versions = [v for v in versions if v.get("version") != sv or v.get("href") != store_url]
            versions.append({"version": sv, "href": store_url, "created": screated,
                             "in_store": True})
    versions.sort(key=lambda v: tuple(int(p) for p in str(v["version"]).split(".")
                                      if p.isdigit()))
    latest = versions[-1]["version"]
    d["version"] = latest
    d[VERSIONS] = versions
    d[RECIPE_HASH] = recipe_hash
    d[CREATED] = created
    d[PACKAGE_VERSIONS] = attrs.get(PACKAGE_VERSIONS)
    if m.get("maintainers"):
        d[MAINTAINERS] = m["maintainers"]
    if not spatial_extent_known(ds):
        d[UNKNOWN_EXTENT] = ["spatial"]
    if interval == [None, None]:
        d.setdefault(UNKNOWN_EXTENT, []).append("temporal")

    d["assets"] = {
        "zarr": {
            "href": store_url,
            "type": _media_type(store_url),
            "title": f"{title} (version {version})",
            "roles": ["data"],
            VERSION: version,
        },
        "provenance": {
            "href": prov_href,
            "type": "application/json",
            "title": "Provenance: recipe hash, sources with checksums, package versions",
            "roles": ["metadata"],
        },
    }
    d["links"].append({"rel": "describedby", "href": prov_href,
                       "type": "application/json",
                       "title": f"provenance (recipe sha256 {recipe_hash}, {len(sources)} sources)"})
    if feedstock:
        d["links"].append({"rel": "via", "href": feedstock, "title": "feedstock (meta.yaml + recipe)"})
    license_id = d["license"]
    if license_id not in ("other",) and not str(license_id).startswith("LicenseRef-"):
        d["links"].append({"rel": "license", "href": f"https://spdx.org/licenses/{license_id}.html",
                           "type": "text/html"})
    return d


def _catalog_view(root: xr.Dataset, store_url: str,
                  storage_options: Mapping[str, Any] | None) -> xr.Dataset:
    """What the Collection describes: ``root``, or for a store built with groups every
    group's variables under their paths (``"data_01/ku/ssha"``), with the dimension
    coordinates (``time``) of the group that holds them and the root's attributes."""
    from arcoforge.open import open_datatree

    groups = [str(g) for g in root.attrs.get(GROUPS) or []]
    if not groups:
        return root
    tree = open_datatree(store_url, storage_options=storage_options)
    coords: dict[str, xr.Variable] = {}
    data: dict[str, xr.Variable] = {}
    for name, var in root.variables.items():
        (coords if name in root.coords else data)[str(name)] = var
    for g in groups:
        node = tree["/" + g]
        assert isinstance(node, xr.DataTree)
        ds = node.to_dataset(inherit=False)
        for name, var in ds.variables.items():
            if name in ds.dims and name not in coords:
                coords[str(name)] = var  # the dimension's coordinate: time, lat, ...
            elif name in ds.coords:
                coords[f"{g}/{name}"] = var
            else:
                data[f"{g}/{name}"] = var
    return xr.Dataset(data, coords=coords, attrs=root.attrs)


def _provenance(ds: xr.Dataset, dataset_id: str, version: str, store_url: str,
                feedstock: str | None) -> dict[str, Any]:
    a = ds.attrs
    return {
        "id": dataset_id,
        "version": version,
        "store": store_url,
        "feedstock": feedstock,
        "recipe_hash": a.get(RECIPE_HASH),
        "recipe": a.get(RECIPE),
        "created": a.get(CREATED),
        "package_versions": a.get(PACKAGE_VERSIONS),
        "sources": list(a.get(SOURCES) or []),
    }


def _store_url(target: Any) -> str:
    from arcoforge.forge.targets.base import resolve_target

    url = resolve_target(target).url.rstrip("/")
    if "://" not in url:
        url = os.path.abspath(url)
    return url


def provenance_file(version: str) -> str:
    """The name of a version's provenance file in its dataset's folder."""
    return f"provenance-{version}.json"


def _warn_publish(dataset_id: str, version: str, store_url: str,
                  previous: Mapping[str, Any] | None, col: Mapping[str, Any]) -> None:
    """Warn (UserWarning) when a publish replaces a version published from another store, or
    describes a dataset whose spatial extent is unknown."""
    for v in (previous or {}).get(VERSIONS, []):
        if str(v.get("version")) == version and v.get("href") not in (None, store_url):
            warnings.warn(f"dataset {dataset_id!r} version {version} was published from store "
                          f"{v.get('href')}; it now points to store {store_url} instead (the "
                          "old entry is replaced). Give a new version (--version) to keep "
                          "both.", UserWarning, stacklevel=3)
    if "spatial" in (col.get(UNKNOWN_EXTENT) or []):
        # (an unknown time is not warned about: a dataset without time is usually static)
        warnings.warn(f"dataset {dataset_id!r}: the data does not tell where it is (no "
                      "longitude/latitude in degrees, no projected x/y with a CF grid_mapping): "
                      "its bbox is written as the whole globe, and the Collection lists "
                      f"'spatial' in {UNKNOWN_EXTENT!r}, so searches by bbox do not match it.",
                      UserWarning, stacklevel=3)


def publish(catalog: Any, target: Any, *, dataset_id: str | None = None, meta: Any = None,
            version: str | None = None, feedstock: str | None = None,
            storage_options: Mapping[str, Any] | None = None,
            catalog_storage_options: Mapping[str, Any] | None = None,
            validate: bool = True, lock_timeout: float | None = 300.0) -> dict[str, Any]:
    """Write or update the STAC Collection of a built store in a static catalog.

    ``dataset_id`` defaults to the store's name (``ersst-v5`` for ``.../ersst-v5.zarr``) and
    must match :data:`ID_PATTERN`; ``meta`` is a
    :class:`~arcoforge.forge.feedstock.FeedstockMeta` (or a dict of its fields); ``version``
    defaults to the store's, then meta's.  The Collection describes the latest version; an
    older one is added to its ``arcoforge:versions``.  Publishes to one catalog run one at a
    time (waiting up to ``lock_timeout`` seconds for the catalog's lock).  Returns the
    Collection dict.

    Raises :class:`~arcoforge.errors.ConfigError` for a bad id or version, an id differing
    from a published one only in case, or a Collection that is not valid STAC (core schema or
    datacube fields), and :class:`~arcoforge.errors.BuildLockedError` when the catalog stays
    locked.
    """
    from arcoforge.open import open_dataset

    store_url = _store_url(target)
    if dataset_id is None:
        dataset_id = posixpath.basename(store_url).removesuffix(".zarr")
        check_dataset_id(dataset_id, hint=" The id comes from the store's name: give one with "
                         "dataset_id= (--id on the command line).")
    check_dataset_id(dataset_id)
    root = _root(catalog)
    ds = _catalog_view(open_dataset(store_url, storage_options=storage_options), store_url,
                       storage_options)
    m = _meta_dict(meta)
    version = str(version or ds.attrs.get(VERSION) or m.get("version") or "1.0")
    check_dataset_id(version, what=f"version of {dataset_id!r}")
    feedstock_href = os.path.abspath(feedstock) if feedstock and "://" not in feedstock else feedstock
    store_versions = _store_versions(store_url, storage_options)
    so = catalog_storage_options
    with catalog_lock(root, so, timeout=lock_timeout):
        _remove_leftovers(root, so)
        _remove_leftovers(_join(root, dataset_id), so)
        cat = read_catalog(root, so)
        for link in cat.get("links", []):
            folder = str(link.get("href", "")).removeprefix("./").split("/")[0]
            if (link.get("rel") == "child" and folder != dataset_id
                    and folder.lower() == dataset_id.lower()):
                raise ConfigError(f"dataset id {dataset_id!r} differs only in case from the "
                                  f"published {folder!r} of catalog {root}: on a case-"
                                  f"insensitive disk they would share a folder. Publish it as "
                                  f"{folder!r}, or choose another id.")
        col_url = _join(root, dataset_id, COLLECTION_FILE)
        previous = _read_json(col_url, so) if _exists(col_url, so) else None
        col = collection_from_dataset(ds, dataset_id, store_url, meta=meta, version=version,
                                      feedstock=feedstock_href, previous=previous,
                                      store_versions=store_versions)
        _warn_publish(dataset_id, version, store_url, previous, col)
        if previous is not None and col["version"] != version \
                and _version_key(previous.get("version")) > _version_key(version):
            # an older version: the Collection keeps describing the latest, and lists this one
            col = {**previous, VERSIONS: col[VERSIONS]}
        if validate:
            problems = validate_collection(col)
            if problems:
                raise ConfigError(f"STAC Collection {dataset_id!r} is not valid:\n  "
                                  + "\n  ".join(problems))
        # the order matters: the version's provenance first (nothing links to it yet), then the
        # Collection (the commit point: it now links that provenance), then the catalog's link
        _write_json(_join(root, dataset_id, provenance_file(version)),
                    _provenance(ds, dataset_id, version, store_url, feedstock_href), so)
        _write_json(col_url, col, so)
        href = f"./{dataset_id}/{COLLECTION_FILE}"
        links = [ln for ln in cat.get("links", []) if not (ln.get("rel") == "child"
                                                            and ln.get("href") == href)]
        links.append({"rel": "child", "href": href, "type": "application/json",
                      "title": col.get("title", dataset_id)})
        cat["links"] = links
        _write_json(_join(root, CATALOG_FILE), cat, so)
    return col


# -- offline validation ----------------------------------------------------------------------


def core_problems(stac: Mapping[str, Any]) -> list[str]:
    """STAC core validation of a Catalog/Collection/Item dict against pystac's bundled
    schemas, fully offline (extension schemas are not fetched; ``stac_extensions`` is ignored)."""
    from jsonschema import Draft7Validator
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # never go to the network

    import jsonschema_specifications

    cache = get_local_schema_cache()
    registry: Registry[Any] = Registry(retrieve=refuse).with_resources(  # type: ignore[call-arg]
        (uri, Resource.from_contents(schema)) for uri, schema in cache.items()
    )
    registry = registry.combine(jsonschema_specifications.REGISTRY)
    kind = stac.get("type")
    name = {"Collection": "collection", "Catalog": "catalog", "Feature": "item"}.get(str(kind))
    if name is None:
        return [f"unknown STAC type {kind!r}"]
    version = str(stac.get("stac_version", ""))
    uri = f"https://schemas.stacspec.org/v{version}/{name}-spec/json-schema/{name}.json"
    if uri not in cache:
        return [f"no bundled schema for STAC {version} {name}s (pystac has {sorted(cache)[0]})"]
    doc = {k: v for k, v in stac.items() if k != "stac_extensions" and not k.startswith(HREF)}
    validator = Draft7Validator(cache[uri], registry=registry)
    problems = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        problems.append(f"core: {where}: {err.message}")
    return problems


_SPATIAL_AXES = ("x", "y", "z")


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _iso_ok(x: Any) -> bool:
    if not isinstance(x, str):
        return False
    try:
        dt.datetime.fromisoformat(x.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def _check_extent(where: str, ext: Any, *, allow_null: bool, check: Any) -> list[str]:
    if not isinstance(ext, list) or len(ext) != 2:
        return [f"{where}.extent must be a two-element array"]
    out = []
    for v in ext:
        if v is None:
            if not allow_null:
                out.append(f"{where}.extent: open intervals (null) are not allowed here")
        elif not check(v):
            out.append(f"{where}.extent: {v!r} has the wrong type")
    return out


def datacube_problems(stac: Mapping[str, Any]) -> list[str]:
    """Check the datacube extension fields (``cube:dimensions``, ``cube:variables``) of a
    Collection or Item against the extension's specification (v2.x)."""
    problems: list[str] = []
    exts = stac.get("stac_extensions") or []
    if not any("stac-extensions.github.io/datacube/" in e for e in exts):
        problems.append("stac_extensions does not declare the datacube extension")
    target = stac.get("properties", stac) if stac.get("type") == "Feature" else stac
    dims = target.get("cube:dimensions")
    if not isinstance(dims, Mapping) or not dims:
        problems.append("cube:dimensions is required and must be a non-empty object")
        dims = {}
    for name, d in dims.items():
        w = f"cube:dimensions.{name}"
        if not isinstance(d, Mapping):
            problems.append(f"{w} must be an object")
            continue
        typ = d.get("type")
        if not isinstance(typ, str) or not typ:
            problems.append(f"{w}.type is required (a string)")
            continue
        if "description" in d and not isinstance(d["description"], str):
            problems.append(f"{w}.description must be a string")
        if "unit" in d and not isinstance(d["unit"], str):
            problems.append(f"{w}.unit must be a string")
        if typ == "spatial":
            axis = d.get("axis")
            if axis not in _SPATIAL_AXES:
                problems.append(f"{w}.axis is required for spatial dimensions: one of x, y, z")
                continue
            if axis in ("x", "y"):
                if "extent" not in d:
                    problems.append(f"{w}.extent is required for horizontal spatial dimensions")
                else:
                    problems += _check_extent(w, d["extent"], allow_null=False, check=_is_num)
            else:
                if "extent" not in d and "values" not in d:
                    problems.append(f"{w}: a vertical dimension needs extent or values")
                if "extent" in d:
                    problems += _check_extent(w, d["extent"], allow_null=True, check=_is_num)
            if "values" in d and not (isinstance(d["values"], list) and all(
                    _is_num(v) or (axis == "z" and isinstance(v, str)) for v in d["values"])):
                problems.append(f"{w}.values must be an array of numbers")
            if "step" in d and d["step"] is not None and not _is_num(d["step"]):
                problems.append(f"{w}.step must be a number or null")
            rs = d.get("reference_system")
            if rs is not None and not isinstance(rs, str | int | dict) or isinstance(rs, bool):
                problems.append(f"{w}.reference_system must be an EPSG code, WKT2 or PROJJSON")
        elif typ == "temporal" and isinstance(d.get("extent"), list) and all(
                v is None or isinstance(v, str) for v in d["extent"]):
            problems += _check_extent(w, d["extent"], allow_null=True, check=_iso_ok)
            if "values" in d and not (isinstance(d["values"], list)
                                      and all(_iso_ok(v) for v in d["values"])):
                problems.append(f"{w}.values must be ISO 8601 strings")
            step = d.get("step")
            if step is not None and not (isinstance(step, str) and step.startswith("P")):
                problems.append(f"{w}.step must be an ISO 8601 duration (e.g. 'P1M') or null")
        elif typ == "geometry":
            bbox = d.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) in (4, 6) and all(map(_is_num, bbox))):
                problems.append(f"{w}.bbox is required for geometry dimensions (4 or 6 numbers)")
        else:  # additional dimension (incl. non-ISO temporal)
            if "extent" not in d and "values" not in d:
                problems.append(f"{w}: an additional dimension needs extent or values")
            if "extent" in d:
                problems += _check_extent(w, d["extent"], allow_null=True, check=_is_num)
            if "values" in d and not (isinstance(d["values"], list) and all(
                    _is_num(v) or isinstance(v, str) for v in d["values"])):
                problems.append(f"{w}.values must be numbers or strings")
            if "step" in d and d["step"] is not None and not _is_num(d["step"]):
                problems.append(f"{w}.step must be a number or null")
    variables = target.get("cube:variables", {})
    if not isinstance(variables, Mapping):
        problems.append("cube:variables must be an object")
        variables = {}
    for name, v in variables.items():
        w = f"cube:variables.{name}"
        if not isinstance(v, Mapping):
            problems.append(f"{w} must be an object")
            continue
        vd = v.get("dimensions")
        if not isinstance(vd, list) or not all(isinstance(x, str) for x in vd):
            problems.append(f"{w}.dimensions is required (an array of dimension names)")
        else:
            missing = [x for x in vd if x not in dims]
            if missing:
                problems.append(f"{w}.dimensions refers to unknown dimensions {missing}")
        if v.get("type") not in ("data", "auxiliary"):
            problems.append(f"{w}.type is required: 'data' or 'auxiliary'")
        if "unit" in v and not isinstance(v["unit"], str):
            problems.append(f"{w}.unit must be a string")
        if "nodata" in v and not (_is_num(v["nodata"]) or isinstance(v["nodata"], str)):
            problems.append(f"{w}.nodata must be a number or a string")
        allowed = set(_DATA_TYPES.values()) | {"cint16", "cint32", "other"}
        if "data_type" in v and v["data_type"] not in allowed:
            problems.append(f"{w}.data_type {v['data_type']!r} is not a STAC data type")
    shared = set(dims) & set(variables)
    if shared:
        problems.append(f"keys used both as dimension and variable: {sorted(shared)}")
    return problems


def validate_collection(stac: Mapping[str, Any]) -> list[str]:
    """Offline validation: STAC core (bundled schemas) + datacube fields; ``[]`` when valid."""
    return core_problems(stac) + datacube_problems(stac)
