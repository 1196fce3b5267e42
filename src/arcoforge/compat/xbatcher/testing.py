"""xbatcher's ``testing`` helpers: expected batch shapes and generator lengths.

Each helper derives the expected result from the generator's arguments alone (not from its
batches), so it can check any xbatcher-like generator. Failures raise ``AssertionError``, as
test helpers do.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import xarray as xr

__all__ = ["get_batch_dimensions", "validate_batch_dimensions", "validate_generator_length"]


def _unspecified_dims(generator: Any) -> dict[Hashable, int]:
    """Dims of the data named in neither ``input_dims`` nor ``batch_dims``."""
    return {d: n for d, n in generator.ds.sizes.items()
            if d not in generator.input_dims and d not in generator.batch_dims}


def _batch_only_dims(generator: Any) -> dict[Hashable, int]:
    """``batch_dims`` entries whose dim is not an input dim."""
    return {d: n for d, n in generator.batch_dims.items() if d not in generator.input_dims}


def _shared_dims(generator: Any) -> dict[Hashable, int]:
    """``batch_dims`` entries whose dim is also an input dim."""
    return {d: n for d, n in generator.batch_dims.items() if d in generator.input_dims}


def _expected_samples(generator: Any) -> int:
    """Length of the stacked ``sample`` (or ``input_batch``) dim of each batch."""
    n = math.prod(_unspecified_dims(generator).values())
    n *= math.prod(_batch_only_dims(generator).values())
    if generator.concat_input_dims:
        for d, length in generator.input_dims.items():
            span = generator.batch_dims.get(d) or generator.ds.sizes[d]
            n *= span // length
    return int(n)


def get_batch_dimensions(generator: Any) -> dict[Hashable, int]:
    """The ``{dim: length}`` every batch of ``generator`` should have, in order."""
    samples = _expected_samples(generator)
    suffix = "_input" if generator.concat_input_dims else ""
    inputs = {f"{d}{suffix}" if suffix else d: n for d, n in generator.input_dims.items()}
    n_other = len(generator.ds.sizes) - len(generator.input_dims)
    if generator.concat_input_dims and n_other == 0:
        return {"input_batch": samples, **inputs}
    if generator.concat_input_dims or n_other > 1:
        return {"sample": samples, **inputs}
    return {**_unspecified_dims(generator), **_batch_only_dims(generator), **inputs}


def validate_batch_dimensions(
    *, expected_dims: dict[Hashable, int], batch: xr.Dataset | xr.DataArray
) -> None:
    """Raise ``AssertionError`` unless ``batch`` has exactly ``expected_dims`` (names, lengths,
    and the order of each data variable's dims)."""
    sizes = dict(batch.sizes)
    if sizes != expected_dims:
        raise AssertionError(f"Dimension names and/or lengths differ: expected "
                             f"{expected_dims}, got {sizes}")
    shape = tuple(expected_dims.values())
    variables = batch.data_vars.items() if isinstance(batch, xr.Dataset) else []
    for name, var in variables:
        if var.shape != shape:
            raise AssertionError(f"Order differs for dimensions of {name!r}: expected "
                                 f"{expected_dims}, got {dict(var.sizes)}")


def _batches_along_input_dims(generator: Any) -> int:
    """Number of patch positions along the input dims (overlap-aware)."""
    sizes = generator.ds.sizes
    plain = math.prod(sizes[d] // n for d, n in generator.input_dims.items()
                      if d not in generator.input_overlap and d not in generator.batch_dims)
    if not generator.input_overlap:
        return int(plain)
    overlapped = math.prod((sizes[d] - ov) // (generator.input_dims[d] - ov)
                           for d, ov in generator.input_overlap.items())
    return int(plain * overlapped)


def validate_generator_length(generator: Any) -> None:
    """Raise ``AssertionError`` unless ``len(generator)`` is what its arguments imply."""
    sizes = generator.ds.sizes
    n = math.prod(sizes[d] // k for d, k in _batch_only_dims(generator).items())
    n *= math.prod(sizes[d] // k for d, k in _shared_dims(generator).items())
    if not generator.concat_input_dims:
        n *= _batches_along_input_dims(generator)
    if int(n) != len(generator):
        raise AssertionError(f"Batch generator length differs: expected {int(n)}, "
                             f"got {len(generator)}")
