"""Regressions found by QA on the feed side: cache tokens of lazy selections and derived
variables, statistics matched by level, in-place preprocessing, argument checks, and
attributes kept by ``reassemble``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import ArraySource, LRUCache, SampleStream, ZarrCache, dataset_token

from .conftest import shared_data_dir

# -- 1. cache tokens: lazy selections and derived variables ------------------------------------


def _nemo_path() -> Path:
    path = shared_data_dir() / "nemo" / "nemo_1m_20150101-20150201_grid-T.nc"
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    return path


@pytest.fixture(scope="module")
def nemo_zarr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NEMO ``tos`` (dims y/x without coordinates) as a Zarr store."""
    path = tmp_path_factory.mktemp("nemo") / "tos.zarr"
    with xr.open_dataset(_nemo_path()) as ds:
        out = ds[["tos"]].drop_vars(["nav_lat", "nav_lon", "time_centered"]).load()
    for v in out.variables.values():
        v.encoding = {}
    out.chunk({"y": 110, "x": 120}).to_zarr(path, zarr_format=3, consolidated=False)
    return path


def _stream_values(ds: xr.Dataset, cache) -> np.ndarray:
    """Every sample of ``tos`` in sample-id order (the visiting order follows the chunks)."""
    s = SampleStream(ds, {"y": 32, "x": 32}, batch_size=64, cache=cache, with_ids=True)
    batches = list(s.batches())
    ids = np.concatenate([b["sample_id"] for b in batches])
    return np.concatenate([b["tos"] for b in batches])[np.argsort(ids)]


_OPENERS = {
    "open_dataset": lambda p, z: xr.open_dataset(p)[["tos"]],
    "open_dataset_chunks": lambda p, z: xr.open_dataset(p, chunks={})[["tos"]],
    "open_zarr": lambda p, z: xr.open_zarr(z, consolidated=False),
    "open_zarr_no_dask": lambda p, z: xr.open_zarr(z, consolidated=False, chunks=None),
}


@pytest.mark.parametrize("opener", sorted(_OPENERS))
@pytest.mark.parametrize("kind", ["lru", "zarr"])
def test_shared_cache_tells_regions_without_coordinates_apart(opener: str, kind: str,
                                                             nemo_zarr: Path, tmp_path) -> None:
    ds = _OPENERS[opener](_nemo_path(), nemo_zarr)
    cache = LRUCache() if kind == "lru" else ZarrCache(str(tmp_path / "cache.zarr"))
    region_a, region_b = ds.isel(y=slice(0, 64)), ds.isel(y=slice(200, 264))
    assert dataset_token(region_a, ["tos"]) != dataset_token(region_b, ["tos"])
    got_a = _stream_values(region_a, cache)
    got_b = _stream_values(region_b, cache)
    np.testing.assert_array_equal(got_a, _stream_values(region_a.copy(deep=True).load(), None))
    np.testing.assert_array_equal(got_b, _stream_values(region_b.copy(deep=True).load(), None))
    assert not np.array_equal(got_a, got_b, equal_nan=True)


@pytest.mark.parametrize("opener", sorted(_OPENERS))
def test_shared_cache_tells_derived_variables_apart(opener: str, nemo_zarr: Path) -> None:
    base = _OPENERS[opener](_nemo_path(), nemo_zarr).isel(y=slice(100, 164))
    if base.tos.chunks is None:
        base = base.chunk({"y": 32})  # fillna needs a lazy (dask) variable to stay lazy
    zero, flagged = base.fillna(0.0), base.fillna(-999.0)
    assert dataset_token(zero, ["tos"]) != dataset_token(flagged, ["tos"])
    cache = LRUCache()
    got_zero = _stream_values(zero, cache)
    got_flagged = _stream_values(flagged, cache)
    assert (got_zero == -999.0).sum() == 0 and (got_flagged == -999.0).sum() > 0
    np.testing.assert_array_equal(got_flagged, _stream_values(flagged.copy(deep=True).load(), None))


def test_lazy_tokens_are_the_same_in_every_process(nemo_zarr: Path, tmp_path) -> None:
    """The same store and selection give the same token in a new process (a persistent
    ZarrCache is reused across runs), and the second run reads nothing."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json, warnings
        warnings.simplefilter("ignore")
        import xarray as xr
        from arcoforge.batch import SampleStream, ZarrCache, dataset_token
        z, nc = {str(nemo_zarr)!r}, {str(_nemo_path())!r}
        sets = {{
            "zarr": xr.open_zarr(z, consolidated=False).isel(y=slice(200, 264)),
            "zarr_no_dask": xr.open_zarr(z, consolidated=False, chunks=None).isel(
                y=slice(200, 264)),
            "nc": xr.open_dataset(nc)[["tos"]].isel(y=slice(200, 264)),
            "nc_dask": xr.open_dataset(nc, chunks={{}})[["tos"]].isel(y=slice(200, 264)),
            "derived": xr.open_zarr(z, consolidated=False).isel(y=slice(200, 264)).fillna(0),
        }}
        out = {{k: dataset_token(v, ["tos"]) for k, v in sets.items()}}
        s = SampleStream(sets["zarr"], {{"y": 32, "x": 32}}, batch_size=64,
                         cache=ZarrCache({str(tmp_path / "cache.zarr")!r}))
        for _ in s.batches():
            pass
        out["bytes_read"] = s.source.bytes_read
        print(json.dumps(out))
    """))
    import json

    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=120, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["bytes_read"] > 0 and second["bytes_read"] == 0
    for key in ("zarr", "zarr_no_dask", "nc", "nc_dask", "derived"):
        assert first[key] == second[key], key
    assert len({first[k] for k in ("zarr", "zarr_no_dask", "nc", "nc_dask", "derived")}) >= 4


def test_loaded_lazy_selection_keeps_a_content_token(nemo_zarr: Path) -> None:
    lazy = xr.open_zarr(nemo_zarr, consolidated=False, chunks=None)
    a, b = lazy.isel(y=slice(0, 64)), lazy.isel(y=slice(200, 264))
    a.tos.values, b.tos.values  # noqa: B018 - loads each into its MemoryCachedArray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ArraySource(a).token != ArraySource(b).token


@pytest.mark.parametrize(("a", "b"), [
    ([1, None, "2"], ["1", "None", 2]),      # the same text, other types
    ([1, 2.0], [1.0, 2]),
    ([np.arange(2000), "x"], [np.arange(2000) * (np.arange(2000) != 1000), "x"]),
])
def test_object_arrays_are_told_apart_by_value_and_type(a, b) -> None:
    """Object arrays were hashed through ``astype(str)``: different data, one token."""
    def obj(values):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr

    da, db = (xr.Dataset({"v": ("x", obj(v))}) for v in (a, b))
    assert dataset_token(da) != dataset_token(db)
    assert dataset_token(da) == dataset_token(xr.Dataset({"v": ("x", obj(a))}))
    # an object coordinate too
    ca, cb = (xr.Dataset({"w": ("x", np.zeros(len(v)))}, coords={"x": obj(v)}) for v in (a, b))
    assert dataset_token(ca) != dataset_token(cb)


# -- 2. per-level statistics follow the levels of a subset -------------------------------------


@pytest.fixture(scope="module")
def four_levels() -> xr.Dataset:
    """Real ERSST fields stacked as four levels (5, 10, 50, 100) of very different means,
    with the statistics of all four stored in its attributes (as build_statistics does)."""
    from arcoforge.batch.statistics import compute_statistics
    from arcoforge.provenance import STATISTICS

    files = sorted((shared_data_dir() / "ersst-v5").glob("ersst.v5.*.nc"))[:6]
    if not files:
        pytest.skip("shared ERSST files missing")
    with xr.open_mfdataset(files, combine="by_coords") as ds:
        sst = ds.sst.isel(lev=0, drop=True).load()
    field = xr.concat([sst, sst * 2 + 100, sst - 300, sst * 0.5 + 1000], dim="level")
    out = xr.Dataset({"t": field.assign_coords(level=[5.0, 10.0, 50.0, 100.0]).transpose(
        "time", "level", "lat", "lon")})
    out.attrs[STATISTICS] = compute_statistics(out).to_dict()
    return out


def _check_normalized(stream: SampleStream, data: xr.Dataset) -> None:
    """Every sample is (x - mean) / std with the statistics of its own level."""
    from arcoforge.batch.statistics import compute_statistics

    own = compute_statistics(data)["t"]  # computed on exactly this data
    for b in stream.batches():
        starts = stream.grid.sample_starts(b["sample_id"])
        lev = starts[:, stream.grid.dims.index("level")]
        raw = np.stack([data.t.values[tuple(
            slice(st[i], st[i] + stream.grid.window[i]) if d in stream.input_dims else st[i]
            for i, d in enumerate(stream.grid.dims))] for st in starts])
        want = (raw - own.mean[lev][:, None, None]) / own.std[lev][:, None, None]
        np.testing.assert_allclose(b["t"], want.astype(np.float32), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("levels", [slice(2, 4), [3, 0], [1]])
def test_stored_statistics_follow_a_level_subset(four_levels: xr.Dataset, levels) -> None:
    from arcoforge.batch import reassemble
    from arcoforge.batch.statistics import compute_statistics, load_statistics

    sub = four_levels.isel(level=levels)  # the attributes still hold all four levels
    full = load_statistics(four_levels)["t"]
    picked = full.mean[np.arange(4)[levels]]
    s = SampleStream(sub, {"lat": 16, "lon": 16}, batch_size=64, with_ids=True,
                     normalize=True)
    assert s.statistics["t"].mean.shape == (sub.sizes["level"],)
    np.testing.assert_allclose(s.statistics["t"].mean, picked)
    _check_normalized(s, sub)
    # the same with the full dataset's Statistics object passed explicitly
    given = SampleStream(sub, {"lat": 16, "lon": 16}, batch_size=64, with_ids=True,
                         normalize=load_statistics(four_levels))
    _check_normalized(given, sub)
    # the accessor and load_statistics give the subset's levels, like computing them anew
    np.testing.assert_allclose(sub.arcoforge.statistics()["t"].mean, picked)
    np.testing.assert_allclose(load_statistics(sub)["t"].mean, compute_statistics(sub)["t"].mean)
    assert load_statistics(sub)["t"].coords == {"level": tuple(sub.level.values.tolist())}
    # and reassembling undoes the normalization with the subset's own levels
    ids, preds = [], []
    for b in s.batches():
        ids.append(b["sample_id"])
        preds.append(b["t"])
    back = reassemble(preds, s, sample_ids=ids, name="t", statistics=True)
    covered = ~np.isnan(back.values)
    np.testing.assert_allclose(back.values[covered],
                               sub.t.transpose(*back.dims).values[covered], rtol=1e-4,
                               atol=1e-3)


def test_statistics_that_cannot_be_matched_are_explained(four_levels: xr.Dataset) -> None:
    from arcoforge.batch.statistics import Statistics, load_statistics
    from arcoforge.errors import ConfigError
    from arcoforge.provenance import STATISTICS

    no_coord = four_levels.drop_vars("level").isel(level=slice(2, 4))
    with pytest.raises(ConfigError, match=r"statistics of 't' have 4 values along 'level' but "
                                          r"the data has 2, and the data has no coordinate"):
        SampleStream(no_coord, {"lat": 16, "lon": 16}, normalize=True)
    # the same sizes without a coordinate: by position, as before
    same = four_levels.drop_vars("level")
    s = SampleStream(same, {"lat": 16, "lon": 16}, normalize=True)
    np.testing.assert_array_equal(s.statistics["t"].mean, load_statistics(four_levels)["t"].mean)
    other = four_levels.isel(level=[0, 1]).assign_coords(level=[7.0, 10.0])
    with pytest.raises(ConfigError, match=r"statistics of 't' have no values for 'level' = "
                                          r"\[7\.0\] \(1 values\) \(they cover 'level' = "
                                          r"\[5\.0, 10\.0, 50\.0, 100\.0\]"):
        SampleStream(other, {"lat": 16, "lon": 16}, normalize=True)
    with pytest.raises(ConfigError, match="no values for 'level'"):
        other.arcoforge.statistics()
    # statistics stored without level values (an older arcoforge) and a subset: explained
    old = Statistics.from_dict(four_levels.attrs[STATISTICS]).to_dict()
    for var in old["variables"].values():
        var.pop("coords")
    legacy = four_levels.assign_attrs({STATISTICS: old}).isel(level=slice(0, 3))
    with pytest.raises(ConfigError, match="have 4 values along 'level' but the data has 3, "
                                          "and the statistics record no 'level' values"):
        SampleStream(legacy, {"lat": 16, "lon": 16}, normalize=True)


def test_statistics_of_an_unused_variable_do_not_block_a_stream() -> None:
    """Only the stream's own variables are aligned: 'ta' (levels relabelled hPa -> Pa, which
    its stored statistics cannot match) no longer stops a stream of the surface 'tas'."""
    from arcoforge.batch.statistics import compute_statistics, load_statistics
    from arcoforge.errors import ConfigError
    from arcoforge.provenance import STATISTICS

    rng = np.random.default_rng(0)
    ds = xr.Dataset({"ta": (("time", "level", "y"), rng.random((8, 3, 16)) + 5.0),
                     "tas": (("time", "y"), rng.random((8, 16)) * 3.0 + 2.0)},
                    coords={"level": [1000, 850, 500]})
    ds.attrs[STATISTICS] = compute_statistics(ds, ["ta", "tas"], per=("level",)).to_dict()
    pa = ds.assign_coords(level=ds.level * 100)
    s = SampleStream(pa, input_dims={"y": 8}, batch_size=2, variables=["tas"], normalize=True,
                     with_ids=True)
    tas = load_statistics(ds)["tas"]
    assert s.statistics["tas"].mean == pytest.approx(tas.mean)
    got = np.concatenate([b["tas"] for b in s.batches()])
    assert got.size == pa.tas.size
    np.testing.assert_allclose(np.sort(got.ravel()),
                               np.sort(((pa.tas.values - tas.mean) / tas.std).ravel()),
                               rtol=1e-5, atol=1e-5)
    # asked for by name, only 'tas' is aligned; 'ta' still explains itself where it is used
    assert load_statistics(pa, ["tas"])["tas"].mean == pytest.approx(tas.mean)
    stats = load_statistics(pa, ["tas"])
    with pytest.raises(ConfigError, match="no values for 'level'"):
        stats.normalize(pa)
    assert float(stats.normalize(pa[["tas"]]).tas.mean()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ConfigError, match="no values for 'level'"):
        SampleStream(pa, input_dims={"y": 8}, batch_size=2, variables=["ta"], normalize=True)
    with pytest.raises(ConfigError, match="no values for 'level'"):
        load_statistics(pa)  # every variable, as documented


# -- 3. an in-place preprocess never changes the user's data ----------------------------------


def _in_place(name, arr):
    arr *= 2.0
    arr += 1.0
    return arr


def test_in_place_preprocess_leaves_numpy_data_alone(air: xr.Dataset) -> None:
    ds = air.isel(time=slice(0, 16)).copy(deep=True)
    before = ds.air.values.copy()
    s = SampleStream(ds, {"lat": 5, "lon": 5}, batch_size=64, preprocess=_in_place)
    epochs = [np.concatenate([b["air"] for b in s.batches(epoch=e)]) for e in range(3)]
    np.testing.assert_array_equal(ds.air.values, before)
    np.testing.assert_array_equal(epochs[0], epochs[2])
    np.testing.assert_allclose(epochs[0][0], before[0, :5, :5] * 2 + 1)


def test_in_place_preprocess_leaves_a_loaded_lazy_file_alone() -> None:
    ds = xr.open_dataset(_nemo_path())[["tos"]]
    cached = ds.tos.values  # held by xarray's MemoryCachedArray: the dataset's own memory
    before = cached.copy()
    s = SampleStream(ds, {"y": 32, "x": 32}, batch_size=64, preprocess=_in_place)
    first = np.concatenate([b["tos"] for b in s.batches(epoch=0)])
    second = np.concatenate([b["tos"] for b in s.batches(epoch=1)])
    np.testing.assert_array_equal(ds.tos.values, before)
    np.testing.assert_array_equal(first, second)


# -- 4. arguments that cannot work are refused at construction, naming the value -------------


@pytest.fixture()
def small(air: xr.Dataset) -> xr.Dataset:
    return air.isel(time=slice(0, 8))


@pytest.mark.parametrize("bad", [0, -1, 2.5, "32", None, True])
def test_batch_size_must_be_a_positive_integer(small: xr.Dataset, bad) -> None:
    from arcoforge.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"batch_size must be a positive integer; got {bad!r}"):
        SampleStream(small, {"lat": 5}, batch_size=bad)


def test_whole_number_sizes_still_accepted(small: xr.Dataset) -> None:
    s = SampleStream(small, {"lat": 5.0, "lon": np.int64(5)}, {"lat": 1.0}, batch_size=np.int32(7))
    assert s.batch_size == 7 and s.input_dims == {"lat": 5, "lon": 5}
    assert s.input_overlap == {"lat": 1}
    assert next(iter(s))["air"].shape == (7, 5, 5)


@pytest.mark.parametrize("bad", [3.9, 0, -2, "4"])
def test_window_lengths_must_be_positive_integers(small: xr.Dataset, bad) -> None:
    from arcoforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"input_dims\['lat'\] \(a window length\) must be a "
                                          rf"positive integer; got {bad!r}"):
        SampleStream(small, {"lat": bad})
    with pytest.raises(ConfigError, match=r"input_overlap\['lat'\] must be an integer; got 1.5"):
        SampleStream(small, {"lat": 4}, {"lat": 1.5})


def test_overlaps_that_cannot_work_are_refused(small: xr.Dataset) -> None:
    """An overlap for a dimension that has no window was ignored; one as long as the window
    would not move it.  A negative overlap (a stride longer than the window) stays allowed."""
    from arcoforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"input_overlap names \['time'\], which input_dims "
                                          r"does not: an overlap is for a window dimension "
                                          r"\(\['lat'\]\)"):
        SampleStream(small, {"lat": 5}, {"time": 1})
    with pytest.raises(ConfigError, match=r"input_overlap \{'lat': 5\} must be less than the "
                                          r"window length \(\{'lat': 5\}\)"):
        SampleStream(small, {"lat": 5}, {"lat": 5})
    skip = SampleStream(small, {"lat": 3}, {"lat": -2})
    n = small.sizes["lat"]
    assert skip.grid.starts[skip.grid.dims.index("lat")].tolist() == list(range(0, n - 2, 5))


def test_a_mask_that_leaves_no_sample_warns(small: xr.Dataset) -> None:
    """max_missing=0 over windows that all touch a NaN gave an empty epoch without a word."""
    every_third_row = xr.DataArray(np.arange(small.sizes["lat"]) % 3 != 0, dims="lat")
    ds = small.assign(air=small["air"].where(every_third_row))  # each 5-row window has a NaN
    with pytest.warns(UserWarning, match=r"max_missing=0.0 leaves no sample: every one of the "
                                         r"\d+ windows has a larger fraction of NaN in 'air', so "
                                         r"an epoch is empty"):
        stream = SampleStream(ds, {"lat": 5, "lon": 5}, max_missing=0.0)
        assert len(stream) == 0


def test_unknown_mask_variable_is_named(small: xr.Dataset) -> None:
    from arcoforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mask_variable 'mask' is not one of the streamed "
                                          r"variables \['air'\] \(the dataset has data "
                                          r"variables \['air'\]\)"):
        SampleStream(small, {"lat": 5}, max_missing=0.5, mask_variable="mask")


def test_stream_over_an_empty_dim_names_it(small: xr.Dataset) -> None:
    from arcoforge.errors import ConfigError

    empty = small.sel(time=slice("1900-01-01", "1900-12-31"))
    assert empty.sizes["time"] == 0
    with pytest.raises(ConfigError, match=r"dimension 'time' of the data is empty \(length 0\)"):
        SampleStream(empty, {"lat": 5, "lon": 5})


@pytest.mark.parametrize("bad", [-1, 10**6])
def test_reassemble_refuses_sample_ids_outside_the_stream(small: xr.Dataset, bad: int) -> None:
    from arcoforge.batch import reassemble
    from arcoforge.errors import ConfigError

    s = SampleStream(small, {"lat": 5, "lon": 5}, with_ids=True)
    with pytest.raises(ConfigError, match=rf"sample ids outside the stream's samples "
                                          rf"0\.\.{s.grid.n_samples - 1} \(1 of 2\): \[{bad}\]"):
        reassemble([np.zeros((2, 5, 5))], s, sample_ids=[np.array([0, bad])])
    with pytest.raises(ConfigError, match="sample ids must be integers"):
        reassemble([np.zeros((1, 5, 5))], s, sample_ids=[np.array([0.5])])


# -- 5. reassembling a stream keeps the variable's name and attributes ------------------------


def test_stream_reassemble_keeps_name_and_attributes(small: xr.Dataset) -> None:
    from arcoforge.batch import reassemble

    assert small.air.attrs  # the real file's attributes (units, long_name, ...)
    s = SampleStream(small, {"lat": 5, "lon": 7}, with_ids=True, batch_size=50)
    batches = list(s.batches())
    preds = [b["air"] for b in batches]
    ids = [b["sample_id"] for b in batches]
    out = reassemble(preds, s, sample_ids=ids)
    assert out.name == "air" and out.attrs == small.air.attrs
    covered = ~np.isnan(out.values)
    np.testing.assert_array_equal(out.values[covered], small.air.values[covered])
    renamed = reassemble(preds, s, sample_ids=ids, name="prediction")
    assert renamed.name == "prediction" and renamed.attrs == small.air.attrs
    both = SampleStream(small.assign(twice=small.air * 2), {"lat": 5, "lon": 7},
                        with_ids=True, batch_size=50)
    got = [b for b in both.batches()]
    out2 = reassemble([b["twice"] for b in got], both, sample_ids=[b["sample_id"] for b in got],
                      variable="air")
    assert out2.name == "air" and out2.attrs == small.air.attrs
    normed = SampleStream(small, {"lat": 5, "lon": 7}, with_ids=True, batch_size=50,
                          normalize=True)
    nb = list(normed.batches())
    back = reassemble([b["air"] for b in nb], normed, sample_ids=[b["sample_id"] for b in nb],
                      statistics=True)
    assert back.name == "air" and back.attrs == small.air.attrs
