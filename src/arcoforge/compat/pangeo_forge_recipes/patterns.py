"""pangeo-forge-recipes 0.10's ``patterns`` module, with the behaviour of its 0.10 release.

:class:`FilePattern` is an n-dimensional grid of source URLs: one axis per :class:`ConcatDim`
or :class:`MergeDim`, URLs made by a format function that takes one keyword per dimension.
Iterating gives :class:`~arcoforge.compat.pangeo_forge_recipes.types.Index` keys;
``pattern[index]`` gives the URL.  ``sha256()`` and ``get_merkle_list()`` compute the same
digests as pangeo-forge-recipes 0.10, so hashes recorded by its bakeries stay comparable.

The one arcoforge addition is :meth:`FilePattern.to_arcoforge`, which turns the pattern into an
:class:`arcoforge.forge.patterns.FilePattern` that arcoforge's planner builds from (it is what
:class:`~arcoforge.compat.pangeo_forge_recipes.recipes.XarrayZarrRecipe` uses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from arcoforge.errors import ConfigError

from .types import CombineOp, Dimension, Index, IndexedPosition, Position

if TYPE_CHECKING:
    from arcoforge.forge.patterns import FilePattern as ArcoforgePattern

__all__ = [
    "CombineDim",
    "CombineOp",
    "ConcatDim",
    "Dimension",
    "FilePattern",
    "FileType",
    "Index",
    "IndexedPosition",
    "MergeDim",
    "Position",
    "augment_index_with_start_stop",
    "pattern_from_file_sequence",
    "prune_pattern",
]


@dataclass(frozen=True)
class CombineDim:
    """A named axis of a :class:`FilePattern` with one key per item (base of the two kinds)."""

    name: str
    operation: ClassVar[CombineOp]
    keys: Sequence[Any] = field(repr=False)

    @property
    def dimension(self) -> Dimension:
        """This axis as a :class:`~arcoforge.compat.pangeo_forge_recipes.types.Dimension`."""
        return Dimension(self.name, self.operation)


@dataclass(frozen=True)
class ConcatDim(CombineDim):
    """Files concatenated along dimension ``name``; ``nitems_per_file`` is each file's length
    along it when that is known and the same for all files."""

    nitems_per_file: int | None = None
    operation: ClassVar[CombineOp] = CombineOp.CONCAT


@dataclass(frozen=True)
class MergeDim(CombineDim):
    """Files whose variables are merged (``name`` is only a label, often ``"variable"``)."""

    operation: ClassVar[CombineOp] = CombineOp.MERGE


def augment_index_with_start_stop(position: Position, item_lens: list[int],
                                  append_offset: int = 0) -> IndexedPosition:
    """The offset of sequence item ``position`` in the combined dimension, given the length of
    every item (``item_lens``); ``append_offset`` is the length already in the target."""
    if position.indexed:
        raise ConfigError(f"{position} is already an offset (indexed=True), not a sequence "
                          "position")
    start = sum(item_lens[: position.value])
    return IndexedPosition(start + append_offset, dimsize=sum(item_lens) + append_offset)


class FileType(Enum):
    """Source formats a pattern can name (each value equals its name, as in pangeo-forge)."""

    unknown = "unknown"
    netcdf3 = "netcdf3"
    netcdf4 = "netcdf4"
    grib = "grib"
    opendap = "opendap"
    zarr = "zarr"


#: pangeo-forge file types -> arcoforge ``file_type`` (None: refused, with the reason)
_ARCOFORGE_FILE_TYPE: dict[FileType, str | None] = {
    FileType.unknown: "auto",
    FileType.netcdf3: "netcdf3",
    FileType.netcdf4: "netcdf4",
    FileType.grib: "grib",
    FileType.opendap: None,
    FileType.zarr: None,
}

_REFUSED_FILE_TYPE = {
    FileType.opendap: "arcoforge downloads whole source files and cannot read OPeNDAP "
                      "endpoints: point the format function at the files themselves "
                      "(HTTP, FTP, S3), with file_type='netcdf4' or 'netcdf3'",
    FileType.zarr: "arcoforge builds from files (NetCDF, HDF5, GRIB), not from Zarr stores: "
                   "open the store with xarray.open_zarr instead of baking it",
}

#: keys of ``fsspec_open_kwargs`` that carry a secret; arcoforge reads secrets from env only
_SECRET_KWARGS = frozenset({"username", "password", "auth", "key", "secret", "token",
                            "session_token", "aws_access_key_id", "aws_secret_access_key",
                            "aws_session_token", "client_secret", "api_key"})


def _to_file_type(value: Any) -> FileType:
    if isinstance(value, FileType):
        return value
    try:
        return FileType(value)
    except ValueError:
        choices = ", ".join(repr(t.value) for t in FileType)
        raise ConfigError(f"{value!r} is not a valid FileType; use one of {choices}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    sha = getattr(obj, "sha256", None)
    if callable(sha):
        digest = sha()
        return digest.hex() if isinstance(digest, bytes) else str(digest)
    raise ConfigError(f"object of type {type(obj).__name__} not serializable for a pattern "
                      "hash (use JSON values: str, int, float, bool, list, dict)")


def _drop_empty(pairs: dict[str, Any]) -> dict[str, Any]:
    """``pairs`` without None and without empty collections (so new, unset options do not
    change the hash of an old pattern)."""
    return {k: v for k, v in pairs.items()
            if not (v is None or (isinstance(v, Collection) and not v))}


def _dict_digest(d: dict[str, Any]) -> bytes:
    text = json.dumps(d, default=_json_default, ensure_ascii=False, sort_keys=True, indent=None,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).digest()


class FilePattern:
    """A grid of source files: one axis per combine dimension, URLs from a format function.

    Parameters
    ----------
    format_function:
        Called with one keyword per combine dimension (its ``name``) set to that dimension's
        key; returns the file's URL or path.
    *combine_dims:
        :class:`ConcatDim` and :class:`MergeDim` axes; the grid is the product of their keys.
    fsspec_open_kwargs:
        Options for opening the files with fsspec (e.g. ``{"anon": True}`` for a public S3
        bucket).  Not allowed with ``file_type="opendap"``.
    query_string_secrets:
        Query parameters added to every URL when it is fetched (kept out of the URLs).
    file_type:
        A :class:`FileType` or its value (default ``"netcdf4"``).
    """

    def __init__(
        self,
        format_function: Callable[..., str],
        *combine_dims: CombineDim,
        fsspec_open_kwargs: dict[str, Any] | None = None,
        query_string_secrets: dict[str, str] | None = None,
        file_type: str | FileType = "netcdf4",
    ) -> None:
        self.format_function = format_function
        self.combine_dims = combine_dims
        self.fsspec_open_kwargs: dict[str, Any] = fsspec_open_kwargs or {}
        self.query_string_secrets: dict[str, str] = query_string_secrets or {}
        self.file_type = _to_file_type(file_type)
        if self.fsspec_open_kwargs and self.file_type == FileType.opendap:
            raise ConfigError("fsspec_open_kwargs cannot be used with file_type='opendap': "
                              "OPeNDAP sources are not opened with fsspec")

    def __repr__(self) -> str:
        return f"<FilePattern {self.dims}>"

    # -- shape -------------------------------------------------------------------------------
    @property
    def dims(self) -> dict[str, int]:
        """Number of keys along each combine dimension, by name."""
        return {d.name: len(d.keys) for d in self.combine_dims}

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape, one entry per combine dimension in order."""
        return tuple(len(d.keys) for d in self.combine_dims)

    @property
    def merge_dims(self) -> list[str]:
        """Names of the merge dimensions."""
        return [d.name for d in self.combine_dims if d.operation == CombineOp.MERGE]

    @property
    def concat_dims(self) -> list[str]:
        """Names of the concat dimensions."""
        return [d.name for d in self.combine_dims if d.operation == CombineOp.CONCAT]

    @property
    def nitems_per_input(self) -> dict[str, int | None]:
        """Items per file along each concat dimension (None where not declared)."""
        return {d.name: (d.nitems_per_file or None) for d in self.combine_dims
                if isinstance(d, ConcatDim)}

    @property
    def concat_sequence_lens(self) -> dict[str, int | None]:
        """Total length along each concat dimension, when ``nitems_per_file`` is declared."""
        return {name: (n * self.dims[name] if n is not None else None)
                for name, n in self.nitems_per_input.items()}

    @property
    def combine_dim_keys(self) -> list[Dimension]:
        """The combine dimensions as :class:`Dimension` objects, in order."""
        return [d.dimension for d in self.combine_dims]

    # -- items -------------------------------------------------------------------------------
    def __getitem__(self, indexer: Index) -> str:
        """The URL of the file at ``indexer``."""
        if len(indexer) != len(self.combine_dims):
            raise ConfigError(f"an index of this pattern has {len(self.combine_dims)} "
                              f"dimensions ({self.dims}); got {len(indexer)}: {indexer}")
        kwargs = {}
        for dimension, position in indexer.items():
            matches = [d for d in self.combine_dims if d.dimension == dimension]
            if len(matches) != 1:
                raise ConfigError(f"{dimension} is not a combine dimension of this pattern "
                                  f"(it has {self.combine_dim_keys})")
            dim = matches[0]
            kwargs[dim.name] = dim.keys[position.value]
        return self.format_function(**kwargs)

    def __iter__(self) -> Iterator[Index]:
        """Every index of the grid, the last dimension varying fastest."""
        for values in itertools.product(*(range(n) for n in self.shape)):
            yield Index({d.dimension: Position(v) for d, v in zip(self.combine_dims, values)})

    def items(self) -> Iterator[tuple[Index, str]]:
        """``(index, url)`` for every file."""
        for index in self:
            yield index, self[index]

    # -- hashing -----------------------------------------------------------------------------
    def get_merkle_list(self) -> list[bytes]:
        """A hash chain over the pattern: the first entry hashes its options, each further entry
        hashes the previous one with the next URL.  Equal to pangeo-forge-recipes 0.10's."""
        root = _drop_empty({
            "fsspec_open_kwargs": self.fsspec_open_kwargs,
            "query_string_secrets": self.query_string_secrets,
            "file_type": self.file_type,
            "nitems_per_file": {d.name: d.nitems_per_file for d in self.combine_dims
                                if isinstance(d, ConcatDim)},
        })
        chain = [_dict_digest(root)]
        for _, url in self.items():
            url_digest = hashlib.sha256(url.encode("utf-8")).digest()
            chain.append(hashlib.sha256(chain[-1] + url_digest).digest())
        return chain

    def sha256(self) -> bytes:
        """The last entry of :meth:`get_merkle_list` (bytes, as in pangeo-forge-recipes)."""
        return self.get_merkle_list()[-1]

    def start_processing_from(self, old_pattern_last_hash: bytes) -> Index | None:
        """The index from which this pattern continues an older one whose :meth:`sha256` was
        ``old_pattern_last_hash`` (None when it does not extend it)."""
        for index, digest in zip(self, self.get_merkle_list()):
            if digest == old_pattern_last_hash:
                return index
        return None

    # -- derived patterns --------------------------------------------------------------------
    def prune(self, nkeep: int = 2) -> FilePattern:
        """A copy that keeps every merge key but only the first ``nkeep`` keys of each concat
        dimension (for a quick test build)."""
        dims = [dataclasses.replace(d, keys=d.keys[:nkeep]) if isinstance(d, ConcatDim) else d
                for d in self.combine_dims]
        return FilePattern(self.format_function, *dims,
                           fsspec_open_kwargs=self.fsspec_open_kwargs,
                           query_string_secrets=self.query_string_secrets,
                           file_type=self.file_type)

    def to_arcoforge(self, open_kwargs: dict[str, Any] | None = None) -> ArcoforgePattern:
        """This pattern as an :class:`arcoforge.forge.patterns.FilePattern` (arcoforge's
        planner builds from that).

        Refused with a :class:`~arcoforge.errors.ConfigError` that says why: more than one
        concat dimension, ``file_type`` ``"opendap"`` or ``"zarr"``, and
        ``query_string_secrets`` or secret ``fsspec_open_kwargs`` (arcoforge reads credentials
        from environment variables named in ``SourceOptions.auth``, never from the recipe).
        ``open_kwargs`` go to :func:`xarray.open_dataset`.
        """
        from arcoforge.forge.patterns import ConcatDim as AfConcat
        from arcoforge.forge.patterns import FilePattern as AfPattern
        from arcoforge.forge.patterns import MergeDim as AfMerge

        self.check_arcoforge()
        dims: list[AfConcat | AfMerge] = []
        for d in self.combine_dims:
            if isinstance(d, ConcatDim):
                dims.append(AfConcat(d.name, list(d.keys), d.nitems_per_file or None))
            else:
                dims.append(AfMerge(d.name, list(d.keys)))
        file_type = _ARCOFORGE_FILE_TYPE[self.file_type]
        assert file_type is not None  # check_arcoforge refused the others
        return AfPattern(self.format_function, *dims, file_type=file_type,  # type: ignore[arg-type]
                         open_kwargs=open_kwargs)

    def check_arcoforge(self) -> None:
        """Raise :class:`~arcoforge.errors.ConfigError` when arcoforge cannot build this pattern
        (see :meth:`to_arcoforge`)."""
        if not self.combine_dims:
            raise ConfigError("this FilePattern has no ConcatDim or MergeDim: add at least one")
        if len(self.concat_dims) > 1:
            raise ConfigError(f"this FilePattern concatenates along {len(self.concat_dims)} "
                              f"dimensions {self.concat_dims}; arcoforge builds one ConcatDim "
                              "per pattern (plus any MergeDims): split it into one recipe per "
                              "value of the other concat dimensions")
        reason = _REFUSED_FILE_TYPE.get(self.file_type)
        if reason:
            raise ConfigError(f"file_type={self.file_type.value!r} is not supported: {reason}")
        if self.query_string_secrets:
            names = ", ".join(sorted(self.query_string_secrets))
            raise ConfigError(
                f"query_string_secrets ({names}) put secret values into the recipe; arcoforge "
                "reads secrets from environment variables only: pass "
                "source_options=SourceOptions(auth=Auth.query(<param>, <ENV_VAR>)) to the "
                "recipe and leave query_string_secrets empty")
        secret = sorted(_secret_keys(self.fsspec_open_kwargs))
        if secret:
            raise ConfigError(
                f"fsspec_open_kwargs hold credentials ({', '.join(secret)}); arcoforge reads "
                "secrets from environment variables only: pass source_options=SourceOptions("
                "auth=Auth.basic(<USER_ENV>, <PASSWORD_ENV>)) (HTTP, FTP, S3) or use the "
                "protocol's own variables (AWS_ACCESS_KEY_ID, ...)")


def _secret_keys(kwargs: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for key, value in kwargs.items():
        if str(key).lower() in _SECRET_KWARGS:
            found.add(prefix + str(key))
        if isinstance(value, dict):
            found |= _secret_keys(value, f"{prefix}{key}.")
    return found


def prune_pattern(fp: FilePattern, nkeep: int = 2) -> FilePattern:
    """``fp.prune(nkeep)`` (the pangeo-forge-recipes 0.9 spelling)."""
    return fp.prune(nkeep)


def pattern_from_file_sequence(file_list: Sequence[str], concat_dim: str,
                               nitems_per_file: int | None = None,
                               **kwargs: Any) -> FilePattern:
    """A :class:`FilePattern` that concatenates ``file_list``, in order, along
    ``concat_dim``; ``kwargs`` go to :class:`FilePattern`."""
    files = list(file_list)

    def format_function(**key: int) -> str:
        return files[key[concat_dim]]

    concat = ConcatDim(name=concat_dim, keys=list(range(len(files))),
                       nitems_per_file=nitems_per_file)
    return FilePattern(format_function, concat, **kwargs)
