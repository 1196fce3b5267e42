"""One plan, many engines: local, Dask distributed and Apache Beam build identical stores.

Real data: two GODAS sea-surface-height files (12 monthly steps each).  The Dask tests share one
module-scoped ``LocalCluster`` (2 worker processes, 400 MB memory limit each).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.forge.engines import get_engine
from arcoforge.forge.targets.zarr import ZarrTarget

distributed = pytest.importorskip("distributed")
pytest.importorskip("apache_beam")

CHUNKS = {"time": 5}
WORKER_MEMORY = 500e6  # bytes per Dask worker in these tests


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Any:
    # Workers never pause: with icechunk, torch and xarray imported a worker idles near 80 % of
    # this small limit, and a paused worker holds its tasks forever.  The limit still bounds
    # memory (a worker above 95 % is restarted), and the large-input test measures the peak.
    with dask.config.set({"distributed.worker.memory.pause": False,
                          "distributed.worker.memory.spill": False,
                          "distributed.worker.memory.target": False}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           memory_limit=int(WORKER_MEMORY),
                                           dashboard_address=":0")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def godas(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Copies of the two GODAS files (tests truncate them)."""
    src = shared_data / "godas-ssh"
    out = tmp_path_factory.mktemp("godas")
    files = []
    for name in ("sshg.2019.nc", "sshg.2020.nc"):
        shutil.copyfile(src / name, out / name)
        os.chmod(out / name, 0o644)
        files.append(str(out / name))
    return files


def recipe(files: list[str]) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", 12), target_chunks=CHUNKS)


@pytest.fixture(scope="module")
def reference(godas: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store the local engine builds."""
    target = tmp_path_factory.mktemp("ref") / "ref.zarr"
    af.bake(recipe(godas), str(target), engine="local", progress=False)
    return target


# -- helpers -----------------------------------------------------------------------------------


def _strip_stamps(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_stamps(v) for k, v in obj.items() if k != "arcoforge:created"}
    if isinstance(obj, list):
        return [_strip_stamps(v) for v in obj]
    return obj


def assert_same_store(a: Path, b: Path) -> None:
    """Every chunk file byte-identical, metadata identical but for the build time stamp, and
    the opened datasets identical."""
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert any("/c/" in f for f in files_a)
    for rel in files_a:
        da, db = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.endswith("zarr.json"):
            assert _strip_stamps(json.loads(da)) == _strip_stamps(json.loads(db)), rel
        else:
            assert da == db, rel
    ds_a, ds_b = af.open_dataset(str(a)).load(), af.open_dataset(str(b)).load()
    for ds in (ds_a, ds_b):
        ds.attrs.pop("arcoforge:created")
    xr.testing.assert_identical(ds_a, ds_b)


class WrappedTarget(ZarrTarget):
    """A ZarrTarget that injects a failure into ``write``, once per marker (markers are files,
    so the failure happens once per build across processes).

    ``mode="transient"``: the first write of ``sshg`` of every task raises an OSError;
    ``mode="kill"``: the first write of ``sshg`` writes part of its block, then kills its process.
    """

    def __init__(self, url: str, markers: str, mode: str) -> None:
        super().__init__(url)
        self.markers = markers
        self.mode = mode

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "markers": self.markers, "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["markers"], state["mode"])  # type: ignore[misc]

    def write(self, name: str, key: tuple[slice, ...], data: np.ndarray) -> int:
        tag = name
        if self.mode == "transient":  # the first write of sshg of every task fails
            if name != "sshg":
                return super().write(name, key, data)
            tag = f"{name}-{key[0].start}"
        marker = os.path.join(self.markers, f"{self.mode}-{tag}")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().write(name, key, data)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        if self.mode == "transient":
            raise OSError(f"injected transient failure writing {tag}")
        if self.mode == "kill" and name == "sshg":
            half = tuple(slice(s.start, s.start + 1) if i == 0 else s for i, s in enumerate(key))
            super().write(name, half, data[:1])  # a partly written task, then the worker dies
            os.kill(os.getpid(), signal.SIGKILL)
        return super().write(name, key, data)


def run_engine(engine: str, plan: Any, client: Any, **options: Any) -> Any:
    if engine == "dask":
        options.setdefault("client", client)
    return get_engine(engine)(plan, progress=False, **options)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM), Linux >= 4.0."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss() -> int:
    """Peak resident set size of this process since the last reset, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- tests -------------------------------------------------------------------------------------


def test_dask_and_beam_build_the_same_store_as_local(godas: list[str], reference: Path,
                                                     client: Any, tmp_path: Path) -> None:
    r = af.bake(recipe(godas), str(tmp_path / "dask.zarr"), engine="dask", client=client,
                progress=False)
    assert (r.tasks, r.tasks_skipped, r.files) == (5, 0, 2)
    assert_same_store(reference, tmp_path / "dask.zarr")

    r = af.bake(recipe(godas), str(tmp_path / "beam.zarr"), engine="beam", progress=False,
                pipeline_options=["job_name=arcoforge-test"])
    assert (r.tasks, r.tasks_skipped) == (5, 0)
    assert r.bytes_read == r.bytes_written > 0
    assert_same_store(reference, tmp_path / "beam.zarr")

    r = af.bake(recipe(godas), str(tmp_path / "procs.zarr"), processes=True, workers=2,
                progress=False)
    assert (r.tasks, r.tasks_skipped) == (5, 0)
    assert_same_store(reference, tmp_path / "procs.zarr")


def test_dask_engine_starts_its_own_local_cluster(godas: list[str], reference: Path,
                                                  tmp_path: Path) -> None:
    target = tmp_path / "own.zarr"
    af.bake(recipe(godas), str(target), engine="dask", workers=1, progress=False)
    assert_same_store(reference, target)


def test_resume_skips_finished_tasks(godas: list[str], reference: Path, client: Any,
                                     tmp_path: Path) -> None:
    target = tmp_path / "resume.zarr"
    plan = af.compile_plan(recipe(godas), str(target))
    plan.prepare()
    plan.run_task(plan.tasks[0])
    plan.run_task(plan.tasks[3])
    stats = run_engine("beam", plan, client)
    assert sorted(s.key for s in stats if s.skipped) == sorted([plan.tasks[0].key,
                                                                plan.tasks[3].key])
    assert_same_store(reference, target)


@pytest.mark.parametrize("engine", ["dask", "beam"])
def test_permanent_failure_names_the_file_and_publishes_nothing(
        engine: str, godas: list[str], reference: Path, client: Any, tmp_path: Path) -> None:
    files = []
    for f in godas:
        shutil.copyfile(f, tmp_path / Path(f).name)
        files.append(str(tmp_path / Path(f).name))
    target = tmp_path / "out.zarr"
    shutil.copytree(reference, target)  # a previously published store
    plan = af.compile_plan(recipe(files), str(target))
    with open(files[1], "r+b") as fh:  # truncated after the scan
        fh.truncate(os.path.getsize(files[1]) // 3)
    with pytest.raises(Exception, match="sshg.2020.nc") as info:
        run_engine(engine, plan, client)
    if engine == "dask":
        assert isinstance(info.value, af.SourceReadError)
        assert "store task" in "\n".join(getattr(info.value, "__notes__", []))
    assert_same_store(reference, target)  # the previous store is intact
    assert not list(tmp_path.glob("out.zarr.arcoforge-old-*"))


@pytest.mark.parametrize("engine", ["dask", "beam"])
def test_transient_failure_is_retried(engine: str, godas: list[str], reference: Path,
                                      client: Any, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    target = WrappedTarget(str(tmp_path / "out.zarr"), str(markers), "transient")
    plan = af.compile_plan(recipe(godas), target)
    run_engine(engine, plan, client, retry_delay=0.05)
    assert len(list(markers.iterdir())) == 5  # every task failed once
    assert_same_store(reference, tmp_path / "out.zarr")


def test_dask_worker_killed_mid_build(godas: list[str], reference: Path, client: Any,
                                      tmp_path: Path) -> None:
    pids_before = set(client.run(os.getpid).values())
    markers = tmp_path / "markers"
    markers.mkdir()
    target = WrappedTarget(str(tmp_path / "out.zarr"), str(markers), "kill")
    plan = af.compile_plan(recipe(godas), target)
    stats = run_engine("dask", plan, client)
    killed = int((markers / "kill-sshg").read_text())
    assert killed in pids_before  # a worker process really died mid-task ...
    assert len(stats) == 5  # ... and the build completed anyway
    assert_same_store(reference, tmp_path / "out.zarr")
    # leave the shared cluster whole for the next tests: the dead worker is gone and replaced
    deadline = time.monotonic() + 60
    while killed in set(client.run(os.getpid).values()) or len(client.run(os.getpid)) < 2:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)


def _icechunk_store_bytes(path: Path) -> dict[str, Any]:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from arcoforge.forge.targets.icechunk import open_repository

    store = open_repository(f"icechunk://{path}").readonly_session(branch="main").store

    async def dump() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async for key in store.list():
            buf = await store.get(key, prototype=default_buffer_prototype())
            raw = buf.to_bytes()
            out[key] = _strip_stamps(json.loads(raw)) if key.endswith("zarr.json") else raw
        return out

    return sync(dump())


@pytest.fixture(scope="module")
def icechunk_reference(godas: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("icechunk")
    path = tmp_path_factory.mktemp("icref") / "repo"
    af.bake(recipe(godas), f"icechunk://{path}", engine="local", progress=False)
    return path


@pytest.mark.parametrize("engine", ["dask", "beam", "local-processes"])
def test_icechunk_forks_merged_by_the_coordinator(engine: str, godas: list[str],
                                                  icechunk_reference: Path, client: Any,
                                                  tmp_path: Path) -> None:
    from arcoforge.forge.targets.icechunk import open_repository

    path = tmp_path / "repo"
    options: dict[str, Any] = {"client": client} if engine == "dask" else {}
    if engine == "local-processes":
        engine, options = "local", {"processes": True, "workers": 2}
    af.bake(recipe(godas), f"icechunk://{path}", engine=engine, progress=False, **options)
    ref, out = _icechunk_store_bytes(icechunk_reference), _icechunk_store_bytes(path)
    assert sorted(ref) == sorted(out) and any("/c/" in k for k in ref)
    for key in ref:
        assert ref[key] == out[key], key
    repo = open_repository(f"icechunk://{path}")
    assert len(list(repo.ancestry(branch="main"))) == 2  # one commit on top of the initial one
    a = af.open_dataset(f"icechunk://{icechunk_reference}").load()
    b = af.open_dataset(f"icechunk://{path}").load()
    for ds in (a, b):
        ds.attrs.pop("arcoforge:created")
    xr.testing.assert_identical(a, b)


def test_input_larger_than_worker_memory(shared_data: Path, client: Any, tmp_path: Path) -> None:
    """A ~720 MB NetCDF4 file through workers limited to 500 MB: tasks read by slice."""
    src = xr.open_dataset(shared_data / "godas-ssh" / "sshg.2019.nc", decode_cf=False)
    steps = 1200
    big = tmp_path / "big.nc"
    import netCDF4

    with netCDF4.Dataset(big, "w") as nc:
        nc.createDimension("time", steps)
        nc.createDimension("lat", src.sizes["lat"])
        nc.createDimension("lon", src.sizes["lon"])
        for name in ("lat", "lon"):
            v = nc.createVariable(name, src[name].dtype, (name,))
            v[:] = src[name].values
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2019-01-01"
        t[:] = np.arange(steps, dtype="f8")
        ssh = nc.createVariable("sshg", "f4", ("time", "lat", "lon"),
                                chunksizes=(1, src.sizes["lat"], src.sizes["lon"]))
        block = src["sshg"].values
        for i in range(0, steps, 12):
            n = min(12, steps - i)
            ssh[i:i + n] = block[:n]
    size = big.stat().st_size
    assert size > 1.4 * WORKER_MEMORY

    client.run(reset_peak_rss)
    target = tmp_path / "big.zarr"
    rec = af.ZarrRecipe(af.pattern_from_file_sequence([str(big)], "time", steps),
                        target_chunks={"time": 20})
    r = af.bake(rec, str(target), engine="dask", client=client, progress=False)
    assert r.tasks == 60 and r.bytes_read >= 0.99 * size - 1e6

    peaks = client.run(peak_rss)
    print("peak worker RSS during the build:", peaks)
    assert max(peaks.values()) < WORKER_MEMORY, peaks
    out = af.open_dataset(str(target), decode_times=False)
    assert out.sizes == {"time": steps, "lat": src.sizes["lat"], "lon": src.sizes["lon"]}
    for i in (0, 11, 12, 503, steps - 1):
        np.testing.assert_array_equal(out["sshg"].isel(time=i).values,
                                      src["sshg"].isel(time=i % 12).values)
    shutil.rmtree(target)
    big.unlink()


def test_append_with_the_dask_engine(godas: list[str], reference: Path, client: Any,
                                     tmp_path: Path) -> None:
    """An append is a plan: run by Dask like a build, it ends byte-identical to a full build."""
    from arcoforge.forge.append import append

    target = tmp_path / "grown.zarr"
    af.bake(recipe(godas[:1]), str(target), progress=False)  # 12 steps: chunks of 5 leave 2
    result = append(recipe(godas), str(target), engine="dask", client=client)
    assert (result.files, result.rows_added, result.version) == (1, 12, "1.1")
    chunks = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                    if p.is_file() and p.name != "zarr.json")
    assert chunks == sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*")
                            if p.is_file() and p.name != "zarr.json")
    for rel in chunks:
        assert (target / rel).read_bytes() == (reference / rel).read_bytes(), rel
    xr.testing.assert_identical(af.open_dataset(str(target)).drop_attrs(),
                                af.open_dataset(str(reference)).drop_attrs())
    assert not Path(str(target) + ".arcoforge-staging").exists()
