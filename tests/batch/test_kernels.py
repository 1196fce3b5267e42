"""The compiled patch copy (numba, optional) equals the numpy path it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream, _kernels, assembly

pytest.importorskip("numba")

DTYPES = [np.float32, np.float64, np.int16, np.uint8, np.complex64, np.bool_, np.int64]


@pytest.fixture
def numpy_only(monkeypatch):
    """Call ``numpy_only(fn)`` to run ``fn`` with the compiled path switched off."""

    def run(fn):
        monkeypatch.setitem(assembly.KERNEL, "enabled", False)
        try:
            return fn()
        finally:
            monkeypatch.setitem(assembly.KERNEL, "enabled", True)

    return run


def _block(rng, shape, dtype):
    a = rng.integers(0, 100, size=shape) if np.dtype(dtype).kind in "iub" else \
        rng.standard_normal(shape)
    return np.asarray(a).astype(dtype)


@pytest.mark.parametrize("seed", range(12))
def test_cut_random_matches_numpy(seed, numpy_only):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(2, 5))
    dims = tuple(f"d{i}" for i in range(ndim))
    shape = tuple(int(x) for x in rng.integers(3, 12, ndim))
    block = _block(rng, shape, DTYPES[seed % len(DTYPES)])
    n_win = int(rng.integers(1, ndim + 1))
    wdims = list(rng.choice(dims, n_win, replace=False))
    windows = {d: int(rng.integers(1, shape[dims.index(d)] + 1)) for d in wdims}
    order = tuple(rng.permutation(wdims))
    n = int(rng.integers(1, 40))
    starts = {}
    for i, d in enumerate(dims):
        hi = shape[i] - windows.get(d, 1)
        s = rng.integers(0, hi + 1, n)
        s[0] = hi  # an edge window
        starts[d] = s
    got = assembly.cut(block, dims, starts, windows, order)
    want = numpy_only(lambda: assembly.cut(block, dims, starts, windows, order))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_kernel_used_for_row_layout_and_exact():
    rng = np.random.default_rng(0)
    block = rng.standard_normal((3, 40, 50)).astype(np.float32)
    starts = np.stack([rng.integers(0, 3, 30), rng.integers(0, 33, 30),
                       rng.integers(0, 43, 30)], axis=1)
    plan = _kernels.plan(block.shape, block.strides, block.dtype, starts, (1, 2), (8, 8))
    assert plan is not None
    out = np.empty((30, 8, 8), np.float32)
    assert plan.run(block, out)
    for k, (t, y, x) in enumerate(starts):
        np.testing.assert_array_equal(out[k], block[t, y:y + 8, x:x + 8])


@pytest.mark.parametrize("view", ["strided_rows", "step_last", "reversed", "fortran"])
def test_non_contiguous_blocks(view, numpy_only):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((4, 30, 40)).astype(np.float64)
    block = {"strided_rows": big[:, ::2, 3:], "step_last": big[..., ::2],
             "reversed": big[:, ::-1], "fortran": np.asfortranarray(big)}[view]
    dims = ("t", "y", "x")
    windows = {"y": 5, "x": 6}
    n = 25
    starts = {"t": rng.integers(0, block.shape[0], n),
              "y": rng.integers(0, block.shape[1] - 4, n),
              "x": rng.integers(0, block.shape[2] - 5, n)}
    got = assembly.cut(block, dims, starts, windows, ("y", "x"))
    want = numpy_only(lambda: assembly.cut(block, dims, starts, windows, ("y", "x")))
    np.testing.assert_array_equal(got, want)
    st = np.stack([starts[d] for d in dims], axis=1)
    plan = _kernels.plan(block.shape, block.strides, block.dtype, st, (1, 2), (5, 6))
    # rows must be unit-stride and strides positive: the others fall back to numpy
    assert (plan is not None) == (view == "strided_rows")


def test_out_of_range_or_overlapping_out_refused():
    block = np.arange(100, dtype=np.float32).reshape(10, 10)
    bad = np.array([[0, 6]])  # a 5-wide window from 6 passes the edge
    assert _kernels.plan(block.shape, block.strides, block.dtype, bad, (0, 1), (5, 5)) is None
    neg = np.array([[-1, 0]])
    assert _kernels.plan(block.shape, block.strides, block.dtype, neg, (0, 1), (5, 5)) is None
    ok = np.array([[0, 0]])
    plan = _kernels.plan(block.shape, block.strides, block.dtype, ok, (0, 1), (2, 2))
    assert plan is not None
    assert not plan.run(block, block.reshape(-1)[:4].reshape(1, 2, 2))  # overlaps the source
    assert not plan.run(block, np.empty((1, 2, 2), np.float64))  # wrong dtype


@pytest.mark.parametrize("threads", [1, 3])
def test_shared_copy_threads(threads, monkeypatch):
    monkeypatch.setitem(_kernels.THREADS, "n", threads)
    rng = np.random.default_rng(2)
    block = rng.standard_normal((2, 256, 256)).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(0, 256, 16), np.arange(0, 256, 16), indexing="ij")
    starts = np.stack([np.zeros(ys.size, int), ys.ravel(), xs.ravel()], axis=1)
    starts = np.concatenate([starts, starts + [1, 0, 0]])
    out = np.empty((len(starts), 16, 16), np.float32)
    assert _kernels.copy_patches(block, starts, (1, 2), (16, 16), out, parallel=True)
    for k, (t, y, x) in enumerate(starts):
        np.testing.assert_array_equal(out[k], block[t, y:y + 16, x:x + 16])


@pytest.mark.parametrize("step", [(4, 4), (2, 3)])  # disjoint and overlapping windows
def test_cut_grid_matches_numpy(step, numpy_only):
    rng = np.random.default_rng(3)
    block = rng.standard_normal((3, 24, 30)).astype(np.float32)
    dims = ("t", "y", "x")
    count = {"t": 3, "y": (24 - 4) // step[0] + 1, "x": (30 - 4) // step[1] + 1}
    args = (block, dims, dims, {"t": 0, "y": 0, "x": 0}, count,
            {"t": 1, "y": step[0], "x": step[1]}, {"y": 4, "x": 4})
    for order in (("y", "x"), ("x", "y")):
        got = assembly.cut_grid(*args, order)
        want = numpy_only(lambda order=order: assembly.cut_grid(*args, order))
        np.testing.assert_array_equal(got, want)
        out = np.empty_like(want)
        assert assembly.cut_grid(*args, order, out=out) is out
        np.testing.assert_array_equal(out, want)


def _dataset(seed=0):
    rng = np.random.default_rng(seed)
    return xr.Dataset({
        "a": (("time", "y", "x"), rng.standard_normal((6, 40, 36)).astype(np.float32)),
        "b": (("y", "x"), rng.integers(0, 1000, (40, 36)).astype(np.int16)),
        "c": (("time", "x"), rng.standard_normal((6, 36))),
    })


@pytest.mark.parametrize("sampling", ["sequential", "chunk_shuffle", "random"])
@pytest.mark.parametrize("overlap", [None, {"y": 3, "x": 2}])
def test_stream_output_unchanged(sampling, overlap, numpy_only):
    ds = _dataset()

    def batches():
        s = SampleStream(ds, {"y": 8, "x": 6}, overlap, batch_size=17, sampling=sampling,
                         block_bytes=8 * 1024, with_ids=True, seed=3)
        return list(s)

    got = batches()
    want = numpy_only(batches)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in g:
            assert g[k].dtype == w[k].dtype
            np.testing.assert_array_equal(g[k], w[k])


def test_without_numba_falls_back(monkeypatch):
    monkeypatch.setitem(_kernels._state, "kernel", None)  # as if numba were not installed
    assert not _kernels.available()
    block = np.arange(600, dtype=np.float32).reshape(6, 10, 10)
    st = np.array([[0, 0, 0], [5, 6, 7]])
    assert _kernels.plan(block.shape, block.strides, block.dtype, st, (1, 2), (3, 3)) is None
    starts = {"t": st[:, 0], "y": st[:, 1], "x": st[:, 2]}
    got = assembly.cut(block, ("t", "y", "x"), starts, {"y": 3, "x": 3}, ("y", "x"))
    np.testing.assert_array_equal(got[1], block[5, 6:9, 7:10])


def test_block_ranges_match_block_index():
    ds = _dataset()
    s = SampleStream(ds, {"y": 8, "x": 6}, {"y": 3}, block_bytes=4096)
    g = s.grid
    for b in range(g.n_blocks):
        bmulti = np.unravel_index(b, g.block_shape)
        want = [np.flatnonzero(bi == k) for bi, k in zip(g._block_index, bmulti, strict=True)]
        for (lo, hi), w in zip(g.block_ranges(b), want, strict=True):
            np.testing.assert_array_equal(np.arange(lo, hi), w)
        mesh = np.meshgrid(*want, indexing="ij")
        ids = np.ravel_multi_index(tuple(m.ravel() for m in mesh), g.shape)
        np.testing.assert_array_equal(g.block_samples(b), ids)
