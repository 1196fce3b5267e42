"""The published identity of a dataset, for cache keys: what must change when its values change.

:func:`dataset_identity` looks under every variable of a dataset for the storage that holds it and
names each one by the cheapest identity that changes whenever its values do:

1. an **Icechunk** session: its snapshot id (a session with uncommitted changes gets a new, never
   repeated identity, so nothing it reads is ever reused);
2. a store **built by arcoforge** (Zarr, any fsspec URL): the ``arcoforge:version``,
   ``arcoforge:fingerprint``, ``arcoforge:created`` and ``arcoforge:recipe_hash`` attributes of its
   group, read from the store itself when the identity is computed (so a new version published at
   the same path is seen even through a dataset opened before it);
3. any **other Zarr store**: on a local disk, the relative path, size and modification time (ns) of
   every file (past :data:`WALK_LIMIT` files, of its metadata files only); behind an fsspec URL,
   size and modification time / ETag of its metadata documents; in memory, a checksum of its bytes;
4. a **file source** (``encoding["source"]``: NetCDF, HDF5, GRIB): its size and modification time.

Limits: a non-arcoforge store behind a URL rewritten in place without touching its metadata, or a
huge local one rewritten in place below its metadata, keeps its identity: give such datasets an
explicit identity (``SampleStream(..., dataset_id=...)`` / ``ArraySource(dataset_id=...)``, e.g. a
version string or a snapshot id), which then replaces :func:`dataset_identity` entirely.
Nothing here reads array data, except the bytes of in-memory Zarr stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

from arcoforge.provenance import CREATED, FINGERPRINT, RECIPE_HASH, VERSION

__all__ = ["WALK_LIMIT", "dataset_identity", "published_identity", "stored_in_zarr"]

#: files of a local, non-arcoforge Zarr store whose size and mtime are hashed (then metadata
#: only); about 0.5 s for 10,000 files on a slow overlay disk
WALK_LIMIT = 20_000
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_INFO_KEYS = ("size", "mtime", "LastModified", "last_modified", "ETag", "etag", "created",
              "generation", "md5Hash")


def published_identity(attrs: Any) -> str | None:
    """``version|fingerprint|created|recipe_hash`` from a group's ``arcoforge:*`` attributes,
    or None when the attributes carry neither a version nor a fingerprint."""
    attrs = attrs or {}
    if not attrs.get(VERSION) and not attrs.get(FINGERPRINT):
        return None
    return json.dumps([str(attrs.get(k) or "") for k in (VERSION, FINGERPRINT, CREATED,
                                                        RECIPE_HASH)])


def dataset_identity(ds: Any) -> str:
    """Identity of the data behind ``ds`` (a Dataset or DataArray) for cache keys.

    Built from the storage under its variables (see the module docstring: Icechunk snapshot
    id, arcoforge version + fingerprint, else a cheap listing of sizes and mtimes), or, when
    no Zarr store is found under them, from the ``arcoforge:*`` attributes of ``ds`` itself.
    Two calls return the same string exactly when none of these changed; data held only in
    memory adds nothing here (the caller hashes it:
    :func:`arcoforge.batch.caches.dataset_token`).
    """
    parts: set[str] = set()
    variables = list(ds.variables.values()) if hasattr(ds, "data_vars") else [
        ds.variable, *(c.variable for c in ds.coords.values())]
    stores: dict[int, Any] = {}
    arrays: list[Any] = []
    for var in variables:
        for za in _zarr_arrays(getattr(var, "_data", None)):
            if id(za.store) not in stores:
                stores[id(za.store)] = za.store
                arrays.append(za)
    store_roots: set[str] = set()
    for za in arrays:
        parts.add(_store_identity(za, store_roots))
    sources = {str(s) for s in [(getattr(ds, "encoding", None) or {}).get("source"),
                                *((v.encoding or {}).get("source") for v in variables)]
               if isinstance(s, str | os.PathLike) and str(s)}
    for src in sorted(sources):
        if os.path.realpath(src) not in store_roots:
            parts.add(_source_identity(src))
    own = published_identity(getattr(ds, "attrs", None))
    if own is not None and not arrays:  # e.g. a loaded copy: its attributes say what it was
        parts.add("attrs:" + own)
    return hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()[:32]


# -- finding the storage under a variable ----------------------------------------------------


def stored_in_zarr(var: Any) -> bool:
    """Whether a variable's values come from a Zarr array (whose store names the data)."""
    return next(_zarr_arrays(getattr(var, "_data", None)), None) is not None


def _zarr_arrays(data: Any) -> Iterator[Any]:
    """zarr.Array objects under xarray's lazy wrappers and dask's ``original-*`` layers."""
    stack = [data]
    seen: set[int] = set()
    while stack and len(seen) < 256:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if _is_zarr_array(obj):
            yield obj
            continue
        inner = getattr(obj, "_array", None) if type(obj).__name__ == "ZarrArrayWrapper" else None
        if inner is not None:
            stack.append(inner)
            continue
        sub = getattr(obj, "array", None)
        if sub is not None and not isinstance(obj, type):
            stack.append(sub)
        layers = getattr(getattr(obj, "dask", None), "layers", None)
        if layers is not None:
            for name, layer in layers.items():
                if str(name).startswith("original-"):
                    stack.extend(list(dict(layer).values())[:8])


def _is_zarr_array(obj: Any) -> bool:
    return (type(obj).__module__.startswith("zarr") and hasattr(obj, "store")
            and hasattr(obj, "metadata") and hasattr(obj, "path"))


# -- identities of stores and files ----------------------------------------------------------


def _store_identity(za: Any, local_roots: set[str]) -> str:
    store = za.store
    session = getattr(store, "session", None)
    snapshot = getattr(session, "snapshot_id", None)
    if snapshot is not None:
        if getattr(session, "has_uncommitted_changes", False):
            return f"icechunk-uncommitted:{uuid.uuid4().hex}"  # never reused
        return f"icechunk:{snapshot}"
    root = getattr(store, "root", None)
    if root is not None:
        local_roots.add(os.path.realpath(os.fspath(root)))
    published = _published_in_store(store, str(getattr(za, "path", "") or ""))
    if published is not None:
        return "published:" + published
    if root is not None:
        return "local:" + _local_tree_identity(os.fspath(root))
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and path is not None:
        return "fsspec:" + _fsspec_metadata_identity(fs, str(path), str(za.path or ""))
    contents = getattr(store, "_store_dict", None)
    if isinstance(contents, dict):
        return "memory:" + _memory_identity(contents)
    # an unknown kind of store: valid in this process only, for this store object
    return f"store:{type(store).__name__}:{id(store)}:{_PROCESS_NONCE}"


_PROCESS_NONCE = uuid.uuid4().hex


def _published_in_store(store: Any, array_path: str) -> str | None:
    """The arcoforge identity of the nearest group above ``array_path`` that carries one."""
    import zarr

    parts = [p for p in array_path.split("/") if p][:-1]
    for depth in range(len(parts), -1, -1):
        try:
            group = zarr.open_group(store, path="/".join(parts[:depth]), mode="r")
            found = published_identity(dict(group.attrs))
        except Exception:  # noqa: BLE001 - no group there, or not readable: not published
            continue
        if found is not None:
            return found
    return None


def _local_tree_identity(root: str) -> str:
    """Relative path, size and mtime (ns) of the files of a local store (metadata files
    only past :data:`WALK_LIMIT` files)."""
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if count >= WALK_LIMIT:
            dirnames[:] = [d for d in dirnames if d != "c"]  # zarr v3 chunk folders
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if count >= WALK_LIMIT and name not in _METADATA_FILES:
                continue
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            h.update(f"{rel}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
    h.update(b"truncated" if count > WALK_LIMIT else b"complete")
    return h.hexdigest()[:32]


def _fsspec_metadata_identity(fs: Any, root: str, array_path: str) -> str:
    """Size and modification time / ETag of the metadata documents of an fsspec store."""
    fs = getattr(fs, "sync_fs", fs)
    docs = []
    prefixes = {root.rstrip("/"), f"{root.rstrip('/')}/{array_path}".rstrip("/")}
    for prefix in sorted(prefixes):
        for name in sorted(_METADATA_FILES):
            try:
                info = fs.info(f"{prefix}/{name}")
            except Exception:  # noqa: BLE001 - absent (or unreadable): nothing to add
                continue
            docs.append([prefix, name, {k: str(info[k]) for k in _INFO_KEYS if k in info}])
    return hashlib.sha256(json.dumps([root, docs]).encode()).hexdigest()[:32]


def _memory_identity(contents: dict[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(contents):
        value = contents[key]
        raw = value.to_bytes() if hasattr(value, "to_bytes") else bytes(value)
        h.update(f"{key}\0{len(raw)}\0".encode())
        h.update(raw)
    return h.hexdigest()


def _source_identity(src: str) -> str:
    """A source file (or a Zarr folder not seen through its arrays): size and mtime."""
    if "://" not in src or src.startswith("file://"):
        path = src.removeprefix("file://")
        if os.path.isdir(path):
            return f"dir:{src}:" + _local_tree_identity(path)
        try:
            st = os.stat(path)
        except OSError:
            return f"file:{src}:absent"
        return f"file:{src}:{st.st_size}:{st.st_mtime_ns}"
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(src)
        info = fs.info(path)
    except Exception:  # noqa: BLE001 - unreachable now: the URL alone is all we know
        return f"url:{src}"
    return f"url:{src}:" + json.dumps({k: str(info[k]) for k in _INFO_KEYS if k in info},
                                     sort_keys=True)
