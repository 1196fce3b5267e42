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
