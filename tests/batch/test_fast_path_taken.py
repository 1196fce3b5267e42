"""The feed's fast path is taken on plain Zarr v3 and Icechunk stores — or this fails loudly.

The direct path reads through private zarr/xarray internals, all behind
:mod:`arcoforge.batch.zarr_direct`. A zarr, xarray, dask or Icechunk upgrade that changes them
must not quietly send reads through the general (several times slower) path: these tests
assert on the adapter's answer and on its counters (not on timings), and their failure message
names the library versions and the reason the adapter gave.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import BatchGenerator, SampleStream
from arcoforge.batch.zarr_direct import (
    COUNTERS,
    LabelBuilder,
    direct_access,
    library_versions,
    raw_decoder,
)
from arcoforge.errors import ConfigError, SourceReadError

SHAPE, CHUNKS = (16, 64, 48), (8, 32, 16)
N_CHUNKS = 2 * 2 * 3


def _data() -> xr.Dataset:
    rng = np.random.default_rng(11)
    return xr.Dataset(
        {"t2m": (("time", "lat", "lon"), rng.standard_normal(SHAPE).astype("float32"),
                 {"units": "K"})},
        coords={"time": np.arange(SHAPE[0]), "lat": np.linspace(-60, 60, SHAPE[1]),
                "lon": np.arange(SHAPE[2]) * 7.5},
        attrs={"title": "fast path"},
    )


def _write(ds: xr.Dataset, store: object) -> None:
    import zarr

    enc = {"t2m": {"compressors": [zarr.codecs.ZstdCodec(level=1)]}}
    ds.chunk(dict(zip(ds.t2m.dims, CHUNKS, strict=True))).to_zarr(
        store, zarr_format=3, consolidated=False, encoding=enc)


Opener = Callable[..., xr.Dataset]


def _zarr(tmp: Path) -> Opener:
    path = tmp / "plain.zarr"
    _write(_data(), path)
    return lambda **kw: xr.open_zarr(path, consolidated=False, **kw)


def _icechunk(tmp: Path) -> Opener:
    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp / "repo")))
    session = repo.writable_session("main")
    _write(_data(), session.store)
    session.commit("data")
    return lambda **kw: xr.open_zarr(repo.readonly_session("main").store,
                                     consolidated=False, **kw)


STORES = {"zarr-v3": _zarr, "icechunk": _icechunk}


def _fail_unless(ok: bool, what: str, detail: object) -> None:
    if not ok:
        pytest.fail(f"the feed's fast path was NOT taken: {what} ({detail}). "
                    f"Libraries: {library_versions()}. The private zarr/xarray internals "
                    "used by arcoforge/batch/zarr_direct.py have probably changed: update "
                    "that adapter.", pytrace=False)


@pytest.fixture(params=list(STORES))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return STORES[request.param](tmp_path)


@pytest.mark.parametrize("chunks", ["dask", "lazy"])
def test_adapter_reads_variable_directly(opener: Opener, chunks: str) -> None:
    ds = opener() if chunks == "dask" else opener(chunks=None)
    var = ds["t2m"].variable
    access = direct_access(var)
    _fail_unless(access.direct, f"direct_access(t2m).kind == {access.kind!r}", access.reason)
    _fail_unless(access.reader is not None and access.reader.raw_decode is not None,
                 "zstd chunks are not decompressed straight into the output",
                 "raw_decoder returned None")


def test_stream_takes_direct_path(opener: Opener) -> None:
    ds = opener()
    ref = _data()
    COUNTERS.reset()
    stream = SampleStream(ds, {"lat": 32, "lon": 16}, batch_size=8, with_ids=True)
    batches = list(stream)
    counts = COUNTERS.snapshot()
    _fail_unless(counts["direct_chunks"] >= N_CHUNKS and counts["zarr_boxes"] == 0
                 and counts["xarray_boxes"] == 0, "the stream read through zarr/xarray", counts)
    got = np.concatenate([b["t2m"] for b in batches])
    assert got.shape[0] == SHAPE[0] * 2 * 3
    ids = np.concatenate([b["sample_id"] for b in batches])
    starts = stream.grid.sample_starts(ids)
    for k in (0, len(ids) // 2, len(ids) - 1):
        t, y, x = (int(v) for v in starts[k])
        np.testing.assert_array_equal(got[k], ref.t2m.values[t, y:y + 32, x:x + 16])


def test_batch_generator_takes_direct_path(opener: Opener) -> None:
    xbatcher = pytest.importorskip("xbatcher")
    ds = opener()
    kw = {"input_dims": {"lat": 16, "lon": 16}, "batch_dims": {"time": 8}}
    gen = BatchGenerator(ds, **kw)
    COUNTERS.reset()
    batches = list(gen)
    counts = COUNTERS.snapshot()
    _fail_unless(counts["zarr_boxes"] == 0 and counts["xarray_boxes"] == 0,
                 "BatchGenerator read through zarr/xarray", counts)
    _fail_unless(counts["direct_chunks"] == N_CHUNKS,
                 f"BatchGenerator decoded {counts['direct_chunks']} chunks, not each of the "
                 f"{N_CHUNKS} once", counts)
    _fail_unless(counts["direct_labels"] == len(gen) and counts["xarray_labels"] == 0,
                 "labeled batches were built through xarray's isel",
                 gen._reader.builder.reason or counts)
    ref = xbatcher.BatchGenerator(_data(), **kw)
    for i in (0, 7, len(gen) - 1):
        xr.testing.assert_identical(batches[i], ref[i])


def test_adapter_names_why_a_variable_is_not_direct(tmp_path: Path) -> None:
    ds = _data()
    ds.t2m.encoding = {"scale_factor": np.float32(0.01), "dtype": "int16", "_FillValue": -999}
    ds.to_zarr(tmp_path / "packed.zarr", zarr_format=3, consolidated=False)
    decoded = xr.open_zarr(tmp_path / "packed.zarr", consolidated=False, chunks=None)
    access = direct_access(decoded.t2m.variable)
    assert access.kind == "xarray" and "CF decoding" in access.reason, access
    opened = xr.open_zarr(tmp_path / "packed.zarr", consolidated=False, mask_and_scale=False)
    assert direct_access(opened.t2m.variable).direct
    access = direct_access((opened.t2m * 2).variable)
    assert access.kind == "xarray" and "graph other than what open_zarr builds" in access.reason
    lazy = xr.open_zarr(tmp_path / "packed.zarr", consolidated=False, chunks=None,
                        mask_and_scale=False)
    access = direct_access(lazy.t2m.isel(time=slice(2, None)).variable)
    assert access.kind == "xarray" and "lazily indexed subset" in access.reason
    assert direct_access(ds.t2m.variable).kind == "numpy"


def test_sharded_store_is_read_through_zarr_and_says_so(tmp_path: Path) -> None:
    import zarr

    ds = _data()
    ds.to_zarr(tmp_path / "sh.zarr", zarr_format=3, consolidated=False,
               encoding={"t2m": {"chunks": (4, 16, 16), "shards": (8, 32, 48)}})
    opened = xr.open_zarr(tmp_path / "sh.zarr", consolidated=False)
    access = direct_access(opened.t2m.variable)
    assert access.kind == "zarr" and "sharded arrays are read through zarr" in access.reason
    COUNTERS.reset()
    gen = BatchGenerator(opened, {"lat": 16, "lon": 16}, batch_dims={"time": 8})
    xr.testing.assert_identical(gen[3], ds.isel(time=slice(0, 8), lat=slice(16, 32),
                                                 lon=slice(0, 16)))
    assert COUNTERS.snapshot()["zarr_boxes"] >= 1
    assert zarr.open_array(tmp_path / "sh.zarr" / "t2m").shards == (8, 32, 48)


def test_reader_errors_name_the_problem(tmp_path: Path) -> None:
    import zarr

    za = zarr.create_array(tmp_path / "a.zarr", shape=(8, 8), chunks=(4, 4), dtype="float32",
                           compressors=None)
    za[:] = 2.0
    from arcoforge.batch.zarr_direct import box_reader

    reader = box_reader(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    assert reader is not None
    out = np.empty((4, 4), dtype="float32")
    with pytest.raises(ConfigError, match="only unit-step slices can be read directly"):
        reader.read_into((slice(0, 8, 2), slice(0, 4)), out)
    copy = raw_decoder(reader.transform.codecs, np.dtype("float32"))
    assert copy is not None
    with pytest.raises(SourceReadError, match="a stored chunk holds 3 bytes, its shape needs 4"):
        copy(np.zeros(3, np.uint8), np.zeros(4, np.uint8))


def test_label_builder_reuses_a_multiindex() -> None:
    ds = _data().stack(cell=("lat", "lon"))
    builder = LabelBuilder(ds, ("time", "cell"), [])
    assert builder.reason == ""  # a MultiIndex over one dim is reused
    got = builder.build({"time": slice(0, 4), "cell": slice(10, 30)}, {})
    xr.testing.assert_identical(got, ds.isel(time=slice(0, 4), cell=slice(10, 30)))
    assert builder.checked
