"""Is a fetched source complete?  :func:`check_complete` compares a file's size with what its own
header declares (NetCDF3: header, fixed variables and ``numrecs`` records; HDF5/NetCDF4: the
superblock's end-of-file address), so a cut-off download or copy is a named error before any of
its values are read (a short NetCDF3 file would otherwise read as zeros).  Header bytes only.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from arcoforge.errors import (
    TruncatedFileError,
)

__all__ = ["check_complete"]

_HDF4_MAGIC = b"\x0e\x03\x13\x01"

# -- is the file complete? ---------------------------------------------------------------------

#: bytes per value of each NetCDF3 external type (NC_BYTE ... NC_UINT64)
_NC3_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_NC3_DIMENSION, _NC3_VARIABLE, _NC3_ATTRIBUTE = 0x0A, 0x0B, 0x0C
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class _ShortHeader(Exception):
    """The header asks for bytes past the end of the file."""


class _Header:
    """Big-endian reads of a NetCDF3 header, buffered; values are skipped, not read."""

    def __init__(self, fh: Any, size: int, wide: bool) -> None:
        self._fh = fh
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self.pos = 0
        self.size = size
        self._count = ">Q" if wide else ">I"  # counts, dimension lengths, vsize (CDF-5: 64 bit)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise _ShortHeader
        if end > self._start + len(self._buf):
            self._fh.seek(self.pos)
            self._buf = self._fh.read(max(1 << 16, n))
            self._start = self.pos
            if len(self._buf) < n:
                raise _ShortHeader
        off = self.pos - self._start
        self.pos = end
        return self._buf[off:off + n]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _ShortHeader
        self.pos += n

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def count(self) -> int:
        return int(struct.unpack(self._count, self.take(struct.calcsize(self._count)))[0])

    def items(self, min_bytes: int) -> int:
        """A list length, refused at once when the file cannot hold that many items."""
        n = self.count()
        if n * min_bytes > self.size - self.pos:
            raise _ShortHeader
        return n

    def name(self) -> str:
        n = self.items(1)
        raw = self.take(n)
        self.skip(-n % 4)
        return raw.decode("utf-8", "replace")

    def skip_attributes(self) -> None:
        tag, n = self.u32(), self.count()
        if tag == 0 and n == 0:
            return
        if tag != _NC3_ATTRIBUTE:
            raise ValueError(f"bad attribute list tag {tag:#x}")
        for _ in range(n):
            self.name()
            xsz = _NC3_TYPE_SIZE.get(self.u32())
            if xsz is None:
                raise ValueError("unknown attribute type")
            nbytes = self.items(xsz) * xsz
            self.skip(nbytes + (-nbytes % 4))


def _round4(n: int) -> int:
    return n + (-n % 4)


def _netcdf3_expected_size(fh: Any, size: int, version: int) -> tuple[int, int] | None:
    """(bytes the header says the file holds, the fewest bytes that still hold every value) of
    a NetCDF3 file, or None when its header cannot be understood (not a truncation)."""
    h = _Header(fh, size, wide=version == 5)
    h.take(4)
    numrecs = h.u64() if version == 5 else h.u32()
    streaming = numrecs == (0xFFFFFFFFFFFFFFFF if version == 5 else 0xFFFFFFFF)
    tag, ndims = h.u32(), h.count()
    dims: list[int] = []
    if not (tag == 0 and ndims == 0):
        if tag != _NC3_DIMENSION:
            return None
        if ndims * 8 > size - h.pos:
            raise _ShortHeader
        for _ in range(ndims):
            h.name()
            dims.append(h.count())
    try:
        h.skip_attributes()
    except ValueError:
        return None
    tag, nvars = h.u32(), h.count()
    if tag == 0 and nvars == 0:
        return h.pos, h.pos
    if tag != _NC3_VARIABLE:
        return None
    if nvars * 16 > size - h.pos:
        raise _ShortHeader
    fixed: list[tuple[int, int]] = []  # (begin, unpadded bytes)
    records: list[tuple[int, int]] = []
    for _ in range(nvars):
        h.name()
        dimids = [h.count() for _ in range(h.items(4))]
        try:
            h.skip_attributes()
        except ValueError:
            return None
        xsz = _NC3_TYPE_SIZE.get(h.u32())
        h.count()  # vsize: redundant, and clipped for variables over 4 GiB; computed below
        begin = h.u32() if version == 1 else h.u64()
        if xsz is None or any(d >= len(dims) for d in dimids):
            return None
        is_record = bool(dimids) and dims[dimids[0]] == 0
        nbytes = xsz
        for d in dimids[1:] if is_record else dimids:
            nbytes *= dims[d]
        (records if is_record else fixed).append((begin, nbytes))
    header_end = h.pos
    strict = lenient = header_end
    for begin, nbytes in fixed:
        strict = max(strict, begin + _round4(nbytes))
        lenient = max(lenient, begin + nbytes)
    if records and not streaming and numrecs > 0:
        # one record variable alone is not padded, not even after the last record (the
        # NetCDF3 spec; netCDF-C writes it so); several are, each to 4 bytes
        single = len(records) == 1
        recsize = records[0][1] if single else sum(_round4(n) for _, n in records)
        last_begin, last_bytes = max(records)
        strict = max(strict, last_begin + (numrecs - 1) * recsize
                     + (last_bytes if single else _round4(last_bytes)))
        lenient = max(lenient, last_begin + (numrecs - 1) * recsize + last_bytes)
    return strict, lenient


def _hdf5_superblock_at(path: str, size: int) -> int | None:
    """Where the HDF5 superblock starts (0, or 512, 1024, ... after a user block), or None."""
    offset = 0
    with open(path, "rb") as fh:
        while offset + 8 <= size:
            fh.seek(offset)
            if fh.read(8) == _HDF5_SIGNATURE:
                return offset
            offset = 512 if offset == 0 else offset * 2
    return None


def _hdf5_expected_size(fh: Any, offset: int, size: int) -> int | None:
    """The size an HDF5 file's superblock records (its end-of-file address, base included), or
    None when the superblock is a version this check does not know or the address is unset.
    Raises _ShortHeader when the file ends inside the superblock."""
    fh.seek(offset)
    head = fh.read(96)
    if len(head) < 12:
        raise _ShortHeader
    version = head[8]
    if version in (0, 1):
        width, start = head[13], 24 + (4 if version == 1 else 0)
        fields = 4  # base, free-space info, end of file, driver info
        eof_field = 2
    elif version in (2, 3):
        width, start = head[9], 12
        fields = 4  # base, superblock extension, end of file, root object header
        eof_field = 2
    else:
        return None
    if width not in (2, 4, 8):
        return None
    if len(head) < start + fields * width:
        raise _ShortHeader
    values = [int.from_bytes(head[start + i * width:start + (i + 1) * width], "little")
              for i in range(fields)]
    eof = values[eof_field]
    if eof == (1 << (8 * width)) - 1:
        return None
    # The field holds the end of the file's address space *plus* the base address (the HDF5
    # library writes ``relative eof + base``, and refuses to open a file shorter than it):
    # with a user block the base address is the superblock's offset, already counted in it.
    return eof


def _truncated(url: str, expected: int, actual: int, where: str) -> TruncatedFileError:
    return TruncatedFileError(
        f"{url} is truncated: {where} it should hold {expected:,} bytes, but it has only "
        f"{actual:,} ({expected - actual:,} missing). The file is cut short (an interrupted "
        "download or copy): fetch it again (delete the cached or local copy and rerun)."
    )


def check_complete(path: str, url: str | None = None) -> None:
    """Raise :class:`TruncatedFileError` when ``path`` is shorter than its own header says.

    Cheap: it reads only header bytes.  NetCDF3 (classic, 64-bit offset, CDF-5): the size is
    computed from the header's dimensions and variables (the end of the last fixed-size
    variable; ``begin`` of the record variables + ``numrecs`` records).  HDF5 and NetCDF4: the
    superblock's end-of-file address (which, as the HDF5 library writes it, already includes the
    base address), with the superblock found at 0 or after a user block (512, 1024, 2048, ...
    bytes), superblock versions 0 to 3.  Other formats, and headers this check
    cannot understand, pass: opening the file reports those.  Inputs that are not files (a Zarr
    store's folder, an OPeNDAP or Zarr URL read where it is) have no size to check and pass.
    """
    name = url or path
    if os.path.isdir(path) or ("://" in path and not os.path.exists(path)):
        return
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
        try:
            if magic[:3] == b"CDF" and len(magic) == 4 and magic[3] in (1, 2, 5):
                fh.seek(0)
                sizes = _netcdf3_expected_size(fh, size, magic[3])
                if sizes is not None and size < sizes[1]:
                    raise _truncated(name, sizes[0], size, "its NetCDF3 header says")
                return
            if magic in (b"GRIB", _HDF4_MAGIC):
                return
            offset = _hdf5_superblock_at(path, size)
            if offset is None:
                return
            expected = _hdf5_expected_size(fh, offset, size)
        except _ShortHeader:
            raise TruncatedFileError(
                f"{name} is truncated: the file ends inside its own header (it has only "
                f"{size:,} bytes). The file is cut short (an interrupted download or copy): "
                "fetch it again (delete the cached or local copy and rerun)."
            ) from None
    if expected is not None and size < expected:
        raise _truncated(name, expected, size, "its HDF5 superblock says")


