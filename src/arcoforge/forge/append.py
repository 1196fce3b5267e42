"""Incremental append: when a recipe's pattern grows, write only the new files, as a new minor
version -- a :class:`~arcoforge.forge.bake.Plan` over the new files, run by any engine.

``append(recipe, target)`` compares the pattern with the provenance list ``arcoforge:sources`` of
the published version and scans only the new files, plus the last file(s) already in the store:
those that fill the store's partly filled last chunk (and at least the last one, to check
continuity).  It checks that the new files continue the dataset -- same variables, dtypes, shapes
and attributes; concat coordinate strictly after the store's end -- and compiles a plan whose

* ``prepare`` grows the published arrays along the concat dimension (in the target's staging
  copy or build branch: nothing is visible yet) and writes the new coordinate values;
* store tasks cover only the chunk rows that change: the partly filled last chunk is rewritten
  whole, its old rows read again from the source file(s) they were built from;
* ``finalize`` publishes a new minor version through the same path as a build (provenance: the
  published sources and the new files; ``arcoforge:appended``).

An interrupted append resumes when run again (same plan); appending the same files again finds
nothing new and changes nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import xarray as xr

from arcoforge.errors import AppendError, SchemaError
from arcoforge.forge.bake import Plan, TaskStats, plan_for, recover, run_plan, scan_pattern
from arcoforge.forge.groups import open_flat
from arcoforge.forge.io.fetch import forget_checked_copies, redact
from arcoforge.forge.patterns import Index
from arcoforge.forge.plan import compile_tasks
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.schema import (
    FileSchema,
    TargetSchema,
    combine_schemas,
    concat_coordinate,
    format_coordinate_value,
    reexpress_times,
    split_name,
)
from arcoforge.forge.targets.base import resolve_target
from arcoforge.forge.transforms import resolve_transforms
from arcoforge.provenance import APPENDED, GROUPS, SOURCES, VERSION, source_records

__all__ = ["append", "compile_append_plan", "AppendResult", "AppendError"]

log = logging.getLogger("arcoforge.forge.append")


@dataclass
class AppendResult:
    """What an append did (``files == 0``: nothing new, nothing changed)."""

    target: str
    files: int
    rows_added: int
    version: str | None
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        if not self.files:
            return f"{self.target}: nothing to append (version {self.version} is up to date)"
        return (f"appended {self.files} files ({self.rows_added} rows, "
                f"{self.bytes_written / 1e6:.1f} MB) to {self.target} as version {self.version} "
                f"in {self.seconds:.1f} s")


def append(recipe: ZarrRecipe, target: Any, *, storage_options: Mapping[str, Any] | None = None,
           workdir: str | None = None, wait_lock: bool = False,
           lock_timeout: float | None = None, max_workers: int = 4, engine: str = "local",
           progress: bool = False, **engine_options: Any) -> AppendResult:
    """Append the files of ``recipe`` that ``target`` does not hold yet, as a new minor version.

    ``engine`` (``"local"``, ``"dask"``, ``"beam"``) and ``engine_options`` run the append's
    plan as they run a build's; ``max_workers`` scans the new files in parallel.  A
    :class:`~arcoforge.forge.virtual.recipe.VirtualRecipe` appends references to the new files.
    """
    if getattr(recipe, "is_virtual", False):
        from arcoforge.forge.virtual.build import append_virtual
        from arcoforge.forge.virtual.recipe import VirtualRecipe

        virtual = cast(VirtualRecipe, recipe)  # is_virtual: a VirtualRecipe
        return append_virtual(virtual, target, storage_options=storage_options,  # type: ignore[no-any-return]
                              workdir=workdir, wait_lock=wait_lock, lock_timeout=lock_timeout,
                              engine=engine, progress=progress, **engine_options)
    from arcoforge.forge import versions
    from arcoforge.forge.engines import get_engine
    from arcoforge.forge.locking import build_lock

    t0 = time.perf_counter()
    runner = get_engine(engine)
    tgt = resolve_target(target, storage_options)
    with build_lock(tgt, wait=wait_lock, timeout=lock_timeout, purpose="append"):
        recover(tgt)
        plan = compile_append_plan(recipe, tgt, workdir=workdir, scan_workers=max_workers)
        if plan is None:  # recover() completed an interrupted publish of these files, if any
            versions.apply_retention(tgt)  # a crash may have come between publish and retention
            return AppendResult(tgt.url, 0, 0, versions.published_version(tgt), 0,
                                time.perf_counter() - t0)
        stats: Sequence[TaskStats] = run_plan(runner, plan, progress=progress, **engine_options)
        version = versions.published_version(tgt)
    appended = plan.extra_attrs[APPENDED]
    return AppendResult(tgt.url, int(appended["files"]), int(appended["rows"]), version,
                        sum(s.bytes_written for s in stats), time.perf_counter() - t0)


# -- the plan ----------------------------------------------------------------------------------


def compile_append_plan(recipe: ZarrRecipe, target: Any, *, workdir: str | None = None,
                        storage_options: Mapping[str, Any] | None = None,
                        scan_workers: int = 4) -> Plan | None:
    """The plan that appends the new files of ``recipe`` to the version published at
    ``target``, or None when there is nothing new.  Raises :class:`AppendError` when the new
    files do not continue the dataset (the message names the file)."""
    forget_checked_copies()  # a new build asks the servers again about cached copies
    tgt = resolve_target(target, storage_options)
    attrs = tgt.published_attrs()
    if attrs is None:
        raise AppendError(f"nothing is published at {tgt.url}: build it with bake() first")
    pattern = recipe.pattern
    cdim_obj = pattern.concat_dim
    if cdim_obj is None:
        raise AppendError("append needs a pattern with a ConcatDim")
    cdim = cdim_obj.name
    old_items, new_items = _split_items(list(pattern.items()), attrs, cdim, tgt.url)
    if not new_items:
        return None
    workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")

    stored_groups = [str(g) for g in attrs.get(GROUPS) or []]
    groups = tuple(getattr(recipe, "groups", ()) or ())
    if bool(stored_groups) != bool(groups):
        raise AppendError(
            f"{tgt.url} was built " + (f"with groups {stored_groups}" if stored_groups else
                                       "without groups")
            + " but the recipe " + (f"names groups {list(groups)}" if groups else
                                    "names none") + "; append with the recipe it was built with")
    # a grouped store as one flat dataset ("data_01/ku/x"), the way the scan names its sources
    published = open_flat(tgt, stored_groups) if stored_groups else tgt.open()
    if cdim not in published.sizes:
        raise AppendError(f"{tgt.url} has no dimension {cdim!r} to append along")
    old_len = int(published.sizes[cdim])
    chunks = _store_chunks(published)
    step = chunks[cdim]
    chunk_start = (old_len // step) * step

    # the new files, and the old files that fill the partly filled last chunk (at least one)
    transforms = tuple(getattr(recipe, "transforms", ()) or ())

    def scan(items: Sequence[tuple[Index, str]]) -> list[FileSchema]:
        return scan_pattern(pattern, recipe.source_options, workdir, scan_workers, items=items,
                            transforms=transforms, groups=groups)

    new_files = scan(new_items)
    tail: list[FileSchema] = []
    positions = sorted({i[cdim] for i, _ in old_items}, reverse=True)
    for pos in positions:
        tail = scan([(i, u) for i, u in old_items if i[cdim] == pos]) + tail
        if old_len - _length(tail, cdim) <= chunk_start:
            break
    if any(t.needs_all_files for t in transforms):  # bind them to the files at the seam
        transforms = resolve_transforms(transforms, [*tail, *new_files], cdim,
                                        stored=_stored_variables(tgt, stored_groups))
        tail, new_files = scan([(f.index, f.fetch_url or f.url) for f in tail]), \
            scan([(f.index, f.fetch_url or f.url) for f in new_files])
    _check_unchanged(tail, attrs, tgt.url)
    try:
        combined = combine_schemas([*tail, *new_files], cdim, cdim_obj.nitems_per_file)
    except SchemaError as err:
        raise AppendError(f"cannot append to {tgt.url}: {err}") from err
    tail_len = _length(tail, cdim)
    base = old_len - tail_len
    if base > chunk_start or base < 0:
        raise AppendError(
            f"the files recorded in {tgt.url} hold {tail_len} rows at its end but the store has "
            f"{old_len}: the store does not match its provenance; rebuild it with bake()")
    schema = _grown_schema(combined, published, cdim, base, tail_len, new_files[0].url, tgt.url)
    tasks = [t for t in compile_tasks(schema, chunks) if t.region[0] >= chunk_start]
    rows = schema.dims[cdim] - old_len
    recorded = list(attrs.get(SOURCES) or [])
    return plan_for(
        recipe, schema, chunks, tasks, tgt, workdir,
        version_bump="minor",
        grow=True,
        sources=recorded + source_records(new_files),
        extra_attrs={APPENDED: {"files": len(new_files), "rows": rows,
                                "after_version": attrs.get(VERSION)}},
        transforms=transforms,
    )


def _stored_variables(tgt: Any, groups: Sequence[str]) -> Callable[[str], xr.Variable | None]:
    """``stored(name)``: the published variable ``name`` (qualified in a grouped store), raw,
    with the attribute types recorded at build time; None when the store has no such one."""
    from arcoforge.open import restore_attr_types

    opened: dict[str, xr.Dataset] = {}

    def stored(name: str) -> xr.Variable | None:
        group, leaf = split_name(name) if groups else ("", name)
        if group not in opened:
            opened[group] = restore_attr_types(tgt.open(group=group or None))
        return opened[group].variables.get(leaf)

    return stored


def _length(files: Sequence[FileSchema], cdim: str) -> int:
    """Rows along ``cdim`` of files at distinct positions (merge groups counted once)."""
    seen: dict[Any, int] = {}
    for f in files:
        seen.setdefault(f.index[cdim], f.dims.get(cdim, 0))
    return sum(seen.values())


def _store_chunks(published: Any) -> dict[str, int]:
    """The chunk length of every dimension of the published store."""
    chunks: dict[str, int] = {}
    for var in published.variables.values():
        enc = var.encoding.get("chunks") or var.encoding.get("preferred_chunks")
        if isinstance(enc, Mapping):
            enc = tuple(enc.get(d, n) for d, n in zip(var.dims, var.shape))
        if not enc:
            continue
        for d, c in zip(var.dims, enc):
            chunks.setdefault(str(d), int(c))
    for d, n in published.sizes.items():
        chunks.setdefault(str(d), max(int(n), 1))
    return chunks


def _check_unchanged(tail: Sequence[FileSchema], attrs: Mapping[str, Any], url: str) -> None:
    recorded = {s["url"]: s for s in attrs.get(SOURCES) or []}
    for f in tail:
        rec = recorded.get(f.url)
        if rec and rec.get("sha256") and rec["sha256"] != f.sha256:
            raise AppendError(
                f"{f.url} changed since it was built into {url} (sha256 {f.sha256[:12]}… "
                f"instead of {rec['sha256'][:12]}…); rebuild the dataset with bake()."
            )


def _grown_schema(combined: TargetSchema, published: Any, cdim: str, base: int, tail_len: int,
                  first_new: str, url: str) -> TargetSchema:
    """The schema of the grown store: every variable at its new full shape, the files (old
    tail, then new) placed at their rows in the store, the full concat coordinate in the
    store's units.  Raises :class:`AppendError` when the new files do not fit the store."""
    old_len = base + tail_len
    new_len = base + combined.dims[cdim]
    names = {str(n) for n in published.variables}
    missing = sorted(names - set(combined.variables))
    extra = sorted(set(combined.variables) - names)
    if missing or extra:
        raise AppendError(
            f"{first_new} does not have the variables of {url}: "
            + (f"missing {missing}" if missing else "") + (" " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    variables = {}
    for name, var in combined.variables.items():
        stored = published.variables[name]
        if tuple(stored.dims) != var.dims or np.dtype(stored.dtype) != np.dtype(var.dtype):
            raise AppendError(
                f"variable {name!r} in {first_new} is {var.dtype}{list(var.dims)} but "
                f"{np.dtype(stored.dtype).str}{list(stored.dims)} in {url}"
            )
        shape = []
        for d, n_src, n_old in zip(var.dims, var.shape, stored.shape):
            if d == cdim:
                shape.append(new_len)
            elif n_src != n_old:
                raise AppendError(
                    f"dimension {d!r} of {name!r} has length {n_src} in {first_new} but {n_old} "
                    f"in {url}")
            else:
                shape.append(n_old)
        attrs = var.attrs
        units = stored.attrs.get("units")
        if isinstance(units, str) and " since " in units and "units" in attrs \
                and "scale_factor" not in attrs and "add_offset" not in attrs:
            # CF times (bounds too) of the new files are written in the store's units
            attrs = {**attrs, "units": units}
        variables[name] = replace(var, shape=tuple(shape), attrs=attrs)
    concat_values = combined.concat_values
    coord = concat_coordinate(combined.variables, cdim)
    if concat_values is not None and coord is not None and coord in published.variables:
        stored = published.variables[coord]
        new_values = reexpress_times(
            np.asarray(concat_values)[tail_len:], combined.variables[coord].attrs.get("units"),
            stored.attrs.get("units"), str(stored.attrs.get("calendar", "standard")),
            where=f"of {cdim!r} in {first_new} ")
        old_values = np.asarray(stored.values)
        if old_len and len(new_values) and not new_values[0] > old_values[old_len - 1]:
            def show(v: Any) -> str:
                return format_coordinate_value(v, stored.attrs)

            same = new_values[0] == old_values[old_len - 1]
            raise AppendError(
                f"{first_new} starts at {cdim}={show(new_values[0])}, not after the end of {url} "
                f"({cdim}={show(old_values[old_len - 1])}): "
                + ("it repeats the store's last step" if same else "an overlapping or "
                   "out-of-order file")
                + ". An append only adds steps after the published ones"
                + (" (DropDuplicateSteps(keep='first') drops the new file's repeat; keep='last' "
                   "would replace a published step, which needs a rebuild)" if same else "")
                + ". Remove the file from the pattern or rebuild with bake()."
            )
        concat_values = np.concatenate([old_values[:old_len],
                                        new_values.astype(old_values.dtype)])
    return replace(
        combined,
        dims={**combined.dims, cdim: new_len},
        variables=variables,
        group_files={g: [(pos, off + base) for pos, off in members]
                     for g, members in combined.group_files.items()},
        concat_values=concat_values,
    )


# -- which files are new ---------------------------------------------------------------------


def _split_items(items: Sequence[tuple[Index, str]], attrs: Mapping[str, Any], cdim: str,
                 target_url: str) -> tuple[list[tuple[Index, str]], list[tuple[Index, str]]]:
    recorded = [s["url"] for s in attrs.get(SOURCES) or []]
    if not recorded:
        raise AppendError(f"{target_url} has no {SOURCES!r} provenance; rebuild it with "
                          "bake() before appending")
    known = set(recorded)
    old = [(i, u) for i, u in items if redact(u) in known or u in known]
    new = [(i, u) for i, u in items if not (redact(u) in known or u in known)]
    present = {redact(u) for _, u in old} | {u for _, u in old}
    missing = [u for u in recorded if u not in present]
    if missing:
        raise AppendError(
            f"{missing[0]} is in {target_url} but not in the recipe's pattern"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; append only adds files after the existing ones. Rebuild with bake() to remove "
            "or replace files."
        )
    if old and new:
        last = max(i[cdim] for i, _ in old)
        early = [u for i, u in new if i[cdim] <= last]
        if early:
            raise AppendError(
                f"new file {redact(early[0])} comes before or among the files already in "
                f"{target_url} (pattern position along {cdim!r}); append only adds files after "
                "the existing ones. Rebuild with bake() to insert files."
            )
    return old, new
