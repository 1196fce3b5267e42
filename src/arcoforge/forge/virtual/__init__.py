"""Virtual references: map the bytes of archival files instead of copying them.

``af.bake(af.VirtualRecipe(pattern), "icechunk://repo")`` builds an Icechunk repository whose
arrays reference the chunks of the source files (virtual chunk containers for local folders,
HTTP servers and S3 buckets), with small coordinate-like variables and what the parser cannot map
stored inline.  ``af.open_dataset("icechunk://repo")`` reads it like any other store.
:func:`write_kerchunk` writes a kerchunk JSON reference file for older readers.

Modules: :mod:`.recipe` (the recipe, pure), :mod:`.refs` (per-file references and the checks
that keep them faithful), :mod:`.build` (plan, tasks, bake), :mod:`.kerchunk` (kerchunk JSON).
"""

from __future__ import annotations

from typing import Any

from arcoforge.forge.virtual.recipe import VirtualRecipe

__all__ = ["VirtualRecipe", "bake_virtual", "compile_virtual_plan", "write_kerchunk",
           "open_kerchunk"]


def __getattr__(name: str) -> Any:
    if name in ("bake_virtual", "compile_virtual_plan"):
        from arcoforge.forge.virtual import build

        return getattr(build, name)
    if name in ("write_kerchunk", "open_kerchunk"):
        from arcoforge.forge.virtual import kerchunk

        return getattr(kerchunk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
