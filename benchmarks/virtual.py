"""Benchmark: a virtual store (``af.VirtualRecipe``, references to the files' chunks) vs the
materialized store (``af.ZarrRecipe``, the bytes copied) of the same N OISST-like daily files.

Makes N dated copies of the real OISST v2.1 day (1440x720, four int16-packed, zlib-compressed
variables), builds both Icechunk stores in one run and prints, with ratios virtual/materialized:
the build time, the bytes stored, the time to read one chunk (one day of ``sst``, a fresh open)
and the whole variable (``sst``, all days).  Both stores are checked equal before timing reads.

    python benchmarks/virtual.py --n 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SHARED = Path(os.environ.get("ARCOFORGE_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
DAY = "oisst/oisst-avhrr-v02r01.20220913.nc"


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of daily files")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each read (median)")
    args = parser.parse_args()

    import numpy as np

    import arcoforge as af
    from arcoforge.quiet import quiet_icechunk
    from arcoforge.testing.samples import dated_copies

    quiet_icechunk()
    src = SHARED / DAY
    if not src.exists():
        sys.exit(f"benchmark input {src} not found (set ARCOFORGE_SHARED_DATA)")
    work = Path(tempfile.mkdtemp(prefix="arcoforge-bench-virtual-"))
    try:
        files = dated_copies(src, args.n, work / "src")
        source_bytes = sum(os.path.getsize(f) for f in files)
        pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=1)
        targets = {"virtual": work / "virtual", "materialized": work / "materialized"}
        recipes = {"virtual": af.VirtualRecipe(pattern),
                   "materialized": af.ZarrRecipe(pattern, target_chunks={"time": 1})}
        rows: dict[str, dict[str, float]] = {}
        for kind in ("virtual", "materialized"):
            url = f"icechunk://{targets[kind]}"
            build = timed(lambda: af.bake(recipes[kind], url, progress=False))  # noqa: B023
            rows[kind] = {"build_s": build, "stored_bytes": tree_bytes(targets[kind])}
        a = af.open_dataset(f"icechunk://{targets['virtual']}")
        b = af.open_dataset(f"icechunk://{targets['materialized']}")
        assert np.array_equal(a["sst"].values, b["sst"].values, equal_nan=True)
        for kind in ("virtual", "materialized"):
            url = f"icechunk://{targets[kind]}"
            rows[kind]["one_chunk_s"] = timed(
                lambda: af.open_dataset(url)["sst"].isel(time=0).values,  # noqa: B023
                args.repeat)
            rows[kind]["whole_variable_s"] = timed(
                lambda: af.open_dataset(url)["sst"].values, args.repeat)  # noqa: B023
        print(f"{args.n} OISST days, {source_bytes / 1e6:.1f} MB of sources "
              f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
        print(f"{'':24}{'virtual':>14}{'materialized':>14}{'virtual/mat.':>14}")
        labels = {"build_s": "build (s)", "stored_bytes": "stored (MB)",
                  "one_chunk_s": "read one chunk (s)", "whole_variable_s": "read sst (s)"}
        for key, label in labels.items():
            v, m = rows["virtual"][key], rows["materialized"][key]
            scale = 1e6 if key == "stored_bytes" else 1.0
            print(f"{label:24}{v / scale:>14.3f}{m / scale:>14.3f}{v / m:>14.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
