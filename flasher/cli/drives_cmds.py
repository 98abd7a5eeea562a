"""`flasher drives [--all] [--json]`: the drives that can be flashed, as a table or JSON."""

from __future__ import annotations

import argparse
from typing import Any

from flasher.cli.context import CliContext
from flasher.cli.output import human_bytes
from flasher.errors import EXIT_OK
from flasher.models import Drive


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
