"""``tf.data`` adapter: a :class:`~arcoforge.batch.SampleStream` as a ``tf.data.Dataset``.

The dataset is built with ``tf.data.Dataset.from_generator`` and an explicit
``output_signature`` (``TensorSpec(shape=(None, *window), dtype)`` per element), so Keras and
``tf.function`` see static shapes. Each new iteration of the dataset is a new epoch (a new
shuffle order). Import requires TensorFlow (``arcoforge[tensorflow]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from ._optional import require
from .samplers import Shard
from .stream import SampleStream

__all__ = ["to_tf_dataset"]


def to_tf_dataset(
    stream: SampleStream,
    inputs: Sequence[Hashable] | None = None,
    targets: Sequence[Hashable] | None = None,
    *,
    shard: Shard | None = None,
    first_epoch: int = 0,
) -> Any:
    """Batches of ``stream`` as a ``tf.data.Dataset``.

    Without ``inputs``/``targets`` elements are dicts ``{var: (batch, *window)}``. With both,
    elements are ``(input, target)`` tuples, each variable group stacked on a trailing channel
    axis (``(batch, *window, channels)``, Keras' channels-last layout).
    """
    tf = require("tensorflow")
    shapes = stream.sample_shapes()
    dtypes = stream.sample_dtypes()
    epochs = itertools.count(first_epoch)

    def spec(names: Sequence[Hashable]) -> Any:
        first = str(names[0])
        dts = {np.dtype(dtypes[str(n)]) for n in names}
        dt = np.result_type(*dts)
        return tf.TensorSpec(shape=(None, *shapes[first], len(names)), dtype=tf.as_dtype(dt))

    if inputs is not None and targets is not None:
        signature: Any = (spec(inputs), spec(targets))

        def convert(b: dict[str, np.ndarray]) -> Any:
            return (np.stack([b[str(n)] for n in inputs], axis=-1),
                    np.stack([b[str(n)] for n in targets], axis=-1))
    else:
        signature = {k: tf.TensorSpec(shape=(None, *s), dtype=tf.as_dtype(dtypes[k]))
                     for k, s in shapes.items()}

        def convert(b: dict[str, np.ndarray]) -> Any:
            return {k: b[k] for k in shapes}

    def generate() -> Iterator[Any]:
        epoch = next(epochs)
        for batch in stream.batches(epoch=epoch, shard=shard or stream.shard or Shard()):
            yield convert(batch)

    return tf.data.Dataset.from_generator(generate, output_signature=signature)
