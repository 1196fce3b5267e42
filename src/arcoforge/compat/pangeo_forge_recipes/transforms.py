"""pangeo-forge-recipes 0.10's ``transforms`` names -- not supported yet.

A 0.10 recipe is a chain of Apache Beam transforms (``beam.Create(pattern.items()) |
OpenURLWithFSSpec() | OpenWithXarray(...) | StoreToZarr(...)``).  arcoforge will run such
chains on its own plan; until it does, every transform name exists here (so a recipe module
imports) and constructing one raises :class:`TransformNotSupportedError` (a
:class:`~arcoforge.errors.ConfigError`) that names the transform and says what to write
instead: ``XarrayZarrRecipe(pattern, target_chunks=...)`` from
``pangeo_forge_recipes.recipes`` (or ``arcoforge.ZarrRecipe``), which bakes the same store.
"""

from __future__ import annotations

from typing import Any, NoReturn

from arcoforge.errors import ConfigError

__all__ = [
    "TransformNotSupportedError",
    "CombineReferences",
    "ConsolidateDimensionCoordinates",
    "ConsolidateMetadata",
    "DatasetToSchema",
    "DetermineSchema",
    "IndexItems",
    "MapWithConcurrencyLimit",
    "OpenURLWithFSSpec",
    "OpenWithKerchunk",
    "OpenWithXarray",
    "PrepareZarrTarget",
    "Rechunk",
    "RequiredAtRuntimeDefault",
    "StoreDatasetFragments",
    "StoreToZarr",
    "WriteCombinedReference",
    "WriteReference",
]


class TransformNotSupportedError(ConfigError):
    """A pangeo-forge-recipes Beam transform that arcoforge's compat layer cannot run yet."""


def _refuse(name: str) -> NoReturn:
    raise TransformNotSupportedError(
        f"pangeo_forge_recipes.transforms.{name} is not supported yet: arcoforge does not run "
        "pangeo-forge 0.10 Beam transform chains. Write the recipe as "
        "`XarrayZarrRecipe(pattern, target_chunks={...})` (from pangeo_forge_recipes.recipes) or "
        "`arcoforge.ZarrRecipe(pattern.to_arcoforge(), target_chunks={...})`; both bake with "
        "`arcoforge bake recipe.py --target ...` on the local, Dask or Beam engine")


class _Unsupported:
    """Base of the transform names: constructing one raises the reason."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(type(self).__name__)


class RequiredAtRuntimeDefault(_Unsupported):
    """Placeholder for an option a runner fills in (not supported yet)."""


class MapWithConcurrencyLimit(_Unsupported):
    """Not supported yet (see the module docstring)."""


class OpenURLWithFSSpec(_Unsupported):
    """Not supported yet (see the module docstring)."""


class OpenWithKerchunk(_Unsupported):
    """Not supported yet (see the module docstring)."""


class OpenWithXarray(_Unsupported):
    """Not supported yet (see the module docstring)."""


class DatasetToSchema(_Unsupported):
    """Not supported yet (see the module docstring)."""


class DetermineSchema(_Unsupported):
    """Not supported yet (see the module docstring)."""


class IndexItems(_Unsupported):
    """Not supported yet (see the module docstring)."""


class PrepareZarrTarget(_Unsupported):
    """Not supported yet (see the module docstring)."""


class StoreDatasetFragments(_Unsupported):
    """Not supported yet (see the module docstring)."""


class ConsolidateMetadata(_Unsupported):
    """Not supported yet (see the module docstring)."""


class Rechunk(_Unsupported):
    """Not supported yet (see the module docstring)."""


class ConsolidateDimensionCoordinates(_Unsupported):
    """Not supported yet (see the module docstring)."""


class CombineReferences(_Unsupported):
    """Not supported yet (see the module docstring)."""


class WriteReference(_Unsupported):
    """Not supported yet (see the module docstring)."""


class WriteCombinedReference(_Unsupported):
    """Not supported yet (see the module docstring)."""


class StoreToZarr(_Unsupported):
    """Not supported yet (see the module docstring)."""

