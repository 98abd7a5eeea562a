"""Step 3, where to write: the live drive list (cards appear and disappear as they are plugged
in), multi-select by ticking, problems inline, system drives behind "show all" plus a typed
confirmation, and image files as targets ("Save to image file…", no password needed).
"""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from flasher.gui.controller import FlashController
from flasher.gui.dialogs import SystemDriveDialog
from flasher.gui.qtmodels import drive_title
from flasher.gui.theme import icon
from flasher.gui.widgets import Banner, heading, note
from flasher.models import Drive


class TargetsPage(QWidget):
    changed = Signal()
    bench_requested = Signal()

    def __init__(self, controller: FlashController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.default_file_name = "balena.img"
        self.system_dialog: SystemDriveDialog | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Choose where to write", self))
        layout.addWidget(
            note(
                "Insert an SD card or USB drive: it appears here. Tick every "
                "target to write at once.",
                self,
            )
        )
        self.view = QTreeView(self)
        self.view.setModel(controller.drive_filter)
        self.view.setRootIsDecorated(False)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAccessibleName("drives")
        self.view.setIconSize(
            self.view.iconSize().expandedTo(self.view.fontMetrics().boundingRect("M").size() * 1.4)
        )
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.view, 1)
        self.empty = note("No drives found. Insert a card, or save to an image file.", self)
        layout.addWidget(self.empty)
        row = QHBoxLayout()
        self.show_all = QCheckBox("Show &all drives, including system drives", self)
        self.show_all.toggled.connect(controller.drive_filter.set_show_all)
        row.addWidget(self.show_all)
        row.addStretch(1)
        self.save_file = QPushButton(icon("file"), "Save to &image file…", self)
        self.save_file.clicked.connect(self._choose_file)
        row.addWidget(self.save_file)
        layout.addLayout(row)
        options = QHBoxLayout()
        self.verify_check = QCheckBox("&Verify by reading back", self)
        self.verify_check.setChecked(controller.verify)
        self.verify_check.toggled.connect(self._options_changed)
        self.write_all_check = QCheckBox("Write every b&yte (slower)", self)
        self.write_all_check.setToolTip(
            "By default only the blocks that hold data are written; tick this for partitions "
            "checked by their own checksums."
        )
        self.write_all_check.toggled.connect(self._options_changed)
        self.eject_check = QCheckBox("E&ject when verified", self)
        self.eject_check.setToolTip("Power off each card once it is verified, ready to pull out.")
        self.eject_check.setChecked(controller.eject_when_verified)
        self.eject_check.toggled.connect(lambda on: setattr(controller, "eject_when_verified", on))
        options.addWidget(self.verify_check)
        options.addWidget(self.write_all_check)
        options.addWidget(self.eject_check)
        options.addStretch(1)
        self.bench_button = QPushButton("Bench &station…", self)
        self.bench_button.setToolTip(
            "Flash every card inserted into the card readers, one after another, without "
            "choosing each."
        )
        self.bench_button.clicked.connect(self.bench_requested)
        options.addWidget(self.bench_button)
        layout.addLayout(options)
        self.banner = Banner(self)
        layout.addWidget(self.banner)
        model = controller.drives
        model.selection_changed.connect(self._selection_changed)
        model.rowsInserted.connect(self._rows_changed)
        model.rowsRemoved.connect(self._rows_changed)
        model.confirmation_needed.connect(self._confirm_system)
        model.drive_removed.connect(self._drive_removed)
        model.file_refused.connect(self._file_refused)
        self.view.activated.connect(self._toggle)
        self._rows_changed()

    def _rows_changed(self) -> None:
        self.empty.setVisible(self.controller.drive_filter.rowCount() == 0)
        self.changed.emit()

    def _toggle(self) -> None:
        """Enter or double-click toggles the current row, like the space bar on its box."""
        index = self.view.currentIndex()
        if not index.isValid():
            return
        source = self.controller.drive_filter.mapToSource(index)
        item = self.controller.drives.item(source.row())
        self.controller.drives.set_checked(item.drive.path, not item.checked)

    def _options_changed(self) -> None:
        self.controller.verify = self.verify_check.isChecked()
        self.controller.write_all = self.write_all_check.isChecked()

    def _selection_changed(self) -> None:
        problems = [p for row in self.controller.drives.selected for p in row.problems]
        if problems:
            self.banner.show_message(
                "warning",
                " ".join(p.message for p in problems),
                "You will be asked to confirm before anything is erased.",
            )
        else:
            self.banner.hide()
        self.controller.drive_filter.refilter()
        self.changed.emit()

    def _drive_removed(self, drive: Drive) -> None:
        self.banner.show_message(
            "info",
            f"{drive_title(drive)} ({drive.path}) was removed.",
            "Insert it again to write it.",
        )

    def _file_refused(self, reason: str) -> None:
        self.banner.show_message("error", reason, "Choose a folder that exists.")

    def _confirm_system(self, drive: Drive) -> None:
        dialog = self.system_dialog = SystemDriveDialog(drive, self)
        dialog.accepted.connect(lambda: self.controller.drives.confirm_system(drive.path))
        dialog.finished.connect(self._system_dialog_closed)
        dialog.open()

    def _system_dialog_closed(self) -> None:
        self.system_dialog = None

    def _choose_file(self) -> None:
        dialog = QFileDialog(self, "Save the image to a file")
        dialog.setObjectName("target-file-dialog")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setFileMode(QFileDialog.FileMode.AnyFile)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.setNameFilter("Disk images (*.img);;All files (*)")
        dialog.setDefaultSuffix("img")
        dialog.selectFile(os.path.join(os.path.expanduser("~"), self.default_file_name))
        dialog.fileSelected.connect(self.controller.drives.add_file_target)
        dialog.open()

    def set_file_name(self, name: str) -> None:
        """The name the Save dialog suggests (what is being flashed)."""
        safe = "".join(c if c.isalnum() or c in "+-._" else "-" for c in name)
        self.default_file_name = safe if safe.endswith(".img") else f"{safe}.img"

    def is_complete(self) -> bool:
        return self.blocker() is None

    def blocker(self) -> str | None:
        """Why Flash is disabled; None when the ticked targets can be written."""
        selected = self.controller.drives.selected
        if not selected:
            return "Tick at least one drive, or save to an image file."
        for row in selected:
            if row.blocked:
                return next(p.message for p in row.problems if p.severity.value == "error")
        return None

    def focus_first(self) -> None:
        self.view.setFocus(Qt.FocusReason.OtherFocusReason)
        if not self.view.currentIndex().isValid() and self.controller.drive_filter.rowCount():
            self.view.setCurrentIndex(self.controller.drive_filter.index(0, 0))
