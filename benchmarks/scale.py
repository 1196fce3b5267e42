"""Benchmark: planning and running builds of 1,000 to 100,000 source files.

Writes a simulated archive: N small, real NetCDF-4 files made with netCDF4 (one time step each,
``days since 2000-01-01``, an 8x16 float32 ``sst`` with a fill value, ``lat``/``lon``
coordinates: the layout of a daily or monthly archive, at a size that fits a laptop's disk).
Generating the files is not part of the measure (they are kept in ``--archive`` for reruns).
Then, each step in a fresh subprocess (so that its peak memory is its own):

* **plan** -- ``compile_plan`` of ``ConcatDim("time", one item per file)`` with one store task
  per file (``target_chunks={"time": 1}``): seconds of the scan (fetch + metadata of every
  file), of combining the per-file schemas, of compiling the store tasks, and in all; the peak
  RSS above what the imports took; the size of the pickled plan (what an engine ships to its
  workers) and its store tasks.
* **run** -- each engine runs that plan (prepare, store tasks, finalize) into a fresh Zarr
  store: seconds, store tasks per second, the coordinator's peak RSS (for Dask it holds the
  scheduler of the LocalCluster too), how many engine tasks carried the store tasks, and the
  size of the published root ``zarr.json`` (provenance lists every source file).

::

    python benchmarks/scale.py --n 1000 10000
    python benchmarks/scale.py --n 1000 10000 100000 --engines local,dask
    python benchmarks/scale.py --n 10000 --engines dask,dask-unbatched,prefect

Engines: ``local`` (2 threads), ``local-processes`` (2 processes), ``dask`` (a LocalCluster of
2 single-thread worker processes, started before the clock runs; batched above
``engines.common.MAX_WORK_UNITS`` tasks), ``dask-unbatched`` (the same, one Dask task per store
task), ``prefect`` (a Prefect flow on a temporary local Prefect server, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
NY, NX = 8, 16


# -- the simulated archive ---------------------------------------------------------------------


def make_archive(n: int, out: Path) -> list[str]:
    """``n`` NetCDF-4 files ``sst.000000.nc`` ... in ``out`` (existing ones are reused)."""
    import netCDF4
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    lat = np.linspace(-78.75, 78.75, NY, dtype="f4")
    lon = np.linspace(0, 337.5, NX, dtype="f4")
    paths = []
    for i in range(n):
        path = out / f"sst.{i:06d}.nc"
        paths.append(str(path))
        if path.exists():
            continue
        part = path.with_suffix(".part")
        with netCDF4.Dataset(part, "w", format="NETCDF4") as nc:
            nc.title = "arcoforge scale benchmark: a simulated archive"
            nc.createDimension("time", 1)
            nc.createDimension("lat", NY)
            nc.createDimension("lon", NX)
            t = nc.createVariable("time", "f8", ("time",))
            t.units, t.calendar, t.standard_name = "days since 2000-01-01", "standard", "time"
            t[:] = [float(i)]
            for name, values, units in (("lat", lat, "degrees_north"),
                                        ("lon", lon, "degrees_east")):
                v = nc.createVariable(name, "f4", (name,))
                v.units = units
                v[:] = values
            sst = nc.createVariable("sst", "f4", ("time", "lat", "lon"),
                                    fill_value=np.float32(-999.0))
            sst.units, sst.long_name = "degC", "sea surface temperature"
            field = 15 + 10 * np.cos(np.deg2rad(lat))[:, None] + 0.01 * i + 0 * lon[None, :]
            sst[0] = field.astype("f4")
        os.replace(part, path)
    return paths


def recipe(files: list[str]) -> Any:
    import arcoforge as af

    return af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", nitems_per_file=1),
                         target_chunks={"time": 1})


# -- measuring in a child process --------------------------------------------------------------


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM; Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def rss_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(module: Any, name: str, totals: dict[str, float]) -> None:
    """Wrap ``module.name`` so that its seconds add up in ``totals[name]``."""
    inner: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)


def child_plan(files_json: str, plan_out: str, target: str) -> dict[str, Any]:
    """compile_plan, its stages timed (the bake module's own functions, wrapped)."""
    from arcoforge.forge import bake

    files = json.loads(Path(files_json).read_text())
    totals: dict[str, float] = {}
    for name in ("scan_pattern", "combine_schemas", "choose_chunks", "compile_tasks",
                 "plan_for"):
        _timed(bake, name, totals)
    base = rss_mb("VmRSS")
    reset_peak()
    workdir = tempfile.mkdtemp(prefix="arcoforge-scale-work-")
    t0 = time.perf_counter()
    plan = bake.compile_plan(recipe(files), target, workdir=workdir)
    seconds = time.perf_counter() - t0
    peak = rss_mb() - base
    blob = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
    Path(plan_out).write_bytes(blob)
    shutil.rmtree(workdir, ignore_errors=True)  # local sources: nothing was downloaded there
    return {
        "files": len(plan.schema.files), "tasks": len(plan.tasks), "plan_s": seconds,
        "scan_s": totals.get("scan_pattern", 0.0),
        "combine_s": totals.get("combine_schemas", 0.0),
        "tasks_s": totals.get("choose_chunks", 0.0) + totals.get("compile_tasks", 0.0),
        "plan_for_s": totals.get("plan_for", 0.0),
        "plan_peak_mb": peak, "plan_pickle_mb": len(blob) / 1e6,
    }


def child_run(engine: str, plan_in: str, target: str) -> dict[str, Any]:
    """Run the pickled plan with ``engine`` into ``target``."""
    import dataclasses
    import uuid

    from arcoforge.forge.engines import get_engine
    from arcoforge.forge.engines.common import unit_size
    from arcoforge.forge.targets.base import resolve_target

    plan = pickle.loads(Path(plan_in).read_bytes())
    plan = dataclasses.replace(plan, target=resolve_target(target, None))
    options: dict[str, Any] = {"progress": False}
    units = len(plan.tasks)
    cluster = client = None
    if engine.startswith("dask"):
        import dask
        import distributed

        with dask.config.set({"distributed.worker.memory.pause": False}):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
        options["client"] = client
        if engine == "dask-unbatched":
            options["batch_size"] = 1
        else:
            units = -(-len(plan.tasks) // unit_size(len(plan.tasks)))
        engine = "dask"
    elif engine == "local":
        options["workers"] = 2
    elif engine == "local-processes":
        engine, options["workers"], options["processes"] = "local", 2, True
    elif engine == "prefect":
        from arcoforge.forge.engines.prefect import MAX_PREFECT_UNITS

        options["workers"] = 2
        options["flow_run_name"] = f"scale-{uuid.uuid4().hex[:8]}"
        units = -(-len(plan.tasks) // unit_size(len(plan.tasks), None, MAX_PREFECT_UNITS))
    run = get_engine(engine)
    base = rss_mb("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    try:
        stats = run(plan, **options)
    finally:
        seconds = time.perf_counter() - t0
        if client is not None:
            client.close()
            cluster.close()  # type: ignore[union-attr]
    assert len(stats) == len(plan.tasks) and not any(s.skipped for s in stats)
    root = Path(target) / "zarr.json"  # the published metadata, provenance included
    return {"run_s": seconds, "tasks_per_s": len(plan.tasks) / seconds,
            "run_peak_mb": rss_mb() - base, "engine_tasks": units,
            "metadata_mb": root.stat().st_size / 1e6 if root.exists() else float("nan")}


def in_child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE), "--child", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": proc.returncode}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000],
                   help="archive sizes (files); e.g. --n 1000 10000 100000")
    p.add_argument("--engines", default="local,dask",
                   help="comma list of: local, local-processes, dask, dask-unbatched, prefect "
                        "('' to only plan)")
    p.add_argument("--archive", help="where the simulated files are kept (default: a temp dir, "
                                     "removed at the end)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_plan(*rest) if kind == "plan" else child_run(kind, *rest)
        print(json.dumps(result))
        return
    archive = Path(args.archive or tempfile.mkdtemp(prefix="arcoforge-scale-archive-"))
    work = Path(tempfile.mkdtemp(prefix="arcoforge-scale-"))
    engines = [e for e in args.engines.split(",") if e]
    prefect_env = {"PREFECT_HOME": str(work / "prefect-home"),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                   "PREFECT_LOGGING_LEVEL": "WARNING"}
    rows = []
    try:
        for n in args.n:
            t0 = time.perf_counter()
            files = make_archive(n, archive / "files")[:n]
            print(f"N={n}: archive ready in {time.perf_counter() - t0:.0f} s (not measured)",
                  flush=True)
            files_json = work / f"files-{n}.json"
            files_json.write_text(json.dumps(files))
            plan_file = work / f"plan-{n}.pickle"
            plan = in_child("plan", str(files_json), str(plan_file), str(work / "plan.zarr"))
            print(f"N={n}: plan {json.dumps(plan)}", flush=True)
            runs = {}
            for engine in engines:
                target = work / f"store-{n}-{engine}.zarr"
                runs[engine] = in_child(engine, str(plan_file), str(target),
                                        env=prefect_env if engine == "prefect" else None)
                print(f"N={n}: {engine} {json.dumps(runs[engine])}", flush=True)
                shutil.rmtree(target, ignore_errors=True)
            rows.append((n, plan, runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.archive:
            shutil.rmtree(archive, ignore_errors=True)
    print("\n| files | store tasks | plan s | scan s | combine s | tasks s | plan peak MB "
          "| plan pickle MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, plan, _ in rows:
        if "error" in plan:
            print(f"| {n} | failed | | | | | | |")
            continue
        print(f"| {n} | {plan['tasks']} | {plan['plan_s']:.1f} | {plan['scan_s']:.1f} | "
              f"{plan['combine_s']:.2f} | {plan['tasks_s']:.2f} | {plan['plan_peak_mb']:.0f} | "
              f"{plan['plan_pickle_mb']:.1f} |")
    if engines:
        print("\n| files | engine | engine tasks | run s | store tasks/s | coordinator peak MB "
              "| root zarr.json MB |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for n, _, runs in rows:
            for engine, r in runs.items():
                if "error" in r:
                    print(f"| {n} | {engine} | failed | | | | |")
                    continue
                print(f"| {n} | {engine} | {r['engine_tasks']} | {r['run_s']:.1f} | "
                      f"{r['tasks_per_s']:.0f} | {r['run_peak_mb']:.0f} | "
                      f"{r.get('metadata_mb', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
