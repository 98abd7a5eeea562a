"""Terminal and JSON output for the CLI: results, errors, progress bars and JSON-lines events.

The only place (with the GUI) that prints. Secrets never reach it: callers pass redacted data.
Text that comes from outside (an image, a server, a drive's name, a file) can hold terminal
control sequences that would recolour, retitle or rewrite the user's terminal; `printable`
removes them, and every text line printed here (and by the CLI's progress views) goes through
it. JSON output needs no such step: `json.dumps` escapes every control character.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from flasher.cli.hints import cli_error_dict, cli_hint
from flasher.errors import FlasherError
from flasher.events import Event, Log, PhaseChanged, Progress

# Whole escape sequences first (CSI, OSC/DCS/APC/PM/SOS strings, two-byte ESC forms, their C1
# spellings), then any control character left: C0 except tab and newline, DEL, and C1.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]P_^X]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without terminal control sequences or control characters (tab and newline stay),
    and with any lone surrogate (a `\\u` escape in foreign JSON) spelled as its escape."""
    clean = _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))
    return clean.encode("utf-8", errors="backslashreplace").decode("utf-8")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_seconds(seconds: float) -> str:
    """A measured time: "0.04 s" (a sub-second flash does not read "0.0 s"), "3.2 s"."""
    return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Output:
    """Where a command's results, events and errors go, in text or JSON."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.tty = self.stderr.isatty() and not json_mode
        self._bar_open = False

    def result(self, data: Any, text: str | None = None) -> None:
        """The command's answer: `data` as JSON in --json mode, else `text` (or str(data))."""
        if self.json_mode:
            self._json(data)
        else:
            self._end_bar()
            print(printable(text if text is not None else str(data)), file=self.stdout)

    def json_event(self, kind: str, **fields: Any) -> None:
        self._json({"event": kind, **fields})

    def info(self, message: str) -> None:
        if self.json_mode:
            self.json_event("log", level="info", message=message)
        else:
            self._end_bar()
            print(printable(message), file=self.stderr)

    def error(self, err: FlasherError) -> None:
        if self.json_mode:
            self.json_event("error", **cli_error_dict(err))
            return
        self._end_bar()
        print(f"error: {printable(err.message)}", file=self.stderr)
        hint = cli_hint(err)
        if hint:
            print(f"hint: {printable(hint)}", file=self.stderr)

    def event(self, ev: Event) -> None:
        """Render a core event: a JSON line, a redrawn progress bar on a TTY, or nothing."""
        if self.json_mode:
            self._json(event_to_dict(ev))
        elif isinstance(ev, Progress) and self.tty:
            self._bar(ev)
        elif isinstance(ev, Log) and ev.level in ("warning", "error"):
            self.info(f"{ev.level}: {ev.message}")

    def _bar(self, ev: Progress, width: int = 30) -> None:
        frac = ev.fraction
        filled = int(width * frac) if frac is not None else 0
        bar = "#" * filled + "-" * (width - filled)
        pct = f"{frac * 100:5.1f}%" if frac is not None else "  ?  "
        who = f"{printable(ev.target)} " if ev.target else ""
        line = (
            f"\r{who}{ev.phase.value:<11} [{bar}] {pct} "
            f"{human_bytes(ev.done_bytes)}/{human_bytes(ev.total_bytes)} "
            f"{human_bytes(ev.speed_bps)}/s ETA {human_duration(ev.eta_s)}"
        )
        self.stderr.write(line.ljust(100))
        self.stderr.flush()
        self._bar_open = True

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stderr.write("\n")
            self.stderr.flush()
            self._bar_open = False

    def _json(self, data: Any) -> None:
        print(json.dumps(data, sort_keys=False, default=str), file=self.stdout, flush=True)


def event_to_dict(ev: Event) -> Mapping[str, Any]:
    if isinstance(ev, Progress):
        return {
            "event": "progress",
            "phase": ev.phase.value,
            "target": ev.target,
            "done_bytes": ev.done_bytes,
            "total_bytes": ev.total_bytes,
            "speed_bps": round(ev.speed_bps) if ev.speed_bps is not None else None,
            "eta_s": round(ev.eta_s, 1) if ev.eta_s is not None else None,
        }
    if isinstance(ev, PhaseChanged):
        return {"event": "phase", "phase": ev.phase.value, "target": ev.target}
    return {"event": "log", "level": ev.level, "message": ev.message, "target": ev.target}
