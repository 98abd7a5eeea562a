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
from collections.abc import Sequence
from functools import partial
from typing import Any

from flasher.bench.image import BenchJob
from flasher.bench.policy import SlotPattern
from flasher.bench.report import CardRecord, ReportLog, default_report_path
from flasher.bench.station import Station, StationSummary
from flasher.cache import ImageCache
from flasher.cli import bench_boot, bench_extras, bench_slots, bench_views
from flasher.cli.config_opts import (
    add_device_config_arguments,
    config_requested,
    device_config_for_image,
    precheck_device_config,
)
from flasher.cli.context import CliContext
from flasher.cli.job_opts import add_source_argument, add_write_arguments, source_spec
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
    slots = [SlotPattern.parse(text) for text in args.slots]
    named = [f"{s.name} ({s.pattern})" if s.name else s.pattern for s in slots]
    where = ", ".join(named) if named else "any USB or SD card slot"
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
    view = bench_views.make_view(ctx)
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


def _run(station: Station, view: bench_views.View) -> tuple[StationSummary, bool]:
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
