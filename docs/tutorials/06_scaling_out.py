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
# # Scaling out: one recipe, five ways to run it
#
# A recipe compiles to one plan — *prepare*, many independent store tasks, *finalize* — and an
# engine only runs it. So the same recipe runs on threads in this process, on a pool of local
# processes, on a Dask cluster, as an Apache Beam pipeline and as a Prefect flow, and every one
# of them writes the same store. This tutorial runs them all on the same ERSST v5 files and
# checks that the stores are identical. (The original EarthML examples stopped at one
# machine; the [engines guide](../engines.md) says which engine to choose when.)
#
# Engines that start worker processes re-import this script in each worker, so the code that
# starts them sits under `if __name__ == "__main__":`, as it must in any script (arcoforge
# stops with a clear error when it does not). The timings below come from a small build on a
# shared 2-core machine: they show each engine's fixed cost (starting a cluster, a Beam
# pipeline, a Prefect server), not its throughput on a real archive.

# %%
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import arcoforge as af
from arcoforge.testing.samples import find_shared_data

SIZE = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "full")
N_MONTHS = 12 if SIZE == "small" else 24


DATA = find_shared_data("ersst-v5",
                        checkout=Path(__file__).resolve().parents[2]
                        if "__file__" in globals() else Path.cwd())
if DATA is None:
    print("The shared data folder was not found: set ARCOFORGE_SHARED_DATA to the folder that "
          "holds ersst-v5/ (the project's ../shared/data). Nothing else runs.")
    raise SystemExit(0)

# %% [markdown]
# ## The recipe
#
# One store task per month (`target_chunks={"time": 1}`), so there is parallel work to share.
# The function that names the files is defined at the top level of the script, so that worker
# processes can import it.

# %%
months = pd.date_range("2019-01", periods=N_MONTHS, freq="MS")


def month_file(time: pd.Timestamp) -> str:
    return str(DATA / "ersst-v5" / f"ersst.v5.{time:%Y%m}.nc")


recipe = af.ZarrRecipe(af.FilePattern(month_file, af.ConcatDim("time", keys=months,
                                                                nitems_per_file=1)),
                       target_chunks={"time": 1})
work = Path(tempfile.mkdtemp(prefix="arcoforge-scale-"))
timings: dict[str, float] = {}


def build(name: str, **options) -> str:
    """Bake the recipe with one engine's options into its own store; time it."""
    target = str(work / f"{name}.zarr")
    start = time.perf_counter()
    result = af.bake(recipe, target, progress=False, **options)
    timings[name] = time.perf_counter() - start
    print(f"{name:10s} {timings[name]:6.1f} s  {result}".replace(str(work), "<work>"))
    return target


# %% [markdown]
# ## Threads in this process (the default), and local processes
#
# `processes=True` decodes the files in a spawned process pool (HDF5 reads are serialised
# within one process).

# %%
if __name__ == "__main__":
    stores = {"threads": build("threads")}
    stores["processes"] = build("processes", processes=True, workers=2)

# %% [markdown]
# ## A Dask cluster
#
# Without `client=` or `scheduler=`, the engine starts a `LocalCluster` of `workers` processes
# and closes it afterwards. On a real cluster, pass `scheduler="tcp://...:8786"` or a
# `distributed.Client`: the workers then read the sources and write the target where they run.

# %%
if __name__ == "__main__":
    stores["dask"] = build("dask", engine="dask", workers=2, threads_per_worker=1)

# %% [markdown]
# ## Apache Beam
#
# The whole build — prepare, every store task, finalize — becomes Beam transforms. Without
# pipeline options it runs on Beam's in-process `FnApiRunner`; with
# `pipeline_options=["runner=DataflowRunner", "project=...", ...]` (or Flink, Spark) the same
# call runs on that runner.

# %%
if __name__ == "__main__":
    import logging

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    stores["beam"] = build("beam", engine="beam")

# %% [markdown]
# ## Prefect
#
# With `engine="prefect"` the build is a Prefect flow run: a `prepare` task run, one `store`
# task run per unit of work and a `finalize` task run, with their states, retries and logs in
# Prefect's UI. Without `PREFECT_API_URL`, Prefect starts a temporary local server for the run
# (its database under `PREFECT_HOME`; we point that at a temporary folder and turn telemetry
# off).

# %%
if __name__ == "__main__":
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # busy hosts
    try:
        import prefect  # noqa: F401
    except ImportError:
        print("prefect is not installed (pip install 'arcoforge[prefect]'): skipped")
    else:
        stores["prefect"] = build("prefect", engine="prefect", workers=2)

# %% [markdown]
# ## The same store, whichever engine
#
# Every store holds the same values, chunks and attributes (apart from the build's own
# provenance: creation time and engine).

# %%
if __name__ == "__main__":
    reference = af.open_dataset(stores["threads"]).load()
    for name, target in stores.items():
        ds = af.open_dataset(target).load()
        same = all(np.array_equal(ds[v].values, reference[v].values, equal_nan=True)
                   for v in reference.variables)
        print(f"{name:10s} same data as threads: {same}; chunks {ds.sst.encoding['chunks']}")

# %%
if __name__ == "__main__":
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(list(timings), list(timings.values()), color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("seconds, including the engine's start-up")
    ax.set_title(f"{N_MONTHS} files, {N_MONTHS} store tasks, on a shared 2-core machine")
    fig.tight_layout()
