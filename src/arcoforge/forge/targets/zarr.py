"""Plain Zarr v3 target at any fsspec URL, built in a staging store and published at the end.

Implements :class:`~arcoforge.forge.targets.base.Target`.  Layout::

    <url>/                            the latest published version
    <url>.versions/<MAJOR.MINOR>/     older versions kept by retention, and (local disk) the
                                      latest pinned for readers (hard links)
    <url>.arcoforge-lock              the build lock (:mod:`arcoforge.forge.locking`)
    <url>.arcoforge-staging/          the store being written (invisible under <url>)
        .arcoforge/prepared           marker: layout written, holds the plan fingerprint
        .arcoforge/done/<task key>    marker: a store task's chunks are all written

``finalize`` writes provenance attributes, consolidates metadata, writes the marker
``.arcoforge/finalized`` (from then on the staging store *is* the new version) and only then moves
the staging store to ``<url>``:

* on a local disk by one atomic exchange of the two directories (``renameat2(RENAME_EXCHANGE)``;
  two renames where the kernel or file system lacks it), then the old store is deleted;
* on an object store (no rename) by deleting ``<url>/zarr.json`` first, copying every other
  object, and the root ``zarr.json`` (which holds the consolidated metadata) last.

The ``finalized`` marker travels with the store to ``<url>`` and is removed as the very last step.
So after a crash at any point, :meth:`ZarrTarget.recover` (run under the build lock before any
build, append or abandon) knows which side holds the new version and completes the publish
(never renumbers it); leftovers (``.arcoforge-old-*``, ``*.partial`` files, incomplete archived
versions) are removed.  Readers through arcoforge (:meth:`ZarrTarget.open`) see the complete old or
the complete new version at every instant: while ``<url>/zarr.json`` is missing mid-publish they
read the finalized staging store.  A raw ``xr.open_zarr(url)`` sees the old store, the new one, or
(only on an object store, mid-publish) no store -- never a mix.

Readers through arcoforge keep the version they opened on a local disk: every publish also links
the new version into ``<url>.versions/<MAJOR.MINOR>/`` (hard links, no bytes copied; zarr
replaces chunk files rather than rewriting them), and :meth:`ZarrTarget.open` reads that pinned
folder, which no later publish changes.  Retention first retires an old version (no longer
listed, still readable) and removes it ``$ARCOFORGE_RETENTION_GRACE`` seconds later, so its
readers never find its chunks gone (zarr would read them as fill values).  A raw
``xr.open_zarr(url)`` -- and any reader of a store on an object store, where links do not
exist -- reads ``<url>`` itself: held open across a publish it reads chunks of the new version
through old metadata; readers that must keep their version there use an Icechunk target
(``icechunk://``, :attr:`transactional`).  Writing into a published store with other tools
(``to_zarr(region=...)``) makes no new version: arcoforge's readers keep reading the pinned,
published one, and ``verify`` (which reads the live URL, :func:`live_reads`) reports the
difference.

Re-running the same build reuses the staging store: finished tasks are skipped, and their chunk
bytes are those an uninterrupted build writes.  An append (``prepare(..., grow=True)``) starts
from a copy of the published store (hard links on a local disk: zarr replaces chunk files rather
than modifying them, so the published store is never changed).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any, ClassVar

import fsspec  # type: ignore[import-untyped]
import numpy as np
import xarray as xr
import zarr

from arcoforge.errors import NotFoundError, TargetError
from arcoforge.forge.groups import group_attr_types, write_attr_types, write_group_attrs
from arcoforge.forge.schema import TargetSchema, attrs_to_json
from arcoforge.forge.targets.base import LOCK_SUFFIX, ZARR_MEDIA_TYPE
from arcoforge.forge.versions import VersionInfo, format_version, is_version, sorted_versions
from arcoforge.provenance import ATTR_TYPES, CREATED, VERSION
from arcoforge.quiet import expected_warnings

__all__ = ["ZarrTarget", "template_dataset", "grow_group", "layout_encoding"]

log = logging.getLogger("arcoforge.forge.targets.zarr")

STATE_DIR = ".arcoforge"
STAGING_SUFFIX = ".arcoforge-staging"
VERSIONS_SUFFIX = ".versions"
#: marker of an archived version that retention removed from the listing (still readable)
RETIRED = ".arcoforge-retired"
#: seconds a retired version stays readable (``$ARCOFORGE_RETENTION_GRACE``, default a day)
RETENTION_GRACE_ENV = "ARCOFORGE_RETENTION_GRACE"


_LIVE_READS: contextvars.ContextVar[bool] = contextvars.ContextVar("arcoforge_live_reads",
                                                                   default=False)


@contextlib.contextmanager
def live_reads() -> Iterator[None]:
    """Within the block, :meth:`ZarrTarget.open` reads the store at ``url`` itself rather than
    its pinned copy: ``verify`` checks what every other reader of the URL sees."""
    token = _LIVE_READS.set(True)
    try:
        yield
    finally:
        _LIVE_READS.reset(token)


def retention_grace() -> float:
    """How long a version that retention removed stays readable by readers that opened it."""
    try:
        return max(0.0, float(os.environ.get(RETENTION_GRACE_ENV, 86400)))
    except ValueError:
        return 86400.0
#: an old store moved aside during a publish on a local disk without an atomic exchange
OLD_INFIX = ".arcoforge-old-"
#: marker in the state folder: the store is complete and is the new version to publish
FINALIZED = "finalized"
#: zarr's temporary files (a write killed before its rename leaves one)
PARTIAL_SUFFIX = ".partial"


def exchange_paths(a: str, b: str) -> bool:
    """Swap directories ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False when the platform or file system cannot (nothing changed)."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), a)


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
        attrs = dict(var.attrs)
        if _is_bytes(var.dtype):
            attrs.pop("_FillValue", None)  # xarray cannot read it back for bytes in Zarr
        data_vars[name] = xr.Variable(var.dims, data, attrs=attrs)
    return xr.Dataset(data_vars, attrs=dict(schema.attrs))


def _is_bytes(dtype: str) -> bool:
    """Fixed-width byte strings (NetCDF char arrays): xarray writes a ``_FillValue`` for them
    to Zarr that it cannot decode again, so they are stored without one (the zarr array's own
    fill value, empty bytes, is what NetCDF's default char fill reads as)."""
    return np.dtype(dtype).kind == "S"


def layout_encoding(schema: TargetSchema, chunks: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """The zarr encoding of every variable: its chunks, and no invented fill value."""
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in schema.variables.items():
        encoding[name] = {
            "chunks": tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape)),
        }
        if "_FillValue" not in var.attrs or _is_bytes(var.dtype):
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
    media_type: ClassVar[str] = ZARR_MEDIA_TYPE

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
        """Whether a published store is at ``url`` (or, mid-publish, finalized in staging)."""
        return bool(self.fs.exists(self._published_path() + "/zarr.json"))

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
        self.recover()  # a finalized staging store is a version: publish it, never discard it
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
            write_group_attrs(self._open_group(self.staging_url), schema.group_attrs)
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
        """Add ``arcoforge:*`` attributes, consolidate metadata, publish to ``url`` (or complete
        a publish that a crash interrupted)."""
        if self.recover():
            return
        if not self.fs.exists(self.staging_path):
            if not self.exists():
                raise TargetError(f"{self.url}: nothing to finalize (no build in progress); "
                                  "run the build again")
            return
        if not attrs.get(VERSION):
            raise TargetError(f"{self.url}: finalize needs the version to publish "
                              f"({VERSION!r}, from arcoforge.forge.versions)")
        self._remove_partial_files(self.staging_path)
        group = self._open_group(self.staging_url)
        json_attrs, _ = attrs_to_json(attrs)
        json_attrs[ATTR_TYPES] = write_attr_types(group, attr_types)  # a grouped store: each its own
        group.attrs.update(json_attrs)
        with expected_warnings():  # our .arcoforge state folder; consolidated metadata
            zarr.consolidate_metadata(self._store(self.staging_url), zarr_format=3)
        self._write_text(self._state(FINALIZED), str(json_attrs[VERSION]))
        self.publish()

    def _remove_partial_files(self, root: str) -> None:
        """Delete zarr's temporary ``*.partial`` files that a killed write left (local disk)."""
        if not self.is_local or not os.path.isdir(root):
            return
        for folder, _dirs, files in os.walk(root):
            for name in files:
                if name.endswith(PARTIAL_SUFFIX):
                    os.unlink(os.path.join(folder, name))

    def _finalized(self, root: str) -> bool:
        return bool(self.fs.exists(f"{root}/{STATE_DIR}/{FINALIZED}"))

    def publish(self) -> None:
        """Move the finalized staging store to ``url``, replacing a previously published store
        (see the module docstring for the order of steps; every step may be repeated)."""
        src, dst = self.staging_path, self.path
        if not self._finalized(src):
            raise TargetError(f"{self.url}: the staging store {self.staging_url} is not "
                              "finalized; run the build again to finish it")
        if self.is_local:
            if not os.path.exists(dst):
                os.rename(src, dst)
            elif not exchange_paths(src, dst):
                old = f"{dst}{OLD_INFIX}{uuid.uuid4().hex[:8]}"
                os.rename(dst, old)
                os.rename(src, dst)
        else:
            if self.fs.exists(f"{dst}/zarr.json"):  # from here on no store is visible at url
                self.fs.rm(f"{dst}/zarr.json")
            if self.fs.exists(dst):
                self.fs.rm(dst, recursive=True)
            self._copy_store(src, dst)  # its root zarr.json last, then the marker
            self.fs.copy(f"{src}/{STATE_DIR}/{FINALIZED}", f"{dst}/{STATE_DIR}/{FINALIZED}")
        self._finish_publish()

    def _finish_publish(self) -> None:
        """The new version is at ``url`` (its ``finalized`` marker with it): remove what is left
        of the old store and the staging store, then the marker."""
        dst = self.path
        if self.fs.exists(self.staging_path):  # the old store (exchanged) or the copied staging
            self.fs.rm(self.staging_path, recursive=True)
        self._remove_old_stores()
        self.fs.rm(f"{dst}/{STATE_DIR}", recursive=True)
        self.__dict__.pop("_group", None)
        self._pin_latest()
        log.info("published %s", self.url)

    def _pin_latest(self) -> None:
        """On a local disk, link the version just published into ``<url>.versions/<v>/`` (hard
        links: no bytes copied) so that :meth:`open` hands readers a folder no later publish
        changes: a reader keeps the version it opened."""
        if not self.is_local:
            return
        self._purge_retired()
        current = self._current_version(self.published_attrs())
        if current is not None:
            self.keep_version(current)

    def _pinned_latest(self) -> str | None:
        """The pinned folder of the latest version (local disk), if there is one."""
        if not self.is_local:
            return None
        current = self._current_version(self.published_attrs())
        if current is None:
            return None
        pinned = f"{self.path}{VERSIONS_SUFFIX}/{current}"
        return pinned if os.path.exists(f"{pinned}/zarr.json") and \
            not os.path.exists(f"{pinned}/{RETIRED}") else None

    def _remove_old_stores(self) -> None:
        if not self.is_local:
            return
        parent, name = os.path.split(self.path)
        for entry in os.listdir(parent or "."):
            if entry.startswith(name + OLD_INFIX):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)

    def recover(self) -> bool:
        """Complete a publish that a crash interrupted and remove leftovers; returns True when a
        publish was completed.  Call it under the build lock before anything else."""
        recovered = False
        if self._finalized(self.path) and self.fs.exists(self.path + "/zarr.json"):
            # the new store is in place (its marker comes after its root zarr.json): clean up
            self._finish_publish()
            recovered = True
        elif self._finalized(self.staging_path):  # complete, not (entirely) moved to url yet
            self.publish()
            recovered = True
        elif self.fs.exists(self.path + "/zarr.json"):
            self._remove_old_stores()
            if self.fs.exists(f"{self.path}/{STATE_DIR}"):  # the rest of a removed marker's folder
                self.fs.rm(f"{self.path}/{STATE_DIR}", recursive=True)
        if (self.fs.exists(self.staging_path) and not self._finalized(self.staging_path)
                and not self.fs.exists(self._state("prepared"))):
            # a prepare killed before its marker (e.g. in an append's copy): nothing resumable
            log.info("removing the unfinished layout of a killed build at %s", self.staging_url)
            self.fs.rm(self.staging_path, recursive=True)
        vdir = self.path + VERSIONS_SUFFIX
        if self.fs.exists(vdir):
            for entry in self.fs.ls(vdir, detail=False):
                if not self.fs.exists(entry.rstrip("/") + "/zarr.json"):  # incomplete copy
                    self.fs.rm(entry, recursive=True)
        if self.fs.exists(self.path + "/zarr.json") and not self._finalized(self.path):
            self._pin_latest()  # a crash may have come between publish and pinning
        return recovered

    def discard(self) -> None:
        """Remove the staging store (an abandoned build); the published store is untouched (a
        publish that a crash interrupted is completed first: that store is a version)."""
        self.recover()
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

    def _published_path(self) -> str:
        """Where the latest version is: ``url``, or mid-publish (``url`` has no store yet) the
        finalized staging store, which already is the new version."""
        if not self.fs.exists(self.path + "/zarr.json") and self._finalized(self.staging_path):
            return self.staging_path
        return self.path

    def published_attrs(self) -> dict[str, Any] | None:
        """Root attributes of the store published at ``url`` (None if there is none)."""
        for _ in range(3):  # a publish may move the store between the check and the read
            attrs = self._attrs_at(self._published_path())
            if attrs is not None or not self._finalized(self.staging_path):
                return attrs
        return None

    def _current_version(self, attrs: Mapping[str, Any] | None) -> str | None:
        if attrs is None:
            return None
        return format_version(str(attrs.get(VERSION) or "1.0"))  # built before versions: 1.0

    def _archived(self) -> list[str]:
        vdir = self.path + VERSIONS_SUFFIX
        if not self.fs.exists(vdir):
            return []
        names = [os.path.basename(p.rstrip("/")) for p in self.fs.ls(vdir, detail=False)]
        return sorted_versions(n for n in names if is_version(n) and not n.startswith("v")
                               and self.fs.exists(f"{vdir}/{n}/zarr.json")
                               and not self.fs.exists(f"{vdir}/{n}/{RETIRED}"))

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
        """Archive the store now at ``url`` as ``<url>.versions/<version>/`` (idempotent; the
        copy's root ``zarr.json`` comes last, so an interrupted copy is never listed)."""
        dest = f"{self.path}{VERSIONS_SUFFIX}/{format_version(version)}"
        if self.fs.exists(dest + "/zarr.json") or not self.fs.exists(self.path + "/zarr.json"):
            return
        if self.fs.exists(dest):
            self.fs.rm(dest, recursive=True)
        self._copy_store(self.path, dest)
        log.info("kept version %s of %s at %s", version, self.url, dest)

    def drop_version(self, version: str) -> None:
        """Remove the archived copy of ``version`` (the store at ``url`` is never removed); its
        root ``zarr.json`` goes first, so a half-removed copy is never listed.

        On a local disk a copy is first *retired* (no longer listed, still readable) and removed
        by a later retention pass once ``$ARCOFORGE_RETENTION_GRACE`` seconds (default a day)
        have passed: a reader that opened it (:meth:`open` hands out the pinned latest version)
        keeps reading it meanwhile instead of finding its chunks gone."""
        dest = f"{self.path}{VERSIONS_SUFFIX}/{format_version(version)}"
        if self.is_local and retention_grace() > 0 and os.path.exists(dest + "/zarr.json"):
            marker = f"{dest}/{RETIRED}"
            if not os.path.exists(marker):
                self._write_text(marker, str(time.time()))
        else:
            self._remove_version_dir(dest)
        self._purge_retired()

    def _purge_retired(self) -> None:
        """Remove retired version folders whose grace period is over."""
        vdir = self.path + VERSIONS_SUFFIX
        if not os.path.isdir(vdir):
            return
        grace = retention_grace()
        for name in os.listdir(vdir):
            marker = os.path.join(vdir, name, RETIRED)
            try:
                with open(marker) as fh:
                    since = float(fh.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if time.time() - since >= grace:
                self._remove_version_dir(os.path.join(vdir, name))

    def _remove_version_dir(self, dest: str) -> None:
        if self.fs.exists(dest + "/zarr.json"):
            self.fs.rm(dest + "/zarr.json")
        if self.fs.exists(dest):
            self.fs.rm(dest, recursive=True)

    def _copy_store(self, src: str, dst: str) -> None:
        """Copy a store but its ``.arcoforge`` state, with the root ``zarr.json`` last (hard
        links on a local disk)."""
        root_doc = f"{src}/zarr.json"
        if self.is_local:
            self._copy_tree(src, dst, skip=("zarr.json", STATE_DIR))
            _link_or_copy(root_doc, f"{dst}/zarr.json")
            return
        files = [f for f in self.fs.find(src) if f != root_doc
                 and not f[len(src):].lstrip("/").startswith(STATE_DIR + "/")]
        if files:
            self.fs.copy(files, [dst + f[len(src):] for f in files])
        self.fs.copy(root_doc, f"{dst}/zarr.json")

    def _copy_tree(self, src: str, dst: str, skip: tuple[str, ...] = ()) -> None:
        """Copy a store: hard links on a local disk (no bytes copied), else a copy; ``skip``
        names top-level entries to leave out."""
        if self.is_local:
            for root, dirs, files in os.walk(src):
                rel = os.path.relpath(root, src)
                if rel == ".":
                    dirs[:] = [d for d in dirs if d not in skip]
                    files = [f for f in files if f not in skip]
                os.makedirs(os.path.join(dst, rel), exist_ok=True)
                for name in files:
                    _link_or_copy(os.path.join(root, name), os.path.join(dst, rel, name))
        else:
            self.fs.copy(src, dst, recursive=True)

    def open(self, version: str | None = None, chunks: Any = None,
             group: str | None = None) -> xr.Dataset:
        """``xr.open_zarr(..., decode_cf=False)`` of the latest version or of ``version`` (of
        its Zarr group ``group``, if given)."""
        url = self.url
        path = self._published_path()
        if path != self.path:  # mid-publish: the finalized staging store is the new version
            url = self.staging_url
        elif version is None and not _LIVE_READS.get():  # a local store: its pinned copy
            url = self._pinned_latest() or url
        if version is not None:
            wanted = format_version(version)
            listed = self.versions()
            found = [v.location for v in listed if v.version == wanted]
            if not found:
                raise NotFoundError(
                    f"{self.url} has no version {wanted!r}; available: "
                    f"{[v.version for v in listed] or 'none'} (older minor versions are removed "
                    "by retention)")
            url = found[0] if found[0] != self.url else url
        with expected_warnings():  # consolidated metadata, written on purpose
            return xr.open_zarr(url, decode_cf=False, consolidated=True, chunks=chunks,
                                storage_options=self.storage_options or None, zarr_format=3,
                                group=group or None)

    def zarr_store(self) -> Any:
        """A read-only zarr store of the published store at :attr:`url`."""
        return self._store(self.url, read_only=True)

    # -- locking -----------------------------------------------------------------------------
    def lock_location(self) -> tuple[str, dict[str, Any]]:
        """``<url>.arcoforge-lock``, on the target's own storage."""
        return self.url + LOCK_SUFFIX, dict(self.storage_options)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` as ``dst`` (zarr replaces files, so links are never modified), or copy
    it where links are not possible."""
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except OSError:
        shutil.copy2(src, dst)


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
    out.update(group_attr_types(schema.group_attrs))  # keyed "<group>/"
    return out

