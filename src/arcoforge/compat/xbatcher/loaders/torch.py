"""xbatcher's PyTorch datasets: ``MapDataset``, ``IterableDataset`` and ``to_tensor``.

Both datasets pair an ``X`` generator with an optional ``y`` generator and hand out tensors,
as xbatcher's do. With arcoforge's generators and the default ``to_tensor`` transform, a batch
of one variable is read straight into numpy (no xarray batch object is built); everything
else takes xbatcher's path (labeled batch, ``dask.compute``, ``transform``).
Importing this module needs PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError, MissingDependencyError

from ..generators import BatchGenerator

try:
    import torch
except ImportError as exc:
    raise MissingDependencyError(
        "The xbatcher PyTorch Dataset API (arcoforge.compat.xbatcher.loaders.torch) depends "
        "on PyTorch. Please install PyTorch to proceed: pip install 'arcoforge[torch]'"
    ) from exc

dask: ModuleType | None
try:
    import dask
except ImportError:
    dask = None

__all__ = ["IterableDataset", "MapDataset", "to_tensor"]

XrObj = xr.DataArray | xr.Dataset


def to_tensor(xr_obj: XrObj) -> torch.Tensor:
    """The values of a DataArray, or of a Dataset's variables as one array, as a tensor."""
    if isinstance(xr_obj, xr.Dataset):
        xr_obj = xr_obj.to_array().squeeze(dim="variable")
    return torch.tensor(xr_obj.data if isinstance(xr_obj, xr.DataArray) else xr_obj)


def _direct(generator: Any, idx: int | np.integer) -> np.ndarray | None:
    """The batch's values read without an xarray batch, when that gives the same result."""
    if isinstance(generator, BatchGenerator):
        return generator._single_array(idx)
    return None


def _checked(tensor: Any, transform: Callable[..., Any], role: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(
            f"the {role} {transform!r} returned a {type(tensor).__name__}, not a torch.Tensor"
        )
    return tensor


class MapDataset(torch.utils.data.Dataset):
    """Map-style dataset: item ``i`` is batch ``i`` of ``X_generator`` (and ``y_generator``).

    Parameters
    ----------
    X_generator, y_generator:
        Batch generators of the inputs and (optionally) the targets.
    transform, target_transform:
        Turn an xarray batch into a ``torch.Tensor`` (default :func:`to_tensor`).
    """

    def __init__(
        self,
        X_generator: Any,
        y_generator: Any | None = None,
        transform: Callable[[XrObj], torch.Tensor] = to_tensor,
        target_transform: Callable[[XrObj], torch.Tensor] = to_tensor,
    ) -> None:
        self.X_generator = X_generator
        self.y_generator = y_generator
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.X_generator)

    def _one(self, generator: Any, idx: Any, transform: Callable[..., Any],
             role: str) -> torch.Tensor:
        if transform is to_tensor and isinstance(idx, int | np.integer):
            values = _direct(generator, idx)
            if values is not None:
                return torch.tensor(values)
        batch = generator[idx]
        if dask is not None:
            (batch,) = dask.compute(batch)
        return _checked(transform(batch), transform, role)

    def __getitem__(self, idx: Any) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if torch.is_tensor(idx):
            idx = idx.tolist()
            if isinstance(idx, list) and len(idx) == 1:
                idx = idx[0]  # a longer list is refused by the generator (NotImplementedError)
        x = self._one(self.X_generator, idx, self.transform, "transform")
        if self.y_generator is None:
            return x
        return x, self._one(self.y_generator, idx, self.target_transform, "target_transform")


class IterableDataset(torch.utils.data.IterableDataset):
    """Iterable dataset: ``(X, y)`` tensor pairs of the two generators' batches, in order.

    As in xbatcher, every DataLoader worker iterates over all batches.
    """

    def __init__(self, X_generator: Any, y_generator: Any) -> None:
        self.X_generator = X_generator
        self.y_generator = y_generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.X_generator, self.y_generator
        if isinstance(xs, BatchGenerator) and isinstance(ys, BatchGenerator):
            for i in range(min(len(xs), len(ys))):
                yield self._tensor(xs, i), self._tensor(ys, i)
            return
        for xb, yb in zip(xs, ys):
            yield to_tensor(xb), to_tensor(yb)

    @staticmethod
    def _tensor(generator: BatchGenerator, i: int) -> torch.Tensor:
        values = generator._single_array(i)
        return torch.tensor(values) if values is not None else to_tensor(generator[i])
