"""BatchGenerator against xbatcher 0.4 (the oracle) and its extensions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import BatchGenerator

xbatcher = pytest.importorskip("xbatcher")

CASES = [
    {"input_dims": {"y": 3, "x": 2}},
    {"input_dims": {"x": 2, "y": 4}, "input_overlap": {"y": 1}},
    {"input_dims": {"y": 8, "x": 6}},
    {"input_dims": {"time": 5}, "input_overlap": {"time": 2}},
    {"input_dims": {"y": 3, "x": 2}, "batch_dims": {"time": 5}},
    {"input_dims": {"y": 3, "x": 2}, "concat_input_dims": True},
    {"input_dims": {"y": 4, "x": 3}, "input_overlap": {"x": 1}, "batch_dims": {"time": 4},
     "concat_input_dims": True},
    {"input_dims": {"y": 4}, "batch_dims": {"time": 4, "y": 8}, "concat_input_dims": True},
    {"input_dims": {"y": 3, "x": 2}, "batch_dims": {"time": 6, "y": 6},
     "concat_input_dims": True},
]


def _variants(ds: xr.Dataset) -> dict[str, xr.Dataset | xr.DataArray]:
    four = ds.assign(d=(("lev", "time", "y", "x"),
                        np.arange(2 * 12 * 8 * 6.0).reshape(2, 12, 8, 6)))
    return {
        "dataset": ds,
        "dataarray": ds["a"],
        "dask": ds.chunk({"time": 5, "y": 4}),
        "four_d": four,
    }


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("variant", ["dataset", "dataarray", "dask", "four_d"])
def test_identical_to_xbatcher(synthetic: xr.Dataset, case: int, variant: str) -> None:
    kw = CASES[case]
    data = _variants(synthetic)[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = xbatcher.BatchGenerator(data, **kw)
        mine = BatchGenerator(data, **kw)
        assert len(mine) == len(ref)
        for i in range(len(ref)):
            if isinstance(data, xr.DataArray) and kw.get("concat_input_dims"):
                # xbatcher outer-joins DataArray patches on their renamed index (NaN padding);
                # we give the DataArray the Dataset behaviour (documented deviation)
                expected = xbatcher.BatchGenerator(data.to_dataset(), **kw)[i][data.name]
            else:
                expected = ref[i]
            got = mine[i]
            xr.testing.assert_identical(got, expected)
            arrays = mine.numpy_batch(i)
            items = expected.data_vars.items() if isinstance(expected, xr.Dataset) else \
                [(expected.name, expected)]
            for name, var in items:
                np.testing.assert_array_equal(arrays[str(name)], var.values)
        assert [b.sizes for b in mine] == [b.sizes for b in ref] or \
            isinstance(data, xr.DataArray)


def test_real_data_matches_xbatcher(oisst: xr.Dataset) -> None:
    kw = {"input_dims": {"lat": 4, "lon": 2}, "input_overlap": {"lat": 2},
          "batch_dims": {"time": 100}}
    ref = xbatcher.BatchGenerator(oisst, **kw)
    mine = BatchGenerator(oisst, **kw)
    assert len(mine) == len(ref)
    for i in (0, 5, len(ref) - 1):
        xr.testing.assert_identical(mine[i], ref[i])


def test_indexing_extensions(synthetic: xr.Dataset) -> None:
    gen = BatchGenerator(synthetic, {"y": 4, "x": 3}, batch_dims={"time": 5})
    ref = xbatcher.BatchGenerator(synthetic, {"y": 4, "x": 3}, batch_dims={"time": 5})
    xr.testing.assert_identical(gen[np.int64(1)], ref[1])
    xr.testing.assert_identical(gen[-1], ref[-1])
    with pytest.raises(IndexError):
        gen[len(gen)]
    with pytest.raises(NotImplementedError):
        gen["0"]  # type: ignore[index]


def test_partial_last_batch(synthetic: xr.Dataset) -> None:
    full = BatchGenerator(synthetic, {"y": 8, "x": 6}, batch_dims={"time": 5})
    part = BatchGenerator(synthetic, {"y": 8, "x": 6}, batch_dims={"time": 5},
                          partial_last_batch=True)
    assert len(full) == 2 and len(part) == 3
    assert part[-1].sizes["time"] == 2
    xr.testing.assert_identical(part[-1], synthetic.isel(time=slice(10, 12)))


def test_dim_order(synthetic: xr.Dataset) -> None:
    gen = BatchGenerator(synthetic, {"y": 4, "x": 3}, dim_order=["x", "y", "time"])
    assert gen[0]["a"].dims == ("x", "y", "time")
    assert gen[0]["c"].dims == ("x", "y")


def test_overlap_must_be_smaller(synthetic: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="overlap"):
        BatchGenerator(synthetic, {"y": 3}, {"y": 3})
    with pytest.raises(ValueError, match="dimension length"):
        BatchGenerator(synthetic, {"y": 30})
