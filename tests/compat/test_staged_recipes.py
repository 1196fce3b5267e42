"""Real pangeo-forge feedstocks, byte for byte, run by arcoforge against loopback servers.

One feedstock of each pangeo-forge API style, copied unchanged into ``tests/data/staged-recipes``
(sources and licences in ``tests/data/README.md``; :func:`test_feedstocks_are_byte_for_byte`
checks every file against the git blob id it was copied from):

* ``noaa-oisst`` -- pangeo-forge/staged-recipes, a 0.9 ``XarrayZarrRecipe`` over NOAA OISST
  v2.1 daily files at ``https://www.ncei.noaa.gov/...``;
* ``aws-noaa-oisst`` -- pangeo-forge/staged-recipes, a 0.9 ``HDFReferenceRecipe`` over the same
  files in the public AWS bucket (``s3://...`` with ``anon=True``);
* ``pangeo-forge-recipes-examples`` -- pangeo-forge-recipes' own ``examples/feedstock``, the
  feedstock its integration tests bake; ``noaa_oisst.py`` is the 0.10 Beam chain
  ``beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(...) | StoreToZarr(...)
  | ConsolidateDimensionCoordinates() | ConsolidateMetadata() | beam.Map(test_ds)``.  No 0.10
  recipe of staged-recipes reads data we hold (they read GPM IMERG, MUR SST, Daymet, nClimGrid,
  SSEBop and ANTGG, most behind Earthdata logins); its only 0.10 OISST feedstock ends in
  ``StoreToPyramid`` from a fork, which no pangeo-forge-recipes release has.

The recipes are not edited.  Their absolute URLs reach loopback servers through arcoforge's
documented mirror mechanisms: ``ARCOFORGE_URL_MAP`` (``https://www.ncei.noaa.gov/`` -> a
loopback HTTP server that honours Range) and ``AWS_ENDPOINT_URL`` (the bucket's own name on a
moto S3 server, read anonymously).

The data: the patterns start on 1981-09-01 and hold 14,372 and 15,044 daily files; each test
builds the first file only (``--prune 1``).  We hold one real OISST v2.1 AVHRR daily file,
``oisst-avhrr-v02r01.20220913.nc`` (../shared/data/oisst, from stactools-packages/noaa-cdr), and
no real file for 1981-09-01, so a byte-for-byte copy of the 2022-09-13 file is served at the
1981-09-01 key (its own time coordinate, 2022-09-13T12:00, is what the store holds).  Two
copies cannot be built together: arcoforge refuses a repeated timestamp, as it should.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
import arcoforge.forge.feedstock as fs
from arcoforge.cli import main as cli_main
from arcoforge.cli.forge import load_recipe
from arcoforge.errors import ConfigError, SourceError
from arcoforge.forge.io.fetch import fetch
from arcoforge.forge.io.urls import URL_MAP_ENV, map_url, parse_url_map, url_map_from_env
from arcoforge.forge.verify import verify
from arcoforge.provenance import SOURCES

FEEDSTOCKS = Path(__file__).resolve().parents[1] / "data" / "staged-recipes"

#: git blob ids of the upstream files (``git hash-object``), as listed in tests/data/README.md
UPSTREAM_BLOBS = {
    "noaa-oisst/recipe.py": "562da7388c119940516cb837302029a0ca9bdeeb",
    "noaa-oisst/meta.yaml": "0684d36ab06ebd649e01a8fc50cb778cd34b5cc0",
    "aws-noaa-oisst/recipe.py": "664ae5c5ac62d08c46bd3f02d0f70c28af741946",
    "aws-noaa-oisst/meta.yaml": "ae3eda366697b1342e6d53b467c6fa057f5cb640",
    **{f"pangeo-forge-recipes-examples/{name}": blob for name, blob in {
        "gpcp_from_gcs.py": "21394cd59cce09d8a07b4acb86347c0e9f2dff4a",
        "gpcp_from_gcs_dynamic_chunks.py": "16d3188e7f8a23f64f1d5de434d9a592508761d5",
        "gpcp_rechunk.py": "1823ade8df46ed732e0aecb395b573162124a546",
        "hrrr_kerchunk_concat_step.py": "94b09bc0ef1740cdc45a6e38dad40d756b0a5eff",
        "hrrr_kerchunk_concat_valid_time.py": "29a9489044834ef212aaf8b3ba4ea38dcd9be8d4",
        "meta.yaml": "117a0b2e33f26402b51111e50b52ba6f9fc7915b",
        "narr_opendap.py": "d639e0f4eb5477370c2150aa8ecfa51efffcd884",
        "noaa_oisst.py": "7956bc100cd33526c4ddcb8584837b5dcd16f4b4",
        "terraclimate.py": "4f63bcb70f2559b3f051f6d539b77b2502bf8124",
    }.items()},
}

NCEI = "https://www.ncei.noaa.gov/"
OISST_DIR = "data/sea-surface-temperature-optimum-interpolation/v2.1/access/avhrr"
FIRST_DAY = "oisst-avhrr-v02r01.19810901.nc"
AWS_BUCKET = "noaa-cdr-sea-surface-temp-optimum-interpolation-pds"
AWS_KEY = f"data/v2.1/avhrr/198109/{FIRST_DAY}"


def _days(first: str, last: str) -> int:
    return len(pd.date_range(first, last, freq="D"))


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def oisst_day(shared_data: Path) -> Path:
    """The one real OISST v2.1 AVHRR daily file we hold (2022-09-13)."""
    path = shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _feedstock(name: str, tmp_path: Path) -> Path:
    """A copy of the vendored feedstock (importing it must not write into tests/data)."""
    return Path(shutil.copytree(FEEDSTOCKS / name, tmp_path / name))


@pytest.fixture
def ncei_mirror(oisst_day: Path, http_server: Any, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Any:
    """A loopback HTTP server (Range on) laid out like www.ncei.noaa.gov, holding the first
    day's file, and ``ARCOFORGE_URL_MAP`` pointing the recipe's host at it."""
    root = tmp_path / "www.ncei.noaa.gov"
    day = root / OISST_DIR / "198109"
    day.mkdir(parents=True)
    shutil.copyfile(oisst_day, day / FIRST_DAY)
    server = http_server(root, range=True)
    monkeypatch.setenv(URL_MAP_ENV, json.dumps({NCEI: server.url + "/"}))
    return server


def _assert_equals_served_file(ds: xr.Dataset, served: Path) -> None:
    """Every variable of the store equals the served file opened with xarray on its own."""
    with xr.open_dataset(served) as src:
        assert set(ds.data_vars) == set(src.data_vars) == {"sst", "anom", "err", "ice"}
        assert dict(ds.sizes) == dict(src.sizes) == {"time": 1, "zlev": 1, "lat": 720,
                                                      "lon": 1440}
        for name in [*src.data_vars, *src.coords]:
            np.testing.assert_array_equal(ds[name].values, src[name].values, err_msg=name)
            assert ds[name].dtype == src[name].dtype, name
            assert ds[name].encoding.get("scale_factor") == src[name].encoding.get(
                "scale_factor"), name
        assert str(ds["time"].values[0]) == "2022-09-13T12:00:00.000000000"


def test_feedstocks_are_byte_for_byte() -> None:
    vendored = {str(p.relative_to(FEEDSTOCKS)) for p in FEEDSTOCKS.rglob("*") if p.is_file()}
    assert vendored == set(UPSTREAM_BLOBS)
    for rel, blob in UPSTREAM_BLOBS.items():
        assert _git_blob_id(FEEDSTOCKS / rel) == blob, rel


# -- 0.9 XarrayZarrRecipe: staged-recipes/recipes/noaa-oisst -----------------------------------


def test_xarray_zarr_recipe_feedstock_runs_unchanged(
        ncei_mirror: Any, oisst_day: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = _feedstock("noaa-oisst", tmp_path)
    assert cli_main(["lint", str(d)]) == 0, capsys.readouterr()
    assert fs.lint(d) == []
    target = str(tmp_path / "noaa-oisst.zarr")
    code = cli_main(["bake", str(d / "recipe.py"), "--target", target, "--prune", "1",
                     "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert ncei_mirror.paths == {f"/{OISST_DIR}/198109/{FIRST_DAY}": 1}
    recipe = load_recipe(str(d / "recipe.py"))
    assert type(recipe).__name__ == "XarrayZarrRecipe" and recipe.inputs_per_chunk == 20
    assert recipe.pattern.dims == {"time": _days("1981-09-01", "2021-01-05")}
    pruned = fs.prune_recipe(recipe, 1)
    report = verify(target, pruned)
    assert report.ok, str(report)
    ds = af.open_dataset(target)
    _assert_equals_served_file(ds, oisst_day)
    # inputs_per_chunk=20 with nitems_per_file=1: 20 steps per chunk, as in 0.9 (the pruned
    # store holds one step)
    assert recipe.target_chunks == {"time": 20} and pruned.target_chunks == {"time": 20}
    copied = recipe.copy_pruned(1)  # the 0.9 spelling keeps the 0.9 arguments too
    assert copied.inputs_per_chunk == 20 and copied.cache_inputs is True
    assert copied.pattern.dims == copied.file_pattern.dims == {"time": 1}
    assert copied.sha256() == pruned.sha256()
    assert ds["sst"].encoding["chunks"] == (1, 1, 720, 1440)
    # provenance names the recipe's URL, not the mirror
    sources = json.dumps(ds.attrs[SOURCES])
    assert f"{NCEI}{OISST_DIR}/198109/{FIRST_DAY}" in sources and "127.0.0.1" not in sources


def test_arcoforge_test_builds_and_verifies_the_real_feedstock(ncei_mirror: Any,
                                                              tmp_path: Path) -> None:
    d = _feedstock("noaa-oisst", tmp_path)
    report = fs.test_feedstock(d, nkeep=1, workdir=tmp_path / "work")
    assert not report.lint_problems
    assert report.builds["noaa-oisst-avhrr-only"].startswith("built"), str(report)
    assert report.verify["noaa-oisst-avhrr-only"].startswith("ok"), str(report)


def test_arcoforge_test_passes_on_the_real_feedstock(ncei_mirror: Any, tmp_path: Path) -> None:
    d = _feedstock("noaa-oisst", tmp_path)
    report = fs.test_feedstock(d, nkeep=1, workdir=tmp_path / "work")
    assert report.ok, str(report)


# -- 0.9 HDFReferenceRecipe: staged-recipes/recipes/aws-noaa-oisst ------------------------------


@pytest.fixture
def aws_oisst_bucket(oisst_day: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The recipe's own bucket on the loopback S3 server, readable anonymously."""
    s3 = s3_server.fs()
    s3_server.create_bucket(AWS_BUCKET)
    s3.put_file(str(oisst_day), f"{AWS_BUCKET}/{AWS_KEY}", ACL="public-read")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)  # anon=True: no credentials at all
    return f"s3://{AWS_BUCKET}/{AWS_KEY}"


def test_hdf_reference_recipe_feedstock_runs_unchanged(
        aws_oisst_bucket: str, oisst_day: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("icechunk")
    d = _feedstock("aws-noaa-oisst", tmp_path)
    target = f"icechunk://{tmp_path / 'aws-noaa-oisst.icechunk'}"
    code = cli_main(["bake", str(d / "recipe.py"), "--target", target, "--prune", "1",
                     "--no-progress"])
    assert code == 0, capsys.readouterr()
    recipe = load_recipe(str(d / "recipe.py"))
    assert recipe.is_virtual and recipe.source_options.storage_options == {"anon": True}
    assert recipe.pattern.dims == {"time": _days("1981-09-01", "2022-11-08")}
    pruned = recipe.copy_pruned(1)
    [(_, url)] = list(pruned.pattern.items())
    assert url == aws_oisst_bucket
    report = verify(target, pruned)
    assert report.ok, str(report)
    ds = af.open_dataset(target)
    _assert_equals_served_file(ds, oisst_day)


def test_hdf_reference_recipe_feedstock_lints(tmp_path: Path) -> None:
    d = _feedstock("aws-noaa-oisst", tmp_path)
    assert fs.lint(d) == []


def test_arcoforge_test_can_prune_an_hdf_reference_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(str(_feedstock("aws-noaa-oisst", tmp_path) / "recipe.py"))
    assert fs.prune_recipe(recipe, 1).pattern.dims == {"time": 1}


def test_arcoforge_test_passes_on_the_hdf_reference_feedstock(aws_oisst_bucket: str,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("icechunk")
    d = _feedstock("aws-noaa-oisst", tmp_path)
    report = fs.test_feedstock(d, nkeep=1, workdir=tmp_path / "work")
    assert report.ok, str(report)
    assert report.targets["aws-noaa-oisst-avhrr-only"].startswith("icechunk://")


# -- 0.10 Beam chain: pangeo-forge-recipes/examples/feedstock/noaa_oisst.py ---------------------


def test_pangeo_forge_examples_feedstock_lint_names_what_is_missing(tmp_path: Path) -> None:
    """pangeo-forge-recipes' own example feedstock, as it is: every recipe arcoforge cannot
    run yet is named with the reason (this is the row list of docs/pangeo-forge.md)."""
    pytest.importorskip("apache_beam")
    d = _feedstock("pangeo-forge-recipes-examples", tmp_path)
    problems = {p.message.split(":")[0]: p.message for p in fs.lint(d)}
    assert set(problems) <= {f"recipe {rid!r}" for rid in (
        "gpcp-from-gcs", "gpcp-rechunk", "gpcp-from-gcs-dynamic-chunks", "noaa-oisst",
        "terraclimate", "hrrr-kerchunk-concat-step")}
    for message in problems.values():
        assert "cannot" in message  # each one says why
    oisst = problems.get("recipe 'noaa-oisst'")  # until steps after the store compile
    assert oisst is None or "Map(test_ds) after StoreToZarr cannot be compiled" in oisst


def test_beam_chain_feedstock_runs_unchanged(ncei_mirror: Any, oisst_day: Path,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("apache_beam")
    d = _feedstock("pangeo-forge-recipes-examples", tmp_path)
    assert not [p for p in fs.lint(d) if "'noaa-oisst'" in p.message]
    target = str(tmp_path / "noaa-oisst.zarr")
    code = cli_main(["bake", str(d / "noaa_oisst.py"), "--target", target, "--prune", "1",
                     "--no-progress"])
    assert code == 0, capsys.readouterr()
    recipe = load_recipe(str(d / "noaa_oisst.py"))
    report = verify(target, fs.prune_recipe(recipe, 1))
    assert report.ok, str(report)
    _assert_equals_served_file(af.open_dataset(target), oisst_day)


# -- ARCOFORGE_URL_MAP --------------------------------------------------------------------------


def test_map_url_replaces_the_longest_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = {"https://a.org/": "http://127.0.0.1:1/", "https://a.org/data/": "/mnt/mirror/"}
    assert map_url("https://a.org/data/x.nc", mapping) == "/mnt/mirror/x.nc"
    assert map_url("https://a.org/other/x.nc", mapping) == "http://127.0.0.1:1/other/x.nc"
    assert map_url("https://b.org/x.nc", mapping) == "https://b.org/x.nc"
    monkeypatch.delenv(URL_MAP_ENV, raising=False)
    assert url_map_from_env() == {} and map_url("https://a.org/x.nc") == "https://a.org/x.nc"
    monkeypatch.setenv(URL_MAP_ENV, json.dumps({"s3://bucket/": "https://mirror.org/b/"}))
    assert map_url("s3://bucket/k/x.nc") == "https://mirror.org/b/k/x.nc"
    assert parse_url_map("  ") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "ARCOFORGE_URL_MAP is not valid JSON"),
    ('["https://a.org/"]', "ARCOFORGE_URL_MAP must be a JSON object of URL prefix -> mirror, "
                           "not a list"),
    ('{"https://a.org/": ""}', "the entry 'https://a.org/': '' is not a non-empty URL prefix"),
    ('{"": "http://m/"}', "the entry '': 'http://m/' is not a non-empty URL prefix"),
    ('{"https://a.org/": 1}', "the entry 'https://a.org/': 1 is not"),
])
def test_url_map_errors_say_what_is_wrong(text: str, message: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_MAP_ENV, text)
    with pytest.raises(ConfigError, match="e.g. ARCOFORGE_URL_MAP=") as info:
        map_url("https://a.org/x.nc")
    assert message in str(info.value)


def test_fetch_reads_from_the_mirror_and_keeps_the_recipe_url(
        oisst_day: Path, http_server: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = http_server(oisst_day.parent)
    monkeypatch.setenv(URL_MAP_ENV, json.dumps({"https://archive.example.org/oisst/":
                                                server.url + "/"}))
    url = f"https://archive.example.org/oisst/{oisst_day.name}"
    local = fetch(url, workdir=str(tmp_path / "cache"))
    assert local.url == url and Path(local.path).read_bytes() == oisst_day.read_bytes()
    assert server.paths == {f"/{oisst_day.name}": 1}
    # a local directory is a mirror too
    monkeypatch.setenv(URL_MAP_ENV, json.dumps({"https://archive.example.org/oisst/":
                                                f"{oisst_day.parent}/"}))
    local = fetch(url)
    assert local.url == url and local.path == str(oisst_day)
    # a file missing from the mirror: the error names the recipe's URL and the mirror's
    monkeypatch.setenv(URL_MAP_ENV, json.dumps({"https://archive.example.org/oisst/":
                                                server.url + "/"}))
    with pytest.raises(SourceError) as info:
        fetch("https://archive.example.org/oisst/missing.nc", workdir=str(tmp_path / "cache"))
    message = str(info.value)
    assert info.value.reason == "not_found"
    assert message.startswith("https://archive.example.org/oisst/missing.nc (read from the "
                              f"mirror {server.url}/missing.nc, ARCOFORGE_URL_MAP): ")


# -- process_chunk: 0.9 semantics where each chunk is one input ---------------------------------


@pytest.fixture
def ersst_months(shared_data: Path, tmp_path: Path) -> list[Path]:
    """Three real ERSST v5 monthly files (one time step each)."""
    out = []
    for month in ("201901", "201902", "201903"):
        src = shared_data / "ersst-v5" / f"ersst.v5.{month}.nc"
        if not src.is_file():
            pytest.skip(f"{src} is absent")
        out.append(Path(shutil.copy(src, tmp_path)))
    return out


def test_process_chunk_is_applied_to_each_input_after_process_input(
        ersst_months: list[Path], tmp_path: Path) -> None:
    """staged-recipes' AGDC, eVolv2k and noresm2-lm-hist-vmo recipes pass process_chunk with
    inputs_per_chunk=1: each 0.9 chunk is one input, so the step runs per input, after
    process_input, and sees what 0.9 gave it."""
    from arcoforge.compat.pangeo_forge_recipes.patterns import ConcatDim, FilePattern
    from arcoforge.compat.pangeo_forge_recipes.recipes import XarrayZarrRecipe

    seen: list[tuple[str, int]] = []

    def process_input(ds: xr.Dataset, fname: str) -> xr.Dataset:
        return ds.assign_attrs(step="input", source_name=Path(fname).name)

    def process_chunk(ds: xr.Dataset) -> xr.Dataset:
        seen.append((ds.attrs["step"], ds.sizes["time"]))
        return ds.drop_vars(["ssta"]).assign_attrs(step="chunk")

    files = {p.name[9:15]: p for p in ersst_months}
    pattern = FilePattern(lambda time: str(files[time]),
                          ConcatDim("time", list(files), nitems_per_file=1))
    recipe = XarrayZarrRecipe(pattern, target_chunks={"time": 2}, process_input=process_input,
                              process_chunk=process_chunk)
    target = str(tmp_path / "ersst.zarr")
    af.bake(recipe, target, progress=False, workdir=str(tmp_path / "work"))
    assert seen and set(seen) == {("input", 1)}  # after process_input, one input at a time
    report = verify(target, recipe)
    assert report.ok, str(report)
    ds = af.open_dataset(target)
    assert "ssta" not in ds and ds.attrs["step"] == "chunk"
    with xr.open_mfdataset(ersst_months, combine="nested", concat_dim="time") as src:
        np.testing.assert_array_equal(ds["sst"].values, src["sst"].values)
    pruned = recipe.copy_pruned(1)
    assert [type(t).__name__ for t in pruned.transforms] == ["ProcessInput", "ProcessChunk"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"inputs_per_chunk": 2}, "inputs_per_chunk=2 concatenates 2 inputs before 0.9 calls "
                              "process_chunk"),
    ({"subset_inputs": {"time": 12}}, "subset_inputs={'time': 12} splits each input into parts"),
])
def test_process_chunk_over_several_or_partial_inputs_is_refused(kwargs: dict[str, Any],
                                                                 message: str) -> None:
    from arcoforge.compat.pangeo_forge_recipes.patterns import ConcatDim, FilePattern
    from arcoforge.compat.pangeo_forge_recipes.recipes import XarrayZarrRecipe

    pattern = FilePattern(lambda time: f"https://x.org/{time}.nc", ConcatDim("time", [1, 2]))
    with pytest.raises(ConfigError, match=r"process_chunk=\.\.\.\) is not supported here") as info:
        XarrayZarrRecipe(pattern, process_chunk=lambda ds: ds, **kwargs)
    text = str(info.value)
    assert message in text and "Use inputs_per_chunk=1 without subset_inputs" in text
    assert "or move the step to process_input" in text


def test_indexed_is_generic_as_recipes_annotate_it() -> None:
    """pangeo-forge-recipes' examples/feedstock/terraclimate.py annotates its steps
    ``Indexed[xr.Dataset]``: ``types.Indexed`` is ``tuple[Index, T]``, as in 0.10.8."""
    import typing

    from arcoforge.compat.pangeo_forge_recipes import types

    alias = types.Indexed[xr.Dataset]
    assert typing.get_origin(alias) is tuple
    assert typing.get_args(alias) == (types.Index, xr.Dataset)
    assert types.T in typing.get_args(types.Indexed)
