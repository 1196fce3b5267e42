"""Virtual references: regressions found by QA (never-written chunks, chunks HDF5 stored without
their filters, query-string URLs, paths that need percent-encoding, flaky HTTP reads, kerchunk
verify, precise refusals).  Real files (shared data, or written by netCDF4/h5py here) read back
through ``af.open_dataset`` / fsspec's ``reference://`` and compared with xarray's own reading."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import AppendError, ConfigError, SchemaError
from arcoforge.forge.verify import verify
from arcoforge.provenance import INLINE_VARIABLES

pytest.importorskip("virtualizarr")
pytest.importorskip("icechunk")
netCDF4 = pytest.importorskip("netCDF4")

MONTHS = ["201901", "201902"]


def strip(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if not str(k).startswith("arcoforge:")}
    return ds


def mf(files: list[str], **kwargs: object) -> xr.Dataset:
    return xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override", **kwargs).load()


def kerchunk_open(path: str) -> xr.Dataset:
    return xr.open_dataset("reference://", engine="zarr", backend_kwargs={
        "consolidated": False, "storage_options": {"fo": path}}).load()


def recipe_of(files: list[str], **kwargs: object) -> af.VirtualRecipe:
    return af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"), **kwargs)


def ersst_copy(shared: Path, folder: Path, names: list[str] | None = None) -> list[str]:
    """Copies of two ERSST months in ``folder`` (created), named ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for month, name in zip(MONTHS, names or [f"ersst.v5.{m}.nc" for m in MONTHS]):
        dst = folder / name
        shutil.copy(shared / "ersst-v5" / f"ersst.v5.{month}.nc", dst)
        out.append(str(dst))
    return out


# -- 1. never-written chunks ---------------------------------------------------------------------


def _partly_written(shared: Path, path: Path, month: str, quarter_only: bool) -> str:
    """ERSST ``sst`` of one month, chunked (1, 1, 45, 90); with ``quarter_only`` only the first
    of its 4 horizontal chunks is written (HDF5 never allocates the 3 others)."""
    src = xr.open_dataset(shared / "ersst-v5" / f"ersst.v5.{month}.nc")
    sst = src.sst.values[:, 0]
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", sst.shape[1])
        d.createDimension("lon", sst.shape[2])
        t = d.createVariable("time", "f8", ("time",))
        t.units = "days since 1800-01-01"
        t[:] = netCDF4.date2num(src.time.values[0].astype("datetime64[s]").item(), t.units)
        d.createVariable("lat", "f8", ("lat",))[:] = src.lat.values
        d.createVariable("lon", "f8", ("lon",))[:] = src.lon.values
        v = d.createVariable("sst", "f4", ("time", "lat", "lon"), zlib=True, shuffle=False,
                             chunksizes=(1, 45, 90), fill_value=np.float32(-999.0))
        if quarter_only:
            v[0, :45, :90] = np.ma.masked_invalid(sst[0, :45, :90])
        else:
            v[:] = np.ma.masked_invalid(sst)
    return str(path)


def test_never_written_chunks_are_not_referenced(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.virtual.refs import file_refs, make_parser, mappable

    files = [_partly_written(shared_data, tmp_path / f"p{i}.nc", m, quarter_only=True)
             for i, m in enumerate(MONTHS)]
    refs = file_refs(files[0], make_parser("hdf5", {}))["sst"]
    assert (np.asarray(refs.paths, dtype=object) == "").sum() == 3
    assert not mappable(refs, (1, 89, 180))
    expected = mf(files)
    assert np.isnan(expected.sst.values[:, 50:, 100:]).all()  # read as the fill value
    recipe = recipe_of(files)
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe, target, progress=False)
    ds = af.open_dataset(target).load()
    assert "sst" in ds.attrs[INLINE_VARIABLES]
    xr.testing.assert_identical(strip(ds), strip(expected))
    assert verify(target, recipe).ok
    out = str(tmp_path / "refs.json")
    af.bake(recipe_of(files, output="kerchunk"), out, progress=False)
    xr.testing.assert_identical(strip(kerchunk_open(out)), strip(expected))


def test_append_of_a_file_with_never_written_chunks(shared_data: Path, tmp_path: Path) -> None:
    files = [_partly_written(shared_data, tmp_path / "a0.nc", MONTHS[0], quarter_only=False),
             _partly_written(shared_data, tmp_path / "a1.nc", MONTHS[1], quarter_only=True)]
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe_of(files[:1]), target, progress=False)
    recipe = recipe_of(files)
    try:
        af.append(recipe, target)
    except AppendError as err:  # refusing is fine; a store that reads wrong is not
        assert "sst" in str(err)
        return
    ds = af.open_dataset(target).load()
    xr.testing.assert_identical(strip(ds), strip(mf(files)))
    assert verify(target, recipe).ok


# -- 2. chunks stored without their filters (HDF5 filter_mask) ------------------------------------


def test_chunks_stored_unfiltered_are_stored_inline(shared_data: Path, tmp_path: Path) -> None:
    """hdf5_mini_blosc.h5: blosc could not shrink the chunk of ``data``, so HDF5 kept its raw
    bytes (filter_mask 1); references declaring blosc would make every read fail."""
    hdf5plugin = pytest.importorskip("hdf5plugin")  # noqa: F841 - registers the blosc filter
    from arcoforge.forge.virtual.refs import file_refs, make_parser, mappable, unfiltered_chunks

    src = str(shared_data / "hdf5-filters" / "hdf5_mini_blosc.h5")
    assert unfiltered_chunks(src) == {"data": 1}
    refs = file_refs(src, make_parser("hdf5", {}))["data"]
    assert refs.unfiltered_chunks == 1 and not mappable(refs, (3, 2))
    expected = xr.open_dataset(src, engine="h5netcdf", phony_dims="sort").load()
    dim = expected["data"].dims[0]
    pattern = af.FilePattern(lambda **_: src, af.ConcatDim(dim, [0]))
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(af.VirtualRecipe(pattern), target, progress=False)
    ds = af.open_dataset(target).load()
    assert "data" in ds.attrs[INLINE_VARIABLES]
    np.testing.assert_array_equal(ds["data"].values, expected["data"].values)
    out = str(tmp_path / "refs.json")
    af.bake(af.VirtualRecipe(pattern, output="kerchunk"), out, progress=False)
    np.testing.assert_array_equal(kerchunk_open(out)["data"].values, expected["data"].values)


def test_the_filter_mask_check_is_not_skipped_silently(tmp_path: Path) -> None:
    """unfiltered_chunks returned {} on *any* failure, so a file it could not check passed as
    one without unfiltered chunks.  Only a file that is not HDF5 at all gives {} now."""
    h5py = pytest.importorskip("h5py")
    from arcoforge.errors import SourceReadError
    from arcoforge.forge.virtual.refs import file_refs, make_parser, unfiltered_chunks

    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f.create_dataset("v", data=np.arange(20_000, dtype="f8").reshape(200, 100),
                         chunks=(50, 100), compression="gzip")
        f.create_group("g")
    assert unfiltered_chunks(str(good)) == {}  # every chunk went through gzip
    with h5py.File(good, "r") as f:  # the installed HDF5 lists chunks in one pass
        assert hasattr(f["v"].id, "chunk_iter")
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.h5"  # an HDF5 file (signature and all), cut short
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match="truncated"):
        unfiltered_chunks(str(truncated))
    with pytest.raises(OSError):
        unfiltered_chunks(str(tmp_path / "missing.h5"))
    with pytest.raises(KeyError):
        unfiltered_chunks(str(good), group="no-such-group")
    assert unfiltered_chunks(str(good), group="g") == {}
    # not HDF5 at all (netCDF-3): nothing to report, as before
    nc3 = tmp_path / "classic.nc"
    xr.Dataset({"v": ("x", np.arange(4.0))}).to_netcdf(nc3, format="NETCDF3_CLASSIC")
    assert unfiltered_chunks(str(nc3)) == {}
    # a parsed source whose local copy cannot be checked: refused, not published unchecked
    with pytest.raises(SourceReadError, match="unfiltered"):
        file_refs(str(good), make_parser("hdf5", {}), local_copy=str(truncated))
    assert file_refs(str(good), make_parser("hdf5", {}))["v"].unfiltered_chunks == 0


# -- 3. URLs with a query string ------------------------------------------------------------------


@pytest.mark.parametrize("output", ["icechunk", "kerchunk"])
def test_a_query_string_url_is_refused(shared_data: Path, tmp_path: Path, http_server,  # type: ignore[no-untyped-def]
                                       output: str) -> None:
    server = http_server(shared_data / "ersst-v5")
    pattern = af.FilePattern(lambda time: f"{server.url}/download?file=ersst.v5.{time}.nc",
                             af.ConcatDim("time", MONTHS, nitems_per_file=1))
    target = str(tmp_path / "r.json") if output == "kerchunk" else f"icechunk://{tmp_path / 'q'}"
    with pytest.raises(ConfigError) as err:
        af.bake(af.VirtualRecipe(pattern, output=output), target, progress=False)  # type: ignore[arg-type]
    msg = str(err.value)
    assert f"{server.url}/download?file=ersst.v5.201901.nc" in msg
    assert "query string" in msg and "ZarrRecipe" in msg
    assert server.gets == 0  # refused before any source is read


# -- 4. paths and URLs that need percent-encoding -------------------------------------------------


@pytest.mark.parametrize("folder", ["dir with space", "données", "run#2 100%"])
def test_local_paths_that_need_encoding(shared_data: Path, tmp_path: Path, folder: str) -> None:
    files = ersst_copy(shared_data, tmp_path / folder, ["a 1.nc", "é2.nc"])
    expected = mf(files)
    recipe = recipe_of(files)
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe, target, progress=False)
    ds = af.open_dataset(target).load()
    assert "sst" not in ds.attrs[INLINE_VARIABLES]  # referenced, not copied
    xr.testing.assert_identical(strip(ds), strip(expected))
    assert verify(target, recipe).ok
    out = str(tmp_path / "refs.json")
    af.bake(recipe_of(files, output="kerchunk"), out, progress=False)
    xr.testing.assert_identical(strip(kerchunk_open(out)), strip(expected))


def test_http_file_name_with_a_space(shared_data: Path, tmp_path: Path, http_server) -> None:  # type: ignore[no-untyped-def]
    files = ersst_copy(shared_data, tmp_path / "www" / "my dir", ["a 1.nc", "a 2.nc"])
    server = http_server(tmp_path / "www")
    urls = [f"{server.url}/my%20dir/a%20{i}.nc" for i in (1, 2)]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(urls, "time"),
                              source_options=af.SourceOptions(cache=str(tmp_path / "cache")))
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe, target, progress=False)
    before = server.range_requests
    ds = af.open_dataset(target).load()
    assert server.range_requests > before
    assert "sst" not in ds.attrs[INLINE_VARIABLES]
    xr.testing.assert_identical(strip(ds), strip(mf(files)))
    assert verify(target, recipe).ok
    assert not any("%25" in str(entry) for entry in server.log)  # never encoded twice


# -- 5. virtual chunk reads over HTTP are retried -------------------------------------------------


def test_flaky_http_reads_are_retried(shared_data: Path, tmp_path: Path, http_server) -> None:  # type: ignore[no-untyped-def]
    import icechunk

    names = [f"ersst.v5.{m}.nc" for m in ["201901", "201902", "201903", "201904"]]
    server = http_server(shared_data / "ersst-v5", seed=5, fail_modes=("503",))
    urls = [f"{server.url}/{n}" for n in names]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(urls, "time"), source_options=(
        af.SourceOptions(cache=str(tmp_path / "cache"), retries=8, backoff=0.01,
                         max_backoff=0.1)))
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe, target, progress=False)
    config = icechunk.Repository.fetch_config(icechunk.local_filesystem_storage(
        str(tmp_path / "ice")))
    assert config.storage.retries.max_tries == 9  # saved for every reader
    server.flaky = 0.3  # 3 requests in 10 now answer 503
    expected = mf([str(shared_data / "ersst-v5" / n) for n in names])
    for _ in range(3):
        ds = af.open_dataset(target).load()
        xr.testing.assert_identical(strip(ds), strip(expected))
    assert server.failures_injected > 0


# -- 6. kerchunk outputs opened as arcoforge opens stores -----------------------------------------


def test_open_kerchunk_output(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.virtual import open_kerchunk
    from arcoforge.forge.virtual.kerchunk import is_kerchunk_file

    files = [str(shared_data / "ersst-v5" / f"ersst.v5.{m}.nc") for m in MONTHS]
    out = str(tmp_path / "refs.json")
    af.bake(recipe_of(files, output="kerchunk"), out, progress=False)
    assert is_kerchunk_file(out) and not is_kerchunk_file(files[0])
    ds = open_kerchunk(out).load()
    xr.testing.assert_allclose(strip(ds), strip(mf(files)))
    # af.open_dataset and verify take the file too (verify said "nothing is published");
    # the recorded attribute types give float32 sst, as the sources decode
    opened = af.open_dataset(out)
    assert opened["sst"].dtype == np.float32 == mf(files)["sst"].dtype
    xr.testing.assert_identical(strip(opened.load()), strip(ds))
    from arcoforge.errors import ConfigError

    with pytest.raises(ConfigError, match="is a kerchunk reference file: it has no versions"):
        af.open_dataset(out, version="1.0")
    report = af.verify(out, recipe_of(files, output="kerchunk"))
    assert report.ok, str(report)


# -- 7. precise refusals, and no needless ones ----------------------------------------------------


@pytest.mark.parametrize("filter_kwargs", [{"scaleoffset": 3}, {"compression": "szip"}])
def test_undecodable_filter_refusal_names_the_variable(tmp_path: Path,
                                                       filter_kwargs: dict[str, object]) -> None:
    import h5py

    files = []
    for i in range(2):
        path = tmp_path / f"f{i}.h5"
        with h5py.File(path, "w") as h:
            t = h.create_dataset("time", data=np.array([float(i)]), maxshape=(None,), chunks=(1,))
            t.attrs["units"] = np.bytes_("days since 2000-01-01")
            x = h.create_dataset("x", data=np.arange(8.0))
            try:
                v = h.create_dataset("v", data=np.random.default_rng(i).random((1, 8)).astype("f4"),
                                     chunks=(1, 8), maxshape=(None, 8), **filter_kwargs)  # type: ignore[arg-type]
            except ValueError:
                pytest.skip(f"this HDF5 cannot write {filter_kwargs}")
            t.make_scale("time")
            x.make_scale("x")
            v.dims[0].attach_scale(t)
            v.dims[1].attach_scale(x)
        files.append(str(path))
    with pytest.raises(SchemaError) as err:
        af.bake(recipe_of(files), f"icechunk://{tmp_path / 'ice'}", progress=False)
    msg = str(err.value)
    assert "variable 'v'" in msg and "f0.h5" in msg and "ZarrRecipe" in msg


def _rewritten(shared: Path, path: Path, month: str, units: str, level: int) -> str:
    src = xr.open_dataset(shared / "ersst-v5" / f"ersst.v5.{month}.nc").load()
    src.to_netcdf(path, unlimited_dims=["time"], encoding={
        "sst": {"zlib": True, "complevel": level, "chunksizes": (1, 1, 89, 180)},
        "time": {"units": units, "dtype": "f8"}})
    return str(path)


def test_same_time_units_and_other_zlib_levels_are_accepted(shared_data: Path,
                                                            tmp_path: Path) -> None:
    files = [_rewritten(shared_data, tmp_path / "a.nc", MONTHS[0], "days since 1854-01-15 00:00", 4),
             _rewritten(shared_data, tmp_path / "b.nc", MONTHS[1], "days since 1854-01-15", 9)]
    recipe = recipe_of(files)
    target = f"icechunk://{tmp_path / 'ice'}"
    af.bake(recipe, target, progress=False)
    ds = af.open_dataset(target).load()
    assert "sst" not in ds.attrs[INLINE_VARIABLES]
    xr.testing.assert_identical(strip(ds), strip(mf(files)))
    assert verify(target, recipe).ok


def test_time_units_of_other_instants_are_still_refused(shared_data: Path, tmp_path: Path) -> None:
    files = [_rewritten(shared_data, tmp_path / "a.nc", MONTHS[0], "days since 1854-01-15", 4),
             _rewritten(shared_data, tmp_path / "b.nc", MONTHS[1], "days since 1854-01-15 12:00", 4)]
    with pytest.raises(SchemaError, match="'units'"):
        af.bake(recipe_of(files), f"icechunk://{tmp_path / 'ice'}", progress=False)


def test_kerchunk_file_of_http_sources_opens_and_verifies(shared_data: Path, tmp_path: Path,
                                                          http_server) -> None:
    """A kerchunk file whose references point into http:// sources: af.open_dataset failed
    ("Reference-FS's target filesystem must have same value of asynchronous")."""
    files = [shared_data / "ersst-v5" / f"ersst.v5.{m}.nc" for m in MONTHS]
    served = tmp_path / "www"
    served.mkdir()
    for f in files:
        shutil.copyfile(f, served / f.name)
    server = http_server(served)
    urls = [f"{server.url}/{f.name}" for f in files]
    out = str(tmp_path / "refs.json")
    recipe = recipe_of(urls, output="kerchunk")
    af.bake(recipe, out, progress=False)
    ds = af.open_dataset(out).load()
    xr.testing.assert_allclose(strip(ds), strip(mf([str(f) for f in files])))
    assert af.verify(out, recipe).ok


def test_a_virtual_build_asks_the_server_about_its_cached_copies(shared_data: Path,
                                                                 tmp_path: Path,
                                                                 http_server) -> None:
    """A second virtual build in the same process reused the first one's cached copies
    unasked: its scan and inline values came from the old file while its references read the
    new one (verify called the store a MISMATCH)."""
    import netCDF4

    served = tmp_path / "www"
    served.mkdir()
    files = [shared_data / "ersst-v5" / f"ersst.v5.{m}.nc" for m in MONTHS]
    for f in files:  # uncompressed and contiguous: an in-place rewrite keeps every offset
        with xr.open_dataset(f) as ds:
            ds.to_netcdf(served / f.name,
                         encoding={v: {"zlib": False, "contiguous": True} for v in ds.data_vars})
    server = http_server(served)
    urls = [f"{server.url}/{f.name}" for f in files]
    options = af.SourceOptions(cache=str(tmp_path / "cache"))
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(urls, "time"),
                              source_options=options)
    af.bake(recipe, f"icechunk://{tmp_path / 'first'}", progress=False)
    with netCDF4.Dataset(served / files[1].name, "r+") as nc:
        nc["sst"][:] = nc["sst"][:] + 5.0
    os.utime(served / files[1].name, (time.time() + 5, time.time() + 5))
    second = f"icechunk://{tmp_path / 'second'}"
    af.bake(recipe, second, progress=False)
    report = af.verify(second, recipe)
    assert report.ok, str(report)
