"""Find datasets in a static arcoforge STAC catalog and open them by id.

>>> hits = search("catalog/", bbox=[-30, 30, 0, 60], time="2020-01/2020-06", variables=["sst"])
>>> ds = open_dataset("catalog/", hits[0].id)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from arcoforge.catalog.stac import (
    CATALOG_FILE,
    REMOVED,
    UNKNOWN_EXTENT,
    _exists,
    _join,
    _root,
    read_collections,
)
from arcoforge.errors import ConfigError, NotFoundError
from arcoforge.provenance import HREF, STANDARD_NAME, VERSIONS

__all__ = ["CollectionSummary", "search", "summaries", "get_collection", "store_of",
           "open_dataset", "require_catalog"]


@dataclass
class CollectionSummary:
    """What a search returns about one dataset."""

    id: str
    title: str
    description: str
    license: str
    bbox: list[float]
    interval: list[str | None]
    variables: list[str]
    version: str | None
    versions: list[str]
    store: str | None
    href: str
    keywords: list[str] = field(default_factory=list)
    removed_versions: list[str] = field(default_factory=list)
    """Versions listed as history whose store no longer has them (removed by retention):
    they cannot be opened; ``versions`` holds only the ones that can."""
    unknown_extent: list[str] = field(default_factory=list)
    """``"spatial"`` / ``"temporal"`` when the data does not tell where / when it is (its
    ``bbox`` is then the whole globe, its ``interval`` open)."""

    def __str__(self) -> str:
        t0, t1 = (t[:10] if t else ".." for t in self.interval)
        box = ", ".join(f"{x:g}" for x in self.bbox)
        where = "unknown (global)" if "spatial" in self.unknown_extent else f"[{box}]"
        when = "unknown" if "temporal" in self.unknown_extent else f"{t0}/{t1}"
        return (f"{self.id}  v{self.version}  {self.title}\n"
                f"    bbox {where}  time {when}  variables {', '.join(self.variables)}")

    @classmethod
    def from_collection(cls, col: Mapping[str, Any]) -> CollectionSummary:
        ext = col.get("extent", {})
        bbox = (ext.get("spatial", {}).get("bbox") or [[-180, -90, 180, 90]])[0]
        interval = (ext.get("temporal", {}).get("interval") or [[None, None]])[0]
        variables = [n for n, v in (col.get("cube:variables") or {}).items()
                     if v.get("type") == "data"]
        asset = (col.get("assets") or {}).get("zarr") or {}
        return cls(
            id=str(col["id"]),
            title=str(col.get("title") or col["id"]),
            description=str(col.get("description", "")),
            license=str(col.get("license", "")),
            bbox=[float(x) for x in bbox],
            interval=list(interval),
            variables=variables,
            version=col.get("version"),
            versions=[str(v["version"]) for v in col.get(VERSIONS, []) if not v.get(REMOVED)],
            store=asset.get("href"),
            href=str(col.get(HREF, "")),
            keywords=[str(k) for k in col.get("keywords") or []],
            removed_versions=[str(v["version"]) for v in col.get(VERSIONS, [])
                              if v.get(REMOVED)],
            unknown_extent=_unknown_extent(col, list(interval)),
        )


def _unknown_extent(col: Mapping[str, Any], interval: list[str | None]) -> list[str]:
    """What the Collection does not know: its ``arcoforge:unknown_extent``, and ``temporal``
    for an interval open at both ends (Collections published before that field existed)."""
    out = [str(u) for u in col.get(UNKNOWN_EXTENT) or []]
    if "temporal" not in out and all(t is None for t in interval):
        out.append("temporal")
    return out


def require_catalog(catalog: Any, storage_options: Mapping[str, Any] | None = None) -> str:
    """The catalog's root URL; :class:`~arcoforge.errors.NotFoundError` naming the path when
    there is no ``catalog.json`` there."""
    root = _root(catalog)
    url = _join(root, CATALOG_FILE)
    if not _exists(url, storage_options):
        raise NotFoundError(f"no catalog at {root} (there is no {CATALOG_FILE}; publish a "
                            "store there first, or check the path)")
    return root


def summaries(catalog: Any, storage_options: Mapping[str, Any] | None = None
              ) -> list[CollectionSummary]:
    """One summary per dataset of the catalog, in catalog order;
    :class:`~arcoforge.errors.NotFoundError` naming the path when there is no catalog."""
    require_catalog(catalog, storage_options)
    return [CollectionSummary.from_collection(c) for c in read_collections(catalog, storage_options)]


# -- filters ---------------------------------------------------------------------------------


def _boxes(bbox: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Split a box crossing the antimeridian (west > east) into two."""
    w, s, e, n = (float(x) for x in bbox[:4]) if len(bbox) == 4 else (
        float(bbox[0]), float(bbox[1]), float(bbox[3]), float(bbox[4]))
    if w > e:
        return [(w, s, 180.0, n), (-180.0, s, e, n)]
    return [(w, s, e, n)]


def bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two WGS84 boxes ``[west, south, east, north]`` overlap (antimeridian-aware)."""
    for aw, as_, ae, an in _boxes(a):
        for bw, bs, be, bn in _boxes(b):
            if aw <= be and bw <= ae and as_ <= bn and bs <= an:
                return True
    return False


def _parse_time(value: Any, end: bool = False) -> dt.datetime | None:
    if value is None or value in ("", ".."):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        value = value.isoformat()
    text = str(value).strip().replace("Z", "+00:00")
    # partial dates: 2020 / 2020-06 widen to the whole year / month
    parts = text.split("T")[0].split("-")
    if len(text) == 4 and text.isdigit():
        return dt.datetime(int(text) + end, 1, 1, tzinfo=dt.UTC) - (dt.timedelta(
            microseconds=1) if end else dt.timedelta(0))
    if len(parts) == 2 and "T" not in text:
        y, m = int(parts[0]), int(parts[1])
        if not 1 <= m <= 12:
            raise ValueError(f"month must be in 1..12, not {m}")
        if end:
            y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
            return dt.datetime(y2, m2, 1, tzinfo=dt.UTC) - dt.timedelta(microseconds=1)
        return dt.datetime(y, m, 1, tzinfo=dt.UTC)
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    if end and "T" not in text:
        t = t + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return t


def _time_range(time: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(start, end)`` of a time query; :class:`~arcoforge.errors.ConfigError` naming the
    query for a date that does not exist (``2005-13``, ``2005-02-30``) or a reversed one."""
    try:
        start, end = _time_range_unchecked(time)
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"time {time!r} is not a date or interval: {err}. Use ISO 8601: "
                          "2020, 2020-06, 2020-06-15, 2019-06/2020-01, ../2020") from None
    if start is not None and end is not None and start > end:
        raise ConfigError(f"time {time!r}: the start is after the end (write START/END, "
                          "e.g. 2005/2006)")
    return start, end


def _time_range_unchecked(time: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    if isinstance(time, str):
        if "/" in time:
            a, b = time.split("/", 1)
            return _parse_time(a), _parse_time(b, end=True)
        return _parse_time(time), _parse_time(time, end=True)
    if isinstance(time, Sequence) and len(time) == 2:
        return _parse_time(time[0]), _parse_time(time[1], end=True)
    return _parse_time(time), _parse_time(time, end=True)


def time_overlaps(interval: Sequence[str | None], time: Any) -> bool:
    """Whether a collection interval overlaps ``time`` (``"2020"``, ``"2019-06/2020-01"``,
    ``(start, end)`` with ``None``/``".."`` for open ends, or one datetime).  An interval open
    at both ends (the dataset's time is unknown) overlaps nothing."""
    q0, q1 = _time_range(time)
    c0 = _parse_time(interval[0]) if interval else None
    c1 = _parse_time(interval[1]) if interval and len(interval) > 1 else None
    if c0 is None and c1 is None:
        return False
    if q0 is not None and c1 is not None and c1 < q0:
        return False
    if q1 is not None and c0 is not None and c0 > q1:
        return False
    return True


def _has_variables(col: Mapping[str, Any], wanted: Sequence[str]) -> bool:
    cube = col.get("cube:variables") or {}
    names = {n.lower() for n in cube}
    std = {str(v.get(STANDARD_NAME, "")).lower() for v in cube.values()}
    return all(w.lower() in names or w.lower() in std for w in wanted)


def _text_blob(col: Mapping[str, Any]) -> str:
    parts = [str(col.get("id", "")), str(col.get("title", "")), str(col.get("description", ""))]
    parts += [str(k) for k in col.get("keywords") or []]
    parts += [str(p.get("name", "")) for p in col.get("providers") or []]
    for name, v in (col.get("cube:variables") or {}).items():
        parts += [name, str(v.get("description", "")), str(v.get(STANDARD_NAME, ""))]
    return " ".join(parts).lower()


def search(catalog: Any, bbox: Sequence[float] | None = None, time: Any = None,
           variables: Sequence[str] | str | None = None, text: str | None = None, *,
           storage_options: Mapping[str, Any] | None = None) -> list[CollectionSummary]:
    """Datasets matching every given filter.

    ``bbox``: ``[west, south, east, north]`` overlapping the dataset's extent.  ``time``: an
    ISO date/interval (``"2020-03"``, ``"2019/2020-06"``, ``"../2020"``) or ``(start, end)``
    overlapping its interval.  ``variables``: names (or CF standard names) all present.
    ``text``: words all found (case-insensitively) in id, title, description, keywords,
    providers or variable descriptions.

    A dataset whose data does not tell where it is (``unknown_extent`` holds ``"spatial"``:
    no longitudes/latitudes, no projected grid with a CF grid mapping) never matches a
    ``bbox``; one whose time is unknown (no time coordinate) never matches a ``time``.  A bad
    ``time`` (``"2005-13"``, a reversed interval) raises
    :class:`~arcoforge.errors.ConfigError`, a path with no catalog
    :class:`~arcoforge.errors.NotFoundError`.
    """
    if isinstance(variables, str):
        variables = [variables]
    if time is not None:
        _time_range(time)  # a bad query fails even on a catalog with no dataset
    require_catalog(catalog, storage_options)
    words = text.lower().split() if text else []
    out = []
    for col in read_collections(catalog, storage_options):
        summary = CollectionSummary.from_collection(col)
        if bbox is not None and ("spatial" in summary.unknown_extent
                                 or not bbox_intersects(summary.bbox, bbox)):
            continue
        if time is not None and not time_overlaps(summary.interval, time):
            continue
        if variables and not _has_variables(col, variables):
            continue
        if words:
            blob = _text_blob(col)
            if not all(w in blob for w in words):
                continue
        out.append(summary)
    return out


# -- open by id ------------------------------------------------------------------------------


def get_collection(catalog: Any, dataset_id: str,
                   storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Collection dict of ``dataset_id``; ``KeyError`` naming the known ids otherwise."""
    require_catalog(catalog, storage_options)
    cols = read_collections(catalog, storage_options)
    for col in cols:
        if col.get("id") == dataset_id:
            return col
    known = ", ".join(sorted(str(c.get("id")) for c in cols)) or "none"
    raise NotFoundError(f"no dataset {dataset_id!r} in catalog {catalog!s} (datasets: {known})")


def store_of(catalog: Any, dataset_id: str, version: str | None = None,
             catalog_storage_options: Mapping[str, Any] | None = None,
             ) -> tuple[str, str | None]:
    """``(store URL, version to ask the store for or None)`` of dataset ``dataset_id`` of a
    catalog (its latest version, or ``version``)."""
    col = get_collection(catalog, dataset_id, catalog_storage_options)
    versions = list(col.get(VERSIONS) or [])
    wanted = version or col.get("version")
    entry = next((v for v in versions if str(v.get("version")) == str(wanted)), None)
    if entry is None:
        if version is not None:
            known = ", ".join(str(v.get("version")) for v in versions) or "none"
            raise NotFoundError(f"dataset {dataset_id!r} has no version {version!r} "
                                f"(versions: {known})")
        href = (col.get("assets") or {}).get("zarr", {}).get("href")
        if not href:
            raise NotFoundError(f"dataset {dataset_id!r} has no 'zarr' asset")
        return str(href), None
    if entry.get(REMOVED):
        openable = ", ".join(str(v.get("version")) for v in versions if not v.get(REMOVED))
        raise NotFoundError(f"version {wanted} of dataset {dataset_id!r} was removed from its "
                            f"store {entry.get('href')} by retention (it keeps the latest minor "
                            f"version(s) of each major); versions that open: "
                            f"{openable or 'none'}")
    if entry.get("in_store"):  # a version kept inside a versioned store
        return str(entry["href"]), str(entry["version"])
    return str(entry["href"]), None


def open_dataset(catalog: Any, dataset_id: str, version: str | None = None, *,
                 catalog_storage_options: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> xr.Dataset:
    """Open dataset ``dataset_id`` of a catalog (its latest version, or ``version``) with
    :func:`arcoforge.open_dataset`; ``kwargs`` go there (``chunks``, ``storage_options``...)."""
    from arcoforge.open import open_dataset as open_store

    href, in_store = store_of(catalog, dataset_id, version, catalog_storage_options)
    if in_store is not None:
        try:
            return open_store(href, version=in_store, **kwargs)
        except NotFoundError as err:  # a catalog not republished since retention removed it
            raise NotFoundError(f"version {in_store} of dataset {dataset_id!r} is listed by "
                                f"catalog {catalog!s} but no longer in its store {href}: it "
                                f"was removed by retention (republish the store to update the "
                                f"catalog). {err}") from err
    return open_store(href, **kwargs)
