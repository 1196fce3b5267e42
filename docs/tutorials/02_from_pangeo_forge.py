# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---
# ruff: noqa: E402  (a notebook: each cell imports what it introduces)

# %% [markdown]
# # Migrating from pangeo-forge-recipes
#
# Recipe modules written for pangeo-forge-recipes run on arcoforge **unchanged**: both the
# 0.9 style (`XarrayZarrRecipe` objects) and the 0.10 style (an Apache Beam chain of
# `OpenURLWithFSSpec | OpenWithXarray | StoreToZarr`). `arcoforge bake recipe.py` imports the
# module with `pangeo_forge_recipes` aliased to `arcoforge.compat.pangeo_forge_recipes` (when
# the real package is not installed), compiles the recipe into arcoforge's plan and bakes it
# with any engine: no Beam runner is needed for the 0.10 chain.
#
# This tutorial writes two such modules, bakes them from the command line and from Python,
# verifies both stores against their sources, and shows that they hold the same data.

# %%
import os
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

import arcoforge as af
from arcoforge.cli import main as arcoforge_cli
from arcoforge.testing.http import start_http_server
from arcoforge.testing.samples import find_shared_data

xr.set_options(display_expand_attrs=False)
SIZE = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "full")
N_MONTHS = 6 if SIZE == "small" else 24


DATA = find_shared_data("ersst-v5",
                        checkout=Path(__file__).resolve().parents[2]
                        if "__file__" in globals() else Path.cwd())
if DATA is None:
    print("The shared data folder was not found: set ARCOFORGE_SHARED_DATA to the folder that "
          "holds ersst-v5/ (the project's ../shared/data). Nothing else runs.")
    raise SystemExit(0)

server = start_http_server(DATA / "ersst-v5")
months = [f"{y}{m:02d}" for y in (2019, 2020) for m in range(1, 13)][:N_MONTHS]
work = Path(tempfile.mkdtemp(prefix="arcoforge-pangeo-"))
print(f"{len(months)} ERSST v5 files served at <server>; work folder {work}")

# %% [markdown]
# ## A pangeo-forge-recipes 0.9 module
#
# This is the recipe as it was written for pangeo-forge-recipes 0.9 (the `recipes` module is
# gone from 0.10, so it no longer runs there); not a line is changed.

# %%
recipe_09 = work / "recipe_09.py"
recipe_09.write_text(textwrap.dedent(f'''\
    from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
    from pangeo_forge_recipes.recipes import XarrayZarrRecipe

    months = {months!r}


    def make_url(time):
        return f"{server.url}/ersst.v5.{{time}}.nc"


    pattern = FilePattern(make_url, ConcatDim("time", months, nitems_per_file=1))
    recipe = XarrayZarrRecipe(pattern, target_chunks={{"time": 3}})
    '''))
print(recipe_09.read_text().replace(server.url, "https://www.ncei.noaa.gov/pub/data/ersst"))

# %% [markdown]
# Bake it from a shell with `arcoforge bake recipe_09.py --target ersst09.zarr` (here through
# the same command-line entry point, from Python), then check it with `arcoforge verify`:

# %%
store_09 = work / "ersst09.zarr"
code = arcoforge_cli(["bake", str(recipe_09), "--target", str(store_09), "--no-progress"])
print("bake exit status", code)
code = arcoforge_cli(["verify", str(store_09), "--against", str(recipe_09)])
print("verify exit status", code)

# %% [markdown]
# ## A pangeo-forge-recipes 0.10 Beam chain
#
# The 0.10 style builds a Beam pipeline. arcoforge reads the chain, recognises each standard
# transform, keeps your own `beam.PTransform`s that work on `(index, dataset)` pairs (here one
# that drops the anomaly variable), and compiles the whole into one arcoforge recipe.

# %%
recipe_010 = work / "recipe_010.py"
recipe_010.write_text(textwrap.dedent(f'''\
    import apache_beam as beam
    from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
    from pangeo_forge_recipes.transforms import (ConsolidateDimensionCoordinates,
                                                 ConsolidateMetadata, OpenURLWithFSSpec,
                                                 OpenWithXarray, StoreToZarr)

    pattern = FilePattern(lambda time: f"{server.url}/ersst.v5.{{time}}.nc",
                          ConcatDim("time", {months!r}, nitems_per_file=1))


    class DropAnomaly(beam.PTransform):
        @staticmethod
        def _drop(index, ds):
            return index, ds.drop_vars("ssta")

        def expand(self, pcoll):
            return pcoll | "drop ssta" >> beam.MapTuple(self._drop)


    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | DropAnomaly()
        | StoreToZarr(store_name="ersst.zarr", combine_dims=pattern.combine_dim_keys,
                      target_chunks={{"time": 3}}, attrs={{"title": "ERSST via a Beam chain"}})
        | ConsolidateDimensionCoordinates()
        | ConsolidateMetadata()
    )
    '''))
print(recipe_010.read_text().replace(server.url, "https://www.ncei.noaa.gov/pub/data/ersst"))

# %%
store_010 = work / "ersst010.zarr"
code = arcoforge_cli(["bake", str(recipe_010), "--target", str(store_010), "--no-progress"])
print("bake exit status", code)
code = arcoforge_cli(["verify", str(store_010), "--against", str(recipe_010)])
print("verify exit status", code)

# %% [markdown]
# ## From Python, and what you get
#
# The compat classes are importable as `arcoforge.compat.pangeo_forge_recipes` too, and
# `af.bake` takes their recipes like its own `ZarrRecipe` (any engine, `engine="dask"` ...).
# Both stores above are plain Zarr v3, versioned, with provenance, and open with
# `af.open_dataset` (or `xr.open_zarr`).

# %%
from arcoforge.compat.pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from arcoforge.compat.pangeo_forge_recipes.recipes import XarrayZarrRecipe

pattern = FilePattern(lambda time: f"{server.url}/ersst.v5.{time}.nc",
                      ConcatDim("time", months, nitems_per_file=1))
result = af.bake(XarrayZarrRecipe(pattern, target_chunks={"time": 3}),
                 str(work / "ersst-python.zarr"), progress=False)
print(result)

ds09, ds010 = af.open_dataset(str(store_09)), af.open_dataset(str(store_010))
print(ds010)
print("same sst in both stores:", bool(np.array_equal(ds09.sst.values, ds010.sst.values,
                                                      equal_nan=True)))
print("ssta dropped by the Beam chain:", "ssta" not in ds010, "| title:", ds010.attrs["title"])
print("chunks:", ds09.sst.encoding["chunks"], "| version:", ds09.attrs["arcoforge:version"])

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3.2))
ds010.sst.isel(lev=0).mean("time").plot(ax=ax, cmap="RdYlBu_r")
ax.set_title(f"mean SST of the {len(months)} months, baked from the 0.10 Beam chain")

# %% [markdown]
# ## What does not carry over
#
# The compat layer refuses, with a message naming the problem and the fix, what it cannot
# compile faithfully: `StoreToZarr(dynamic_chunking_fn=...)`, a chain without
# `OpenWithXarray`, and the `HDFReferenceRecipe` without an Icechunk target (virtual
# references are an Icechunk feature here). Feedstocks in pangeo-forge's layout
# (`feedstock/meta.yaml` + `recipe.py`) work with `arcoforge lint`, `arcoforge test` and
# `arcoforge feedstock bake` as they are.

# %%
server.stop()
