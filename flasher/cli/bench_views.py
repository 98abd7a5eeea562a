"""`flasher bench`'s three views of a running station: JSON lines (--json), one plain line per
card event (not a terminal, e.g. the journal of a service), and a table redrawn in place (a
terminal). Each takes the station's BenchEvents; none changes what the station does."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, TextIO

from flasher.bench.board import EMPTY, SKIPPED, Board, SlotRow, describe_card
from flasher.bench.events import (
    BenchEvent,
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
    CardUpdate,
    StationReady,
    StationUpdate,
)
from flasher.bench.policy import Slot
from flasher.bench.report import CardRecord
from flasher.bench.station import StationSummary
from flasher.cli import bench_boot
from flasher.cli.context import CliContext
from flasher.cli.output import (
    event_to_dict,
    human_bytes,
    human_duration,
    human_seconds,
    printable,
)
from flasher.events import Log

REDRAW_INTERVAL_S = 0.2


def _slot_fields(slot: Slot) -> dict[str, Any]:
    return {
        "slot": slot.name,
        "slot_number": slot.number,
        "slot_name": slot.title,
        "device": slot.device,
    }


class View(Protocol):
    def handle(self, event: BenchEvent) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self, summary: StationSummary) -> None: ...


class JsonView:
    def __init__(self, ctx: CliContext) -> None:
        self._out = ctx.out

    def handle(self, event: BenchEvent) -> None:
        if isinstance(event, StationUpdate):
            self._out.event(event.event)
        elif isinstance(event, StationReady):
            self._out.json_event("station_ready", **event.image, report=event.report_path)
        elif isinstance(event, CardInserted):
            d = event.drive
            self._out.json_event(
                "card_inserted",
                **_slot_fields(event.slot),
                card=event.card,
                serial=d.serial or None,
                vendor=d.vendor or None,
                model=d.model or None,
                size_bytes=d.size_bytes,
            )
        elif isinstance(event, CardSkipped):
            self._out.json_event(
                "card_skipped",
                **_slot_fields(event.slot),
                reason=event.reason,
                in_bench=event.in_bench,
            )
        elif isinstance(event, CardUpdate):
            fields = dict(event_to_dict(event.event))
            kind = str(fields.pop("event"))
            self._out.json_event(kind, **fields, **_slot_fields(event.slot))
        elif isinstance(event, CardFinished):
            self._out.json_event("card_result", **event.record.to_dict())
        elif isinstance(event, CardRemoved):
            self._out.json_event(
                "card_removed", **_slot_fields(event.slot), during_write=event.during_write
            )

    def message(self, text: str) -> None:
        self._out.json_event("log", level="info", message=text)

    def close(self, summary: StationSummary) -> None:
        self._out.json_event(
            "summary", done=summary.done, failed=summary.failed, report=summary.report_path
        )


def _card_line(record: CardRecord) -> str:
    if record.ok:
        state = "verified" if record.verified else "written (not verified)"
        rate = f", {record.mb_per_s} MB/s" if record.mb_per_s is not None else ""
        name = f" as {record.hostname}" if record.hostname else ""
        device = f", device {record.device_uuid[:7]}" if record.device_uuid else ""
        off = {True: ", powered off", False: ", not powered off", None: ""}[record.ejected]
        return (
            f"card {record.card} {state}{name}: {human_bytes(record.bytes_written)} in "
            f"{human_seconds(record.seconds)}{rate}{device}{off}{bench_boot.describe(record.boot)}"
        )
    hint = f" ({record.error_hint})" if record.error_hint else ""
    left = f"; device {record.device_uuid} is registered, not flashed" if record.device_uuid else ""
    return f"card {record.card} FAILED: {record.error_message}{hint}{left}"


def _warning_line(event: BenchEvent) -> str | None:
    """A card's warning (e.g. why it was not powered off), as a line of its own."""
    inner = event.event if isinstance(event, CardUpdate) else None
    if isinstance(event, CardUpdate) and isinstance(inner, Log) and inner.level == "warning":
        return f"{event.slot.label}: {inner.message}"
    return None


def _summary_text(summary: StationSummary) -> str:
    return (
        f"{summary.done} card{'s' if summary.done != 1 else ''} done, {summary.failed} "
        f"failed; report: {summary.report_path}"
    )


class LogView:
    """Not a terminal: one plain line per card event."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            print(printable(text), file=self._stream, flush=True)

    def handle(self, event: BenchEvent) -> None:
        if isinstance(event, StationReady):
            image = event.image
            self._say(
                f"ready: {image.get('device_type') or 'image'} "
                f"{image.get('os_version') or ''}, "
                f"{human_bytes(image.get('mapped_bytes'))} to write per card; insert cards"
            )
        elif isinstance(event, CardInserted):
            self._say(
                f"{event.slot.label}: card {event.card} inserted ({describe_card(event.drive)})"
            )
        elif isinstance(event, CardSkipped) and event.in_bench:
            self._say(f"{event.slot.label}: skipped {describe_card(event.drive)}: {event.reason}")
        elif isinstance(event, CardFinished):
            self._say(f"{event.slot.label}: {_card_line(event.record)}")
        elif (warning := _warning_line(event)) is not None:
            self._say(warning)
        elif isinstance(event, CardRemoved):
            self._say(
                f"{event.slot.label}: card removed"
                + (" before it was finished" if event.during_write else "")
            )

    def message(self, text: str) -> None:
        self._say(text)

    def close(self, summary: StationSummary) -> None:
        self._say(_summary_text(summary))


def _row_text(row: SlotRow) -> str:
    """ "slot 2   #14 SanDisk SD 31.9 GB  writing  45.0%  38.2 MB/s ETA 00:12" or, once the
    card ended, its state and how it went."""
    empty = row.state == EMPTY
    number = f"#{row.number}" if row.number is not None and not empty else ""
    card, state = ("(empty)", "") if empty else (row.card, row.state)
    head = f"{row.slot.label[:14]:<14} {number:>6} {card[:28]:<28} {state:<10}"
    if row.fraction is not None:
        speed = f"{human_bytes(row.speed_bps)}/s" if row.speed_bps else ""
        return (
            f"{head} {row.fraction * 100:5.1f}% {speed:>11} "
            f"ETA {human_duration(row.eta_s)} {row.note}"
        ).rstrip()
    note = row.note
    if row.state in ("done", "failed"):
        note = f"{note} - remove the card"
    elif row.state == EMPTY and note:
        note = f"last: {note}"
    elif row.state == SKIPPED:
        note = f"not flashed: {note}"
    return f"{head} {note}".rstrip()


class LiveView:
    """A terminal: one line per slot and a totals line, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._board = Board()
        self._lock = threading.Lock()
        self._drawn = 0
        self._last_draw = 0.0

    def handle(self, event: BenchEvent) -> None:
        with self._lock:
            self._board.handle(event)
            if isinstance(event, CardFinished):
                self._print(f"{event.slot.label}: {_card_line(event.record)}")
            elif (warning := _warning_line(event)) is not None:
                self._print(warning)
            if isinstance(event, CardSkipped) and not event.in_bench:
                return  # not on the board
            throttled = isinstance(event, StationUpdate | CardUpdate)
            now = time.monotonic()
            if throttled and now - self._last_draw < REDRAW_INTERVAL_S:
                return
            self._last_draw = now
            self._redraw()

    def message(self, text: str) -> None:
        with self._lock:
            self._print(text)
            self._redraw()

    def close(self, summary: StationSummary) -> None:
        with self._lock:
            self._redraw()
            self._drawn = 0
            self._stream.write(printable(_summary_text(summary)) + "\n")
            self._stream.flush()

    def _print(self, text: str) -> None:
        """A line that stays above the table (the table is redrawn under it)."""
        self._clear()
        self._stream.write(printable(text) + "\n")

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _lines(self) -> list[str]:
        board = self._board
        if not board.ready:
            progress = board.stage_progress
            detail = ""
            if progress is not None:
                frac = progress.fraction
                detail = (f" {frac * 100:5.1f}%" if frac is not None else "") + (
                    f" {human_bytes(progress.speed_bps)}/s ETA {human_duration(progress.eta_s)}"
                    if progress.speed_bps
                    else ""
                )
            lines = [f"preparing the image: {board.stage}{detail}"]
        else:
            image = board.image
            lines = [
                f"{image.get('device_type') or 'image'} {image.get('os_version') or ''}: "
                f"{human_bytes(image.get('mapped_bytes'))} to write per card; "
                f"report {board.report_path}"
            ]
        lines += [_row_text(row) for row in board.rows()]
        if board.ready and not board.rows():
            lines.append("insert a card")
        lines.append(f"done {board.done}   failed {board.failed}   in progress {board.active}")
        return lines

    def _redraw(self) -> None:
        self._clear()
        lines = self._lines()
        for line in lines:
            self._stream.write(printable(line)[:160] + "\n")
        self._drawn = len(lines)
        self._stream.flush()


def make_view(ctx: CliContext) -> View:
    """JSON lines with --json, the table on a terminal, plain lines otherwise."""
    if ctx.out.json_mode:
        return JsonView(ctx)
    return LiveView(ctx.out.stderr) if ctx.out.tty else LogView(ctx.out.stderr)
