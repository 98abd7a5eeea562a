"""Typed progress events, a rate meter with speed and ETA, and the cancel token.

Imports only the standard library. Core functions take `on_event: EventCallback` and a
`CancelToken`; faces (CLI, GUI, bench) render the events.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flasher.errors import Cancelled


class Phase(enum.StrEnum):
    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    UNPACKING = "unpacking"
    CONFIGURING = "configuring"
    CHECKING = "checking"
    WRITING = "writing"
    SYNCING = "syncing"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class PhaseChanged:
    phase: Phase
    target: str | None = None


@dataclass(frozen=True)
class Progress:
    """Bytes done in a phase; `target` is None for shared phases (download, unpack)."""

    phase: Phase
    done_bytes: int
    total_bytes: int | None
    speed_bps: float | None = None
    eta_s: float | None = None
    target: str | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)


@dataclass(frozen=True)
class Log:
    level: str
    message: str
    target: str | None = None


Event = PhaseChanged | Progress | Log
EventCallback = Callable[[Event], None]


def ignore_event(_event: Event) -> None:
    """The default `on_event`: drop everything."""


class CancelToken:
    """Set once by any thread; checked by long-running loops."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` when cancelled (at once if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)


class RateMeter:
    """Turns byte counts into throttled Progress events with a windowed speed and an ETA.

    `update` returns an event at most every `interval_s` (and always when done == total), so
    callers can report after every chunk without flooding the faces.
    """

    def __init__(
        self,
        phase: Phase,
        total_bytes: int | None,
        *,
        target: str | None = None,
        interval_s: float = 0.1,
        window_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase = phase
        self.total_bytes = total_bytes
        self.target = target
        self._interval_s = interval_s
        self._window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = float("-inf")
        start = clock()
        self._samples.append((start, 0))
        self.started_at = start

    def update(self, done_bytes: int, *, force: bool = False) -> Progress | None:
        now = self._clock()
        self._samples.append((now, done_bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        finished = self.total_bytes is not None and done_bytes >= self.total_bytes
        if not (force or finished) and now - self._last_emit < self._interval_s:
            return None
        self._last_emit = now
        return self.snapshot(done_bytes, now)

    def snapshot(self, done_bytes: int, now: float | None = None) -> Progress:
        now = self._clock() if now is None else now
        t0, b0 = self._samples[0]
        speed = (done_bytes - b0) / (now - t0) if now > t0 else None
        eta = None
        if speed and self.total_bytes is not None and speed > 0:
            eta = max(0.0, (self.total_bytes - done_bytes) / speed)
        return Progress(self.phase, done_bytes, self.total_bytes, speed, eta, self.target)
