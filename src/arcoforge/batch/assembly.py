"""Cut many samples out of one in-memory block with a single vectorized gather.

``cut`` builds a strided sliding-window *view* of the block (no copy) and indexes it with the
samples' start offsets, so numpy copies every sample straight into one new contiguous array
(or into a preallocated batch). No xarray object and no Python loop per sample.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["cut", "output_dims"]


def output_dims(var_dims: Sequence[Hashable], out_order: Sequence[Hashable]) -> tuple:
    """Dims of one variable that survive in a sample, in the requested output order."""
    return tuple(d for d in out_order if d in var_dims)


def cut(
    block: np.ndarray,
    var_dims: Sequence[Hashable],
    local_starts: Mapping[Hashable, np.ndarray],
    windows: Mapping[Hashable, int],
    out_order: Sequence[Hashable],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Samples of ``block`` as an array ``(n, *window sizes in out_order)``.

    ``local_starts[d]`` holds each sample's start along dim ``d`` relative to the block;
    ``windows`` has the window length of the input dims (other dims are squeezed). If ``out``
    is given the samples are written into it (shape must match) and it is returned.
    """
    in_axes = [i for i, d in enumerate(var_dims) if d in windows]
    in_dims = [var_dims[i] for i in in_axes]
    view = (sliding_window_view(block, [int(windows[d]) for d in in_dims], axis=in_axes)
            if in_axes else block)
    idx = tuple(np.asarray(local_starts[d]) for d in var_dims)
    order = [in_dims.index(d) for d in output_dims(var_dims, out_order)]
    if order != sorted(order):
        # transpose the (tiny) view axes first, so the gather writes the final layout
        lead = view.ndim - len(in_dims)
        view = view.transpose(*range(lead), *[lead + o for o in order])
    if not idx:
        raise ValueError("0-d variables cannot be cut into samples")
    if out is None:
        return view[idx]
    out[...] = view[idx]
    return out
