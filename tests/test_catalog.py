"""STAC catalog: publish with datacube fields + provenance, offline validation, search, open by
id, and the static HTML site (rendered in headless Chromium when it is installed)."""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.catalog import open_dataset as open_by_id
from arcoforge.catalog import publish, search
from arcoforge.catalog.stac import (
    ZARR_MEDIA_TYPE,
    core_problems,
    datacube_problems,
    validate_collection,
)
from arcoforge.cli import main as cli_main
from arcoforge.forge.feedstock import load_meta

ROOT = Path(__file__).resolve().parents[1]
ERSST_FEEDSTOCK = ROOT / "examples" / "feedstocks" / "ersst"


def _ersst_files() -> list[str]:
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [ROOT / "shared" / "data",
                                              ROOT.parent / "shared" / "data"]:
        files = sorted(glob.glob(str(c / "ersst-v5" / "ersst.v5.*.nc")))
        if files:
            return files
    return []


ERSST_FILES = _ersst_files()
pytestmark = pytest.mark.skipif(not ERSST_FILES, reason="ERSST v5 files not found "
                                "(set ARCOFORGE_SHARED_DATA to the folder holding ersst-v5/)")

EVIL_TITLE = "Med chl <script>document.title='HACKED'+'-'+'X'</script> & co"


def _regional_files(d: Path) -> list[str]:
    """Two small files of a regional (Mediterranean) chlorophyll field, June 2021."""
    files = []
    lat = np.arange(30.5, 45.0, 1.0)
    lon = np.arange(0.5, 30.0, 1.0)
    for i in range(2):
        t = pd.date_range("2021-06-01", periods=3, freq="D") + pd.Timedelta(days=3 * i)
        rng = np.random.default_rng(i)
        chl = rng.gamma(2.0, 0.2, (3, lat.size, lon.size)).astype("float32")
        ds = xr.Dataset({"chl": (("time", "lat", "lon"), chl)},
                        coords={"time": t, "lat": lat, "lon": lon})
        ds.chl.attrs.update(units="mg m-3", long_name="chlorophyll-a concentration",
                            standard_name="mass_concentration_of_chlorophyll_a_in_sea_water")
        ds.lat.attrs.update(units="degrees_north", standard_name="latitude", axis="Y")
        ds.lon.attrs.update(units="degrees_east", standard_name="longitude", axis="X")
        p = d / f"chl_{i}.nc"
        ds.to_netcdf(p, encoding={"time": {"units": "days since 2021-01-01",
                                           "calendar": "standard"}})
        files.append(str(p))
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A catalog with ERSST v5 (24 real files, from the example feedstock's meta.yaml) and a
    regional dataset whose title carries a <script>."""
    d = tmp_path_factory.mktemp("catalog")
    ersst = str(d / "stores" / "ersst-v5.zarr")
    pattern = af.pattern_from_file_sequence(ERSST_FILES, "time", nitems_per_file=1)
    af.bake(af.ZarrRecipe(pattern, target_chunks={"time": 12}), ersst, progress=False)
    med = str(d / "stores" / "med-chl.zarr")
    src = d / "src"
    src.mkdir()
    af.bake(af.ZarrRecipe(af.pattern_from_file_sequence(_regional_files(src), "time")), med,
            progress=False, version="2.0")  # the version its meta.yaml declares
    catalog = str(d / "catalog")
    meta = load_meta(ERSST_FEEDSTOCK)
    publish(catalog, ersst, dataset_id="ersst-v5", meta=meta, feedstock=str(ERSST_FEEDSTOCK))
    med_meta = {
        "title": EVIL_TITLE,
        "description": "Regional <b>chlorophyll</b> test data.",
        "license": "LicenseRef-test",
        "providers": [{"name": "Test <i>lab</i>", "roles": ["producer"]}],
        "keywords": ["ocean colour", "biology"],
        "version": "2.0",
    }
    publish(catalog, med, dataset_id="med-chl", meta=med_meta)
    return {"dir": d, "catalog": catalog, "ersst": ersst, "med": med}


def _collection(built: dict[str, Any], cid: str) -> dict[str, Any]:
    with open(os.path.join(built["catalog"], cid, "collection.json")) as f:
        return dict(json.load(f))


# -- STAC contents -----------------------------------------------------------------------------


def test_catalog_layout(built: dict[str, Any]) -> None:
    with open(os.path.join(built["catalog"], "catalog.json")) as f:
        cat = json.load(f)
    assert cat["type"] == "Catalog"
    children = [ln["href"] for ln in cat["links"] if ln["rel"] == "child"]
    assert children == ["./ersst-v5/collection.json", "./med-chl/collection.json"]
    assert core_problems(cat) == []


def test_collection_fields_from_dataset_and_meta(built: dict[str, Any]) -> None:
    col = _collection(built, "ersst-v5")
    meta = load_meta(ERSST_FEEDSTOCK)
    assert col["title"] == meta.title and col["license"] == "CC0-1.0"
    assert col["description"] == meta.description.strip()
    assert [p["name"] for p in col["providers"]] == [p.name for p in meta.providers]
    assert col["extent"]["spatial"]["bbox"] == [[-180.0, -89.0, 180.0, 89.0]]
    assert col["extent"]["temporal"]["interval"] == [["2019-01-15T00:00:00Z",
                                                      "2020-12-15T00:00:00Z"]]
    dims = col["cube:dimensions"]
    assert dims["time"] == {"description": "Time", "type": "temporal", "step": "P1M",
                            "extent": ["2019-01-15T00:00:00Z", "2020-12-15T00:00:00Z"]}
    assert dims["lon"]["type"] == "spatial" and dims["lon"]["axis"] == "x"
    assert dims["lon"]["extent"] == [0.0, 358.0] and dims["lon"]["step"] == 2.0
    assert dims["lat"]["axis"] == "y" and dims["lat"]["unit"] == "degrees_north"
    assert dims["lev"]["axis"] == "z" and dims["lev"]["values"] == [0.0]
    sst = col["cube:variables"]["sst"]
    assert sst["dimensions"] == ["time", "lev", "lat", "lon"] and sst["type"] == "data"
    assert sst["unit"] == "degree_C" and sst["data_type"] == "float32"
    assert sst["nodata"] == -999.0
    asset = col["assets"]["zarr"]
    assert asset["type"] == ZARR_MEDIA_TYPE == "application/vnd.zarr; version=3"
    assert asset["href"] == built["ersst"] and "data" in asset["roles"]


def test_provenance(built: dict[str, Any]) -> None:
    col = _collection(built, "ersst-v5")
    store = xr.open_zarr(built["ersst"], zarr_format=3)
    assert col["arcoforge:recipe_hash"] == store.attrs["arcoforge:recipe_hash"]
    rels = {ln["rel"]: ln for ln in col["links"]}
    assert rels["via"]["href"] == str(ERSST_FEEDSTOCK)
    assert rels["describedby"]["href"] == "./provenance-1.0.json"
    assert col["assets"]["provenance"]["href"] == "./provenance-1.0.json"
    with open(os.path.join(built["catalog"], "ersst-v5", "provenance-1.0.json")) as f:
        prov = json.load(f)
    assert prov["recipe_hash"] == store.attrs["arcoforge:recipe_hash"]
    assert [s["url"] for s in prov["sources"]] == ERSST_FILES
    assert all(len(s["sha256"]) == 64 and s["size"] > 0 for s in prov["sources"])
    assert prov["package_versions"]["zarr"]
    [v] = col["arcoforge:versions"]
    assert v["version"] == "1.0" and v["sources"] == 24 and col["version"] == "1.0"


# -- offline validation ------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_valid_offline(built: dict[str, Any], no_network: None) -> None:
    for cid in ("ersst-v5", "med-chl"):
        assert validate_collection(_collection(built, cid)) == []


def test_core_validation_catches_errors(built: dict[str, Any], no_network: None) -> None:
    col = _collection(built, "ersst-v5")
    bad = copy.deepcopy(col)
    del bad["license"]
    bad["extent"]["spatial"]["bbox"] = "everywhere"
    bad["links"].append({"href": "x"})  # a link without rel
    problems = core_problems(bad)
    text = "\n".join(problems)
    assert "'license' is a required property" in text
    assert "extent/spatial/bbox" in text
    assert "'rel' is a required property" in text


def test_datacube_checks_catch_errors(built: dict[str, Any]) -> None:
    col = _collection(built, "ersst-v5")
    assert datacube_problems(col) == []
    bad = copy.deepcopy(col)
    bad["stac_extensions"] = []
    bad["cube:dimensions"]["lat"].pop("axis")
    bad["cube:dimensions"]["lon"]["extent"] = [0.0, None]
    bad["cube:dimensions"]["time"]["step"] = "monthly"
    bad["cube:variables"]["sst"]["type"] = "measurement"
    bad["cube:variables"]["ssta"]["dimensions"] = ["time", "depth"]
    bad["cube:variables"]["lat"] = {"dimensions": ["lat"], "type": "auxiliary"}
    problems = "\n".join(datacube_problems(bad))
    assert "does not declare the datacube extension" in problems
    assert "cube:dimensions.lat.axis is required" in problems
    assert "cube:dimensions.lon.extent: open intervals (null) are not allowed" in problems
    assert "cube:dimensions.time.step must be an ISO 8601 duration" in problems
    assert "cube:variables.sst.type is required" in problems
    assert "unknown dimensions ['depth']" in problems
    assert "both as dimension and variable: ['lat']" in problems
    no_dims = copy.deepcopy(col)
    del no_dims["cube:dimensions"]
    assert any("cube:dimensions is required" in p for p in datacube_problems(no_dims))


def test_publish_refuses_invalid(built: dict[str, Any], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import arcoforge.catalog.stac as stac

    monkeypatch.setattr(stac, "cube_dimensions", lambda ds: {"lat": {"type": "spatial"}})
    with pytest.raises(ValueError, match="(?s)not valid.*cube:dimensions.lat.axis"):
        publish(tmp_path / "cat", built["med"], meta={"title": "x"})
    assert not (tmp_path / "cat" / "catalog.json").exists()


# -- search --------------------------------------------------------------------------------------


def ids(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


def test_search_bbox(built: dict[str, Any]) -> None:
    cat = built["catalog"]
    assert ids(search(cat)) == ["ersst-v5", "med-chl"]
    assert ids(search(cat, bbox=[10, 35, 20, 40])) == ["ersst-v5", "med-chl"]
    assert ids(search(cat, bbox=[-80, -40, -60, -20])) == ["ersst-v5"]  # off South America
    assert ids(search(cat, bbox=[170, 30, -170, 45])) == ["ersst-v5"]  # across the antimeridian
    assert ids(search(cat, bbox=[29.5, 44.5, 40, 50])) == ["ersst-v5", "med-chl"]
    assert ids(search(cat, bbox=[30.5, 44.5, 40, 50])) == ["ersst-v5"]


def test_search_time(built: dict[str, Any]) -> None:
    cat = built["catalog"]
    assert ids(search(cat, time="2020")) == ["ersst-v5"]
    assert ids(search(cat, time="2021-06")) == ["med-chl"]
    assert ids(search(cat, time="2020-12-01/2021-06-02")) == ["ersst-v5", "med-chl"]
    assert ids(search(cat, time="2021-06-07/..")) == []
    assert ids(search(cat, time=("2018-01-01", "2019-01-14"))) == []
    assert ids(search(cat, time=(None, "2019-01-15"))) == ["ersst-v5"]


def test_search_variables_and_text(built: dict[str, Any]) -> None:
    cat = built["catalog"]
    assert ids(search(cat, variables=["sst"])) == ["ersst-v5"]
    assert ids(search(cat, variables=["sst", "ssta"])) == ["ersst-v5"]
    assert ids(search(cat, variables=["sst", "chl"])) == []
    assert ids(search(cat, variables="sea_surface_temperature")) == ["ersst-v5"]  # CF name
    assert ids(search(cat, text="ERSST noaa")) == ["ersst-v5"]
    assert ids(search(cat, text="chlorophyll")) == ["med-chl"]
    assert ids(search(cat, text="ocean")) == ["ersst-v5", "med-chl"]  # keywords
    assert ids(search(cat, text="ocean", bbox=[-80, -40, -60, -20])) == ["ersst-v5"]
    [s] = search(cat, text="med-chl")
    assert s.title == EVIL_TITLE and s.version == "2.0" and s.variables == ["chl"]


def test_cli_list_search_show(built: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cat = built["catalog"]
    assert cli_main(["catalog", "list", cat]) == 0
    out = capsys.readouterr().out
    assert "ersst-v5" in out and "med-chl" in out
    assert cli_main(["catalog", "search", cat, "--bbox=-80,-40,-60,-20", "--time", "2020",
                     "--variable", "sst", "--json"]) == 0
    assert [h["id"] for h in json.loads(capsys.readouterr().out)] == ["ersst-v5"]
    assert cli_main(["catalog", "search", cat, "--text", "nothing-like-this"]) == 1
    capsys.readouterr()
    assert cli_main(["catalog", "show", cat, "med-chl"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "med-chl"
    assert cli_main(["catalog", "show", cat, "nope"]) == 1
    assert "datasets: ersst-v5, med-chl" in capsys.readouterr().err


# -- open by id ----------------------------------------------------------------------------------


def test_open_by_id_equals_store(built: dict[str, Any]) -> None:
    cat = built["catalog"]
    expected = af.open_dataset(built["ersst"])
    xr.testing.assert_identical(open_by_id(cat, "ersst-v5"), expected)
    # the same through the top-level entry point
    xr.testing.assert_identical(af.open_dataset(cat, "ersst-v5"), expected)
    xr.testing.assert_identical(open_by_id(cat, "med-chl", version="2.0"),
                                af.open_dataset(built["med"]))
    with pytest.raises(KeyError, match="datasets: ersst-v5, med-chl"):
        open_by_id(cat, "nope")
    with pytest.raises(KeyError, match=r"no version '9.9' \(versions: 1.0\)"):
        open_by_id(cat, "ersst-v5", version="9.9")


def test_new_version_is_listed_and_both_open(built: dict[str, Any], tmp_path: Path) -> None:
    cat = str(tmp_path / "cat")
    shutil.copytree(built["catalog"], cat)
    v11 = str(tmp_path / "ersst-v5-1.1.zarr")
    pattern = af.pattern_from_file_sequence(ERSST_FILES[:6], "time", nitems_per_file=1)
    af.bake(af.ZarrRecipe(pattern), v11, progress=False)
    col = publish(cat, v11, dataset_id="ersst-v5", meta=load_meta(ERSST_FEEDSTOCK), version="1.1")
    assert [v["version"] for v in col["arcoforge:versions"]] == ["1.0", "1.1"]
    assert col["version"] == "1.1" and col["assets"]["zarr"]["href"] == v11
    assert open_by_id(cat, "ersst-v5").sizes["time"] == 6
    assert open_by_id(cat, "ersst-v5", version="1.0").sizes["time"] == 24
    assert validate_collection(col) == []


# -- the static site -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(built: dict[str, Any]) -> Path:
    out = built["dir"] / "site"
    assert cli_main(["catalog", "site", built["catalog"], "--out", str(out)]) == 0
    return out


def test_site_files_and_escaping(site: Path) -> None:
    names = sorted(p.name for p in site.iterdir())
    assert names == ["ersst-v5-quicklook.png", "ersst-v5-timeseries.png", "ersst-v5.html",
                     "index.html", "med-chl-quicklook.png", "med-chl-timeseries.png",
                     "med-chl.html"]
    import matplotlib.image as mpimg

    for png in site.glob("*.png"):
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
        assert np.asarray(img[..., :3]).std() > 0.05, f"{png.name} looks blank"
    for page in ("index.html", "med-chl.html"):
        text = (site / page).read_text()
        assert "<script>document.title" not in text
        assert "&lt;script&gt;document.title=" in text
        assert "<b>chlorophyll" not in text and "&lt;b&gt;chlorophyll" in text
    page = (site / "ersst-v5.html").read_text()
    assert 'af.open_dataset(&quot;' in page and "ersst-v5" in page
    assert "sea surface temperature" in page and "P1M" in page  # variables / dimensions tables
    assert "provenance" in page.lower() and "ersst.v5.201901.nc" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/services.sh "
                    "installs it with apt-get); the site is not rendered")
def test_site_renders_in_chromium(site: Path, tmp_path: Path) -> None:
    # index: the inline filter script runs (it fills the count), the evil title is text
    dom = _chromium(tmp_path, "--dump-dom", (site / "index.html").as_uri()).stdout
    assert "2 of 2 datasets" in dom  # our own inline JS did run
    assert "HACKED-X" not in dom  # the title's <script> did not
    assert "&lt;script&gt;document.title=" in dom
    # a dataset page: title unchanged, images referenced, escaped title shown as text
    dom = _chromium(tmp_path, "--dump-dom", (site / "med-chl.html").as_uri()).stdout
    assert "HACKED-X" not in dom
    assert "<title>Med chl &lt;script&gt;" in dom
    assert 'id="quicklook" src="med-chl-quicklook.png"' in dom
    assert 'id="timeseries" src="med-chl-timeseries.png"' in dom
    shot = tmp_path / "ersst.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1400",
              (site / "ersst-v5.html").as_uri())
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (1400, 1100)
    # the quick-look map was drawn into the page: many distinct colours, not a blank page
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200


def test_catalog_at_an_fsspec_url(built: dict[str, Any]) -> None:
    cat = "memory://arcoforge-test-catalog"
    publish(cat, built["med"], dataset_id="med-chl", meta={"title": "chl", "license": "MIT"})
    [hit] = search(cat, variables=["chl"])
    assert hit.id == "med-chl" and hit.href == f"{cat}/med-chl/collection.json"
    xr.testing.assert_identical(open_by_id(cat, "med-chl"), af.open_dataset(built["med"]))


def test_versions_kept_by_the_store_are_listed(built: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import arcoforge.catalog.stac as stac

    # as arcoforge.forge.versions reports a store with an archived 1.0 and a published 1.1
    kept = [("1.0", "2026-01-01T00:00:00Z", False), ("1.1", "2026-02-01T00:00:00Z", True)]
    monkeypatch.setattr(stac, "_store_versions", lambda url, so: kept)
    col = publish(tmp_path / "cat", built["med"], dataset_id="med", meta={"title": "m"},
                  version="1.1")
    assert col["version"] == "1.1"
    by_version = {v["version"]: v for v in col["arcoforge:versions"]}
    assert by_version["1.0"] == {"version": "1.0", "href": built["med"], "in_store": True,
                                 "created": "2026-01-01T00:00:00Z"}
    assert by_version["1.1"]["in_store"] is True and by_version["1.1"]["href"] == built["med"]
    assert validate_collection(col) == []
