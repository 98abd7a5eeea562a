"""Drive the desktop app through its widgets, as a person would: type, click, tick, confirm.

Waits use qtbot.waitUntil / waitSignal (never sleep). File dialogs are Qt's own (non-native), so
a test fills them in and accepts them like a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QFileDialog, QLineEdit, QWidget
from pytestqt.qtbot import QtBot

from flasher.gui.controller import FlashController
from flasher.gui.dialogs import ConfirmEraseDialog
from flasher.gui.window import CONFIGURE, OS, TARGETS, MainWindow

CATALOG_TIMEOUT_MS = 10_000
FLASH_TIMEOUT_MS = 30_000


@dataclass
class App:
    controller: FlashController
    window: MainWindow
    qtbot: QtBot

    def click(self, button: QAbstractButton) -> None:
        assert button.isVisible() and button.isEnabled(), f"{button.text()!r} is not clickable"
        self.qtbot.mouseClick(button, Qt.MouseButton.LeftButton)

    def type_into(self, widget: QWidget, text: str) -> None:
        widget.setFocus()
        if text.isascii():
            self.qtbot.keyClicks(widget, text)
        else:
            # QTest can only synthesize ASCII keys; other text arrives as if pasted.
            assert isinstance(widget, QLineEdit)
            widget.insert(text)

    def page(self) -> int:
        return self.window.stack.currentIndex()

    # --- step 1 -------------------------------------------------------------------------------

    def choose_device_type(self, query: str, slug: str) -> None:
        page = self.window.os_page
        self.qtbot.waitUntil(
            lambda: self.controller.device_types.rowCount() > 0, timeout=CATALOG_TIMEOUT_MS
        )
        page.search.clear()
        self.type_into(page.search, query)
        self.qtbot.waitUntil(
            lambda: (
                page.current_device_type() is not None
                and page.current_device_type().slug == slug  # type: ignore[union-attr]
                and page.selection() is not None
            ),
            timeout=CATALOG_TIMEOUT_MS,
        )

    def open_image_file(self, path: Path) -> None:
        page = self.window.os_page
        self.click(page.file_radio)
        self.click(page.browse)
        dialog = self.file_dialog(page, "image-file-dialog")
        dialog.selectFile(str(path))
        dialog.accept()
        self.qtbot.waitUntil(lambda: page.selection() is not None, timeout=FLASH_TIMEOUT_MS)

    def file_dialog(self, parent: QWidget, name: str) -> QFileDialog:
        found: list[QFileDialog] = []

        def shown() -> bool:
            found[:] = [d for d in parent.findChildren(QFileDialog, name) if d.isVisible()]
            return bool(found)

        self.qtbot.waitUntil(shown)
        return found[-1]

    def next(self) -> None:
        before = self.page()
        self.click(self.window.next)
        self.qtbot.waitUntil(lambda: self.page() == before + 1)

    # --- step 2 -------------------------------------------------------------------------------

    def to_configure(self, query: str = "raspberrypi4-64", slug: str = "raspberrypi4-64") -> None:
        assert self.page() == OS
        self.choose_device_type(query, slug)
        self.next()
        assert self.page() == CONFIGURE

    def use_wifi(self, ssid: str, key: str) -> None:
        page = self.window.configure_page
        self.click(page.wifi_radio)
        page.ssid_edit.clear()
        self.type_into(page.ssid_edit, ssid)
        page.key_edit.clear()
        self.type_into(page.key_edit, key)

    # --- step 3 -------------------------------------------------------------------------------

    def to_targets(self) -> None:
        self.next()
        assert self.page() == TARGETS

    def add_file_target(self, path: Path) -> None:
        page = self.window.targets_page
        self.click(page.save_file)
        dialog = self.file_dialog(page, "target-file-dialog")
        dialog.selectFile(str(path))
        dialog.accept()
        self.qtbot.waitUntil(lambda: self.controller.drives.row_of(str(path)) >= 0)

    def tick_drive(self, path: str) -> None:
        """Tick a drive's box by clicking it in the list."""
        view = self.window.targets_page.view
        model = self.controller.drive_filter
        self.qtbot.waitUntil(lambda: self._proxy_row(path) >= 0, timeout=CATALOG_TIMEOUT_MS)
        index = model.index(self._proxy_row(path), 0)
        view.scrollTo(index)
        view.setCurrentIndex(index)
        view.setFocus()
        self.qtbot.keyClick(view, Qt.Key.Key_Space)

    def _proxy_row(self, path: str) -> int:
        model = self.controller.drive_filter
        for row in range(model.rowCount()):
            source = model.mapToSource(model.index(row, 0))
            if self.controller.drives.item(source.row()).drive.path == path:
                return row
        return -1

    def confirm_dialog(self) -> ConfirmEraseDialog:
        self.click(self.window.next)
        self.qtbot.waitUntil(
            lambda: (
                isinstance(self.window.dialog, ConfirmEraseDialog)
                and self.window.dialog.isVisible()
            )
        )
        dialog = self.window.dialog
        assert isinstance(dialog, ConfirmEraseDialog)
        return dialog

    def flash(self, timeout_ms: int = FLASH_TIMEOUT_MS) -> None:
        """Flash…, then "Erase and flash" in the confirmation; wait for the end."""
        dialog = self.confirm_dialog()
        with self.qtbot.waitSignal(self.controller.flash_finished, timeout=timeout_ms):
            self.click(dialog.erase)
