"""HDF5 filter plugins (hdf5plugin) and HDF4 (pyhdf), on the real files of ``shared/data``.

* Each file of ``hdf5-filters`` (zstd, lz4, bitshuffle, blosc) builds and equals what xarray
  reads from it, value by value; without the plugins the error names the variable, the filter
  and the fix.
* Both files of ``hdf4`` build through arcoforge's HDF4 backend and equal what pyhdf reads
  directly; without pyhdf the error gives the install line.

The "missing" cases run in a fresh interpreter that blocks the import (``sys.modules[name] =
None``, what Python does for a package that is not installed), so they run whether or not the
package is installed here.  HDF5 filter builds run in a fresh interpreter too: once TensorFlow is
loaded in a process (the test session loads it), HDF5 filter plugins no longer register.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.forge.io.formats import FILE_TYPE_ENGINE, detect_engine
from arcoforge.forge.io.hdf4 import HDF4_ENGINE, HDF4BackendEntrypoint

FILTERS = "hdf5-filters"
HDF4 = "hdf4"
#: (file, concat dim) of each HDF4 file
HDF4_FILES = [("A803sn1d.hdf", "fakeDim0"), ("ref_chunked.hdf4", "YDim:demGRID")]


def run_python(script: str, *args: str, blocked: tuple[str, ...] = (),
               env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter, with the packages ``blocked`` made unimportable
    and no inherited ``HDF5_PLUGIN_PATH`` (which may point at hdf5plugin's filters)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in blocked)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=180, env=env)


def build(path: Path | str, concat_dim: str, target: Path, **kwargs) -> xr.Dataset:  # type: ignore[no-untyped-def]
    af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([str(path)], concat_dim, **kwargs)),
            str(target), progress=False)
    return af.open_dataset(str(target))


# -- HDF5 filter plugins -----------------------------------------------------------------------


def test_hdf5plugin_is_installed_for_these_tests() -> None:
    pytest.importorskip("hdf5plugin", reason="needs hdf5plugin (pip install "
                                             "'arcoforge[hdf5-filters]')")


@pytest.mark.parametrize("first", ["arcoforge", "netCDF4"])
def test_every_filter_file_builds_like_xarray(shared_data: Path, tmp_path: Path,
                                              first: str) -> None:
    """With hdf5plugin every filter file builds and equals xarray's view (h5netcdf engine,
    hdf5plugin imported), whether or not netCDF4 was imported before arcoforge (then the files
    are read through h5py)."""
    pytest.importorskip("hdf5plugin")
    script = """
        import json
        import importlib
        importlib.import_module(sys.argv[1])
        import arcoforge as af
        import hdf5plugin, numpy as np, xarray as xr
        out = {}
        for i, name in enumerate(sys.argv[4:]):
            path = sys.argv[2] + "/" + name
            target = f"{sys.argv[3]}/t{i}.zarr"
            af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([path], "phony_dim_0")),
                    target, progress=False)
            got = af.open_dataset(target)
            with xr.open_dataset(path, engine="h5netcdf") as exp:
                for var in exp.variables:
                    assert got[var].dtype == exp[var].dtype, (name, var)
                    np.testing.assert_array_equal(got[var].values, exp[var].values)
                out[name] = sorted(map(str, exp.variables))
        print(json.dumps(out))
    """
    names = sorted(p.name for p in (shared_data / FILTERS).glob("*.h5"))
    assert len(names) == 4
    run = run_python(script, first, str(shared_data / FILTERS), str(tmp_path), *names)
    assert run.returncode == 0, run.stderr[-3000:]
    done = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(done) == names and all("data" in v for v in done.values())


@pytest.mark.parametrize(("name", "label", "fid"), [
    ("hdf5_compression_lz4.h5", "lz4", 32004),
    ("hdf5_compression_bitshuffle.h5", "bitshuffle", 32008),
])
def test_missing_filter_named_at_scan(shared_data: Path, tmp_path: Path, name: str, label: str,
                                      fid: int) -> None:
    """Without hdf5plugin, lz4 and bitshuffle (which the netCDF4 wheels do not ship) are
    refused at scan, naming the variable, the filter and the fix; through a whole build too
    (h5netcdf engine), and nothing is published."""
    path = shared_data / FILTERS / name
    run = run_python("""
        import os
        import arcoforge as af
        from arcoforge.errors import SourceReadError
        from arcoforge.forge.io.readers import scan_file
        path, target = sys.argv[1], sys.argv[2]
        try:
            scan_file((), path, path, os.path.getsize(path), "", None)
        except SourceReadError as err:
            print(err)
        try:
            af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([path], "phony_dim_0",
                                                                file_type="hdf5")),
                    target, progress=False)
        except SourceReadError as err:
            print(err)
        print(os.path.exists(target))
    """, str(path), str(tmp_path / "t.zarr"), blocked=("hdf5plugin",))
    assert run.returncode == 0, run.stderr[-3000:]
    expected = (
        f"cannot read {path}: variable 'data' is compressed with the HDF5 {label} filter "
        f"(filter id {fid}), whose plugin is not installed. Install the filter plugins: pip "
        "install hdf5plugin (arcoforge imports it by itself; in your own code, `import "
        "hdf5plugin` before opening the file).")
    assert run.stdout.splitlines() == [expected, expected, "False"]


@pytest.mark.parametrize("name", ["hdf5_compression_zstd.h5", "hdf5_mini_blosc.h5"])
def test_filters_netcdf4_ships_just_work(shared_data: Path, tmp_path: Path, name: str) -> None:
    """zstd and blosc come with the netCDF4 wheels' plugins: without hdf5plugin they build all
    the same, with the values netCDF4 reads."""
    path = shared_data / FILTERS / name
    run = run_python("""
        import netCDF4, numpy as np
        import arcoforge as af
        with netCDF4.Dataset(sys.argv[1]) as nc:
            expected = nc["data"][:].data
        af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([sys.argv[1]], "phony_dim_0")),
                sys.argv[2], progress=False)
        np.testing.assert_array_equal(af.open_dataset(sys.argv[2])["data"].values, expected)
        print("same values")
    """, str(path), str(tmp_path / "t.zarr"), blocked=("hdf5plugin",))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "same values"


def test_filters_with_plugins_turned_off_are_refused_by_name(shared_data: Path,
                                                             tmp_path: Path) -> None:
    """TensorFlow sets HDF5_PLUGIN_PATH=disable; without hdf5plugin (which registers its
    filters itself) a zstd file is then refused with that cause, not an "undefined filter"
    traceback from the middle of a build."""
    path = shared_data / FILTERS / "hdf5_compression_zstd.h5"
    run = run_python("""
        import arcoforge as af
        from arcoforge.errors import SourceReadError
        try:
            af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([sys.argv[1]], "phony_dim_0")),
                    sys.argv[2], progress=False)
        except SourceReadError as err:
            print(err)
    """, str(path), str(tmp_path / "t.zarr"), blocked=("hdf5plugin",),
        env_extra={"HDF5_PLUGIN_PATH": "disable"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"cannot read {path}: variable 'data' is compressed with the HDF5 zstd" in run.stdout
    assert "HDF5_PLUGIN_PATH=disable" in run.stdout and "TensorFlow" in run.stdout
    assert not (tmp_path / "t.zarr").exists()


# -- HDF4 ---------------------------------------------------------------------------------------


def pyhdf_values(path: Path) -> dict[str, np.ndarray]:
    """Every SDS of ``path``, read with pyhdf directly."""
    sd_mod = pytest.importorskip("pyhdf.SD", reason="needs pyhdf (pip install "
                                                    "'arcoforge[hdf4]')")
    sd = sd_mod.SD(str(path), sd_mod.SDC.READ)
    try:
        return {name: sd.select(name).get() for name in sd.datasets()}
    finally:
        sd.end()


@pytest.mark.parametrize(("name", "concat_dim"), HDF4_FILES)
def test_hdf4_file_builds_like_pyhdf(shared_data: Path, tmp_path: Path, name: str,
                                     concat_dim: str) -> None:
    path = shared_data / HDF4 / name
    expected = pyhdf_values(path)
    assert detect_engine(str(path)) == HDF4_ENGINE
    got = build(path, concat_dim, tmp_path / "t.zarr")
    raw = af.open_dataset(str(tmp_path / "t.zarr"), mask_and_scale=False)
    assert set(expected) <= set(got.data_vars)
    for var, values in expected.items():
        assert raw[var].dtype == values.dtype, var  # stored as on disk (int16 stays int16)
        np.testing.assert_array_equal(raw[var].values, values, err_msg=var)
    with xr.open_dataset(path, engine=HDF4BackendEntrypoint) as decoded:  # CF decoding
        for var in expected:
            np.testing.assert_array_equal(got[var].values, decoded[var].values, err_msg=var)


def test_hdf4_attributes_keep_their_types(shared_data: Path) -> None:
    """scale_factor stored as float64 stays float64, _FillValue has the SDS's type, and text
    loses the C terminators some writers keep: CF decoding then works as for NetCDF."""
    pytest.importorskip("pyhdf")
    with xr.open_dataset(shared_data / HDF4 / "A803sn1d.hdf", engine=HDF4BackendEntrypoint,
                         decode_cf=False) as ds:
        var = ds["GISST22_NOR1DG_6190"]
        assert var.dtype == np.int16 and var.dims == ("fakeDim0", "fakeDim1", "fakeDim2")
        assert isinstance(var.attrs["scale_factor"], np.float64)
        assert isinstance(var.attrs["calibrated_nt"], np.int32)
        assert ds.attrs["Source_Name"] == "GOSTA 8"
    with xr.open_dataset(shared_data / HDF4 / "ref_chunked.hdf4", engine=HDF4BackendEntrypoint,
                         decode_cf=False) as ds:
        assert ds["Elevation"].attrs["_FillValue"] == np.int16(-9999)
        assert isinstance(ds["Elevation"].attrs["_FillValue"], np.int16)
        assert isinstance(ds["LandWater"].attrs["_FillValue"], np.uint8)


def test_hdf4_reads_slices_lazily(shared_data: Path) -> None:
    """Strided, integer and empty selections read only what they select, and match pyhdf."""
    path = shared_data / HDF4 / "ref_chunked.hdf4"
    full = pyhdf_values(path)["Elevation"]
    with xr.open_dataset(path, engine=HDF4BackendEntrypoint, decode_cf=False) as ds:
        var = ds["Elevation"].variable
        assert not var._in_memory
        np.testing.assert_array_equal(var[100:900:7, 5].values, full[100:900:7, 5])
        np.testing.assert_array_equal(var[-3:, ::-50].values, full[-3:, ::-50])
        assert var[5:5, :].shape == (0, 1200)


def test_hdf4_file_type() -> None:
    assert FILE_TYPE_ENGINE["hdf4"] == HDF4_ENGINE


def test_hdf4_without_pyhdf(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / HDF4 / "A803sn1d.hdf"
    run = run_python("""
        import arcoforge as af
        from arcoforge.errors import MissingDependencyError
        try:
            af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([sys.argv[1]], "fakeDim0")),
                    sys.argv[2], progress=False)
        except MissingDependencyError as err:
            print(err)
    """, str(path), str(tmp_path / "t.zarr"), blocked=("pyhdf", "pyhdf.SD"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == (
        f"{path} is an HDF4 file; reading HDF4 needs pyhdf: pip install 'arcoforge[hdf4]' (or "
        "convert the file first, e.g. with the HDF Group's h4toh5, and build from the HDF5 "
        "copy)")
    assert not (tmp_path / "t.zarr").exists()
