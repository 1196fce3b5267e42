"""Dataset ⇄ (sample, feature) table, for scikit-learn and dask-ml ``partial_fit``.

``to_table`` stacks every variable into one 2-D ``DataArray`` (``sample`` × ``feature``), with
dims not in ``sample_dims`` becoming features (a level per variable); ``from_table`` puts a
table of the same layout (e.g. model output) back into a Dataset on the original grid.
``iter_table`` yields consecutive ``(n, n_features)`` numpy blocks for incremental learners.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import xarray as xr

from arcoforge.errors import ConfigError
from arcoforge.provenance import SAMPLE_DIMS

__all__ = ["from_table", "iter_table", "to_table"]


def to_table(
    ds: xr.Dataset | xr.DataArray,
    sample_dims: Sequence[Hashable],
    variables: Sequence[Hashable] | None = None,
    dropna: bool = False,
) -> xr.DataArray:
    """Stack to a 2-D ``(sample, feature)`` DataArray (dask stays lazy)."""
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name if ds.name is not None else "__data__")
    if variables is not None:
        ds = ds[list(variables)]
    sample_dims = list(sample_dims)
    table = ds.to_stacked_array("feature", sample_dims=sample_dims, variable_dim="variable")
    if len(sample_dims) == 1:
        table = table.rename({sample_dims[0]: "sample"}) if sample_dims[0] != "sample" else table
    else:
        table = table.stack(sample=sample_dims)
    table = table.transpose("sample", "feature")
    if dropna:
        table = table.dropna("sample", how="any")
    table.attrs[SAMPLE_DIMS] = [str(d) for d in sample_dims]
    return table


def from_table(values: np.ndarray | xr.DataArray, like: xr.DataArray) -> xr.Dataset:
    """Inverse of :func:`to_table`: ``values`` shaped like ``like`` back to a Dataset."""
    arr = values.values if isinstance(values, xr.DataArray) else np.asarray(values)
    if arr.shape != like.shape:
        raise ConfigError(f"table has shape {arr.shape}; expected {like.shape}")
    table = like.copy(data=arr)
    sample_dims = list(like.attrs.get(SAMPLE_DIMS, ["sample"]))
    if len(sample_dims) > 1:
        table = table.unstack("sample")
    elif sample_dims[0] != "sample":
        table = table.rename({"sample": sample_dims[0]})
    table.attrs = {}
    return table.to_unstacked_dataset("feature")


def iter_table(table: xr.DataArray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive numpy blocks of rows (each computed once) for ``partial_fit`` loops."""
    for start in range(0, table.sizes["sample"], batch_size):
        yield np.asarray(table.isel(sample=slice(start, start + batch_size)).values)
