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
# # Swath regridding
#
# Satellite granules are swaths: 2-D longitude/latitude along and across the track. This
# tutorial puts two consecutive MetOp-A ASCAT wind orbits (EUMETSAT, via PO.DAAC) onto a
# regular grid with pyresample, first one granule with the accessor
# `ds.arcoforge.resample(...)`, then both orbits through a recipe with the `Regrid` step, which
# builds one `(time, y, x)` cube, and finally streams patches from that cube.
# Needs `pip install 'arcoforge[regrid]'`. The [regrid guide](../regrid.md) has the details.

# %%
import os
import tempfile
from pathlib import Path

import arcoforge.regrid  # first: imports pyproj before any netCDF file is opened  # isort: skip
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import arcoforge as af
from arcoforge.regrid import Regrid
from arcoforge.testing.samples import find_shared_data

xr.set_options(display_expand_data=False, display_expand_attrs=False)
SIZE = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "full")
RESOLUTION = 1.0 if SIZE == "small" else 0.25  # degrees


DATA = find_shared_data("swath",
                        checkout=Path(__file__).resolve().parents[2]
                        if "__file__" in globals() else Path.cwd())
if DATA is None:
    print("The shared data folder was not found: set ARCOFORGE_SHARED_DATA to the folder that "
          "holds swath/ (the project's ../shared/data). Nothing else runs.")
    raise SystemExit(0)
orbits = sorted((DATA / "swath").glob("ascat_20150702_*_metopa_*.nc"))
print([p.name for p in orbits])

# %% [markdown]
# ## One granule with the accessor

# %%
swath = xr.open_dataset(orbits[0])
print(dict(swath.sizes), "| lon/lat:", swath.lon.dims, "| variables:", len(swath.data_vars))
area = {"crs": "EPSG:4326", "extent": [-180, -90, 180, 90], "resolution": RESOLUTION}
grid = swath.arcoforge.resample(area, method="nearest", radius_of_influence=30_000)
print(grid.wind_speed)
print("cells with data:", int(grid.coverage.sum()), "of", grid.coverage.size)

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 3.8))
axes[0].scatter(swath.lon.values.ravel() % 360, swath.lat.values.ravel(), s=0.2,
                c=swath.wind_speed.values.ravel(), cmap="viridis", vmin=0, vmax=20)
axes[0].set_title("ASCAT orbit 45145: swath pixels (lon 0..360)")
axes[0].set_xlabel("longitude")
axes[0].set_ylabel("latitude")
grid.wind_speed.plot(ax=axes[1], cmap="viridis", vmin=0, vmax=20)
axes[1].set_title(f"on a {RESOLUTION}° grid (nearest, 30 km radius)")
fig.tight_layout()

# %% [markdown]
# Other methods (`bilinear`, `ewa`, `bucket_avg`, `bucket_count`) take the same call; flags
# and integer variables are always resampled by nearest neighbour, never averaged. Where each
# swath pixel lands is computed once per geometry and cached, so the next variable or a repeat
# orbit is fast:

# %%
import time

from arcoforge.regrid import default_cache

for attempt in ("first", "cached"):
    start = time.perf_counter()
    swath.arcoforge.resample(area, method="bucket_avg")
    print(f"bucket_avg, {attempt}: {time.perf_counter() - start:.2f} s")
print(default_cache.info())

# %% [markdown]
# ## Many orbits into one cube: the `Regrid` recipe step
#
# Each orbit becomes one step of the cube's time axis. ASCAT's per-pixel `time` variable would
# clash with that axis, so it is renamed first.

# %%
keys = [np.datetime64("2015-07-02T08:42:00", "ns"), np.datetime64("2015-07-02T10:24:00", "ns")]
files = dict(zip(keys, map(str, orbits)))


def add_time(index, ds):
    """The granule becomes one time step (its key: the orbit's start)."""
    out = ds.expand_dims(time=[index.key("time")])
    out.time.encoding = {"units": "seconds since 2000-01-01", "dtype": "int64"}
    return out


pattern = af.FilePattern(lambda time: files[time],
                         af.ConcatDim("time", keys=keys, nitems_per_file=1))
recipe = af.ZarrRecipe(pattern, target_chunks={"time": 1}, transforms=[
    af.transforms.Rename({"time": "pixel_time"}),
    Regrid(area, method="nearest", radius_of_influence=30_000,
           variables=["wind_speed", "wind_dir", "wvc_quality_flag"]),
    af.transforms.Function(add_time),
])
target = Path(tempfile.mkdtemp(prefix="arcoforge-regrid-")) / "ascat-cube.zarr"
print(af.bake(recipe, str(target), progress=False))
cube = af.open_dataset(str(target))
print(cube)

# %%
fig, ax = plt.subplots(figsize=(9, 3.8))
cube.wind_speed.max("time").plot(ax=ax, cmap="viridis", vmin=0, vmax=20)
ax.set_title("both orbits in the cube (max over time)")

# %% [markdown]
# ## Patches of the cube for a model
#
# The cube is a normal arcoforge store: stream patches from it, skipping those mostly outside
# the swaths with `max_missing`.

# %%
stream = cube.arcoforge.stream({"y": 16, "x": 16}, variables=["wind_speed"], batch_size=32,
                               max_missing=0.5)
n = sum(b["wind_speed"].shape[0] for b in stream.batches(epoch=0))
print(f"{n} patches of 16 x 16 cells with at least half of them observed")
