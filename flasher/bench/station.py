"""A bench station: prepare the image once, then flash every card inserted into a bench slot.

`Station.run()` prepares the job once (BenchJob.prepare through flasher.pipeline.prepare:
resolve, download, unpack, check the source's integrity, configure, map), watches hotplug
(flasher.drives.monitor), and starts each card the moment it appears, on its own thread with
its own writer (flasher.pipeline.write: the same drive checks, writer and verification as
`flash`), so a slow or failing card never holds back another. Cards inserted while the image
is being prepared wait for it; cards already present when the station starts are left alone
unless `include_present`. A flashed card still in its slot is not flashed again; pulled and
re-inserted, it is. A card pulled before it is finished is reported as DriveGone. Every card
taken gets exactly one report record. Core: never prints, imports no Qt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flasher.balena.registration import RegisteredDevice
from flasher.bench.card import Card, card_record
from flasher.bench.cardsteps import CardSteps
from flasher.bench.events import (
    BenchCallback,
    BenchEvent,
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
    CardUpdate,
    StationReady,
    StationUpdate,
    ignore_bench_event,
)
from flasher.bench.image import BenchJob, CardFacts, check_hostname_template, render_hostname
from flasher.bench.policy import DrivePolicy, Slot, card_identity
from flasher.bench.report import CardRecord, ReportLog
from flasher.drives.discovery import find_drive, list_drives
from flasher.drives.monitor import DriveAction, DriveEvent, DriveMonitor
from flasher.errors import Cancelled, ConfigError, DriveGone, FlasherError
from flasher.events import CancelToken, Event, EventCallback, Log, Phase, PhaseChanged
from flasher.heap import release_free_memory
from flasher.models import Drive
from flasher.pipeline import CardImage, PreparedJob, accept_warnings, check, write
from flasher.provider import ImageProvider
from flasher.writer.client import TargetResult
from flasher.writer.launchers import Launcher
from flasher.writer.shared import SharedHelper

_log = logging.getLogger(__name__)
PRESENT_REASON = "was in the slot when the station started; pull it and insert it again to flash it"


class DriveWatcher(Protocol):
    """What the station needs of a hotplug monitor (flasher.drives.monitor.DriveMonitor)."""

    def start(self, callback: Callable[[DriveEvent], None]) -> None: ...

    def close(self) -> None: ...


def default_watcher() -> DriveWatcher:
    # System drives never even reach the station; its policy refuses them a second time.
    return DriveMonitor(include_system=False, initial=True)


@dataclass(frozen=True)
class StationCounters:
    done: int = 0
    failed: int = 0
    active: int = 0


@dataclass(frozen=True)
class StationSummary:
    done: int
    failed: int
    records: tuple[CardRecord, ...]
    report_path: str | None


class Station:
    """Flashes the job's image onto every card the policy accepts; see the module docstring.

    `launcher` starts the station's one writer helper, which serves every card's write and
    probe (flasher.writer.shared; default: directly when root, else pkexec); a helper that
    dies fails the cards it was serving, and the next card starts a new one.
    `card_limit` ends the run after that many cards. `card_steps` go around each card's write
    (flasher.bench.cardsteps): the capacity probe and device registration after its checks and
    before the write (they may refuse the card), and an after-card step (the boot check) that may
    add to its record before it is reported. `watcher`, `list_present` and `probe` are
    the hotplug monitor, the listing taken at start and the single-drive lookup (defaults:
    udev through flasher.drives).
    """

    def __init__(
        self,
        job: BenchJob,
        provider: ImageProvider,
        *,
        policy: DrivePolicy | None = None,
        report: ReportLog | None = None,
        on_event: BenchCallback = ignore_bench_event,
        launcher: Launcher | None = None,
        card_limit: int | None = None,
        include_present: bool = False,
        watcher: Callable[[], DriveWatcher] = default_watcher,
        list_present: Callable[[], Sequence[Drive]] = list_drives,
        probe: Callable[[str], Drive | None] = find_drive,
        card_steps: CardSteps | None = None,
    ) -> None:
        self.job = job
        self.policy = policy or DrivePolicy()
        if job.hostname_template is not None:
            check_hostname_template(
                job.hostname_template,
                numbered_slots=bool(self.policy.slots),
                slot_titles=[s.name for s in self.policy.patterns],
            )
        if card_limit is not None and card_limit < 1:
            raise ConfigError("once", "must be at least 1 card")
        self.report = report
        self._provider = provider
        self._on_event = on_event
        self._card_limit = card_limit
        self._include_present = include_present
        self._watcher = watcher
        self._list_present = list_present
        self._probe = probe
        self._steps = card_steps
        registers = card_steps is not None and card_steps.registers
        if registers and job.config is None and job.config_from_image is None:
            raise ConfigError("register", "needs a configured image with a fleet")
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._emit_lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = False
        self._accepting = True
        self._started = False
        self._image: PreparedJob | None = None
        self._present: set[tuple[str, str, str, int]] = set()
        self._seen: dict[str, Drive] = {}
        self._cards: dict[str, Card] = {}
        self._active: dict[Card, threading.Thread] = {}
        self._records: list[CardRecord] = []
        self._taken = 0
        self._first_number = (report.count() if report is not None else 0) + 1
        self._fatal: FlasherError | None = None
        self._writer = SharedHelper(launcher)

    # Public API --------------------------------------------------------------------------

    def run(self, cancel: CancelToken | None = None) -> StationSummary:
        """Prepare the image, then flash cards until `cancel`, `drain()` or the card limit.

        Raises what preparing the image raises (nothing is written then), and a report that
        cannot be written (after the cards in progress end). Cancelling stops the cards being
        written (each is left unbootable and recorded as cancelled).
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a Station runs once")
            self._started = True
        cancel = cancel or CancelToken()
        cancel.on_cancel(self._abort)
        if not self._include_present:
            self._present = {card_identity(d) for d in self._list_present()}
        monitor = self._watcher()
        monitor.start(self._on_drive_event)
        try:
            self._prepare(cancel)
            with self._changed:
                while not self._over(cancel):
                    self._changed.wait()
        except BaseException:
            self._abort()
            raise
        finally:
            with self._lock:
                self._accepting = False
            self._ready.set()
            self._join_cards()
            self._writer.close()
            monitor.close()
            if self._image is not None:
                self._image.close()
        if self._fatal is not None:
            raise self._fatal
        return self.summary()

    @property
    def ready(self) -> bool:
        """Whether the image is prepared (cards are being taken)."""
        return self._image is not None

    def drain(self) -> None:
        """Take no more cards; `run` returns once the cards in progress are finished."""
        with self._changed:
            self._accepting = False
            self._changed.notify_all()

    def counters(self) -> StationCounters:
        with self._lock:
            done = sum(1 for r in self._records if r.ok)
            return StationCounters(done, len(self._records) - done, len(self._active))

    def summary(self) -> StationSummary:
        with self._lock:
            counts = self.counters()
            return StationSummary(
                counts.done,
                counts.failed,
                tuple(self._records),
                str(self.report.path) if self.report is not None else None,
            )

    # Preparation and the run loop ---------------------------------------------------------

    def _prepare(self, cancel: CancelToken) -> None:
        job = self.job
        image = job.prepare(
            self._provider, on_event=lambda ev: self._emit(StationUpdate(ev)), cancel=cancel
        )
        release_free_memory()  # what unpacking it left free: every card reads the file
        self._image = image
        try:
            # Started (and, without root, authorised) once, before the first card needs it.
            self._writer.start()
        except FlasherError as err:
            self._emit(StationUpdate(Log("warning", f"{err.message} Each card tries again.")))
        summary = {**image.summary(), "hostname_template": job.hostname_template}
        self._emit(
            StationReady(summary, str(self.report.path) if self.report is not None else None)
        )
        self._ready.set()

    def _over(self, cancel: CancelToken) -> bool:
        if cancel.cancelled or self._fatal is not None:
            return True
        limit_reached = self._card_limit is not None and self._taken >= self._card_limit
        return (limit_reached or not self._accepting) and not self._active

    def _abort(self) -> None:
        with self._changed:
            self._stopping = True
            self._accepting = False
            cards = list(self._active)
            self._changed.notify_all()
        for card in cards:
            card.cancel.cancel()

    def _join_cards(self) -> None:
        while True:
            with self._lock:
                threads = list(self._active.values())
            if not threads:
                return
            for thread in threads:
                thread.join()

    def _emit(self, event: BenchEvent) -> None:
        with self._emit_lock:
            try:
                self._on_event(event)
            except Exception:
                # A face's bug must not stop the hotplug thread or a card's writer; the bench
                # keeps flashing and the report keeps every record.
                _log.exception("the bench's event callback failed on %s", type(event).__name__)

    # Hotplug -----------------------------------------------------------------------------

    def _on_drive_event(self, event: DriveEvent) -> None:
        drive = event.drive
        if event.action is DriveAction.ADD:
            self._inserted(drive)
        elif event.action is DriveAction.REMOVE:
            self._removed(drive)
        else:
            before = self._seen.get(drive.path)
            # A swap faster than one listing shows up as a change of identity.
            if before is None or card_identity(before) != card_identity(drive):
                if before is not None:
                    self._removed(before)
                self._inserted(drive)

    def _slot(self, drive: Drive) -> Slot:
        return self.policy.slot_of(drive) or Slot(
            name=drive.by_path[0] if drive.by_path else drive.path, device=drive.path
        )

    def _inserted(self, drive: Drive) -> None:
        slot = self._slot(drive)
        with self._lock:
            self._seen[drive.path] = drive
            reason = self._refusal(drive)
            if reason is None:
                card = Card(n=self._first_number + self._taken, slot=slot, drive=drive)
                self._taken += 1
                self._cards[drive.path] = card
                thread = threading.Thread(
                    target=self._flash,
                    args=(card,),
                    daemon=True,
                    name=f"flasher-bench-{slot.label}",
                )
                self._active[card] = thread
                thread.start()
        if reason is not None:
            self._emit(CardSkipped(slot, drive, reason, self.policy.in_bench(drive)))

    def _refusal(self, drive: Drive) -> str | None:
        """Why the station does not take `drive` now (None: it does); call under the lock."""
        reason = self.policy.refusal(drive)
        if reason is not None:
            return reason
        identity = card_identity(drive)
        if identity in self._present:
            self._present.discard(identity)  # once pulled and re-inserted, it is a new card
            return PRESENT_REASON
        if not self._accepting:
            return "the station is not taking cards any more"
        if self._card_limit is not None and self._taken >= self._card_limit:
            return f"the station has taken its {self._card_limit} cards"
        return None

    def _removed(self, drive: Drive) -> None:
        with self._lock:
            card = self._cards.get(drive.path)
            during = card is not None and card in self._active and not card.finished
        if card is not None and during and self._still_there(card.drive):
            return  # a stale listing, not a pulled card
        with self._lock:
            self._seen.pop(drive.path, None)
            self._present.discard(card_identity(drive))
            if card is not None:
                del self._cards[drive.path]
                card.removed = during
        if card is not None:
            if during:
                card.cancel.cancel()
            self._emit(CardRemoved(card.slot, drive, during))
        elif self.policy.in_bench(drive):
            self._emit(CardRemoved(self._slot(drive), drive, False))

    def _still_there(self, drive: Drive) -> bool:
        now = self._probe(drive.path)
        return now is not None and card_identity(now) == card_identity(drive)

    # One card ----------------------------------------------------------------------------

    def _flash(self, card: Card) -> None:
        # Announced from the card's own thread, so it comes before any of the card's events.
        self._emit(CardInserted(card.slot, card.drive, card.n))
        started = time.monotonic()
        card_image: CardImage | None = None
        try:
            self._ready.wait()
            image = self._image
            if image is None or card.cancel.cancelled:
                raise Cancelled("The station stopped before this card was written.")
            device = self._before_write(card, image)
            card_image = self._card_image(card, image, device)
            # Consent was given for the whole bench: warnings are logged, a mounted card is
            # simply unmounted.
            (result,) = write(
                image,
                [card.drive],
                card=card_image,
                verify=self.job.verify,
                confirm=accept_warnings,
                on_event=self._card_events(card),
                cancel=card.cancel,
                launcher=self._writer,
            ).results
        except FlasherError as err:
            result = TargetResult(card.drive.path, False, error=err)
        except Exception as err:  # one card's surprise must not take the bench down
            result = TargetResult(
                card.drive.path,
                False,
                error=FlasherError(
                    f"Unexpected error: {type(err).__name__}: {err}",
                    hint="Please report this with the bench report line.",
                ),
            )
        error = self._explain(card, result)
        record = card_record(
            card, self._image, card_image, result, error, time.monotonic() - started
        )
        steps = self._steps
        if steps is not None and steps.after_write and not card.cancel.cancelled:
            # powering off, the boot check; the card's thread waits for them, the other slots
            # do not, and the card may leave its slot meanwhile (to boot a device)
            card.finished = True
            record = steps.after(
                record, card.drive, on_event=self._card_events(card), cancel=card.cancel
            )
        self._finish(card, record)

    def _before_write(self, card: Card, image: PreparedJob) -> RegisteredDevice | None:
        """The card steps (capacity probe, registration), after the card's checks; the device
        registered for the card, if any."""
        if self._steps is None or not self._steps.before_write:
            return None
        events = self._card_events(card)
        # Checked first, so a card the write would refuse is neither probed nor registered.
        check(image, [card.drive], confirm=accept_warnings, on_event=events)
        return self._steps.run(
            card.drive,
            card.outcome,
            image.config,
            on_event=events,
            cancel=card.cancel,
            launcher=self._writer,
        )

    def _card_image(
        self, card: Card, image: PreparedJob, device: RegisteredDevice | None
    ) -> CardImage:
        template = self.job.hostname_template
        hostname = (
            None
            if template is None
            else render_hostname(template, CardFacts(card.n, card.slot, card.drive, card.date))
        )
        return image.card(hostname=hostname, device=device)

    def _card_events(self, card: Card) -> EventCallback:
        """The card's events, as CardUpdates; a phase without a target is this card's."""

        def emit(event: Event) -> None:
            if isinstance(event, PhaseChanged):
                if event.target is None:
                    event = PhaseChanged(event.phase, card.drive.path)
                card.writing = card.writing or event.phase is Phase.WRITING
            self._emit(CardUpdate(card.slot, event))

        return emit

    def _explain(self, card: Card, result: TargetResult) -> FlasherError | None:
        """The error to record: a write that failed because the card was pulled says so."""
        if result.ok:
            return None
        err = result.error or FlasherError("The card failed without a reason.")
        if card.removed or (not self._stopping and not self._still_there(card.drive)):
            return DriveGone(
                f"The card in {card.slot.label} was removed before it was finished.",
                hint="Insert it again to flash it from the start.",
                target=card.drive.path,
                cause=err.code,
            )
        if self._stopping and isinstance(err, Cancelled) and card.writing:
            return Cancelled(
                "The station was stopped while this card was written; it was left unbootable.",
                target=card.drive.path,
            )
        return err

    def _finish(self, card: Card, record: CardRecord) -> None:
        try:
            if self.report is not None:
                self.report.append(record)
        except FlasherError as err:
            with self._lock:
                self._fatal = err
                self._accepting = False
        with self._lock:
            self._records.append(record)
        self._emit(CardFinished(card.slot, record))
        with self._changed:
            del self._active[card]
            self._changed.notify_all()
