"""A copy-on-write overlay: an image = read-only base bytes + a few replaced byte ranges in memory.

Configuring an image writes through an `Overlay`, so the (cached) base file is opened read-only
and never changes; the result can be streamed (`reader`), hashed (`sha256`), written out as a
new raw file (`write_to`), applied to an image edited in place (`apply_in_place`) or handed to
the writer helper as `extents()` (which flasher.writer sends as ranges plus a memfd of bytes).

Extents are kept sorted, non-overlapping and coalesced (touching writes merge), and aligned to
`granularity` (512-byte sectors by default, clipped at the end of the image), so a block device
writer can issue them directly.

Imports only the standard library and flasher.image.byteio.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flasher.image.byteio import FileReader, FileReadWriter, ReadAt, atomic_file, pwrite_all

SECTOR_BYTES = 512
CHUNK_BYTES = 4 * 1024 * 1024
_ZERO_CHUNK = bytes(CHUNK_BYTES)


class Overlay:
    """A WriteAt over `base` whose writes stay in memory; `base` is only ever read."""

    def __init__(self, base: ReadAt, *, granularity: int = SECTOR_BYTES) -> None:
        if granularity <= 0:
            raise ValueError("granularity must be positive")
        self.base = base
        self.granularity = granularity
        self._starts: list[int] = []
        self._datas: list[bytearray] = []

    @property
    def size(self) -> int:
        return self.base.size

    def pwrite(self, data: bytes, offset: int) -> None:
        if not data:
            return
        end = offset + len(data)
        if offset < 0 or end > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} exceeds size {self.size}")
        g = self.granularity
        lo = offset // g * g
        hi = min(-(-end // g) * g, self.size)
        # Extents that overlap or touch [lo, hi) are absorbed into one.
        i = bisect.bisect_left(self._starts, lo)
        if i > 0 and self._starts[i - 1] + len(self._datas[i - 1]) >= lo:
            i -= 1
        j = i
        while j < len(self._starts) and self._starts[j] <= hi:
            j += 1
        if j > i:
            hi = max(hi, self._starts[j - 1] + len(self._datas[j - 1]))
        if j > i and self._starts[i] <= lo:
            # Grow the first extent in place, so a run of appending writes (a file written
            # cluster by cluster) costs linear time, not quadratic.
            lo = self._starts[i]
            merged = self._datas[i]
            tail = lo + len(merged)
            if hi > tail:
                merged += self.pread(hi - tail, tail)
        else:
            merged = bytearray(self.pread(hi - lo, lo))
        merged[offset - lo : end - lo] = data
        self._starts[i:j] = [lo]
        self._datas[i:j] = [merged]

    def pread(self, length: int, offset: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        buf = bytearray(self.base.pread(length, offset))
        if len(buf) < length:
            buf.extend(bytes(length - len(buf)))
        self._patch(buf, offset)
        return bytes(buf)

    def _patch(self, buf: bytearray | memoryview, offset: int) -> None:
        """Copy the overlay's bytes over `buf`, which holds the base bytes at `offset`."""
        end = offset + len(buf)
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or self._starts[i] + len(self._datas[i]) <= offset:
            i += 1
        while i < len(self._starts) and self._starts[i] < end:
            start, data = self._starts[i], self._datas[i]
            a = max(start, offset)
            b = min(start + len(data), end)
            buf[a - offset : b - offset] = data[a - start : b - start]
            i += 1

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """(offset, length) of every replaced range, ascending."""
        return tuple((s, len(d)) for s, d in zip(self._starts, self._datas, strict=True))

    def extents(self) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of every replaced range, ascending."""
        for start, data in zip(self._starts, self._datas, strict=True):
            yield start, bytes(data)

    @property
    def overlay_bytes(self) -> int:
        return sum(len(d) for d in self._datas)

    def reader(self) -> OverlayReader:
        """The configured image as a sequential (and seekable) binary stream."""
        return OverlayReader(self)

    def sha256(self, *, chunk_bytes: int = CHUNK_BYTES) -> str:
        """Hex SHA-256 of the whole configured image."""
        digest = hashlib.sha256()
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        with self.reader() as stream:
            while n := stream.readinto(view):
                digest.update(view[:n])
        return digest.hexdigest()

    def write_to(self, path: str | os.PathLike[str], *, mode: int = 0o600) -> None:
        """Write the configured image as a raw file at `path`, atomically, with `mode` (by
        default its owner's alone: a configured image holds Wi-Fi and provisioning keys).

        Holes in the base and all-zero chunks stay holes, so the output is sparse.
        """
        with atomic_file(Path(path), mode=mode) as fd:
            _copy_sparse(self.base, fd)
            os.ftruncate(fd, self.size)
            for offset, data in self.extents():
                pwrite_all(fd, data, offset)

    def apply_in_place(self, rw: FileReadWriter) -> None:
        """Write the replaced ranges into `rw`, a copy of the base opened for writing."""
        if rw.size != self.size:
            raise ValueError(f"target is {rw.size} bytes, the overlay's base is {self.size}")
        for offset, data in self.extents():
            rw.pwrite(data, offset)
        os.fsync(rw.fd)


class OverlayReader(io.RawIOBase):
    """Reads the overlay's image front to back: base bytes straight into the caller's buffer,
    then the overlay's patches on top.

    Holes in a base file are filled with zeros without reading them: reading a hole costs the
    kernel a freshly zeroed page-cache page, which made hashing a mostly sparse 4 GiB image
    several times slower than hashing the same amount of data.
    """

    def __init__(self, overlay: Overlay) -> None:
        super().__init__()
        self._overlay = overlay
        self._pos = 0
        base = overlay.base
        self._fd = base.fd if isinstance(base, FileReader) else None
        # The last region of the base looked up: [start, end), data or hole.
        self._region = (0, 0, True)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._overlay.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _region_at(self, fd: int, pos: int) -> tuple[int, bool]:
        """Where the data or hole region holding `pos` ends, and whether it is data."""
        start, end, is_data = self._region
        if start <= pos < end:
            return end, is_data
        size = self._overlay.size
        try:
            data_start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:  # the filesystem cannot report holes: read it all
                self._region = (pos, size, True)
                return size, True
            data_start = size  # only a hole remains
        if data_start > pos:
            self._region = (pos, min(data_start, size), False)
        else:
            self._region = (pos, min(os.lseek(fd, pos, os.SEEK_HOLE), size), True)
        return self._region[1], self._region[2]

    def _read_file(self, fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            end, is_data = self._region_at(fd, offset + done)
            part = view[done : done + end - offset - done]
            if not is_data:
                _zero_fill(part)
                done += len(part)
                continue
            got = os.preadv(fd, [part], offset + done)
            if got == 0:
                # The base file shrank under us; the missing tail reads as zeros.
                _zero_fill(view[done:])
                return
            done += got

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._overlay.size - self._pos))
        if n == 0:
            return 0
        view = view[:n]
        if self._fd is not None:
            self._read_file(self._fd, view, self._pos)
        else:
            data = self._overlay.base.pread(n, self._pos)
            view[: len(data)] = data
            view[len(data) :] = bytes(n - len(data))
        self._overlay._patch(view, self._pos)
        self._pos += n
        return n


def _zero_fill(view: memoryview) -> None:
    zero = memoryview(_ZERO_CHUNK)
    for at in range(0, len(view), CHUNK_BYTES):
        piece = view[at : at + CHUNK_BYTES]
        piece[:] = zero[: len(piece)]


def _data_segments(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions of `fd` that hold data; holes are skipped."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole remains
                return
            if pos == 0:  # the filesystem cannot report holes: copy everything
                yield 0, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_sparse(base: ReadAt, out_fd: int) -> None:
    """Copy `base` into `out_fd`, leaving holes where the base has holes or zero chunks."""
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    if isinstance(base, FileReader):
        segments: Iterator[tuple[int, int]] = _data_segments(base.fd, base.size)
    else:
        segments = iter([(0, base.size)])
    for start, end in segments:
        pos = start
        while pos < end:
            n = min(CHUNK_BYTES, end - pos)
            chunk = view[:n]
            if isinstance(base, FileReader):
                got = os.preadv(base.fd, [chunk], pos)
            else:
                data = base.pread(n, pos)
                got = len(data)
                chunk[:got] = data
            if got == 0:
                return
            # Whole-buffer equality is a memcmp; slicing a memoryview compares byte by byte.
            is_zero = buf == _ZERO_CHUNK if got == CHUNK_BYTES else buf.count(0, 0, got) == got
            if not is_zero:
                pwrite_all(out_fd, chunk[:got], pos)
            pos += got
