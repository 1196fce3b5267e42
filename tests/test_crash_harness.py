"""Crash harness: kill a build, an append and a publish at its filesystem events, and check
that every crash point converges (arcoforge issue 10).

For each target kind (plain Zarr on a local disk, Icechunk on a local disk, plain Zarr on S3 via
moto) and each operation:

* ``build``   -- the first build of an empty target (old version: nothing);
* ``append``  -- append 2 files to a published 1.0 (new version 1.1, 1.0 dropped by retention);
* ``publish`` -- a full rebuild of a published 1.0 with more files as a major version (2.0; 1.0
  kept as an archived version: the archive copy is part of the publish),

the operation runs once uninterrupted in a forked child (tests/crash_zygote.py) that counts its
filesystem events (writes, renames, links, deletes, mkdir/rmdir, S3 puts/copies/deletes,
Icechunk commits/amends/branch and tag moves) -- that run is the reference -- and then again,
from the same starting state, killed with SIGKILL just before its k-th event.  After each kill:

1. the target's URL opens (``open_dataset``) as exactly the old version (or nothing, for a first
   build) or exactly the new one, with the matching latest version (an older version that
   retention removes as the last step of a publish may still be listed);
2. running the same operation again converges to the uninterrupted result: same data and
   attributes (but the creation stamp), same version list, same set of files/objects (no
   staging store, no ``.arcoforge-old-*``, no state folder, no ``*.partial`` file, no lock) --
   for plain Zarr on a local disk the same chunk bytes; for Icechunk the same tags, one branch
   and one commit on main per version.

By default a sample of kill points runs per case (the last event of every kind, the first of
renames, links, copies and deletes, plus evenly spaced ones; on S3, which moto makes slow, only the publish and only first/last of every
kind); ``ARCOFORGE_CRASH_ALL_CASES=1`` adds the S3 build and append, and
``ARCOFORGE_CRASH_EXHAUSTIVE=1`` kills at every event of every case (many minutes on S3).  The number of kill
points covered is printed (``pytest -s``) and written to ``$ARCOFORGE_CRASH_REPORT`` if set.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import arcoforge
from arcoforge.forge.append import append
from arcoforge.forge.patterns import pattern_from_file_sequence
from arcoforge.forge.recipes import ZarrRecipe
from arcoforge.forge.targets.base import resolve_target
from arcoforge.open import open_dataset

icechunk = pytest.importorskip("icechunk")

from arcoforge.forge.targets.icechunk import IcechunkTarget  # noqa: E402

EXHAUSTIVE = os.environ.get("ARCOFORGE_CRASH_EXHAUSTIVE") == "1"
#: every case (S3 build and append too), with sampled kill points
ALL_CASES = EXHAUSTIVE or os.environ.get("ARCOFORGE_CRASH_ALL_CASES") == "1"
#: kill points per case beyond the first/last event of every kind (sampled mode)
SPREAD = 2
CHUNK = 2
JOB_TIMEOUT = 120
ZYGOTE = Path(__file__).with_name("crash_zygote.py")
KINDS = ("zarr", "icechunk", "s3")
OPS = ("build", "append", "publish")
COVERED: dict[str, tuple[int, int]] = {}


@pytest.fixture(scope="module")
def ersst(shared_data: Path) -> list[str]:
    files = sorted(str(p) for p in (shared_data / "ersst-v5").glob("ersst.v5.*.nc"))
    if len(files) < 8:
        pytest.skip("ERSST files missing")
    return files


class Zygote:
    """The pre-imported process that forks one child per job."""

    def __init__(self, log: Path) -> None:
        self.log = open(log, "w")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, env={**os.environ, "ICECHUNK_LOG": "error"})

    def run(self, cfg: dict[str, Any]) -> tuple[int, list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        started = self.proc.stdout.readline()
        assert started, f"the crash zygote died; see {self.log.name}"
        pid = int(json.loads(started)["pid"])
        ready, _, _ = select.select([self.proc.stdout], [], [], JOB_TIMEOUT)
        if not ready:  # a hung child: end it (it is ours), then fail
            os.kill(pid, signal.SIGKILL)
            self.proc.stdout.readline()
            raise AssertionError(f"a crash-harness child hung for {JOB_TIMEOUT} s: {cfg}")
        answer = self.proc.stdout.readline()
        events: list[str] = []
        if os.path.exists(cfg["events_file"]):  # a killed child writes none
            with open(cfg["events_file"]) as fh:
                events = json.load(fh)
        return int(json.loads(answer)["rc"]), events

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote") / "stderr.log")
    yield z
    z.stop()


# -- one case: where the target is, how to copy its starting state, how to list it ----------


@dataclass
class Case:
    kind: str
    op: str
    files_before: list[str] | None
    files_after: list[str]
    bump: str
    root: Path
    s3: Any = None
    bucket: str = ""

    # locations of run ``name``
    def url(self, name: str) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{name}/store.zarr"
        if self.kind == "icechunk":
            return f"icechunk://{self.root / name / 't' / 'ic'}"
        return str(self.root / name / "t" / "store.zarr")

    def watch(self, name: str) -> str:
        return str(self.root / name / "t")

    @property
    def storage_options(self) -> dict[str, Any]:
        if self.kind != "s3":
            return {}
        return {**self.s3.storage_options, "skip_instance_cache": True,
                "use_listings_cache": False}

    def target(self, name: str) -> Any:
        if self.kind == "icechunk":
            return IcechunkTarget(self.url(name), checkpoint_tasks=1)
        return self.url(name)

    def copy_state(self, src: str, dst: str) -> None:
        if self.kind == "s3":
            fs = self.s3.fs()
            if fs.exists(f"{self.bucket}/{src}"):
                fs.copy(f"{self.bucket}/{src}", f"{self.bucket}/{dst}", recursive=True)
            return
        (self.root / dst).mkdir(parents=True)
        if (self.root / src / "t").exists():
            shutil.copytree(self.root / src / "t", self.root / dst / "t", symlinks=True)
        else:
            (self.root / dst / "t").mkdir()

    def listing(self, name: str) -> set[str]:
        """Every file/object of run ``name``, relative to it."""
        if self.kind == "s3":
            base = f"{self.bucket}/{name}/"
            return {p[len(base):] for p in self.s3.fs().find(base)}
        base = self.root / name / "t"
        if self.kind == "icechunk":  # object names are random ids: compare the repository's
            return {p.name for p in base.iterdir()}  # refs instead (see the test)
        return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}

    def job(self, name: str, kill_at: int) -> dict[str, Any]:
        return {"op": self.op, "url": self.url(name), "files": self.files_after, "chunk": CHUNK,
                "bump": self.bump, "storage_options": self.storage_options,
                "workdir": str(self.root / "work"), "watch": self.watch(name),
                "kill_at": kill_at, "events_file": str(self.root / f"{name}.events.json"),
                # the moto credentials, which the s3_server fixture put in this environment
                "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_")}}

    def run_here(self, name: str) -> None:
        """The operation, in this process (the re-run after a kill)."""
        recipe = ZarrRecipe(pattern_from_file_sequence(self.files_after, "time", 1),
                            target_chunks={"time": CHUNK})
        so = self.storage_options or None
        if self.op == "append":
            append(recipe, self.target(name), storage_options=so,
                   workdir=str(self.root / "work"), workers=1)
        else:
            arcoforge.bake(recipe, self.target(name), storage_options=so,
                           workdir=str(self.root / "work"), progress=False, workers=1,
                           version_bump=self.bump)


@dataclass
class Snapshot:
    """What a reader sees at a URL: the dataset (loaded) and the version list."""

    data: xr.Dataset | None
    versions: list[str]


def snapshot(case: Case, name: str) -> Snapshot:
    tgt = resolve_target(case.target(name), case.storage_options or None)
    listed = [v.version for v in tgt.versions()]
    if not tgt.exists():
        return Snapshot(None, listed)
    ds = open_dataset(case.target(name), storage_options=case.storage_options or None).load()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "arcoforge:created"}
    return Snapshot(ds, listed)


def same(a: Snapshot, b: Snapshot | None, latest_only: bool = False) -> bool:
    """Same data and versions (``latest_only``: the same latest version; right after a kill an
    older version that retention removes at the end of a publish may still be listed)."""
    if b is None:
        return a.data is None
    listed = (a.versions[-1:], b.versions[-1:]) if latest_only else (a.versions, b.versions)
    if (a.data is None) != (b.data is None) or listed[0] != listed[1]:
        return False
    return a.data is None or b.data is None or a.data.identical(b.data)


def chunk_bytes(case: Case, name: str) -> dict[str, bytes]:
    base = case.root / name / "t"
    # (a retired version's marker holds the time retention retired it: state, not data)
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name not in ("zarr.json", ".arcoforge-retired")}


def kill_points(events: list[str], spread: int = SPREAD) -> list[int]:
    """Every event (exhaustive), or the last event of every kind (the first too for renames,
    links, copies and deletes) plus ``spread`` evenly spaced ones (1-based)."""
    n = len(events)
    if EXHAUSTIVE:
        return list(range(1, n + 1))
    chosen: set[int] = set()
    for kind in set(events):
        where = [i + 1 for i, e in enumerate(events) if e == kind]
        chosen.add(where[-1])  # the last one: in the publish for renames and deletes
        if kind in ("rename", "link", "s3:copy_object", "s3:delete_objects"):
            chosen.add(where[0])
    chosen.update(int(x) for x in np.linspace(1, n, spread + 2)[1:-1])
    return sorted(chosen)


def make_case(kind: str, op: str, ersst: list[str], root: Path, s3: Any) -> Case:
    before = None if op == "build" else ersst[:4]
    after = ersst[:6]
    case = Case(kind, op, before, after, "major" if op == "publish" else "minor", root, s3)
    if kind == "s3":
        case.bucket = s3.create_bucket()
    if before is not None:  # the published 1.0 every run starts from
        if kind != "s3":
            (root / "start" / "t").mkdir(parents=True)
        target = case.target("start")
        arcoforge.bake(ZarrRecipe(pattern_from_file_sequence(before, "time", 1),
                                  target_chunks={"time": CHUNK}), target,
                       storage_options=case.storage_options or None, progress=False, workers=1,
                       workdir=str(root / "work"))
    elif kind != "s3":
        (root / "start" / "t").mkdir(parents=True)
    return case


@pytest.fixture
def s3_or_none(request: pytest.FixtureRequest) -> Any:
    if request.node.callspec.params["kind"] != "s3":
        return None
    return request.getfixturevalue("s3_server")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_crash_point_converges(kind: str, op: str, ersst: list[str], zygote: Zygote,
                                     s3_or_none: Any, tmp_path: Path) -> None:
    if kind == "s3" and op != "publish" and not ALL_CASES:
        pytest.skip("moto is slow: S3 build/append run with ARCOFORGE_CRASH_ALL_CASES=1 or "
                    "ARCOFORGE_CRASH_EXHAUSTIVE=1 (the default suite kills the S3 publish, "
                    "which has every kind of S3 event)")
    case = make_case(kind, op, ersst, tmp_path, s3_or_none)
    old = snapshot(case, "start") if op != "build" else None

    # the uninterrupted run: its events and the reference result
    case.copy_state("start", "ref")
    rc, events = zygote.run(case.job("ref", 0))
    assert rc == 0, f"the uninterrupted {op} failed; see the zygote log"
    new = snapshot(case, "ref")
    assert new.data is not None and not same(new, old)
    ref_listing = case.listing("ref")
    ref_bytes = chunk_bytes(case, "ref") if kind == "zarr" else None
    points = kill_points(events, spread=0 if kind == "s3" else SPREAD)
    failures: list[str] = []
    for k in points:
        name = f"k{k}"
        case.copy_state("start", name)
        rc, _ = zygote.run(case.job(name, k))
        if rc != -signal.SIGKILL:
            failures.append(f"k={k} ({events[k - 1]}): the child was not killed (rc {rc})")
            continue
        seen = snapshot(case, name)
        if not same(seen, old, latest_only=True) and not same(seen, new, latest_only=True):
            failures.append(f"k={k} ({events[k - 1]}): the URL holds neither the old nor the "
                            f"new version (versions {seen.versions})")
        case.run_here(name)
        after = snapshot(case, name)
        if not same(after, new):
            failures.append(f"k={k} ({events[k - 1]}): the re-run did not converge "
                            f"(versions {after.versions}, expected {new.versions})")
        listing = case.listing(name)
        if listing != ref_listing:
            failures.append(f"k={k} ({events[k - 1]}): leftovers or missing files: "
                            f"extra {sorted(listing - ref_listing)[:5]}, "
                            f"missing {sorted(ref_listing - listing)[:5]}")
        if ref_bytes is not None and chunk_bytes(case, name) != ref_bytes:
            failures.append(f"k={k} ({events[k - 1]}): chunk bytes differ from the reference")
        if kind == "icechunk":
            repo = icechunk.Repository.open(icechunk.local_filesystem_storage(
                str(case.root / name / "t" / "ic")))
            ref = icechunk.Repository.open(icechunk.local_filesystem_storage(
                str(case.root / "ref" / "t" / "ic")))
            if (repo.list_branches(), repo.list_tags(), len(list(repo.ancestry(branch="main")))) \
                    != (ref.list_branches(), ref.list_tags(),
                        len(list(ref.ancestry(branch="main")))):
                failures.append(f"k={k} ({events[k - 1]}): branches/tags/history differ")
    COVERED[f"{kind}-{op}"] = (len(points), len(events))
    _report(kind, op, events, points)
    assert not failures, "\n".join(failures)


def _report(kind: str, op: str, events: list[str], points: list[int]) -> None:
    kinds = sorted(set(events))
    line = (f"crash harness {kind}/{op}: {len(points)} of {len(events)} kill points "
            f"({', '.join(f'{k}={events.count(k)}' for k in kinds)})")
    print(line)
    out = os.environ.get("ARCOFORGE_CRASH_REPORT")
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")



# -- the defects of issue 10, one by one -------------------------------------------------------


def _zarr_case(op: str, ersst: list[str], root: Path, bump: str = "minor") -> Case:
    case = make_case("zarr", op, ersst, root, None)
    case.bump = bump
    return case


def test_append_killed_in_its_copy_phase_converges(ersst: list[str], zygote: Zygote,
                                                   tmp_path: Path) -> None:
    """kill -9 while an append copies the published store into staging: the re-run used to
    say 'unfinished build', the bake it suggested said 'nothing to do', and the staging store
    stayed forever."""
    case = _zarr_case("append", ersst, tmp_path)
    case.copy_state("start", "ref")
    _, events = zygote.run(case.job("ref", 0))
    # the copy's links come before the publish (whose renames are followed by the links that
    # pin the new version under <url>.versions/)
    first_rename = events.index("rename") if "rename" in events else len(events)
    links = [i + 1 for i, e in enumerate(events[:first_rename]) if e == "link"]
    assert len(links) > 4
    case.copy_state("start", "k")
    rc, _ = zygote.run(case.job("k", links[len(links) // 2]))  # half-way through the copy
    assert rc == -signal.SIGKILL
    url = case.url("k")
    assert Path(url + ".arcoforge-staging").is_dir()
    assert open_dataset(url).sizes["time"] == 4  # the published 1.0, untouched
    # the bake of the published recipe is up to date, and cleans the dead copy
    result = arcoforge.bake(ZarrRecipe(pattern_from_file_sequence(ersst[:4], "time", 1),
                                       target_chunks={"time": CHUNK}), url, progress=False,
                            workers=1, workdir=str(tmp_path / "work"))
    assert result.tasks_skipped == result.tasks
    assert not Path(url + ".arcoforge-staging").exists()
    case.run_here("k")
    assert same(snapshot(case, "k"), snapshot(case, "ref"))
    assert case.listing("k") == case.listing("ref")


def test_publish_killed_between_its_two_renames_converges(ersst: list[str], zygote: Zygote,
                                                          tmp_path: Path) -> None:
    """kill -9 between ``rename(url, old)`` and ``rename(staging, url)`` (a file system without
    an atomic exchange): there used to be no store at the URL, a re-run republished the data as
    '1.0' again, and ``.arcoforge-old-*`` copies were never removed."""
    case = _zarr_case("publish", ersst, tmp_path)  # a minor rebuild: 1.0 -> 1.1
    case.copy_state("start", "ref")
    _, events = zygote.run({**case.job("ref", 0), "no_exchange": True})
    renames = [i + 1 for i, e in enumerate(events) if e == "rename"]
    case.copy_state("start", "k")
    rc, _ = zygote.run({**case.job("k", renames[-1]), "no_exchange": True})
    assert rc == -signal.SIGKILL
    url = case.url("k")
    assert not Path(url).exists()  # the old store was moved aside, the new one not yet in
    assert list(Path(url).parent.glob("store.zarr.arcoforge-old-*"))
    with pytest.raises(FileNotFoundError):  # a raw reader finds nothing ...
        xr.open_zarr(url, zarr_format=3, consolidated=True)
    seen = snapshot(case, "k")  # ... arcoforge reads the finalized new version
    # (the 1.0 folder that retention retires at the end of the publish may still be listed)
    assert same(seen, snapshot(case, "ref"), latest_only=True) and seen.versions[-1] == "1.1"
    case.run_here("k")
    assert snapshot(case, "k").versions == ["1.1"]  # not '1.0' again
    assert same(snapshot(case, "k"), snapshot(case, "ref"))
    assert case.listing("k") == case.listing("ref")
    assert not list(Path(url).parent.glob("store.zarr.arcoforge-*"))


def test_publish_is_one_atomic_exchange_on_a_local_disk(ersst: list[str], zygote: Zygote,
                                                        tmp_path: Path) -> None:
    """With ``renameat2(RENAME_EXCHANGE)`` there is no instant without a store at the URL: a
    kill at any rename or delete of the publish leaves the old or the new version there."""
    case = _zarr_case("publish", ersst, tmp_path)
    case.copy_state("start", "ref")
    _, events = zygote.run(case.job("ref", 0))
    new, old = snapshot(case, "ref"), snapshot(case, "start")
    tail = [i + 1 for i, e in enumerate(events) if e in ("rename", "rmtree")][-3:]
    for k in tail:
        case.copy_state("start", f"k{k}")
        rc, _ = zygote.run(case.job(f"k{k}", k))
        assert rc == -signal.SIGKILL
        assert (Path(case.url(f"k{k}")) / "zarr.json").exists()
        seen = snapshot(case, f"k{k}")
        assert same(seen, old, latest_only=True) or same(seen, new, latest_only=True)
