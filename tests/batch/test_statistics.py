"""Normalization statistics on real data: against numpy, per level, stored, applied, undone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream, reassemble
from arcoforge.batch.statistics import (
    Statistics,
    build_statistics,
    compute_statistics,
    load_statistics,
    store_statistics,
)
from arcoforge.errors import ConfigError, TargetError
from arcoforge.provenance import STATISTICS

from .conftest import shared_data_dir


@pytest.fixture(scope="module")
def ersst() -> xr.Dataset:
    """24 months of ERSST v5 (land is NaN), loaded."""
    files = sorted((shared_data_dir() / "ersst-v5").glob("ersst.v5.*.nc"))
    if not files:
        pytest.skip("shared ERSST files missing")
    with xr.open_mfdataset(files, combine="by_coords") as ds:
        return ds[["sst", "ssta"]].load()


@pytest.fixture(scope="module")
def levels(ersst: xr.Dataset) -> xr.Dataset:
    """Two real fields stacked as two levels (sst, then ssta): different mean and spread."""
    field = xr.concat([ersst.sst.isel(lev=0), ersst.ssta.isel(lev=0)], dim="level")
    return xr.Dataset({"t": field.assign_coords(level=[0, 1]).transpose("time", "level",
                                                                         "lat", "lon")})


def _numpy_stats(a: np.ndarray, axis: tuple[int, ...]) -> dict[str, np.ndarray]:
    a = a.astype(np.float64)
    return {"count": (~np.isnan(a)).sum(axis=axis), "mean": np.nanmean(a, axis=axis),
            "std": np.nanstd(a, axis=axis), "minimum": np.nanmin(a, axis=axis),
            "maximum": np.nanmax(a, axis=axis)}


def _check(st, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(st.count, expected["count"])
    for f in ("mean", "std", "minimum", "maximum"):
        np.testing.assert_allclose(getattr(st, f), expected[f], rtol=1e-12, err_msg=f)


def test_matches_numpy_with_nans_in_many_blocks(ersst: xr.Dataset) -> None:
    assert np.isnan(ersst.sst.values).any()
    # tiny blocks: 24 streaming merges
    stats = compute_statistics(ersst, per=(), block_bytes=1)
    for v in ("sst", "ssta"):
        st = stats[v]
        assert st.dims == ()
        _check(st, _numpy_stats(ersst[v].values, axis=tuple(range(ersst[v].ndim))))


def test_per_level_matches_numpy_and_lazy_dask_input(levels: xr.Dataset, tmp_path: Path) -> None:
    stats = compute_statistics(levels, per=("level",), block_bytes=50_000)
    st = stats["t"]
    assert st.dims == ("level",) and st.count.shape == (2,)
    _check(st, _numpy_stats(levels.t.values, axis=(0, 2, 3)))
    assert st.mean[0] > 10 > abs(st.mean[1])  # sst vs anomaly: really per level
    # default `per` knows level dims; a lazily opened, chunked Zarr store gives the same
    levels.chunk({"time": 5}).to_zarr(tmp_path / "l.zarr", zarr_format=3, consolidated=False)
    lazy = xr.open_zarr(tmp_path / "l.zarr", consolidated=False)
    again = compute_statistics(lazy)["t"]
    _check(again, _numpy_stats(levels.t.values, axis=(0, 2, 3)))


def test_stable_for_a_large_offset(ersst: xr.Dataset) -> None:
    shifted = (ersst[["sst"]].astype("float64") + 1e9)
    st = compute_statistics(shifted, per=(), block_bytes=1)["sst"]
    want = np.nanstd(ersst.sst.values.astype(np.float64))
    np.testing.assert_allclose(st.std, want, rtol=1e-6)  # sum/sum-of-squares loses it all


def test_json_round_trip_with_an_empty_level(levels: xr.Dataset) -> None:
    ds = levels.copy()
    ds["t"] = ds.t.where(ds.level == 0)  # level 1 all NaN
    stats = compute_statistics(ds, per=("level",))
    st = stats["t"]
    assert st.count[1] == 0 and np.isnan(st.mean[1]) and np.isnan(st.std[1])
    assert st.scale()[1] == 1.0 and st.offset()[1] == 0.0
    text = stats.to_json()
    assert "NaN" not in text  # strict JSON: null
    back = Statistics.from_dict(json.loads(text))
    for f in ("count", "mean", "std", "minimum", "maximum"):
        np.testing.assert_array_equal(getattr(back["t"], f), getattr(st, f))
    assert Statistics.from_dict(text)["t"].dims == ("level",)


def test_errors_are_explained(ersst: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"variables \['nope'\] not in the dataset"):
        compute_statistics(ersst, ["nope"])
    with pytest.raises(ConfigError, match="dtype <U1; statistics need numbers"):
        compute_statistics(xr.Dataset({"s": ("x", np.array(["a", "b"]))}), ["s"])
    stats = compute_statistics(ersst, ["sst"])
    with pytest.raises(ConfigError, match=r"no statistics for variable 'ssta' \(have \['sst'\]\)"):
        stats["ssta"]
    with pytest.raises(ConfigError, match="does not hold arcoforge statistics of format 1"):
        Statistics.from_dict({"variables": {}})
    with pytest.raises(TargetError, match="no built store to add statistics to"):
        store_statistics(tmp_path / "missing.zarr", stats)
    per_level = compute_statistics(ersst, ["sst"], per=("lev",))
    with pytest.raises(ConfigError, match=r"statistics of 'sst' are per \['lev'\], which"):
        per_level.normalize(ersst.sst.isel(lev=0))
    with pytest.raises(ConfigError, match="statistics of 'sst' are per 'lev', which the variable"):
        SampleStream(ersst.isel(lev=0), {"lat": 8, "lon": 8}, variables=["sst"],
                     normalize=per_level)


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_store_in_zarr_and_icechunk_and_load(ersst: xr.Dataset, tmp_path: Path) -> None:
    stats = compute_statistics(ersst, per=("lev",))
    path = tmp_path / "e.zarr"
    ersst.to_zarr(path, zarr_format=3, consolidated=True)
    store_statistics(str(path), stats)
    reopened = xr.open_zarr(path)  # consolidated metadata was refreshed
    assert STATISTICS in reopened.attrs
    back = load_statistics(reopened)
    assert back is not None
    np.testing.assert_array_equal(back["sst"].mean, stats["sst"].mean)
    assert load_statistics(ersst) is None
    # the build step: open the built store, compute, store; arcoforge.open_dataset sees them
    from arcoforge import open_dataset

    built = build_statistics(path, ["ssta"])
    np.testing.assert_array_equal(load_statistics(open_dataset(path))["ssta"].maximum,
                                  built["ssta"].maximum)
    np.testing.assert_allclose(built["ssta"].maximum, np.nanmax(ersst.ssta.values))

    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "ic")))
    session = repo.writable_session("main")
    ersst.to_zarr(session.store, zarr_format=3, consolidated=False)
    session.commit("data")
    store_statistics(repo, stats)
    ro = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
    back = load_statistics(ro)
    assert back is not None
    np.testing.assert_array_equal(back["ssta"].std, stats["ssta"].std)


def test_stream_normalizes_per_level_sample_axis_and_window(levels: xr.Dataset) -> None:
    stats = compute_statistics(levels)
    mean, std = stats["t"].mean, stats["t"].std
    # level as a sample axis: each sample's level picks its statistics
    s = SampleStream(levels, {"lat": 10, "lon": 12}, batch_size=40, with_ids=True,
                     sampling="random", normalize=True)
    assert s.statistics is not None
    for b in s:
        starts = s.grid.sample_starts(b["sample_id"])
        lev = starts[:, s.grid.dims.index("level")]
        raw = np.stack([levels.t.values[tuple(
            slice(st[i], st[i] + s.grid.window[i]) if d in s.input_dims else st[i]
            for i, d in enumerate(s.grid.dims))] for st in starts])
        want = (raw - mean[lev][:, None, None]) / std[lev][:, None, None]
        np.testing.assert_allclose(b["t"], want.astype(np.float32), rtol=1e-5, atol=1e-5)
    # level inside the window: statistics broadcast along the window's level axis
    w = SampleStream(levels, {"level": 2, "lat": 10, "lon": 12}, batch_size=8,
                     dim_order=["lat", "level", "lon"], normalize=stats)
    first = next(iter(w))["t"]
    raw = levels.t.isel(time=0, lat=slice(0, 10), lon=slice(0, 12)).transpose(
        "lat", "level", "lon").values
    np.testing.assert_allclose(first[0], (raw - mean[None, :, None]) / std[None, :, None],
                               rtol=1e-5, atol=1e-5)


def test_stream_uses_stored_statistics(ersst: xr.Dataset) -> None:
    fake = compute_statistics(ersst, ["sst"], per=())
    st = fake["sst"]
    fake = Statistics({"sst": type(st)((), st.count, np.float64(1.0), np.float64(2.0),
                                       st.minimum, st.maximum)})
    ds = ersst.assign_attrs({STATISTICS: fake.to_dict()})
    s = SampleStream(ds, {"lat": 89, "lon": 180}, variables=["sst"], normalize=True)
    b = next(iter(s))["sst"]
    np.testing.assert_allclose(b[0], (ersst.sst.values[0, 0] - 1.0) / 2.0, rtol=1e-6)
    assert s.sample_dtypes()["sst"] == np.float32


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_normalize_then_reassemble_gives_the_original(ersst: xr.Dataset, sampling: str) -> None:
    s = SampleStream(ersst, {"lat": 10, "lon": 20}, {"lat": 5}, variables=["sst"],
                     batch_size=64, with_ids=True, sampling=sampling, normalize=True)
    preds, ids = [], []
    for b in s:
        assert abs(float(np.nanmean(b["sst"]))) < 1.0  # normalized
        preds.append(b["sst"])
        ids.append(b["sample_id"])
    out = reassemble(preds, s, sample_ids=ids, name="sst", statistics=True)
    covered = out.notnull()
    ref = ersst.sst.transpose(*out.dims)
    np.testing.assert_allclose(out.values[covered.values], ref.values[covered.values],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(out.values), np.isnan(ref.values) | ~covered.values)
    with pytest.raises(ConfigError, match="statistics=True needs a stream built with"):
        reassemble(preds, SampleStream(ersst, {"lat": 10, "lon": 20}, variables=["sst"]),
                   sample_ids=ids, statistics=True)
    both = SampleStream(ersst, {"lat": 10, "lon": 20}, with_ids=True, normalize=True)
    with pytest.raises(ConfigError, match="name the variable whose statistics undo"):
        reassemble(preds, both, sample_ids=ids, statistics=True)


def test_accessor_and_generator_reassembly(ersst: xr.Dataset) -> None:
    from arcoforge.batch import BatchGenerator

    stats = compute_statistics(ersst, ["sst"], per=())  # the generator squeezes lev
    gen = BatchGenerator(ersst.sst, {"lat": 89, "lon": 180})
    preds = [stats.normalize(gen[i]) for i in range(len(gen))]
    out = reassemble(preds, gen, statistics=stats)
    ref = ersst.sst.transpose(*out.dims).values
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-4)  # float32, NaN in place
    with pytest.raises(ConfigError, match="statistics=True needs a SampleStream"):
        reassemble(preds, gen, statistics=True)


def test_accessor_statistics_and_normalizing_loader(ersst: xr.Dataset) -> None:
    import arcoforge  # noqa: F401  (the accessor)

    torch = pytest.importorskip("torch")
    stats = ersst.arcoforge.statistics(["sst"])
    assert stats["sst"].dims == ("lev",)
    stored = ersst.assign_attrs({STATISTICS: stats.to_dict()})
    assert stored.arcoforge.statistics(["sst"]) is not stats  # read back from the attrs
    np.testing.assert_array_equal(stored.arcoforge.statistics(["sst"])["sst"].mean,
                                  stats["sst"].mean)
    loader = stored.arcoforge.torch_loader({"lat": 89, "lon": 180}, variables=["sst"],
                                           batch_size=24, normalize=True)
    batch = next(iter(loader))["sst"]
    assert batch.dtype == torch.float32
    want = (ersst.sst.values[:, 0] - stats["sst"].mean[0]) / stats["sst"].std[0]
    np.testing.assert_allclose(batch.numpy(), want, rtol=1e-5, atol=1e-5)

    mapped = stored.arcoforge.torch_dataset({"lat": 89, "lon": 180}, variables=["sst"],
                                            iterable=False, normalize=True)
    np.testing.assert_allclose(mapped[3]["sst"].numpy(), want[3], rtol=1e-5, atol=1e-5)
