"""The bench's boot check: after a card is written, find the device booted from it on the bench
network and add what it is (up, device type, OS version, time to first ping) to the card's
report line.

The device is looked for at an address built from the card's facts (default
`{hostname}.local`, the name the card gave it), with flasher.supervisor's post-flash check. Its
supervisor API answers from the LAN without a key only in local mode (development images) or
when unmanaged; a managed device refuses the connection and is reported as not seen. A device
that never answers is reported with the reason, never left out. Core: never prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from flasher.bench.report import CardRecord
from flasher.errors import ConfigError, FlasherError
from flasher.events import CancelToken
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.transport import DirectTransport
from flasher.supervisor.wait import wait_for_device

_log = logging.getLogger(__name__)
DEFAULT_ADDRESS_TEMPLATE = "{hostname}.local"
_FIELDS = {"hostname": "bench-1", "n": 1, "slot": "1", "serial": "0123456789ab"}


@dataclass(frozen=True)
class BootCheckSettings:
    address_template: str = DEFAULT_ADDRESS_TEMPLATE
    timeout_s: float = 600.0
    poll_interval_s: float = 2.0

    def validate(self, *, hostnames: bool) -> None:
        """Refuse a template that cannot be filled; `hostnames` says whether cards get one."""
        try:
            self.address_template.format(**_FIELDS)
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                "boot_address",
                f"unknown placeholder or bad format: {err}; use {{hostname}}, {{n}}, {{slot}} or "
                "{serial}",
            ) from None
        if "{hostname" in self.address_template and not hostnames:
            raise ConfigError(
                "boot_address",
                "needs a hostname per card, and the cards get none",
                hint="Give the cards a hostname (or a hostname template), or use an address "
                "template without {hostname}.",
            )
        if self.timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ConfigError("boot_timeout", "must be more than 0 seconds")


def address_for(settings: BootCheckSettings, record: CardRecord) -> str:
    return settings.address_template.format(
        hostname=record.hostname or "",
        n=record.card,
        slot=record.slot_name or record.slot_number or record.slot,
        serial=record.serial or "",
    )


def check_boot(
    settings: BootCheckSettings, record: CardRecord, cancel: CancelToken | None = None
) -> dict[str, Any]:
    """Wait for the device of a written card; the result for its report line."""
    if not record.ok:
        return {"checked": False, "up": False, "problem": "the card was not written"}
    address = address_for(settings, record)
    try:
        with SupervisorClient(DirectTransport(address)) as client:
            found = wait_for_device(
                client,
                device_type=record.device_type,
                os_version=record.os_version,
                timeout_s=settings.timeout_s,
                poll_interval_s=settings.poll_interval_s,
                cancel=cancel,
            )
    except (FlasherError, ValueError) as err:
        code = getattr(err, "code", "invalid_address")
        answered = code == "device_mismatch"
        _log.info("card %s: device at %s: %s", record.card, address, err)
        return {"checked": True, "address": address, "up": answered, "problem": str(err),
                "code": code}  # fmt: skip
    return {"checked": True, **found.to_dict(), "address": address}


def boot_checker(
    settings: BootCheckSettings,
) -> Callable[[CardRecord, CancelToken], CardRecord]:
    """What the station calls after each card's result: the record with its `boot` result."""

    def run(record: CardRecord, cancel: CancelToken) -> CardRecord:
        return replace(record, boot=check_boot(settings, record, cancel))

    return run
