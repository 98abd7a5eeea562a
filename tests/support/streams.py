"""A decompressed-stream stand-in for writer tests: serves bytes, optionally holding at a point
until released (a slow decoder), so a cancel or a failure can land mid-write; and a wait for
the moment part of the body is on the card."""

from __future__ import annotations

import io
import threading
import time

from tests.support.loopdev import LoopDevice

MiB = 1024 * 1024


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


def wait_until_written(loop: LoopDevice, raw: bytes, timeout_s: float) -> None:
    """Return once the 4 KiB of `raw` at 2 MiB are on `loop` (past the held-back first MiB,
    so part of the body is written), or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if loop.read(2 * MiB, 4096) == raw[2 * MiB : 2 * MiB + 4096]:
            return
        time.sleep(0.01)
