"""Where the image bytes come from: a random-access fd or a sequential stream, plus the overlay.

Standard library plus flasher.errors and flasher.writer modules only (the root helper uses it).
The overlay is the prepared image's few replaced byte ranges (config.json, connection files);
both sources patch them over the base bytes as each chunk is filled. Chunk buffers are filled
and then zero-padded to the next 4 KiB, so O_DIRECT writes of the image's tail are aligned.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import select
import threading
from collections.abc import Callable, Sequence

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.events import CancelToken
from flasher.writer.plan import ALIGN_BYTES, Chunk, round_up

STREAM_NAME = "<stream>"
POLL_MS = 100


class Overlay:
    """Sorted, non-overlapping (offset, bytes) ranges that replace base bytes."""

    def __init__(self, segments: Sequence[tuple[int, bytes]] = ()) -> None:
        ordered = sorted((off, bytes(data)) for off, data in segments if data)
        for (a_off, a_data), (b_off, _b) in itertools.pairwise(ordered):
            if a_off + len(a_data) > b_off:
                raise ValueError("overlay ranges overlap")
        self._offsets = [off for off, _ in ordered]
        self._segments = ordered

    @classmethod
    def from_fd(cls, fd: int, ranges: Sequence[tuple[int, int]]) -> Overlay:
        """Read the ranges' bytes, concatenated in order, from `fd` (a memfd)."""
        segments: list[tuple[int, bytes]] = []
        pos = 0
        for offset, length in ranges:
            data = os.pread(fd, length, pos)
            if len(data) != length:
                raise ImageError(
                    STREAM_NAME,
                    "the overlay is shorter than its ranges",
                    problem=ProblemCode.TRUNCATED,
                )
            segments.append((offset, data))
            pos += length
        return cls(segments)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [(off, len(data)) for off, data in self._segments]

    def apply(self, buf: memoryview, offset: int, length: int) -> None:
        """Patch the overlay into `buf`, which holds image bytes [offset, offset+length)."""
        end = offset + length
        i = max(0, bisect.bisect_right(self._offsets, offset) - 1)
        while i < len(self._segments):
            seg_off, data = self._segments[i]
            if seg_off >= end:
                break
            lo = max(seg_off, offset)
            hi = min(seg_off + len(data), end)
            if lo < hi:
                buf[lo - offset : hi - offset] = data[lo - seg_off : hi - seg_off]
            i += 1


def _pad(buf: memoryview, length: int) -> None:
    padded = min(round_up(length, ALIGN_BYTES), len(buf))
    if padded > length:
        buf[length:padded] = bytes(padded - length)


class RandomAccessSource:
    """The base image as an fd read at any offset (pread is safe from many threads at once)."""

    random_access = True

    def __init__(self, fd: int, size_bytes: int, overlay: Overlay | None = None) -> None:
        actual = os.fstat(fd).st_size
        if actual < size_bytes:
            raise ImageError(
                STREAM_NAME,
                f"the image file holds {actual} bytes, fewer than the {size_bytes} announced",
                problem=ProblemCode.TRUNCATED,
            )
        self.fd = fd
        self.size_bytes = size_bytes
        self.overlay = overlay or Overlay()

    def finish(self) -> None:
        """Nothing to check: the fd is the client's already verified image file."""

    def read_into(self, buf: memoryview, chunk: Chunk) -> None:
        got = 0
        while got < chunk.length:
            n = os.preadv(self.fd, [buf[got : chunk.length]], chunk.offset + got)
            if n == 0:
                raise ImageError(
                    STREAM_NAME,
                    f"the image ended at byte {chunk.offset + got} of {self.size_bytes}",
                    problem=ProblemCode.TRUNCATED,
                )
            got += n
        self.overlay.apply(buf, chunk.offset, chunk.length)
        _pad(buf, chunk.length)


class StreamSource:
    """The image as a sequential byte stream (a pipe fd, or any object with `readinto`).

    With `expected_sha256`, every byte of the stream (before the overlay) is hashed and
    `finish()` reads to the end and compares, so a corrupt decompression is caught before the
    partition table is written.
    """

    random_access = False

    def __init__(
        self,
        readinto: Callable[[memoryview], int],
        size_bytes: int,
        overlay: Overlay | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> None:
        self._readinto = readinto
        self.size_bytes = size_bytes
        self.overlay = overlay or Overlay()
        self._pos = 0
        self._lock = threading.Lock()
        self._skip = bytearray(1024 * 1024)
        self._expected = expected_sha256
        self._hash = hashlib.sha256() if expected_sha256 else None

    @classmethod
    def from_fd(
        cls,
        fd: int,
        size_bytes: int,
        overlay: Overlay | None = None,
        *,
        expected_sha256: str | None = None,
        cancel: CancelToken | None = None,
    ) -> StreamSource:
        """A pipe as the stream; with `cancel`, a wait for data ends with Cancelled."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)

        def readinto(buf: memoryview) -> int:
            while cancel is not None and not poller.poll(POLL_MS):
                cancel.check()
            return os.readv(fd, [buf])

        return cls(readinto, size_bytes, overlay, expected_sha256=expected_sha256)

    def _skip_to(self, offset: int) -> None:
        skip = memoryview(self._skip)
        while self._pos < offset:
            self._fill(skip[: min(len(skip), offset - self._pos)])

    def finish(self) -> None:
        """Consume the rest of the stream and check its sha256, when one was given."""
        if self._hash is None:
            return
        with self._lock:
            self._skip_to(self.size_bytes)
            actual = self._hash.hexdigest()
        if actual != self._expected:
            raise ImageError(
                STREAM_NAME,
                f"the decompressed image has sha256 {actual}, not the expected {self._expected}",
                problem=ProblemCode.CHECKSUM,
                hint="The download or the cached image is corrupt; download it again.",
            )

    def _fill(self, buf: memoryview) -> None:
        got = 0
        while got < len(buf):
            n = self._readinto(buf[got:])
            if not n:
                raise ImageError(
                    STREAM_NAME,
                    f"the image stream ended at byte {self._pos + got} of {self.size_bytes}",
                    problem=ProblemCode.TRUNCATED,
                )
            got += n
        if self._hash is not None:
            self._hash.update(buf)
        self._pos += got

    def read_into(self, buf: memoryview, chunk: Chunk) -> None:
        """Fill `buf` with chunk bytes; chunks must be asked for in increasing order."""
        with self._lock:
            if chunk.offset < self._pos:
                raise ValueError("a stream can only be read forward")
            self._skip_to(chunk.offset)
            self._fill(buf[: chunk.length])
        self.overlay.apply(buf, chunk.offset, chunk.length)
        _pad(buf, chunk.length)


ImageSourceLike = RandomAccessSource | StreamSource
