"""The ``arcoforge:*`` attribute keys, defined once, and the provenance record of a build.

Everything arcoforge adds to a dataset's attributes is namespaced ``arcoforge:``, so the data
itself stays identical to its sources (``verify`` ignores these keys).  Every module that reads
or writes one of them uses the constants below, never a string literal.

This module imports only the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "PREFIX",
    "RECIPE_HASH",
    "RECIPE",
    "CREATED",
    "APPENDED",
    "PACKAGE_VERSIONS",
    "SOURCES",
    "VERSION",
    "FINGERPRINT",
    "ATTR_TYPES",
    "BUILD",
    "BASE",
    "DONE",
    "SAMPLE_DIMS",
    "STANDARD_NAME",
    "HREF",
    "VERSIONS",
    "MAINTAINERS",
    "INLINE_VARIABLES",
    "STATISTICS",
    "is_provenance_key",
    "strip_provenance",
    "stamp",
    "package_versions",
    "source_records",
]

PREFIX = "arcoforge:"

#: sha256 of the recipe's description (what to build)
RECIPE_HASH = "arcoforge:recipe_hash"
#: the recipe's description (pattern, options, transforms) as JSON
RECIPE = "arcoforge:recipe"
#: UTC time the version was published
CREATED = "arcoforge:created"
#: UTC time of the last append
APPENDED = "arcoforge:appended"
#: versions of arcoforge and the libraries that wrote the store
PACKAGE_VERSIONS = "arcoforge:package_versions"
#: the sources: [{"url" (redacted), "sha256", "size"}, ...] in pattern order
SOURCES = "arcoforge:sources"
#: the published version "MAJOR.MINOR"
VERSION = "arcoforge:version"
#: fingerprint of the target schema + chunks (decides "already up to date" and resume)
FINGERPRINT = "arcoforge:fingerprint"
#: numpy types of attributes, restored by ``open_dataset`` (JSON forgets float32)
ATTR_TYPES = "arcoforge:attr_types"
#: a grouped build's Zarr groups (paths, parents first), on the root group
GROUPS = "arcoforge:groups"
#: Icechunk: build-branch bookkeeping
BUILD = "arcoforge:build"
BASE = "arcoforge:base"
DONE = "arcoforge:done"
#: feed tables: the dims that were stacked into the sample dim
SAMPLE_DIMS = "arcoforge:sample_dims"
#: STAC properties arcoforge adds
STANDARD_NAME = "arcoforge:standard_name"
HREF = "arcoforge:href"
VERSIONS = "arcoforge:versions"
MAINTAINERS = "arcoforge:maintainers"
#: variables stored inline in an otherwise virtual store
INLINE_VARIABLES = "arcoforge:inline_variables"
#: normalization statistics (count, mean, std, min, max per variable / level), see
#: ``arcoforge.batch.statistics``
STATISTICS = "arcoforge:statistics"


def is_provenance_key(key: object) -> bool:
    """Whether an attribute key is one arcoforge added (``arcoforge:*``)."""
    return str(key).startswith(PREFIX)


def strip_provenance(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` without the keys arcoforge added: what the sources themselves said."""
    return {k: v for k, v in attrs.items() if not is_provenance_key(k)}


def stamp() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def package_versions(packages: Iterable[str] = ("arcoforge", "xarray", "zarr", "numpy",
                                                "netCDF4", "h5netcdf", "icechunk")
                     ) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out)."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def source_records(files: Iterable[Any]) -> list[dict[str, Any]]:
    """The :data:`SOURCES` record of scanned files (objects with ``url``, ``sha256``, ``size``);
    URLs are the redacted display form, never the fetch URL."""
    return [{"url": f.url, "sha256": f.sha256, "size": f.size} for f in files]
