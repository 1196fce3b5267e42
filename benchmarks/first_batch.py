"""Time to first batch of ``ds.arcoforge.torch_loader(..., num_workers=2)`` in a fresh process.

    python benchmarks/first_batch.py [--repeat N] [--workers 2]

A compressed Zarr store (ncep air, 124x11x21 float32 plus a target, time chunks of 8) is written
once to a temporary folder. Each run is a *fresh* interpreter that imports arcoforge, opens the
store, builds ``torch_loader(..., num_workers=W)`` and takes one batch: it prints the seconds from
interpreter start to the first batch (``total``, what a user waits), of the imports and the
opening (``setup``), from the ``torch_loader(...)`` call to the first batch (``first``: torch
import, worker start-up, dataset unpickling, the first read), of ending the iterator
(``shutdown``) and the time of a whole epoch with ``num_workers=0`` in the same process
(``epoch0``) as a yardstick.
Runs interleave with one untimed warm-up run (OS page cache, ``__pycache__``); the table shows
the best and the median of ``N`` runs, for ``before`` (the forkserver started by torch on the
first iteration, nothing preloaded: every worker imports everything) and ``after`` (arcoforge's
warm forkserver, :mod:`arcoforge.batch._forkserver`). Target: ``total`` <= 3 s on 2 cores.
Both cases send the workers the dataset without its dask arrays and let them load the compiled
kernel after their first batch (see :mod:`arcoforge.batch._warm`), so ``before`` shows what the
preloaded, early-started server adds on top of that. Note the machine's load (``uptime``):
the parent and the server import torch at the same time, each needing a core of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import time, sys, json
t0 = time.perf_counter()
import xarray as xr
import arcoforge  # noqa: F401  (registers the accessor)

def main():
    if sys.argv[3] == "before":  # the forkserver as torch starts it: no preload, not early
        import multiprocessing
        from arcoforge.batch import _forkserver
        _forkserver.start = lambda: multiprocessing.get_context("forkserver")
    ds = xr.open_zarr(sys.argv[1], consolidated=False)
    t1 = time.perf_counter()
    loader = ds.arcoforge.torch_loader({"lat": 5, "lon": 7}, inputs=["air"],
                                       targets=["air_next"], batch_size=16,
                                       sampling="chunk_shuffle", num_workers=int(sys.argv[2]))
    it = iter(loader)
    next(it)
    t2 = time.perf_counter()
    del it
    t3 = time.perf_counter()
    n = sum(1 for _ in ds.arcoforge.torch_loader({"lat": 5, "lon": 7}, batch_size=16,
                                                  sampling="chunk_shuffle", num_workers=0))
    t4 = time.perf_counter()
    print(json.dumps({"total": t2 - t0, "first": t2 - t1, "setup": t1 - t0,
                      "shutdown": t3 - t2, "epoch0": t4 - t3, "batches": n}), flush=True)

if __name__ == "__main__":
    main()
"""


#: "before": the forkserver started by torch on the first iteration, without preload;
#: "after": arcoforge's (preloaded, started when the loader is built)
CASES = ("before", "after")


def write_store(path: Path) -> None:
    """The benchmark's Zarr store (from the shared ncep air file, or a synthetic stand-in)."""
    import numpy as np
    import xarray as xr

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "ncep-air" / "air.nc"
    if src.exists():
        with xr.open_dataset(src) as f:
            ds = f[["air"]].load().astype({"air": "float32"})
    else:
        rng = np.random.default_rng(0)
        ds = xr.Dataset({"air": (("time", "lat", "lon"),
                                 rng.random((124, 11, 21), dtype="float32"))})
    ds = ds.assign(air_next=ds.air.shift(time=-1).fillna(ds.air))
    for v in ds.variables.values():
        v.encoding = {}
    ds.chunk({"time": 8}).to_zarr(path, zarr_format=3, consolidated=False)


def run_once(script: Path, store: Path, workers: int, case: str) -> dict[str, float]:
    """One fresh interpreter; its timings plus the wall time seen from outside."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(script), str(store), str(workers), case],
                         check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t0
    return res


def main() -> None:
    """Print best and median of each timing over ``--repeat`` fresh processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "air.zarr"
        write_store(store)
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in CASES}
        for c in CASES:
            run_once(script, store, args.workers, c)  # warm-up
        for _ in range(args.repeat):  # interleaved: load bursts hit both cases alike
            for c in CASES:
                runs[c].append(run_once(script, store, args.workers, c))
    keys = ("total", "setup", "first", "shutdown", "epoch0", "process")
    print(f"num_workers={args.workers}, {runs['after'][0]['batches']} "
          f"batches per epoch, {args.repeat} fresh processes per case")
    print(f"{'timing':<10} " + " ".join(f"{c + ' best':>12} {c + ' median':>14}"
                                        for c in CASES))
    for k in keys:
        cells = []
        for c in CASES:
            vals = [r[k] for r in runs[c]]
            cells.append(f"{min(vals):12.2f} {statistics.median(vals):14.2f}")
        print(f"{k:<10} " + " ".join(cells))
    print("load average (1, 5, 15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    med = statistics.median(r["total"] for r in runs["after"])
    print(f"target: total <= 3 s (median {med:.2f} s):", "met" if med <= 3 else "NOT met")


if __name__ == "__main__":
    main()
