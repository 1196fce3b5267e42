"""What a fetch is asked for and what it returns: :class:`SourceOptions` (with its checks),
:class:`Auth` (credentials *named* by environment variables) and :class:`LocalSource`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from arcoforge.errors import SourceError


@dataclass(frozen=True)
class Auth:
    """Credentials are *named* (environment variable names), never given as values."""

    kind: Literal["basic", "bearer", "query"]
    username_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    query_param: str | None = None  # for kind="query": e.g. "token" -> ?token=<value>

    @classmethod
    def basic(cls, username_env: str, password_env: str) -> Auth:
        """HTTP basic auth (and FTP user/password) from two environment variables."""
        return cls("basic", username_env=username_env, password_env=password_env)

    @classmethod
    def bearer(cls, token_env: str) -> Auth:
        """``Authorization: Bearer <token>`` from an environment variable."""
        return cls("bearer", token_env=token_env)

    @classmethod
    def query(cls, param: str, token_env: str) -> Auth:
        """A query parameter ``?<param>=<token>`` from an environment variable."""
        return cls("query", token_env=token_env, query_param=param)

    def env_names(self) -> list[str]:
        """The environment variable names this auth reads (never their values)."""
        names = [self.username_env, self.password_env, self.token_env]
        return [n for n in names if n]


@dataclass(frozen=True)
class SourceOptions:
    """How to fetch sources: retries, time limits, size limits, concurrency, credentials, cache.

    Time limits: ``timeout`` bounds each wait for the server (connecting, each read);
    ``deadline`` bounds the whole fetch of one URL, all attempts and back-off included
    (``None``: 10 minutes plus the declared size at 128 KiB/s, or 2 hours when the server does
    not declare a size; ``math.inf``: no deadline); ``min_rate`` fails an attempt whose rate
    over the last ``rate_window`` seconds is below it (bytes/s; 0 turns it off), so that a server
    that trickles is retried and then given up.  ``max_bytes`` caps one source's size (``None``:
    no cap besides the cache directory's free space, checked against the declared size first).

    ``cache`` keeps downloads for later builds; before a cached copy is reused its server is
    asked whether the file changed since (``revalidate``; a file reprocessed in place is
    downloaded again).  A server that cannot be asked leaves the copy in use.
    """

    retries: int = 5  # attempts after the first, for transient failures
    backoff: float = 0.5  # first delay in s, doubling, with jitter
    max_backoff: float = 20.0
    timeout: float = 60.0  # per wait for the server: connect, each read
    deadline: float | None = None  # s for one URL, all attempts; None = scaled from the size
    min_rate: float = 1024.0  # bytes/s, averaged over rate_window; 0 = no minimum
    rate_window: float = 60.0  # s
    max_bytes: int | None = None  # the largest source accepted; None = only the free space
    max_concurrency_per_host: int = 4  # per process, across threads
    auth: Auth | None = None
    cache: str | None = None  # local dir or any fsspec URL; None = a per-build work dir
    # ask the server (one HEAD / info) whether a cached copy is still current before reusing
    # it (ETag, Last-Modified, size); False: reuse cached copies unasked (frozen archives)
    revalidate: bool = True
    # passed to fsspec (e.g. {"endpoint_url": ...} for S3); secrets come from env only.
    # For http(s) the keys "headers" (dict) and "verify" (bool | CA path) are used by requests.
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalSource:
    """A source that can be opened from the local file system."""

    url: str  # the original URL (redacted of secrets)
    path: str  # local filesystem path to open
    size: int
    sha256: str


def _config_error(safe_url: str, problem: str) -> NoReturn:
    """Raise the :class:`SourceError` for options (or an :class:`Auth`) that cannot work."""
    raise SourceError(safe_url, problem, "Fix the recipe's SourceOptions", reason="config")


def _check_limits(options: SourceOptions, safe_url: str) -> None:
    """Refuse time and size limits that make no sense, before anything is downloaded."""
    if options.deadline is not None and not options.deadline > 0:
        _config_error(safe_url, f"SourceOptions.deadline={options.deadline!r} must be a number "
                      "of seconds > 0 (None: automatic, math.inf: no deadline)")
    if not options.min_rate >= 0:
        _config_error(safe_url, f"SourceOptions.min_rate={options.min_rate!r} must be >= 0 "
                      "bytes/s (0: no minimum)")
    if not options.rate_window > 0:
        _config_error(safe_url, f"SourceOptions.rate_window={options.rate_window!r} must be > 0 "
                      "seconds")
    if options.max_bytes is not None and not options.max_bytes > 0:
        _config_error(safe_url, f"SourceOptions.max_bytes={options.max_bytes!r} must be > 0 "
                      "(None: no cap)")
