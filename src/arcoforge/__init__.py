"""arcoforge: archival Earth-science files to analysis-ready cloud-optimized stores and ML batches.

Forge::

    pattern = af.FilePattern(make_url, af.ConcatDim("time", keys=dates, nitems_per_file=1))
    af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 12}), target="ersst.zarr")
    ds = af.open_dataset("ersst.zarr")
"""

import arcoforge.accessor  # noqa: F401  (registers the ds.arcoforge accessor)
from arcoforge.batch import BatchGenerator, SampleStream, reassemble
from arcoforge.build import BuildResult, Plan, bake, compile_plan
from arcoforge.feedstock import bake_feedstock, lint, load_meta, test_feedstock
from arcoforge.opening import open_dataset
from arcoforge.patterns import ConcatDim, FilePattern, MergeDim, pattern_from_file_sequence
from arcoforge.readers import SourceReadError
from arcoforge.recipes import ZarrRecipe
from arcoforge.schema import SchemaError
from arcoforge.sources import Auth, SourceError, SourceOptions

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
