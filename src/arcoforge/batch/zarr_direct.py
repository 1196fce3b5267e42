"""Read boxes of a Zarr array by decoding whole chunks on a shared thread pool.

:class:`ZarrBoxReader` fetches each stored chunk that a box touches with the store's
synchronous API and decodes it with zarr's synchronous codec chain (``ChunkTransform``) on a
process-wide pool of threads: the codecs release the GIL, so several chunks decode on
several cores while the caller's own threads (the prefetcher) read ahead. No event-loop round
trip and no coroutine per chunk. When a whole chunk lands in a contiguous part of the output
and the codec chain is plain (native-endian ``bytes`` plus at most one zstd/blosc/gzip
compressor), the compressor decompresses straight into the output: no intermediate tile and
no second copy. Arrays this cannot handle (sharded, irregular chunk grids,
stores without synchronous IO) make :func:`box_reader` return None, and callers fall back to
``zarr.Array.get_basic_selection``.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["ZarrBoxReader", "box_reader", "decode_pool"]

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process-wide chunk-decoding pool (rebuilt after a fork; never shut down)."""
    global _POOL
    pid = os.getpid()
    pool = _POOL
    if pool is not None and pool[0] == pid:
        return pool[1]
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid:
            n = max(2, min(8, os.cpu_count() or 2))
            _POOL = (pid, ThreadPoolExecutor(max_workers=n,
                                             thread_name_prefix="arcoforge-decode"))
        return _POOL[1]


RawDecoder = Callable[[np.ndarray, np.ndarray], Any]


def raw_decoder(codecs: tuple[Any, ...], dtype: np.dtype) -> RawDecoder | None:
    """``decode(encoded_uint8, out_uint8)`` writing a chunk's C-order bytes into ``out``.

    Only for zarr v3 chains of a native-endian ``BytesCodec`` and at most one zstd, blosc or
    gzip codec (their numcodecs implementations decompress into ``out``); else None.
    """
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    if not codecs or type(codecs[0]) is not BytesCodec or len(codecs) > 2:
        return None
    endian = codecs[0].endian
    if dtype.itemsize > 1 and endian is not None and str(getattr(endian, "value", endian)) \
            != sys.byteorder:
        return None
    if dtype.hasobject or not dtype.isnative:
        return None
    if len(codecs) == 1:
        def copy(buf: np.ndarray, out: np.ndarray) -> None:
            if buf.size != out.size:
                raise ValueError("chunk size mismatch")
            np.copyto(out, buf)
        return copy
    bb = codecs[1]
    if type(bb) is ZstdCodec:
        codec = bb._zstd_codec
    elif type(bb) is BloscCodec:
        codec = bb._blosc_codec
    elif type(bb) is GzipCodec:
        codec = bb._gzip_codec
    else:
        return None
    return codec.decode


class ZarrBoxReader:
    """Decodes the chunks of one (unsharded, regularly chunked) zarr array (module docstring)."""

    def __init__(self, za: Any) -> None:
        from zarr.abc.store import _store_supports_sync_io
        from zarr.core.array_spec import ArraySpec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.chunk_utils import ChunkTransform

        meta = za.metadata
        codecs = getattr(meta, "codecs", None)
        if codecs is None:  # zarr v2: filters + compressor in one codec
            from zarr.codecs._v2 import V2Codec

            codecs = (V2Codec(filters=meta.filters, compressor=meta.compressor),)
        if any(type(c).__name__ == "ShardingCodec" for c in codecs):
            raise TypeError("sharded arrays are read through zarr")
        store = za.store_path.store
        if not _store_supports_sync_io(store):
            raise TypeError("store has no synchronous IO")
        self.transform = ChunkTransform(codecs=tuple(codecs))
        try:
            self.raw_decode = raw_decoder(tuple(codecs), np.dtype(za.dtype)) \
                if getattr(meta, "zarr_format", 3) == 3 else None
        except Exception:  # another zarr version: decode through the chain
            self.raw_decode = None
        self.store = store
        self.path = za.store_path.path
        self.encode = meta.encode_chunk_key
        self.shape = tuple(int(s) for s in za.shape)
        self.chunks = tuple(int(c) for c in za.chunks)
        self.dtype = np.dtype(za.dtype)
        self.fill_value = za.fill_value
        self.proto = default_buffer_prototype()
        zdtype = getattr(meta, "data_type", None) or meta.dtype
        self.spec = ArraySpec(shape=self.chunks, dtype=zdtype, fill_value=meta.fill_value,
                              config=za.config, prototype=self.proto)

    def _key(self, coords: tuple[int, ...]) -> str:
        key = self.encode(coords)
        return f"{self.path}/{key}" if self.path else key

    def _one(self, coords: tuple[int, ...], csel: tuple[slice, ...], osel: tuple[slice, ...],
             out: np.ndarray) -> None:
        buf = self.store.get_sync(self._key(coords), prototype=self.proto)
        if buf is None:  # absent chunk: all fill value (zarr semantics)
            out[osel] = self.fill_value
            return
        if self.raw_decode is not None:
            dest = out[osel]
            if dest.flags.c_contiguous and dest.dtype == self.dtype and all(
                    s.start == 0 and s.stop == c for s, c in zip(csel, self.chunks, strict=True)):
                raw = buf.as_numpy_array()
                self.raw_decode(raw.view(np.uint8).reshape(-1), dest.reshape(-1).view(np.uint8))
                return
        tile = self.transform.decode_chunk(buf, self.spec).as_numpy_array()
        out[osel] = tile.reshape(self.chunks)[csel]

    def read_into(self, sel: tuple[slice, ...], out: np.ndarray) -> None:
        """Write ``array[sel]`` (unit-step slices within bounds) into ``out``."""
        ranges = []
        for s, n, c in zip(sel, self.shape, self.chunks, strict=True):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ValueError("only unit-step slices")
            if stop <= start:
                return
            ranges.append((start, stop, range(start // c, (stop - 1) // c + 1), c))
        tasks = []
        for coords in itertools.product(*[r[2] for r in ranges]):
            csel, osel = [], []
            for k, (start, stop, _, c) in zip(coords, ranges, strict=True):
                lo, hi = max(start, k * c), min(stop, (k + 1) * c)
                csel.append(slice(lo - k * c, hi - k * c))
                osel.append(slice(lo - start, hi - start))
            tasks.append((tuple(coords), tuple(csel), tuple(osel)))
        if len(tasks) == 1:
            self._one(*tasks[0], out)
            return
        futures = [decode_pool().submit(self._one, *t, out) for t in tasks]
        for f in futures:
            f.result()


def box_reader(za: Any) -> ZarrBoxReader | None:
    """A :class:`ZarrBoxReader` for ``za``, or None if it needs zarr's general path."""
    try:
        return ZarrBoxReader(za)
    except Exception:  # unsupported layout / codec / store, or another zarr version
        return None
