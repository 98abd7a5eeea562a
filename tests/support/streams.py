"""A decompressed-stream stand-in for writer tests: serves bytes, optionally holding at a point
until released (a slow decoder), so a cancel or a failure can land mid-write."""

from __future__ import annotations

import io
import threading


class HeldStream(io.RawIOBase):
    """A decompressed-stream stand-in: serves `data`, optionally pausing at `hold_at` until
    `release` is set (a slow source), so a cancel can land mid-write."""

    def __init__(
        self, data: bytes, hold_at: int | None = None, release: threading.Event | None = None
    ) -> None:
        self._data = data
        self._pos = 0
        self._hold_at = hold_at
        self._release = release

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._hold_at is not None and self._pos >= self._hold_at and self._release:
            self._release.wait(30)
            return 0
        end = len(self._data) if self._hold_at is None else self._hold_at
        n = min(len(buf), end - self._pos, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n
