"""Reassembly round trips: an identity model gives back the input grid."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import BatchGenerator, SampleStream, reassemble


@pytest.mark.parametrize("kw", [
    {"input_dims": {"y": 4, "x": 3}},
    {"input_dims": {"y": 4, "x": 3}, "input_overlap": {"y": 2}},
    {"input_dims": {"y": 4, "x": 2}, "batch_dims": {"time": 4}, "concat_input_dims": True},
    {"input_dims": {"y": 4, "x": 2}, "input_overlap": {"y": 3}, "concat_input_dims": True},
])
def test_identity_roundtrip_labeled_and_arrays(synthetic: xr.Dataset, kw: dict) -> None:
    gen = BatchGenerator(synthetic, **kw)
    labeled = [b["b"] for b in gen]
    out = reassemble(labeled, gen, variable="b")
    xr.testing.assert_allclose(out, synthetic["b"])
    assert out.dims == synthetic["b"].dims and out.name == "b"
    arrays = [gen.numpy_batch(i)["b"] for i in range(len(gen))]
    xr.testing.assert_allclose(reassemble(arrays, gen, variable="b"), synthetic["b"])


def test_overlaps_are_averaged(synthetic: xr.Dataset) -> None:
    gen = BatchGenerator(synthetic["c"], {"y": 4}, {"y": 2})
    ones = [np.full(b.shape, float(i)) for i, b in enumerate(gen)]  # batch i predicts i
    out = reassemble(ones, gen)
    np.testing.assert_allclose(out.isel(y=slice(0, 2)).values, 0.0)
    np.testing.assert_allclose(out.isel(y=slice(2, 4)).values, 0.5)  # mean of 0 and 1


def test_uncovered_cells_are_nan(synthetic: xr.Dataset) -> None:
    gen = BatchGenerator(synthetic["c"], {"y": 3})
    out = reassemble([b.values for b in gen], gen)
    assert np.isnan(out.isel(y=slice(6, 8))).all()
    np.testing.assert_array_equal(out.isel(y=slice(0, 6)), synthetic["c"].isel(y=slice(0, 6)))


def test_stream_roundtrip_real_data(oisst: xr.Dataset) -> None:
    stream = SampleStream(oisst, {"lat": 4, "lon": 2}, {"lat": 2}, batch_size=100,
                          sampling="chunk_shuffle", with_ids=True, dim_order=["lon", "lat"])
    preds, ids = [], []
    for b in stream:
        preds.append(b["sst"] * 1.0)  # identity "model"
        ids.append(b["sample_id"])
    out = reassemble(preds, stream, sample_ids=ids, name="sst")
    xr.testing.assert_allclose(out, oisst.sst.transpose(*out.dims), check_dim_order=False)
    assert out.lat.attrs == oisst.lat.attrs


def test_shape_mismatch_is_explained(synthetic: xr.Dataset) -> None:
    gen = BatchGenerator(synthetic["c"], {"y": 4})
    with pytest.raises(ValueError, match="shape"):
        reassemble([np.zeros((3, 3))] * len(gen), gen)
