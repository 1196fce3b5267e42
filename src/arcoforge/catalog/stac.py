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


def _axes(ds: xr.Dataset) -> dict[str, str]:
    """``{dimension name: 'X'|'Y'|'Z'|'T'}`` from cf-xarray (and common names as a fallback)."""
    out: dict[str, str] = {}
    try:
        import cf_xarray  # noqa: F401

        for ax, names in ds.cf.axes.items():
            for n in names:
                if n in ds.dims:
                    out[n] = ax
    except ImportError:  # pragma: no cover - cf-xarray is part of the catalog extra
        pass
    guesses = {"lon": "X", "longitude": "X", "x": "X", "lat": "Y", "latitude": "Y", "y": "Y",
               "time": "T", "lev": "Z", "depth": "Z", "level": "Z", "z": "Z"}
    for d in ds.dims:
        if d not in out and str(d).lower() in guesses:
            out[str(d)] = guesses[str(d).lower()]
    return out


def _geo_coord(ds: xr.Dataset, ax: str) -> xr.DataArray | None:
    for name, a in _axes(ds).items():
        if a == ax and name in ds.coords:
            return ds[name]
    key = {"X": "longitude", "Y": "latitude"}[ax]
    try:
        names = ds.cf.coordinates.get(key, [])
        if names:
            return ds[names[0]]
    except (AttributeError, KeyError):
        pass
    return None


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
    """WGS84 bounding box ``[west, south, east, north]`` of a dataset's cells."""
    lon, lat = _geo_coord(ds, "X"), _geo_coord(ds, "Y")
    if lon is None or lat is None:
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
    for name, ax in _axes(ds).items():
        if ax == "T" and name in ds.coords:
            v = ds[name].values
            if v.size and (v.dtype.kind == "M" or v.dtype == object):
                return [_iso(v.min() if v.dtype.kind == "M" else v[0]),
                        _iso(v.max() if v.dtype.kind == "M" else v[-1])]
    return [None, None]


def cube_dimensions(ds: xr.Dataset) -> dict[str, Any]:
    """``cube:dimensions`` for every dimension of ``ds``."""
    axes = _axes(ds)
    out: dict[str, Any] = {}
    for name in ds.dims:
        name = str(name)
        ax = axes.get(name)
        coord = ds[name] if name in ds.coords else None
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
            if ax in ("X", "Y"):
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


def cube_variables(ds: xr.Dataset) -> dict[str, Any]:
    """``cube:variables``: data variables (``data``) and non-dimension coordinates
    (``auxiliary``), with dimensions, unit, data type, description and nodata."""
    out: dict[str, Any] = {}
    items = [(n, v, "data") for n, v in ds.data_vars.items()]
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
