"""File patterns: where the source files are and how they line up.

A :class:`FilePattern` maps *keys* (one per combine dimension) to source URLs through a format
function.  :class:`ConcatDim` concatenates files along a dimension (usually ``time``);
:class:`MergeDim` merges variables that live in different files.

>>> pattern = FilePattern(
...     lambda time: f"https://example.org/sst.{time}.nc",
...     ConcatDim("time", keys=["2019", "2020"], nitems_per_file=12),
... )
>>> [url for _, url in pattern.items()]
['https://example.org/sst.2019.nc', 'https://example.org/sst.2020.nc']
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from arcoforge.errors import ConfigError, NotFoundError

FileType = Literal["netcdf4", "netcdf3", "hdf5", "hdf4", "grib", "zarr", "opendap", "auto"]

__all__ = [
    "ConcatDim",
    "MergeDim",
    "FilePattern",
    "Index",
    "pattern_from_file_sequence",
]


@dataclass(frozen=True)
class ConcatDim:
    """Concatenate files along dimension ``name``.

    Parameters
    ----------
    name:
        Name of the dimension in the files (e.g. ``"time"``, ``"time_counter"``).
    keys:
        One key per file, passed to the format function as keyword ``name``.
    nitems_per_file:
        Length of ``name`` in every file, if it is the same for all files and known. ``None``
        (the default) means the schema scan discovers each file's length.
    """

    name: str
    keys: Sequence[Any]
    nitems_per_file: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        if not self.keys:
            raise ConfigError(f"ConcatDim({self.name!r}) has no keys")
        if self.nitems_per_file is not None and self.nitems_per_file < 1:
            raise ConfigError(f"ConcatDim({self.name!r}): nitems_per_file must be >= 1")


@dataclass(frozen=True)
class MergeDim:
    """Merge the variables of files that differ by key ``name`` (e.g. one file per variable)."""

    name: str
    keys: Sequence[Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        if not self.keys:
            raise ConfigError(f"MergeDim({self.name!r}) has no keys")


CombineDim = ConcatDim | MergeDim


@dataclass(frozen=True, order=True)
class Index:
    """Position of one file in a pattern: ``(dim name, position)`` pairs in pattern order."""

    positions: tuple[tuple[str, int], ...] = field(default=())
    #: the file's key along each combine dimension (``(dim name, key)``; not part of equality)
    keys: tuple[tuple[str, Any], ...] = field(default=(), compare=False, hash=False, repr=False)

    def __getitem__(self, name: str) -> int:
        for dim, pos in self.positions:
            if dim == name:
                return pos
        raise NotFoundError(name)

    def key(self, name: str) -> Any:
        """The file's key along combine dimension ``name`` (what the format function got)."""
        for dim, value in self.keys:
            if dim == name:
                return value
        raise NotFoundError(f"no key for combine dimension {name!r} in index {self}")

    def __str__(self) -> str:
        return ",".join(f"{d}={p}" for d, p in self.positions)


class FilePattern:
    """A set of source files laid out along combine dimensions.

    Parameters
    ----------
    format_function:
        Called with one keyword argument per combine dimension (the dimension's name) and the
        file's key; returns the file's URL or local path.
    *combine_dims:
        :class:`ConcatDim` (at most one) and any number of :class:`MergeDim`.
    file_type:
        ``"netcdf4"``, ``"netcdf3"``, ``"hdf5"``, ``"hdf4"``, ``"grib"`` or ``"auto"`` (detect
        from the bytes; ``dap2://``/``dap4://`` URLs and ``*.zarr`` stores are recognised too);
        ``"zarr"`` and ``"opendap"`` inputs are read where they are, never downloaded whole.
    open_kwargs:
        Extra keyword arguments for :func:`xarray.open_dataset` (e.g. ``{"group": "data"}``).
    """

    def __init__(
        self,
        format_function: Callable[..., str],
        *combine_dims: CombineDim,
        file_type: FileType = "auto",
        open_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not combine_dims:
            raise ConfigError("FilePattern needs at least one ConcatDim or MergeDim")
        names = [d.name for d in combine_dims]
        if len(set(names)) != len(names):
            raise ConfigError(f"combine dimension names must be unique, got {names}")
        if sum(isinstance(d, ConcatDim) for d in combine_dims) > 1:
            raise ConfigError("arcoforge supports one ConcatDim per pattern (plus any MergeDims)")
        self.format_function = format_function
        self.combine_dims: tuple[CombineDim, ...] = tuple(combine_dims)
        self.file_type: FileType = file_type
        self.open_kwargs: dict[str, Any] = dict(open_kwargs or {})

    # -- structure -------------------------------------------------------------------------
    @property
    def concat_dim(self) -> ConcatDim | None:
        """The pattern's concatenation dimension, if any."""
        for d in self.combine_dims:
            if isinstance(d, ConcatDim):
                return d
        return None

    @property
    def merge_dims(self) -> tuple[MergeDim, ...]:
        return tuple(d for d in self.combine_dims if isinstance(d, MergeDim))

    @property
    def dims(self) -> dict[str, int]:
        """Number of keys along each combine dimension."""
        return {d.name: len(d.keys) for d in self.combine_dims}

    def __len__(self) -> int:
        n = 1
        for d in self.combine_dims:
            n *= len(d.keys)
        return n

    def items(self) -> Iterator[tuple[Index, str]]:
        """Yield ``(index, url)`` for every file, concat position varying fastest."""
        ranges = [range(len(d.keys)) for d in self.combine_dims]
        for positions in itertools.product(*ranges):
            index = Index(tuple((d.name, p) for d, p in zip(self.combine_dims, positions)),
                          tuple((d.name, d.keys[p]) for d, p in zip(self.combine_dims, positions)))
            yield index, self[index]

    def __iter__(self) -> Iterator[Index]:
        for index, _ in self.items():
            yield index

    def __getitem__(self, index: Index) -> str:
        kwargs = {d.name: d.keys[index[d.name]] for d in self.combine_dims}
        url = self.format_function(**kwargs)
        if not isinstance(url, str):
            url = str(url)
        return url

    def prune(self, nkeep: int = 2) -> FilePattern:
        """A copy keeping only the first ``nkeep`` keys of the concat dimension (quick test builds)."""
        if nkeep < 1:
            raise ConfigError("nkeep must be >= 1")
        dims: list[CombineDim] = []
        for d in self.combine_dims:
            if isinstance(d, ConcatDim):
                dims.append(ConcatDim(d.name, d.keys[:nkeep], d.nitems_per_file))
            else:
                dims.append(d)
        return FilePattern(
            self.format_function, *dims, file_type=self.file_type, open_kwargs=self.open_kwargs
        )

    def sha256(self) -> str:
        """A stable hash of the pattern: its URLs, dimensions and options."""
        h = hashlib.sha256()
        for d in self.combine_dims:
            h.update(
                json.dumps(
                    [type(d).__name__, d.name, getattr(d, "nitems_per_file", None)], default=str
                ).encode()
            )
        for index, url in self.items():
            h.update(f"{index}|{url}\n".encode())
        h.update(json.dumps([self.file_type, self.open_kwargs], sort_keys=True, default=str).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        dims = ", ".join(f"{type(d).__name__}({d.name!r}, {len(d.keys)} keys)" for d in self.combine_dims)
        return f"<FilePattern {dims}: {len(self)} files>"


def pattern_from_file_sequence(
    file_list: Sequence[str],
    concat_dim: str,
    nitems_per_file: int | None = None,
    **kwargs: Any,
) -> FilePattern:
    """A :class:`FilePattern` concatenating ``file_list`` in order along ``concat_dim``."""
    urls = [str(u) for u in file_list]
    if not urls:
        raise ConfigError("pattern_from_file_sequence: the file list is empty")

    def format_function(**key: int) -> str:
        return urls[key[concat_dim]]

    return FilePattern(
        format_function,
        ConcatDim(concat_dim, keys=list(range(len(urls))), nitems_per_file=nitems_per_file),
        **kwargs,
    )
