"""A ReadAt wrapper for tests that records every range read."""

from __future__ import annotations

from flasher.image.byteio import ReadAt


class Recording:
    """A ReadAt that records what is read, and ends its reads short at `end_at` as at the end
    of a file."""

    def __init__(self, io: ReadAt, end_at: int | None = None) -> None:
        self.io = io
        self.end_at = end_at
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self.io.size

    def pread(self, length: int, offset: int) -> bytes:
        self.reads.append((offset, length))
        if self.end_at is not None and offset <= self.end_at < offset + length:
            length = self.end_at - offset
        return self.io.pread(length, offset)
