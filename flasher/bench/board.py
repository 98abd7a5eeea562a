"""The station at a glance: one row per bench slot and running totals, folded from BenchEvents.

A view model shared by the faces (terminal view, GUI): it keeps, per slot, the card in it, its
phase, progress, speed and ETA, and how its last card ended. Imports only the standard library
and flasher's value modules; never prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flasher.bench.events import (
    BenchEvent,
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
    CardUpdate,
    StationReady,
    StationUpdate,
)
from flasher.bench.policy import Slot
from flasher.events import Log, PhaseChanged, Progress
from flasher.models import Drive

WAITING = "waiting"  # taken, waiting for the image to be prepared
EMPTY = "empty"
SKIPPED = "skipped"


def describe_card(drive: Drive) -> str:
    """ "SanDisk SD 31.9 GB": what a person sees on the card or the reader."""
    name = " ".join(p for p in (drive.vendor, drive.model) if p) or drive.path
    return f"{name} {drive.size_bytes / 10**9:.1f} GB"


@dataclass(frozen=True)
class SlotRow:
    """One slot's line. `state` is a Phase value, or waiting/empty/skipped; `note` says how the
    last card ended (hostname and speed, or the error), or why a card was skipped."""

    slot: Slot
    state: str = EMPTY
    card: str = ""
    number: int | None = None
    fraction: float | None = None
    speed_bps: float | None = None
    eta_s: float | None = None
    note: str = ""
    failed: bool = False


class Board:
    """Feed it every BenchEvent with `handle`; read `rows()`, the totals and the shared stage."""

    def __init__(self) -> None:
        self._rows: dict[str, SlotRow] = {}
        self.done = 0
        self.failed = 0
        self.ready = False
        self.stage: str = "starting"
        self.stage_progress: Progress | None = None
        self.report_path: str | None = None
        self.image: Mapping[str, Any] = {}

    @property
    def active(self) -> int:
        return sum(
            1 for r in self._rows.values() if r.state not in (EMPTY, SKIPPED, "done", "failed")
        )

    def rows(self) -> list[SlotRow]:
        """Numbered slots first, in number order, then the others by name."""
        return sorted(
            self._rows.values(),
            key=lambda r: (r.slot.number is None, r.slot.number or 0, r.slot.name),
        )

    def handle(self, event: BenchEvent) -> None:
        if isinstance(event, StationUpdate):
            self._station(event)
        elif isinstance(event, StationReady):
            self.ready = True
            self.stage = "ready"
            self.stage_progress = None
            self.report_path = event.report_path
            self.image = event.image
        elif isinstance(event, CardInserted):
            self._set(
                event.slot,
                SlotRow(
                    event.slot,
                    WAITING if not self.ready else "checking",
                    describe_card(event.drive),
                    event.card,
                ),
            )
        elif isinstance(event, CardSkipped):
            if event.in_bench:
                self._set(
                    event.slot,
                    SlotRow(event.slot, SKIPPED, describe_card(event.drive), note=event.reason),
                )
        elif isinstance(event, CardUpdate):
            self._card(event)
        elif isinstance(event, CardFinished):
            self._finished(event)
        elif isinstance(event, CardRemoved):
            row = self._rows.get(event.slot.name)
            if row is not None and not event.during_write:
                self._set(
                    event.slot,
                    replace(row, state=EMPTY, card="", fraction=None, speed_bps=None, eta_s=None),
                )

    def _set(self, slot: Slot, row: SlotRow) -> None:
        self._rows[slot.name] = row

    def _station(self, event: StationUpdate) -> None:
        inner = event.event
        if isinstance(inner, PhaseChanged):
            self.stage = inner.phase.value
            self.stage_progress = None
        elif isinstance(inner, Progress):
            self.stage = inner.phase.value
            self.stage_progress = inner

    def _card(self, event: CardUpdate) -> None:
        row = self._rows.get(event.slot.name)
        if row is None:
            return
        inner = event.event
        if isinstance(inner, PhaseChanged):
            self._set(
                event.slot,
                replace(row, state=inner.phase.value, fraction=None, speed_bps=None, eta_s=None),
            )
        elif isinstance(inner, Progress):
            self._set(
                event.slot,
                replace(
                    row,
                    state=inner.phase.value,
                    fraction=inner.fraction,
                    speed_bps=inner.speed_bps,
                    eta_s=inner.eta_s,
                ),
            )
        elif isinstance(inner, Log) and inner.level == "warning":
            self._set(event.slot, replace(row, note=inner.message))

    def _finished(self, event: CardFinished) -> None:
        record = event.record
        if record.ok:
            self.done += 1
            parts = ["verified" if record.verified else "written (not verified)"]
            if record.hostname:
                parts.append(record.hostname)
            if record.mb_per_s is not None:
                parts.append(f"{record.mb_per_s} MB/s")
            note = ", ".join(parts)
        else:
            self.failed += 1
            note = record.error_message or "failed"
        row = self._rows.get(event.slot.name, SlotRow(event.slot))
        self._set(
            event.slot,
            replace(
                row,
                state="done" if record.ok else "failed",
                number=record.card,
                fraction=None,
                speed_bps=None,
                eta_s=None,
                note=note,
                failed=not record.ok,
            ),
        )
