"""pangeo-forge-recipes 0.9's recipe classes: :class:`XarrayZarrRecipe` (baked by arcoforge as a
:class:`~arcoforge.forge.recipes.ZarrRecipe`) and :class:`HDFReferenceRecipe` (baked by arcoforge
as a :class:`~arcoforge.forge.virtual.recipe.VirtualRecipe`: an Icechunk store of references, or
a kerchunk JSON file)."""

from __future__ import annotations

from .base import BaseRecipe, setup_logging
from .reference_hdf_zarr import HDFReferenceRecipe
from .xarray_zarr import XarrayZarrRecipe

__all__ = ["BaseRecipe", "HDFReferenceRecipe", "XarrayZarrRecipe", "setup_logging"]
