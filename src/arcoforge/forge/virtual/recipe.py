"""``VirtualRecipe``: reference the bytes of archival files instead of copying them (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from arcoforge.errors import ConfigError
from arcoforge.forge.io.fetch import SourceOptions
from arcoforge.forge.patterns import FilePattern
from arcoforge.forge.transforms import (
    DropVariables,
    KeepVariables,
    Rename,
    SetAttrs,
    Transform,
    as_transforms,
    describe_transforms,
)

__all__ = ["VirtualRecipe", "VIRTUAL_TRANSFORMS"]

#: the transforms a virtual store can honour: they change names and attributes, never bytes
VIRTUAL_TRANSFORMS: tuple[type[Transform], ...] = (Rename, DropVariables, KeepVariables, SetAttrs)


@dataclass
class VirtualRecipe:
    """Map the files of ``pattern`` into one virtual dataset: a store of references
    ``(file, offset, length)`` to the chunks of the archival files, read in place.

    Built with VirtualiZarr's parsers (NetCDF4/HDF5, NetCDF3).  Small coordinate-like
    variables (those without the concat dimension, the concat coordinate, variables named in
    ``coordinates``/``bounds``), variables the parser cannot map, and ``inline_variables`` are
    stored inline, in the same store; the provenance key ``arcoforge:inline_variables`` lists
    them.  What cannot be referenced faithfully is refused with a
    :class:`~arcoforge.errors.SchemaError` naming file and variable: codecs, chunk shapes or
    dtypes that differ between files, per-file ``scale_factor``/``add_offset``, per-file time
    units, filters no reader can decode.  Materialize such sources with
    :class:`~arcoforge.forge.recipes.ZarrRecipe`.

    Parameters
    ----------
    pattern:
        The source files and how they combine (local paths, ``http(s)://`` or ``s3://`` URLs).
    source_options:
        How sources are reached (``storage_options``: e.g. ``{"endpoint_url": ...}`` or
        ``{"anon": True}`` for S3; credentials only from the environment).
    inline_variables:
        More variables to store inline instead of referencing them.
    transforms:
        Metadata-only transforms (:class:`~arcoforge.forge.transforms.Rename`,
        ``DropVariables``, ``KeepVariables``, ``SetAttrs``); others change bytes and are refused.
    output:
        ``"icechunk"`` (default, with virtual chunk containers) or ``"kerchunk"`` (a kerchunk
        JSON reference file, for older readers; see :func:`arcoforge.forge.virtual.kerchunk`).
    files_per_task:
        Source files referenced by one task (tasks commit in bounded batches).
    """

    pattern: FilePattern
    source_options: SourceOptions = field(default_factory=SourceOptions)
    inline_variables: Sequence[str] = ()
    transforms: Sequence[Transform | Any] = ()
    output: Literal["icechunk", "kerchunk"] = "icechunk"
    files_per_task: int = 1
    max_block_bytes: int = 256 * 2**20
    #: not supported (one group through ``open_kwargs={"group": ...}``); refused when given
    groups: Sequence[str] | str | None = None

    #: ``bake`` dispatches on this flag (a capability, not a type check)
    is_virtual: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.groups:
            raise ConfigError(
                "VirtualRecipe does not build several groups into one store: reference one "
                "group with open_kwargs={'group': ...} in the pattern, or copy several with "
                "ZarrRecipe(pattern, groups=[...])")
        self.transforms = as_transforms(self.transforms)
        for t in self.transforms:
            if not isinstance(t, VIRTUAL_TRANSFORMS):
                kind = "changes values" if not t.metadata_only else "changes shapes or layout"
                raise ConfigError(
                    f"VirtualRecipe: transform {t.describe().get('type', type(t).__name__)!r} "
                    f"{kind}; a virtual store can only reference the files' bytes as they are "
                    "(allowed: Rename, DropVariables, KeepVariables, SetAttrs). Use "
                    "af.ZarrRecipe(pattern, transforms=[...]) to materialize the result instead."
                )
        if self.output not in ("icechunk", "kerchunk"):
            raise ConfigError(f"VirtualRecipe: output must be 'icechunk' or 'kerchunk', "
                              f"not {self.output!r}")
        if self.files_per_task < 1:
            raise ConfigError("VirtualRecipe: files_per_task must be >= 1")
        self.inline_variables = tuple(self.inline_variables)

    @property
    def target_chunks(self) -> None:
        """A virtual store keeps the files' own chunks."""
        return None

    def sha256(self) -> str:
        """A hash of everything that determines the store's content."""
        h = hashlib.sha256(self.pattern.sha256().encode())
        h.update(json.dumps({"virtual": True, "inline": sorted(self.inline_variables),
                             "transforms": describe_transforms(self.transforms)},
                            sort_keys=True, default=str).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "pattern": repr(self.pattern),
            "inline_variables": list(self.inline_variables),
        }
        if self.transforms:
            out["transforms"] = describe_transforms(self.transforms)
        return out

    def source_name(self, name: str) -> str:
        """The name variable ``name`` of the store has in the source files (before the
        recipe's ``Rename`` transforms)."""
        for t in reversed(tuple(self.transforms)):
            if isinstance(t, Rename):
                inverse = {v: k for k, v in t.names.items()}
                name = inverse.get(name, name)
        return name
