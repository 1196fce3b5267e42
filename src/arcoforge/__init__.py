"""arcoforge: archival Earth-science files to analysis-ready cloud-optimized stores and ML batches.

Forge::

    pattern = af.FilePattern(make_url, af.ConcatDim("time", keys=dates, nitems_per_file=1))
    af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 12}), target="ersst.zarr")
    ds = af.open_dataset("ersst.zarr")

The public names below are imported on first use (module ``__getattr__``): ``import arcoforge``
and ``import arcoforge.batch`` load neither the forge (network, credentials, recipe validation)
nor the catalog, so that every DataLoader worker, which imports the package again, starts fast.
Importing the package registers the ``ds.arcoforge`` accessor (cheaply; its methods import what
they need when called).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:  # pyproj before ecCodes: imported after it (cfgrib loads it whenever xarray lists its
    # backends, i.e. on any open_dataset without engine=), pyproj makes the interpreter abort
    # at exit with "double free or corruption"; imported first, both work (about 25 ms)
    import pyproj  # noqa: F401
except ImportError:  # pragma: no cover - pyproj comes with the regrid/catalog extras
    pass

import arcoforge.accessor  # noqa: F401  (registers the ds.arcoforge accessor)
from arcoforge.errors import SchemaError, SourceError, SourceReadError

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first use
    from arcoforge.batch import BatchGenerator, SampleStream, reassemble
    from arcoforge.forge.append import AppendResult, append
    from arcoforge.forge.bake import BuildResult, Plan, bake, compile_plan
    from arcoforge.forge.feedstock import bake_feedstock, lint, load_meta, test_feedstock
    from arcoforge.forge.io.fetch import Auth, SourceOptions
    from arcoforge.forge.patterns import (
        ConcatDim,
        FilePattern,
        MergeDim,
        pattern_from_file_sequence,
    )
    from arcoforge.forge.recipes import ZarrRecipe
    from arcoforge.forge.verify import VerifyReport, verify
    from arcoforge.forge.virtual.recipe import VirtualRecipe
    from arcoforge.open import open_dataset, open_datatree

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "BatchGenerator": "arcoforge.batch",
    "SampleStream": "arcoforge.batch",
    "reassemble": "arcoforge.batch",
    "AppendResult": "arcoforge.forge.append",
    "append": "arcoforge.forge.append",
    "VerifyReport": "arcoforge.forge.verify",
    "verify": "arcoforge.forge.verify",
    "BuildResult": "arcoforge.forge.bake",
    "Plan": "arcoforge.forge.bake",
    "bake": "arcoforge.forge.bake",
    "compile_plan": "arcoforge.forge.bake",
    "bake_feedstock": "arcoforge.forge.feedstock",
    "lint": "arcoforge.forge.feedstock",
    "load_meta": "arcoforge.forge.feedstock",
    "test_feedstock": "arcoforge.forge.feedstock",
    "Auth": "arcoforge.forge.io.fetch",
    "SourceOptions": "arcoforge.forge.io.fetch",
    "ConcatDim": "arcoforge.forge.patterns",
    "FilePattern": "arcoforge.forge.patterns",
    "MergeDim": "arcoforge.forge.patterns",
    "pattern_from_file_sequence": "arcoforge.forge.patterns",
    "ZarrRecipe": "arcoforge.forge.recipes",
    "VirtualRecipe": "arcoforge.forge.virtual.recipe",
    "open_dataset": "arcoforge.open",
    "open_datatree": "arcoforge.open",
}

#: public submodules reachable as attributes (``af.transforms``)
_SUBMODULES = ("transforms",)

__all__ = [
    "AppendResult",
    "Auth",
    "BatchGenerator",
    "BuildResult",
    "ConcatDim",
    "FilePattern",
    "MergeDim",
    "Plan",
    "SampleStream",
    "SchemaError",
    "SourceError",
    "SourceOptions",
    "SourceReadError",
    "VerifyReport",
    "VirtualRecipe",
    "ZarrRecipe",
    "append",
    "bake",
    "bake_feedstock",
    "compile_plan",
    "lint",
    "load_meta",
    "open_dataset",
    "open_datatree",
    "pattern_from_file_sequence",
    "reassemble",
    "test_feedstock",
    "verify",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    if name in _SUBMODULES:  # af.transforms.Rename(...) without importing it first
        value = importlib.import_module(f"arcoforge.{name}")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported public names (for ``dir()`` and completion)."""
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
