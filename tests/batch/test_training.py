"""Training-run features: equal counts per rank, resumable streams and loaders, pin_memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream, Shard
from arcoforge.errors import ConfigError

SAMPLINGS = ["sequential", "chunk_shuffle", "random"]


def _stream(ds: xr.Dataset, **kw) -> SampleStream:
    kw = {"batch_size": 16, "with_ids": True, "seed": 3, "block_bytes": 20_000, **kw}
    return SampleStream(ds, {"lat": 5, "lon": 7}, **kw)


def _air(air: xr.Dataset) -> xr.Dataset:
    # 124 time steps in blocks of 8: the last block is short, and 16 blocks over 6 shards
    return air[["air"]].astype("float32").chunk({"time": 8})


# -- equal sample counts per rank ---------------------------------------------------------------
@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("balance", ["pad", "drop"])
def test_every_shard_yields_the_same_count(air: xr.Dataset, sampling: str, balance: str) -> None:
    ds = _air(air)
    plain = _stream(ds, sampling=sampling)
    even = _stream(ds, sampling=sampling, balance=balance)
    shards = [Shard(rank * 2 + worker, 6) for rank in range(3) for worker in range(2)]
    sizes = [plain.plan(epoch=1, shard=s).n_samples for s in shards]
    if sampling != "random":  # random deals samples one by one: at most 1 apart
        assert len(set(sizes)) > 1
    ids, batches = [], []
    for s in shards:
        got = list(even.batches(epoch=1, shard=s))
        batches.append(len(got))
        ids.append(np.concatenate([b["sample_id"] for b in got]))
    assert len({i.size for i in ids}) == 1 and len(set(batches)) == 1
    assert even.plan(epoch=1, shard=shards[0]).n_samples == ids[0].size
    allids = np.concatenate(ids)
    n = plain.grid.n_samples
    assert ids[0].size == (min(sizes) if balance == "drop" else max(sizes))
    if balance == "drop":
        assert np.unique(allids).size == allids.size  # nothing twice
    else:
        assert set(allids.tolist()) == set(range(n))  # everything at least once
        for s, got in zip(shards, ids, strict=True):  # a shard repeats only its own samples
            assert set(got.tolist()) == set(plain.plan(epoch=1, shard=s).sample_ids().tolist())


def test_pad_when_a_shard_has_no_block(air: xr.Dataset) -> None:
    ds = _air(air).isel(time=slice(0, 16))  # 2 blocks, 6 shards: 4 shards own nothing
    s = _stream(ds, balance="pad")
    counts = {s.plan(shard=Shard(i, 6)).n_samples for i in range(6)}
    assert len(counts) == 1 and counts.pop() > 0
    with pytest.raises(ConfigError, match="unknown balance 'even'; use 'pad', 'drop' or None"):
        _stream(ds, balance="even")


def test_loader_two_workers_three_ranks_equal_batches(air_zarr) -> None:
    torch = pytest.importorskip("torch")
    del torch
    from arcoforge.batch.torch_loader import TorchIterableDataset, make_dataloader

    ds = xr.open_zarr(air_zarr, consolidated=False)
    stream = _stream(ds, sampling="chunk_shuffle", balance="pad")
    per_rank, seen = [], []
    for rank in range(3):
        dset = TorchIterableDataset(stream, world_size=3, rank=rank)
        loader = make_dataloader(dset, num_workers=2)
        got = [b["sample_id"].numpy() for b in loader]
        per_rank.append((len(got), sum(g.size for g in got)))
        seen.extend(got)
    assert len(set(per_rank)) == 1, per_rank
    assert set(np.concatenate(seen).tolist()) == set(range(stream.grid.n_samples))


# -- checkpointable streams ---------------------------------------------------------------------
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_stream_resumes_exactly(air: xr.Dataset, sampling: str) -> None:
    ds = _air(air)
    ref = _stream(ds, sampling=sampling)
    ref.set_epoch(1)
    full = list(ref)
    for k in (0, 5, len(full) - 1):
        run = _stream(ds, sampling=sampling)
        run.set_epoch(1)
        it = iter(run)
        for _ in range(k):
            next(it)
        state = run.state_dict()
        assert state["epoch"] == 1 and state["position"] == k and not state["finished"]
        fresh = _stream(ds, sampling=sampling)  # e.g. after a crash: a new process
        fresh.load_state_dict(state)
        rest = list(fresh)
        assert len(rest) == len(full) - k
        for a, b in zip(rest, full[k:], strict=True):
            np.testing.assert_array_equal(a["sample_id"], b["sample_id"])
            np.testing.assert_array_equal(a["air"], b["air"])
    done = fresh.state_dict()
    assert done["finished"]
    nxt = _stream(ds, sampling=sampling)
    nxt.load_state_dict(done)  # a finished epoch resumes at the start of the next one
    assert nxt.epoch == 2
    np.testing.assert_array_equal(next(iter(nxt))["sample_id"],
                                  next(ref.batches(epoch=2))["sample_id"])


def test_stream_state_errors(air: xr.Dataset) -> None:
    s = _stream(_air(air))
    state = s.state_dict()
    with pytest.raises(ConfigError, match="cannot resume: the state was saved by a stream with "
                                          "seed=3, this one has 9"):
        _stream(_air(air), seed=9).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a stream state"):
        s.load_state_dict({"seed": 3})


def _ids(batches) -> list[np.ndarray]:
    return [b["sample_id"].numpy().copy() for b in batches]


def test_loader_resumes_with_workers(air_zarr) -> None:
    pytest.importorskip("torch")
    from arcoforge.batch.torch_loader import TorchIterableDataset, make_dataloader

    ds = xr.open_zarr(air_zarr, consolidated=False)

    def loader(workers: int):
        stream = _stream(ds, sampling="chunk_shuffle")
        stream.set_epoch(4)
        return make_dataloader(TorchIterableDataset(stream), num_workers=workers)

    full = _ids(loader(2))
    counts = [TorchIterableDataset(_stream(ds, sampling="chunk_shuffle")).n_batches(Shard(w, 2))
              for w in range(2)]
    assert counts[0] != counts[1]  # one worker runs out first: the order is not plain turns
    for k in (3, len(full) - 2):
        first = loader(2)
        it = iter(first)
        got = [next(it)["sample_id"].numpy().copy() for _ in range(k)]
        state = first.state_dict()
        del it
        assert state["position"] == k and state["num_workers"] == 2
        again = loader(2)
        again.load_state_dict(state)
        rest = _ids(again)
        assert [g.tolist() for g in got + rest] == [f.tolist() for f in full]
    with pytest.raises(ConfigError, match="saved by a loader with 2 worker"):
        loader(0).load_state_dict(state)


def test_dataset_resumes_without_workers(air: xr.Dataset) -> None:
    pytest.importorskip("torch")
    from arcoforge.batch.torch_loader import TorchIterableDataset

    ds = _air(air)
    full = _ids(TorchIterableDataset(_stream(ds, sampling="random")))
    dset = TorchIterableDataset(_stream(ds, sampling="random"))
    it = iter(dset)
    head = [next(it)["sample_id"].numpy().copy() for _ in range(4)]
    state = dset.state_dict()
    other = TorchIterableDataset(_stream(ds, sampling="random"))
    other.load_state_dict(state)
    assert [h.tolist() for h in head + _ids(other)] == [f.tolist() for f in full]
    bad = TorchIterableDataset(_stream(ds, sampling="random"))
    bad.load_state_dict({**state, "num_workers": 2})
    with pytest.raises(ConfigError, match="loader with 2 worker"):
        next(iter(bad))


# -- pin_memory and device copies ---------------------------------------------------------------
def test_pin_memory_and_to_device_are_harmless_without_accelerator(air: xr.Dataset) -> None:
    torch = pytest.importorskip("torch")
    from arcoforge.batch.torch_loader import TorchIterableDataset, make_dataloader, to_device

    if torch.cuda.is_available():
        pytest.skip("this machine has an accelerator: see the device check in the report")
    ds = _air(air)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when pin_memory has no accelerator
        pinned = make_dataloader(TorchIterableDataset(_stream(ds)), pin_memory=True)
        moved = list(to_device(pinned))
    plain = list(make_dataloader(TorchIterableDataset(_stream(ds))))
    assert len(moved) == len(plain)
    for a, b in zip(moved, plain, strict=True):
        assert a["air"].device.type == "cpu"
        assert torch.equal(a["air"], b["air"])


def test_drop_says_when_it_leaves_out_much_of_the_epoch() -> None:
    """One block and two shards: 'drop' hands out nothing; that is said, never silent."""
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), np.zeros((4, 64, 64), "f4"))})
    s = SampleStream(ds, {"lat": 32, "lon": 32}, batch_size=4, balance="drop")
    with pytest.warns(UserWarning, match=r"balance='drop' hands out 0 of the epoch's 16 samples "
                                         r"\(0 per shard; shards own 0\.\.16\): 16 are left out"):
        plan = s.plan(shard=Shard(1, 2))
    assert plan.n_samples == 0
