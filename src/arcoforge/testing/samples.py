"""Sample inputs made from real files, for tests, benchmarks and demos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["find_shared_data", "dated_copies", "writable_copies", "restamp_time_units"]


def find_shared_data(*required: str, checkout: str | os.PathLike[str] | None = None,
                     ) -> Path | None:
    """The project's shared data folder (real files made by others, see its README):
    ``$ARCOFORGE_SHARED_DATA``, else ``shared/data`` in or next to ``checkout`` (default: the
    current folder) -- the first that holds every path of ``required`` (e.g. ``"ersst-v5"``,
    ``"ncep-air/air.nc"``); None when none does."""
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    root = Path(checkout) if checkout is not None else Path.cwd()
    for candidate in ([Path(env)] if env else []) + [root / "shared" / "data",
                                                      root.parent / "shared" / "data"]:
        if all((candidate / r).exists() for r in required):
            return candidate
    return None


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


def writable_copies(sources: list[str | os.PathLike[str]],
                    out_dir: str | os.PathLike[str]) -> list[Path]:
    """Copies of read-only ``sources`` in ``out_dir`` (same names), writable, in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for src in sources:
        dst = out / Path(src).name
        shutil.copy(src, dst)
        dst.chmod(0o644)
        copies.append(dst)
    return copies


def restamp_time_units(path: str | os.PathLike[str], units: str, time_var: str = "time") -> None:
    """Re-express ``time_var`` of the file at ``path`` in other CF ``units`` (same instants),
    as archives that count time from each file's own start do."""
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        t = nc[time_var]
        calendar = getattr(t, "calendar", "standard")
        when = netCDF4.num2date(t[:], t.units, calendar)
        t.units = units
        t[:] = netCDF4.date2num(when, units, calendar)
