"""The chunk-manifest reader (``forge/io/manifest.py``) against the netCDF4 library.

* On every HDF5/NetCDF-4 file of ``shared/data`` (every group, every variable, several slices,
  both engines) :class:`ManifestFile` gives what :class:`RawFile` gives: same dtype, shape and
  values.  Reads it cannot answer (contiguous variables, filters it does not decode, variables
  shorter than their unlimited dimension, chunks HDF5 would leave unwritten) go to a RawFile,
  and equal it too.
* Never-written chunks read as the fill value; Fletcher-32, shuffle and deflate are undone in
  the order HDF5 applied them; big-endian data keeps its dtype; a corrupt chunk or a file cut
  after it was opened raise the errors a RawFile raises, naming the file and the variable.
* Baked stores are byte-identical with and without the fast path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest

import arcoforge as af
from arcoforge.errors import SourceReadError, TruncatedFileError
from arcoforge.forge.io.manifest import (
    MANIFEST_READS_ENV,
    ManifestFile,
    manifest_reads_enabled,
    open_reader,
)
from arcoforge.forge.io.readers import RawFile
from arcoforge.testing.samples import dated_copies
from tests.servers import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir()
ENGINES = ("netcdf4", "h5netcdf")


def _hdf5_files() -> list[str]:
    if not SHARED.is_dir():
        return []
    out = []
    for path in sorted(SHARED.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                    out.append(path.relative_to(SHARED).as_posix())
    return out


HDF5_FILES = _hdf5_files()


def _groups(path: str) -> list[str | None]:
    with netCDF4.Dataset(path) as nc:
        out: list[str | None] = [None]
        todo = list(nc.groups.values())
        while todo:
            g = todo.pop(0)
            out.append(g.path.lstrip("/"))
            todo.extend(g.groups.values())
    return out


def _keys(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The whole variable (open and explicit), a middle block, one index per dimension and an
    empty slice."""
    return [
        (),
        tuple(slice(0, n) for n in shape),
        tuple(slice(n // 3, n - n // 4) for n in shape),
        tuple(slice(n // 2, n // 2 + 1) if n else slice(0, 0) for n in shape),
        tuple(slice(n, n) for n in shape),
    ]


def compare_readers(path: str, engine: str, group: str | None) -> dict[str, Any]:
    """Read every variable of ``path`` (in ``group``) with both readers; the reads compared,
    those the manifest answered itself, and the mismatches (which must be none)."""
    kwargs = {"group": group} if group else {}
    try:
        raw = RawFile(path, engine, kwargs)
    except SourceReadError as err:
        return {"unreadable": str(err)}
    fast = ManifestFile(path, engine, kwargs)
    reads = answered = refused = 0
    mismatches: list[str] = []
    try:
        names = list(raw._nc.variables) if raw._nc is not None else list(raw._ds.variables)
        for name in names:
            var = raw._nc.variables[name] if raw._nc is not None else raw._ds.variables[name]
            keys = _keys(tuple(var.shape))
            for key in keys if engine == "netcdf4" else keys[1:3]:  # h5netcdf: fewer
                try:
                    want = raw.read(name, key)
                except SourceReadError as err:  # e.g. a compound type: refused by both
                    if "Filter error" in str(err):  # plugins gone (TensorFlow loaded): retry
                        return {"unreadable": f"filter: {err}"}  # in a fresh interpreter

                    refused += 1
                    with pytest.raises(SourceReadError):
                        fast.read(name, key)
                    continue
                before = fast.fallbacks
                got = fast.read(name, key)
                reads += 1
                answered += fast.fallbacks == before
                same = (got.dtype == want.dtype and got.shape == want.shape
                        and np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"))
                if not same:
                    mismatches.append(f"{name}{key}: {got.dtype}{got.shape} vs "
                                      f"{want.dtype}{want.shape}")
    finally:
        raw.close()
        fast.close()
    return {"reads": reads, "answered": answered, "refused": refused,
            "mismatches": mismatches}


def _compare_in_fresh_interpreter(path: str, engine: str, group: str | None) -> dict[str, Any]:
    """:func:`compare_readers` where HDF5 filter plugins still register (once TensorFlow is
    loaded into a process, as in the test session, they no longer do)."""
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    code = ("import json, sys; from tests.test_manifest import compare_readers; "
            "print(json.dumps(compare_readers(sys.argv[1], sys.argv[2], sys.argv[3] or None)))")
    proc = subprocess.run([sys.executable, "-c", code, path, engine, group or ""], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.filterwarnings("ignore:The 'phony_dims' kwarg")
@pytest.mark.parametrize("rel", HDF5_FILES or ["(no shared data)"])
def test_same_values_as_rawfile_on_every_shared_file(rel: str) -> None:
    if not HDF5_FILES:
        pytest.skip(f"shared test data not found at {SHARED} (set ARCOFORGE_SHARED_DATA)")
    path = str(SHARED / rel)
    for engine in ENGINES:
        reads = 0
        for group in _groups(path):
            result = compare_readers(path, engine, group)
            if "unreadable" in result and "filter" in result["unreadable"]:
                result = _compare_in_fresh_interpreter(path, engine, group)
            assert "unreadable" not in result, result
            assert result["mismatches"] == [], (rel, group, engine, result["mismatches"])
            reads += result["reads"] + result["refused"]
        assert reads > 0, (rel, engine)


def _answered(path: str, name: str, key: tuple[slice, ...] = (), engine: str = "netcdf4",
              **kwargs: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(ManifestFile's values, RawFile's values, whether the manifest answered itself)."""
    fast = ManifestFile(path, engine, kwargs)
    raw = RawFile(path, engine, kwargs)
    try:
        got = fast.read(name, key)
        return got, raw.read(name, key), fast.fallbacks == 0
    finally:
        fast.close()
        raw.close()


def test_what_the_manifest_answers_and_what_it_hands_on(shared_data: Path) -> None:
    oisst = str(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc")
    got, want, answered = _answered(oisst, "sst", (slice(0, 1), slice(0, 1), slice(100, 300),
                                                   slice(0, 1440)))
    assert answered and got.dtype == want.dtype == np.int16
    np.testing.assert_array_equal(got, want)
    # contiguous variables (ERSST stores everything contiguous)
    ersst = str(shared_data / "ersst-v5" / "ersst.v5.201901.nc")
    got, want, answered = _answered(ersst, "sst", (slice(0, 1), slice(0, 1), slice(0, 89),
                                                   slice(0, 180)))
    assert not answered
    np.testing.assert_array_equal(got, want)
    # GODAS' `date` is stored empty, its unlimited dimension has 12 steps: fill values
    godas = str(shared_data / "godas-ssh" / "sshg.2019.nc")
    got, want, answered = _answered(godas, "date", (slice(0, 12),))
    assert not answered and got.shape == (12,)
    np.testing.assert_array_equal(got, want)
    # the whole of an unlimited variable: its length is the dimension's, which HDF5 cannot tell
    got, want, answered = _answered(godas, "sshg")
    assert not answered
    np.testing.assert_array_equal(got, want)
    # several chunks, edge chunks, one element
    models = str(shared_data / "models" /
                 "tasmax_day_CanESM2_rcp85_r1i1p1_na10kgrid_qm-moving-50bins-detrend_2095.nc")
    for key in [(slice(170, 365), slice(0, 3), slice(5, 36), slice(17, 19)),
                (slice(364, 365), slice(2, 3), slice(35, 36), slice(0, 1))]:
        got, want, answered = _answered(models, "time_vectors", key)
        assert answered
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:The 'phony_dims' kwarg")
def test_unsupported_filter_is_read_by_the_library(shared_data: Path) -> None:
    """lz4 (HDF5's framing is not numcodecs') and bitshuffle: read by the library instead."""
    for name in ("hdf5_compression_lz4.h5", "hdf5_compression_bitshuffle.h5"):
        path = str(shared_data / "hdf5-filters" / name)
        fast = ManifestFile(path, "h5netcdf")
        try:
            assert fast._manifest("data") is None  # handed on, never decoded here
        finally:
            fast.close()
        result = compare_readers(path, "h5netcdf", None)
        if "unreadable" in result:
            result = _compare_in_fresh_interpreter(path, "h5netcdf", None)
        assert result["mismatches"] == [] and result["reads"] > 0
        assert result["answered"] == 0


def _partly_written(path: Path, fill: bool) -> None:
    """A chunked variable with only some chunks written (with or without HDF5 fill values)."""
    with netCDF4.Dataset(path, "w") as nc:
        if not fill:
            nc.set_fill_off()
        nc.createDimension("time", None)
        nc.createDimension("x", 40)
        v = nc.createVariable("v", "i2", ("time", "x"), chunksizes=(2, 10), zlib=True,
                              shuffle=True, fill_value=-999 if fill else None)
        d = nc.createVariable("d", "f8", ("time", "x"), chunksizes=(3, 7), zlib=True)
        v[0:2, 0:10] = np.arange(20, dtype="i2").reshape(2, 10)
        v[4:6, 30:40] = 7
        d[0:1, 0:40] = np.linspace(0, 1, 40)
        d[5, 3] = 2.5


def test_never_written_chunks_read_as_the_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "partly.nc"
    _partly_written(path, fill=True)
    with h5py.File(path) as h5:
        assert h5["v"].id.get_num_chunks() == 2  # the others were never written
    for name in ("v", "d"):
        for key in [(slice(0, 6), slice(0, 40)), (slice(1, 5), slice(5, 35)),
                    (slice(2, 4), slice(10, 30))]:
            got, want, answered = _answered(str(path), name, key)
            assert answered, (name, key)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    got, _, _ = _answered(str(path), "v", (slice(2, 4), slice(10, 30)))
    assert (got == -999).all()
    got, _, _ = _answered(str(path), "d", (slice(1, 2), slice(0, 40)))
    assert (got == netCDF4.default_fillvals["f8"]).all()


def test_without_hdf5_fill_values_the_library_decides(tmp_path: Path) -> None:
    """NOFILL: HDF5 never writes fill values, so unallocated chunks are left to the library;
    written chunks are still read from the manifest."""
    path = tmp_path / "nofill.nc"
    _partly_written(path, fill=False)
    key = (slice(0, 6), slice(0, 40))
    got, want, answered = _answered(str(path), "v", key)
    assert not answered
    np.testing.assert_array_equal(got, want)
    got, want, answered = _answered(str(path), "v", (slice(0, 2), slice(0, 10)))
    assert answered
    np.testing.assert_array_equal(got, want)


def _checksummed(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", 10)
        nc.createDimension("y", 30)
        nc.createVariable("big", ">f4", ("t", "y"), endian="big", zlib=True, chunksizes=(4, 7),
                          fletcher32=True)[:] = np.arange(300, dtype="f4").reshape(10, 30) / 7
        nc.createVariable("plain", "i4", ("t", "y"), chunksizes=(4, 7),
                          fletcher32=True)[:] = np.arange(300, dtype="i4").reshape(10, 30)


def test_fletcher32_shuffle_deflate_and_byte_order(tmp_path: Path) -> None:
    path = tmp_path / "checksummed.nc"
    _checksummed(path)
    for engine in ENGINES:
        for name in ("big", "plain"):
            for key in [(slice(0, 10), slice(0, 30)), (slice(3, 9), slice(6, 22))]:
                got, want, answered = _answered(str(path), name, key, engine)
                assert answered and got.dtype == want.dtype, (engine, name)
                np.testing.assert_array_equal(got, want)
    got, _, _ = _answered(str(path), "big", (slice(0, 1), slice(0, 2)))
    assert got.dtype == np.dtype(">f4")  # what netCDF4 gives for a big-endian variable


def _chunk_of(path: Path, name: str) -> tuple[int, int]:
    with h5py.File(path) as h5:
        info = h5[name].id.get_chunk_info(0)
        return int(info.byte_offset), int(info.size)


def test_corrupt_chunk_names_file_and_variable(tmp_path: Path) -> None:
    path = tmp_path / "checksummed.nc"
    _checksummed(path)
    for name in ("plain", "big"):  # checksum mismatch; deflate stream broken
        offset, size = _chunk_of(path, name)
        with open(path, "r+b") as fh:
            fh.seek(offset + size // 2)
            fh.write(b"\x55\xaa\x55")
        fast = ManifestFile(str(path), "netcdf4", url="https://example.org/checksummed.nc")
        try:
            with pytest.raises(SourceReadError) as info:
                fast.read(name, (slice(0, 4), slice(0, 7)))
        finally:
            fast.close()
        text = str(info.value)
        assert not isinstance(info.value, TruncatedFileError)
        assert f"cannot read variable {name!r} from https://example.org/checksummed.nc" in text
        assert "not cut short" in text and "may be corrupt" in text
        assert "download it again" in text
        with pytest.raises(SourceReadError):  # the library refuses it too
            RawFile(str(path), "netcdf4").read(name, (slice(0, 4), slice(0, 7)))


def test_file_cut_after_opening_says_cut_short(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "godas-ssh" / "sshg.2019.nc"
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    full = path.stat().st_size
    fast = ManifestFile(str(path), "netcdf4", url="https://example.org/sshg.2019.nc")
    try:
        os.truncate(path, 1_000_000)
        with pytest.raises(TruncatedFileError) as info:
            fast.read("sshg", (slice(11, 12), slice(0, 418), slice(0, 360)))
    finally:
        fast.close()
    text = str(info.value)
    assert "https://example.org/sshg.2019.nc" in text and str(full) in text.replace(",", "")
    with pytest.raises(TruncatedFileError):  # what a RawFile says from the start
        ManifestFile(str(path), "netcdf4").read("sshg", ())


def test_many_chunks_listed_once(tmp_path: Path) -> None:
    """Past a few chunks the index is listed once (chunk_iter) rather than looked up."""
    path = tmp_path / "many.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for dim in "tyx":
            nc.createDimension(dim, 30)
        v = nc.createVariable("v", "f4", ("t", "y", "x"), chunksizes=(3, 3, 3), zlib=True)
        v[:] = np.random.default_rng(0).random((30, 30, 30), dtype="f4")
        v[:, 3:6, 3:6] = np.ma.masked  # written as fill values, still allocated
    fast = ManifestFile(str(path), "netcdf4")
    raw = RawFile(str(path), "netcdf4")
    try:
        for key in [(slice(0, 30),) * 3, (slice(4, 5), slice(2, 29), slice(0, 1))]:
            np.testing.assert_array_equal(fast.read("v", key), raw.read("v", key))
        assert fast.fallbacks == 0
        man = fast._vars["v"]
        assert man is not None and man.listed and len(man.index) == 1000
    finally:
        fast.close()
        raw.close()


def test_open_reader_chooses(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nc4 = str(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc")
    nc3 = str(shared_data / "oisst" / "oisst-v2-avhrr-only-19811231-2deg.nc")
    cases: list[tuple[str, str, dict[str, Any], type]] = [
        (nc4, "netcdf4", {}, ManifestFile),
        (nc4, "h5netcdf", {}, ManifestFile),
        (nc4, "netcdf4", {"group": None, "decode_times": False}, ManifestFile),
        (nc4, "netcdf4", {"drop_variables": ["ice"]}, RawFile),
        (nc3, "netcdf4", {}, RawFile),
    ]
    for path, engine, kwargs, kind in cases:
        reader = open_reader(path, engine, kwargs)
        try:
            assert type(reader) is kind, (path, engine, kwargs)
        finally:
            reader.close()
    monkeypatch.setenv(MANIFEST_READS_ENV, "0")
    assert not manifest_reads_enabled()
    reader = open_reader(nc4, "netcdf4")
    try:
        assert type(reader) is RawFile
    finally:
        reader.close()


def _store_bytes(store: Path) -> dict[str, bytes]:
    """Every file of a Zarr store but the root metadata (which records when it was built)."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.relative_to(store).as_posix() != "zarr.json"}


@pytest.mark.parametrize("case", ["oisst", "godas"])
def test_baked_stores_are_byte_identical(shared_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    if case == "oisst":  # one step per file, chunks of three files
        files = dated_copies(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc", 5,
                             tmp_path / "src")
        pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=1)
        chunks = {"time": 3}
    else:  # twelve steps per file, chunks that straddle files, a variable stored empty
        files = [str(shared_data / "godas-ssh" / f"sshg.{y}.nc") for y in (2019, 2020)]
        pattern = af.pattern_from_file_sequence(files, "time", nitems_per_file=12)
        chunks = {"time": 5}
    reader = open_reader(files[0], "netcdf4")
    try:
        assert isinstance(reader, ManifestFile)
    finally:
        reader.close()
    stores = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(MANIFEST_READS_ENV, mode)
        store = tmp_path / f"store-{mode}.zarr"
        af.bake(af.ZarrRecipe(pattern, target_chunks=chunks), str(store), progress=False,
                workers=2)
        stores[mode] = _store_bytes(store)
    assert stores["1"].keys() == stores["0"].keys()
    assert [k for k in stores["1"] if "/c/" in k]  # chunk files were compared
    different = [k for k in stores["1"] if stores["1"][k] != stores["0"][k]]
    assert different == []


def test_every_inflate_library_gives_zlibs_bytes(shared_data: Path) -> None:
    """zlib-ng or ISA-L when installed (extra ``fast-inflate``), else the standard library:
    the same values; the standard library's path runs in an interpreter without the others."""
    from arcoforge.forge.io import manifest

    path = shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc"
    offset, size = _chunk_of(path, "sst")
    with open(path, "rb") as fh:
        fh.seek(offset)
        stream = fh.read(size)
    assert manifest._inflate(stream, 15, 1) == zlib.decompress(stream)
    script = ("import sys; sys.modules['zlib_ng'] = None; sys.modules['isal'] = None\n"
              "import numpy as np\n"
              "from arcoforge.forge.io import manifest\n"
              "from arcoforge.forge.io.readers import RawFile\n"
              "assert manifest.INFLATE_LIBRARY == 'zlib', manifest.INFLATE_LIBRARY\n"
              "fast, raw = manifest.ManifestFile(sys.argv[1], 'netcdf4'), "
              "RawFile(sys.argv[1], 'netcdf4')\n"
              "key = (slice(0, 1), slice(0, 1), slice(0, 720), slice(0, 1440))\n"
              "assert np.array_equal(fast.read('sst', key), raw.read('sst', key))\n"
              "assert fast.fallbacks == 0\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


_PLUGIN_FILTERS = """
import sys
import h5py, hdf5plugin, numpy as np
from tests.test_manifest import compare_readers
path = sys.argv[1]
data = np.random.default_rng(1).normal(size=(20, 33, 17)).astype("f4").round(2)
filters = {
    "zstd": hdf5plugin.Zstd(clevel=5),
    "blosc_lz4_shuffle": hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "blosc_zstd_bitshuffle": hdf5plugin.Blosc(cname="zstd", clevel=3,
                                              shuffle=hdf5plugin.Blosc.BITSHUFFLE),
    "bzip2": hdf5plugin.BZip2(blocksize=9),
    "lz4": hdf5plugin.LZ4(),
}
with h5py.File(path, "w") as h5:
    for name, f in filters.items():
        h5.create_dataset(name, data=data, chunks=(7, 11, 17), **f)
    h5.create_dataset("shuffle_zstd", data=data, chunks=(7, 11, 17), shuffle=True,
                      **hdf5plugin.Zstd())
from arcoforge.forge.io.manifest import ManifestFile
fast = ManifestFile(path, "h5netcdf")
handled = {name: fast._manifest(name) is not None for name in [*filters, "shuffle_zstd"]}
fast.close()
print(json.dumps({"handled": handled, **compare_readers(path, "h5netcdf", None)}))
"""


def test_plugin_filters_decoded_without_the_plugins(tmp_path: Path) -> None:
    """zstd, blosc (with shuffle and bitshuffle inside) and bzip2 chunks, written through
    hdf5plugin, decode here to what h5py reads with the plugins; lz4 (HDF5's own framing) is
    read by the library.  In a fresh interpreter, where the plugins register."""
    pytest.importorskip("hdf5plugin")
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    proc = subprocess.run([sys.executable, "-c", "import json\n" + _PLUGIN_FILTERS,
                           str(tmp_path / "plugins.h5")], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["handled"] == {"zstd": True, "blosc_lz4_shuffle": True,
                                 "blosc_zstd_bitshuffle": True, "bzip2": True, "lz4": False,
                                 "shuffle_zstd": True}
    assert result["mismatches"] == [] and result["refused"] == 0
    assert result["answered"] > 0 and result["reads"] > result["answered"]


def test_decoding_does_not_take_the_hdf5_lock(shared_data: Path) -> None:
    """Once a chunk's place is known, reading and decoding it needs no lock: a read in another
    thread finishes while this one holds HDF5's lock (a RawFile's read would wait for it)."""
    from arcoforge.forge.io.formats import _OPEN_LOCK

    path = str(shared_data / "oisst" / "oisst-avhrr-v02r01.20220913.nc")
    key = (slice(0, 1), slice(0, 1), slice(0, 720), slice(0, 1440))
    fast = ManifestFile(path, "netcdf4")
    try:
        want = fast.read("sst", key)  # looks the chunk up (under the lock)
        got: list[np.ndarray] = []
        with _OPEN_LOCK:
            worker = threading.Thread(target=lambda: got.append(fast.read("sst", key)))
            worker.start()
            worker.join(timeout=60)
            assert not worker.is_alive(), "the read waited for HDF5's lock"
        assert fast.fallbacks == 0
        np.testing.assert_array_equal(got[0], want)
    finally:
        fast.close()
