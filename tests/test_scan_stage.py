"""The scan as a stage: a picklable job, a scan cache keyed by the file's sha256, and download
counters that show which process read the sources."""

from __future__ import annotations

import pathlib
import pickle

import pytest
import xarray as xr

import arcoforge as af
import arcoforge.forge.bake as bake_mod
from arcoforge.forge.io.fetch import COUNTERS
from arcoforge.forge.transforms import ExpandDimFromKey, Rename


def _ersst(shared: pathlib.Path, n: int = 3) -> list[str]:
    return sorted(str(p) for p in (shared / "ersst-v5").glob("ersst.v5.*.nc"))[:n]


def test_a_rerun_does_not_rescan_files_it_has_scanned(shared_data: pathlib.Path,
                                                      tmp_path: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    files = _ersst(shared_data)
    calls: list[str] = []
    real = bake_mod.scan_file

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(str(args[1]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bake_mod, "scan_file", counting)
    work = str(tmp_path / "work")
    recipe = af.ZarrRecipe(af.pattern_from_file_sequence(files, "time"))
    first = bake_mod.compile_plan(recipe, str(tmp_path / "a.zarr"), workdir=work)
    assert len(calls) == 3 and len(list((tmp_path / "work" / "scans").glob("*.pkl"))) == 3
    second = bake_mod.compile_plan(recipe, str(tmp_path / "b.zarr"), workdir=work)
    assert len(calls) == 3  # nothing opened again
    assert second.fingerprint == first.fingerprint
    assert [f.url for f in second.schema.files] == files
    # a damaged cache entry is a miss, never an error
    victim = next((tmp_path / "work" / "scans").glob("*.pkl"))
    victim.write_bytes(b"not a pickle")
    bake_mod.compile_plan(recipe, str(tmp_path / "c.zarr"), workdir=work)
    assert len(calls) == 4
    # index-dependent transforms are never served from the cache; index-free ones are keyed
    keyed = af.ZarrRecipe(recipe.pattern, transforms=[Rename({"ssta": "anomaly"})])
    bake_mod.compile_plan(keyed, str(tmp_path / "d.zarr"), workdir=work)
    assert len(list((tmp_path / "work" / "scans").glob("*.pkl"))) == 6
    job = bake_mod.ScanJob(recipe.pattern, recipe.source_options, work,
                           (ExpandDimFromKey("time"),))
    assert job._cache_path("0" * 64, "time") is None


def test_the_scan_job_pickles_and_the_counters_see_downloads(
        shared_data: pathlib.Path, http_server: object, tmp_path: pathlib.Path) -> None:
    files = _ersst(shared_data, 2)
    server = http_server(pathlib.Path(files[0]).parent)  # type: ignore[operator]
    base, names = server.url, [pathlib.Path(f).name for f in files]  # type: ignore[attr-defined]
    pattern = af.FilePattern(lambda time: f"{base}/{names[time]}", af.ConcatDim("time", [0, 1]))
    job = bake_mod.ScanJob(pattern, af.SourceOptions(), str(tmp_path / "w"))
    cloudpickle = pytest.importorskip("cloudpickle")  # how Dask ships it to workers
    clone = pickle.loads(cloudpickle.dumps(job))
    before = dict(COUNTERS)
    schema = clone(next(iter(pattern.items())))
    assert schema.fetch_url.startswith(base)
    assert COUNTERS["downloads"] == before["downloads"] + 1
    assert COUNTERS["bytes"] == before["bytes"] + pathlib.Path(files[0]).stat().st_size


def _counters() -> dict[str, int]:
    from arcoforge.forge.io.fetch import COUNTERS as worker_counters

    return dict(worker_counters)


def test_dask_scans_on_the_workers_and_the_coordinator_reads_no_source_bytes(
        shared_data: pathlib.Path, http_server: object, tmp_path: pathlib.Path) -> None:
    distributed = pytest.importorskip("distributed")
    files = _ersst(shared_data, 6)
    server = http_server(pathlib.Path(files[0]).parent)  # type: ignore[operator]
    base, names = server.url, [pathlib.Path(f).name for f in files]  # type: ignore[attr-defined]
    pattern = af.FilePattern(lambda time: f"{base}/{names[time]}",
                             af.ConcatDim("time", list(range(len(names))), nitems_per_file=1))
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 2})
    total = sum(pathlib.Path(f).stat().st_size for f in files)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        before = dict(COUNTERS)
        result = af.bake(recipe, str(tmp_path / "d.zarr"), engine="dask", client=client,
                         workdir=str(tmp_path / "work"), progress=False)
        assert result.files == len(files)
        assert COUNTERS == before  # the coordinator downloaded nothing
        per_worker = client.run(_counters)
    assert sum(c["downloads"] for c in per_worker.values()) == len(files)  # once each
    assert sum(c["bytes"] for c in per_worker.values()) == total
    local = af.bake(recipe, str(tmp_path / "l.zarr"), progress=False)
    assert local.files == len(files)
    xr.testing.assert_identical(af.open_dataset(str(tmp_path / "l.zarr"))["sst"],
                                af.open_dataset(str(tmp_path / "d.zarr"))["sst"])


def test_beam_scans_in_its_workers(shared_data: pathlib.Path, http_server: object,
                                   tmp_path: pathlib.Path) -> None:
    """With Beam's runner in multi-processing mode the sources are fetched and scanned by the
    SDK worker processes; the launching process downloads nothing."""
    pytest.importorskip("apache_beam")
    files = _ersst(shared_data, 4)
    server = http_server(pathlib.Path(files[0]).parent)  # type: ignore[operator]
    base, names = server.url, [pathlib.Path(f).name for f in files]  # type: ignore[attr-defined]
    pattern = af.FilePattern(lambda time: f"{base}/{names[time]}",
                             af.ConcatDim("time", list(range(len(names))), nitems_per_file=1))
    recipe = af.ZarrRecipe(pattern, target_chunks={"time": 2})
    before = dict(COUNTERS)
    result = af.bake(recipe, str(tmp_path / "b.zarr"), engine="beam", progress=False,
                     workdir=str(tmp_path / "work"),
                     pipeline_options=["direct_running_mode=multi_processing",
                                       "direct_num_workers=2"])
    assert result.files == len(files) and result.tasks_skipped == 0
    assert COUNTERS == before
    local = af.bake(recipe, str(tmp_path / "l.zarr"), progress=False)
    assert local.files == len(files)
    xr.testing.assert_identical(af.open_dataset(str(tmp_path / "l.zarr"))["sst"],
                                af.open_dataset(str(tmp_path / "b.zarr"))["sst"])


def test_the_per_host_limit_holds_across_the_dask_cluster(
        shared_data: pathlib.Path, http_server: object, tmp_path: pathlib.Path) -> None:
    """max_concurrency_per_host=1 with two worker processes of two threads each: the server
    never sees two downloads at once (a per-process limit would allow four)."""
    distributed = pytest.importorskip("distributed")
    files = _ersst(shared_data, 8)
    server = http_server(pathlib.Path(files[0]).parent, delay=0.3)  # type: ignore[operator]
    base, names = server.url, [pathlib.Path(f).name for f in files]  # type: ignore[attr-defined]
    pattern = af.FilePattern(lambda time: f"{base}/{names[time]}",
                             af.ConcatDim("time", list(range(len(names))), nitems_per_file=1))
    recipe = af.ZarrRecipe(pattern, source_options=af.SourceOptions(max_concurrency_per_host=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        af.bake(recipe, str(tmp_path / "d.zarr"), engine="dask", client=client,
                workdir=str(tmp_path / "work"), progress=False)
    assert server.max_concurrent == 1  # type: ignore[attr-defined]
