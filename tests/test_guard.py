"""The ``if __name__ == "__main__":`` guard: real scripts, run in a fresh interpreter.

Without the guard a script that starts spawn/forkserver workers (a local Dask cluster, a torch
DataLoader) must fail at once with a ConfigError that says what to do; with it, it must work.
The torch scripts are in ``tests/batch/test_main_guard.py``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arcoforge._guard import _guarded, ensure_main_guarded

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GUARD_HINT = 'Put the code that starts it under `if __name__ == "__main__":`'


def run_script(path: Path, timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``path`` with this interpreter; the result and its wall seconds."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=timeout, cwd=path.parent)
    return out, time.perf_counter() - t0


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# -- which lines count as guarded (pure) ------------------------------------------------------
SCRIPT = """\
import os
x = 1
if __name__ == "__main__":
    y = 2
    for i in range(3):
        z = i
if "__main__" == __name__:
    w = 3
if __name__ != "__main__":
    a = 4
else:
    b = 5
try:
    if __name__ == "__main__":
        c = 6
except ValueError:
    d = 7
import multiprocessing as mp
if mp.parent_process() is None:
    e = 8
if os.environ.get("X"):
    f = 9
def g():
    return 10
g()
"""


@pytest.mark.parametrize(("line", "guarded"), [
    (2, False), (3, False), (4, True), (5, True), (6, True), (8, True), (10, False), (12, True),
    (15, True), (17, False), (20, True), (22, False), (25, False), (99, None)])
def test_guarded_lines(line: int, guarded: bool | None) -> None:
    assert _guarded(ast.parse(SCRIPT).body, line) is guarded


def test_fork_and_interactive_sessions_are_never_refused() -> None:
    ensure_main_guarded("a test pool", "fork")  # fork copies the parent: nothing runs again
    code = ("from arcoforge._guard import ensure_main_guarded\n"
            "ensure_main_guarded('a test pool', 'spawn')\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "ok"


# -- the parent and the re-importing child, with plain multiprocessing ----------------------
PROBE = """\
import json
import multiprocessing as mp
from arcoforge._guard import ensure_main_guarded, in_main_reimport
from arcoforge.errors import ConfigError
try:
    ensure_main_guarded("a test pool", {method!r})
    RESULT = "ok"
except ConfigError as err:
    RESULT = str(err)
REIMPORT = in_main_reimport()


def report(q):
    import __main__
    q.put([__main__.REIMPORT, __main__.RESULT, in_main_reimport()])


if __name__ == "__main__":
    ctx = mp.get_context({method!r})
    q = ctx.Queue()
    p = ctx.Process(target=report, args=(q,))
    p.start()
    child = q.get(timeout=120)
    p.join()
    print(json.dumps({{"parent": [REIMPORT, RESULT], "child": child}}))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_parent_and_reimporting_child_are_told_apart(tmp_path: Path, method: str) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(method=method))
    out, _ = run_script(script)
    assert out.returncode == 0, out.stderr
    got = json.loads(last_line(out.stdout))
    reimport, parent_msg = got["parent"]
    assert reimport is False
    assert parent_msg == (
        f"a test pool is started at the top level of {script} (line 6), outside an "
        f'`if __name__ == "__main__":` block: its worker processes (started with {method!r}) '
        f"run your main script again, so each of them would start it again and crash. "
        f'{GUARD_HINT} (or in a function called from there)')
    child_reimport, child_msg, after_bootstrap = got["child"]
    assert child_reimport is True and after_bootstrap is False
    assert child_msg.startswith("a test pool was started by a worker process while it re-ran "
                                "your main script: its worker processes")
    assert GUARD_HINT in child_msg


# -- the dask engine -----------------------------------------------------------------------
DASK_SCRIPT = """\
import arcoforge as af

files = [{files}]
recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", 12),
                       target_chunks={{"time": 6}})
{guard}r = af.bake(recipe, {target!r}, engine="dask", workers=1, progress=False)
{guard}print("tasks", r.tasks)
"""


def dask_script(tmp_path: Path, guarded: bool) -> Path:
    godas = SHARED / "godas-ssh"
    files = [godas / "sshg.2019.nc", godas / "sshg.2020.nc"]
    if not all(f.exists() for f in files):
        pytest.skip(f"shared data missing: {godas}")
    text = DASK_SCRIPT.format(files=", ".join(repr(str(f)) for f in files),
                              target=str(tmp_path / "out.zarr"),
                              guard="    " if guarded else "")
    if guarded:
        text = text.replace('    r = af.bake', 'if __name__ == "__main__":\n    r = af.bake')
    script = tmp_path / ("guarded.py" if guarded else "unguarded.py")
    script.write_text(text)
    return script


def test_dask_engine_without_guard_fails_fast_with_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    script = dask_script(tmp_path, guarded=False)
    out, seconds = run_script(script)
    assert out.returncode != 0
    assert seconds < 30
    err = [ln for ln in out.stderr.splitlines() if ln.startswith("arcoforge.errors.ConfigError")]
    assert err == [
        "arcoforge.errors.ConfigError: engine='dask' (a local Dask cluster) is started at the "
        f"top level of {script} (line 6), outside an `if __name__ == \"__main__\":` block: its "
        "worker processes (started with 'spawn') run your main script again, so each of them "
        f"would start it again and crash. {GUARD_HINT} (or in a function called from there)"]
    assert "Nanny failed to start" not in out.stderr
    assert "bootstrapping phase" not in out.stderr


def test_dask_engine_with_guard_works(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out, _ = run_script(dask_script(tmp_path, guarded=True))
    assert out.returncode == 0, out.stderr[-3000:]
    assert last_line(out.stdout) == "tasks 4"

