"""LRU, Zarr and Redis caches: round trips, hits through the pipeline, invalidation, and
never serving stale (older published version) or damaged (checksum, dtype, shape, missing
chunk) entries."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge
from arcoforge.batch import ArraySource, LRUCache, RedisCache, SampleStream, ZarrCache, cache_key
from arcoforge.batch.caches import CHECKSUMS, checksum, dataset_identity
from arcoforge.errors import ConfigError, MissingDependencyError
from arcoforge.forge.patterns import pattern_from_file_sequence
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.open import open_dataset

from .conftest import shared_data_dir


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
    assert set(raw) == {b"dtype", b"shape", b"data", b"checksum"}
    assert raw[b"data"] == np.arange(3, dtype=np.int32).tobytes()
    assert raw[b"checksum"].decode() == checksum(np.arange(3, dtype=np.int32))
    with pytest.raises(ConfigError, match="hold Python objects and cannot be cached"):
        cache.put("o", np.array([object()]))


def test_zarr_refuses_object_arrays(tmp_path) -> None:
    with pytest.raises(ConfigError, match="hold Python objects and cannot be cached"):
        ZarrCache(str(tmp_path / "c.zarr")).put("o", np.array([object()]))


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


# -- checksums ---------------------------------------------------------------------------------


def test_checksum_covers_dtype_shape_and_bytes() -> None:
    a = np.arange(12, dtype="<f4").reshape(3, 4)
    base = checksum(a)
    assert base == checksum(a.copy()) and base.split(":")[0] in ("xxh3_128", "crc32")
    assert checksum(a, "blake2b").startswith("blake2b:")
    assert len({checksum(a, algo) for algo in ("crc32", "sha256", "blake2b")}) == 3
    assert checksum(a, "crc32") != checksum(a.view("<i4"), "crc32")
    others = {checksum(a.view("<i4")), checksum(a.reshape(4, 3)), checksum(a.astype(">f4")),
              checksum(np.where(a == 5, 6, a).astype("<f4"))}
    assert base not in others and len(others) == 4
    assert checksum(a, "no-such-hash") is None


def test_checksum_algorithm_choice(tmp_path, redis_server: str) -> None:
    with pytest.raises(ConfigError, match="unknown checksum algorithm 'md4'; choose one of"):
        ZarrCache(str(tmp_path / "c.zarr"), algorithm="md4")
    try:
        import xxhash  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="needs the xxhash package"):
            RedisCache(redis_server, algorithm="xxh3_128")
    value = np.arange(6.0).reshape(2, 3)
    for algo in ("crc32", "sha256", "blake2b"):
        for cache in (ZarrCache(str(tmp_path / f"{algo}.zarr"), algorithm=algo),
                      RedisCache(redis_server, prefix=f"algo-{algo}:", algorithm=algo)):
            cache.put("k", value)
            np.testing.assert_array_equal(cache.get("k"), value)
    assert RedisCache(redis_server, prefix="algo-sha256:").get("k") is not None  # recorded
    import pickle

    assert pickle.loads(pickle.dumps(RedisCache(redis_server, algorithm="sha256"))).algorithm \
        == "sha256"
    assert set(CHECKSUMS) >= {"crc32", "sha256", "blake2b", "xxh3_128"}


# -- damaged entries are misses, never served --------------------------------------------------


def _entries() -> dict[str, np.ndarray]:
    return {"flip": np.arange(24, dtype="<f4").reshape(4, 6),
            "gone": np.arange(10, dtype=np.int16),
            "zeros": np.zeros((3, 3), dtype=np.float64),  # equal to the fill value
            "dtype": np.linspace(0, 1, 8, dtype="<f4"),
            "shape": np.arange(12, dtype=np.int32).reshape(3, 4),
            "attrs": np.ones(5, dtype=np.uint8),
            "ok": np.arange(6, dtype=np.int64)}


def _chunk_files(root: Path, key: str) -> list[Path]:
    return [p for p in (root / key / "c").rglob("*") if p.is_file()]


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_zarr_damaged_entries_are_misses_and_dropped(tmp_path) -> None:
    root = tmp_path / "cache.zarr"
    cache = ZarrCache(str(root))
    for k, v in _entries().items():
        cache.put(k, v)
        assert len(_chunk_files(root, k)) == 1  # also for an all-fill-value entry
    # flip bytes of a chunk file
    (chunk,) = _chunk_files(root, "flip")
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    # delete chunk files (zarr alone would serve the fill value: zeros, as a hit)
    _chunk_files(root, "gone")[0].unlink()
    _chunk_files(root, "zeros")[0].unlink()
    # change the dtype in the metadata (same item size: the bytes still decode)

    def to_int32(doc):
        doc["data_type"] = "int32"
    _edit_json(root / "dtype" / "zarr.json", to_int32)

    def transpose(doc):  # same number of elements, other shape, attributes edited to match
        doc["shape"] = [4, 3]
        doc["chunk_grid"]["configuration"]["chunk_shape"] = [4, 3]
        doc["attributes"]["shape"] = [4, 3]
    _edit_json(root / "shape" / "zarr.json", transpose)

    def forge_attrs(doc):  # dtype in data and attributes changed together: checksum catches it
        doc["data_type"] = "int8"
        doc["attributes"]["dtype"] = "|i1"
    _edit_json(root / "attrs" / "zarr.json", forge_attrs)

    hits, misses = cache.hits, cache.misses
    for k in ("flip", "gone", "zeros", "dtype", "shape", "attrs"):
        assert cache.get(k) is None, k
        assert not (root / k).exists(), f"damaged entry {k} was not dropped"
    assert cache.misses == misses + 6 and cache.damaged == 6 and cache.hits == hits
    np.testing.assert_array_equal(cache.get("ok"), _entries()["ok"])
    assert cache.hits == hits + 1
    # garbled metadata: a damaged miss too
    cache.put("json", np.arange(3.0))
    (root / "json" / "zarr.json").write_text("{not json")
    assert cache.get("json") is None and cache.damaged == 7 and not (root / "json").exists()


def test_zarr_unfinished_entry_is_a_plain_miss(tmp_path) -> None:
    root = tmp_path / "cache.zarr"
    cache = ZarrCache(str(root))
    cache.put("k", np.arange(4.0))

    def unfinished(doc):
        del doc["attributes"]["complete"]
    _edit_json(root / "k" / "zarr.json", unfinished)
    assert cache.get("k") is None and cache.misses == 1 and cache.damaged == 0
    assert (root / "k").exists()  # a writer may still be finishing it
    cache.put("k", np.arange(4.0))
    np.testing.assert_array_equal(cache.get("k"), np.arange(4.0))


def test_zarr_memory_url_damage(tmp_path) -> None:
    cache = ZarrCache("memory://arcoforge-test-damage")
    cache.put("k", np.arange(8, dtype=np.int32))
    store = cache._store()
    fs = store.fs.sync_fs if hasattr(store.fs, "sync_fs") else store.fs
    (chunk,) = [p for p in fs.find(store.path + "/k") if "/c/" in p]
    fs.pipe(chunk, np.arange(8, dtype=np.int32)[::-1].tobytes())
    assert cache.get("k") is None and cache.damaged == 1


def test_redis_damaged_entries_are_misses_and_dropped(redis_server: str) -> None:
    cache = RedisCache(redis_server, prefix="dmg:")
    r = cache.client
    for k, v in _entries().items():
        cache.put(k, v)
    data = bytearray(r.hget("dmg:flip", "data"))
    data[3] ^= 0x01
    r.hset("dmg:flip", "data", bytes(data))
    r.hset("dmg:dtype", "dtype", "<i4")                       # same item size
    r.hset("dmg:shape", "shape", json.dumps([4, 3]))          # same element count
    r.hset("dmg:gone", "data", r.hget("dmg:gone", "data")[:-2])  # truncated
    r.hdel("dmg:zeros", "checksum")                           # unverifiable
    r.hset("dmg:attrs", "dtype", "not a dtype")               # garbled
    for k in ("flip", "dtype", "shape", "gone", "zeros", "attrs"):
        assert cache.get(k) is None, k
        assert not r.exists(f"dmg:{k}"), f"damaged entry {k} was not dropped"
    assert cache.misses == 6 and cache.damaged == 6 and cache.hits == 0
    np.testing.assert_array_equal(cache.get("ok"), _entries()["ok"])
    assert cache.get("absent") is None and cache.damaged == 6 and cache.misses == 7
    # the algorithm is recorded with the entry: another one still verifies, an unknown one not
    r.hset("dmg:ok", "checksum", checksum(_entries()["ok"], "blake2b"))
    np.testing.assert_array_equal(cache.get("ok"), _entries()["ok"])
    r.hset("dmg:ok", "checksum", "nohash:00")
    assert cache.get("ok") is None and cache.damaged == 7 and not r.exists("dmg:ok")


def test_damaged_entry_is_reread_through_the_stream(air: xr.Dataset, tmp_path) -> None:
    """A damaged entry costs a re-read from the source, and the batch is still right."""
    root = tmp_path / "c.zarr"
    cache = ZarrCache(str(root))
    ds = air.isel(time=slice(0, 16))

    def run():
        s = SampleStream(ds, {"lat": 5, "lon": 5}, batch_size=50, cache=cache,
                         block_bytes=20_000)
        return np.concatenate([b["air"] for b in s]), s.source.bytes_read

    first, _ = run()
    for entry in [p for p in root.iterdir() if p.is_dir()][:2]:
        (chunk,) = [p for p in (entry / "c").rglob("*") if p.is_file()]
        raw = bytearray(chunk.read_bytes())
        raw[-1] ^= 0xFF
        chunk.write_bytes(bytes(raw))
    second, read = run()
    assert read > 0 and cache.damaged == 2
    np.testing.assert_array_equal(first, second)


# -- a new version published at the same path is never served stale ---------------------------


def _ersst_copies(dest: Path, n: int = 3) -> list[str]:
    src = sorted((shared_data_dir() / "ersst-v5").glob("ersst.v5.*.nc"))[:n]
    if len(src) < n:
        pytest.skip("shared ERSST files missing")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in src:
        shutil.copyfile(p, dest / p.name)
        out.append(str(dest / p.name))
    return out


def _bump_sst(files: list[str], delta: float) -> None:
    """Same files, same schema and coordinates, other values (a corrected re-release)."""
    import netCDF4

    for f in files:
        with netCDF4.Dataset(f, "a") as nc:
            nc["sst"][:] = nc["sst"][:] + delta


def _bake(files: list[str], target: str, bump: str = "minor") -> None:
    recipe = ZarrRecipe(pattern_from_file_sequence(files, "time", 1),
                        target_chunks={"time": 1})
    arcoforge.bake(recipe, target, progress=False, workers=1, version_bump=bump)


def _stream(ds: xr.Dataset, cache) -> tuple[np.ndarray, int]:
    s = SampleStream(ds, {"lat": 20, "lon": 30}, variables=["sst"], batch_size=64, cache=cache,
                     block_bytes=50_000, prefetch_workers=1)
    return np.concatenate([b["sst"] for b in s]), s.source.bytes_read


@pytest.mark.parametrize("kind", ["lru", "zarr", "redis"])
@pytest.mark.parametrize("target_kind", ["zarr", "icechunk"])
def test_new_version_at_same_path_is_not_served_stale(kind: str, target_kind: str, tmp_path,
                                                      request) -> None:
    if target_kind == "icechunk":
        pytest.importorskip("icechunk")
    if kind == "lru":
        cache = LRUCache()
    elif kind == "zarr":
        cache = ZarrCache(str(tmp_path / "cache.zarr"))
    else:
        cache = RedisCache(request.getfixturevalue("redis_server"),
                           prefix=f"{tmp_path.name}:")
    files = _ersst_copies(tmp_path / "src")
    target = (str(tmp_path / "sst.zarr") if target_kind == "zarr"
              else f"icechunk://{tmp_path / 'sst-ic'}")
    _bake(files, target)
    v1 = open_dataset(target)
    old, read1 = _stream(v1, cache)
    assert read1 > 0
    again, read2 = _stream(open_dataset(target), cache)  # same version: all from the cache
    assert read2 == 0
    np.testing.assert_array_equal(old, again)

    _bump_sst(files, 1.0)
    _bake(files, target)  # version 1.1 replaces 1.0 at the same path
    v2 = open_dataset(target)
    assert v2.attrs[arcoforge.provenance.VERSION] != v1.attrs[arcoforge.provenance.VERSION]
    new, read3 = _stream(v2, cache)
    assert read3 > 0, "the cache served the old version's values"
    np.testing.assert_allclose(new, old + 1.0, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(new[0], v2.sst.isel(time=0, lev=0).values[:20, :30])
    assert dataset_identity(v2) != dataset_identity(v1) or target_kind == "zarr"


def test_identity_of_published_stores(tmp_path) -> None:
    files = _ersst_copies(tmp_path / "src", 2)
    url = str(tmp_path / "sst.zarr")
    _bake(files, url)
    a, b = open_dataset(url), xr.open_zarr(url)
    ida = dataset_identity(a)
    assert ida == dataset_identity(open_dataset(url)) == dataset_identity(a.sst)
    assert dataset_identity(b) == dataset_identity(b[["sst"]].isel(time=0))
    v1 = a.sst.values
    _bump_sst(files, 2.0)
    _bake(files, url)
    # a dataset opened through arcoforge keeps reading the version it opened (its pinned
    # folder), so its identity -- and what a cache serves for it -- stays that version's
    assert dataset_identity(a) == ida
    np.testing.assert_array_equal(a.sst.values, v1)
    # a raw reader of the URL sees the new version: read from the store when computed
    assert dataset_identity(b) != ida
    assert dataset_identity(b) == dataset_identity(open_dataset(url)) != ida


def test_identity_of_other_zarr_stores_and_files(air: xr.Dataset, tmp_path) -> None:
    path = tmp_path / "plain.zarr"
    ds = air[["air"]].isel(time=slice(0, 16)).astype("float32")
    for v in ds.variables.values():
        v.encoding = {}
    ds.chunk({"time": 8}).to_zarr(path, zarr_format=3, consolidated=False)
    first = dataset_identity(xr.open_zarr(path, consolidated=False))
    assert first == dataset_identity(xr.open_zarr(path, consolidated=False, chunks=None))
    assert first == dataset_identity(xr.open_zarr(path, consolidated=False).air)
    # values rewritten in place, metadata untouched
    first_block = ds.isel(time=slice(0, 8)).drop_vars(["lat", "lon"])
    (first_block + 1).to_zarr(path, region={"time": slice(0, 8)}, consolidated=False)
    lazy = xr.open_zarr(path, consolidated=False)
    second = dataset_identity(lazy)
    assert second != first
    # a stream over the rewritten store reads it again instead of serving the cached values
    cache = LRUCache()
    old = SampleStream(xr.open_zarr(path, consolidated=False), {"lat": 5, "lon": 5},
                       batch_size=400, cache=cache, block_bytes=20_000)
    np.concatenate([b["air"] for b in old])
    first_block.to_zarr(path, region={"time": slice(0, 8)}, consolidated=False)  # back again
    s = SampleStream(xr.open_zarr(path, consolidated=False), {"lat": 5, "lon": 5},
                     batch_size=400, cache=cache, block_bytes=20_000)
    out = np.concatenate([b["air"] for b in s])
    assert s.source.bytes_read > 0
    np.testing.assert_array_equal(out[0], ds.air.values[0, :5, :5])
    # a NetCDF source: size and mtime
    nc = tmp_path / "air.nc"
    shutil.copyfile(shared_data_dir() / "ncep-air" / "air.nc", nc)
    with xr.open_dataset(nc) as f:
        before = dataset_identity(f)
    os.utime(nc, ns=(time.time_ns(), time.time_ns() + 10**9))
    with xr.open_dataset(nc) as f:
        assert dataset_identity(f) != before


def test_identity_of_icechunk_sessions(tmp_path) -> None:
    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    xr.Dataset({"a": ("x", np.arange(4.0))}).to_zarr(session.store, zarr_format=3,
                                                      consolidated=False)
    uncommitted = xr.open_zarr(session.store, consolidated=False)
    assert dataset_identity(uncommitted) != dataset_identity(uncommitted)  # never reused
    first = session.commit("one")
    ro = xr.open_zarr(repo.readonly_session(snapshot_id=first).store, consolidated=False)
    assert dataset_identity(ro) == dataset_identity(
        xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False))
    session = repo.writable_session("main")
    xr.Dataset({"a": ("x", np.arange(4.0) + 1)}).to_zarr(session.store, mode="a",
                                                          consolidated=False)
    session.commit("two")
    latest = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
    assert dataset_identity(latest) != dataset_identity(ro)


def test_in_memory_data_keeps_content_tokens(air: xr.Dataset) -> None:
    ds = air.isel(time=slice(0, 4))
    assert ArraySource(ds).token == ArraySource(ds.copy(deep=True)).token
    changed = ds.copy(deep=True)
    changed["air"][0, 0, 0] += 1
    assert ArraySource(changed).token != ArraySource(ds).token
    assert ArraySource(ds, dataset_id="mine").token == "mine"


def test_identity_of_memory_and_fsspec_stores() -> None:
    import zarr

    mem = zarr.storage.MemoryStore()
    xr.Dataset({"a": ("x", np.arange(4.0))}).to_zarr(mem, zarr_format=3, consolidated=False)
    before = dataset_identity(xr.open_zarr(mem, consolidated=False))
    assert before == dataset_identity(xr.open_zarr(mem, consolidated=False))
    xr.Dataset({"a": ("x", np.arange(4.0) + 1)}).to_zarr(mem, mode="r+", consolidated=False)
    assert dataset_identity(xr.open_zarr(mem, consolidated=False)) != before
    # behind an fsspec URL: the metadata documents' size and times
    url = "memory://arcoforge-identity/a.zarr"
    xr.Dataset({"a": ("x", np.arange(4.0))}).to_zarr(url, zarr_format=3, consolidated=False,
                                                     mode="w")
    first = dataset_identity(xr.open_zarr(url, consolidated=False))
    assert first == dataset_identity(xr.open_zarr(url, consolidated=False))
    time.sleep(0.01)
    xr.Dataset({"a": ("x", np.arange(5.0))}).to_zarr(url, zarr_format=3, consolidated=False,
                                                     mode="w")
    assert dataset_identity(xr.open_zarr(url, consolidated=False)) != first


def test_identity_past_walk_limit(tmp_path, monkeypatch) -> None:
    from arcoforge.batch import identity

    monkeypatch.setattr(identity, "WALK_LIMIT", 2)
    path = tmp_path / "big.zarr"
    xr.Dataset({"a": ("x", np.arange(8.0))}).chunk({"x": 1}).to_zarr(
        path, zarr_format=3, consolidated=False)
    first = dataset_identity(xr.open_zarr(path, consolidated=False))
    assert first == dataset_identity(xr.open_zarr(path, consolidated=False))
    xr.Dataset({"a": ("x", np.arange(8.0))}).chunk({"x": 1}).to_zarr(
        path, zarr_format=3, consolidated=False, mode="w")  # metadata rewritten
    assert dataset_identity(xr.open_zarr(path, consolidated=False)) != first
