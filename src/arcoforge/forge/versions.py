"""Dataset versions ``MAJOR.MINOR``: numbering, listing, opening an old one, retention.

The first published version is ``1.0``; a build or an append bumps the minor number (``1.1``), a
build that changes the dataset incompatibly asks for a major bump (``2.0``).  Version numbers
are computed here and nowhere else (:func:`begin_publish`), and retention is applied here, once
per publish (:func:`apply_retention`).

Where versions live is the target's business (:class:`~arcoforge.forge.targets.base.Target`:
``versions()``, ``keep_version()``, ``drop_version()``, ``open(version)``):

* **Icechunk**: each version is a tag ``v<MAJOR.MINOR>`` on the snapshot main was moved to.
* **Plain Zarr**: the store at ``<url>`` is always the latest version (``xr.open_zarr(url)``
  keeps working); versions kept for later are at ``<url>.versions/<MAJOR.MINOR>/``, archived just
  before a new version replaces ``<url>`` (hard links on a local disk: no bytes copied).

A publish that a crash interrupts is completed -- with the version number it was given, never a
new one -- by the target's ``recover()``, which :func:`arcoforge.forge.bake.bake`, ``append`` and
``abandon`` run under the build lock before anything else (then retention is applied).

Retention keeps, for every major number, its latest ``keep_minors`` minor versions (default 1:
"the latest minor of every major"), and always the latest version.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arcoforge.errors import ConfigError, NotFoundError
from arcoforge.forge.targets.base import resolve_target
from arcoforge.provenance import FINGERPRINT, VERSION

__all__ = [
    "VersionInfo",
    "parse_version",
    "format_version",
    "tag_name",
    "next_version",
    "retained",
    "sorted_versions",
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

VERSION_KEY = VERSION
FINGERPRINT_KEY = FINGERPRINT
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


def is_version(text: str) -> bool:
    """Whether ``text`` is ``MAJOR.MINOR`` (or ``vMAJOR.MINOR``)."""
    return bool(_VERSION.match(str(text).strip()))


def parse_version(version: str) -> tuple[int, int]:
    """``"1.2"`` or ``"v1.2"`` -> ``(1, 2)``."""
    m = _VERSION.match(str(version).strip())
    if not m:
        raise ConfigError(f"not a dataset version: {version!r} (expected MAJOR.MINOR, e.g. "
                          "'1.0')")
    return int(m.group(1)), int(m.group(2))


def format_version(version: tuple[int, int] | str) -> str:
    """``(1, 2)`` or ``"v1.2"`` -> ``"1.2"``."""
    major, minor = parse_version(version) if isinstance(version, str) else version
    return f"{major}.{minor}"


def tag_name(version: str) -> str:
    """The Icechunk tag of a version: ``v1.0``."""
    return "v" + format_version(version)


def sorted_versions(versions: Iterable[str]) -> list[str]:
    """Distinct versions in ``versions``, oldest first, formatted ``MAJOR.MINOR``."""
    return [format_version(v) for v in sorted({parse_version(v) for v in versions})]


def next_version(existing: Iterable[str], bump: str = "minor", wanted: str | None = None) -> str:
    """The version after the latest of ``existing`` (``1.0`` when there is none), or ``wanted``
    (e.g. declared in a feedstock's meta.yaml) when it is newer than all of them."""
    existing = list(existing)
    if wanted is not None:
        new = parse_version(wanted)
        older = [v for v in existing if parse_version(v) >= new]
        if older:
            raise ConfigError(f"version {format_version(new)} is not newer than the published "
                              f"version(s) {sorted(older)}; declare a higher version")
        return format_version(new)
    if bump not in BUMPS:
        raise ConfigError(f"version_bump must be one of {BUMPS}, got {bump!r}")
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


def icechunk_versions(repo: Any) -> list[str]:
    """Versions tagged in an Icechunk repository, oldest first."""
    return sorted_versions(t for t in repo.list_tags() if t.startswith("v") and is_version(t))


# -- what is published ---------------------------------------------------------------------------


def list_versions(target: Any, storage_options: Mapping[str, Any] | None = None
                  ) -> list[VersionInfo]:
    """Published versions of ``target`` (URL, ``icechunk://`` URL, repository or target
    object), oldest first; the last is the latest."""
    return resolve_target(target, storage_options).versions()


def version_url(target: Any, version: str, storage_options: Mapping[str, Any] | None = None
                ) -> str:
    """Where version ``version`` of ``target`` is (for plain Zarr, the URL to open)."""
    wanted = format_version(version)
    tgt = resolve_target(target, storage_options)
    listed = tgt.versions()
    for info in listed:
        if info.version == wanted:
            return info.location
    raise NotFoundError(f"{tgt.url} has no version {wanted!r}; available: "
                        f"{[v.version for v in listed] or 'none'} (older minor versions are "
                        "removed by retention)")


def published_attrs(target: Any, storage_options: Mapping[str, Any] | None = None
                    ) -> dict[str, Any] | None:
    """Root attributes of the latest version published at ``target`` (None if there is none)."""
    return resolve_target(target, storage_options).published_attrs()


def published_version(target: Any, storage_options: Mapping[str, Any] | None = None
                      ) -> str | None:
    """The latest published version (a store built before versions counts as ``1.0``)."""
    listed = list_versions(target, storage_options)
    return listed[-1].version if listed else None


def published_fingerprint(target: Any, storage_options: Mapping[str, Any] | None = None
                          ) -> str | None:
    """The plan fingerprint recorded by the latest publish, if any."""
    attrs = published_attrs(target, storage_options) or {}
    fp = attrs.get(FINGERPRINT)
    return str(fp) if fp else None


# -- publishing --------------------------------------------------------------------------------


def begin_publish(target: Any, bump: str = "minor", fingerprint: str | None = None,
                  keep_minors: int = 1, version: str | None = None) -> dict[str, str]:
    """Call just before ``target.finalize``: the attributes to add (``arcoforge:version``, and
    ``arcoforge:fingerprint`` when given).  The version published now is kept (archived, for
    targets that :attr:`~arcoforge.forge.targets.base.Target.archives_old_versions`) when
    retention will keep it."""
    if bump not in BUMPS:
        raise ConfigError(f"version_bump must be one of {BUMPS}, got {bump!r}")
    tgt = resolve_target(target)
    existing = [v.version for v in tgt.versions()]
    new = next_version(existing, bump, version)
    current = existing[-1] if existing else None
    if current and current != new and current in retained([*existing, new], keep_minors):
        tgt.keep_version(current)
    extra = {FINGERPRINT: fingerprint} if fingerprint else {}
    return {VERSION: new, **extra}


def end_publish(target: Any, keep_minors: int = 1) -> list[str]:
    """Call after ``target.finalize``: apply retention (once); returns the removed versions."""
    return apply_retention(target, keep_minors)


def apply_retention(target: Any, keep_minors: int = 1) -> list[str]:
    """Remove versions that retention does not keep; returns the removed versions."""
    tgt = resolve_target(target)
    names = [v.version for v in tgt.versions()]
    keep = retained(names, keep_minors)
    removed = [v for v in names if v not in keep]
    for v in removed:
        tgt.drop_version(v)
    if removed:
        log.info("retention removed versions %s of %s", removed, tgt.url)
    return removed
