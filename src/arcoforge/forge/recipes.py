"""User-facing recipe types: what to build from a :class:`~arcoforge.forge.patterns.FilePattern`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arcoforge.errors import ConfigError
from arcoforge.forge.groups import normalize_groups
from arcoforge.forge.io.fetch import SourceOptions
from arcoforge.forge.patterns import FilePattern
from arcoforge.forge.transforms import Transform, as_transforms, describe_transforms

__all__ = ["ZarrRecipe"]


@dataclass
class ZarrRecipe:
    """Materialize the files of ``pattern`` into one Zarr v3 (or Icechunk) store.

    Parameters
    ----------
    pattern:
        The source files and how they combine.
    target_chunks:
        Chunk length per dimension of the target, e.g. ``{"time": 12}``.  Dimensions not named
        are stored as one chunk, except the concat dimension, whose default aims at ~32 MB chunks.
    source_options:
        Retries, per-host concurrency, credentials (named env vars) and the input cache.
    max_block_bytes:
        A store task reads and writes at most about this many bytes of one variable at a time
        (larger rows are split into whole chunks along the other dimensions).
    transforms:
        Steps applied to each source dataset, in order: functions ``(index, ds) -> ds`` and
        :mod:`arcoforge.transforms` (rename, select, a new dimension from a pattern key, ...).
    checks:
        Functions called with a read-only zarr store of the version just published (e.g.
        ``lambda store: xr.open_dataset(store, engine="zarr")`` plus assertions); one that
        raises fails the bake with :class:`~arcoforge.errors.CheckError`.  Not part of the
        recipe hash: they look at the output, they do not shape it.
    groups:
        NetCDF4/HDF5 groups to build, e.g. ``["data_01", "data_01/ku"]`` (``"*"``: the root
        and every group).  The store gets one Zarr group per listed group, with its variables
        and attributes (``arcoforge.open_datatree(store)``); the dataset's attributes are the
        root group's.  Each group is concatenated along the pattern's concat dimension, which
        a group may take from its parent (as NetCDF4 allows).  Default: the file's root group
        only (or the one group named by ``open_kwargs={"group": ...}``).
    """

    pattern: FilePattern
    target_chunks: Mapping[str, int] | None = None
    source_options: SourceOptions = field(default_factory=SourceOptions)
    max_block_bytes: int = 256 * 2**20
    transforms: Sequence[Transform | Any] = ()
    checks: Sequence[Callable[[Any], Any]] = ()
    groups: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.transforms = as_transforms(self.transforms)
        self.groups = normalize_groups(self.groups)
        if self.groups and self.pattern.open_kwargs.get("group"):
            raise ConfigError(
                "the recipe names groups=... and the pattern open_kwargs a 'group' too: name "
                "one group in open_kwargs, or several (without open_kwargs['group']) in groups"
            )

    def sha256(self) -> str:
        """A hash of everything that determines the build's output."""
        h = hashlib.sha256(self.pattern.sha256().encode())
        h.update(json.dumps(dict(self.target_chunks or {}), sort_keys=True).encode())
        if self.transforms:
            h.update(json.dumps(describe_transforms(self.transforms), sort_keys=True,
                                default=str).encode())
        if self.groups:
            h.update(json.dumps(["groups", list(self.groups)]).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "pattern": repr(self.pattern),
            "target_chunks": dict(self.target_chunks or {}),
        }
        if self.transforms:
            out["transforms"] = describe_transforms(self.transforms)
        if self.groups:
            out["groups"] = list(self.groups)
        return out
