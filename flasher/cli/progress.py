"""Per-target progress bars on a terminal: one line per card, redrawn in place.

Shared phases (download, unpack) get their own line; every target keeps its own line with phase,
percentage, bytes, speed and ETA, so a slow card is visible at a glance.
"""

from __future__ import annotations

import threading
from typing import TextIO

from flasher.cli.output import human_bytes, human_duration, printable
from flasher.events import Event, Log, PhaseChanged, Progress

BAR_WIDTH = 24
SHARED = "image"


class MultiBar:
    """Draws the latest Progress of each target; thread-safe, redraws at most what changed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: dict[str, str] = {}
        self._drawn = 0
        self._lock = threading.Lock()

    def handle(self, ev: Event) -> None:
        with self._lock:
            if isinstance(ev, Progress):
                self._lines[ev.target or SHARED] = _line(ev)
            elif isinstance(ev, PhaseChanged) and ev.target:
                self._lines[ev.target] = f"{ev.target}: {ev.phase.value}"
            elif isinstance(ev, Log) and ev.level in ("warning", "error"):
                self._clear()
                who = f"{ev.target}: " if ev.target else ""
                self._stream.write(printable(f"{ev.level}: {who}{ev.message}") + "\n")
            else:
                return
            self._redraw()

    def finish(self) -> None:
        with self._lock:
            self._drawn = 0
            self._lines.clear()

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        self._clear()
        for text in self._lines.values():
            self._stream.write(printable(text)[:120] + "\n")
        self._drawn = len(self._lines)
        self._stream.flush()


def _line(ev: Progress) -> str:
    frac = ev.fraction
    filled = int(BAR_WIDTH * frac) if frac is not None else 0
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    pct = f"{frac * 100:5.1f}%" if frac is not None else "   ? "
    who = ev.target or SHARED
    return (
        f"{who:<14} {ev.phase.value:<11} [{bar}] {pct} "
        f"{human_bytes(ev.done_bytes):>9}/{human_bytes(ev.total_bytes):<9} "
        f"{human_bytes(ev.speed_bps):>9}/s  ETA {human_duration(ev.eta_s)}"
    )
