"""Dataset versions ``MAJOR.MINOR``: numbering, listing, opening an old one, retention.

The first published version is ``1.0``; a build or an append bumps the minor number (``1.1``), a
build that changes the dataset incompatibly asks for a major bump (``2.0``).

* **Icechunk**: each version is a tag ``v<MAJOR.MINOR>`` on the snapshot main was moved to.
* **Plain Zarr**: the store at ``<url>`` is always the latest version (``xr.open_zarr(url)``
  keeps working); versions kept for later are at ``<url>.versions/<MAJOR.MINOR>/``, archived just
  before a new version replaces ``<url>`` (hard links on a local disk: no bytes copied).

Retention keeps, for every major number, its latest ``keep_minors`` minor versions (default 1:
"the latest minor of every major"), and always the latest version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec  # type: ignore[import-untyped]

__all__ = [
    "VersionInfo",
    "parse_version",
    "format_version",
    "tag_name",
    "next_version",
    "retained",
    "list_versions",
    "version_url",
    "published_attrs",
    "published_version",
    "published_fingerprint",
    "begin_publish",
    "end_publish",
    "apply_retention",
    "icechunk_versions",
]

log = logging.getLogger("arcoforge.forge.versions")

VERSION_KEY = "arcoforge:version"
FINGERPRINT_KEY = "arcoforge:fingerprint"
VERSIONS_SUFFIX = ".versions"
BUMPS = ("minor", "major")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)$")


@dataclass(frozen=True)
class VersionInfo:
    """One published version: where it is and when it was made."""

    version: str
    location: str
    created: str | None = None
    latest: bool = False

    def __str__(self) -> str:
        mark = "  (latest)" if self.latest else ""
        return f"{self.version:>8}  {self.created or '-':20}  {self.location}{mark}"


# -- numbering --------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[int, int]:
    """``"1.2"`` or ``"v1.2"`` -> ``(1, 2)``."""
    m = _VERSION.match(str(version).strip())
    if not m:
        raise ValueError(f"not a dataset version: {version!r} (expected MAJOR.MINOR, e.g. '1.0')")
    return int(m.group(1)), int(m.group(2))


def format_version(version: tuple[int, int] | str) -> str:
    major, minor = parse_version(version) if isinstance(version, str) else version
    return f"{major}.{minor}"


def tag_name(version: str) -> str:
    """The Icechunk tag of a version: ``v1.0``."""
    return "v" + format_version(version)


def next_version(existing: Iterable[str], bump: str = "minor", wanted: str | None = None) -> str:
    """The version after the latest of ``existing`` (``1.0`` when there is none), or ``wanted``
    (e.g. declared in a feedstock's meta.yaml) when it is newer than all of them."""
    if wanted is not None:
        new = parse_version(wanted)
        older = [v for v in existing if parse_version(v) >= new]
        if older:
            raise ValueError(f"version {format_version(new)} is not newer than the published "
                             f"version(s) {sorted(older)}; declare a higher version")
        return format_version(new)
    if bump not in BUMPS:
        raise ValueError(f"version_bump must be one of {BUMPS}, got {bump!r}")
    parsed = [parse_version(v) for v in existing]
    if not parsed:
        return "1.0"
    major, minor = max(parsed)
    return format_version((major + 1, 0) if bump == "major" else (major, minor + 1))


def retained(versions: Iterable[str], keep_minors: int = 1) -> set[str]:
    """Versions kept by retention: the latest ``keep_minors`` minors of every major, and the
    latest version."""
    by_major: dict[int, list[tuple[int, int]]] = {}
    parsed = [parse_version(v) for v in versions]
    for v in parsed:
        by_major.setdefault(v[0], []).append(v)
    keep = {format_version(v) for vs in by_major.values()
            for v in sorted(vs)[-max(1, keep_minors):]}
    if parsed:
        keep.add(format_version(max(parsed)))
    return keep


def _sorted(versions: Iterable[str]) -> list[str]:
    return [format_version(v) for v in sorted({parse_version(v) for v in versions})]


# -- kinds of target ----------------------------------------------------------------------------


def _icechunk_repo(target: Any) -> Any | None:
    """The Icechunk repository behind ``target``, or None for a plain Zarr target."""
    from arcoforge.forge.targets.icechunk import IcechunkTarget, open_repository

    if isinstance(target, IcechunkTarget):
        return target.repo
    if type(target).__name__ == "Repository":
        return target
    if isinstance(target, str) and target.startswith("icechunk://"):
        return open_repository(target)
    return None


def _zarr_location(target: Any, storage_options: Mapping[str, Any] | None
                   ) -> tuple[str, dict[str, Any]]:
    url = getattr(target, "url", None) or os.fspath(target)
    so = dict(storage_options or getattr(target, "storage_options", None) or {})
    return str(url).rstrip("/"), so


def icechunk_versions(repo: Any) -> list[str]:
    """Versions tagged in an Icechunk repository, oldest first."""
    return _sorted(t for t in repo.list_tags() if _VERSION.match(t) and t.startswith("v"))


# -- plain Zarr ----------------------------------------------------------------------------------


def published_attrs(url: str, storage_options: Mapping[str, Any] | None = None
                    ) -> dict[str, Any] | None:
    """Root attributes of the Zarr v3 store published at ``url`` (None if there is none)."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        with fs.open(path.rstrip("/") + "/zarr.json", "rb") as fh:
            doc = json.loads(fh.read())
    except FileNotFoundError:
        return None
    return dict(doc.get("attributes") or {})


def published_version(target: Any, storage_options: Mapping[str, Any] | None = None
                      ) -> str | None:
    """The latest published version (a store built before versions counts as ``1.0``)."""
    repo = _icechunk_repo(target)
    if repo is not None:
        vs = icechunk_versions(repo)
        return vs[-1] if vs else None
    url, so = _zarr_location(target, storage_options)
    attrs = published_attrs(url, so)
    if attrs is None:
        return None
    return format_version(str(attrs.get(VERSION_KEY) or "1.0"))


def published_fingerprint(target: Any, storage_options: Mapping[str, Any] | None = None
                          ) -> str | None:
    """The plan fingerprint recorded by the latest published build, if any."""
    repo = _icechunk_repo(target)
    if repo is not None:
        md = dict(repo.lookup_snapshot(repo.lookup_branch("main")).metadata or {})
        return md.get(FINGERPRINT_KEY)
    url, so = _zarr_location(target, storage_options)
    attrs = published_attrs(url, so) or {}
    return attrs.get(FINGERPRINT_KEY)


def _archived(url: str, so: Mapping[str, Any]) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url + VERSIONS_SUFFIX, **dict(so))
    if not fs.exists(path):
        return []
    names = [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return _sorted(n for n in names if _VERSION.match(n) and not n.startswith("v"))


def _archive(url: str, so: Mapping[str, Any], version: str) -> None:
    """Keep the store now at ``url`` as ``<url>.versions/<version>/`` (idempotent)."""
    fs, path = fsspec.core.url_to_fs(url, **dict(so))
    vdir = path + VERSIONS_SUFFIX
    dest = f"{vdir}/{version}"
    if fs.exists(dest):
        return
    tmp = f"{vdir}/.partial-{version}-{uuid.uuid4().hex[:8]}"
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocol or "local" in protocol:
        for root, _dirs, files in os.walk(path):
            rel = os.path.relpath(root, path)
            os.makedirs(os.path.join(tmp, rel), exist_ok=True)
            for name in files:
                src = os.path.join(root, name)
                try:
                    os.link(src, os.path.join(tmp, rel, name))
                except OSError:
                    import shutil

                    shutil.copy2(src, os.path.join(tmp, rel, name))
        os.rename(tmp, dest)
    else:
        fs.copy(path, tmp, recursive=True)
        fs.mv(tmp, dest, recursive=True)
    log.info("kept version %s of %s at %s", version, url, dest)


def version_url(url: str, version: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where version ``version`` of the plain Zarr store published at ``url`` is."""
    url = str(url).rstrip("/")
    wanted = format_version(version)
    so = dict(storage_options or {})
    if published_version(url, so) == wanted:
        return url
    if wanted in _archived(url, so):
        return f"{url}{VERSIONS_SUFFIX}/{wanted}"
    available = [v.version for v in list_versions(url, so)]
    raise KeyError(f"{url} has no version {wanted!r}; available: {available or 'none'} "
                   "(older minor versions are removed by retention)")


# -- listing -----------------------------------------------------------------------------------


def list_versions(target: Any, storage_options: Mapping[str, Any] | None = None
                  ) -> list[VersionInfo]:
    """Published versions of ``target`` (URL, ``icechunk://`` URL, repository or target
    object), oldest first; the last is the latest."""
    repo = _icechunk_repo(target)
    out: list[VersionInfo] = []
    if repo is not None:
        names = icechunk_versions(repo)
        for v in names:
            snap = repo.lookup_tag(tag_name(v))
            info = repo.lookup_snapshot(snap)
            created = info.written_at.strftime("%Y-%m-%dT%H:%M:%SZ") if info.written_at else None
            out.append(VersionInfo(v, f"tag {tag_name(v)} ({snap})", created, v == names[-1]))
        return out
    url, so = _zarr_location(target, storage_options)
    for v in _archived(url, so):
        old = published_attrs(f"{url}{VERSIONS_SUFFIX}/{v}", so) or {}
        out.append(VersionInfo(v, f"{url}{VERSIONS_SUFFIX}/{v}", old.get("arcoforge:created")))
    attrs = published_attrs(url, so)
    if attrs is not None:
        cur = format_version(str(attrs.get(VERSION_KEY) or "1.0"))
        out = [i for i in out if i.version != cur]
        out.append(VersionInfo(cur, url, attrs.get("arcoforge:created"), True))
    return out


# -- publishing --------------------------------------------------------------------------------


def begin_publish(target: Any, bump: str = "minor", fingerprint: str | None = None,
                  keep_minors: int = 1, version: str | None = None) -> dict[str, str]:
    """Call just before ``target.finalize``: the attributes to add (``arcoforge:version``, and
    ``arcoforge:fingerprint`` when given).  For plain Zarr, the store now published is archived
    under ``<url>.versions/`` if retention will keep it."""
    if bump not in BUMPS:
        raise ValueError(f"version_bump must be one of {BUMPS}, got {bump!r}")
    extra = {FINGERPRINT_KEY: fingerprint} if fingerprint else {}
    repo = _icechunk_repo(target)
    if repo is not None:
        return {VERSION_KEY: next_version(icechunk_versions(repo), bump, version), **extra}
    url, so = _zarr_location(target, storage_options=None)
    current = published_version(url, so)
    existing = _archived(url, so) + ([current] if current else [])
    new = next_version(existing, bump, version)
    if current and current in retained([*existing, new], keep_minors):
        _archive(url, so, current)
    return {VERSION_KEY: new, **extra}


def end_publish(target: Any, keep_minors: int = 1) -> None:
    """Call after ``target.finalize``: apply retention."""
    apply_retention(target, keep_minors)


def apply_retention(target: Any, keep_minors: int = 1) -> list[str]:
    """Remove versions that retention does not keep; returns the removed versions."""
    repo = _icechunk_repo(target)
    removed: list[str] = []
    if repo is not None:
        names = icechunk_versions(repo)
        keep = retained(names, keep_minors)
        for v in names:
            if v not in keep:
                repo.delete_tag(tag_name(v))
                removed.append(v)
    else:
        url, so = _zarr_location(target, storage_options=None)
        archived = _archived(url, so)
        current = published_version(url, so)
        keep = retained(archived + ([current] if current else []), keep_minors)
        fs, path = fsspec.core.url_to_fs(url + VERSIONS_SUFFIX, **so)
        for v in archived:
            if v not in keep or v == current:
                fs.rm(f"{path}/{v}", recursive=True)
                removed.append(v)
    if removed:
        log.info("retention removed versions %s of %s", removed, getattr(target, "url", target))
    return removed
