"""Plain Zarr v3 target at any fsspec URL, built in a staging store and published at the end.

Layout while building::

    <url>.arcoforge-staging/          the store being written (invisible under <url>)
        .arcoforge/fingerprint        plan fingerprint, for resume
        .arcoforge/prepared           marker: metadata and static variables written
        .arcoforge/done/<task key>    marker: a store task's chunks are all written

``finalize`` writes provenance attributes, consolidates metadata, removes the markers and only
then moves the staging store to ``<url>``.  Readers of ``<url>`` see the previous published store
until that moment.  Re-running the same build reuses the staging store: finished tasks are
skipped, and their chunk bytes are those an uninterrupted build writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import fsspec
import numpy as np
import xarray as xr
import zarr

from arcoforge.forge.schema import TargetSchema, attrs_to_json

__all__ = ["ZarrTarget", "template_dataset"]

log = logging.getLogger("arcoforge.forge.targets.zarr")

STATE_DIR = ".arcoforge"


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


class ZarrTarget:
    """A Zarr v3 store at ``url`` (local path or fsspec URL)."""

    kind = "zarr"

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
        return self.url + ".arcoforge-staging"

    @property
    def staging_path(self) -> str:
        return self.path + ".arcoforge-staging"

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
                chunks: Mapping[str, int], fingerprint: str) -> bool:
        """Write metadata and static variables to staging; returns False if already prepared
        by the same plan (resume), True if written now."""
        if self.prepared_fingerprint() == fingerprint:
            log.info("resuming the build in %s", self.staging_url)
            return False
        if self.fs.exists(self.staging_path):
            log.warning("discarding an unfinished build of another plan in %s", self.staging_url)
            self.fs.rm(self.staging_path, recursive=True)
        template = template_dataset(schema, static, chunks)
        encoding: dict[str, dict[str, Any]] = {}
        for name, var in schema.variables.items():
            encoding[name] = {
                "chunks": tuple(chunks.get(d, n) for d, n in zip(var.dims, var.shape)),
            }
            if "_FillValue" not in var.attrs:
                encoding[name]["_FillValue"] = None  # the source has none; don't invent one
        template.to_zarr(
            self._store(self.staging_url), mode="w", compute=False, zarr_format=3,
            consolidated=False, encoding=encoding,
        )
        self._write_text(self._state("prepared"), fingerprint)
        return True

    @cached_property
    def _group(self) -> zarr.Group:
        return zarr.open_group(self._store(self.staging_url), mode="r+", zarr_format=3)

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
        group = zarr.open_group(self._store(self.staging_url), mode="r+", zarr_format=3)
        json_attrs, _ = attrs_to_json(attrs)
        json_attrs["arcoforge:attr_types"] = dict(attr_types)
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
        """Remove the staging store (an abandoned build)."""
        if self.fs.exists(self.staging_path):
            self.fs.rm(self.staging_path, recursive=True)


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


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
