"""Compile a :class:`~arcoforge.forge.virtual.recipe.VirtualRecipe` into a plan and run it.

The plan is a :class:`~arcoforge.forge.bake.Plan` (prepare / ``run_task`` / finalize, run by any
engine, resumed after a kill, published as one version with the same provenance), whose store
tasks write *references* instead of bytes:

1. **scan** -- every source's metadata (arcoforge's own scan, through the recipe's transforms:
   the target schema, drift checks), then each source parsed once by VirtualiZarr to decide
   which variables are referenced and to check that their layouts agree (:mod:`.refs`); only a
   small layout summary per file is kept, never the manifests;
2. **prepare** -- the layout: virtual arrays with the files' chunks and codecs, inline
   variables (coordinates, what the parser cannot map) with their values;
3. **store** -- one task per ``files_per_task`` sources: parse them again, set their chunk
   references (shifted to the file's place along the concat dimension) and write their inline
   variables; the Icechunk target commits finished tasks in bounded batches (checkpoints), so no
   process ever holds the references of the whole archive;
4. **finalize** -- provenance (``arcoforge:inline_variables`` names the inline variables), one
   commit on main, the version tag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from arcoforge.errors import ConfigError, SchemaError, TargetError
from arcoforge.forge.bake import (
    BuildResult,
    Plan,
    TaskStats,
    _OpenFiles,
    build_result,
    plan_for,
    recover,
    run_or_skip,
    run_plan,
    scan_sources,
    side_file_dir,
)
from arcoforge.forge.io.fetch import forget_checked_copies
from arcoforge.forge.schema import TargetSchema, combine_schemas, coordinate_names
from arcoforge.forge.targets.base import Target, resolve_target
from arcoforge.forge.targets.virtual import (
    DEFAULT_HTTP_RETRIES,
    as_url,
    check_reference_url,
    containers_for,
    local_path,
    save_read_retries,
)
from arcoforge.forge.virtual.recipe import VirtualRecipe
from arcoforge.forge.virtual.refs import (
    SUGGEST,
    VarRefs,
    check_decodable,
    check_packing,
    check_same_layout,
    decoding_key,
    file_refs,
    make_parser,
    mappable,
    object_etag,
    parser_kind,
)
from arcoforge.provenance import INLINE_VARIABLES

__all__ = ["VirtualPlan", "VirtualTask", "compile_virtual_plan", "bake_virtual"]

log = logging.getLogger("arcoforge.forge.virtual")


@dataclass(frozen=True)
class VirtualTask:
    """One store task: reference the sources at ``files`` (positions in the schema)."""

    key: str
    files: tuple[int, ...]


@dataclass(frozen=True)
class VirtualLayout:
    """A referenced variable: its name in the sources, chunk shape, codecs and dtype."""

    source_name: str
    chunks: tuple[int, ...]
    codecs: tuple[Any, ...]
    dtype: str
    codecs_json: str


@dataclass
class VirtualPlan(Plan):
    """A :class:`~arcoforge.forge.bake.Plan` whose store tasks set chunk references."""

    #: referenced variables (the rest is inline)
    virtual: dict[str, VirtualLayout] = field(default_factory=dict)
    #: inline variables written by the store tasks (they have the concat dimension)
    inline_rows: tuple[str, ...] = ()
    #: fsspec/obstore options of the sources (S3 endpoint, anonymity)
    source_storage: dict[str, Any] = field(default_factory=dict)
    #: the parser of each source (``"hdf5"`` / ``"netcdf3"``), found by the scan
    parser_kinds: tuple[str, ...] = ()

    def run_task(self, task: Any) -> TaskStats:  # type: ignore[override]
        """Parse the task's sources, set their references and write their inline rows."""
        stats = TaskStats(task.key)
        if self.target.is_done(task.key):
            stats.skipped = True
            return stats
        cdim = self.schema.concat_dim
        files = _OpenFiles(cache_dir=side_file_dir(self.workdir))
        try:
            for pos in task.files:
                self._reference_file(pos, stats)
                if cdim is not None:
                    self._write_inline_rows(files, pos, stats)
        finally:
            files.close()
        self.target.mark_done(task.key)
        return stats

    def _offset(self, pos: int) -> tuple[tuple[tuple[str, int], ...], int]:
        for gkey, members in self.schema.group_files.items():
            for p, start in members:
                if p == pos:
                    return gkey, start
        raise TargetError(f"file {pos} is not in the plan")  # a bug

    def _reference_file(self, pos: int, stats: TaskStats) -> None:
        import icechunk

        f = self.schema.files[pos]
        gkey, start = self._offset(pos)
        names = [n for n in self.virtual if self.schema.variable_group[n] == gkey]
        if not names:
            return
        parser = make_parser(self.parser_kinds[pos], self.open_kwargs, f.url)
        refs = file_refs(f.fetch_url or f.url, parser, self.source_storage, local_copy=f.path)
        checksum = _modified_at(f.fetch_url or f.url)
        etag = None if checksum is not None else object_etag(f.fetch_url or f.url,
                                                             self.source_storage)
        cdim = self.schema.concat_dim
        for name in names:
            layout = self.virtual[name]
            var = self.schema.variables[name]
            r = refs.get(layout.source_name)
            file_var = f.variables[name]
            if not mappable(r, file_var.shape) or r is None:
                raise SchemaError(f"variable {name!r} of {f.url} can no longer be referenced "
                                  "(the file changed since the scan); build again.")
            axis = var.dims.index(cdim) if cdim in var.dims else None
            if (r.chunks, decoding_key(r.codecs), r.dtype) != \
                    (layout.chunks, decoding_key(json.loads(layout.codecs_json)), layout.dtype):
                raise SchemaError(f"variable {name!r} of {f.url} changed its layout since the "
                                  f"scan; build again. {SUGGEST}")
            shift = start // layout.chunks[axis] if axis is not None else 0
            specs = []
            for idx in np.ndindex(*r.grid):
                target_idx = [int(i) for i in idx]
                if axis is not None:
                    target_idx[axis] += shift
                specs.append(icechunk.VirtualChunkSpec(
                    index=target_idx, location=str(r.paths[idx]), offset=int(r.offsets[idx]),
                    length=int(r.lengths[idx]), last_updated_at_checksum=checksum,
                    etag_checksum=etag))
            self.target.write_virtual_refs(name, specs)  # type: ignore[attr-defined]

    def _write_inline_rows(self, files: _OpenFiles, pos: int, stats: TaskStats) -> None:
        cdim = self.schema.concat_dim
        gkey, start = self._offset(pos)
        f = self.schema.files[pos]
        n = f.dims.get(cdim or "", 0)
        for name in self.inline_rows:
            if self.schema.variable_group[name] != gkey:
                continue
            var = self.schema.variables[name]
            axis = var.dims.index(cdim)
            raw, _ = self._open(files, pos)
            data = raw.read(name, tuple(slice(None) for _ in var.dims))
            key = tuple(slice(start, start + n) if i == axis else slice(None)
                        for i in range(len(var.dims)))
            stats.bytes_read += data.nbytes
            stats.bytes_written += self.target.write(name, key, np.asarray(data))


def _modified_at(url: str) -> datetime | None:
    """When a local source was last modified (Icechunk then refuses to read its chunks if the
    file changes later); None for remote sources."""
    import os

    url = as_url(url)
    if not url.startswith("file://"):
        return None
    stat = os.stat(local_path(url))
    return datetime.fromtimestamp(math.ceil(stat.st_mtime), tz=UTC)


# -- compiling ---------------------------------------------------------------------------------


def _inline_candidates(schema: TargetSchema, recipe: VirtualRecipe) -> set[str]:
    """Variables stored inline whatever the parser says: those without the concat dimension,
    the coordinate-like ones, and the recipe's ``inline_variables``."""
    cdim = schema.concat_dim
    coords: set[str] = set()
    for f in schema.files:
        coords |= coordinate_names(f)
    out = set(recipe.inline_variables) | coords
    for name, var in schema.variables.items():
        if cdim is None or cdim not in var.dims:
            out.add(name)
    return out


def _scan_layouts(schema: TargetSchema, recipe: VirtualRecipe, candidates: Sequence[str],
                  workers: int) -> tuple[dict[str, VirtualLayout], list[str]]:
    """Parse each source once (threads) and decide which ``candidates`` are referenced:
    those the parser maps in every file that holds them, with one layout (else refused)."""
    storage = dict(recipe.source_options.storage_options)
    cdim = schema.concat_dim
    pattern = recipe.pattern

    kinds = [parser_kind(f.path, pattern.file_type, f.url) for f in schema.files]

    def one(pos: int) -> dict[str, tuple[bool, VarRefs | None]]:
        f = schema.files[pos]
        parser = make_parser(kinds[pos], pattern.open_kwargs, f.url)
        refs = file_refs(f.fetch_url or f.url, parser, storage, local_copy=f.path)
        out: dict[str, tuple[bool, VarRefs | None]] = {}
        for name in candidates:
            if name not in f.variables:
                continue
            r = refs.get(recipe.source_name(name))
            ok = mappable(r, f.variables[name].shape)
            if ok and r is not None:  # keep the summary, drop the manifest
                r = dataclasses.replace(r, paths=np.empty(0), lengths=np.empty(0),
                                        offsets=np.broadcast_to(np.uint8(0), r.grid))
            out[name] = (ok, r)
        return out

    with ThreadPoolExecutor(max(1, min(workers, len(schema.files)))) as pool:
        per_file = list(pool.map(one, range(len(schema.files))))
    layouts: dict[str, VirtualLayout] = {}
    for name in candidates:
        seen = [(pos, d[name]) for pos, d in enumerate(per_file) if name in d]
        if not seen or not all(ok for _, (ok, _) in seen):
            bad = next(((schema.files[p].url, r) for p, (ok, r) in seen if not ok), None)
            why = "the parser cannot map it"
            if bad is not None and bad[1] is not None and bad[1].unfiltered_chunks:
                why = (f"{bad[1].unfiltered_chunks} of its chunks are stored without their "
                       "filters (HDF5 filter_mask), which references cannot express")
            elif bad is not None and bad[1] is not None and bad[1].paths.size and \
                    bool(np.any(np.asarray(bad[1].paths, dtype=object) == "")):
                why = "some of its chunks were never written (they read as the fill value)"
            log.info("variable %r is stored inline: %s%s", name, why,
                     f" in {bad[0]}" if bad else "")
            continue
        first_pos, (_, first) = seen[0]
        assert first is not None
        var = schema.variables[name]
        axis = var.dims.index(cdim) if cdim in var.dims else None
        first_url = schema.files[first_pos].url
        check_decodable(name, first, first_url)
        for pos, (_, r) in seen[1:]:
            assert r is not None
            check_same_layout(name, first, first_url, r, schema.files[pos].url, axis)
        if axis is not None:
            _check_aligned(schema, name, first.chunks[axis])
        layouts[name] = VirtualLayout(recipe.source_name(name), first.chunks,
                                      first.codec_objects, first.dtype,
                                      json.dumps(first.codecs, sort_keys=True))
    return layouts, kinds


def _check_aligned(schema: TargetSchema, name: str, chunk: int) -> None:
    """Every file of ``name`` must start on a chunk boundary of the concat dimension (a file
    whose length is not a multiple of the chunk may only be the last one)."""
    cdim = schema.concat_dim
    members = schema.group_files[schema.variable_group[name]]
    for i, (pos, start) in enumerate(members):
        n = schema.files[pos].dims.get(cdim or "", 0)
        if start % chunk or (n % chunk and i != len(members) - 1):
            raise SchemaError(
                f"variable {name!r}: {schema.files[pos].url} starts at {cdim}={start} with "
                f"{n} steps, but the files are chunked by {chunk} along {cdim!r}; chunks of "
                f"one virtual array must not straddle files. {SUGGEST}")


def _split_codecs(codecs: Sequence[Any]) -> dict[str, Any]:
    """Zarr encodings (filters, serializer, compressors) of a referenced array."""
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec

    return {
        "filters": [c for c in codecs if isinstance(c, ArrayArrayCodec)],
        "serializer": next(c for c in codecs if isinstance(c, ArrayBytesCodec)),
        "compressors": [c for c in codecs if isinstance(c, BytesBytesCodec)],
    }


def _inline_chunk(schema: TargetSchema) -> int:
    """The concat-dim chunk of inline variables written per file: the gcd of the file lengths
    (so that no two tasks write one chunk)."""
    cdim = schema.concat_dim
    out = 0
    for members in schema.group_files.values():
        for pos, _ in members:
            out = math.gcd(out, schema.files[pos].dims.get(cdim or "", 0))
    return max(out, 1)


@dataclass
class Analysis:
    """What the scan decided: the target schema, the referenced variables and their layouts,
    the inline variables (all of them, and those written row by row by the store tasks)."""

    schema: TargetSchema
    transforms: tuple[Any, ...]
    layouts: dict[str, VirtualLayout]
    inline: list[str]
    inline_rows: tuple[str, ...]
    #: the parser of each source, in schema order
    parser_kinds: tuple[str, ...] = ()


def analyse(recipe: VirtualRecipe, workdir: str, scan_workers: int = 8,
            progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Scan the sources (schema, drift and packing checks) and parse each one once to decide
    which variables are referenced (layout checks); refuses what cannot be virtual."""
    if recipe.source_options.auth is not None:
        raise ConfigError(
            "VirtualRecipe: these sources need credentials (SourceOptions.auth); a virtual "
            "store would have to carry them to every reader, and arcoforge never stores "
            f"secrets. {SUGGEST}")
    for _, url in recipe.pattern.items():
        check_reference_url(str(url))
    forget_checked_copies()  # a new build asks the servers again about cached copies
    files, transforms = scan_sources(recipe, workdir, scan_workers, progress)  # type: ignore[arg-type]
    cdim = recipe.pattern.concat_dim
    check_packing(files, cdim.name if cdim else None)
    schema = combine_schemas(files, cdim.name if cdim else None,
                             cdim.nitems_per_file if cdim else None)
    inline = _inline_candidates(schema, recipe)
    candidates = [n for n in schema.variables if n not in inline]
    layouts, kinds = _scan_layouts(schema, recipe, candidates, scan_workers)
    cd = schema.concat_dim
    inline_rows = tuple(n for n, v in schema.variables.items()
                        if n not in layouts and cd is not None and cd in v.dims and n != cd)
    return Analysis(schema, tuple(transforms), layouts,
                    sorted(n for n in schema.variables if n not in layouts), inline_rows,
                    tuple(kinds))


def compile_virtual_plan(recipe: VirtualRecipe, target: Any, *, workdir: str | None = None,
                         storage_options: Mapping[str, Any] | None = None,
                         scan_workers: int = 8,
                         progress: Callable[[int, int], None] | None = None) -> VirtualPlan:
    """Scan ``recipe``'s sources, check they can be referenced faithfully, and compile the
    plan that references them in ``target`` (an Icechunk repository)."""
    tgt = resolve_target(target, storage_options)
    if not hasattr(tgt, "write_virtual_refs"):
        raise ConfigError(
            f"{tgt.url}: virtual references need an Icechunk target (icechunk://PATH or an "
            "icechunk.Repository), which keeps them with their virtual chunk containers; for "
            "older readers write a kerchunk file with arcoforge.forge.virtual.write_kerchunk.")
    workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")
    a = analyse(recipe, workdir, scan_workers, progress)
    schema, layouts, inline_rows, inline_names = a.schema, a.layouts, a.inline_rows, a.inline
    transforms = a.transforms
    chunks = {schema.concat_dim: _inline_chunk(schema)} if schema.concat_dim else {}
    overrides: dict[str, dict[str, Any]] = {}
    for name, layout in layouts.items():
        overrides[name] = {"chunks": layout.chunks, **_split_codecs(layout.codecs)}
    if schema.concat_dim in schema.variables:  # written whole at prepare: one chunk
        overrides[schema.concat_dim] = {"chunks": schema.variables[schema.concat_dim].shape}
    tasks = _tasks(schema, recipe.files_per_task)
    plan = plan_for(recipe, schema, chunks, tasks, tgt, workdir,  # type: ignore[arg-type]
                    extra_attrs={INLINE_VARIABLES: inline_names}, transforms=transforms)
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(Plan)}
    fields["fingerprint"] = _fingerprint(plan.fingerprint, layouts, inline_names)
    vplan = VirtualPlan(**fields, virtual=layouts, inline_rows=inline_rows,
                        source_storage=dict(recipe.source_options.storage_options),
                        parser_kinds=a.parser_kinds)
    tgt.layout_overrides = overrides  # type: ignore[attr-defined]
    specs = containers_for([f.fetch_url or f.url for f in schema.files],
                           recipe.source_options.storage_options)
    tgt.configure_virtual_containers(specs)  # type: ignore[attr-defined]
    if any(spec.kind != "file" for spec in specs) and hasattr(tgt, "repo"):
        opts = recipe.source_options  # remote chunks: readers retry transient failures
        save_read_retries(tgt.repo, getattr(opts, "retries", DEFAULT_HTTP_RETRIES),
                          getattr(opts, "backoff", 0.5), getattr(opts, "max_backoff", 20.0))
    return vplan


def _tasks(schema: TargetSchema, per_task: int) -> list[VirtualTask]:
    positions = list(range(len(schema.files)))
    out = []
    for i in range(0, len(positions), per_task):
        part = tuple(positions[i:i + per_task])
        out.append(VirtualTask(f"refs-{part[0]}-{part[-1]}", part))
    return out


def _fingerprint(base: str, layouts: Mapping[str, VirtualLayout], inline: Sequence[str]) -> str:
    doc = {"base": base, "virtual": {n: [v.chunks, v.codecs_json, v.dtype]
                                     for n, v in sorted(layouts.items())},
           "inline": list(inline)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def bake_virtual(recipe: VirtualRecipe, target: Any, engine: str = "local", *,
                 storage_options: Mapping[str, Any] | None = None, workdir: str | None = None,
                 progress: bool = True, version_bump: str = "minor", version: str | None = None,
                 wait_lock: bool = False, lock_timeout: float | None = None,
                 **engine_options: Any) -> BuildResult:
    """Build the virtual store of ``recipe`` in ``target`` and publish it as a new version
    (what :func:`arcoforge.bake` does for a :class:`VirtualRecipe`; same arguments)."""
    from arcoforge.forge.engines import get_engine
    from arcoforge.forge.locking import build_lock

    t0 = time.perf_counter()
    if recipe.output == "kerchunk" or (isinstance(target, str) and target.endswith(".json")):
        return _bake_kerchunk(recipe, target, workdir, t0)
    runner = get_engine(engine)
    tgt: Target = resolve_target(target, storage_options)
    with build_lock(tgt, wait=wait_lock, timeout=lock_timeout):
        recover(tgt)
        plan = compile_virtual_plan(recipe, tgt, workdir=workdir,
                                    storage_options=storage_options)
        plan.version_bump = version_bump
        plan.version = version
        stats = run_or_skip(runner, plan, progress=progress, **engine_options)
    return build_result(plan, stats, t0,
                        extra={"virtual_variables": sorted(plan.virtual),
                               INLINE_VARIABLES: plan.extra_attrs.get(INLINE_VARIABLES, [])})


def _bake_kerchunk(recipe: VirtualRecipe, target: Any, workdir: str | None,
                   t0: float) -> BuildResult:
    """``bake`` of a kerchunk output: one JSON file (no versions: it is replaced whole)."""
    import os

    from arcoforge.forge.virtual.kerchunk import write_kerchunk

    path = os.fspath(target)
    if "://" in path and not path.startswith("file://"):
        raise ConfigError(f"{path}: a kerchunk reference file is written to a local path; "
                          "copy it where readers find it, or bake an Icechunk store.")
    summary = write_kerchunk(recipe, path.removeprefix("file://"), workdir=workdir)
    return BuildResult(target=path, files=len(recipe.pattern), tasks=1, tasks_skipped=0,
                       bytes_read=0, bytes_written=os.path.getsize(summary["path"]),
                       seconds=time.perf_counter() - t0, recipe_hash=recipe.sha256(),
                       extra=summary)


# -- append ------------------------------------------------------------------------------------


def append_virtual(recipe: VirtualRecipe, target: Any, *,
                   storage_options: Mapping[str, Any] | None = None,
                   workdir: str | None = None, wait_lock: bool = False,
                   lock_timeout: float | None = None, engine: str = "local",
                   progress: bool = False, **engine_options: Any) -> Any:
    """Append the files of ``recipe`` that the virtual store at ``target`` does not reference
    yet, as a new minor version (what :func:`arcoforge.forge.append.append` does for a
    :class:`VirtualRecipe`).  Only the new files get store tasks; the published ones must be
    the pattern's first files, unchanged (else :class:`~arcoforge.errors.AppendError`)."""
    from arcoforge.errors import AppendError
    from arcoforge.forge import versions
    from arcoforge.forge.append import AppendResult
    from arcoforge.forge.engines import get_engine
    from arcoforge.forge.locking import build_lock
    from arcoforge.provenance import APPENDED, SOURCES, VERSION

    t0 = time.perf_counter()
    runner = get_engine(engine)
    tgt: Target = resolve_target(target, storage_options)
    with build_lock(tgt, wait=wait_lock, timeout=lock_timeout, purpose="append"):
        recover(tgt)
        attrs = tgt.published_attrs()
        if attrs is None:
            raise AppendError(f"nothing is published at {tgt.url}: build it with bake() first")
        recorded = list(attrs.get(SOURCES) or [])
        plan = compile_virtual_plan(recipe, tgt, workdir=workdir)
        files = plan.schema.files
        cdim = plan.schema.concat_dim
        if cdim is None:
            raise AppendError("append needs a pattern with a ConcatDim")
        known = len(recorded)
        for old, f in zip(recorded, files):
            if old.get("url") != f.url or old.get("sha256") != f.sha256:
                raise AppendError(
                    f"cannot append to {tgt.url}: its source {old.get('url')} is not the "
                    f"pattern's file {f.url} (or it changed since); the published files must "
                    "be the pattern's first files, unchanged. Bake a new version instead.")
        if known > len(files):
            raise AppendError(f"{tgt.url} references {known} files but the pattern has only "
                              f"{len(files)}; bake a new version instead")
        if known == len(files):
            return AppendResult(tgt.url, 0, 0, versions.published_version(tgt), 0,
                                time.perf_counter() - t0)
        published = tgt.open()
        _check_append_layout(plan, published, tgt.url)
        old_len = int(published.sizes[cdim])
        start = dict(plan.schema.group_files[next(iter(plan.schema.group_files))])[known]
        if start != old_len:
            raise AppendError(f"{tgt.url} has {old_len} steps along {cdim!r} but its "
                              f"{known} files hold {start}; rebuild it with bake()")
        new_tasks: list[Any] = [VirtualTask(f"refs-{p}-{p}", (p,))
                                for p in range(known, len(files))]
        plan.tasks = new_tasks
        plan.grow = True
        plan.version_bump = "minor"
        rows = plan.schema.dims[cdim] - old_len
        plan.extra_attrs[APPENDED] = {"files": len(files) - known, "rows": rows,
                                      "after_version": attrs.get(VERSION)}
        plan.fingerprint = hashlib.sha256(
            f"{plan.fingerprint}|append-after-{known}".encode()).hexdigest()
        run_plan(runner, plan, progress=progress, **engine_options)
        version = versions.published_version(tgt)
    return AppendResult(tgt.url, len(files) - known, rows, version, 0,
                        time.perf_counter() - t0)


def _check_append_layout(plan: VirtualPlan, published: Any, url: str) -> None:
    """The new files must keep the published arrays' chunks and dtypes."""
    from arcoforge.errors import AppendError

    for name, layout in plan.virtual.items():
        if name not in published.variables:
            raise AppendError(f"cannot append to {url}: variable {name!r} is new")
        chunks = published[name].encoding.get("chunks")
        if chunks is not None and tuple(chunks) != tuple(layout.chunks):
            raise AppendError(f"cannot append to {url}: variable {name!r} is chunked "
                              f"{tuple(chunks)} in the store but {layout.chunks} in the new "
                              f"files. {SUGGEST}")
    cdim = plan.schema.concat_dim
    for name in plan.inline_rows:
        chunks = published[name].encoding.get("chunks") if name in published.variables else None
        axis = plan.schema.variables[name].dims.index(cdim)
        old = int(published.sizes[cdim])
        if chunks is not None and old % chunks[axis]:
            raise AppendError(f"cannot append to {url}: inline variable {name!r} ends inside a "
                              f"chunk; bake a new version instead")
