"""The main window: three steps (OS, Configure, Targets) with Back/Next, then the Progress view.

Moves between pages, hands each page's result to the controller, asks for the erase
confirmation and shows error details. Keyboard: every control has a mnemonic, Enter in a field
moves on, Escape goes back, Ctrl+Enter is Next/Flash anywhere.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QMimeData, QSettings, QSize, Qt
from PySide6.QtGui import (
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QIcon,
    QKeySequence,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from flasher.gui.bench import BenchController
from flasher.gui.bridge import Failure
from flasher.gui.controller import FlashController
from flasher.gui.dialogs import ConfirmEraseDialog, ErrorDetailsDialog, details_text
from flasher.gui.notify import notify_finished
from flasher.gui.pages.bench_page import BenchPage
from flasher.gui.pages.configure_page import ConfigurePage
from flasher.gui.pages.os_page import OsPage
from flasher.gui.pages.progress_page import ProgressPage
from flasher.gui.pages.targets_page import TargetsPage
from flasher.gui.progress import FlashState, count_words, overall_line, status_line
from flasher.gui.theme import app_icon, em, icon, keep_readable, retint, scaled_font
from flasher.gui.widgets import StepHeader, note

OS, CONFIGURE, TARGETS, PROGRESS, BENCH = range(5)


class MainWindow(QMainWindow):
    def __init__(self, controller: FlashController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        # Ending in the application's name, which the window system would otherwise add again.
        self._base_title = ("Sandbox — " if controller.services.sandbox else "") + "Flasher"
        self.setWindowTitle(self._base_title)
        self.setWindowIcon(app_icon())
        self._reachable = OS
        self._quit_after_flash = False
        self._quit_box: QMessageBox | None = None
        self.dialog: QWidget | None = None
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(em(self, 1.2), em(self, 0.8), em(self, 1.2), em(self, 0.8))
        top = QHBoxLayout()
        logo = QLabel(central)
        logo.setPixmap(app_icon().pixmap(em(self, 2), em(self, 2)))
        name = QLabel("Flasher", central)
        name.setFont(scaled_font(name, 1.5, bold=True))
        top.addWidget(logo)
        top.addWidget(name)
        if controller.services.sandbox:
            badge = note("offline sandbox", central)
            badge.setWordWrap(False)
            badge.setToolTip(
                "The built-in balena API: a sample catalog and synthesized "
                "images; nothing leaves this computer."
            )
            top.addWidget(badge)
        top.addStretch(1)
        self.steps = StepHeader(("Operating system", "Configure", "Targets"), central)
        self.steps.step_clicked.connect(self._go_step)
        top.addWidget(self.steps, 2)
        layout.addLayout(top)
        self.stack = QStackedWidget(central)
        self.os_page = OsPage(controller, self.stack)
        self.configure_page = ConfigurePage(
            controller.services.settings,
            controller.services.device_api_url,
            self.stack,
            has_login=controller.services.has_login,
        )
        self.targets_page = TargetsPage(controller, self.stack)
        self.progress_page = ProgressPage(controller, self.stack)
        services = controller.services
        self.bench = BenchController(
            controller.bridge, services.provider, services.launcher, services.bench, self
        )
        self.bench_page = BenchPage(self.bench, self.stack)
        for page in (
            self.os_page,
            self.configure_page,
            self.targets_page,
            self.progress_page,
            self.bench_page,
        ):
            self.stack.addWidget(page)
        layout.addWidget(self.stack, 1)
        self.nav = QWidget(central)
        nav = QHBoxLayout(self.nav)
        nav.setContentsMargins(0, 0, 0, 0)
        self.summary = note("", self.nav)
        # Why Next is disabled, always said next to it.
        self.why = QLabel(self.nav)
        self.why.setWordWrap(True)
        self.why.setAccessibleName("why Next is disabled")
        self.why.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.back = QPushButton("&Back", self.nav)
        self.next = QPushButton("&Next", self.nav)
        self.back.clicked.connect(self.go_back)
        self.next.clicked.connect(self.go_next)
        nav.addWidget(self.summary, 1)
        nav.addWidget(self.why, 1)
        nav.addWidget(self.back)
        nav.addWidget(self.next)
        layout.addWidget(self.nav)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)  # an image file or URL dropped anywhere opens it
        self.setMinimumSize(em(self, 44), em(self, 30))
        self.resize(em(self, 60), em(self, 44))
        self._restore_size()
        for page in (self.os_page, self.configure_page, self.targets_page):
            page.changed.connect(self._update_nav)
        self.os_page.details_requested.connect(self.show_failure)
        self.os_page.search.returnPressed.connect(self.go_next)
        for edit in self.configure_page.findChildren(QLineEdit):
            edit.returnPressed.connect(self.go_next)
        self.progress_page.details_requested.connect(self._show_flash_details)
        self.progress_page.log_requested.connect(self.show_log)
        self.targets_page.bench_requested.connect(lambda: self._show(BENCH))
        self.bench_page.back_requested.connect(lambda: self._show(TARGETS))
        self.bench_page.start_requested.connect(self._start_bench)
        self.bench.failed.connect(self.show_failure)
        self.progress_page.done_requested.connect(lambda: self._show(TARGETS))
        self.progress_page.again_requested.connect(lambda: self._show(OS))
        controller.flash_finished.connect(self._flash_finished)
        controller.job_changed.connect(self._update_title)
        controller.target_changed.connect(self._update_title)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.go_back)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.go_next)
        self._show(OS)

    # --- navigation ---------------------------------------------------------------------------

    def _current(self) -> int:
        return self.stack.currentIndex()

    def _show(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        wizard = index not in (PROGRESS, BENCH)
        self._reachable = max(self._reachable, index) if wizard else self._reachable
        self.nav.setVisible(wizard)
        self.steps.setVisible(wizard)
        if index == TARGETS:
            self.controller.start_drive_watch()
        page = self.stack.currentWidget()
        focus = getattr(page, "focus_first", None)
        if focus is not None:
            focus()
        self._update_nav()
        self._update_title()

    def _go_step(self, index: int) -> None:
        if index < self._current():
            self._show(index)
        elif index > self._current():
            # Forward through the header only as far as the pages allow.
            while self._current() < index and self._advance():
                pass
        self._update_nav()  # a step the pages did not allow does not stay pressed

    def go_back(self) -> None:
        if OS < self._current() < PROGRESS:
            self._show(self._current() - 1)

    def go_next(self) -> None:
        if self._current() == TARGETS:
            self.ask_to_flash()
        elif self._current() < TARGETS:
            self._advance()

    def _advance(self) -> bool:
        current = self._current()
        if current == OS:
            selection = self.os_page.selection()
            if selection is None:
                return False
            self.controller.set_selection(selection)
            self.configure_page.set_selection(selection)
            self.targets_page.set_file_name(
                _file_name(selection.spec.device_type, selection.os_version, selection.title)
            )
            self._show(CONFIGURE)
            return True
        if current == CONFIGURE:
            if not self.configure_page.validate_all():
                return False
            self.controller.services.settings.remember_secrets = (
                self.configure_page.remember_secrets()
            )
            self.controller.set_config(self.configure_page.config())
            self._show(TARGETS)
            return True
        return False

    def _update_nav(self) -> None:
        current = self._current()
        self.back.setEnabled(OS < current < PROGRESS)
        if current == TARGETS:
            self.next.setText("&Flash…")
            self.next.setIcon(icon("flash"))
        else:
            self.next.setText("&Next")
            self.next.setIcon(QIcon())
        why = self.next_blocker()
        if current not in (PROGRESS, BENCH):
            # Steps past a page that cannot be left yet cannot be clicked either.
            self.steps.set_current(current, self._reachable if why is None else current)
        self.next.setEnabled(current != PROGRESS and why is None)
        self.why.setText(why or "")
        self.why.setVisible(bool(why))
        self.next.setToolTip(why or "")
        self.next.setDefault(True)
        self.summary.setText(self._summary())

    def next_blocker(self) -> str | None:
        """What keeps Next (or Flash) disabled on the current page, in one sentence."""
        blocker = {
            OS: self.os_page.blocker,
            CONFIGURE: self.configure_page.blocker,
            TARGETS: self.targets_page.blocker,
        }.get(self._current())
        return blocker() if blocker is not None else None

    def _summary(self) -> str:
        parts = []
        selection = self.os_page.selection() if self._current() == OS else self.controller.selection
        if selection is not None:
            parts.append(selection.title)
        if self._current() >= CONFIGURE:
            words = self.configure_page.summary()
            if words:
                parts.append(words)
        if self._current() == TARGETS:
            selected = self.controller.drives.selected
            files = sum(1 for row in selected if row.drive.is_file)
            parts.append(f"{count_words(len(selected) - files, files)} selected")
        return " — ".join(parts)

    # --- flashing -----------------------------------------------------------------------------

    def ask_to_flash(self) -> None:
        if not self.targets_page.is_complete() or self.controller.selection is None:
            return
        dialog = ConfirmEraseDialog(
            self.controller.selected_drives(),
            self.controller.selected_warnings(),
            self.controller.selection.title,
            self,
        )
        dialog.accepted.connect(self._start_flash)
        self._open(dialog)

    def _start_bench(self) -> None:
        selection = self.controller.selection
        if selection is not None:
            self.controller.remember_choices()
            self.bench.start(selection.spec, self.controller.config, verify=self.controller.verify)

    def _start_flash(self) -> None:
        self._show(PROGRESS)
        self.controller.start_flash()

    def _update_title(self) -> None:
        """The job's state in the title, so it shows in the task bar while the window is away;
        a finished job's only while its result is on screen."""
        job = self.controller.job
        if job is None or (job.state.finished and self._current() != PROGRESS):
            title = self._base_title
        elif job.state in (FlashState.WRITING, FlashState.VERIFYING):
            title = f"{job.fraction:.0%} {job.state.value} — {self._base_title}"
        else:
            title = f"{job.state.value.capitalize()} — {self._base_title}"
        if title != self.windowTitle():
            self.setWindowTitle(title)

    def _flash_finished(self) -> None:
        job = self.controller.job
        if job is not None:
            notify_finished(
                self,
                self.progress_page.title.text(),
                self.progress_page.subtitle.text(),
                elapsed_s=job.elapsed_s,
            )
        if self._quit_after_flash:
            self.close()
        elif self._quit_box is not None:
            # The flash ended while the question was open: there is nothing left to cancel.
            self._quit_box.reject()

    def _show_flash_details(self, path: str) -> None:
        job = self.controller.job
        if job is None:
            return
        error: BaseException | None
        if path:
            result = job.targets[path].result
            error = result.error if result is not None else None
            log = [line for line in job.log if path in line]
            trace = ""
        else:
            error = job.job_error
            log = job.log
            failure = self.controller.failure
            trace = failure.traceback_text if failure and not failure.expected else ""
        message, hint = self.controller.error_words(error)
        self._open(
            ErrorDetailsDialog(
                message, hint, details_text(error, traceback_text=trace, log=log), self
            )
        )

    def show_log(self) -> None:
        """The whole job's log, after a success too (what was written where, and how)."""
        job = self.controller.job
        if job is None:
            return
        headline = {
            FlashState.DONE: "The flash succeeded",
            FlashState.CANCELLED: "The flash was cancelled",
        }.get(job.state, "The flash ended with errors")
        lines = [overall_line(job), *job.log]
        for status in job.targets.values():
            lines.append(f"{status.label} ({status.path}): {status_line(status)}")
        self._open(
            ErrorDetailsDialog(headline, None, details_text(None, log=lines), self, title="Log")
        )

    def show_failure(self, failure: Failure) -> None:
        message, hint = self.controller.error_words(failure.error)
        trace = "" if failure.expected else failure.traceback_text
        self._open(
            ErrorDetailsDialog(
                message, hint, details_text(failure.error, traceback_text=trace), self
            )
        )

    def _open(self, dialog: QWidget) -> None:
        self.dialog = dialog
        dialog.finished.connect(lambda _r: self._closed(dialog))  # type: ignore[attr-defined]
        dialog.open()  # type: ignore[attr-defined]

    def _closed(self, dialog: QWidget) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    # --- drag and drop ------------------------------------------------------------------------

    @staticmethod
    def dropped_source(mime: QMimeData) -> tuple[str, bool] | None:
        """(path or URL, is_url) for a dropped image file or http(s) link; None otherwise."""
        urls = mime.urls()
        if urls:
            url = urls[0]
            if url.isLocalFile():
                return url.toLocalFile(), False
            if url.scheme() in ("http", "https"):
                return url.toString(), True
            return None
        text = mime.text().strip()
        if text.startswith(("http://", "https://")) and " " not in text:
            return text, True
        return None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if not self.controller.flashing and self.dropped_source(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        dropped = self.dropped_source(event.mimeData())
        if dropped is None or self.controller.flashing:
            return
        event.acceptProposedAction()
        self._show(OS)
        self.os_page.open_dropped(dropped[0], is_url=dropped[1])

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.ApplicationPaletteChange:
            # A light/dark theme switch: readable secondary text, accents in the right shade.
            app = QApplication.instance()
            if isinstance(app, QApplication):
                keep_readable(app)
            retint(self)
        super().changeEvent(event)

    def _window_state(self) -> QSettings | None:
        path = self.controller.services.window_state_path
        return QSettings(path, QSettings.Format.IniFormat) if path else None

    def _restore_size(self) -> None:
        """The size the window had when it was last closed (clamped to this screen)."""
        state = self._window_state()
        if state is None:
            return
        size = state.value("window/size")
        if isinstance(size, QSize) and size.isValid():
            screen = self.screen().availableGeometry().size()
            self.resize(size.boundedTo(screen).expandedTo(self.minimumSize()))

    def _save_size(self) -> None:
        state = self._window_state()
        if state is not None:
            state.setValue("window/size", self.size())
            state.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.bench.abort()  # a card being written by the bench is left unbootable, never half
        if not self.controller.flashing:
            self._save_size()
            self.controller.shutdown()
            event.accept()
            return
        event.ignore()
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Flashing is in progress",
            "Cancel the flash and quit? Cards being written are left unbootable.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.buttonClicked.connect(lambda button: self._quit_answer(box, button))
        box.finished.connect(lambda _r: setattr(self, "_quit_box", None))
        self._quit_box = box
        self._open(box)

    def _quit_answer(self, box: QMessageBox, button: QAbstractButton) -> None:
        if box.standardButton(button) == QMessageBox.StandardButton.Yes:
            self._quit_after_flash = True
            self.controller.cancel_flash()


def _file_name(device_type: str | None, os_version: str | None, title: str) -> str:
    if device_type and os_version:
        return f"{device_type}-{os_version}"
    stem = title
    for suffix in (".gz", ".xz", ".zst", ".bz2", ".zip", ".img", ".raw"):
        stem = stem.removesuffix(suffix)
    return f"{stem}-configured" if stem else "balena"
