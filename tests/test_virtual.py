"""Virtual references (``af.VirtualRecipe``): real files referenced in place, read back through
``af.open_dataset`` and compared with xarray's own reading of the sources; ``verify`` as the
independent oracle; refusals with named errors; versions, provenance and resume."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.verify import verify
from arcoforge.provenance import INLINE_VARIABLES, RECIPE_HASH, SOURCES, VERSION

pytest.importorskip("virtualizarr")
pytest.importorskip("icechunk")

MONTHS = ["201901", "201902", "201903", "201904"]


def sources(shared: Path, folder: str, names: list[str]) -> list[str]:
    return [str(shared / folder / n) for n in names]


def mf(files: list[str], cdim: str = "time") -> xr.Dataset:
    """What xarray alone makes of the sources."""
    return xr.open_mfdataset(files, combine="nested", concat_dim=cdim, data_vars="minimal",
                             coords="minimal", compat="override").load()


def without_provenance(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if not str(k).startswith("arcoforge:")}
    return ds


def bake_and_check(files: list[str], target: str, cdim: str = "time",
                   **recipe_kwargs: object) -> tuple[af.BuildResult, xr.Dataset]:
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, cdim), **recipe_kwargs)
    result = af.bake(recipe, target, progress=False)
    ds = af.open_dataset(target).load()
    xr.testing.assert_identical(without_provenance(ds), without_provenance(mf(files, cdim)))
    report = verify(target, recipe)
    assert report.ok, str(report)
    return result, ds


def repo_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- real files, local paths --------------------------------------------------------------------


def test_ersst_netcdf4_referenced_in_place(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS])
    target = f"icechunk://{tmp_path / 'ersst'}"
    result, ds = bake_and_check(files, target)
    assert result.extra["virtual_variables"] == ["sst", "ssta"]
    assert ds.attrs[INLINE_VARIABLES] == ["lat", "lev", "lon", "time"]
    assert ds.attrs[VERSION] == "1.0"
    assert [s["url"] for s in ds.attrs[SOURCES]] == files
    assert ds.attrs[RECIPE_HASH]
    # the data chunks are references: the repository is far smaller than the sources
    assert repo_bytes(tmp_path / "ersst") < sum(os.path.getsize(f) for f in files) / 2


def test_oisst_packed_int16_keeps_its_packing(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "oisst", ["oisst-avhrr-v02r01.20220913.nc"])
    target = f"icechunk://{tmp_path / 'oisst'}"
    result, ds = bake_and_check(files, target)
    assert set(result.extra["virtual_variables"]) == {"sst", "anom", "err", "ice"}
    raw = af.open_dataset(target, mask_and_scale=False)
    assert raw["sst"].dtype == np.int16
    assert ds["sst"].dtype == np.float32  # decoded like the source: float32 scale_factor


def test_godas_unmappable_variables_stored_inline(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "godas-ssh", ["sshg.2019.nc", "sshg.2020.nc"])
    target = f"icechunk://{tmp_path / 'godas'}"
    result, ds = bake_and_check(files, target)
    assert result.extra["virtual_variables"] == ["sshg"]
    # VirtualiZarr maps these unlimited-dimension variables (chunk 1024 on 12 steps) to empty
    # arrays; they are stored inline, and provenance says so
    assert {"date", "timePlot"} <= set(ds.attrs[INLINE_VARIABLES])
    assert ds.sizes["time"] == 24


def test_swath_netcdf3_along_track(shared_data: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in (shared_data / "swath").glob("ascat_*.nc"))
    target = f"icechunk://{tmp_path / 'ascat'}"
    result, _ = bake_and_check(files, target, cdim="NUMROWS")
    assert "wind_speed" in result.extra["virtual_variables"]


# -- refusals ---------------------------------------------------------------------------------


def test_time_units_that_differ_are_refused(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "calendars", ["ref_test_360_day_1900.nc",
                                               "ref_test_365_day_1900.nc"])
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    with pytest.raises(SchemaError) as err:
        af.bake(recipe, f"icechunk://{tmp_path / 'cal'}", progress=False)
    msg = str(err.value)
    assert "'time'" in msg and "ref_test_365_day_1900.nc" in msg and "ZarrRecipe" in msg


def _packed(path: Path, scale: float, start: int, **encoding: object) -> str:
    values = np.arange(4 * 6, dtype="f4").reshape(4, 6) + start
    ds = xr.Dataset({"t": (("time", "x"), values)},
                    coords={"time": np.arange(start, start + 4), "x": np.arange(6)})
    ds["time"].attrs["units"] = "days since 2000-01-01"
    enc = {"dtype": "int16", "scale_factor": scale, "add_offset": 0.0, "_FillValue": -999,
           "chunksizes": (4, 6), **encoding}
    ds.to_netcdf(path, engine="netcdf4", encoding={"t": enc})
    return str(path)


def test_per_file_scale_factor_is_refused(tmp_path: Path) -> None:
    files = [_packed(tmp_path / "a.nc", 0.01, 0), _packed(tmp_path / "b.nc", 0.02, 4)]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    with pytest.raises(SchemaError) as err:
        af.bake(recipe, f"icechunk://{tmp_path / 'repo'}", progress=False)
    msg = str(err.value)
    assert "'t'" in msg and "scale_factor" in msg and "b.nc" in msg and "ZarrRecipe" in msg
    from arcoforge.forge.targets.base import resolve_target

    assert not resolve_target(f"icechunk://{tmp_path / 'repo'}").exists()  # nothing published


def test_codecs_that_differ_are_refused(tmp_path: Path) -> None:
    files = [_packed(tmp_path / "a.nc", 0.01, 0, zlib=True, complevel=4),
             _packed(tmp_path / "b.nc", 0.01, 4, zlib=False)]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    with pytest.raises(SchemaError) as err:
        af.bake(recipe, f"icechunk://{tmp_path / 'repo'}", progress=False)
    msg = str(err.value)
    assert "'t'" in msg and "codecs" in msg and "b.nc" in msg and "ZarrRecipe" in msg


def test_chunk_shapes_that_differ_are_refused(tmp_path: Path) -> None:
    files = [_packed(tmp_path / "a.nc", 0.01, 0),
             _packed(tmp_path / "b.nc", 0.01, 4, chunksizes=(2, 6))]
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    with pytest.raises(SchemaError) as err:
        af.bake(recipe, f"icechunk://{tmp_path / 'repo'}", progress=False)
    assert "chunk shape" in str(err.value) and "b.nc" in str(err.value)


def test_a_value_changing_transform_is_refused(shared_data: Path) -> None:
    files = sources(shared_data, "ersst-v5", ["ersst.v5.201901.nc"])
    with pytest.raises(ConfigError, match="ZarrRecipe"):
        af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"),
                         transforms=[lambda index, ds: ds * 2])


def test_a_plain_zarr_target_is_refused(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "ersst-v5", ["ersst.v5.201901.nc"])
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    with pytest.raises(ConfigError, match="Icechunk"):
        af.bake(recipe, str(tmp_path / "plain.zarr"), progress=False)


# -- verify is an oracle that can fail ---------------------------------------------------------


def test_verify_reports_a_wrong_reference(shared_data: Path, tmp_path: Path) -> None:
    import icechunk

    from arcoforge.forge.targets.icechunk import open_repository

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS[:2]])
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    target = f"icechunk://{tmp_path / 'bad'}"
    af.bake(recipe, target, progress=False)
    assert verify(target, recipe).ok
    # point the first month's sst chunk at the second month's bytes
    repo = open_repository(target)
    session = repo.writable_session("main")
    from arcoforge.forge.virtual.refs import detect_parser, file_refs

    refs = file_refs(files[1], detect_parser(files[1], "auto", files[1], {}))["sst"]
    spec = icechunk.VirtualChunkSpec(index=[0, 0, 0, 0], location=str(refs.paths[0, 0, 0, 0]),
                                     offset=int(refs.offsets[0, 0, 0, 0]),
                                     length=int(refs.lengths[0, 0, 0, 0]))
    session.store.set_virtual_refs("sst", [spec])
    session.commit("tamper")
    report = verify(target, recipe)
    assert not report.ok
    assert "MISMATCH" in str(report) and "'sst'" in str(report)


# -- versions, resume -------------------------------------------------------------------------


def test_versions_and_new_files(shared_data: Path, tmp_path: Path) -> None:
    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS])
    target = f"icechunk://{tmp_path / 'grow'}"
    first = af.VirtualRecipe(af.pattern_from_file_sequence(files[:2], "time"))
    af.bake(first, target, progress=False)
    again = af.bake(first, target, progress=False)  # nothing changed: nothing to do
    assert again.tasks_skipped == again.tasks
    more = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    af.bake(more, target, progress=False, version_bump="major")  # 1.0 stays (retention)
    assert af.open_dataset(target).sizes["time"] == 4
    assert af.open_dataset(target, version="1.0").sizes["time"] == 2
    assert af.open_dataset(target).attrs[VERSION] == "2.0"
    assert verify(target, more).ok


def test_resume_after_a_kill(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.virtual.build import compile_virtual_plan

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS])
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    target = f"icechunk://{tmp_path / 'resume'}"
    plan = compile_virtual_plan(recipe, target)
    plan.prepare()
    plan.run_task(plan.tasks[0])
    plan.run_task(plan.tasks[1])
    plan.target.checkpoint()  # type: ignore[attr-defined]
    del plan  # the process dies here: nothing published
    from arcoforge.forge.targets.base import resolve_target

    assert not resolve_target(target).exists()
    result = af.bake(recipe, target, progress=False)
    assert result.tasks_skipped == 2
    assert verify(target, recipe).ok


def test_a_changed_source_is_not_read_silently(tmp_path: Path) -> None:
    files = [_packed(tmp_path / "a.nc", 0.01, 0), _packed(tmp_path / "b.nc", 0.01, 4)]
    target = f"icechunk://{tmp_path / 'repo'}"
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    af.bake(recipe, target, progress=False)
    shutil.copy(files[0], tmp_path / "a2.nc")
    later = os.stat(files[1]).st_mtime + 5
    _packed(tmp_path / "b.nc", 0.01, 100)  # rewritten after the references were made
    os.utime(files[1], (later, later))
    with pytest.raises(Exception):  # noqa: B017 - Icechunk refuses the stale chunk
        af.open_dataset(target)["t"].values  # noqa: B018


# -- kerchunk JSON for older readers, and pangeo-forge's HDFReferenceRecipe --------------------


@pytest.mark.parametrize("folder,names,cdim", [
    ("ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS[:3]], "time"),
    ("godas-ssh", ["sshg.2019.nc", "sshg.2020.nc"], "time"),
])
def test_kerchunk_json(shared_data: Path, tmp_path: Path, folder: str, names: list[str],
                       cdim: str) -> None:
    files = sources(shared_data, folder, names)
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, cdim), output="kerchunk")
    result = af.bake(recipe, str(tmp_path / "refs.json"), progress=False)
    assert result.extra["references"] > 0
    ds = xr.open_dataset("reference://", engine="zarr", backend_kwargs={
        "consolidated": False, "storage_options": {"fo": str(tmp_path / "refs.json")}}).load()
    ref = mf(files, cdim)
    assert set(ds.variables) == set(ref.variables)
    for name in ref.variables:  # values (JSON attributes may widen a float32 scale_factor)
        a, b = ds[name].values, ref[name].values
        assert a.shape == b.shape, name
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, b)


def test_pangeo_forge_hdf_reference_recipe(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.compat.pangeo_forge_recipes.patterns import pattern_from_file_sequence
    from arcoforge.compat.pangeo_forge_recipes.recipes import HDFReferenceRecipe

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS[:3]])
    recipe = HDFReferenceRecipe(pattern_from_file_sequence(files, "time"),
                                concat_dims=["time"], identical_dims=["lat", "lon"])
    assert isinstance(recipe, af.VirtualRecipe)
    assert recipe.copy_pruned(2).pattern.dims == {"time": 2}
    target = f"icechunk://{tmp_path / 'pfr'}"
    af.bake(recipe, target, progress=False)
    assert verify(target, recipe).ok
    with pytest.raises(ConfigError, match="preprocess"):
        HDFReferenceRecipe(pattern_from_file_sequence(files, "time"), preprocess=lambda d: d)
    with pytest.raises(ConfigError, match="file_pattern must be a FilePattern, got list"):
        HDFReferenceRecipe(["a.nc"])  # type: ignore[arg-type]


def test_append_new_files(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.virtual.build import append_virtual

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS])
    target = f"icechunk://{tmp_path / 'append'}"
    af.bake(af.VirtualRecipe(af.pattern_from_file_sequence(files[:2], "time")), target,
            progress=False)
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    result = append_virtual(recipe, target)
    assert (result.files, result.rows_added, result.version) == (2, 2, "1.1")
    ds = af.open_dataset(target)
    assert ds.sizes["time"] == 4 and [s["url"] for s in ds.attrs[SOURCES]] == files
    assert verify(target, recipe).ok
    assert append_virtual(recipe, target).files == 0  # nothing new


def test_a_filter_no_reader_can_decode_is_refused(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.virtual.refs import detect_parser, file_refs

    path = str(shared_data / "hdf5-filters" / "hdf5_compression_bitshuffle.h5")
    try:
        import zarr.registry

        zarr.registry.get_codec_class("numcodecs.bitshuffle")
        pytest.skip("a bitshuffle codec is installed here")
    except Exception:  # noqa: BLE001
        pass
    with pytest.raises(SchemaError) as err:
        file_refs(path, detect_parser(path, "auto", path, {}))
    msg = str(err.value)
    assert "'data'" in msg and "hdf5_compression_bitshuffle.h5" in msg and "ZarrRecipe" in msg


def test_nemo_curvilinear_360_day(shared_data: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in (shared_data / "nemo").glob("nemo_1m_*.nc"))
    result, ds = bake_and_check(files, f"icechunk://{tmp_path / 'nemo'}", cdim="time_counter")
    assert result.extra["virtual_variables"] == ["tos"]
    assert {"nav_lat", "nav_lon"} <= set(ds.attrs[INLINE_VARIABLES])  # 2-D coordinates


def test_metadata_only_transforms(shared_data: Path, tmp_path: Path) -> None:
    from arcoforge.forge.transforms import DropVariables, Rename, SetAttrs

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS[:2]])
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"), transforms=[
        DropVariables(["ssta"]), Rename({"sst": "tos"}), SetAttrs({"tos": {"note": "renamed"}})])
    target = f"icechunk://{tmp_path / 'tr'}"
    result = af.bake(recipe, target, progress=False)
    assert result.extra["virtual_variables"] == ["tos"]
    ds = af.open_dataset(target).load()
    ref = mf(files).drop_vars("ssta").rename({"sst": "tos"})
    assert ds["tos"].attrs["note"] == "renamed"
    xr.testing.assert_equal(ds["tos"], ref["tos"])
    assert "ssta" not in ds


KILLED_BUILD = """
import os, signal, sys
import arcoforge as af
from arcoforge.forge.targets.icechunk import IcechunkTarget
from arcoforge.forge.virtual.build import VirtualPlan

files, target = sys.argv[1].split(","), sys.argv[2]
run_task, seen = VirtualPlan.run_task, []

def dying(self, task):
    if len(seen) == 2:  # the third task: the process is killed (SIGKILL, no cleanup)
        os.kill(os.getpid(), signal.SIGKILL)
    seen.append(task.key)
    return run_task(self, task)

VirtualPlan.run_task = dying
recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
af.bake(recipe, IcechunkTarget(target, checkpoint_tasks=1), progress=False, workers=1)
"""


def test_resume_after_sigkill(shared_data: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    files = sources(shared_data, "ersst-v5", [f"ersst.v5.{m}.nc" for m in MONTHS])
    target = f"icechunk://{tmp_path / 'killed'}"
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, ",".join(files), target],
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    from arcoforge.forge.targets.base import resolve_target

    assert not resolve_target(target).exists()  # nothing published
    recipe = af.VirtualRecipe(af.pattern_from_file_sequence(files, "time"))
    result = af.bake(recipe, target, progress=False)
    assert result.tasks_skipped == 2  # the two checkpointed tasks were not redone
    assert verify(target, recipe).ok
