"""A kerchunk JSON reference file of a :class:`~arcoforge.forge.virtual.recipe.VirtualRecipe`,
for readers that do not speak Icechunk (fsspec's ``reference://`` filesystem, Zarr v2 layout).

The same scan and the same refusals as the Icechunk path (:func:`.build.analyse`); referenced
variables become ``[url, offset, length]`` entries, inline variables one ``base64:`` chunk each.
References are streamed into the file one source at a time.  Older readers get the attributes as
JSON (a float32 ``scale_factor`` reads back as a Python float): prefer the Icechunk store where
exact decoding matters.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from arcoforge.errors import ConfigError
from arcoforge.forge.schema import attrs_to_json
from arcoforge.forge.targets.virtual import local_path
from arcoforge.forge.virtual.build import Analysis, VirtualLayout, analyse
from arcoforge.forge.virtual.recipe import VirtualRecipe
from arcoforge.forge.virtual.refs import SUGGEST, detect_parser, file_refs
from arcoforge.provenance import (
    ATTR_TYPES,
    INLINE_VARIABLES,
    RECIPE_HASH,
    SOURCES,
    source_records,
)

__all__ = ["write_kerchunk", "v2_codecs", "open_kerchunk", "is_kerchunk_file"]


def v2_codecs(layout: VirtualLayout, name: str) -> tuple[list[dict[str, Any]] | None,
                                                          dict[str, Any] | None]:
    """Zarr v2 ``filters`` and ``compressor`` for a referenced array's v3 codecs."""
    out: list[dict[str, Any]] = []
    for codec in json.loads(layout.codecs_json):
        cname = str(codec["name"])
        if cname in ("bytes", "endian"):
            continue  # the byte order lives in the v2 dtype
        config = dict(codec.get("configuration") or {})
        cid = cname.split(".", 1)[1] if cname.startswith("numcodecs.") else cname
        if cid not in ("zlib", "gzip", "shuffle", "zstd", "blosc", "lz4", "bz2", "lzma",
                       "fixedscaleoffset", "delta", "bitround", "quantize", "crc32", "fletcher32"):
            raise ConfigError(f"variable {name!r}: codec {cname!r} has no kerchunk (Zarr v2) "
                              f"form; write the Icechunk store instead. {SUGGEST}")
        out.append({"id": cid, **config})
    if not out:
        return None, None
    return (out[:-1] or None), out[-1]


def _fill(value: Any) -> Any:
    if value is None:
        return None
    v = np.asarray(value).item()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _array_entries(name: str, dims: tuple[str, ...], shape: tuple[int, ...], chunks: tuple[int, ...],
                   dtype: str, attrs: Mapping[str, Any], filters: Any, compressor: Any
                   ) -> dict[str, str]:
    json_attrs, _ = attrs_to_json(attrs)
    fill = json_attrs.pop("_FillValue", None)
    zarray = {"chunks": list(chunks), "compressor": compressor, "dtype": dtype,
              "fill_value": _fill(fill), "filters": filters, "order": "C",
              "shape": list(shape), "zarr_format": 2}
    return {f"{name}/.zarray": json.dumps(zarray),
            f"{name}/.zattrs": json.dumps({**json_attrs, "_ARRAY_DIMENSIONS": list(dims)})}


def _inline(name: str, values: np.ndarray) -> Iterator[tuple[str, Any]]:
    key = ".".join("0" for _ in values.shape) or "0"
    data = np.ascontiguousarray(values).tobytes()
    yield f"{name}/{key}", "base64:" + base64.b64encode(data).decode()


def write_kerchunk(recipe: VirtualRecipe, path: str | os.PathLike[str], *,
                   workdir: str | None = None, scan_workers: int = 8) -> dict[str, Any]:
    """Write the kerchunk JSON (version 1) references of ``recipe`` to ``path`` (written to a
    temporary file and renamed: a reader never sees half a file); returns a summary.

    Open it with ``xr.open_dataset("reference://", engine="zarr", backend_kwargs={
    "consolidated": False, "storage_options": {"fo": path}})``.
    """
    from arcoforge.forge.bake import Plan, _OpenFiles, side_file_dir

    workdir = workdir or recipe.source_options.cache or tempfile.mkdtemp(prefix="arcoforge-")
    a: Analysis = analyse(recipe, workdir, scan_workers)
    schema = a.schema
    cdim = schema.concat_dim
    from arcoforge.forge.targets.zarr import describe_attr_types

    root_attrs, _ = attrs_to_json({**schema.attrs, RECIPE_HASH: recipe.sha256(),
                                   SOURCES: source_records(schema.files),
                                   INLINE_VARIABLES: a.inline,
                                   # float32 scale_factor etc., restored by af.open_dataset
                                   ATTR_TYPES: describe_attr_types(schema)})
    path = os.fspath(path)
    tmp = f"{path}.arcoforge-partial"
    storage = dict(recipe.source_options.storage_options)
    plan = Plan(recipe_hash=recipe.sha256(), recipe_description=recipe.describe(),
                schema=schema, chunks={}, tasks=[], target=None,  # type: ignore[arg-type]
                source_options=recipe.source_options, workdir=workdir,
                file_type=recipe.pattern.file_type, open_kwargs=recipe.pattern.open_kwargs,
                max_block_bytes=recipe.max_block_bytes, fingerprint="")
    n_refs = 0
    with open(tmp, "w") as out:
        out.write('{"version": 1, "refs": {')
        first = True

        def put(key: str, value: Any) -> None:
            nonlocal first
            out.write(("" if first else ", ") + json.dumps(key) + ": " + json.dumps(value))
            first = False

        put(".zgroup", json.dumps({"zarr_format": 2}))
        put(".zattrs", json.dumps(root_attrs))
        files = _OpenFiles(cache_dir=side_file_dir(workdir))
        try:
            for name, var in schema.variables.items():
                if name in a.layouts:
                    layout = a.layouts[name]
                    filters, compressor = v2_codecs(layout, name)
                    for k, v in _array_entries(name, var.dims, var.shape, layout.chunks,
                                               layout.dtype, var.attrs, filters,
                                               compressor).items():
                        put(k, v)
                    continue
                values = _inline_values(plan, files, name)
                for k, v in _array_entries(name, var.dims, var.shape, var.shape,
                                           values.dtype.str, var.attrs, None, None).items():
                    put(k, v)
                for k, v in _inline(name, values):
                    put(k, v)
            for pos, f in enumerate(schema.files):  # one source's references at a time
                gkey, start = plan_offset(schema, pos)
                names = [n for n in a.layouts if schema.variable_group[n] == gkey]
                if not names:
                    continue
                parser = detect_parser(f.path, recipe.pattern.file_type, f.url,
                                       recipe.pattern.open_kwargs)
                refs = file_refs(f.fetch_url or f.url, parser, storage, local_copy=f.path)
                for name in names:
                    layout, var = a.layouts[name], schema.variables[name]
                    r = refs[layout.source_name]
                    axis = var.dims.index(cdim) if cdim in var.dims else None
                    shift = start // layout.chunks[axis] if axis is not None else 0
                    for idx in np.ndindex(*r.grid):
                        key = [int(i) for i in idx]
                        if axis is not None:
                            key[axis] += shift
                        put(f"{name}/{'.'.join(map(str, key))}",
                            [_location(str(r.paths[idx])), int(r.offsets[idx]),
                             int(r.lengths[idx])])
                        n_refs += 1
        finally:
            files.close()
        out.write("}}")
    os.replace(tmp, path)
    return {"path": path, "references": n_refs, "virtual_variables": sorted(a.layouts),
            INLINE_VARIABLES: a.inline}


def _location(url: str) -> str:
    """A chunk's URL as kerchunk readers expect it: fsspec opens a ``file://`` URL without
    percent-decoding it, so local sources are written as plain absolute paths."""
    return local_path(url) if url.startswith("file://") else url


def plan_offset(schema: Any, pos: int) -> tuple[Any, int]:
    for gkey, members in schema.group_files.items():
        for p, start in members:
            if p == pos:
                return gkey, start
    raise KeyError(pos)


def _inline_values(plan: Any, files: Any, name: str) -> np.ndarray:
    """The whole raw values of an inline variable (file by file along the concat dim)."""
    schema = plan.schema
    cdim = schema.concat_dim
    var = schema.variables[name]
    if cdim is None or cdim not in var.dims:
        return _static(plan, files, name)
    if name == cdim and schema.concat_values is not None:
        return np.asarray(schema.concat_values)
    axis = var.dims.index(cdim)
    parts = []
    for pos, _ in schema.group_files[schema.variable_group[name]]:
        raw, _ = plan._open(files, pos)
        parts.append(np.asarray(raw.read(name, tuple(slice(None) for _ in var.dims))))
    return np.concatenate(parts, axis=axis)


def _static(plan: Any, files: Any, name: str) -> np.ndarray:
    schema = plan.schema
    first = schema.group_files[schema.variable_group[name]][0][0]
    raw, _ = plan._open(files, first)
    return np.asarray(raw.read(name, ()))


def is_kerchunk_file(target: Any) -> bool:
    """Whether ``target`` is a local kerchunk reference file (JSON with ``refs``), as written
    by :func:`write_kerchunk` / ``af.bake(VirtualRecipe(..., output="kerchunk"), "x.json")``."""
    if not isinstance(target, str | os.PathLike):
        return False
    path = os.fspath(target).removeprefix("file://")
    if not path.endswith(".json") or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(64)
    return head.lstrip().startswith(b"{") and b'"refs"' in head


_REMOTE_REF = re.compile(rb'\[\s*"([a-z][a-z0-9+.-]*)://')


def _reference_protocol(path: str) -> str | None:
    """The protocol of the first byte-range reference of a kerchunk file (``"http"``,
    ``"s3"``; None for local paths), from its first megabyte."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    match = _REMOTE_REF.search(head)
    if match is None or match.group(1) == b"file":
        return None
    return match.group(1).decode()


def open_kerchunk(path: str | os.PathLike[str], *, decode_times: Any = True, chunks: Any = None,
                  **kwargs: Any) -> Any:
    """Open a kerchunk reference file written by :func:`write_kerchunk` as
    :func:`arcoforge.open_dataset` opens a store: lazily, CF-decoded (``kwargs`` go to
    :func:`xarray.decode_cf`).  Kerchunk files have no versions."""
    import xarray as xr

    from arcoforge.open import restore_attr_types

    fo = os.fspath(path).removeprefix("file://")
    options: dict[str, Any] = {"fo": fo}
    protocol = _reference_protocol(fo)
    if protocol is not None:  # references into http(s)://, s3://, ...: zarr 3 reads async
        options.update(remote_protocol=protocol, asynchronous=True,
                       remote_options={"asynchronous": True})
    raw = xr.open_dataset("reference://", engine="zarr", chunks=chunks, decode_cf=False,
                          backend_kwargs={"consolidated": False, "storage_options": options})
    return xr.decode_cf(restore_attr_types(raw), decode_times=decode_times, **kwargs)
