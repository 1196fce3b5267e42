"""The one contract every target kind implements, its capability flags, and the resolver.

A *target* is where a build goes: a plain Zarr store (:mod:`.zarr`), an Icechunk repository
(:mod:`.icechunk`), and later a store of virtual references.  The rest of the forge -- the
:class:`~arcoforge.forge.bake.Plan`, the engines, versions, locking, append, the catalog -- talks
to a target only through :class:`Target`: it calls protocol methods and asks *capability flags*
(class attributes, like zarr-python's ``Store.supports_writes``), never "which kind is this?".

:func:`resolve_target` turns what users pass (a path or URL, an ``icechunk://`` URL, an
``icechunk.Repository``, or a target object) into a :class:`Target`; it is the only code that
looks at URL schemes or object types.

Lifecycle of a build (every method is safe to call again after a crash)::

    prepared_fingerprint()  is there resumable state of a build, and of which plan?
    prepare(...)            write the empty layout (or grow the published one, for an append)
    write(...) / mark_done  store tasks write chunks, then record that the task is finished
    done_tasks()            the finished tasks (one listing), so a resumed build skips them
    finalize(attrs, types)  add provenance, publish atomically as the new latest version
    recover()               complete a publish that a crash interrupted (run first, under the lock)
    discard()               abandon unfinished state (``arcoforge abandon TARGET``)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from arcoforge.errors import ConfigError, TargetError

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from arcoforge.forge.schema import TargetSchema
    from arcoforge.forge.versions import VersionInfo

__all__ = ["Target", "LockLocation", "resolve_target", "ICECHUNK_SCHEME", "LOCK_SUFFIX",
           "ZARR_MEDIA_TYPE", "ICECHUNK_MEDIA_TYPE"]

#: URL scheme of an Icechunk repository on a local disk
ICECHUNK_SCHEME = "icechunk://"
#: a target's build lock is a file ``<target location><LOCK_SUFFIX>`` next to it
LOCK_SUFFIX = ".arcoforge-lock"
#: media types of the stores (a target's ``media_type``, the STAC asset's ``type``)
ZARR_MEDIA_TYPE = "application/vnd.zarr; version=3"
ICECHUNK_MEDIA_TYPE = "application/vnd.zarr+icechunk"

#: where a target's build lock lives: ``(url, storage_options)``
LockLocation = tuple[str, dict[str, Any]]


@runtime_checkable
class Target(Protocol):
    """What a build writes into, and where its published versions are.

    Capability flags (class attributes; ask them instead of the target's type):
    """

    #: Only the object in the coordinating process may commit.  Workers in other processes
    #: write into forks (:meth:`fork_for_workers`) that the coordinator merges back
    #: (:meth:`merge`) before :meth:`finalize`.  False: any copy of the target may write.
    single_committer: ClassVar[bool]
    #: Publishing is one atomic commit, and a reader that opened the previous version keeps
    #: reading it unchanged (Icechunk): choose such a target when readers hold datasets open
    #: while new versions are published.  False: publishing replaces the store (atomically on
    #: a local disk, so a new open sees the old or the new version), but a dataset opened
    #: before reads the new chunks through its old metadata: readers must reopen (plain Zarr;
    #: archived versions under ``<url>.versions/`` are stable until retention removes them).
    transactional: ClassVar[bool]
    #: A new version replaces the published store, so earlier versions survive only as copies
    #: that :meth:`keep_version` makes before publishing (plain Zarr: ``<url>.versions/``).
    #: False: every version stays addressable in the store's own history (Icechunk tags).
    archives_old_versions: ClassVar[bool]
    #: The media type of the store in a STAC asset.
    media_type: ClassVar[str]

    #: display URL of the target (never credentials)
    url: str
    #: fsspec options of the target's storage
    storage_options: dict[str, Any]

    # -- build lifecycle ------------------------------------------------------------------
    def prepared_fingerprint(self) -> str | None:
        """The plan fingerprint of resumable build state kept by this target (a prepared build,
        or a publish that stopped half-way), or None when there is none."""
        ...

    def prepare(self, schema: TargetSchema, static: Mapping[str, np.ndarray],
                chunks: Mapping[str, int], fingerprint: str, *, grow: bool = False) -> bool:
        """Start a build of plan ``fingerprint``: write the layout of ``schema`` (metadata,
        ``static`` variables).  With ``grow`` (an append), start from the published store
        instead, grow its arrays to ``schema``'s shapes along the concat dimension and write
        the new rows of ``static``.  Returns False when resuming the same plan (nothing
        written); unfinished state of another plan is reported and replaced."""
        ...

    def write(self, name: str, key: tuple[slice, ...], data: np.ndarray) -> int:
        """Write ``data`` into variable ``name`` at ``key``; returns the bytes written."""
        ...

    def is_done(self, task_key: str) -> bool:
        """Whether store task ``task_key`` is finished (its chunks are durable)."""
        ...

    def mark_done(self, task_key: str) -> None:
        """Record that store task ``task_key`` has written all its chunks."""
        ...

    def done_tasks(self) -> set[str]:
        """Keys of all finished store tasks, from one listing."""
        ...

    def finalize(self, attrs: Mapping[str, Any], attr_types: Mapping[str, Any]) -> None:
        """Add ``attrs`` (provenance; ``arcoforge:version``, which is required) and
        ``attr_types`` and publish the build atomically as the latest version (completing a
        publish that stopped half-way)."""
        ...

    def recover(self) -> bool:
        """Complete a publish that a crash interrupted (never renumbering its version) and remove
        what the crash left behind; True when a publish was completed.  Run under the build lock
        before any build, append or abandon; a no-op when nothing was interrupted."""
        ...

    def discard(self) -> None:
        """Abandon unfinished build state (the published versions are untouched)."""
        ...

    def unfinished_location(self) -> str | None:
        """Where resumable state of an unfinished build is kept (for messages), or None."""
        ...

    # -- single committer -----------------------------------------------------------------
    def fork_for_workers(self) -> Target:
        """A picklable copy that workers in other processes write into (``self`` when any copy
        may write); see :attr:`single_committer`."""
        ...

    def merge(self, forks: Iterable[Any], checkpoint: bool = True) -> None:
        """Merge forks returned by workers into this build (no-op without a single
        committer)."""
        ...

    # -- what is published ----------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a published version is there."""
        ...

    def published_attrs(self) -> dict[str, Any] | None:
        """Root attributes of the latest published version (None if nothing is published)."""
        ...

    def versions(self) -> list[VersionInfo]:
        """Published versions, oldest first; the last is the latest."""
        ...

    def keep_version(self, version: str) -> None:
        """Make sure the version published now stays readable after the next publish (see
        :attr:`archives_old_versions`; a no-op otherwise)."""
        ...

    def drop_version(self, version: str) -> None:
        """Remove an older version (retention); the latest version is never dropped."""
        ...

    def open(self, version: str | None = None, chunks: Any = None,
             group: str | None = None) -> xr.Dataset:
        """The raw (undecoded) dataset of the latest version, or of ``version``; of Zarr group
        ``group`` (a grouped build's, e.g. ``"data_01/ku"``) when given."""
        ...

    def zarr_store(self) -> Any:
        """A read-only zarr store of the latest version (what ``xr.open_dataset(store,
        engine="zarr")`` and ``zarr.open_group`` take): a recipe's ``checks`` get it."""
        ...

    # -- locking --------------------------------------------------------------------------
    def lock_location(self) -> LockLocation | None:
        """Where :mod:`arcoforge.forge.locking` keeps this target's build lock, or None for a
        target without a location to put one (an Icechunk repository object)."""
        ...


def _icechunk_repository_type() -> type | None:
    try:
        import icechunk
    except ImportError:
        return None
    return icechunk.Repository  # type: ignore[no-any-return]


def resolve_target(target: Any, storage_options: Mapping[str, Any] | None = None) -> Target:
    """A :class:`Target` for ``target``: a target object (returned as is), an ``icechunk://``
    URL or an ``icechunk.Repository`` (:class:`~.icechunk.IcechunkTarget`), or any other path
    or fsspec URL (a plain Zarr store, :class:`~.zarr.ZarrTarget`).

    This is the only place that looks at URL schemes and object types."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str | os.PathLike):
        url = os.fspath(target)
        _refuse_credentials_in(url)
        if url.startswith(ICECHUNK_SCHEME):
            from arcoforge.forge.targets.icechunk import IcechunkTarget

            return IcechunkTarget(url, storage_options=storage_options)
        from arcoforge.forge.targets.zarr import ZarrTarget

        return ZarrTarget(url, storage_options)
    repository = _icechunk_repository_type()
    if repository is not None and isinstance(target, repository):
        from arcoforge.forge.targets.icechunk import IcechunkTarget

        return IcechunkTarget(target, storage_options=storage_options)
    missing = sorted(n for n in _PROTOCOL_MEMBERS if not hasattr(target, n))
    raise TargetError(
        f"cannot use {target!r} as a target: expected a path or URL of a Zarr store, an "
        f"icechunk:// URL, an icechunk.Repository or an object implementing "
        f"arcoforge.forge.targets.base.Target (it lacks {', '.join(missing) or 'nothing'})"
    )


def _refuse_credentials_in(url: str) -> None:
    """Credentials never travel in a target URL (they would be printed, logged and published as
    the store's address): ``s3://KEY:SECRET@bucket/x`` is refused without echoing either part."""
    scheme, sep, rest = url.partition("://")
    head = rest.split("?", 1)[0]
    if not sep or len(scheme) < 2 or "@" not in head or ":" not in head.rsplit("@", 1)[0]:
        return
    # user:secret@host (a secret may hold '/', so no URL parser is trusted with it)
    safe = f"{scheme}://{head.rsplit('@', 1)[1]}"
    raise ConfigError(
        f"the target URL {safe} carries credentials before '@'; arcoforge never puts secrets in "
        "URLs (they would end up in logs, provenance and the catalog). Give them through the "
        "environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or storage_options read "
        "from it."
    )


_PROTOCOL_MEMBERS = (
    "single_committer", "transactional", "archives_old_versions", "media_type", "url",
    "storage_options", "prepared_fingerprint", "prepare", "write", "is_done", "mark_done",
    "done_tasks", "finalize", "recover", "discard", "unfinished_location", "fork_for_workers", "merge",
    "exists", "published_attrs", "versions", "keep_version", "drop_version", "open",
    "lock_location",
)
