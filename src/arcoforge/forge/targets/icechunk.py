"""Icechunk target: a build is a transaction on a build branch, published as ONE commit on main.

Implements :class:`~arcoforge.forge.targets.base.Target`.  Lifecycle of a build (``branch`` is
``"main"`` unless told otherwise)::

    prepare    create branch ``arcoforge-build`` at main's tip (the *base*), write the template
               (metadata, static variables) -- or, for an append, grow main's arrays -- in a
               writable session and commit it: commit B
    store      tasks write chunks into the session; every ``checkpoint_tasks`` finished tasks or
               ``checkpoint_seconds`` the session is *amended* into B, with the finished task keys
               in B's commit metadata -- a task marker is committed with its chunks or not at all
    finalize   add the provenance attributes, amend B a last time (metadata: provenance, status
               ``finished``), move main from the base to B (``reset_branch(..., from_snapshot_id=
               base)``: fails if someone else moved main), tag ``v<MAJOR.MINOR>`` (the version
               given in the attributes), delete the build branch

Because B is amended rather than followed by new commits, main gains exactly one commit per build,
whose parent is the previous version.  Readers of main see the previous version until the reset.
A killed build resumes from B's last checkpoint (same plan fingerprint and unchanged base), and a
build killed inside finalize completes the remaining steps when run again.

There is a single committer: the object created in the coordinating process.  Copies made by
pickling (worker processes) refuse to write, except *forks* from :meth:`IcechunkTarget.fork_for_workers`,
which carry an Icechunk ``ForkSession`` and are merged back with :meth:`IcechunkTarget.merge`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import xarray as xr
import zarr

from arcoforge.errors import NotFoundError, SingleCommitterError, TargetError
from arcoforge.forge.groups import write_attr_types, write_group_attrs
from arcoforge.forge.schema import TargetSchema, attrs_to_json
from arcoforge.forge.targets.base import ICECHUNK_MEDIA_TYPE, ICECHUNK_SCHEME, LOCK_SUFFIX
from arcoforge.forge.targets.zarr import (
    grow_group,
    layout_encoding,
    template_dataset,
)
from arcoforge.forge.versions import VersionInfo, format_version, icechunk_versions, tag_name
from arcoforge.provenance import ATTR_TYPES, BASE, BUILD, DONE, FINGERPRINT, RECIPE_HASH, VERSION

__all__ = ["IcechunkTarget", "SingleCommitterError", "open_repository", "BUILD_BRANCH"]

log = logging.getLogger("arcoforge.forge.targets.icechunk")

BUILD_BRANCH = "arcoforge-build"
SCHEME = ICECHUNK_SCHEME

# commit metadata keys
_STATUS = BUILD
_FP = FINGERPRINT
_BASE = BASE
_DONE = DONE
VERSION_KEY = VERSION


def open_repository(target: Any, create: bool = False) -> Any:
    """The :class:`icechunk.Repository` for an ``icechunk://<path>`` URL or a repository."""
    import icechunk

    from arcoforge.quiet import quiet_icechunk

    quiet_icechunk()  # its Rust WARN lines say nothing a user can act on (ARCOFORGE_DEBUG=1)
    if not isinstance(target, str | os.PathLike):
        return target
    url = os.fspath(target)
    path = url[len(SCHEME):] if url.startswith(SCHEME) else url
    storage = icechunk.local_filesystem_storage(os.path.abspath(path))
    access = virtual_chunk_access(storage)  # virtual stores: authorize their containers
    if create:
        return icechunk.Repository.open_or_create(storage, authorize_virtual_chunk_access=access)
    if not icechunk.Repository.exists(storage):
        raise TargetError(f"no Icechunk repository at {url}")
    return icechunk.Repository.open(storage, authorize_virtual_chunk_access=access)


def virtual_chunk_access(storage: Any) -> dict[str, Any] | None:
    """Credentials for the virtual chunk containers configured in the repository at
    ``storage`` (None when it has none, or does not exist yet), so that reading a virtual
    store needs no extra steps (see :mod:`arcoforge.forge.targets.virtual`)."""
    import icechunk

    from arcoforge.forge.targets.virtual import authorize

    try:
        config = icechunk.Repository.fetch_config(storage)
    except Exception:  # noqa: BLE001 - no repository there yet
        return None
    containers = dict(getattr(config, "virtual_chunk_containers", None) or {}) if config else {}
    return authorize(containers) or None


def describe_repository(repo: Any) -> str:
    """A display name for a repository (never credentials)."""
    fields = {}
    for line in str(repo.storage).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    kind = fields.get("type", "").split()[0].lower() if fields.get("type") else ""
    if "bucket" in fields:
        prefix = fields.get("prefix", "")
        return f"icechunk+{kind or 's3'}://{fields['bucket']}/{prefix}".rstrip("/")
    return "icechunk:<repository>"


class _RWLock:
    """Many writers of chunks (shared) or one committer (exclusive)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class IcechunkTarget:
    """Build into an Icechunk repository (``icechunk://<local path>`` or a ``Repository``)."""

    #: workers in other processes write into forks that the coordinator merges
    single_committer: ClassVar[bool] = True
    #: a build is one commit on main; readers of an older snapshot keep reading it
    transactional: ClassVar[bool] = True
    #: versions are tags in the repository's history: nothing to archive
    archives_old_versions: ClassVar[bool] = False
    media_type: ClassVar[str] = ICECHUNK_MEDIA_TYPE

    def __init__(self, target: Any, storage_options: Mapping[str, Any] | None = None, *,
                 branch: str = "main", build_branch: str = BUILD_BRANCH,
                 checkpoint_tasks: int = 16, checkpoint_seconds: float = 10.0) -> None:
        if isinstance(target, str | os.PathLike):
            url = os.fspath(target)
            self.url = url if url.startswith(SCHEME) else SCHEME + url
            self._repo_arg: Any = self.url
        else:
            self._repo_arg = target
            self.url = describe_repository(target)
        self.storage_options = dict(storage_options or {})
        self.branch = branch
        self.build_branch = build_branch
        self.checkpoint_tasks = int(checkpoint_tasks)
        self.checkpoint_seconds = float(checkpoint_seconds)
        #: per-variable zarr encodings that replace the layout's at prepare (a virtual
        #: store's arrays take the chunks and codecs of the files they reference)
        self.layout_overrides: dict[str, dict[str, Any]] = {}
        self._init_runtime(copy=False)

    def _init_runtime(self, copy: bool) -> None:
        self._copy = copy
        self._repo: Any = None
        self._rw = _RWLock()
        self._mutex = threading.RLock()
        self._session: Any = None
        self._group: zarr.Group | None = None
        self._loaded = False
        self._mode = "none"  # none | building | finished | published
        self._fp: str | None = None
        self._base: str | None = None
        self._done: set[str] = set()
        self._pending = 0
        self._last_commit = time.monotonic()
        self._fork: Any = None
        self._fork_done: set[str] = set()

    def __repr__(self) -> str:
        return f"IcechunkTarget({self.url!r})"

    # -- pickling: copies never commit -------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        self._ensure_loaded()
        return {
            "repo": self._repo_arg, "url": self.url, "storage_options": self.storage_options,
            "branch": self.branch, "build_branch": self.build_branch,
            "checkpoint_tasks": self.checkpoint_tasks,
            "checkpoint_seconds": self.checkpoint_seconds,
            "state": (self._mode, self._fp, self._base, sorted(self._done)),
            "fork": self._fork, "fork_done": sorted(self._fork_done),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._repo_arg = state["repo"]
        self.url = state["url"]
        self.storage_options = state["storage_options"]
        self.branch = state["branch"]
        self.build_branch = state["build_branch"]
        self.checkpoint_tasks = state["checkpoint_tasks"]
        self.checkpoint_seconds = state["checkpoint_seconds"]
        self.layout_overrides = {}
        self._init_runtime(copy=True)
        self._mode, self._fp, self._base, done = state["state"]
        self._done = set(done)
        self._loaded = True
        self._fork = state["fork"]
        self._fork_done = set(state["fork_done"])

    # -- repository helpers ------------------------------------------------------------------
    @property
    def repo(self) -> Any:
        if self._repo is None:
            self._repo = open_repository(self._repo_arg, create=True)
        return self._repo

    def _tip(self, branch: str) -> str | None:
        if branch not in self.repo.list_branches():
            return None
        return str(self.repo.lookup_branch(branch))

    def _metadata(self, snapshot_id: str) -> dict[str, Any]:
        return dict(self.repo.lookup_snapshot(snapshot_id).metadata or {})

    def _ensure_loaded(self) -> None:
        with self._mutex:
            if not self._loaded:
                self._load_state()

    def _load_state(self) -> None:
        """Read where a build stands from the build branch's tip commit."""
        self._loaded = True
        self._mode, self._fp, self._base, self._done = "none", None, None, set()
        main = self._tip(self.branch)
        build = self._tip(self.build_branch)
        if build is not None and build != main:
            md = self._metadata(build)
            if md.get(_STATUS) in ("in-progress", "finished") and md.get(_BASE) == main:
                self._mode = "building" if md[_STATUS] == "in-progress" else "finished"
                self._fp, self._base = md.get(_FP), md.get(_BASE)
                self._done = set(md.get(_DONE) or [])
                return
            log.warning("the build branch %r of %s is stale (its base is not %s's tip)",
                        self.build_branch, self.url, self.branch)
            return
        if main is not None:
            md = self._metadata(main)
            if md.get(_STATUS) == "finished" and md.get(_FP):
                # already published: resuming it only completes the tag/cleanup steps
                self._mode, self._fp, self._base = "published", md[_FP], md.get(_BASE)

    def _new_session(self) -> None:
        self._session = self.repo.writable_session(self.build_branch)
        self._group = None
        self._last_commit = time.monotonic()

    def _zgroup(self) -> zarr.Group:
        if self._fork is not None:
            return zarr.open_group(self._fork.store, mode="r+", zarr_format=3)
        if self._copy:
            raise SingleCommitterError(
                f"{self.url}: this is a copy of the Icechunk target in another process; an "
                "Icechunk build has a single committer. Run the local engine with threads "
                "(processes=False), or give workers target.fork_for_workers() and merge them "
                "back with target.merge(...)."
            )
        with self._mutex:
            if self._session is None:
                if self._mode != "building":
                    raise TargetError(f"{self.url}: no build in progress; call prepare() first")
                self._new_session()
            if self._group is None:
                self._group = zarr.open_group(self._session.store, mode="r+", zarr_format=3)
            return self._group

    def _build_metadata(self, status: str, extra: Mapping[str, Any] | None = None
                        ) -> dict[str, Any]:
        md: dict[str, Any] = {_STATUS: status, _FP: self._fp, _BASE: self._base}
        if status == "in-progress":
            md[_DONE] = sorted(self._done)
        md.update(extra or {})
        return md

    # -- target protocol ---------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether main holds a published version."""
        main = self._tip(self.branch)
        if main is None:
            return False
        return len(list(itertools.islice(self.repo.ancestry(snapshot_id=main), 2))) > 1

    def prepared_fingerprint(self) -> str | None:
        """Fingerprint of a build in progress, or of a publish that stopped half-way (main
        moved, but the version tag or the build branch's removal is missing).  Read from the
        repository again unless this object is writing a build that is still there (another
        process may have finished or discarded it meanwhile)."""
        with self._mutex:
            if not self._copy and (self._session is None
                                   or self.build_branch not in self.repo.list_branches()):
                self._session = None
                self._group = None
                self._load_state()
        if self._mode == "published":
            return self._fp if self._publish_incomplete() else None
        return self._fp if self._mode != "none" else None

    def _publish_incomplete(self) -> bool:
        main = self._tip(self.branch)
        if main is None:
            return False
        version = self._metadata(main).get(VERSION_KEY)
        return (self.build_branch in self.repo.list_branches()
                or (bool(version) and tag_name(str(version)) not in self.repo.list_tags()))

    def unfinished_location(self) -> str | None:
        """The build branch, when an unfinished build left one."""
        if self.build_branch in self.repo.list_branches():
            return f"branch {self.build_branch!r} of {self.url}"
        return None

    def prepare(self, schema: TargetSchema, static: Mapping[str, np.ndarray],
                chunks: Mapping[str, int], fingerprint: str, *, grow: bool = False) -> bool:
        """Start a build on the build branch (from main's tip; with ``grow``, main's arrays
        grown to ``schema``'s shapes); False when resuming one of the same plan."""
        with self._rw.exclusive(), self._mutex:
            self._load_state()
            if self._mode in ("building", "finished") and self._fp == fingerprint:
                log.info("resuming the build of %s (%d tasks done)", self.url, len(self._done))
                return False
            if self.build_branch in self.repo.list_branches():
                log.warning("discarding an unfinished build of another plan in %s", self.url)
                self.repo.delete_branch(self.build_branch)
            base = self._tip(self.branch)
            if base is None:
                raise TargetError(f"{self.url} has no branch {self.branch!r}")
            self.repo.create_branch(self.build_branch, base)
            self._mode, self._fp, self._base, self._done = "building", fingerprint, base, set()
            self._new_session()
            if grow:
                grow_group(zarr.open_group(self._session.store, mode="r+", zarr_format=3),
                           schema, static)
            else:
                template = template_dataset(schema, static, chunks)
                encoding = layout_encoding(schema, chunks)
                for name, extra in self.layout_overrides.items():  # virtual arrays' codecs
                    encoding.setdefault(name, {}).update(extra)
                template.to_zarr(self._session.store, mode="w", compute=False, zarr_format=3,
                                 consolidated=False, encoding=encoding)
                write_group_attrs(zarr.open_group(self._session.store, mode="r+",
                                                  zarr_format=3), schema.group_attrs)
            self._session.commit("arcoforge: build started",
                                 metadata=self._build_metadata("in-progress"))
            self._new_session()
            return True

    def write(self, name: str, key: tuple[slice, ...], data: np.ndarray) -> int:
        """Write ``data`` into ``name[key]`` in the build session (or this fork)."""
        with self._rw.shared():
            arr = self._zgroup()[name]
            assert isinstance(arr, zarr.Array)
            arr[key] = data
        return int(data.nbytes)

    def is_done(self, task_key: str) -> bool:
        self._ensure_loaded()
        if self._mode in ("finished", "published"):
            return True
        return task_key in self._done or task_key in self._fork_done

    def done_tasks(self) -> set[str]:
        self._ensure_loaded()
        return set(self._done) | self._fork_done

    def mark_done(self, task_key: str) -> None:
        """Record a finished task; it becomes durable with its chunks at the next checkpoint."""
        if self._fork is not None:
            self._fork_done.add(task_key)
            return
        if self._copy:
            self._zgroup()  # raises SingleCommitterError
        with self._mutex:
            self._done.add(task_key)
            self._pending += 1
            due = (self._pending >= self.checkpoint_tasks
                   or time.monotonic() - self._last_commit >= self.checkpoint_seconds)
        if due:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Amend the build commit with everything written and marked so far."""
        with self._rw.exclusive(), self._mutex:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        if self._session is None or not self._session.has_uncommitted_changes:
            self._pending = 0
            return
        self._session.amend("arcoforge: build in progress",
                            metadata=self._build_metadata("in-progress"))
        self._pending = 0
        self._new_session()

    # -- virtual references (additions for arcoforge.forge.virtual) ---------------------------
    def configure_virtual_containers(self, containers: Iterable[Any]) -> None:
        """Make sure the repository's config holds the virtual chunk containers ``containers``
        (:class:`~arcoforge.forge.targets.virtual.ContainerSpec`), saved in the repository so
        that readers find them, and reopen it authorized to read them."""
        import icechunk

        from arcoforge.forge.targets.virtual import authorize

        with self._mutex:
            repo = self.repo
            config = repo.config
            have = dict(config.virtual_chunk_containers or {})
            missing = [c for c in containers if c.prefix not in have]
            if not missing:
                return
            for spec in missing:
                config.set_virtual_chunk_container(spec.container())
            self._repo = icechunk.Repository.open(
                repo.storage, config=config,
                authorize_virtual_chunk_access=authorize(
                    dict(config.virtual_chunk_containers or {})))
            self._repo.save_config()
            self._session = None
            self._group = None

    def write_virtual_refs(self, name: str, refs: list[Any]) -> int:
        """Set virtual chunk references (``icechunk.VirtualChunkSpec``) of array ``name`` in the
        build session (or this fork); returns how many were set."""
        with self._rw.shared():
            store = self._zgroup().store
            failed = store.set_virtual_refs(name, refs, validate_containers=True)  # type: ignore[attr-defined]
        if failed:
            raise TargetError(f"{self.url}: Icechunk refused {len(failed)} virtual references "
                              f"of {name!r} (e.g. chunk {failed[0]}): a source changed since "
                              "its references were made. Build again.")
        return len(refs)

    # -- parallel writers --------------------------------------------------------------------
    def fork_for_workers(self) -> IcechunkTarget:
        """A picklable copy writing into an Icechunk ``ForkSession``.

        Send it (pickled) to workers; each task's worker uses it as its plan's target
        (``run_task`` writes and marks done into the fork) and returns it; the coordinator
        calls :meth:`merge` with the returned copies.  One fork may be shipped to many tasks:
        every unpickled copy is a separate change set.
        """
        with self._rw.exclusive(), self._mutex:
            self._checkpoint_locked()  # a session with uncommitted changes cannot fork
            if self._session is None:
                self._new_session()
            fork = self._session.fork()
        clone: IcechunkTarget = object.__new__(IcechunkTarget)
        clone.__setstate__({**self.__getstate__(), "fork": fork, "fork_done": []})
        return clone

    def merge(self, forks: Iterable[IcechunkTarget], checkpoint: bool = True) -> None:
        """Merge forks returned by workers into the build session (and checkpoint)."""
        with self._rw.exclusive(), self._mutex:
            if self._session is None:
                self._new_session()
            for w in forks:
                if w._fork is None:
                    raise TargetError("merge() takes targets made by fork_for_workers()")
                self._session.merge(w._fork)
                self._done |= w._fork_done
                self._pending += len(w._fork_done)
            if checkpoint:
                self._checkpoint_locked()

    # -- publish -----------------------------------------------------------------------------
    def finalize(self, attrs: Mapping[str, Any], attr_types: Mapping[str, Any]) -> None:
        """Record provenance in one last amend, move main to it, tag the version
        (``attrs["arcoforge:version"]``, numbered by :mod:`arcoforge.forge.versions`)."""
        with self._rw.exclusive(), self._mutex:
            self._ensure_loaded()
            if self._mode == "published":  # completes a publish that stopped half-way
                snap = self._tip(self.branch)
                assert snap is not None
                self._complete_publish(snap, self._metadata(snap).get(VERSION_KEY))
                return
            if self._mode == "finished":
                snap = self._tip(self.build_branch)
                assert snap is not None
                self._complete_publish(snap, self._metadata(snap).get(VERSION_KEY))
                return
            if self._mode != "building":
                raise TargetError(f"{self.url}: nothing to finalize (no build in progress); "
                                  "run the build again")
            if not attrs.get(VERSION_KEY):
                raise TargetError(f"{self.url}: finalize needs the version to publish "
                                  f"({VERSION_KEY!r}, from arcoforge.forge.versions)")
            json_attrs, _ = attrs_to_json(attrs)
            if self._session is None:
                self._new_session()
            group = zarr.open_group(self._session.store, mode="r+", zarr_format=3)
            group.attrs.update({**json_attrs, ATTR_TYPES: write_attr_types(group, attr_types)})
            version = str(json_attrs[VERSION_KEY])
            message = (f"arcoforge: version {version} "
                       f"(recipe {str(json_attrs.get(RECIPE_HASH, ''))[:12]})")
            snap = self._session.amend(message, metadata=self._build_metadata("finished",
                                                                              json_attrs))
            self._session = None
            self._group = None
            self._mode = "finished"
            self._complete_publish(snap, version)

    def _complete_publish(self, snap: str, version: str | None) -> None:
        main = self._tip(self.branch)
        if main != snap:
            if main != self._base:
                raise TargetError(
                    f"{self.url}: branch {self.branch!r} moved during the build (it is at {main}, "
                    f"the build started from {self._base}); nothing was published. Run the build "
                    "again to rebuild on top of the new version."
                )
            self.repo.reset_branch(self.branch, snap, from_snapshot_id=self._base)
        if version:
            tag = tag_name(version)
            if tag not in self.repo.list_tags():
                self.repo.create_tag(tag, snap)
        if self.build_branch in self.repo.list_branches():
            self.repo.delete_branch(self.build_branch)
        self._mode = "published"
        log.info("published %s version %s (snapshot %s)", self.url, version, snap)

    def recover(self) -> bool:
        """Complete a publish that stopped after its last amend: move main to the finished
        build commit, tag it, delete the build branch (the version is the one recorded in the
        commit); True when something was completed."""
        with self._rw.exclusive(), self._mutex:
            if self._copy:
                return False
            self._session = None
            self._group = None
            self._load_state()
            if self._mode == "finished" or (self._mode == "published"
                                            and self._publish_incomplete()):
                branch = self.build_branch if self._mode == "finished" else self.branch
                snap = self._tip(branch)
                assert snap is not None
                self._complete_publish(snap, self._metadata(snap).get(VERSION_KEY))
                return True
            return False

    def discard(self) -> None:
        """Forget an unfinished build (delete the build branch); main is untouched."""
        with self._rw.exclusive(), self._mutex:
            if self.build_branch in self.repo.list_branches():
                self.repo.delete_branch(self.build_branch)
            self._session = None
            self._group = None
            self._loaded = False

    # -- what is published -------------------------------------------------------------------
    def published_attrs(self) -> dict[str, Any] | None:
        """Root attributes of main (None when nothing is published)."""
        if not self.exists():
            return None
        session = self.repo.readonly_session(branch=self.branch)
        return dict(zarr.open_group(session.store, mode="r", zarr_format=3).attrs)

    def versions(self) -> list[VersionInfo]:
        """The version tags ``v<MAJOR.MINOR>``, oldest first."""
        names = icechunk_versions(self.repo)
        out = []
        for v in names:
            snap = self.repo.lookup_tag(tag_name(v))
            info = self.repo.lookup_snapshot(snap)
            created = info.written_at.strftime("%Y-%m-%dT%H:%M:%SZ") if info.written_at else None
            out.append(VersionInfo(v, f"tag {tag_name(v)} ({snap})", created, v == names[-1]))
        untagged = self._untagged_main()
        if untagged is not None:  # a publish that stopped before its tag: main is the version
            version, snap, created = untagged
            out = [VersionInfo(i.version, i.location, i.created) for i in out]
            out.append(VersionInfo(version, f"branch {self.branch} ({snap})", created, True))
        return out

    def _untagged_main(self) -> tuple[str, str, str | None] | None:
        """``(version, snapshot, created)`` of main's tip when it was published by arcoforge
        but its version tag is missing (a publish that stopped before tagging), else None."""
        snap = self._tip(self.branch)
        if snap is None:
            return None
        info = self.repo.lookup_snapshot(snap)
        version = (info.metadata or {}).get(VERSION_KEY)
        if not version or tag_name(str(version)) in self.repo.list_tags():
            return None
        created = info.written_at.strftime("%Y-%m-%dT%H:%M:%SZ") if info.written_at else None
        return format_version(str(version)), str(snap), created

    def keep_version(self, version: str) -> None:
        """Nothing to do: the version's tag keeps it."""

    def drop_version(self, version: str) -> None:
        """Delete the version's tag (its snapshot goes with the next garbage collection)."""
        if tag_name(version) in self.repo.list_tags():
            self.repo.delete_tag(tag_name(version))

    def open(self, version: str | None = None, chunks: Any = None,
             group: str | None = None) -> xr.Dataset:
        """The raw (undecoded) dataset of main, or of version tag ``v<version>`` (of its Zarr
        group ``group``, if given)."""
        repo = self.repo
        if version is not None:
            tag = tag_name(version)
            untagged = self._untagged_main()
            if untagged is not None and untagged[0] == format_version(version):
                return xr.open_zarr(repo.readonly_session(snapshot_id=untagged[1]).store,
                                    decode_cf=False, consolidated=False, zarr_format=3,
                                    chunks=chunks, group=group or None)
            if tag not in repo.list_tags():
                raise NotFoundError(f"{self.url} has no version {version!r}; it has "
                                    f"{icechunk_versions(repo) or 'none'}")
            session = repo.readonly_session(tag=tag)
        else:
            session = repo.readonly_session(branch=self.branch)
        return xr.open_zarr(session.store, decode_cf=False, consolidated=False, zarr_format=3,
                            chunks=chunks, group=group or None)

    def zarr_store(self) -> Any:
        """The read-only store of a session on the build branch (the latest version)."""
        return self.repo.readonly_session(branch=self.branch).store

    # -- locking -----------------------------------------------------------------------------
    def lock_location(self) -> tuple[str, dict[str, Any]] | None:
        """``<path>.arcoforge-lock`` for a repository on a local disk; None for a repository
        object (its storage has no place this process may put a lock file)."""
        if not isinstance(self._repo_arg, str):
            return None
        return self._repo_arg[len(SCHEME):].rstrip("/") + LOCK_SUFFIX, {}
