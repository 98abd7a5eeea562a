"""Dialogs: the erase confirmation naming every drive, the typed confirmation for a system
drive, and error details with a copy button (also used for unexpected errors via the
exception hook that app.py installs).

Dialogs are window-modal and opened with `open()`, never `exec()`: the event loop keeps running
(progress keeps moving behind them) and tests drive them like a person would.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from collections.abc import Sequence
from types import TracebackType

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from flasher import __version__
from flasher.drives.constraints import Problem
from flasher.errors import FlasherError
from flasher.gui.progress import count_words, human_bytes
from flasher.gui.qtmodels import drive_location, drive_title
from flasher.gui.theme import em, icon, scaled_font
from flasher.gui.widgets import heading, note
from flasher.models import Drive


class ConfirmEraseDialog(QDialog):
    """ "Erase N drives?" — names each one; Cancel is the default button."""

    def __init__(
        self,
        drives: Sequence[Drive],
        warnings: Sequence[Problem],
        image_title: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        devices = [d for d in drives if not d.is_file]
        files = len(drives) - len(devices)
        new_files = sum(1 for d in drives if d.is_file and not os.path.exists(d.path))
        erases = bool(devices) or new_files < files  # else only new files are made
        self.setWindowTitle("Erase and flash" if erases else "Flash")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        headline, consequence = erase_words(len(devices), files, new_files=new_files)
        self.question = heading(headline, self, factor=1.2)
        layout.addWidget(self.question)
        what = note(f"Flasher will write {image_title} to:", self)
        layout.addWidget(what)
        self.drive_labels: list[QLabel] = []
        for drive in drives:
            size = (
                ""
                if drive.is_file and not drive.size_bytes
                else f" — {human_bytes(drive.size_bytes)}"
            )
            label = QLabel(
                f"<b>{_escape(drive_title(drive))}</b>{size}<br>{_escape(drive_location(drive))}",
                self,
            )
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            row = QHBoxLayout()
            mark = QLabel(self)
            mark.setPixmap(icon("file" if drive.is_file else "disk").pixmap(em(self, 1.4)))
            row.addWidget(mark, 0, Qt.AlignmentFlag.AlignTop)
            row.addWidget(label, 1)
            layout.addLayout(row)
            self.drive_labels.append(label)
        for problem in warnings:
            row = QHBoxLayout()
            mark = QLabel(self)
            mark.setPixmap(icon("warning").pixmap(em(self, 1.1)))
            text = QLabel(problem.message, self)
            text.setWordWrap(True)
            row.addWidget(mark, 0, Qt.AlignmentFlag.AlignTop)
            row.addWidget(text, 1)
            layout.addLayout(row)
        self.consequence = QLabel(consequence, self)
        self.consequence.setFont(scaled_font(self.consequence, 1.0, bold=True))
        layout.addWidget(self.consequence)
        if devices and os.geteuid() != 0:
            layout.addWidget(
                note(
                    "Writing drives needs administrator permission: you may be "
                    "asked for your password.",
                    self,
                )
            )
        self.setMinimumWidth(em(self, 30))
        buttons = QDialogButtonBox(self)
        self.cancel = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.erase = QPushButton(icon("flash"), "&Erase and flash" if erases else "&Flash", self)
        buttons.addButton(self.erase, QDialogButtonBox.ButtonRole.AcceptRole)
        # Enter must never erase a drive by accident.
        self.cancel.setDefault(True)
        self.cancel.setFocus()
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


def erase_words(drives: int, files: int, *, new_files: int = 0) -> tuple[str, str]:
    """The question and its consequence for `drives` drives and `files` image files, `new_files`
    of them not there yet: a file is not called a drive, one of them is not "these", and
    nothing is said to be erased when only new files are made."""
    if not drives and files and new_files == files:
        which = "This file" if files == 1 else "These files"
        return f"Create {count_words(0, files)}?", f"{which} will be made from the image."
    question = f"Erase {count_words(drives, files)}?"
    if drives and files:
        return question, "Everything on the drives will be lost, and the files replaced."
    if drives:
        which = "this drive" if drives == 1 else "these drives"
        return question, f"Everything on {which} will be lost."
    which = "this file" if files == 1 else "these files"
    return question, f"Anything in {which} will be replaced."


class SystemDriveDialog(QDialog):
    """Selecting a system drive needs its device name typed, as a deliberate act."""

    def __init__(self, drive: Drive, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.drive = drive
        self.expected = drive.path.rsplit("/", 1)[-1]
        self.setWindowTitle("Select a system drive?")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        layout.addWidget(
            heading(f"{drive_title(drive)} ({drive.path}) is a system drive", self, factor=1.15)
        )
        layout.addWidget(
            note(
                "It is built in or holds a mounted system filesystem. Writing it would erase it, "
                "and Flasher still refuses a disk that the running system uses.",
                self,
            )
        )
        prompt = QLabel(f"Type <b>{_escape(self.expected)}</b> to select it:", self)
        self.name_edit = QLineEdit(self)
        self.name_edit.setAccessibleName("drive name")
        prompt.setBuddy(self.name_edit)
        layout.addWidget(prompt)
        layout.addWidget(self.name_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self.select = QPushButton("&Select this drive", self)
        buttons.addButton(self.select, QDialogButtonBox.ButtonRole.AcceptRole)
        self.select.setEnabled(False)
        self.name_edit.textChanged.connect(
            lambda text: self.select.setEnabled(text.strip() == self.expected)
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def accept(self) -> None:
        if self.name_edit.text().strip() == self.expected:
            super().accept()


class ErrorDetailsDialog(QDialog):
    """What went wrong in plain words, the next step, and a copyable details panel."""

    def __init__(
        self,
        message: str,
        hint: str | None,
        details: str,
        parent: QWidget | None = None,
        *,
        title: str = "Error details",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        headline = heading(message, self, factor=1.1)
        headline.setWordWrap(True)
        layout.addWidget(headline)
        if hint:
            layout.addWidget(note(hint, self))
        self.details = QPlainTextEdit(details, self)
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setAccessibleName("error details")
        self.details.setMinimumSize(em(self, 44), em(self, 14))
        layout.addWidget(self.details, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.copy = QPushButton(icon("copy"), "&Copy details", self)
        buttons.addButton(self.copy, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy.clicked.connect(self.copy_details)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def copy_details(self) -> None:
        QGuiApplication.clipboard().setText(self.details.toPlainText())
        self.copy.setText("&Copied")


def details_text(
    error: BaseException | None, *, traceback_text: str = "", log: Sequence[str] = ()
) -> str:
    """Everything worth pasting into a bug report; never a secret (errors and logs redact)."""
    parts = [
        f"Flasher {__version__}, PySide6 {pyside_version}, Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}"
    ]
    if isinstance(error, FlasherError):
        parts.append(json.dumps(error.to_dict(), indent=2, sort_keys=True))
    elif error is not None:
        parts.append(f"{type(error).__name__}: {error}")
    if traceback_text:
        parts.append(traceback_text.rstrip())
    if log:
        parts.append("Log:\n" + "\n".join(log[-200:]))
    return "\n\n".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ExceptionHook:
    """sys.excepthook for the GUI: an unexpected error is shown, with its traceback, rather
    than the window silently losing a slot's work."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent
        self.dialogs: list[ErrorDetailsDialog] = []

    def __call__(
        self, kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(kind, error, tb))
        sys.stderr.write(text)
        dialog = ErrorDetailsDialog(
            f"Flasher hit an internal error ({kind.__name__}).",
            "Copy the details and report them. Flasher keeps running.",
            details_text(error, traceback_text=text),
            self.parent,
        )
        self.dialogs.append(dialog)
        dialog.finished.connect(lambda _r: self.dialogs.remove(dialog))
        dialog.open()
