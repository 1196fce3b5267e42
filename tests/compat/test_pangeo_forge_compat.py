"""arcoforge.compat.pangeo_forge_recipes: pangeo-forge recipe modules and feedstocks, unchanged,
baked by arcoforge from real ERSST v5 files over loopback HTTP and a moto S3 server.

pangeo-forge-recipes' own ``tests/test_patterns.py`` runs in ``pangeo_forge_suite/``; these tests
cover the rest: hashes equal to pangeo-forge-recipes 0.10.8's, the ``pangeo_forge_recipes``
alias, the 0.9 recipe classes through ``arcoforge bake``/``verify``, pangeo-layout feedstocks
through ``arcoforge lint``/``test``/``feedstock bake``, S3 sources via ``AWS_ENDPOINT_URL`` and
``anon=True``, and every error message of the compat layer.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
import arcoforge.forge.feedstock as fs
from arcoforge.cli import main as cli_main
from arcoforge.compat import pangeo_forge_recipes as pfr
from arcoforge.compat.pangeo_forge_recipes.patterns import (
    ConcatDim,
    FilePattern,
    MergeDim,
    augment_index_with_start_stop,
    pattern_from_file_sequence,
    prune_pattern,
)
from arcoforge.compat.pangeo_forge_recipes.recipes import (
    HDFReferenceRecipe,
    XarrayZarrRecipe,
    setup_logging,
)
from arcoforge.compat.pangeo_forge_recipes.transforms import (
    OpenURLWithFSSpec,
    OpenWithXarray,
    PrepareZarrTarget,
    Rechunk,
    StoreToZarr,
    TransformNotSupportedError,
)
from arcoforge.compat.pangeo_forge_recipes.types import (
    CombineOp,
    Dimension,
    Index,
    IndexedPosition,
    Position,
)
from arcoforge.errors import ConfigError, SourceError
from arcoforge.forge.verify import verify

MONTHS = ["201901", "201902", "201903", "201904"]


@pytest.fixture(scope="module")
def ersst(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the first four ERSST v5 monthly files (real NOAA data)."""
    src = shared_data / "ersst-v5"
    if not src.is_dir():
        pytest.skip(f"shared data missing: {src}")
    d = tmp_path_factory.mktemp("ersst")
    for m in MONTHS:
        shutil.copy(src / f"ersst.v5.{m}.nc", d)
    return d


@pytest.fixture(scope="module")
def ersst_sources(ersst: Path) -> xr.Dataset:
    """The four files read directly with xarray: the values a store must hold."""
    parts = [xr.open_dataset(ersst / f"ersst.v5.{m}.nc").load() for m in MONTHS]
    return xr.concat(parts, dim="time")


def _no_alias_left() -> None:
    assert not any(k == "pangeo_forge_recipes" or k.startswith("pangeo_forge_recipes.")
                   for k in sys.modules)


# -- types and patterns: pangeo-forge-recipes 0.10 behaviour ----------------------------------

# Digests computed by the real pangeo-forge-recipes 0.10.8 (pip install, same patterns).
PANGEO_0_10_8_DIGESTS = {
    "ersst": "5cf82f1fa58cde4200536002cd08822fc4bb828f1a63157b584c0dc337067427",
    "merge": "93b96729af0ed28a104948e2eaf06df609eaaa50815dd217b0a7840ae651a58e",
    "seq": "777d43666981dfefeddf86e0eac8605b12694d587c9c9d3fce8583efbc785389",
}


def _hash_patterns() -> dict[str, FilePattern]:
    dates = pd.date_range("2019-01-01", "2019-06-01", freq="MS")
    return {
        "ersst": FilePattern(lambda time: f"https://x.org/ersst.v5.{time:%Y%m}.nc",
                             ConcatDim("time", dates, nitems_per_file=1)),
        "merge": FilePattern(lambda time, variable: f"T_{time}_V_{variable}",
                             MergeDim("variable", ["a", "b"]), ConcatDim("time", [0, 1, 2]),
                             fsspec_open_kwargs={"anon": True}, file_type="netcdf3"),
        "seq": pattern_from_file_sequence(["s3://b/é1.nc", "s3://b/2.nc"], "t",
                                          nitems_per_file=3, query_string_secrets={"k": "v"},
                                          file_type="grib"),
    }


def test_sha256_equals_pangeo_forge_recipes_0_10_8() -> None:
    for name, pattern in _hash_patterns().items():
        assert pattern.sha256().hex() == PANGEO_0_10_8_DIGESTS[name], name
        assert len(pattern.get_merkle_list()) == len(list(pattern)) + 1


def test_start_processing_from_continues_an_older_pattern() -> None:
    old = _hash_patterns()["ersst"]
    longer = FilePattern(old.format_function,
                         ConcatDim("time", pd.date_range("2019-01-01", "2019-09-01", freq="MS"),
                                   nitems_per_file=1))
    index = longer.start_processing_from(old.sha256())
    assert index is not None and longer[index] == "https://x.org/ersst.v5.201907.nc"
    other = FilePattern(old.format_function, ConcatDim("time", [pd.Timestamp("2001-01-01")]))
    assert other.start_processing_from(old.sha256()) is None


def test_index_is_a_hashable_picklable_dict() -> None:
    pattern = _hash_patterns()["merge"]
    keys = list(pattern)
    assert len(set(keys)) == 6 and all(isinstance(k, dict) for k in keys)
    restored = pickle.loads(pickle.dumps(keys[4]))
    assert restored == keys[4] and hash(restored) == hash(keys[4])
    assert keys[4].find_position("time") == 1
    assert pattern.combine_dim_keys == [Dimension("variable", CombineOp.MERGE),
                                        Dimension("time", CombineOp.CONCAT)]
    assert pattern.shape == (2, 3) and pattern.concat_sequence_lens == {"time": None}
    assert prune_pattern(pattern, 1).dims == {"variable": 2, "time": 1}


def test_pattern_and_type_error_messages() -> None:
    index = Index({Dimension("variable", CombineOp.MERGE): Position(0)})
    with pytest.raises(ConfigError, match="no concat dimension named 'time'"):
        index.find_position("time")
    twice = Index({Dimension("a", CombineOp.CONCAT): Position(0),
                   Dimension("a", CombineOp.CONCAT): Position(1)})
    assert twice.find_concat_dim("a") == Dimension("a", CombineOp.CONCAT)  # dict keys are unique
    with pytest.raises(ConfigError, match="already an offset"):
        augment_index_with_start_stop(IndexedPosition(3, dimsize=9), [2, 2])
    with pytest.raises(ConfigError, match="'hdf4' is not a valid FileType; use one of"):
        FilePattern(str, ConcatDim("time", [1]), file_type="hdf4")
    with pytest.raises(ConfigError, match="cannot be used with file_type='opendap'"):
        FilePattern(str, ConcatDim("time", [1]), file_type="opendap",
                    fsspec_open_kwargs={"block_size": 0})
    pattern = _hash_patterns()["merge"]
    with pytest.raises(ConfigError, match="an index of this pattern has 2 dimensions"):
        pattern[index]
    wrong = Index({Dimension("variable", CombineOp.CONCAT): Position(0),
                   Dimension("time", CombineOp.CONCAT): Position(0)})
    with pytest.raises(ConfigError, match="is not a combine dimension of this pattern"):
        pattern[wrong]


def test_to_arcoforge_maps_and_refuses_with_reasons() -> None:
    fp = FilePattern(lambda time, variable: f"{variable}.{time}.nc", MergeDim("variable", ["a"]),
                     ConcatDim("time", ["1", "2"], nitems_per_file=12), file_type="netcdf3")
    af_pattern = fp.to_arcoforge(open_kwargs={"decode_times": False})
    assert isinstance(af_pattern, af.FilePattern)
    assert [u for _, u in af_pattern.items()] == ["a.1.nc", "a.2.nc"]
    assert af_pattern.file_type == "netcdf3" and af_pattern.open_kwargs == {"decode_times": False}
    assert af_pattern.concat_dim is not None and af_pattern.concat_dim.nitems_per_file == 12
    assert FilePattern(str, ConcatDim("t", [1]), file_type="unknown").to_arcoforge().file_type \
        == "auto"
    refused = {
        "concatenates along 2 dimensions": FilePattern(
            lambda a, b: "x", ConcatDim("a", [1]), ConcatDim("b", [1])),
        "cannot read OPeNDAP": FilePattern(str, ConcatDim("t", [1]), file_type="opendap"),
        "not from Zarr stores": FilePattern(str, ConcatDim("t", [1]), file_type="zarr"),
        r"query_string_secrets \(token\) put secret values": FilePattern(
            str, ConcatDim("t", [1]), query_string_secrets={"token": "s3cr3t"}),
        r"fsspec_open_kwargs hold credentials \(client_kwargs.aws_secret_access_key, "
        r"password\)": FilePattern(
            str, ConcatDim("t", [1]), fsspec_open_kwargs={
                "password": "pw", "client_kwargs": {"aws_secret_access_key": "k"}}),
        "has no ConcatDim or MergeDim": FilePattern(str),
    }
    for message, pattern in refused.items():
        with pytest.raises(ConfigError, match=message) as info:
            pattern.to_arcoforge()
        assert "s3cr3t" not in str(info.value) and "'pw'" not in str(info.value)


# -- transforms: 0.10 Beam chains compile to arcoforge recipes ----------------------------------


def test_chains_compile_and_what_cannot_is_refused_with_the_reason() -> None:
    import apache_beam as beam

    from arcoforge.compat.pangeo_forge_recipes.transforms import compile_chain

    pattern = _ersst_pattern("https://x.org")
    dims = pattern.combine_dim_keys

    def chain(*middle: Any, store: Any = None) -> Any:
        out = beam.Create(pattern.items()) | OpenURLWithFSSpec(max_concurrency=2) | \
            OpenWithXarray(file_type=pattern.file_type, xarray_open_kwargs={"decode_coords": "all"})
        for step in middle:
            out = out | step
        return out | (store or StoreToZarr(store_name="x.zarr", combine_dims=dims,
                                           target_chunks={"time": 2}))

    recipe = compile_chain(chain(beam.Map(lambda item: item)))
    assert isinstance(recipe, af.ZarrRecipe)
    assert [u for _, u in recipe.pattern.items()] == [u for _, u in pattern.items()]
    assert recipe.target_chunks == {"time": 2}
    assert recipe.pattern.open_kwargs == {"decode_coords": "all"}
    assert recipe.source_options.max_concurrency_per_host == 2
    assert [t.describe()["transform"] for t in recipe.transforms] == ["BeamSteps"]
    refused = {
        "dynamic_chunking_fn=.... cannot be compiled": chain(store=StoreToZarr(
            store_name="x", combine_dims=dims, dynamic_chunking_fn=lambda ds: {})),
        r"secrets=\.\.\.\): arcoforge reads credentials from environment variables": (
            beam.Create(pattern.items()) | OpenURLWithFSSpec(secrets={"token": "s3cr3t"})
            | OpenWithXarray() | StoreToZarr(store_name="x", combine_dims=dims)),
        "the chain has no OpenWithXarray": beam.Create(pattern.items()) | StoreToZarr(
            store_name="x", combine_dims=dims),
        "GroupByKey combines datasets of several inputs": chain(beam.GroupByKey()),
        r"OpenWithXarray\(file_type='zarr'\) is not supported by arcoforge's compat layer: "
        "arcoforge builds from files": (beam.Create(pattern.items())
                                        | OpenWithXarray(file_type="zarr")
                                        | StoreToZarr(store_name="x", combine_dims=dims)),
        # a subset of the items gave a bare KeyError: (0,) at bake time
        r"holds 3 items but not the index positions \[\{'time': 0\}\]: arcoforge builds": (
            beam.Create(list(pattern.items())[1:]) | OpenWithXarray()
            | StoreToZarr(store_name="x", combine_dims=dims)),
    }
    for message, bad in refused.items():
        with pytest.raises(TransformNotSupportedError, match=message) as info:
            compile_chain(bad)
        assert "s3cr3t" not in str(info.value)
    # Reshuffle redistributes elements: nothing per dataset (it gave a raw AttributeError)
    assert len(compile_chain(chain(beam.Reshuffle())).transforms) == 0

    class Scale(beam.DoFn):  # a DoFn that loads what it needs in setup(), as Beam calls it
        def setup(self) -> None:
            self.factor = 2.0

        def process(self, item: Any) -> Any:
            index, ds = item
            yield index, ds * self.factor

    scaled = compile_chain(chain(beam.ParDo(Scale()))).transforms[0]
    out = scaled(next(iter(recipe.pattern.items()))[0], xr.Dataset({"a": ("x", [1.0, 2.0])}))
    assert out["a"].values.tolist() == [2.0, 4.0]
    # a step that returns the dataset alone, not (index, dataset): named as such
    bare = compile_chain(chain(beam.Map(lambda item: item[1]))).transforms[0]
    with pytest.raises(TransformNotSupportedError, match=r"returned a Dataset, not an \(index, "
                                                         r"dataset\) pair.*return \(index, ds\)"):
        bare(next(iter(recipe.pattern.items()))[0], xr.Dataset())
    for cls in (Rechunk, PrepareZarrTarget):  # StoreToZarr's insides are not recipe steps
        with pytest.raises(TransformNotSupportedError, match="internal step of StoreToZarr"):
            cls()
    assert issubclass(TransformNotSupportedError, ConfigError)
    assert set(pfr.transforms.__all__) >= {"OpenURLWithFSSpec", "StoreToZarr", "Rechunk",
                                           "ConsolidateMetadata", "WriteCombinedReference"}


# -- recipes: the 0.9 class API --------------------------------------------------------------


def _ersst_pattern(base: str, **kwargs: Any) -> FilePattern:
    return FilePattern(lambda time: f"{base}/ersst.v5.{time}.nc",
                       ConcatDim("time", MONTHS, nitems_per_file=1), **kwargs)


def test_xarray_zarr_recipe_is_a_zarr_recipe() -> None:
    recipe = XarrayZarrRecipe(_ersst_pattern("https://x.org"), inputs_per_chunk=2,
                              xarray_open_kwargs={"decode_coords": "all"})
    assert isinstance(recipe, af.ZarrRecipe)
    assert recipe.target_chunks == {"time": 2}  # nitems_per_file * inputs_per_chunk, as in 0.9
    assert recipe.pattern.open_kwargs == {"decode_coords": "all"}
    assert recipe.concat_dim == "time" and len(recipe.pattern) == 4
    pruned = recipe.copy_pruned(2)
    assert isinstance(pruned, XarrayZarrRecipe) and len(pruned.pattern) == 2
    assert pruned.file_pattern.dims == {"time": 2} and pruned.target_chunks == {"time": 2}
    assert XarrayZarrRecipe(_ersst_pattern("x"), target_chunks={"time": 3}).target_chunks == \
        {"time": 3}
    anon = XarrayZarrRecipe(_ersst_pattern("s3://b", fsspec_open_kwargs={"anon": True}))
    assert anon.source_options.storage_options == {"anon": True}
    assert fs.prune_recipe(anon, 1).source_options.storage_options == {"anon": True}


def test_xarray_zarr_recipe_error_and_warning_messages() -> None:
    p = _ersst_pattern("x")
    cases = {
        r"process_chunk=\.\.\.\) is not supported": dict(process_chunk=lambda ds: ds,
                                                           inputs_per_chunk=2),
        "open_input_with_kerchunk=True. is not supported": dict(open_input_with_kerchunk=True),
        "inputs_per_chunk must be an integer >= 1, got 0": dict(inputs_per_chunk=0),
    }
    for message, kwargs in cases.items():
        with pytest.raises(ConfigError, match=message):
            XarrayZarrRecipe(p, **kwargs)
    with pytest.raises(ConfigError, match="needs a file pattern"):
        XarrayZarrRecipe()
    with pytest.raises(ConfigError, match="file_pattern must be a FilePattern, got str"):
        XarrayZarrRecipe("files/*.nc")  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="xarray_concat_kwargs are ignored"):
        XarrayZarrRecipe(p, xarray_concat_kwargs={"data_vars": "minimal"})
    with pytest.warns(UserWarning, match="storage_config is ignored"):
        XarrayZarrRecipe(p, storage_config=object())
    with pytest.raises(ConfigError, match=r"to_dask\(\) is not available in arcoforge"):
        XarrayZarrRecipe(p).to_dask()
    with pytest.raises(ConfigError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD")


def test_hdf_reference_recipe_is_a_virtual_recipe() -> None:
    recipe = HDFReferenceRecipe(_ersst_pattern("x"), netcdf_storage_options={"anon": True})
    assert recipe.copy_pruned(1).file_pattern.dims == {"time": 1}
    assert fs.is_recipe(recipe) and not fs.unsupported_reason(recipe)
    assert recipe.is_virtual and len(recipe.pattern) == 4  # baked in tests/test_virtual.py
    with pytest.raises(ConfigError, match="file_pattern must be a FilePattern, got list"):
        HDFReferenceRecipe(["a.nc"])  # type: ignore[arg-type]


# -- recipe modules, unchanged, through `arcoforge bake` ---------------------------------------

RECIPE_0_9 = """\
from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from pangeo_forge_recipes.recipes import XarrayZarrRecipe

months = {months!r}


def make_url(time):
    return f"{base}/ersst.v5.{{time}}.nc"


pattern = FilePattern(make_url, ConcatDim("time", months, nitems_per_file=1))
recipe = XarrayZarrRecipe(pattern, target_chunks={{"time": 3}})
"""

RECIPE_HDF = """\
from pangeo_forge_recipes.patterns import pattern_from_file_sequence
from pangeo_forge_recipes.recipes import HDFReferenceRecipe

refs = HDFReferenceRecipe(pattern_from_file_sequence(["{base}/ersst.v5.201901.nc"], "time"))
"""

RECIPE_0_10 = """\
import apache_beam as beam
from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from pangeo_forge_recipes.transforms import (ConsolidateDimensionCoordinates, ConsolidateMetadata,
                                             OpenURLWithFSSpec, OpenWithXarray, StoreToZarr)

pattern = FilePattern(lambda time: f"{base}/ersst.v5.{{time}}.nc",
                      ConcatDim("time", {months!r}, nitems_per_file=1))


class DropAnomaly(beam.PTransform):
    @staticmethod
    def _drop(index, ds):
        return index, ds.drop_vars("ssta")

    def expand(self, pcoll):
        return pcoll | "drop ssta" >> beam.MapTuple(self._drop)


recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | DropAnomaly()
    | StoreToZarr(store_name="ersst.zarr", combine_dims=pattern.combine_dim_keys,
                  target_chunks={chunks}, attrs={{"title": "ERSST via a Beam chain"}}{extra})
    | ConsolidateDimensionCoordinates()
    | ConsolidateMetadata()
)
"""


def test_pangeo_recipe_module_bakes_over_http_and_verifies(
        ersst: Path, ersst_sources: xr.Dataset, http_server: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = http_server(ersst)
    recipe_py = tmp_path / "recipe.py"
    recipe_py.write_text(RECIPE_0_9.format(months=MONTHS, base=server.url))
    target = str(tmp_path / "ersst.zarr")
    code = cli_main(["bake", str(recipe_py), "--target", target, "--no-progress"])
    assert code == 0, capsys.readouterr()
    _no_alias_left()
    assert cli_main(["verify", target, "--against", str(recipe_py)]) == 0
    ds = af.open_dataset(target).load()
    assert ds.sizes["time"] == 4 and ds["sst"].encoding["chunks"][0] == 3
    np.testing.assert_array_equal(ds["sst"].values, ersst_sources["sst"].values)
    np.testing.assert_array_equal(ds["time"].values, ersst_sources["time"].values)
    # a pruned test build of the same module
    pruned = str(tmp_path / "pruned.zarr")
    assert cli_main(["bake", str(recipe_py), "--target", pruned, "--prune", "2",
                     "--no-progress"]) == 0
    assert af.open_dataset(pruned).sizes["time"] == 2


def test_pangeo_beam_chain_module_bakes_over_http_and_verifies(
        ersst: Path, ersst_sources: xr.Dataset, http_server: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = http_server(ersst)
    recipe_py = tmp_path / "recipe.py"
    recipe_py.write_text(RECIPE_0_10.format(base=server.url, months=MONTHS,
                                              chunks={"time": 3}, extra=""))
    target = str(tmp_path / "ersst.zarr")
    code = cli_main(["bake", str(recipe_py), "--target", target, "--no-progress"])
    assert code == 0, capsys.readouterr()
    _no_alias_left()
    assert cli_main(["verify", target, "--against", str(recipe_py)]) == 0
    ds = af.open_dataset(target).load()
    assert "ssta" not in ds and ds.attrs["title"] == "ERSST via a Beam chain"
    assert ds.sizes["time"] == 4 and ds["sst"].encoding["chunks"][0] == 3
    np.testing.assert_array_equal(ds["sst"].values, ersst_sources["sst"].values)


def test_unsupported_recipe_modules_fail_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hdf_py = tmp_path / "hdf.py"
    hdf_py.write_text(RECIPE_HDF.format(base="https://x.org"))
    assert cli_main(["bake", str(hdf_py), "--target", str(tmp_path / "h.zarr")]) == 1
    assert "virtual references need an Icechunk target (icechunk://PATH" in \
        capsys.readouterr().err
    beam_py = tmp_path / "beam_recipe.py"
    beam_py.write_text(RECIPE_0_10.format(base="https://x.org", months=MONTHS, chunks={},
                                          extra=", dynamic_chunking_fn=len"))
    assert cli_main(["bake", str(beam_py), "--target", str(tmp_path / "b.zarr")]) == 1
    err = capsys.readouterr().err
    assert "StoreToZarr(dynamic_chunking_fn=...) cannot be compiled" in err
    _no_alias_left()
    assert not (tmp_path / "h.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_alias_leaves_a_real_package_alone(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site" / "pangeo_forge_recipes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pfr.pangeo_alias() as aliased:
        assert aliased is False
        import pangeo_forge_recipes  # type: ignore[import-not-found]

        assert pangeo_forge_recipes.REAL
    sys.modules.pop("pangeo_forge_recipes", None)
    monkeypatch.undo()
    with pfr.pangeo_alias() as aliased:
        assert aliased is True
        import pangeo_forge_recipes.recipes.xarray_zarr as xz  # type: ignore[import-not-found]

        assert xz.XarrayZarrRecipe is XarrayZarrRecipe
    _no_alias_left()


# -- feedstocks in pangeo-forge's meta.yaml layout ---------------------------------------------

PANGEO_META = """\
title: "NOAA ERSST v5"
description: "Monthly 2-degree SST, a pangeo-forge feedstock baked by arcoforge"
pangeo_forge_version: "0.9.4"
pangeo_notebook_version: "2022.06.02"
recipes:
  - id: ersst-v5
    object: "recipe:recipe"
provenance:
  providers:
    - name: "NOAA NCEI"
      description: "National Centers for Environmental Information"
      roles:
        - producer
        - licensor
      url: https://www.ncei.noaa.gov/products/extended-reconstructed-sst
  license: "Open Data"
maintainers:
  - name: "Ada Lovelace"
    orcid: "0000-0002-1825-0097"
    github: ada
bakery:
  id: "local"
"""


def _write(d: Path, meta: str, **modules: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.yaml").write_text(textwrap.dedent(meta))
    for name, text in modules.items():
        (d / f"{name}.py").write_text(text)
    return d


def _profiles(tmp_path: Path) -> Path:
    p = tmp_path / "profiles.yaml"
    p.write_text(f"profiles:\n  local:\n    target_root: {tmp_path / 'bakery'}\n"
                 f"    cache_root: {tmp_path / 'cache'}\n")
    return p


def test_pangeo_feedstock_lints_tests_and_bakes(
        ersst: Path, http_server: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = http_server(ersst)
    d = _write(tmp_path / "feedstock", PANGEO_META,
               recipe=RECIPE_0_9.format(months=MONTHS, base=server.url))
    assert fs.lint(d) == []
    [warning] = fs.lint(d, include_warnings=True)
    assert warning.severity == "warning" and warning.line == 16
    assert "'Open Data' is not a known SPDX license id" in warning.message
    assert cli_main(["lint", str(d)]) == 0
    assert "warning: provenance.license" in capsys.readouterr().out
    meta = fs.load_meta(d)
    assert meta.license == "other" and meta.profile == "local"
    assert meta.recipes == {"ersst-v5": "recipe:recipe"}
    assert [m.github for m in meta.maintainers] == ["ada"]
    assert meta.providers[0].roles == ["producer", "licensor"]
    assert cli_main(["test", str(d)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "verify ersst-v5: ok" in out and "warning lint:" in out
    _no_alias_left()
    profiles = _profiles(tmp_path)
    assert cli_main(["bake", str(d), "--profiles", str(profiles), "--catalog",
                     str(tmp_path / "catalog"), "--no-progress"]) == 0
    assert "ersst-v5: built" in capsys.readouterr().out
    assert af.open_dataset(str(tmp_path / "bakery" / "ersst-v5.zarr")).sizes["time"] == 4


def test_pangeo_feedstock_minimal_and_dict_object(ersst: Path, tmp_path: Path) -> None:
    recipes = textwrap.dedent(f"""\
        from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
        from pangeo_forge_recipes.recipes import XarrayZarrRecipe

        def url(time):
            return "{ersst}/ersst.v5." + time + ".nc"

        recipes = {{
            "early": XarrayZarrRecipe(FilePattern(url, ConcatDim("time", ["201901", "201902"]))),
            "late": XarrayZarrRecipe(FilePattern(url, ConcatDim("time", ["201903", "201904"]))),
        }}
        """)
    d = _write(tmp_path / "fs", "recipes:\n  - dict_object: 'recipes:recipes'\n",
               recipes=recipes)
    assert fs.lint(d) == []
    warnings_ = [p.message for p in fs.lint(d, include_warnings=True)]
    assert any("no provenance.license" in w for w in warnings_)
    assert any("no 'title'" in w for w in warnings_)
    assert sorted(fs.load_recipes(d)) == ["early", "late"]
    report = fs.test_feedstock(d, nkeep=1)
    assert report.ok, str(report)
    assert set(report.builds) == {"early", "late"}


BAD_PANGEO_META = """\
recipes:
  - id: one
  - id: two
    object: "recipe:missing"
  - id: two
    object: "recipe:recipe"
  - dict_object: "recipe:not_a_dict"
  - id: refs
    object: "recipe:refs"
provenance:
  providers:
    - name: somebody
      roles: [owner]
maintainers:
  - orcid: "1234"
  - orcid: "0000-0002-1825-0097"
bakery:
  id: nowhere
surprise: 1
"""


def test_pangeo_feedstock_lint_errors_and_warnings(tmp_path: Path) -> None:
    module = RECIPE_HDF.format(base="https://x.org") + \
        "recipe = 1\nnot_a_dict = [1]\n"
    d = _write(tmp_path / "fs", BAD_PANGEO_META, recipe=module)
    problems = fs.lint(d, profiles=_profiles(tmp_path), include_warnings=True)
    text = "\n".join(f"{p.line}:{p.severity}:{p.message}" for p in problems)
    expected = [
        "2:error:recipes[0]: Value error, a recipe entry needs 'id' and 'object'",
        "5:error:recipes[2].id: recipe ids must be unique; repeated: two",
        "4:error:recipe 'two': module 'recipe' has no object 'missing'",
        "6:error:recipe 'two': recipe:recipe is a int, not an arcoforge recipe",
        "7:error:dict_object recipe:not_a_dict is a list, not a non-empty dict",
        "13:error:provenance.providers[0].roles[0]: Input should be 'licensor'",
        "16:error:maintainers[1]: Value error, a maintainer needs a 'name' or a 'github'",
        "15:error:maintainers[0].orcid: String should match pattern",
        "18:error:profile 'nowhere' is not in",
        "19:warning:unknown field 'surprise' (ignored)",
        "warning:no provenance.license",
    ]
    for part in expected:
        assert part.replace("Value error, ", "") in text, (part, text)
    with pytest.raises(fs.FeedstockError, match="recipes.0.: a recipe entry needs"):
        fs.load_meta(d)


# -- S3 sources: AWS_ENDPOINT_URL and anon=True ------------------------------------------------


@pytest.fixture
def public_bucket(ersst: Path, s3_server: Any) -> str:
    """The ERSST files in a bucket that anyone may read (objects with the public-read ACL)."""
    fs3 = s3_server.fs()
    bucket = s3_server.create_bucket()
    for m in MONTHS:
        fs3.put_file(str(ersst / f"ersst.v5.{m}.nc"), f"{bucket}/sst/ersst.v5.{m}.nc",
                     ACL="public-read")
    private = s3_server.create_bucket()
    fs3.put_file(str(ersst / f"ersst.v5.{MONTHS[0]}.nc"), f"{private}/ersst.v5.{MONTHS[0]}.nc")
    return f"{bucket}|{private}"


def test_s3_sources_via_aws_endpoint_url_and_anon(
        public_bucket: str, s3_server: Any, ersst_sources: xr.Dataset, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, private = public_bucket.split("|")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    # signed requests: the endpoint comes from the environment only, keys too
    signed = XarrayZarrRecipe(_ersst_pattern(f"s3://{bucket}/sst"), target_chunks={"time": 2})
    assert signed.source_options.storage_options == {}
    target = str(tmp_path / "signed.zarr")
    af.bake(signed, target, progress=False, workdir=str(tmp_path / "w1"))
    assert verify(target, signed).ok
    np.testing.assert_array_equal(af.open_dataset(target)["sst"].values,
                                  ersst_sources["sst"].values)
    # anonymous requests: no credentials at all in the environment
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    anon = XarrayZarrRecipe(_ersst_pattern(f"s3://{bucket}/sst",
                                           fsspec_open_kwargs={"anon": True}))
    target = str(tmp_path / "anon.zarr")
    af.bake(anon, target, progress=False, workdir=str(tmp_path / "w2"))
    np.testing.assert_array_equal(af.open_dataset(target)["sst"].values,
                                  ersst_sources["sst"].values)
    # anonymous access to a private bucket: a clear, permanent error
    refused = XarrayZarrRecipe(FilePattern(lambda time: f"s3://{private}/ersst.v5.{time}.nc",
                                           ConcatDim("time", MONTHS[:1]),
                                           fsspec_open_kwargs={"anon": True}))
    with pytest.raises(SourceError, match="access denied") as info:
        af.bake(refused, str(tmp_path / "no.zarr"), progress=False,
                workdir=str(tmp_path / "w3"))
    assert info.value.reason == "auth" and f"s3://{private}/ersst.v5.201901.nc" in str(info.value)
    # anon=True and named credentials contradict each other
    monkeypatch.setenv("ARCO_KEY", "compat-test-key-id")
    monkeypatch.setenv("ARCO_SECRET", "compat-test-secret-value")
    both = XarrayZarrRecipe(_ersst_pattern(f"s3://{bucket}/sst",
                                           fsspec_open_kwargs={"anon": True}),
                            source_options=af.SourceOptions(
                                auth=af.Auth.basic("ARCO_KEY", "ARCO_SECRET")))
    with pytest.raises(SourceError, match="anon=True .anonymous access. contradicts "
                                          "SourceOptions.auth") as info:
        af.bake(both, str(tmp_path / "both.zarr"), progress=False, workdir=str(tmp_path / "w4"))
    assert info.value.reason == "config"



def test_pangeo_0_10_beam_feedstock_lints_tests_and_refuses_with_the_reason(
        ersst: Path, tmp_path: Path) -> None:
    meta = "recipes:\n  - id: ersst\n    object: 'recipe:recipe'\n"
    good = _write(tmp_path / "good", meta, recipe=RECIPE_0_10.format(
        base=str(ersst), months=MONTHS, chunks={"time": 2}, extra=""))
    assert fs.lint(good) == []
    report = fs.test_feedstock(good, nkeep=2)
    assert report.ok, str(report)
    bad = _write(tmp_path / "bad", meta, recipe=RECIPE_0_10.format(
        base=str(ersst), months=MONTHS, chunks={}, extra=", dynamic_chunking_fn=len"))
    [problem] = fs.lint(bad)
    assert problem.line == 3
    assert "recipe 'ersst': recipe:recipe cannot be baked: StoreToZarr(dynamic_chunking_fn=...)" \
        " cannot be compiled" in problem.message
    assert not fs.test_feedstock(bad).ok


def test_kerchunk_reference_chain_writes_combined_references(ersst: Path,
                                                             ersst_sources: xr.Dataset,
                                                             tmp_path: Path) -> None:
    import apache_beam as beam

    from arcoforge.compat.pangeo_forge_recipes.transforms import (
        OpenWithKerchunk,
        WriteCombinedReference,
        compile_chain,
    )

    pattern = FilePattern(lambda time: f"{ersst}/ersst.v5.{time}.nc", ConcatDim("time", MONTHS))
    chain = (beam.Create(pattern.items()) | OpenWithKerchunk(file_type=pattern.file_type)
             | WriteCombinedReference(store_name="ersst", concat_dims=["time"]))
    recipe = compile_chain(chain)
    assert recipe.is_virtual and recipe.output == "kerchunk"
    refs = tmp_path / "ersst.json"
    af.bake(recipe, str(refs), progress=False)
    ds = xr.open_dataset("reference://", engine="zarr", backend_kwargs={
        "consolidated": False, "storage_options": {"fo": str(refs)}})
    np.testing.assert_array_equal(ds["sst"].values, ersst_sources["sst"].values)
    assert refs.stat().st_size < 100_000  # references, not data
    with pytest.raises(TransformNotSupportedError, match="in a reference chain cannot be "
                                                         "compiled"):
        compile_chain(beam.Create(pattern.items()) | OpenWithKerchunk()
                      | beam.Map(lambda x: x) | WriteCombinedReference(store_name="x"))
