"""GRIB sources through cfgrib/ecCodes: every real GRIB file of ``shared/data/grib`` builds and
equals what xarray's cfgrib engine gives, value by value; ``filter_by_keys`` per recipe; a file
whose messages need filtering is an error that says which keys; cfgrib's index files stay in the
build's work folder; and without cfgrib (or ecCodes) the error gives the install line.

The "missing" cases run in a fresh interpreter that blocks the import (``sys.modules[name] =
None``, what Python does for a package that is not installed), so they run whether or not
cfgrib is installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import ConfigError, SourceReadError
from arcoforge.forge.io.readers import RawFile, scan_file

cfgrib = pytest.importorskip("cfgrib", reason="needs cfgrib (pip install 'arcoforge[grib]')")

GRIB = "grib"
#: (file, concat dim): each GRIB file of shared/data, built along its time axis (None: a file
#: with one field, built as a single-key merge)
FILES = [("era5-2mt-2019-03-uk.grib", "time"), ("era5-levels-members.grib", "time"),
         ("regular_ll_sfc.grib", None)]


def pattern_for(path: Path | str, concat_dim: str | None, **kwargs) -> af.FilePattern:  # type: ignore[no-untyped-def]
    if concat_dim is None:
        return af.FilePattern(lambda part: str(path), af.MergeDim("part", ["all"]), **kwargs)
    return af.pattern_from_file_sequence([str(path)], concat_dim, **kwargs)


def build(pattern: af.FilePattern, tmp_path: Path, name: str = "t.zarr") -> xr.Dataset:
    target = str(tmp_path / name)
    af.bake(af.ZarrRecipe(pattern), target, progress=False, workdir=str(tmp_path / "work"))
    return af.open_dataset(target)


def assert_same_as_xarray(got: xr.Dataset, expected: xr.Dataset) -> None:
    """Every variable of ``expected`` is in ``got`` with the same dims, dtype and values."""
    for name, var in expected.variables.items():
        assert name in got.variables, name
        mine = got[name]
        assert mine.dims == var.dims, name
        assert mine.dtype == var.dtype, (name, mine.dtype, var.dtype)
        np.testing.assert_array_equal(mine.values, var.values, err_msg=str(name))
        for key, value in var.attrs.items():
            np.testing.assert_equal(mine.attrs.get(key), value, err_msg=f"{name}.{key}")


def index_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".idx"))


@pytest.fixture
def grib_copy(shared_data: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Copy GRIB files (joined into one) into a folder of their own, where any file written
    beside the source is seen (``readonly=True``: a folder nothing can be written to)."""
    folders: list[Path] = []

    def copy(*names: str, readonly: bool = False) -> Path:
        folder = tmp_path / f"src{len(folders)}"
        folder.mkdir()
        out = folder / ("+".join(Path(n).stem for n in names) + ".grib")
        with open(out, "wb") as fh:  # GRIB files are sequences of messages: cat joins them
            for n in names:
                fh.write((shared_data / GRIB / n).read_bytes())
        if readonly:
            folder.chmod(0o555)
        folders.append(folder)
        return out

    yield copy
    for folder in folders:
        folder.chmod(0o755)


# -- every shared GRIB file builds and equals xarray's view -----------------------------------


@pytest.mark.parametrize(("name", "concat_dim"), FILES)
def test_grib_file_builds_like_xarray(grib_copy, tmp_path: Path, name: str,  # type: ignore[no-untyped-def]
                                      concat_dim: str | None) -> None:
    path = grib_copy(name)
    got = build(pattern_for(path, concat_dim), tmp_path)
    with xr.open_dataset(path, engine="cfgrib",
                         backend_kwargs={"indexpath": str(tmp_path / "x.{short_hash}.idx")}) as exp:
        assert set(exp.data_vars) <= set(got.data_vars)
        assert_same_as_xarray(got, exp)
    assert os.listdir(path.parent) == [path.name]  # no .idx beside the source
    assert index_files(tmp_path / "work" / "index")  # it is in the build's work folder


def test_ensemble_by_levels_keeps_both_dimensions(grib_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """era5-levels-members: 10 members x 4 times x 2 pressure levels, each a dimension of the
    store, and a slice of it equals the same slice through cfgrib."""
    path = grib_copy("era5-levels-members.grib")
    got = build(pattern_for(path, "time"), tmp_path)
    assert got["t"].dims == ("number", "time", "isobaricInhPa", "latitude", "longitude")
    assert dict(got.sizes) == {"number": 10, "time": 4, "isobaricInhPa": 2, "latitude": 61,
                               "longitude": 120}
    with xr.open_dataset(path, engine="cfgrib",
                         backend_kwargs={"indexpath": str(tmp_path / "x.{short_hash}.idx")}) as exp:
        sel = {"number": 7, "isobaricInhPa": 500.0}
        np.testing.assert_array_equal(got["z"].sel(sel).values, exp["z"].sel(sel).values)


# -- several kinds of messages in one file: filter_by_keys per recipe ------------------------


def test_mixed_level_types_are_an_error_naming_the_keys(grib_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A surface field and pressure-level fields in one file: cfgrib cannot build one dataset
    (its DatasetBuildError); by default it would skip variables with only a log line, so
    arcoforge asks it to raise, and says which keys to filter by."""
    path = grib_copy("regular_ll_sfc.grib", "era5-levels-members.grib")
    with pytest.raises(ConfigError) as info:
        build(pattern_for(path, None), tmp_path)
    text = str(info.value)
    assert text.startswith(f"cannot open {path} as one dataset: cfgrib's DatasetBuildError (")
    assert "do not share one set of coordinates" in text
    assert "typeOfLevel: 'surface', 'isobaricInhPa'" in text
    assert ("open_kwargs={'backend_kwargs': {'filter_by_keys': {'typeOfLevel': 'surface'}}}"
            in text)
    assert "and so on for 'isobaricInhPa'" in text
    assert not (tmp_path / "t.zarr").exists()


@pytest.mark.parametrize(("level", "variables"), [("surface", {"skt"}),
                                                  ("isobaricInhPa", {"t", "z"})])
def test_filter_by_keys_builds_one_dataset_per_level_type(grib_copy, tmp_path: Path, level: str,  # type: ignore[no-untyped-def]
                                                          variables: set[str]) -> None:
    path = grib_copy("regular_ll_sfc.grib", "era5-levels-members.grib")
    fbk = {"filter_by_keys": {"typeOfLevel": level}}
    got = build(pattern_for(path, None, open_kwargs={"backend_kwargs": fbk}), tmp_path)
    assert set(got.data_vars) == variables
    with xr.open_dataset(path, engine="cfgrib",
                         backend_kwargs={**fbk,
                                         "indexpath": str(tmp_path / "x.{short_hash}.idx")}) as exp:
        assert_same_as_xarray(got, exp)
    assert os.listdir(path.parent) == [path.name]


def test_filter_that_still_mixes_says_so(grib_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A filter that does not separate the kinds of messages: the error shows the filter given
    and the keys that still vary."""
    path = grib_copy("regular_ll_sfc.grib", "era5-levels-members.grib")
    kwargs = {"backend_kwargs": {"filter_by_keys": {"dataType": "an"}}}
    with pytest.raises(ConfigError) as info:
        build(pattern_for(path, None, open_kwargs=kwargs), tmp_path)
    text = str(info.value)
    assert "even with filter_by_keys={'dataType': 'an'}" in text
    assert "{'dataType': 'an', 'typeOfLevel': 'surface'}" in text


# -- index files --------------------------------------------------------------------------------


def test_grib_index_files_go_to_the_cache(grib_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = grib_copy("era5-2mt-2019-03-uk.grib", readonly=True)
    cache = tmp_path / "cache"
    schema = scan_file((), str(path), str(path), path.stat().st_size, "", "time",
                       cache_dir=str(cache))
    assert schema.dims["time"] == 744
    raw = RawFile(str(path), "cfgrib", url=str(path), cache_dir=str(cache))
    assert raw.read("t2m", (slice(0, 2),)).shape == (2, 33, 49)
    raw.close()
    assert list(path.parent.iterdir()) == [path]
    assert list((cache / "arcoforge-grib-index").glob("*era5-2mt-2019-03-uk.grib*.idx"))


def test_corrupt_grib_may_be_truncated_or_corrupt(tmp_path: Path) -> None:
    """GRIB has no header that gives the file's size: there "truncated or corrupt" is right."""
    path = tmp_path / "bad.grib"
    path.write_bytes(b"GRIB" + bytes(200))
    with pytest.raises(SourceReadError) as info:
        scan_file((), str(path), str(path), 204, "", None, cache_dir=str(tmp_path / "c"))
    text = str(info.value)
    assert text.startswith(f"cannot open {path} as cfgrib: ")
    assert "may be truncated or corrupt" in text and "download it again" in text


# -- without cfgrib / ecCodes -------------------------------------------------------------------


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_grib_without_cfgrib(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / GRIB / "era5-2mt-2019-03-uk.grib"
    run = run_python("""
        import sys
        sys.modules["cfgrib"] = None  # what Python does when a package is not installed
        import arcoforge as af
        from arcoforge.errors import MissingDependencyError
        try:
            af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([sys.argv[1]], "time")),
                    sys.argv[2], progress=False)
        except MissingDependencyError as err:
            print(err)
    """, str(path), str(tmp_path / "t.zarr"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == (
        f"{path} is a GRIB file; reading GRIB needs cfgrib and eccodes: pip install "
        "'arcoforge[grib]'")
    assert not (tmp_path / "t.zarr").exists()


def test_grib_cfgrib_without_eccodes(shared_data: Path, tmp_path: Path) -> None:
    """cfgrib installed but the ecCodes library missing: cfgrib's import fails with a
    RuntimeError (as the real one does); the error says so and gives the same fix."""
    fake = tmp_path / "site" / "cfgrib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('Cannot find the ecCodes library')\n")
    path = shared_data / GRIB / "regular_ll_sfc.grib"
    run = run_python("""
        import sys
        sys.path.insert(0, sys.argv[2])
        from arcoforge.errors import MissingDependencyError
        from arcoforge.forge.io.readers import scan_file
        import os
        try:
            scan_file((), sys.argv[1], sys.argv[1], os.path.getsize(sys.argv[1]), "", None)
        except MissingDependencyError as err:
            print(err)
    """, str(path), str(tmp_path / "site"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == (
        f"{path} is a GRIB file, and cfgrib cannot load the ecCodes library (Cannot find the "
        "ecCodes library); reading GRIB needs cfgrib and eccodes: pip install 'arcoforge[grib]'")

