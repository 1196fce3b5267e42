"""Source files: short files are refused at scan, and every read error names its real cause.

The inputs are the real files of ``shared/data`` (see its README for their sources), copies of
them cut with ``os.truncate``, and small files written by netCDF-C / HDF5 themselves.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import (
    ConfigError,
    SourceReadError,
    TruncatedFileError,
)
from arcoforge.forge.io.readers import RawFile, check_complete, detect_engine, scan_file


def cut_copy(src: Path, dst_dir: Path, size: int) -> Path:
    """A writable copy of ``src`` cut to ``size`` bytes, under its own name."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    os.truncate(dst, size)
    return dst


def bake_one(path: Path | str, concat_dim: str, tmp_path: Path, **pattern_kwargs) -> xr.Dataset:  # type: ignore[no-untyped-def]
    target = str(tmp_path / "t.zarr")
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence([str(path)], concat_dim,
                                                         **pattern_kwargs))
    af.bake(recipe, target, progress=False)
    return af.open_dataset(target)


def assert_cut_short(err: BaseException, name: str, expected: int | None, actual: int) -> None:
    text = str(err)
    assert isinstance(err, TruncatedFileError)
    assert name in text and "truncated" in text and "cut short" in text
    assert "fetch it again" in text
    assert f"{actual:,}" in text
    if expected is not None:
        assert f"should hold {expected:,} bytes" in text


# -- check_complete on intact files ------------------------------------------------------------


def test_no_shared_file_is_flagged(shared_data: Path) -> None:
    files = sorted(p for p in shared_data.rglob("*")
                   if p.suffix in (".nc", ".h5", ".hdf", ".hdf4", ".grib"))
    assert len(files) > 60
    for path in files:
        check_complete(str(path))  # raises for a short file


def test_shared_formats_are_what_the_tests_assume(shared_data: Path) -> None:
    """NetCDF3 and HDF5 inputs of the tests below, told apart by their first bytes."""
    for rel in NC3:
        assert (shared_data / rel).read_bytes()[:4] == b"CDF\x01", rel
    for rel in NC4:
        assert (shared_data / rel).read_bytes()[:4] == b"\x89HDF", rel


# -- NetCDF3 -----------------------------------------------------------------------------------

NC3 = ["oisst/oisst-v2-avhrr-only-19811231-2deg.nc", "records/madishydro.nc",
       "calendars/ref_test_360_day_1900.nc"]


@pytest.mark.parametrize("rel", NC3)
@pytest.mark.parametrize("where", ["magic", "header", "data", "last-byte"])
def test_netcdf3_cut_short(shared_data: Path, tmp_path: Path, rel: str, where: str) -> None:
    src = shared_data / rel
    full = src.stat().st_size
    size = {"magic": 6, "header": 40, "data": full // 2, "last-byte": full - 1}[where]
    path = cut_copy(src, tmp_path, size)
    with pytest.raises(TruncatedFileError) as info:
        check_complete(str(path), f"https://example.org/{src.name}")
    in_header = where in ("magic", "header")
    assert_cut_short(info.value, f"https://example.org/{src.name}",
                     None if in_header else full, size)
    if in_header:
        assert "ends inside its own header" in str(info.value)
    else:
        assert "NetCDF3 header says" in str(info.value)


def test_netcdf3_cut_inside_records(shared_data: Path, tmp_path: Path) -> None:
    """madishydro keeps almost all its bytes in 1,176 records of ``recNum``: cut in their
    middle."""
    src = shared_data / "records" / "madishydro.nc"
    with netCDF4.Dataset(src) as nc:
        assert nc.dimensions["recNum"].isunlimited() and len(nc.dimensions["recNum"]) == 1176
        record_bytes = sum(v.size * v.dtype.itemsize for v in nc.variables.values()
                           if v.dimensions and v.dimensions[0] == "recNum")
    full = src.stat().st_size
    assert int.from_bytes(src.read_bytes()[4:8], "big") == 1176  # numrecs in the header
    size = full - record_bytes // 2
    path = cut_copy(src, tmp_path, size)
    with pytest.raises(TruncatedFileError) as info:
        check_complete(str(path))
    assert_cut_short(info.value, "madishydro.nc", full, size)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET",
                                 "NETCDF3_64BIT_DATA"])
@pytest.mark.parametrize("layout", ["one-byte-record-variable", "mixed"])
def test_netcdf3_variants(tmp_path: Path, fmt: str, layout: str) -> None:
    """Classic, 64-bit offset (CDF-2) and CDF-5 files written by netCDF-C: one unpadded record
    variable, or fixed + several record variables of odd sizes."""
    path = tmp_path / f"{fmt}-{layout}.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("t", None)
        nc.createDimension("x", 3)
        nc.createDimension("y", 5)
        nc.title = "a global attribute"
        if layout == "mixed":
            nc.createVariable("fixed", "i2", ("y",))[:] = np.arange(5)
            v = nc.createVariable("a", "i1", ("t", "x"))
            v.units = "1"
            v[:] = np.ones((7, 3))
            nc.createVariable("b", "f8", ("t",))[:] = np.arange(7.0)
            nc.createVariable("c", "i2", ("t", "y"))[:] = np.ones((7, 5))
        else:
            nc.createVariable("b", "i1", ("t", "x"))[:] = np.ones((5, 3))
    full = path.stat().st_size
    assert path.read_bytes()[:4] == {"NETCDF3_CLASSIC": b"CDF\x01",
                                     "NETCDF3_64BIT_OFFSET": b"CDF\x02",
                                     "NETCDF3_64BIT_DATA": b"CDF\x05"}[fmt]
    check_complete(str(path))
    for size in (full - 3, full - 12):
        cut = cut_copy(path, tmp_path / f"cut{size}", size)
        with pytest.raises(TruncatedFileError) as info:
            check_complete(str(cut))
        assert_cut_short(info.value, path.name, full, size)
    # the last value of "c" (int16 x 5 = 10 bytes a record) is followed by 2 bytes of padding:
    # a file that lacks only those still holds every value, and is accepted
    cut = cut_copy(path, tmp_path / "padding", full - (2 if layout == "mixed" else 1))
    if layout == "mixed":
        check_complete(str(cut))
    else:  # one unpadded record variable: the last byte is data
        with pytest.raises(TruncatedFileError):
            check_complete(str(cut))


def test_netcdf3_streaming_numrecs(shared_data: Path, tmp_path: Path) -> None:
    """numrecs = STREAMING: the record count is unknown, so only the header and the fixed-size
    variables can be checked; an intact streamed file passes, one cut in its header does not."""
    src = shared_data / "records" / "madishydro.nc"
    data = bytearray(src.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    path = tmp_path / "streamed.nc"
    path.write_bytes(bytes(data))
    check_complete(str(path))
    os.truncate(path, 300)
    with pytest.raises(TruncatedFileError, match="streamed.nc is truncated: the file ends "
                                                 "inside its own header"):
        check_complete(str(path))


# -- HDF5 / NetCDF4 ----------------------------------------------------------------------------

NC4 = ["ersst-v5/ersst.v5.201901.nc", "godas-ssh/sshg.2019.nc", "ncep-air/air.nc",
       "oisst/oisst-avhrr-v02r01.20220913.nc"]


@pytest.mark.parametrize("rel", NC4)
@pytest.mark.parametrize("where", ["superblock", "metadata", "data", "last-byte"])
def test_hdf5_cut_short(shared_data: Path, tmp_path: Path, rel: str, where: str) -> None:
    src = shared_data / rel
    full = src.stat().st_size
    size = {"superblock": 20, "metadata": 2000, "data": full // 2, "last-byte": full - 1}[where]
    path = cut_copy(src, tmp_path, size)
    with pytest.raises(TruncatedFileError) as info:
        check_complete(str(path))
    if where == "superblock":
        assert_cut_short(info.value, src.name, None, size)
        assert "ends inside its own header" in str(info.value)
    else:
        assert_cut_short(info.value, src.name, full, size)
        assert "HDF5 superblock says" in str(info.value)


@pytest.mark.parametrize("userblock", [512, 2048])
@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock version 0 and 3
def test_hdf5_user_block(tmp_path: Path, userblock: int, libver: str) -> None:
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=userblock, libver=libver) as h5:
        h5["x"] = np.arange(5000)
    with open(path, "rb") as fh:
        fh.seek(userblock)
        assert fh.read(8) == b"\x89HDF\r\n\x1a\n"
        version = fh.read(1)[0]
    assert version == (0 if libver == "earliest" else 3)
    assert detect_engine(str(path)) == "netcdf4"
    check_complete(str(path))
    full = path.stat().st_size
    os.truncate(path, full - 100)
    with pytest.raises(TruncatedFileError) as info:
        check_complete(str(path))
    assert_cut_short(info.value, "ub.h5", full, full - 100)


def test_truncated_netcdf3_refused_at_scan(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "oisst" / "oisst-v2-avhrr-only-19811231-2deg.nc"
    path = cut_copy(src, tmp_path / "src", 100_000)
    with pytest.raises(TruncatedFileError) as info:
        bake_one(path, "time", tmp_path)
    assert_cut_short(info.value, src.name, 133_100, 100_000)
    assert not (tmp_path / "t.zarr").exists()


def test_truncated_file_found_when_a_task_opens_it(shared_data: Path, tmp_path: Path) -> None:
    """A file cut after the scan (the RawFile a store task opens) says the same."""
    src = shared_data / "godas-ssh" / "sshg.2019.nc"
    path = cut_copy(src, tmp_path, 1_000_000)
    with pytest.raises(TruncatedFileError) as info:
        RawFile(str(path), "netcdf4", url="https://example.org/sshg.2019.nc").read("sshg", ())
    assert_cut_short(info.value, "https://example.org/sshg.2019.nc", 3_664_706, 1_000_000)


def test_complete_but_corrupt_file_says_corrupt(shared_data: Path, tmp_path: Path) -> None:
    """When the length is right the cause is not a short file: say "may be corrupt"."""
    src = shared_data / "ersst-v5" / "ersst.v5.201901.nc"
    data = bytearray(src.read_bytes())
    data[48:4000] = bytes(4000 - 48)  # wipe the object headers, keep the superblock and size
    path = tmp_path / src.name
    path.write_bytes(bytes(data))
    check_complete(str(path))
    with pytest.raises(SourceReadError) as info:
        scan_file((), src.name, str(path), len(data), "", "time")
    text = str(info.value)
    assert not isinstance(info.value, TruncatedFileError)
    assert "ersst.v5.201901.nc" in text and "not cut short" in text and "may be corrupt" in text
    assert "download it again" in text


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nc"
    path.write_bytes(b"")
    with pytest.raises(SourceReadError, match=r"empty\.nc is empty \(0 bytes\): the download or "
                                              r"copy did not finish\. Fetch it again"):
        detect_engine(str(path))


# GRIB, HDF5 filter plugins and HDF4: tests/test_formats_grib.py, tests/test_formats_hdf.py


# -- open_kwargs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("file_type", "engine", "engine_only"), [
    ("auto", "netcdf4", "persist"), ("hdf5", "h5netcdf", "phony_dims")])
def test_unknown_open_kwarg(shared_data: Path, tmp_path: Path, file_type: str, engine: str,
                            engine_only: str) -> None:
    path = shared_data / "ncep-air" / "air.nc"
    with pytest.raises(ConfigError) as info:
        bake_one(path, "time", tmp_path, file_type=file_type,
                 open_kwargs={"drop_variable": ["air"]})
    text = str(info.value)
    assert text.startswith(f"open_kwargs keyword 'drop_variable' is not accepted when opening "
                           f"{path} with the {engine} engine; valid keywords: ")
    valid = text.split("valid keywords: ")[1].split(", ")
    assert "drop_variables" in valid and engine_only in valid


def test_decoding_open_kwargs_are_for_decoding_not_for_the_build(shared_data: Path,
                                                                  tmp_path: Path) -> None:
    """``open_kwargs={"decode_times": False}`` (a calendar xarray cannot decode) builds the same
    raw store, and verify decodes store and sources alike with it."""
    from arcoforge.forge.verify import verify

    path = shared_data / "calendars" / "b003_TS_200-299.nc"
    pattern = af.pattern_from_file_sequence([str(path)], "time",
                                            open_kwargs={"decode_times": False})
    recipe = af.ZarrRecipe(pattern)
    target = str(tmp_path / "cal.zarr")
    af.bake(recipe, target, progress=False)
    report = verify(target, recipe)
    assert report.ok, str(report)
    assert not any("could not be decoded" in n for n in report.notes)


# -- NetCDF-4 user-defined types ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "dim", "variable", "kind"), [
    ("ref_tst_compounds.nc", "n", "obs", "compound type 'obs_t'"),
    ("ref_tst_compounds2.nc", "phony_dim", "phony_compound_var", "compound type 'cmp3'"),
    ("ref_tst_irish_rover.nc", "dim", "in_the_hold_of_the_Irish_Rover", "enum type 'cargo'"),
])
@pytest.mark.parametrize("file_type", ["auto", "hdf5"])
def test_user_defined_types_refused_at_scan(shared_data: Path, tmp_path: Path, name: str,
                                            dim: str, variable: str, kind: str,
                                            file_type: str) -> None:
    path = shared_data / "types" / name
    if file_type == "hdf5":  # h5netcdf knows no type names
        kind = re.sub(r" '.*'", "", kind)
    with pytest.raises(SourceReadError) as info:
        bake_one(path, dim, tmp_path, file_type=file_type)
    text = str(info.value)
    assert text.startswith(f"variable {variable!r} in {path} has the NetCDF-4 {kind}: ")
    assert text.endswith(f"drop it with open_kwargs={{'drop_variables': [{variable!r}]}}.")
    if "enum" in kind:
        assert "labels would be lost" in text and "flag_values/flag_meanings" in text
    assert not (tmp_path / "t.zarr").exists()


def test_dropping_the_user_type_variable_builds_the_rest(tmp_path: Path) -> None:
    """The fix the message gives works: an enum variable next to ordinary data."""
    path = tmp_path / "flags.nc"
    with netCDF4.Dataset(path, "w") as nc:
        cloud = nc.createEnumType(np.uint8, "cloud_t", {"clear": 0, "cloudy": 1})
        nc.createDimension("time", None)
        nc.createVariable("time", "f8", ("time",))[:] = np.arange(4.0)
        nc.createVariable("cloud", cloud, ("time",))[:] = np.array([0, 1, 1, 0], np.uint8)
        nc.createVariable("sst", "f4", ("time",))[:] = np.arange(4.0) + 280
    with pytest.raises(SourceReadError, match=r"'cloud' .* enum type 'cloud_t'"):
        bake_one(path, "time", tmp_path)
    ds = bake_one(path, "time", tmp_path, open_kwargs={"drop_variables": ["cloud"]})
    assert list(ds.data_vars) == ["sst"]
    np.testing.assert_array_equal(ds["sst"].values, np.arange(4.0, dtype="f4") + 280)


# -- groups, tiny files, other formats ---------------------------------------------------------

S6A = "groups/S6A_P4_2__HR_RED__NR_014_191_20210403T004056_20210403T005056_F00.nc"


@pytest.mark.parametrize("open_kwargs", [{"group": "data_01/kuu"},
                                         {"group": "data_01/kuu", "drop_variables": ["x"]}])
def test_unknown_group(shared_data: Path, open_kwargs: dict[str, object]) -> None:
    """Both the netCDF4 fast path and xarray's view name the groups the file has."""
    path = shared_data / S6A
    with pytest.raises(ConfigError) as info:
        scan_file((), str(path), str(path), path.stat().st_size, "", None,
                  open_kwargs=open_kwargs)
    text = str(info.value)
    assert text.startswith(f"group 'data_01/kuu' is not in {path}; its groups are: ")
    assert "data_01/ku" in text.split("its groups are: ")[1].split(", ")
    with pytest.raises(ConfigError, match=r"group 'nope' is not in .*its groups are: data_01"):
        RawFile(str(path), "netcdf4", {"group": "nope"}, url=str(path))


def test_file_with_only_the_start_of_a_signature(tmp_path: Path) -> None:
    path = tmp_path / "short.nc"
    path.write_bytes(b"\x89HD")
    with pytest.raises(TruncatedFileError, match=r"short\.nc is truncated: it has only 3 bytes, "
                                                 r"the start of a format signature .*cut short.*"
                                                 r"fetch it again"):
        detect_engine(str(path))


def test_error_page_instead_of_data(tmp_path: Path) -> None:
    path = tmp_path / "day.nc"
    path.write_text("<!DOCTYPE html><title>503</title>")
    with pytest.raises(SourceReadError) as info:
        detect_engine(str(path), url="https://example.org/day.nc")
    text = str(info.value)
    assert text.startswith("https://example.org/day.nc is not a NetCDF, HDF5 or GRIB file "
                           "(it starts with b'<!DOCTYP'), nor HDF4;")
    assert "error page" in text and "downloaded again" in text and "truncated" not in text


def test_unknown_file_type() -> None:
    with pytest.raises(ConfigError, match=r"unknown file_type 'netcdf5'; use one of \['grib', "
                                          r"'hdf4', 'hdf5', 'netcdf3', 'netcdf4', 'opendap', "
                                          r"'zarr'\] or 'auto'"):
        detect_engine("unused.nc", "netcdf5")
