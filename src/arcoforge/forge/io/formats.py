"""What a source is and whether this installation can read it: the format from the first
bytes (NetCDF3, HDF5/NetCDF4, GRIB, HDF4), the xarray engine for it, HDF5 filter plugins
(hdf5plugin), cfgrib (its index files, ``filter_by_keys``), HDF4 through pyhdf
(:mod:`.hdf4`), inputs read where they are (OPeNDAP endpoints, Zarr stores: :func:`remote_engine`)
and NetCDF-4 user-defined types that cannot be stored faithfully (compound, enum, vlen).

Engines are xarray's names (``netcdf4``, ``h5netcdf``, ``cfgrib``, ``zarr``) plus two of
arcoforge's own: ``arcoforge_hdf4`` (:class:`~arcoforge.forge.io.hdf4.HDF4BackendEntrypoint`)
and ``opendap`` (xarray's ``netcdf4`` engine on a DAP2 URL, or ``pydap`` for DAP4);
:func:`xarray_engine` turns either into what :func:`xarray.open_dataset` takes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from arcoforge.errors import (
    ArcoforgeError,
    ConfigError,
    MissingDependencyError,
    SourceReadError,
    TruncatedFileError,
)
from arcoforge.forge.io.hdf4 import HDF4_ENGINE
from arcoforge.forge.io.integrity import _HDF4_MAGIC, _hdf5_superblock_at

__all__ = ["detect_engine", "FILE_TYPE_ENGINE", "REMOTE_ENGINES", "remote_engine",
           "xarray_engine"]

_MAGIC = {
    b"CDF\x01": "netcdf4",
    b"CDF\x02": "netcdf4",
    b"CDF\x05": "netcdf4",
    b"\x89HDF": "netcdf4",
    b"GRIB": "cfgrib",
}

#: the engine that reads each ``file_type`` (``"auto"``: told from the first bytes, or from the
#: URL for inputs read where they are); :func:`xarray_engine` gives xarray's name for it
FILE_TYPE_ENGINE = {"netcdf4": "netcdf4", "netcdf3": "netcdf4", "hdf5": "h5netcdf",
                    "grib": "cfgrib", "hdf4": HDF4_ENGINE, "zarr": "zarr", "opendap": "opendap"}

#: engines whose inputs are read where they are (never downloaded into the cache)
REMOTE_ENGINES = frozenset({"zarr", "opendap"})


# HDF5 (and so netCDF4) is not thread-safe: every open, metadata read, slice read and close that
# arcoforge makes goes through this one lock.  Threads still overlap reads with compression and
# writes; processes (``processes=True``) read in parallel.
_OPEN_LOCK = threading.RLock()

_REFETCH = "delete the cached copy and download it again, or remove it from the pattern"


# -- HDF5 filter plugins -----------------------------------------------------------------------

#: HDF5 filters built into every HDF5 library: deflate, shuffle, fletcher32, szip, nbit,
#: scaleoffset (szip only where the library was built with it: checked like a plugin)
_BUILTIN_FILTERS = {1, 2, 3, 5, 6}
_FILTER_NAMES = {
    1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
    307: "bzip2", 32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle",
    32013: "zfp", 32015: "zstd", 32017: "sz", 32018: "fcidecomp", 32024: "sz3",
    32026: "blosc2",
}


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(list(spec.submodule_search_locations)[0])


def _use_hdf5plugin() -> bool:
    """Import hdf5plugin when it is installed, so HDF5 files compressed with its filters (lz4,
    bitshuffle, blosc2, zfp, ...) just work; True when netCDF4's HDF5 library sees them too.

    h5py gets the filters by the import.  netCDF4's own HDF5 library reads ``HDF5_PLUGIN_PATH``
    once, when netCDF4 is imported: so the path is set here, before arcoforge imports netCDF4
    (keeping netCDF4's own plugin folder on it).
    """
    plugin_pkg = _package_dir("hdf5plugin")
    if plugin_pkg is None:
        return False
    plugins = os.path.join(plugin_pkg, "plugins")
    path = os.environ.get("HDF5_PLUGIN_PATH")
    if "netCDF4" not in sys.modules:
        parts = [p for p in (path or "").split(os.pathsep) if p]
        if path is None:  # netCDF4 would have pointed it at its own plugins: keep them
            nc_pkg = _package_dir("netCDF4")
            if nc_pkg and os.path.isdir(os.path.join(nc_pkg, "plugins")):
                parts.append(os.path.join(nc_pkg, "plugins"))
        if plugins not in parts:
            parts.insert(0, plugins)
        os.environ["HDF5_PLUGIN_PATH"] = os.pathsep.join(parts)
        seen_by_netcdf4 = True
    else:
        seen_by_netcdf4 = plugins in (path or "").split(os.pathsep)
    try:
        importlib.import_module("hdf5plugin")
    except Exception:  # noqa: BLE001 - a broken optional install: files needing it are refused
        return False
    return seen_by_netcdf4


_HDF5PLUGIN_IN_NETCDF4 = _use_hdf5plugin()


def _netcdf4_filters() -> set[int]:
    """HDF5 filter ids that the netCDF4 library can decode here."""
    import netCDF4

    ids = set(_BUILTIN_FILTERS)
    if _plugins_disabled():
        return ids  # netCDF4's bundled plugins are not loaded either
    for flag, fid in (("__has_szip_support__", 4), ("__has_zstandard_support__", 32015),
                      ("__has_bzip2_support__", 307), ("__has_blosc_support__", 32001)):
        if getattr(netCDF4, flag, False):
            ids.add(fid)
    return ids


def _filter_label(fid: int, stored: bytes | str) -> str:
    if fid in _FILTER_NAMES:
        return _FILTER_NAMES[fid]
    text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else str(stored)
    word = re.split(r"[\s;:,(]", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return word or f"id {fid}"


_FILTER_CACHE: dict[tuple[str, int, int], list[tuple[str, int, str]]] = {}


def _hdf5_plugin_filters(path: str, group: str | None = None) -> list[tuple[str, int, str]]:
    """(variable, filter id, filter name) for every dataset of an HDF5 file (under ``group``)
    that uses a filter outside the built-in set; read from metadata only, cached per file."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILTER_CACHE:
        importlib.import_module("netCDF4")  # first: h5py then sees netCDF4's plugin path
        import h5py  # type: ignore[import-untyped]

        found: list[tuple[str, int, str]] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                plist = obj.id.get_create_plist()
                for i in range(plist.get_nfilters()):
                    fid, _flags, _values, stored = plist.get_filter(i)
                    if fid not in _BUILTIN_FILTERS:
                        found.append((name, int(fid), _filter_label(int(fid), stored)))

        with _OPEN_LOCK, h5py.File(path, "r") as h5:
            h5.visititems(visit)
        _FILTER_CACHE[key] = found
    found = _FILTER_CACHE[key]
    if group:
        prefix = group.strip("/") + "/"
        found = [f for f in found if f[0].startswith(prefix)]
    return found


def _reader_for_filters(path: str, engine: str, url: str, group: str | None) -> str:
    """The engine that can decode every filter of ``path``: ``engine``, or h5netcdf when only
    h5py has a filter's plugin; raises :class:`SourceReadError` naming the variable, the filter
    and the fix when no reader has it."""
    if engine not in ("netcdf4", "h5netcdf") or _hdf5_superblock_offset(path) is None:
        return engine
    try:
        filters = _hdf5_plugin_filters(path, group)
    except ArcoforgeError:
        raise
    except Exception:  # noqa: BLE001 - h5py cannot read it: opening it will say why
        return engine
    if not filters:
        return engine
    import h5py  # type: ignore[import-untyped]

    nc_ids = _netcdf4_filters()
    switch = False
    for name, fid, label in filters:
        in_h5py = bool(h5py.h5z.filter_avail(fid))
        in_nc = fid in nc_ids or (_HDF5PLUGIN_IN_NETCDF4 and in_h5py)
        if not (in_h5py if engine == "h5netcdf" else in_nc or in_h5py):
            raise SourceReadError(_missing_filter_message(url, name, label, fid))
        if engine == "netcdf4" and not in_nc:
            switch = True  # only h5py has this filter: read the file through h5netcdf
    return "h5netcdf" if switch else engine


def _plugins_disabled() -> bool:
    """Whether this process turned HDF5 filter plugins off (``HDF5_PLUGIN_PATH=disable``, which
    TensorFlow sets when it is imported)."""
    return os.environ.get("HDF5_PLUGIN_PATH", "").strip().lower() == "disable"


def _missing_filter_message(url: str, variable: str, label: str, fid: int) -> str:
    if _plugins_disabled():
        return (
            f"cannot read {url}: variable {variable!r} is compressed with the HDF5 {label} "
            f"filter (filter id {fid}), but HDF5 filter plugins are turned off in this process "
            "(HDF5_PLUGIN_PATH=disable, which TensorFlow sets when imported). Build in a "
            "process that does not import TensorFlow, import arcoforge's readers before it, or "
            "unset HDF5_PLUGIN_PATH before anything opens an HDF5 file."
        )
    return (
        f"cannot read {url}: variable {variable!r} is compressed with the HDF5 {label} filter "
        f"(filter id {fid}), whose plugin is not installed. Install the filter plugins: "
        "pip install hdf5plugin (arcoforge imports it by itself; in your own code, "
        "`import hdf5plugin` before opening the file)."
    )


# -- GRIB --------------------------------------------------------------------------------------

_GRIB_HINT = "reading GRIB needs cfgrib and eccodes: pip install 'arcoforge[grib]'"


def _require_cfgrib(url: str) -> None:
    """Raise :class:`MissingDependencyError` when cfgrib (or the ecCodes library) is missing."""
    if importlib.util.find_spec("cfgrib") is None:
        raise MissingDependencyError(f"{url} is a GRIB file; {_GRIB_HINT}")
    try:
        importlib.import_module("cfgrib")
    except Exception as err:  # noqa: BLE001 - cfgrib raises RuntimeError without ecCodes
        raise MissingDependencyError(
            f"{url} is a GRIB file, and cfgrib cannot load the ecCodes library ({err}); "
            f"{_GRIB_HINT}"
        ) from err


#: GRIB keys that split a file into datasets cfgrib can build, most useful first (the keys
#: cfgrib's documentation filters by)
_GRIB_SPLIT_KEYS = ("typeOfLevel", "stepType", "dataType", "edition", "gridType",
                    "numberOfPoints")


def grib_open_kwargs(kwargs: Mapping[str, Any], path: str,
                     cache_dir: str | None) -> dict[str, Any]:
    """``kwargs`` for ``xr.open_dataset(path, engine="cfgrib")`` as arcoforge opens GRIB: the
    index file in ``cache_dir`` (never beside the source) and ``errors="raise"``, so that
    messages cfgrib cannot fit into one dataset stop the build instead of being skipped
    silently (cfgrib's default only logs them).  The user's own ``backend_kwargs`` (or the same
    keywords given directly, e.g. ``filter_by_keys``) win."""
    out = dict(kwargs)
    backend_kwargs = dict(out.get("backend_kwargs") or {})
    if "indexpath" not in out and "indexpath" not in backend_kwargs:
        backend_kwargs["indexpath"] = _grib_index_path(path, cache_dir)
    if "errors" not in out and "errors" not in backend_kwargs:
        backend_kwargs["errors"] = "raise"
    out["backend_kwargs"] = backend_kwargs
    return out


def _grib_filter(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    backend_kwargs = kwargs.get("backend_kwargs") or {}
    return dict(kwargs.get("filter_by_keys") or backend_kwargs.get("filter_by_keys") or {})


def _grib_key_values(path: str, kwargs: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The values each of :data:`_GRIB_SPLIT_KEYS` takes in ``path`` (within the recipe's
    ``filter_by_keys``), from cfgrib's index (cached by ``grib_open_kwargs``' index path)."""
    import cfgrib.dataset
    import cfgrib.messages

    options = {**(kwargs.get("backend_kwargs") or {}),
               **{k: v for k, v in kwargs.items() if k != "backend_kwargs"}}
    fbk = _grib_filter(kwargs)
    # the same stream and keys as cfgrib's own open, so its cached index is reused
    stream = cfgrib.messages.FileStream(path, errors=options.get("errors", "raise"))
    keys = cfgrib.dataset.compute_index_keys(options.get("time_dims", ("time", "step")),
                                             options.get("extra_coords", {}), fbk)
    index = cfgrib.dataset.open_fileindex(stream, options.get("indexpath", ""), keys,
                                          filter_by_keys=fbk)
    out: dict[str, list[Any]] = {}
    for key in _GRIB_SPLIT_KEYS:
        try:
            out[key] = list(index[key])
        except Exception:  # noqa: BLE001 - a key this index does not hold
            continue
    return out


def is_grib_build_error(err: BaseException) -> bool:
    """Whether ``err`` is cfgrib's ``DatasetBuildError`` (messages that do not fit together)."""
    return type(err).__name__ == "DatasetBuildError" and "cfgrib" in type(err).__module__


def grib_build_error(err: BaseException, path: str, url: str,
                     kwargs: Mapping[str, Any]) -> ConfigError:
    """The error for cfgrib's ``DatasetBuildError`` on ``path``: what it means, which keys vary
    in the file and the ``filter_by_keys`` that builds one dataset per value."""
    try:
        values = _grib_key_values(path, kwargs)
    except Exception:  # noqa: BLE001 - the explanation must not hide the error
        values = {}
    varying = {k: v for k, v in values.items() if len(v) > 1}
    given = _grib_filter(kwargs)
    head = (
        f"cannot open {url} as one dataset: cfgrib's DatasetBuildError ({err}). The file holds "
        "GRIB messages that do not share one set of coordinates (e.g. surface and pressure-"
        "level fields, or analyses and accumulations), so cfgrib cannot put them in one "
        "dataset"
    )
    if given:
        head += f", even with filter_by_keys={given!r}"
    if varying:
        key, vals = next(iter(varying.items()))
        listing = "; ".join(f"{k}: {', '.join(map(repr, v))}" for k, v in varying.items())
        example = {**given, key: vals[0]}
        return ConfigError(
            f"{head}. In this file these keys take several values: {listing}. Build one "
            f"dataset per value (one recipe each), filtering the messages with the pattern's "
            f"open_kwargs={{'backend_kwargs': {{'filter_by_keys': {example!r}}}}}, and so on "
            f"for {', '.join(repr(v) for v in vals[1:])}."
        )
    return ConfigError(
        f"{head}. Filter the messages with the pattern's open_kwargs={{'backend_kwargs': "
        "{'filter_by_keys': {...}}} (keys such as typeOfLevel, stepType, dataType, shortName), "
        "one recipe per kind of message; `grib_ls` lists the keys of each message."
    )


def _grib_index_path(path: str, cache_dir: str | None) -> str:
    """Where cfgrib keeps its ``.idx`` index for ``path``: in ``cache_dir`` (or a temporary
    folder), never beside the source, which may be read-only or shared."""
    folder = os.path.join(cache_dir or tempfile.gettempdir(), "arcoforge-grib-index")
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(path))[-64:]
    return os.path.join(folder, f"{digest}-{base}.{{short_hash}}.idx")


# -- format detection --------------------------------------------------------------------------


def _hdf5_superblock_offset(path: str) -> int | None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head[:3] == b"CDF" or head == b"GRIB":
        return None
    return _hdf5_superblock_at(path, size)


def require_hdf4(url: str) -> None:
    """Raise :class:`MissingDependencyError` when pyhdf (HDF4's reader) is missing."""
    if importlib.util.find_spec("pyhdf") is None:
        raise MissingDependencyError(
            f"{url} is an HDF4 file; reading HDF4 needs pyhdf: pip install 'arcoforge[hdf4]' "
            "(or convert the file first, e.g. with the HDF Group's h4toh5, and build from the "
            "HDF5 copy)"
        )


def xarray_engine(engine: str) -> Any:
    """What :func:`xarray.open_dataset` takes as ``engine`` for arcoforge's ``engine``: the
    HDF4 backend class for ``arcoforge_hdf4``, ``netcdf4`` for ``opendap`` (DAP2 through the
    netCDF-C library), otherwise ``engine`` itself."""
    if engine == HDF4_ENGINE:
        from arcoforge.forge.io.hdf4 import HDF4BackendEntrypoint

        return HDF4BackendEntrypoint
    if engine == "opendap":
        return "netcdf4"
    return engine


_DAP_SCHEMES = ("dap2", "dap4")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def _scheme(url: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return match.group(1).lower() if match else ""


def remote_engine(url: str, file_type: str = "auto") -> str | None:
    """``"opendap"`` or ``"zarr"`` when ``url`` is an input read where it is (never downloaded
    whole): ``file_type="opendap"`` or a ``dap2://``/``dap4://`` URL; ``file_type="zarr"``, a
    URL or path ending in ``.zarr``, or a local folder holding Zarr metadata.  None for files.
    """
    if file_type in REMOTE_ENGINES:
        return file_type
    if file_type != "auto":
        return None
    scheme = _scheme(url)
    if scheme in _DAP_SCHEMES:
        return "opendap"
    bare = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if bare.lower().endswith(".zarr"):
        return "zarr"
    local = bare[len("file://"):] if scheme == "file" else (bare if not scheme else None)
    if local and os.path.isdir(local) and any(
            os.path.exists(os.path.join(local, m)) for m in _ZARR_MARKERS):
        return "zarr"
    return None


def dap_source(url: str) -> tuple[str, str]:
    """``(xarray engine, URL)`` that opens the OPeNDAP endpoint ``url``: DAP2 (``http(s)://``
    or ``dap2://``, which means HTTPS) through the netCDF-C library (xarray's ``netcdf4``
    engine), DAP4 (``dap4://``) through pydap (``pip install 'arcoforge[opendap]'``)."""
    scheme = _scheme(url)
    if scheme == "dap4":
        if importlib.util.find_spec("pydap") is None:
            raise MissingDependencyError(
                f"{url} is a DAP4 endpoint; reading DAP4 needs pydap: pip install "
                "'arcoforge[opendap]' (or give the DAP2 URL, https://..., which the netCDF "
                "library reads)"
            )
        return "pydap", url
    if scheme == "dap2":
        return "netcdf4", "https://" + url[len("dap2://"):]
    return "netcdf4", url


def detect_engine(path: str, file_type: str = "auto", url: str | None = None) -> str:
    """The engine for ``path``: from ``file_type``, or from the file's first bytes
    (``arcoforge_hdf4`` for HDF4; :func:`xarray_engine` gives xarray's name for it)."""
    remote = remote_engine(path, file_type)
    if remote is not None:
        return remote  # read where it is: there are no first bytes to look at
    if file_type != "auto":
        try:
            return FILE_TYPE_ENGINE[file_type]
        except KeyError:
            raise ConfigError(
                f"unknown file_type {file_type!r}; use one of {sorted(FILE_TYPE_ENGINE)} or 'auto'"
            ) from None
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magic, engine in _MAGIC.items():
        if head.startswith(magic):
            return engine
    name = url or path
    if head.startswith(_HDF4_MAGIC):
        return HDF4_ENGINE
    if _hdf5_superblock_offset(path) is not None:  # HDF5 behind a user block
        return "netcdf4"
    if not head:
        raise TruncatedFileError(
            f"{name} is empty (0 bytes): the download or copy did not finish. Fetch it again: "
            f"{_REFETCH}."
        )
    if len(head) < 8 and any(m.startswith(head[:len(m)]) for m in (*_MAGIC, _HDF4_MAGIC)):
        raise TruncatedFileError(
            f"{name} is truncated: it has only {len(head)} bytes, the start of a format "
            f"signature ({head!r}). The file is cut short (an interrupted download or copy): "
            f"fetch it again: {_REFETCH}."
        )
    raise SourceReadError(
        f"{name} is not a NetCDF, HDF5 or GRIB file (it starts with {head[:8]!r}), nor HDF4; it "
        "may be an error page saved in its place, or another format. Check the URL (and "
        "credentials), or delete the cached copy so it is downloaded again."
    )



# -- NetCDF-4 user-defined types ---------------------------------------------------------------


def _user_type_error(url: str, name: str, kind: str, type_name: str | None) -> SourceReadError:
    label = f"{kind} type {type_name!r}" if type_name else f"{kind} type"
    if kind == "enum":
        why = ("its labels would be lost (Zarr has no enum type); convert it to its integer "
               "base type with CF flag_values/flag_meanings attributes, or")
    else:
        why = "Zarr cannot store it faithfully;"
    group, _, leaf = name.rpartition("/")
    fix = (f"transforms=[arcoforge.transforms.OnGroup({group!r}, [arcoforge.transforms."
           f"DropVariables([{leaf!r}])])] (a variable of group {group!r})" if group else
           f"open_kwargs={{'drop_variables': [{name!r}]}}")
    return SourceReadError(
        f"variable {name!r} in {url} has the NetCDF-4 {label}: {why} drop it with {fix}."
    )


def _check_netcdf4_type(var: Any, name: str, url: str) -> None:
    import netCDF4

    dt = var.datatype
    if isinstance(dt, netCDF4.CompoundType):
        raise _user_type_error(url, name, "compound", dt.name)
    if isinstance(dt, netCDF4.EnumType):
        raise _user_type_error(url, name, "enum", dt.name)
    if isinstance(dt, netCDF4.VLType):
        raise _user_type_error(url, name, "variable-length (vlen)", dt.name)


def _check_xarray_type(var: xr.Variable, name: str, url: str) -> None:
    declared = var.encoding.get("dtype")
    for dt in (var.dtype, declared):
        if not isinstance(dt, np.dtype):
            continue
        meta: Mapping[str, Any] = dt.metadata or {}
        if "enum" in meta:
            raise _user_type_error(url, name, "enum", meta.get("enum_name"))
        if dt.kind == "V":
            raise _user_type_error(url, name, "compound", None)
        vlen = meta.get("vlen")
        if vlen is not None and vlen not in (str, bytes):
            raise _user_type_error(url, name, "variable-length (vlen)", None)


