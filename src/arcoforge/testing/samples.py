"""Sample inputs made from real files, for tests, benchmarks and demos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["dated_copies"]


def dated_copies(source: str | os.PathLike[str], n: int, out_dir: str | os.PathLike[str],
                 time_var: str = "time", stem: str = "day") -> list[str]:
    """``n`` copies of the one-step file ``source``, copy ``i`` with ``time_var`` shifted by
    ``i`` units (e.g. days); nothing else changes.  Existing copies are reused."""
    import netCDF4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        dst = out / f"{Path(source).stem}.{stem}{i:05d}.nc"
        if not dst.exists():
            tmp = dst.with_suffix(".part")
            shutil.copy(source, tmp)
            tmp.chmod(0o644)
            with netCDF4.Dataset(tmp, "a") as nc:
                nc[time_var][:] = nc[time_var][:] + i
            tmp.rename(dst)
        files.append(str(dst))
    return files
