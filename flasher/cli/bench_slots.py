"""`flasher bench`: which cards the bench takes (its slots, buses and card sizes) and the
DrivePolicy they make (flasher.bench.policy does the choosing)."""

from __future__ import annotations

import argparse
import re

from flasher.bench.policy import DEFAULT_BUSES, DrivePolicy, SlotPattern
from flasher.drives.constraints import LARGE_DRIVE_BYTES
from flasher.errors import ConfigError

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?", re.IGNORECASE)


def add_arguments(bench: argparse._ArgumentGroup) -> None:
    bench.add_argument(
        "--slot",
        dest="slots",
        action="append",
        default=[],
        metavar="[NAME=]PATTERN",
        help="a bench slot: glob over /dev/disk/by-path names or /dev paths, with an optional "
        "name (left=PATTERN) shown in the view, the report and {slot} "
        "(repeatable; numbered in order; default: every USB/SD slot)",
    )
    bench.add_argument(
        "--bus",
        dest="buses",
        action="append",
        metavar="BUS",
        help="transport to take cards from (repeatable; default: usb and mmc, "
        "plus drives flagged removable)",
    )
    bench.add_argument("--min-size", metavar="SIZE", help="skip cards smaller than this, e.g. 8G")
    bench.add_argument(
        "--max-size",
        metavar="SIZE",
        help=f"skip drives larger than this (default {LARGE_DRIVE_BYTES // 10**9}G; "
        "'none' for no limit)",
    )


def parse_size(text: str | None, field: str) -> int | None:
    """Bytes for "8G", "7.5GB", "512M", "8GiB" or a plain number; None for None or "none"."""
    if text is None or text.strip().lower() == "none":
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(field, f"'{text}' is not a size such as 8G, 512M or 8GiB")
    number, unit, binary = match.groups()
    power = "kmgt".find(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def policy(args: argparse.Namespace) -> DrivePolicy:
    max_size = LARGE_DRIVE_BYTES if args.max_size is None else parse_size(args.max_size, "max_size")
    return DrivePolicy(
        slots=tuple(SlotPattern.parse(text) for text in args.slots),
        buses=frozenset(args.buses) if args.buses else DEFAULT_BUSES,
        min_size_bytes=parse_size(args.min_size, "min_size") or 0,
        max_size_bytes=max_size,
    )
