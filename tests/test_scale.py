"""Planning and running many-file builds: linear task compilation, one shared layout per
archive, and store tasks batched into engine work units.

The arithmetic tests use in-memory schemas (thousands of files without touching a disk); the
build test writes 240 tiny real NetCDF-4 files and builds them with the local engine and with
Dask in batches, byte for byte the same store.  ``benchmarks/scale.py`` measures the same
paths at 1,000 to 100,000 files.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import arcoforge as af
from arcoforge.errors import ConfigError, SchemaError
from arcoforge.forge.engines import common
from arcoforge.forge.patterns import Index
from arcoforge.forge.plan import choose_chunks, compile_tasks, pieces_for_region
from arcoforge.forge.schema import FileSchema, VariableSchema, combine_schemas, share_layout

# -- in-memory schemas -------------------------------------------------------------------------


def file_schema(i: int, start: int, length: int, dtype: str = "<f4") -> FileSchema:
    """The schema a scan would give for file ``i`` holding time steps ``start..start+length``."""
    variables = {
        "time": VariableSchema("time", ("time",), (length,), "<f8",
                               {"units": "days since 2000-01-01", "calendar": "standard"}),
        "x": VariableSchema("x", ("x",), (3,), "<f4", {"units": "m"}),
        "v": VariableSchema("v", ("time", "x"), (length, 3), dtype,
                            {"_FillValue": np.float32(-999), "units": "K"}, (1, 3)),
    }
    return FileSchema(index=Index((("time", i),)), url=f"file{i}.nc", path=f"/data/file{i}.nc",
                      size=1000, sha256=f"{i:064x}", dims={"time": length, "x": 3},
                      variables=variables, attrs={"title": "test"},
                      concat_values=np.arange(start, start + length, dtype="<f8"))


def archive(lengths: list[int]) -> list[FileSchema]:
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return [file_schema(i, int(s), n) for i, (s, n) in enumerate(zip(starts, lengths))]


def test_compile_tasks_equals_the_full_walk_over_the_files() -> None:
    rng = random.Random(7)
    for _ in range(20):
        lengths = [rng.choice([0, 1, 1, 2, 5]) for _ in range(rng.randint(1, 60))]
        if not sum(lengths):
            lengths[0] = 1
        schema = combine_schemas(archive(lengths), "time")
        step = rng.randint(1, 7)
        tasks = compile_tasks(schema, choose_chunks(schema, {"time": step}))
        gkey, members = next(iter(schema.group_files.items()))
        assert [t.region for t in tasks] == [
            (s, min(s + step, sum(lengths))) for s in range(0, sum(lengths), step)]
        for task in tasks:  # the bisected lookup finds exactly what visiting every file finds
            assert task.pieces_for(gkey) == pieces_for_region(members, dict(enumerate(lengths)),
                                                              task.region)
            covered = sum(p.dst[1] - p.dst[0] for p in task.pieces_for(gkey))
            assert covered == task.region[1] - task.region[0]


def test_one_layout_per_archive_and_drift_still_caught() -> None:
    files = archive([1] * 3000)
    plain = combine_schemas(archive([1] * 3000), "time")
    seen: Any = __import__("collections").OrderedDict()
    shared = [share_layout(f, seen) for f in files]
    assert all(f.variables is shared[0].variables and f.dims is shared[0].dims
               for f in shared)
    combined = combine_schemas(shared, "time")
    assert combined.dims == plain.dims == {"time": 3000, "x": 3}
    assert combined.group_files == plain.group_files
    np.testing.assert_array_equal(combined.concat_values, np.arange(3000.0))
    assert all(f.concat_values is None for f in combined.files)  # one array, not 3000
    # the plan that engines ship to workers holds the layout once
    assert len(pickle.dumps(combined)) < 0.6 * len(pickle.dumps(plain))

    # a file whose layout differs is not shared, and its drift is still an error
    odd = archive([1] * 5)
    odd[3] = file_schema(3, 3, 1, dtype="<f8")
    seen.clear()
    odd = [share_layout(f, seen) for f in odd]
    assert odd[3].variables is not odd[0].variables
    with pytest.raises(SchemaError, match=r"'v' has dtype <f4 in file0.nc but <f8 in file3.nc"):
        combine_schemas(odd, "time")
    # and so is a time step out of order, found by the one vectorised test
    late = archive([1] * 5)
    late[2].concat_values = np.array([0.5])
    with pytest.raises(SchemaError, match="goes backwards between file1.nc"):
        combine_schemas([share_layout(f, seen) for f in late], "time")


def test_work_units() -> None:
    assert common.unit_size(1500) == 1
    assert common.unit_size(common.MAX_WORK_UNITS) == 1
    assert common.unit_size(100_000) == -(-100_000 // common.MAX_WORK_UNITS)
    assert common.unit_size(100_000, batch_size=7) == 7
    assert common.unit_size(1000, max_units=100) == 10
    units = common.work_units(list(range(100_000)), common.unit_size(100_000))
    assert len(units) <= common.MAX_WORK_UNITS
    assert [t for u in units for t in u] == list(range(100_000))
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        common.unit_size(10, batch_size=0)


# -- a real build, batched ---------------------------------------------------------------------

NFILES = 240


def write_files(out: Path, n: int) -> list[str]:
    """``n`` tiny NetCDF-4 files, one time step each (the layout of benchmarks/scale.py)."""
    import netCDF4

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = out / f"sst.{i:04d}.nc"
        with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
            nc.createDimension("time", 1)
            nc.createDimension("lat", 4)
            nc.createDimension("lon", 6)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = f"days since 2000-01-{1 + i % 28:02d}"  # re-expressed by the build
            t[:] = [i - i % 28]
            lat = nc.createVariable("lat", "f4", ("lat",))
            lat[:] = [-45, -15, 15, 45]
            sst = nc.createVariable("sst", "f4", ("time", "lat", "lon"),
                                    fill_value=np.float32(-999))
            sst[:] = rng.standard_normal((1, 4, 6)).astype("f4")
        paths.append(str(path))
    return paths


def store_files(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            raw = p.read_bytes()
            if p.name == "zarr.json":
                doc = json.loads(raw)
                doc.get("attributes", {}).pop("arcoforge:created", None)
                raw = json.dumps(doc, sort_keys=True).encode()
            out[p.relative_to(root).as_posix()] = raw
    return out


def test_batched_dask_build_equals_the_local_build(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    (tmp_path / "src").mkdir()
    files = write_files(tmp_path / "src", NFILES)
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", 1),
                           target_chunks={"time": 1})
    local = af.bake(recipe, str(tmp_path / "local.zarr"), progress=False, workers=2)
    assert (local.files, local.tasks) == (NFILES, NFILES)

    # as a 100,000-task plan would be: more store tasks than work units
    monkeypatch.setattr(common, "MAX_WORK_UNITS", 16)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, \
            distributed.get_task_stream(client) as stream:
        r = af.bake(recipe, str(tmp_path / "dask.zarr"), engine="dask", client=client,
                    progress=False)
    assert (r.tasks, r.tasks_skipped) == (NFILES, 0)
    assert r.bytes_read == local.bytes_read
    store_keys = {t["key"] for t in stream.data if "arcoforge-store" in str(t["key"])}
    assert len(store_keys) == 16  # 240 store tasks in 16 Dask tasks of 15
    a, b = store_files(tmp_path / "local.zarr"), store_files(tmp_path / "dask.zarr")
    assert sum("/c/" in k for k in a) >= NFILES
    assert a == b
    ds = af.open_dataset(str(tmp_path / "dask.zarr"))
    assert ds.sizes["time"] == NFILES
    assert str(ds.time.values[29])[:10] == "2000-01-30"  # the re-expressed times hold
