"""`flasher bench --check-boot`: the options of the bench's boot check and its part of a card's
line (flasher.bench.bootcheck does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from flasher.bench.bootcheck import DEFAULT_ADDRESS_TEMPLATE, BootCheckSettings, boot_checker
from flasher.bench.report import CardRecord
from flasher.events import CancelToken


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("boot check")
    group.add_argument(
        "--check-boot",
        action="store_true",
        help="after each card, wait for the device booted from it (local-mode or unmanaged "
        "devices answer on the LAN) and add what it is to the card's report line",
    )
    group.add_argument(
        "--boot-address",
        metavar="TPL",
        default=DEFAULT_ADDRESS_TEMPLATE,
        help="where to look for it, from {hostname}, {n}, {slot} and {serial} "
        f"(default {DEFAULT_ADDRESS_TEMPLATE})",
    )
    group.add_argument(
        "--boot-timeout",
        metavar="S",
        type=float,
        default=600.0,
        help="seconds to wait for each device (default 600)",
    )


def checker(
    args: argparse.Namespace,
) -> Callable[[CardRecord, CancelToken], CardRecord] | None:
    """The station's after-card step, checked before any I/O; None without --check-boot."""
    if not args.check_boot:
        return None
    settings = BootCheckSettings(args.boot_address, args.boot_timeout)
    settings.validate(hostnames=bool(args.hostname or args.hostname_template))
    return boot_checker(settings)


def describe(boot: dict[str, Any] | None) -> str:
    """The boot check's part of a card's line ("" when there was none)."""
    if boot is None:
        return ""
    if boot.get("up") and not boot.get("problem"):
        return (
            f"; booted as {boot.get('device_type')} {boot.get('os_version')} at "
            f"{boot.get('address')}, first ping after {boot.get('first_ping_s')} s"
        )
    return f"; boot check: {boot.get('problem')}"
