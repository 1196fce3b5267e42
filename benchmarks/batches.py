"""Feed benchmark: arcoforge vs xbatcher (+ torch DataLoader) vs insitubatch, on this machine.

    python benchmarks/batches.py [--quick]

(a) in-memory dataset, (b) compressed Zarr on disk with chunks holding 32 patches, (c) whole
fields (time as the sample axis, chunks of 16 steps, shuffled). One pass each; prints
samples/s, MB/s and the ratios the feed targets are stated in.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from arcoforge.batch import SampleStream

warnings.filterwarnings("ignore")
ROWS: list[tuple[str, str, float, float]] = []


def measure(case: str, name: str, batches: Iterable, count: Callable[[object], int],
            sample_bytes: int, budget_s: float = 1e9) -> float:
    """Time one pass (or until budget_s); record samples/s and MB/s."""
    n = 0
    t0 = time.perf_counter()
    for b in batches:
        n += count(b)
        if time.perf_counter() - t0 > budget_s:
            break
    dt = time.perf_counter() - t0
    rate = n / dt
    ROWS.append((case, name, rate, rate * sample_bytes / 1e6))
    print(f"  {case:<3} {name:<38} {rate:>12,.0f} samples/s {rate * sample_bytes / 1e6:>9.1f}"
          f" MB/s  ({n} samples, {dt:.2f} s)", flush=True)
    return rate


def grid(t: int, n: int, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.standard_normal((t, n, n), dtype=np.float32), axis=0)
    return xr.Dataset({"t2m": (("time", "y", "x"), base.astype("float32"))},
                      coords={"time": np.arange(t), "y": np.arange(n, dtype="f8"),
                              "x": np.arange(n, dtype="f8")})


def write_zarr(ds: xr.Dataset, path: Path, chunks: dict) -> None:
    import zarr

    enc = {"t2m": {"compressors": [zarr.codecs.ZstdCodec(level=3)]}}
    ds.chunk(chunks).to_zarr(path, zarr_format=3, consolidated=True, encoding=enc)


def xbatcher_loader(ds: xr.Dataset, input_dims: dict, batch_dims: dict) -> Iterable:
    import torch
    import xbatcher
    from xbatcher.loaders.torch import MapDataset

    gen = xbatcher.BatchGenerator(ds["t2m"], input_dims=input_dims, batch_dims=batch_dims)
    return torch.utils.data.DataLoader(MapDataset(gen), batch_size=None)


def case_a(quick: bool) -> None:
    t, n, p = (32, 256, 32) if quick else (128, 512, 32)
    ds = grid(t, n)
    sb = p * p * 4
    print(f"(a) in-memory {t}x{n}x{n} float32 ({ds.nbytes / 1e6:.0f} MB), {p}x{p} patches")
    arr = ds.t2m.values
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        arr.copy()
    copy_rate = reps * arr.size / (p * p) / (time.perf_counter() - t0)
    ROWS.append(("a", "numpy copy of the same bytes", copy_rate, copy_rate * sb / 1e6))
    print(f"  a   {'numpy copy of the same bytes':<38} {copy_rate:>12,.0f} samples/s "
          f"{copy_rate * sb / 1e6:>9.1f} MB/s")
    for mode in ("sequential", "chunk_shuffle"):
        s = SampleStream(ds, {"y": p, "x": p}, batch_size=256, sampling=mode)
        measure("a", f"arcoforge {mode}", s, lambda b: b["t2m"].shape[0], sb)
    measure("a", "xbatcher + DataLoader", xbatcher_loader(ds, {"y": p, "x": p}, {"time": 8}),
            lambda b: b.shape[0], sb, budget_s=10)


def case_b(quick: bool, tmp: Path) -> None:
    t, n, p = (32, 256, 32) if quick else (64, 512, 32)
    ds = grid(t, n, seed=1)
    path = tmp / "b.zarr"
    write_zarr(ds, path, {"time": 8, "y": 64, "x": 64})
    sb = p * p * 4
    print(f"(b) Zarr on disk {t}x{n}x{n}, zstd chunks 8x64x64 (32 patches/chunk), {p}x{p}")
    z = xr.open_zarr(path)
    # arcoforge reads blocks through zarr directly (no dask graph per block): open lazily
    lazy = xr.open_zarr(path, chunks=None)
    for mode in ("sequential", "chunk_shuffle"):
        s = SampleStream(lazy, {"y": p, "x": p}, batch_size=256, sampling=mode)
        measure("b", f"arcoforge {mode}", s, lambda b: b["t2m"].shape[0], sb)
    measure("b", "xbatcher + DataLoader", xbatcher_loader(z, {"y": p, "x": p}, {"time": 8}),
            lambda b: b.shape[0], sb, budget_s=8 if quick else 15)


def case_c(quick: bool, tmp: Path) -> None:
    t, n = (256, 128) if quick else (1024, 128)
    ds = grid(t, n, seed=2)
    path = tmp / "c.zarr"
    write_zarr(ds, path, {"time": 16, "y": n, "x": n})
    sb = n * n * 4
    print(f"(c) whole fields {t}x{n}x{n}, chunks 16 steps, shuffled, batch 32")
    z = xr.open_zarr(path)
    lazy = xr.open_zarr(path, chunks=None)
    s = SampleStream(lazy, {"y": n, "x": n}, batch_size=32, sampling="chunk_shuffle",
                     block_chunks={"time": 4}, buffer_blocks=2)
    measure("c", "arcoforge chunk_shuffle", s, lambda b: b["t2m"].shape[0], sb)
    try:
        import insitubatch as ib
        import zarr

        store = zarr.storage.LocalStore(str(path), read_only=True)
        geoms = ib.open_geometries(store, ["t2m"])
        manifest = ib.split_by_chunk(geoms["t2m"], fractions=(1.0, 0.0, 0.0))
        ids = ib.InSituDataset(store, manifest, geoms, batch_size=32, block_chunks=4, seed=0)
        measure("c", "insitubatch (first epoch)", ids.train,
                lambda b: next(iter(b.arrays.values())).shape[0], sb)
    except ImportError:
        print("  c   insitubatch not installed (pip install insitubatch) — skipped")
    measure("c", "xbatcher + DataLoader", xbatcher_loader(z, {"y": n, "x": n}, {"time": 32}),
            lambda b: b.shape[0], sb, budget_s=10)


def ratio(case: str, a: str, b: str) -> float:
    rates = {(c, n): r for c, n, r, _ in ROWS}
    return rates[(case, a)] / rates[(case, b)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, shorter runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case_a(args.quick)
        case_b(args.quick, Path(tmp))
        case_c(args.quick, Path(tmp))
    print("\n| case | loader | samples/s | MB/s |\n|---|---|---:|---:|")
    for c, n, r, mb in ROWS:
        print(f"| {c} | {n} | {r:,.0f} | {mb:,.1f} |")
    print("\nratios (target):")
    checks = [
        ("(b) arcoforge sequential / xbatcher (>= 10)",
         ratio("b", "arcoforge sequential", "xbatcher + DataLoader"), 10.0),
        ("(b) chunk_shuffle / sequential (>= 0.8)",
         ratio("b", "arcoforge chunk_shuffle", "arcoforge sequential"), 0.8),
        ("(a) arcoforge sequential / numpy copy (>= 0.5)",
         ratio("a", "arcoforge sequential", "numpy copy of the same bytes"), 0.5),
    ]
    if any(n.startswith("insitubatch") for _, n, _, _ in ROWS):
        checks.append(("(c) arcoforge / insitubatch first epoch (>= 1)",
                       ratio("c", "arcoforge chunk_shuffle", "insitubatch (first epoch)"), 1.0))
    for label, value, target in checks:
        print(f"  {label:<50} {value:8.2f}  {'ok' if value >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
