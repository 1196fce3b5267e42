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
# # Migrating from xbatcher
#
# arcoforge's `BatchGenerator` follows xbatcher 0.4's semantics, and
# `arcoforge.compat.xbatcher` has xbatcher's layout: the module, the `ds.batch` accessor and
# the PyTorch loaders. Migrating is one line:
#
# ```python
# import xbatcher                               # before
# import arcoforge.compat.xbatcher as xbatcher  # after: the rest of the code is unchanged
# ```
#
# This tutorial runs the same code on both, checks that the batches are identical, and times
# them. The data are the NCEP/NCAR reanalysis air temperature of October 2014 (the xarray
# tutorial dataset's first month: 124 six-hourly steps on a 2.5° North American grid), stored
# as a chunked Zarr store as training data usually is.

# %%
import os
import tempfile
import time
from pathlib import Path

import xarray as xr

from arcoforge.testing.samples import find_shared_data

SIZE = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "full")
REPEAT = 3 if SIZE == "small" else 10


DATA = find_shared_data("ncep-air/air.nc",
                        checkout=Path(__file__).resolve().parents[2]
                        if "__file__" in globals() else Path.cwd())
if DATA is None:
    print("The shared data folder was not found: set ARCOFORGE_SHARED_DATA to the folder that "
          "holds ncep-air/air.nc (the project's ../shared/data). Nothing else runs.")
    raise SystemExit(0)

store = Path(tempfile.mkdtemp(prefix="arcoforge-xbatcher-")) / "air.zarr"
xr.open_dataset(DATA / "ncep-air" / "air.nc").chunk({"time": 31}).to_zarr(store)
ds = xr.open_zarr(store)
print(ds)

# %% [markdown]
# ## The same code on both
#
# A function written against xbatcher's API: patches of 10 × 10 grid points, four time steps
# per batch, half-overlapping in space.

# %%
import xbatcher as real_xbatcher

import arcoforge.compat.xbatcher as xbatcher


def make_batches(xb, ds: xr.Dataset):
    return xb.BatchGenerator(ds, input_dims={"lat": 10, "lon": 10},
                             input_overlap={"lat": 5, "lon": 5}, batch_dims={"time": 4})


theirs, ours = make_batches(real_xbatcher, ds), make_batches(xbatcher, ds)
print("xbatcher", real_xbatcher.__version__, "batches:", len(theirs), "| arcoforge:", len(ours))
print(ours[0])

# %% [markdown]
# The batches are the same labeled `Dataset`s, index for index:

# %%
same = all(theirs[i].identical(ours[i]) for i in range(0, len(ours), 7))
print("every 7th batch identical:", same)

# %% [markdown]
# ## The accessor and the PyTorch loader
#
# Importing the compat module registers xbatcher's `ds.batch` accessor, and
# `xbatcher.loaders.torch.MapDataset` wraps generators for a `DataLoader` as before.

# %%
import torch

from arcoforge.compat.xbatcher.loaders.torch import MapDataset

gen = ds.batch.generator(input_dims={"lat": 10, "lon": 10}, batch_dims={"time": 4})
loader = torch.utils.data.DataLoader(MapDataset(gen), batch_size=None, shuffle=True)
x = next(iter(loader))
print(type(x).__name__, tuple(x.shape), x.dtype)

# %% [markdown]
# ## Timing
#
# One pass over every batch (reading the chunked store), best of a few runs. xbatcher slices
# the dataset for every batch; arcoforge reads each chunk once per block of batches and cuts
# the windows from it in numpy.

# %%


def one_pass(gen) -> float:
    start = time.perf_counter()
    for i in range(len(gen)):
        gen[i]["air"].values  # noqa: B018 - load it
    return time.perf_counter() - start


timings = {}
for name, xb in [("xbatcher", real_xbatcher), ("arcoforge.compat.xbatcher", xbatcher)]:
    timings[name] = min(one_pass(make_batches(xb, xr.open_zarr(store))) for _ in range(REPEAT))
n = len(ours)
for name, seconds in timings.items():
    print(f"{name:27s} {seconds:6.2f} s for {n} batches ({n / seconds:7.0f} batches/s)")
speedup = timings["xbatcher"] / timings["arcoforge.compat.xbatcher"]
print(f"speed-up: {speedup:.1f}x")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(timings), [n / s for s in timings.values()], color=["0.6", "tab:blue"])
ax.set_xlabel("batches per second (one pass, higher is better)")
ax.set_title(f"{n} batches of (4, 10, 10) from a chunked Zarr store")
fig.tight_layout()

# %% [markdown]
# ## Beyond xbatcher
#
# The compat layer is for existing code. New code can use the fast path directly:
# `ds.arcoforge.stream(...)` yields numpy batches with chunk-aware shuffling, sharding across
# workers and ranks, caches and resumable state, and `ds.arcoforge.torch_loader(...)` wraps it
# for PyTorch (see [the end-to-end tutorial](01_end_to_end.md)).

# %%
stream = ds.arcoforge.stream({"lat": 10, "lon": 10}, {"lat": 5, "lon": 5}, batch_size=64,
                             sampling="chunk_shuffle", seed=0)
batch = next(iter(stream.batches(epoch=0)))
print({k: v.shape for k, v in batch.items()}, "samples per epoch:", stream.grid.n_samples)
