"""Feedstocks: meta.yaml lint with line numbers, pruned test builds, bakery profiles."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
import arcoforge.forge.feedstock as fs
from arcoforge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
ERSST = ROOT / "examples" / "feedstocks" / "ersst"


def _data_dir() -> Path | None:
    env = os.environ.get("ARCOFORGE_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [ROOT / "shared" / "data",
                                              ROOT.parent / "shared" / "data"]:
        if (c / "ersst-v5").is_dir():
            return c
    return None


needs_ersst = pytest.mark.skipif(_data_dir() is None,
                                 reason="ERSST v5 files not found (set ARCOFORGE_SHARED_DATA)")

GOOD_RECIPE = """\
import arcoforge as af

pattern = af.pattern_from_file_sequence(["a.nc", "b.nc"], "time")
recipe = af.ZarrRecipe(pattern)
not_a_recipe = {"hello": 1}
"""


def write_feedstock(d: Path, meta: str, recipe: str = GOOD_RECIPE) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.yaml").write_text(textwrap.dedent(meta))
    (d / "recipe.py").write_text(recipe)
    return d


GOOD_META = """\
title: A dataset
description: Something useful.
license: CC-BY-4.0
providers:
  - name: Somebody
    roles: [producer]
    url: https://example.org
maintainers:
  - name: Ada
    orcid: 0000-0002-1825-0097
    github: ada
recipes:
  ds: recipe:recipe
version: "1.2"
"""


def lines_of(problems: list[fs.Problem]) -> dict[int, str]:
    return {p.line: p.message for p in problems}


def test_lint_clean_feedstock(tmp_path: Path) -> None:
    d = write_feedstock(tmp_path / "fs", GOOD_META)
    assert fs.lint(d) == []
    meta = fs.load_meta(d)
    assert meta.version == "1.2" and meta.providers[0].roles == ["producer"]


def test_lint_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    meta = """\
    title: A dataset
    license: CC-BY-4
    providers:
      - name: Somebody
        roles: [producer, owner]
    maintainers:
      - name: Ada
        orcid: 1234
    recipes:
      ds: recipe:recipe
      other: nomodule:thing
      bad: recipe:not_a_recipe
      gone: recipe:missing_object
    version: "1"
    colour: blue
    """
    d = write_feedstock(tmp_path / "fs", meta)
    problems = fs.lint(d)
    path = str(d / "meta.yaml")
    assert all(p.file == path for p in problems)
    by_line = lines_of(problems)
    assert "missing required field 'description'" in by_line[1]
    assert "CC-BY-4" in by_line[2] and "SPDX" in by_line[2]
    assert "roles" in by_line[5] and "owner" not in by_line.get(4, "")
    assert "orcid" in by_line[8]
    assert "cannot import 'nomodule'" in by_line[11]
    assert "not an arcoforge recipe" in by_line[12]
    assert "no object 'missing_object'" in by_line[13]
    assert "version" in by_line[14]
    assert "unknown field 'colour'" in by_line[15]
    assert len(problems) == 9, "\n".join(map(str, problems))
    # str(problem) is file:line: message, like a compiler
    assert str(problems[0]).startswith(f"{path}:1: ")


def test_lint_unimportable_recipe_module(tmp_path: Path) -> None:
    broken = "import arcoforge as af\nraise RuntimeError('no data here')\n"
    d = write_feedstock(tmp_path / "fs", GOOD_META, recipe=broken)
    problems = fs.lint(d)
    assert len(problems) == 1
    p = problems[0]
    assert p.line == 13  # the `ds: recipe:recipe` line
    assert "cannot import 'recipe'" in p.message and "no data here" in p.message
    assert "recipe.py:2" in p.message  # where in recipe.py it failed

    d2 = write_feedstock(tmp_path / "fs2", GOOD_META, recipe="def broken(:\n")
    [p2] = fs.lint(d2)
    assert "SyntaxError" in p2.message and p2.line == 13


def test_lint_yaml_syntax_error(tmp_path: Path) -> None:
    d = write_feedstock(tmp_path / "fs", "title: ok\ndescription: [unclosed\nlicense: MIT\n")
    [p] = fs.lint(d)
    assert "YAML syntax error" in p.message and p.line >= 2


def test_lint_missing_meta(tmp_path: Path) -> None:
    [p] = fs.lint(tmp_path)
    assert "no meta.yaml" in p.message


def test_lint_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_feedstock(tmp_path / "good", GOOD_META)
    assert cli_main(["lint", str(good)]) == 0
    bad = write_feedstock(tmp_path / "bad", GOOD_META.replace("CC-BY-4.0", "WTFPL-9"))
    assert cli_main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad / 'meta.yaml'}:3: " in out and "WTFPL-9" in out


def test_license_ids() -> None:
    ok = dict(title="t", description="d", providers=[{"name": "p", "roles": ["host"]}],
              maintainers=[{"name": "m"}], recipes={"x": "recipe:recipe"})
    for lic in ("CC0-1.0", "Apache-2.0", "LicenseRef-copernicus", "other"):
        assert fs.FeedstockMeta(license=lic, **ok).license == lic
    with pytest.raises(ValueError, match="did you mean 'MIT'"):
        fs.FeedstockMeta(license="mit", **ok)


# -- pruned test builds ------------------------------------------------------------------------


@needs_ersst
def test_example_feedstock_lints_clean() -> None:
    assert fs.lint(ERSST) == []
    assert set(fs.load_recipes(ERSST)) == {"ersst-v5"}


@needs_ersst
def test_pruned_build_of_ersst_feedstock(tmp_path: Path) -> None:
    report = fs.test_feedstock(ERSST, nkeep=2, workdir=tmp_path)
    text = str(report)
    assert report.ok and report.exit_code == 0, text
    assert "PASSED" in text and "verify ersst-v5: ok" in text
    ds = af.open_dataset(report.targets["ersst-v5"])
    assert ds.sizes["time"] == 2  # pruned: the first two monthly files only
    assert str(ds.time.values[0])[:7] == "2019-01" and str(ds.time.values[1])[:7] == "2019-02"
    # ssta has no standard_name in the NOAA files: a warning, not a failure
    assert any("ssta" in w and "standard_name" in w for w in report.warnings)


@needs_ersst
def test_test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["test", str(ERSST), "--nkeep", "1"]) == 0
    assert "PASSED" in capsys.readouterr().out


def _write_unitless(tmp_path: Path) -> list[str]:
    files = []
    for i in range(3):
        t = pd.date_range("2021-01-01", periods=2, freq="D") + pd.Timedelta(days=2 * i)
        ds = xr.Dataset(
            {"v": (("time", "lat", "lon"), np.full((2, 3, 4), float(i), "float32"))},
            coords={"time": t, "lat": [10.0, 11.0, 12.0], "lon": [1.0, 2.0, 3.0, 4.0]},
        )
        ds.lat.attrs.update(units="degrees_north", standard_name="latitude")
        ds.lon.attrs.update(units="degrees_east", standard_name="longitude")
        p = tmp_path / f"f{i}.nc"
        ds.to_netcdf(p, encoding={"time": {"units": "days since 2021-01-01",
                                           "calendar": "standard"}})
        files.append(str(p))
    return files


def test_test_feedstock_reports_cf_problems(tmp_path: Path) -> None:
    files = _write_unitless(tmp_path)
    recipe = ("import arcoforge as af\n"
              f"recipe = af.ZarrRecipe(af.pattern_from_file_sequence({files!r}, 'time'))\n")
    d = write_feedstock(tmp_path / "fs", GOOD_META, recipe=recipe)
    report = fs.test_feedstock(d, nkeep=2)
    assert not report.ok and report.exit_code == 1
    assert any("'v' has no units" in e for e in report.errors), str(report)
    assert "verify ds: ok" in str(report)  # the data itself is faithful
    assert "FAILED" in str(report)


def test_test_feedstock_stops_at_lint(tmp_path: Path) -> None:
    d = write_feedstock(tmp_path / "fs", GOOD_META.replace("title: A dataset\n", ""))
    report = fs.test_feedstock(d)
    assert not report.ok and not report.builds
    assert "missing required field 'title'" in str(report)


# -- bakery profiles ---------------------------------------------------------------------------


def _profiles(tmp_path: Path) -> Path:
    p = tmp_path / "profiles.yaml"
    p.write_text(textwrap.dedent(f"""\
        profiles:
          local:
            engine: local
            engine_options: {{workers: 2}}
            target_root: {tmp_path / 'bakery'}
            cache_root: {tmp_path / 'cache'}
          other:
            target_root: {tmp_path / 'elsewhere'}
        """))
    return p


def test_load_profiles_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _profiles(tmp_path)
    profs = fs.load_profiles(path)
    assert set(profs) == {"local", "other"}
    assert profs["local"].engine_options == {"workers": 2}
    assert profs["other"].engine == "local" and profs["other"].cache_root is None
    assert profs["local"].target_for("x") == f"{tmp_path / 'bakery'}/x.zarr"
    monkeypatch.setenv("ARCOFORGE_PROFILES", str(path))
    assert set(fs.load_profiles()) == {"local", "other"}
    monkeypatch.delenv("ARCOFORGE_PROFILES")
    with pytest.raises(ValueError, match="ARCOFORGE_PROFILES"):
        fs.load_profiles()


def test_lint_unknown_profile(tmp_path: Path) -> None:
    d = write_feedstock(tmp_path / "fs", GOOD_META + "profile: nowhere\n")
    [p] = fs.lint(d, profiles=_profiles(tmp_path))
    assert p.line == 15 and "profile 'nowhere'" in p.message and "local, other" in p.message


@needs_ersst
def test_bake_feedstock_with_profile_and_catalog(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from arcoforge.catalog import open_dataset as open_by_id
    from arcoforge.catalog import search

    profiles = _profiles(tmp_path)
    catalog = tmp_path / "catalog"
    code = cli_main(["feedstock", "bake", str(ERSST), "--profiles", str(profiles),
                     "--catalog", str(catalog), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    store = tmp_path / "bakery" / "ersst-v5.zarr"
    assert store.is_dir() and "published ersst-v5" in out
    [hit] = search(catalog, variables=["sst"])
    assert hit.id == "ersst-v5" and hit.store == str(store)
    ds = open_by_id(catalog, "ersst-v5")
    assert ds.sizes["time"] == 24
    # an unknown profile is a clear error
    assert cli_main(["feedstock", "bake", str(ERSST), "--profiles", str(profiles),
                     "--profile", "nope"]) == 1
    assert "unknown bakery profile 'nope'" in capsys.readouterr().err


@needs_ersst
def test_bake_command_takes_a_feedstock_folder_and_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``arcoforge bake FEEDSTOCK_DIR --profile NAME`` is the same as ``feedstock bake``."""
    profiles = _profiles(tmp_path)
    code = cli_main(["bake", str(ERSST), "--profile", "local", "--profiles", str(profiles),
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ersst-v5: built" in out
    assert af.open_dataset(str(tmp_path / "bakery" / "ersst-v5.zarr")).sizes["time"] == 24
    # a recipe module still needs a target
    assert cli_main(["bake", str(ERSST / "recipe.py")]) == 1
    assert "--target is required" in capsys.readouterr().err


def test_ci_template_lints_and_tests_on_pull_requests() -> None:
    import yaml

    path = ROOT / "src" / "arcoforge" / "templates" / "feedstock-ci.yml"
    wf = yaml.safe_load(path.read_text())
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as True
    steps = [s.get("run", "") for s in wf["jobs"]["test"]["steps"]]
    assert any(s.startswith("arcoforge lint ") for s in steps)
    assert any(s.startswith("arcoforge test ") and "--nkeep" in s for s in steps)
