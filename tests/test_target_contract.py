"""One conformance suite for every target kind (the Target protocol of forge/targets/base.py).

Each test runs against every kind in :data:`KINDS` (a plain Zarr store and an Icechunk
repository on the local disk; a virtual-reference target joins by adding a maker), with real
NOAA ERSST v5 files bundled in ``arcoforge/demo_data``: the lifecycle prepare / write /
mark_done / done_tasks / finalize, ``recover`` after an interrupted publish, versions and
opening them, discard and ``abandon``, resume,
"already up to date", a different plan replacing unfinished state, the failure message, locks,
and append as a plan.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import NotFoundError, TargetError
from arcoforge.forge.append import append, compile_append_plan
from arcoforge.forge.bake import abandon, compile_plan, recover, run_plan
from arcoforge.forge.engines import get_engine
from arcoforge.forge.locking import build_lock
from arcoforge.forge.targets.base import Target, resolve_target
from arcoforge.provenance import APPENDED, FINGERPRINT, SOURCES, VERSION

icechunk = pytest.importorskip("icechunk")

DEMO = Path(af.__file__).parent / "demo_data" / "ersst-v5"
FILES = sorted(str(p) for p in DEMO.glob("ersst.v5.*.nc"))
CHUNK = 2


def _zarr(tmp: Path) -> Any:
    return str(tmp / "store.zarr")


def _icechunk(tmp: Path) -> Any:
    from arcoforge.forge.targets.icechunk import IcechunkTarget

    # every finished task is committed at once, so a fresh target object sees it (resume)
    return IcechunkTarget(f"icechunk://{tmp / 'repo'}", checkpoint_tasks=1)


#: kind -> a function making a fresh target (or what resolve_target takes) in a folder
KINDS: dict[str, Callable[[Path], Any]] = {"zarr": _zarr, "icechunk": _icechunk}


@pytest.fixture(params=sorted(KINDS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Target]:
    """A function returning a fresh object for the same target each call (as a new process
    would see it)."""

    def new() -> Target:
        return resolve_target(KINDS[request.param](tmp_path))

    return new


def recipe(files: list[str], chunk: int = CHUNK) -> af.ZarrRecipe:
    return af.ZarrRecipe(af.pattern_from_file_sequence(files, "time", 1),
                         target_chunks={"time": chunk})


def bake(files: list[str], target: Target, **kw: Any) -> af.BuildResult:
    return af.bake(recipe(files, kw.pop("chunk", CHUNK)), target, progress=False, workers=1,
                   **kw)


def sources(files: list[str]) -> xr.Dataset:
    """What the store must hold: the sources as xarray reads them, raw."""
    return xr.open_mfdataset(files, combine="nested", concat_dim="time", decode_cf=False,
                             data_vars="minimal", coords="minimal", compat="override").load()


def assert_holds(target: Target, files: list[str], version: str | None = None) -> None:
    raw = target.open(version=version).load()
    want = sources(files)
    assert raw.sizes["time"] == len(files)
    np.testing.assert_array_equal(raw["sst"].values, want["sst"].values)
    np.testing.assert_array_equal(raw["time"].values, want["time"].values)


# -- the protocol ----------------------------------------------------------------------------


def test_satisfies_the_protocol_and_declares_capabilities(make: Callable[[], Target]) -> None:
    target = make()
    assert isinstance(target, Target)
    assert resolve_target(target) is target
    for flag in ("single_committer", "transactional", "archives_old_versions"):
        assert isinstance(getattr(type(target), flag), bool), flag
    assert isinstance(target.media_type, str) and "zarr" in target.media_type
    if not target.single_committer:  # any copy may write: workers get the target itself
        assert target.fork_for_workers() is target


def test_resolver_rejects_what_is_not_a_target() -> None:
    with pytest.raises(TargetError, match="cannot use 42 as a target.*lacks"):
        resolve_target(42)


def test_lifecycle_prepare_write_mark_done_finalize(make: Callable[[], Target]) -> None:
    target = make()
    assert not target.exists() and target.published_attrs() is None
    assert target.versions() == [] and target.prepared_fingerprint() is None
    assert target.unfinished_location() is None
    plan = compile_plan(recipe(FILES[:6]), target)
    assert plan.prepare() is True
    assert target.prepared_fingerprint() == plan.fingerprint
    assert target.unfinished_location() is not None
    assert plan.prepare() is False  # the same plan: resumed, nothing rewritten
    first = plan.run_task(plan.tasks[0])
    assert first.bytes_written > 0 and target.is_done(plan.tasks[0].key)
    assert target.done_tasks() == {plan.tasks[0].key}
    assert plan.run_task(plan.tasks[0]).skipped  # idempotent
    assert not target.exists()  # nothing visible before finalize
    for task in plan.tasks[1:]:
        plan.run_task(task)
    assert target.done_tasks() == {t.key for t in plan.tasks}
    attrs = plan.finalize()
    assert attrs[VERSION] == "1.0"
    assert target.exists() and target.prepared_fingerprint() is None
    assert target.unfinished_location() is None
    published = target.published_attrs()
    assert published is not None and published[FINGERPRINT] == plan.fingerprint
    assert [s["url"] for s in published[SOURCES]] == FILES[:6]
    assert [(v.version, v.latest) for v in target.versions()] == [("1.0", True)]
    assert_holds(target, FILES[:6])


def test_finalize_needs_a_build_and_a_version(make: Callable[[], Target]) -> None:
    with pytest.raises(TargetError, match="nothing to finalize"):
        make().finalize({VERSION: "1.0"}, {})
    plan = compile_plan(recipe(FILES[:2]), make())
    plan.prepare()
    plan.run_task(plan.tasks[0])
    with pytest.raises(TargetError, match="needs the version to publish"):
        plan.target.finalize({}, {})  # numbering is arcoforge.forge.versions' job
    assert not make().exists()
    plan.finalize()
    assert [v.version for v in make().versions()] == ["1.0"]


def test_versions_open_and_retention(make: Callable[[], Target]) -> None:
    target = make()
    bake(FILES[:4], target)                              # 1.0
    bake(FILES[:6], target, version_bump="major")        # 2.0 (1.0 kept: latest of major 1)
    bake(FILES[:8], target)                              # 2.1 (2.0 dropped by retention)
    assert [v.version for v in make().versions()] == ["1.0", "2.1"]
    assert_holds(target, FILES[:8])
    assert_holds(target, FILES[:4], version="1.0")
    assert_holds(target, FILES[:8], version="2.1")
    with pytest.raises(NotFoundError, match="2.0"):
        target.open(version="2.0")
    with pytest.raises(KeyError):  # what callers of a mapping expect
        target.open(version="9.9")


def test_up_to_date_rebake_changes_nothing(make: Callable[[], Target]) -> None:
    target = make()
    bake(FILES[:4], target)
    before = make().published_attrs()
    again = bake(FILES[:4], make())
    assert again.tasks_skipped == again.tasks == 2 and again.bytes_written == 0
    assert make().published_attrs() == before  # not even a new time stamp
    assert [v.version for v in make().versions()] == ["1.0"]


def _stop_before_the_last_publish_step(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the publish of ``target`` fail after the new version is in place but before its
    last step (the cleanup of a plain Zarr store, the version tag of an Icechunk repository),
    as a crash there would."""

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("simulated crash")

    if target.transactional:
        monkeypatch.setattr(icechunk.Repository, "create_tag", crash)
    else:
        monkeypatch.setattr(type(target), "_finish_publish", crash)


def test_recover_completes_an_interrupted_publish(make: Callable[[], Target],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert make().recover() is False  # nothing to recover: a no-op
    bake(FILES[:4], make())
    assert make().recover() is False
    with monkeypatch.context() as mp:
        _stop_before_the_last_publish_step(make(), mp)
        with pytest.raises(OSError, match="simulated crash"):
            bake(FILES[:6], make())
    # readers already see the new version, numbered as it will stay
    assert make().versions()[-1].version == "1.1"
    assert_holds(make(), FILES[:6])
    assert recover(make()) is True  # completes it (same version), then applies retention
    assert make().recover() is False
    assert [v.version for v in make().versions()] == ["1.1"]  # the latest minor only
    assert make().unfinished_location() is None and make().prepared_fingerprint() is None
    again = bake(FILES[:6], make())
    assert again.tasks_skipped == again.tasks
    assert [v.version for v in make().versions()] == ["1.1"]


def test_resume_skips_finished_tasks(make: Callable[[], Target]) -> None:
    plan = compile_plan(recipe(FILES[:8]), make())
    plan.prepare()
    plan.run_task(plan.tasks[0])
    plan.run_task(plan.tasks[2])
    result = bake(FILES[:8], make())  # a new process: finds the finished tasks
    assert result.tasks_skipped == 2
    assert_holds(make(), FILES[:8])
    assert make().unfinished_location() is None


def test_another_plan_replaces_unfinished_state(make: Callable[[], Target],
                                                caplog: pytest.LogCaptureFixture) -> None:
    plan = compile_plan(recipe(FILES[:8]), make())
    plan.prepare()
    plan.run_task(plan.tasks[0])
    with caplog.at_level("WARNING"):
        result = bake(FILES[:6], make())
    assert result.tasks_skipped == 0
    assert "discarding an unfinished build of another plan" in caplog.text
    assert_holds(make(), FILES[:6])
    assert make().unfinished_location() is None


def test_discard_and_abandon(make: Callable[[], Target], tmp_path: Path) -> None:
    target = make()
    bake(FILES[:4], target)
    plan = compile_plan(recipe(FILES[:6]), make())
    plan.prepare()
    plan.run_task(plan.tasks[0])
    where = make().unfinished_location()
    assert where is not None
    assert abandon(make()) == where
    assert make().unfinished_location() is None and make().prepared_fingerprint() is None
    assert abandon(make()) is None  # nothing left
    assert [v.version for v in make().versions()] == ["1.0"]  # published: untouched
    assert_holds(make(), FILES[:4])
    # the protocol method itself, and the command line
    plan = compile_plan(recipe(FILES[:6]), make())
    plan.prepare()
    make().discard()
    assert make().unfinished_location() is None
    plan.prepare()
    url = make().url
    proc = subprocess.run([sys.executable, "-m", "arcoforge.cli", "abandon", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "abandoned the unfinished build" in proc.stdout and where in proc.stdout
    assert make().unfinished_location() is None
    proc = subprocess.run([sys.executable, "-m", "arcoforge.cli", "abandon", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no unfinished build" in proc.stdout


def test_failed_build_says_where_its_state_is_and_how_to_abandon(
        make: Callable[[], Target], tmp_path: Path) -> None:
    copies = []
    for f in FILES[:6]:
        copies.append(str(tmp_path / Path(f).name))
        shutil.copyfile(f, copies[-1])
    plan = compile_plan(recipe(copies), make())
    with open(copies[4], "r+b") as fh:  # cut off after the scan: its task fails
        fh.truncate(2000)
    with pytest.raises(Exception, match=Path(copies[4]).name) as info:
        run_plan(get_engine("local"), plan, progress=False, workers=1, retries=0)
    note = "\n".join(getattr(info.value, "__notes__", []))
    where = make().unfinished_location()
    assert where is not None and where in note
    assert "resumable state" in note and f"arcoforge abandon {make().url}" in note
    assert not make().exists()  # nothing published
    assert abandon(make()) == where


def test_lock_location(make: Callable[[], Target]) -> None:
    target = make()
    where = target.lock_location()
    assert where is not None  # local targets have a place for the lock
    url, options = where
    assert url.endswith(".arcoforge-lock") and isinstance(options, dict)
    with build_lock(target) as lock:
        assert lock is not None and Path(url).exists()
    assert not Path(url).exists()


# -- append: a plan over the new files ------------------------------------------------------


def test_append_is_a_plan_over_the_new_chunk_rows(make: Callable[[], Target],
                                                  tmp_path: Path) -> None:
    target = make()
    bake(FILES[:7], target, chunk=3)  # 7 rows in chunks of 3: a partly filled last chunk
    assert compile_append_plan(recipe(FILES[:7], 3), make()) is None  # nothing new
    plan = compile_append_plan(recipe(FILES[:11], 3), make())
    assert plan is not None and plan.grow
    # only the chunk rows that change: [6, 9) (old row 6 read again from its file) and [9, 11)
    assert [t.region for t in plan.tasks] == [(6, 9), (9, 11)]
    assert plan.extra_attrs[APPENDED]["files"] == 4
    # interrupted after one task, then resumed by running the same append
    plan.prepare()
    plan.run_task(plan.tasks[0])
    assert make().versions()[-1].version == "1.0"  # nothing published yet
    assert_holds(make(), FILES[:7])
    result = append(recipe(FILES[:11], 3), make())
    assert (result.files, result.rows_added, result.version) == (4, 4, "1.1")
    assert_holds(make(), FILES[:11])
    attrs = make().published_attrs()
    assert attrs is not None and [s["url"] for s in attrs[SOURCES]] == FILES[:11]
    assert attrs[APPENDED]["after_version"] == "1.0"
    assert make().unfinished_location() is None
