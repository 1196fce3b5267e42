"""Fast paths of the feed: strided grid cut == gather, staged multi-block reads, direct Zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream
from arcoforge.batch.assembly import cut, cut_grid
from arcoforge.batch.zarr_direct import box_reader


def _brute(block, var_dims, local, windows, out_order):
    n = len(next(iter(local.values())))
    kept = [d for d in var_dims if d in windows]
    od = [d for d in out_order if d in var_dims]
    outs = []
    for k in range(n):
        sel = tuple(slice(local[d][k], local[d][k] + windows[d]) if d in windows
                    else local[d][k] for d in var_dims)
        outs.append(block[sel].transpose([kept.index(d) for d in od]))
    return np.stack(outs)


@pytest.mark.parametrize("seed", range(6))
def test_grid_cut_equals_gather_on_random_shapes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        nd = int(rng.integers(1, 4))
        dims = [f"d{i}" for i in range(nd)]
        shape = tuple(int(s) for s in rng.integers(1, 9, nd))
        dtype = rng.choice([np.float32, np.float64, np.int16, np.uint8])
        block = (rng.random(shape) * 100).astype(dtype)
        if rng.random() < 0.3 and nd >= 2:
            block = np.asfortranarray(block)
        if rng.random() < 0.2:
            block = block[..., ::-1]
        windows = {d: int(rng.integers(1, s + 1)) for d, s in zip(dims, shape, strict=True)
                   if rng.random() < 0.7} or {dims[-1]: 1}
        out_order = [str(d) for d in rng.permutation(list(windows))]
        grid_dims = dims if rng.random() < 0.7 else ["g0", *dims]
        first, count, step = {"g0": 0}, {"g0": int(rng.integers(1, 3))}, {"g0": 1}
        for d, s in zip(dims, shape, strict=True):
            w = windows.get(d, 1)
            step[d] = int(rng.integers(1, w + 1)) if d in windows else 1
            first[d] = int(rng.integers(0, s - w + 1))
            count[d] = int(rng.integers(1, (s - w - first[d]) // step[d] + 2))
        mesh = np.meshgrid(*[first[d] + np.arange(count[d]) * step[d] for d in grid_dims],
                           indexing="ij")
        local = {d: m.ravel() for d, m in zip(grid_dims, mesh, strict=True)}
        expect = _brute(block, dims, local, windows, out_order)
        got = cut_grid(block, dims, grid_dims, first, count, step, windows, out_order)
        assert got.shape == expect.shape and got.dtype == block.dtype
        np.testing.assert_array_equal(got, expect)
        np.testing.assert_array_equal(cut(block, dims, local, windows, out_order), expect)
        perm = rng.permutation(expect.shape[0])
        np.testing.assert_array_equal(
            cut(block, dims, {d: v[perm] for d, v in local.items()}, windows, out_order),
            expect[perm])


def _by_id(stream: SampleStream) -> dict[str, np.ndarray]:
    batches = list(stream)
    ids = np.concatenate([b["sample_id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(stream.grid.n_samples))
    order = np.argsort(ids)
    return {k: np.concatenate([b[k] for b in batches])[order] for k in batches[0]
            if k != "sample_id"}


@pytest.mark.parametrize("sampling", ["sequential", "chunk_shuffle", "random"])
def test_modes_agree_with_numpy_reference(synthetic: xr.Dataset, sampling: str) -> None:
    kw = {"batch_size": 7, "with_ids": True, "block_bytes": 500, "dim_order": ["x", "y"]}
    ref = _by_id(SampleStream(synthetic, {"y": 4, "x": 3}, {"y": 2}, **kw))
    got = _by_id(SampleStream(synthetic, {"y": 4, "x": 3}, {"y": 2}, sampling=sampling,
                              buffer_blocks=3, **kw))
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


@pytest.fixture()
def grid_zarr(tmp_path: Path) -> Path:
    import zarr

    rng = np.random.default_rng(3)
    ds = xr.Dataset({"t": (("time", "y", "x"), rng.standard_normal((37, 20, 18), "float32")),
                     "m": (("y", "x"), rng.standard_normal((20, 18)))},
                    coords={"time": np.arange(37)})
    path = tmp_path / "g.zarr"
    enc = {"t": {"compressors": [zarr.codecs.ZstdCodec(level=1)]}}
    ds.chunk({"time": 8, "y": 7, "x": 6}).to_zarr(path, zarr_format=3, consolidated=False,
                                                  encoding=enc)
    return path


def test_zarr_box_reader_matches_zarr(grid_zarr: Path) -> None:
    import zarr

    za = zarr.open_array(grid_zarr / "t", mode="r")
    reader = box_reader(za)
    assert reader is not None
    rng = np.random.default_rng(0)
    for _ in range(20):
        sel = []
        for n in za.shape:
            a = int(rng.integers(0, n))
            sel.append(slice(a, int(rng.integers(a + 1, n + 1))))
        out = np.empty([s.stop - s.start for s in sel], dtype=za.dtype)
        reader.read_into(tuple(sel), out)
        np.testing.assert_array_equal(out, za[tuple(sel)])


@pytest.mark.parametrize("sampling", ["sequential", "chunk_shuffle"])
def test_dask_zarr_uses_direct_path_and_matches_dask(grid_zarr: Path, sampling: str) -> None:
    opened = xr.open_zarr(grid_zarr, consolidated=False)
    kw = {"batch_size": 9, "with_ids": True, "sampling": sampling, "block_chunks": {"time": 2},
          "variables": ["t", "m"]}  # fixed order: the sample grid's dims follow it
    auto = SampleStream(opened, {"y": 5, "x": 6}, {"y": 1}, **kw)
    assert auto.source.backend_kind("t") == "zarr"
    lazy = SampleStream(xr.open_zarr(grid_zarr, consolidated=False, chunks=None),
                        {"y": 5, "x": 6}, {"y": 1}, **kw)
    assert lazy.source.backend_kind("t") == "zarr"
    # the same data through dask (an extra graph layer disables the direct path)
    via_dask = SampleStream(opened.isel(time=slice(None)) * 1, {"y": 5, "x": 6}, {"y": 1}, **kw)
    assert via_dask.source.backend_kind("t") == "xarray"
    ref = _by_id(via_dask)
    for s in (auto, lazy):
        got = _by_id(s)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])
    # same chunks -> same blocks -> the same shuffled order as the dask path
    a = [b["sample_id"] for b in auto]
    d = [b["sample_id"] for b in via_dask]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(d))


def test_subset_or_decoded_zarr_is_not_read_directly(grid_zarr: Path) -> None:
    opened = xr.open_zarr(grid_zarr, consolidated=False)
    sub = SampleStream(opened.isel(time=slice(3, None)), {"y": 5, "x": 6})
    assert sub.source.backend_kind("t") == "xarray"
    lazy_sub = SampleStream(xr.open_zarr(grid_zarr, consolidated=False, chunks=None)
                            .isel(time=slice(3, None)), {"y": 5, "x": 6})
    assert lazy_sub.source.backend_kind("t") == "xarray"
    numpy = SampleStream(opened.load(), {"y": 5, "x": 6})
    assert numpy.source.backend_kind("t") == "numpy"


def test_whole_field_cut_is_one_take_and_equals_gather() -> None:
    rng = np.random.default_rng(5)
    block = rng.standard_normal((3, 6, 5, 4)).astype("float32")
    dims = ("b", "time", "y", "x")
    windows = {"y": 5, "x": 4}
    local = {"b": rng.integers(0, 3, 11), "time": rng.integers(0, 6, 11),
             "y": np.zeros(11, int), "x": np.zeros(11, int)}
    expect = _brute(block, dims, local, windows, ["y", "x"])
    np.testing.assert_array_equal(cut(block, dims, local, windows, ["y", "x"]), expect)
    out = np.full_like(expect, np.nan)
    assert cut(block, dims, local, windows, ["y", "x"], out=out) is out
    np.testing.assert_array_equal(out, expect)
    # transposed output order or a non-contiguous block take the general gather
    np.testing.assert_array_equal(cut(block, dims, local, windows, ["x", "y"]),
                                  _brute(block, dims, local, windows, ["x", "y"]))
    flipped = block[:, ::-1]
    np.testing.assert_array_equal(cut(flipped, dims, local, windows, ["y", "x"]),
                                  _brute(flipped, dims, local, windows, ["y", "x"]))


@pytest.mark.parametrize("codec", ["zstd", "blosc", "gzip", "none"])
def test_zarr_chunks_decode_straight_into_output(tmp_path: Path, codec: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import zarr

    compressors = {"zstd": [zarr.codecs.ZstdCodec(level=1)], "blosc": [zarr.codecs.BloscCodec()],
                   "gzip": [zarr.codecs.GzipCodec()], "none": None}[codec]
    data = np.random.default_rng(1).standard_normal((21, 8, 6)).astype("float32")
    za = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(4, 8, 6),
                           dtype="float32", compressors=compressors)
    za[:] = data
    reader = box_reader(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    assert reader is not None and reader.raw_decode is not None
    used = []
    raw = reader.raw_decode
    monkeypatch.setattr(reader, "raw_decode", lambda b, o: used.append(1) or raw(b, o))
    for sel in [(slice(4, 16), slice(None), slice(None)), (slice(0, 21), slice(0, 8),
                                                             slice(0, 6)),
                (slice(3, 17), slice(1, 7), slice(0, 6)), (slice(16, 21), slice(None),
                                                             slice(None))]:
        shape = [len(range(*s.indices(n))) for s, n in zip(sel, data.shape, strict=True)]
        out = np.empty(shape, dtype="float32")
        reader.read_into(sel, out)
        np.testing.assert_array_equal(out, data[sel])
    assert used  # whole interior chunks went straight into the output


def test_in_memory_stream_runs_without_threads(synthetic: xr.Dataset,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from arcoforge.batch import stream as stream_mod

    kw = {"batch_size": 7, "with_ids": True, "block_bytes": 500}
    ref = _by_id(SampleStream(synthetic, {"y": 4, "x": 3}, {"y": 2}, **kw))

    def no_threads(*a: object, **k: object) -> None:
        raise AssertionError("in-memory data must not use reader threads")

    monkeypatch.setattr(stream_mod, "Prefetcher", no_threads)
    for sampling in ("sequential", "chunk_shuffle", "random"):
        s = SampleStream(synthetic, {"y": 4, "x": 3}, {"y": 2}, sampling=sampling,
                         buffer_blocks=3, **kw)
        assert s.source.in_memory()
        got = _by_id(s)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])


def test_whole_field_zarr_shuffle_matches_memory(tmp_path: Path) -> None:
    import zarr

    data = np.random.default_rng(2).standard_normal((70, 9, 7)).astype("float32")
    ds = xr.Dataset({"f": (("time", "y", "x"), data)})
    enc = {"f": {"compressors": [zarr.codecs.ZstdCodec(level=1)]}}
    ds.chunk({"time": 4, "y": 9, "x": 7}).to_zarr(tmp_path / "w.zarr", zarr_format=3,
                                                   consolidated=False, encoding=enc)
    kw = {"batch_size": 5, "with_ids": True, "sampling": "chunk_shuffle",
          "block_chunks": {"time": 3}, "buffer_blocks": 2}
    lazy = SampleStream(xr.open_zarr(tmp_path / "w.zarr", consolidated=False, chunks=None),
                        {"y": 9, "x": 7}, **kw)
    assert lazy.source.backend_kind("f") == "zarr"
    assert lazy.source._backend("f")[2][1].raw_decode is not None
    got = _by_id(lazy)
    ref = _by_id(SampleStream(ds, {"y": 9, "x": 7}, **kw))
    np.testing.assert_array_equal(got["f"], ref["f"])
    np.testing.assert_array_equal(got["f"], data)
