"""xbatcher's Keras dataset: ``CustomTFDataset``, a ``keras.utils.Sequence`` of ``(X, y)``.

Importing this module needs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xarray as xr

from arcoforge.errors import MissingDependencyError

from ..generators import BatchGenerator

try:
    import tensorflow as tf
except ImportError as exc:
    raise MissingDependencyError(
        "The xbatcher TensorFlow Dataset API (arcoforge.compat.xbatcher.loaders.keras) depends "
        "on TensorFlow. Please install TensorFlow to proceed: pip install "
        "'arcoforge[tensorflow]'"
    ) from exc

__all__ = ["CustomTFDataset"]


def _values(generator: Any, idx: int) -> Any:
    """``generator[idx].data``, read straight into numpy for arcoforge's DataArray batches."""
    if isinstance(generator, BatchGenerator) and isinstance(generator.ds, xr.DataArray):
        values = generator._single_array(idx)
        if values is not None:
            return values
    return generator[idx].data


class CustomTFDataset(tf.keras.utils.Sequence):
    """Item ``i`` is ``(X_generator[i], y_generator[i])`` as tensors, optionally transformed.

    Parameters
    ----------
    X_generator, y_generator:
        Batch generators (of DataArrays) for inputs and targets.
    transform, target_transform:
        Applied to the input / target tensor.
    **kwargs:
        Keras ``PyDataset`` options (``workers``, ``use_multiprocessing``, ``max_queue_size``).
    """

    def __init__(
        self,
        X_generator: Any,
        y_generator: Any,
        *,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.X_generator = X_generator
        self.y_generator = y_generator
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.X_generator)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x = tf.convert_to_tensor(_values(self.X_generator, idx))
        y = tf.convert_to_tensor(_values(self.y_generator, idx))
        if self.transform:
            x = self.transform(x)
        if self.target_transform:
            y = self.target_transform(y)
        return x, y
