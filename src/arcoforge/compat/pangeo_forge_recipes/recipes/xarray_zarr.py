"""pangeo-forge-recipes 0.9's ``XarrayZarrRecipe``, as an :class:`arcoforge.ZarrRecipe`.

``XarrayZarrRecipe(pattern, target_chunks={...}, ...)`` takes the 0.9 arguments and is an
arcoforge :class:`~arcoforge.forge.recipes.ZarrRecipe`, so ``arcoforge bake recipe.py --target
...``, ``arcoforge.bake``, ``verify`` and the feedstock tools accept it as it is.

How the 0.9 options map onto arcoforge:

* ``file_pattern`` -> ``pattern`` (:meth:`FilePattern.to_arcoforge`); ``fsspec_open_kwargs``
  -> ``SourceOptions.storage_options`` (e.g. ``{"anon": True}``); ``xarray_open_kwargs`` -> the
  pattern's ``open_kwargs``.
* ``target_chunks`` as given; when it leaves the concat dimension out and the pattern declares
  ``nitems_per_file``, the concat chunk is ``nitems_per_file * inputs_per_chunk`` (as in 0.9);
  otherwise arcoforge chooses it.
* Honoured by arcoforge's design whatever their value: ``cache_inputs`` and
  ``copy_input_to_local_file`` (sources are always downloaded to a verified cache),
  ``consolidate_zarr`` and ``consolidate_dimension_coordinates`` (metadata is always
  consolidated), ``subset_inputs`` (inputs are always read by slice), ``lock_timeout``.
* ``delete_input_encoding``: arcoforge always keeps the sources' encodings (packing, fill
  values, calendars) so that the store equals its sources.
* ``process_input(ds, fname)`` becomes an arcoforge transform applied to every input
  (:class:`ProcessInput`); arcoforge's own ``transforms=[...]`` are accepted too.
* ``process_chunk(ds)`` becomes a transform applied to every input after ``process_input``
  (:class:`ProcessChunk`) when each 0.9 chunk is exactly one input -- ``inputs_per_chunk=1``
  (the default) and no ``subset_inputs`` that split an input: 0.9 builds one chunk per input
  and merge key then, so the function sees what it saw in 0.9.  Otherwise it is refused: a
  function of several concatenated inputs, or of a part of one, cannot be applied per input
  without changing what it computes.
* Refused with a :class:`~arcoforge.errors.ConfigError` that says why: ``process_chunk`` over
  chunks that are not single inputs (above), ``open_input_with_kerchunk``, and the pattern
  features :meth:`FilePattern.to_arcoforge` refuses.  ``xarray_concat_kwargs`` and
  ``storage_config`` are ignored with a warning (arcoforge combines by its own schema rules; the
  target comes from ``--target`` or the bakery profile).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arcoforge.errors import ConfigError
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.patterns import ConcatDim as AfConcat
from arcoforge.forge.patterns import FilePattern as AfPattern
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.transforms import Function

from ..patterns import ConcatDim, FilePattern, FileType, MergeDim
from .base import BaseRecipe

__all__ = ["XarrayZarrRecipe"]

_AF_TO_FILE_TYPE = {"netcdf4": FileType.netcdf4, "netcdf3": FileType.netcdf3,
                    "grib": FileType.grib, "hdf5": FileType.netcdf4, "auto": FileType.unknown}


def _pangeo_view(pattern: AfPattern, storage_options: Mapping[str, Any]) -> FilePattern:
    """The pangeo-style view of an arcoforge pattern (after ``dataclasses.replace``)."""
    dims = [ConcatDim(d.name, list(d.keys), d.nitems_per_file) if isinstance(d, AfConcat)
            else MergeDim(d.name, list(d.keys)) for d in pattern.combine_dims]
    return FilePattern(pattern.format_function, *dims,
                       fsspec_open_kwargs=dict(storage_options),
                       file_type=_AF_TO_FILE_TYPE.get(pattern.file_type, FileType.unknown))


@dataclass(init=False)
@dataclass
class ProcessInput(Function):
    """pangeo-forge 0.9's ``process_input(ds, fname) -> ds``, applied to every input file
    (decoded, as pangeo-forge opened it) as an arcoforge transform."""

    pattern: Any = field(default=None, repr=False)

    def __init__(self, func: Callable[..., Any], pattern: AfPattern) -> None:
        super().__init__(func)
        self.pattern = pattern

    def apply(self, index: Any, ds: Any) -> Any:
        import xarray as xr

        out = self.func(ds, self.pattern[index])  # type: ignore[call-arg,arg-type]
        if not isinstance(out, xr.Dataset):
            raise ConfigError(f"process_input returned {type(out).__name__}, not an "
                              "xarray.Dataset")
        return out


@dataclass(init=False)
class ProcessChunk(Function):
    """pangeo-forge 0.9's ``process_chunk(ds) -> ds``, applied to every input (after
    :class:`ProcessInput`) as an arcoforge transform.  Used only where every 0.9 chunk is one
    input (``inputs_per_chunk=1``, inputs not split by ``subset_inputs``), so that it sees the
    dataset 0.9 gave it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        super().__init__(func)

    def apply(self, index: Any, ds: Any) -> Any:
        import xarray as xr

        out = self.func(ds)  # type: ignore[call-arg,arg-type,misc]
        if not isinstance(out, xr.Dataset):
            raise ConfigError(f"process_chunk returned {type(out).__name__}, not an "
                              "xarray.Dataset")
        return out


def _process_chunk_problem(inputs_per_chunk: int, subset_inputs: Mapping[str, int]) -> str | None:
    """Why ``process_chunk`` cannot be applied per input (None when each chunk is one input)."""
    split = {k: v for k, v in subset_inputs.items() if v > 1}
    if inputs_per_chunk == 1 and not split:
        return None
    what = (f"inputs_per_chunk={inputs_per_chunk} concatenates {inputs_per_chunk} inputs"
            if inputs_per_chunk != 1 else f"subset_inputs={split} splits each input into parts")
    return (f"XarrayZarrRecipe(process_chunk=...) is not supported here: {what} before 0.9 "
            "calls process_chunk, and arcoforge applies it to whole inputs, which could change "
            "what the function computes. Use inputs_per_chunk=1 without subset_inputs "
            "(arcoforge reads inputs by slice anyway; target_chunks sets the store's chunks), "
            "or move the step to process_input")


class XarrayZarrRecipe(ZarrRecipe, BaseRecipe):
    """A dataset made of many NetCDF/GRIB files, written to Zarr: pangeo-forge-recipes 0.9's
    ``XarrayZarrRecipe`` arguments, baked by arcoforge (see the module docstring for how each
    argument is honoured).

    ``file_pattern`` is a pangeo-style :class:`~..patterns.FilePattern` (an arcoforge
    ``FilePattern`` works too).  arcoforge's own keywords ``source_options`` (retries, cache,
    credentials named by environment variables), ``max_block_bytes``, ``transforms``,
    ``checks`` and ``groups`` are accepted as well.
    """

    file_pattern: FilePattern = field(init=False, repr=False)
    inputs_per_chunk: int = 1
    cache_inputs: bool | None = None
    copy_input_to_local_file: bool = False
    consolidate_zarr: bool = True
    consolidate_dimension_coordinates: bool = True
    xarray_open_kwargs: dict[str, Any] = field(default_factory=dict)
    xarray_concat_kwargs: dict[str, Any] = field(default_factory=dict)
    delete_input_encoding: bool = True
    process_input: Callable[..., Any] | None = None
    process_chunk: Callable[..., Any] | None = None
    lock_timeout: int | None = None
    subset_inputs: dict[str, int] = field(default_factory=dict)
    open_input_with_kerchunk: bool = False
    storage_config: Any = None

    def __init__(
        self,
        file_pattern: FilePattern | AfPattern | None = None,
        *,
        inputs_per_chunk: int = 1,
        target_chunks: Mapping[str, int] | None = None,
        cache_inputs: bool | None = None,
        copy_input_to_local_file: bool = False,
        consolidate_zarr: bool = True,
        consolidate_dimension_coordinates: bool = True,
        xarray_open_kwargs: Mapping[str, Any] | None = None,
        xarray_concat_kwargs: Mapping[str, Any] | None = None,
        delete_input_encoding: bool = True,
        process_input: Callable[..., Any] | None = None,
        process_chunk: Callable[..., Any] | None = None,
        lock_timeout: int | None = None,
        subset_inputs: Mapping[str, int] | None = None,
        open_input_with_kerchunk: bool = False,
        storage_config: Any = None,
        pattern: AfPattern | FilePattern | None = None,
        source_options: SourceOptions | None = None,
        max_block_bytes: int = 256 * 2**20,
        transforms: Sequence[Any] = (),
        checks: Sequence[Any] = (),
        groups: str | Sequence[str] | None = None,
    ) -> None:
        given = file_pattern if file_pattern is not None else pattern
        if given is None:
            raise ConfigError("XarrayZarrRecipe needs a file pattern: "
                              "XarrayZarrRecipe(FilePattern(...), target_chunks={...})")
        if open_input_with_kerchunk:
            raise ConfigError("XarrayZarrRecipe(open_input_with_kerchunk=True) is not supported: "
                              "arcoforge reads each input with xarray after downloading it")
        if not isinstance(inputs_per_chunk, int) or inputs_per_chunk < 1:
            raise ConfigError(f"inputs_per_chunk must be an integer >= 1, got {inputs_per_chunk!r}")
        if process_chunk is not None:
            problem = _process_chunk_problem(inputs_per_chunk, dict(subset_inputs or {}))
            if problem:
                raise ConfigError(problem)
        if xarray_concat_kwargs:
            warnings.warn("XarrayZarrRecipe: xarray_concat_kwargs are ignored; arcoforge combines "
                          "the inputs by its own schema rules (and says when they disagree)",
                          UserWarning, stacklevel=2)
        if storage_config is not None:
            warnings.warn("XarrayZarrRecipe: storage_config is ignored; the target comes from "
                          "`arcoforge bake --target` or the bakery profile", UserWarning,
                          stacklevel=2)
        options = source_options or SourceOptions()
        open_kwargs = dict(xarray_open_kwargs or {})
        if isinstance(given, FilePattern):
            pangeo = given
            if pangeo.fsspec_open_kwargs:
                pangeo.check_arcoforge()  # refuses secrets before they reach the options
                merged = {**options.storage_options, **pangeo.fsspec_open_kwargs}
                options = dataclasses.replace(options, storage_options=merged)
            af_pattern = pangeo.to_arcoforge(open_kwargs={**open_kwargs} or None)
        elif isinstance(given, AfPattern):
            af_pattern = given
            if open_kwargs and open_kwargs != af_pattern.open_kwargs:
                af_pattern = AfPattern(af_pattern.format_function, *af_pattern.combine_dims,
                                       file_type=af_pattern.file_type,
                                       open_kwargs={**af_pattern.open_kwargs, **open_kwargs})
            pangeo = _pangeo_view(af_pattern, options.storage_options)
        else:
            raise ConfigError(f"XarrayZarrRecipe: file_pattern must be a FilePattern, got "
                              f"{type(given).__name__}")
        chunks = dict(target_chunks or {})
        concat = af_pattern.concat_dim
        if concat is not None and concat.name not in chunks and concat.nitems_per_file:
            chunks[concat.name] = concat.nitems_per_file * inputs_per_chunk
        steps = list(transforms)
        if process_chunk is not None and not any(isinstance(t, ProcessChunk) for t in steps):
            steps.insert(0, ProcessChunk(process_chunk))
        if process_input is not None and not any(isinstance(t, ProcessInput) for t in steps):
            steps.insert(0, ProcessInput(process_input, af_pattern))
        super().__init__(pattern=af_pattern, target_chunks=chunks or None,
                         source_options=options, max_block_bytes=max_block_bytes,
                         transforms=steps, checks=checks, groups=groups)
        self.file_pattern = pangeo
        self.inputs_per_chunk = inputs_per_chunk
        self.cache_inputs = cache_inputs
        self.copy_input_to_local_file = copy_input_to_local_file
        self.consolidate_zarr = consolidate_zarr
        self.consolidate_dimension_coordinates = consolidate_dimension_coordinates
        self.xarray_open_kwargs = open_kwargs
        self.xarray_concat_kwargs = dict(xarray_concat_kwargs or {})
        self.delete_input_encoding = delete_input_encoding
        self.process_input = process_input
        self.process_chunk = process_chunk
        self.lock_timeout = lock_timeout
        self.subset_inputs = dict(subset_inputs or {})
        self.open_input_with_kerchunk = open_input_with_kerchunk
        self.storage_config = storage_config

    @property
    def concat_dim(self) -> str | None:
        """The name of the concat dimension (None for a merge-only pattern)."""
        concat = self.pattern.concat_dim
        return concat.name if concat is not None else None

    def copy_pruned(self, nkeep: int = 2) -> XarrayZarrRecipe:
        """A copy that builds from the first ``nkeep`` files of the concat dimension; the 0.9
        arguments (``inputs_per_chunk``, ``process_input``, ...) are kept as they are."""
        clone = copy.copy(self)
        clone.pattern = self.pattern.prune(nkeep)
        clone.file_pattern = self.file_pattern.prune(nkeep)
        clone.transforms = list(self.transforms)
        return clone
