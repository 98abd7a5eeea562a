"""`flasher drives [--all] [--json]`: the drives that can be flashed, as a table or JSON.

`flasher drives check DRIVE [--positions N] [--yes]`: the capacity probe (counterfeit cards).
It writes 4 KiB at 64 to 128 places spread over the drive, reads them back with the page cache
bypassed and puts back what was there; exit code 4 when the drive holds less than it claims.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flasher.cli.context import CliContext
from flasher.cli.output import human_bytes
from flasher.error_codes import ProblemCode
from flasher.errors import EXIT_DRIVE, EXIT_OK, ConfigError, DriveRejected
from flasher.models import Drive
from flasher.writer.probe import DEFAULT_POSITIONS, CapacityReport


def drive_flags(drive: Drive) -> list[str]:
    flags = []
    if drive.system:
        flags.append("system")
    if drive.internal:
        flags.append("internal")
    if drive.removable:
        flags.append("removable")
    if drive.read_only:
        flags.append("read-only")
    if drive.mountpoints:
        flags.append("mounted")
    return flags


def drive_to_dict(drive: Drive) -> dict[str, Any]:
    """The stable JSON form of a drive (also used by `flasher flash --json`)."""
    return {
        "path": drive.path,
        "dev": drive.dev,
        "size_bytes": drive.size_bytes,
        "description": drive.description,
        "vendor": drive.vendor,
        "model": drive.model,
        "serial": drive.serial,
        "bus": drive.bus,
        "removable": drive.removable,
        "read_only": drive.read_only,
        "system": drive.system,
        "internal": drive.internal,
        "logical_block_size": drive.logical_block_size,
        "physical_block_size": drive.physical_block_size,
        "by_path": list(drive.by_path),
        "by_id": list(drive.by_id),
        "partitions": [
            {
                "path": p.path,
                "dev": p.dev,
                "mountpoints": list(p.mountpoints),
                "fstype": p.fstype,
                "label": p.label,
            }
            for p in drive.partitions
        ],
        "flags": drive_flags(drive),
    }


def drives_table(drives: list[Drive]) -> str:
    if not drives:
        return "No drives found. Insert an SD card or USB drive (or use --all)."
    rows = [("PATH", "SIZE", "BUS", "MODEL", "FLAGS")]
    for d in drives:
        model = d.description or d.model or "-"
        flags = ",".join(drive_flags(d))
        rows.append((d.path, human_bytes(d.size_bytes), d.bus or "-", model, flags))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_drives(args: argparse.Namespace, ctx: CliContext) -> int:
    from flasher.drives.discovery import list_drives

    drives = list_drives(all=args.all)
    ctx.out.result([drive_to_dict(d) for d in drives], drives_table(drives))
    return EXIT_OK


def register(groups: dict[str, Any]) -> None:
    parser = groups[""].add_parser(
        "drives",
        help="list the drives that can be flashed",
        description="List removable drives that can be flashed. System drives are hidden "
        "unless --all is given; they can never be written.",
    )
    parser.add_argument("--all", action="store_true", help="also show system drives")
    # SUPPRESS keeps a global `flasher --json drives` from being reset by this sub-option.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    parser.set_defaults(handler=cmd_drives)
    sub = parser.add_subparsers(dest="drives_command", metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="probe a drive's real capacity (catches counterfeit cards)",
        description="Write position-tagged 4 KiB blocks at 64-128 places spread over the "
        "drive, read them back bypassing the page cache, and put back what was there. A "
        "counterfeit card (writes past its real capacity wrap around or vanish) is reported "
        "with its real capacity, in seconds. Exit code 4 for a counterfeit card.",
    )
    check.add_argument("drive", metavar="DRIVE", help="the drive, e.g. /dev/sdb")
    check.add_argument(
        "--positions",
        type=int,
        default=DEFAULT_POSITIONS,
        metavar="N",
        help=f"at least this many probe positions (default {DEFAULT_POSITIONS})",
    )
    check.add_argument(
        "--yes", "-y", action="store_true", help="probe without asking (the data is put back)"
    )
    check.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    check.set_defaults(handler=cmd_drives_check)


def _drive_to_check(path: str) -> Drive:
    from flasher.drives.discovery import find_drive

    if os.path.isfile(path):
        return Drive(path=path, size_bytes=os.path.getsize(path))
    drive = find_drive(path)
    if drive is None:
        raise DriveRejected(
            f"There is no drive at {path}.", target=path, problem=ProblemCode.NOT_FOUND
        )
    if drive.system:
        raise DriveRejected(
            f"{path} is a system drive; it is never written.",
            target=path,
            problem=ProblemCode.SYSTEM,
        )
    return drive


def capacity_text(drive: Drive, report: CapacityReport) -> str:
    head = f"{drive.path}: {human_bytes(report.advertised_bytes)} advertised"
    if report.ok:
        return (
            f"{head}, every probed position held its data: OK "
            f"({report.positions} positions, {report.seconds:.2f} s)"
        )
    how = "writes past it wrap around" if report.wrapped else "writes past it are lost"
    return (
        f"{head}, real capacity {human_bytes(report.real_bytes)} ({how}): COUNTERFEIT "
        f"({report.bad_positions} of {report.positions} positions failed, "
        f"{report.seconds:.2f} s)"
    )


def cmd_drives_check(args: argparse.Namespace, ctx: CliContext) -> int:
    from flasher.writer.capacity import probe_drive
    from flasher.writer.probe_service import report_fields

    if not 8 <= args.positions <= 512:
        raise ConfigError("positions", "must be between 8 and 512")
    drive = _drive_to_check(args.drive)
    if not args.yes:
        ctx.require_typed_yes(
            f"Probing {drive.path} writes to it (and puts the data back); confirmation is "
            "required.",
            f"Probing writes test blocks to {drive.path} and puts its data back. "
            "Type 'yes' to probe: ",
            "The drive was not probed.",
        )
    report = probe_drive(drive, positions=args.positions, restore=True, on_event=ctx.out.event)
    ctx.out.result({"drive": drive.path, **report_fields(report)}, capacity_text(drive, report))
    return EXIT_OK if report.ok else EXIT_DRIVE
