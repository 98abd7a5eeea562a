"""What a bench station reports while it runs: per-slot card events and the shared preparation.

Values only (frozen dataclasses); faces render them. `CardUpdate` carries the core's own events
(phase, progress with speed and ETA, log) for one card. Imports only the standard library and
flasher's value modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flasher.bench.policy import Slot
from flasher.bench.report import CardRecord
from flasher.events import Event
from flasher.models import Drive


@dataclass(frozen=True)
class StationUpdate:
    """A shared step before the first card: resolving, downloading, unpacking, configuring."""

    event: Event


@dataclass(frozen=True)
class StationReady:
    """The image is prepared; cards inserted from now on (and any waiting) are flashed."""

    image: Mapping[str, Any] = field(default_factory=dict)
    report_path: str | None = None


@dataclass(frozen=True)
class CardInserted:
    """A card the station took; `card` is its number in the report."""

    slot: Slot
    drive: Drive
    card: int


@dataclass(frozen=True)
class CardSkipped:
    """A drive that appeared but will not be flashed, and why; `in_bench` when it sits in one
    of the bench's slots (a wrong card there needs the operator; another drive does not)."""

    slot: Slot
    drive: Drive
    reason: str
    in_bench: bool = True


@dataclass(frozen=True)
class CardUpdate:
    """Phase, progress or log of the card in `slot`."""

    slot: Slot
    event: Event


@dataclass(frozen=True)
class CardFinished:
    """A card ended (verified, or failed with a reason); its report record."""

    slot: Slot
    record: CardRecord


@dataclass(frozen=True)
class CardRemoved:
    """A card left its slot; `during_write` when that happened before it was finished."""

    slot: Slot
    drive: Drive
    during_write: bool


BenchEvent = (
    StationUpdate
    | StationReady
    | CardInserted
    | CardSkipped
    | CardUpdate
    | CardFinished
    | CardRemoved
)
BenchCallback = Callable[[BenchEvent], None]


def ignore_bench_event(_event: BenchEvent) -> None:
    """The default callback: drop everything."""
