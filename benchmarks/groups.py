"""Benchmark: NetCDF4 groups into one Zarr store -- ``af.ZarrRecipe(groups=[...])`` vs what a
user writes with xarray alone (each group: ``open_mfdataset(files, group=g).to_zarr(store,
group=g)``).

Makes N Sentinel-6A-like passes from the two real ones in ``shared/data/groups`` (pass ``i``
is real pass ``i % 2`` with its ``data_01/time`` moved on by ``i // 2`` times 20 minutes),
builds both stores in one run, checks that every group of the two stores opens identical, and
prints the times and their ratio.

    python benchmarks/groups.py --n 50 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SHARED = Path(os.environ.get("ARCOFORGE_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
GROUPS = ["data_01", "data_01/ku"]


def make_passes(n: int, out: Path) -> list[str]:
    import netCDF4

    real = sorted((SHARED / "groups").glob("S6A_*.nc"))
    if len(real) != 2:
        sys.exit(f"benchmark input {SHARED / 'groups'} not found (set ARCOFORGE_SHARED_DATA)")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        dst = out / f"pass_{i:05d}.nc"
        if not dst.exists():
            shutil.copy(real[i % 2], dst)
            dst.chmod(0o644)
            with netCDF4.Dataset(dst, "a") as nc:
                t = nc["data_01/time"]
                t[:] = t[:] + (i // 2) * 1200.0
        files.append(str(dst))
    return files


def with_xarray(files: list[str], store: str) -> None:
    import xarray as xr

    with xr.open_dataset(files[0]) as root:
        xr.Dataset(attrs=root.attrs).to_zarr(store, mode="w", zarr_format=3, consolidated=False)
    for g in GROUPS:
        with xr.open_mfdataset(files, group=g, combine="nested", concat_dim="time",
                               data_vars="minimal", coords="minimal", compat="override") as ds:
            ds.to_zarr(store, group=g, mode="a", zarr_format=3, consolidated=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50], help="numbers of passes")
    args = parser.parse_args()

    import xarray as xr

    import arcoforge as af
    from arcoforge.quiet import expected_warnings

    work = Path(tempfile.mkdtemp(prefix="arcoforge-bench-groups-"))
    print(f"{'passes':>7} {'arcoforge s':>12} {'xarray s':>9} {'ratio':>6}")
    try:
        for n in args.n:
            files = make_passes(n, work / "src")
            ours, theirs = str(work / f"af-{n}.zarr"), str(work / f"xr-{n}.zarr")
            recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"), groups=GROUPS)
            t0 = time.perf_counter()
            af.bake(recipe, ours, progress=False)
            t_af = time.perf_counter() - t0
            t0 = time.perf_counter()
            with expected_warnings():
                with_xarray(files, theirs)
            t_xr = time.perf_counter() - t0
            for g in GROUPS:  # the same data, or the times mean nothing
                a = af.open_dataset(ours, group=g).load()
                with xr.open_zarr(theirs, group=g, consolidated=False) as b:
                    xr.testing.assert_identical(a, b.load())
            print(f"{n:>7} {t_af:>12.2f} {t_xr:>9.2f} {t_xr / t_af:>5.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
