"""Where virtual chunks live: Icechunk *virtual chunk containers* and their credentials.

A virtual Icechunk store holds references ``(url, offset, length)`` into the archival files
instead of their bytes.  Icechunk reads such a chunk only through a *virtual chunk container*
configured in the repository (a URL prefix and how to reach it) and authorized by whoever opens
the repository.  This module is the one place that turns source URLs into containers and
containers into the credentials that authorize them:

* ``file:///dir/`` -- a local folder (authorized with ``LocalFileSystemAccess``);
* ``http(s)://host[:port]/`` -- an HTTP server (``HttpAccess``);
* ``s3://bucket/`` -- S3 or an S3-compatible store: the endpoint comes from the source's
  ``storage_options`` (``endpoint_url``, ``client_kwargs.endpoint_url``) or ``AWS_ENDPOINT_URL``;
  ``anon=True`` (or no credentials in the environment at read time) reads anonymously,
  otherwise credentials come from the environment (never from the store).

:func:`authorize` is what :func:`arcoforge.forge.targets.icechunk.open_repository` calls, so
``af.open_dataset("icechunk://repo")`` reads a virtual store with no extra steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from arcoforge.errors import ConfigError

__all__ = ["ContainerSpec", "container_for", "containers_for", "authorize", "as_url",
           "s3_endpoint"]


def as_url(source: str) -> str:
    """A source as a URL the parsers and Icechunk understand: local paths become
    ``file:///absolute/path``."""
    if "://" not in source:
        return "file://" + os.path.abspath(source)
    return source


def s3_endpoint(storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The S3 endpoint: ``storage_options`` (``endpoint_url`` or
    ``client_kwargs.endpoint_url``), else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    so = dict(storage_options or {})
    endpoint = so.get("endpoint_url") or (so.get("client_kwargs") or {}).get("endpoint_url")
    return endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class ContainerSpec:
    """One virtual chunk container: the URL ``prefix`` of the chunks it serves, its ``kind``
    (``"file"``, ``"http"``, ``"s3"``) and, for S3, the endpoint, region and anonymity."""

    prefix: str
    kind: str
    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False

    def store_config(self) -> Any:
        """The Icechunk ``ObjectStoreConfig`` of this container."""
        import icechunk

        if self.kind == "file":
            return icechunk.local_filesystem_store(self.prefix[len("file://"):])
        if self.kind == "http":
            plain = self.prefix.startswith("http://")
            return icechunk.http_store(opts={"allow_http": "true"} if plain else None)
        return icechunk.s3_store(
            region=self.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=self.endpoint,
            allow_http=bool(self.endpoint and self.endpoint.startswith("http://")),
            anonymous=self.anonymous,
            s3_compatible=self.endpoint is not None,
            force_path_style=self.endpoint is not None,
        )

    def container(self) -> Any:
        """The ``icechunk.VirtualChunkContainer``."""
        import icechunk

        return icechunk.VirtualChunkContainer(self.prefix, self.store_config())


def container_for(url: str, storage_options: Mapping[str, Any] | None = None) -> ContainerSpec:
    """The container serving the chunks of source ``url`` (a path or URL)."""
    url = as_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        folder = os.path.dirname(parts.path).rstrip("/") + "/"
        return ContainerSpec("file://" + folder, "file")
    if scheme in ("http", "https"):
        return ContainerSpec(f"{scheme}://{parts.netloc}/", "http")
    if scheme in ("s3", "s3a"):
        so = dict(storage_options or {})
        return ContainerSpec(f"s3://{parts.netloc}/", "s3", endpoint=s3_endpoint(so),
                             region=so.get("region_name") or
                             (so.get("client_kwargs") or {}).get("region_name"),
                             anonymous=bool(so.get("anon", False)))
    raise ConfigError(
        f"{url}: virtual references can point at local files, http(s):// or s3:// URLs, not "
        f"{scheme}://. Materialize these sources with af.ZarrRecipe instead."
    )


def containers_for(urls: Iterable[str], storage_options: Mapping[str, Any] | None = None
                   ) -> list[ContainerSpec]:
    """The distinct containers for ``urls`` (local folders merged into their common parent)."""
    specs: dict[str, ContainerSpec] = {}
    folders: list[str] = []
    for url in urls:
        spec = container_for(url, storage_options)
        if spec.kind == "file":
            folders.append(spec.prefix[len("file://"):])
        else:
            specs.setdefault(spec.prefix, spec)
    if folders:
        common = os.path.commonpath(folders).rstrip("/") + "/"
        specs["file://" + common] = ContainerSpec("file://" + common, "file")
    return list(specs.values())


def _s3_credentials(anonymous: bool) -> Any:
    import icechunk

    if anonymous or not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
        return icechunk.s3_anonymous_credentials()
    return icechunk.s3_from_env_credentials()


def authorize(containers: Mapping[str, Any]) -> dict[str, Any]:
    """Credentials authorizing every container of a repository's config
    (``{url_prefix: VirtualChunkContainer}``): ``authorize_virtual_chunk_access`` for
    ``icechunk.Repository.open``.  Secrets are read from the environment, never stored."""
    import icechunk

    out: dict[str, Any] = {}
    for prefix, container in containers.items():
        scheme = prefix.split("://", 1)[0].lower()
        if scheme == "file":  # Icechunk >= 2.3 asks for explicit sentinels (None before)
            out[prefix] = getattr(icechunk.credentials, "LocalFileSystemAccess", None)
        elif scheme in ("http", "https"):
            out[prefix] = getattr(icechunk.credentials, "HttpAccess", None)
        elif scheme in ("s3", "s3a"):
            anonymous = "anonymous=true" in repr(getattr(container, "store", "")).lower()
            out[prefix] = _s3_credentials(anonymous)
    return icechunk.containers_credentials(out) if out else {}
