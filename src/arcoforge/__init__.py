"""arcoforge: archival Earth-science files to analysis-ready cloud-optimized stores and ML batches.

Forge::

    pattern = af.FilePattern(make_url, af.ConcatDim("time", keys=dates, nitems_per_file=1))
    af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 12}), target="ersst.zarr")
    ds = af.open_dataset("ersst.zarr")
"""

import arcoforge.accessor  # noqa: F401  (registers the ds.arcoforge accessor)
from arcoforge.batch import BatchGenerator, SampleStream, reassemble
from arcoforge.forge.bake import BuildResult, Plan, bake, compile_plan
from arcoforge.forge.feedstock import bake_feedstock, lint, load_meta, test_feedstock
from arcoforge.forge.io.fetch import Auth, SourceError, SourceOptions
from arcoforge.forge.io.readers import SourceReadError
from arcoforge.forge.patterns import ConcatDim, FilePattern, MergeDim, pattern_from_file_sequence
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.schema import SchemaError
from arcoforge.open import open_dataset

__version__ = "0.1.0"

__all__ = [
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
    "ZarrRecipe",
    "bake",
    "bake_feedstock",
    "compile_plan",
    "lint",
    "load_meta",
    "open_dataset",
    "pattern_from_file_sequence",
    "reassemble",
    "test_feedstock",
]
