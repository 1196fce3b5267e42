"""From a target schema to store tasks: pure chunk-region arithmetic, no I/O.

A store task owns one chunk-row along the concat dimension (``[start, stop)``, aligned to the
target chunks) and writes every variable that has the concat dimension for that row.  For each
variable it lists the *pieces* — ``(file, source slice, target slice)`` — that fill the row, so a
task reads only the bytes it writes, whatever the size of the files.  Rows whose bytes exceed
``max_block_bytes`` are further split into whole chunks along the other dimensions.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from arcoforge.errors import ConfigError, NotFoundError
from arcoforge.forge.schema import TargetSchema, VariableSchema

__all__ = [
    "Piece",
    "StoreTask",
    "choose_chunks",
    "compile_tasks",
    "pieces_for_region",
    "blocks_for_variable",
    "schema_fingerprint",
]

#: default target chunk size along the concat dimension aims at about this many bytes
DEFAULT_CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True, slots=True)
class Piece:
    """Rows ``src`` (along the concat dim) of file ``file`` fill rows ``dst`` of the target."""

    file: int
    src: tuple[int, int]
    dst: tuple[int, int]


@dataclass(frozen=True, slots=True)
class StoreTask:
    """Write target rows ``region`` of ``variables``; idempotent, independent of other tasks."""

    key: str
    region: tuple[int, int]
    variables: tuple[str, ...]
    #: pieces per merge group key (as a tuple of pairs so the task stays hashable)
    pieces: tuple[tuple[tuple[tuple[str, int], ...], tuple[Piece, ...]], ...]

    def pieces_for(self, group: tuple[tuple[str, int], ...]) -> tuple[Piece, ...]:
        for gkey, pieces in self.pieces:
            if gkey == group:
                return pieces
        raise NotFoundError(group)


def choose_chunks(schema: TargetSchema, target_chunks: Mapping[str, int] | None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict[str, int]:
    """Chunk length for every dimension; unnamed dimensions are not split (one chunk), except
    the concat dimension, whose default aims at ``chunk_bytes`` for the largest variable."""
    chunks: dict[str, int] = {}
    target_chunks = dict(target_chunks or {})
    unknown = set(target_chunks) - set(schema.dims)
    if unknown:
        raise ConfigError(
            f"target_chunks names dimension(s) {sorted(unknown)} that the dataset does not have "
            f"(it has {sorted(schema.dims)})"
        )
    for dim, size in schema.dims.items():
        n = target_chunks.get(dim)
        if n is not None:
            if int(n) < 1:
                raise ConfigError(f"target_chunks[{dim!r}] must be >= 1, got {n}")
            chunks[dim] = min(int(n), max(size, 1))
        elif dim == schema.concat_dim:
            per_step = max(
                (_row_bytes(v, schema.concat_dim, chunks_hint={}) for v in schema.variables.values()
                 if dim in v.dims),
                default=1,
            )
            chunks[dim] = int(max(1, min(size, chunk_bytes // max(per_step, 1))))
        else:
            chunks[dim] = max(size, 1)
    return chunks


def _row_bytes(var: VariableSchema, concat_dim: str | None, chunks_hint: Mapping[str, int]) -> int:
    n = var.itemsize
    for d, s in zip(var.dims, var.shape):
        if d == concat_dim:
            n *= chunks_hint.get(d, 1)
        else:
            n *= s
    return n


def pieces_for_region(offsets: Sequence[tuple[int, int]],
                      file_lengths: Mapping[int, int] | Sequence[int],
                      region: tuple[int, int],
                      starts: Sequence[int] | None = None) -> tuple[Piece, ...]:
    """Which rows of which files fill target rows ``region`` (files given as (pos, offset), in
    increasing offset order).

    ``starts`` (the offsets alone, as :func:`bisect` wants them) makes the lookup logarithmic
    in the number of files: only the files that overlap ``region`` are visited, so compiling one
    task per file of a 100,000-file pattern stays linear.
    """
    start, stop = region
    first = 0
    if starts is not None:
        # the last file starting at or before ``start`` may still overlap it
        first = max(bisect.bisect_right(starts, start) - 1, 0)
    pieces = []
    for k in range(first, len(offsets)):  # indexing, not islice: skipping must cost nothing
        pos, offset = offsets[k]
        if starts is not None and offset >= stop:
            break
        length = file_lengths[pos]
        lo, hi = max(start, offset), min(stop, offset + length)
        if lo < hi:
            pieces.append(Piece(pos, (lo - offset, hi - offset), (lo - start, hi - start)))
    return tuple(pieces)


def compile_tasks(schema: TargetSchema, chunks: Mapping[str, int]) -> list[StoreTask]:
    """One task per chunk-row along the concat dimension, in order.

    Linear in the number of files and tasks: each task visits only the files that overlap its
    rows (a binary search over the files' offsets), and tasks share their variable names and
    group keys.
    """
    cdim = schema.concat_dim
    if cdim is None:
        return []
    concat_vars = tuple(
        sorted(n for n, v in schema.variables.items() if cdim in v.dims and n != cdim)
    )
    if not concat_vars:
        return []
    total = schema.dims[cdim]
    step = chunks[cdim]
    lengths = [f.dims.get(cdim, 0) for f in schema.files]
    groups = sorted({schema.variable_group[v] for v in concat_vars})
    members = {g: schema.group_files[g] for g in groups}
    # offsets are cumulative lengths, so they grow with the file position (bisect wants that)
    starts = {g: [offset for _, offset in members[g]] for g in groups}
    width = max(4, len(str(math.ceil(total / step))))
    tasks = []
    for i, start in enumerate(range(0, total, step)):
        region = (start, min(start + step, total))
        pieces = tuple(
            (g, pieces_for_region(members[g], lengths, region, starts[g])) for g in groups
        )
        tasks.append(StoreTask(f"{cdim}-{i:0{width}d}", region, concat_vars, pieces))
    return tasks


def blocks_for_variable(var: VariableSchema, concat_dim: str, chunks: Mapping[str, int],
                        region: tuple[int, int], max_block_bytes: int) -> Iterator[tuple[slice, ...]]:
    """Target index tuples covering ``region`` of ``var``, each at most ``max_block_bytes``
    (whole chunks along the other dimensions, split only when the full row is too big)."""
    rows = region[1] - region[0]
    full = tuple(
        slice(*region) if d == concat_dim else slice(0, n) for d, n in zip(var.dims, var.shape)
    )
    row_bytes = var.itemsize * rows
    for d, n in zip(var.dims, var.shape):
        if d != concat_dim:
            row_bytes *= n
    if row_bytes <= max_block_bytes:
        yield full
        return
    ranges = []
    for d, n in zip(var.dims, var.shape):
        if d == concat_dim:
            ranges.append([slice(*region)])
        else:
            c = chunks.get(d, n)
            ranges.append([slice(s, min(s + c, n)) for s in range(0, n, c)])
    yield from itertools.product(*ranges)


def schema_fingerprint(schema: TargetSchema, chunks: Mapping[str, int]) -> str:
    """A hash identifying the target layout and the exact sources (for resume)."""
    h = hashlib.sha256()
    doc = {
        "dims": schema.dims,
        "chunks": dict(chunks),
        "vars": {n: [v.dims, v.shape, v.dtype] for n, v in sorted(schema.variables.items())},
        "files": [[f.url, f.sha256] for f in schema.files],
    }
    if schema.group_attrs:
        doc["groups"] = list(schema.group_attrs)
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return h.hexdigest()
