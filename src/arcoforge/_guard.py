"""The ``if __name__ == "__main__":`` guard: fail at once, and clearly, where it is missing.

Worker processes started with the ``spawn`` or ``forkserver`` method (a local Dask cluster, a
torch ``DataLoader`` with ``num_workers > 0``) run the user's main script again, as the module
``__mp_main__``, before they start working. Code at the script's top level that starts those
workers then runs again in every worker, where multiprocessing refuses to start processes; the
user sees a long multiprocessing traceback, "Nanny failed to start" or a DataLoader crash, late.

:func:`ensure_main_guarded` is called just before arcoforge starts such workers. It raises a
:class:`~arcoforge.errors.ConfigError` that says to put the code under the guard when

* this process *is* such a worker re-running the main script (:func:`in_main_reimport`), or
* the main script's statement that is running now (found on the call stack) is not under an
  ``if __name__ == "__main__":`` block (:func:`unguarded_main_statement`), so the workers are
  about to run it again: this is caught in the parent, before any worker starts.

Nothing here is imported eagerly by the package; it needs only the standard library.
"""

from __future__ import annotations

import ast
import functools
import multiprocessing
import multiprocessing.process
import os
import sys
from types import FrameType

from arcoforge.errors import ConfigError

__all__ = [
    "dask_start_method",
    "ensure_main_guarded",
    "in_main_reimport",
    "unguarded_main_statement",
]

#: start methods whose workers run the main script again (``fork`` copies the parent instead)
REIMPORTING_METHODS = frozenset({"spawn", "forkserver"})


def _frames() -> list[FrameType]:
    """The current call stack, innermost frame first."""
    frames = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def in_main_reimport() -> bool:
    """Whether this process is a spawn/forkserver worker that is re-running the main script.

    multiprocessing marks a child as ``_inheriting`` while it prepares itself (and runs the
    parent's main script as ``__mp_main__``); a frame of that module on the stack tells that the
    main script's own code is what runs now.
    """
    if not getattr(multiprocessing.process.current_process(), "_inheriting", False):
        return False
    return any(f.f_globals.get("__name__") == "__mp_main__" and f.f_code.co_name == "<module>"
               for f in _frames())


def _guard_branch(test: ast.expr) -> str | None:
    """Which branch of an ``if`` runs only in the main process: ``"body"`` for
    ``__name__ == "__main__"`` (either order) or a test on ``parent_process()``, ``"orelse"``
    for ``__name__ != "__main__"``; None for any other test."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        operands = [test.left, *test.comparators]
        name = any(isinstance(o, ast.Name) and o.id == "__name__" for o in operands)
        main = any(isinstance(o, ast.Constant) and o.value == "__main__" for o in operands)
        if name and main and isinstance(test.ops[0], ast.Eq | ast.NotEq):
            return "body" if isinstance(test.ops[0], ast.Eq) else "orelse"
    for node in ast.walk(test):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == "parent_process":
                return "body"
    return None


def _in_block(block: list[ast.stmt], line: int) -> bool:
    return bool(block) and block[0].lineno <= line <= (block[-1].end_lineno or line)


def _guarded(body: list[ast.stmt], line: int) -> bool | None:
    """Whether ``line`` of a block lies under a guard; None when no statement holds it."""
    for stmt in body:
        if not stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            continue
        if isinstance(stmt, ast.If) and (branch := _guard_branch(stmt.test)) is not None:
            if _in_block(getattr(stmt, branch), line):
                return True
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(stmt, field, None)
            if not isinstance(inner, list) or not inner:
                continue
            blocks = [h.body for h in inner] if field in ("handlers", "cases") else [inner]
            for block in blocks:
                if (found := _guarded(block, line)) is not None:
                    return found
        return False
    return None


@functools.lru_cache(maxsize=16)
def _module_ast(path: str, mtime: float) -> ast.Module | None:
    try:
        with open(path, "rb") as f:
            return ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def _main_script() -> tuple[str, dict] | None:
    """The main script's path and globals when multiprocessing workers would run it again."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None  # interactive session, ``python -c``: nothing is run again
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None and (spec_name == "__main__" or spec_name.endswith(".__main__")):
        return None  # ``python -m pkg`` runs pkg/__main__.py, which workers do not run again
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None  # multiprocessing skips IPython's launcher too
    return os.path.abspath(path), vars(main)


def unguarded_main_statement() -> tuple[str, int] | None:
    """``(script, line)`` of the main script's top-level code running now, when it is not under
    an ``if __name__ == "__main__":`` guard; None when it is guarded or cannot be told."""
    script = _main_script()
    if script is None:
        return None
    path, main_globals = script
    module_frames = [f for f in _frames()
                     if f.f_globals is main_globals and f.f_code.co_name == "<module>"]
    if not module_frames:
        return None  # called from a thread, a callback, ... : not the script's top level
    line = module_frames[-1].f_lineno
    try:
        tree = _module_ast(path, os.path.getmtime(path))
    except OSError:
        return None
    if tree is None or line is None:
        return None
    return None if _guarded(tree.body, line) is not False else (path, line)


def dask_start_method() -> str:
    """The start method of a local Dask cluster's worker processes (Dask's configuration)."""
    import dask.config

    return str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))


def ensure_main_guarded(what: str, start_method: str | None = "spawn") -> None:
    """Raise :class:`ConfigError` when starting ``what``'s worker processes from here would
    make every worker run the main script's top-level code again (see the module docstring).

    ``start_method`` is how the workers start (``"spawn"``, ``"forkserver"``, ``"fork"``; None:
    multiprocessing's default); ``fork`` runs nothing again, so it is never refused.
    """
    method = start_method or multiprocessing.get_start_method(allow_none=True) \
        or multiprocessing.get_all_start_methods()[0]
    if method not in REIMPORTING_METHODS:
        return
    why = (f"its worker processes (started with {method!r}) run your main script again, so "
           f"each of them would start it again and crash. Put the code that starts it under "
           f'`if __name__ == "__main__":` (or in a function called from there)')
    if in_main_reimport():
        raise ConfigError(f"{what} was started by a worker process while it re-ran your main "
                          f"script: {why}")
    found = unguarded_main_statement()
    if found is not None:
        path, line = found
        raise ConfigError(f"{what} is started at the top level of {path} (line {line}), outside "
                          f'an `if __name__ == "__main__":` block: {why}')
