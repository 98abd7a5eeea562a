"""One card at a bench station: what is known of it while it is flashed, and its record.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from flasher.bench.cardsteps import CardOutcome
from flasher.bench.policy import Slot
from flasher.bench.report import CardRecord, utc_timestamp
from flasher.errors import FlasherError
from flasher.events import CancelToken
from flasher.models import Drive
from flasher.pipeline import CardImage, PreparedJob
from flasher.writer.client import TargetResult


@dataclass(eq=False)
class Card:
    """A card taken by the station: its number, slot and drive, and how its flash goes."""

    n: int
    slot: Slot
    drive: Drive
    cancel: CancelToken = field(default_factory=CancelToken)
    date: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    removed: bool = False
    writing: bool = False
    finished: bool = False
    outcome: CardOutcome = field(default_factory=CardOutcome)


def card_record(
    card: Card,
    image: PreparedJob | None,
    card_image: CardImage | None,
    result: TargetResult,
    error: FlasherError | None,
    seconds: float,
) -> CardRecord:
    """The report record of `card`: written from `image` (as `card_image`) with `result`,
    `error` the reason it failed (None when good), `seconds` from its start to its end."""
    drive = card.drive
    return CardRecord(
        timestamp=utc_timestamp(),
        card=card.n,
        slot=card.slot.name,
        slot_number=card.slot.number,
        slot_name=card.slot.title,
        device=drive.path,
        serial=drive.serial or None,
        vendor=drive.vendor or None,
        model=drive.model or None,
        size_bytes=drive.size_bytes,
        image_sha256=image.sha256() if image is not None else None,
        device_type=image.identity.device_type if image is not None else None,
        os_version=image.identity.os_version if image is not None else None,
        config_sha256=card_image.config_sha256 if card_image is not None else None,
        hostname=card_image.hostname if card_image is not None else None,
        ok=error is None,
        verified=error is None and result.verified,
        bytes_written=result.bytes_written,
        seconds=seconds,
        write_seconds=result.seconds,
        written_sha256=result.sha256 if error is None else None,
        error_code=error.code if error is not None else None,
        error_message=error.message if error is not None else None,
        error_hint=error.hint if error is not None else None,
        device_uuid=card.outcome.device.uuid if card.outcome.device is not None else None,
        capacity_bytes=(
            card.outcome.capacity.real_bytes if card.outcome.capacity is not None else None
        ),
    )
