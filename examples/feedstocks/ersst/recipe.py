"""ERSST v5: 24 monthly NetCDF files (2019-01..2020-12), one time step each → one Zarr store.

The files are NOAA data (US-Government work, public domain), copied from
brianburkenoaa/CMISST into the shared data folder.  It is found through ``$ARCOFORGE_SHARED_DATA``
or a ``shared/data`` folder next to (or above) this repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import arcoforge as af

HERE = Path(__file__).resolve().parent
MONTHS = [f"{year}{month:02d}" for year in (2019, 2020) for month in range(1, 13)]


def data_dir() -> Path:
    """The folder holding ``ersst-v5/``."""
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    # examples/feedstocks/ersst -> repository root is three levels up
    repo = HERE.parents[2]
    candidates += [repo / "shared" / "data", repo.parent / "shared" / "data"]
    for c in candidates:
        if (c / "ersst-v5").is_dir():
            return c
    raise FileNotFoundError(
        "ERSST v5 files not found; set ARCOFORGE_SHARED_DATA to the folder holding ersst-v5/ "
        f"(looked in {', '.join(str(c) for c in candidates)})"
    )


def make_path(time: str) -> str:
    return str(data_dir() / "ersst-v5" / f"ersst.v5.{time}.nc")


pattern = af.FilePattern(make_path, af.ConcatDim("time", keys=MONTHS, nitems_per_file=1))
recipe = af.ZarrRecipe(pattern, target_chunks={"time": 12})
