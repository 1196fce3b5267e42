"""Benchmark: one NetCDF4 file larger than a worker's memory, baked with the Dask engine.

Writes a single uncompressed NetCDF4 file of ``--size-gb`` (default 4.2 GB) from the real OISST
v2.1 day (``oisst-avhrr-v02r01.20220913.nc``: four int16-packed 1440x720 variables, ~8.3 MB per
time step; step i is the real field rolled by i along lon, dated day +i), then bakes it into Zarr v3
on a ``LocalCluster`` whose workers have ``--memory-limit`` (default 1 GB) each.  Store tasks read
the file by slice, so worker memory stays bounded by the target chunks, not by the file size.
Prints the build time, throughput and each worker's peak RSS (Linux ``VmHWM``, reset before the
build), and checks a few time steps against the source.

    python benchmarks/large_input.py                     # 4.2 GB, 2 workers x 1 GB
    python benchmarks/large_input.py --size-gb 1 --memory-limit 500MB --chunks 5
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
DAY = "oisst/oisst-avhrr-v02r01.20220913.nc"
VARS = ("sst", "anom", "err", "ice")


def make_file(path: Path, size_gb: float) -> int:
    """Write the big file; returns its number of time steps."""
    import netCDF4
    import numpy as np

    src_path = SHARED / DAY
    if not src_path.exists():
        sys.exit(f"benchmark input {src_path} not found (set ARCOFORGE_SHARED_DATA)")
    with netCDF4.Dataset(src_path) as src:
        src.set_auto_maskandscale(False)
        step_bytes = sum(src[v][:].nbytes for v in VARS)
        steps = int(np.ceil(size_gb * 1e9 / step_bytes))
        with netCDF4.Dataset(path, "w", format="NETCDF4") as out:
            out.set_auto_maskandscale(False)
            out.setncatts({k: src.getncattr(k) for k in src.ncattrs()})
            for name, dim in src.dimensions.items():
                out.createDimension(name, None if dim.isunlimited() else len(dim))
            for name, var in src.variables.items():
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                fill = attrs.pop("_FillValue", None)
                chunks = (1, 1, *var.shape[2:]) if name in VARS else None
                new = out.createVariable(name, var.dtype, var.dimensions, fill_value=fill,
                                         chunksizes=chunks)
                new.setncatts(attrs)
                if "time" not in var.dimensions:
                    new[:] = var[:]
            out["time"][:] = src["time"][:] + np.arange(steps, dtype=src["time"].dtype)
            fields = {v: src[v][:] for v in VARS}
            for i in range(steps):
                for v in VARS:
                    out[v][i] = np.roll(fields[v][0], i, axis=-1)
    return steps


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=4.2, help="size of the input file (GB)")
    p.add_argument("--memory-limit", default="1GB", help="memory limit of each Dask worker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunks", type=int, default=10, help="target chunk length along time")
    p.add_argument("--workdir", help="where the input and the store go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the input and the store")
    args = p.parse_args()

    import dask
    import numpy as np
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    import arcoforge as af

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="arcoforge-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    big, target = workdir / "oisst-big.nc", workdir / "oisst-big.zarr"
    try:
        t0 = time.perf_counter()
        if not big.exists():
            make_file(big, args.size_gb)
        size = big.stat().st_size
        print(f"input: {big} {size / 1e9:.2f} GB, written in {time.perf_counter() - t0:.1f} s")

        limit = parse_bytes(args.memory_limit)
        with dask.config.set({"distributed.worker.memory.spill": False,
                              "distributed.worker.memory.target": False}), \
                LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                             memory_limit=limit, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            baseline = client.run(_rss)
            client.run(_reset_peak)
            recipe = af.ZarrRecipe(af.pattern_from_file_sequence([str(big)], "time"),
                                   target_chunks={"time": args.chunks})
            t1 = time.perf_counter()
            result = af.bake(recipe, str(target), engine="dask", client=client, progress=False)
            seconds = time.perf_counter() - t1
            peaks = client.run(_peak)
        print(result)
        print(f"bake (dask, {args.workers} workers x {limit / 1e9:.2f} GB, "
              f"chunks time={args.chunks}): {seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s")
        for addr in sorted(peaks):
            print(f"  worker {addr}: idle RSS {baseline.get(addr, 0) / 1e6:.0f} MB, "
                  f"peak RSS during the build {peaks[addr] / 1e6:.0f} MB "
                  f"({100 * peaks[addr] / limit:.0f}% of the limit)")
        out = af.open_dataset(str(target), decode_times=False, mask_and_scale=False)
        import xarray as xr

        with xr.open_dataset(big, decode_times=False, mask_and_scale=False) as ref:
            steps = ref.sizes["time"]
            for i in sorted({0, steps // 2, steps - 1}):
                for v in VARS:
                    np.testing.assert_array_equal(out[v][i].values, ref[v][i].values)
        print(f"checked time steps 0, {steps // 2}, {steps - 1} of {steps}: identical")
        if max(peaks.values()) >= limit:
            sys.exit("a worker's peak RSS reached its memory limit")
    finally:
        if not args.keep:
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(str(target) + ".arcoforge-staging", ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                big.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
