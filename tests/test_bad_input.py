"""Bad input gets an error naming the file, variable and problem; published stores stay intact."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import TruncatedFileError
from arcoforge.forge.engines import get_engine
from arcoforge.forge.verify import verify
from arcoforge.testing.samples import writable_copies


@pytest.fixture
def ersst(shared_data: Path, tmp_path: Path) -> list[Path]:
    """Writable copies of 4 ERSST months."""
    return writable_copies(
        [shared_data / "ersst-v5" / f"ersst.v5.2019{m:02d}.nc" for m in range(1, 5)],
        tmp_path / "src")


def recipe_of(files: list[Path]) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence([str(f) for f in files], "time"),
                         target_chunks={"time": 2})


def rewrite(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    ds = xr.open_dataset(path, decode_cf=False).load()
    ds.close()
    fn(ds).to_netcdf(path)


def test_missing_variable_names_file_and_variable(ersst: list[Path], tmp_path: Path) -> None:
    rewrite(ersst[2], lambda ds: ds.drop_vars("ssta"))
    with pytest.raises(af.SchemaError, match=r"'ssta'.*missing from .*ersst\.v5\.201903\.nc"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_dtype_change_is_schema_drift(ersst: list[Path], tmp_path: Path) -> None:
    rewrite(ersst[1], lambda ds: ds.assign(sst=ds.sst.astype("float64")))
    with pytest.raises(af.SchemaError,
                       match=r"'sst' has dtype <f4 in .*201901.* but <f8 in .*201902"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_dimension_change(ersst: list[Path], tmp_path: Path) -> None:
    rewrite(ersst[3], lambda ds: ds.isel(lat=slice(0, 80)))
    with pytest.raises(af.SchemaError, match=r"dimension 'lat' .* 89 in .* but 80 in .*201904"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_packing_change_is_refused(ersst: list[Path], tmp_path: Path) -> None:
    with netCDF4.Dataset(ersst[1], "a") as nc:
        nc["sst"].scale_factor = 0.5
    with pytest.raises(af.SchemaError, match=r"'sst': attribute 'scale_factor'.*201902"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_same_timestamp_in_two_files(ersst: list[Path], tmp_path: Path) -> None:
    files = [ersst[0], ersst[1], ersst[1]]
    with pytest.raises(af.SchemaError, match=r"same 'time' value .* appears in .*201902.*201902"):
        af.bake(recipe_of(files), str(tmp_path / "t.zarr"), progress=False)


def test_non_monotonic_files(ersst: list[Path], tmp_path: Path) -> None:
    files = [ersst[0], ersst[2], ersst[1]]
    with pytest.raises(af.SchemaError, match=r"goes backwards between .*201903.* and .*201902"):
        af.bake(recipe_of(files), str(tmp_path / "t.zarr"), progress=False)


def test_truncated_file(ersst: list[Path], tmp_path: Path) -> None:
    data = ersst[2].read_bytes()
    ersst[2].write_bytes(data[: len(data) // 3])
    with pytest.raises(TruncatedFileError,
                       match=r"ersst\.v5\.201903\.nc is truncated: .* 164,358 bytes, but it has "
                             r"only 54,786 .*cut short.*fetch it again"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_not_a_netcdf_file(ersst: list[Path], tmp_path: Path) -> None:
    ersst[0].write_text("<html>Service unavailable</html>")
    with pytest.raises(af.SourceReadError, match=r"201901\.nc is not a NetCDF, HDF5 or GRIB"):
        af.bake(recipe_of(ersst), str(tmp_path / "t.zarr"), progress=False)


def test_a_declared_file_type_that_is_not_the_files_own(ersst: list[Path],
                                                       tmp_path: Path) -> None:
    """NetCDF files declared as GRIB said the file "may be corrupt: delete the cached copy";
    the error names the file's real format and the file_type that reads it."""
    pattern = af.pattern_from_file_sequence([str(f) for f in ersst], "time", file_type="grib")
    with pytest.raises(af.SourceReadError) as err:
        af.bake(af.ZarrRecipe(pattern), str(tmp_path / "t.zarr"), progress=False)
    text = str(err.value)
    assert f"{ersst[0]} is a NetCDF4/HDF5 file, not what the cfgrib engine reads" in text
    assert text.endswith("leave it unset to detect the format, or name the file's own "
                         "('netcdf4')")
    assert "corrupt" not in text


def test_missing_local_file(ersst: list[Path], tmp_path: Path) -> None:
    files = ersst + [ersst[0].parent / "ersst.v5.209901.nc"]
    with pytest.raises(af.SourceError, match=r"209901\.nc"):
        af.bake(recipe_of(files), str(tmp_path / "t.zarr"), progress=False)


def test_http_404(ersst: list[Path], tmp_path: Path, http_server) -> None:  # type: ignore[no-untyped-def]
    server = http_server(ersst[0].parent)
    urls = [f"{server.url}/{f.name}" for f in ersst] + [f"{server.url}/ersst.v5.209901.nc"]
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(urls, "time"))
    with pytest.raises(af.SourceError, match=r"209901\.nc.*(not found|404)"):
        af.bake(recipe, str(tmp_path / "t.zarr"), progress=False)


def test_wrong_credentials(ersst: list[Path], tmp_path: Path, http_server,  # type: ignore[no-untyped-def]
                           monkeypatch: pytest.MonkeyPatch) -> None:
    server = http_server(ersst[0].parent, basic_auth=("scientist", "right-password"))
    monkeypatch.setenv("ARCO_USER", "scientist")
    monkeypatch.setenv("ARCO_PASS", "wrong-password")
    urls = [f"{server.url}/{f.name}" for f in ersst]
    opts = af.SourceOptions(auth=af.Auth.basic("ARCO_USER", "ARCO_PASS"), retries=0)
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(urls, "time"), source_options=opts)
    with pytest.raises(af.SourceError) as info:
        af.bake(recipe, str(tmp_path / "t.zarr"), progress=False)
    assert "credentials" in str(info.value) and "ARCO_PASS" in str(info.value)
    assert "wrong-password" not in str(info.value)


def test_failed_rebuild_leaves_published_store_intact(ersst: list[Path], tmp_path: Path) -> None:
    target = str(tmp_path / "t.zarr")
    good = recipe_of(ersst[:3])
    af.bake(good, target, progress=False)
    before = af.open_dataset(target).load()
    # a new build over a file that turns out corrupt while its task reads it
    bad = recipe_of(ersst)
    plan = af.compile_plan(bad, target)
    data = ersst[3].read_bytes()
    ersst[3].write_bytes(data[:2000])
    with pytest.raises(Exception, match=r"201904"):
        get_engine("local")(plan, progress=False, retries=0)
    after = af.open_dataset(target).load()
    xr.testing.assert_identical(before, after)
    assert verify(target, good).ok
