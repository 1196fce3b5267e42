"""Compile a recipe into a :class:`Plan` and run it: ``bake``; give up a build: ``abandon``.

A :class:`Plan` is what every engine executes: ``prepare()`` once, ``run_task(task)`` for each of
``tasks`` (any order, any worker, safe to retry), then ``finalize(stats)`` once.  It is picklable
and holds no engine logic.  It talks to its target only through the
:class:`~arcoforge.forge.targets.base.Target` protocol.  An append
(:func:`arcoforge.forge.append.append`) is a plan too, over the new files only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.groups import (
    GroupedFile,
    read_root_attrs,
    resolve_groups,
    scan_grouped,
    unlisted_parent_coordinates,
    unlisted_root_attrs,
)
from arcoforge.forge.io.fetch import SourceOptions, fetch, forget_checked_copies
from arcoforge.forge.io.formats import remote_engine
from arcoforge.forge.io.manifest import ManifestFile, open_reader
from arcoforge.forge.io.readers import RawFile, detect_engine, scan_file, scan_file_groups
from arcoforge.forge.io.redact import redact
from arcoforge.forge.io.remote import remote_open_kwargs, scan_remote_input
from arcoforge.forge.patterns import FilePattern, Index
from arcoforge.forge.plan import (
    Piece,
    StoreTask,
    blocks_for_variable,
    choose_chunks,
    compile_tasks,
    schema_fingerprint,
)
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.schema import (
    FileSchema,
    TargetSchema,
    combine_schemas,
    share_layout,
    to_target_time_units,
)
from arcoforge.forge.targets.base import Target, resolve_target
from arcoforge.forge.targets.zarr import describe_attr_types
from arcoforge.forge.transformed import TransformedFile, scan_transformed
from arcoforge.forge.transforms import Transform, resolve_transforms, transforms_digest
from arcoforge.provenance import (
    CREATED,
    GROUPS,
    PACKAGE_VERSIONS,
    RECIPE,
    RECIPE_HASH,
    SOURCES,
    package_versions,
    source_records,
    stamp,
)

__all__ = ["Plan", "TaskStats", "BuildResult", "compile_plan", "scan_pattern", "bake",
           "abandon", "recover", "resolve_target"]

log = logging.getLogger("arcoforge.forge.bake")


@dataclass
class TaskStats:
    """What one store task did."""

    key: str
    bytes_read: int = 0
    bytes_written: int = 0
    skipped: bool = False


@dataclass
class BuildResult:
    """Summary of a build (printed at its end)."""

    target: str
    files: int
    tasks: int
    tasks_skipped: int
    bytes_read: int
    bytes_written: int
    seconds: float
    recipe_hash: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        mb_r, mb_w = self.bytes_read / 1e6, self.bytes_written / 1e6
        rate = mb_r / self.seconds if self.seconds > 0 else float("nan")
        resumed = f" ({self.tasks_skipped} already done)" if self.tasks_skipped else ""
        return (
            f"built {self.target}: {self.files} files, {self.tasks} tasks{resumed}, "
            f"{mb_r:.1f} MB read, {mb_w:.1f} MB written, {self.seconds:.1f} s ({rate:.1f} MB/s)"
        )


# -- scanning ----------------------------------------------------------------------------------


@dataclass
class ScanJob:
    """Scan one source of a pattern: fetch it (into the input cache) and read its metadata
    through the recipe's transforms.  Picklable, so an engine can run it on its workers
    (``scan_map``): the coordinator then only combines the returned schemas.

    The result is kept in ``<workdir>/scans/`` keyed by the file's sha256 and everything else
    that shapes a schema (file type, open options, transforms, concat dimension), so a re-run
    does not open a file it has already scanned."""

    pattern: FilePattern
    options: SourceOptions
    workdir: str
    transforms: tuple[Transform, ...] = ()
    #: the recipe's NetCDF4/HDF5 groups (:mod:`arcoforge.forge.groups`); () for the root only
    groups: tuple[str, ...] = ()

    def __call__(self, item: tuple[Index, str]) -> FileSchema:
        pattern = self.pattern
        cdim = pattern.concat_dim.name if pattern.concat_dim else None
        index, url = item
        remote = remote_engine(url, pattern.file_type)
        if remote is not None and self.groups:
            raise ConfigError(
                f"groups={list(self.groups)} needs NetCDF4/HDF5 files, but {redact(url)} is read "
                f"where it is as {remote}; name one group with open_kwargs={{'group': ...}}")
        if remote is not None:  # OPeNDAP, Zarr: read where it is, never downloaded
            return scan_remote_input(index, url, cdim, remote, pattern, self.options,
                                     self.transforms, side_file_dir(self.workdir))
        local = fetch(url, self.options, self.workdir)
        cached = self._cache_path(local.sha256, cdim)
        schema = _load_scan(cached)
        if schema is None:
            def scan_one(group: str | None) -> FileSchema:
                kwargs = dict(pattern.open_kwargs)
                if group:
                    kwargs["group"] = group
                if self.transforms:
                    return scan_transformed(index, local.url, local.path, local.size,
                                            local.sha256, cdim, pattern.file_type, kwargs,
                                            self.transforms,
                                            cache_dir=side_file_dir(self.workdir))
                return scan_file(index, local.url, local.path, local.size, local.sha256,
                                 cdim, pattern.file_type, kwargs,
                                 cache_dir=side_file_dir(self.workdir))

            if self.groups:
                groups = resolve_groups(self.groups, local.path, local.url)
                one: Callable[[str], FileSchema] = scan_one
                root_attrs = None
                if not self.transforms:  # every group (and the root's attributes): one open
                    parts, root_attrs = scan_file_groups(
                        index, local.url, local.path, local.size, local.sha256, cdim,
                        pattern.file_type, pattern.open_kwargs, groups,
                        root_attrs="" not in groups, cache_dir=side_file_dir(self.workdir))
                    one = dict(zip(groups, parts)).__getitem__
                elif "" not in groups:
                    root_attrs = unlisted_root_attrs(read_root_attrs(local.path, local.url),
                                                     self.transforms, index, local.url)
                schema = scan_grouped(one, groups, index, local.url, local.path, local.size,
                                      local.sha256, cdim, root_attrs)
            else:
                schema = scan_one(None)
            _save_scan(cached, schema)
        else:  # the same bytes scanned before (maybe at another place in the pattern)
            schema.index, schema.url, schema.path = index, local.url, local.path
        schema.fetch_url = url
        return schema

    def _cache_path(self, sha256: str, cdim: str | None) -> str | None:
        if "://" in self.workdir or not sha256:
            return None
        if any(t.depends_on_index for t in self.transforms):
            return None  # the same bytes may give another schema at another index
        key = hashlib.sha256(json.dumps(
            [sha256, self.pattern.file_type, self.pattern.open_kwargs, cdim,
             transforms_digest(self.transforms) if self.transforms else None, _SCAN_VERSION,
             list(self.groups)],
            sort_keys=True, default=str).encode()).hexdigest()
        return os.path.join(self.workdir, "scans", key + ".pkl")


#: bump when FileSchema changes shape: older cached scans are then ignored
_SCAN_VERSION = 2


def _load_scan(path: str | None) -> FileSchema | None:
    if path is None or not os.path.exists(path):
        return None
    import pickle

    try:
        with open(path, "rb") as fh:
            schema = pickle.load(fh)
    except Exception:  # noqa: BLE001 - a damaged cache entry is a miss
        return None
    return schema if isinstance(schema, FileSchema) else None


def _save_scan(path: str | None, schema: FileSchema) -> None:
    if path is None:
        return
    import pickle

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(schema, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - the cache is an optimisation
        with contextlib.suppress(OSError):
            os.remove(tmp)


#: ``scan_map(job, items) -> results in order``: how an engine runs a :class:`ScanJob`
ScanMap = Callable[[Callable[[tuple[Index, str]], FileSchema], Sequence[tuple[Index, str]]],
                   list[FileSchema]]


def scan_pattern(pattern: FilePattern, options: SourceOptions, workdir: str,
                 max_workers: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 items: Sequence[tuple[Index, str]] | None = None,
                 transforms: Sequence[Transform] = (),
                 scan_map: ScanMap | None = None,
                 groups: Sequence[str] = ()) -> list[FileSchema]:
    """Fetch every source (or only ``items``, a subset of ``pattern.items()``) and read its
    metadata (through ``transforms``; of ``groups`` when given), in parallel; results in order.
    ``scan_map`` runs the scan on an engine's workers (default: ``max_workers`` threads here)."""
    items = list(pattern.items()) if items is None else list(items)
    job = ScanJob(pattern, options, workdir, tuple(transforms), tuple(groups))
    out: list[FileSchema] = []
    seen: OrderedDict[bytes, Any] = OrderedDict()  # one copy of the layout files share
    if scan_map is not None:
        for i, fs in enumerate(scan_map(job, items)):
            out.append(share_layout(fs, seen))
            if progress:
                progress(i + 1, len(items))
        return out
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        for i, fs in enumerate(pool.map(job, items)):
            out.append(share_layout(fs, seen))
            if progress:
                progress(i + 1, len(items))
    return out


def scan_sources(recipe: ZarrRecipe, workdir: str, max_workers: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 items: Sequence[tuple[Index, str]] | None = None,
                 scan_map: ScanMap | None = None,
                 ) -> tuple[list[FileSchema], tuple[Transform, ...]]:
    """Scan ``recipe``'s sources through its transforms: ``(file schemas, transforms bound to
    them)``.  Transforms that need every file's schema (e.g. ``DropDuplicateSteps``) are
    resolved after a first scan, and the files scanned again through the bound chain."""
    pattern = recipe.pattern
    transforms = tuple(getattr(recipe, "transforms", ()) or ())
    groups = tuple(getattr(recipe, "groups", ()) or ())
    files = scan_pattern(pattern, recipe.source_options, workdir, max_workers, progress,
                         items=items, transforms=transforms, scan_map=scan_map, groups=groups)
    if any(t.needs_all_files for t in transforms):
        cdim = pattern.concat_dim.name if pattern.concat_dim else None
        transforms = resolve_transforms(transforms, files, cdim)
        files = scan_pattern(pattern, recipe.source_options, workdir, max_workers,
                             items=[(f.index, f.fetch_url or f.url) for f in files],
                             transforms=transforms, scan_map=scan_map, groups=groups)
    return files, transforms


# -- the plan ----------------------------------------------------------------------------------


def side_file_dir(workdir: str) -> str | None:
    """Where readers keep side files (cfgrib's ``.idx`` indexes): the build's local work
    folder, never beside the sources (None for a remote work folder: a temporary folder)."""
    return None if "://" in workdir else os.path.join(workdir, "index")


class _OpenFiles:
    """A small per-task LRU of opened source files."""

    def __init__(self, maxsize: int = 16, cache_dir: str | None = None) -> None:
        self.maxsize = maxsize
        self.cache_dir = cache_dir
        self._items: OrderedDict[
            str, RawFile | ManifestFile | TransformedFile | GroupedFile] = OrderedDict()

    def get(self, path: str, engine: str, open_kwargs: Mapping[str, Any], url: str,
            transforms: Sequence[Transform] = (), index: Index | None = None,
            grouped: bool = False,
            ) -> RawFile | ManifestFile | TransformedFile | GroupedFile:
        f = self._items.pop(path, None)
        if f is None and grouped:  # one reader per group, opened when first read
            def open_group(group: str) -> RawFile | ManifestFile | TransformedFile:
                kwargs = {**open_kwargs, "group": group} if group else dict(open_kwargs)
                return self._open_one(path, engine, kwargs, url, transforms, index)
            f = GroupedFile(open_group, url)
        elif f is None:
            f = self._open_one(path, engine, open_kwargs, url, transforms, index)
        self._items[path] = f
        while len(self._items) > self.maxsize:
            _, old = self._items.popitem(last=False)
            old.close()
        return f

    def _open_one(self, path: str, engine: str, open_kwargs: Mapping[str, Any], url: str,
                  transforms: Sequence[Transform] = (), index: Index | None = None,
                  ) -> RawFile | ManifestFile | TransformedFile:
        if transforms:
            return TransformedFile(path, engine, open_kwargs, url, transforms, index or Index(),
                                   cache_dir=self.cache_dir)
        # HDF5/NetCDF-4: chunks read from the manifest, decoded outside HDF5's lock
        return open_reader(path, engine, open_kwargs, url, cache_dir=self.cache_dir)

    def close(self) -> None:
        for f in self._items.values():
            f.close()
        self._items.clear()


@dataclass(frozen=True)
class _Block:
    """One block of a store task: rows ``block`` of variable ``name``, filled by ``pieces``."""

    name: str
    dtype: str
    axis: int
    block: tuple[slice, ...]
    pieces: tuple[Piece, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(s.stop - s.start for s in self.block) * np.dtype(self.dtype).itemsize


def _block_batches(blocks: Iterable[_Block], max_bytes: int) -> Iterator[list[_Block]]:
    """``blocks`` in consecutive batches of at most ``max_bytes`` (a larger block alone)."""
    batch: list[_Block] = []
    size = 0
    for b in blocks:
        if batch and size + b.nbytes > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(b)
        size += b.nbytes
    if batch:
        yield batch


@dataclass
class Plan:
    """A compiled build: prepare, independent store tasks, finalize."""

    recipe_hash: str
    recipe_description: dict[str, Any]
    schema: TargetSchema
    chunks: dict[str, int]
    tasks: list[StoreTask]
    target: Target
    source_options: SourceOptions
    workdir: str
    file_type: str
    open_kwargs: dict[str, Any]
    max_block_bytes: int
    fingerprint: str
    #: how the published version number grows: "minor" (compatible) or "major" (breaking)
    version_bump: str = "minor"
    #: an explicit version to publish (must be newer than every published one)
    version: str | None = None
    #: an append: grow the published store instead of writing an empty layout; the tasks
    #: cover only the new chunk rows and ``static_values`` only the concat coordinate
    grow: bool = False
    #: the complete ``arcoforge:sources`` record to publish (an append: the published sources
    #: and the new files); None: the schema's files
    sources: list[dict[str, Any]] | None = None
    #: more ``arcoforge:*`` attributes to publish (an append: ``arcoforge:appended``)
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    #: the recipe's transforms, bound to the scanned files (applied when reading sources)
    transforms: tuple[Transform, ...] = ()
    #: the recipe's groups: variables are named ``<group>/<name>`` and read from that group
    groups: tuple[str, ...] = ()

    # -- helpers ---------------------------------------------------------------------------
    def _local_path(self, pos: int) -> tuple[str, FileSchema]:
        f = self.schema.files[pos]
        if remote_engine(f.fetch_url or f.path, self.file_type) is not None:
            return f.fetch_url or f.path, f  # read where it is
        if os.path.exists(f.path) and os.path.getsize(f.path) == f.size:
            return f.path, f
        local = fetch(f.fetch_url or f.url, self.source_options, self.workdir)
        return local.path, f

    def _open(self, files: _OpenFiles, pos: int,
              ) -> tuple[RawFile | ManifestFile | TransformedFile | GroupedFile, FileSchema]:
        path, f = self._local_path(pos)
        remote = remote_engine(path, self.file_type)
        if remote is not None:
            kwargs = remote_open_kwargs(path, remote, self.open_kwargs, self.source_options)
            return files.get(path, remote, kwargs, f.url, self.transforms, f.index), f
        engine = detect_engine(path, self.file_type, f.url)
        return files.get(path, engine, self.open_kwargs, f.url, self.transforms, f.index,
                         grouped=bool(self.groups)), f

    def static_values(self) -> dict[str, np.ndarray]:
        """Values written at prepare: variables without the concat dim (from the first file of
        their merge group) and the concat coordinate (gathered by the scan)."""
        cdim = self.schema.concat_dim
        out: dict[str, np.ndarray] = {}
        files = _OpenFiles(cache_dir=side_file_dir(self.workdir))
        try:
            for name, var in self.schema.variables.items():
                if cdim is not None and name == cdim and self.schema.concat_values is not None:
                    out[name] = self.schema.concat_values
                elif self.grow:
                    continue  # the published store has them already
                elif cdim is None or cdim not in var.dims:
                    group = self.schema.variable_group[name]
                    first = self.schema.group_files[group][0][0]
                    raw, _ = self._open(files, first)
                    out[name] = raw.read(name, ())
                    self._check_shared(files, name, group, out[name])
        finally:
            files.close()
        return out

    def _check_shared(self, files: _OpenFiles, name: str, group: Any,
                      values: np.ndarray) -> None:
        """A coordinate that the files of several merge keys hold must be the same in all of
        them: the store keeps one copy, so a difference would be lost silently."""
        first = self.schema.files[self.schema.group_files[group][0][0]]
        for other, members in self.schema.group_files.items():
            pos = members[0][0]
            if other == group or name not in self.schema.files[pos].variables:
                continue
            raw, f = self._open(files, pos)
            theirs = raw.read(name, ())
            same = theirs.shape == values.shape and bool(
                np.array_equal(theirs, values, equal_nan=values.dtype.kind in "fc"))
            if not same:
                raise SchemaError(
                    f"coordinate {name!r} differs between {first.url} and {f.url}, files of "
                    "two merge keys; merged files must share their coordinates (the store keeps "
                    "one copy). Regrid or subset the files to the same grid first."
                )

    # -- the three steps -------------------------------------------------------------------
    def prepare(self) -> bool:
        """Create the target's metadata and static variables (skipped when resuming)."""
        if self.target.prepared_fingerprint() == self.fingerprint:
            return False
        return bool(self.target.prepare(self.schema, self.static_values(), self.chunks,
                                        self.fingerprint, grow=self.grow))

    def is_done(self, task: StoreTask) -> bool:
        """Whether ``task`` is finished (by an earlier run of this plan)."""
        return bool(self.target.is_done(task.key))

    def split_done(self) -> tuple[list[StoreTask], list[StoreTask]]:
        """``(pending, done)`` tasks, from one listing of the target's finished-task markers
        (rather than one lookup per task, which costs a request each on object stores)."""
        done_keys = self.target.done_tasks()
        pending = [t for t in self.tasks if t.key not in done_keys]
        done = [t for t in self.tasks if t.key in done_keys]
        return pending, done

    def run_task(self, task: StoreTask) -> TaskStats:
        """Read the task's pieces and write its chunks; idempotent.

        The blocks to write are filled in batches of at most ``max_block_bytes`` (one block
        alone may reach it), file by file: each source is opened once per batch, whatever the
        number of variables (opening a NetCDF4 file with a hundred variables costs ~20 ms)."""
        stats = TaskStats(task.key)
        if self.target.is_done(task.key):
            stats.skipped = True
            return stats
        cdim = self.schema.concat_dim
        assert cdim is not None
        files = _OpenFiles(cache_dir=side_file_dir(self.workdir))
        try:
            for batch in _block_batches(self._task_blocks(task), self.max_block_bytes):
                outs = [np.empty(tuple(s.stop - s.start for s in b.block),
                                 dtype=np.dtype(b.dtype)) for b in batch]
                by_file: dict[int, list[tuple[_Block, np.ndarray, Piece]]] = {}
                for b, out in zip(batch, outs):
                    for piece in b.pieces:
                        by_file.setdefault(piece.file, []).append((b, out, piece))
                for pos, reads in by_file.items():  # files in the order they are first needed
                    raw, _ = self._open(files, pos)
                    for b, out, piece in reads:
                        src = list(b.block)
                        src[b.axis] = slice(*piece.src)
                        dst: list[slice] = [slice(None)] * len(b.block)
                        dst[b.axis] = slice(*piece.dst)
                        data = to_target_time_units(self.schema, b.name, piece.file,
                                                    raw.read(b.name, tuple(src)))
                        out[tuple(dst)] = data
                        stats.bytes_read += data.nbytes
                for b, out in zip(batch, outs):
                    stats.bytes_written += self.target.write(b.name, b.block, out)
        finally:
            files.close()
        self.target.mark_done(task.key)
        return stats

    def _task_blocks(self, task: StoreTask) -> Iterator[_Block]:
        """Every block ``task`` writes, with the pieces that fill it."""
        cdim = self.schema.concat_dim
        assert cdim is not None
        for name in task.variables:
            var = self.schema.variables[name]
            pieces = task.pieces_for(self.schema.variable_group[name])
            for block in blocks_for_variable(var, cdim, self.chunks, task.region,
                                             self.max_block_bytes):
                yield _Block(name, var.dtype, var.dims.index(cdim), block, pieces)

    def provenance(self) -> dict[str, Any]:
        """The ``arcoforge:*`` attributes this plan publishes (but the version)."""
        return {
            RECIPE_HASH: self.recipe_hash,
            RECIPE: self.recipe_description,
            CREATED: stamp(),
            PACKAGE_VERSIONS: package_versions(),
            SOURCES: (list(self.sources) if self.sources is not None
                      else source_records(self.schema.files)),
            **({GROUPS: list(self.schema.group_attrs)} if self.groups else {}),
            **self.extra_attrs,
        }

    def finalize(self, stats: Iterable[TaskStats] = ()) -> dict[str, Any]:
        """Number the new version, record provenance, publish, apply retention (once)."""
        from arcoforge.forge import versions

        attrs = self.provenance()
        attrs.update(versions.begin_publish(self.target, self.version_bump, self.fingerprint,
                                            version=self.version))
        self.target.finalize(attrs, describe_attr_types(self.schema))
        versions.apply_retention(self.target)
        return attrs


def compile_plan(recipe: ZarrRecipe, target: Any, *, workdir: str | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 scan_workers: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 scan_map: ScanMap | None = None) -> Plan:
    """Scan the recipe's sources and compile the build plan for ``target``; ``scan_map`` runs
    the scan on an engine's workers (default: threads here)."""
    forget_checked_copies()  # a new build asks the servers again about cached copies
    tgt = resolve_target(target, storage_options)
    workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")
    pattern = recipe.pattern
    files, transforms = scan_sources(recipe, workdir, scan_workers, progress,
                                     scan_map=scan_map)
    cdim = pattern.concat_dim
    schema = combine_schemas(files, cdim.name if cdim else None,
                             cdim.nitems_per_file if cdim else None)
    groups = tuple(getattr(recipe, "groups", ()) or ())
    if groups and os.path.exists(files[0].path):
        for group, dim, parent in unlisted_parent_coordinates(
                files[0].path, resolve_groups(groups, files[0].path, files[0].url)):
            warnings.warn(
                f"group {group!r} takes its {dim!r} coordinate from group {parent or '/'!r}, "
                f"which groups= does not list: the store will hold {group!r} without "
                f"{dim!r} values (as xr.open_dataset(file, group={group!r}) shows it). Add "
                f"{parent or '/'!r} to groups to keep them.", UserWarning, stacklevel=2)
    chunks = choose_chunks(schema, recipe.target_chunks)
    return plan_for(recipe, schema, chunks, compile_tasks(schema, chunks), tgt, workdir,
                    transforms=transforms)


def plan_for(recipe: ZarrRecipe, schema: TargetSchema, chunks: dict[str, int],
             tasks: list[StoreTask], target: Target, workdir: str, **extra: Any) -> Plan:
    """The :class:`Plan` that writes ``tasks`` of ``schema`` into ``target`` with ``recipe``'s
    options (a build's or an append's; ``extra`` sets the other fields, e.g. ``grow``,
    ``transforms``).  The fingerprint covers the schema, the chunks and the transforms: a
    changed transform is a new version even when the schema stays the same."""
    fingerprint = schema_fingerprint(schema, chunks)
    recipe_transforms = tuple(getattr(recipe, "transforms", ()) or ())
    if recipe_transforms:
        fingerprint = hashlib.sha256(
            (fingerprint + transforms_digest(recipe_transforms)).encode()).hexdigest()
    return Plan(
        recipe_hash=recipe.sha256(),
        recipe_description=recipe.describe(),
        schema=schema,
        chunks=chunks,
        tasks=tasks,
        target=target,
        source_options=recipe.source_options,
        workdir=workdir,
        file_type=recipe.pattern.file_type,
        open_kwargs=recipe.pattern.open_kwargs,
        max_block_bytes=recipe.max_block_bytes,
        fingerprint=fingerprint,
        groups=tuple(getattr(recipe, "groups", ()) or ()),
        **extra,
    )


def bake(recipe: ZarrRecipe, target: Any, engine: str = "local", *,
         storage_options: Mapping[str, Any] | None = None, workdir: str | None = None,
         progress: bool = True, version_bump: str = "minor", version: str | None = None,
         wait_lock: bool = False,
         lock_timeout: float | None = None, **engine_options: Any) -> BuildResult:
    """Build ``recipe`` into ``target`` and publish it as a new version; returns a
    :class:`BuildResult`.

    ``engine`` is ``"local"`` (threads, or processes with ``processes=True``), ``"dask"`` or
    ``"beam"``; ``engine_options`` go to the engine.  A re-run of an interrupted build resumes
    it; re-running a build that is already published changes nothing.  A second build of the
    same target fails fast (or waits, with ``wait_lock=True``).  ``version_bump`` says whether
    the new version is a ``"minor"`` (compatible) or ``"major"`` (breaking) change;
    ``version`` publishes an explicit one instead (e.g. ``"2.0"`` from a feedstock's meta.yaml).
    """
    if getattr(recipe, "is_virtual", False):  # references instead of bytes: forge/virtual/
        from arcoforge.forge.virtual.build import bake_virtual

        return bake_virtual(recipe, target, engine, storage_options=storage_options,  # type: ignore[arg-type]
                            workdir=workdir, progress=progress, version_bump=version_bump,
                            version=version, wait_lock=wait_lock, lock_timeout=lock_timeout,
                            **engine_options)
    from arcoforge.forge.engines import engine_session, get_engine
    from arcoforge.forge.locking import build_lock

    t0 = time.perf_counter()
    runner = get_engine(engine)
    tgt = resolve_target(target, storage_options)
    with build_lock(tgt, wait=wait_lock, timeout=lock_timeout), \
            engine_session(engine, engine_options) as (scan_map, run_options):
        recover(tgt)
        plan = compile_plan(recipe, tgt, workdir=workdir, storage_options=storage_options,
                            scan_map=scan_map)
        plan.version_bump = version_bump
        plan.version = version
        stats = run_or_skip(runner, plan, progress=progress, **run_options)
        run_checks(recipe, tgt)
    result = build_result(plan, stats, t0)
    log.info("%s", result)
    return result


def run_or_skip(engine_run: Callable[..., Any], plan: Plan, /, *, progress: bool,
                **options: Any) -> Sequence[TaskStats]:
    """Run ``plan`` with ``engine_run`` (``options`` go to it, e.g. Beam's ``runner``), or
    skip every task when its target already holds this build; an explicit ``plan.version``
    older than a published one is refused before any work."""
    from arcoforge.forge import versions

    tgt = plan.target
    up_to_date = is_up_to_date(plan)
    if plan.version is not None and not up_to_date:  # refuse a stale version before any work
        versions.next_version([v.version for v in tgt.versions()], plan.version_bump,
                              plan.version)
    if up_to_date:
        log.info("%s is already built from these sources; nothing to do", tgt.url)
        versions.apply_retention(tgt)  # a crash may have come between publish and retention
        return [TaskStats(t.key, skipped=True) for t in plan.tasks]
    return list(run_plan(engine_run, plan, progress=progress, **options))


def build_result(plan: Plan, stats: Sequence[TaskStats], t0: float,
                 extra: Mapping[str, Any] | None = None) -> BuildResult:
    """The :class:`BuildResult` of ``plan`` run with ``stats``, started at ``t0``."""
    return BuildResult(
        target=plan.target.url,
        files=len(plan.schema.files),
        tasks=len(plan.tasks),
        tasks_skipped=sum(s.skipped for s in stats),
        bytes_read=sum(s.bytes_read for s in stats),
        bytes_written=sum(s.bytes_written for s in stats),
        seconds=time.perf_counter() - t0,
        recipe_hash=plan.recipe_hash,
        extra=dict(extra or {}),
    )


def run_checks(recipe: Any, target: Target) -> None:
    """Call each of ``recipe.checks`` with a read-only zarr store of ``target``'s latest
    version; :class:`CheckError` naming the check and the cause when one fails."""
    from arcoforge.errors import CheckError

    for check in getattr(recipe, "checks", ()) or ():
        try:
            check(target.zarr_store())
        except Exception as err:  # noqa: BLE001 - user code: say which check, and why
            name = getattr(check, "__qualname__", None) or repr(check)
            raise CheckError(
                f"recipe check {name} failed on {target.url}: {type(err).__name__}: {err}. The "
                "version it checked is published; fix the recipe or the check and bake again "
                "(`arcoforge versions` lists and removes versions)") from err


def recover(target: Target) -> bool:
    """Complete a publish of ``target`` that a crash interrupted, then apply retention (call
    under the build lock, before anything else); True when a publish was completed."""
    from arcoforge.forge import versions

    if not target.recover():
        return False
    log.info("completed the interrupted publish of %s", target.url)
    versions.apply_retention(target)
    return True


def is_up_to_date(plan: Plan) -> bool:
    """Whether ``plan``'s target already publishes exactly this plan (same fingerprint) and
    holds no unfinished build: running it again would change nothing."""
    from arcoforge.forge import versions

    return (plan.target.prepared_fingerprint() is None
            and versions.published_fingerprint(plan.target) == plan.fingerprint)


def run_plan(engine_run: Callable[..., Any], plan: Plan, /, **options: Any) -> Any:
    """Run ``plan`` with the engine's run function ``engine_run``; when it fails, the error
    gets a note saying where the resumable state of the build is kept and how to abandon it."""
    from arcoforge.quiet import expected_warnings

    try:
        with expected_warnings():
            return engine_run(plan, **options)
    except Exception as err:
        where = plan.target.unfinished_location()
        if where is not None:
            err.add_note(
                f"arcoforge: nothing was published; resumable state of this build is kept at "
                f"{where}. Run the same build again to resume it, or abandon it with "
                f"`arcoforge abandon {plan.target.url}` "
                f"(arcoforge.forge.bake.abandon({plan.target.url!r}))."
            )
        raise


def abandon(target: Any, storage_options: Mapping[str, Any] | None = None, *,
            wait_lock: bool = False, lock_timeout: float | None = None) -> str | None:
    """Give up the unfinished build of ``target``: remove its resumable state (a Zarr staging
    store, an Icechunk build branch).  Published versions are untouched.  Returns where the
    state was, or None when there was none.  Takes the target's build lock, so a running build
    is never pulled from under its feet."""
    from arcoforge.forge.locking import build_lock

    tgt = resolve_target(target, storage_options)
    with build_lock(tgt, wait=wait_lock, timeout=lock_timeout, purpose="abandon"):
        recover(tgt)  # a finalized build is a version, not something to abandon
        where = tgt.unfinished_location()
        if where is not None:
            tgt.discard()
            log.info("abandoned the unfinished build at %s", where)
        return where
