"""LRU, Zarr and Redis caches: round trips, hits through the pipeline, invalidation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import ArraySource, LRUCache, RedisCache, SampleStream, ZarrCache, cache_key


def _arrays() -> list[np.ndarray]:
    return [np.arange(12, dtype=">f4").reshape(3, 4), np.ones((2, 2, 2), dtype=np.int16),
            np.array([True, False])]


def _roundtrip(cache) -> None:
    for i, a in enumerate(_arrays()):
        assert cache.get(f"k{i}") is None
        cache.put(f"k{i}", a)
        got = cache.get(f"k{i}")
        assert got.dtype.newbyteorder("=") == a.dtype.newbyteorder("=") and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
    cache.clear()
    assert cache.get("k0") is None


def test_lru_roundtrip_and_bound() -> None:
    _roundtrip(LRUCache())
    lru = LRUCache(max_bytes=100)
    for i in range(10):
        lru.put(str(i), np.zeros(4, dtype=np.float64))  # 32 bytes each
    assert lru.nbytes <= 100 and len(lru) == 3
    assert lru.get("9") is not None and lru.get("0") is None


def test_zarr_roundtrip(tmp_path) -> None:
    _roundtrip(ZarrCache(str(tmp_path / "cache.zarr")))
    _roundtrip(ZarrCache("memory://arcoforge-test-cache"))


def test_redis_roundtrip_and_no_pickles(redis_server: str) -> None:
    cache = RedisCache(redis_server, prefix="t1:")
    _roundtrip(cache)
    cache.put("x", np.arange(3, dtype=np.int32))
    raw = cache.client.hgetall("t1:x")
    assert set(raw) == {b"dtype", b"shape", b"data"}
    assert raw[b"data"] == np.arange(3, dtype=np.int32).tobytes()
    with pytest.raises(TypeError):
        cache.put("o", np.array([object()]))


def _preprocess(name, arr):
    return (arr - 250.0) / 10.0


@pytest.mark.parametrize("kind", ["lru", "zarr", "redis"])
def test_pipeline_hits_and_invalidation(kind: str, air: xr.Dataset, tmp_path, request) -> None:
    if kind == "lru":
        cache = LRUCache()
    elif kind == "zarr":
        cache = ZarrCache(str(tmp_path / "c.zarr"))
    else:
        cache = RedisCache(request.getfixturevalue("redis_server"), prefix=f"{tmp_path.name}:")
    ds = air.isel(time=slice(0, 40))

    def run(data, version="v1"):
        s = SampleStream(data, {"lat": 5, "lon": 5}, batch_size=50, cache=cache,
                         preprocess=_preprocess, preprocess_version=version, block_bytes=20_000)
        out = np.concatenate([b["air"] for b in s])
        return out, s.source.bytes_read

    first, read1 = run(ds)
    assert read1 > 0
    hits_before = cache.hits
    second, read2 = run(ds)
    assert read2 == 0 and cache.hits > hits_before  # everything came from the cache
    np.testing.assert_array_equal(first, second)
    expected = (ds.air.values[0, :5, :5] - 250.0) / 10.0
    np.testing.assert_allclose(first[0], expected)
    # a new preprocessing version, or different data, never sees the old entries
    _, read3 = run(ds, version="v2")
    assert read3 > 0
    changed = ds.copy(deep=True)
    changed["air"][0, 0, 0] += 1
    third, read4 = run(changed)
    assert read4 > 0 and third[0, 0, 0] != first[0, 0, 0]


def test_cache_key_depends_on_everything() -> None:
    base = cache_key("tok", "air", {"time": slice(0, 8)}, "v1")
    assert base == cache_key("tok", "air", {"time": slice(0, 8)}, "v1")
    assert len({base, cache_key("tok2", "air", {"time": slice(0, 8)}, "v1"),
                cache_key("tok", "sst", {"time": slice(0, 8)}, "v1"),
                cache_key("tok", "air", {"time": slice(8, 16)}, "v1"),
                cache_key("tok", "air", {"time": slice(0, 8)}, "v2")}) == 5


def test_zarr_store_token_is_stable(air_zarr) -> None:
    a = ArraySource(xr.open_zarr(air_zarr, consolidated=False)).token
    b = ArraySource(xr.open_zarr(air_zarr, consolidated=False)).token
    assert a == b
