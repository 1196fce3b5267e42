"""Cut many samples out of one in-memory block with one vectorized copy.

Two ways to cut, both without a Python loop per sample:

* :func:`cut` — a gather: build a strided sliding-window *view* of the block (no copy) and
  index it with the samples' start offsets, so numpy copies every sample straight into one
  new contiguous array. Works for any set of samples in any order.
* :func:`cut_grid` — when the samples are a regular grid of windows (every window position of a
  block, in C order, as sequential reading hands them out) the windows are a *basic-sliced*
  view of the sliding-window view; one ``np.copyto`` writes them all into the batch array.

When every window spans its dims whole and those dims are the block's trailing dims (whole
fields: a sample is one contiguous run of memory), :func:`cut` is a single ``np.take`` of
whole samples along one flattened leading axis.

Both copy rows of the innermost window as single opaque items (a ``void`` view of ``w``
consecutive elements) when the innermost storage axis is the innermost window axis, so numpy
moves e.g. a 32-float row with one ``memcpy`` instead of running an inner loop of 32 elements.

With numba installed (optional extra ``arcoforge[numba]``) both use a compiled patch copy
instead (:mod:`._kernels`: ~2x faster single-threaded, parallel over patches for large
batches) whenever the innermost window dim is the block's innermost, unit-stride dim; the
numpy path remains for other layouts and when numba is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..errors import ConfigError
from . import _kernels

__all__ = ["cut", "cut_grid", "grid_plan", "output_dims"]


def output_dims(var_dims: Sequence[Hashable], out_order: Sequence[Hashable]) -> tuple:
    """Dims of one variable that survive in a sample, in the requested output order."""
    return tuple(d for d in out_order if d in var_dims)


def _row_items(block: np.ndarray, w: int) -> np.ndarray | None:
    """``block[..., x:x + w]`` as one ``void`` item per ``x`` (a view), or None if impossible."""
    it = block.dtype.itemsize
    if (w <= 1 or block.ndim == 0 or block.dtype.hasobject or it == 0
            or block.strides[-1] != it or block.shape[-1] < w or block.size == 0):
        return None
    try:
        raw = block.view(np.uint8)
    except ValueError:
        return None
    n = block.shape[-1] - w + 1
    wins = as_strided(raw, shape=(*block.shape[:-1], n, w * it),
                      strides=(*block.strides[:-1], it, 1), writeable=False)
    return wins.view(np.dtype((np.void, w * it)))[..., 0]


class _Plan:
    """How to view one variable's block: which axes are windowed, and in what output order."""

    def __init__(self, block: np.ndarray, var_dims: Sequence[Hashable],
                 windows: Mapping[Hashable, int], out_order: Sequence[Hashable]) -> None:
        odims = output_dims(var_dims, out_order)
        last = var_dims[-1] if var_dims else None
        rows = None
        if odims and odims[-1] == last and last in windows:
            rows = _row_items(block, int(windows[last]))
        self.rows = rows is not None
        self.dtype = block.dtype
        base = rows if rows is not None else block
        # dims windowed by sliding_window_view (the row dim is already one item per window)
        self.in_axes = [i for i, d in enumerate(var_dims)
                        if d in windows and not (self.rows and d == last)]
        self.in_dims = [var_dims[i] for i in self.in_axes]
        view = (sliding_window_view(base, [int(windows[d]) for d in self.in_dims],
                                    axis=tuple(self.in_axes)) if self.in_axes else base)
        vis = [d for d in odims if d in self.in_dims]  # window axes of the view, output order
        order = [self.in_dims.index(d) for d in vis]
        lead = view.ndim - len(self.in_dims)
        if order != sorted(order):
            view = view.transpose(*range(lead), *[lead + o for o in order])
        self.view = view
        self.lead = lead
        self.win_shape = tuple(int(windows[d]) for d in odims)

    def finish(self, items: np.ndarray, n: int) -> np.ndarray:
        """Turn the copied items (row items, if used) into ``(n, *window)`` of the real dtype."""
        if not self.rows:
            return items
        return items.view(self.dtype).reshape(n, *self.win_shape)

    def empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A new ``(n, *window)`` result and the item view of it to copy into."""
        res = np.empty((n, *self.win_shape), dtype=self.dtype)
        if not self.rows:
            return res, res
        items = res.view(np.dtype((np.void, self.win_shape[-1] * self.dtype.itemsize)))
        return res, items[..., 0]


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
    if not var_dims:
        raise ConfigError("0-d variables cannot be cut into samples")
    idx = tuple(np.asarray(local_starts[d]) for d in var_dims)
    n = int(np.broadcast_shapes(*[i.shape for i in idx])[0]) if idx[0].ndim else 1
    whole = _cut_whole(block, var_dims, idx, n, windows, out_order, out)
    if whole is not None:
        return whole
    if idx[0].ndim == 1 and n:
        starts = np.stack([np.broadcast_to(i, (n,)) for i in idx], axis=1)
        fast = _cut_kernel(block, var_dims, starts, windows, out_order, out)
        if fast is not None:
            return fast
    plan = _Plan(block, var_dims, windows, out_order)
    res = plan.finish(plan.view[idx], n) if n else \
        np.empty((0, *plan.win_shape), dtype=block.dtype)
    if out is None:
        return res
    out[...] = res
    return out


def _cut_whole(block: np.ndarray, var_dims: Sequence[Hashable], idx: tuple[np.ndarray, ...],
               n: int, windows: Mapping[Hashable, int], out_order: Sequence[Hashable],
               out: np.ndarray | None) -> np.ndarray | None:
    """Samples that are whole trailing sub-arrays of a C-contiguous block: one ``np.take``."""
    odims = output_dims(var_dims, out_order)
    k = len(odims)
    if (k == 0 or n == 0 or idx[0].ndim != 1 or not block.flags.c_contiguous or block.dtype.hasobject
            or tuple(var_dims[len(var_dims) - k:]) != odims
            or any(int(windows[d]) != block.shape[len(var_dims) - k + i]
                   for i, d in enumerate(odims))):
        return None
    lead = len(var_dims) - k
    if any(np.any(i != 0) for i in idx[lead:]):
        return None
    lead_shape = block.shape[:lead]
    flat = block.reshape(int(np.prod(lead_shape)), -1)
    rows = (np.ravel_multi_index(np.broadcast_arrays(*idx[:lead]), lead_shape) if lead
            else np.zeros(n, dtype=np.intp))
    rows = np.broadcast_to(rows, (n,))
    win = tuple(int(windows[d]) for d in odims)
    if out is None:
        out = np.empty((n, *win), dtype=block.dtype)
    if out.flags.c_contiguous:
        # mode="clip": indices are in range; "raise" would copy through a temporary
        np.take(flat, rows, axis=0, out=out.reshape(n, -1), mode="clip")
    else:
        out[...] = np.take(flat, rows, axis=0).reshape(n, *win)
    return out


def _grid_starts(var_dims: Sequence[Hashable], grid_dims: Sequence[Hashable],
                 counts: tuple[int, ...], first: Mapping[Hashable, int],
                 step: Mapping[Hashable, int]) -> np.ndarray:
    """``(n, len(var_dims))`` starts of a regular grid of windows, in C order over the grid."""
    n = int(np.prod(counts))
    gd = list(grid_dims)
    pos = np.indices(counts, dtype=np.int64).reshape(len(counts), n)
    return np.stack([int(first[d]) + pos[gd.index(d)] * int(step[d]) for d in var_dims], axis=1)


def _kernel_plan(block: np.ndarray, var_dims: Sequence[Hashable],
                 make_starts: Callable[[], np.ndarray], windows: Mapping[Hashable, int],
                 out_order: Sequence[Hashable]) -> _kernels.PatchPlan | None:
    """The compiled copy plan for these windows, or None when the innermost window axis is not
    the block's innermost axis (starts are only built when a plan is possible)."""
    odims = output_dims(var_dims, out_order)
    if not odims or odims[-1] != var_dims[-1]:
        return None
    vd = list(var_dims)
    return _kernels.plan(block.shape, block.strides, block.dtype, make_starts(),
                         tuple(vd.index(d) for d in odims), tuple(int(windows[d]) for d in odims))


def _cut_kernel(block: np.ndarray, var_dims: Sequence[Hashable], starts: np.ndarray | None,
                windows: Mapping[Hashable, int], out_order: Sequence[Hashable],
                out: np.ndarray | None = None, key: tuple | None = None,
                make_starts: Callable[[], np.ndarray] | None = None) -> np.ndarray | None:
    """Samples by the compiled kernel, or None (numba missing, layout unsupported, bad starts).

    ``starts``: ``(n, len(var_dims))`` start of each sample on every axis of ``block``. With
    ``key`` (a hashable description of the starts) the plan is memoised, and ``make_starts``
    builds the starts only when the plan is not known yet.
    """
    if not KERNEL["enabled"] or block.dtype.hasobject:
        return None
    plan: _kernels.PatchPlan | None | Literal[False] = None
    if key is not None:
        key = (block.shape, block.strides, block.dtype.str, tuple(var_dims),
               tuple(out_order), tuple(sorted(map(repr, windows.items()))), key)
        plan = _PLANS.get(key, False)
    if plan is False or plan is None and key is None:
        if starts is not None:
            given = starts
            make_starts = lambda: given  # noqa: E731
        assert make_starts is not None
        plan = _kernel_plan(block, var_dims, make_starts, windows, out_order)
        if key is not None:
            if len(_PLANS) >= 64:
                _PLANS.clear()
            _PLANS[key] = plan
    if plan is None:
        return None
    res = out if (out is not None and out.flags.c_contiguous and out.dtype == block.dtype
                  and out.shape == plan.out_shape) else None
    dst = res if res is not None else np.empty(plan.out_shape, dtype=block.dtype)
    if not plan.run(block, dst):
        return None
    if out is not None and res is None:
        out[...] = dst
        return out
    return dst


_PLANS: dict[tuple, _kernels.PatchPlan | None] = {}
KERNEL = {"enabled": True}  # tests switch the compiled path off to compare with numpy


def grid_plan(
    block: np.ndarray,
    var_dims: Sequence[Hashable],
    grid_dims: Sequence[Hashable],
    first: Mapping[Hashable, int],
    count: Mapping[Hashable, int],
    step: Mapping[Hashable, int],
    windows: Mapping[Hashable, int],
    out_order: Sequence[Hashable],
) -> _kernels.PatchPlan | None:
    """The compiled plan :func:`cut_grid` would run for blocks of ``block``'s geometry.

    None when the kernel cannot cut these windows (numba missing, unsupported layout, a grid
    dim the variable lacks). ``plan.run(block, out)`` into a new ``(plan.out_shape)`` array
    then gives what :func:`cut_grid` returns, for any block of the same shape, strides and
    dtype; callers keep it to cut many equal blocks with little per-call work.
    """
    counts = tuple(int(count[d]) for d in grid_dims)
    n = int(np.prod(counts))
    if (not n or not var_dims or not KERNEL["enabled"] or block.dtype.hasobject
            or not all(d in grid_dims for d in var_dims)):
        return None
    return _kernel_plan(block, var_dims,
                        lambda: _grid_starts(var_dims, grid_dims, counts, first, step),
                        windows, out_order)


def cut_grid(
    block: np.ndarray,
    var_dims: Sequence[Hashable],
    grid_dims: Sequence[Hashable],
    first: Mapping[Hashable, int],
    count: Mapping[Hashable, int],
    step: Mapping[Hashable, int],
    windows: Mapping[Hashable, int],
    out_order: Sequence[Hashable],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """All samples of a regular grid of windows, in C order over ``grid_dims``, in one copy.

    Along each dim ``d`` of ``grid_dims`` the samples start at ``first[d] + k * step[d]``
    (``k < count[d]``, relative to the block). Dims of the grid that the variable lacks repeat
    its samples (as :func:`cut` does). Returns ``(prod(count), *window sizes in out_order)``,
    equal to :func:`cut` with the same starts listed in C order. If ``out`` is given the
    samples are written into it (shape must match) and it is returned.
    """
    if not var_dims:
        raise ConfigError("0-d variables cannot be cut into samples")
    counts = tuple(int(count[d]) for d in grid_dims)
    n = int(np.prod(counts))
    if n and KERNEL["enabled"] and all(d in grid_dims for d in var_dims):
        def grid_starts() -> np.ndarray:
            return _grid_starts(var_dims, grid_dims, counts, first, step)

        key = ("grid", tuple(grid_dims), counts, tuple(int(first[d]) for d in var_dims),
               tuple(int(step[d]) for d in var_dims))
        fast = _cut_kernel(block, var_dims, None, windows, out_order, out, key=key,
                           make_starts=grid_starts)
        if fast is not None:
            return fast
    plan = _Plan(block, var_dims, windows, out_order)
    sel = tuple(slice(int(first[d]), int(first[d]) + (int(count[d]) - 1) * int(step[d]) + 1,
                      int(step[d])) for d in var_dims)
    view = plan.view[sel]
    # sample axes: var order -> grid order, then broadcast over the grid dims the var lacks
    present = [d for d in grid_dims if d in var_dims]
    perm = [list(var_dims).index(d) for d in present]
    view = view.transpose(*perm, *range(plan.lead, view.ndim))
    for i, d in enumerate(grid_dims):
        if d not in var_dims:
            view = np.expand_dims(view, i)
    res, items = plan.empty(n)
    if n:
        np.copyto(items.reshape(*counts, *items.shape[1:]), view)
    if out is None:
        return res
    out[...] = res
    return out
