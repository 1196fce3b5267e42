"""What ``import arcoforge`` and ``import arcoforge.batch`` load (each in a fresh interpreter).

The feed is imported again by every DataLoader worker: it must not load the forge's network,
config and file-format stack. Timing is measured by ``benchmarks/imports.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import arcoforge
from arcoforge.batch._optional import require
from arcoforge.errors import MissingDependencyError

#: top-level packages / arcoforge subpackages the feed must leave unloaded
HEAVY = ["requests", "pydantic", "yaml", "rich", "aiohttp", "netCDF4", "h5py", "h5netcdf",
         "fsspec", "zarr", "dask", "distributed", "torch", "tensorflow", "numba", "redis",
         "arcoforge.forge", "arcoforge.catalog", "arcoforge.cli"]


def loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; report which of HEAVY are loaded, and more."""
    probe = f"""
import json, sys
{code}
import xarray as xr
print(json.dumps({{
    "heavy": sorted(h for h in {HEAVY!r} if h in sys.modules),
    "accessor": hasattr(xr.Dataset, "arcoforge") and hasattr(xr.DataArray, "arcoforge"),
}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_batch_loads_no_forge_stack() -> None:
    got = loaded_after("import arcoforge.batch")
    assert got == {"heavy": [], "accessor": True}


def test_import_arcoforge_loads_no_forge_stack_until_a_forge_name_is_used() -> None:
    assert loaded_after("import arcoforge") == {"heavy": [], "accessor": True}
    got = loaded_after("import arcoforge\nassert callable(arcoforge.bake)")
    assert "arcoforge.forge" in got["heavy"]


def test_feed_names_do_not_load_the_forge() -> None:
    got = loaded_after("import arcoforge\narcoforge.SampleStream, arcoforge.BatchGenerator, "
                       "arcoforge.reassemble, arcoforge.SchemaError, arcoforge.SourceError")
    assert got == {"heavy": [], "accessor": True}


def test_every_public_name_resolves_to_its_defining_object() -> None:
    from arcoforge.forge.bake import bake
    from arcoforge.forge.io.fetch import SourceError
    from arcoforge.open import open_dataset

    for name in arcoforge.__all__:
        assert getattr(arcoforge, name) is not None, name
    assert arcoforge.bake is bake
    assert arcoforge.open_dataset is open_dataset
    assert arcoforge.SourceError is SourceError
    assert set(arcoforge.__all__) <= set(dir(arcoforge))
    assert "__version__" in dir(arcoforge)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'arcoforge' has no attribute 'nope'"):
        arcoforge.nope  # noqa: B018
    with pytest.raises(AttributeError, match="module 'arcoforge.batch' has no attribute 'nope'"):
        arcoforge.batch.nope  # noqa: B018


def test_missing_optional_dependency_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError,
                       match=r"'arcoforge_no_such_module' is needed for this feature but is not "
                             r"installed; install it with `pip install "
                             r"'arcoforge\[arcoforge_no_such_module\]'`"):
        require("arcoforge_no_such_module")
    assert issubclass(MissingDependencyError, ImportError)


def test_pyproj_after_a_netcdf_open_does_not_abort_at_exit(shared_data) -> None:
    """xarray lists its backends on an open without engine=, and cfgrib's loads ecCodes; pyproj
    imported after it (by the regrid or catalog code, or cartopy) made the interpreter abort at
    exit ("double free or corruption", status 134).  ``import arcoforge`` imports pyproj first."""
    pytest.importorskip("pyproj")
    nc = sorted((shared_data / "ersst-v5").glob("*.nc"))[0]
    code = (f"import arcoforge\nimport xarray as xr\nxr.open_dataset({str(nc)!r}).close()\n"
            "import pyproj\nprint(pyproj.CRS('EPSG:4326').name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip() == "WGS 84"
