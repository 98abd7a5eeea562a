"""The bench's second-pass options and its two sub-words, for flasher.cli.bench_cmds:

* `--register` / `--reuse-unflashed`: each card becomes its own device of the fleet;
* `--probe-capacity` (default) / `--no-probe-capacity`: counterfeit cards are refused;
* `--eject`: each verified card is powered off (flasher.drives.eject);
* `--report-db URL` (or $FLASHER_BENCH_REPORT_DB) and `--station-id`: records also go to
  PostgreSQL, through an outbox beside the report;
* `--station FILE`: the options from a TOML station file (flasher.cli.station_file);
* `flasher bench report [--report FILE | --report-db URL]`: per station, day and card model;
* `flasher bench devices [--report FILE] [--delete-unflashed]`: devices registered for cards
  that then failed;
* `flasher bench sync [--report FILE] --report-db URL [--station-id ID]`: send the records
  still waiting now (a run that ended while the database was down leaves some).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flasher.bench.cardsteps import AfterCard, CardSteps, UnflashedDevices, unflashed_devices
from flasher.bench.events import BenchCallback, BenchEvent, CardFinished
from flasher.bench.report import ReportLog, default_report_path
from flasher.cli.context import CliContext
from flasher.errors import EXIT_OK, ApiError, ConfigError, FlasherError

if TYPE_CHECKING:
    from flasher.bench.reportdb import ReportShipper

REPORT_DB_ENV = "FLASHER_BENCH_REPORT_DB"
SUBWORDS = ("report", "devices")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("devices, counterfeit cards and the report database")
    group.add_argument(
        "--register",
        action="store_true",
        help="register each card as its own device of the fleet before writing it "
        "(needs --fleet and a provisioning key or a login)",
    )
    group.add_argument(
        "--reuse-unflashed",
        action="store_true",
        help="with --register: give new cards the devices registered for cards that failed "
        "(needs a login)",
    )
    group.add_argument(
        "--probe-capacity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe each card's real capacity before writing it and refuse counterfeit cards "
        "(default on; 4 KiB read, written, read back and restored at 64-129 places: a "
        "second or two on an SD card)",
    )
    group.add_argument(
        "--eject",
        action="store_true",
        help="power off each verified card (udisksctl power-off, else eject) so it can be "
        "pulled out; never a loop device or file",
    )
    group.add_argument(
        "--report-db",
        metavar="URL",
        help=f"also send each record to PostgreSQL (postgresql://…; env {REPORT_DB_ENV}; "
        "keep the password in ~/.pgpass or PGPASSWORD)",
    )
    group.add_argument(
        "--station-id",
        metavar="ID",
        help="this station's name in the report database (default: the machine's hostname)",
    )
    group.add_argument(
        "--station",
        metavar="FILE",
        help="read the bench's options from a TOML station file (command-line options win)",
    )
    group.add_argument(
        "--delete-unflashed",
        action="store_true",
        help="with 'bench devices': delete those devices from the fleet (needs a login)",
    )


def prelude(args: argparse.Namespace, ctx: CliContext) -> int | None:
    """Apply a station file; run `bench report` / `bench devices` (their exit code), else
    None for a bench run."""
    if args.station:
        from flasher.cli.station_file import apply_station, load_station

        parser: argparse.ArgumentParser = args.bench_parser
        apply_station(args, load_station(args.station, parser), vars(parser.parse_args([])))
    if args.source == "report":
        return report_command(args, ctx)
    if args.source == "devices":
        return devices_command(args, ctx)
    if args.source == "sync":
        return sync_command(args, ctx)
    return None


@contextmanager
def sending(shipper: ReportShipper | None, say: Callable[[str], None]) -> Iterator[None]:
    """The report database's sender running around a bench run; says what is left unsent."""
    if shipper is None:
        yield
        return
    shipper.start()
    try:
        yield
    finally:
        waiting = shipper.close()
        if waiting:
            say(
                f"{waiting} record(s) are not in the report database yet; they are sent by "
                "the next run with the same report and database"
            )


def report_db_url(args: argparse.Namespace, ctx: CliContext) -> str | None:
    url: str | None = args.report_db or os.environ.get(REPORT_DB_ENV) or None
    if url is None:
        return None
    from urllib.parse import urlsplit

    from flasher.bench.reportdb import check_dsn

    check_dsn(url)
    if args.report_db and urlsplit(url).password:
        ctx.out.info(
            "other users can see a password given with --report-db in the process list; "
            f"prefer ~/.pgpass, PGPASSWORD or env {REPORT_DB_ENV}"
        )
    return url


def station_id(args: argparse.Namespace) -> str:
    return str(args.station_id or socket.gethostname())


def precheck(args: argparse.Namespace) -> None:
    """Reject bad combinations before any I/O."""
    if args.reuse_unflashed and not args.register:
        raise ConfigError("reuse_unflashed", "needs --register")
    if args.register and getattr(args, "fleet", None) is None:
        raise ConfigError("register", "needs --fleet", hint="name the fleet the cards join")
    if args.station_id is not None and not args.station_id.strip():
        raise ConfigError("station_id", "must not be empty")


def card_steps(
    args: argparse.Namespace, ctx: CliContext, report: ReportLog, after_card: AfterCard | None
) -> CardSteps:
    session = ctx.session() if args.register else None
    if args.reuse_unflashed and session is not None and not session.authenticated:
        raise ConfigError(
            "reuse_unflashed",
            "needs a login to give a registered device a new key",
            hint="log in ('balena login' or BALENA_API_KEY)",
        )
    reuse = UnflashedDevices(report.records()) if args.reuse_unflashed else None
    return CardSteps(
        probe_capacity=args.probe_capacity,
        register_session=session,
        reuse=reuse,
        after_card=after_card,
        eject=args.eject,
    )


def report_shipper(
    args: argparse.Namespace, db_url: str | None, report: ReportLog
) -> ReportShipper | None:
    if db_url is None:
        return None
    from flasher.bench.reportdb import ReportOutbox, ReportShipper

    return ReportShipper(ReportOutbox(report.path, db_url, station_id(args)))


def shipping(handler: BenchCallback, shipper: ReportShipper | None) -> BenchCallback:
    """`handler`, also waking the report database's sender after each card."""
    if shipper is None:
        return handler

    def handle(event: BenchEvent) -> None:
        handler(event)
        if isinstance(event, CardFinished):
            shipper.notify()

    return handle


def report_command(args: argparse.Namespace, ctx: CliContext) -> int:
    from flasher.bench.summary import records_from_db, records_from_file, summarise

    url = None if args.report else report_db_url(args, ctx)
    if url is not None:
        rows = records_from_db(url, [args.station_id] if args.station_id else [])
    else:
        rows = records_from_file(args.report or default_report_path(), station_id(args))
    groups = summarise(rows)
    lines = [
        f"{'STATION':<16} {'DAY':<10} {'MODEL':<28} {'DONE':>5} {'FAILED':>6} "
        f"{'CARDS/H':>7} {'MB/S':>6}  FAILED BY REASON"
    ]
    for g in groups:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(g.failed_by_reason.items()))
        lines.append(
            f"{g.station[:16]:<16} {g.day:<10} {g.model[:28]:<28} {g.done:>5} {g.failed:>6} "
            f"{_num(g.cards_per_hour):>7} {_num(g.median_mb_per_s):>6}  {reasons}".rstrip()
        )
    ctx.out.result([g.to_dict() for g in groups], "\n".join(lines))
    return EXIT_OK


def sync_command(args: argparse.Namespace, ctx: CliContext) -> int:
    """Send the report's waiting records to the report database now."""
    from flasher.bench.reportdb import ReportOutbox

    url = report_db_url(args, ctx)
    if url is None:
        raise ConfigError("report_db", "is required", hint="name the report database")
    outbox = ReportOutbox(args.report or default_report_path(), url, station_id(args))
    result = outbox.sync()
    ctx.out.result(
        {"sent": result.sent_lines, "waiting": len(outbox.pending())},
        f"{result.sent_lines} record(s) sent; the database has every record of the report",
    )
    return EXIT_OK


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def devices_command(args: argparse.Namespace, ctx: CliContext) -> int:
    path = args.report or default_report_path()
    try:
        records = ReportLog(path).records()
    except (OSError, ValueError) as err:
        raise FlasherError(f"The bench report {path} cannot be read: {err}.") from None
    found = unflashed_devices(records)
    deleted: list[str] = []
    if args.delete_unflashed and found:
        deleted = _delete(args, ctx, [str(r["device_uuid"]) for r in found])
    rows: list[dict[str, Any]] = [
        {
            "uuid": r["device_uuid"],
            "card": r.get("card"),
            "timestamp": r.get("timestamp"),
            "error": (r.get("error") or {}).get("code"),
            "deleted": r["device_uuid"] in deleted,
        }
        for r in found
    ]
    text = "\n".join(
        f"{row['uuid']}  card {row['card']}  {row['timestamp']}  {row['error']}"
        + ("  deleted" if row["deleted"] else "")
        for row in rows
    )
    ctx.out.result(rows, text or "No registered device is waiting for a card.")
    return EXIT_OK


def _delete(args: argparse.Namespace, ctx: CliContext, uuids: list[str]) -> list[str]:
    from flasher.balena.registration import FleetCredentials, Registrar
    from flasher.errors import CatalogError

    if getattr(args, "fleet", None) is None:
        raise ConfigError("fleet", "is required to delete devices", hint="add --fleet ID")
    session = ctx.session()
    registrar = Registrar(session, FleetCredentials(int(args.fleet), "", None))
    deleted = []
    for uuid in uuids:
        try:
            registrar.delete(uuid)
        except CatalogError as err:
            if not isinstance(err, ApiError) or err.uuid != uuid:
                raise
            continue  # already gone
        deleted.append(uuid)
    return deleted
