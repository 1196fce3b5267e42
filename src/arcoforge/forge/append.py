"""Incremental append: when a recipe's pattern grows, write only the new files, as a new minor
version.

``append(recipe, target)`` compares the pattern with the provenance list ``arcoforge:sources`` of
the published store, scans only the new files (and the last file already in the store, to check
continuity), checks that they continue the dataset -- same variables, dtypes, shapes and
attributes; concat coordinate strictly after the store's end -- then grows the arrays along the
concat dimension and writes only the chunk-rows that change (a partially filled last chunk is
rewritten with its old rows).  Nothing is visible until the new version is published:

* plain Zarr: the published store is copied (hard links on a local disk) to the staging path,
  grown there and moved into place like a build;
* Icechunk: one writable session on main, one commit, tag ``v<MAJOR.MINOR>``.

Appending the same files again finds nothing new and changes nothing.  An interrupted append is
simply run again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from arcoforge.errors import AppendError
from arcoforge.forge.bake import scan_pattern
from arcoforge.forge.io.fetch import fetch, redact
from arcoforge.forge.io.readers import RawFile, detect_engine
from arcoforge.forge.patterns import Index
from arcoforge.forge.plan import blocks_for_variable, pieces_for_region
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.schema import (
    FileSchema,
    SchemaError,
    VariableSchema,
    attrs_to_json,
    combine_schemas,
    reexpress_times,
)

__all__ = ["append", "AppendResult", "AppendError"]

log = logging.getLogger("arcoforge.forge.append")

SOURCES_KEY = "arcoforge:sources"


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
           lock_timeout: float | None = None, max_workers: int = 4) -> AppendResult:
    """Append the files of ``recipe`` that ``target`` does not hold yet, as a new minor version."""
    from arcoforge.forge.bake import resolve_target
    from arcoforge.forge.locking import build_lock

    t0 = time.perf_counter()
    if type(target).__name__ == "Repository":
        from arcoforge.forge.targets.icechunk import IcechunkTarget

        tgt: Any = IcechunkTarget(target)
    else:
        tgt = resolve_target(target, storage_options)
    with build_lock(tgt, storage_options, wait=wait_lock, timeout=lock_timeout,
                    purpose="append"):
        backend = _backend(tgt)
        attrs = backend.published_attrs()
        if attrs is None:
            raise AppendError(f"nothing is published at {tgt.url}: build it with bake() first")
        pattern = recipe.pattern
        cdim = pattern.concat_dim
        if cdim is None:
            raise AppendError("append needs a pattern with a ConcatDim")
        workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")
        old_items, new_items = _split_items(list(pattern.items()), attrs, cdim.name, tgt.url)
        if not new_items:
            backend.repair()
            return AppendResult(tgt.url, 0, 0, backend.current_version(), 0,
                                time.perf_counter() - t0)

        last_pos = max(i[cdim.name] for i, _ in old_items)
        last_items = [(i, u) for i, u in old_items if i[cdim.name] == last_pos]
        scanned = scan_pattern(recipe.pattern, recipe.source_options, workdir, max_workers,
                               items=[*last_items, *new_items])
        last_files, new_files = scanned[:len(last_items)], scanned[len(last_items):]
        recorded = {s["url"]: s for s in attrs.get(SOURCES_KEY) or []}
        for f in last_files:
            rec = recorded.get(f.url)
            if rec and rec.get("sha256") and rec["sha256"] != f.sha256:
                raise AppendError(
                    f"{f.url} changed since it was built into {tgt.url} (sha256 {f.sha256[:12]}"
                    f"… instead of {rec['sha256'][:12]}…); rebuild the dataset with bake()."
                )
        try:
            combine_schemas([*last_files, *new_files], cdim.name, cdim.nitems_per_file)
            new_schema = combine_schemas(new_files, cdim.name, cdim.nitems_per_file)
        except SchemaError as err:
            raise AppendError(f"cannot append to {tgt.url}: {err}") from err

        with backend.writing() as group:
            nbytes, rows = _grow_and_write(group, new_schema, cdim.name, recipe, tgt.url)
            new_attrs = _provenance(attrs, recipe, new_files)
            version = backend.publish(group, new_attrs)
        return AppendResult(tgt.url, len(new_files), rows, version, nbytes,
                            time.perf_counter() - t0)


# -- which files are new ---------------------------------------------------------------------


def _split_items(items: Sequence[tuple[Index, str]], attrs: Mapping[str, Any], cdim: str,
                 target_url: str) -> tuple[list[tuple[Index, str]], list[tuple[Index, str]]]:
    recorded = [s["url"] for s in attrs.get(SOURCES_KEY) or []]
    if not recorded:
        raise AppendError(f"{target_url} has no {SOURCES_KEY!r} provenance; rebuild it with "
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


# -- writing ---------------------------------------------------------------------------------


def _check_against_store(group: zarr.Group, schema: Any, cdim: str, url: str) -> int:
    """Check the new files fit the store; returns the store's length along ``cdim``."""
    arrays = {name: arr for name, arr in group.arrays()}
    first = schema.files[0].url
    missing = sorted(set(arrays) - set(schema.variables))
    extra = sorted(set(schema.variables) - set(arrays))
    if missing or extra:
        raise AppendError(
            f"{first} does not have the variables of {url}: "
            + (f"missing {missing}" if missing else "") + (" " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    old_len: int | None = None
    for name, var in schema.variables.items():
        arr = arrays[name]
        dims = tuple(getattr(arr.metadata, "dimension_names", None) or ())
        if dims != var.dims or np.dtype(arr.dtype) != np.dtype(var.dtype):
            raise AppendError(
                f"variable {name!r} in {first} is {var.dtype}{list(var.dims)} but "
                f"{np.dtype(arr.dtype).str}{list(dims)} in {url}"
            )
        for d, n_old, n_new in zip(var.dims, arr.shape, var.shape):
            if d == cdim:
                if old_len is not None and n_old != old_len:
                    raise AppendError(f"{url}: arrays disagree on the length of {cdim!r}")
                old_len = n_old
            elif n_old != n_new:
                raise AppendError(
                    f"dimension {d!r} of {name!r} has length {n_new} in {first} but {n_old} in "
                    f"{url}"
                )
    if old_len is None:
        raise AppendError(f"{url} has no variable along {cdim!r}")
    if cdim in arrays and schema.concat_values is not None and old_len:
        end = np.asarray(arrays[cdim][old_len - 1])
        start = np.asarray(schema.concat_values[0])
        if not start > end:
            raise AppendError(
                f"{first} starts at {cdim}={start!r}, not after the end of {url} "
                f"({cdim}={end!r}): overlapping or out-of-order file. Remove it from the pattern "
                "or rebuild with bake()."
            )
    return old_len


def _grow_and_write(group: zarr.Group, schema: Any, cdim: str, recipe: ZarrRecipe,
                    url: str) -> tuple[int, int]:
    if cdim in schema.variables and schema.concat_values is not None and cdim in group:
        # the new files may count time from another epoch than the store: use the store's units
        stored = dict(group[cdim].attrs)
        schema.concat_values = reexpress_times(
            schema.concat_values, schema.variables[cdim].attrs.get("units"),
            stored.get("units"), str(stored.get("calendar", "standard")),
            where=f"of {cdim!r} in {schema.files[0].url} ")
    old_len = _check_against_store(group, schema, cdim, url)
    added = schema.dims[cdim]
    new_len = old_len + added
    lengths = {pos: f.dims.get(cdim, 0) for pos, f in enumerate(schema.files)}
    opened: dict[int, Any] = {}
    nbytes = 0

    def source(pos: int) -> Any:
        if pos not in opened:
            f = schema.files[pos]
            path = f.path if os.path.exists(f.path) else fetch(
                f.fetch_url or f.url, recipe.source_options, tempfile.gettempdir()).path
            opened[pos] = RawFile(path, detect_engine(path, recipe.pattern.file_type, f.url),
                                  recipe.pattern.open_kwargs, f.url)
        return opened[pos]

    try:
        for name, var in schema.variables.items():
            if cdim not in var.dims:
                continue
            arr = group[name]
            assert isinstance(arr, zarr.Array)
            axis = var.dims.index(cdim)
            shape = list(arr.shape)
            shape[axis] = new_len
            arr.resize(tuple(shape))
            if name == cdim and schema.concat_values is not None:
                arr[old_len:new_len] = np.asarray(schema.concat_values, dtype=arr.dtype)
                nbytes += added * arr.dtype.itemsize
                continue
            step = arr.chunks[axis]
            chunks = dict(zip(var.dims, arr.chunks))
            full = VariableSchema(name, var.dims, tuple(shape), var.dtype, var.attrs)
            group_files = schema.group_files[schema.variable_group[name]]
            for start in range((old_len // step) * step, new_len, step):
                region = (start, min(start + step, new_len))
                # offsets of the new files are relative to the end of the store
                new_region = (max(region[0], old_len) - old_len, region[1] - old_len)
                pieces = pieces_for_region(group_files, lengths, new_region)
                for block in blocks_for_variable(full, cdim, chunks, region,
                                                 recipe.max_block_bytes):
                    out = np.empty(tuple(s.stop - s.start for s in block), dtype=arr.dtype)
                    keep = old_len - region[0]
                    if keep > 0:  # the partly filled last chunk: keep its old rows
                        old_key = list(block)
                        old_key[axis] = slice(region[0], old_len)
                        dst = [slice(None)] * len(block)
                        dst[axis] = slice(0, keep)
                        out[tuple(dst)] = arr[tuple(old_key)]
                    for piece in pieces:
                        src = list(block)
                        src[axis] = slice(*piece.src)
                        dst = [slice(None)] * len(block)
                        off = max(keep, 0)
                        dst[axis] = slice(piece.dst[0] + off, piece.dst[1] + off)
                        out[tuple(dst)] = source(piece.file).read(name, tuple(src))
                    arr[block] = out
                    nbytes += out.nbytes
    finally:
        for raw in opened.values():
            raw.close()
    return nbytes, added


def _provenance(attrs: Mapping[str, Any], recipe: ZarrRecipe,
                new_files: Sequence[FileSchema]) -> dict[str, Any]:
    from arcoforge.forge.targets.zarr import stamp

    sources = list(attrs.get(SOURCES_KEY) or [])
    sources += [{"url": f.url, "sha256": f.sha256, "size": f.size} for f in new_files]
    out = {
        "arcoforge:recipe_hash": recipe.sha256(),
        "arcoforge:recipe": recipe.describe(),
        "arcoforge:created": stamp(),
        SOURCES_KEY: sources,
        "arcoforge:appended": {"files": len(new_files),
                               "after_version": attrs.get("arcoforge:version")},
    }
    return attrs_to_json(out)[0]


# -- target kinds ----------------------------------------------------------------------------


def _backend(tgt: Any) -> Any:
    if getattr(tgt, "kind", None) == "icechunk":
        return _IcechunkAppend(tgt)
    return _ZarrAppend(tgt)


class _ZarrAppend:
    """Grow a copy of the published store in the staging path, then publish it."""

    def __init__(self, tgt: Any) -> None:
        self.tgt = tgt

    def published_attrs(self) -> dict[str, Any] | None:
        from arcoforge.forge.versions import published_attrs

        return published_attrs(self.tgt.url, self.tgt.storage_options)

    def current_version(self) -> str | None:
        from arcoforge.forge.versions import published_version

        return published_version(self.tgt)

    def repair(self) -> None:
        from arcoforge.forge.versions import apply_retention

        apply_retention(self.tgt)

    def writing(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def ctx() -> Any:
            tgt = self.tgt
            marker = tgt._state("append")
            if tgt.fs.exists(tgt.staging_path):
                if not tgt.fs.exists(marker):
                    raise AppendError(
                        f"an unfinished build of {tgt.url} is in {tgt.staging_url}: finish it "
                        "(run the same bake again) or remove it before appending"
                    )
                log.info("discarding an interrupted append in %s", tgt.staging_url)
                tgt.fs.rm(tgt.staging_path, recursive=True)
            self._copy_published()
            tgt._write_text(marker, "")
            try:
                group = zarr.open_group(tgt._store(tgt.staging_url), mode="r+", zarr_format=3,
                                        use_consolidated=False)
                yield group
            except BaseException:
                tgt.discard()
                raise

        return ctx()

    def _copy_published(self) -> None:
        tgt = self.tgt
        if tgt.is_local:
            src, dst = tgt.path, tgt.staging_path
            for root, _dirs, files in os.walk(src):
                rel = os.path.relpath(root, src)
                os.makedirs(os.path.join(dst, rel), exist_ok=True)
                for name in files:
                    try:  # zarr replaces files (write + rename), so links are never modified
                        os.link(os.path.join(root, name), os.path.join(dst, rel, name))
                    except OSError:
                        shutil.copy2(os.path.join(root, name), os.path.join(dst, rel, name))
        else:
            tgt.fs.copy(tgt.path, tgt.staging_path, recursive=True)

    def publish(self, group: zarr.Group, attrs: Mapping[str, Any]) -> str:
        from arcoforge.forge import versions

        tgt = self.tgt
        extra = versions.begin_publish(tgt, "minor")
        group.attrs.update({**attrs, **extra})
        zarr.consolidate_metadata(tgt._store(tgt.staging_url), zarr_format=3)
        tgt.fs.rm(tgt._state(), recursive=True)
        tgt.publish()
        versions.end_publish(tgt)
        return extra[versions.VERSION_KEY]


class _IcechunkAppend:
    """Grow main in one writable session; one commit, one tag."""

    def __init__(self, tgt: Any) -> None:
        self.tgt = tgt
        self.session: Any = None

    def published_attrs(self) -> dict[str, Any] | None:
        if not self.tgt.exists():
            return None
        session = self.tgt.repo.readonly_session(branch=self.tgt.branch)
        return dict(zarr.open_group(session.store, mode="r", zarr_format=3).attrs)

    def current_version(self) -> str | None:
        from arcoforge.forge.versions import published_version

        return published_version(self.tgt)

    def repair(self) -> None:
        """Tag main if an earlier append committed but was stopped before tagging."""
        from arcoforge.forge.versions import VERSION_KEY, apply_retention, tag_name

        repo = self.tgt.repo
        snap = repo.lookup_branch(self.tgt.branch)
        version = (self.published_attrs() or {}).get(VERSION_KEY)
        if version and tag_name(version) not in repo.list_tags():
            repo.create_tag(tag_name(version), snap)
        apply_retention(self.tgt)

    def writing(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def ctx() -> Any:
            self.session = self.tgt.repo.writable_session(self.tgt.branch)
            yield zarr.open_group(self.session.store, mode="r+", zarr_format=3)

        return ctx()

    def publish(self, group: zarr.Group, attrs: Mapping[str, Any]) -> str:
        from arcoforge.forge import versions

        tgt = self.tgt
        extra = versions.begin_publish(tgt, "minor")
        group.attrs.update({**attrs, **extra})
        version = extra[versions.VERSION_KEY]
        md = {k: v for k, v in {**attrs, **extra}.items() if k != "arcoforge:attr_types"}
        md["arcoforge:build"] = "appended"
        snap = self.session.commit(f"arcoforge: append, version {version}", metadata=md)
        tgt.repo.create_tag(versions.tag_name(version), snap)
        versions.apply_retention(tgt)
        return version
