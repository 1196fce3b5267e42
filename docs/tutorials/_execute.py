"""Execute one percent-format tutorial script cell by cell and record what each cell printed and
drew, for the documentation site (``docs/tutorials/_hooks.py`` calls this in a subprocess).

    python docs/tutorials/_execute.py docs/tutorials/01_end_to_end.py OUTDIR

writes ``OUTDIR/cells.json`` (``[{"kind": "markdown" | "code", "source": ..., "stdout": ...,
"figures": ["fig-3-1.png", ...], "seconds": ...}]``) and the figures as PNG files next to it.

The script runs as the main module, exactly as ``python SCRIPT`` runs it: ``__name__`` is
``"__main__"``, ``__file__`` is the script, and code objects carry the script's own file name and
line numbers, so worker processes that re-import the main script (a Dask ``LocalCluster``,
``processes=True``) re-import the tutorial, and arcoforge's ``__main__``-guard check reads the right
lines. A cell that raises stops the run with exit status 1 (the traceback is in ``cells.json``
and on stderr); ``raise SystemExit(0)`` (what a tutorial does when its data are absent) ends it
early and successfully. Figures are drawn with matplotlib's ``Agg`` backend; after each cell every
open figure is saved and closed, and ``plt.show()`` does nothing.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def split_cells(text: str) -> list[dict[str, Any]]:
    """Split a jupytext percent-format script into cells.

    Returns
    -------
    list of dict
        ``{"kind": "markdown" | "code", "source": str, "line": int}`` where ``line`` is the
        1-based line of the cell's first source line in the script. Text before the first
        ``# %%`` marker (the module docstring, a licence note) is not a cell.
    """
    cells: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _CELL.match(line)
        if match:
            if current is not None:
                cells.append(current)
            kind = "markdown" if "[markdown]" in match.group("rest") else "code"
            current = {"kind": kind, "lines": [], "line": number + 1}
        elif current is not None:
            current["lines"].append(line)
    if current is not None:
        cells.append(current)
    out = []
    for cell in cells:
        lines = cell.pop("lines")
        while lines and not lines[-1].strip():
            lines.pop()
        if cell["kind"] == "markdown":
            lines = [re.sub(r"^# ?", "", ln) for ln in lines]
        cell["source"] = "\n".join(lines)
        if cell["source"].strip():
            out.append(cell)
    return out


def _save_figures(outdir: Path, index: int) -> list[str]:
    if "matplotlib.pyplot" not in sys.modules:
        return []
    import matplotlib.pyplot as plt

    names = []
    for k, num in enumerate(plt.get_fignums(), start=1):
        fig = plt.figure(num)
        name = f"fig-{index}-{k}.png"
        fig.savefig(outdir / name, dpi=90, bbox_inches="tight")
        names.append(name)
    plt.close("all")
    return names


class _Tee(io.TextIOBase):
    """Write to a buffer (the page) and to the real stream (the build log)."""

    def __init__(self, real: Any) -> None:
        self.buffer_text = io.StringIO()
        self.real = real

    def write(self, s: str) -> int:
        self.buffer_text.write(s)
        if os.environ.get("ARCOFORGE_DOCS_ECHO"):
            self.real.write(s)
        return len(s)

    def flush(self) -> None:
        self.real.flush()


def execute(script: Path, outdir: Path) -> int:
    """Run ``script`` cell by cell as the main module; record into ``outdir``. Returns the exit
    status (0: every cell ran, or the script stopped itself with ``SystemExit(0)``)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    outdir.mkdir(parents=True, exist_ok=True)
    script = script.resolve()
    text = script.read_text()
    cells = split_cells(text)
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.path.insert(0, str(script.parent))
    os.chdir(script.parent)
    status = 0
    stopped = False
    for index, cell in enumerate(cells):
        cell.setdefault("stdout", "")
        cell.setdefault("figures", [])
        if cell["kind"] != "code" or stopped:
            continue
        tree = ast.parse(cell["source"], filename=str(script))
        ast.increment_lineno(tree, cell["line"] - 1)
        code = compile(tree, str(script), "exec")
        out, err = _Tee(sys.__stdout__), _Tee(sys.__stderr__)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                exec(code, main.__dict__)  # noqa: S102 - running the tutorial is the point
        except SystemExit as stop:
            stopped = True
            status = 0 if stop.code in (None, 0) else 1
        except BaseException:  # noqa: BLE001 - recorded, then the run stops
            tb = traceback.format_exc()
            err.write(tb)
            sys.__stderr__.write(f"{script.name}, cell starting at line {cell['line']}:\n{tb}")
            status, stopped = 1, True
        cell["seconds"] = round(time.perf_counter() - start, 2)
        cell["stdout"] = out.buffer_text.getvalue()
        cell["stderr"] = err.buffer_text.getvalue()
        cell["figures"] = _save_figures(outdir, index)
        cell["ran"] = True
    (outdir / "cells.json").write_text(json.dumps({"script": script.name, "status": status,
                                                   "cells": cells}, indent=1))
    return status


def _main() -> int:
    if len(sys.argv) != 3:
        print("usage: python _execute.py SCRIPT OUTDIR", file=sys.stderr)
        return 2
    try:  # netCDF4 and pyproj bundle their own libcurl: pyproj first (see docs/regrid.md)
        import pyproj  # noqa: F401
    except ImportError:
        pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *a, **k: None  # figures are saved after each cell
    return execute(Path(sys.argv[1]), Path(sys.argv[2]).resolve())


if __name__ == "__main__":
    sys.exit(_main())
