"""What the station does to a card around its write: after its checks and before the write,
the capacity probe (counterfeit cards are refused with their real capacity) and registering the
card's own device in the fleet (or reusing one registered for a card that failed); after the
write, powering off a verified card (flasher.drives.eject; never a file or loop device) and an
optional step that may add to the card's record (the boot check, flasher.bench.bootcheck).

`CardSteps.run()` is the station's call before each write; it returns the registered device
(whose uuid and key go into that card's config.json), or None without registration.
`CardSteps.after()` is its call once the card's record is made (when `after_write`). The probe puts
back what it overwrote even though the card is about to be written: the write skips the
image's unused blocks, and a probe tag left there would make the card differ from the image.
Cost: 64 to 128 scattered 4 KiB reads, writes, reads and writes again, and two flushes
(typically a second or two on an SD card), plus up to ~20 small write-flush-read rounds only
on a card found to be fake.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from flasher.balena.registration import FleetCredentials, RegisteredDevice, Registrar
from flasher.balena.session import BalenaSession
from flasher.bench.report import CardRecord
from flasher.drives.eject import eject_refusal, power_off
from flasher.errors import CatalogError, ConfigError
from flasher.events import CancelToken, EventCallback, Log
from flasher.models import DeviceConfig, Drive
from flasher.writer.capacity import counterfeit_error, probe_drive
from flasher.writer.launchers import Launcher
from flasher.writer.probe import DEFAULT_POSITIONS, CapacityReport


def unflashed_devices(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's records of devices registered for a card that then failed, and never
    flashed since (the newest record per uuid decides), oldest first."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        uuid = record.get("device_uuid")
        if isinstance(uuid, str) and uuid:
            last.pop(uuid, None)
            last[uuid] = record
    return [r for r in last.values() if not r.get("ok")]


class UnflashedDevices:
    """Registered-but-unflashed devices to give to the next cards, each at most once."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self._uuids = [str(r["device_uuid"]) for r in unflashed_devices(records)]
        self._lock = threading.Lock()

    def take(self) -> str | None:
        with self._lock:
            return self._uuids.pop(0) if self._uuids else None


@dataclass
class CardOutcome:
    """What the steps found out about one card (kept for its report record)."""

    capacity: CapacityReport | None = None
    device: RegisteredDevice | None = None


AfterCard = Callable[[CardRecord, CancelToken], CardRecord]
PowerOff = Callable[[str], str | None]  # flasher.drives.eject.power_off: None, or why not


class CardSteps:
    """`register_session` (the fleet's balena API) turns registration on; the fleet and its
    provisioning key come from the station's configuration, known once the image is ready.
    `eject` powers off each verified card (through `power_off`) and records whether it was.
    `after_card` runs on the card's thread once its record is made (the other slots carry on;
    the card may leave its slot meanwhile) and returns the record to report."""

    def __init__(
        self,
        *,
        probe_capacity: bool = True,
        probe_positions: int = DEFAULT_POSITIONS,
        register_session: BalenaSession | None = None,
        reuse: UnflashedDevices | None = None,
        launcher: Launcher | None = None,
        after_card: AfterCard | None = None,
        eject: bool = False,
        power_off: PowerOff = power_off,
    ) -> None:
        self.probe_capacity = probe_capacity
        self.probe_positions = probe_positions
        self.register_session = register_session
        self.reuse = reuse
        self.launcher = launcher
        self.after_card = after_card
        self.eject = eject
        self._power_off = power_off
        self._registrar: Registrar | None = None
        self._lock = threading.Lock()

    @property
    def registers(self) -> bool:
        return self.register_session is not None

    @property
    def after_write(self) -> bool:
        """Whether `after` does anything (an eject or an after-card step)."""
        return self.eject or self.after_card is not None

    @property
    def before_write(self) -> bool:
        """Whether `run` does anything (a probe or a registration)."""
        return self.probe_capacity or self.registers

    def _device(self, config: DeviceConfig | None) -> RegisteredDevice:
        assert self.register_session is not None
        if config is None:
            raise ConfigError("register", "needs a configured image with a fleet")
        with self._lock:
            if self._registrar is None:
                creds = FleetCredentials.from_config(config)
                self._registrar = Registrar(self.register_session, creds)
            registrar = self._registrar
        while self.reuse is not None and (uuid := self.reuse.take()) is not None:
            try:
                return registrar.renew(uuid)
            except CatalogError:
                continue  # deleted meanwhile: take the next, or register a new one
        return registrar.register()

    def run(
        self,
        drive: Drive,
        outcome: CardOutcome,
        config: DeviceConfig | None,
        *,
        on_event: EventCallback,
        cancel: CancelToken,
        launcher: Launcher | None = None,
    ) -> RegisteredDevice | None:
        """Probe, then register; fills `outcome` as it goes (so a failure keeps what was done).
        `launcher` (the station's shared helper) starts the probe instead of `self.launcher`."""
        if self.probe_capacity:
            outcome.capacity = probe_drive(
                drive,
                positions=self.probe_positions,
                restore=True,
                launcher=launcher or self.launcher,
                on_event=on_event,
                cancel=cancel,
            )
            if not outcome.capacity.ok:
                raise counterfeit_error(drive, outcome.capacity)
        if self.register_session is None:
            return None
        cancel.check()
        outcome.device = self._device(config)
        return outcome.device

    def after(
        self, record: CardRecord, drive: Drive, *, on_event: EventCallback, cancel: CancelToken
    ) -> CardRecord:
        """The card's record once it was powered off (if asked and verified) and the
        after-card step has added to it."""
        if self.eject:
            record = replace(record, ejected=self._eject(record, drive, on_event))
        return record if self.after_card is None else self.after_card(record, cancel)

    def _eject(self, record: CardRecord, drive: Drive, on_event: EventCallback) -> bool:
        if not (record.ok and record.verified):
            return False  # a failed or unverified card stays as it is, for a look at it
        problem = eject_refusal(drive) or self._power_off(drive.path)
        if problem is not None:
            on_event(Log("warning", f"not powered off: {problem}", drive.path))
            return False
        on_event(Log("info", "powered off; the card can be pulled out", drive.path))
        return True
