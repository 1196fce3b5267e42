"""Table interop and the xarray accessor."""

from __future__ import annotations

import numpy as np
import xarray as xr

import arcoforge.accessor  # noqa: F401  (registers ds.arcoforge)
from arcoforge.batch import BatchGenerator, SampleStream, from_table, iter_table, to_table


def test_table_roundtrip(synthetic: xr.Dataset) -> None:
    ds = synthetic[["a", "b"]]
    table = to_table(ds, sample_dims=["time", "y"])
    assert table.dims == ("sample", "feature") and table.shape == (12 * 8, 2 * 6)
    back = from_table(table.values, table)
    back = back.drop_vars("aux").transpose(*ds.a.dims)
    xr.testing.assert_allclose(back, ds.drop_vars("aux"), check_dim_order=False)
    blocks = list(iter_table(table, 40))
    assert [b.shape[0] for b in blocks] == [40, 40, 16]


def test_table_partial_fit_style(synthetic: xr.Dataset) -> None:
    table = to_table(synthetic.chunk({"time": 4})[["a"]], sample_dims=["time"])
    means = np.mean([blk.mean(axis=0) for blk in iter_table(table, 4)], axis=0)
    np.testing.assert_allclose(means, synthetic.a.values.reshape(12, -1).mean(axis=0),
                               rtol=1e-6)


def test_accessor(synthetic: xr.Dataset) -> None:
    gen = synthetic.arcoforge.batches(input_dims={"y": 4, "x": 3})
    assert isinstance(gen, BatchGenerator) and len(gen) == 4
    assert isinstance(synthetic.a.arcoforge.batches({"y": 4}), BatchGenerator)
    stream = synthetic.arcoforge.stream({"y": 4, "x": 3}, batch_size=5)
    assert isinstance(stream, SampleStream)
    assert synthetic[["a"]].arcoforge.to_table(["time"]).dims == ("sample", "feature")
