"""``arcoforge demo``: serve the bundled NOAA files over loopback HTTP, bake, verify, open.

Runs on a fresh machine with nothing started by hand: the HTTP server (with Range support) is
started in this process on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

import pandas as pd

import arcoforge as af
from arcoforge.forge.verify import verify
from arcoforge.testing.http import start_http_server

__all__ = ["demo_data_dir", "demo_recipes", "run_demo"]


def demo_data_dir() -> Path:
    """The folder of bundled real NOAA files."""
    return Path(str(resources.files("arcoforge") / "demo_data"))


def demo_recipes(base_url: str) -> dict[str, af.ZarrRecipe]:
    """The demo's recipes, reading from ``base_url`` (the loopback server)."""
    months = pd.date_range("2019-01", "2020-12", freq="MS")
    ersst = af.FilePattern(
        lambda time: f"{base_url}/ersst-v5/ersst.v5.{time:%Y%m}.nc",
        af.ConcatDim("time", keys=months, nitems_per_file=1),
    )
    days = pd.date_range("2022-09-13", periods=1, freq="D")
    oisst = af.FilePattern(
        lambda time: f"{base_url}/oisst/oisst-avhrr-v02r01.{time:%Y%m%d}.nc",
        af.ConcatDim("time", keys=days, nitems_per_file=1),
    )
    return {
        "ersst-v5": af.ZarrRecipe(ersst, target_chunks={"time": 12}),
        "oisst-v2.1": af.ZarrRecipe(oisst, target_chunks={"time": 1, "lat": 360, "lon": 720}),
    }


def run_demo(out: str | None = None, progress: bool = True) -> int:
    """Run the demo; returns an exit code (0 when every store verified)."""
    out_dir = Path(out or tempfile.mkdtemp(prefix="arcoforge-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    server = start_http_server(demo_data_dir(), range=True)
    print(f"serving the bundled NOAA files at {server.url} (loopback, with HTTP Range)")
    status = 0
    try:
        for name, recipe in demo_recipes(server.url).items():
            target = os.fspath(out_dir / f"{name}.zarr")
            print(f"\n== {name}: {len(recipe.pattern)} files -> {target}")
            result = af.bake(recipe, target, progress=progress)
            print(result)
            report = verify(target, recipe)
            print(report)
            status |= 0 if report.ok else 1
            ds = af.open_dataset(target)
            var = next(iter(ds.data_vars))
            print(f"{var}: {dict(ds[var].sizes)} {ds[var].dtype}, "
                  f"time {ds.time.values[0]} .. {ds.time.values[-1]}")
    finally:
        server.stop()
    print(f"\nstores are in {out_dir}. Open one with:\n"
          f"    import arcoforge as af\n    ds = af.open_dataset({str(out_dir / 'ersst-v5.zarr')!r})")
    return status
