"""A drop-in for xbatcher 0.4, on arcoforge's feed: ``import arcoforge.compat.xbatcher as xbatcher``.

Public layout and names as in xbatcher 0.4: :class:`BatchGenerator`, :class:`BatchSchema`,
the modules ``generators``, ``accessors`` (importing this package registers the
``batch``/``torch``/``tf`` accessors on Dataset and DataArray), ``testing``, ``util``,
:func:`show_versions`, and, imported on demand because they need their framework,
``loaders.torch`` (``MapDataset``, ``IterableDataset``, ``to_tensor``) and ``loaders.keras``
(``CustomTFDataset``). Batches are identical to xbatcher's; see
:mod:`arcoforge.compat.xbatcher.generators` for the few deliberate differences.

``__version__`` is the xbatcher API version served (``"0.4.0"``), so version checks written for
xbatcher keep working; arcoforge's own version is ``arcoforge.__version__``.
"""

from __future__ import annotations

from . import accessors, generators, testing  # noqa: F401  (accessors registers on import)
from .accessors import BatchAccessor
from .generators import BatchGenerator, BatchSchema
from .util.print_versions import show_versions

__version__ = "0.4.0"

__all__ = ["BatchAccessor", "BatchGenerator", "BatchSchema", "accessors", "generators",
           "show_versions", "testing"]
