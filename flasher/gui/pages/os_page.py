"""Step 1, the operating system: a balenaOS release for a device type (searchable list with
aliases and architectures, versions with ESR/development/draft toggles, known issues, download
size), or a local image file, or an http(s) URL, with the device type and version it contains.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelection, QSize, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStackedWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from flasher.errors import FlasherError
from flasher.events import Event, Phase, PhaseChanged, Progress
from flasher.gui.bridge import Failure
from flasher.gui.choices import ImageChoice, Selection, image_words
from flasher.gui.controller import FlashController
from flasher.gui.progress import PHASE_WORDS, human_bytes, transfer_line
from flasher.gui.qtmodels import ValueRole, VersionFilter, version_label
from flasher.gui.theme import Accent, em, icon, tint
from flasher.gui.widgets import Banner, FieldError, SearchField, heading, image_status, note
from flasher.models import DeviceType, OsVersion
from flasher.provider import SourceSpec

IMAGE_FILTER = "Disk images (*.img *.raw *.zip *.gz *.xz *.zst *.bz2);;All files (*)"


class OsPage(QWidget):
    changed = Signal()
    details_requested = Signal(object)  # Failure

    def __init__(self, controller: FlashController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._choice: ImageChoice | None = None
        self._catalog_size_bytes: int | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Choose the operating system", self))
        kinds = QHBoxLayout()
        self.kind_group = QButtonGroup(self)
        self.catalog_radio = QRadioButton("&balenaOS for a device", self)
        self.file_radio = QRadioButton("Image &file", self)
        self.url_radio = QRadioButton("Image &URL", self)
        for i, radio in enumerate((self.catalog_radio, self.file_radio, self.url_radio)):
            self.kind_group.addButton(radio, i)
            kinds.addWidget(radio)
        kinds.addStretch(1)
        layout.addLayout(kinds)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self._catalog_panel())
        self.stack.addWidget(self._file_panel())
        self.stack.addWidget(self._url_panel())
        layout.addWidget(self.stack, 1)
        self.banner = Banner(self)
        self.banner.details_requested.connect(self._show_failure)
        layout.addWidget(self.banner)
        self.try_again = QPushButton("&Try again", self)
        self.try_again.clicked.connect(self._reload)
        self.try_again.hide()
        layout.addWidget(self.try_again, 0, Qt.AlignmentFlag.AlignRight)
        self._failure: Failure | None = None
        self.kind_group.idToggled.connect(self._kind_toggled)
        self.catalog_radio.setChecked(True)
        controller.catalog_busy.connect(self._catalog_busy)
        controller.catalog_failed.connect(self._catalog_failed)
        controller.versions_loaded.connect(self._versions_loaded)
        controller.download_size_known.connect(self._download_size)
        controller.image_busy.connect(self._image_busy)
        controller.image_ready.connect(self._image_ready)
        controller.image_failed.connect(self._image_failed)
        controller.device_types.modelReset.connect(self._device_types_loaded)

    # --- panels -------------------------------------------------------------------------------

    def _catalog_panel(self) -> QWidget:
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        self.device_view = QTreeView(panel)
        self.device_view.setModel(self.controller.device_type_filter)
        self.device_view.setRootIsDecorated(False)
        self.device_view.setUniformRowHeights(True)
        self.device_view.setAlternatingRowColors(True)
        self.device_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.device_view.setAccessibleName("device types")
        self.device_view.setIconSize(QSize(em(self, 1.5), em(self, 1.5)))
        header = self.device_view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.search = SearchField(self.device_view, panel)
        self.search.setPlaceholderText("Search by name, slug, alias or architecture")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.setAccessibleName("search device types")
        self.search.textChanged.connect(self._search_changed)
        search_label = QLabel("&Device type:", panel)
        search_label.setBuddy(self.search)
        row = QHBoxLayout()
        row.addWidget(search_label)
        row.addWidget(self.search, 1)
        layout.addLayout(row)
        layout.addWidget(self.device_view, 1)
        self.device_view.selectionModel().selectionChanged.connect(self._device_selected)

        form = QFormLayout()
        self.version_combo = QComboBox(panel)
        self.version_combo.setModel(self.controller.versions)
        self.version_combo.setAccessibleName("balenaOS version")
        self.version_combo.currentIndexChanged.connect(self._version_changed)
        toggles = QHBoxLayout()
        which = self.controller.version_filter
        self.esr_check = QCheckBox("&ESR line", panel)
        self.esr_check.setToolTip("Extended Support Releases: maintained for longer")
        self.esr_check.setChecked(which.esr)
        self.dev_check = QCheckBox("Development ima&ges", panel)
        self.dev_check.setToolTip("Open SSH and local mode, for building; not for the field")
        self.draft_check = QCheckBox("Include d&rafts", panel)
        for check in (self.esr_check, self.dev_check, self.draft_check):
            check.toggled.connect(self._filters_changed)
            toggles.addWidget(check)
        toggles.addStretch(1)
        version_row = QVBoxLayout()
        version_row.addWidget(self.version_combo)
        version_row.addLayout(toggles)
        label = QLabel("&Version:", panel)
        label.setBuddy(self.version_combo)
        form.addRow(label, version_row)
        self.known_issue = QLabel(panel)
        self.known_issue.setWordWrap(True)
        tint(self.known_issue, QPalette.ColorRole.WindowText, Accent.WARNING)
        self.known_issue.hide()
        form.addRow("", self.known_issue)
        self.size_label = note("", panel)
        self._device_slug: str | None = None  # the device type the size and warning are for
        form.addRow("Download:", self.size_label)
        layout.addLayout(form)
        self.catalog_status = note("Asking the balena API…", panel)
        layout.addWidget(self.catalog_status)
        return panel

    def _file_panel(self) -> QWidget:
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.path_edit = QLineEdit(panel)
        self.path_edit.setPlaceholderText("balena-raspberrypi4-64-6.5.50.img.zip")
        self.path_edit.setAccessibleName("image file")
        # Enter, or leaving the field after typing in it (Tab, a click elsewhere), opens the path.
        self.path_edit.editingFinished.connect(self._open_path)
        label = QLabel("Fi&le:", panel)
        label.setBuddy(self.path_edit)
        self.browse = QPushButton(icon("folder"), "Bro&wse…", panel)
        self.browse.clicked.connect(self._browse)
        row.addWidget(label)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse)
        layout.addLayout(row)
        layout.addWidget(
            note(
                ".img, .zip, .gz, .xz, .zst or .bz2 — compressed images are "
                "unpacked once into the cache.",
                panel,
            )
        )
        self.file_progress, self.file_status, self.file_error = image_status(panel, layout)
        layout.addStretch(1)
        return panel

    def _url_panel(self) -> QWidget:
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.url_edit = QLineEdit(panel)
        self.url_edit.setPlaceholderText("https://example.com/balena.img.zip")
        self.url_edit.setAccessibleName("image URL")
        self.url_edit.returnPressed.connect(self._open_url)
        label = QLabel("UR&L:", panel)
        label.setBuddy(self.url_edit)
        self.url_open = QPushButton("D&ownload", panel)
        self.url_open.clicked.connect(self._open_url)
        self.url_cancel = QPushButton("&Stop", panel)
        self.url_cancel.clicked.connect(self._stop_download)
        self.url_cancel.hide()
        row.addWidget(label)
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.url_open)
        row.addWidget(self.url_cancel)
        layout.addLayout(row)
        self.url_progress, self.url_status, self.url_error = image_status(panel, layout)
        layout.addStretch(1)
        return panel

    # --- catalog ------------------------------------------------------------------------------

    def _device_types_loaded(self) -> None:
        remembered = self.controller.services.settings.device_type
        if remembered and self.select_device_type(remembered):
            return
        self._search_changed(self.search.text())

    def _catalog_busy(self, busy: bool) -> None:
        if busy:
            self.catalog_status.setText("Asking the balena API…")
        self.catalog_status.setVisible(busy or not self.controller.device_types.rowCount())
        if not busy and not self.controller.device_types.rowCount():
            self.catalog_status.setText("The catalog lists no device types.")

    def select_device_type(self, slug: str) -> bool:
        row = self.controller.device_types.row_of(slug)
        if row < 0:
            return False
        proxy = self.controller.device_type_filter
        index = proxy.mapFromSource(self.controller.device_types.index(row, 0))
        if not index.isValid():
            return False
        self.device_view.setCurrentIndex(index)
        self.device_view.scrollTo(index)
        return True

    def _search_changed(self, text: str) -> None:
        """Typing picks the first match; nothing is picked before the user types or clicks
        (the first launch), and a search that matches nothing says so and drops the version."""
        proxy = self.controller.device_type_filter
        proxy.set_search(text)
        current = self.device_view.currentIndex()
        if proxy.rowCount() == 0 and self.controller.device_types.rowCount():
            self.device_view.setCurrentIndex(proxy.index(-1, -1))
            self.controller.clear_device_type()
            self.catalog_status.setText(f"No device type matches “{text.strip()}”.")
            self.catalog_status.show()
            self.changed.emit()
            return
        if self.controller.device_types.rowCount():
            self.catalog_status.hide()
        if (
            text.strip()
            and (not current.isValid() or not self.device_view.selectionModel().isSelected(current))
            and proxy.rowCount() > 0
        ):
            self.device_view.setCurrentIndex(proxy.index(0, 0))

    def current_device_type(self) -> DeviceType | None:
        index = self.device_view.currentIndex()
        if not index.isValid():
            return None
        value = index.siblingAtColumn(0).data(ValueRole)
        return value if isinstance(value, DeviceType) else None

    def _device_selected(self, _new: QItemSelection, _old: QItemSelection) -> None:
        device = self.current_device_type()
        if device is None or device.slug != self._device_slug:  # not the search re-selecting it
            self.size_label.clear()
            self.known_issue.hide()
        self._device_slug = device.slug if device is not None else None
        if device is not None:
            self.controller.choose_device_type(device.slug)
        self.changed.emit()

    def _filters_changed(self) -> None:
        self.controller.set_version_filter(
            VersionFilter(
                esr=self.esr_check.isChecked(),
                development=self.dev_check.isChecked(),
                drafts=self.draft_check.isChecked(),
            )
        )

    def _versions_loaded(self) -> None:
        preferred = self.controller.preferred_version()
        row = self.controller.versions.row_of(preferred.raw_version) if preferred else -1
        self.version_combo.setCurrentIndex(row)
        self._version_changed()

    def current_version(self) -> OsVersion | None:
        value = self.version_combo.currentData(ValueRole)
        return value if isinstance(value, OsVersion) else None

    def _version_changed(self, _row: int = -1) -> None:
        version, device = self.current_version(), self.current_device_type()
        self.known_issue.setVisible(bool(version and version.known_issue))
        if version is not None and version.known_issue:
            self.known_issue.setText(f"⚠ Known issue: {version.known_issue}")
        self.size_label.clear()
        self._catalog_size_bytes = None
        if version is not None and device is not None:
            self.size_label.setText("…")
            self.controller.fetch_download_size(device.slug, version.raw_version)
        elif device is not None and not self.controller.versions.rowCount():
            self.size_label.setText("No version matches these options.")
        self.changed.emit()

    def _download_size(self, size: int | None) -> None:
        # The API's figure is the image's size: drives smaller than it are marked too small.
        self._catalog_size_bytes = size
        self.size_label.setText(f"about {human_bytes(size)}" if size else "size unknown")

    def _catalog_failed(self, failure: Failure) -> None:
        self._failure = failure
        message, hint = self.controller.error_words(failure.error)
        self.banner.show_message("error", message, hint, details=True)
        self.catalog_status.setText("The catalog could not be loaded.")
        self.try_again.show()

    def _reload(self) -> None:
        self.banner.hide()
        self.try_again.hide()
        if self.controller.device_types.rowCount():
            device = self.current_device_type()
            if device is not None:
                self.controller.reload_versions(device.slug)
        else:
            self.controller.load_device_types()

    def _show_failure(self) -> None:
        if self._failure is not None:
            self.details_requested.emit(self._failure)

    # --- files and URLs -----------------------------------------------------------------------

    def _kind_toggled(self, kind: int, checked: bool) -> None:
        if checked:
            self.stack.setCurrentIndex(kind)
            self._choice = None
            self.controller.cancel_image()
            for progress in (self.file_progress, self.url_progress):
                progress.hide()
            if kind == 1 and not self.path_edit.text():
                self.path_edit.setText(self.controller.services.settings.last_image_path or "")
            self.changed.emit()

    def _browse(self) -> None:
        dialog = QFileDialog(self, "Choose a disk image", "", IMAGE_FILTER)
        dialog.setObjectName("image-file-dialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(self._file_chosen)
        dialog.open()

    def _file_chosen(self, path: str) -> None:
        self.path_edit.setText(path)
        self._open_path()

    def open_dropped(self, source: str, *, is_url: bool) -> None:
        """An image file or URL dropped on the window: shown in its panel and opened."""
        if is_url:
            self.url_radio.setChecked(True)
            self.url_edit.setText(source)
            self._open_url()
        else:
            self.file_radio.setChecked(True)
            self.path_edit.setText(source)
            self._open_path()

    def _open_path(self) -> None:
        path = self.path_edit.text().strip()
        if path:
            self._open(SourceSpec(path=path), self.file_progress, self.file_status, self.file_error)

    def _open_url(self) -> None:
        url = self.url_edit.text().strip()
        if not url:
            return
        try:
            spec = SourceSpec(url=url)
        except FlasherError as err:
            self.url_error.show_error(str(err))
            return
        self._open(spec, self.url_progress, self.url_status, self.url_error)

    def _stop_download(self) -> None:
        """Stop a download; what arrived stays in the cache, so Download resumes from there."""
        self.controller.cancel_image()
        self.url_progress.hide()
        self._downloading(False)
        self.url_status.setText("Stopped. Press Download to resume where it stopped.")
        self.changed.emit()

    def _downloading(self, busy: bool) -> None:
        self.url_open.setVisible(not busy)
        self.url_cancel.setVisible(busy)

    def _open(
        self, spec: SourceSpec, progress: QProgressBar, status: QLabel, error: FieldError
    ) -> None:
        self._choice = None
        if spec.url:
            self._downloading(True)
        error.show_error(None)
        status.setText("Opening…")
        progress.setRange(0, 0)
        progress.show()
        self.controller.open_image(spec)
        self.changed.emit()

    def _widgets(self) -> tuple[QProgressBar, QLabel, FieldError]:
        if self.url_radio.isChecked():
            return self.url_progress, self.url_status, self.url_error
        return self.file_progress, self.file_status, self.file_error

    def _image_busy(self, event: Event) -> None:
        progress, status, _error = self._widgets()
        if isinstance(event, PhaseChanged) and event.target is None:
            status.setText(f"{PHASE_WORDS.get(event.phase, event.phase.value)}…")
            progress.setRange(0, 0)
        elif isinstance(event, Progress) and event.phase in (Phase.DOWNLOADING, Phase.UNPACKING):
            fraction = event.fraction
            if fraction is not None:
                progress.setRange(0, 1000)
                progress.setValue(round(fraction * 1000))
            status.setText(transfer_line(event))

    def _image_ready(self, choice: ImageChoice) -> None:
        self._downloading(False)
        progress, status, error = self._widgets()
        progress.hide()
        self._choice = choice
        status.setText(image_words(choice))
        problems = [p.message for p in choice.info.problems]
        error.show_error("; ".join(problems) if problems else None)
        self.changed.emit()

    def _image_failed(self, failure: Failure) -> None:
        self._downloading(False)
        progress, status, error = self._widgets()
        progress.hide()
        status.clear()
        message, hint = self.controller.error_words(
            failure.error, from_url=self.url_radio.isChecked()
        )
        error.show_error(f"{message} {hint or ''}".strip())
        self.changed.emit()

    # --- what the window asks ---------------------------------------------------------------

    def blocker(self) -> str | None:
        """Why Next is disabled on this page; None when a source is chosen."""
        if self.selection() is not None:
            return None
        if self.catalog_radio.isChecked():
            if self.current_device_type() is None:
                return "Choose a device type, or drop an image file here."
            if not self.controller.versions.rowCount():
                return "No version matches these options."
            return "Choose a balenaOS version."
        if self.controller.opening_image:
            return "Opening the image…"
        if self.file_radio.isChecked():
            return "Choose an image file."
        return "Type the image's URL and press Download."

    def selection(self) -> Selection | None:
        if self.catalog_radio.isChecked():
            device, version = self.current_device_type(), self.current_version()
            if device is None or version is None:
                return None
            spec = SourceSpec(
                device_type=device.slug,
                version=version.raw_version,
                development=self.dev_check.isChecked(),
            )
            return Selection(
                spec,
                device.slug,
                version.raw_version,
                f"{device.name} · {version_label(version)}",
                image_size_bytes=self._catalog_size_bytes,
            )
        choice = self._choice
        if choice is None:
            return None
        name = choice.spec.path or choice.spec.url or ""
        title = name.rsplit("/", 1)[-1]
        source_path = choice.spec.path or choice.raw_path
        return Selection(
            choice.spec,
            choice.device_type,
            choice.os_version,
            title,
            image_size_bytes=choice.size_bytes,
            source_path=source_path,
        )

    def focus_first(self) -> None:
        target = {0: self.search, 1: self.path_edit, 2: self.url_edit}
        target[self.stack.currentIndex()].setFocus()
