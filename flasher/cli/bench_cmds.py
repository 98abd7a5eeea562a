"""`flasher bench`: a provisioning bench; every card inserted into a bench slot is flashed.

bench [SOURCE] [--device-type T [--version V]] [os configure options] [--hostname-template TPL]
      [--slot PATTERN …] [--bus BUS …] [--min-size SIZE] [--max-size SIZE] [--report FILE]
      [--once N] [--include-present] [--image-type raw|flasher] [--no-verify] [--write-all]
      [--bmap FILE] [--sha256 HEX] [--yes] [--json]
      [--check-boot [--boot-address TPL] [--boot-timeout S]]
      [--register [--reuse-unflashed]] [--no-probe-capacity] [--eject] [--report-db URL]
      [--station-id ID]
      [--station FILE]
bench report [--report FILE | --report-db URL] [--station-id ID] [--json]
bench devices [--report FILE] [--delete-unflashed --fleet ID] [--json]
bench sync [--report FILE] --report-db URL [--station-id ID] [--json]

The image is resolved, downloaded, unpacked and configured once; then each card inserted into a
bench slot is written and verified at once, on its own, while the others carry on. Slots are
globs over /dev/disk/by-path links (see 'flasher drives --json') or device paths; without
--slot every USB or SD card that appears is taken. System drives never are. A card present when
the bench starts is left alone until it is re-inserted (or --include-present). A flashed card is
not flashed again until it is pulled and re-inserted. --hostname-template gives each card its
own hostname from {n} (the card's number in the report), {slot} (the slot's name or number),
{serial} and {date} (the card's UTC day, YYYYMMDD). Each card appends one JSON line to the
report. Erasing every inserted card needs --yes, or a "yes" typed on the terminal. Ctrl-C
stops taking cards and lets the cards being written finish; a second Ctrl-C stops them too
(they are left unbootable). A source that carries no checksum of its own (a raw image, zstd
without checksums, xz --check=none) is refused unless --sha256 gives its expected SHA-256 or
--bmap a block map with checksums.

--json prints JSON lines: {"event": "phase"|"progress"|"log", "slot": …} while preparing and
per card, {"event": "station_ready", …}, {"event": "card_inserted"|"card_skipped"|
"card_removed", …}, {"event": "card_result", …the report record…} and a final
{"event": "summary", "done", "failed", "report"}. Exit codes: 0 every card verified, 1 a card
failed, 2 bad usage or settings, 3 a verification failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from functools import partial
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
from flasher.bench.image import BenchJob
from flasher.bench.policy import Slot
from flasher.bench.report import CardRecord, ReportLog, default_report_path
from flasher.bench.station import Station, StationSummary
from flasher.cache import ImageCache
from flasher.cli import bench_boot, bench_extras, bench_slots
from flasher.cli.config_opts import (
    add_device_config_arguments,
    config_requested,
    device_config_for_image,
    precheck_device_config,
)
from flasher.cli.context import CliContext
from flasher.cli.job_opts import add_source_argument, add_write_arguments, source_spec
from flasher.cli.output import event_to_dict, human_bytes, human_duration, printable
from flasher.errors import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERIFY,
    Cancelled,
    ConfigError,
    FlasherError,
    VerificationFailed,
)
from flasher.events import CancelToken
from flasher.provider import ImageProvider

REDRAW_INTERVAL_S = 0.2


def register(groups: dict[str, Any]) -> None:
    parser = groups[""].add_parser(
        "bench",
        help="flash every card inserted into the bench's slots, one report line per card",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    add_source_argument(parser)
    add_device_config_arguments(parser)
    bench = parser.add_argument_group("bench")
    bench.add_argument(
        "--hostname-template",
        metavar="TPL",
        help="per-card hostname from {n}, {slot}, {serial} and {date} (UTC, YYYYMMDD), "
        "e.g. bench-{n:04d}",
    )
    bench_slots.add_arguments(bench)
    bench.add_argument(
        "--report",
        metavar="FILE",
        help=f"JSON-lines report to append to (default {default_report_path()})",
    )
    bench.add_argument("--once", type=int, metavar="N", help="stop after N cards")
    bench.add_argument(
        "--include-present",
        action="store_true",
        help="also flash cards already inserted when the bench starts",
    )
    add_write_arguments(bench)
    bench.add_argument(
        "--yes", "-y", action="store_true", help="erase every inserted card without asking"
    )
    bench.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON-lines output"
    )
    bench_extras.add_arguments(parser)
    bench_boot.add_arguments(parser)
    parser.set_defaults(handler=bench_command, bench_parser=parser)


# -- settings ----------------------------------------------------------------------------------


def _precheck(args: argparse.Namespace) -> None:
    """Reject bad settings before anything is downloaded or written."""
    if args.hostname and args.hostname_template:
        raise ConfigError(
            "hostname_template",
            "cannot be combined with --hostname",
            hint="every card gets --hostname; the template gives each its own",
        )
    if args.once is not None and args.once < 1:
        raise ConfigError("once", "must be at least 1 card")
    precheck_device_config(args, version_from_catalog=True)


def _consent(args: argparse.Namespace, ctx: CliContext) -> None:
    if args.yes:
        return
    where = ", ".join(args.slots) if args.slots else "any USB or SD card slot"
    ctx.require_typed_yes(
        f"The bench erases every card inserted into {where}; confirmation is required.",
        f"Every card inserted into {where} will be erased. Type 'yes' to start: ",
        "The bench did not start.",
    )


# -- the command ----------------------------------------------------------------------------


def bench_command(args: argparse.Namespace, ctx: CliContext) -> int:
    handled = bench_extras.prelude(args, ctx)
    if handled is not None:
        return handled
    if not args.source and not args.device_type:
        raise FlasherError(
            "Name an image for the bench.", hint="Give an image file or URL, or --device-type SLUG."
        )
    configure = not args.source or config_requested(args) or bool(args.hostname_template)
    if configure:
        _precheck(args)
    bench_extras.precheck(args)
    db_url = bench_extras.report_db_url(args, ctx)
    policy = bench_slots.policy(args)
    after_card = bench_boot.checker(args)
    source = source_spec(args)
    job = BenchJob(
        source=source,
        config_from_image=(
            partial(device_config_for_image, args, ctx, version_from_catalog=True)
            if configure
            else None
        ),
        hostname_template=args.hostname_template,
        verify=not args.no_verify,
        write_all=args.write_all,
        bmap_path=args.bmap,
        expected_sha256=args.sha256,
    )
    report = ReportLog(args.report or default_report_path())
    steps = bench_extras.card_steps(args, ctx, report, after_card)
    shipper = bench_extras.report_shipper(args, db_url, report)
    _consent(args, ctx)
    session_factory = ctx.session if (source.device_type or ctx.args.sandbox) else None
    view: _View = (
        _JsonView(ctx)
        if ctx.out.json_mode
        else (_LiveView(ctx.out.stderr) if ctx.out.tty else _LogView(ctx.out.stderr))
    )
    station = Station(
        job,
        ImageProvider(ImageCache(), session_factory, origin=ctx.cache_origin),
        policy=policy,
        report=report,
        on_event=bench_extras.shipping(view.handle, shipper),
        card_limit=args.once,
        include_present=args.include_present,
        card_steps=steps,
    )
    with bench_extras.sending(shipper, view.message):
        summary, interrupted = _run(station, view)
    view.close(summary)
    if interrupted:
        return EXIT_CANCELLED
    return _exit_code(summary.records)


def _run(station: Station, view: _View) -> tuple[StationSummary, bool]:
    """Run the station on a worker thread: the first Ctrl-C drains it (or, while the image is
    still being prepared, cancels), the second cancels."""
    cancel = CancelToken()
    box: dict[str, Any] = {}
    ended = threading.Event()

    def work() -> None:
        try:
            box["summary"] = station.run(cancel)
        except BaseException as err:  # re-raised on the main thread
            box["error"] = err
        finally:
            ended.set()

    worker = threading.Thread(target=work, name="flasher-bench", daemon=True)
    worker.start()
    interrupted = False
    # Waiting on an Event, not on join(): a Ctrl-C that interrupts Thread.join() can leave the
    # thread looking finished while it still runs.
    while not ended.is_set():
        try:
            ended.wait(0.2)
        except KeyboardInterrupt:
            if interrupted or not station.ready:
                view.message("Stopping the cards being written (they are left unbootable).")
                interrupted = True
                cancel.cancel()
            else:
                interrupted = True
                view.message(
                    "Taking no more cards; the cards being written will finish. "
                    "Press Ctrl-C again to stop them now."
                )
                station.drain()
    worker.join()
    if "error" in box:
        raise box["error"]
    summary: StationSummary = box["summary"]
    return summary, interrupted


def _exit_code(records: Sequence[CardRecord]) -> int:
    failed = [r for r in records if not r.ok]
    if not failed:
        return EXIT_OK
    if all(r.error_code == Cancelled.code for r in failed):
        return EXIT_CANCELLED
    if any(r.error_code == VerificationFailed.code for r in failed):
        return EXIT_VERIFY
    return EXIT_ERROR


# -- views ----------------------------------------------------------------------------------


def _slot_fields(slot: Slot) -> dict[str, Any]:
    return {
        "slot": slot.name,
        "slot_number": slot.number,
        "slot_name": slot.title,
        "device": slot.device,
    }


class _View(Protocol):
    def handle(self, event: BenchEvent) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self, summary: StationSummary) -> None: ...


class _JsonView:
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
            f"{record.seconds:.1f} s{rate}{device}{off}{bench_boot.describe(record.boot)}"
        )
    hint = f" ({record.error_hint})" if record.error_hint else ""
    left = f"; device {record.device_uuid} is registered, not flashed" if record.device_uuid else ""
    return f"card {record.card} FAILED: {record.error_message}{hint}{left}"


def _summary_text(summary: StationSummary) -> str:
    return (
        f"{summary.done} card{'s' if summary.done != 1 else ''} done, {summary.failed} "
        f"failed; report: {summary.report_path}"
    )


class _LogView:
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


class _LiveView:
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
