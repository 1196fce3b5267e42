"""Import-time benchmark: what ``import arcoforge`` and ``import arcoforge.batch`` add.

    python benchmarks/imports.py [--repeat N]

Every DataLoader worker (spawn / forkserver) and every Dask worker imports the package again, so
the time an import adds over the libraries a user imports anyway (``xarray``, ``zarr``) is paid
once per process. Each case runs in ``N`` fresh interpreters (rounds interleave the cases,
after one untimed warm-up round that fills the OS page cache and ``__pycache__``); the table shows
the best wall time and the best CPU time (user + system) of each, and what arcoforge adds over
the baseline. Best-of-N, because the noise on a shared machine only ever adds; CPU time is
less disturbed than wall time by other processes.
The target is: each arcoforge case adds at most 0.3 s.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

CASES = {
    "baseline": "import xarray, zarr",
    "arcoforge": "import xarray, zarr, arcoforge",
    "arcoforge.batch": "import xarray, zarr, arcoforge.batch",
    "arcoforge + bake": "import xarray, zarr, arcoforge; arcoforge.bake",
}
BUDGET_S = 0.3


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(code: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh interpreter that runs ``code``."""
    cpu0 = _child_cpu()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0, _child_cpu() - cpu0


def best_times(cases: dict[str, str], repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU time of each case over ``repeat`` rounds (after one untimed
    warm-up round). Rounds interleave the cases, so that a burst of load on the machine hits
    all of them alike.
    """
    for code in cases.values():
        run_once(code)
    best = {name: (float("inf"), float("inf")) for name in cases}
    for _ in range(repeat):
        for name, code in cases.items():
            wall, cpu = run_once(code)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    """Print one row per case: best seconds and seconds added over the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per case")
    args = parser.parse_args()
    times = best_times(CASES, args.repeat)
    base_wall, base_cpu = times["baseline"]
    print(f"{'case':<20} {'wall s':>8} {'added':>8} {'cpu s':>8} {'added':>8}"
          f"  (best of {args.repeat})")
    for name, (wall, cpu) in times.items():
        added = max(wall - base_wall, cpu - base_cpu)
        over = name not in ("baseline", "arcoforge + bake") and added > BUDGET_S
        print(f"{name:<20} {wall:8.3f} {wall - base_wall:8.3f} {cpu:8.3f} {cpu - base_cpu:8.3f}"
              + ("  > budget" if over else ""))


if __name__ == "__main__":
    main()
