"""Plain Zarr v3 target at any fsspec URL, built in a staging store and published at the end.

Implements :class:`~arcoforge.forge.targets.base.Target`.  Layout::

    <url>/                            the latest published version
    <url>.versions/<MAJOR.MINOR>/     older versions kept by retention (hard links when local)
    <url>.arcoforge-lock              the build lock (:mod:`arcoforge.forge.locking`)
    <url>.arcoforge-staging/          the store being written (invisible under <url>)
        .arcoforge/prepared           marker: layout written, holds the plan fingerprint
        .arcoforge/done/<task key>    marker: a store task's chunks are all written

``finalize`` writes provenance attributes, consolidates metadata, removes the markers and only
then moves the staging store to ``<url>``.  Readers of ``<url>`` see the previous published store
until that moment.  Re-running the same build reuses the staging store: finished tasks are
skipped, and their chunk bytes are those an uninterrupted build writes.  An append (``prepare(...,
grow=True)``) starts from a copy of the published store (hard links on a local disk: zarr
replaces chunk files rather than modifying them, so the published store is never changed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, ClassVar

import fsspec  # type: ignore[import-untyped]
import numpy as np
import xarray as xr
import zarr

from arcoforge.errors import NotFoundError, TargetError
from arcoforge.forge.schema import TargetSchema, attrs_to_json
from arcoforge.forge.targets.base import LOCK_SUFFIX
from arcoforge.forge.versions import VersionInfo, format_version, is_version, sorted_versions
from arcoforge.provenance import ATTR_TYPES, CREATED, VERSION

__all__ = ["ZarrTarget", "template_dataset", "grow_group", "layout_encoding"]

log = logging.getLogger("arcoforge.forge.targets.zarr")

STATE_DIR = ".arcoforge"
STAGING_SUFFIX = ".arcoforge-staging"
VERSIONS_SUFFIX = ".versions"


def template_dataset(schema: TargetSchema, static: Mapping[str, np.ndarray],
                     chunks: Mapping[str, int]) -> xr.Dataset:
    """A raw (undecoded) dataset with the target's layout: ``static`` variables hold their
    values, every other variable is a lazy placeholder of the right shape, dtype and chunks."""
    import dask.array as da

    data_vars = {}
    for name, var in schema.variables.items():
        if name in static:
            data = np.asarray(static[name])
        else:
            var_chunks = tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape))
            data = da.empty(var.shape, dtype=np.dtype(var.dtype), chunks=var_chunks)
        data_vars[name] = xr.Variable(var.dims, data, attrs=dict(var.attrs))
    return xr.Dataset(data_vars, attrs=dict(schema.attrs))


def layout_encoding(schema: TargetSchema, chunks: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """The zarr encoding of every variable: its chunks, and no invented fill value."""
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in schema.variables.items():
        encoding[name] = {
            "chunks": tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape)),
        }
        if "_FillValue" not in var.attrs:
            encoding[name]["_FillValue"] = None  # the source has none; don't invent one
    return encoding


def grow_group(group: zarr.Group, schema: TargetSchema, static: Mapping[str, np.ndarray]) -> None:
    """Grow the arrays of ``group`` along the concat dimension to ``schema``'s shapes, and
    write the new rows (past each array's old end) of the ``static`` variables (an append)."""
    cdim = schema.concat_dim
    for name, var in schema.variables.items():
        if cdim is None or cdim not in var.dims:
            continue
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        axis = var.dims.index(cdim)
        old = arr.shape[axis]
        if arr.shape != var.shape:
            arr.resize(var.shape)
        if name in static and old < var.shape[axis]:
            key = tuple(slice(old, None) if i == axis else slice(None)
                        for i in range(len(var.shape)))
            arr[key] = np.asarray(static[name], dtype=arr.dtype)[key]


class ZarrTarget:
    """A Zarr v3 store at ``url`` (local path or fsspec URL), built in a staging store and
    published by a rename."""

    #: any copy (another process) may write chunks: no forks to merge
    single_committer: ClassVar[bool] = False
    #: publishing replaces ``<url>``; readers reopen to see the new version
    transactional: ClassVar[bool] = False
    #: older versions are copies under ``<url>.versions/``
    archives_old_versions: ClassVar[bool] = True
    media_type: ClassVar[str] = "application/vnd.zarr; version=3"

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = str(url).rstrip("/")
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"ZarrTarget({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    # -- locations ------------------------------------------------------------------------
    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs

    @property
    def path(self) -> str:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[1]

    @property
    def staging_url(self) -> str:
        return self.url + STAGING_SUFFIX

    @property
    def staging_path(self) -> str:
        return self.path + STAGING_SUFFIX

    @property
    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                          else (self.fs.protocol,))

    def _store(self, url: str, read_only: bool = False) -> Any:
        if self.is_local:
            return zarr.storage.LocalStore(fsspec.core.url_to_fs(url)[1], read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=self.storage_options, read_only=read_only
        )

    def _state(self, *parts: str) -> str:
        return "/".join((self.staging_path, STATE_DIR, *parts))

    def _write_text(self, path: str, text: str) -> None:
        self.fs.mkdirs(os.path.dirname(path), exist_ok=True)
        with self.fs.open(path, "w") as fh:
            fh.write(text)

    def exists(self) -> bool:
        """Whether a published store is at ``url``."""
        return bool(self.fs.exists(self.path + "/zarr.json"))

    # -- build lifecycle ------------------------------------------------------------------
    def prepared_fingerprint(self) -> str | None:
        """Fingerprint of a prepared staging store, if one is there."""
        path = self._state("prepared")
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as fh:
            return str(fh.read()).strip()

    def prepare(self, schema: TargetSchema, static: Mapping[str, np.ndarray],
                chunks: Mapping[str, int], fingerprint: str, *, grow: bool = False) -> bool:
        """Write the layout (or, with ``grow``, a grown copy of the published store) to
        staging; returns False if already prepared by the same plan (resume), True if written
        now.  An unfinished build of another plan is reported and replaced."""
        if self.prepared_fingerprint() == fingerprint:
            log.info("resuming the build in %s", self.staging_url)
            return False
        if self.fs.exists(self.staging_path):
            log.warning("discarding an unfinished build of another plan in %s", self.staging_url)
            self.fs.rm(self.staging_path, recursive=True)
        self.__dict__.pop("_group", None)
        if grow:
            self._copy_tree(self.path, self.staging_path)
            state = f"{self.staging_path}/{STATE_DIR}"
            if self.fs.exists(state):  # left by a publish that stopped before removing it
                self.fs.rm(state, recursive=True)
            grow_group(self._open_group(self.staging_url), schema, static)
        else:
            template = template_dataset(schema, static, chunks)
            template.to_zarr(
                self._store(self.staging_url), mode="w", compute=False, zarr_format=3,
                consolidated=False, encoding=layout_encoding(schema, chunks),
            )
        self._write_text(self._state("prepared"), fingerprint)
        return True

    def _open_group(self, url: str) -> zarr.Group:
        # never through consolidated metadata: a grown copy's is stale until finalize
        return zarr.open_group(self._store(url), mode="r+", zarr_format=3, use_consolidated=False)

    @cached_property
    def _group(self) -> zarr.Group:
        return self._open_group(self.staging_url)

    def write(self, name: str, key: tuple[slice, ...], data: np.ndarray) -> int:
        """Write ``data`` into variable ``name`` at ``key`` of the staging store."""
        arr = self._group[name]
        assert isinstance(arr, zarr.Array)
        arr[key] = data
        return int(data.nbytes)

    def is_done(self, task_key: str) -> bool:
        return bool(self.fs.exists(self._state("done", task_key)))

    def done_tasks(self) -> set[str]:
        path = self._state("done")
        if not self.fs.exists(path):
            return set()
        return {os.path.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False)}

    def mark_done(self, task_key: str) -> None:
        self._write_text(self._state("done", task_key), "")

    def finalize(self, attrs: Mapping[str, Any], attr_types: Mapping[str, Any]) -> None:
        """Add ``arcoforge:*`` attributes, consolidate metadata, publish to ``url``."""
        if not self.fs.exists(self.staging_path):
            if not self.exists():
                raise TargetError(f"{self.url}: nothing to finalize (no build in progress); "
                                  "run the build again")
            if self.fs.exists(f"{self.path}/{STATE_DIR}"):  # a publish that stopped late
                self.fs.rm(f"{self.path}/{STATE_DIR}", recursive=True)
            return
        if not attrs.get(VERSION):
            raise TargetError(f"{self.url}: finalize needs the version to publish "
                              f"({VERSION!r}, from arcoforge.forge.versions)")
        group = self._open_group(self.staging_url)
        json_attrs, _ = attrs_to_json(attrs)
        json_attrs[ATTR_TYPES] = dict(attr_types)
        group.attrs.update(json_attrs)
        with warnings.catch_warnings():
            # our .arcoforge state folder is not zarr; consolidated metadata is what xarray reads
            warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
            zarr.consolidate_metadata(self._store(self.staging_url), zarr_format=3)
        self.publish()

    def publish(self) -> None:
        """Move the staging store to ``url``, replacing a previously published store.

        The build's state folder goes last, once the store is in place, so a build killed
        during publishing resumes (it finds its finished tasks) instead of starting over."""
        src, dst = self.staging_path, self.path
        if self.is_local:
            old = None
            if os.path.exists(dst):
                old = f"{dst}.arcoforge-old-{uuid.uuid4().hex[:8]}"
                os.rename(dst, old)
            os.rename(src, dst)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        else:
            if self.fs.exists(dst):
                self.fs.rm(dst, recursive=True)
            self.fs.copy(src, dst, recursive=True)
            self.fs.rm(src, recursive=True)
        state = f"{dst}/{STATE_DIR}"
        if self.fs.exists(state):
            self.fs.rm(state, recursive=True)
        log.info("published %s", self.url)

    def discard(self) -> None:
        """Remove the staging store (an abandoned build); the published store is untouched."""
        if self.fs.exists(self.staging_path):
            self.fs.rm(self.staging_path, recursive=True)
        self.__dict__.pop("_group", None)

    def unfinished_location(self) -> str | None:
        """The staging store, when an unfinished build left one."""
        return self.staging_url if self.fs.exists(self.staging_path) else None

    # -- workers ---------------------------------------------------------------------------
    def fork_for_workers(self) -> ZarrTarget:
        """Any copy may write: workers get the target itself."""
        return self

    def merge(self, forks: Iterable[Any], checkpoint: bool = True) -> None:
        """Nothing to merge: workers wrote straight into the staging store."""

    # -- what is published -----------------------------------------------------------------
    def _attrs_at(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(path.rstrip("/") + "/zarr.json", "rb") as fh:
                doc = json.loads(fh.read())
        except FileNotFoundError:
            return None
        return dict(doc.get("attributes") or {})

    def published_attrs(self) -> dict[str, Any] | None:
        """Root attributes of the store published at ``url`` (None if there is none)."""
        return self._attrs_at(self.path)

    def _current_version(self, attrs: Mapping[str, Any] | None) -> str | None:
        if attrs is None:
            return None
        return format_version(str(attrs.get(VERSION) or "1.0"))  # built before versions: 1.0

    def _archived(self) -> list[str]:
        vdir = self.path + VERSIONS_SUFFIX
        if not self.fs.exists(vdir):
            return []
        names = [os.path.basename(p.rstrip("/")) for p in self.fs.ls(vdir, detail=False)]
        return sorted_versions(n for n in names if is_version(n) and not n.startswith("v"))

    def versions(self) -> list[VersionInfo]:
        """The archived versions under ``<url>.versions/``, then the one at ``url`` (latest)."""
        attrs = self.published_attrs()
        current = self._current_version(attrs)
        out = []
        for v in self._archived():
            if v == current:
                continue
            old = self._attrs_at(f"{self.path}{VERSIONS_SUFFIX}/{v}") or {}
            out.append(VersionInfo(v, f"{self.url}{VERSIONS_SUFFIX}/{v}", old.get(CREATED)))
        if attrs is not None and current is not None:
            out.append(VersionInfo(current, self.url, attrs.get(CREATED), True))
        return out

    def keep_version(self, version: str) -> None:
        """Archive the store now at ``url`` as ``<url>.versions/<version>/`` (idempotent)."""
        vdir = self.path + VERSIONS_SUFFIX
        dest = f"{vdir}/{format_version(version)}"
        if self.fs.exists(dest) or not self.exists():
            return
        tmp = f"{vdir}/.partial-{version}-{uuid.uuid4().hex[:8]}"
        self._copy_tree(self.path, tmp)
        self.fs.mv(tmp, dest, recursive=True)
        log.info("kept version %s of %s at %s", version, self.url, dest)

    def drop_version(self, version: str) -> None:
        """Remove the archived copy of ``version`` (the store at ``url`` is never removed)."""
        dest = f"{self.path}{VERSIONS_SUFFIX}/{format_version(version)}"
        if self.fs.exists(dest):
            self.fs.rm(dest, recursive=True)

    def _copy_tree(self, src: str, dst: str) -> None:
        """Copy a store: hard links on a local disk (no bytes copied), else a copy."""
        if self.is_local:
            for root, _dirs, files in os.walk(src):
                rel = os.path.relpath(root, src)
                os.makedirs(os.path.join(dst, rel), exist_ok=True)
                for name in files:
                    try:  # zarr replaces files (write + rename), so links are never modified
                        os.link(os.path.join(root, name), os.path.join(dst, rel, name))
                    except OSError:
                        shutil.copy2(os.path.join(root, name), os.path.join(dst, rel, name))
        else:
            self.fs.copy(src, dst, recursive=True)

    def open(self, version: str | None = None, chunks: Any = None) -> xr.Dataset:
        """``xr.open_zarr(..., decode_cf=False)`` of the latest version or of ``version``."""
        url = self.url
        if version is not None:
            wanted = format_version(version)
            listed = self.versions()
            found = [v.location for v in listed if v.version == wanted]
            if not found:
                raise NotFoundError(
                    f"{self.url} has no version {wanted!r}; available: "
                    f"{[v.version for v in listed] or 'none'} (older minor versions are removed "
                    "by retention)")
            url = found[0]
        with warnings.catch_warnings():
            # arcoforge writes consolidated metadata on purpose (one read opens the whole
            # store); zarr warns on every open that it is not (yet) part of the v3 spec
            warnings.filterwarnings("ignore", message="Consolidated metadata", module="zarr")
            return xr.open_zarr(url, decode_cf=False, consolidated=True, chunks=chunks,
                                storage_options=self.storage_options or None, zarr_format=3)

    # -- locking -----------------------------------------------------------------------------
    def lock_location(self) -> tuple[str, dict[str, Any]]:
        """``<url>.arcoforge-lock``, on the target's own storage."""
        return self.url + LOCK_SUFFIX, dict(self.storage_options)


def describe_attr_types(schema: TargetSchema) -> dict[str, dict[str, str]]:
    """Numpy types of every numeric attribute, so readers can restore them exactly.

    Zarr stores attributes as JSON, which forgets that a ``scale_factor`` was float32; xarray then
    decodes packed int16 data to float64 instead of the float32 the source files give.
    """
    out: dict[str, dict[str, str]] = {}
    _, g = attrs_to_json(schema.attrs)
    if g:
        out[""] = g
    for name, var in schema.variables.items():
        _, t = attrs_to_json(var.attrs)
        if t:
            out[name] = t
    return out

