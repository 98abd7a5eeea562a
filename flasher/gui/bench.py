"""The bench station in the window: the same core `flasher bench` runs (flasher.bench.station),
started from the wizard's choices (image and settings), its events folded into the shared
Board view model, with start, stop (finish the cards being written, take no new ones) and
abort (cancel them too, when the window closes).

Owns no widgets; the Bench page binds to its signals. Imports Qt, the bench core and the
Bridge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from PySide6.QtCore import QObject, Signal

from flasher.bench.board import Board
from flasher.bench.events import BenchCallback, BenchEvent
from flasher.bench.image import BenchJob
from flasher.bench.policy import DrivePolicy
from flasher.bench.report import ReportLog, default_report_path
from flasher.bench.station import Station, StationSummary
from flasher.errors import Cancelled
from flasher.events import CancelToken, EventCallback
from flasher.gui.bridge import Bridge, Failure, Task
from flasher.models import DeviceConfig
from flasher.provider import ImageProvider, SourceSpec
from flasher.writer.launchers import Launcher

REPORT_LINES = 5


@dataclass
class BenchSetup:
    """Which cards the bench takes, each card's hostname and where its report goes (tests
    narrow the policy to their loop devices)."""

    policy: DrivePolicy
    report_path: str | None = None  # None: the CLI's default report file
    include_present: bool = False  # also flash the cards already in the readers at start
    hostname_template: str | None = None  # each card's own hostname, e.g. "kiosk-{n:03d}"


class BenchController(QObject):
    changed = Signal()
    running_changed = Signal(bool)
    failed = Signal(object)  # Failure

    def __init__(
        self,
        bridge: Bridge,
        provider: ImageProvider,
        launcher: Launcher | None,
        setup: BenchSetup,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._provider = provider
        self._launcher = launcher
        self.setup = setup
        self.board = Board()
        self.report_lines: list[str] = []
        self._task: Task | None = None
        self._station: Station | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, source: SourceSpec, config: DeviceConfig | None, *, verify: bool) -> None:
        """Prepare the image once, then flash every card inserted into the bench."""
        if self._task is not None:
            return
        self.board = Board()
        self.report_lines = []
        job = BenchJob(
            source=source,
            config=config,
            verify=verify,
            hostname_template=self.setup.hostname_template,
        )
        report = ReportLog(self.setup.report_path or default_report_path())
        provider, policy, launcher = self._provider, self.setup.policy, self._launcher
        present = self.setup.include_present

        def work(emit: EventCallback, cancel: CancelToken) -> StationSummary:
            # The task queues any value to the GUI thread, bench events as well as core ones.
            on_event = cast(BenchCallback, emit)
            station = Station(
                job,
                provider,
                policy=policy,
                report=report,
                on_event=on_event,
                launcher=launcher,
                include_present=present,
            )
            self._station = station  # drain() is safe from the GUI thread
            return station.run(cancel)

        task = self._task = self._bridge.run("bench", work)
        task.core_event.connect(self._event)
        task.failed.connect(self._failed)
        task.finished.connect(self._finished)
        self.running_changed.emit(True)
        self.changed.emit()

    def stop(self) -> None:
        """Take no new cards; the cards being written are finished."""
        if self._station is not None:
            self._station.drain()

    def abort(self) -> None:
        """Stop now: cards being written are cancelled (left unbootable)."""
        if self._task is not None:
            self._task.cancel()

    def _event(self, event: BenchEvent) -> None:
        self.board.handle(event)
        record = getattr(event, "record", None)
        if record is not None:
            result = "ok" if record.ok else f"failed: {record.error_message or 'failed'}"
            self.report_lines = [
                *self.report_lines[-(REPORT_LINES - 1) :],
                f"card {record.card} · {record.slot_name or record.slot} · {result}",
            ]
        self.changed.emit()

    def _failed(self, failure: Failure) -> None:
        if not isinstance(failure.error, Cancelled):
            self.failed.emit(failure)

    def _finished(self) -> None:
        self._task = None
        self._station = None
        self.running_changed.emit(False)
        self.changed.emit()
