"""Child side of the crash harness (tests/test_crash_harness.py): run a build, an append or a
publish and SIGKILL the process at its k-th filesystem event.

Run as a script, this module is a *zygote*: it imports arcoforge, zarr, xarray and icechunk once,
then reads one JSON job per line on stdin, forks a child per job (imports are not paid again),
and answers one JSON line per job on stdout: ``{"rc": ..., "events": [...]}``.  ``kill_at = 0``
counts the events of an uninterrupted run; ``kill_at = k`` kills the child just before its k-th
event, so events 1..k-1 happened and event k did not.

Events (counted only under the watched folder, or on S3):

* local files: ``write`` (a file opened for writing: ``open``/``io.open``/``os.open``),
  ``rename`` (``os.rename``/``os.replace``), ``link``, ``unlink``, ``mkdir``, ``rmdir``,
  ``rmtree`` (and each unlink/rmdir inside it);
* S3 (s3fs, all requests go through ``S3FileSystem._call_s3``): ``s3:put_object``,
  ``s3:copy_object``, ``s3:delete_object(s)`` and the multipart calls;
* Icechunk (its file I/O happens in Rust, out of reach): each mutating API call,
  ``ic:commit``, ``ic:amend``, ``ic:create_branch``, ``ic:reset_branch``, ``ic:create_tag``,
  ``ic:delete_branch``, ``ic:delete_tag``.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

_STATE: dict[str, Any] = {"on": False, "kill_at": 0, "events": [], "watch": "/nonexistent/",
                          "in_rmtree": 0}
_LOCK = threading.Lock()


def event(kind: str) -> None:
    """Count one event; die before it when it is the k-th."""
    if not _STATE["on"]:
        return
    with _LOCK:
        _STATE["events"].append(kind)
        n = len(_STATE["events"])
        if n == _STATE["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)


def _watched(path: Any, dir_fd: Any = None) -> bool:
    if dir_fd is not None:
        return _STATE["in_rmtree"] > 0
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return p.startswith(_STATE["watch"])


def _wrap_path_op(name: str, kind: str) -> None:
    original = getattr(os, name)

    def hooked(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _watched(path, kwargs.get("dir_fd")):
            event(kind)
        return original(path, *args, **kwargs)

    setattr(os, name, hooked)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install() -> None:
    """Hook the filesystem, S3 and Icechunk calls (inactive until a job starts)."""
    for name, kind in (("rename", "rename"), ("replace", "rename"), ("link", "link"),
                       ("unlink", "unlink"), ("remove", "unlink"), ("rmdir", "rmdir"),
                       ("mkdir", "mkdir")):
        _wrap_path_op(name, kind)

    raw_open = builtins.open

    def hooked_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") \
                and _watched(file):
            event("write")
        return raw_open(file, mode, *args, **kwargs)

    builtins.open = hooked_open
    io.open = hooked_open

    raw_os_open = os.open

    def hooked_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and _watched(path, kwargs.get("dir_fd")):
            event("write")
        return raw_os_open(path, flags, *args, **kwargs)

    os.open = hooked_os_open

    raw_rmtree = shutil.rmtree

    def hooked_rmtree(path: Any, *args: Any, **kwargs: Any) -> Any:
        watched = _watched(path)
        if watched:
            event("rmtree")
            _STATE["in_rmtree"] += 1
        try:
            return raw_rmtree(path, *args, **kwargs)
        finally:
            if watched:
                _STATE["in_rmtree"] -= 1

    shutil.rmtree = hooked_rmtree

    try:
        import s3fs  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        raw_call = s3fs.S3FileSystem._call_s3
        mutating = {"put_object", "copy_object", "delete_object", "delete_objects",
                    "create_multipart_upload", "upload_part", "complete_multipart_upload",
                    "upload_part_copy"}

        async def hooked_call(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
            if method in mutating:
                event(f"s3:{method}")
            return await raw_call(self, method, *args, **kwargs)

        s3fs.S3FileSystem._call_s3 = hooked_call


def install_icechunk() -> None:
    """Hook Icechunk's mutating calls (in the child: importing icechunk starts its runtime's
    threads, which a fork does not carry)."""
    import icechunk

    def wrap(cls: Any, name: str) -> None:
        raw = getattr(cls, name)

        def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
            event(f"ic:{name}")
            return raw(self, *args, **kwargs)

        setattr(cls, name, hooked)

    for name in ("commit", "amend"):
        wrap(icechunk.Session, name)
    for name in ("create_branch", "reset_branch", "create_tag", "delete_branch", "delete_tag"):
        wrap(icechunk.Repository, name)


def run_job(cfg: dict[str, Any]) -> None:
    """Run one build/append/publish as told by ``cfg`` (in the forked child)."""
    import arcoforge
    from arcoforge.forge.append import append
    from arcoforge.forge.patterns import pattern_from_file_sequence
    from arcoforge.forge.recipes import ZarrRecipe

    os.environ.update(cfg.get("env") or {})
    install_icechunk()
    if cfg.get("no_exchange"):  # a platform without an atomic exchange: two renames
        import arcoforge.forge.targets.zarr as zarr_target

        zarr_target.exchange_paths = lambda a, b: False
    target: Any = cfg["url"]
    if target.startswith("icechunk://"):
        from arcoforge.forge.targets.icechunk import IcechunkTarget

        target = IcechunkTarget(target, checkpoint_tasks=1)
    recipe = ZarrRecipe(pattern_from_file_sequence(cfg["files"], "time", 1),
                        target_chunks={"time": cfg["chunk"]})
    so = cfg.get("storage_options") or None
    if cfg["op"] == "append":
        append(recipe, target, storage_options=so, workdir=cfg["workdir"], workers=1)
    else:
        arcoforge.bake(recipe, target, storage_options=so, workdir=cfg["workdir"],
                       progress=False, workers=1, version_bump=cfg.get("bump", "minor"))


def serve() -> None:
    """The zygote loop: one forked child per job line."""
    import arcoforge.forge.append  # noqa: F401  (import everything once, before forking)
    import arcoforge.forge.bake  # noqa: F401
    import arcoforge.forge.targets.zarr  # noqa: F401

    install()
    for line in sys.stdin:
        cfg = json.loads(line)
        events_file = cfg["events_file"]
        pid = os.fork()
        if pid == 0:
            rc = 0
            try:
                _STATE.update(on=True, kill_at=int(cfg["kill_at"]), events=[],
                              watch=os.path.abspath(cfg["watch"]) + os.sep)
                run_job(cfg)
            except BaseException as err:  # reported to the test, which fails on it
                rc = 3
                sys.stderr.write(f"crash_zygote child failed: {err!r}\n")
            finally:
                _STATE["on"] = False
                with builtins.open(events_file, "w") as fh:
                    json.dump(_STATE["events"], fh)
                sys.stderr.flush()
                os._exit(rc)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(json.dumps({"rc": rc}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
