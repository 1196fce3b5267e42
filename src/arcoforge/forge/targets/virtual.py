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
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from arcoforge.errors import ConfigError

__all__ = ["ContainerSpec", "container_for", "containers_for", "authorize", "as_url",
           "local_path", "check_reference_url", "s3_endpoint", "save_read_retries",
           "DEFAULT_HTTP_RETRIES"]

#: retries of a virtual chunk read (HTTP, S3) when the recipe's ``SourceOptions`` do not say
#: (see :func:`save_read_retries`)
DEFAULT_HTTP_RETRIES = 5


def as_url(source: str) -> str:
    """A source as a URL the parsers and Icechunk understand: local paths become
    ``file:///absolute/path``, percent-encoded (a space, ``%``, ``#``, ``?`` or a non-ASCII
    letter in a folder or file name is encoded, as :meth:`pathlib.Path.as_uri` does)."""
    if "://" not in source:
        return pathlib.Path(os.path.abspath(source)).as_uri()
    return source


def local_path(url: str) -> str:
    """The local path of a ``file://`` URL made by :func:`as_url` (percent-decoded)."""
    return unquote(urlsplit(as_url(url)).path)


def check_reference_url(url: str) -> None:
    """Refuse a source URL that a virtual reference cannot keep: one with a query string
    (``http://host/download?file=a.nc``) or a fragment.  Icechunk keeps only the path of a
    chunk's URL (it would read another object) and kerchunk readers fail on it, so such
    sources are refused with a :class:`~arcoforge.errors.ConfigError` naming the URL."""
    if "://" not in url:
        return  # a local path: as_url percent-encodes "?" and "#"
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        what = "a query string" if (parts.query or url.endswith("?")) else "a fragment (#...)"
        raise ConfigError(
            f"{url}: this source URL has {what}; virtual references cannot keep a query "
            "string or fragment (Icechunk reads chunks by the URL's path alone, so another "
            "object would be read). Serve the files under plain paths, or materialize them "
            "with af.ZarrRecipe(pattern), which downloads each URL as it is.")


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
            return icechunk.local_filesystem_store(local_path(self.prefix))
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
        # Icechunk matches a chunk's (percent-encoded) URL against a prefix only up to the
        # first encoded folder name: the container stops at the last plain folder above it
        folders = parts.path.split("/")[1:-1]
        plain = []
        for name in folders:
            if "%" in name:
                break
            plain.append(name)
        folder = "/" + "".join(f"{name}/" for name in plain)
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


def save_read_retries(repo: Any, retries: int = DEFAULT_HTTP_RETRIES, backoff: float = 0.5,
                      max_backoff: float = 20.0) -> bool:
    """Persist in the configuration of Icechunk repository ``repo`` how reads of virtual chunks
    are retried (``retries`` tries after the first, exponential backoff from ``backoff`` to
    ``max_backoff`` seconds): Icechunk applies its storage ``retries`` setting to the HTTP and
    S3 requests that fetch virtual chunks, and every reader (``af.open_dataset``,
    ``icechunk.Repository.open``) loads the saved configuration, so a transient 503 or dropped
    connection of a source server is retried instead of failing the read.  Returns whether the
    configuration was changed."""
    import icechunk

    tries = max(1, int(retries) + 1)
    initial = max(1, int(backoff * 1000))
    ceiling = max(initial, int(max_backoff * 1000))
    current = icechunk.Repository.fetch_config(repo.storage)
    have = getattr(getattr(current, "storage", None), "retries", None)
    if have is not None and (have.max_tries, have.initial_backoff_ms, have.max_backoff_ms) == \
            (tries, initial, ceiling):
        return False
    settings = icechunk.StorageRetriesSettings(max_tries=tries, initial_backoff_ms=initial,
                                               max_backoff_ms=ceiling)
    containers = dict(getattr(current, "virtual_chunk_containers", None) or {}) if current else {}
    reopened = icechunk.Repository.open(
        repo.storage, config=icechunk.RepositoryConfig(
            storage=icechunk.StorageSettings(retries=settings)),
        authorize_virtual_chunk_access=authorize(containers) or None)
    reopened.save_config()
    return True
