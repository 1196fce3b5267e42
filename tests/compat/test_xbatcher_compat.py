"""arcoforge.compat.xbatcher against the real xbatcher 0.4 (the oracle), on real files.

xbatcher's own suite runs in ``xbatcher_suite/``; these tests cover what it does not: batches
from a Zarr store identical to xbatcher's, the DataArray NaN padding, ``BatchSchema``'s
selectors, the cache, the loaders' fast path, accessor registration and every error message.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge.compat.xbatcher as xb
from arcoforge.errors import ConfigError, MissingDependencyError, NotFoundError

real = pytest.importorskip("xbatcher")

DATA = Path(os.environ.get("ARCOFORGE_SHARED_DATA",
                           Path(__file__).resolve().parents[3] / "shared" / "data"))
ROOT = Path(__file__).resolve().parents[2]

# (input_dims, kwargs) over NCEP air temperature (time 124, lat 11, lon 21)
CASES = [
    ({"lat": 5, "lon": 7}, {"batch_dims": {"time": 31}}),
    ({"time": 10}, {"input_overlap": {"time": 2}}),
    ({"lat": 5, "lon": 7}, {"batch_dims": {"time": 31}, "concat_input_dims": True}),
    ({"lat": 4, "lon": 7}, {"input_overlap": {"lat": 1}, "concat_input_dims": True}),
    ({"lon": 7}, {"batch_dims": {"lon": 14, "time": 62}, "concat_input_dims": True}),
    ({"lat": 5}, {"preload_batch": False}),
]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def air_zarr(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """NCEP air temperature (int16 packed) written to a chunked Zarr store and opened lazily."""
    src = DATA / "ncep-air" / "air.nc"
    if not src.exists():
        pytest.skip(f"shared data file missing: {src}")
    store = tmp_path_factory.mktemp("air") / "air.zarr"
    with xr.open_dataset(src) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int16 packing without a _FillValue, as in the source
        ds.chunk({"time": 31, "lat": 11, "lon": 21}).to_zarr(store, zarr_format=3,
                                                               consolidated=False)
    return xr.open_zarr(store, consolidated=False)


@pytest.mark.parametrize("as_array", [False, True], ids=["dataset", "dataarray"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_zarr_store_batches_identical_to_xbatcher(air_zarr: xr.Dataset, case: int,
                                                  as_array: bool) -> None:
    input_dims, kw = CASES[case]
    data = air_zarr["air"] if as_array else air_zarr
    mine = _quiet(xb.BatchGenerator, data, input_dims, **kw)
    if as_array and kw.get("concat_input_dims"):
        # xbatcher 0.4 may fail on a lazy DataArray here (``"lat_input" in da`` takes a dask
        # array's truth value, e.g. in case 2); its result on the computed array is the oracle
        data = data.compute()
    ref = _quiet(real.BatchGenerator, data, input_dims, **kw)
    assert len(mine) == len(ref) > 0
    n = 0
    for got, expected in zip(mine, _quiet(list, ref), strict=True):
        xr.testing.assert_identical(got, expected)
        n += 1
    assert n == len(ref)
    assert (mine.input_dims, mine.input_overlap, mine.batch_dims, mine.concat_input_dims,
            mine.preload_batch) == (ref.input_dims, ref.input_overlap, ref.batch_dims,
                                    ref.concat_input_dims, ref.preload_batch)


def test_dataarray_concat_pads_with_nan_like_xbatcher(air_zarr: xr.Dataset) -> None:
    da = air_zarr["air"].compute()
    kw = {"batch_dims": {"time": 62}, "concat_input_dims": True}
    got = xb.BatchGenerator(da, {"lat": 5, "lon": 7}, **kw)[1]
    expected = _quiet(real.BatchGenerator, da, {"lat": 5, "lon": 7}, **kw)[1]
    xr.testing.assert_identical(got, expected)
    # the outer join spans every patch's coordinates: 2 x 3 patches of 5 x 7 -> 10 x 21 padded
    assert dict(got.sizes) == {"sample": 6 * 62, "lat_input": 10, "lon_input": 21}
    assert np.isnan(got.values).mean() == pytest.approx(5 / 6)
    # without index coordinates nothing is padded (the Dataset layout)
    bare = da.drop_vars(["lat", "lon"])
    got = xb.BatchGenerator(bare, {"lat": 5, "lon": 7}, **kw)[0]
    xr.testing.assert_identical(got, _quiet(real.BatchGenerator, bare, {"lat": 5, "lon": 7},
                                            **kw)[0])
    assert not np.isnan(got.values).any()


@pytest.mark.parametrize("case", range(len(CASES)))
def test_schema_selectors_equal_xbatcher(air_zarr: xr.Dataset, case: int) -> None:
    input_dims, kw = CASES[case]
    kw = {k: v for k, v in kw.items() if k != "preload_batch"}
    concat = kw.pop("concat_input_dims", False)
    ref = _quiet(real.BatchSchema, air_zarr, input_dims, concat_input_bins=concat, **kw)
    mine = _quiet(xb.BatchSchema, air_zarr, input_dims, concat_input_bins=concat, **kw)
    assert dict(mine.selectors) == ref.selectors
    assert list(mine.selectors) == list(ref.selectors) and len(mine.selectors) == len(ref.selectors)
    for name in ("input_dims", "input_overlap", "batch_dims", "concat_input_dims",
                 "preload_batch", "_duplicate_batch_dims", "_unique_batch_dims",
                 "_input_stride", "_all_sliced_dims"):
        assert getattr(mine, name) == getattr(ref, name), name
    ours, theirs = json.loads(mine.to_json()), json.loads(ref.to_json())
    assert ours["selector"] == theirs["selector"]
    assert ours["concat_input_dims"] is concat  # xbatcher writes input_dims there
    assert {k: ours[k] for k in ("input_dims", "input_overlap", "batch_dims", "preload_batch")} \
        == {k: theirs[k] for k in ("input_dims", "input_overlap", "batch_dims", "preload_batch")}


def test_duplicate_dims_warn_once_like_xbatcher(air_zarr: xr.Dataset) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = xb.BatchGenerator(air_zarr, {"lon": 7}, batch_dims={"lon": 14})
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "will not impact batch generation: {'lon': 14}" in messages[0]
    assert len(gen) == 3


def test_numpy_integer_keys_and_negative_indices(air_zarr: xr.Dataset) -> None:
    gen = xb.BatchGenerator(air_zarr, {"lat": 5, "lon": 7})
    xr.testing.assert_identical(gen[np.int64(2)], gen[2])
    xr.testing.assert_identical(gen[-1], gen[len(gen) - 1])


def test_errors_have_xbatcher_types_and_clear_messages(air_zarr: xr.Dataset) -> None:
    with pytest.raises(NotFoundError, match="dimension 'level' is not in the data"):
        xb.BatchGenerator(air_zarr, {"level": 2})
    with pytest.raises(KeyError):  # xbatcher raises a KeyError here too
        xb.BatchSchema(air_zarr, {"level": 2})
    with pytest.raises(ConfigError, match="sample length of 30 is greater than the dimension "
                                          "length of 21 for lon"):
        xb.BatchGenerator(air_zarr, {"lon": 30})
    with pytest.raises(ConfigError, match="input sample length is 5 and the overlap is 5"):
        xb.BatchGenerator(air_zarr, {"lat": 5}, input_overlap={"lat": 5})
    gen = xb.BatchGenerator(air_zarr, {"lat": 5})
    with pytest.raises(NotImplementedError, match="requires a single integer key"):
        gen[1:2]  # type: ignore[index]
    with pytest.raises(IndexError, match="list index out of range"):
        gen[-len(gen) - 1]
    with pytest.raises(NotFoundError, match="batch 99 does not exist"):
        gen._batch_selectors.selectors[99]
    assert 99 not in gen._batch_selectors.selectors


def test_cache_dict_and_fsspec_mappers(air_zarr: xr.Dataset, tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    data = air_zarr.isel(time=slice(0, 20))

    def preprocess(batch: xr.Dataset) -> xr.Dataset:
        return batch.assign_attrs(seen="yes")

    plain = xb.BatchGenerator(data, {"lat": 5, "lon": 7}, batch_dims={"time": 10})
    for cache in ({}, fsspec.get_mapper(str(tmp_path / "cache")),
                  fsspec.get_mapper("memory://arcoforge-compat-cache")):
        gen = xb.BatchGenerator(data, {"lat": 5, "lon": 7}, batch_dims={"time": 10},
                                cache=cache, cache_preprocess=preprocess)
        first = gen[3]
        assert "3/.zgroup" in cache  # xbatcher's (Zarr v2) cache layout
        again = gen[3]
        assert again.attrs["seen"] == "yes"
        xr.testing.assert_identical(first, again)
        xr.testing.assert_identical(again, plain[3].assign_attrs(seen="yes"))
    assert (tmp_path / "cache" / "3" / ".zgroup").exists()


def test_reads_a_cache_written_by_xbatcher(air_zarr: xr.Dataset) -> None:
    data = air_zarr.isel(time=slice(0, 20)).compute()
    cache: dict = {}
    ref = real.BatchGenerator(data, {"lat": 5, "lon": 7}, cache=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = ref[0]  # xbatcher under zarr-python 3 writes Zarr v3 ("0/zarr.json")
    assert "0/zarr.json" in cache
    # the source is zeroed (and loses its attributes): only the cache can give the batch back
    gen = xb.BatchGenerator(data * 0, {"lat": 5, "lon": 7}, cache=cache)
    xr.testing.assert_identical(gen[0], written)


def test_torch_map_dataset_matches_xbatcher(air_zarr: xr.Dataset) -> None:
    torch = pytest.importorskip("torch")
    from xbatcher.loaders.torch import MapDataset as RealMap

    from arcoforge.compat.xbatcher.loaders.torch import IterableDataset, MapDataset

    for x in (air_zarr["air"], air_zarr[["air"]]):
        y = x - 273.15
        args = ({"lat": 5, "lon": 7}, {"batch_dims": {"time": 31}})
        mine = MapDataset(xb.BatchGenerator(x, args[0], **args[1]),
                          xb.BatchGenerator(y, args[0], **args[1]))
        ref = RealMap(real.BatchGenerator(x, args[0], **args[1]),
                      real.BatchGenerator(y, args[0], **args[1]))
        assert len(mine) == len(ref) > 0
        for i in range(len(ref)):
            (gx, gy), (ex, ey) = mine[i], ref[i]
            assert gx.dtype == ex.dtype and gy.dtype == ey.dtype
            torch.testing.assert_close(gx, ex, rtol=0, atol=0)
            torch.testing.assert_close(gy, ey, rtol=0, atol=0)
        clone = pickle.loads(pickle.dumps(mine))  # travels to DataLoader workers
        torch.testing.assert_close(clone[1][0], ref[1][0], rtol=0, atol=0)
        loader = torch.utils.data.DataLoader(mine, batch_size=None)
        assert sum(1 for _ in loader) == len(ref)
        pairs = list(IterableDataset(mine.X_generator, mine.y_generator))
        assert len(pairs) == len(ref)
        torch.testing.assert_close(pairs[-1][0], ref[len(ref) - 1][0], rtol=0, atol=0)


def test_torch_transform_must_return_a_tensor(air_zarr: xr.Dataset) -> None:
    pytest.importorskip("torch")
    from arcoforge.compat.xbatcher.loaders.torch import MapDataset

    ds = MapDataset(xb.BatchGenerator(air_zarr["air"], {"time": 10}),
                    transform=lambda b: b.values)
    with pytest.raises(ConfigError, match="returned a ndarray, not a torch.Tensor"):
        ds[0]


def test_named_tensor_error_names_the_missing_feature(air_zarr: xr.Dataset) -> None:
    torch = pytest.importorskip("torch")
    if hasattr(torch.Tensor, "names"):
        pytest.skip("this PyTorch still has named tensors")
    with pytest.raises(MissingDependencyError, match="needs PyTorch named tensors"):
        air_zarr["air"].torch.to_named_tensor()


def test_keras_dataset_trains_a_model(air_zarr: xr.Dataset) -> None:
    tf = pytest.importorskip("tensorflow")
    from arcoforge.compat.xbatcher.loaders.keras import CustomTFDataset

    x = air_zarr["air"].compute()
    patches = ({"lat": 11, "lon": 21}, {"batch_dims": {"time": 31}})
    gen_x = xb.BatchGenerator(x, patches[0], **patches[1])
    gen_y = xb.BatchGenerator(x.mean(["lat", "lon"]), {"time": 31})
    data = CustomTFDataset(gen_x, gen_y)
    bx, by = data[1]
    np.testing.assert_array_equal(bx.numpy(),
                                  real.BatchGenerator(x, patches[0], **patches[1])[1].values)
    model = tf.keras.Sequential([tf.keras.Input((11, 21)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(data, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert by.shape == (31,)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "default", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_accessor_registration_with_real_xbatcher() -> None:
    prelude = ("import warnings, numpy as np, xarray as xr\n"
               "ds = xr.Dataset({'a': (('t', 'x'), np.zeros((4, 6)))})\n")
    # after xbatcher: the compat accessors take over without a warning
    done = _run(prelude + "warnings.simplefilter('error')\nimport xbatcher\n"
                "import arcoforge.compat.xbatcher as xb\n"
                "assert type(ds.batch.generator({'x': 2})) is xb.BatchGenerator\n"
                "assert type(ds.a.batch.generator({'x': 2})) is xb.BatchGenerator\n"
                "assert ds.a.torch.to_tensor().shape == (4, 6)\nprint('ok')")
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    # a foreign accessor under one of the names is replaced with xarray's warning
    done = _run(prelude + "@xr.register_dataset_accessor('tf')\nclass Mine:\n"
                "    def __init__(self, obj): pass\n"
                "with warnings.catch_warnings(record=True) as w:\n"
                "    warnings.simplefilter('always')\n"
                "    import arcoforge.compat.xbatcher\n"
                "print(sorted({str(x.category.__name__) for x in w}))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "AccessorRegistrationWarning" in done.stdout


@pytest.mark.parametrize(("blocked", "module", "message"), [
    ("torch", "loaders.torch", "install PyTorch to proceed"),
    ("tensorflow", "loaders.keras", "install TensorFlow to proceed"),
])
def test_loader_without_its_framework(blocked: str, module: str, message: str) -> None:
    done = _run(f"import sys\nsys.modules[{blocked!r}] = None\n"
                "from arcoforge.errors import MissingDependencyError\n"
                "import arcoforge.compat.xbatcher\n"
                "try:\n"
                f"    import arcoforge.compat.xbatcher.{module}\n"
                "except MissingDependencyError as err:\n"
                "    print('MissingDependencyError:', err)\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MissingDependencyError:" in done.stdout and message in done.stdout


def test_import_stays_light() -> None:
    done = _run("import sys\nimport arcoforge.compat.xbatcher\n"
                "print(sorted(m for m in ('torch', 'tensorflow', 'arcoforge.forge') "
                "if m in sys.modules))")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_show_versions_names_the_engine() -> None:
    import io

    out = io.StringIO()
    xb.show_versions(file=out)
    text = out.getvalue()
    assert "xbatcher information" in text and "arcoforge.compat.xbatcher" in text
    assert f"xarray: {xr.__version__}" in text
    assert xb.__version__ == "0.4.0"
