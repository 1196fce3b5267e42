"""Benchmark: arcoforge bake vs ``xr.open_mfdataset(...).to_zarr(...)`` on N OISST-like daily files.

Makes N copies of the real OISST v2.1 day (``oisst-avhrr-v02r01.20220913.nc``: 1440x720, four
int16-packed variables) with consecutive dates, then builds them into Zarr v3 in one run with each
method, every build in a fresh subprocess so that peak RSS is its own.  Prints source MB/s
(compressed bytes of the input files per second), peak RSS and ratios against open_mfdataset.

    python benchmarks/bake.py --n 100 1000
    python benchmarks/bake.py --n 50 --engines local,dask,beam --target-kind zarr,icechunk
    python benchmarks/bake.py --n 100 --engines local --reads manifest,raw --check-identical

``--reads raw`` runs arcoforge's builds with the chunk-manifest fast path off
(``ARCOFORGE_MANIFEST_READS=0``: every read through netCDF4 under the HDF5 lock), so both paths
are measured in the same run; ``--check-identical`` then compares their stores byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SHARED = Path(os.environ.get("ARCOFORGE_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
DAY = "oisst/oisst-avhrr-v02r01.20220913.nc"
CHUNKS = {"time": 10}


def make_files(n: int, out: Path) -> list[str]:
    """n copies of the real OISST day, day i dated +i days (only the time value changes)."""
    from arcoforge.testing.samples import dated_copies

    src = SHARED / DAY
    if not src.exists():
        sys.exit(f"benchmark input {src} not found (set ARCOFORGE_SHARED_DATA)")
    return dated_copies(src, n, out)


# -- one build, in a child process ------------------------------------------------------------


def run_one(method: str, files: list[str], target: str) -> dict[str, float]:
    t0 = time.perf_counter()
    if method == "open_mfdataset":
        import xarray as xr

        ds = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                               coords="minimal", compat="override")
        ds.chunk(CHUNKS).to_zarr(target, mode="w", zarr_format=3, consolidated=True)
    else:
        import arcoforge as af

        engine, _, kind = method.partition("/")
        opts: dict[str, object] = {}
        if engine == "local-processes":
            engine, opts = "local", {"processes": True, "workers": 2}
        elif engine == "local":
            opts = {"workers": 4}
        elif engine == "dask":
            opts = {"workers": 2}
        recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", nitems_per_file=1),
                               target_chunks=CHUNKS)
        if kind == "icechunk":
            target = "icechunk://" + target
        af.bake(recipe, target, engine=engine, progress=False, **opts)
    return {"seconds": time.perf_counter() - t0}


def child_main(args: argparse.Namespace) -> None:
    files = json.loads(Path(args.files_json).read_text())
    print(json.dumps(run_one(args.child, files, args.target)))


def measure(method: str, files_json: Path, target: Path,
            env: dict[str, str] | None = None) -> dict[str, float]:
    if target.exists():
        shutil.rmtree(target)
    cmd = [sys.executable, str(HERE), "--child", method, "--files-json", str(files_json),
           "--target", str(target)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves to get its own peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        return {"seconds": float("nan"), "rss_mb": float("nan"), "cpu_s": float("nan"),
                "error": 1.0}
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # robust when the machine is shared
    return result


READS_ENV = "ARCOFORGE_MANIFEST_READS"


def chunk_digest(store: Path) -> dict[str, str]:
    """sha256 of every chunk file of a Zarr store (the data; metadata holds build times)."""
    out = {}
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if path.is_file() and "/c/" in f"/{rel}":
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100])
    p.add_argument("--engines", default="local,local-processes",
                   help="comma list of: local, local-processes, dask, beam")
    p.add_argument("--target-kind", default="zarr", help="comma list of: zarr, icechunk")
    p.add_argument("--reads", default="manifest",
                   help="comma list of: manifest (the default fast path), raw (netCDF4 under "
                        "the HDF5 lock, ARCOFORGE_MANIFEST_READS=0)")
    p.add_argument("--skip-baseline", action="store_true",
                   help="do not run open_mfdataset (the slowest build: minutes at N=1000)")
    p.add_argument("--check-identical", action="store_true",
                   help="compare the Zarr stores of the manifest and raw reads byte for byte")
    p.add_argument("--workdir", help="where inputs and stores go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep inputs and stores")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--files-json", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="arcoforge-bench-"))
    reads = args.reads.split(",")
    methods = ([] if args.skip_baseline else ["open_mfdataset"]) + [
        f"{e}/{k}" + ("" if r == "manifest" else f"/{r}")
        for k in args.target_kind.split(",") for e in args.engines.split(",") for r in reads
    ]
    rows = []
    try:
        for n in args.n:
            files = make_files(n, work / "inputs")[:n]
            size_mb = sum(os.path.getsize(f) for f in files) / 1e6
            files_json = work / f"files-{n}.json"
            files_json.write_text(json.dumps(files))
            base = None
            for method in methods:
                env = {READS_ENV: "0"} if method.endswith("/raw") else None
                child = method.removesuffix("/raw")
                store = work / f"store-{n}-{method.replace('/', '-')}"
                r = measure(child, files_json, store, env)
                if method == "open_mfdataset":
                    base = r
                rows.append((n, method, size_mb, r, base))
                print(f"N={n:5d} {method:28s} {r['seconds']:8.1f} s "
                      f"{size_mb / r['seconds']:8.1f} MB/s  cpu {r['cpu_s']:8.1f} s  "
                      f"peak RSS {r['rss_mb']:8.0f} MB", flush=True)
                if args.check_identical and method.endswith("/raw"):
                    fast = work / f"store-{n}-{child.replace('/', '-')}"
                    if fast.exists():
                        same = chunk_digest(fast) == chunk_digest(store)
                        print(f"N={n:5d} {child}: manifest and raw stores "
                              f"{'byte-identical' if same else 'DIFFER'}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall-clock ratios are only meaningful on an otherwise idle machine)")
    print("\n| N | method | s | source MB/s | CPU s | peak RSS MB | speed vs open_mfdataset |"
          " CPU vs open_mfdataset | RSS vs open_mfdataset |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, method, size_mb, r, base in rows:
        sp = base["seconds"] / r["seconds"] if base else float("nan")
        cp = base["cpu_s"] / r["cpu_s"] if base else float("nan")
        rs = r["rss_mb"] / base["rss_mb"] if base else float("nan")
        print(f"| {n} | {method} | {r['seconds']:.1f} | {size_mb / r['seconds']:.1f} | "
              f"{r['cpu_s']:.1f} | {r['rss_mb']:.0f} | {sp:.2f}x | {cp:.2f}x | {rs:.2f} |")


if __name__ == "__main__":
    main()
