"""engine="prefect": the plan as a Prefect 3 flow, against Prefect's local server.

Real data: six NOAA ERSST v5 monthly files (one time step each).  One temporary Prefect server
(SQLite, a subprocess on loopback, started by ``prefect_test_harness``) serves the whole module;
PREFECT_HOME is a temporary folder and telemetry is off, so nothing leaves the machine.  Each
build is checked against the local engine's store byte for byte and against what Prefect's API
recorded: the flow run's state and its task runs.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import arcoforge as af
from arcoforge.errors import MissingDependencyError
from arcoforge.forge.targets.zarr import ZarrTarget
from tests.test_engines import assert_same_store as same_store

pytest.importorskip("prefect")

NFILES = 6
CHUNKS = {"time": 2}  # 3 store tasks


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A temporary Prefect server for this module; yields a sync API client."""
    home = tmp_path_factory.mktemp("prefect-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(home))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    mp.delenv("PREFECT_API_URL", raising=False)
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    try:
        with temporary_settings({PREFECT_HOME: str(home),
                                 PREFECT_SERVER_ANALYTICS_ENABLED: False}), \
                prefect_test_harness(server_startup_timeout=120), \
                get_client(sync_client=True) as client:
            yield client
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def ersst(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Writable copies of the first six ERSST files (a test truncates one)."""
    out = tmp_path_factory.mktemp("ersst")
    files = []
    for src in sorted((shared_data / "ersst-v5").glob("ersst.v5.*.nc"))[:NFILES]:
        shutil.copyfile(src, out / src.name)
        os.chmod(out / src.name, 0o644)
        files.append(str(out / src.name))
    assert len(files) == NFILES
    return files


def recipe(files: list[str]) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", 1), target_chunks=CHUNKS)


@pytest.fixture(scope="module")
def reference(ersst: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("ref") / "ref.zarr"
    af.bake(recipe(ersst), str(target), engine="local", progress=False)
    return target


# -- helpers -----------------------------------------------------------------------------------


def assert_same_store(a: Path, b: Path) -> None:
    """The engines' store comparison (tests/test_engines.py), on a store of several chunks."""
    same_store(a, b)
    assert len([p for p in a.rglob("*") if p.is_file() and "/c/" in p.as_posix()]) >= 3


def flow_run(client: Any, name: str) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


def task_runs(client: Any, run_id: Any, count: int, final: str | None = None) -> list[Any]:
    """The flow run's task runs, once there are ``count`` and all (or the one named ``final``)
    are in a final state: Prefect records task runs from events, a moment after the flow run
    ends."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    while True:
        runs = list(client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))))
        waited = [r for r in runs if final is None or r.name == final]
        if len(runs) >= count and waited and all(r.state is not None and r.state.is_final()
                                                 for r in waited):
            return runs
        assert time.monotonic() < deadline, [(r.name, r.state_type) for r in runs]
        time.sleep(0.2)


class FlakyTarget(ZarrTarget):
    """A ZarrTarget whose first write of ``sst`` in each store task raises an OSError (a
    transient error) -- once per task across threads, tracked by marker files."""

    def __init__(self, url: str, markers: str) -> None:
        super().__init__(url)
        self.markers = markers

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "markers": self.markers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["markers"])  # type: ignore[misc]

    def write(self, name: str, key: tuple[slice, ...], data: np.ndarray) -> int:
        if name == "sst":
            try:
                fd = os.open(os.path.join(self.markers, f"sst-{key[0].start}"),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                raise OSError(f"injected transient failure writing sst rows {key[0]}")
        return super().write(name, key, data)


# -- tests -------------------------------------------------------------------------------------


def test_prefect_flow_builds_the_same_store_as_local(prefect_api: Any, ersst: list[str],
                                                     reference: Path, tmp_path: Path) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    r = af.bake(recipe(ersst), str(tmp_path / "p.zarr"), engine="prefect", progress=False,
                flow_run_name=name)
    assert (r.files, r.tasks, r.tasks_skipped) == (NFILES, 3, 0)
    assert r.bytes_read == r.bytes_written > 0
    assert_same_store(reference, tmp_path / "p.zarr")

    run = flow_run(prefect_api, name)
    assert run.state_type.value == "COMPLETED"
    assert run.flow_id == prefect_api.read_flow_by_name("arcoforge-build").id
    tasks = task_runs(prefect_api, run.id, 5)
    names = sorted(t.name for t in tasks)
    assert [n.split("-")[0] for n in names[:2]] == ["finalize", "prepare"]
    assert names[2:] == ["store time-0000", "store time-0001", "store time-0002"]
    assert all(t.state_type.value == "COMPLETED" for t in tasks)

    # batched: two store tasks per Prefect task run, the same store
    name = f"test-{uuid.uuid4().hex[:8]}"
    r = af.bake(recipe(ersst), str(tmp_path / "b.zarr"), engine="prefect", progress=False,
                flow_run_name=name, batch_size=2, workers=2)
    assert (r.tasks, r.tasks_skipped) == (3, 0)
    assert_same_store(reference, tmp_path / "b.zarr")
    stores = sorted(t.name for t in task_runs(prefect_api, flow_run(prefect_api, name).id, 4)
                    if t.name.startswith("store"))
    assert stores == ["store time-0000..time-0001", "store time-0002"]


def test_transient_failures_are_retried_by_prefect(prefect_api: Any, ersst: list[str],
                                                   reference: Path, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    plan = af.compile_plan(recipe(ersst), FlakyTarget(str(tmp_path / "f.zarr"), str(markers)))
    name = f"test-{uuid.uuid4().hex[:8]}"
    from arcoforge.forge.engines import get_engine

    stats = get_engine("prefect")(plan, progress=False, retry_delay=0.05, flow_run_name=name)
    assert len(stats) == 3 and not any(s.skipped for s in stats)
    assert len(list(markers.iterdir())) == 3  # every store task failed once ...
    assert_same_store(reference, tmp_path / "f.zarr")  # ... and the store is whole
    run = flow_run(prefect_api, name)
    assert run.state_type.value == "COMPLETED"
    stores = [t for t in task_runs(prefect_api, run.id, 5) if t.name.startswith("store")]
    assert sorted(t.run_count for t in stores) == [2, 2, 2]  # Prefect's own retries


def test_a_failing_source_fails_the_flow_run_and_publishes_nothing(
        prefect_api: Any, ersst: list[str], reference: Path, tmp_path: Path) -> None:
    files = []
    for f in ersst:
        shutil.copyfile(f, tmp_path / Path(f).name)
        files.append(str(tmp_path / Path(f).name))
    target = tmp_path / "out.zarr"
    shutil.copytree(reference, target)  # a published store
    plan = af.compile_plan(recipe(files), str(target))
    bad = files[3]
    with open(bad, "r+b") as fh:  # cut short after the scan
        fh.truncate(os.path.getsize(bad) // 3)
    name = f"test-{uuid.uuid4().hex[:8]}"
    from arcoforge.forge.engines import get_engine

    with pytest.raises(af.SourceReadError, match=Path(bad).name) as info:
        get_engine("prefect")(plan, progress=False, retry_delay=0.05, flow_run_name=name)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "store task" in notes and "nothing was published" in notes
    assert "truncated" in str(info.value) or "cut short" in str(info.value)
    assert_same_store(reference, target)  # the published store is untouched

    run = flow_run(prefect_api, name)
    assert run.state_type.value == "FAILED"
    stores = {t.name: t for t in task_runs(prefect_api, run.id, 2, final="store time-0001")
              if t.name.startswith("store")}
    failed = stores["store time-0001"]  # rows 2-3: the fourth file
    assert failed.state_type.value == "FAILED"
    assert failed.run_count == 1  # a truncated file is not retried


def test_missing_prefect_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from arcoforge.forge.engines import get_engine

    monkeypatch.setitem(sys.modules, "prefect", None)  # as if prefect were not installed
    monkeypatch.delitem(sys.modules, "arcoforge.forge.engines.prefect", raising=False)
    with pytest.raises(MissingDependencyError, match=r"arcoforge\[prefect\]"):
        get_engine("prefect")
