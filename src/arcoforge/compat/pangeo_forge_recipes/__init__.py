"""A drop-in for pangeo-forge-recipes, on arcoforge's engine:
``import arcoforge.compat.pangeo_forge_recipes as pangeo_forge_recipes``.

Same module layout as pangeo-forge-recipes: ``patterns`` and ``types`` (0.10 behaviour),
``recipes`` (the 0.9 class API: ``XarrayZarrRecipe`` bakes a Zarr/Icechunk store,
``HDFReferenceRecipe`` a virtual one) and ``transforms`` (0.10 Beam chains --
``beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray() | ... | StoreToZarr()``
-- compiled into arcoforge recipes).

Existing recipe modules run unchanged: while arcoforge loads a recipe module (``arcoforge
bake recipe.py``, a feedstock's ``meta.yaml``), :func:`pangeo_alias` makes ``import
pangeo_forge_recipes`` (and its submodules) resolve to this package when the real
pangeo-forge-recipes is not installed.

``__version__`` is the pangeo-forge-recipes API version served; arcoforge's own version is
``arcoforge.__version__``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterator

from . import patterns, recipes, transforms, types

__version__ = "0.10.8"

__all__ = ["patterns", "pangeo_alias", "recipes", "transforms", "types", "PANGEO_NAME"]

#: the top-level name recipe modules import
PANGEO_NAME = "pangeo_forge_recipes"

_SUBMODULES = ("types", "patterns", "transforms", "recipes", "recipes.base",
               "recipes.xarray_zarr", "recipes.reference_hdf_zarr")

_lock = threading.RLock()


def _real_package_installed() -> bool:
    current = sys.modules.get(PANGEO_NAME)
    if current is not None:
        return current is not sys.modules[__name__]
    try:
        return importlib.util.find_spec(PANGEO_NAME) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def pangeo_alias() -> Iterator[bool]:
    """While the ``with`` block runs, ``import pangeo_forge_recipes[.<submodule>]`` gives this
    package (and its submodules) -- unless the real pangeo-forge-recipes is installed, which is
    then left alone.  Yields whether the alias is in place; entries it added are removed on
    exit (already-imported objects keep working: their classes live in this package)."""
    with _lock:
        if _real_package_installed():
            yield False
            return
        added = []
        names = {PANGEO_NAME: __name__}
        names.update({f"{PANGEO_NAME}.{m}": f"{__name__}.{m}" for m in _SUBMODULES})
        for alias, real in names.items():
            if alias not in sys.modules:
                sys.modules[alias] = importlib.import_module(real)
                added.append(alias)
        try:
            yield True
        finally:
            for alias in added:
                sys.modules.pop(alias, None)
