"""How one download attempt ends, inside the fetch modules: :class:`_Downloaded` (what arrived),
:class:`_Fatal` (give up now), :class:`_Transient` (worth another attempt) and
:class:`_Truncated` (the body is shorter than the file's own header says).

These never leave :mod:`arcoforge.forge.io`: :func:`arcoforge.forge.io.transfer._download` turns
the last of them into a :class:`arcoforge.errors.SourceError`, scrubbed of secrets.
"""

from __future__ import annotations

from dataclasses import dataclass


class _Fatal(Exception):
    """An attempt failed in a way another attempt cannot fix (``reason``: SourceError's)."""

    def __init__(self, problem: str, hint: str | None = None, reason: str = "io"):
        super().__init__(problem)
        self.problem, self.hint, self.reason = problem, hint, reason


class _Transient(Exception):
    """An attempt failed in a way that another attempt may not (after ``retry_after`` s)."""

    def __init__(self, problem: str, retry_after: float | None = None, hint: str | None = None):
        super().__init__(problem)
        self.problem, self.retry_after, self.hint = problem, retry_after, hint


class _Truncated(_Transient):
    """The body ended before the file's own header says it should (checked before caching)."""

    def __init__(self, received: int, expected: int | None, detail: str):
        what = f"{expected:,} bytes" if expected is not None else "more"
        super().__init__(
            f"the download is truncated: received {received:,} bytes, but the file's header "
            f"says it has {what}{detail}",
            hint="The server sends an incomplete file (its own copy may be cut short, or "
            "the connection ends early without a Content-Length); nothing was cached. Try "
            "again later, or tell the data provider",
        )
        self.received, self.expected = received, expected


@dataclass
class _Downloaded:
    """A complete attempt: the bytes written and what the server said about them."""

    size: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None
