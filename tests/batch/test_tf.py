"""tf.data adapter with real TensorFlow: signature, values, epochs, a tiny Keras CNN."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from arcoforge.batch import SampleStream


@pytest.fixture(scope="module")
def tf():
    """TensorFlow, imported only when these tests run (see conftest: they run last)."""
    return pytest.importorskip("tensorflow")


def to_tf_dataset(*args, **kwargs):
    from arcoforge.batch.tf_loader import to_tf_dataset as convert

    return convert(*args, **kwargs)


def test_signature_and_values(tf, air: xr.Dataset) -> None:
    ds = air.isel(time=slice(0, 16))
    stream = SampleStream(ds, {"lat": 5, "lon": 7}, batch_size=10, sampling="chunk_shuffle")
    tfds = to_tf_dataset(stream)
    spec = tfds.element_spec
    assert spec["air"].shape.as_list() == [None, 5, 7]
    assert spec["air"].dtype == tf.float64
    total = sum(int(b["air"].shape[0]) for b in tfds)
    assert total == stream.grid.n_samples
    first = [b["air"].numpy() for b in tfds.take(1)][0]
    second = [b["air"].numpy() for b in tfds.take(1)][0]
    assert not np.array_equal(first, second)  # every pass is a new epoch (new order)


def test_keras_cnn_trains_from_zarr(tf, air_zarr) -> None:
    tf.keras.utils.set_random_seed(0)
    ds = xr.open_zarr(air_zarr, consolidated=False)
    stream = SampleStream(ds, {"lat": 8, "lon": 8}, batch_size=32, sampling="chunk_shuffle",
                          preprocess=lambda name, a: (a - 270.0) / 20.0)
    tfds = to_tf_dataset(stream, inputs=["air"], targets=["air_next"]).prefetch(2)
    x_spec, y_spec = tfds.element_spec
    assert x_spec.shape.as_list() == [None, 8, 8, 1] and y_spec.dtype == tf.float32
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(1, 3, padding="same"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="mse")
    hist = model.fit(tfds.take(12), epochs=2, verbose=0)
    losses = hist.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
