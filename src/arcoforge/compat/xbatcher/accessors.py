"""xbatcher's ``batch``, ``torch`` and ``tf`` accessors, registered on import.

``ds.batch.generator(...)`` gives a compat :class:`~.generators.BatchGenerator`;
``ds.torch.to_tensor()`` / ``ds.torch.to_named_tensor()`` and ``ds.tf.to_tensor()`` convert the
object's values (a Dataset is first turned into one array, which needs a single variable).

The real xbatcher package registers accessors under the same names. Importing this module
replaces those silently (the API is the same, so nothing changes for the caller but the engine);
an accessor of any other origin under one of these names is replaced with xarray's usual
``AccessorRegistrationWarning``. Importing xbatcher itself afterwards puts its own accessors
back, with xarray's warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import xarray as xr

from arcoforge.batch._optional import require
from arcoforge.errors import MissingDependencyError

from .generators import BatchGenerator

__all__ = ["BatchAccessor", "TFAccessor", "TorchAccessor"]


def _as_xarray_dataarray(xr_obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """A Dataset's variables as one DataArray (the ``variable`` dim squeezed away)."""
    if isinstance(xr_obj, xr.Dataset):
        return xr_obj.to_array().squeeze(dim="variable")
    return xr_obj


class BatchAccessor:
    """``obj.batch``: a :class:`BatchGenerator` over the object."""

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def generator(self, *args: Any, **kwargs: Any) -> BatchGenerator:
        """``BatchGenerator(obj, *args, **kwargs)``."""
        return BatchGenerator(self._obj, *args, **kwargs)


class TFAccessor:
    """``obj.tf``: TensorFlow conversion."""

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def to_tensor(self) -> Any:
        """The values as a ``tf.Tensor``."""
        tf = require("tensorflow")
        return tf.convert_to_tensor(_as_xarray_dataarray(self._obj).data)


class TorchAccessor:
    """``obj.torch``: PyTorch conversion."""

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def to_tensor(self) -> Any:
        """The values as a ``torch.Tensor`` (a copy)."""
        torch = require("torch")
        return torch.tensor(data=_as_xarray_dataarray(self._obj).data)

    def to_named_tensor(self) -> Any:
        """The values as a ``torch.Tensor`` whose dimension names are the object's dims.

        Raises :class:`~arcoforge.errors.MissingDependencyError` when the installed PyTorch
        has no named tensors (they were removed from PyTorch).
        """
        torch = require("torch")
        da = _as_xarray_dataarray(self._obj)
        if not hasattr(torch.Tensor, "names"):
            raise MissingDependencyError(
                f"to_named_tensor() needs PyTorch named tensors, which the installed PyTorch "
                f"{torch.__version__} no longer has; use to_tensor() (dims: {tuple(da.dims)}) "
                "or a PyTorch version that still provides Tensor.names"
            )
        return torch.tensor(data=da.data, names=tuple(da.sizes))


def _ours_or_xbatchers(existing: Any) -> bool:
    """True if ``existing`` is an accessor this module or the xbatcher package registered."""
    cls = getattr(existing, "_accessor", None)
    module = getattr(cls, "__module__", "") or ""
    return module == __name__ or module == "xbatcher" or module.startswith("xbatcher.")


def _register(name: str, accessor: type) -> None:
    for target, register in ((xr.Dataset, xr.register_dataset_accessor),
                             (xr.DataArray, xr.register_dataarray_accessor)):
        existing = target.__dict__.get(name)
        with warnings.catch_warnings():
            if existing is not None and _ours_or_xbatchers(existing):
                warnings.simplefilter("ignore", xr.core.extensions.AccessorRegistrationWarning)
            register(name)(accessor)


_register("batch", BatchAccessor)
_register("tf", TFAccessor)
_register("torch", TorchAccessor)
