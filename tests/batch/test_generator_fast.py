"""BatchGenerator's chunk-once path: tiled blocks, cheap labels, and batches that do not alias.

The oracle is xbatcher 0.4 (batches identical to its own); the data are real zstd Zarr v3
stores written here; the fast path is asserted through the adapter's counters and state, not
through timings.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import BatchGenerator, zarr_direct
from arcoforge.batch.indexing import chunk_of_boxes, chunk_pieces
from arcoforge.batch.zarr_direct import COUNTERS, LabelBuilder, library_versions
from arcoforge.errors import ConfigError

xbatcher = pytest.importorskip("xbatcher")

SHAPE, CHUNKS = (16, 64, 96), (8, 64, 32)  # chunks of 64 KiB (float32): blocks are tiled
KW = {"input_dims": {"lat": 16, "lon": 16}, "batch_dims": {"time": 8}}


def _data() -> xr.Dataset:
    rng = np.random.default_rng(5)
    return xr.Dataset(
        {"t2m": (("time", "lat", "lon"), rng.standard_normal(SHAPE).astype("float32"),
                 {"units": "K", "long_name": "2 m temperature"}),
         "tp": (("time", "lat", "lon"), rng.random(SHAPE).astype("float32"), {"units": "m"})},
        coords={"time": np.arange(SHAPE[0]), "lat": np.linspace(-60, 60, SHAPE[1]),
                "lon": np.arange(SHAPE[2]) * 3.75, "height": ((), 2.0, {"units": "m"})},
        attrs={"title": "generator fast path"},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import zarr

    ds = _data()
    ds.lat.attrs["units"] = "degrees_north"
    path = tmp_path_factory.mktemp("genfast") / "d.zarr"
    enc = {v: {"compressors": [zarr.codecs.ZstdCodec(level=1)]} for v in ds.data_vars}
    ds.chunk(dict(zip(ds.t2m.dims, CHUNKS, strict=True))).to_zarr(
        path, zarr_format=3, consolidated=False, encoding=enc)
    return path


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False)


def _reference(kw: dict, as_array: bool = False) -> list:
    ds = _data()
    ds.lat.attrs["units"] = "degrees_north"
    data = ds["t2m"] if as_array else ds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(xbatcher.BatchGenerator(data, **kw))


@pytest.mark.parametrize("as_array", [False, True])
def test_tiled_blocks_decode_each_chunk_once_and_match_xbatcher(store: Path,
                                                                as_array: bool) -> None:
    data = _open(store)["t2m"] if as_array else _open(store)
    gen = BatchGenerator(data, **KW)
    reader = gen._reader
    assert reader.tile_chunks == list(CHUNKS), (reader.tile_chunks, library_versions())
    tiles = reader._read_block(0).tiles
    assert len(tiles) > 1  # a block spans several chunks along lon
    for _, arrays in tiles.values():
        for arr in arrays.values():
            assert arr.shape == CHUNKS and arr.flags.c_contiguous
    ref = _reference(KW, as_array)
    n_vars = 1 if as_array else 2
    for label, batches in (("iterate", lambda g: list(g)),
                           ("getitem", lambda g: [g[i] for i in range(len(g))])):
        fresh = BatchGenerator(_open(store)["t2m"] if as_array else _open(store), **KW)
        COUNTERS.reset()
        got = batches(fresh)
        counts = COUNTERS.snapshot()
        n_chunks = n_vars * int(np.prod([s // c for s, c in zip(SHAPE, CHUNKS, strict=True)]))
        assert counts["direct_chunks"] == n_chunks, (label, counts)
        assert counts["direct_labels"] == len(ref) and counts["xarray_labels"] == 0, \
            (label, counts, fresh._reader.builder.reason)
        assert len(got) == len(ref)
        for a, b in zip(got, ref, strict=True):
            xr.testing.assert_identical(a, b)


def test_tiled_blocks_from_icechunk(tmp_path: Path) -> None:
    """Icechunk has only the async store API: tiles are fetched from the decoding pool."""
    icechunk = pytest.importorskip("icechunk")
    import zarr

    ds = _data()
    ds.lat.attrs["units"] = "degrees_north"
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    enc = {v: {"compressors": [zarr.codecs.ZstdCodec(level=1)]} for v in ds.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk(dict(zip(ds.t2m.dims, CHUNKS, strict=True))).to_zarr(
            session.store, zarr_format=3, consolidated=False, encoding=enc)
    session.commit("data")
    opened = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    gen = BatchGenerator(opened, **KW)
    assert gen._reader.tile_chunks == list(CHUNKS), library_versions()
    COUNTERS.reset()
    got = list(gen)
    assert COUNTERS.snapshot()["direct_chunks"] == 2 * 2 * 3  # two variables, 6 chunks each
    for a, b in zip(got, _reference(KW), strict=True):
        xr.testing.assert_identical(a, b)


def test_batches_spanning_chunks_are_not_tiled(store: Path) -> None:
    kw = {"input_dims": {"lat": 16, "lon": 24}, "input_overlap": {"lon": 4},
          "batch_dims": {"time": 8}}
    gen = BatchGenerator(_open(store), **kw)
    assert gen._reader.tile_chunks is None  # lon windows cross the 32-wide chunks
    for a, b in zip(gen, _reference(kw), strict=True):
        xr.testing.assert_identical(a, b)


def test_small_chunks_are_not_tiled(tmp_path: Path) -> None:
    ds = _data()
    ds.chunk({"time": 8, "lat": 16, "lon": 16}).to_zarr(tmp_path / "s.zarr", zarr_format=3,
                                                          consolidated=False)
    gen = BatchGenerator(_open(tmp_path / "s.zarr"), **KW)
    assert gen._reader.tile_chunks is None  # 8 KiB chunks: a copy is cheaper than a task
    got = list(gen)
    xr.testing.assert_identical(got[7], ds.isel(time=slice(0, 8), lat=slice(16, 32),
                                                lon=slice(16, 32)))


@pytest.mark.parametrize("kw", [KW, {"input_dims": {"lat": 16, "lon": 24},
                                     "input_overlap": {"lon": 8}, "batch_dims": {"time": 8}}],
                         ids=["tiled", "overlapping"])
def test_changing_a_batch_in_place_leaves_other_batches_alone(store: Path, kw: dict) -> None:
    ref = _reference(kw)
    gen = BatchGenerator(_open(store), **kw)
    batches = list(gen)
    first, second = batches[0], batches[1]
    # every kind of in-place change a user can make to a labeled batch
    first["t2m"].values[...] = np.nan
    first["tp"].data[0, 0, 0] = -1.0
    first.attrs["title"] = "changed"
    first.attrs["added"] = 1
    first["t2m"].attrs["units"] = "changed"
    first["lat"].attrs["units"] = "changed"
    first["lon"].attrs["added"] = 1
    first["height"].attrs["units"] = "changed"  # a coordinate without a sliced dim
    first["t2m"].encoding["changed"] = True
    first.encoding["changed"] = True
    first["extra"] = first["tp"] * 2
    first.coords["other"] = ("lat", np.zeros(first.sizes["lat"]))
    for i, batch in enumerate(batches[1:], start=1):
        xr.testing.assert_identical(batch, ref[i])
        assert "changed" not in batch["t2m"].encoding and "changed" not in batch.encoding
    for i in (0, 1, len(ref) - 1):  # read again: random access and a new pass
        xr.testing.assert_identical(gen[i], ref[i])
    xr.testing.assert_identical(next(iter(gen)), ref[0])
    assert not np.shares_memory(second["t2m"].values, batches[2]["t2m"].values)
    assert second["t2m"].values.flags.writeable
    xr.testing.assert_identical(gen.ds.load(), _open(store).load())


def test_dataarray_batches_do_not_alias(store: Path) -> None:
    gen = BatchGenerator(_open(store)["t2m"], **KW)
    ref = _reference(KW, as_array=True)
    first, second = gen[0], gen[1]
    first.values[:] = 0.0
    first.attrs["units"] = "changed"
    first["lon"].attrs["units"] = "changed"
    xr.testing.assert_identical(second, ref[1])
    xr.testing.assert_identical(gen[0], ref[0])


def test_label_builder_shortcut_is_available() -> None:
    """The slots LabelBuilder fills are the ones this xarray has — or this fails loudly."""
    assert zarr_direct._SLOTS_REASON == "", (
        f"xarray.Variable's slots changed ({library_versions()}): labeled batches fall back "
        f"to xarray's isel: {zarr_direct._SLOTS_REASON}")
    assert zarr_direct._DATASET_SETTERS is not None, (
        f"xarray.Dataset's slots changed ({library_versions()}): "
        "Dataset._construct_direct is used instead of filling the slots")
    ds = _data()
    builder = LabelBuilder(ds, ("time", "lat", "lon"), ["t2m"])
    values = {"t2m": np.ones((8, 16, 16), dtype="float32")}
    for lo in ([0, 0, 0], [8, 16, 32], [0, 0, 0]):
        hi = [lo[0] + 8, lo[1] + 16, lo[2] + 16]
        got = builder.build_bounds(lo, hi, values)
        box = {d: slice(a, b) for d, a, b in zip(("time", "lat", "lon"), lo, hi, strict=True)}
        want = ds.isel(box).copy(deep=False, data={"t2m": values["t2m"],
                                                   "tp": ds.tp.isel(box).data})
        xr.testing.assert_identical(got, want)
        assert builder.checked and builder.reason == "", builder.reason
    a = builder.build_bounds([0, 0, 0], [8, 16, 16], values)
    b = builder.build_bounds([0, 0, 0], [8, 16, 16], values)
    assert a["lat"].variable is not b["lat"].variable and a.attrs is not b.attrs
    assert a.xindexes["lat"] is b.xindexes["lat"]  # immutable indexes are reused


def test_label_builder_falls_back_when_the_first_batch_differs() -> None:
    ds = _data()
    builder = LabelBuilder(ds, ("time", "lat", "lon"), ["t2m"])
    builder.plan = builder.plan[::-1]  # a wrong variable order must be caught, not returned
    values = {"t2m": np.zeros((8, 16, 16), dtype="float32")}
    got = builder.build_bounds([0, 0, 0], [8, 16, 16], values)
    assert "variable order" in builder.reason
    assert list(got.variables) == list(ds.variables)


def test_chunk_arithmetic() -> None:
    lo = np.array([[0, 0], [0, 16], [8, 48]])
    hi = np.array([[8, 16], [8, 32], [16, 64]])
    np.testing.assert_array_equal(chunk_of_boxes(lo, hi, [8, 32]), [[0, 0], [0, 0], [1, 1]])
    assert chunk_of_boxes(lo, hi + np.array([0, 1]), [8, 32]) is None  # 16..33 spans two
    with pytest.raises(ConfigError, match="boxes of 2 dims, chunks of 3"):
        chunk_of_boxes(lo, hi, [8, 32, 4])
    pieces = chunk_pieces([4, 20], [12, 70], [8, 32])
    assert pieces == [((0, 0), [4, 20], [8, 32]), ((0, 1), [4, 32], [8, 64]),
                      ((0, 2), [4, 64], [8, 70]), ((1, 0), [8, 20], [12, 32]),
                      ((1, 1), [8, 32], [12, 64]), ((1, 2), [8, 64], [12, 70])]
    assert chunk_pieces([0], [5], [8]) == [((0,), [0], [5])]
