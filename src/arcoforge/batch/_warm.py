"""Imported by the DataLoader workers' forkserver (see ``_forkserver.PRELOAD``) to warm it.

Workers are forks of that server: whatever it imported they need not import again. Importing
this module imports what a worker needs to cut its first batch — numpy, xarray, zarr, torch,
arcoforge.batch — and nothing more, because the server cannot start a worker before it has
imported all of it (the first batch waits for every second spent here). Missing optional
packages are skipped. It starts no thread (forking stays as safe as with the default
forkserver, which imports ``__main__`` too).

Left out on purpose, each about half a second:

* dask: a dataset opened with ``open_zarr`` reaches the workers without its dask arrays
  (:func:`arcoforge.batch.source.without_dask`); a worker that does get dask arrays (e.g.
  after arithmetic) imports dask itself.
* the compiled patch-copy kernel (numba and its on-disk cache): a worker cuts its first batch
  with numpy and loads the kernel on a thread of its own meanwhile (:func:`load_kernel`,
  started by :class:`~arcoforge.batch.torch_loader.TorchIterableDataset`).
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

__all__ = ["kernel_loaded", "load_kernel", "warm"]

_LOADED = {"kernel": False}


def warm() -> None:
    """Import the worker's modules (idempotent)."""
    for name in ("xarray", "zarr", "torch", "arcoforge.batch", "arcoforge.batch.torch_loader"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def load_kernel() -> bool:
    """Load the compiled kernel (numba's on-disk cache) for 1-, 2-, 4- and 8-byte items, by
    running it serially once per item size; False when numba is missing (idempotent)."""
    from . import _kernels

    if not _kernels.available():
        return False
    for dtype in (np.float32, np.uint8, np.int16, np.float64):
        block = np.zeros((4, 6), dtype=dtype)
        out = np.empty((2, 2, 3), dtype=dtype)
        starts = np.array([[0, 0], [1, 2]], dtype=np.int64)
        _kernels.copy_patches(block, starts, (0, 1), (2, 3), out, parallel=False)
    _LOADED["kernel"] = True
    return True


def kernel_loaded() -> bool:
    """True once :func:`load_kernel` has run in this process (or in the server it forked from)."""
    return _LOADED["kernel"]


warm()
