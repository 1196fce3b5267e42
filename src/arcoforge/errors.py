"""The exceptions arcoforge raises: one root, :class:`ArcoforgeError`, and a subclass per seam.

Every error the package raises on purpose derives from :class:`ArcoforgeError`.  Its message names
the file, variable or target and the problem, and says what to do.  ``transient`` tells engines
whether running the same task again may succeed (a dropped connection) or not (a 404, bad
credentials, a schema clash): the one retry policy (:func:`is_transient`) never retries a
permanent failure.  The command line prints an ``ArcoforgeError`` as one ``error: ...`` line and
lets anything else (a bug) show its traceback.

Subclasses also derive from the built-in exception a caller would have caught before (``ValueError``
for bad input, ``OSError`` for unreadable files, ...), so ``except ValueError`` keeps working.

This module imports nothing heavy: every part of the package (the feed included) may import it.
"""

from __future__ import annotations

__all__ = [
    "ArcoforgeError",
    "ConfigError",
    "MissingDependencyError",
    "SourceError",
    "SourceReadError",
    "TruncatedFileError",
    "SchemaError",
    "AppendError",
    "TargetError",
    "NotFoundError",
    "NotPublishedError",
    "BuildLockedError",
    "SingleCommitterError",
    "EngineError",
    "is_transient",
    "CheckError",
]


class ArcoforgeError(Exception):
    """The root of every error arcoforge raises on purpose.

    ``transient`` is True when the same operation may succeed if tried again (a network hiccup,
    a server that is briefly overloaded); False for permanent problems (bad input, a missing
    file, wrong credentials), which engines never retry.
    """

    transient: bool = False

    def __init__(self, *args: object, transient: bool | None = None) -> None:
        super().__init__(*args)
        if transient is not None:
            self.transient = transient


class ConfigError(ArcoforgeError, ValueError):
    """A recipe, option or argument that cannot work as given (the message says which)."""


class MissingDependencyError(ArcoforgeError, ImportError):
    """An optional dependency that this operation needs is not installed; the message gives the
    ``pip install`` line."""


class SourceError(ArcoforgeError):
    """A source that could not be fetched: the message names the URL (secrets redacted), the
    problem and what to do.

    ``reason`` is a short machine-readable category: ``"not_found"``, ``"auth"``,
    ``"missing_credentials"``, ``"transient"`` (retries exhausted, or the deadline passed),
    ``"empty"``, ``"content"`` (HTML instead of data, a file still truncated after retries),
    ``"too_large"`` (over ``SourceOptions.max_bytes``), ``"no_space"`` (the cache's disk),
    ``"http"``, ``"config"`` or ``"io"``.  Only ``"transient"`` and ``"io"`` are worth retrying.
    """

    url: str
    reason: str

    def __init__(self, url: str, problem: str, hint: str | None = None, reason: str = "io"):
        self.url = url
        self.reason = reason
        message = f"{url}: {problem}"
        if hint:
            message += f". {hint}"
        super().__init__(message, transient=reason in ("transient", "io"))

    def __reduce__(self) -> tuple[object, ...]:  # picklable across engine workers
        problem = str(self).removeprefix(f"{self.url}: ")
        return (type(self), (self.url, problem, None, self.reason))


class SourceReadError(ArcoforgeError, OSError):
    """A fetched source that could not be read: the message names the file, the real cause
    (missing reader, missing HDF5 filter, unsupported type, bad option) and what to do."""


class TruncatedFileError(SourceReadError):
    """A source file shorter than its own header says it is (cut-off download or copy)."""


class SchemaError(ArcoforgeError, ValueError):
    """Sources that cannot be combined; the message names files, variable and problem."""


class AppendError(SchemaError):
    """New files that do not continue the published dataset (the message names the file)."""


class TargetError(ArcoforgeError, ValueError):
    """A target that cannot be built, opened or versioned as asked (nothing published, unknown
    version, unsupported URL, ...)."""


class NotFoundError(ArcoforgeError, KeyError):
    """A dataset id, version or variable that does not exist (the message lists what does)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotPublishedError(NotFoundError, FileNotFoundError):
    """Nothing is published at a target yet (no store there, or a first build that has not
    published); also a ``FileNotFoundError``, what opening a missing store raised before."""

    def __str__(self) -> str:  # OSError would format errno/strerror
        return str(self.args[0]) if self.args else ""


class BuildLockedError(ArcoforgeError, RuntimeError):
    """Another build holds the target's lock (the message names its pid, host and start)."""


class SingleCommitterError(TargetError):
    """A copy of a single-committer target (pickled to another process) was asked to commit."""


class EngineError(ArcoforgeError, RuntimeError):
    """An engine could not run the plan (a task failed for good, a worker could not start)."""


class CheckError(ArcoforgeError, AssertionError):
    """A recipe's check (``ZarrRecipe(checks=[...])``) failed on the version just published."""


#: built-in OSErrors that no retry can fix (the path or the permission is wrong)
_PERMANENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
)


def is_transient(err: BaseException) -> bool:
    """Whether a failed task may succeed when run again.

    An :class:`ArcoforgeError` says so itself (``transient``).  Of other exceptions only I/O
    errors are retried (connection resets, timeouts, an object store's hiccup while writing a
    chunk), except those no retry can fix (a missing path, a permission): anything else is a
    permanent problem or a bug, and retrying it would only delay the error the user needs.
    """
    if isinstance(err, ArcoforgeError):
        return bool(err.transient)
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    return isinstance(err, OSError) and not isinstance(err, _PERMANENT_OS_ERRORS)
