"""The Configure page's extra NetworkManager connection files: one line while there are none,
a list with Add and Remove once there are; each file is read and checked by the core's keyfile
rules as it is added (the page shows the rule a file breaks).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from flasher.errors import ConfigError
from flasher.gui.pages.fields import read_keyfile
from flasher.gui.theme import em, icon
from flasher.gui.widgets import FieldError, note
from flasher.models import Keyfile
from flasher.validation import validate_keyfile


class KeyfileBox(QGroupBox):
    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Extra network connections (NetworkManager files)", parent)
        self.keyfiles: list[Keyfile] = []
        layout = QHBoxLayout(self)
        self.none = note("None: the device uses the network chosen above.", self)
        self.list = QListWidget(self)
        self.list.setAccessibleName("extra connection files")
        self.list.setMaximumHeight(em(self, 4))
        self.list.hide()
        buttons = QVBoxLayout()
        self.add = QPushButton("Add &connection file…", self)
        self.remove = QPushButton("&Remove", self)
        self.remove.hide()
        self.add.clicked.connect(self._browse)
        self.remove.clicked.connect(self._remove)
        buttons.addWidget(self.add)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        column = QVBoxLayout()
        column.addWidget(self.none)
        column.addWidget(self.list)
        self.error = FieldError(self)
        column.addWidget(self.error)
        layout.addLayout(column, 1)
        layout.addLayout(buttons)

    def check(self) -> None:
        for keyfile in self.keyfiles:
            validate_keyfile(keyfile)

    def _browse(self) -> None:
        dialog = QFileDialog(self, "Add NetworkManager connection files")
        dialog.setObjectName("keyfile-dialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.filesSelected.connect(self.add_files)
        dialog.open()

    def add_files(self, paths: list[str]) -> None:
        for path in paths:
            try:
                keyfile = read_keyfile(path)
            except ConfigError as err:
                self.error.show_error(str(err))
                return
            self.keyfiles = [k for k in self.keyfiles if k.name != keyfile.name] + [keyfile]
        self._show()

    def _remove(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.keyfiles):
            del self.keyfiles[row]
            self._show()

    def _show(self) -> None:
        self.list.clear()
        for widget in (self.list, self.remove):
            widget.setVisible(bool(self.keyfiles))
        self.none.setVisible(not self.keyfiles)
        for keyfile in self.keyfiles:
            self.list.addItem(keyfile.name)
            self.list.item(self.list.count() - 1).setIcon(icon("file"))
        self.edited.emit()
