"""Imported by the DataLoader workers' forkserver (see ``_forkserver.PRELOAD``) to warm it.

Workers are forks of that server: whatever it imported or loaded they need not import again.
Importing this module imports what a worker needs to cut its first batch — numpy, xarray, zarr,
dask.array (unpickling a lazily opened dataset needs it), torch, arcoforge.batch — and loads
the compiled patch-copy kernel (numba and its on-disk cache, about 1 s otherwise paid by every
worker on its first batch) for 1-, 2-, 4- and 8-byte items. Missing optional packages are
skipped. It starts no thread of its own (the kernel runs serially here), so forking stays as
safe as with the default forkserver, which imports ``__main__`` too.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

__all__ = ["warm"]


def warm() -> None:
    """Import the worker's modules and load the kernel for every item size (idempotent)."""
    for name in ("xarray", "zarr", "dask.array", "torch", "arcoforge.batch",
                 "arcoforge.batch.torch_loader"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from . import _kernels

    if not _kernels.available():
        return
    for dtype in (np.uint8, np.int16, np.float32, np.float64):
        block = np.zeros((4, 6), dtype=dtype)
        out = np.empty((2, 2, 3), dtype=dtype)
        starts = np.array([[0, 0], [1, 2]], dtype=np.int64)
        # serial: no helper thread may exist in a process that forks
        _kernels.copy_patches(block, starts, (0, 1), (2, 3), out, parallel=False)


warm()
