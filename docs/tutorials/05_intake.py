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
# # Intake access
#
# Many teams hand data to users through [Intake](https://intake.readthedocs.io) catalogs.
# arcoforge publishes its stores in a STAC catalog; `arcoforge.catalog.intake` turns that
# catalog (or a search result, or one store) into an Intake 2 catalog whose entries open the
# datasets *by id* through the STAC catalog, so a reader always gets the version the catalog
# calls current, or the version it pins. Needs `pip install 'arcoforge[intake]'`.
#
# We build two stores from real NOAA files (ERSST v5 SST and GODAS sea-surface height),
# publish them, append a month to one of them (a new version), and read both through Intake.

# %%
import os
import tempfile
from pathlib import Path

import intake
import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

import arcoforge as af
import arcoforge.errors
from arcoforge.catalog import publish, search
from arcoforge.catalog.intake import (
    catalog_to_intake,
    dataset_to_intake,
    search_to_intake,
    write_intake_catalog,
)
from arcoforge.forge.append import append
from arcoforge.testing.samples import find_shared_data

xr.set_options(display_expand_attrs=False)
SIZE = os.environ.get("ARCOFORGE_TUTORIAL_SIZE", "full")
N_MONTHS = 6 if SIZE == "small" else 23


DATA = find_shared_data("ersst-v5", "godas-ssh",
                        checkout=Path(__file__).resolve().parents[2]
                        if "__file__" in globals() else Path.cwd())
if DATA is None:
    print("The shared data folder was not found: set ARCOFORGE_SHARED_DATA to the folder that "
          "holds ersst-v5/ and godas-ssh/ (the project's ../shared/data). Nothing else runs.")
    raise SystemExit(0)
work = Path(tempfile.mkdtemp(prefix="arcoforge-intake-"))

# %% [markdown]
# ## Two stores in a STAC catalog

# %%


def ersst_recipe(n_months: int) -> af.ZarrRecipe:
    months = pd.date_range("2019-01", periods=n_months, freq="MS")
    pattern = af.FilePattern(lambda time: str(DATA / "ersst-v5" / f"ersst.v5.{time:%Y%m}.nc"),
                             af.ConcatDim("time", keys=months, nitems_per_file=1))
    return af.ZarrRecipe(pattern, target_chunks={"time": 12})


ssh_pattern = af.FilePattern(lambda time: str(DATA / "godas-ssh" / f"sshg.{time}.nc"),
                             af.ConcatDim("time", keys=[2019, 2020], nitems_per_file=12))
stores = {"ersst-v5": work / "ersst.zarr", "godas-ssh": work / "godas-ssh.zarr"}
af.bake(ersst_recipe(N_MONTHS), str(stores["ersst-v5"]), progress=False)
af.bake(af.ZarrRecipe(ssh_pattern, target_chunks={"time": 12}), str(stores["godas-ssh"]),
        progress=False)
catalog = work / "catalog"
publish(str(catalog), str(stores["ersst-v5"]), dataset_id="ersst-v5",
        meta={"title": "NOAA ERSST v5 monthly SST", "license": "public-domain"})
publish(str(catalog), str(stores["godas-ssh"]), dataset_id="godas-ssh",
        meta={"title": "NCEP GODAS monthly sea-surface height", "license": "public-domain"})
print([(s.id, s.variables, s.version) for s in search(str(catalog))])

# %% [markdown]
# ## The catalog as an Intake catalog
#
# `write_intake_catalog` writes plain Intake 2 YAML; its entries name arcoforge's readers by
# import path, so `intake.from_yaml_file` on any machine with arcoforge installed reads it.

# %%
path = write_intake_catalog(catalog_to_intake(str(catalog)), work / "catalog.yaml")
print(Path(path).read_text()[:1500].replace(str(work), "<work>"))

# %%
cat = intake.from_yaml_file(path)
print(sorted(cat.entries))
sst = cat["ersst-v5"].read()
print(cat["ersst-v5"].metadata["title"], "| versions:", cat["ersst-v5"].metadata["versions"])
print(sst)

# %%
ssh = cat["godas-ssh"].read()
fig, axes = plt.subplots(1, 2, figsize=(14, 3.6))
sst.sst.isel(time=-1, lev=0).plot(ax=axes[0], cmap="RdYlBu_r")
axes[0].set_title("ersst-v5 via Intake, last month")
ssh.sshg.isel(time=0).plot(ax=axes[1], cmap="RdBu_r")
axes[1].set_title("godas-ssh via Intake, January 2019")
fig.tight_layout()

# %% [markdown]
# ## A new version arrives
#
# Appending next month's file publishes version 1.1 of the store, and republishing updates the
# catalog. An entry read *by id* follows the catalog. An entry pinned to a version
# (`dataset_to_intake(store, name, version=...)` for one store) reads exactly that version as
# long as the store keeps it: retention keeps the latest minor version of every major one, so
# pin major versions (a rebuild with a changed recipe) in long-lived catalogs.

# %%
pinned = dataset_to_intake(str(stores["ersst-v5"]), "ersst-1.0", version="1.0")
print("pinned 1.0, before the append:", pinned["ersst-1.0"].read().sizes["time"], "months")
append(ersst_recipe(N_MONTHS + 1), str(stores["ersst-v5"]))
publish(str(catalog), str(stores["ersst-v5"]), dataset_id="ersst-v5",
        meta={"title": "NOAA ERSST v5 monthly SST", "license": "public-domain"})
current = intake.from_yaml_file(
    write_intake_catalog(catalog_to_intake(str(catalog)), work / "catalog.yaml"))
print("by id, after the append:", current["ersst-v5"].read().sizes["time"], "months, version",
      current["ersst-v5"].metadata["version"])
try:
    pinned["ersst-1.0"].read()
except af.errors.NotFoundError as err:  # 1.0 was replaced by 1.1 (same major)
    print("pinned 1.0, after the append:", str(err).replace(str(work), "<work>"))

# %% [markdown]
# ## A search result as a catalog
#
# `search_to_intake` hands a user just the datasets that match a query:

# %%
hits = search(str(catalog), variables=["sshg"])
print([h.id for h in hits], sorted(search_to_intake(hits, str(catalog)).entries))
