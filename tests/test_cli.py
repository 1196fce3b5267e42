"""The command line: bake, verify (with a readable diff), inspect, demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from arcoforge.cli import main

RECIPE = '''
import arcoforge as af
files = [f"{DATA}/ersst-v5/ersst.v5.2019{m:02d}.nc" for m in range(1, 7)]
first_half = af.ZarrRecipe(af.pattern_from_file_sequence(files[:3], "time"),
                           target_chunks={"time": 2})
whole = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"), target_chunks={"time": 4})
'''


@pytest.fixture
def recipe_py(shared_data: Path, tmp_path: Path) -> Path:
    path = tmp_path / "recipe.py"
    path.write_text(f"DATA = {str(shared_data)!r}\n" + RECIPE)
    return path


def test_bake_verify_inspect(recipe_py: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "whole.zarr")
    assert main(["bake", f"{recipe_py}:whole", "--target", target, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 files" in out and "MB read" in out and "MB written" in out
    assert main(["verify", target, "--against", f"{recipe_py}:whole"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["inspect", target]) == 0
    assert "arcoforge:recipe_hash" in capsys.readouterr().out
    assert main(["inspect", f"{recipe_py}:whole"]) == 0
    assert "store tasks: 2" in capsys.readouterr().out

    # corrupt one value in the store: verify fails with a readable diff
    arr = zarr.open_group(target, mode="r+")["sst"]
    block = arr[0]
    block[0, 40, 90] += np.float32(1.5)
    arr[0] = block
    assert main(["verify", target, "--against", f"{recipe_py}:whole"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "variable 'sst': 1 of" in out and "(0, 0, 40, 90)" in out


def test_several_recipes_need_a_name(recipe_py: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bake", str(recipe_py), "--target", str(tmp_path / "x.zarr"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "several recipes" in err and "first_half" in err and "whole" in err
    assert main(["bake", f"{recipe_py}:nope", "--target", str(tmp_path / "x.zarr")]) == 1
    assert "no recipe 'nope'" in capsys.readouterr().err


def test_bake_error_is_one_readable_line(shared_data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "bad.py"
    f = shared_data / "ersst-v5" / "ersst.v5.201901.nc"
    recipe.write_text("import arcoforge as af\n"
                      f"r = af.ZarrRecipe(af.pattern_from_file_sequence([{str(f)!r}] * 2, 'time'))\n")
    assert main(["bake", str(recipe), "--target", str(tmp_path / "b.zarr"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "duplicate timestamp" in err
    assert "Traceback" not in err


def test_demo_runs_from_a_shell(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "arcoforge.cli", "demo", "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("equals its sources") == 2
    assert (tmp_path / "ersst-v5.zarr" / "zarr.json").exists()
