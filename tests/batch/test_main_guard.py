"""A torch DataLoader with spawn/forkserver workers, started from a script without the
``if __name__ == "__main__":`` guard, fails at once with a ConfigError that says what to do.

Each case is a real script over the NCEP air file, run in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import shared_data_dir

pytest.importorskip("torch")

HEAD = """\
import xarray as xr
import arcoforge  # noqa: F401
from arcoforge.batch.torch_loader import TorchMapDataset
from torch.utils.data import DataLoader

ds = xr.open_dataset({path!r}).load()
"""
FIX = ('Put the code that starts it under `if __name__ == "__main__":` (or in a function '
       "called from there)")


def run(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, float, Path]:
    air = shared_data_dir() / "ncep-air" / "air.nc"
    if not air.exists():
        pytest.skip(f"shared data file missing: {air}")
    script = tmp_path / "train.py"
    script.write_text(HEAD.format(path=str(air)) + body)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=240, cwd=tmp_path)
    return out, time.perf_counter() - t0, script


def config_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("arcoforge.errors.ConfigError")]


def test_accessor_loader_without_guard_fails_fast(tmp_path: Path) -> None:
    out, seconds, script = run(tmp_path, """\
loader = ds.arcoforge.torch_loader({"time": 4, "lat": 8, "lon": 8}, batch_size=8, num_workers=2)
n = sum(1 for _ in loader)
""")
    assert out.returncode != 0
    assert seconds < 30
    assert config_errors(out.stderr) == [
        "arcoforge.errors.ConfigError: a torch DataLoader with num_workers > 0 is started at the "
        f"top level of {script} (line 8), outside an `if __name__ == \"__main__\":` block: its "
        "worker processes (started with 'forkserver') run your main script again, so each of "
        f"them would start it again and crash. {FIX}"]
    assert "Broken pipe" not in out.stderr and "bootstrapping phase" not in out.stderr


def test_own_dataloader_with_spawn_without_guard_fails_fast(tmp_path: Path) -> None:
    out, seconds, script = run(tmp_path, """\
stream = ds.arcoforge.stream({"time": 4, "lat": 8, "lon": 8}, batch_size=8)
loader = DataLoader(TorchMapDataset(stream), batch_size=4, num_workers=1,
                    multiprocessing_context="spawn")
for batch in loader:
    pass
""")
    assert out.returncode != 0
    assert seconds < 30
    assert config_errors(out.stderr) == [
        "arcoforge.errors.ConfigError: a torch DataLoader with num_workers > 0 is started at the "
        f"top level of {script} (line 10), outside an `if __name__ == \"__main__\":` block: its "
        "worker processes (started with 'spawn') run your main script again, so each of "
        f"them would start it again and crash. {FIX}"]


def test_loader_built_at_top_level_and_iterated_under_the_guard_works(tmp_path: Path) -> None:
    out, _, _ = run(tmp_path, """\
loader = ds.arcoforge.torch_loader({"time": 4, "lat": 8, "lon": 8}, batch_size=8, num_workers=2)


def main():
    print("batches", sum(1 for _ in loader))


if __name__ == "__main__":
    main()
""")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "batches 8"


def test_fork_workers_need_no_guard(tmp_path: Path) -> None:
    out, _, _ = run(tmp_path, """\
stream = ds.arcoforge.stream({"time": 4, "lat": 8, "lon": 8}, batch_size=8)
loader = DataLoader(TorchMapDataset(stream), batch_size=None, num_workers=1,
                    multiprocessing_context="fork")
print("samples", sum(1 for _ in loader))
""")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("samples ")
