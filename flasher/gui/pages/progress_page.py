"""While flashing and after: the shared steps (download, unpack, configure) on top, then one
card per target with its own progress bar, phase, speed and ETA; at the end each card's result
(bytes written, time, verified) or its error in plain words with a Details button, and Retry
for the targets that failed.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from flasher.errors import Cancelled
from flasher.events import Phase
from flasher.gui.controller import FlashController
from flasher.gui.progress import (
    SHARED_PHASES,
    FlashState,
    TargetStatus,
    error_words,
    job_count_words,
    overall_line,
    shared_line,
    status_line,
)
from flasher.gui.qtmodels import drive_location
from flasher.gui.theme import Accent, em, icon, tint
from flasher.gui.widgets import Banner, heading, note
from flasher.models import Drive

BAR_STEPS = 1000
WRITE_PHASES = (Phase.WRITING, Phase.SYNCING, Phase.VERIFYING)


class TargetCard(QFrame):
    """One target: title, location, bar, status line, and (when failed) the error."""

    details_requested = Signal(str)
    retry_requested = Signal(str)

    def __init__(
        self,
        status: TargetStatus,
        drive: Drive | None,
        words: Callable[[BaseException | None], tuple[str, str | None]] = error_words,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.path = status.path
        self.words = words
        self._state: tuple[str, Accent | None] | None = None
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAccessibleName(f"target {status.label}")
        self.mark = QLabel(self)
        self.title = QLabel(status.label, self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.location = note(drive_location(drive) if drive else status.path, self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, BAR_STEPS)
        self.bar.setTextVisible(False)
        self.bar.setAccessibleName(f"progress of {status.label}")
        self.status = QLabel(self)
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        tint(self.error, QPalette.ColorRole.WindowText, Accent.ERROR)
        self.hint = note("", self)
        self.details = QPushButton(icon("info"), "Details…", self)
        self.details.clicked.connect(lambda: self.details_requested.emit(self.path))
        self.retry = QPushButton(icon("retry"), "Retry", self)
        self.retry.clicked.connect(lambda: self.retry_requested.emit(self.path))
        top = QHBoxLayout()
        top.addWidget(self.mark)
        top.addWidget(self.title, 1)
        top.addWidget(self.status)
        body = QVBoxLayout(self)
        body.addLayout(top)
        body.addWidget(self.location)
        body.addWidget(self.bar)
        failed = QHBoxLayout()
        text = QVBoxLayout()
        text.addWidget(self.error)
        text.addWidget(self.hint)
        failed.addLayout(text, 1)
        failed.addWidget(self.details, 0, Qt.AlignmentFlag.AlignTop)
        failed.addWidget(self.retry, 0, Qt.AlignmentFlag.AlignTop)
        body.addLayout(failed)
        self.update_from(status, running=True)

    def update_from(self, status: TargetStatus, *, running: bool) -> None:
        self.status.setText(status_line(status))
        result = status.result
        fraction = status.fraction
        if result is None and fraction is None and status.phase not in (None, Phase.DONE):
            self.bar.setRange(0, 0)  # busy: a phase without a byte count (syncing)
        else:
            self.bar.setRange(0, BAR_STEPS)
            self.bar.setValue(round((fraction or 0.0) * BAR_STEPS))
        failed = (result is not None and not result.ok) or status.phase is Phase.FAILED
        cancelled = result is not None and isinstance(result.error, Cancelled)
        if result is not None and result.ok:
            self.bar.setValue(BAR_STEPS)
            self._show_state("ok", Accent.SUCCESS)
        elif cancelled:
            self._show_state("info", None)
        elif failed:
            self._show_state("error", None)
        else:
            self._show_state("ok" if status.phase is Phase.DONE else "flash", None)
        self.bar.setVisible(not failed)
        failed = result is not None and not result.ok and not cancelled
        message, hint = self.words(result.error if result is not None else None)
        if failed and status.phase is Phase.FAILED and result is not None and result.error is None:
            message, hint = "This target failed; see the job's error above.", None
        if cancelled:
            hint = "Left unbootable on purpose: flash it again to use it."
        self.error.setText(message if failed else "")
        self.hint.setText(hint or "")
        for widget in (self.error, self.details):
            widget.setVisible(failed)
        self.hint.setVisible((failed or cancelled) and bool(hint))
        self.retry.setText("Flash &again" if cancelled else "&Retry")
        self.retry.setVisible((failed or cancelled) and not running)

    def _show_state(self, mark: str, bar_accent: Accent | None) -> None:
        """Icon and bar colour; redrawn only when they change (progress arrives often)."""
        if (mark, bar_accent) == self._state:
            return
        self._state = (mark, bar_accent)
        size = em(self, 1.2)
        self.mark.setPixmap(icon(mark).pixmap(size, size))
        if bar_accent is None:
            self.bar.setPalette(QPalette())
        else:
            tint(self.bar, QPalette.ColorRole.Highlight, bar_accent)


class ProgressPage(QWidget):
    details_requested = Signal(str)  # a target path, or "" for the job
    log_requested = Signal()
    done_requested = Signal()
    again_requested = Signal()

    def __init__(self, controller: FlashController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.cards: dict[str, TargetCard] = {}
        self.cancel_question: QMessageBox | None = None
        layout = QVBoxLayout(self)
        self.title = heading("Flashing", self)
        layout.addWidget(self.title)
        self.subtitle = note("", self)
        layout.addWidget(self.subtitle)
        # All cards together: one bar, the average speed and the time so far.
        overall = QHBoxLayout()
        self.overall_bar = QProgressBar(self)
        self.overall_bar.setRange(0, BAR_STEPS)
        self.overall_bar.setTextVisible(False)
        self.overall_bar.setAccessibleName("overall progress")
        self.overall_label = QLabel(self)
        overall.addWidget(self.overall_bar, 1)
        overall.addWidget(self.overall_label)
        layout.addLayout(overall)
        self.shared_label = QLabel(self)
        self.shared_bar = QProgressBar(self)
        self.shared_bar.setTextVisible(False)
        self.shared_bar.setAccessibleName("download and preparation progress")
        layout.addWidget(self.shared_label)
        layout.addWidget(self.shared_bar)
        self.banner = Banner(self)
        self.banner.details_requested.connect(lambda: self.details_requested.emit(""))
        layout.addWidget(self.banner)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        holder = QWidget(scroll)
        self.card_layout = QVBoxLayout(holder)
        self.card_layout.setContentsMargins(0, 0, 0, 0)
        self.card_layout.addStretch(1)
        scroll.setWidget(holder)
        layout.addWidget(scroll, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.cancel = QPushButton("&Cancel", self)
        self.cancel.clicked.connect(self._cancel)
        self.retry = QPushButton(icon("retry"), "&Retry failed", self)
        self.retry.clicked.connect(controller.retry_failed)
        self.log_button = QPushButton(icon("info"), "Show &log…", self)
        self.log_button.clicked.connect(self.log_requested)
        self.again = QPushButton("Flash &another", self)
        self.again.clicked.connect(self.again_requested)
        self.done = QPushButton("&Done", self)
        self.done.clicked.connect(self.done_requested)
        buttons.insertWidget(0, self.log_button)
        for button in (self.cancel, self.retry, self.again, self.done):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        controller.flash_started.connect(self._started)
        controller.target_changed.connect(self._target_changed)
        controller.job_changed.connect(self._job_changed)
        controller.flash_finished.connect(self._finished)
        controller.cards_ejected.connect(self._ejected)

    def _cancel(self) -> None:
        """Before anything is written, cancel at once; once a card is being written, ask."""
        job = self.controller.job
        writing = job is not None and any(
            t.result is None and t.phase in WRITE_PHASES for t in job.targets.values()
        )
        if not writing:
            self._cancel_now()
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Stop writing?",
            "Stop writing? Cards being written are left unbootable until they are flashed again.",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        self.stop_button = box.addButton("&Stop writing", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("&Keep writing", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.setEscapeButton(keep)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.buttonClicked.connect(
            lambda button: self._cancel_now() if button is self.stop_button else None
        )
        box.finished.connect(lambda _r: setattr(self, "cancel_question", None))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.cancel_question = box
        box.open()

    def _cancel_now(self) -> None:
        self.cancel.setEnabled(False)
        self.cancel.setText("Cancelling…")
        self.controller.cancel_flash()

    def _started(self) -> None:
        job = self.controller.job
        assert job is not None
        drives = {d.path: d for d in self.controller.drives.drives}
        for path in list(self.cards):
            if path not in job.targets:
                self.cards.pop(path).deleteLater()
        for status in job.targets.values():
            card = self.cards.get(status.path)
            if card is None:
                card = self.cards[status.path] = TargetCard(
                    status, drives.get(status.path), self.controller.error_words, self
                )
                card.details_requested.connect(self.details_requested)
                card.retry_requested.connect(lambda p: self.controller.retry([p]))
                self.card_layout.insertWidget(self.card_layout.count() - 1, card)
            card.update_from(status, running=True)
        self.banner.hide()
        self.cancel.setEnabled(True)
        self.cancel.setText("&Cancel")
        self.cancel.setDefault(True)
        for button, visible in (
            (self.cancel, True),
            (self.log_button, False),
            (self.retry, False),
            (self.again, False),
            (self.done, False),
        ):
            button.setVisible(visible)
        self.title.setText(f"Flashing {job_count_words(job)}")
        selection = self.controller.selection
        self.subtitle.setText(selection.title if selection else "")
        self.cancel.setFocus()

    def _target_changed(self, path: str) -> None:
        job = self.controller.job
        card = self.cards.get(path)
        if job is not None and card is not None:
            card.update_from(job.targets[path], running=self.controller.flashing)
        self._job_changed()

    def _job_changed(self) -> None:
        job = self.controller.job
        if job is None:
            return
        writing = job.state in (FlashState.WRITING, FlashState.VERIFYING)
        self.overall_bar.setVisible(writing)
        self.overall_label.setVisible(writing or job.state.finished)
        if writing or job.state.finished:
            self.overall_bar.setValue(round(job.fraction * BAR_STEPS))
            self.overall_label.setText(overall_line(job))
        preparing = job.state is FlashState.PREPARING and job.shared_phase in SHARED_PHASES
        self.shared_label.setVisible(preparing)
        self.shared_bar.setVisible(preparing)
        if preparing:
            self.shared_label.setText(shared_line(job))
            fraction = (
                job.shared_progress.fraction
                if job.shared_progress and job.shared_progress.phase is job.shared_phase
                else None
            )
            if fraction is None:
                self.shared_bar.setRange(0, 0)
            else:
                self.shared_bar.setRange(0, BAR_STEPS)
                self.shared_bar.setValue(round(fraction * BAR_STEPS))

    def _ejected(self, paths: list[str]) -> None:
        for path in paths:
            card = self.cards.get(path)
            if card is not None:
                card.status.setText(f"{card.status.text()} · ejected")
        many = len(self.controller.ejected) > 1
        self.banner.show_message(
            "ok", "You can remove the cards." if many else "You can remove the card."
        )

    def _finished(self) -> None:
        job = self.controller.job
        assert job is not None
        if self.cancel_question is not None:
            self.cancel_question.reject()  # nothing left to stop
        failed = job.failed_targets
        total = len(job.targets)
        ok = total - len(failed)
        verified = sum(1 for t in job.targets.values() if t.result and t.result.verified)
        if job.state is FlashState.DONE:
            self.title.setText("Done" if total == 1 else f"Done: {job_count_words(job)}")
            words = f"{verified} of {total} verified" if verified else "written, not verified"
            self.subtitle.setText(f"{self.subtitle.text().split(' — ')[0]} — {words}")
        elif job.state is FlashState.CANCELLED:
            self.title.setText("Cancelled")
        else:
            self.title.setText(f"{len(failed)} of {total} failed" if ok else "Flashing failed")
        error = job.job_error
        if job.state is FlashState.CANCELLED:
            cancelled = sum(
                1
                for t in job.targets.values()
                if t.result and isinstance(t.result.error, Cancelled)
            )
            self.banner.show_message(
                "info",
                "Cancelled — the card was left unbootable."
                if cancelled == 1
                else "Cancelled — the cards were left unbootable.",
                "Flash again to use it." if cancelled == 1 else "Flash again to use them.",
            )
        elif error is not None:
            message, hint = self.controller.error_words(error)
            self.banner.show_message("error", message, hint, details=True)
        self.shared_label.hide()
        self.shared_bar.hide()
        for path, card in self.cards.items():
            card.update_from(job.targets[path], running=False)
        self.cancel.hide()
        self.log_button.show()
        self.retry.setVisible(bool(failed))
        self.again.show()
        self.done.show()
        (self.retry if failed else self.done).setDefault(True)
        (self.retry if failed else self.done).setFocus()
