"""Inputs read where they are: OPeNDAP endpoints and Zarr stores.

Most sources are files, fetched whole into the cache and checked (:mod:`.fetch`,
:mod:`.integrity`).  An OPeNDAP endpoint or a Zarr store is not a file: it is opened remotely
by xarray and only the slices a task needs cross the network.  Which inputs are remote is
decided by :func:`~arcoforge.forge.io.formats.remote_engine` (``file_type="opendap"`` or
``"zarr"``; ``dap2://``/``dap4://`` URLs; ``*.zarr`` URLs and local folders that hold Zarr
metadata).

* ``opendap``: DAP2 through the netCDF-C library (xarray's ``netcdf4`` engine) for
  ``http(s)://`` and ``dap2://`` URLs (``dap2://`` means HTTPS, as pydap reads it); DAP4
  (``dap4://``) through pydap.
* ``zarr``: xarray's ``zarr`` engine on a local path, ``file://``, ``s3://``, ``http(s)://``
  (fsspec; ``SourceOptions.storage_options`` are passed on).

The same interfaces as files: :func:`scan_remote` returns a
:class:`~arcoforge.forge.schema.FileSchema` (raw metadata, like
:func:`~arcoforge.forge.io.readers.scan_file`), :class:`~arcoforge.forge.io.readers.RawFile`
reads raw slices of a remote input (it opens one through :func:`open_remote`).

A remote input has no file bytes to checksum and no header size to check, so neither
``check_complete`` nor the file's sha256 apply.  What identifies the input instead is the
sha256 of its metadata document (:func:`input_identity`), recorded in the ``sha256`` field of
its provenance record with a prefix that says what was hashed:
``zarr-metadata:<hex>`` (every array's and group's Zarr metadata) or
``opendap-dds-das:<hex>`` (the endpoint's DDS and DAS; DAP4: ``opendap-dmr:<hex>``); its
``size`` is 0.  A store whose metadata changes (a new variable, a longer time axis, new
attributes) is a different input; values rewritten in place under the same metadata are not
seen (as with any remote store, pin a version or snapshot for reproducibility).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import MissingDependencyError, SourceError
from arcoforge.forge.io.formats import _OPEN_LOCK, _scheme, dap_source
from arcoforge.forge.io.options import SourceOptions
from arcoforge.forge.io.redact import redact

__all__ = ["open_remote", "input_identity", "scan_remote", "scan_remote_input",
           "remote_open_kwargs"]

_HTTP = ("http", "https")


def _zarr_storage_options(url: str, options: SourceOptions | None) -> dict[str, Any] | None:
    scheme = _scheme(url)
    if not scheme or scheme == "file":
        return None
    return dict(options.storage_options) if options is not None else {}


def _open_error(url: str, engine: str, err: BaseException) -> SourceError:
    """The :class:`SourceError` for a remote input that cannot be opened."""
    what = "Zarr store" if engine == "zarr" else "OPeNDAP endpoint"
    hint = ("Check the store's path or URL (it must be the store's root, the folder that "
            "holds zarr.json or .zgroup) and storage_options" if engine == "zarr" else
            "Check the URL in a browser (URL + '.dds' must answer with the dataset's "
            "structure) and the server's availability")
    missing = isinstance(err, (FileNotFoundError, KeyError)) or "not found" in str(err).lower()
    return SourceError(redact(url), f"cannot open the {what}: {err}", hint,
                       reason="not_found" if missing else "io")


def _open_zarr(target: str, kwargs: dict[str, Any]) -> xr.Dataset:
    """xarray's zarr engine on ``target``: with the store's consolidated metadata when it has
    some (one request), else without (a listing), and no warning either way."""
    if "consolidated" in kwargs:
        return xr.open_dataset(target, engine="zarr", **kwargs)
    try:
        return xr.open_dataset(target, engine="zarr", consolidated=True, **kwargs)
    except (KeyError, ValueError, TypeError):  # zarr: no consolidated metadata here
        return xr.open_dataset(target, engine="zarr", consolidated=False, **kwargs)


def open_remote(url: str, engine: str, open_kwargs: Mapping[str, Any] | None = None,
                options: SourceOptions | None = None) -> xr.Dataset:
    """Open the remote input ``url`` raw (no CF decoding), lazily: nothing is downloaded but
    what is read.  ``engine`` is ``"opendap"`` or ``"zarr"``; errors name the input (secrets
    redacted), the cause and the fix."""
    from arcoforge.forge.io.readers import reader_kwargs

    kwargs = reader_kwargs(remote_open_kwargs(url, engine, open_kwargs, options))
    kwargs.update(decode_cf=False, mask_and_scale=False, decode_times=False)
    try:
        if engine == "zarr":
            kwargs.setdefault("chunks", None)
            target = url[len("file://"):] if _scheme(url) == "file" else url
            ds = _open_zarr(target, kwargs)
            if not ds.variables and _scheme(url) in _HTTP:
                ds.close()
                raise SourceError(
                    redact(url), "the Zarr store shows no variables over HTTP",
                    "A web server cannot list a store's folders, so over HTTP a Zarr store "
                    "needs consolidated metadata: run zarr.consolidate_metadata(store) where "
                    "it is written, or read it from an object store (s3://) instead",
                    reason="content")
            return ds
        xr_engine, dap_url = dap_source(url)
        kwargs.setdefault("cache", False)
        with _OPEN_LOCK:
            return xr.open_dataset(dap_url, engine=xr_engine, **kwargs)
    except (MissingDependencyError, SourceError):
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise _open_error(url, engine, err) from err


def _zarr_metadata(url: str, options: SourceOptions | None) -> dict[str, Any]:
    """Every group's and array's metadata of a Zarr store (v2 or v3), by path."""
    import zarr

    storage = _zarr_storage_options(url, options)
    target = url[len("file://"):] if _scheme(url) == "file" else url
    kwargs: dict[str, Any] = {"mode": "r"}
    if storage is not None:
        kwargs["storage_options"] = storage
    root = zarr.open_group(target, **kwargs)
    out: dict[str, Any] = {"/": root.metadata.to_dict()}
    for path, member in root.members(max_depth=None):
        out[path] = member.metadata.to_dict()
    out["/"].pop("consolidated_metadata", None)  # the same documents again
    return out


def _dap_documents(url: str, options: SourceOptions | None) -> tuple[str, bytes]:
    """``(label, bytes)``: the endpoint's DDS + DAS (DAP2) or DMR (DAP4)."""
    import requests

    _engine, dap_url = dap_source(url)
    scheme = _scheme(url)
    base = ("https://" + url[len("dap4://"):]) if scheme == "dap4" else dap_url
    base = base.split("?", 1)[0].split("#", 1)[0]
    timeout = options.timeout if options is not None else 60.0
    parts = ((".dmr",) if scheme == "dap4" else (".dds", ".das"))
    body = b""
    for suffix in parts:
        try:
            resp = requests.get(base + suffix, timeout=timeout)
        except requests.RequestException as err:
            raise SourceError(redact(url), f"cannot reach the OPeNDAP server ({type(err).__name__})",
                              "Check the URL and the server's availability; the build may be "
                              "run again", reason="transient") from err
        if resp.status_code != 200:
            raise SourceError(redact(url), f"the OPeNDAP server answered {resp.status_code} to "
                              f"{suffix}", "Check the URL and that it is an OPeNDAP endpoint",
                              reason="not_found" if resp.status_code in (404, 410) else "http")
        body += resp.content
    return ("opendap-dmr" if scheme == "dap4" else "opendap-dds-das"), body


def input_identity(url: str, engine: str, options: SourceOptions | None = None) -> str:
    """What identifies the remote input ``url`` in provenance (instead of a file's sha256):
    ``"zarr-metadata:<sha256>"`` or ``"opendap-dds-das:<sha256>"`` (``opendap-dmr`` for DAP4)
    of its metadata documents."""
    if engine == "zarr":
        try:
            meta = _zarr_metadata(url, options)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise _open_error(url, engine, err) from err
        doc = json.dumps(meta, sort_keys=True, default=str).encode()
        return "zarr-metadata:" + hashlib.sha256(doc).hexdigest()
    label, body = _dap_documents(url, options)
    return f"{label}:" + hashlib.sha256(body).hexdigest()


def scan_remote(index: Any, url: str, concat_dim: str | None, engine: str,
                open_kwargs: Mapping[str, Any] | None = None,
                options: SourceOptions | None = None) -> Any:
    """Read a remote input's metadata (and its concat coordinate values) into a
    :class:`~arcoforge.forge.schema.FileSchema`, as
    :func:`~arcoforge.forge.io.readers.scan_file` does for a file.  ``path`` and
    ``fetch_url`` are ``url`` itself (read where it is); ``url`` is its redacted display form;
    ``sha256`` is :func:`input_identity`; ``size`` is 0.  ``options.storage_options`` reach
    the Zarr store (through ``open_kwargs["storage_options"]``, see :func:`remote_open_kwargs`).
    """
    from arcoforge.forge.io.readers import _scan_xarray
    from arcoforge.forge.schema import FileSchema

    name = redact(url)
    identity = input_identity(url, engine, options)
    kwargs = remote_open_kwargs(url, engine, open_kwargs, options)
    dims, variables, attrs, values, digests = _scan_xarray(url, engine, kwargs, name,
                                                           concat_dim)
    return FileSchema(index=index, url=name, path=url, size=0, sha256=identity, dims=dims,
                      variables=variables, attrs=attrs,
                      concat_values=None if values is None else np.asarray(values),
                      fetch_url=url, static_digests=digests)


def remote_open_kwargs(url: str, engine: str, open_kwargs: Mapping[str, Any] | None,
                       options: SourceOptions | None) -> dict[str, Any]:
    """``open_kwargs`` for the remote input ``url``, with ``options.storage_options`` added as
    ``storage_options`` for a Zarr store on an object store or web server (unless given)."""
    out = dict(open_kwargs or {})
    if engine == "zarr":
        storage = _zarr_storage_options(url, options)
        if storage:
            out.setdefault("storage_options", storage)
    return out


def scan_remote_input(index: Any, url: str, concat_dim: str | None, engine: str, pattern: Any,
                      options: SourceOptions | None, transforms: Sequence[Any] = (),
                      cache_dir: str | None = None) -> Any:
    """The scan of one remote input of ``pattern`` (a
    :class:`~arcoforge.forge.patterns.FilePattern`): :func:`scan_remote`, or through the
    recipe's ``transforms`` when it has any (the schema of the transformed dataset, with the
    same identity)."""
    if not transforms:
        return scan_remote(index, url, concat_dim, engine, pattern.open_kwargs, options)
    from arcoforge.forge.transformed import scan_transformed

    kwargs = remote_open_kwargs(url, engine, pattern.open_kwargs, options)
    schema = scan_transformed(index, redact(url), url, 0, input_identity(url, engine, options),
                              concat_dim, engine, kwargs, transforms, cache_dir=cache_dir)
    schema.fetch_url = url
    return schema
