"""The fast path: values, sampling modes, determinism, sharding, masks, weights, prefetch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import Prefetcher, SampleStream, Shard


def _check_values(stream: SampleStream, ds: xr.Dataset, batch: dict) -> None:
    starts = stream.grid.sample_starts(batch["sample_id"])
    dims = stream.grid.dims
    for k, st in enumerate(starts):
        sel = {d: slice(int(s), int(s) + stream.grid.window[i]) for i, (d, s) in
               enumerate(zip(dims, st, strict=True))}
        for v in stream.source.variables:
            expect = ds[v].isel({d: s for d, s in sel.items() if d in ds[v].dims})
            expect = expect.squeeze([d for d in expect.dims if d not in stream.input_dims])
            expect = expect.transpose(*[d for d in stream.out_order if d in expect.dims])
            np.testing.assert_array_equal(batch[v][k], expect.values)


@pytest.mark.parametrize("sampling", ["sequential", "chunk_shuffle", "random"])
def test_values_and_coverage(synthetic: xr.Dataset, sampling: str) -> None:
    stream = SampleStream(synthetic, {"y": 4, "x": 3}, {"y": 2}, batch_size=7,
                          sampling=sampling, with_ids=True, block_bytes=500,
                          dim_order=["x", "y"])
    seen = []
    for batch in stream:
        assert batch["a"].shape[1:] == (3, 4) and batch["a"].dtype == np.float32
        _check_values(stream, synthetic, batch)
        seen.append(batch["sample_id"])
    ids = np.concatenate(seen)
    assert sorted(ids.tolist()) == list(range(stream.grid.n_samples))
    assert len(seen) == len(stream) == -(-ids.size // 7)


def test_dask_and_zarr(air_zarr) -> None:
    ds = xr.open_zarr(air_zarr, consolidated=False)
    stream = SampleStream(ds, {"lat": 5, "lon": 7}, batch_size=16, with_ids=True,
                          sampling="chunk_shuffle", block_bytes=40_000)
    assert stream.grid.block_len[0] == 16  # blocks are whole time chunks (2 of 8)
    n = 0
    for batch in stream:
        _check_values(stream, ds.load(), batch)
        n += batch["air"].shape[0]
    assert n == stream.grid.n_samples


def test_shuffle_is_deterministic_per_seed_and_epoch(synthetic: xr.Dataset) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        s = SampleStream(synthetic, {"y": 2, "x": 2}, batch_size=5, sampling="chunk_shuffle",
                         seed=seed, with_ids=True, block_bytes=300)
        return np.concatenate([b["sample_id"] for b in s.batches(epoch=epoch)]).tolist()

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    assert sorted(order(1, 1)) == sorted(order(2, 0))


@pytest.mark.parametrize("sampling", ["sequential", "chunk_shuffle", "random"])
def test_shards_cover_every_sample_once(synthetic: xr.Dataset, sampling: str) -> None:
    stream = SampleStream(synthetic, {"y": 4, "x": 2}, batch_size=4, sampling=sampling,
                          with_ids=True, block_bytes=300, seed=5)
    parts = []
    for rank in range(2):  # 2 ranks x 2 workers
        for worker in range(2):
            shard = Shard(rank * 2 + worker, 4)
            got = [b["sample_id"] for b in stream.batches(epoch=3, shard=shard)]
            parts.append(np.concatenate(got) if got else np.zeros(0, int))
    allids = np.concatenate(parts)
    assert sorted(allids.tolist()) == list(range(stream.grid.n_samples))
    assert all(p.size for p in parts)


def test_partial_and_drop_last(synthetic: xr.Dataset) -> None:
    keep = SampleStream(synthetic, {"y": 8, "x": 6}, batch_size=5)
    drop = SampleStream(synthetic, {"y": 8, "x": 6}, batch_size=5, drop_last=True)
    assert [b["a"].shape[0] for b in keep] == [5, 5, 2]
    assert [b["a"].shape[0] for b in drop] == [5, 5]


def test_missing_data_mask(synthetic: xr.Dataset) -> None:
    ds = synthetic.copy(deep=True)
    ds["a"][:, :4, :3] = np.nan
    stream = SampleStream(ds, {"y": 4, "x": 3}, batch_size=100, max_missing=0.5,
                          mask_variable="a", with_ids=True)
    batch = next(iter(stream))
    assert not np.isnan(batch["a"]).any()
    assert batch["a"].shape[0] == 12 * 3  # one of the 4 patch positions is skipped


def _rare_weight(arrays: dict) -> np.ndarray:
    return np.where(arrays["a"].max(axis=(1, 2)) > 0.99, 50.0, 1.0)


def test_weighted_oversampling(synthetic: xr.Dataset) -> None:
    stream = SampleStream(synthetic, {"y": 2, "x": 2}, batch_size=64, weight_fn=_rare_weight,
                          num_samples=2000, with_ids=True, sampling="chunk_shuffle")
    ids = np.concatenate([b["sample_id"] for b in stream])
    assert ids.size == 2000
    rare = _rare_weight({"a": np.stack([b for b in next(iter(SampleStream(
        synthetic, {"y": 2, "x": 2}, batch_size=10_000)))["a"]])}) > 1
    frac_rare = rare[ids].mean()
    assert frac_rare > 3 * rare.mean()
    again = np.concatenate([b["sample_id"] for b in stream])
    np.testing.assert_array_equal(ids, again)


def test_whole_field_samples(oisst: xr.Dataset) -> None:
    ds = oisst.chunk({"time": 16})
    stream = SampleStream(ds, {"lat": 8, "lon": 4}, batch_size=32, sampling="chunk_shuffle",
                          with_ids=True, block_chunks={"time": 1})
    assert stream.grid.n_samples == 731 and stream.grid.n_blocks == 46
    ids = np.concatenate([b["sample_id"] for b in stream])
    assert sorted(ids.tolist()) == list(range(731))
    b = next(iter(stream))
    np.testing.assert_array_equal(b["sst"][0], oisst.sst.values[b["sample_id"][0]])
    labeled = stream.labeled(b)
    assert labeled.sst.dims == ("sample", "lat", "lon")
    assert (labeled.time.values == oisst.time.values[b["sample_id"]]).all()


def test_prefetcher_order_errors_and_shutdown() -> None:
    with Prefetcher(lambda x: x * 2, range(20), workers=2, depth=3) as pf:
        assert list(pf) == [x * 2 for x in range(20)]

    def boom(x: int) -> int:
        if x == 3:
            raise RuntimeError("bad item 3")
        return x

    with pytest.raises(RuntimeError, match="bad item 3"):
        list(Prefetcher(boom, range(10)))
    started = []
    pf = Prefetcher(lambda x: started.append(x) or x, range(1000), workers=2, depth=4)
    it = iter(pf)
    next(it)
    pf.close()
    assert len(started) <= 6  # bounded: never ran far ahead
    assert not [t for t in threading.enumerate() if t.name.startswith("arcoforge-pf")
                and t.is_alive()]
