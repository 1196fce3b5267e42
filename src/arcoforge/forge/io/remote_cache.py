"""A shared cache at any fsspec URL (SourceOptions.cache = ``s3://...``): pull a checked copy
from it into the local cache, push a fresh download to it.  Best effort: any failure falls back
to the source, with a warning."""

from __future__ import annotations

import json
import os
from typing import Any

from arcoforge.forge.io.cache import _discard_part, _part_path, _sidecar_path, _write_json_atomic
from arcoforge.forge.io.checks import _check_structure, checksum
from arcoforge.forge.io.credentials import _Credentials
from arcoforge.forge.io.log import logger
from arcoforge.forge.io.options import LocalSource, SourceOptions
from arcoforge.forge.io.outcomes import _Truncated
from arcoforge.forge.io.redact import redact


def _cache_fs(cache: str, options: SourceOptions) -> tuple[Any, str]:
    import fsspec  # type: ignore[import-untyped]

    return fsspec.core.url_to_fs(cache, **options.storage_options)  # type: ignore[no-any-return]


def _pull_remote_cache(
    cache: str, name: str, target: str, safe_url: str, options: SourceOptions,
    creds: _Credentials,
) -> LocalSource | None:
    """Copy ``name`` from the remote ``cache`` to ``target`` when its sidecar is there and the
    copy matches it (size, sha256, structure); ``None`` otherwise."""
    try:
        fs, root = _cache_fs(cache, options)
        side = f"{root}/{name}.json"
        if not fs.exists(side):
            return None
        meta = json.loads(fs.cat_file(side))
        tmp = _part_path(target)
        fs.get_file(f"{root}/{name}", tmp)
    except Exception as exc:  # the cache is an optimisation: fall back to the source
        logger.warning("cannot read remote cache %s for %s (%s); downloading from the source",
                       redact(cache), safe_url, creds.scrub(type(exc).__name__))
        return None
    try:
        size, digest = os.path.getsize(tmp), checksum(tmp)
        if size != meta.get("size") or digest != meta.get("sha256"):
            logger.warning("remote cache copy of %s does not match its sidecar; "
                           "downloading from the source", safe_url)
            return None
        try:
            _check_structure(tmp, safe_url, size)
        except _Truncated as short:
            logger.warning("remote cache copy of %s is unusable (%s); downloading from the "
                           "source", safe_url, short.problem)
            return None
        os.replace(tmp, target)
    finally:
        _discard_part(tmp)
    _write_json_atomic(_sidecar_path(target), meta)
    logger.debug("pulled %s from remote cache %s", safe_url, redact(cache))
    return LocalSource(url=safe_url, path=target, size=size, sha256=digest)


def _push_remote_cache(
    cache: str, name: str, target: str, safe_url: str, options: SourceOptions,
    creds: _Credentials,
) -> None:
    """Copy the cached ``target`` (then its sidecar, which marks it complete) to ``cache``."""
    try:
        fs, root = _cache_fs(cache, options)
        fs.makedirs(root, exist_ok=True)
        fs.put_file(target, f"{root}/{name}")
        # the sidecar goes last: its presence marks a complete cache entry
        with open(_sidecar_path(target), "rb") as f:
            fs.pipe_file(f"{root}/{name}.json", f.read())
    except Exception as exc:
        logger.warning("cannot write %s to remote cache %s (%s)", safe_url, redact(cache),
                       creds.scrub(type(exc).__name__))
