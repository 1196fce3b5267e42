"""pangeo-forge-recipes 0.9's ``HDFReferenceRecipe`` -- recognised, not baked yet.

The class takes the 0.9 arguments and keeps them, so recipe modules that define one import and
lint; arcoforge's loaders list it.  Baking it raises a
:class:`~arcoforge.errors.ConfigError` that says why: virtual references (kerchunk /
VirtualiZarr) are not yet reachable from the compat layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

from arcoforge.errors import ConfigError

from ..patterns import FilePattern
from .base import BaseRecipe

__all__ = ["HDFReferenceRecipe"]

_REASON = (
    "HDFReferenceRecipe (virtual kerchunk references) cannot be baked by arcoforge's "
    "pangeo-forge compat layer yet. Bake the same pattern into a Zarr store instead: "
    "XarrayZarrRecipe(pattern, target_chunks={...})"
)


@dataclass
class HDFReferenceRecipe(BaseRecipe):
    """pangeo-forge-recipes 0.9's reference recipe: the arguments are kept, baking is refused
    (``arcoforge_unsupported`` says why)."""

    arcoforge_unsupported: ClassVar[str | None] = _REASON

    file_pattern: FilePattern
    output_json_fname: str = "reference.json"
    output_intake_yaml_fname: str = "reference.yaml"
    netcdf_storage_options: dict[str, Any] = field(default_factory=dict)
    target_options: dict[str, Any] | None = field(default_factory=dict)
    inline_threshold: int = 500
    output_storage_options: dict[str, Any] = field(default_factory=dict)
    concat_dims: list[str] = field(default_factory=list)
    identical_dims: list[str] | None = field(default_factory=list)
    coo_map: dict[str, Any] | None = field(default_factory=dict)
    coo_dtypes: dict[str, Any] | None = field(default_factory=dict)
    preprocess: Callable[..., Any] | None = None
    postprocess: Callable[..., Any] | None = None
    storage_config: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.file_pattern, FilePattern):
            raise ConfigError(f"HDFReferenceRecipe: file_pattern must be a FilePattern, got "
                              f"{type(self.file_pattern).__name__}")

    def copy_pruned(self, nkeep: int = 2) -> HDFReferenceRecipe:
        """A copy whose pattern keeps the first ``nkeep`` keys of each concat dimension."""
        return dataclasses.replace(self, file_pattern=self.file_pattern.prune(nkeep))

    def _refuse(self) -> NoReturn:
        raise ConfigError(_REASON)

    # What arcoforge's bake, verify and inspect read first: each refuses with the reason.
    @property
    def pattern(self) -> NoReturn:
        """Refused: see :attr:`arcoforge_unsupported`."""
        self._refuse()

    @property
    def source_options(self) -> NoReturn:
        """Refused: see :attr:`arcoforge_unsupported`."""
        self._refuse()

    @property
    def target_chunks(self) -> NoReturn:
        """Refused: see :attr:`arcoforge_unsupported`."""
        self._refuse()

    def sha256(self) -> NoReturn:
        """Refused: see :attr:`arcoforge_unsupported`."""
        self._refuse()
