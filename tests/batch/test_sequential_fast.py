"""The direct sequential in-memory path yields exactly what the plan-based path yields."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream, Shard, assembly


def _both(monkeypatch: pytest.MonkeyPatch, make, **iter_kw) -> tuple[list, list]:
    fast = list(make().batches(**iter_kw))
    with monkeypatch.context() as m:
        m.setattr(SampleStream, "_fast_sequential", False)
        ref = list(make().batches(**iter_kw))
    return fast, ref


def _assert_same(fast: list, ref: list) -> None:
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])


def _dataset(rng: np.random.Generator, fortran: bool, strided: bool) -> xr.Dataset:
    t2m = rng.standard_normal((5, 23, 19)).astype(np.float32)
    if fortran:
        t2m = np.asfortranarray(t2m)
    if strided:
        t2m = np.ascontiguousarray(rng.standard_normal((5, 23, 38)).astype(np.float32))[..., ::2]
    return xr.Dataset({
        "t2m": (("time", "y", "x"), t2m),
        "mask": (("y", "x"), (rng.random((23, 19)) * 100).astype(np.int16)),
        "level": (("time", "lev", "y", "x"), rng.random((5, 2, 23, 19))),
    })


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kernel", [True, False])
def test_fast_sequential_equals_plan_path(monkeypatch: pytest.MonkeyPatch, seed: int,
                                          kernel: bool) -> None:
    rng = np.random.default_rng(seed)
    monkeypatch.setitem(assembly.KERNEL, "enabled", kernel)
    for case in range(6):
        ds = _dataset(rng, fortran=case == 1, strided=case == 2)
        wy, wx = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        overlap = {"y": int(rng.integers(0, wy))} if case % 2 else {}
        order = ["x", "y"] if case == 3 else None
        kw = dict(
            input_overlap=overlap, dim_order=order, batch_size=int(rng.integers(1, 40)),
            drop_last=bool(rng.integers(2)), with_ids=bool(rng.integers(2)),
            block_bytes=int(rng.choice([64, 700, 4096, 1 << 20])),
            variables=[["t2m"], ["t2m", "mask"], ["t2m", "mask", "level"]][case % 3],
        )
        shard = Shard(int(rng.integers(0, 2)), 2) if case == 4 else Shard()

        def make(ds=ds, wy=wy, wx=wx, kw=kw, shard=shard) -> SampleStream:
            return SampleStream(ds, {"y": wy, "x": wx}, shard=shard, **kw)

        fast, ref = _both(monkeypatch, make)
        assert fast
        _assert_same(fast, ref)


def test_fast_sequential_block_chunks_and_unwindowed_dims(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    ds = _dataset(rng, fortran=False, strided=False).chunk({"time": 2}).load()
    for bc in ({"time": 2}, {"time": 1, "y": 2}):
        def make(bc=bc) -> SampleStream:
            return SampleStream(ds, {"y": 4}, input_overlap={"y": 1}, batch_size=7,
                                block_chunks=bc, with_ids=True)

        fast, ref = _both(monkeypatch, make)
        _assert_same(fast, ref)
    # windows along a non-trailing dim only: the kernel declines, numpy cuts
    fast, ref = _both(monkeypatch, lambda: SampleStream(ds, {"time": 2}, batch_size=5,
                                                        variables=["t2m"]))
    _assert_same(fast, ref)


def test_fast_sequential_is_used_and_counts_bytes(monkeypatch) -> None:
    ds = xr.Dataset({"a": (("t", "x"), np.arange(40.0).reshape(4, 10))})
    s = SampleStream(ds, {"x": 5}, batch_size=3)
    calls = []
    orig = SampleStream._sequential_in_memory

    def spy(self, shard):
        calls.append(shard)
        return orig(self, shard)

    monkeypatch.setattr(SampleStream, "_sequential_in_memory", spy)
    out = np.concatenate([b["a"] for b in s])
    assert calls and out.shape == (8, 5)
    np.testing.assert_array_equal(out, np.arange(40.0).reshape(8, 5))
    assert s.source.bytes_read == ds.a.nbytes
    # a missing-data mask or another order takes the plan path
    calls.clear()
    list(SampleStream(ds, {"x": 5}, sampling="chunk_shuffle"))
    list(SampleStream(ds, {"x": 5}, max_missing=0.5))
    assert not calls
