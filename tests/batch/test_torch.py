"""PyTorch loaders: worker × rank sharding on Zarr and Icechunk, map-style, a tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

from arcoforge.batch import SampleStream  # noqa: E402
from arcoforge.batch.torch_loader import (  # noqa: E402
    ChunkShuffleSampler,
    TorchIterableDataset,
    TorchMapDataset,
    make_dataloader,
)


def _stream(ds: xr.Dataset, **kw) -> SampleStream:
    return SampleStream(ds, {"lat": 5, "lon": 7}, batch_size=16, with_ids=True,
                        sampling="chunk_shuffle", block_bytes=20_000, seed=1, **kw)


def test_two_workers_two_ranks_cover_every_sample_once(air_zarr) -> None:
    ds = xr.open_zarr(air_zarr, consolidated=False)
    stream = _stream(ds)
    seen = []
    for rank in range(2):
        dset = TorchIterableDataset(stream, inputs=["air"], targets=["air_next"],
                                    world_size=2, rank=rank)
        dset.set_epoch(2)
        loader = make_dataloader(dset, num_workers=2, multiprocessing_context="forkserver")
        for batch in loader:
            assert batch["input"].shape[1:] == (1, 5, 7)
            assert batch["input"].dtype == torch.float32
            seen.append(batch["sample_id"].numpy())
    ids = np.concatenate(seen)
    assert sorted(ids.tolist()) == list(range(stream.grid.n_samples))


def test_icechunk_with_workers(tmp_path, air: xr.Dataset) -> None:
    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "ic")))
    session = repo.writable_session("main")
    small = air[["air"]].isel(time=slice(0, 48)).astype("float32").chunk({"time": 8})
    for v in small.variables.values():
        v.encoding = {}
    small.to_zarr(session.store, zarr_format=3, consolidated=False)
    session.commit("air")
    ro = repo.readonly_session(branch="main")
    ds = xr.open_zarr(ro.store, consolidated=False)
    stream = _stream(ds)
    loader = make_dataloader(TorchIterableDataset(stream), num_workers=2)
    ids = np.concatenate([b["sample_id"].numpy() for b in loader])
    assert sorted(ids.tolist()) == list(range(stream.grid.n_samples))
    first = next(iter(make_dataloader(TorchIterableDataset(stream))))
    sid = int(first["sample_id"][0])
    st = stream.grid.sample_starts(np.array([sid]))[0]
    np.testing.assert_array_equal(
        first["air"][0].numpy(), small.air.values[st[0], st[1]:st[1] + 5, st[2]:st[2] + 7])


def test_map_style_with_chunk_sampler(air: xr.Dataset) -> None:
    stream = _stream(air[["air"]].isel(time=slice(0, 24)))
    dset = TorchMapDataset(stream, inputs=["air"])
    sampler = ChunkShuffleSampler(dset, seed=3)
    loader = torch.utils.data.DataLoader(dset, batch_size=8, sampler=sampler)
    ids = np.concatenate([b["sample_id"].numpy() for b in loader])
    assert sorted(ids.tolist()) == sorted(dset.ids.tolist())
    assert ids.tolist() != sorted(ids.tolist())  # shuffled
    sample = dset[0]
    assert sample["input"].shape == (1, 5, 7)
    by_workers = make_dataloader(dset, batch_size=8, sampler=sampler, num_workers=2)
    with_workers = [b["input"].numpy() for b in by_workers]  # kernel loading on a thread
    np.testing.assert_array_equal(np.concatenate(with_workers),
                                  np.concatenate([b["input"].numpy() for b in loader]))
    halves = [ChunkShuffleSampler(dset, seed=3, num_replicas=2, rank=r) for r in range(2)]
    both = sorted([i for h in halves for i in h])
    assert both == list(range(len(dset)))


def test_tiny_cnn_trains_from_zarr(air_zarr) -> None:
    torch.manual_seed(0)
    ds = xr.open_zarr(air_zarr, consolidated=False)
    loader = ds.arcoforge.torch_loader(
        {"lat": 8, "lon": 8}, inputs=["air"], targets=["air_next"], batch_size=32,
        sampling="chunk_shuffle", preprocess=lambda name, a: (a - 270.0) / 20.0,
    ) if hasattr(ds, "arcoforge") else None
    assert loader is not None
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 1, 3, padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step, batch in enumerate(loader):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch["input"]), batch["target"])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step == 15:
            break
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < losses[0]


import arcoforge.accessor  # noqa: E402,F401  (registers ds.arcoforge)


def test_workers_are_forks_of_a_warm_forkserver(tmp_path) -> None:
    """Workers come from arcoforge's preloaded forkserver: torch, xarray, zarr and
    arcoforge.batch are loaded before they start (nothing is imported again per worker)."""
    import subprocess
    import sys

    script = tmp_path / "warm.py"
    script.write_text(
        "import os\n"
        "import sys\n"
        "import numpy as np\n"
        "import xarray as xr\n"
        "import arcoforge  # noqa: F401\n"
        "\n"
        "def report(worker_id):\n"
        "    # one os.write per line: two workers' prints to one pipe can interleave\n"
        "    state = 'warm' if 'arcoforge.batch._warm' in sys.modules else 'cold'\n"
        "    os.write(1, f'worker {worker_id} {state}\\n'.encode())\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    from arcoforge.batch.torch_loader import TorchIterableDataset, make_dataloader\n"
        "    from arcoforge.batch import SampleStream\n"
        "    ds = xr.Dataset({'a': (('t', 'x'), np.arange(64.0).reshape(8, 8))}).chunk({'t': 2})\n"
        "    loader = make_dataloader(TorchIterableDataset(SampleStream(ds, {'x': 4})),\n"
        "                             num_workers=2, worker_init_fn=report)\n"
        "    print('batches', sum(1 for _ in loader), flush=True)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "worker 0 warm" in out and "worker 1 warm" in out, out
    assert "batches 1" in out, out  # 16 samples, one block, one batch


_NO_DASK_SCRIPT = """
import os
import sys
import numpy as np
import xarray as xr
import arcoforge  # noqa: F401

def report(worker_id):
    # one os.write per line: two workers' prints to one pipe can interleave
    os.write(1, f"worker {worker_id} {'dask' if 'dask' in sys.modules else 'no-dask'}\\n".encode())

if __name__ == '__main__':
    ds = xr.open_zarr(sys.argv[1], consolidated=False)
    kw = dict(inputs=['air'], targets=['air_next'], batch_size=16, sampling='chunk_shuffle',
              seed=3, with_ids=True)
    ref = {int(i): b['input'][k].numpy()
           for b in ds.arcoforge.torch_loader({'lat': 5, 'lon': 7}, num_workers=0, **kw)
           for k, i in enumerate(b['sample_id'])}
    loader = ds.arcoforge.torch_loader({'lat': 5, 'lon': 7}, num_workers=2, **kw)
    loader.worker_init_fn = report
    n = 0
    for b in loader:
        for k, i in enumerate(b['sample_id']):
            assert np.array_equal(b['input'][k].numpy(), ref[int(i)])
            n += 1
    print('samples', n, len(ref), flush=True)
"""


def test_workers_get_open_zarr_data_without_dask(tmp_path, air_zarr) -> None:
    """A dataset opened with open_zarr reaches the workers without its dask arrays (they never
    import dask), and they cut exactly the samples of the single-process loader, the first
    batch with numpy while the compiled kernel loads on a thread."""
    import subprocess
    import sys

    script = tmp_path / "nodask.py"
    script.write_text(_NO_DASK_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(air_zarr)], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert "worker 0 no-dask" in out and "worker 1 no-dask" in out, out
    n = 124 * 2 * 3  # (11 // 5) x (21 // 7) windows per time step
    assert f"samples {n} {n}" in out, out


def test_without_dask_keeps_values_and_falls_back(air_zarr) -> None:
    """The pickled source holds lazily indexed variables read by the direct path; datasets
    whose dask graph is not open_zarr's, or rechunked at opening, travel unchanged."""
    import pickle

    from arcoforge.batch import ArraySource
    from arcoforge.batch.source import without_dask

    ds = xr.open_zarr(air_zarr, consolidated=False)
    light = without_dask(ds, ["air", "air_next"])
    assert all(v.chunks is None for v in light.variables.values())
    src = pickle.loads(pickle.dumps(ArraySource(ds, ["air", "air_next"])))
    assert src.ds["air"].chunks is None and src.access("air").direct
    assert src.chunks() == ArraySource(ds, ["air"]).chunks() == {"time": 8, "lat": 11,
                                                                     "lon": 21}
    box = {"time": slice(3, 17), "lat": slice(2, 9)}
    np.testing.assert_array_equal(src.read("air", box),
                                  ds.air.isel(box).values)
    changed = ds.assign(air=ds.air * 2)
    assert without_dask(changed, ["air"]) is changed
    rechunked = xr.open_zarr(air_zarr, consolidated=False, chunks={"time": 16})
    assert without_dask(rechunked, ["air"]) is rechunked
    back = pickle.loads(pickle.dumps(ArraySource(changed, ["air"])))
    np.testing.assert_array_equal(back.read("air", box), changed.air.isel(box).values)


def test_worker_kernel_loads_after_the_first_batch(monkeypatch) -> None:
    """In a worker without the kernel, the compiled copy is off until the first batch is out,
    then loaded on a thread and switched on; a kernel switched off by the user stays off."""
    import threading

    from arcoforge.batch import _warm, assembly
    from arcoforge.batch import torch_loader as tl

    monkeypatch.setitem(assembly.KERNEL, "enabled", True)
    monkeypatch.setitem(tl._KERNEL_LOAD, "state", None)
    monkeypatch.setitem(_warm._LOADED, "kernel", False)
    assert tl._defer_kernel()
    assert not assembly.KERNEL["enabled"] and not tl._defer_kernel()  # once per process
    assert tl._load_kernel_in_background() is False
    for t in threading.enumerate():
        if t.name == "arcoforge-kernel-load":
            t.join(60)
    assert assembly.KERNEL["enabled"] and _warm.kernel_loaded() == _kernels_available()
    assert not tl._load_kernel_in_background()  # nothing left to load
    monkeypatch.setitem(tl._KERNEL_LOAD, "state", None)
    monkeypatch.setitem(_warm._LOADED, "kernel", False)
    monkeypatch.setitem(assembly.KERNEL, "enabled", False)  # e.g. a test comparing with numpy
    assert not tl._defer_kernel()
    assert tl._KERNEL_LOAD["state"] is None and not assembly.KERNEL["enabled"]


def _kernels_available() -> bool:
    from arcoforge.batch import _kernels

    return _kernels.available()
