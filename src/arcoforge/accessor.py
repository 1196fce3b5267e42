"""The ``arcoforge`` xarray accessor: one namespace on Dataset and DataArray.

``ds.arcoforge.batches(...)``, ``.stream(...)``, ``.torch_dataset(...)``,
``.torch_loader(...)``, ``.tf_dataset(...)``, ``.statistics(...)``, ``.to_table(...)``
(``normalize=True``, ``balance="pad"``/``"drop"`` and the other ``SampleStream`` options pass
through the feed methods). Methods only delegate to the
modules that do the work; other parts of arcoforge add their own methods here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import xarray as xr

__all__ = ["ArcoforgeAccessor"]


@xr.register_dataset_accessor("arcoforge")
@xr.register_dataarray_accessor("arcoforge")
class ArcoforgeAccessor:
    """Entry points of arcoforge on an xarray object."""

    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    # -- feed ----------------------------------------------------------------------------------
    def batches(self, input_dims: Mapping[Hashable, int],
                input_overlap: Mapping[Hashable, int] | None = None,
                batch_dims: Mapping[Hashable, int] | None = None,
                concat_input_dims: bool = False, preload_batch: bool = True,
                **kwargs: Any) -> Any:
        """An xbatcher-compatible :class:`arcoforge.batch.BatchGenerator`."""
        from .batch import BatchGenerator

        return BatchGenerator(self._obj, input_dims, input_overlap, batch_dims,
                              concat_input_dims, preload_batch, **kwargs)

    def stream(self, input_dims: Mapping[Hashable, int],
               input_overlap: Mapping[Hashable, int] | None = None, **kwargs: Any) -> Any:
        """A fast :class:`arcoforge.batch.SampleStream` of numpy batches."""
        from .batch import SampleStream

        return SampleStream(self._obj, input_dims, input_overlap, **kwargs)

    def torch_dataset(self, input_dims: Mapping[Hashable, int],
                      input_overlap: Mapping[Hashable, int] | None = None, *,
                      inputs: Sequence[Hashable] | None = None,
                      targets: Sequence[Hashable] | None = None, iterable: bool = True,
                      **kwargs: Any) -> Any:
        """A PyTorch dataset: iterable (batches) or map-style (single samples)."""
        from .batch.torch_loader import TorchIterableDataset, TorchMapDataset

        stream = self.stream(input_dims, input_overlap, **kwargs)
        cls = TorchIterableDataset if iterable else TorchMapDataset
        return cls(stream, inputs, targets)

    def torch_loader(self, input_dims: Mapping[Hashable, int],
                     input_overlap: Mapping[Hashable, int] | None = None, *,
                     inputs: Sequence[Hashable] | None = None,
                     targets: Sequence[Hashable] | None = None, num_workers: int = 0,
                     pin_memory: bool = False, **kwargs: Any) -> Any:
        """A ``DataLoader`` over an iterable dataset (fork-free workers, checkpointable)."""
        if num_workers > 0:
            from .batch import _forkserver

            _forkserver.start()  # the workers' server imports while this process imports torch
        from .batch.torch_loader import make_dataloader

        ds = self.torch_dataset(input_dims, input_overlap, inputs=inputs, targets=targets,
                                **kwargs)
        return make_dataloader(ds, num_workers=num_workers, pin_memory=pin_memory)

    def tf_dataset(self, input_dims: Mapping[Hashable, int],
                   input_overlap: Mapping[Hashable, int] | None = None, *,
                   inputs: Sequence[Hashable] | None = None,
                   targets: Sequence[Hashable] | None = None, **kwargs: Any) -> Any:
        """A ``tf.data.Dataset`` of batches."""
        from .batch.tf_loader import to_tf_dataset

        return to_tf_dataset(self.stream(input_dims, input_overlap, **kwargs), inputs, targets)

    def statistics(self, variables: Sequence[Hashable] | None = None, *,
                   per: Sequence[Hashable] | None = None, recompute: bool = False) -> Any:
        """Normalization statistics (:mod:`arcoforge.batch.statistics`): those stored with the
        dataset when they cover ``variables``, else computed in one streaming pass."""
        from .batch.statistics import LEVEL_DIMS, compute_statistics, load_statistics

        obj = self._obj
        if not recompute and per is None:
            names = list(variables) if variables is not None else (
                list(obj.data_vars) if isinstance(obj, xr.Dataset) else [obj.name])
            stored = load_statistics(obj, names)  # aligned for these variables only
            if stored is not None and all(v in stored for v in names):
                return stored
        return compute_statistics(obj, variables, per=LEVEL_DIMS if per is None else per)

    # -- regrid --------------------------------------------------------------------------------
    def resample(self, area: Any, method: str = "nearest", **kwargs: Any) -> Any:
        """The swath on a grid with pyresample (:func:`arcoforge.regrid.resample`): ``area`` a
        spec ``{"crs", "extent", "resolution"}``, an ``AreaDefinition`` or a gridded dataset;
        ``method`` ``"nearest"``, ``"bilinear"``, ``"ewa"``, ``"bucket_avg"`` or
        ``"bucket_count"``."""
        from .regrid.accessor import resample

        return resample(self._obj, area, method, **kwargs)

    def to_table(self, sample_dims: Sequence[Hashable], **kwargs: Any) -> xr.DataArray:
        """A ``(sample, feature)`` table for scikit-learn / dask-ml."""
        from .batch import to_table

        return to_table(self._obj, sample_dims, **kwargs)
