"""The STAC catalog is safe (issue 10): ids are validated (nothing is written outside the catalog),
site page names never collide, concurrent publishes in separate processes lose no update, a
label matplotlib cannot parse never blocks the site, and a publish killed with SIGKILL at any
write point leaves a consistent catalog that a re-run completes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.catalog import publish, read_collections
from arcoforge.catalog.site import build_site, write_site
from arcoforge.catalog.stac import ID_PATTERN, check_dataset_id, validate_collection
from arcoforge.cli import main as cli_main
from arcoforge.errors import BuildLockedError, ConfigError
from arcoforge.forge.locking import BuildLock
from tests import test_catalog

ROOT = Path(__file__).resolve().parents[1]


ERSST_FILES = test_catalog.ERSST_FILES  # the same real files as the catalog tests
pytestmark = pytest.mark.skipif(not ERSST_FILES, reason="ERSST v5 files not found "
                                "(set ARCOFORGE_SHARED_DATA to the folder holding ersst-v5/)")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two small stores baked from real ERSST v5 files (3 and 4 months)."""
    d = tmp_path_factory.mktemp("stores")
    out = {}
    for name, files in (("first", ERSST_FILES[:3]), ("second", ERSST_FILES[3:7])):
        url = str(d / f"{name}.zarr")
        pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=1)
        af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 4}), url, progress=False)
        out[name] = url
    return out


def _read(path: Path | str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- 1. ids --------------------------------------------------------------------------------------

BAD_IDS = ["../../x", "a/b", "", "x" * 101, "..", ".hidden", "a b", "a\\b", "-dash", "é"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused(bad: str, stores: dict[str, str], tmp_path: Path) -> None:
    cat = tmp_path / "deep" / "cat"
    with pytest.raises(ConfigError) as err:
        publish(cat, stores["first"], dataset_id=bad, meta={"title": "t"})
    text = str(err.value)
    assert repr(bad)[:50] in text and ID_PATTERN in text
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()
    assert not (cat / "catalog.json").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["deep"])


def test_check_dataset_id_accepts_good_ids() -> None:
    for good in ("ersst-v5", "a", "A_b.c-1", "x" * 100, "2020"):
        assert check_dataset_id(good) == good
    with pytest.raises(ConfigError, match="at most 100 characters"):
        check_dataset_id("x" * 101)
    with pytest.raises(ConfigError, match="must be a string"):
        check_dataset_id(None)  # type: ignore[arg-type]


def test_default_id_from_a_store_name_is_checked(stores: dict[str, str], tmp_path: Path) -> None:
    odd = tmp_path / "my store.zarr"
    shutil.copytree(stores["first"], odd)
    with pytest.raises(ConfigError, match=r"(?s)'my store'.*store's name.*dataset_id="):
        publish(tmp_path / "cat", odd, meta={"title": "t"})


def test_ids_differing_only_in_case_are_refused(stores: dict[str, str], tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    publish(cat, stores["first"], dataset_id="sst", meta={"title": "t"})
    with pytest.raises(ConfigError, match="'SST' differs only in case from the published 'sst'"):
        publish(cat, stores["second"], dataset_id="SST", meta={"title": "t"})
    assert [c["id"] for c in read_collections(cat)] == ["sst"]


def test_cli_refuses_a_path_as_id(stores: dict[str, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "a" / "cat"
    assert cli_main(["catalog", "publish", str(cat), stores["first"], "--id", "../../x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset id '../../x' is not allowed") and ID_PATTERN in err
    assert not (tmp_path / "x").exists() and not cat.exists()


# -- 2. page names -------------------------------------------------------------------------------


def test_site_page_names_never_collide(stores: dict[str, str], tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    for cid in ("team_sst", "legacy", "index", "Mixed", "mixed2"):
        publish(cat, stores["first"], dataset_id=cid, meta={"title": f"title of {cid}"})
    # a catalog written before ids were checked: 'team/sst' (its folder is 'legacy') and an id
    # differing from another only in case (its folder is 'mixed2')
    for folder, legacy_id in (("legacy", "team/sst"), ("mixed2", "mixed")):
        col_file = cat / folder / "collection.json"
        col = _read(col_file)
        col["id"] = legacy_id
        col["title"] = f"title of {legacy_id}"
        col_file.write_text(json.dumps(col))
    report = write_site(cat, tmp_path / "site", plots=False)
    assert report.problems == {}
    pages = report.pages
    assert sorted(pages) == ["Mixed", "index", "mixed", "team/sst", "team_sst"]
    lowered = [p.lower() for p in pages.values()]
    assert len(set(lowered)) == 5 and "index.html" not in lowered
    for cid, page in pages.items():
        assert "/" not in page and page.endswith(".html")
        assert f"<h1 id='title'>title of {cid}</h1>" in (tmp_path / "site" / page).read_text()
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<h1>arcoforge datasets</h1>" in index
    assert all(f"href='{page}'" in index for page in pages.values())
    # the same names on every build
    assert write_site(cat, tmp_path / "site2", plots=False).pages == pages


# -- 3. concurrent publishes ---------------------------------------------------------------------

PUBLISHER = textwrap.dedent("""
    import os, sys, time
    from arcoforge.catalog import publish

    base, rounds, me, other = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jobs = [tuple(j.split(":")) for j in sys.argv[5:]]  # id:version:store
    for i in range(rounds):
        cat = os.path.join(base, f"round{i}")
        open(os.path.join(base, f"ready-{i}-{me}"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(base, f"ready-{i}-{other}")):
            if time.monotonic() > deadline:
                sys.exit(f"round {i}: the other publisher never came")
            time.sleep(0.005)
        for cid, version, store in jobs:
            publish(cat, store, dataset_id=cid, version=version, meta={"title": cid})
""")


def test_concurrent_publishes_lose_no_update(stores: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    base = tmp_path / "cats"
    base.mkdir()
    rounds = 10
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    a = subprocess.Popen([sys.executable, str(script), str(base), str(rounds), "a", "b",
                          f"alpha:1.0:{stores['first']}", f"shared:1.0:{stores['first']}"],
                         env=env, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen([sys.executable, str(script), str(base), str(rounds), "b", "a",
                          f"beta:1.0:{stores['second']}", f"shared:2.0:{stores['second']}"],
                         env=env, stderr=subprocess.PIPE, text=True)
    _, err_a = a.communicate(timeout=600)
    _, err_b = b.communicate(timeout=600)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    for i in range(rounds):
        cat = base / f"round{i}"
        cols = {c["id"]: c for c in read_collections(cat)}
        assert sorted(cols) == ["alpha", "beta", "shared"], f"round {i}: {sorted(cols)}"
        shared = cols["shared"]
        assert [v["version"] for v in shared["arcoforge:versions"]] == ["1.0", "2.0"], i
        # the Collection describes its latest version, whatever the order of the publishes
        assert shared["version"] == "2.0"
        assert shared["assets"]["zarr"]["href"] == stores["second"]
        prov = _read(cat / "shared" / shared["assets"]["provenance"]["href"])
        assert prov["version"] == "2.0" and prov["store"] == stores["second"]
        assert not list(cat.rglob("*arcoforge-lock*")) and not list(cat.rglob("*.tmp"))


def test_a_held_catalog_lock_is_waited_for_then_named(stores: dict[str, str],
                                                      tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    publish(cat, stores["first"], dataset_id="one", meta={"title": "t"})
    with BuildLock(str(cat / "catalog.arcoforge-lock"), purpose="catalog publish"):
        with pytest.raises(BuildLockedError, match=rf"(?s)catalog .*cat is being updated by "
                           rf"another publish.*pid {os.getpid()}.*lock_timeout"):
            publish(cat, stores["second"], dataset_id="two", meta={"title": "t"},
                    lock_timeout=0.3)
    assert [c["id"] for c in read_collections(cat)] == ["one"]
    publish(cat, stores["second"], dataset_id="two", meta={"title": "t"})
    assert [c["id"] for c in read_collections(cat)] == ["one", "two"]


def test_catalog_on_object_storage_is_locked(stores: dict[str, str], s3_server: Any) -> None:
    bucket = s3_server.create_bucket()
    cat = f"s3://{bucket}/catalog"
    so = s3_server.storage_options
    publish(cat, stores["first"], dataset_id="one", meta={"title": "t"},
            catalog_storage_options=so)
    lock_url = f"{cat}/catalog.arcoforge-lock"
    with BuildLock(lock_url, so, purpose="catalog publish") as held:
        # the conditional create refuses a second holder on the object store itself
        assert not BuildLock(lock_url, so)._try_create()
        assert held.holder() is not None
        with pytest.raises(BuildLockedError, match="is being updated by another publish"):
            publish(cat, stores["second"], dataset_id="two", meta={"title": "t"},
                    catalog_storage_options=so, lock_timeout=0.3)
    publish(cat, stores["second"], dataset_id="two", meta={"title": "t"},
            catalog_storage_options=so)
    assert [c["id"] for c in read_collections(cat, so)] == ["one", "two"]
    assert not s3_server.fs().exists(f"{bucket}/catalog/catalog.arcoforge-lock")


# -- 4. labels matplotlib cannot parse; one bad dataset ------------------------------------------


def _mathy_store(d: Path) -> str:
    lat = np.arange(-10.0, 10.0, 2.0)
    lon = np.arange(0.0, 20.0, 2.0)
    t = pd.date_range("2021-01-01", periods=3, freq="D")
    rng = np.random.default_rng(0)
    ds = xr.Dataset({"v": (("time", "lat", "lon"),
                           rng.normal(size=(3, lat.size, lon.size)).astype("float32"))},
                    coords={"time": t, "lat": lat, "lon": lon})
    ds.v.attrs.update(long_name=r"ratio $\frac{a$ of $x", units=r"m s$^{-1$")
    ds.lat.attrs.update(units="degrees_north", standard_name="latitude")
    ds.lon.attrs.update(units="degrees_east", standard_name="longitude")
    src = d / "mathy.nc"
    ds.to_netcdf(src)
    store = str(d / "mathy.zarr")
    af.bake(af.ZarrRecipe(af.pattern_from_file_sequence([str(src)], "time")), store,
            progress=False)
    return store


def test_unparsable_mathtext_is_drawn_as_text(stores: dict[str, str], tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    publish(cat, _mathy_store(tmp_path), dataset_id="mathy", meta={"title": r"T $\frac{$"})
    publish(cat, stores["first"], dataset_id="ersst", meta={"title": "ERSST"})
    report = write_site(cat, tmp_path / "site")
    assert report.problems == {}
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == [
        "ersst-quicklook.png", "ersst-timeseries.png", "ersst.html", "index.html",
        "mathy-quicklook.png", "mathy-timeseries.png", "mathy.html"]
    page = (site / "mathy.html").read_text()
    assert r"ratio $\frac{a$ of $x" in page and r"T $\frac{$" in page
    import matplotlib.image as mpimg

    img = mpimg.imread(site / "mathy-quicklook.png")
    assert np.asarray(img[..., :3]).std() > 0.05


def test_one_bad_dataset_never_blocks_the_site(stores: dict[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "cat"
    gone = tmp_path / "gone.zarr"
    shutil.copytree(stores["first"], gone)
    publish(cat, gone, dataset_id="gone", meta={"title": "Gone"})
    publish(cat, stores["second"], dataset_id="fine", meta={"title": "Fine"})
    publish(cat, stores["first"], dataset_id="broken", meta={"title": "Broken"})
    shutil.rmtree(gone)
    (cat / "broken" / "collection.json").write_text("{ not json")
    out = tmp_path / "site"
    assert cli_main(["catalog", "site", str(cat), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: dataset 'gone':" in err and "gone.zarr" in err
    assert "error: dataset 'broken':" in err and "collection.json" in err
    assert "the site was written" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fine-quicklook.png", "fine-timeseries.png", "fine.html", "gone.html",
                     "index.html"]
    assert "quick-look could not be drawn" in (out / "gone.html").read_text()
    index = (out / "index.html").read_text()
    assert "Fine" in index and "Gone" in index and "broken" in index
    # the Python API: build_site returns the written paths and still writes everything
    written = build_site(cat, tmp_path / "site2")
    assert sorted(os.path.basename(p) for p in written) == names


# -- 5. killed at a write point ------------------------------------------------------------------

KILLED_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    from arcoforge.catalog import publish

    cat, store, when, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    count = [0]

    def hooked(real):
        def rename(src, dst, *a, **k):
            if not str(dst).endswith(".json"):
                return real(src, dst, *a, **k)
            count[0] += 1
            if count[0] == at and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(src, dst, *a, **k)
            if count[0] == at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return rename

    os.rename, os.replace = hooked(os.rename), hooked(os.replace)
    publish(cat, store, dataset_id="sst", version="1.1", meta={"title": "SST"})
    print("WRITES", count[0])
""")


def _consistent(cat: Path) -> list[str]:
    """The invariants a reader relies on, at any moment: every JSON file parses, the catalog's
    children exist, each Collection's version is its latest listed version and the provenance it
    links describes that version and store."""
    problems = []
    cat_doc = _read(cat / "catalog.json")
    for link in cat_doc["links"]:
        if link["rel"] == "child":
            col_file = cat / link["href"]
            col = _read(col_file)
            versions = [v["version"] for v in col["arcoforge:versions"]]
            if col["version"] != versions[-1]:
                problems.append(f"version {col['version']} is not the latest of {versions}")
            prov = _read(col_file.parent / col["assets"]["provenance"]["href"])
            if (prov["version"], prov["store"]) != (col["version"],
                                                    col["assets"]["zarr"]["href"]):
                problems.append(f"provenance {prov['version']} vs collection {col['version']}")
            for v in col["arcoforge:versions"]:
                if v.get("provenance") and not (col_file.parent / v["provenance"]).exists():
                    problems.append(f"missing {v['provenance']}")
    return problems


def test_publish_killed_at_each_write_point(stores: dict[str, str], tmp_path: Path) -> None:
    base = tmp_path / "base"
    publish(base, stores["first"], dataset_id="sst", version="1.0", meta={"title": "SST"})
    assert _consistent(base) == []
    script = tmp_path / "killed.py"
    script.write_text(KILLED_PUBLISH)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # how many JSON files one publish writes (each by an atomic rename)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    run = subprocess.run([sys.executable, str(script), str(clean), stores["second"], "never",
                          "0"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    writes = int(run.stdout.split("WRITES")[1])
    assert writes == 3  # provenance-1.1.json, collection.json, catalog.json
    expected = _read(clean / "sst" / "collection.json")
    for at in range(1, writes + 1):
        for when in ("before", "after"):
            cat = tmp_path / f"{when}{at}"
            shutil.copytree(base, cat)
            run = subprocess.run([sys.executable, str(script), str(cat), stores["second"], when,
                                  str(at)], env=env, capture_output=True, text=True, timeout=300)
            assert run.returncode == -9, (when, at, run.stderr)
            assert _consistent(cat) == [], (when, at)
            col = _read(cat / "sst" / "collection.json")
            assert col["version"] in ("1.0", "1.1")
            # the re-run completes it, exactly like the uninterrupted publish
            publish(cat, stores["second"], dataset_id="sst", version="1.1", meta={"title": "SST"})
            assert _consistent(cat) == [], (when, at)
            col = _read(cat / "sst" / "collection.json")
            assert col == expected, (when, at)
            assert [v["version"] for v in col["arcoforge:versions"]] == ["1.0", "1.1"]
            assert sorted(p.name for p in (cat / "sst").iterdir()) == [
                "collection.json", "provenance-1.0.json", "provenance-1.1.json"]
            assert sorted(p.name for p in cat.iterdir()) == ["catalog.json", "sst"]
            assert validate_collection(col) == []


def test_a_version_that_is_not_a_safe_name_is_refused(stores: dict[str, str],
                                                      tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"version of 'sst' '\.\./1' is not allowed.*pattern"):
        publish(tmp_path / "cat", stores["first"], dataset_id="sst", version="../1")
    assert not (tmp_path / "cat").exists()


def test_site_names_a_missing_provenance_and_a_duplicate(stores: dict[str, str],
                                                         tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    publish(cat, stores["first"], dataset_id="one", meta={"title": "One"})
    (cat / "one" / "provenance-1.0.json").unlink()
    cat_doc = _read(cat / "catalog.json")
    cat_doc["links"].append(dict(next(ln for ln in cat_doc["links"] if ln["rel"] == "child")))
    (cat / "catalog.json").write_text(json.dumps(cat_doc))
    report = write_site(cat, tmp_path / "site", plots=False)
    assert list(report.problems) == ["one"]
    assert report.problems["one"].startswith("its provenance could not be read:")
    assert "provenance-1.0.json" in report.problems["one"]
    (cat / "one" / "provenance-1.0.json").write_text("{}")
    report = write_site(cat, tmp_path / "site", plots=False)
    assert report.problems == {"one": "listed twice in catalog.json (only the first is shown)"}
    assert report.pages == {"one": "one.html"}
